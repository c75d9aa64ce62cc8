import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect } from "node:net";
import {
  DrbdCommand,
  encodeConnectionFeatures,
  encodeHeader,
  frame,
  PacketFramer,
  type Packet,
} from "./protocol.js";
import { DrbdResourceConnection } from "./volume_connection.js";
import type { DrbdDevice } from "./device.js";
import type { WireProtocol } from "./connection.js";
import { HOST, pattern, sharedGenerationPair, type Pair } from "./test_support.js";
import type { AioBdev } from "../bdev/aio/aio.js";

// Ports 8200-8209 belong to these tests.

interface After {
  after: (fn: () => Promise<void>) => void;
}

/** A two-volume resource's connection on one node (volumes 0 and 1). */
function resourceLink(
  t: After,
  devs: DrbdDevice[],
  port: number,
  peerPort: number,
  protocol: WireProtocol = "C",
): DrbdResourceConnection {
  const c = new DrbdResourceConnection(
    devs.map((device, volume) => ({
      volume,
      options: {
        device,
        local: { host: HOST, port },
        peer: { host: HOST, port: peerPort },
        connectIntSec: 1,
        pingIntSec: 1,
        protocol,
        resyncRateKiB: 100000,
      },
    })),
  );
  t.after(() => c.disconnect());
  return c;
}

async function readBack(lower: AioBdev, offset: number, bytes: number): Promise<Buffer> {
  const b = Buffer.alloc(bytes);
  await lower.readv(offset / 512, [b]);
  return b;
}

