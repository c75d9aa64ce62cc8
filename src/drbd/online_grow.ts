/**
 * The metadata side of growing a DRBD device online (drbd_nl.c drbd_determine_dev_size with
 * drbd_md_set_sector_offsets, drbd_bm_resize, drbd_al_initialize, drbd_md_sync): the layout for the backing
 * disk's new size, the bitmap grown to the new capacity, and the metadata written at its new place. With
 * internal metadata the place is the new end of the backing disk; the superblock is written last, so until
 * then the old metadata (at the old end, still outside the data area in use) is the valid one.
 */
import type { BlockDevice } from "../bdev/bdev.js";
import type { ActivityLog } from "./activity_log.js";
import { OutOfSyncBitmap } from "./bitmap.js";
import {
  computeLayout,
  SECTOR,
  writeBitmap,
  writeSuperBlock,
  type MetadataLayout,
  type MetadataStore,
  type SuperBlock,
} from "./metadata.js";

/** The layout of the same placement and activity-log striping for the backing disk's size now. */
export function layoutForLower(
  current: MetadataLayout,
  lower: BlockDevice,
  store: MetadataStore,
): MetadataLayout {
  return computeLayout({
    lowerSectors: Math.floor((lower.blockCount * lower.blockSize) / SECTOR),
    metaSectors: Math.floor(store.sizeBytes / SECTOR),
    placement: current.placement,
    alStripes: current.alStripes,
    alStripeSize4k: current.alStripeSize4k,
  });
}

/**
 * drbd_bm_resize: a bitmap of one bit per 4 KiB of `sectors`, in the new layout's size, holding the old
 * bits; with `setNewBits` the bits from the old end on are set (the new area is out of sync).
 */
export function grownBitmap(
  old: OutOfSyncBitmap,
  layout: MetadataLayout,
  beforeSectors: number,
  sectors: number,
  setNewBits: boolean,
): OutOfSyncBitmap {
  const words = Buffer.alloc(layout.bmBytes);
  old.words.copy(words, 0, 0, Math.min(words.length, old.words.length));
  const bitmap = new OutOfSyncBitmap(Math.ceil(sectors / 8), words);
  // A partly covered last 4 KiB of the old size counts as new too.
  if (setNewBits) bitmap.setRange(Math.floor(beforeSectors / 8), Math.ceil(sectors / 8) - 1);
  return bitmap;
}

/**
 * Writes the whole bitmap, the activity log (its active set carried over) and then the superblock with
 * the new offsets at `layout`'s place. Returns the superblock written.
 */
export async function writeMovedMetadata(
  store: MetadataStore,
  al: ActivityLog,
  layout: MetadataLayout,
  bitmap: OutOfSyncBitmap,
  sb: SuperBlock,
): Promise<SuperBlock> {
  bitmap.takeDirtyPages();
  await writeBitmap(store, layout, bitmap.words);
  await al.relocate(layout);
  const moved: SuperBlock = {
    ...sb,
    mdSizeSect: layout.mdSizeSect,
    alOffset: layout.alOffset,
    bmOffset: layout.bmOffset,
  };
  await writeSuperBlock(store, layout, moved);
  return moved;
}
