import { test } from "node:test";
import assert from "node:assert/strict";
import type { TcmurDeviceBackend } from "../../tcmur/handler.js";
import { AccountedBdev } from "../accounted_bdev.js";
import { TcmurBdev } from "./tcmur.js";

/** A backend in memory that does compare-and-write and write-same itself and can be resized. */
function memoryBackend(size: number): TcmurDeviceBackend & { data: Buffer; grow(to: number): void } {
  const listeners: (() => void)[] = [];
  const b = {
    data: Buffer.alloc(size),
    sizeBytes: size,
    blockSize: 512,
    readOnly: false,
    volatileWriteCache: false,
    maxCompareAndWriteBytes: 512,
    async readv(iov: readonly Buffer[], offset: number) {
      for (const x of iov) {
        b.data.copy(x, 0, offset, offset + x.length);
        offset += x.length;
      }
    },
    async writev(iov: readonly Buffer[], offset: number) {
      for (const x of iov) {
        x.copy(b.data, offset);
        offset += x.length;
      }
    },
    async flush() {},
    async close() {},
    async compareAndWrite(offset: number, compare: Buffer, write: Buffer) {
      for (let i = 0; i < compare.length; i++) if (b.data[offset + i] !== compare[i]) return i;
      write.copy(b.data, offset);
      return -1;
    },
    async writeSame(offset: number, length: number, pattern: Buffer) {
      for (let at = offset; at < offset + length; at += pattern.length) pattern.copy(b.data, at);
    },
    onResize(fn: () => void) {
      listeners.push(fn);
    },
    grow(to: number) {
      b.data = Buffer.concat([b.data, Buffer.alloc(to - b.data.length)]);
      b.sizeBytes = to;
      for (const fn of listeners) fn();
    },
  };
  return b;
}

test("TCMUR bdev and its accounted wrapper pass on compare-and-write, write-same and resize events", async () => {
  const backend = memoryBackend(64 * 1024);
  const dev = new AccountedBdev(new TcmurBdev("m", 0, "/mem/x", backend, { name: "mem" }));
  assert.equal(typeof dev.compareAndWrite, "function");
  await dev.writeSame!(0, 4, Buffer.alloc(512, 0x11));
  assert.ok(backend.data.subarray(0, 2048).every((x) => x === 0x11));
  const cmp = Buffer.alloc(512, 0x11);
  assert.equal(await dev.compareAndWrite!(1, cmp, Buffer.alloc(512, 0x22)), -1);
  assert.equal(backend.data[512], 0x22);
  cmp[9] = 0;
  assert.equal(await dev.compareAndWrite!(2, cmp, Buffer.alloc(512, 0x33)), 9);
  assert.equal(backend.data[1024], 0x11, "a miscompare writes nothing");
  // Longer than the backend's atomic limit: compared and written by the TCMUR bdev itself.
  assert.equal(await dev.compareAndWrite!(2, Buffer.alloc(1024, 0x11), Buffer.alloc(1024, 0x44)), -1);
  assert.equal(backend.data[1024 + 1023], 0x44);
  assert.equal(dev.write.ops, 4, "write same and every compare-and-write count as writes");
  const seen: number[] = [];
  dev.onResize!((count) => seen.push(count));
  backend.grow(128 * 1024);
  assert.deepEqual(seen, [256]);
  assert.equal(dev.blockCount, 256);
});
