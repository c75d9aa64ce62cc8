/**
 * The DRBD 8.4 wire protocol (protocol versions 86–101) as the Linux kernel's drivers/block/drbd defines it
 * (drbd_protocol.h for layouts, drbd_main.c for senders, drbd_receiver.c for receivers, drbd_vli.h for the
 * compressed bitmap code). One place for every on-the-wire format: command numbers, the three header
 * formats, each packet's payload, the bitmap transfer encodings and an incremental framer.
 *
 * Everything is big-endian, except that `block_id` and the barrier number are opaque handles the peer echoes
 * unchanged (we read and write them as big-endian u64/u32, which round-trips) and bitmap words, which are
 * little-endian u64 (drbd_bitmap.c keeps them as on-disk LE words).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** drbd_config.h: the dialects this implementation speaks. */
export const PRO_VERSION_MIN = 86;
export const PRO_VERSION_MAX = 101;

/** drbd_protocol.h enum drbd_packet. */
export enum DrbdCommand {
  Data = 0x00,
  DataReply = 0x01,
  RsDataReply = 0x02,
  Barrier = 0x03,
  Bitmap = 0x04,
  BecomeSyncTarget = 0x05,
  BecomeSyncSource = 0x06,
  UnplugRemote = 0x07,
  DataRequest = 0x08,
  RsDataRequest = 0x09,
  SyncParam = 0x0a,
  Protocol = 0x0b,
  Uuids = 0x0c,
  Sizes = 0x0d,
  State = 0x0e,
  SyncUuid = 0x0f,
  AuthChallenge = 0x10,
  AuthResponse = 0x11,
  StateChgReq = 0x12,
  Ping = 0x13,
  PingAck = 0x14,
  RecvAck = 0x15,
  WriteAck = 0x16,
  RsWriteAck = 0x17,
  Superseded = 0x18,
  NegAck = 0x19,
  NegDReply = 0x1a,
  NegRsDReply = 0x1b,
  BarrierAck = 0x1c,
  StateChgReply = 0x1d,
  OvRequest = 0x1e,
  OvReply = 0x1f,
  OvResult = 0x20,
  CsumRsRequest = 0x21,
  RsIsInSync = 0x22,
  SyncParam89 = 0x23,
  CompressedBitmap = 0x24,
  DelayProbe = 0x27,
  OutOfSync = 0x28,
  RsCancel = 0x29,
  ConnStChgReq = 0x2a,
  ConnStChgReply = 0x2b,
  RetryWrite = 0x2c,
  ProtocolUpdate = 0x2d,
  Trim = 0x31,
  RsThinReq = 0x32,
  RsDeallocated = 0x33,
  WSame = 0x34,
  Zeroes = 0x36,
  InitialMeta = 0xfff1,
  InitialData = 0xfff2,
  ConnectionFeatures = 0xfffe,
}

/** The kernel's name for a command (P_DATA …), for logs and errors. */
export function commandName(cmd: number): string {
  const n = DrbdCommand[cmd];
  if (n === undefined) return `unknown command 0x${cmd.toString(16).padStart(4, "0")}`;
  return "P_" + n.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Which socket a packet travels on: the receiver (data) or the ack receiver (meta); "any" for both. */
export type DrbdSocket = "data" | "meta";

/**
 * Payload size rules per command, as the receiver tables (drbd_receiver.c drbd_cmd_handler for the data
 * socket, asender_tbl for the meta socket) enforce them: `size` is the fixed part; `more` says whether data
 * or a variable part may follow. Meta-socket packets and the handshake packets must match their size exactly.
 * P_INITIAL_DATA/META arrive before the acceptor knows which socket it holds.
 */
const PAYLOAD_RULES: Partial<
  Record<DrbdCommand, { size: number; more: boolean; socket: DrbdSocket | "any" }>
> = {
  [DrbdCommand.Data]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.DataReply]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.RsDataReply]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.Barrier]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.Bitmap]: { size: 0, more: true, socket: "data" },
  [DrbdCommand.UnplugRemote]: { size: 0, more: false, socket: "data" },
  [DrbdCommand.DataRequest]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.RsDataRequest]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.SyncParam]: { size: 4, more: true, socket: "data" },
  [DrbdCommand.Protocol]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.Uuids]: { size: 48, more: false, socket: "data" },
  [DrbdCommand.Sizes]: { size: 32, more: true, socket: "data" },
  [DrbdCommand.State]: { size: 4, more: false, socket: "data" },
  [DrbdCommand.SyncUuid]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.AuthChallenge]: { size: 0, more: true, socket: "data" },
  [DrbdCommand.AuthResponse]: { size: 0, more: true, socket: "data" },
  [DrbdCommand.StateChgReq]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.Ping]: { size: 0, more: false, socket: "meta" },
  [DrbdCommand.PingAck]: { size: 0, more: false, socket: "meta" },
  [DrbdCommand.RecvAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.WriteAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.RsWriteAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.Superseded]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.NegAck]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.NegDReply]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.NegRsDReply]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.BarrierAck]: { size: 8, more: false, socket: "meta" },
  [DrbdCommand.StateChgReply]: { size: 4, more: false, socket: "meta" },
  [DrbdCommand.OvRequest]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.OvReply]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.OvResult]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.CsumRsRequest]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.RsIsInSync]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.SyncParam89]: { size: 132, more: true, socket: "data" },
  [DrbdCommand.CompressedBitmap]: { size: 1, more: true, socket: "data" },
  [DrbdCommand.DelayProbe]: { size: 8, more: false, socket: "any" },
  [DrbdCommand.OutOfSync]: { size: 16, more: false, socket: "data" },
  [DrbdCommand.RsCancel]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.ConnStChgReq]: { size: 8, more: false, socket: "data" },
  [DrbdCommand.ConnStChgReply]: { size: 4, more: false, socket: "meta" },
  [DrbdCommand.RetryWrite]: { size: 24, more: false, socket: "meta" },
  [DrbdCommand.ProtocolUpdate]: { size: 24, more: true, socket: "data" },
  [DrbdCommand.Trim]: { size: 28, more: false, socket: "data" },
  [DrbdCommand.RsThinReq]: { size: 24, more: false, socket: "data" },
  [DrbdCommand.RsDeallocated]: { size: 16, more: false, socket: "data" },
  [DrbdCommand.WSame]: { size: 28, more: true, socket: "data" },
  [DrbdCommand.Zeroes]: { size: 28, more: false, socket: "data" },
  [DrbdCommand.InitialMeta]: { size: 0, more: false, socket: "any" },
  [DrbdCommand.InitialData]: { size: 0, more: false, socket: "any" },
  [DrbdCommand.ConnectionFeatures]: { size: 72, more: false, socket: "data" },
};

export class DrbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DrbdProtocolError";
  }
}

// ---------------------------------------------------------------------------------------------------------
// Headers (drbd_protocol.h p_header80/95/100; drbd_main.c prepare_header; drbd_receiver.c decode_header)

export const DRBD_MAGIC = 0x83740267;
export const DRBD_MAGIC_BIG = 0x835a;
export const DRBD_MAGIC_100 = 0x8620ec20;
/** Above this payload size protocol 95–99 switches from h80 to h95. */
export const DRBD_MAX_SIZE_H80_PACKET = 1 << 15;
/** Largest write DRBD 8.4 sends in one request (DRBD_MAX_BIO_SIZE). */
export const DRBD_MAX_BIO_SIZE = 1 << 20;
/** Bitmap packets, header included, fit one 4 KiB buffer (DRBD_SOCKET_BUFFER_SIZE). */
export const DRBD_SOCKET_BUFFER_SIZE = 4096;

