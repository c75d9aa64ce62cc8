/**
 * DRBD 8.4 "v08" on-disk metadata, laid out as the kernel (drbd_main.c drbd_md_write/drbd_md_read, drbd_nl.c
 * drbd_md_set_sector_offsets, drbd_actlog.c) and drbd-utils' drbdmeta (create-md, apply-al) write it, so that
 * a lower device prepared here attaches to kernel DRBD and vice versa.
 *
 * Units: sectors are 512 bytes. Offsets in the superblock (al_offset, bm_offset) are signed sector offsets
 * relative to the superblock. One bitmap bit covers 4 KiB (8 sectors); one activity-log extent 4 MiB.
 */
import { open, type FileHandle } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { crc32c } from "@node-rs/crc32";
import type { BlockDevice } from "../bdev/bdev.js";

export const DRBD_MD_MAGIC_07 = 0x8374026a;
export const DRBD_MD_MAGIC_08 = 0x8374026b;
/** Written while attached; a crash leaves it behind and forces apply-al before the next attach. */
export const DRBD_MD_MAGIC_84_UNCLEAN = 0x8374026c;
export const DRBD_MD_MAGIC_09 = 0x8374026d;

/** Superblock flags (enum mdf_flag). */
export const MDF_CONSISTENT = 1 << 0;
export const MDF_PRIMARY_IND = 1 << 1;
export const MDF_CONNECTED_IND = 1 << 2;
export const MDF_FULL_SYNC = 1 << 3;
export const MDF_WAS_UP_TO_DATE = 1 << 4;
export const MDF_PEER_OUT_DATED = 1 << 5;
export const MDF_CRASHED_PRIMARY = 1 << 6;
export const MDF_AL_CLEAN = 1 << 7;
export const MDF_AL_DISABLED = 1 << 8;

export const UUID_JUST_CREATED = 4n;
export const BM_BLOCK_SIZE = 4096;
export const SECTOR = 512;
export const MD_4KB_SECT = 8;
export const MD_32KB_SECT = 64;
/** Indexed external metadata slots are 128 MiB each. */
export const MD_128MB_SECT = 262144;
/** One bitmap sector (4096 bits of 4 KiB) covers 16 MiB = 32768 sectors (BM_SECT_PER_EXT). */
const BM_SECT_PER_BITMAP_SECTOR = 32768;
/** drbdmeta create-md's initial al_nr_extents ("arbitrary"). */
export const CREATE_MD_AL_NR_EXTENTS = 257;

export class DrbdMetadataError extends Error {
  constructor(
    readonly where: string,
    detail: string,
  ) {
    super(`${where}: ${detail}`);
    this.name = "DrbdMetadataError";
  }
}

// ---------------------------------------------------------------------------------------------------------
// Superblock (struct meta_data_on_disk, 4096 bytes, big-endian)

export interface SuperBlock {
  /** Last agreed size of the DRBD device, sectors. */
  laSizeSect: number;
  /** UI_CURRENT, UI_BITMAP, UI_HISTORY_START, UI_HISTORY_END. */
  uuids: [bigint, bigint, bigint, bigint];
  deviceUuid: bigint;
  flags: number;
  magic: number;
  mdSizeSect: number;
  /** Signed, sectors from the superblock. */
  alOffset: number;
  alNrExtents: number;
  /** Signed, sectors from the superblock. */
  bmOffset: number;
  bmBytesPerBit: number;
  laPeerMaxBioSize: number;
  alStripes: number;
  alStripeSize4k: number;
}

export function encodeSuperBlock(sb: SuperBlock): Buffer {
  const b = Buffer.alloc(4096);
  b.writeBigUInt64BE(BigInt(sb.laSizeSect), 0);
  sb.uuids.forEach((u, i) => b.writeBigUInt64BE(BigInt.asUintN(64, u), 8 + i * 8));
  b.writeBigUInt64BE(BigInt.asUintN(64, sb.deviceUuid), 40);
  b.writeUInt32BE(sb.flags >>> 0, 56);
  b.writeUInt32BE(sb.magic >>> 0, 60);
  b.writeUInt32BE(sb.mdSizeSect, 64);
  b.writeInt32BE(sb.alOffset, 68);
  b.writeUInt32BE(sb.alNrExtents, 72);
  b.writeInt32BE(sb.bmOffset, 76);
  b.writeUInt32BE(sb.bmBytesPerBit, 80);
  b.writeUInt32BE(sb.laPeerMaxBioSize, 84);
  b.writeUInt32BE(sb.alStripes, 88);
  b.writeUInt32BE(sb.alStripeSize4k, 92);
  return b;
}

