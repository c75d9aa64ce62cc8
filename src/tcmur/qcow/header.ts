/**
 * The qcow2 image header and its extensions (QEMU docs/interop/qcow2.txt, "Header" and "Header
 * extensions"), parsed and checked against what this implementation serves: versions 2 and 3, no
 * encryption, zlib compression only (compressed clusters are inflated in image.ts), no external data file, no extended L2 entries.
 */

export const QCOW_MAGIC = 0x514649fb; // "QFI\xfb"
const V2_HEADER_LENGTH = 72;
const V3_MIN_HEADER_LENGTH = 104;

/** Incompatible feature bits (header bytes 72-79). */
export const enum Incompatible {
  Dirty = 1 << 0,
  Corrupt = 1 << 1,
  ExternalData = 1 << 2,
  CompressionType = 1 << 3,
  ExtendedL2 = 1 << 4,
}

/** Header extension types. */
const enum Extension {
  End = 0x00000000,
  BackingFormat = 0xe2792aca,
  FullDiskEncryption = 0x0537be77,
  ExternalDataFile = 0x44415441,
  Bitmaps = 0x23852875,
}

/** Byte offsets of header fields this implementation rewrites. */
export const HeaderField = {
  /** refcount_table_offset (u64), followed by refcount_table_clusters (u32) at 56. */
  refcountTableOffset: 48,
  incompatibleFeatures: 72,
  autoclearFeatures: 88,
} as const;

export interface QcowHeader {
  readonly version: 2 | 3;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly virtualSize: number;
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly snapshotCount: number;
  readonly incompatibleFeatures: number;
  readonly autoclearFeatures: number;
  /** refcount_bits = 1 << refcountOrder; 4 (16 bits) for version 2. */
  readonly refcountOrder: number;
  readonly headerLength: number;
  /** The backing file name as stored (relative names are relative to the image's directory). */
  readonly backingFile?: string;
  /** The backing file format from its header extension ("raw", "qcow2"), when present. */
  readonly backingFormat?: string;
  /** A bitmaps extension is present: its directory and tables hold clusters no L2 table references. */
  readonly hasBitmaps: boolean;
}

/** Read a big-endian u64 that must fit a JavaScript number (offsets and sizes below 2^53). */
export function readOffset(buf: Buffer, at: number, what: string): number {
  const hi = buf.readUInt32BE(at);
  const lo = buf.readUInt32BE(at + 4);
  if (hi >= 0x200000)
    throw new Error(`${what} (${hi.toString(16)}${lo.toString(16).padStart(8, "0")}h) exceeds 2^53`);
  return hi * 0x1_0000_0000 + lo;
}