export type HeaderKind = "h80" | "h95" | "h100";

export interface PacketHeader {
  kind: HeaderKind;
  command: number;
  /** Volume number (h100 only; 0 otherwise and for connection-wide packets). */
  volume: number;
  /** Payload bytes after the header. */
  length: number;
}

/** The header size the receiver expects: 16 bytes once protocol 100 is agreed, else 8 (h80 and h95). */
export function headerSize(agreedVersion: number): number {
  return agreedVersion >= 100 ? 16 : 8;
}

/**
 * Encodes the header the kernel would choose for this payload at this agreed version: h100 from 100 on;
 * h95 at 95–99 for payloads over 32 KiB; h80 otherwise (also before agreement, version 0).
 */
export function encodeHeader(command: number, length: number, agreedVersion: number, volume = 0): Buffer {
  if (agreedVersion >= 100) {
    const b = Buffer.alloc(16);
    b.writeUInt32BE(DRBD_MAGIC_100, 0);
    b.writeUInt16BE(volume, 4);
    b.writeUInt16BE(command, 6);
    b.writeUInt32BE(length, 8);
    return b;
  }
  const b = Buffer.alloc(8);
  if (agreedVersion >= 95 && length > DRBD_MAX_SIZE_H80_PACKET) {
    b.writeUInt16BE(DRBD_MAGIC_BIG, 0);
    b.writeUInt16BE(command, 2);
    b.writeUInt32BE(length, 4);
  } else {
    if (length > 0xffff) throw new DrbdProtocolError(`payload of ${length} bytes does not fit an h80 header`);
    b.writeUInt32BE(DRBD_MAGIC, 0);
    b.writeUInt16BE(command, 4);
    b.writeUInt16BE(length, 6);
  }
  return b;
}

/** Decodes a header of `headerSize(agreedVersion)` bytes, checking its magic (and h100's zero pad). */
export function decodeHeader(b: Buffer, agreedVersion: number): PacketHeader {
  const size = headerSize(agreedVersion);
  if (b.length < size) throw new DrbdProtocolError(`truncated header: ${b.length} of ${size} bytes`);
  // Once 100 is agreed only h100 is valid; before, h95 and h80 (told apart by magic) — decode_header().
  if (size === 16) {
    if (b.readUInt32BE(0) === DRBD_MAGIC_100) {
      if (b.readUInt32BE(12) !== 0) throw new DrbdProtocolError("h100 header padding is not zero");
      return {
        kind: "h100",
        volume: b.readUInt16BE(4),
        command: b.readUInt16BE(6),
        length: b.readUInt32BE(8),
      };
    }
  } else if (b.readUInt16BE(0) === DRBD_MAGIC_BIG) {
    return { kind: "h95", volume: 0, command: b.readUInt16BE(2), length: b.readUInt32BE(4) };
  } else if (b.readUInt32BE(0) === DRBD_MAGIC) {
    return { kind: "h80", volume: 0, command: b.readUInt16BE(4), length: b.readUInt16BE(6) };
  }
  throw new DrbdProtocolError(
    `wrong magic 0x${b.readUInt32BE(0).toString(16).padStart(8, "0")} for protocol version ${agreedVersion}`,
  );
}

/** Header plus payload parts, ready for a vectored socket write (payload buffers are not copied). */
export function frame(
  command: DrbdCommand,
  payload: Buffer | Buffer[],
  agreedVersion: number,
  volume = 0,
): Buffer[] {
  const parts = Array.isArray(payload) ? payload : [payload];
  const length = parts.reduce((n, p) => n + p.length, 0);
  return [encodeHeader(command, length, agreedVersion, volume), ...parts];
}

// ---------------------------------------------------------------------------------------------------------
// Framer: splits a socket's byte stream into packets.

export interface Packet {
  header: PacketHeader;
  payload: Buffer;
}

export interface FramerOptions {
  /** Agreed protocol version; 0 before the feature handshake (h80 headers). */
  agreedVersion?: number;
  /** Largest accepted payload; larger lengths are refused before any of it is buffered. */
  maxPayload?: number;
  /** Refuse packets that belong on the other socket ("Unexpected data/meta packet" in the kernel). */
  socket?: DrbdSocket;
}

/**
 * An incremental packet framer, like a PDU parser: `push()` socket chunks, then take whole packets with
 * `next()` until it returns undefined. Pull-style, so the caller can switch the header format with
 * `setAgreedVersion()` right after the feature handshake packet, before later bytes are framed.
 * Wrong magic, unknown commands, payload sizes the command does not allow and oversized lengths throw
 * DrbdProtocolError (the caller drops the connection); `end()` reports a packet cut short by EOF.
 */
export class PacketFramer {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private agreedVersion: number;
  private readonly maxPayload: number;
  private readonly socket: DrbdSocket | undefined;
  private pendingHeader: PacketHeader | undefined;

  constructor(opts: FramerOptions = {}) {
    this.agreedVersion = opts.agreedVersion ?? 0;
    this.maxPayload = opts.maxPayload ?? DRBD_MAX_BIO_SIZE + DRBD_SOCKET_BUFFER_SIZE;
    this.socket = opts.socket;
  }

  setAgreedVersion(v: number): void {
    this.agreedVersion = v;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /** Bytes received but not yet returned as packets. */
  get pending(): number {
    return this.buffered;
  }

  next(): Packet | undefined {
    if (!this.pendingHeader) {
      const hs = headerSize(this.agreedVersion);
      if (this.buffered < hs) return undefined;
      const header = decodeHeader(this.take(hs), this.agreedVersion);
      checkPayloadSize(header.command, header.length, this.maxPayload, this.socket);
      this.pendingHeader = header;
    }
    const header = this.pendingHeader;
    if (this.buffered < header.length) return undefined;
    this.pendingHeader = undefined;
    return { header, payload: this.take(header.length) };
  }

  /** Call at EOF: a partly received packet is an error. */
  end(): void {
    const h = this.pendingHeader;
    if (h)
      throw new DrbdProtocolError(
        `truncated packet: ${commandName(h.command)} payload has ${this.buffered} of ${h.length} bytes`,
      );
    if (this.buffered > 0)
      throw new DrbdProtocolError(
        `truncated packet: ${this.buffered} of ${headerSize(this.agreedVersion)} header bytes`,
      );
  }

  /** Removes n bytes from the front; a slice of one chunk when possible, a copy only across chunks. */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }
}

/** Rejects payload lengths the command cannot have (the kernel drops the connection for these). */
export function checkPayloadSize(
  command: number,
  length: number,
  maxPayload: number,
  socket?: DrbdSocket,
): void {
  const rule = PAYLOAD_RULES[command as DrbdCommand];
  if (!rule) throw new DrbdProtocolError(`${commandName(command)} (payload ${length} bytes)`);
  if (socket && rule.socket !== "any" && rule.socket !== socket)
    throw new DrbdProtocolError(`unexpected ${commandName(command)} on the ${socket} socket`);
  if (length > maxPayload)
    throw new DrbdProtocolError(
      `oversized packet: ${commandName(command)} of ${length} bytes exceeds ${maxPayload}`,
    );
  if (length < rule.size)
    throw new DrbdProtocolError(
      `truncated packet: ${commandName(command)} needs ${rule.size} bytes, got ${length}`,
    );
  if (!rule.more && length > rule.size)
    throw new DrbdProtocolError(
      `oversized packet: ${commandName(command)} has ${rule.size} bytes, got ${length}`,
    );
}

