/**
 * DRBD 8.4 "v08" on-disk metadata, laid out as the kernel (drbd_main.c drbd_md_write/drbd_md_read, drbd_nl.c
 * drbd_md_set_sector_offsets, drbd_actlog.c) and drbd-utils' drbdmeta (create-md, apply-al) write it, so that
 * a lower device prepared here attaches to kernel DRBD and vice versa.
 *
 * This file holds the superblock, create-md, read/validate, bitmap I/O and apply-al; the layout, constants
 * and store access are in metadata_layout.ts (re-exported here), the activity log in activity_log.ts.
 */
import { randomBytes } from "node:crypto";
import type { BlockDevice } from "../bdev/bdev.js";
import {
  BM_BLOCK_SIZE,
  CREATE_MD_AL_NR_EXTENTS,
  DRBD_MD_MAGIC_07,
  DRBD_MD_MAGIC_08,
  DRBD_MD_MAGIC_09,
  DRBD_MD_MAGIC_84_UNCLEAN,
  DrbdMetadataError,
  MDF_AL_CLEAN,
  MDF_PRIMARY_IND,
  MD_32KB_SECT,
  type MetaDiskPlacement,
  type MetadataLayout,
  type MetadataStore,
  SECTOR,
  UUID_JUST_CREATED,
  blockDeviceStore,
  computeLayout,
  openFileStore,
} from "./metadata_layout.js";
import {
  initializedActivityLog,
  markExtentsOutOfSync,
  readActivityLog,
  replayActivityLog,
} from "./activity_log.js";

export * from "./metadata_layout.js";

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

const align = (n: number, a: number) => Math.ceil(n / a) * a;

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
