/**
 * A DRBD 8.4 volume as a block device (drbd_req.c, drbd_state.c, drbd_nl.c attach/detach): a lower block
 * device with internal v08 metadata, a role (Primary/Secondary), a disk state, generation UUIDs, an
 * out-of-sync bitmap and an activity log.
 *
 * Write path of a Primary: pin the 4 MiB extents in the activity log (so a crash resyncs them), write the
 * lower device and hand the request to the peer link (if any) at the same time; blocks the peer did not
 * confirm are marked out of sync in memory. The changed bitmap pages reach the disk before their extent
 * leaves the activity log (the log's beforeEvict, as al_write_transaction writes hinted bitmap pages), on
 * flush and on detach — not once per write, which would cost a metadata write for each new block.
 *
 * Metadata flags while attached: the superblock carries the UNCLEAN magic without AL_CLEAN (a crash then
 * makes the next attach apply the activity log first), PRIMARY_IND while Primary (only a crashed Primary's
 * log is applied), CONSISTENT and WAS_UP_TO_DATE after the disk state. A clean detach writes the bitmap and
 * the v08 magic with AL_CLEAN, so a clean restart needs no resync.
 */
import { log, type Logger } from "../util/log.js";
import {
  BlockDeviceError,
  checkRange,
  iovLength,
  type BlockDevice,
  type WriteOptions,
} from "../bdev/bdev.js";
import {
  DRBD_MD_MAGIC_08,
  MDF_AL_CLEAN,
  MDF_CONNECTED_IND,
  MDF_CONSISTENT,
  MDF_PEER_OUT_DATED,
  MDF_PRIMARY_IND,
  MDF_WAS_UP_TO_DATE,
  SECTOR,
  writeSuperBlock,
  type MetadataLayout,
  type MetadataStore,
  type SuperBlock,
} from "./metadata.js";
import type { ActivityLog } from "./activity_log.js";
import { OutOfSyncBitmap } from "./bitmap.js";
import { grownBitmap, layoutForLower, writeMovedMetadata } from "./online_grow.js";
import { newCurrentUuid, withPrimaryBit, type UuidSet } from "./uuids.js";
import { DrbdStateError, type DrbdDiskState, type DrbdRole } from "./drbd_states.js";
import type { Deallocation, IoSuspension, PeerDevicePort, PeerLink } from "./peer_device_port.js";
import { DiskTimeoutError, isLowerIoError, withDiskTimeout, type OnIoError } from "./io_error.js";
import { IoSuspensionGate } from "./io_suspension.js";
import { readIovFromPeer, writeViaPeer } from "./remote_reads.js";
import { NO_HANDLERS, type HandlerRunner } from "./handlers.js";
import { applyPeerDeallocation, applyPeerWrite, type PeerRequestVolume } from "./peer_requests.js";
import {
  deviceSectors,
  diskStateFromFlags,
  flagsForDisk,
  prepareAttach,
  stableUuid,
  type DrbdAttachOptions,
  type DrbdDeviceStatus,
} from "./device_attach.js";

export { DrbdStateError, type DrbdDiskState, type DrbdRole } from "./drbd_states.js";
export type { Deallocation, PeerLink } from "./peer_device_port.js";

export { DEFAULT_AL_EXTENTS, type DrbdAttachOptions, type DrbdDeviceStatus } from "./device_attach.js";

export class DrbdDevice implements BlockDevice, PeerDevicePort {
  readonly name: string;
  readonly productName = "DRBD";
  readonly blockSize: number;
  readonly uuid: string;
  readonly volatileWriteCache: boolean;
  readonly supportsUnmap: boolean;
  readonly unmapReadsZeroes: boolean;

