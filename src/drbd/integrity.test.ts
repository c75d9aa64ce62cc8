/**
 * net { data-integrity-alg }: the digest framing of data packets (the kernel's format: the digest between
 * p_data and the data, crc32c as the inverted CRC32C little-endian), replication between two connections
 * that agree on it, refusal when they do not, and a hand-made Primary whose P_DATA carries a wrong digest:
 * the Secondary drops the connection and writes nothing. Ports 8010-8017.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { DataIntegrity, isIntegrityAlg } from "./integrity.js";
import {
  decodeData,
  DP_SEND_WRITE_ACK,
  DrbdCommand,
  DrbdProtocolError,
  encodeConnectionFeatures,
  encodeData,
  encodeDataParts,
  encodeHeader,
  frame,
  PacketFramer,
  Role,
  type Packet,
} from "./protocol.js";
import { eventually, link, pattern, sharedGenerationPair } from "./test_support.js";
import { peerState } from "../../test/support/drbd_peer.js";

test("crc32c digest: 4 bytes, the inverted CRC32C little-endian (kernel shash), over the whole data", () => {
  const crc = new DataIntegrity("crc32c");
  assert.equal(crc.size, 4);
  // CRC-32C check value (RFC 3720 B.4): "123456789" → 0xE3069283.
  assert.deepEqual(crc.digest([Buffer.from("123456789")]), Buffer.from([0x83, 0x92, 0x06, 0xe3]));
  // Over several buffers the same as over their concatenation.
  assert.deepEqual(
    crc.digest([Buffer.from("1234"), Buffer.from("56789")]),
    crc.digest([Buffer.from("123456789")]),
  );
  const sha1 = new DataIntegrity("sha1");
  assert.equal(sha1.size, 20);
  const data = pattern(4096, 3);
  assert.deepEqual(
    sha1.digest([data.subarray(0, 100), data.subarray(100)]),
    createHash("sha1").update(data).digest(),
  );
  assert.equal(new DataIntegrity("md5").size, 16);
  assert.ok(isIntegrityAlg("sha256"));
  assert.ok(!isIntegrityAlg("crc99"));
  assert.throws(() => new DataIntegrity("crc99"), /not a known hash/);
});

test("P_DATA with a digest: p_data, digest, data; verified() checks it and leaves a payload that decodes as one without", () => {
  const crc = new DataIntegrity("crc32c");
  const data = pattern(8192, 5);
  const h = { sector: 1234, blockId: 0x1122334455667788n, seqNum: 9, dpFlags: DP_SEND_WRITE_ACK };
  const parts = encodeDataParts(h, crc.digest([data]), [data.subarray(0, 4096), data.subarray(4096)]);
  const payload = Buffer.concat(parts);
  assert.equal(payload.length, 24 + 4 + 8192);
  assert.deepEqual(payload.subarray(24, 28), crc.digest([data]));
  // The same bytes as encodeData + withDigest (the path of P_RS_DATA_REPLY).
  assert.deepEqual(
    Buffer.concat(crc.withDigest(encodeData({ ...h, digest: Buffer.alloc(0), data }))),
    payload,
  );
  const stripped = crc.verified(DrbdCommand.Data, Buffer.from(payload));
  const d = decodeData(stripped);
  assert.equal(d.sector, 1234);
  assert.equal(d.blockId, 0x1122334455667788n);
  assert.equal(d.seqNum, 9);
  assert.equal(d.dpFlags, DP_SEND_WRITE_ACK);
  assert.deepEqual(d.data, data);

  const bad = Buffer.from(payload);
  bad[24 + 4 + 100] ^= 1; // one bit of the data
  assert.throws(
    () => crc.verified(DrbdCommand.Data, bad),
    (e: Error) =>
      e instanceof DrbdProtocolError && /^Digest integrity check FAILED: 1234s \+8192$/.test(e.message),
  );
  assert.throws(() => crc.verified(DrbdCommand.Data, payload.subarray(0, 26)), /no room for a crc32c digest/);
});

for (const [alg, port] of [
  ["crc32c", 8010],
  ["sha1", 8012],
] as const) {
  test(`data-integrity-alg ${alg}: writes of 4 KiB to 1.5 MiB replicate intact`, async (t) => {
    const { a, b, lowerB } = await sharedGenerationPair(t);
    const ca = link(t, a, port, port + 1, { dataIntegrityAlg: alg });
    const cb = link(t, b, port + 1, port, { dataIntegrityAlg: alg });
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    await a.primary();
    const writes: [number, Buffer][] = [
      [0, pattern(4096, 1)],
      [64, pattern(65536, 2)],
      [4096, pattern(1536 * 1024, 3)], // two P_DATA (DRBD_MAX_BIO_SIZE is 1 MiB)
    ];
    await Promise.all(writes.map(([lba, data]) => a.writev(lba, [data])));
    for (const [lba, data] of writes) {
      const got = Buffer.alloc(data.length);
      await lowerB.readv(lba, [got]);
      assert.ok(got.equals(data), `the Secondary holds the write at LBA ${lba}`);
    }
    assert.equal(ca.state, "Connected");
    assert.equal(cb.state, "Connected");
    assert.equal(a.bitmap.outOfSyncBits, 0);
  });
}

test("different data-integrity-alg on the two nodes: both refuse (incompatible settings), StandAlone", async (t) => {
  const { a, b } = await sharedGenerationPair(t);
  const ca = link(t, a, 8014, 8015, { dataIntegrityAlg: "crc32c" });
  const cb = link(t, b, 8015, 8014);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("StandAlone"), cb.waitFor("StandAlone")]);
  assert.match(ca.error ?? "", /incompatible data-integrity-alg settings/);
  assert.match(cb.error ?? "", /incompatible data-integrity-alg settings/);
});

/** A Primary made by hand from protocol.ts: two sockets to the node, a handshake echoing its parameters. */
class HandMadePrimary {
  private readonly framer = new PacketFramer();
  private readonly metaFramer = new PacketFramer();
  readonly packets: Packet[] = [];
  readonly acks: Packet[] = [];
  closed = 0;

