import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo, Socket } from "node:net";
import { log } from "../util/log.js";
import { DrbdCommand, encodeHeader, ownedPacket, PacketFramer, P_DATA_HEAD } from "./protocol.js";
import { connectOwned, readsOwned } from "./owned_reads.js";
import { createPeerServer } from "./peer_address_filter.js";

const V = 101;

function pData(fill: number, bytes: number): Buffer {
  const head = Buffer.alloc(P_DATA_HEAD);
  head.writeBigUInt64BE(8n, 0);
  const data = Buffer.alloc(bytes, fill);
  return Buffer.concat([encodeHeader(DrbdCommand.Data, P_DATA_HEAD + bytes, V), head, data]);
}

describe("reads into a reused buffer", () => {
  it("framer: a packet cut by the read's end survives the buffer's reuse; taken payloads are copies", () => {
    const framer = new PacketFramer({ agreedVersion: V, socket: "data", scatterData: true });
    const barrier = Buffer.concat([
      encodeHeader(DrbdCommand.Barrier, 8, V),
      Buffer.from([0, 0, 0, 7, 0, 0, 0, 0]),
    ]);
    const stream = Buffer.concat([pData(0xa1, 8192), barrier, pData(0xb2, 8192)]);
    const reused = Buffer.alloc(stream.length);
    const cut = stream.length - 5000;
    stream.copy(reused, 0, 0, cut);
    framer.pushBorrowed(reused.subarray(0, cut));
    const first = framer.next();
    assert.ok(first?.rest && first.borrowed, "P_DATA's data is marked borrowed");
    const kept = ownedPacket(first);
    assert.equal(kept.borrowed, undefined);
    const b = framer.next();
    assert.equal(b?.header.command, DrbdCommand.Barrier);
    assert.equal(framer.next(), undefined, "the second P_DATA is incomplete");
    framer.retain();
    reused.fill(0xee); // the next read overwrites the buffer
    assert.deepEqual(b?.payload, barrier.subarray(barrier.length - 8), "a taken payload is a copy");
    assert.ok(
      (kept.rest as Buffer[]).every((s) => s.every((x) => x === 0xa1)),
      "the owned copy kept its data",
    );
    stream.copy(reused, 0, cut);
    framer.pushBorrowed(reused.subarray(0, stream.length - cut));
    const second = framer.next();
    framer.retain();
    const data = Buffer.concat(second?.rest ?? []);
    assert.equal(data.length, 8192);
    assert.ok(
      data.every((x) => x === 0xb2),
      "the part read before the reuse was copied in time",
    );
  });

  it("accepted and connected replication sockets both read into their own buffer, EOF included", async () => {
    const server = createPeerServer("127.0.0.1", log);
    server.listen(8300, "127.0.0.1");
    await once(server, "listening");
    try {
      const accepted = once(server, "connection") as Promise<[Socket]>;
      const client = connectOwned({ host: "127.0.0.1", port: (server.address() as AddressInfo).port });
      await once(client, "connect");
      const [peer] = await accepted;
      assert.ok(readsOwned(client) && readsOwned(peer));
      const got: Buffer[] = [];
      peer.on("data", (c: Buffer) => got.push(c));
      const ended = once(peer, "end");
      const payload = Buffer.alloc(1 << 20, 0x5c);
      client.end(payload);
      await ended;
      const all = Buffer.concat(got);
      assert.equal(all.length, payload.length);
      assert.ok(all.equals(payload));
      peer.end();
      await once(client, "close");
      peer.destroy();
    } finally {
      server.close();
    }
  });
});