function need(b: Buffer, n: number, what: string): void {
  if (b.length < n) throw new DrbdProtocolError(`truncated ${what}: ${b.length} of ${n} bytes`);
}
function exactly(b: Buffer, n: number, what: string): void {
  if (b.length !== n) throw new DrbdProtocolError(`${what} must be ${n} bytes, got ${b.length}`);
}

function readU64(b: Buffer, off: number): number {
  const v = b.readBigUInt64BE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    throw new DrbdProtocolError(`u64 at offset ${off} too large: ${v}`);
  return Number(v);
}

// ---------------------------------------------------------------------------------------------------------
// P_CONNECTION_FEATURES (drbd_receiver.c drbd_do_features)

/** Feature flags (DRBD_FF_*). This implementation offers none yet: no TRIM, THIN_RESYNC, WSAME, WZEROES. */
export const FF_TRIM = 1;
export const FF_THIN_RESYNC = 2;
export const FF_WSAME = 4;
export const FF_WZEROES = 8;

export interface ConnectionFeatures {
  protocolMin: number;
  protocolMax: number;
  featureFlags: number;
}

export function encodeConnectionFeatures(f: ConnectionFeatures): Buffer {
  const b = Buffer.alloc(72);
  b.writeUInt32BE(f.protocolMin, 0);
  b.writeUInt32BE(f.featureFlags >>> 0, 4);
  b.writeUInt32BE(f.protocolMax, 8);
  return b;
}

export function decodeConnectionFeatures(b: Buffer): ConnectionFeatures {
  exactly(b, 72, "P_CONNECTION_FEATURES");
  const protocolMin = b.readUInt32BE(0);
  const max = b.readUInt32BE(8);
  // Peers before 8.3.x sent only protocol_min; 0 means "same as min".
  return { protocolMin, featureFlags: b.readUInt32BE(4), protocolMax: max === 0 ? protocolMin : max };
}

/** The agreed version and features, or a message naming the incompatible ranges. */
export function negotiateFeatures(
  mine: ConnectionFeatures,
  peer: ConnectionFeatures,
): { agreedVersion: number; agreedFeatures: number } | string {
  if (mine.protocolMax < peer.protocolMin || peer.protocolMax < mine.protocolMin)
    return `incompatible DRBD dialects: I support ${mine.protocolMin}-${mine.protocolMax}, peer supports ${peer.protocolMin}-${peer.protocolMax}`;
  return {
    agreedVersion: Math.min(mine.protocolMax, peer.protocolMax),
    agreedFeatures: mine.featureFlags & peer.featureFlags,
  };
}

// ---------------------------------------------------------------------------------------------------------
// CRAM-HMAC (drbd_receiver.c drbd_do_auth): both sides challenge, both answer with HMAC(secret, challenge).

export const CHALLENGE_LEN = 64;

export function makeChallenge(): Buffer {
  return randomBytes(CHALLENGE_LEN);
}

/** Maps the kernel crypto name in `cram-hmac-alg` (sha1, sha256, md5 …) to node:crypto's HMAC. */
export function authResponse(alg: string, sharedSecret: string, peerChallenge: Buffer): Buffer {
  const name = alg.replace(/^hmac\((.*)\)$/, "$1");
  try {
    return createHmac(name, Buffer.from(sharedSecret, "utf8")).update(peerChallenge).digest();
  } catch (e) {
    throw new DrbdProtocolError(`cram-hmac-alg ${alg} is not available: ${(e as Error).message}`);
  }
}

/** Validates the peer's P_AUTH_CHALLENGE payload as the kernel does; returns an error message or undefined. */
export function checkPeerChallenge(peerChallenge: Buffer, myChallenge: Buffer): string | undefined {
  if (peerChallenge.length > CHALLENGE_LEN * 2) return "AuthChallenge payload too big";
  if (peerChallenge.length < CHALLENGE_LEN) return "AuthChallenge payload too small";
  // The kernel compares the first CHALLENGE_LEN bytes only (a reflected challenge, perhaps padded).
  if (peerChallenge.subarray(0, CHALLENGE_LEN).equals(myChallenge.subarray(0, CHALLENGE_LEN)))
    return "peer presented the same challenge";
  return undefined;
}

/** True when the peer's P_AUTH_RESPONSE is the HMAC of my challenge. */
export function verifyAuthResponse(
  alg: string,
  sharedSecret: string,
  myChallenge: Buffer,
  response: Buffer,
): boolean {
  const right = authResponse(alg, sharedSecret, myChallenge);
  return response.length === right.length && timingSafeEqual(response, right);
}

// ---------------------------------------------------------------------------------------------------------
// P_PROTOCOL / P_PROTOCOL_UPDATE (p_protocol)

export const WIRE_PROTOCOL = { A: 1, B: 2, C: 3 } as const;
/** enum drbd_after_sb_p, as configured names map to it. */
export const AFTER_SB_POLICY: Record<string, number> = {
  disconnect: 0,
  "discard-younger-primary": 1,
  "discard-older-primary": 2,
  "discard-zero-changes": 3,
  "discard-least-changes": 4,
  "discard-local": 5,
  "discard-remote": 6,
  consensus: 7,
  "discard-secondary": 8,
  "call-pri-lost-after-sb": 9,
  "violently-as0p": 10,
};
export const CF_DISCARD_MY_DATA = 1;
export const CF_DRY_RUN = 2;

export interface ProtocolParams {
  protocol: number;
  afterSb0p: number;
  afterSb1p: number;
  afterSb2p: number;
  connFlags: number;
  twoPrimaries: boolean;
  /** data-integrity-alg; "" for none. Sent from protocol 87 on. */
  integrityAlg: string;
}

export function encodeProtocol(p: ProtocolParams, agreedVersion: number): Buffer {
  const alg = agreedVersion >= 87 ? Buffer.from(p.integrityAlg + "\0", "latin1") : Buffer.alloc(0);
  if (alg.length > 64) throw new DrbdProtocolError(`integrity-alg "${p.integrityAlg}" longer than 63 bytes`);
  const b = Buffer.alloc(24 + alg.length);
  [p.protocol, p.afterSb0p, p.afterSb1p, p.afterSb2p, p.connFlags, p.twoPrimaries ? 1 : 0].forEach((v, i) =>
    b.writeUInt32BE(v, i * 4),
  );
  alg.copy(b, 24);
  return b;
}

export function decodeProtocol(b: Buffer, agreedVersion: number): ProtocolParams {
  need(b, 24, "P_PROTOCOL");
  let integrityAlg = "";
  if (agreedVersion >= 87 && b.length > 24) {
    if (b.length - 24 > 64)
      throw new DrbdProtocolError(`P_PROTOCOL integrity-alg of ${b.length - 24} bytes exceeds 64`);
    integrityAlg = cString(b.subarray(24));
  }
  return {
    protocol: b.readUInt32BE(0),
    afterSb0p: b.readUInt32BE(4),
    afterSb1p: b.readUInt32BE(8),
    afterSb2p: b.readUInt32BE(12),
    connFlags: b.readUInt32BE(16),
    twoPrimaries: b.readUInt32BE(20) !== 0,
    integrityAlg,
  };
}

