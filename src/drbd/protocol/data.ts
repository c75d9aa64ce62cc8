/**
 * The I/O packets: P_DATA and its family (P_TRIM, P_ZEROES, P_WSAME), the block acks, block requests
 * and descriptors of the resync and verify, barriers and their acks, and P_DELAY_PROBE.
 */
import { DrbdProtocolError } from "./commands.js";
import { exactly, need, readU64 } from "./codec.js";
import { DRBD_MAX_BIO_SIZE } from "./framing.js";

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
  // Pooled: the 24 bytes are written here, the `extra` ones (P_TRIM's size …) by every caller.
  const b = Buffer.allocUnsafe(24 + extra);
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

/**
 * P_DATA's payload as gather parts for a write vector: p_data, the digest when there is one, then the data
 * buffers as they are (drbd_send_dblock sends the digest between header and data).
 */
export function encodeDataParts(h: DataHeader, digest: Buffer | undefined, iov: readonly Buffer[]): Buffer[] {
  const parts = [encodeDataHeader(h)];
  if (digest && digest.length > 0) parts.push(digest);
  for (const b of iov) parts.push(b);
  return parts;
}

export function decodeData(b: Buffer, digestSize = 0): DataPacket {
  need(b, 24 + digestSize, "P_DATA");
  const data = b.subarray(24 + digestSize);
  if (data.length % 512 !== 0)
    throw new DrbdProtocolError(`P_DATA data of ${data.length} bytes is not a multiple of 512`);
  // read_in_block: one request carries at most DRBD_MAX_BIO_SIZE.
  if (data.length > DRBD_MAX_BIO_SIZE)
    throw new DrbdProtocolError(`P_DATA data of ${data.length} bytes exceeds ${DRBD_MAX_BIO_SIZE}`);
  return {
    sector: readU64(b, 0),
    blockId: b.readBigUInt64BE(8),
    seqNum: b.readUInt32BE(16),
    dpFlags: b.readUInt32BE(20),
    digest: digestSize > 0 ? b.subarray(24, 24 + digestSize) : EMPTY,
    data,
  };
}

/**
 * p_data of a P_DATA whose data (`dataBytes`, digest excluded) arrived as separate slices (PacketFramer
 * `scatterData`), with decodeData's checks of the data size.
 */
export function decodeDataHead(head: Buffer, dataBytes: number): DataHeader {
  exactly(head, 24, "p_data");
  if (dataBytes % 512 !== 0)
    throw new DrbdProtocolError(`P_DATA data of ${dataBytes} bytes is not a multiple of 512`);
  if (dataBytes > DRBD_MAX_BIO_SIZE)
    throw new DrbdProtocolError(`P_DATA data of ${dataBytes} bytes exceeds ${DRBD_MAX_BIO_SIZE}`);
  return decodeDataHeader(head);
}

/** The digest of a packet without one. */
const EMPTY = Buffer.alloc(0);

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
  const b = Buffer.allocUnsafe(24); // every byte written below
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
