import { test } from "node:test";
import assert from "node:assert/strict";
import { MallocBdev } from "./malloc.js";
import { BlockDeviceError } from "../bdev.js";

test("Malloc: vectored write then read returns the same bytes", async () => {
  const dev = new MallocBdev({ name: "Malloc0", blockSize: 512, blockCount: 16 });
  const a = Buffer.alloc(512, 0xaa);
  const b = Buffer.alloc(1024, 0xbb);
  await dev.writev(3, [a, b]);
  const out = [Buffer.alloc(1024), Buffer.alloc(512)];
  await dev.readv(3, out);
  assert.deepEqual(Buffer.concat(out), Buffer.concat([a, b]));
});

test("Malloc: unmap reads back zeroes, I/O past the end is refused", async () => {
  const dev = new MallocBdev({ name: "Malloc1", blockSize: 4096, blockCount: 4 });
  await dev.writev(0, [Buffer.alloc(4 * 4096, 1)]);
  await dev.unmap(1, 2);
  const out = Buffer.alloc(4 * 4096);
  await dev.readv(0, [out]);
  assert.equal(out[0], 1);
  assert.ok(out.subarray(4096, 3 * 4096).every((x) => x === 0));
  assert.equal(out[3 * 4096], 1);
  await assert.rejects(dev.readv(3, [Buffer.alloc(8192)]), BlockDeviceError);
  await assert.rejects(dev.writev(0, [Buffer.alloc(100)]), /not a multiple/);
});