async function until(cond: () => boolean | Promise<boolean>, ms = 10000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function twoVolumePairs(t: After): Promise<[Pair, Pair]> {
  return [await sharedGenerationPair(t, { sizeMiB: 16 }), await sharedGenerationPair(t, { sizeMiB: 16 })];
}

for (const [protocol, port] of [
  ["C", 8200],
  ["A", 8202],
] as [WireProtocol, number][]) {
  test(`two volumes, protocol ${protocol}: one socket pair, each volume's writes land on its own peer volume`, async (t) => {
    const [v0, v1] = await twoVolumePairs(t);
    const ca = resourceLink(t, [v0.a, v1.a], port, port + 1, protocol);
    const cb = resourceLink(t, [v0.b, v1.b], port + 1, port, protocol);
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    await v0.a.primary();
    await v1.a.primary();
    const d0 = pattern(64 * 1024, 3);
    const d1 = pattern(64 * 1024, 77);
    // Interleaved writes: the epochs span both volumes, so each P_BARRIER_ACK counts the writes of both.
    for (let i = 0; i < 8; i++) {
      await Promise.all([
        v0.a.writev(16 * i, [d0.subarray(8 * i * 1024, 8 * (i + 1) * 1024)]),
        v1.a.writev(16 * i, [d1.subarray(8 * i * 1024, 8 * (i + 1) * 1024)]),
      ]);
    }
    await until(
      async () =>
        (await readBack(v0.lowerB, 0, d0.length)).equals(d0) &&
        (await readBack(v1.lowerB, 0, d1.length)).equals(d1),
      5000,
      "both volumes' data on the peer",
    );
    const [l0, l1] = [...ca.volumes.values()];
    const [r0, r1] = [...cb.volumes.values()];
    assert.equal(r0.stats.receivedWrites, 8);
    assert.equal(r1.stats.receivedWrites, 8);
    assert.ok(l0.stats.barriersSent + l1.stats.barriersSent >= 7, "the epochs were closed");
    // Barrier acks with the wrong set_size would have dropped the connection (tl_release checks it).
    await until(() => l0.stats.barrierAcks > 0, 3000, "barrier acks");
    assert.equal(ca.state, "Connected");
    assert.equal(l1.state, "Connected");
    assert.equal(v0.a.bitmap.outOfSyncBits, 0);
    assert.equal(v1.a.bitmap.outOfSyncBits, 0);
    await until(() => r1.peerRole === "Primary", 2000, "volume 1's peer role");
  });
}

test("two volumes: a reconnect after writes to one volume resyncs only that volume", async (t) => {
  const [v0, v1] = await twoVolumePairs(t);
  const ca = resourceLink(t, [v0.a, v1.a], 8204, 8205);
  const cb = resourceLink(t, [v0.b, v1.b], 8205, 8204);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await v0.a.primary();
  await v1.a.primary();
  await cb.disconnect();
  await until(() => ca.state === "WFConnection", 5000, "WFConnection");
  const d1 = pattern(256 * 1024, 21);
  await v1.a.writev(2048, [d1]);
  assert.equal(v0.a.bitmap.outOfSyncBits, 0);
  assert.ok(v1.a.bitmap.outOfSyncBits > 0, "volume 1 has out-of-sync blocks");
  await cb.connect();
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  const [l0, l1] = [...ca.volumes.values()];
  const [r0, r1] = [...cb.volumes.values()];
  // Both volumes took a new generation when the peer went; both resync from this node, bitmap based
  // (drbd_uuid_compare rule 40/… → 1), and only volume 1's bitmap has bits.
  assert.equal(l1.lastDecision?.result, 1, "volume 1 resyncs from this node (bitmap based)");
  assert.ok((l0.lastDecision?.result ?? 0) >= 0, "volume 0 is not overwritten by the peer");
  await until(() => r1.state === "Connected", 5000, "volume 1's resync to end");
  assert.equal(r0.resyncStats.transferredBlocks, 0, "nothing of volume 0 resynced");
  assert.equal(r1.resyncStats.transferredBlocks, 64, "256 KiB of volume 1 resynced");
  assert.deepEqual(await readBack(v1.lowerB, 1024 * 1024, d1.length), d1);
  assert.equal(v1.a.bitmap.outOfSyncBits, 0);
});

test("two volumes: a peer that speaks only up to protocol 96 is refused (volume numbers need p_header100)", async (t) => {
  const [v0, v1] = await twoVolumePairs(t);
  const ca = resourceLink(t, [v0.a, v1.a], 8208, 8209);
  await ca.connect();
  // A hand-made peer: its two sockets, P_CONNECTION_FEATURES offering 86-96, our P_PROTOCOL echoed.
  const open = async (cmd: DrbdCommand) => {
    const s = connect({ port: 8208, host: HOST });
    await once(s, "connect");
    s.on("error", () => undefined);
    s.write(encodeHeader(cmd, 0, 0));
    t.after(() => s.destroy());
    return s;
  };
  const data = await open(DrbdCommand.InitialData);
  await open(DrbdCommand.InitialMeta);
  const framer = new PacketFramer();
  const packets: Packet[] = [];
  data.on("data", (c: Buffer) => {
    framer.push(c);
    for (let p = framer.next(); p; p = framer.next()) packets.push(p);
  });
  const next = async () => {
    await until(() => packets.length > 0, 5000, "a packet from the node");
    return packets.shift() as Packet;
  };
  assert.equal((await next()).header.command, DrbdCommand.ConnectionFeatures);
  for (const b of frame(
    DrbdCommand.ConnectionFeatures,
    encodeConnectionFeatures({ protocolMin: 86, protocolMax: 96, featureFlags: 0 }),
    0,
  ))
    data.write(b);
  framer.setAgreedVersion(96);
  const protocol = await next();
  assert.equal(protocol.header.command, DrbdCommand.Protocol);
  for (const b of frame(DrbdCommand.Protocol, protocol.payload, 96)) data.write(b);
  await ca.waitFor("StandAlone", 5000);
  assert.match(
    ca.error ?? "",
    /the peer agreed on protocol 96; a resource of 2 volumes needs 100 or later \(volume numbers travel in p_header100\)/,
  );
  assert.ok([...ca.volumes.values()].every((c) => c.state === "StandAlone"));
});
