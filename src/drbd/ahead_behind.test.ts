/**
 * net { on-congestion pull-ahead | disconnect } with protocol A (drbd_req.c maybe_pull_ahead,
 * receive_out_of_sync, got_BarrierAck → start_resync_timer). Ports 7930-7935.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { DrbdConnection, type ConnectionOptions } from "./connection.js";
import { eventually, link, MiB, pattern, sharedGenerationPair } from "./test_support.js";
import type { DrbdConnection as Conn } from "./connection.js";

/**
 * The peer stops reading its data socket: nothing it is sent gets written or acknowledged. Writes are 16 KiB
 * and the thresholds 32 KiB, so what waits in the socket stays far below any socket buffer and a protocol A
 * write (complete once handed to the kernel) never waits for the paused peer.
 */
function dataSocket(c: Conn): Socket {
  return (c as unknown as { data: { socket: Socket } }).data.socket;
}

const KiB = 1024;

test("protocol A pull-ahead: a stalled peer makes the Primary Ahead and the peer Behind, then resync, Connected, disks equal", async (t) => {
  const { a, b, lowerA, lowerB } = await sharedGenerationPair(t);
  const opts: Partial<ConnectionOptions> = {
    protocol: "A",
    onCongestion: "pull-ahead",
    congestionFillSectors: 64, // 32 KiB in flight
    resyncRateKiB: 1 << 16,
  };
  const ca = link(t, a, 7930, 7931, opts);
  const cb = link(t, b, 7931, 7930, opts);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  const seenA = new Set<string>();
  const seenB = new Set<string>();
  const watcher = setInterval(() => {
    seenA.add(ca.state);
    seenB.add(cb.state);
  }, 2);
  t.after(() => clearInterval(watcher));

  const peer = dataSocket(cb);
  peer.pause();
  const base = 2048; // LBA: 1 MiB into the device
  const chunk = 16 * KiB;
  let i = 0;
  for (; i < 16 && ca.state !== "Ahead"; i++) await a.writev(base + (i * chunk) / 512, [pattern(chunk, i)]);
  assert.equal(ca.state, "Ahead", `Ahead after ${i} writes of 16 KiB with congestion-fill 32 KiB`);
  assert.ok(i >= 2 && i <= 4, `the threshold was reached after ${i} writes`);
  assert.ok(ca.inFlightSectors >= 64);
  // Writes while Ahead are not sent: marked here and announced with P_OUT_OF_SYNC.
  const sentBefore = ca.stats.sentWrites;
  for (let j = 0; j < 6; j++, i++) await a.writev(base + (i * chunk) / 512, [pattern(chunk, i)]);
  assert.equal(ca.stats.sentWrites, sentBefore, "no P_DATA while Ahead");
  // The write that found the link congested is the first one marked (maybe_pull_ahead runs before sending).
  assert.equal(ca.stats.outOfSyncSent, 7);
  assert.equal(a.bitmap.outOfSyncBits, (7 * chunk) / 4096, "the Ahead writes are marked out of sync");
  assert.equal(ca.state, "Ahead", "still Ahead while the peer does not read");

  peer.resume();
  // More writes while the peer catches up (Behind) and while it resyncs.
  for (let j = 0; j < 4; j++, i++) {
    await a.writev(base + (i * chunk) / 512, [pattern(chunk, 100 + i)]);
    await new Promise((r) => setTimeout(r, 150));
  }
  assert.ok(
    await eventually(() => ca.state === "Connected" && cb.state === "Connected", 15000),
    `back to Connected (now ${ca.state} / ${cb.state})`,
  );
  assert.ok(seenB.has("Behind"), `the peer was Behind (${[...seenB].join(",")})`);
  assert.ok(seenA.has("SyncSource"), `the Primary resynced as SyncSource (${[...seenA].join(",")})`);
  assert.ok(seenB.has("SyncTarget"));
  assert.equal(ca.stats.wentAhead, 1);
  assert.equal(cb.stats.wentBehind, 1);
  assert.equal(cb.stats.outOfSyncReceived, ca.stats.outOfSyncSent, "every P_OUT_OF_SYNC arrived");
  assert.ok(cb.resyncStats.requestedBlocks >= 1, "the marked blocks were requested");
  assert.ok(cb.resyncStats.requestedBlocks <= (ca.stats.outOfSyncSent * chunk) / 4096, "only marked blocks");
  assert.equal(a.bitmap.outOfSyncBits, 0);
  assert.equal(b.bitmap.outOfSyncBits, 0);
  assert.equal(b.disk, "UpToDate");
  assert.equal(b.uuids[0] & ~1n, a.uuids[0] & ~1n, "one generation again");
  const bytes = a.blockCount * 512;
  const onA = Buffer.alloc(bytes);
  const onB = Buffer.alloc(bytes);
  await lowerA.readv(0, [onA]);
  assert.ok(
    await eventually(async () => {
      await lowerB.readv(0, [onB]);
      return onA.equals(onB);
    }),
    "the lower devices are byte-equal",
  );
});

