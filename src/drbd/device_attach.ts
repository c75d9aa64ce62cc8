/**
 * drbdsetup attach, up to the point where a DrbdDevice exists (drbd_nl.c drbd_adm_attach): validate the
 * metadata, apply the activity log of a session that did not end cleanly, read the bitmap, start a fresh
 * log, and mark the superblock in use (UNCLEAN magic, CRASHED_PRIMARY for a node that went away Primary).
 */
import { createHash } from "node:crypto";
import type { BlockDevice } from "../bdev/bdev.js";
import {
  applyActivityLog,
  blockDeviceStore,
  DRBD_MD_MAGIC_84_UNCLEAN,
  MDF_AL_CLEAN,
  MDF_CONNECTED_IND,
  MDF_CONSISTENT,
  MDF_CRASHED_PRIMARY,
  MDF_PRIMARY_IND,
  MDF_WAS_UP_TO_DATE,
  readBitmap,
  readMetadata,
  SECTOR,
  writeSuperBlock,
  type MetaDiskPlacement,
  type MetadataLayout,
  type MetadataStore,
  type SuperBlock,
} from "./metadata.js";
import { ActivityLog, initializedActivityLog } from "./activity_log.js";
import { OutOfSyncBitmap } from "./bitmap.js";
import { withPrimaryBit, type UuidSet } from "./uuids.js";
import type { DrbdDiskState, DrbdRole } from "./drbd_states.js";
import type { OnIoError } from "./io_error.js";
import type { HandlerRunner } from "./handlers.js";

/** drbd-utils' default al-extents for 8.4. */
export const DEFAULT_AL_EXTENTS = 1237;

export interface DrbdAttachOptions {
  /** The minor number; the device is named drbd<minor>. */
  minor: number;
  /** The backing disk (run createMetadata first), holding the metadata too unless `placement` is external. */
  lower: BlockDevice;
  /** Where the metadata is: internal (default), or flexible / indexed on `metaDevice` (meta-disk DEV [IDX]). */
  placement?: MetaDiskPlacement;
  metaDevice?: BlockDevice;
  /** Activity log size in 4 MiB extents (disk { al-extents }). */
  alExtents?: number;
  /** Called after a detach, e.g. to release the device-tree claim on the backing disk. */
  onDetach?: () => void;
  /** disk { on-io-error } (io_error.ts), default detach. */
  onIoError?: OnIoError;
  /** handlers { } for local-io-error. */
  handlers?: HandlerRunner;
  /** disk { disk-timeout } in ms (0: none). */
  diskTimeoutMs?: number;
}

export interface DrbdDeviceStatus {
  name: string;
  minor: number;
  role: DrbdRole;
  disk: DrbdDiskState;
  /** Out-of-sync data, KiB. */
  outOfSyncKiB: number;
  uuids: UuidSet;
  flags: number;
}

export function diskStateFromFlags(flags: number): DrbdDiskState {
  if (!(flags & MDF_CONSISTENT)) return "Inconsistent";
  if (!(flags & MDF_WAS_UP_TO_DATE)) return "Outdated";
  // Consistent data that was UpToDate: without fencing the kernel promotes it to UpToDate at attach.
  return "UpToDate";
}

export function flagsForDisk(flags: number, disk: DrbdDiskState): number {
  let f = flags & ~(MDF_CONSISTENT | MDF_WAS_UP_TO_DATE);
  if (disk === "UpToDate" || disk === "Consistent") f |= MDF_CONSISTENT | MDF_WAS_UP_TO_DATE;
  if (disk === "Outdated") f |= MDF_CONSISTENT;
  return f;
}

/** The device size: the last agreed size when the metadata records one, never more than the layout holds. */
export function deviceSectors(layout: MetadataLayout, sb: SuperBlock): number {
  return sb.laSizeSect > 0 ? Math.min(sb.laSizeSect, layout.usableSectors) : layout.usableSectors;
}