  private roleValue: DrbdRole = "Secondary";
  private diskValue: DrbdDiskState;
  private sb: SuperBlock;
  /** A Primary without a peer has started its own data generation (new current UUID) in this session. */
  private generation: Promise<void> | undefined;
  private peer: PeerLink | undefined;
  /** Application writes in flight, with their byte ranges [start, end). */
  private readonly inflight = new Map<Promise<unknown>, [number, number]>();
  private sbWrite: Promise<void> = Promise.resolve();
  private bitmapWrite: Promise<void> = Promise.resolve();
  private readonly log: Logger;
  private readonly stateListeners = new Set<() => void>();
  /** Suspended I/O (drbd_suspended): new requests wait until resumeIo. */
  private readonly suspension = new IoSuspensionGate();
  /** disk { on-io-error } and the handlers (local-io-error); set by attach. */
  private onIoError: OnIoError = "detach";
  private handlers: HandlerRunner = NO_HANDLERS;
  private diskTimeoutMs = 0;
  /** The detach after a local I/O error, once started (Failed → Diskless). */
  private diskFailure: Promise<void> | undefined;
  private readonly resizeListeners: ((blockCount: number) => void)[] = [];
  /** The node was a Primary without its peer when it last went away (wait-connect uses degr-wfc-timeout). */
  degradedAtAttach = false;
  /** The device size in sectors: the last agreed size (la_size_sect), at most what the metadata layout allows. */
  private sectors: number;
  private layoutValue: MetadataLayout;
  private bitmapValue: OutOfSyncBitmap;
  /** /proc/drbd's ns, nr, dw, dr in bytes since attach: sent to and received from the peer, disk writes, reads. */
  readonly io = { netSentBytes: 0, netReceivedBytes: 0, diskWrittenBytes: 0, diskReadBytes: 0 };
  private peerRequestView: PeerRequestVolume;
  private attachOpts: DrbdAttachOptions | undefined;

  private constructor(
    readonly minor: number,
    readonly lower: BlockDevice,
    private store: MetadataStore,
    layout: MetadataLayout,
    sb: SuperBlock,
    bitmap: OutOfSyncBitmap,
    private al: ActivityLog,
    private onDetach: (() => void) | undefined,
  ) {
    this.name = `drbd${minor}`;
    this.blockSize = lower.blockSize;
    this.layoutValue = layout;
    this.bitmapValue = bitmap;
    this.sectors = deviceSectors(layout, sb);
    this.uuid = stableUuid(lower.uuid, minor);
    this.volatileWriteCache = lower.volatileWriteCache;
    this.supportsUnmap = lower.supportsUnmap;
    this.unmapReadsZeroes = lower.unmapReadsZeroes;
    this.sb = sb;
    this.diskValue = diskStateFromFlags(sb.flags);
    this.log = log.child({ module: "drbd", device: this.name });
    this.peerRequestView = {
      device: this,
      requireDisk: () => this.requireDisk(),
      activityLog: al,
    };
  }

  /**
   * drbdsetup attach: read and validate the metadata, apply the activity log if the last session did not
   * end cleanly, and mark the metadata in use. The device starts Secondary, StandAlone.
   */
  static async attach(opts: DrbdAttachOptions): Promise<DrbdDevice> {
    const { minor, lower } = opts;
    const owner: { dev?: DrbdDevice } = {};
    // The bitmap bits of an extent leaving the log must be on disk first; `dev` exists by the first write.
    const m = await prepareAttach(opts, () => (owner.dev ? owner.dev.persistBitmap() : Promise.resolve()));
    const { store, layout, sb, bitmap, al, degraded, wasUnclean, applied } = m;
    const dev = (owner.dev = new DrbdDevice(minor, lower, store, layout, sb, bitmap, al, opts.onDetach));
    dev.onIoError = opts.onIoError ?? "detach";
    dev.handlers = opts.handlers ?? NO_HANDLERS;
    dev.diskTimeoutMs = opts.diskTimeoutMs ?? 0;
    dev.degradedAtAttach = degraded;
    dev.attachOpts = opts;
    dev.log.info(
      { disk: dev.diskValue, outOfSyncKiB: bitmap.outOfSyncKiB, unclean: wasUnclean, alBitsMarked: applied },
      "attached",
    );
    return dev;
  }

  get role(): DrbdRole {
    return this.roleValue;
  }

  get blockCount(): number {
    return Math.floor((this.sectors * SECTOR) / this.blockSize);
  }

  /** The device size in 512-byte sectors (the kernel's drbd_get_capacity). */
  get sizeSectors(): number {
    return this.sectors;
  }

  get layout(): MetadataLayout {
    return this.layoutValue;
  }

  get bitmap(): OutOfSyncBitmap {
    return this.bitmapValue;
  }

  /** Listeners for a change of the device size (drbdadm resize): a LUN over it reports the new capacity. */
  onResize(listener: (blockCount: number) => void): void {
    this.resizeListeners.push(listener);
  }

  get disk(): DrbdDiskState {
    return this.diskValue;
  }

  get uuids(): UuidSet {
    return [...this.sb.uuids];
  }

  get superBlock(): Readonly<SuperBlock> {
    return this.sb;
  }

  /** Read-only for the device tree and SCSI while not Primary. */
  get readOnly(): boolean {
    return this.roleValue !== "Primary";
  }

