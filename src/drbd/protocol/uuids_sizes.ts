/**
 * What a peer says about its data and its disk: P_UUIDS and P_SYNC_UUID (the generation identifiers
 * the resync decision compares) and P_SIZES (disk sizes and queue limits).
 */
import { exactly, readU64 } from "./codec.js";
import { DRBD_MAX_BIO_SIZE } from "./framing.js";
import { FF_WSAME } from "./handshake.js";

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