/** The peer's after-sb policy seen from this side: its discard-local is my discard-remote (convert_after_sb). */
export function mirrorAfterSb(policy: number): number {
  if (policy === AFTER_SB_POLICY["discard-remote"]) return AFTER_SB_POLICY["discard-local"] as number;
  if (policy === AFTER_SB_POLICY["discard-local"]) return AFTER_SB_POLICY["discard-remote"] as number;
  return policy;
}

/**
 * The setting that makes a peer's P_PROTOCOL incompatible with mine, as receive_protocol checks it (the
 * kernel then disconnects with "incompatible <setting> settings"), or undefined when they agree.
 */
export function protocolMismatch(mine: ProtocolParams, peer: ProtocolParams): string | undefined {
  if (peer.protocol !== mine.protocol) return "protocol";
  if (mirrorAfterSb(peer.afterSb0p) !== mine.afterSb0p) return "after-sb-0pri";
  if (mirrorAfterSb(peer.afterSb1p) !== mine.afterSb1p) return "after-sb-1pri";
  if (mirrorAfterSb(peer.afterSb2p) !== mine.afterSb2p) return "after-sb-2pri";
  if (peer.connFlags & CF_DISCARD_MY_DATA && mine.connFlags & CF_DISCARD_MY_DATA) return "discard-my-data";
  if (peer.twoPrimaries !== mine.twoPrimaries) return "allow-two-primaries";
  if (peer.integrityAlg !== mine.integrityAlg) return "data-integrity-alg";
  return undefined;
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString("latin1");
}

function fixedString(b: Buffer, off: number, len: number, s: string, what: string): void {
  if (s.length >= len) throw new DrbdProtocolError(`${what} "${s}" longer than ${len - 1} bytes`);
  b.write(s, off, "latin1");
}

// ---------------------------------------------------------------------------------------------------------
// P_SYNC_PARAM / P_SYNC_PARAM89 (p_rs_param, p_rs_param_89, p_rs_param_95; drbd_send_sync_param)

export interface SyncParams {
  /** KiB/s */
  resyncRate: number;
  verifyAlg: string;
  csumsAlg: string;
  cPlanAhead: number;
  cDelayTarget: number;
  cFillTarget: number;
  cMaxRate: number;
}

const SHARED_SECRET_MAX = 64;

/** The command and payload the kernel sends at this version: ≤87 rate only, 88 + verify-alg, 89–94, ≥95. */
export function encodeSyncParams(
  p: SyncParams,
  agreedVersion: number,
): { command: DrbdCommand; payload: Buffer } {
  if (agreedVersion <= 88) {
    const alg = agreedVersion === 88 ? Buffer.from(p.verifyAlg + "\0", "latin1") : Buffer.alloc(0);
    const b = Buffer.alloc(4 + alg.length);
    b.writeUInt32BE(p.resyncRate, 0);
    alg.copy(b, 4);
    return { command: DrbdCommand.SyncParam, payload: b };
  }
  const b = Buffer.alloc(agreedVersion >= 95 ? 148 : 132);
  b.writeUInt32BE(p.resyncRate, 0);
  fixedString(b, 4, SHARED_SECRET_MAX, p.verifyAlg, "verify-alg");
  fixedString(b, 68, SHARED_SECRET_MAX, p.csumsAlg, "csums-alg");
  if (agreedVersion >= 95) {
    b.writeUInt32BE(p.cPlanAhead, 132);
    b.writeUInt32BE(p.cDelayTarget, 136);
    b.writeUInt32BE(p.cFillTarget, 140);
    b.writeUInt32BE(p.cMaxRate, 144);
  }
  return { command: DrbdCommand.SyncParam89, payload: b };
}