  status(): DrbdDeviceStatus {
    return {
      name: this.name,
      minor: this.minor,
      role: this.roleValue,
      disk: this.diskValue,
      outOfSyncKiB: this.bitmap.outOfSyncKiB,
      uuids: this.uuids,
      flags: this.sb.flags,
    };
  }

  // -------------------------------------------------------------------------------------------------------
  // State changes

  /**
   * drbdsetup primary [--force]. Without a peer a node needs UpToDate data; --force declares an
   * Inconsistent or Outdated disk UpToDate and starts a new data generation, so the first connect makes
   * this node the sync source (UUID rules 30/70).
   */
  async primary(opts: { force?: boolean } = {}): Promise<void> {
    if (this.roleValue === "Primary") return;
    if (this.diskValue === "Diskless") {
      // is_valid_state: a Diskless Primary needs the connected peer's UpToDate disk; its I/O goes there.
      if (!this.peer?.replicating || !this.peer.peerReadable)
        throw new DrbdStateError(this.name, -2, "Need access to UpToDate data");
      this.roleValue = "Primary";
      return this.notifyState();
    }
    if (this.diskValue !== "UpToDate" && !opts.force)
      throw new DrbdStateError(this.name, -2, "Need access to UpToDate data");
    this.roleValue = "Primary";
    let uuids = withPrimaryBit(this.sb.uuids, true);
    if (this.diskValue !== "UpToDate") {
      this.log.warn({ was: this.diskValue }, "forced to UpToDate by primary --force");
      this.diskValue = "UpToDate";
      uuids = newCurrentUuid(this.sb.uuids, true);
      if (!this.peer?.replicating) this.generation = Promise.resolve();
    } else if (!this.peer?.replicating && (this.sb.uuids[1] & ~1n) === 0n) {
      // drbd_set_role: promoted without a peer, a new generation starts now, not at the first write — a
      // crashed old Primary that comes back must find this node's data newer even if nothing was written.
      uuids = newCurrentUuid(this.sb.uuids, true);
      this.generation = Promise.resolve();
    }
    await this.updateSuperBlock({
      uuids,
      flags: flagsForDisk(this.sb.flags, this.diskValue) | MDF_PRIMARY_IND,
    });
    this.log.info({ uuids: uuids.map((u) => u.toString(16)) }, "role Primary");
    this.notifyState();
  }

  /** receive_uuids' drbd_set_ed_uuid: Diskless, what a reconnect must find (in memory: there is no disk). */
  adoptExposedUuid(current: bigint): void {
    if (this.diskValue !== "Diskless" || (this.sb.uuids[0] & ~1n) === (current & ~1n)) return;
    const [cur, , h0] = this.sb.uuids;
    const uuids = withPrimaryBit([current, 0n, cur & ~1n, h0], this.roleValue === "Primary");
    this.sb = { ...this.sb, uuids };
    this.log.info({ exposed: current.toString(16) }, "Diskless: exposing the peer's data generation");
  }

  /** drbdadm attach on a detached device: its metadata read again, role and peer kept; Inconsistent (reads
   * go to the peer, the metadata is not rewritten) until the sync handshake decides (attachedWhileConnected). */
  async reattach(onDetach: () => void): Promise<void> {
    const opts = this.attachOpts;
    if (this.diskValue !== "Diskless" || !opts) throw new Error(`${this.name}: not a detached device`);
    const m = await prepareAttach(opts, () => this.persistBitmap());
    if (deviceSectors(m.layout, m.sb) < this.sectors)
      throw new Error(`${this.name}: the disk is smaller than the device (${this.sectors} sectors)`);
    ({ store: this.store, layout: this.layoutValue, sb: this.sb, bitmap: this.bitmapValue, al: this.al } = m);
    this.peerRequestView = { ...this.peerRequestView, activityLog: m.al };
    this.diskFailure = undefined;
    this.onDetach = onDetach;
    this.diskValue = "Inconsistent";
    this.log.info({ outOfSyncKiB: m.bitmap.outOfSyncKiB, role: this.roleValue }, "re-attached");
    this.notifyState();
  }

  /** drbdsetup secondary: waits for writes in flight, then drops the Primary marks from the metadata. */
  async secondary(): Promise<void> {
    if (this.roleValue === "Secondary") return;
    this.roleValue = "Secondary";
    await this.drain();
    this.generation = undefined;
    await this.updateSuperBlock({
      uuids: withPrimaryBit(this.sb.uuids, false),
      flags: this.sb.flags & ~MDF_PRIMARY_IND,
    });
    this.log.info("role Secondary");
    this.notifyState();
  }

