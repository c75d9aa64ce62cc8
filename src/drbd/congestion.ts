/**
 * net { on-congestion; congestion-fill; congestion-extents } (drbd.conf(5), drbd_req.c maybe_pull_ahead):
 * what a Primary does when the replication link cannot keep up.
 *
 * - "block" (default): nothing; writes wait for the link as the wire protocol says.
 * - "pull-ahead": the Primary goes Ahead. It stops sending data, marks each later write in its bitmap and
 *   tells the peer with P_OUT_OF_SYNC (the peer goes Behind and marks the same blocks). Once the data in
 *   flight has drained it resyncs the marked blocks as SyncSource (P_SYNC_UUID, no bitmap exchange: the
 *   peer learned the bits packet by packet) and both go back to Connected.
 * - "disconnect": the Primary drops the connection and goes StandAlone (the kernel's C_DISCONNECTING ends in
 *   conn_disconnect → StandAlone).
 *
 * Only protocol A can be congested this way: with B or C every write already waits for the peer, so the
 * kernel refuses the other policies for them (drbd_nl.c, ERR_CONG_NOT_PROTO_A); so do we.
 *
 * Data in flight (the kernel's ap_in_flight, in sectors; counted by transfer_log.ts): P_DATA payload sent in
 * epochs whose P_BARRIER_ACK has not come back. With protocol A the peer confirms nothing else, and the
 * barrier ack comes only after the peer wrote the whole epoch, so this count covers the bytes still in our
 * socket buffer (socket.writableLength), those in the kernel's buffers and on the wire, and those the peer
 * has not written yet. Discards and zeroing carry no payload and are not counted.
 */
import type { CongestionOptions, OnCongestion, WireProtocol } from "./connection_options.js";

export type { CongestionOptions, OnCongestion } from "./connection_options.js";

/** drbd-utils' default congestion-extents (= the default al-extents). */
export const DEFAULT_CONGESTION_EXTENTS = 1237;

/**
 * How long the Ahead node waits after the data in flight drained before it starts the resync (the kernel
 * arms start_resync_timer for one second in got_BarrierAck).
 */
export const AHEAD_RESYNC_DELAY_MS = 1000;

/** The configuration error for an on-congestion policy with a wire protocol other than A, or undefined. */
export function congestionConfigError(protocol: WireProtocol, opts: CongestionOptions): string | undefined {
  const policy = opts.onCongestion ?? "block";
  if (policy !== "block" && protocol !== "A")
    return `net { on-congestion ${policy}; } needs protocol A, not ${protocol} (only protocol A can pull ahead or be congested)`;
  const fill = opts.congestionFillSectors ?? 0;
  if (!Number.isInteger(fill) || fill < 0) return `net { congestion-fill ${fill}; } is not a sector count`;
  const ext = opts.congestionExtents ?? DEFAULT_CONGESTION_EXTENTS;
  if (!Number.isInteger(ext) || ext < 7 || ext > 0xfffe)
    return `net { congestion-extents ${ext}; } outside 7..65534`;
  return undefined;
}

/** The congestion thresholds of one connection (data in flight is counted by the transfer log). */
export class CongestionMonitor {
  readonly policy: OnCongestion;
  readonly fillSectors: number;
  readonly extents: number;

  constructor(opts: CongestionOptions) {
    this.policy = opts.onCongestion ?? "block";
    this.fillSectors = opts.congestionFillSectors ?? 0;
    this.extents = opts.congestionExtents ?? DEFAULT_CONGESTION_EXTENTS;
  }

  /** True when a policy other than "block" is configured. */
  get active(): boolean {
    return this.policy !== "block";
  }

  /**
   * maybe_pull_ahead: which threshold is reached with `inFlightSectors` of data in flight and
   * `extentsInUse` activity-log extents held by writes in flight, or undefined when neither is (or the
   * policy is "block").
   */
  congested(inFlightSectors: number, extentsInUse: number): string | undefined {
    if (!this.active) return undefined;
    if (this.fillSectors > 0 && inFlightSectors >= this.fillSectors)
      return `congestion-fill threshold reached (${inFlightSectors} sectors in flight, limit ${this.fillSectors})`;
    if (extentsInUse >= this.extents)
      return `congestion-extents threshold reached (${extentsInUse} extents in use, limit ${this.extents})`;
    return undefined;
  }
}
