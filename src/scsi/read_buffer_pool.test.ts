import assert from "node:assert/strict";
import { test } from "node:test";
import { ReadBufferPool } from "./read_buffer_pool.js";

test("ReadBufferPool: size classes from 4 KiB to 1 MiB, reused only after give()", () => {
  const pool = new ReadBufferPool(1 << 20);
  const a = pool.take(32768);
  assert.equal(a.length, 32768);
  const b = pool.take(20000);
  assert.equal(b.length, 32768, "rounded up to its class");
  assert.notEqual(a.buffer, b.buffer, "nothing handed out twice while held");
  assert.equal(pool.take(4096).length, 4096);
  assert.equal(pool.take(4097).length, 8192);
  assert.equal(pool.take(1 << 20).length, 1 << 20);
  pool.give(a);
  assert.equal(pool.idle, 32768);
  assert.equal(pool.take(30000), a, "the given buffer serves the next read of its class");
  assert.equal(pool.idle, 0);
  assert.deepEqual([pool.allocated, pool.reused], [5, 1]);
});

test("ReadBufferPool: small, huge and foreign buffers are not kept; idle bytes stay under the capacity", () => {
  const pool = new ReadBufferPool(65536);
  const small = pool.take(512);
  const huge = pool.take((1 << 20) + 4096);
  assert.equal(small.length, 512);
  assert.equal(huge.length, (1 << 20) + 4096);
  pool.give(small);
  pool.give(huge);
  pool.give(Buffer.alloc(8192).subarray(0, 4096)); // a slice of another buffer
  pool.give(pool.take(65536).subarray(0, 32768)); // a slice of a pooled one
  assert.equal(pool.idle, 0);
  const held = [pool.take(32768), pool.take(32768), pool.take(32768)];
  for (const b of held) pool.give(b);
  assert.equal(pool.idle, 65536, "the third is dropped: capacity 64 KiB");
  assert.equal(pool.dropped, 1);
});

test("ReadBufferPool: class buffers come from the given allocator (e.g. page-aligned memory)", () => {
  const made: number[] = [];
  const pool = new ReadBufferPool(1 << 20, (bytes) => {
    made.push(bytes);
    return Buffer.allocUnsafeSlow(bytes);
  });
  const a = pool.take(6000);
  pool.take(100); // below the smallest class: not the allocator's
  pool.give(a);
  assert.equal(pool.take(8192), a);
  assert.deepEqual(made, [8192]);
});