  private constructor(
    readonly data: Socket,
    readonly meta: Socket,
  ) {
    data.on("data", (c: Buffer) => {
      this.framer.push(c);
      for (let p = this.framer.next(); p; p = this.framer.next()) this.packets.push(p);
    });
    meta.on("data", (c: Buffer) => {
      this.metaFramer.push(c);
      for (let p = this.metaFramer.next(); p; p = this.metaFramer.next()) this.acks.push(p);
    });
    for (const s of [data, meta]) {
      s.on("error", () => undefined);
      s.on("close", () => this.closed++);
    }
  }

  static async open(port: number): Promise<HandMadePrimary> {
    const sock = async (cmd: DrbdCommand) => {
      const s = connect({ port, host: "127.0.0.1" });
      await once(s, "connect");
      s.write(encodeHeader(cmd, 0, 0));
      return s;
    };
    const data = await sock(DrbdCommand.InitialData);
    const meta = await sock(DrbdCommand.InitialMeta);
    return new HandMadePrimary(data, meta);
  }

  async next(): Promise<Packet> {
    assert.ok(
      await eventually(() => this.packets.length > 0 || this.closed > 0, 10000),
      "a packet from the node",
    );
    const p = this.packets.shift();
    assert.ok(p, `the node closed the sockets during the handshake`);
    return p;
  }

  send(sock: Socket, cmd: DrbdCommand, payload: Buffer | Buffer[], agreed = 101): void {
    for (const b of frame(cmd, payload, agreed)) sock.write(b);
  }

  /** Features (agreed 101), then the node's own P_PROTOCOL / P_SYNC_PARAM89 / P_SIZES / P_UUIDS echoed, P_STATE as an UpToDate Primary. */
  async handshake(): Promise<void> {
    assert.equal((await this.next()).header.command, DrbdCommand.ConnectionFeatures);
    this.send(
      this.data,
      DrbdCommand.ConnectionFeatures,
      encodeConnectionFeatures({ protocolMin: 86, protocolMax: 101, featureFlags: 0 }),
      0, // before agreement: an h80 header
    );
    this.framer.setAgreedVersion(101);
    this.metaFramer.setAgreedVersion(101);
    const want = new Set([
      DrbdCommand.Protocol,
      DrbdCommand.SyncParam89,
      DrbdCommand.Sizes,
      DrbdCommand.Uuids,
      DrbdCommand.State,
    ]);
    while (want.size > 0) {
      const p = await this.next();
      const cmd = p.header.command;
      want.delete(cmd);
      if (cmd === DrbdCommand.State) this.send(this.data, cmd, peerState(Role.Primary));
      else this.send(this.data, cmd, p.payload);
    }
  }

  destroy(): void {
    this.data.destroy();
    this.meta.destroy();
  }
}

test("a P_DATA whose crc32c digest does not match: the Secondary logs the failure, drops the connection, writes nothing", async (t) => {
  const { b, lowerB } = await sharedGenerationPair(t);
  const cb = link(t, b, 8016, 8017, { dataIntegrityAlg: "crc32c" });
  await cb.connect();
  const peer = await HandMadePrimary.open(8016);
  t.after(() => peer.destroy());
  await peer.handshake().catch((e: Error) => {
    throw new Error(`${e.message}: ${cb.state} ${cb.error ?? ""}`);
  });
  await cb.waitFor("Connected");
  const crc = new DataIntegrity("crc32c");

  // A good P_DATA first: written and acknowledged (the hand-made peer's framing is right).
  const good = pattern(4096, 21);
  const h = { sector: 0, blockId: 77n, seqNum: 1, dpFlags: DP_SEND_WRITE_ACK };
  peer.send(peer.data, DrbdCommand.Data, encodeDataParts(h, crc.digest([good]), [good]));
  assert.ok(
    await eventually(() => peer.acks.some((p) => p.header.command === DrbdCommand.WriteAck), 10000),
    "P_WRITE_ACK for the good block",
  );
  const got = Buffer.alloc(4096);
  await lowerB.readv(0, [got]);
  assert.ok(got.equals(good));

  // Then one whose data was changed after the digest was computed.
  const before = Buffer.alloc(4096);
  await lowerB.readv(64, [before]);
  const sent = pattern(4096, 22);
  const digest = crc.digest([sent]);
  const corrupted = Buffer.from(sent);
  corrupted[1000] ^= 0x40;
  const bad = { sector: 64, blockId: 78n, seqNum: 2, dpFlags: DP_SEND_WRITE_ACK };
  peer.send(peer.data, DrbdCommand.Data, encodeDataParts(bad, digest, [corrupted]));
  assert.ok(await eventually(() => peer.closed === 2, 10000), "the Secondary closed both sockets");
  assert.match(cb.error ?? "", /^Digest integrity check FAILED: 64s \+4096$/);
  assert.ok(
    !peer.acks.some((p) => p.header.command === DrbdCommand.WriteAck && p.payload.readBigUInt64BE(8) === 78n),
    "no ack for the bad block",
  );
  const after = Buffer.alloc(4096);
  await lowerB.readv(64, [after]);
  assert.ok(after.equals(before), "nothing of the bad block was written");
  assert.ok(["WFConnection", "ProtocolError", "Unconnected"].includes(cb.state), cb.state);
});