export function decodeSyncParams(
  b: Buffer,
  agreedVersion: number,
): Partial<SyncParams> & { resyncRate: number } {
  need(b, 4, "P_SYNC_PARAM");
  // receive_SyncParam: the longest payload each version may send.
  const expMax =
    agreedVersion <= 87 ? 4 : agreedVersion === 88 ? 4 + SHARED_SECRET_MAX : agreedVersion <= 94 ? 132 : 148;
  if (b.length > expMax)
    throw new DrbdProtocolError(
      `SyncParam packet too long: ${b.length} bytes, at most ${expMax} at protocol ${agreedVersion}`,
    );
  const resyncRate = b.readUInt32BE(0);
  if (agreedVersion <= 87) return { resyncRate };
  if (agreedVersion === 88) return { resyncRate, verifyAlg: cString(b.subarray(4)) };
  need(b, 132, "P_SYNC_PARAM89");
  const out: Partial<SyncParams> & { resyncRate: number } = {
    resyncRate,
    verifyAlg: cString(b.subarray(4, 68)),
    csumsAlg: cString(b.subarray(68, 132)),
  };
  if (agreedVersion >= 95) {
    need(b, 148, "P_SYNC_PARAM89 at protocol ≥95");
    out.cPlanAhead = b.readUInt32BE(132);
    out.cDelayTarget = b.readUInt32BE(136);
    out.cFillTarget = b.readUInt32BE(140);
    out.cMaxRate = b.readUInt32BE(144);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// P_UUIDS (p_uuids: UI_CURRENT, UI_BITMAP, UI_HISTORY_START, UI_HISTORY_END, UI_SIZE = bits set, UI_FLAGS)

export const UUID_JUST_CREATED = 4n;
/** P_UUIDS flags word. */
export const UUID_FLAG_DISCARD_MY_DATA = 1;
export const UUID_FLAG_CRASHED_PRIMARY = 2;
export const UUID_FLAG_INCONSISTENT = 4;
export const UUID_FLAG_SKIP_INITIAL_SYNC = 8;

export interface UuidsPacket {
  current: bigint;
  bitmap: bigint;
  history: [bigint, bigint];
  /** Number of bits set in the sender's bitmap. */
  bitsSet: bigint;
  flags: bigint;
}

export function encodeUuids(u: UuidsPacket): Buffer {
  const b = Buffer.alloc(48);
  [u.current, u.bitmap, u.history[0], u.history[1], u.bitsSet, u.flags].forEach((v, i) =>
    b.writeBigUInt64BE(BigInt.asUintN(64, v), i * 8),
  );
  return b;
}

export function decodeUuids(b: Buffer): UuidsPacket {
  exactly(b, 48, "P_UUIDS");
  const at = (i: number) => b.readBigUInt64BE(i * 8);
  return { current: at(0), bitmap: at(1), history: [at(2), at(3)], bitsSet: at(4), flags: at(5) };
}

/** P_SYNC_UUID (p_rs_uuid): the SyncSource's new bitmap UUID. */
export function encodeSyncUuid(uuid: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt.asUintN(64, uuid), 0);
  return b;
}
export function decodeSyncUuid(b: Buffer): bigint {
  exactly(b, 8, "P_SYNC_UUID");
  return b.readBigUInt64BE(0);
}

// ---------------------------------------------------------------------------------------------------------
// P_SIZES (p_sizes, with o_qlim when DRBD_FF_WSAME is agreed)

export const DDSF_FORCED = 1;
export const DDSF_NO_RESYNC = 2;

export interface QueueLimits {
  physicalBlockSize: number;
  logicalBlockSize: number;
  alignmentOffset: number;
  ioMin: number;
  ioOpt: number;
  discardEnabled: boolean;
  discardZeroesData: boolean;
  writeSameCapable: boolean;
}

export interface SizesPacket {
  /** Usable size of the backing device, sectors. */
  diskSize: number;
  /** User-requested size, sectors (0 = none). */
  userSize: number;
  /** Currently exported size, sectors (0 asks the peer to answer with its sizes). */
  currentSize: number;
  maxBioSize: number;
  queueOrderType: number;
  ddsFlags: number;
  queueLimits?: QueueLimits;
}

export function encodeSizes(s: SizesPacket, agreedFeatures = 0): Buffer {
  const withQlim = (agreedFeatures & FF_WSAME) !== 0;
  const b = Buffer.alloc(withQlim ? 56 : 32);
  b.writeBigUInt64BE(BigInt(s.diskSize), 0);
  b.writeBigUInt64BE(BigInt(s.userSize), 8);
  b.writeBigUInt64BE(BigInt(s.currentSize), 16);
  b.writeUInt32BE(s.maxBioSize, 24);
  b.writeUInt16BE(s.queueOrderType, 28);
  b.writeUInt16BE(s.ddsFlags, 30);
  if (withQlim) {
    const q = s.queueLimits ?? {
      physicalBlockSize: 512,
      logicalBlockSize: 512,
      alignmentOffset: 0,
      ioMin: 512,
      ioOpt: 0,
      discardEnabled: false,
      discardZeroesData: false,
      writeSameCapable: false,
    };
    b.writeUInt32BE(q.physicalBlockSize, 32);
    b.writeUInt32BE(q.logicalBlockSize, 36);
    b.writeUInt32BE(q.alignmentOffset, 40);
    b.writeUInt32BE(q.ioMin, 44);
    b.writeUInt32BE(q.ioOpt, 48);
    b[52] = q.discardEnabled ? 1 : 0;
    b[53] = q.discardZeroesData ? 1 : 0;
    b[54] = q.writeSameCapable ? 1 : 0;
  }
  return b;
}

export function decodeSizes(b: Buffer, agreedFeatures = 0): SizesPacket {
  const withQlim = (agreedFeatures & FF_WSAME) !== 0;
  exactly(b, withQlim ? 56 : 32, "P_SIZES");
  const s: SizesPacket = {
    diskSize: readU64(b, 0),
    userSize: readU64(b, 8),
    currentSize: readU64(b, 16),
    maxBioSize: b.readUInt32BE(24),
    queueOrderType: b.readUInt16BE(28),
    ddsFlags: b.readUInt16BE(30),
  };
  if (withQlim)
    s.queueLimits = {
      physicalBlockSize: b.readUInt32BE(32),
      logicalBlockSize: b.readUInt32BE(36),
      alignmentOffset: b.readUInt32BE(40),
      ioMin: b.readUInt32BE(44),
      ioOpt: b.readUInt32BE(48),
      discardEnabled: b[52] !== 0,
      discardZeroesData: b[53] !== 0,
      writeSameCapable: b[54] !== 0,
    };
  return s;
}

/** max_bio_size the kernel announces per agreed version (drbd_send_sizes / drbd_max_peer_bio_size). */
export function maxBioSizeFor(agreedVersion: number): number {
  if (agreedVersion <= 94) return 32 << 10;
  if (agreedVersion < 100) return 128 << 10;
  return DRBD_MAX_BIO_SIZE;
}

// ---------------------------------------------------------------------------------------------------------
// P_STATE, state change requests and replies (linux/drbd.h union drbd_state, enum drbd_state_rv)

export enum Role {
  Unknown = 0,
  Primary = 1,
  Secondary = 2,
}
export enum ConnState {
  StandAlone = 0,
  Disconnecting,
  Unconnected,
  Timeout,
  BrokenPipe,
  NetworkFailure,
  ProtocolError,
  TearDown,
  WFConnection,
  WFReportParams,
  Connected,
  StartingSyncS,
  StartingSyncT,
  WFBitMapS,
  WFBitMapT,
  WFSyncUUID,
  SyncSource,
  SyncTarget,
  VerifyS,
  VerifyT,
  PausedSyncS,
  PausedSyncT,
  Ahead,
  Behind,
}
export enum DiskState {
  Diskless = 0,
  Attaching,
  Failed,
  Negotiating,
  Inconsistent,
  Outdated,
  DUnknown,
  Consistent,
  UpToDate,
}

export interface DrbdState {
  role: Role;
  peer: Role;
  conn: ConnState;
  disk: DiskState;
  pdsk: DiskState;
  susp: boolean;
  aftrIsp: boolean;
  peerIsp: boolean;
  userIsp: boolean;
  suspNod: boolean;
  suspFen: boolean;
}

/** Bit positions within the u32 (the little-endian bit-field order, which the wire value always uses). */
const STATE_FIELDS = [
  ["role", 0, 2],
  ["peer", 2, 2],
  ["conn", 4, 5],
  ["disk", 9, 4],
  ["pdsk", 13, 4],
  ["susp", 17, 1],
  ["aftrIsp", 18, 1],
  ["peerIsp", 19, 1],
  ["userIsp", 20, 1],
  ["suspNod", 21, 1],
  ["suspFen", 22, 1],
] as const;

export function packState(s: Partial<DrbdState>): number {
  let v = 0;
  for (const [name, shift, bits] of STATE_FIELDS) {
    const f = s[name];
    if (f === undefined) continue;
    const n = typeof f === "boolean" ? (f ? 1 : 0) : f;
    v |= (n & ((1 << bits) - 1)) << shift;
  }
  return v >>> 0;
}

export function unpackState(v: number): DrbdState {
  const get = (shift: number, bits: number) => (v >>> shift) & ((1 << bits) - 1);
  return {
    role: get(0, 2),
    peer: get(2, 2),
    conn: get(4, 5),
    disk: get(9, 4),
    pdsk: get(13, 4),
    susp: get(17, 1) === 1,
    aftrIsp: get(18, 1) === 1,
    peerIsp: get(19, 1) === 1,
    userIsp: get(20, 1) === 1,
    suspNod: get(21, 1) === 1,
    suspFen: get(22, 1) === 1,
  };
}

/** A mask covering the named fields, for P_STATE_CHG_REQ. */
export function stateMask(fields: readonly (keyof DrbdState)[]): number {
  let m = 0;
  for (const [name, shift, bits] of STATE_FIELDS) if (fields.includes(name)) m |= ((1 << bits) - 1) << shift;
  return m >>> 0;
}

/** conn values a peer's request maps to on this side (convert_state's c_tab; all others read as 0). */
const CONN_AS_SEEN_HERE: Partial<Record<number, number>> = {
  [ConnState.WFReportParams]: ConnState.WFReportParams,
  [ConnState.Connected]: ConnState.Connected,
  [ConnState.StartingSyncS]: ConnState.StartingSyncT,
  [ConnState.StartingSyncT]: ConnState.StartingSyncS,
  [ConnState.Disconnecting]: ConnState.TearDown,
  [ConnState.VerifyS]: ConnState.VerifyT,
  31: 31, // C_MASK: a mask covering conn stays a full mask
};

/**
 * A packed state (or mask) from a peer's P_STATE_CHG_REQ / P_CONN_ST_CHG_REQ, turned into this node's view
 * (receive_req_state's convert_state): role and peer swap, disk and pdsk swap, conn maps through the table
 * above, and peer_isp becomes the peer's aftr_isp | user_isp. Apply it to both mask and val.
 */
export function convertPeerState(v: number): number {
  const s = unpackState(v);
  const converted: DrbdState = {
    ...s,
    conn: CONN_AS_SEEN_HERE[s.conn] ?? 0,
    role: s.peer,
    peer: s.role,
    disk: s.pdsk,
    pdsk: s.disk,
    peerIsp: s.aftrIsp || s.userIsp,
  };
  return (packState(converted) | (v & ~0x7fffff)) >>> 0;
}

export function encodeState(s: DrbdState): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(packState(s), 0);
  return b;
}
export function decodeState(b: Buffer): DrbdState {
  exactly(b, 4, "P_STATE");
  return unpackState(b.readUInt32BE(0));
}

