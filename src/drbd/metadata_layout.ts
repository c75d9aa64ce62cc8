/**
 * Where DRBD 8.4 v08 metadata lives and how it is reached: magic numbers and superblock flags, the
 * layout of superblock, activity log and bitmap for internal and external metadata
 * (drbd_nl.c drbd_md_set_sector_offsets), and byte access to the device that holds them.
 *
 * Units: sectors are 512 bytes. Offsets in the superblock (al_offset, bm_offset) are signed sector offsets
 * relative to the superblock. One bitmap bit covers 4 KiB (8 sectors); one activity-log extent 4 MiB.
 */
import { open, type FileHandle } from "node:fs/promises";
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
