import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect, type Socket } from "node:net";
import { once } from "node:events";
import { DrbdCommand, encodeBarrier, frame } from "./protocol.js";
import { PacketStream, RawSocket } from "./packet_stream.js";
import { routeOf, VolumeRouter } from "./volume_router.js";

// Port 8220 belongs to these tests.

/** A connected TCP socket pair on 127.0.0.1: [ours, the peer's]. */
async function socketPair(t: { after: (fn: () => void) => void }): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(8220, "127.0.0.1");
  await once(server, "listening");
  const accepted = once(server, "connection") as Promise<[Socket]>;
  const out = connect(8220, "127.0.0.1");
  const [inSock] = await accepted;
  await once(out, "connect").catch(() => {});
  server.close();
  t.after(() => {
    out.destroy();
    inSock.destroy();
  });
  return [inSock, out];
}

/** A stream agreed on protocol 101 (p_header100 with volume numbers). */
function stream(s: Socket, kind: "data" | "meta"): PacketStream {
  const p = new PacketStream(new RawSocket(s), kind);
  p.setAgreedVersion(101);
  return p;
}

test("routeOf: the epoch and the connection's own packets are not any one volume's", () => {
  assert.equal(routeOf(DrbdCommand.Barrier), "every-volume");
  assert.equal(routeOf(DrbdCommand.BarrierAck), "every-volume");
  assert.equal(routeOf(DrbdCommand.ProtocolUpdate), "every-volume");
  assert.equal(routeOf(DrbdCommand.Ping), "connection");
  assert.equal(routeOf(DrbdCommand.PingAck), "connection");
  assert.equal(routeOf(DrbdCommand.ConnStChgReq), "connection");
  for (const c of [
    DrbdCommand.Data,
    DrbdCommand.Sizes,
    DrbdCommand.Uuids,
    DrbdCommand.State,
    DrbdCommand.StateChgReq,
    DrbdCommand.StateChgReply,
    DrbdCommand.WriteAck,
    DrbdCommand.Bitmap,
    DrbdCommand.RsDataRequest,
    DrbdCommand.SyncParam89,
  ])
    assert.equal(routeOf(c), "volume");
});

test("VolumeRouter: packets go to the volume their p_header100 names, in order", async (t) => {
  const [mine, peer] = await socketPair(t);
  const [mineMeta, peerMeta] = await socketPair(t);
  const lost: Error[] = [];
  const router = new VolumeRouter(stream(mine, "data"), stream(mineMeta, "meta"), [0, 3], (e) =>
    lost.push(e),
  );
  const got: string[] = [];
  const v0 = router.data(0);
  const v3 = router.data(3);
  v0.dispatch(
    (p) => got.push(`0:${p.header.command}:${p.payload.length}`),
    (e) => lost.push(e),
  );
  // Volume 3 reads in sequence (as a handshake does) while volume 0 dispatches.
  const first3 = v3.next(2000);
  peer.write(Buffer.concat(frame(DrbdCommand.Sizes, Buffer.alloc(40), 101, 3)));
  peer.write(Buffer.concat(frame(DrbdCommand.Uuids, Buffer.alloc(48), 101, 0)));
  peer.write(Buffer.concat(frame(DrbdCommand.Barrier, encodeBarrier(7), 101, 0)));
  peer.write(Buffer.concat(frame(DrbdCommand.State, Buffer.alloc(4), 101, 3)));
  const a = await first3;
  assert.equal(a.header.command, DrbdCommand.Sizes);
  assert.equal(a.header.volume, 3);
  // The barrier reached volume 3 too, before the P_STATE that followed it.
  assert.equal((await v3.next(2000)).header.command, DrbdCommand.Barrier);
  assert.equal((await v3.next(2000)).header.command, DrbdCommand.State);
  assert.deepEqual(got, [`0:${DrbdCommand.Uuids}:48`, `0:${DrbdCommand.Barrier}:8`]);
  // A meta-socket P_PING (volume 0 on the wire) goes to the first volume.
  const ping = router.meta(0).next(2000);
  peerMeta.write(Buffer.concat(frame(DrbdCommand.Ping, Buffer.alloc(0), 101, 0)));
  assert.equal((await ping).header.command, DrbdCommand.Ping);
  // A packet for a volume the resource has not drops the connection with a clear error.
  peer.write(Buffer.concat(frame(DrbdCommand.Data, Buffer.alloc(24), 101, 5)));
  const end = Date.now() + 2000;
  while (lost.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.match(lost[0]?.message ?? "", /P_DATA for volume 5, which is not configured/);
});

test("VolumeRouter: a P_BARRIER for a volume reading in sequence goes straight to its write receiver", async (t) => {
  const [mine, peer] = await socketPair(t);
  const [mineMeta] = await socketPair(t);
  const sidelined: number[] = [];
  const router = new VolumeRouter(
    stream(mine, "data"),
    stream(mineMeta, "meta"),
    [0, 1],
    () => {},
    (v, p) => sidelined.push(v, p.payload.readUInt32BE(0)),
  );
  const got: number[] = [];
  router.data(0).dispatch(
    (p) => got.push(p.header.command),
    () => {},
  );
  // Volume 1 is in its bitmap exchange: it reads its view in sequence.
  const next1 = router.data(1).next(2000);
  peer.write(Buffer.concat(frame(DrbdCommand.Data, Buffer.alloc(24), 101, 0)));
  peer.write(Buffer.concat(frame(DrbdCommand.Barrier, encodeBarrier(9), 101, 0)));
  peer.write(Buffer.concat(frame(DrbdCommand.Bitmap, Buffer.alloc(16), 101, 1)));
  assert.equal(
    (await next1).header.command,
    DrbdCommand.Bitmap,
    "volume 1's sequential reader sees no barrier",
  );
  assert.deepEqual(got, [DrbdCommand.Data, DrbdCommand.Barrier]);
  assert.deepEqual(sidelined, [1, 9]);
});
