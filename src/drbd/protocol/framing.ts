/**
 * Packet headers (p_header80/95/100) and the incremental framer that splits a socket's byte stream
 * into packets.
 */
import {
  DrbdCommand,
  DrbdProtocolError,
  type DrbdSocket,
  checkPayloadSize,
  commandName,
} from "./commands.js";
import { shiftSlices } from "../../util/chunk_slices.js";

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
  // Every byte is written below, so the pooled allocUnsafe is safe (one header per packet on the data path).
  if (agreedVersion >= 100) {
    const b = Buffer.allocUnsafe(16);
    b.writeUInt32BE(DRBD_MAGIC_100, 0);
    b.writeUInt16BE(volume, 4);
    b.writeUInt16BE(command, 6);
    b.writeUInt32BE(length, 8);
    b.writeUInt32BE(0, 12);
    return b;
  }
  const b = Buffer.allocUnsafe(8);
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

// Framer: splits a socket's byte stream into packets.

export interface Packet {
  header: PacketHeader;
  /** The payload, contiguous; of a P_DATA framed with `scatterData`, only its p_data (P_DATA_HEAD bytes). */
  payload: Buffer;
  /**
   * With `scatterData`, a P_DATA's bytes after p_data (the digest, then the data) as slices of the socket
   * reads they arrived in, not copied: a 64 KiB write spans two or three reads.
   */
  rest?: Buffer[];
  /** `rest` lies in a read buffer that is reused once the read is handled: copy it to keep it longer. */
  borrowed?: boolean;
}

/** A packet whose `rest` may be kept: borrowed slices copied into one buffer of its own. */
export function ownedPacket(p: Packet): Packet {
  if (!p.borrowed || !p.rest) return p;
  let n = 0;
  for (const b of p.rest) n += b.length;
  return { header: p.header, payload: p.payload, rest: [Buffer.concat(p.rest, n)] };
}

/** p_data: sector, block_id, seq_num, dp_flags (drbd_protocol.h), before a P_DATA's digest and data. */
export const P_DATA_HEAD = 24;

export interface FramerOptions {
  /** Agreed protocol version; 0 before the feature handshake (h80 headers). */
  agreedVersion?: number;
  /** Largest accepted payload; larger lengths are refused before any of it is buffered. */
  maxPayload?: number;
  /** Refuse packets that belong on the other socket ("Unexpected data/meta packet" in the kernel). */
  socket?: DrbdSocket;
  /**
   * Return P_DATA as p_data plus slices (Packet.rest) instead of one buffer: the data is then never copied
   * out of the socket's reads (the receiver writes the slices as an I/O vector).
   */
  scatterData?: boolean;
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
  private readonly scatterData: boolean;
  private pendingHeader: PacketHeader | undefined;
  /** Some chunk is borrowed (pushBorrowed) until retain(). */
  private borrowed = false;

  constructor(opts: FramerOptions = {}) {
    this.agreedVersion = opts.agreedVersion ?? 0;
    this.maxPayload = opts.maxPayload ?? DRBD_MAX_BIO_SIZE + DRBD_SOCKET_BUFFER_SIZE;
    this.socket = opts.socket;
    this.scatterData = opts.scatterData === true;
  }

  setAgreedVersion(v: number): void {
    this.agreedVersion = v;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * A chunk valid only until retain() (a read into a reused buffer, owned_reads.ts). Packets framed meanwhile
   * get copies of their payload; a P_DATA's `rest` stays slices of it, marked `borrowed`: whoever keeps them
   * past the read copies them.
   */
  pushBorrowed(chunk: Buffer): void {
    this.borrowed = true;
    this.push(chunk);
  }

  /** The borrowed chunk is about to be reused: what is left of it is copied into memory of its own. */
  retain(): void {
    if (!this.borrowed) return;
    this.borrowed = false;
    if (this.buffered > 0) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
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
    // A shorter P_DATA comes whole: its decoder reports it as truncated.
    if (this.scatterData && header.command === DrbdCommand.Data && header.length >= P_DATA_HEAD) {
      const payload = this.take(P_DATA_HEAD);
      const rest = this.takeParts(header.length - P_DATA_HEAD);
      return this.borrowed ? { header, payload, rest, borrowed: true } : { header, payload, rest };
    }
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
    if (first && first.length >= n && !this.borrowed) {
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

  /** Removes n bytes from the front as slices of the chunks they lie in, never copied. */
  private takeParts(n: number): Buffer[] {
    this.buffered -= n;
    return shiftSlices(this.chunks, n);
  }
}