test("protocol A on-congestion disconnect: a stalled peer makes the Primary StandAlone; writes go on", async (t) => {
  const { a, b } = await sharedGenerationPair(t);
  const opts: Partial<ConnectionOptions> = {
    protocol: "A",
    onCongestion: "disconnect",
    congestionFillSectors: 64,
  };
  const ca = link(t, a, 7932, 7933, opts);
  const cb = link(t, b, 7933, 7932, { protocol: "A" });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  dataSocket(cb).pause();
  const chunk = 16 * KiB;
  let i = 0;
  for (; i < 16 && ca.state === "Connected"; i++) await a.writev((i * chunk) / 512, [pattern(chunk, i)]);
  assert.equal(ca.state, "StandAlone");
  assert.match(ca.error ?? "", /on-congestion disconnect: congestion-fill threshold reached/);
  await a.writev((20 * chunk) / 512, [pattern(chunk, 20)]);
  assert.ok(a.bitmap.outOfSyncBits >= chunk / 4096, "writes after the disconnect are marked out of sync");
});

test("on-congestion other than block needs protocol A", (t) => {
  void t;
  const dev = { name: "drbd9" } as unknown as ConnectionOptions["device"];
  const endpoint = { host: "127.0.0.1", port: 7934 };
  for (const protocol of ["B", "C"] as const)
    assert.throws(
      () =>
        new DrbdConnection({
          device: dev,
          local: endpoint,
          peer: endpoint,
          protocol,
          onCongestion: "pull-ahead",
        }),
      new RegExp(`drbd9: net \\{ on-congestion pull-ahead; \\} needs protocol A, not ${protocol}`),
    );
  assert.doesNotThrow(
    () =>
      new DrbdConnection({
        device: dev,
        local: endpoint,
        peer: endpoint,
        protocol: "C",
        onCongestion: "block",
      }),
  );
});

test("congestion-extents: a write holding as many activity-log extents pulls ahead; nothing in flight, so the resync follows", async (t) => {
  const { a, b, lowerA, lowerB } = await sharedGenerationPair(t, { sizeMiB: 64 });
  const opts: Partial<ConnectionOptions> = {
    protocol: "A",
    onCongestion: "pull-ahead",
    congestionExtents: 7,
    resyncRateKiB: 1 << 20,
  };
  const ca = link(t, a, 7934, 7935, opts);
  const cb = link(t, b, 7935, 7934, opts);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  // Six extents in use: below the limit, mirrored.
  await a.writev(0, [pattern(24 * MiB, 1)]);
  assert.equal(ca.state, "Connected");
  assert.equal(a.bitmap.outOfSyncBits, 0);
  // Starting 2 MiB into extent 6, 26 MiB reach into extent 12: seven extents held by one write.
  const big = pattern(26 * MiB, 2);
  await a.writev((26 * MiB) / 512, [big]);
  assert.equal(ca.stats.wentAhead, 1);
  assert.equal(ca.stats.outOfSyncSent, 1);
  assert.ok(await eventually(() => ca.state === "Connected" && cb.state === "Connected", 20000));
  assert.equal(cb.stats.wentBehind, 1);
  assert.equal(cb.resyncStats.requestedBlocks, big.length / 4096, "exactly the marked blocks were resynced");
  const onA = Buffer.alloc(big.length);
  const onB = Buffer.alloc(big.length);
  await lowerA.readv((26 * MiB) / 512, [onA]);
  await lowerB.readv((26 * MiB) / 512, [onB]);
  assert.ok(onA.equals(big) && onB.equals(big), "both lower devices hold the write");
  assert.equal(b.disk, "UpToDate");
});

test("the Behind peer drops out while the Primary is Ahead: after reconnecting, the bitmap-based resync covers every marked block", async (t) => {
  const { a, b, lowerA, lowerB } = await sharedGenerationPair(t);
  const opts: Partial<ConnectionOptions> = {
    protocol: "A",
    onCongestion: "pull-ahead",
    congestionFillSectors: 64,
    resyncRateKiB: 1 << 16,
  };
  const ca = link(t, a, 7926, 7927, opts);
  const cb = link(t, b, 7927, 7926, opts);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  dataSocket(cb).pause();
  const chunk = 16 * KiB;
  let i = 0;
  for (; i < 8; i++) await a.writev((i * chunk) / 512, [pattern(chunk, i)]);
  assert.equal(ca.state, "Ahead");
  await cb.disconnect();
  assert.ok(await eventually(() => ca.state !== "Ahead"), "the Primary noticed the loss");
  for (; i < 12; i++) await a.writev((i * chunk) / 512, [pattern(chunk, i)]);
  await cb.connect();
  assert.ok(
    await eventually(() => ca.state === "Connected" && cb.state === "Connected", 15000),
    `Connected again (${ca.state} / ${cb.state}, ${cb.error ?? ""})`,
  );
  assert.equal(cb.lastDecision?.result, -1, "bitmap-based resync as target");
  const bytes = 12 * chunk;
  const onA = Buffer.alloc(bytes);
  const onB = Buffer.alloc(bytes);
  await lowerA.readv(0, [onA]);
  await lowerB.readv(0, [onB]);
  const bad: number[] = [];
  for (let k = 0; k < 12; k++)
    if (!onA.subarray(k * chunk, (k + 1) * chunk).equals(onB.subarray(k * chunk, (k + 1) * chunk)))
      bad.push(k);
  assert.deepEqual(bad, [], "the peer caught up with the writes made while Ahead and while apart");
  assert.equal(a.bitmap.outOfSyncBits, 0);
  assert.equal(b.disk, "UpToDate");
});
