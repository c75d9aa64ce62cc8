import { test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import {
  BitmapTransfer,
  DrbdCommand,
  DrbdProtocolError,
  PacketFramer,
  PRO_VERSION_MAX,
  PRO_VERSION_MIN,
  makeChallenge,
  type Packet,
  Role,
  ConnState,
  DiskState,
  DP_SEND_WRITE_ACK,
  DP_FUA,
  FF_WSAME,
  ID_SYNCER,
  ID_OUT_OF_SYNC,
  authResponse,
  checkPeerChallenge,
  commandName,
  decodeBarrierAck,
  decodeBlockAck,
  decodeBlockDesc,
  decodeBlockRequest,
  decodeConnectionFeatures,
  decodeData,
  decodeHeader,
  decodePlainBitmapChunk,
  decodeProtocol,
  decodeRleBitmapChunk,
  decodeSizes,
  decodeState,
  decodeStateChangeReply,
  decodeSyncParams,
  decodeTrim,
  decodeUuids,
  encodeBarrier,
  encodeBarrierAck,
  encodeBitmapPackets,
  encodeBlockAck,
  encodeBlockDesc,
  encodeBlockRequest,
  encodeConnectionFeatures,
  encodeData,
  encodeHeader,
  encodeProtocol,
  encodeSizes,
  encodeState,
  encodeStateChangeReply,
  encodeStateChangeRequest,
  encodeSyncParams,
  encodeSyncUuid,
  encodeTrim,
  encodeUuids,
  frame,
  negotiateFeatures,
  packState,
  convertPeerState,
  protocolMismatch,
  stateMask,
  unpackState,
  verifyAuthResponse,
  vliDecode,
  vliEncode,
} from "./protocol.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
const cat = (parts: Buffer[]) => Buffer.concat(parts);

test("protocol: command numbers and names follow drbd_protocol.h", () => {
  assert.equal(DrbdCommand.Data, 0x00);
  assert.equal(DrbdCommand.StateChgReq, 0x12);
  assert.equal(DrbdCommand.Ping, 0x13);
  assert.equal(DrbdCommand.StateChgReply, 0x1d);
  assert.equal(DrbdCommand.CompressedBitmap, 0x24);
  assert.equal(DrbdCommand.OutOfSync, 0x28);
  assert.equal(DrbdCommand.ProtocolUpdate, 0x2d);
  assert.equal(DrbdCommand.Trim, 0x31);
  assert.equal(DrbdCommand.Zeroes, 0x36);
  assert.equal(DrbdCommand.ConnectionFeatures, 0xfffe);
  assert.equal(commandName(DrbdCommand.RsDataRequest), "P_RS_DATA_REQUEST");
  assert.equal(commandName(DrbdCommand.SyncParam89), "P_SYNC_PARAM89");
  assert.equal(commandName(0x99), "unknown command 0x0099");
});

test("protocol: h80, h95 and h100 headers as the kernel picks them", () => {
  assert.deepEqual(encodeHeader(DrbdCommand.Ping, 0, 0), hex("83740267 0013 0000"));
  assert.deepEqual(encodeHeader(DrbdCommand.Data, 4120, 96), hex("83740267 0000 1018"));
  assert.deepEqual(encodeHeader(DrbdCommand.Data, 40000, 96), hex("835a 0000 00009c40"));
  assert.deepEqual(
    encodeHeader(DrbdCommand.Data, 40000, 94),
    hex("83740267 0000 9c40"),
    "h95 only from 95 on",
  );
  assert.throws(() => encodeHeader(DrbdCommand.Data, 70000, 94), /does not fit an h80 header/);
  assert.deepEqual(encodeHeader(DrbdCommand.Data, 4120, 100, 3), hex("8620ec20 0003 0000 00001018 00000000"));
  assert.deepEqual(decodeHeader(hex("8620ec20 0003 0016 00000018 00000000"), 101), {
    kind: "h100",
    volume: 3,
    command: DrbdCommand.WriteAck,
    length: 24,
  });
  assert.deepEqual(decodeHeader(hex("835a 0000 00009c40"), 99), {
    kind: "h95",
    volume: 0,
    command: 0,
    length: 40000,
  });
  assert.deepEqual(decodeHeader(hex("83740267 fffe 0048"), 0), {
    kind: "h80",
    volume: 0,
    command: DrbdCommand.ConnectionFeatures,
    length: 72,
  });
  assert.throws(() => decodeHeader(hex("8620ec20 0000 0013 00000000 00000001"), 100), /padding is not zero/);
  assert.throws(
    () => decodeHeader(hex("83740267 0013 0000 0000000000000000"), 100),
    /wrong magic 0x83740267 for protocol version 100/,
  );
  assert.throws(() => decodeHeader(hex("deadbeef 0013 0000"), 90), /wrong magic 0xdeadbeef/);
});

test("protocol: P_CONNECTION_FEATURES bytes and version negotiation", () => {
  const mine = { protocolMin: 86, protocolMax: 101, featureFlags: 0 };
  const wire = cat(frame(DrbdCommand.ConnectionFeatures, encodeConnectionFeatures(mine), 0));
  assert.deepEqual(wire, cat([hex("83740267 fffe 0048 00000056 00000000 00000065"), Buffer.alloc(60)]));
  const kernel = decodeConnectionFeatures(cat([hex("00000056 0000000f 00000065"), Buffer.alloc(60)]));
  assert.deepEqual(kernel, { protocolMin: 86, protocolMax: 101, featureFlags: 0xf });
  assert.deepEqual(negotiateFeatures(mine, kernel), { agreedVersion: 101, agreedFeatures: 0 });
  assert.deepEqual(negotiateFeatures(mine, { protocolMin: 86, protocolMax: 124, featureFlags: 0 }), {
    agreedVersion: 101,
    agreedFeatures: 0,
  });
  const old = decodeConnectionFeatures(cat([hex("00000058 00000000 00000000"), Buffer.alloc(60)]));
  assert.equal(old.protocolMax, 88, "protocol_max 0 means the same as protocol_min");
  assert.match(
    String(negotiateFeatures(mine, { protocolMin: 110, protocolMax: 117, featureFlags: 0 })),
    /incompatible DRBD dialects/,
  );
  assert.throws(() => decodeConnectionFeatures(Buffer.alloc(70)), /must be 72 bytes, got 70/);
});

test("protocol: CRAM-HMAC answers with HMAC(shared-secret, peer challenge)", () => {
  // RFC 2202 test case 2 for HMAC-SHA1.
  const challenge = Buffer.from("what do ya want for nothing?");
  assert.deepEqual(authResponse("sha1", "Jefe", challenge), hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
  assert.ok(verifyAuthResponse("sha1", "Jefe", challenge, hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")));
  assert.ok(!verifyAuthResponse("sha1", "jefe", challenge, hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")));
  assert.ok(!verifyAuthResponse("sha1", "Jefe", challenge, hex("effcdf6a")));
  const mine = Buffer.alloc(64, 1);
  assert.equal(checkPeerChallenge(Buffer.alloc(64, 2), mine), undefined);
  assert.equal(checkPeerChallenge(Buffer.alloc(64, 1), mine), "peer presented the same challenge");
  assert.equal(checkPeerChallenge(Buffer.alloc(100, 1), mine), "peer presented the same challenge");
  assert.equal(checkPeerChallenge(Buffer.alloc(63), mine), "AuthChallenge payload too small");
  assert.equal(checkPeerChallenge(Buffer.alloc(129), mine), "AuthChallenge payload too big");
  assert.throws(() => authResponse("nosuchalg", "x", mine), /cram-hmac-alg nosuchalg is not available/);
});

test("protocol: P_PROTOCOL with and without integrity-alg", () => {
  const p = {
    protocol: 3,
    afterSb0p: 0,
    afterSb1p: 8,
    afterSb2p: 0,
    connFlags: 0,
    twoPrimaries: false,
    integrityAlg: "",
  };
  const b = encodeProtocol(p, 101);
  assert.deepEqual(b, hex("00000003 00000000 00000008 00000000 00000000 00000000 00"));
  assert.deepEqual(decodeProtocol(b, 101), p);
  const c = encodeProtocol({ ...p, integrityAlg: "crc32c", twoPrimaries: true }, 101);
  assert.deepEqual(c.subarray(20), cat([hex("00000001"), Buffer.from("crc32c\0")]));
  assert.equal(decodeProtocol(c, 101).integrityAlg, "crc32c");
  assert.equal(encodeProtocol(p, 86).length, 24, "protocol 86 has no integrity-alg field");
  // receive_protocol's compatibility rules: discard-local on one side pairs with discard-remote on the other.
  const a = { ...p, afterSb0p: 5 };
  assert.equal(protocolMismatch(a, { ...p, afterSb0p: 6 }), undefined);
  assert.equal(protocolMismatch(a, { ...p, afterSb0p: 5 }), "after-sb-0pri");
  assert.equal(protocolMismatch(a, { ...a, afterSb0p: 6, protocol: 1 }), "protocol");
  assert.equal(protocolMismatch(a, { ...a, afterSb0p: 6, integrityAlg: "crc32c" }), "data-integrity-alg");
  assert.equal(
    protocolMismatch({ ...a, connFlags: 1 }, { ...a, afterSb0p: 6, connFlags: 1 }),
    "discard-my-data",
  );
  assert.equal(protocolMismatch(a, { ...a, afterSb0p: 6, twoPrimaries: true }), "allow-two-primaries");
});

test("protocol: P_SYNC_PARAM89 layout at protocol 95+ and before", () => {
  const p = {
    resyncRate: 40000,
    verifyAlg: "sha1",
    csumsAlg: "",
    cPlanAhead: 0,
    cDelayTarget: 10,
    cFillTarget: 100,
    cMaxRate: 102400,
  };
  const { command, payload } = encodeSyncParams(p, 101);
  assert.equal(command, DrbdCommand.SyncParam89);
  assert.equal(payload.length, 148);
  assert.deepEqual(payload.subarray(0, 8), hex("00009c40 73686131"));
  assert.deepEqual(payload.subarray(132), hex("00000000 0000000a 00000064 00019000"));
  assert.deepEqual(decodeSyncParams(payload, 101), p);
  assert.equal(encodeSyncParams(p, 90).payload.length, 132);
  assert.deepEqual(encodeSyncParams(p, 88), {
    command: DrbdCommand.SyncParam,
    payload: cat([hex("00009c40"), Buffer.from("sha1\0")]),
  });
  assert.deepEqual(encodeSyncParams(p, 87).payload, hex("00009c40"));
  assert.throws(
    () => decodeSyncParams(Buffer.alloc(200), 101),
    /SyncParam packet too long: 200 bytes, at most 148/,
  );
  assert.throws(
    () => decodeSyncParams(Buffer.alloc(140), 101),
    /truncated P_SYNC_PARAM89 at protocol ≥95: 140 of 148/,
  );
});

test("protocol: P_UUIDS, P_SYNC_UUID and P_SIZES bytes", () => {
  const u = {
    current: 0x1122334455667789n,
    bitmap: 0n,
    history: [0xaan, 4n] as [bigint, bigint],
    bitsSet: 3n,
    flags: 8n,
  };
  const b = encodeUuids(u);
  assert.deepEqual(
    b,
    hex(
      "1122334455667789 0000000000000000 00000000000000aa 0000000000000004 0000000000000003 0000000000000008",
    ),
  );
  assert.deepEqual(decodeUuids(b), u);
  assert.deepEqual(encodeSyncUuid(0x0001000000000004n), hex("0001000000000004"));
  const s = {
    diskSize: 2097016,
    userSize: 0,
    currentSize: 0,
    maxBioSize: 1 << 20,
    queueOrderType: 0,
    ddsFlags: 0,
  };
  const sb = encodeSizes(s);
  assert.deepEqual(sb, hex("00000000001fff78 0000000000000000 0000000000000000 00100000 0000 0000"));
  assert.deepEqual(decodeSizes(sb), s);
  assert.equal(encodeSizes(s, FF_WSAME).length, 56, "o_qlim follows when WSAME is agreed");
  assert.throws(() => decodeSizes(sb, FF_WSAME), /P_SIZES must be 56 bytes, got 32/);
});

test("protocol: P_STATE packs role/peer/conn/disk/pdsk into the kernel's bit positions", () => {
  const st = {
    role: Role.Primary,
    peer: Role.Secondary,
    conn: ConnState.Connected,
    disk: DiskState.UpToDate,
    pdsk: DiskState.Inconsistent,
  };
  const v = packState(st);
  assert.equal(v, 1 | (2 << 2) | (10 << 4) | (8 << 9) | (4 << 13));
  assert.deepEqual(encodeState(unpackState(v)), hex("000090a9"));
  const back = decodeState(hex("000090a9"));
  assert.deepEqual(
    [back.role, back.peer, back.conn, back.disk, back.pdsk, back.susp],
    [1, 2, 10, 8, 4, false],
  );
  assert.equal(stateMask(["role"]), 3);
  assert.equal(stateMask(["conn", "pdsk"]), (0x1f << 4) | (0xf << 13));
  assert.deepEqual(
    encodeStateChangeRequest(stateMask(["role"]), packState({ role: Role.Primary })),
    hex("00000003 00000001"),
  );
  assert.deepEqual(encodeStateChangeReply(-19), hex("ffffffed"));
  assert.equal(decodeStateChangeReply(hex("ffffffed")), -19);
  // A peer asking "make me Primary" (mask role, val Primary) reads here as "peer becomes Primary".
  const mask = convertPeerState(stateMask(["role"]));
  const val = convertPeerState(packState({ role: Role.Primary }));
  assert.equal(mask, stateMask(["peer"]));
  assert.equal(unpackState(val).peer, Role.Primary);
  // StartingSyncS on the peer is StartingSyncT here; disk and pdsk swap; a full conn mask stays full.
  const req = convertPeerState(
    packState({ conn: ConnState.StartingSyncS, disk: DiskState.UpToDate, pdsk: DiskState.Inconsistent }),
  );
  assert.deepEqual(
    [unpackState(req).conn, unpackState(req).disk, unpackState(req).pdsk],
    [ConnState.StartingSyncT, DiskState.Inconsistent, DiskState.UpToDate],
  );
  assert.equal(convertPeerState(stateMask(["conn"])), stateMask(["conn"]));
  assert.equal(
    unpackState(convertPeerState(packState({ conn: ConnState.Disconnecting }))).conn,
    ConnState.TearDown,
  );
  assert.equal(unpackState(convertPeerState(packState({ userIsp: true }))).peerIsp, true);
});

test("protocol: P_DATA with digest and data, acks, requests, barriers, out-of-sync, trim", () => {
  const data = Buffer.alloc(512, 0xab);
  const parts = encodeData({
    sector: 8,
    blockId: 0xffff888012345678n,
    seqNum: 7,
    dpFlags: DP_SEND_WRITE_ACK | DP_FUA,
    digest: hex("01020304"),
    data,
  });
  assert.equal(parts[2], data, "data is passed through, not copied");
  const payload = cat(parts);
  assert.deepEqual(
    payload.subarray(0, 28),
    hex("0000000000000008 ffff888012345678 00000007 00000110 01020304"),
  );
  const d = decodeData(payload, 4);
  assert.deepEqual(
    [d.sector, d.blockId, d.seqNum, d.dpFlags, d.digest, d.data.length],
    [8, 0xffff888012345678n, 7, 0x110, hex("01020304"), 512],
  );
  assert.throws(() => decodeData(payload.subarray(0, 100), 4), /not a multiple of 512/);
  assert.throws(() => decodeData(Buffer.alloc(24 + (1 << 20) + 512)), /exceeds 1048576/);

  const ack = { sector: 8, blockId: 0xffff888012345678n, size: 512, seqNum: 7 };
  assert.deepEqual(encodeBlockAck(ack), hex("0000000000000008 ffff888012345678 00000200 00000007"));
  assert.deepEqual(decodeBlockAck(encodeBlockAck(ack)), ack);
  const req = cat(encodeBlockRequest({ sector: 2048, blockId: ID_SYNCER, size: 4096 }));
  assert.deepEqual(req, hex("0000000000000800 ffffffffffffffff 00001000 00000000"));
  assert.deepEqual(decodeBlockRequest(req), {
    sector: 2048,
    blockId: ID_SYNCER,
    size: 4096,
    digest: Buffer.alloc(0),
  });
  assert.deepEqual(decodeBlockRequest(cat([req, hex("aabb")])).digest, hex("aabb"));
  assert.deepEqual(encodeBarrier(0x1234), hex("00001234 00000000"));
  assert.deepEqual(decodeBarrierAck(encodeBarrierAck(0x1234, 17)), { barrier: 0x1234, setSize: 17 });
  assert.deepEqual(encodeBlockDesc(16, 8192), hex("0000000000000010 00002000 00000000"));
  assert.deepEqual(decodeBlockDesc(hex("0000000000000010 00002000 00000000")), { sector: 16, size: 8192 });
  const trim = encodeTrim({ sector: 0, blockId: 1n, seqNum: 0, dpFlags: 64 }, 1 << 20);
  assert.deepEqual(trim.subarray(20), hex("00000040 00100000"));
  assert.equal(decodeTrim(trim).size, 1 << 20);
});

test("protocol: resync, verify and liveness packets as whole frames (h100, volume 2)", () => {
  // SyncTarget asks for 4 KiB at sector 8 (block_id ID_SYNCER); SyncSource answers with the data.
  const req = cat(
    frame(
      DrbdCommand.RsDataRequest,
      encodeBlockRequest({ sector: 8, blockId: ID_SYNCER, size: 4096 }),
      101,
      2,
    ),
  );
  assert.deepEqual(
    req,
    hex("8620ec20 0002 0009 00000018 00000000 0000000000000008 ffffffffffffffff 00001000 00000000"),
  );
  // checksum-based resync and online verify carry the digest after p_block_req.
  const csum = cat(
    frame(
      DrbdCommand.CsumRsRequest,
      encodeBlockRequest({ sector: 8, blockId: ID_SYNCER, size: 4096, digest: hex("deadbeef") }),
      101,
      2,
    ),
  );
  assert.deepEqual(csum.subarray(0, 16), hex("8620ec20 0002 0021 0000001c 00000000"));
  assert.deepEqual(decodeBlockRequest(csum.subarray(16)).digest, hex("deadbeef"));
  // P_OV_RESULT says out of sync with block_id 4712.
  const ov = cat(
    frame(
      DrbdCommand.OvResult,
      encodeBlockAck({ sector: 8, blockId: ID_OUT_OF_SYNC, size: 4096, seqNum: 0 }),
      101,
      2,
    ),
  );
  assert.deepEqual(ov.subarray(16), hex("0000000000000008 0000000000001268 00001000 00000000"));
  // Ping and ping-ack are bare headers; P_OUT_OF_SYNC is a p_block_desc.
  assert.deepEqual(
    cat(frame(DrbdCommand.PingAck, Buffer.alloc(0), 101)),
    hex("8620ec20 0000 0014 00000000 00000000"),
  );
  assert.deepEqual(
    cat(frame(DrbdCommand.OutOfSync, encodeBlockDesc(8, 4096), 100, 2)).subarray(4, 12),
    hex("0002 0028 00000010"),
  );
  const f = new PacketFramer({ agreedVersion: 101 });
  f.push(cat([req, csum, ov]));
  assert.deepEqual(
    [f.next(), f.next(), f.next()].map((p) => [p?.header.volume, commandName(p?.header.command ?? -1)]),
    [
      [2, "P_RS_DATA_REQUEST"],
      [2, "P_CSUM_RS_REQUEST"],
      [2, "P_OV_RESULT"],
    ],
  );
});

test("protocol: VLI codes match drbd_vli.h's table", () => {
  assert.deepEqual(vliEncode(1n), [0n, 2]);
  assert.deepEqual(vliEncode(2n), [2n, 2]);
  assert.deepEqual(vliEncode(3n), [1n, 3]);
  assert.deepEqual(vliEncode(5n), [3n, 5]);
  assert.deepEqual(vliEncode(10n), [0x17n, 7]);
  assert.deepEqual(vliEncode(179n), [0x209fn, 14]);
  // Maximum values per level from the header's table: 0x2, 0x4, 0x8, 0x10, 0x30, 0x130, 0x2130, 0x202130.
  for (const [max, bits] of [
    [2n, 2],
    [4n, 3],
    [8n, 5],
    [0x10n, 7],
    [0x30n, 10],
    [0x130n, 14],
    [0x2130n, 21],
    [0x202130n, 29],
  ] as const) {
    assert.equal(vliEncode(max)[1], bits);
    assert.equal(vliEncode(max + 1n)[1] > bits, true);
  }
  for (const v of [1n, 2n, 3n, 17n, 304n, 305n, 123456789n, 1n << 40n]) {
    const [code, bits] = vliEncode(v);
    assert.deepEqual(vliDecode(code), [v, bits]);
  }
  assert.throws(() => vliEncode(0n), /positive/);
});

test("protocol: RLE bitmap chunks from literal bytes, both polarities", () => {
  // 192 bits: 10 clear, 3 set (bits 10-12), 179 clear -> runs 10, 3, 179.
  const bm = Buffer.alloc(24);
  bm[1] = 0b00011100;
  const pkts = encodeBitmapPackets(bm, 192, 100, true);
  assert.deepEqual(pkts, [[DrbdCommand.CompressedBitmap, hex("02 97 7c 82")]]);
  const got = Buffer.alloc(24);
  const xfer = new BitmapTransfer(192);
  decodeRleBitmapChunk(hex("02 97 7c 82"), xfer, got, 100);
  assert.deepEqual(got, bm);
  assert.ok(xfer.done);
  // First run set: bits 0-3 set, 60 clear -> encoding 0x80 | pad 7 << 4 | 2.
  const bm2 = hex("0f00000000000000");
  assert.deepEqual(encodeBitmapPackets(bm2, 64, 101, true), [
    [DrbdCommand.CompressedBitmap, hex("f2 fd 16 00")],
  ]);
  const got2 = Buffer.alloc(8);
  decodeRleBitmapChunk(hex("f2 fd 16 00"), new BitmapTransfer(64), got2, 101);
  assert.deepEqual(got2, bm2);
});

test("protocol: incompressible bitmaps go plain, split at 4 KiB packets", () => {
  const alt = Buffer.alloc(24, 0x55);
  assert.deepEqual(encodeBitmapPackets(alt, 192, 100, true), [[DrbdCommand.Bitmap, alt]]);
  const big = Buffer.alloc(600 * 8, 0x5a);
  const pkts = encodeBitmapPackets(big, 600 * 64, 100, false);
  assert.deepEqual(
    pkts.map(([c, p]) => [c, p.length]),
    [
      [DrbdCommand.Bitmap, 510 * 8],
      [DrbdCommand.Bitmap, 90 * 8],
    ],
  );
  assert.deepEqual(
    encodeBitmapPackets(big, 600 * 64, 96, false).map(([, p]) => p.length),
    [511 * 8, 89 * 8],
  );
  const got = Buffer.alloc(big.length);
  const xfer = new BitmapTransfer(600 * 64);
  for (const [, p] of pkts) decodePlainBitmapChunk(p, xfer, got, 100);
  assert.deepEqual(got, big);
  assert.ok(xfer.done);
  assert.throws(
    () => decodePlainBitmapChunk(Buffer.alloc(16), new BitmapTransfer(600 * 64), got, 100),
    /expected 4080 bytes at word 0, got 16/,
  );
});

test("protocol: a mixed large bitmap round-trips through RLE and plain packets", () => {
  const bits = 1 << 20; // a 4 GiB device
  const bm = Buffer.alloc(bits / 8);
  for (let i = 0; i < 2000; i++) bm[(i * 7919) % bm.length] = 0xff; // scattered dirty extents
  bm.fill(0x55, 60000, 100000); // alternating bits: RLE would double the size, so plain packets
  const pkts = encodeBitmapPackets(bm, bits, 101, true);
  assert.ok(pkts.some(([c]) => c === DrbdCommand.CompressedBitmap));
  assert.ok(pkts.some(([c]) => c === DrbdCommand.Bitmap));
  const got = Buffer.alloc(bm.length);
  const xfer = new BitmapTransfer(bits);
  for (const [c, p] of pkts) {
    assert.ok(p.length + 16 <= 4096, "every bitmap packet fits 4 KiB with its header");
    if (c === DrbdCommand.Bitmap) decodePlainBitmapChunk(p, xfer, got, 101);
    else decodeRleBitmapChunk(p, xfer, got, 101);
  }
  assert.ok(xfer.done);
  assert.ok(got.equals(bm));
});

test("protocol: a 512 GiB all-dirty bitmap travels as one small RLE packet", () => {
  const bits = 1 << 27; // 512 GiB at 4 KiB per bit
  const bm = Buffer.alloc(bits / 8, 0xff);
  const pkts = encodeBitmapPackets(bm, bits, 101, true);
  assert.equal(pkts.length, 1);
  assert.equal(pkts[0]![0], DrbdCommand.CompressedBitmap);
  const got = Buffer.alloc(bm.length);
  const xfer = new BitmapTransfer(bits);
  decodeRleBitmapChunk(pkts[0]![1], xfer, got, 101);
  assert.ok(xfer.done);
  assert.ok(got.equals(bm));
  // A run that starts and ends inside bytes.
  const odd = Buffer.alloc(8);
  odd[0] = 0b11100000;
  odd[1] = 0xff;
  odd[2] = 0b00000011;
  const enc = encodeBitmapPackets(odd, 64, 101, true);
  const back = Buffer.alloc(8);
  decodeRleBitmapChunk(enc[0]![1], new BitmapTransfer(64), back, 101);
  assert.deepEqual(back, odd);
});

test("protocol: corrupt compressed bitmaps are refused", () => {
  const x = () => new BitmapTransfer(64);
  assert.throws(() => decodeRleBitmapChunk(hex("03 00"), x(), Buffer.alloc(8), 100), /unknown encoding 3/);
  assert.throws(() => decodeRleBitmapChunk(hex("02"), x(), Buffer.alloc(8), 100), /too small/);
  // A set run of 179 bits in a 64-bit bitmap.
  assert.throws(() => decodeRleBitmapChunk(hex("82 97 7c 82"), x(), Buffer.alloc(8), 100), /passes the end/);
  assert.throws(() => decodeRleBitmapChunk(Buffer.alloc(4090, 2), x(), Buffer.alloc(8), 100), /too large/);
});

test("protocol: the framer splits a byte-by-byte stream into packets and switches header format", () => {
  const features = cat(
    frame(
      DrbdCommand.ConnectionFeatures,
      encodeConnectionFeatures({ protocolMin: 86, protocolMax: 101, featureFlags: 0 }),
      0,
    ),
  );
  const data = cat(
    frame(
      DrbdCommand.Data,
      encodeData({
        sector: 0,
        blockId: 5n,
        seqNum: 1,
        dpFlags: 0,
        digest: Buffer.alloc(0),
        data: Buffer.alloc(4096, 7),
      }),
      101,
      0,
    ),
  );
  const ping = cat(frame(DrbdCommand.Ping, Buffer.alloc(0), 101));
  const stream = cat([features, data, ping]);
  const f = new PacketFramer();
  const seen: string[] = [];
  for (const byte of stream) {
    f.push(Buffer.of(byte));
    for (let p = f.next(); p; p = f.next()) {
      seen.push(`${commandName(p.header.command)}:${p.header.kind}:${p.payload.length}`);
      if (p.header.command === DrbdCommand.ConnectionFeatures) f.setAgreedVersion(101);
      if (p.header.command === DrbdCommand.Data)
        assert.ok(decodeData(p.payload).data.equals(Buffer.alloc(4096, 7)));
    }
  }
  assert.deepEqual(seen, ["P_CONNECTION_FEATURES:h80:72", "P_DATA:h100:4120", "P_PING:h100:0"]);
  f.end();
  // A whole chunk is framed without copying the payload.
  const g = new PacketFramer({ agreedVersion: 101 });
  g.push(data);
  const p = g.next();
  assert.ok(p && p.payload.buffer === data.buffer);
});

test("protocol: the framer rejects wrong magic, bad sizes, unknown commands and truncation", () => {
  const err = (bytes: Buffer, v = 101, max?: number) => {
    const f = new PacketFramer({ agreedVersion: v, ...(max ? { maxPayload: max } : {}) });
    f.push(bytes);
    try {
      while (f.next());
      f.end();
    } catch (e) {
      assert.ok(e instanceof DrbdProtocolError);
      return e.message;
    }
    assert.fail("accepted");
  };
  assert.equal(
    err(hex("47455420 2f204854 54502f31 2e310d0a")),
    "wrong magic 0x47455420 for protocol version 101",
  );
  assert.equal(
    err(hex("8620ec20 0000 0013 00000004 00000000 00000000")),
    "oversized packet: P_PING has 0 bytes, got 4",
  );
  assert.equal(
    err(hex("8620ec20 0000 0015 00000014 00000000")),
    "truncated packet: P_RECV_ACK needs 24 bytes, got 20",
  );
  assert.equal(
    err(hex("8620ec20 0000 0000 7fffffff 00000000")),
    "oversized packet: P_DATA of 2147483647 bytes exceeds 1052672",
  );
  assert.equal(
    err(hex("8620ec20 0000 0000 00002000 00000000"), 101, 4096),
    "oversized packet: P_DATA of 8192 bytes exceeds 4096",
  );
  assert.equal(err(hex("8620ec20 0000 0099 00000000 00000000")), "unknown command 0x0099 (payload 0 bytes)");
  assert.equal(
    err(hex("8620ec20 0000 0000 00000200 00000000 0000")),
    "truncated packet: P_DATA payload has 2 of 512 bytes",
  );
  assert.equal(err(hex("8620ec20 0000")), "truncated packet: 6 of 16 header bytes");
  assert.equal(
    err(hex("83740267 fffe 0040"), 0),
    "truncated packet: P_CONNECTION_FEATURES needs 72 bytes, got 64",
  );
});

/** One side of a loopback DRBD data connection: frames incoming bytes and hands out whole packets. */
class TestPeer {
  private readonly framer = new PacketFramer({ socket: "data" });
  private waiting: ((p: Packet) => void) | undefined;
  private readonly queue: Packet[] = [];
  error: Error | undefined;
  constructor(readonly sock: Socket) {
    sock.on("data", (chunk: Buffer) => {
      try {
        this.framer.push(chunk);
        for (let p = this.framer.next(); p; p = this.framer.next()) this.deliver(p);
      } catch (e) {
        this.error = e as Error;
        sock.destroy();
      }
    });
  }
  private deliver(p: Packet): void {
    // The header format changes right after the features packet, before later bytes are framed.
    if (p.header.command === DrbdCommand.ConnectionFeatures) {
      const agreed = negotiateFeatures(OURS, decodeConnectionFeatures(p.payload));
      if (typeof agreed !== "string") this.framer.setAgreedVersion(agreed.agreedVersion);
    }
    const w = this.waiting;
    this.waiting = undefined;
    if (w) w(p);
    else this.queue.push(p);
  }
  next(): Promise<Packet> {
    const p = this.queue.shift();
    return p ? Promise.resolve(p) : new Promise((resolve) => (this.waiting = resolve));
  }
  send(cmd: DrbdCommand, payload: Buffer | Buffer[], version: number): void {
    for (const b of frame(cmd, payload, version)) this.sock.write(b);
  }
}

const OURS = { protocolMin: PRO_VERSION_MIN, protocolMax: PRO_VERSION_MAX, featureFlags: 0 };

/** The handshake both sides run (drbd_do_features, then drbd_do_auth): returns the agreed version. */
async function handshake(peer: TestPeer, secret: string): Promise<number> {
  peer.send(DrbdCommand.ConnectionFeatures, encodeConnectionFeatures(OURS), 0);
  const f = await peer.next();
  assert.equal(f.header.command, DrbdCommand.ConnectionFeatures);
  const agreed = negotiateFeatures(OURS, decodeConnectionFeatures(f.payload));
  assert.ok(typeof agreed !== "string");
  const v = agreed.agreedVersion;
  const mine = makeChallenge();
  peer.send(DrbdCommand.AuthChallenge, mine, v);
  const ch = await peer.next();
  assert.equal(ch.header.command, DrbdCommand.AuthChallenge);
  assert.equal(checkPeerChallenge(ch.payload, mine), undefined);
  peer.send(DrbdCommand.AuthResponse, authResponse("sha1", secret, ch.payload), v);
  const resp = await peer.next();
  assert.equal(resp.header.command, DrbdCommand.AuthResponse);
  if (!verifyAuthResponse("sha1", secret, mine, resp.payload))
    throw new Error("Authentication of peer failed");
  return v;
}

async function loopbackPair(): Promise<[Socket, Socket, () => void]> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const client = connect(port, "127.0.0.1");
  await once(client, "connect");
  const srv = await accepted;
  return [client, srv, () => (client.destroy(), srv.destroy(), server.close())];
}

test("protocol: features, CRAM-HMAC and a protocol C write between two peers over loopback TCP", async () => {
  const [a, b, close] = await loopbackPair();
  try {
    const pa = new TestPeer(a);
    const pb = new TestPeer(b);
    const [va, vb] = await Promise.all([handshake(pa, "s3cret"), handshake(pb, "s3cret")]);
    assert.deepEqual([va, vb], [101, 101]);
    const data = Buffer.alloc(64 * 1024, 0x5c);
    const hdr = { sector: 2048, blockId: 0xabcdn, seqNum: 1, dpFlags: DP_SEND_WRITE_ACK };
    pa.send(DrbdCommand.Data, encodeData({ ...hdr, digest: Buffer.alloc(0), data }), va);
    const got = await pb.next();
    assert.equal(got.header.kind, "h100");
    const d = decodeData(got.payload);
    assert.ok(d.data.equals(data));
    // The ack echoes block_id, as the meta socket would carry it.
    const ack = decodeBlockAck(
      encodeBlockAck({ sector: d.sector, blockId: d.blockId, size: d.data.length, seqNum: d.seqNum }),
    );
    assert.deepEqual(ack, { sector: 2048, blockId: 0xabcdn, size: 65536, seqNum: 1 });
  } finally {
    close();
  }
});

test("protocol: a wrong shared secret fails authentication on both sides", async () => {
  const [a, b, close] = await loopbackPair();
  try {
    const results = await Promise.allSettled([
      handshake(new TestPeer(a), "one"),
      handshake(new TestPeer(b), "two"),
    ]);
    assert.deepEqual(
      results.map((r) => (r.status === "rejected" ? (r.reason as Error).message : "ok")),
      ["Authentication of peer failed", "Authentication of peer failed"],
    );
  } finally {
    close();
  }
});

test("protocol: garbage from a peer is a protocol error, not a crash", async () => {
  const [a, b, close] = await loopbackPair();
  try {
    const pb = new TestPeer(b);
    a.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await once(b, "close");
    assert.ok(pb.error instanceof DrbdProtocolError);
    assert.match(pb.error.message, /wrong magic 0x47455420/);
  } finally {
    close();
  }
});

test("protocol: random bytes into the framer and every decoder raise only DrbdProtocolError", () => {
  // A fixed-seed generator, so a failure is reproducible.
  let seed = 0x1234567;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => rand(256)));
  const onlyProtocolErrors = (what: string, fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      if (!(e instanceof DrbdProtocolError)) assert.fail(`${what} threw ${String(e)}`);
    }
  };
  const decoders: [string, (b: Buffer) => unknown][] = [
    ["features", decodeConnectionFeatures],
    ["protocol", (b) => decodeProtocol(b, 101)],
    ["sync param", (b) => decodeSyncParams(b, 101)],
    ["uuids", decodeUuids],
    ["sizes", (b) => decodeSizes(b)],
    ["state", decodeState],
    ["state reply", decodeStateChangeReply],
    ["data", (b) => decodeData(b, rand(3) * 16)],
    ["trim", decodeTrim],
    ["block ack", decodeBlockAck],
    ["block req", decodeBlockRequest],
    ["block desc", decodeBlockDesc],
    ["barrier ack", decodeBarrierAck],
    ["plain bitmap", (b) => decodePlainBitmapChunk(b, new BitmapTransfer(4096), Buffer.alloc(512), 101)],
    ["rle bitmap", (b) => decodeRleBitmapChunk(b, new BitmapTransfer(4096), Buffer.alloc(512), 101)],
  ];
  for (let round = 0; round < 300; round++) {
    const len = [0, 1, 4, 8, 16, 24, 28, 32, 48, 72, 148, 600][rand(12)]! + rand(3);
    const b = bytes(len);
    for (const [name, decode] of decoders) onlyProtocolErrors(name, () => decode(b));
    // Valid headers with random commands and lengths, then random bytes.
    const f = new PacketFramer({
      agreedVersion: [0, 90, 96, 101][rand(4)]!,
      socket: rand(2) ? "data" : "meta",
    });
    const cmd = rand(0x40);
    onlyProtocolErrors("framer", () => {
      f.push(cat([encodeHeader(cmd, rand(100), rand(2) ? 101 : 90), bytes(rand(200))]));
      while (f.next());
      f.end();
    });
  }
});

// Bytes the Linux kernel's DRBD 8.4.11 (Debian 6.1.0-50, drbd.ko "version: 8.4.11 (api:1/proto:86-101)") sent on
// its data socket when it connected to a usertgt stand-in (bench/drbd_kernel_peer/capture.mjs): fresh metadata
// from drbdadm-84 create-md on a 32 MiB disk, net { protocol C; }, disk { resync-rate 40M; }.
const KERNEL_HANDSHAKE_DATA =
  "83740267fff2000083740267fffe0048000000560000000f000000650000000000000000000000000000000000000000" +
  "000000000000000000000000000000000000000000000000000000000000000000000000000000008620ec200000000b" +
  "0000001900000000000000030000000000000000000000000000000000000000008620ec200000002300000094000000" +
  "000000a00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
  "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
  "00000000000000000000000000000000000000000000000000000000000000000000000000000000140000000a000000" +
  "64000190008620ec200000000d0000002000000000000000000000ffb00000000000000000000000000000ffb0001000" +
  "00000000008620ec200000000c0000003000000000000000000000000400000000000000000000000000000000000000" +
  "00000000000000000000001ff600000000000000008620ec200000000e00000004000000000000c882";

test("a Linux 6.1 DRBD 8.4.11 handshake decodes, and usertgt's encoders produce the same bytes", () => {
  const wire = Buffer.from(KERNEL_HANDSHAKE_DATA, "hex");
  const f = new PacketFramer({ socket: "data" });
  f.push(wire);
  const packets: { command: number; payload: Buffer }[] = [];
  for (let p = f.next(); p; p = f.next()) {
    packets.push({ command: p.header.command, payload: Buffer.from(p.payload) });
    // The header switches to h100 right after the feature packet (version 101 agreed).
    if (p.header.command === DrbdCommand.ConnectionFeatures) f.setAgreedVersion(101);
  }
  assert.deepEqual(
    packets.map((p) => commandName(p.command)),
    [
      "P_INITIAL_DATA",
      "P_CONNECTION_FEATURES",
      "P_PROTOCOL",
      "P_SYNC_PARAM89",
      "P_SIZES",
      "P_UUIDS",
      "P_STATE",
    ],
  );
  const payload = (cmd: DrbdCommand) => packets.find((p) => p.command === cmd)?.payload ?? Buffer.alloc(0);

  // The kernel offers TRIM, THIN_RESYNC, WRITE_SAME and WRITE_ZEROES.
  const features = decodeConnectionFeatures(payload(DrbdCommand.ConnectionFeatures));
  assert.deepEqual(features, { protocolMin: 86, featureFlags: 0xf, protocolMax: 101 });
  const protocol = decodeProtocol(payload(DrbdCommand.Protocol), 101);
  assert.deepEqual(protocol, {
    protocol: 3,
    afterSb0p: 0,
    afterSb1p: 0,
    afterSb2p: 0,
    connFlags: 0,
    twoPrimaries: false,
    integrityAlg: "",
  });
  const sync = decodeSyncParams(payload(DrbdCommand.SyncParam89), 101);
  assert.deepEqual(sync, {
    resyncRate: 40960,
    verifyAlg: "",
    csumsAlg: "",
    cPlanAhead: 20,
    cDelayTarget: 10,
    cFillTarget: 100,
    cMaxRate: 102400,
  });
  const sizes = decodeSizes(payload(DrbdCommand.Sizes));
  assert.deepEqual(sizes, {
    diskSize: 65456,
    userSize: 0,
    currentSize: 65456,
    maxBioSize: 1048576,
    queueOrderType: 0,
    ddsFlags: 0,
  });
  const uuids = decodeUuids(payload(DrbdCommand.Uuids));
  assert.deepEqual(uuids, { current: 4n, bitmap: 0n, history: [0n, 0n], bitsSet: 8182n, flags: 0n });
  const state = decodeState(payload(DrbdCommand.State));
  assert.equal(state.role, Role.Secondary);
  assert.equal(state.peer, Role.Unknown);
  // drbd_connected sends this P_STATE before conn_connect moves to WFReportParams: it still says WFConnection.
  assert.equal(state.conn, ConnState.WFConnection);
  assert.equal(state.disk, DiskState.Inconsistent);
  assert.equal(state.pdsk, DiskState.DUnknown);

  // Re-encoded with usertgt's encoders and framed (h80 before agreement, h100 after), byte for byte the same.
  const sp = encodeSyncParams(sync, 101);
  const again = Buffer.concat([
    encodeHeader(DrbdCommand.InitialData, 0, 0),
    ...frame(DrbdCommand.ConnectionFeatures, encodeConnectionFeatures(features), 0),
    ...frame(DrbdCommand.Protocol, encodeProtocol(protocol, 101), 101),
    ...frame(sp.command, sp.payload, 101),
    ...frame(DrbdCommand.Sizes, encodeSizes(sizes), 101),
    ...frame(DrbdCommand.Uuids, encodeUuids(uuids), 101),
    ...frame(DrbdCommand.State, encodeState(state), 101),
  ]);
  assert.equal(again.toString("hex"), wire.toString("hex"));
});