  /**
   * The largest size this device could have now (drbd_get_max_capacity): the backing disk is asked for its
   * current size first (a grown file or loop device; BlockDevice.rescan), then the metadata layout for that
   * size says how much of it is usable.
   */
  async maxSectors(): Promise<number> {
    this.requireDisk();
    await this.lower.rescan?.(false);
    return this.layoutFor().usableSectors;
  }

  private layoutFor(): MetadataLayout {
    return layoutForLower(this.layoutValue, this.lower, this.store);
  }

  /**
   * drbd_determine_dev_size growing the device to `sectors` (drbdadm resize): internal metadata moves to
   * the new end of the backing disk — bitmap, activity log (its active set carried over), then the
   * superblock with the new offsets and last agreed size, so until that write the old metadata is the
   * valid one. The bitmap grows with the device; with `setNewBits` the new area is out of sync (the resync
   * fills it from the peer), without it (--assume-clean) it counts as in sync. Listeners hear the new size.
   * Returns false when `sectors` is not larger than the device.
   */
  async grow(sectors: number, opts: { setNewBits: boolean }): Promise<boolean> {
    this.requireDisk();
    const before = this.sectors;
    if (sectors <= before) return false;
    const layout = this.layoutFor();
    if (sectors > layout.usableSectors)
      throw new Error(
        `${this.name}: cannot grow to ${sectors} sectors, the backing disk has room for ${layout.usableSectors}`,
      );
    const move = Promise.all([this.sbWrite, this.bitmapWrite]).then(async () => {
      // In one turn: what the old bitmap records is copied, and every later change lands in the new one.
      this.bitmapValue = grownBitmap(this.bitmapValue, layout, before, sectors, opts.setNewBits);
      this.layoutValue = layout;
      this.sb = await writeMovedMetadata(this.store, this.al, layout, this.bitmapValue, {
        ...this.sb,
        laSizeSect: sectors,
      });
      this.sectors = sectors;
    });
    this.sbWrite = move.catch(() => {});
    this.bitmapWrite = move.catch(() => {});
    await move;
    this.log.info(
      {
        beforeSectors: before,
        sectors,
        newBitsOutOfSync: opts.setNewBits,
        outOfSyncKiB: this.bitmap.outOfSyncKiB,
      },
      "grown (drbdadm resize)",
    );
    for (const fn of this.resizeListeners) fn(this.blockCount);
    return true;
  }

  /** drbdsetup new-current-uuid [--clear-bitmap]: the latter skips the initial full sync of fresh pairs. */
  async newCurrentUuid(opts: { clearBitmap?: boolean } = {}): Promise<void> {
    this.requireDisk();
    const primary = this.roleValue === "Primary";
    let uuids = newCurrentUuid(this.sb.uuids, primary);
    if (opts.clearBitmap) {
      uuids = [uuids[0], 0n, uuids[2], uuids[3]];
      this.bitmap.clearAll();
      await this.writeBitmapPages();
    }
    await this.updateSuperBlock({ uuids });
  }

  /** drbdadm invalidate (standalone): the local data is declared Inconsistent, every block out of sync. */
  async invalidate(): Promise<void> {
    this.requireDisk();
    if (this.roleValue === "Primary")
      throw new DrbdStateError(this.name, -4, "Refusing to invalidate the disk of a Primary");
    this.bitmap.setAll();
    await this.writeBitmapPages();
    this.diskValue = "Inconsistent";
    await this.updateSuperBlock({ flags: flagsForDisk(this.sb.flags, "Inconsistent") });
  }

  /** drbdadm outdate: consistent but known to be older than the peer's. */
  async outdate(): Promise<void> {
    this.requireDisk();
    if (this.roleValue === "Primary")
      throw new DrbdStateError(this.name, -4, "Refusing to outdate a Primary");
    if (this.diskValue === "Inconsistent") return;
    this.diskValue = "Outdated";
    await this.updateSuperBlock({ flags: flagsForDisk(this.sb.flags, "Outdated") });
  }

  /** Sets the local disk state (for the connection and resync code). */
  async setDiskState(disk: DrbdDiskState, extraFlags: { set?: number; clear?: number } = {}): Promise<void> {
    this.requireDisk();
    this.diskValue = disk;
    this.notifyState();
    const f = (flagsForDisk(this.sb.flags, disk) | (extraFlags.set ?? 0)) & ~(extraFlags.clear ?? 0);
    await this.updateSuperBlock({ flags: f });
  }

