import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { once } from "node:events";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { iovLength, type WriteOptions } from "../bdev/bdev.js";
import { createMetadata } from "./metadata.js";
import { DrbdDevice } from "./device.js";
import type { WireProtocol } from "./connection.js";
import { ForwardingDevice, HOST, link, MiB, pattern, sharedGenerationPair } from "./test_support.js";
import { DrbdCommand, encodeHeader } from "./protocol.js";

// Ports 7790-7799 belong to these tests; each test uses its own pair.
for (const [protocol, port] of [
  ["C", 7790],
  ["B", 7792],
  ["A", 7794],
] as [WireProtocol, number][]) {
  test(`protocol ${protocol}: a write on the Primary lands on the Secondary's lower device`, async (t) => {
    const { a, b, lowerB } = await sharedGenerationPair(t);
    const ca = link(t, a, port, port + 1, { protocol });
    const cb = link(t, b, port + 1, port, { protocol });
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    assert.equal(ca.lastDecision?.result, 0);
    await a.primary();
    const uuidBefore = a.uuids[0] & ~1n;
    const data = pattern(64 * 1024, 5);
    await a.writev(4096, [data.subarray(0, 4096), data.subarray(4096)]);
    await a.writev(100, [pattern(512, 9)], { fua: true });
    // Protocol A and B acknowledge before the peer's disk write: wait until it got there.
    // The second write is of a later epoch: it lands once the first epoch is written and flushed.
    const got = Buffer.alloc(data.length);
    const one = Buffer.alloc(512);
    const deadline = Date.now() + 5000;
    for (;;) {
      await lowerB.readv(4096, [got]);
      await lowerB.readv(100, [one]);
      if ((got.equals(data) && one.equals(pattern(512, 9))) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(got, data);
    assert.deepEqual(one, pattern(512, 9));
    assert.equal(a.bitmap.outOfSyncBits, 0, "mirrored writes are in sync");
    assert.equal(a.uuids[0] & ~1n, uuidBefore, "no new generation while the peer is connected");
    assert.equal(cb.stats.receivedWrites, 2);
    assert.ok(ca.stats.barriersSent >= 1, "the second write opened a new epoch");
    // The peer sees the Primary's state.
    const until = Date.now() + 2000;
    while (cb.peerRole !== "Primary" && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    assert.equal(cb.peerRole, "Primary");
    assert.equal(ca.peerDisk, "UpToDate");
    await assert.rejects(b.writev(0, [Buffer.alloc(512)]), /Secondary refuses writes/);
  });
}

test("shared secret: the right one connects, a wrong one goes StandAlone", async (t) => {
  const { a, b } = await sharedGenerationPair(t);
  const ca = link(t, a, 7796, 7797, { cramHmacAlg: "sha256", sharedSecret: "s3cret" });
  const cb = link(t, b, 7797, 7796, { cramHmacAlg: "sha256", sharedSecret: "s3cret" });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await Promise.all([ca.disconnect(), cb.disconnect()]);
  assert.equal(ca.state, "StandAlone");
  const wa = link(t, a, 7796, 7797, { cramHmacAlg: "sha256", sharedSecret: "s3cret" });
  const wb = link(t, b, 7797, 7796, { cramHmacAlg: "sha256", sharedSecret: "other" });
  await Promise.all([wa.connect(), wb.connect()]);
  await wa.waitFor("StandAlone");
  assert.match(wa.error ?? "", /authentication of peer failed/);
});

test("protocol A: a later write to the same block never lands before an earlier one on the peer", async (t) => {
  // The Primary completes each write once sent, so write n+1 may reach the peer while write n is still
  // being written there; the epoch (P_BARRIER) between them must keep their order (receive_Barrier).
  // The peer's disk takes longer for big writes, as a real one may: a reordering would show.
  const { a, b, lowerB } = await sharedGenerationPair(t, { wrapB: (l) => new SlowBigWrites(l) });
  const ca = link(t, a, 7944, 7945, { protocol: "A" });
  const cb = link(t, b, 7945, 7944, { protocol: "A" });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  const rounds = 20;
  for (let i = 1; i <= rounds; i++) {
    // A big write then a small one to the same first block: the small one is the faster to write.
    await a.writev(0, [pattern(256 * 1024, i)]);
    await a.writev(0, [pattern(512, 1000 + i)]);
  }
  const want = pattern(512, 1000 + rounds);
  const got = Buffer.alloc(512);
  const deadline = Date.now() + 10000;
  do {
    await new Promise((r) => setTimeout(r, 20));
    await lowerB.readv(0, [got]);
  } while (!got.equals(want) && Date.now() < deadline);
  // Settled: nothing older may overwrite it afterwards.
  await new Promise((r) => setTimeout(r, 300));
  await lowerB.readv(0, [got]);
  assert.ok(got.equals(want), "the peer holds the last write");
  const rest = Buffer.alloc(256 * 1024 - 512);
  await lowerB.readv(1, [rest]);
  assert.ok(rest.equals(pattern(256 * 1024, rounds).subarray(512)), "and the last big write around it");
});

for (const [diskFlushes, port] of [
  [true, 7946],
  [false, 7948],
] as [boolean, number][]) {
  test(`disk-flushes ${diskFlushes ? "yes: the peer flushes its disk between epochs" : "no: the peer does not flush between epochs"}`, async (t) => {
    let lowerOfB: SlowBigWrites | undefined;
    const { a, b } = await sharedGenerationPair(t, { wrapB: (l) => (lowerOfB = new SlowBigWrites(l)) });
    const ca = link(t, a, port, port + 1, { protocol: "C" });
    const cb = link(t, b, port + 1, port, { protocol: "C", diskFlushes });
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    await a.primary();
    await a.writev(0, [pattern(4096, 0)]); // the extent enters both activity logs
    const before = lowerOfB?.flushes ?? 0;
    // Each write after a completed one opens an epoch: 20 barriers.
    for (let i = 1; i <= 20; i++) await a.writev(0, [pattern(4096, i)]);
    await new Promise((r) => setTimeout(r, 200));
    const flushes = (lowerOfB?.flushes ?? 0) - before;
    if (diskFlushes) assert.ok(flushes >= 15, `only ${flushes} flushes for 20 epochs`);
    else assert.equal(flushes, 0, "no flush between epochs");
  });
}

test("disconnect, writes, reconnect: only the marked blocks are resynced, at resync-rate", async (t) => {
  const { a, b, lowerA, lowerB } = await sharedGenerationPair(t);
  const ca = link(t, a, 7798, 7799);
  const cb = link(t, b, 7799, 7798, { resyncRateKiB: 2048 });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  const shared = a.uuids[0] & ~1n;
  await cb.disconnect();
  await ca.waitFor("NetworkFailure", 5000).catch(() => ca.waitFor("WFConnection"));
  const written = pattern(1024 * 1024, 1); // 256 blocks of 4 KiB
  await a.writev(8192, [written]);
  await a.writev(40000, [pattern(512, 2)]); // one more block elsewhere
  assert.equal(a.bitmap.outOfSyncBits, 257);
  assert.equal(a.uuids[1] & ~1n, shared, "the bitmap counts from the shared generation");
  const onB = Buffer.alloc(written.length);
  await lowerB.readv(8192, [onB]);
  assert.notDeepEqual(onB, written);
  const started = Date.now();
  await cb.connect();
  await cb.waitFor("SyncTarget", 10000).catch(() => {});
  assert.equal(cb.lastDecision?.result, -1, "bitmap-based resync as target (rule 50)");
  // Application writes while the resync runs, over blocks still to be synced and partial blocks.
  const during = [pattern(4096, 21), pattern(512, 22), pattern(8192, 23)];
  await Promise.all([
    a.writev(8192 + 1016, [during[0] as Buffer]),
    a.writev(8192 + 1500, [during[1] as Buffer]),
    a.writev(8192 + 8, [during[2] as Buffer]),
  ]);
  await Promise.all([ca.waitFor("Connected", 15000), cb.waitFor("Connected", 15000)]);
  const elapsed = Date.now() - started;
  // A reply older than a write that came in after its request is dropped and asked for again.
  const requested = cb.resyncStats.requestedBlocks - cb.stats.staleResyncBlocks;
  assert.ok(requested <= 257, `at most the marked 4 KiB blocks were requested (${requested})`);
  assert.ok(requested >= 257 - 3, "writes during the resync cover at most 3 of them");
  assert.ok(elapsed >= 300, `1028 KiB at 2048 KiB/s took ${elapsed} ms`);
  const onA = Buffer.alloc(written.length);
  await lowerA.readv(8192, [onA]);
  await lowerB.readv(8192, [onB]);
  assert.ok(onB.equals(onA), "the target's copy equals the source's, including writes during the resync");
  assert.equal(a.bitmap.outOfSyncBits, 0);
  assert.equal(b.bitmap.outOfSyncBits, 0);
  assert.equal(b.disk, "UpToDate");
  assert.equal(b.uuids[0] & ~1n, a.uuids[0] & ~1n, "both sides share the generation again");
  assert.equal(a.uuids[1], 0n, "the source's bitmap UUID went to history");
});

test("first connect after create-md with one node forced Primary: full sync", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-full-"));
  const lowers = await Promise.all(
    ["a.img", "b.img"].map((f, i) =>
      AioBdev.open({ name: `full${i}`, path: join(dir, f), blockSize: 512, blockCount: (8 * MiB) / 512 }),
    ),
  );
  for (const l of lowers) await createMetadata(l, { placement: { kind: "internal" } });
  const [la, lb] = lowers as [AioBdev, AioBdev];
  const a = await DrbdDevice.attach({ minor: 0, lower: la });
  const b = await DrbdDevice.attach({ minor: 1, lower: lb });
  t.after(async () => {
    await a.close().catch(() => {});
    await b.close().catch(() => {});
    await la.close();
    await lb.close();
    await rm(dir, { recursive: true, force: true });
  });
  await a.primary({ force: true });
  const content = pattern(a.blockCount * 512, 3);
  await a.writev(0, [content]);
  const ca = link(t, a, 7790, 7791, { resyncRateKiB: 1 << 20 });
  const cb = link(t, b, 7791, 7790, { resyncRateKiB: 1 << 20 });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected", 20000), cb.waitFor("Connected", 20000)]);
  assert.equal(ca.lastDecision?.result, 2, "full sync as source (rule 30)");
  assert.equal(cb.resyncStats.requestedBlocks, b.layout.bmBits);
  const got = Buffer.alloc(content.length);
  await lb.readv(0, [got]);
  assert.ok(got.equals(content), "the target's disk equals the source's");
  assert.equal(b.disk, "UpToDate");
  assert.equal(b.uuids[0] & ~1n, a.uuids[0] & ~1n);
});

/** A fake peer at `port`: on the data socket it answers the feature packet with `reply` (then maybe EOF). */
async function fakePeer(
  t: { after: (fn: () => Promise<void>) => void },
  port: number,
  reply: Buffer,
  endAfter: boolean,
): Promise<void> {
  const open = new Set<Socket>();
  const fake = createServer((s: Socket) => {
    open.add(s);
    s.on("close", () => open.delete(s));
    s.on("error", () => {});
    let seen = Buffer.alloc(0);
    let isData: boolean | undefined;
    s.on("data", (c: Buffer) => {
      seen = Buffer.concat([seen, c]);
      if (isData === undefined && seen.length >= 8) isData = seen.readUInt16BE(4) === DrbdCommand.InitialData;
      // The initial packet (8 bytes) and then P_CONNECTION_FEATURES (8 + 72) arrived: answer.
      if (isData && seen.length >= 8 + 80) {
        seen = Buffer.alloc(0);
        isData = false;
        s.write(reply);
        if (endAfter) s.end();
      }
    });
  });
  fake.listen(port, HOST);
  await once(fake, "listening");
  t.after(
    () =>
      new Promise<void>((r) => {
        fake.close(() => r());
        for (const s of open) s.destroy();
      }),
  );
}

for (const [what, reply, endAfter, expected] of [
  ["wrong magic", Buffer.from("deadbeef00000000", "hex"), false, /wrong magic 0xdeadbeef/],
  [
    "oversized",
    encodeHeader(DrbdCommand.ConnectionFeatures, 200, 0),
    false,
    /oversized packet: P_CONNECTION_FEATURES has 72 bytes, got 200/,
  ],
  ["unknown command", encodeHeader(0x77, 0, 0), false, /unknown command 0x0077/],
  [
    "truncated",
    Buffer.concat([encodeHeader(DrbdCommand.ConnectionFeatures, 72, 0), Buffer.alloc(10)]),
    true,
    /truncated packet: P_CONNECTION_FEATURES payload has 10 of 72 bytes/,
  ],
] as [string, Buffer, boolean, RegExp][]) {
  test(`a peer sending a ${what} packet is dropped; the node keeps serving`, async (t) => {
    const { a } = await sharedGenerationPair(t);
    await fakePeer(t, 7793, reply, endAfter);
    const ca = link(t, a, 7792, 7793);
    await ca.connect();
    const until = Date.now() + 8000;
    while (!expected.test(ca.error ?? "") && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.match(ca.error ?? "", expected);
    assert.notEqual(ca.state, "Connected");
    await a.primary();
    await a.writev(0, [Buffer.alloc(512, 1)]);
    assert.equal(a.bitmap.outOfSyncBits, 1, "not mirrored: marked out of sync");
  });
}

test("split brain: both sides wrote alone, both go StandAlone and say so", async (t) => {
  const { a, b } = await sharedGenerationPair(t);
  await a.primary();
  await a.writev(0, [Buffer.alloc(512, 1)]);
  await a.secondary();
  await b.primary();
  await b.writev(0, [Buffer.alloc(512, 2)]);
  await b.secondary();
  const ca = link(t, a, 7794, 7795);
  const cb = link(t, b, 7795, 7794);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("StandAlone"), cb.waitFor("StandAlone")]);
  assert.match(ca.error ?? "", /Split-Brain detected but unresolved, dropping connection!/);
  assert.equal(Math.abs(ca.lastDecision?.result ?? 0), 100);
});

test("a peer that stops answering pings is dropped after ping-timeout", async (t) => {
  const { a, b } = await sharedGenerationPair(t);
  const ca = link(t, a, 7790, 7791, { pingIntSec: 1, pingTimeoutDs: 3 });
  const cb = link(t, b, 7791, 7790, { pingIntSec: 60 });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  // The peer's meta socket stops reading: P_PING stays unanswered.
  (cb as unknown as { meta: { socket: Socket } }).meta.socket.pause();
  const until = Date.now() + 5000;
  while (!/PingAck did not arrive/.test(ca.error ?? "") && Date.now() < until)
    await new Promise((r) => setTimeout(r, 20));
  assert.match(ca.error ?? "", /PingAck did not arrive in time \(300 ms\)/);
  assert.equal(a.bitmap.outOfSyncBits, 0);
});

/** A lower device whose writes of more than 4 KiB take 10 ms longer. */
class SlowBigWrites extends ForwardingDevice {
  override async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    if (iovLength(iov) > 4096) await new Promise((r) => setTimeout(r, 10));
    return this.lower.writev(lba, iov, options);
  }

  /** flush() calls so far. */
  flushes = 0;

  override flush(): Promise<void> {
    this.flushes++;
    return this.lower.flush();
  }
}