/** P_STATE_CHG_REQ / P_CONN_ST_CHG_REQ (p_req_state). */
export function encodeStateChangeRequest(mask: number, val: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(mask >>> 0, 0);
  b.writeUInt32BE(val >>> 0, 4);
  return b;
}
export function decodeStateChangeRequest(b: Buffer): { mask: number; val: number } {
  exactly(b, 8, "state change request");
  return { mask: b.readUInt32BE(0), val: b.readUInt32BE(4) };
}

export const SS_SUCCESS = 1;
export const SS_CW_FAILED_BY_PEER = -10;
export const SS_CONCURRENT_ST_CHG = -19;

/** P_STATE_CHG_REPLY / P_CONN_ST_CHG_REPLY: a signed enum drbd_state_rv. */
export function encodeStateChangeReply(retcode: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(retcode, 0);
  return b;
}
export function decodeStateChangeReply(b: Buffer): number {
  exactly(b, 4, "state change reply");
  return b.readInt32BE(0);
}

// ---------------------------------------------------------------------------------------------------------
// P_DATA family (p_data, p_trim, p_wsame) and their flags

export const DP_RW_SYNC = 2;
export const DP_MAY_SET_IN_SYNC = 4;
export const DP_FUA = 16;
export const DP_FLUSH = 32;
export const DP_DISCARD = 64;
export const DP_SEND_RECEIVE_ACK = 128;
export const DP_SEND_WRITE_ACK = 256;
export const DP_WSAME = 512;
export const DP_ZEROES = 1024;

export interface DataHeader {
  sector: number;
  /** Opaque to the receiver, echoed in the ack. */
  blockId: bigint;
  seqNum: number;
  dpFlags: number;
}

export interface DataPacket extends DataHeader {
  /** data-integrity-alg digest of the data (empty without one). */
  digest: Buffer;
  data: Buffer;
}

function encodeDataHeader(h: DataHeader, extra = 0): Buffer {
  const b = Buffer.alloc(24 + extra);
  b.writeBigUInt64BE(BigInt(h.sector), 0);
  b.writeBigUInt64BE(BigInt.asUintN(64, h.blockId), 8);
  b.writeUInt32BE(h.seqNum >>> 0, 16);
  b.writeUInt32BE(h.dpFlags >>> 0, 20);
  return b;
}

function decodeDataHeader(b: Buffer): DataHeader {
  return {
    sector: readU64(b, 0),
    blockId: b.readBigUInt64BE(8),
    seqNum: b.readUInt32BE(16),
    dpFlags: b.readUInt32BE(20),
  };
}

/**
 * Payload parts of P_DATA, P_DATA_REPLY or P_RS_DATA_REPLY: the 24-byte p_data, the digest, the data itself
 * (passed through, not copied).
 */
export function encodeData(p: DataPacket): Buffer[] {
  return p.digest.length > 0 ? [encodeDataHeader(p), p.digest, p.data] : [encodeDataHeader(p), p.data];
}

export function decodeData(b: Buffer, digestSize = 0): DataPacket {
  need(b, 24 + digestSize, "P_DATA");
  const data = b.subarray(24 + digestSize);
  if (data.length % 512 !== 0)
    throw new DrbdProtocolError(`P_DATA data of ${data.length} bytes is not a multiple of 512`);
  // read_in_block: one request carries at most DRBD_MAX_BIO_SIZE.
  if (data.length > DRBD_MAX_BIO_SIZE)
    throw new DrbdProtocolError(`P_DATA data of ${data.length} bytes exceeds ${DRBD_MAX_BIO_SIZE}`);
  return { ...decodeDataHeader(b), digest: b.subarray(24, 24 + digestSize), data };
}

/** P_TRIM and P_ZEROES (p_trim): p_data plus the u32 byte count, no data. */
export function encodeTrim(h: DataHeader, size: number): Buffer {
  const b = encodeDataHeader(h, 4);
  b.writeUInt32BE(size, 24);
  return b;
}
export function decodeTrim(b: Buffer): DataHeader & { size: number } {
  exactly(b, 28, "P_TRIM");
  return { ...decodeDataHeader(b), size: b.readUInt32BE(24) };
}

/** P_WSAME (p_wsame): p_data, u32 size, then the one logical block to repeat. */
export function encodeWriteSame(h: DataHeader, size: number, block: Buffer): Buffer[] {
  const b = encodeDataHeader(h, 4);
  b.writeUInt32BE(size, 24);
  return [b, block];
}
export function decodeWriteSame(b: Buffer): DataHeader & { size: number; block: Buffer } {
  need(b, 28, "P_WSAME");
  return { ...decodeDataHeader(b), size: b.readUInt32BE(24), block: b.subarray(28) };
}

// ---------------------------------------------------------------------------------------------------------
// Acks and requests (p_block_ack, p_block_req, p_block_desc)

/**
 * p_block_ack: P_RECV_ACK, P_WRITE_ACK, P_RS_WRITE_ACK, P_SUPERSEDED, P_NEG_ACK, P_NEG_DREPLY,
 * P_NEG_RS_DREPLY, P_OV_RESULT, P_RS_IS_IN_SYNC, P_RS_CANCEL, P_RETRY_WRITE.
 */
export interface BlockAck {
  sector: number;
  blockId: bigint;
  /** bytes */
  size: number;
  seqNum: number;
}

/** P_OV_RESULT block_id values (drbd_int.h ID_IN_SYNC / ID_OUT_OF_SYNC). */
export const ID_IN_SYNC = 4711n;
export const ID_OUT_OF_SYNC = 4712n;
/** block_id of resync requests (ID_SYNCER = (u64)-1). */
export const ID_SYNCER = 0xffffffffffffffffn;

export function encodeBlockAck(a: BlockAck): Buffer {
  const b = Buffer.alloc(24);
  b.writeBigUInt64BE(BigInt(a.sector), 0);
  b.writeBigUInt64BE(BigInt.asUintN(64, a.blockId), 8);
  b.writeUInt32BE(a.size, 16);
  b.writeUInt32BE(a.seqNum >>> 0, 20);
  return b;
}
export function decodeBlockAck(b: Buffer): BlockAck {
  exactly(b, 24, "p_block_ack");
  return {
    sector: readU64(b, 0),
    blockId: b.readBigUInt64BE(8),
    size: b.readUInt32BE(16),
    seqNum: b.readUInt32BE(20),
  };
}

/**
 * p_block_req: P_DATA_REQUEST, P_RS_DATA_REQUEST, P_OV_REQUEST, P_RS_THIN_REQ; with a trailing digest
 * P_CSUM_RS_REQUEST and P_OV_REPLY.
 */
export interface BlockRequest {
  sector: number;
  blockId: bigint;
  size: number;
  digest: Buffer;
}