  /** Replaces the generation UUIDs (for the connection and resync code). */
  async setUuids(uuids: UuidSet): Promise<void> {
    this.requireDisk();
    await this.updateSuperBlock({ uuids: withPrimaryBit(uuids, this.roleValue === "Primary") });
  }

  /** Called after role or disk state changes (the connection sends P_STATE). Returns the unsubscribe. */
  onStateChange(fn: () => void): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  private notifyState(): void {
    for (const fn of this.stateListeners) fn();
  }

  /** A write received from the Primary peer (receive_Data; peer_requests.ts). */
  applyPeerWrite(offset: number, iov: readonly Buffer[], bytes: number, fua: boolean): Promise<void> {
    return applyPeerWrite(this.peerRequestView, offset, iov, bytes, fua);
  }

  /** A discard or zeroing received from the Primary peer (P_TRIM / P_ZEROES; peer_requests.ts). */
  applyPeerDeallocation(offset: number, bytes: number, kind: Deallocation): Promise<void> {
    return applyPeerDeallocation(this.peerRequestView, offset, bytes, kind);
  }

  /** Activity-log transactions written since attach (the kernel's al_writ_cnt, /proc/drbd "al:"). */
  get activityLogUpdates(): number {
    return this.al.nextTrNumber;
  }

  /**
   * Activity-log extents (4 MiB) that application writes in flight hold (the kernel's act_log->used),
   * for net { congestion-extents }.
   */
  get activityLogExtentsInUse(): number {
    const extents = new Set<number>();
    const extentBytes = 4 << 20;
    for (const [start, end] of this.inflight.values())
      for (let e = Math.floor(start / extentBytes); e <= Math.floor((end - 1) / extentBytes); e++)
        extents.add(e);
    return extents.size;
  }

  /** Writes the changed bitmap pages to the metadata (after a bitmap exchange or resync progress). */
  persistBitmap(): Promise<void> {
    return this.writeBitmapPages();
  }

  /** Reads local data for the peer (a SyncSource answering P_RS_DATA_REQUEST). */
  async readForPeer(offset: number, length: number): Promise<Buffer> {
    this.requireDisk();
    const b = Buffer.alloc(length);
    checkRange(this, offset / this.blockSize, length);
    // A resync read must not see a block before an application write to it that already began completes:
    // the peer may have its new data already, and the stale reply would overwrite it.
    const overlapping = [...this.inflight].filter(([, [s, e]]) => s < offset + length && offset < e);
    if (overlapping.length > 0) await Promise.allSettled(overlapping.map(([p]) => p));
    await this.lower.readv(offset / this.blockSize, [b]);
    this.io.diskReadBytes += length;
    this.io.netSentBytes += length;
    return b;
  }

  /** Writes resync data from the SyncSource (P_RS_DATA_REPLY) and marks it in sync. */
  async writeResyncData(offset: number, data: Buffer): Promise<void> {
    this.requireDisk();
    if (offset % this.blockSize !== 0)
      throw new BlockDeviceError(`${this.name}: resync data at byte ${offset} is not block aligned`, "io");
    checkRange(this, offset / this.blockSize, data.length);
    this.io.netReceivedBytes += data.length;
    await this.lower.writev(offset / this.blockSize, [data]);
    this.io.diskWrittenBytes += data.length;
    this.markInSync(offset, data.length);
  }

  /** Marks the 4 KiB blocks that bytes [offset, offset + bytes) touch out of sync; returns the bits newly set. */
  markOutOfSync(offset: number, bytes: number): number {
    const [first, last] = OutOfSyncBitmap.bitsOf(offset, bytes);
    return this.bitmap.setRange(first, last);
  }

  /** Marks the 4 KiB blocks that bytes [offset, offset + bytes) touch in sync (the peer wrote them). */
  markInSync(offset: number, bytes: number): void {
    const [first, last] = OutOfSyncBitmap.bitsOf(offset, bytes);
    this.bitmap.clearRange(first, last);
  }

  /**
   * Marks in sync only the 4 KiB blocks that bytes [offset, offset + bytes) cover whole: a mirrored write
   * both sides have during a resync (DP_MAY_SET_IN_SYNC); a partly written block keeps its mark.
   */
  markWholeBlocksInSync(offset: number, bytes: number): void {
    const firstFull = Math.ceil(offset / 4096);
    const lastFull = Math.floor((offset + bytes) / 4096) - 1;
    if (lastFull >= firstFull) this.bitmap.clearRange(firstFull, lastFull);
  }

