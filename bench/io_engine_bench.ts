/**
 * The I/O engine alone, without iSCSI: random 4 KiB reads (or writes) at a queue depth through
 * BackingStore on a file or block device, CPU µs per I/O from process.cpuUsage (event-loop thread,
 * libuv pool and io-wq workers all count), for each engine.
 *
 *   node dist/bench/io_engine_bench.js FILE [read|write] [QD] [COUNT]
 */
import { BackingStore } from "../src/io_engine/backing.js";
import type { IoEngineName } from "../src/io_engine/engine.js";

async function run(
  engine: IoEngineName,
  path: string,
  write: boolean,
  qd: number,
  count: number,
): Promise<string> {
  const s = await BackingStore.open(path, { engine });
  const blocks = Math.floor(s.sizeBytes / 4096);
  const bufs = Array.from({ length: qd }, () => Buffer.alloc(4096, 0x5a));
  let issued = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const worker = async (buf: Buffer): Promise<void> => {
    while (issued < count) {
      issued++;
      const pos = Math.floor(Math.random() * blocks) * 4096;
      await (write ? s.writev([buf], pos) : s.readv([buf], pos));
    }
  };
  await Promise.all(bufs.map(worker));
  const cpu = process.cpuUsage(cpu0);
  const secs = (performance.now() - t0) / 1000;
  await s.close(write);
  const us = (cpu.user + cpu.system) / count;
  return `${engine.padEnd(10)} ${write ? "write" : "read"} QD${qd}: ${Math.round(count / secs)} IOPS, ${us.toFixed(2)} CPU µs/IO (user ${(cpu.user / count).toFixed(2)}, sys ${(cpu.system / count).toFixed(2)})`;
}

const [path, op = "read", qd = "32", count = "200000"] = process.argv.slice(2);
if (!path) {
  console.error("usage: node dist/bench/io_engine_bench.js FILE [read|write] [QD] [COUNT]");
  process.exit(2);
}
// The io_uring ring is per process; the thread pool can be asked for beside it.
for (const engine of ["io_uring", "threadpool"] as IoEngineName[]) {
  console.log(await run(engine, path, op === "write", Number(qd), Number(count)));
}