export function decodeSuperBlock(b: Buffer): SuperBlock {
  if (b.length < 96) throw new DrbdMetadataError("superblock", `needs 96 bytes, got ${b.length}`);
  const u = (off: number) => b.readBigUInt64BE(off);
  return {
    laSizeSect: Number(u(0)),
    uuids: [u(8), u(16), u(24), u(32)],
    deviceUuid: u(40),
    flags: b.readUInt32BE(56),
    magic: b.readUInt32BE(60),
    mdSizeSect: b.readUInt32BE(64),
    alOffset: b.readInt32BE(68),
    alNrExtents: b.readUInt32BE(72),
    bmOffset: b.readInt32BE(76),
    bmBytesPerBit: b.readUInt32BE(80),
    laPeerMaxBioSize: b.readUInt32BE(84),
    alStripes: b.readUInt32BE(88),
    alStripeSize4k: b.readUInt32BE(92),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Layout (drbd_md_set_sector_offsets, drbd_md_ss, drbd_md_first_sector, drbd_get_max_capacity)

/** `meta-disk internal`, `meta-disk DEV` (flexible external) or `meta-disk DEV [idx]` (indexed external). */
export type MetaDiskPlacement =
  { kind: "internal" } | { kind: "flexible" } | { kind: "indexed"; index: number };

export interface MetadataLayout {
  placement: MetaDiskPlacement;
  /** Absolute sector of the superblock on the metadata device. */
  mdOffsetSect: number;
  mdSizeSect: number;
  alOffset: number;
  bmOffset: number;
  alStripes: number;
  alStripeSize4k: number;
  /** Sectors of the lower device the DRBD device may use (internal metadata takes its share off the end). */
  usableSectors: number;
  /** Bits in the bitmap: one per 4 KiB of the usable size, rounded up. */
  bmBits: number;
  /** Bytes of bitmap in use: whole little-endian u64 words. */
  bmBytes: number;
}

export interface LayoutOptions {
  /** Size of the lower (data) device, sectors. */
  lowerSectors: number;
  /** Size of the metadata device for external placements, sectors. */
  metaSectors?: number;
  placement: MetaDiskPlacement;
  alStripes?: number;
  alStripeSize4k?: number;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

export function computeLayout(opts: LayoutOptions): MetadataLayout {
  const alStripes = opts.alStripes ?? 1;
  const alStripeSize4k = opts.alStripeSize4k ?? MD_32KB_SECT / 8;
  const alSizeSect = alStripes * alStripeSize4k * MD_4KB_SECT;
  const p = opts.placement;
  let mdOffsetSect: number;
  let mdSizeSect: number;
  let alOffset: number;
  let bmOffset: number;
  let usable: number;
  if (p.kind === "internal") {
    const cap = opts.lowerSectors;
    // Bitmap sized for the whole lower device: one sector per 16 MiB, in whole 4 KiB.
    const bmSect = align(Math.ceil(align(cap, BM_SECT_PER_BITMAP_SECTOR) / BM_SECT_PER_BITMAP_SECTOR), 8);
    mdSizeSect = bmSect + MD_4KB_SECT + alSizeSect;
    mdOffsetSect = Math.floor(cap / 8) * 8 - MD_4KB_SECT;
    alOffset = -alSizeSect;
    bmOffset = MD_4KB_SECT - mdSizeSect;
    usable = mdOffsetSect + bmOffset;
    if (usable <= 0)
      throw new DrbdMetadataError(
        "layout",
        `lower device of ${cap} sectors is too small for internal metadata of ${mdSizeSect} sectors`,
      );
  } else {
    const metaSectors = opts.metaSectors;
    if (metaSectors === undefined)
      throw new DrbdMetadataError("layout", "external metadata needs the metadata device size");
    alOffset = MD_4KB_SECT;
    bmOffset = MD_4KB_SECT + alSizeSect;
    if (p.kind === "indexed") {
      if (alSizeSect !== MD_32KB_SECT)
        throw new DrbdMetadataError("layout", "indexed external metadata has a fixed 32 KiB activity log");
      mdOffsetSect = MD_128MB_SECT * p.index;
      mdSizeSect = MD_128MB_SECT;
      if (mdOffsetSect + mdSizeSect > metaSectors)
        throw new DrbdMetadataError(
          "layout",
          `metadata index ${p.index} needs ${mdOffsetSect + mdSizeSect} sectors, the metadata device has ${metaSectors}`,
        );
    } else {
      // Flexible external metadata occupies the whole metadata device.
      mdOffsetSect = 0;
      mdSizeSect = metaSectors;
    }
    // The bitmap area limits how much of the lower device it can describe.
    const bitmapCovers = (mdSizeSect - bmOffset) * SECTOR * 8 * 8;
    usable = Math.min(opts.lowerSectors, bitmapCovers);
    if (usable <= 0)
      throw new DrbdMetadataError("layout", `metadata device of ${metaSectors} sectors is too small`);
  }
  const bmBits = Math.ceil(usable / 8);
  return {
    placement: p,
    mdOffsetSect,
    mdSizeSect,
    alOffset,
    bmOffset,
    alStripes,
    alStripeSize4k,
    usableSectors: usable,
    bmBits,
    bmBytes: Math.ceil(bmBits / 64) * 8,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Activity log transactions (drbd_actlog.c struct al_transaction_on_disk, 4096 bytes)

export const DRBD_AL_MAGIC = 0x69cb65a2;
export const AL_TR_UPDATE = 0;
export const AL_TR_INITIALIZED = 0xffff;
export const AL_UPDATES_PER_TRANSACTION = 64;
export const AL_CONTEXT_PER_TRANSACTION = 919;
/** An activity-log extent is 4 MiB: extent = sector >> 13. */
export const AL_EXTENT_SHIFT_SECT = 13;
export const LC_FREE = 0xffffffff;

/** DRBD's crc32c: the Castagnoli polynomial from seed 0, without the final inversion (crc32c(0, buf, len)). */
export function drbdCrc32c(b: Buffer): number {
  // @node-rs/crc32 computes the standard form ~raw(~init); init 0xffffffff makes the raw seed 0.
  return ~crc32c(b, 0xffffffff) >>> 0;
}

export interface AlUpdate {
  slot: number;
  extent: number;
}

export interface AlTransaction {
  trNumber: number;
  type: number;
  updates: AlUpdate[];
  /** al-extents at the time of writing. */
  contextSize: number;
  contextStartSlot: number;
  /** Extent numbers of slots contextStartSlot… (LC_FREE for unused), at most 919. */
  context: number[];
}

export function encodeAlTransaction(tr: AlTransaction): Buffer {
  if (tr.updates.length > AL_UPDATES_PER_TRANSACTION)
    throw new DrbdMetadataError(
      "activity log",
      `${tr.updates.length} updates exceed ${AL_UPDATES_PER_TRANSACTION}`,
    );
  if (tr.context.length > AL_CONTEXT_PER_TRANSACTION)
    throw new DrbdMetadataError(
      "activity log",
      `context of ${tr.context.length} exceeds ${AL_CONTEXT_PER_TRANSACTION}`,
    );
  const b = Buffer.alloc(4096);
  b.writeUInt32BE(DRBD_AL_MAGIC, 0);
  b.writeUInt32BE(tr.trNumber >>> 0, 4);
  b.writeUInt16BE(tr.type, 12);
  b.writeUInt16BE(tr.updates.length, 14);
  b.writeUInt16BE(tr.contextSize, 16);
  b.writeUInt16BE(tr.contextStartSlot, 18);
  for (let i = 0; i < AL_UPDATES_PER_TRANSACTION; i++) {
    const u = tr.updates[i];
    b.writeUInt16BE(u ? u.slot : 0xffff, 36 + i * 2);
    b.writeUInt32BE(u ? u.extent >>> 0 : LC_FREE, 164 + i * 4);
  }
  for (let i = 0; i < AL_CONTEXT_PER_TRANSACTION; i++)
    b.writeUInt32BE((tr.context[i] ?? LC_FREE) >>> 0, 420 + i * 4);
  b.writeUInt32BE(drbdCrc32c(b), 8);
  return b;
}

/** A transaction block, or undefined when magic or crc do not match (a torn or never-written block). */
export function decodeAlTransaction(block: Buffer): AlTransaction | undefined {
  if (block.length !== 4096)
    throw new DrbdMetadataError("activity log", `block of ${block.length} bytes, expected 4096`);
  if (block.readUInt32BE(0) !== DRBD_AL_MAGIC) return undefined;
  const stored = block.readUInt32BE(8);
  const copy = Buffer.from(block);
  copy.writeUInt32BE(0, 8);
  if (drbdCrc32c(copy) !== stored) return undefined;
  const n = block.readUInt16BE(14);
  const updates: AlUpdate[] = [];
  for (let i = 0; i < AL_UPDATES_PER_TRANSACTION; i++) {
    const slot = block.readUInt16BE(36 + i * 2);
    if (i >= n && slot === 0xffff) continue;
    updates.push({ slot, extent: block.readUInt32BE(164 + i * 4) });
  }
  const context: number[] = [];
  for (let i = 0; i < AL_CONTEXT_PER_TRANSACTION; i++) context.push(block.readUInt32BE(420 + i * 4));
  return {
    trNumber: block.readUInt32BE(4),
    type: block.readUInt16BE(12),
    updates,
    contextSize: block.readUInt16BE(16),
    contextStartSlot: block.readUInt16BE(18),
    context,
  };
}

/** The 4 KiB ring slot of transaction number t (al_tr_number_to_on_disk_sector, in 4 KiB blocks). */
export function alRingSlot(trNumber: number, alStripes: number, alStripeSize4k: number): number {
  const t = trNumber % (alStripes * alStripeSize4k);
  return (t % alStripes) * alStripeSize4k + Math.floor(t / alStripes);
}

/** A fresh activity log as drbdmeta create-md writes it: every block AL_TR_INITIALIZED with a valid crc. */
export function initializedActivityLog(alStripes: number, alStripeSize4k: number): Buffer {
  const n = alStripes * alStripeSize4k;
  const block = Buffer.alloc(4096);
  block.writeUInt32BE(DRBD_AL_MAGIC, 0);
  block.writeUInt16BE(AL_TR_INITIALIZED, 12);
  block.writeUInt32BE(drbdCrc32c(block), 8);
  const out = Buffer.alloc(n * 4096);
  for (let i = 0; i < n; i++) block.copy(out, i * 4096);
  return out;
}

/**
 * Reconstructs the active extent set at the newest transaction (drbdmeta replay_al_84): decode every block
 * in transaction order, find the oldest and newest valid update transactions (serial-number arithmetic on
 * tr_number), and replay context snapshots then updates from oldest to newest. Returns the hot extents.
 */
export function replayActivityLog(al: Buffer, alStripes: number, alStripeSize4k: number): Set<number> {
  const n = alStripes * alStripeSize4k;
  if (al.length !== n * 4096)
    throw new DrbdMetadataError("activity log", `expected ${n * 4096} bytes, got ${al.length}`);
  const trs: (AlTransaction | undefined)[] = [];
  let valid = 0;
  let oldest = -1;
  let newest = -1;
  for (let b = 0; b < n; b++) {
    const slot = alRingSlot(b, alStripes, alStripeSize4k);
    const tr = decodeAlTransaction(al.subarray(slot * 4096, slot * 4096 + 4096));
    trs.push(tr);
    if (!tr) continue;
    valid++;
    if (tr.type === AL_TR_INITIALIZED) continue;
    if (tr.type !== AL_TR_UPDATE)
      throw new DrbdMetadataError("activity log", `transaction ${tr.trNumber} has unknown type ${tr.type}`);
    if (oldest < 0) {
      oldest = newest = b;
      continue;
    }
    if ((tr.trNumber - (trs[oldest] as AlTransaction).trNumber) << 0 < 0) oldest = b;
    if ((tr.trNumber - (trs[newest] as AlTransaction).trNumber) << 0 > 0) newest = b;
  }
  if (valid === 0) throw new DrbdMetadataError("activity log", "no valid block found (was create-md run?)");
  const hot = new Map<number, number>();
  if (oldest >= 0) {
    const last = newest < oldest ? newest + n : newest;
    for (let b = oldest; b <= last; b++) {
      const tr = trs[b % n];
      if (!tr || tr.type === AL_TR_INITIALIZED) continue;
      tr.context.forEach((extent, i) => {
        const slot = tr.contextStartSlot + i;
        if (extent === LC_FREE && slot >= tr.contextSize) return;
        hot.set(slot, extent);
      });
      for (const u of tr.updates) hot.set(u.slot, u.extent);
    }
  }
  return new Set([...hot.values()].filter((e) => e !== LC_FREE));
}

/** Marks every 4 KiB block of the given 4 MiB extents out of sync (1024 bits per extent). */
export function markExtentsOutOfSync(bitmap: Buffer, bmBits: number, extents: Iterable<number>): number {
  let marked = 0;
  for (const e of extents) {
    const first = e * 1024;
    const end = Math.min(first + 1024, bmBits);
    for (let bit = first; bit < end; bit++) {
      const byte = bit >> 3;
      const mask = 1 << (bit & 7);
      if (((bitmap[byte] as number) & mask) === 0) {
        bitmap[byte] = (bitmap[byte] as number) | mask;
        marked++;
      }
    }
  }
  return marked;
}

// ---------------------------------------------------------------------------------------------------------
// Storage access: a file (regular file or block device node) or a block device of the tree.

/** Byte-addressed access to the device holding metadata; offsets and lengths are 4 KiB multiples. */
export interface MetadataStore {
  readonly name: string;
  readonly sizeBytes: number;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Buffer): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Opens a file; `sizeBytes` overrides the size (block device nodes report 0 in stat). */
export async function openFileStore(path: string, sizeBytes?: number): Promise<MetadataStore> {
  let fh: FileHandle;
  try {
    fh = await open(path, "r+");
  } catch (e) {
    throw new DrbdMetadataError(path, `cannot open: ${(e as Error).message}`);
  }
  const size = sizeBytes ?? (await fh.stat()).size;
  return {
    name: path,
    sizeBytes: size,
    async read(offset, length) {
      const b = Buffer.alloc(length);
      const { bytesRead } = await fh.read(b, 0, length, offset);
      if (bytesRead !== length)
        throw new DrbdMetadataError(path, `short read at byte ${offset}: ${bytesRead} of ${length}`);
      return b;
    },
    async write(offset, data) {
      const { bytesWritten } = await fh.write(data, 0, data.length, offset);
      if (bytesWritten !== data.length)
        throw new DrbdMetadataError(path, `short write at byte ${offset}: ${bytesWritten} of ${data.length}`);
    },
    flush: () => fh.datasync(),
    close: () => fh.close(),
  };
}

/** Metadata on a block device of the tree (blockSize must divide 4096). */
export function blockDeviceStore(dev: BlockDevice): MetadataStore {
  if (4096 % dev.blockSize !== 0)
    throw new DrbdMetadataError(dev.name, `block size ${dev.blockSize} does not divide 4096`);
  return {
    name: dev.name,
    sizeBytes: dev.blockSize * dev.blockCount,
    async read(offset, length) {
      const b = Buffer.alloc(length);
      await dev.readv(offset / dev.blockSize, [b]);
      return b;
    },
    write: (offset, data) => dev.writev(offset / dev.blockSize, [data]),
    flush: () => dev.flush(),
    close: async () => {},
  };
}

// ---------------------------------------------------------------------------------------------------------
// create-md, read/validate, bitmap and superblock I/O

export interface Metadata {
  layout: MetadataLayout;
  superBlock: SuperBlock;
}

/** Where metadata lives: an open store, a block device of the tree, or a file path (opened and closed here). */
export type MetadataTarget = MetadataStore | BlockDevice | string;

export interface CreateOptions<T = MetadataTarget> {
  placement: MetaDiskPlacement;
  /** The metadata device for external placements (same store as the lower device for internal). */
  metaStore?: T;
  alStripes?: number;
  alStripeSize4k?: number;
}

const sectorsOf = (s: MetadataStore) => Math.floor(s.sizeBytes / SECTOR);
const md = (opts: { placement: MetaDiskPlacement; metaStore?: MetadataStore }, lower: MetadataStore) =>
  opts.placement.kind === "internal" ? lower : opts.metaStore;

/**
 * `drbdadm create-md`: writes a v08 superblock (current UUID = JUST_CREATED, other UUIDs 0, flags AL_CLEAN,
 * al_nr_extents 257), an initialized activity log and an all-clear bitmap. The first connect then does a
 * full sync, because both sides are "just created" or one side is (UUID rules).
 */
async function createMetadataOn(lower: MetadataStore, opts: CreateOptions<MetadataStore>): Promise<Metadata> {
  const store = md(opts, lower);
  if (!store) throw new DrbdMetadataError(lower.name, "external metadata needs a metadata device");
  const layout = computeLayout({
    lowerSectors: sectorsOf(lower),
    metaSectors: sectorsOf(store),
    placement: opts.placement,
    ...(opts.alStripes === undefined ? {} : { alStripes: opts.alStripes }),
    ...(opts.alStripeSize4k === undefined ? {} : { alStripeSize4k: opts.alStripeSize4k }),
  });
  const superBlock: SuperBlock = {
    laSizeSect: 0,
    uuids: [UUID_JUST_CREATED, 0n, 0n, 0n],
    deviceUuid: 0n,
    flags: MDF_AL_CLEAN,
    magic: DRBD_MD_MAGIC_08,
    mdSizeSect: layout.mdSizeSect,
    alOffset: layout.alOffset,
    alNrExtents: CREATE_MD_AL_NR_EXTENTS,
    bmOffset: layout.bmOffset,
    bmBytesPerBit: BM_BLOCK_SIZE,
    laPeerMaxBioSize: 0,
    alStripes: layout.alStripes,
    alStripeSize4k: layout.alStripeSize4k,
  };
  const base = layout.mdOffsetSect * SECTOR;
  await store.write(
    base + layout.alOffset * SECTOR,
    initializedActivityLog(layout.alStripes, layout.alStripeSize4k),
  );
  await writeBitmap(store, layout, Buffer.alloc(layout.bmBytes));
  await store.write(base, encodeSuperBlock(superBlock));
  await store.flush();
  return { layout, superBlock };
}

export interface ReadOptions<T = MetadataTarget> {
  placement: MetaDiskPlacement;
  metaStore?: T;
  /** Accept the UNCLEAN magic or a missing AL_CLEAN flag (for apply-al, which repairs them). */
  allowUnclean?: boolean;
}

/** Reads and validates the superblock as drbd_md_read does; errors say what is wrong and what to run. */
async function readMetadataOn(lower: MetadataStore, opts: ReadOptions<MetadataStore>): Promise<Metadata> {
  const store = md(opts, lower);
  if (!store) throw new DrbdMetadataError(lower.name, "external metadata needs a metadata device");
  const probe = computeLayout({
    lowerSectors: sectorsOf(lower),
    metaSectors: sectorsOf(store),
    placement: opts.placement,
  });
  const where = `${store.name} (superblock at sector ${probe.mdOffsetSect})`;
  const sb = decodeSuperBlock(await store.read(probe.mdOffsetSect * SECTOR, 4096));
  if (
    !opts.allowUnclean &&
    (sb.magic === DRBD_MD_MAGIC_84_UNCLEAN || (sb.magic === DRBD_MD_MAGIC_08 && !(sb.flags & MDF_AL_CLEAN)))
  )
    throw new DrbdMetadataError(where, 'found unclean metadata; run "drbdadm apply-al" first');
  if (sb.magic !== DRBD_MD_MAGIC_08 && sb.magic !== DRBD_MD_MAGIC_84_UNCLEAN) {
    const what =
      sb.magic === DRBD_MD_MAGIC_07
        ? "old 0.7 metadata"
        : sb.magic === DRBD_MD_MAGIC_09
          ? "DRBD 9 (v09) metadata"
          : `no DRBD metadata magic (found 0x${sb.magic.toString(16).padStart(8, "0")})`;
    throw new DrbdMetadataError(where, `${what}; run "drbdadm create-md"`);
  }
  if (sb.bmBytesPerBit !== BM_BLOCK_SIZE)
    throw new DrbdMetadataError(where, `bm_bytes_per_bit is ${sb.bmBytesPerBit}, expected ${BM_BLOCK_SIZE}`);
  let stripes = sb.alStripes;
  let stripe4k = sb.alStripeSize4k;
  if (stripes === 0 && stripe4k === 0) {
    stripes = 1;
    stripe4k = MD_32KB_SECT / 8;
  }
  const al4k = stripes * stripe4k;
  if (stripes === 0 || stripe4k === 0 || al4k > (16 * 1024 * 1024) / 4 || al4k < MD_32KB_SECT / 8)
    throw new DrbdMetadataError(
      where,
      `invalid activity log striping: al_stripes=${sb.alStripes}, al_stripe_size_4k=${sb.alStripeSize4k}`,
    );
  const layout = computeLayout({
    lowerSectors: sectorsOf(lower),
    metaSectors: sectorsOf(store),
    placement: opts.placement,
    alStripes: stripes,
    alStripeSize4k: stripe4k,
  });
  // The stored offsets must be the ones this device size implies (check_offsets_and_sizes); a mismatch means
  // the lower device was resized or the metadata belongs to another placement.
  const mismatch = (
    [
      ["md_size_sect", sb.mdSizeSect, layout.mdSizeSect],
      ["al_offset", sb.alOffset, layout.alOffset],
      ["bm_offset", sb.bmOffset, layout.bmOffset],
    ] as const
  ).find(([, got, want]) => got !== want);
  if (mismatch && opts.placement.kind !== "flexible")
    throw new DrbdMetadataError(
      where,
      `${mismatch[0]} is ${mismatch[1]}, expected ${mismatch[2]} for this device size`,
    );
  if (
    opts.placement.kind === "flexible" &&
    (sb.alOffset !== layout.alOffset || sb.bmOffset !== layout.bmOffset)
  )
    throw new DrbdMetadataError(
      where,
      `al_offset/bm_offset ${sb.alOffset}/${sb.bmOffset} do not match ${layout.alOffset}/${layout.bmOffset}`,
    );
  if (sb.laSizeSect > layout.usableSectors)
    throw new DrbdMetadataError(
      where,
      `last agreed size ${sb.laSizeSect} sectors exceeds the usable ${layout.usableSectors}`,
    );
  return { layout, superBlock: { ...sb, alStripes: stripes, alStripeSize4k: stripe4k } };
}

export async function writeSuperBlock(
  store: MetadataStore,
  layout: MetadataLayout,
  sb: SuperBlock,
): Promise<void> {
  await store.write(layout.mdOffsetSect * SECTOR, encodeSuperBlock(sb));
  await store.flush();
}

/** The on-disk bitmap area rounded up to whole 4 KiB (it is reserved in 4 KiB units). */
const bitmapIoBytes = (layout: MetadataLayout) => align(layout.bmBytes, 4096);

export async function readBitmap(store: MetadataStore, layout: MetadataLayout): Promise<Buffer> {
  const off = (layout.mdOffsetSect + layout.bmOffset) * SECTOR;
  const all = await store.read(off, bitmapIoBytes(layout));
  return all.subarray(0, layout.bmBytes);
}

export async function writeBitmap(
  store: MetadataStore,
  layout: MetadataLayout,
  bitmap: Buffer,
): Promise<void> {
  if (bitmap.length !== layout.bmBytes)
    throw new DrbdMetadataError(store.name, `bitmap of ${bitmap.length} bytes, expected ${layout.bmBytes}`);
  const io = Buffer.alloc(bitmapIoBytes(layout));
  bitmap.copy(io);
  await store.write((layout.mdOffsetSect + layout.bmOffset) * SECTOR, io);
}

export async function readActivityLog(store: MetadataStore, layout: MetadataLayout): Promise<Buffer> {
  const off = (layout.mdOffsetSect + layout.alOffset) * SECTOR;
  return store.read(off, layout.alStripes * layout.alStripeSize4k * 4096);
}

/** Writes one AL transaction to its ring slot (the caller keeps tr_number increasing by one). */
export async function writeAlTransaction(
  store: MetadataStore,
  layout: MetadataLayout,
  tr: AlTransaction,
): Promise<void> {
  const slot = alRingSlot(tr.trNumber, layout.alStripes, layout.alStripeSize4k);
  await store.write((layout.mdOffsetSect + layout.alOffset) * SECTOR + slot * 4096, encodeAlTransaction(tr));
}

/**
 * `drbdadm apply-al` (drbdmeta): after a crash of a Primary (PRIMARY_IND set), marks the activity log's hot
 * extents out of sync in the bitmap, as far as the bitmap covers the last agreed size; then, in every case,
 * re-initializes the log and writes v08 magic with AL_CLEAN. A Secondary's log is not applied: it had no
 * application writes in flight. Returns the number of bits newly set.
 */
async function applyActivityLogOn(
  lower: MetadataStore,
  opts: Omit<ReadOptions<MetadataStore>, "allowUnclean">,
): Promise<number> {
  const { layout, superBlock } = await readMetadataOn(lower, { ...opts, allowUnclean: true });
  const store = md(opts, lower) as MetadataStore;
  if (superBlock.magic === DRBD_MD_MAGIC_08 && superBlock.flags & MDF_AL_CLEAN) return 0;
  let marked = 0;
  if (superBlock.flags & MDF_PRIMARY_IND) {
    const hot = replayActivityLog(
      await readActivityLog(store, layout),
      layout.alStripes,
      layout.alStripeSize4k,
    );
    const bitmap = Buffer.from(await readBitmap(store, layout));
    const coveredBits = Math.min(layout.bmBits, Math.ceil(superBlock.laSizeSect / 8));
    marked = markExtentsOutOfSync(bitmap, coveredBits, hot);
    await writeBitmap(store, layout, bitmap);
  }
  await store.write(
    (layout.mdOffsetSect + layout.alOffset) * SECTOR,
    initializedActivityLog(layout.alStripes, layout.alStripeSize4k),
  );
  await store.flush();
  await writeSuperBlock(store, layout, {
    ...superBlock,
    magic: DRBD_MD_MAGIC_08,
    flags: superBlock.flags | MDF_AL_CLEAN,
  });
  return marked;
}

/** A random 64-bit UUID with bit 0 clear (bit 0 marks "current while Primary"). */
export function newUuid(): bigint {
  return randomBytes(8).readBigUInt64BE(0) & ~1n;
}

async function openTarget(t: MetadataTarget): Promise<[MetadataStore, () => Promise<void>]> {
  if (typeof t === "string") {
    const s = await openFileStore(t);
    return [s, () => s.close()];
  }
  if ("readv" in t) return [blockDeviceStore(t), async () => {}];
  return [t, async () => {}];
}

/** Opens the lower and (external) metadata targets for `fn`, closing what was opened here. */
async function withTargets<R>(
  lower: MetadataTarget,
  meta: MetadataTarget | undefined,
  fn: (lower: MetadataStore, meta: MetadataStore | undefined) => Promise<R>,
): Promise<R> {
  const [l, closeLower] = await openTarget(lower);
  try {
    if (meta === undefined) return await fn(l, undefined);
    const [m, closeMeta] = await openTarget(meta);
    try {
      return await fn(l, m);
    } finally {
      await closeMeta();
    }
  } finally {
    await closeLower();
  }
}

const withMeta = <O extends { metaStore?: MetadataTarget }>(opts: O, meta: MetadataStore | undefined) => ({
  ...opts,
  ...(meta ? { metaStore: meta } : {}),
});

/**
 * `drbdadm create-md`: writes a v08 superblock (current UUID = JUST_CREATED, other UUIDs 0, flags AL_CLEAN,
 * al_nr_extents 257), an initialized activity log and an all-clear bitmap, byte for byte as drbdmeta does.
 * `lower` is the data device (a path, a tree block device or an open store).
 */
export function createMetadata(lower: MetadataTarget, opts: CreateOptions): Promise<Metadata> {
  return withTargets(lower, opts.metaStore, (l, m) =>
    createMetadataOn(l, withMeta(opts, m) as CreateOptions<MetadataStore>),
  );
}

/** Reads and validates the superblock as drbd_md_read does; errors say what is wrong and what to run. */
export function readMetadata(lower: MetadataTarget, opts: ReadOptions): Promise<Metadata> {
  return withTargets(lower, opts.metaStore, (l, m) =>
    readMetadataOn(l, withMeta(opts, m) as ReadOptions<MetadataStore>),
  );
}

/** `drbdadm apply-al` (see applyActivityLogOn). Returns the number of bits newly set. */
export function applyActivityLog(
  lower: MetadataTarget,
  opts: Omit<ReadOptions, "allowUnclean">,
): Promise<number> {
  return withTargets(lower, opts.metaStore, (l, m) =>
    applyActivityLogOn(l, withMeta(opts, m) as Omit<ReadOptions<MetadataStore>, "allowUnclean">),
  );
}

// ---------------------------------------------------------------------------------------------------------
// The activity log writer (drbd_actlog.c drbd_al_begin_io / al_write_transaction / drbd_al_complete_io)

/**
 * The active set of 4 MiB extents of a Primary, persisted as AL transactions the way the kernel writes them,
 * so that apply-al (ours or drbdmeta's) after a crash resyncs exactly these extents.
 *
 * `begin(sector, sectors)` pins the extents a write touches; if any is not active it first writes one
 * transaction (at most 64 slot changes) that moves them in, evicting least-recently-used unpinned extents
 * (after `beforeEvict` persisted their bitmap bits), and returns once that transaction is on stable storage. `complete()` unpins. Each transaction also carries
 * a 919-slot window of the slot table ("context"), rotating through all slots, so that the ring alone
 * reconstructs the set. Transactions are written one at a time, in tr_number order.
 */
export class ActivityLog {
  private readonly slots: number[];
  private readonly pins: number[];
  private readonly lastUse: number[];
  private readonly slotOf = new Map<number, number>();
  private trNumber: number;
  private cycle = 0;
  private clock = 0;
  private writing: Promise<void> = Promise.resolve();
  private waiters: (() => void)[] = [];
  private completions = 0;

  constructor(
    private readonly store: MetadataStore,
    private readonly layout: MetadataLayout,
    readonly nrElements: number,
    firstTrNumber = 0,
    /**
     * Called before a transaction evicts active extents, with their numbers (drbd_bm_write_hinted in
     * al_write_transaction): the owner writes the bitmap bits of those extents to stable storage first,
     * because after the eviction a crash no longer marks the extent out of sync by itself.
     */
    private readonly beforeEvict?: (extents: number[]) => Promise<void>,
  ) {
    if (!Number.isInteger(nrElements) || nrElements < 7 || nrElements > 0xfffe)
      throw new DrbdMetadataError("activity log", `al-extents ${nrElements} outside 7..65534`);
    this.slots = new Array<number>(nrElements).fill(LC_FREE);
    this.pins = new Array<number>(nrElements).fill(0);
    this.lastUse = new Array<number>(nrElements).fill(0);
    this.trNumber = firstTrNumber >>> 0;
  }

  /** The extents currently in the active set. */
  get activeExtents(): number[] {
    return this.slots.filter((e) => e !== LC_FREE);
  }

  /** The number of the next transaction to be written. */
  get nextTrNumber(): number {
    return this.trNumber;
  }

  async begin(sector: number, sectors: number): Promise<void> {
    const wanted = extentsOf(sector, sectors);
    if (wanted.length > AL_UPDATES_PER_TRANSACTION)
      throw new DrbdMetadataError("activity log", `one write spans ${wanted.length} extents, at most 64`);
    // Fast path: all active, pin them now (pins are what eviction respects).
    if (wanted.every((e) => this.slotOf.has(e))) {
      for (const e of wanted) this.touch(this.slotOf.get(e) as number, 1);
      return;
    }
    for (;;) {
      const result = await this.serialized(() => this.bringIn(wanted));
      if (result === true) return;
      // All slots were pinned; wait for a completion unless one came in since that check.
      if (this.completions === result) await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  complete(sector: number, sectors: number): void {
    for (const e of extentsOf(sector, sectors)) {
      const slot = this.slotOf.get(e);
      if (slot === undefined || this.pins[slot] === 0)
        throw new DrbdMetadataError("activity log", `complete for extent ${e} that is not pinned`);
      this.pins[slot] = (this.pins[slot] as number) - 1;
    }
    this.completions++;
    const w = this.waiters;
    this.waiters = [];
    for (const wake of w) wake();
  }

  private touch(slot: number, pin: number): void {
    this.pins[slot] = (this.pins[slot] as number) + pin;
    this.lastUse[slot] = ++this.clock;
  }

  /** Free slots first, then the least recently used unpinned ones not among `keep`. */
  private pickVictims(n: number, keep: Set<number>): number[] | undefined {
    const candidates: number[] = [];
    for (let s = 0; s < this.nrElements; s++) {
      if (this.pins[s] !== 0) continue;
      const e = this.slots[s] as number;
      if (e !== LC_FREE && keep.has(e)) continue;
      candidates.push(s);
    }
    candidates.sort((a, b) => {
      const fa = this.slots[a] === LC_FREE ? 0 : 1;
      const fb = this.slots[b] === LC_FREE ? 0 : 1;
      return fa - fb || (this.lastUse[a] as number) - (this.lastUse[b] as number);
    });
    return candidates.length >= n ? candidates.slice(0, n) : undefined;
  }

  /** Runs `fn` after every earlier transaction has finished: one transaction at a time, in order. */
  private serialized<R>(fn: () => Promise<R>): Promise<R> {
    const p = this.writing.then(fn);
    this.writing = p.then(
      () => {},
      () => {},
    );
    return p;
  }

  /**
   * Moves the missing extents of `wanted` into slots with one transaction and pins all of `wanted`.
   * When every slot is pinned it returns the completion count it saw, and the caller waits for a completion
   * and tries again.
   */
  private async bringIn(wanted: number[]): Promise<true | number> {
    const missing = wanted.filter((e) => !this.slotOf.has(e));
    if (missing.length > 0) {
      const victims = this.pickVictims(missing.length, new Set(wanted));
      if (!victims) return this.completions;
      const updates = missing.map((extent, i) => ({ slot: victims[i] as number, extent }));
      const evicted = updates.map((u) => this.slots[u.slot] as number).filter((e) => e !== LC_FREE);
      if (evicted.length > 0 && this.beforeEvict) await this.beforeEvict(evicted);
      const tr: AlTransaction = {
        trNumber: this.trNumber,
        type: AL_TR_UPDATE,
        updates,
        contextSize: this.nrElements,
        contextStartSlot: this.cycle,
        // The slots' extents before this transaction, as lc_number is before the commit.
        context: this.slots.slice(this.cycle, this.cycle + AL_CONTEXT_PER_TRANSACTION),
      };
      await writeAlTransaction(this.store, this.layout, tr);
      await this.store.flush();
      this.trNumber = (this.trNumber + 1) >>> 0;
      this.cycle += AL_CONTEXT_PER_TRANSACTION;
      if (this.cycle >= this.nrElements) this.cycle = 0;
      for (const u of updates) {
        const old = this.slots[u.slot] as number;
        if (old !== LC_FREE) this.slotOf.delete(old);
        this.slots[u.slot] = u.extent;
        this.slotOf.set(u.extent, u.slot);
      }
    }
    for (const e of wanted) this.touch(this.slotOf.get(e) as number, 1);
    return true;
  }
}

/** The 4 MiB extents a request of `sectors` sectors at `sector` touches. */
function extentsOf(sector: number, sectors: number): number[] {
  const first = Math.floor(sector / 2 ** AL_EXTENT_SHIFT_SECT);
  const last = Math.floor((sector + Math.max(sectors, 1) - 1) / 2 ** AL_EXTENT_SHIFT_SECT);
  const out: number[] = [];
  for (let e = first; e <= last; e++) out.push(e);
  return out;
}
