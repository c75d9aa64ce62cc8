/**
 * Benchmark client: random block-aligned reads or writes on a file (a FUSE device file), with
 * `depth` requests in flight, for `seconds`. Prints one line: op, block size, depth, IOPS, MB/s.
 *
 *   node dist/bench/fuse_random.js <file> <read|write> [bs=4096] [depth=1] [seconds=5]
 */
import { open } from "node:fs/promises";
import { randomBytes, randomInt } from "node:crypto";

const [file, op, bsText = "4096", depthText = "1", secondsText = "5"] = process.argv.slice(2);
if (!file || (op !== "read" && op !== "write")) {
  process.stderr.write("usage: fuse_random.js <file> <read|write> [bs] [depth] [seconds]\n");
  process.exit(2);
}
const bs = Number(bsText);
const depth = Number(depthText);
const seconds = Number(secondsText);
const fh = await open(file, op === "write" ? "r+" : "r");
const blocks = Math.floor((await fh.stat()).size / bs);
const end = Date.now() + seconds * 1000;
let ops = 0;

async function worker(): Promise<void> {
  const buf = op === "write" ? randomBytes(bs) : Buffer.alloc(bs);
  while (Date.now() < end) {
    const pos = randomInt(blocks) * bs;
    if (op === "write") await fh.write(buf, 0, bs, pos);
    else await fh.read(buf, 0, bs, pos);
    ops++;
  }
}

const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: depth }, () => worker()));
const dt = Number(process.hrtime.bigint() - t0) / 1e9;
await fh.close();
const iops = ops / dt;
process.stdout.write(
  `${op} bs=${bs} depth=${depth}: ${Math.round(iops)} IOPS, ${((iops * bs) / 1e6).toFixed(1)} MB/s\n`,
);