/** Write a big-endian u64 from a number below 2^53. */
export function writeOffset(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/**
 * Parse the header from the image's first cluster (or at least its first 4 KiB plus whatever the
 * extensions need). Throws an error naming `where` and the reason for anything not served.
 */
export function parseHeader(buf: Buffer, where: string): QcowHeader {
  if (buf.length < V2_HEADER_LENGTH || buf.readUInt32BE(0) !== QCOW_MAGIC) {
    throw new Error(`${where}: not a qcow2 image (no QFI\\xfb magic)`);
  }
  const version = buf.readUInt32BE(4);
  if (version !== 2 && version !== 3) {
    throw new Error(`${where}: qcow2 version ${version} is not supported (versions 2 and 3 are)`);
  }
  const backingFileOffset = readOffset(buf, 8, `${where}: backing_file_offset`);
  const backingFileSize = buf.readUInt32BE(16);
  const clusterBits = buf.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) {
    throw new Error(`${where}: cluster_bits ${clusterBits} is outside 9..21 (512 B to 2 MiB clusters)`);
  }
  const clusterSize = 2 ** clusterBits;
  const virtualSize = readOffset(buf, 24, `${where}: size`);
  const cryptMethod = buf.readUInt32BE(32);
  if (cryptMethod !== 0) {
    const kind = cryptMethod === 1 ? "AES" : cryptMethod === 2 ? "LUKS" : `method ${cryptMethod}`;
    throw new Error(`${where}: encrypted images (${kind}) are not supported`);
  }
  const l1Size = buf.readUInt32BE(36);
  const l1TableOffset = readOffset(buf, 40, `${where}: l1_table_offset`);
  const refcountTableOffset = readOffset(buf, 48, `${where}: refcount_table_offset`);
  const refcountTableClusters = buf.readUInt32BE(56);
  const snapshotCount = buf.readUInt32BE(60);

  let incompatibleFeatures = 0;
  let autoclearFeatures = 0;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_LENGTH;
  if (version === 3) {
    if (buf.length < V3_MIN_HEADER_LENGTH) throw new Error(`${where}: version 3 header is truncated`);
    if (buf.readUInt32BE(72) !== 0) {
      throw new Error(`${where}: unknown incompatible features ${buf.readUInt32BE(72).toString(16)}h<<32`);
    }
    incompatibleFeatures = buf.readUInt32BE(76);
    // Only "any bit set" matters: a writable open clears them all (qcow2.txt, autoclear_features).
    autoclearFeatures = buf.readUInt32BE(88) !== 0 ? 0xffffffff : buf.readUInt32BE(92);
    refcountOrder = buf.readUInt32BE(96);
    headerLength = buf.readUInt32BE(100);
    if (headerLength < V3_MIN_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > clusterSize) {
      throw new Error(`${where}: header_length ${headerLength} is invalid`);
    }
    if (refcountOrder > 6) throw new Error(`${where}: refcount_order ${refcountOrder} exceeds 6`);
  }
  const refuse: [number, string][] = [
    [Incompatible.Corrupt, "the image is marked corrupt (run qemu-img check -r all)"],
    [Incompatible.Dirty, "the image is marked dirty (lazy refcounts were in use: run qemu-img check -r all)"],
    [Incompatible.ExternalData, "images with an external data file are not supported"],
    [Incompatible.CompressionType, "compressed images (non-zlib compression type) are not supported"],
    [Incompatible.ExtendedL2, "images with extended L2 entries (subclusters) are not supported"],
  ];
  for (const [bit, why] of refuse) if (incompatibleFeatures & bit) throw new Error(`${where}: ${why}`);
  if (incompatibleFeatures & ~0x1f) {
    throw new Error(
      `${where}: unknown incompatible features ${(incompatibleFeatures & ~0x1f).toString(16)}h`,
    );
  }
  for (const [name, off] of [
    ["l1_table_offset", l1TableOffset],
    ["refcount_table_offset", refcountTableOffset],
  ] as const) {
    if (off === 0 || off % clusterSize !== 0)
      throw new Error(`${where}: ${name} ${off} is not cluster aligned`);
  }
  const l2Entries = clusterSize / 8;
  const needL1 = Math.ceil(virtualSize / (clusterSize * l2Entries));
  if (l1Size < needL1) throw new Error(`${where}: l1_size ${l1Size} is too small for size ${virtualSize}`);
  if (refcountTableClusters === 0) throw new Error(`${where}: refcount_table_clusters is 0`);

  // Header extensions follow the header up to the end of the first cluster.
  let backingFormat: string | undefined;
  let hasBitmaps = false;
  let at = headerLength;
  for (;;) {
    if (at + 8 > buf.length) throw new Error(`${where}: header extensions run past the first cluster`);
    const type = buf.readUInt32BE(at);
    const len = buf.readUInt32BE(at + 4);
    if (type === Extension.End) break;
    const data = at + 8;
    if (data + len > buf.length)
      throw new Error(`${where}: header extension ${type.toString(16)}h is truncated`);
    if (type === Extension.BackingFormat) backingFormat = buf.toString("utf8", data, data + len);
    if (type === Extension.Bitmaps) hasBitmaps = true;
    if (type === Extension.FullDiskEncryption)
      throw new Error(`${where}: encrypted images are not supported`);
    if (type === Extension.ExternalDataFile)
      throw new Error(`${where}: external data files are not supported`);
    at = data + Math.ceil(len / 8) * 8;
  }

  let backingFile: string | undefined;
  if (backingFileOffset !== 0) {
    if (backingFileSize === 0 || backingFileSize > 1023 || backingFileOffset + backingFileSize > buf.length) {
      throw new Error(
        `${where}: backing file name (${backingFileSize} bytes at ${backingFileOffset}) is invalid`,
      );
    }
    backingFile = buf.toString("utf8", backingFileOffset, backingFileOffset + backingFileSize);
  }
  return {
    version,
    clusterBits,
    clusterSize,
    virtualSize,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    snapshotCount,
    incompatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    backingFile,
    backingFormat,
    hasBitmaps,
  };
}