export function encodeBlockRequest(r: Omit<BlockRequest, "digest"> & { digest?: Buffer }): Buffer[] {
  const b = Buffer.alloc(24);
  b.writeBigUInt64BE(BigInt(r.sector), 0);
  b.writeBigUInt64BE(BigInt.asUintN(64, r.blockId), 8);
  b.writeUInt32BE(r.size, 16);
  return r.digest && r.digest.length > 0 ? [b, r.digest] : [b];
}
export function decodeBlockRequest(b: Buffer): BlockRequest {
  need(b, 24, "p_block_req");
  return {
    sector: readU64(b, 0),
    blockId: b.readBigUInt64BE(8),
    size: b.readUInt32BE(16),
    digest: b.subarray(24),
  };
}

/** p_block_desc: P_OUT_OF_SYNC, P_RS_DEALLOCATED. */
export function encodeBlockDesc(sector: number, size: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(BigInt(sector), 0);
  b.writeUInt32BE(size, 8);
  return b;
}
export function decodeBlockDesc(b: Buffer): { sector: number; size: number } {
  exactly(b, 16, "p_block_desc");
  return { sector: readU64(b, 0), size: b.readUInt32BE(8) };
}

// ---------------------------------------------------------------------------------------------------------
// Barriers (p_barrier, p_barrier_ack) and P_DELAY_PROBE (p_delay_probe93)

export function encodeBarrier(barrier: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(barrier >>> 0, 0);
  return b;
}
export function decodeBarrier(b: Buffer): number {
  exactly(b, 8, "P_BARRIER");
  return b.readUInt32BE(0);
}
export function encodeBarrierAck(barrier: number, setSize: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(barrier >>> 0, 0);
  b.writeUInt32BE(setSize, 4);
  return b;
}
export function decodeBarrierAck(b: Buffer): { barrier: number; setSize: number } {
  exactly(b, 8, "P_BARRIER_ACK");
  return { barrier: b.readUInt32BE(0), setSize: b.readUInt32BE(4) };
}
export function encodeDelayProbe(seqNum: number, offsetUsec: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(seqNum >>> 0, 0);
  b.writeUInt32BE(offsetUsec >>> 0, 4);
  return b;
}
export function decodeDelayProbe(b: Buffer): { seqNum: number; offsetUsec: number } {
  exactly(b, 8, "P_DELAY_PROBE");
  return { seqNum: b.readUInt32BE(0), offsetUsec: b.readUInt32BE(4) };
}

// ---------------------------------------------------------------------------------------------------------
// Bitmap transfer (drbd_main.c send_bitmap_rle_or_plain / fill_bitmap_rle_bits,
// drbd_receiver.c receive_bitmap_plain / recv_bm_rle_bits, drbd_vli.h)
//
// The bitmap is handled as bytes: bit n (4 KiB block n) is bit n%8 of byte n/8, which is exactly the layout
// of the little-endian u64 words on the wire and on disk.

/** Progress of one bitmap transfer direction (struct bm_xfer_ctx). */
export class BitmapTransfer {
  bitOffset = 0;
  wordOffset = 0;
  readonly words: number;
  /** Packets and bytes, plain and compressed, for the "transfer totals" log line. */
  readonly stats = { plainPackets: 0, plainBytes: 0, rlePackets: 0, rleBytes: 0 };

  constructor(readonly bits: number) {
    this.words = Math.ceil(bits / 64);
  }
  get done(): boolean {
    return this.bitOffset >= this.bits;
  }
  /** After an RLE chunk the plain cursor follows the bit cursor (bm_xfer_ctx_bit_to_word_offset, 64-bit). */
  syncWordOffset(): void {
    this.wordOffset = Math.floor(this.bitOffset / 64);
  }
}

/** Bytes of bitmap needed for a device of `sectors` 512-byte sectors: one bit per 4 KiB, in whole u64 words. */
export function bitmapBytesFor(sectors: number): number {
  return Math.ceil(Math.ceil(sectors / 8) / 64) * 8;
}

/** Plain P_BITMAP payload: as many whole words as fit a 4 KiB packet with its header, or what remains. */
export function encodePlainBitmapChunk(bitmap: Buffer, xfer: BitmapTransfer, agreedVersion: number): Buffer {
  const perPacket = Math.floor((DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion)) / 8);
  const n = Math.min(perPacket, xfer.words - xfer.wordOffset);
  const out = bitmap.subarray(xfer.wordOffset * 8, (xfer.wordOffset + n) * 8);
  xfer.wordOffset += n;
  xfer.bitOffset = Math.min(xfer.wordOffset * 64, xfer.bits);
  xfer.stats.plainPackets++;
  xfer.stats.plainBytes += out.length;
  return out;
}

/** ORs a received plain P_BITMAP payload into `bitmap`; the word count must be exactly what the sender had to send. */
export function decodePlainBitmapChunk(
  payload: Buffer,
  xfer: BitmapTransfer,
  bitmap: Buffer,
  agreedVersion: number,
): void {
  const perPacket = Math.floor((DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion)) / 8);
  const n = Math.min(perPacket, xfer.words - xfer.wordOffset);
  if (payload.length !== n * 8)
    throw new DrbdProtocolError(
      `P_BITMAP: expected ${n * 8} bytes at word ${xfer.wordOffset}, got ${payload.length}`,
    );
  const base = xfer.wordOffset * 8;
  for (let i = 0; i < payload.length; i++)
    bitmap[base + i] = (bitmap[base + i] as number) | (payload[i] as number);
  xfer.wordOffset += n;
  xfer.bitOffset = Math.min(xfer.wordOffset * 64, xfer.bits);
  xfer.stats.plainPackets++;
  xfer.stats.plainBytes += payload.length;
}

/** VLI code table (drbd_vli.h VLI_L_1_1): [total bits, prefix bits, prefix value]. */
const VLI_LEVELS: readonly (readonly [number, number, number])[] = [
  [2, 1, 0x00],
  [3, 2, 0x01],
  [5, 3, 0x03],
  [7, 4, 0x07],
  [10, 5, 0x0f],
  [14, 6, 0x1f],
  [21, 8, 0x3f],
  [29, 8, 0x7f],
  [42, 8, 0xbf],
  [64, 8, 0xff],
];

/** Encodes a run length (≥1) as [code, bits]; the code is LSB-first, prefix in the low bits. */
export function vliEncode(value: bigint): [bigint, number] {
  if (value <= 0n) throw new DrbdProtocolError("VLI run length must be positive");
  let max = 0n;
  let adj = 1n;
  for (const [total, prefixBits, prefix] of VLI_LEVELS) {
    max += 1n << BigInt(total - prefixBits);
    if (value <= max) return [((value - adj) << BigInt(prefixBits)) | BigInt(prefix), total];
    adj = max + 1n;
  }
  throw new DrbdProtocolError(`VLI run length ${value} too large`);
}

/** Decodes the code in the low bits of `input` (up to 64 bits): [value, bits consumed]. */
export function vliDecode(input: bigint): [bigint, number] {
  let adj = 1n;
  for (const [total, prefixBits, prefix] of VLI_LEVELS) {
    if ((input & ((1n << BigInt(prefixBits)) - 1n)) === BigInt(prefix)) {
      const mask = (1n << BigInt(total)) - 1n;
      return [((input & mask) >> BigInt(prefixBits)) + adj, total];
    }
    adj += 1n << BigInt(total - prefixBits);
  }
  throw new DrbdProtocolError("invalid VLI prefix"); // unreachable: 0xff is the catch-all prefix
}

