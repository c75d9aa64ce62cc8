/**
 * Writes a Secondary receives from its Primary peer (drbd_receiver.c receive_Data, including P_TRIM and
 * P_ZEROES): checked, then run under the activity log like a local write, straight to the lower device.
 */
import { BlockDeviceError, checkRange, type BlockDevice, type BlockDeviceInfo } from "../bdev/bdev.js";
import { SECTOR } from "./metadata.js";
import type { ActivityLog } from "./activity_log.js";
import type { DrbdRole } from "./drbd_states.js";
import type { Deallocation } from "./peer_device_port.js";

/** What the peer's writes need of the local DRBD volume. */
export interface PeerRequestVolume {
  readonly device: BlockDeviceInfo & {
    readonly lower: BlockDevice;
    readonly role: DrbdRole;
    readonly io: { netReceivedBytes: number; diskWrittenBytes: number };
  };
  /** Throws when the volume has no local disk. */
  requireDisk(): void;
  readonly activityLog: ActivityLog;
}

/**
 * A write from the Primary peer, its data as an I/O vector of `bytes` bytes (slices of the socket reads it
 * arrived in). Only a Secondary accepts them (no allow-two-primaries). With its activity-log extents
 * active (the usual case) this is one promise step on top of the lower device's write.
 */
export function applyPeerWrite(
  v: PeerRequestVolume,
  offset: number,
  iov: readonly Buffer[],
  bytes: number,
  fua: boolean,
): Promise<void> {
  const dev = v.device;
  let lba: number;
  try {
    lba = peerTarget(v, offset, bytes, "write");
  } catch (e) {
    return Promise.reject(e as Error);
  }
  dev.io.netReceivedBytes += bytes;
  const write = (): Promise<void> => dev.lower.writev(lba, iov, fua ? FUA : undefined);
  const sector = offset / SECTOR;
  const sectors = bytes / SECTOR;
  const al = v.activityLog;
  if (!al.tryBegin(sector, sectors))
    return underActivityLog(al, offset, bytes, async () => {
      await write();
      dev.io.diskWrittenBytes += bytes;
    });
  let written: Promise<void>;
  try {
    written = write();
  } catch (e) {
    al.complete(sector, sectors);
    return Promise.reject(e as Error);
  }
  return written.then(
    () => {
      al.complete(sector, sectors);
      dev.io.diskWrittenBytes += bytes;
    },
    (e: Error) => {
      al.complete(sector, sectors);
      throw e;
    },
  );
}

/** The write options of a peer write with DP_FUA (shared, never changed). */
const FUA = Object.freeze({ fua: true });

/**
 * A discard or zeroing from the Primary peer. The blocks must read as zeroes afterwards, as they do on a
 * Primary whose lower device zeroes on unmap: "unmap" deallocates only when this lower device's unmap
 * reads zeroes, else it writes zeroes (the kernel's zero-out fallback, drbd_issue_discard_or_zero_out).
 */
export async function applyPeerDeallocation(
  v: PeerRequestVolume,
  offset: number,
  bytes: number,
  kind: Deallocation,
): Promise<void> {
  const lower = v.device.lower;
  const lba = peerTarget(v, offset, bytes, kind);
  const blocks = bytes / v.device.blockSize;
  await underActivityLog(v.activityLog, offset, bytes, () =>
    kind === "unmap" && lower.supportsUnmap && lower.unmapReadsZeroes
      ? lower.unmap(lba, blocks)
      : lower.writeZeroes(lba, blocks),
  );
}

/**
 * What a Secondary checks of a peer write before it runs: a disk, not Primary, block aligned; a discard
 * or zeroing covers whole blocks. Returns the first block.
 */
function peerTarget(
  v: PeerRequestVolume,
  offset: number,
  bytes: number,
  what: "write" | Deallocation,
): number {
  const dev = v.device;
  v.requireDisk();
  if (dev.role === "Primary")
    throw new BlockDeviceError(`${dev.name}: a Primary does not take peer writes`, "read-only");
  const whole = what === "write" || (bytes % dev.blockSize === 0 && bytes > 0);
  if (offset % dev.blockSize !== 0 || !whole)
    throw new BlockDeviceError(
      `${dev.name}: peer ${what} of ${bytes} bytes at byte ${offset} is not whole blocks`,
      "io",
    );
  const lba = offset / dev.blockSize;
  checkRange(dev, lba, bytes);
  return lba;
}

async function underActivityLog(
  al: ActivityLog,
  offset: number,
  bytes: number,
  fn: () => Promise<void>,
): Promise<void> {
  const sector = offset / SECTOR;
  const sectors = bytes / SECTOR;
  await al.begin(sector, sectors);
  try {
    await fn();
  } finally {
    al.complete(sector, sectors);
  }
}