  /** Connects or disconnects the peer link; a Primary that loses its peer starts a new generation on write. */
  setPeer(peer: PeerLink | undefined): void {
    this.peer = peer;
    if (peer) this.generation = undefined;
    // MDF_CONNECTED_IND follows the connection (__drbd_set_state), for the next attach's degraded check.
    const flags = peer ? this.sb.flags | MDF_CONNECTED_IND : this.sb.flags & ~MDF_CONNECTED_IND;
    if (flags !== this.sb.flags)
      this.updateSuperBlock({ flags }).catch((e: Error) =>
        this.log.error({ err: e.message }, "writing the connected flag failed"),
      );
  }

  /** The peer's disk is known to be Outdated (recorded so an attach can promote Consistent to UpToDate). */
  async setPeerOutdated(outdated: boolean): Promise<void> {
    await this.updateSuperBlock({
      flags: outdated ? this.sb.flags | MDF_PEER_OUT_DATED : this.sb.flags & ~MDF_PEER_OUT_DATED,
    });
  }

  get ioSuspended(): IoSuspension | undefined {
    return this.suspension.why;
  }

  /** suspend-io or susp_fen: new I/O waits (inc_ap_bio), so does a write whose mirror failed (fencing). */
  suspendIo(why: IoSuspension): void {
    if (!this.suspension.suspend(why)) return;
    this.log.warn({ why }, "I/O suspended");
    this.notifyState();
  }

  resumeIo(why?: IoSuspension): void {
    const was = this.suspension.resume(why);
    if (was === undefined) return;
    this.log.info({ was }, "I/O resumed");
    this.notifyState();
  }

  /**
   * drbdsetup detach: refused on a Primary unless a connected peer has UpToDate data (is_valid_state: a
   * Primary needs UpToDate data, its own or the peer's); waits for writes in flight, writes the bitmap and
   * the clean superblock (v08 magic, AL_CLEAN), so the next attach needs no log replay.
   */
  async detach(): Promise<void> {
    if (this.diskValue === "Diskless") return;
    const viaPeer = this.roleValue === "Primary" && this.peer?.replicating === true && this.peer.peerReadable;
    if (this.roleValue === "Primary" && !viaPeer)
      throw new DrbdStateError(this.name, -2, "Need access to UpToDate data (demote to Secondary first)");
    await this.drain();
    await this.writeBitmapPages();
    await this.updateSuperBlock({
      magic: DRBD_MD_MAGIC_08,
      flags: (this.sb.flags | MDF_AL_CLEAN) & ~MDF_PRIMARY_IND,
    });
    this.diskValue = "Diskless";
    this.log.info({ outOfSyncKiB: this.bitmap.outOfSyncKiB, role: this.roleValue }, "detached cleanly");
    this.notifyState(); // a Primary's peer learns by P_STATE that it keeps the only copy
    this.onDetach?.();
  }

  // -------------------------------------------------------------------------------------------------------
  // BlockDevice

