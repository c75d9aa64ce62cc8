// In-process cost of the SCSI command layers: ScsiDevice.execute with 4 KiB READ(16) or WRITE(16) at QD32 on
// a block device that completes in setImmediate batches (as io_uring completions arrive). Run from a built
// tree: node bench/cmd_path/scsi_layers.mjs /path/to/worktree read|write [commands]
// In-process: N commands through ScsiDevice.execute on an async bdev (completions in batches from setImmediate), QD 32.
import { performance } from "node:perf_hooks";
import { setImmediate } from "node:timers";
const root = process.argv[2];
const op = process.argv[3] ?? "read";
const N = +(process.argv[4] ?? 300000);
const { ScsiDevice } = await import(`${root}/dist/src/scsi/device.js`);
const { ScsiTask, ITNexus } = await import(`${root}/dist/src/scsi/task.js`);
let pending = [];
function later() {
  return new Promise((res) => {
    if (pending.length === 0) setImmediate(flush);
    pending.push(res);
  });
}
function flush() {
  const p = pending;
  pending = [];
  for (const r of p) r();
}
const bdev = {
  name: "x",
  productName: "x",
  blockSize: 4096,
  blockCount: 65536,
  uuid: "00000000-0000-5000-8000-000000000000",
  volatileWriteCache: true,
  supportsUnmap: false,
  unmapReadsZeroes: false,
  readv: async () => {
    await later();
  },
  writev: async () => {
    await later();
  },
  flush: async () => {},
  unmap: async () => {},
  writeZeroes: async () => {},
  close: async () => {},
};
const dev = new ScsiDevice({ name: "iqn.x:d", luns: [{ id: 0, bdev }] });
await dev.init();
const nexus = new ITNexus("iqn.i", "000000000001", "iqn.x:d", 1);
const data = Buffer.alloc(4096);
function cdbFor(i) {
  const c = Buffer.alloc(16);
  c[0] = op === "read" ? 0x88 : 0x8a;
  c.writeUInt32BE((i * 7919) % 65536, 6);
  c.writeUInt32BE(1, 10);
  return c;
}
// clear the power-on UA
await dev.execute(new ScsiTask(Buffer.from([0, 0, 0, 0, 0, 0]), 0, 0, "simple", nexus, 0, false, false, []));
async function run(n) {
  let i = 0;
  let bad = 0;
  async function worker() {
    while (i < n) {
      const k = i++;
      const t = new ScsiTask(
        cdbFor(k),
        0,
        k,
        "simple",
        nexus,
        4096,
        op === "read",
        op !== "read",
        op === "read" ? [] : [data],
      );
      await dev.execute(t);
      if (t.status !== 0) bad++;
    }
  }
  await Promise.all(Array.from({ length: 32 }, worker));
  return bad;
}
await run(50000);
const c0 = process.cpuUsage();
const t0 = performance.now();
const bad = await run(N);
const c = process.cpuUsage(c0);
console.log(
  `${root.split("/").pop()} ${op} cpu_us_per_cmd=${((c.user + c.system) / N).toFixed(3)} wall_us=${(((performance.now() - t0) * 1000) / N).toFixed(3)} bad=${bad}`,
);
