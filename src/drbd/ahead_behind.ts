/**
 * on-congestion pull-ahead over the connection (drbd_req.c maybe_pull_ahead, drbd_receiver.c
 * receive_out_of_sync, got_BarrierAck's start_resync_timer, drbd_state.c sanitize_state for C_BEHIND):
 * a congested Primary goes Ahead and only marks later writes (P_OUT_OF_SYNC), the peer goes Behind and marks
 * them too; once the data in flight drained, Ahead resyncs the marked blocks as SyncSource. The policy and
 * thresholds are in congestion.ts.
 */
import {
  ConnState,
  decodeBlockDesc,
  DrbdCommand,
  DrbdProtocolError,
  encodeBlockDesc,
  encodeSyncUuid,
} from "./protocol.js";
import { SECTOR } from "./metadata.js";
import { AHEAD_RESYNC_DELAY_MS, CongestionMonitor } from "./congestion.js";
import { nextSyncUuid, type Resync } from "./resync.js";
import type { Link } from "./link.js";
import type { RequestSender } from "./request_sender.js";

export class AheadBehind {
  private readonly congestion: CongestionMonitor;
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly link: Link,
    private readonly sender: RequestSender,
    private readonly resync: Resync,
    /** on-congestion disconnect: the connection goes StandAlone with this reason. */
    private readonly disconnect: (why: string) => void,
  ) {
    this.congestion = new CongestionMonitor(link.opts);
  }

  /** A policy other than "block" is configured: writes while Connected check the thresholds first. */
  get congestionActive(): boolean {
    return this.congestion.active;
  }

  /**
   * maybe_pull_ahead, before a write is sent while Connected: at a threshold the current epoch is closed
   * (its barrier ack tells when the data in flight drained) and the node goes Ahead, or disconnects.
   */
  maybePullAhead(): void {
    const link = this.link;
    // Without UpToDate data of its own a node cannot run ahead of its peer.
    if (link.device.disk !== "UpToDate") return;
    const why = this.congestion.congested(this.sender.inFlightSectors, link.device.activityLogExtentsInUse);
    if (!why) return;
    link.log.info({ why, policy: this.congestion.policy }, "congestion");
    if (this.congestion.policy === "disconnect") {
      this.disconnect(`on-congestion disconnect: ${why}`);
      return;
    }
    this.sender.closeNonEmptyEpoch();
    link.state.change("Ahead");
    link.stats.wentAhead++;
    link.sendState(ConnState.Ahead).catch(() => {});
    if (this.sender.inFlightSectors === 0) this.scheduleResync();
  }

  /**
   * A write while Ahead (QUEUE_FOR_SEND_OOS): marked here before P_OUT_OF_SYNC goes out, so a resync that
   * starts in between already sees the bit; the peer marks it on receipt. Resolves false: not mirrored.
   */
  async sendOutOfSync(offset: number, bytes: number): Promise<boolean> {
    const link = this.link;
    const dev = link.device;
    dev.markOutOfSync(offset, bytes);
    link.stats.outOfSyncSent++;
    link.send(link.data, DrbdCommand.OutOfSync, encodeBlockDesc(offset / SECTOR, bytes)).catch(() => {});
    await dev.persistBitmap();
    return false;
  }

  /** got_BarrierAck: an Ahead node whose data in flight drained resyncs a moment later. */
  barrierAcked(): void {
    if (this.sender.inFlightSectors === 0 && this.link.state.name === "Ahead") this.scheduleResync();
  }

  /** The connection went: no resync from Ahead. */
  stop(): void {
    clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
  }

  private scheduleResync(): void {
    if (this.resyncTimer) return;
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = undefined;
      this.startResyncFromAhead().catch((e: Error) => this.link.lost(e));
    }, AHEAD_RESYNC_DELAY_MS);
  }

  /**
   * Ahead → SyncSource (drbd_start_resync, then drbd_gen_and_send_sync_uuid from after_state_ch): a new
   * bitmap UUID marks the resync, P_SYNC_UUID tells the Behind peer to start as SyncTarget.
   */
  private async startResyncFromAhead(): Promise<void> {
    const link = this.link;
    if (link.state.name !== "Ahead") return;
    const dev = link.device;
    const u = dev.uuids;
    const syncUuid = nextSyncUuid(u);
    await dev.setUuids([u[0], syncUuid, u[2], u[3]]);
    await dev.persistBitmap();
    if (link.state.name !== "Ahead") return;
    link.state.change("SyncSource");
    link.log.info({ outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "Ahead → SyncSource");
    link.send(link.data, DrbdCommand.SyncUuid, encodeSyncUuid(syncUuid)).catch(() => {});
    link.sendState(ConnState.SyncSource).catch(() => {});
    if (dev.bitmap.outOfSyncBits === 0) void this.resync.finish();
  }

  /** receive_state: the peer is Ahead, our disk is at most Outdated until the resync (sanitize_state). */
  becomeBehind(): void {
    const link = this.link;
    link.state.change("Behind");
    link.stats.wentBehind++;
    link.log.info("peer pulled ahead: Behind");
    const dev = link.device;
    if (dev.disk === "UpToDate" || dev.disk === "Consistent")
      link.state.setDisk("Outdated").catch((e: Error) => link.lost(e));
    else link.sendState(ConnState.Behind).catch(() => {});
  }

  /**
   * receive_out_of_sync: expected while Behind (the kernel also in WFSyncUUID / WFBitMapT). Like the kernel,
   * another state is logged, not fatal: the bits are set anyway, which costs at most a resync of them.
   */
  receiveOutOfSync(payload: Buffer): void {
    const link = this.link;
    const { sector, size } = decodeBlockDesc(payload);
    if (link.state.name !== "Behind")
      link.log.error({ state: link.state.name, sector, size }, "P_OUT_OF_SYNC while not Behind");
    if (size === 0 || size % SECTOR !== 0)
      throw new DrbdProtocolError(`P_OUT_OF_SYNC of ${size} bytes is not whole sectors`);
    const dev = link.device;
    if (sector + size / SECTOR > dev.layout.usableSectors)
      throw new DrbdProtocolError(`P_OUT_OF_SYNC beyond the end of the device (sector ${sector})`);
    link.stats.outOfSyncReceived++;
    dev.markOutOfSync(sector * SECTOR, size);
    dev.persistBitmap().catch((e: Error) => link.lost(e));
  }

  /** receive_sync_uuid while Behind: take the SyncSource's UUID and resync the marked blocks as SyncTarget. */
  startResyncFromBehind(syncUuid: bigint): void {
    const link = this.link;
    const dev = link.device;
    link.state.change("SyncTarget");
    link.log.info({ role: "SyncTarget", outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "resync started");
    const start = async () => {
      const u = dev.uuids;
      const old = u[0] & ~1n;
      await dev.setUuids([syncUuid, 0n, old, u[2]]);
      await dev.persistBitmap();
      // setDiskState announces SyncTarget / Inconsistent to the peer (P_STATE).
      await link.state.setDisk("Inconsistent");
      link.log.info({ outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "Behind → SyncTarget");
      this.resync.pump();
    };
    start().catch((e: Error) => link.lost(e));
  }
}