  /**
   * drbd_req.c: read locally while the disk has good data, else from an UpToDate peer (P_DATA_REQUEST). A
   * local read error is handled as on-io-error says (__drbd_chk_io_error) and the read retried on the peer;
   * only when the peer cannot serve it either does the initiator see the error.
   */
  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    checkRange(this, lba, iovLength(iov));
    if (this.suspension.why) await this.suspension.wait();
    const d = this.diskValue;
    if (d === "UpToDate" || d === "Consistent" || d === "Outdated") {
      try {
        await withDiskTimeout(this.lower.readv(lba, iov), this.diskTimeoutMs, this.name);
        this.io.diskReadBytes += iovLength(iov);
        return;
      } catch (e) {
        if (!isLowerIoError(e)) throw e;
        this.localIoError("read", e as Error);
        if (!this.peer?.peerReadable) throw e;
      }
    } else if (!this.peer?.peerReadable) {
      if (d === "Inconsistent")
        throw new BlockDeviceError(
          `${this.name}: local disk is Inconsistent and no peer serves reads`,
          "medium",
        );
      throw new BlockDeviceError(`${this.name}: no local disk and no peer serves reads`, "closed");
    }
    await readIovFromPeer(this.peer as PeerLink, this.name, lba * this.blockSize, iov);
  }

  /** __drbd_chk_io_error_: a lower read or write failed; on-io-error decides (io_error.ts). */
  private localIoError(kind: "read" | "write", e: Error): void {
    this.log.error({ err: e.message, onIoError: this.onIoError }, `Local IO failed in ${kind}.`);
    if (this.onIoError === "pass_on" && !(e instanceof DiskTimeoutError)) {
      const d = this.diskValue;
      if (d === "UpToDate" || d === "Consistent" || d === "Outdated")
        this.setDiskState("Inconsistent").catch((err: Error) =>
          this.log.error({ err: err.message }, "writing the Inconsistent disk state failed"),
        );
      return;
    }
    void this.failDisk();
  }

  /** Failed → (local-io-error handler) → Diskless: the backing disk is not touched again. */
  private failDisk(): Promise<void> {
    if (this.diskFailure || this.diskValue === "Diskless") return this.diskFailure ?? Promise.resolve();
    this.diskValue = "Failed";
    this.log.error("Local IO failed. Detaching...");
    this.notifyState();
    this.diskFailure = (async () => {
      if (this.onIoError === "call-local-io-error") await this.handlers.run("local-io-error");
      // drbd_md_sync, best effort: the failed disk is never trusted as it is again (not Consistent).
      const ms = this.diskTimeoutMs;
      await withDiskTimeout(this.writeBitmapPages(), ms, this.name).catch(() => {});
      const flags = this.sb.flags & ~(MDF_CONSISTENT | MDF_WAS_UP_TO_DATE);
      await withDiskTimeout(this.updateSuperBlock({ flags }), ms, this.name).catch(() => {});
      this.diskValue = "Diskless";
      this.log.warn({ role: this.roleValue }, "detached after an I/O error: Diskless, I/O goes to the peer");
      this.notifyState();
      this.onDetach?.();
    })();
    return this.diskFailure;
  }

  async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    const bytes = iovLength(iov);
    checkRange(this, lba, bytes);
    return this.mutate(lba, bytes, () => this.lower.writev(lba, iov, options), iov, options?.fua === true);
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    checkRange(this, lba, blocks * this.blockSize);
    return this.mutate(lba, blocks * this.blockSize, () => this.lower.unmap(lba, blocks), "unmap", false);
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    checkRange(this, lba, blocks * this.blockSize);
    return this.mutate(
      lba,
      blocks * this.blockSize,
      () => this.lower.writeZeroes(lba, blocks),
      "zeroes",
      false,
    );
  }

  async flush(): Promise<void> {
    if (this.diskValue === "Diskless" || this.diskValue === "Failed") {
      // A Diskless Primary's data is on the peer; protocol C has it on the peer's disk already.
      if (this.roleValue === "Primary" && this.peer?.peerReadable) return;
      this.requireDisk();
    }
    await this.lower.flush();
    await this.writeBitmapPages();
  }

  /** drbdadm down for this volume: Secondary, then a clean detach. The lower device stays open. */
  async close(): Promise<void> {
    if (this.diskValue === "Diskless") return;
    await this.secondary();
    await this.detach();
  }

  // -------------------------------------------------------------------------------------------------------

  private requireDisk(): void {
    if (this.diskValue === "Diskless") throw new BlockDeviceError(`${this.name}: no local disk`, "closed");
  }

  private mutate(
    lba: number,
    bytes: number,
    local: () => Promise<void>,
    data: readonly Buffer[] | Deallocation,
    fua: boolean,
  ): Promise<void> {
    if (this.roleValue !== "Primary")
      return Promise.reject(new BlockDeviceError(`${this.name}: Secondary refuses writes`, "read-only"));
    const p =
      this.diskValue === "Diskless" || this.diskValue === "Failed"
        ? writeViaPeer(this.peer, this, this.suspension, lba * this.blockSize, bytes, data, fua)
        : this.mirroredWrite(lba, bytes, local, data, fua);
    this.inflight.set(p, [lba * this.blockSize, lba * this.blockSize + bytes]);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  private async mirroredWrite(
    lba: number,
    bytes: number,
    local: () => Promise<void>,
    data: readonly Buffer[] | Deallocation,
    fua: boolean,
  ): Promise<void> {
    if (this.suspension.why) await this.suspension.wait();
    const offset = lba * this.blockSize;
    const sector = offset / SECTOR;
    const sectors = bytes / SECTOR;
    const peer = this.peer?.replicating ? this.peer : undefined;
    if (!peer) await (this.generation ??= this.startGeneration());
    await this.al.begin(sector, sectors);
    const tracked = peer?.localWrite?.(offset, offset + bytes);
    try {
      await tracked?.before;
      const remote = peer ? peer.mirror(offset, bytes, data, fua) : Promise.resolve(false);
      const timed = withDiskTimeout(local(), this.diskTimeoutMs, this.name);
      const [localResult, mirrored] = await Promise.allSettled([timed, remote]);
      if (typeof data !== "string") {
        if (localResult.status === "fulfilled") this.io.diskWrittenBytes += bytes;
        if (mirrored.status === "fulfilled" && mirrored.value) this.io.netSentBytes += bytes;
      }
      if (mirrored.status === "rejected" || !mirrored.value) {
        // In memory only: the extent is pinned in the activity log, so a crash marks it out of sync anyway;
        // the bits reach the disk before the extent leaves the log (beforeEvict), at flush and at detach.
        this.markOutOfSync(offset, bytes);
        // The link broke under this write (not Ahead, which records its blocks within the connection).
        if (!this.peer?.replicating) await this.noteDivergence();
        // Lost with the peer under a resource-and-stonith Primary: held until fencing decided.
        if (this.suspension.why) await this.suspension.wait();
      }
      if (localResult.status === "rejected") {
        const e = localResult.reason as Error;
        if (!isLowerIoError(e)) throw e;
        this.localIoError("write", e);
        // drbd_req_complete: a write is good when either copy took it; the local copy is out of sync.
        if (mirrored.status === "fulfilled" && mirrored.value) {
          this.markOutOfSync(offset, bytes);
          return;
        }
        throw e;
      }
    } finally {
      this.al.complete(sector, sectors);
      tracked?.done();
    }
  }

  /**
   * Blocks the peer may lack were just marked out of sync (a mirror that failed, unconfirmed requests of a
   * lost connection): a Primary starts its own generation now if it has none (after_state_ch's
   * drbd_uuid_new_current on losing the peer). Otherwise a reconnect with equal UUIDs would decide "no
   * resync" and those blocks would never reach the peer.
   */
  async noteDivergence(): Promise<void> {
    if (this.roleValue !== "Primary" || this.diskValue === "Diskless") return;
    await (this.generation ??= this.startGeneration());
  }

  /**
   * The first write of a Primary without a peer starts a new data generation (drbd_uuid_new_current), unless
   * it already records changes against an older shared one (bitmap UUID set).
   */
  private async startGeneration(): Promise<void> {
    if (this.sb.uuids[1] !== 0n) return;
    const uuids = newCurrentUuid(this.sb.uuids, true);
    this.log.info({ current: uuids[0].toString(16), bitmap: uuids[1].toString(16) }, "new current UUID");
    await this.updateSuperBlock({ uuids });
  }

  private async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight.keys()]);
  }

  /** Writes superblock changes one at a time, in order (each write carries all earlier changes). */
  private updateSuperBlock(change: Partial<SuperBlock>): Promise<void> {
    this.sb = { ...this.sb, ...change };
    // Detached (cleanly or after an I/O error): the metadata is not written any more.
    if (this.diskValue === "Diskless") return Promise.resolve();
    const snapshot = this.sb;
    // The size and offsets as they are when the write runs: a resize may have moved the metadata meanwhile.
    const p = this.sbWrite.then(() =>
      writeSuperBlock(this.store, this.layout, {
        ...snapshot,
        laSizeSect: this.sectors,
        mdSizeSect: this.layout.mdSizeSect,
        alOffset: this.layout.alOffset,
        bmOffset: this.layout.bmOffset,
      }),
    );
    this.sbWrite = p.catch(() => {});
    return p;
  }

  /** Writes the dirty bitmap pages, serialized so that a later page image never lands before an earlier one. */
  private writeBitmapPages(): Promise<void> {
    if (this.diskValue === "Diskless") return Promise.resolve();
    const p = this.bitmapWrite.then(async () => {
      const pages = this.bitmap.takeDirtyPages();
      if (pages.length === 0) return;
      const base = (this.layout.mdOffsetSect + this.layout.bmOffset) * SECTOR;
      for (const { offset, data } of pages) {
        // Pages are 4 KiB in the metadata area; the last one may be shorter in memory.
        const io =
          data.length === 4096 ? Buffer.from(data) : Buffer.concat([data, Buffer.alloc(4096 - data.length)]);
        await this.store.write(base + offset, io);
      }
      await this.store.flush();
    });
    this.bitmapWrite = p.catch(() => {});
    return p;
  }
}