export function stableUuid(lowerUuid: string, minor: number): string {
  const h = createHash("sha1").update(`usertgt-drbd\0${lowerUuid}\0${minor}`).digest();
  h[6] = ((h[6] as number) & 0x0f) | 0x50;
  h[8] = ((h[8] as number) & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** What attach read and wrote before the device exists. */
export interface PreparedAttach {
  /** Where superblock, activity log and bitmap live: the lower device, or the metadata device. */
  store: MetadataStore;
  layout: MetadataLayout;
  /** The superblock as written at attach (in use). */
  sb: SuperBlock;
  bitmap: OutOfSyncBitmap;
  al: ActivityLog;
  /** drbd_nl.c attach: Primary without a peer when it went away → USE_DEGR_WFC_T (degr-wfc-timeout). */
  degraded: boolean;
  wasUnclean: boolean;
  /** Bitmap bits the activity log replay marked. */
  applied: number;
}

/** `persistBitmap` writes the device's changed bitmap pages: the log calls it before an extent leaves. */
export async function prepareAttach(
  opts: DrbdAttachOptions,
  persistBitmap: () => Promise<void>,
): Promise<PreparedAttach> {
  const { lower, minor } = opts;
  if (!Number.isInteger(minor) || minor < 0 || minor > 1048575)
    throw new Error(`drbd: minor ${minor} outside 0..1048575`);
  const lowerStore = blockDeviceStore(lower);
  const placement: MetaDiskPlacement = opts.placement ?? { kind: "internal" };
  const external = placement.kind !== "internal";
  if (external && !opts.metaDevice)
    throw new Error(`drbd${minor}: meta-disk ${placement.kind} needs a metadata device`);
  const metaStore = external && opts.metaDevice ? blockDeviceStore(opts.metaDevice) : undefined;
  const where = { placement, ...(metaStore ? { metaStore } : {}) };
  const store = metaStore ?? lowerStore;
  const probe = await readMetadata(lowerStore, { ...where, allowUnclean: true });
  const wasUnclean =
    probe.superBlock.magic === DRBD_MD_MAGIC_84_UNCLEAN || !(probe.superBlock.flags & MDF_AL_CLEAN);
  let applied = 0;
  if (wasUnclean) applied = await applyActivityLog(lowerStore, where);
  const { layout, superBlock } = await readMetadata(lowerStore, where);
  // One bit per 4 KiB of the device (drbd_bm_resize to the capacity), not of the whole bitmap area.
  const bitmap = new OutOfSyncBitmap(
    Math.ceil(deviceSectors(layout, superBlock) / 8),
    Buffer.from(await readBitmap(store, layout)),
  );
  // A fresh log: transaction numbers restart at 0, so no older transaction may outlive this attach.
  await store.write(
    (layout.mdOffsetSect + layout.alOffset) * SECTOR,
    initializedActivityLog(layout.alStripes, layout.alStripeSize4k),
  );
  const al = new ActivityLog(store, layout, opts.alExtents ?? DEFAULT_AL_EXTENTS, 0, persistBitmap);
  let flags = superBlock.flags & ~(MDF_AL_CLEAN | MDF_CONNECTED_IND);
  const degraded = (superBlock.flags & MDF_PRIMARY_IND) !== 0 && (superBlock.flags & MDF_CONNECTED_IND) === 0;
  // Still marked Primary: the node went away while Primary (drbd_nl.c attach sets CRASHED_PRIMARY).
  if (flags & MDF_PRIMARY_IND) flags = (flags | MDF_CRASHED_PRIMARY) & ~MDF_PRIMARY_IND;
  const sb: SuperBlock = {
    ...superBlock,
    magic: DRBD_MD_MAGIC_84_UNCLEAN,
    flags,
    laSizeSect: superBlock.laSizeSect || layout.usableSectors,
    uuids: withPrimaryBit(superBlock.uuids, false),
  };
  await writeSuperBlock(store, layout, sb);
  return { store, layout, sb, bitmap, al, degraded, wasUnclean, applied };
}
