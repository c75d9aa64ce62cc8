/**
 * Checksum-based resync (net { csums-alg }) between two real nodes on 127.0.0.1 (ports 8020-8027): after a
 * disconnect, the blocks the Primary changed travel as P_RS_DATA_REPLY and the blocks it rewrote with the
 * same data are answered P_RS_IS_IN_SYNC, counted on both sides; a full resync of identical disks after
 * invalidate sends no data; csums-after-crash-only and mismatched settings behave as DRBD 8.4's.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dataEqual, link, pattern, sharedGenerationPair, until, type Pair } from "./pair_fixture.js";
import type { ConnectionOptions, DrbdConnection } from "./connection.js";
import type { ResyncStats } from "./resync.js";

/** 512-byte LBA of 4 KiB block `n` (the pair's devices have 512-byte blocks). */
const lba = (n: number) => n * 8;

/** Blocks that change (new data) and blocks rewritten with the data they hold: never adjacent. */
const CHANGED = [3, 200, 777, 1500, 2900];
const SAME = [50, 1000, 2000];

async function connected(
  t: { after: (fn: () => Promise<void>) => void },
  port: number,
  extra: Partial<ConnectionOptions>,
): Promise<{ pair: Pair; ca: DrbdConnection; cb: DrbdConnection }> {
  const pair = await sharedGenerationPair(t, 16);
  // ping-timeout 3 s: on a loaded machine the default 500 ms may drop the link during the 16 MiB write.
  const opts = { pingTimeoutDs: 30, ...extra };
  const ca = link(t, pair.a.dev, port, port + 1, opts);
  const cb = link(t, pair.b.dev, port + 1, port, opts);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  return { pair, ca, cb };
}

/** Disconnect, change CHANGED and rewrite SAME on the Primary, reconnect, wait for the resync to end. */
async function resyncAfterShortDisconnect(
  pair: Pair,
  ca: DrbdConnection,
  cb: DrbdConnection,
): Promise<{ source: ResyncStats; target: ResyncStats }> {
  const dev = pair.a.dev;
  await dev.primary();
  // Data everywhere first (mirrored, so both copies hold it).
  await dev.writev(0, [pattern(dev.blockCount * dev.blockSize, 7)]);
  assert.ok(await dataEqual(pair));
  await ca.disconnect();
  await cb.disconnect();
  for (const [i, n] of CHANGED.entries()) await dev.writev(lba(n), [pattern(4096, 100 + i)]);
  for (const n of SAME) {
    const block = Buffer.alloc(4096);
    await dev.readv(lba(n), [block]);
    await dev.writev(lba(n), [block]);
  }
  assert.equal(dev.bitmap.outOfSyncBits, CHANGED.length + SAME.length, "each write marked one block");
  await Promise.all([ca.connect(), cb.connect()]);
  await until(() => cb.state === "SyncTarget" || cb.resyncStats.total > 0, 10000, "the resync to start");
  await Promise.all([ca.waitFor("Connected", 15000), cb.waitFor("Connected", 15000)]);
  await until(() => dev.bitmap.outOfSyncBits === 0, 5000, "the source's bitmap to clear");
  return { source: ca.resyncStats, target: cb.resyncStats };
}

for (const csumsAlg of ["crc32c", "md5", "sha1"]) {
  test(`csums-alg ${csumsAlg}: only the changed blocks are sent, the rewritten ones are in sync`, async (t) => {
    const { pair, ca, cb } = await connected(t, 8020, { csumsAlg });
    const { source, target } = await resyncAfterShortDisconnect(pair, ca, cb);
    assert.ok(await dataEqual(pair), "both disks equal");
    const want = { csums: true, transferredBlocks: CHANGED.length, sameCsumBlocks: SAME.length };
    const pick = (s: ResyncStats) => ({
      csums: s.csums,
      transferredBlocks: s.transferredBlocks,
      sameCsumBlocks: s.sameCsumBlocks,
    });
    assert.deepEqual(pick(target), want, "the SyncTarget received exactly the changed blocks");
    assert.deepEqual(pick(source), want, "the SyncSource sent exactly the changed blocks");
    assert.equal(target.requestedBlocks, CHANGED.length + SAME.length);
    assert.equal(pair.b.dev.bitmap.outOfSyncBits, 0);
    assert.equal(pair.b.dev.disk, "UpToDate");
  });
}

test("without csums-alg the same resync sends every marked block", async (t) => {
  const { pair, ca, cb } = await connected(t, 8022, {});
  const { source, target } = await resyncAfterShortDisconnect(pair, ca, cb);
  assert.ok(await dataEqual(pair));
  assert.equal(target.csums, false);
  assert.equal(target.transferredBlocks, CHANGED.length + SAME.length);
  assert.equal(source.transferredBlocks, CHANGED.length + SAME.length);
  assert.equal(target.sameCsumBlocks, 0);
});

test("csums-after-crash-only: no crashed Primary, so a plain resync", async (t) => {
  const { pair, ca, cb } = await connected(t, 8024, { csumsAlg: "crc32c", csumsAfterCrashOnly: true });
  const { target } = await resyncAfterShortDisconnect(pair, ca, cb);
  assert.ok(await dataEqual(pair));
  assert.equal(target.csums, false);
  assert.equal(target.transferredBlocks, CHANGED.length + SAME.length);
});

test("csums-alg: a full resync of identical disks after invalidate sends no data; a differing block is sent", async (t) => {
  const { pair, ca, cb } = await connected(t, 8026, { csumsAlg: "crc32c" });
  await pair.a.dev.primary();
  await until(() => cb.peerRole === "Primary", 2000, "peer role");
  // One 512-byte sector of B differs behind DRBD's back: its whole 4 KiB block must travel.
  await pair.b.lower.writev(lba(1234) + 3, [pattern(512, 9)]);
  await cb.invalidate();
  await Promise.all([ca.waitFor("Connected", 20000), cb.waitFor("Connected", 20000)]);
  const bits = pair.a.dev.bitmap.bits;
  const s = cb.resyncStats;
  assert.equal(s.total, bits, "full resync");
  // The digest covers one request, up to 32 blocks (128 KiB) merged as make_resync_request does: the
  // request holding the differing block travels whole, every other one is answered in sync.
  assert.ok(
    s.transferredBlocks >= 1 && s.transferredBlocks <= 32,
    `one request's blocks sent, not ${s.transferredBlocks}`,
  );
  assert.equal(s.sameCsumBlocks, bits - s.transferredBlocks);
  assert.equal(ca.resyncStats.transferredBlocks, s.transferredBlocks);
  assert.ok(await dataEqual(pair));
  assert.equal(pair.b.dev.disk, "UpToDate");

  // Identical disks now: another invalidate transfers nothing at all.
  await cb.invalidate();
  await Promise.all([ca.waitFor("Connected", 20000), cb.waitFor("Connected", 20000)]);
  assert.equal(cb.resyncStats.total, bits);
  assert.equal(cb.resyncStats.transferredBlocks, 0);
  assert.equal(cb.resyncStats.sameCsumBlocks, bits);
  assert.ok(await dataEqual(pair));
});

test("different csums-alg settings do not connect (receive_SyncParam's error)", async (t) => {
  const pair = await sharedGenerationPair(t, 4);
  const ca = link(t, pair.a.dev, 8026, 8027, { csumsAlg: "crc32c" });
  const cb = link(t, pair.b.dev, 8027, 8026, { csumsAlg: "md5" });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("StandAlone"), cb.waitFor("StandAlone")]);
  assert.equal(ca.error, 'Different csums-alg settings. me="crc32c" peer="md5"');
});