const bitAt = (bm: Buffer, n: number): number => ((bm[n >> 3] as number) >> (n & 7)) & 1;

const ZERO_PAGE = Buffer.alloc(4096, 0x00);
const ONES_PAGE = Buffer.alloc(4096, 0xff);

/** The first bit at or after `from` whose value is `value`, or `limit`. Skips uniform 4 KiB, then bytes. */
function findNext(bm: Buffer, from: number, limit: number, value: number): number {
  let n = from;
  const skipByte = value === 1 ? 0x00 : 0xff;
  const skipPage = value === 1 ? ZERO_PAGE : ONES_PAGE;
  while (n < limit) {
    if ((n & 7) === 0) {
      const byte = n >> 3;
      if (n + 8 * 4096 <= limit && bm.subarray(byte, byte + 4096).equals(skipPage)) {
        n += 8 * 4096;
        continue;
      }
      if (bm[byte] === skipByte) {
        n += 8;
        continue;
      }
    }
    if (bitAt(bm, n) === value) return n;
    n++;
  }
  return limit;
}

export const RLE_VLI_BITS = 2;

/**
 * One P_COMPRESSED_BITMAP payload from the transfer position: the encoding byte (code 2 = RLE_VLI_Bits, bit 7 =
 * first run is of set bits, bits 4–6 = pad bits) then the run lengths, VLI-coded, LSB-first. Returns undefined
 * when the chunk would not be smaller than plain, resetting the cursor to the word boundary as the kernel does
 * so that the caller sends a plain packet instead.
 */
export function encodeRleBitmapChunk(
  bitmap: Buffer,
  xfer: BitmapTransfer,
  agreedVersion: number,
): Buffer | undefined {
  if (agreedVersion < 90 || xfer.done) return undefined;
  const maxCode = DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion) - 1;
  const code = Buffer.alloc(maxCode);
  let bitPos = 0;
  let plainBits = 0;
  let setRun: boolean | undefined;
  let firstSet = false;
  const start = xfer.bitOffset;
  while (xfer.bitOffset < xfer.bits) {
    const looking = setRun === undefined ? 1 : setRun ? 0 : 1;
    const next = findNext(bitmap, xfer.bitOffset, xfer.bits, looking);
    const rl = next - xfer.bitOffset;
    if (setRun === undefined) {
      setRun = false;
      if (rl === 0) {
        firstSet = true;
        setRun = true;
        continue;
      }
    }
    const [c, bits] = vliEncode(BigInt(rl));
    if (bitPos + bits > maxCode * 8) break;
    putBits(code, bitPos, c, bits);
    bitPos += bits;
    plainBits += rl;
    xfer.bitOffset = next;
    setRun = !setRun;
  }
  const len = Math.ceil(bitPos / 8);
  if (plainBits < len * 8) {
    xfer.bitOffset = start;
    xfer.syncWordOffset();
    xfer.bitOffset = xfer.wordOffset * 64;
    return undefined;
  }
  xfer.syncWordOffset();
  const pad = (8 - (bitPos & 7)) & 7;
  const out = Buffer.alloc(1 + len);
  out[0] = RLE_VLI_BITS | (pad << 4) | (firstSet ? 0x80 : 0);
  code.copy(out, 1, 0, len);
  xfer.stats.rlePackets++;
  xfer.stats.rleBytes += out.length;
  return out;
}

function putBits(buf: Buffer, pos: number, value: bigint, bits: number): void {
  for (let i = 0; i < bits; i++) {
    if ((value >> BigInt(i)) & 1n) {
      const p = pos + i;
      buf[p >> 3] = (buf[p >> 3] as number) | (1 << (p & 7));
    }
  }
}

function getBits(buf: Buffer, pos: number, bits: number, limit: number): bigint {
  let v = 0n;
  const n = Math.min(bits, limit - pos);
  for (let i = 0; i < n; i++) {
    const p = pos + i;
    if (((buf[p >> 3] as number) >> (p & 7)) & 1) v |= 1n << BigInt(i);
  }
  return v;
}

/** Sets bits [from, to): partial bytes bit by bit, whole bytes at once (runs can cover the whole device). */
function setBitRange(bm: Buffer, from: number, to: number): void {
  let i = from;
  for (; i < to && i & 7; i++) bm[i >> 3] = (bm[i >> 3] as number) | (1 << (i & 7));
  const wholeEnd = to & ~7;
  if (i < wholeEnd) {
    bm.fill(0xff, i >> 3, wholeEnd >> 3);
    i = wholeEnd;
  }
  for (; i < to; i++) bm[i >> 3] = (bm[i >> 3] as number) | (1 << (i & 7));
}

/** Decodes one P_COMPRESSED_BITMAP payload into `bitmap` (set runs are ORed in), advancing the transfer. */
export function decodeRleBitmapChunk(
  payload: Buffer,
  xfer: BitmapTransfer,
  bitmap: Buffer,
  agreedVersion: number,
): void {
  if (payload.length > DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion))
    throw new DrbdProtocolError(`P_COMPRESSED_BITMAP of ${payload.length} bytes is too large`);
  if (payload.length <= 1)
    throw new DrbdProtocolError(`P_COMPRESSED_BITMAP of ${payload.length} bytes is too small`);
  const encoding = payload[0] as number;
  if ((encoding & 0x0f) !== RLE_VLI_BITS)
    throw new DrbdProtocolError(`P_COMPRESSED_BITMAP: unknown encoding ${encoding & 0x0f}`);
  const code = payload.subarray(1);
  const pad = (encoding >> 4) & 7;
  const limit = code.length * 8 - pad;
  let set = (encoding & 0x80) !== 0;
  let pos = 0;
  let s = xfer.bitOffset;
  while (pos < limit) {
    const have = Math.min(64, limit - pos);
    const [rl, bits] = vliDecode(getBits(code, pos, 64, limit));
    if (bits > have) throw new DrbdProtocolError(`P_COMPRESSED_BITMAP: code cut short at bit ${pos}`);
    const run = Number(rl);
    if (s + run > xfer.bits)
      throw new DrbdProtocolError(
        `P_COMPRESSED_BITMAP: run of ${run} at bit ${s} passes the end (${xfer.bits} bits)`,
      );
    if (set) setBitRange(bitmap, s, s + run);
    s += run;
    pos += bits;
    set = !set;
  }
  xfer.bitOffset = s;
  xfer.syncWordOffset();
  xfer.stats.rlePackets++;
  xfer.stats.rleBytes += payload.length;
}

/**
 * The whole bitmap as the packets a sender emits: RLE when allowed and smaller, plain otherwise
 * (send_bitmap_rle_or_plain). Each entry is [command, payload].
 */
export function encodeBitmapPackets(
  bitmap: Buffer,
  bits: number,
  agreedVersion: number,
  useRle: boolean,
): [DrbdCommand, Buffer][] {
  const xfer = new BitmapTransfer(bits);
  const out: [DrbdCommand, Buffer][] = [];
  while (!xfer.done) {
    const rle = useRle ? encodeRleBitmapChunk(bitmap, xfer, agreedVersion) : undefined;
    if (rle) out.push([DrbdCommand.CompressedBitmap, rle]);
    else out.push([DrbdCommand.Bitmap, encodePlainBitmapChunk(bitmap, xfer, agreedVersion)]);
  }
  return out;
}
