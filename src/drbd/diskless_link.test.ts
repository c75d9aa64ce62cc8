/**
 * A node without its disk on a real link (ports 8252-8263): a connected Primary detaches and goes on
 * through the peer's disk (Diskless/UpToDate); a detached node connects to an UpToDate peer in either
 * order of connecting (drbd_receiver.c receive_sizes, receive_uuids, receive_state without a sync
 * handshake); two Diskless nodes do not connect.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dataEqual, link, pattern, sharedGenerationPair, until } from "./pair_fixture.js";
import type { Node } from "./pair_fixture.js";

const KiB = 1024;

async function lowerRead(n: Node, offset: number, bytes: number): Promise<Buffer> {
  const b = Buffer.alloc(bytes);
  await n.lower.readv(offset / 512, [b]);
  return b;
}

test("a connected Primary detaches: Diskless, its writes and reads go to the peer's disk, which tracks them", async (t) => {
  const pair = await sharedGenerationPair(t, 16);
  const ca = link(t, pair.a.dev, 8252, 8253);
  const cb = link(t, pair.b.dev, 8253, 8252);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await pair.a.dev.primary();
  await until(() => cb.peerRole === "Primary", 2000, "peer role");
  const before = pattern(64 * KiB, 1);
  await pair.a.dev.writev(0, [before]);
  const bUuidsBefore = pair.b.dev.uuids;

  await pair.a.dev.detach();
  assert.equal(pair.a.dev.disk, "Diskless");
  assert.equal(pair.a.dev.role, "Primary");
  await until(() => cb.peerDisk === "Diskless", 2000, "peer disk Diskless");
  assert.equal(ca.state, "Connected", "the detach does not drop the connection");
  // after_state_ch "lost contact to peer's copy": the peer starts a new generation and tracks from it.
  await until(() => pair.b.dev.uuids[1] !== 0n, 2000, "the peer's new generation");
  assert.equal(pair.b.dev.uuids[1] & ~1n, bUuidsBefore[0] & ~1n, "bitmap UUID = the old current");

  const data = pattern(128 * KiB, 2);
  const offset = 1024 * KiB;
  await pair.a.dev.writev(offset / pair.a.dev.blockSize, [data]);
  assert.ok((await lowerRead(pair.b, offset, data.length)).equals(data), "the write is on the peer's disk");
  assert.ok(!(await lowerRead(pair.a, offset, data.length)).equals(data), "not on the detached disk");
  assert.equal(pair.b.dev.bitmap.outOfSyncKiB, 128, "the peer marks the Diskless Primary's writes");
  const back = Buffer.alloc(data.length);
  await pair.a.dev.readv(offset / pair.a.dev.blockSize, [back]);
  assert.ok(back.equals(data), "the Diskless Primary reads through the peer");
  const old = Buffer.alloc(before.length);
  await pair.a.dev.readv(0, [old]);
  assert.ok(old.equals(before), "data written before the detach reads back through the peer");
});

for (const first of ["diskless", "uptodate"] as const) {
  test(`a detached node connects to an UpToDate peer (${first} node connects first) and writes through it as Primary`, async (t) => {
    const port = first === "diskless" ? 8254 : 8256;
    const pair = await sharedGenerationPair(t, 16);
    await pair.a.dev.detach();
    assert.equal(pair.a.dev.disk, "Diskless");
    const ca = link(t, pair.a.dev, port, port + 1);
    const cb = link(t, pair.b.dev, port + 1, port);
    const [x, y] = first === "diskless" ? [ca, cb] : [cb, ca];
    await x.connect();
    await new Promise((r) => setTimeout(r, 300));
    await y.connect();
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    assert.equal(ca.peerDisk, "UpToDate");
    assert.equal(cb.peerDisk, "Diskless");
    assert.equal(pair.b.dev.disk, "UpToDate", "no resync, no change on the disk side");

    // Primary without a disk: Need access to UpToDate data is met by the peer's disk.
    await pair.a.dev.primary();
    await until(() => cb.peerRole === "Primary", 2000, "peer role");
    await until(() => pair.b.dev.uuids[1] !== 0n, 2000, "the disk side's new generation");
    const data = pattern(64 * KiB, 7);
    const offset = 2048 * KiB;
    await pair.a.dev.writev(offset / pair.a.dev.blockSize, [data]);
    assert.ok((await lowerRead(pair.b, offset, data.length)).equals(data), "the write is on the peer's disk");
    assert.equal(pair.b.dev.bitmap.outOfSyncKiB, 64);
    const back = Buffer.alloc(data.length);
    await pair.a.dev.readv(offset / pair.a.dev.blockSize, [back]);
    assert.ok(back.equals(data));
  });
}

test("two Diskless nodes do not connect: some backing storage is needed", async (t) => {
  const pair = await sharedGenerationPair(t, 16);
  await pair.a.dev.detach();
  await pair.b.dev.detach();
  const ca = link(t, pair.a.dev, 8258, 8259);
  const cb = link(t, pair.b.dev, 8259, 8258);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("StandAlone", 5000), cb.waitFor("StandAlone", 5000)]);
  assert.match(ca.error ?? "", /some backing storage is needed/);
});

test("re-attach to a connected Diskless Primary: the blocks written meanwhile are resynced, then UpToDate", async (t) => {
  const pair = await sharedGenerationPair(t, 16);
  const ca = link(t, pair.a.dev, 8260, 8261);
  const cb = link(t, pair.b.dev, 8261, 8260);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await pair.a.dev.primary();
  await until(() => cb.peerRole === "Primary", 2000, "peer role");
  await pair.a.dev.writev(0, [pattern(64 * KiB, 1)]);
  await pair.a.dev.detach();
  await until(() => pair.b.dev.uuids[1] !== 0n, 2000, "the peer's new generation");
  const bs = pair.a.dev.blockSize;
  // Written while Diskless: only on the peer, which marks them.
  const writes = [
    [512 * KiB, pattern(128 * KiB, 2)],
    [4096 * KiB, pattern(4 * KiB, 3)],
  ] as const;
  for (const [off, data] of writes) await pair.a.dev.writev(off / bs, [data]);
  assert.equal(pair.b.dev.bitmap.outOfSyncKiB, 132);

  await ca.attachWhileConnected(() => pair.a.dev.reattach(() => {}));
  // A write during the resync goes to both disks.
  const during = pattern(8 * KiB, 4);
  await pair.a.dev.writev((8192 * KiB) / bs, [during]);
  await until(() => pair.a.dev.disk === "UpToDate" && ca.state === "Connected", 10000, "UpToDate again");
  await until(() => cb.state === "Connected" && cb.peerDisk === "UpToDate", 5000, "the peer sees UpToDate");
  assert.equal(pair.a.dev.role, "Primary");
  // The 33 blocks written while Diskless, and at most the 2 of the write during the resync: no full sync.
  const requested = ca.resyncStats.requestedBlocks;
  assert.ok(requested >= 33 && requested <= 35, `${requested} blocks resynced`);
  for (const [off, data] of writes)
    assert.ok((await lowerRead(pair.a, off, data.length)).equals(data), `re-attached disk has ${off}`);
  assert.equal(pair.a.dev.bitmap.outOfSyncKiB, 0);
  assert.equal(pair.b.dev.bitmap.outOfSyncKiB, 0);
  assert.ok(await dataEqual(pair), "both disks equal");
  assert.equal(pair.a.dev.uuids[0] & ~1n, pair.b.dev.uuids[0] & ~1n, "one data generation");
});
