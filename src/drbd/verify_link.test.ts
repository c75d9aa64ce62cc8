/**
 * Online verify between two real nodes on 127.0.0.1 (ports 7910-7913): P_OV_REQUEST / P_OV_REPLY /
 * P_OV_RESULT, blocks corrupted behind DRBD's back on the Secondary's lower device found exactly, kept out of
 * sync until a disconnect/connect resyncs them, then a second verify finds nothing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dataEqual, link, pattern, sharedGenerationPair, until } from "./pair_fixture.js";
import type { VerifyAlg } from "./verify.js";

test("verify: an in-sync pair finds 0; N corrupted blocks are found exactly; reconnect resyncs them; then 0", async (t) => {
  const pair = await sharedGenerationPair(t, 8);
  const { a, b } = pair;
  const alg: VerifyAlg = "sha1";
  const ca = link(t, a.dev, 7910, 7911, { verifyAlg: alg, resyncRateKiB: 4096 });
  const cb = link(t, b.dev, 7911, 7910, { verifyAlg: alg, resyncRateKiB: 4096 });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.dev.primary();
  await a.dev.writev(64, [pattern(3 * 4096, 3)]); // mirrored writes are no difference
  const bits = a.dev.bitmap.bits;

  await ca.startVerify();
  assert.equal(ca.state, "VerifyS");
  await until(() => cb.state === "VerifyT", 2000, "VerifyT on the peer");
  // 8 MiB at 4 MiB/s: still running a moment later, with progress.
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(ca.state, "VerifyS");
  const done = ca.resyncDone ?? -1;
  assert.ok(done > 0 && done < 100, `progress ${done}`);
  assert.equal(ca.lastVerify?.running, true);
  await assert.rejects(ca.startVerify(), /\(-8\) Can not start OV\/resync since it is already active/);
  await Promise.all([ca.waitFor("Connected", 10000), cb.waitFor("Connected", 10000)]);
  assert.deepEqual(ca.lastVerify, {
    running: false,
    checkedBlocks: bits,
    outOfSyncBlocks: 0,
    totalBlocks: bits,
  });
  assert.deepEqual(cb.lastVerify, ca.lastVerify);

  // Behind DRBD's back: three 4 KiB blocks (one only partly) change on the Secondary's lower device.
  const corrupt = [5, 700, bits - 1];
  for (const blk of corrupt) await b.lower.writev((blk * 4096) / 512 + 1, [pattern(512, 99)]);
  await ca.startVerify();
  await Promise.all([ca.waitFor("Connected", 10000), cb.waitFor("Connected", 10000)]);
  assert.equal(ca.lastVerify?.outOfSyncBlocks, corrupt.length);
  assert.equal(cb.lastVerify?.outOfSyncBlocks, corrupt.length);
  for (const blk of corrupt) {
    assert.ok(a.dev.bitmap.test(blk), `block ${blk} marked on VerifyS`);
    assert.ok(b.dev.bitmap.test(blk), `block ${blk} marked on VerifyT`);
  }
  assert.equal(a.dev.bitmap.outOfSyncBits, corrupt.length, "only those");
  assert.equal(await dataEqual(pair), false, "not resynced by verify itself");

  // Disconnect/connect with a Primary: its new generation makes a bitmap-based resync that carries them.
  await ca.disconnect();
  await cb.disconnect();
  await Promise.all([ca.connect(), cb.connect()]);
  await until(
    () => ca.lastDecision?.result === 1 && ca.state === "Connected" && cb.state === "Connected",
    10000,
    "resync",
  );
  assert.equal(cb.resyncStats.requestedBlocks, corrupt.length);
  assert.ok(await dataEqual(pair), "resynced");
  await ca.startVerify();
  await Promise.all([ca.waitFor("Connected", 10000), cb.waitFor("Connected", 10000)]);
  assert.equal(ca.lastVerify?.outOfSyncBlocks, 0);
  assert.equal(ca.lastVerify?.checkedBlocks, bits);
});

for (const alg of ["md5", "sha256", "crc32c"] as VerifyAlg[]) {
  test(`verify-alg ${alg} finds a corrupted block`, async (t) => {
    const { a, b } = await sharedGenerationPair(t, 4);
    const ca = link(t, a.dev, 7912, 7913, { verifyAlg: alg });
    const cb = link(t, b.dev, 7913, 7912, { verifyAlg: alg });
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    await a.lower.writev(100 * 8, [pattern(4096, 1)]);
    await cb.startVerify(); // the Secondary may verify as well
    await Promise.all([ca.waitFor("Connected", 10000), cb.waitFor("Connected", 10000)]);
    assert.equal(cb.lastVerify?.outOfSyncBlocks, 1);
    assert.ok(a.dev.bitmap.test(100) && b.dev.bitmap.test(100));
  });
}

test("verify without verify-alg is refused with drbdsetup's error; different verify-alg settings do not connect", async (t) => {
  const { a, b } = await sharedGenerationPair(t, 4);
  const ca = link(t, a.dev, 7912, 7913);
  const cb = link(t, b.dev, 7913, 7912);
  await assert.rejects(
    ca.startVerify(),
    /State change failed: \(-15\) Need a connection to start verify or resync/,
  );
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await assert.rejects(
    ca.startVerify(),
    /drbd0: State change failed: \(-14\) Need a verify algorithm to start online verify/,
  );
  assert.equal(ca.state, "Connected");
  await ca.disconnect();
  await cb.disconnect();
  const ca2 = link(t, a.dev, 7912, 7913, { verifyAlg: "sha1" });
  const cb2 = link(t, b.dev, 7913, 7912, { verifyAlg: "md5" });
  await Promise.all([ca2.connect(), cb2.connect()]);
  await Promise.all([ca2.waitFor("StandAlone"), cb2.waitFor("StandAlone")]);
  assert.equal(ca2.error, 'Different verify-alg settings. me="sha1" peer="md5"');
});

test("both nodes start verify at once: one run (RESOLVE_CONFLICTS wins), the other gets (-19)", async (t) => {
  const { a, b } = await sharedGenerationPair(t, 4);
  const ca = link(t, a.dev, 7912, 7913, { verifyAlg: "md5" });
  const cb = link(t, b.dev, 7913, 7912, { verifyAlg: "md5" });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  const results = await Promise.allSettled([ca.startVerify(), cb.startVerify()]);
  const ok = results.filter((r) => r.status === "fulfilled");
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
  assert.equal(ok.length, 1, "exactly one run");
  assert.equal(refused.length, 1);
  assert.match(String(refused[0]?.reason), /\(-19\) Concurrent state changes detected and aborted/);
  await Promise.all([ca.waitFor("Connected", 10000), cb.waitFor("Connected", 10000)]);
  assert.equal(ca.lastVerify?.checkedBlocks, a.dev.bitmap.bits);
  assert.equal(cb.lastVerify?.checkedBlocks, a.dev.bitmap.bits);
  assert.equal(ca.lastVerify?.outOfSyncBlocks, 0);
});
