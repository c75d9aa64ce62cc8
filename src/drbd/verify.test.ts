import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { isVerifyAlg, verifyDigest, VerifyRun, VERIFY_ALGS } from "./verify.js";

test("verify digests: sha1 20, md5 16, sha256 32, crc32c 4 bytes; any change in the block changes them", () => {
  const block = Buffer.alloc(4096, 0x5a);
  const other = Buffer.from(block);
  other[4095] = 0;
  const sizes: Record<string, number> = { sha1: 20, md5: 16, sha256: 32, crc32c: 4 };
  for (const alg of VERIFY_ALGS) {
    assert.equal(verifyDigest(alg, block).length, sizes[alg]);
    assert.notDeepEqual(verifyDigest(alg, block), verifyDigest(alg, other), alg);
  }
  assert.deepEqual(verifyDigest("sha256", block), createHash("sha256").update(block).digest());
  // CRC-32C check value of "123456789" (RFC 3720 B.4 polynomial): 0xE3069283, sent little-endian.
  assert.equal(verifyDigest("crc32c", Buffer.from("123456789")).readUInt32LE(0), 0xe3069283);
  assert.equal(isVerifyAlg("crc32"), false);
});

test("a verify run requests every 4 KiB block once, the last one short, within resync-rate", async () => {
  const run = new VerifyRun("VerifyS", 5, 4 * 4096 + 1024);
  const first = run.nextRequests(8); // 8 KiB/s: the bucket starts empty, one 4 KiB block fits after 0.5 s
  assert.equal(first.length, 0);
  await new Promise((r) => setTimeout(r, 600));
  const some = run.nextRequests(8);
  assert.equal(some.length, 1);
  const rest = run.nextRequests(1_000_000);
  await new Promise((r) => setTimeout(r, 20));
  rest.push(...run.nextRequests(1_000_000));
  const all = [...some, ...rest];
  assert.deepEqual(
    all.map((r) => r.sector),
    [0, 8, 16, 24, 32],
  );
  assert.equal(all[4]?.size, 1024);
  assert.equal(run.allRequested, true);
  for (const same of [true, false, true, true, false]) run.result(same);
  assert.equal(run.done, true);
  assert.deepEqual(run.counters(false), {
    running: false,
    checkedBlocks: 5,
    outOfSyncBlocks: 2,
    totalBlocks: 5,
  });
});
