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
 * Data in flight (the kernel's ap_in_flight, in sectors): P_DATA payload sent in epochs whose P_BARRIER_ACK
 * has not come back. With protocol A the peer confirms nothing else, and the barrier ack comes only after
 * the peer wrote the whole epoch, so this count covers the bytes still in our socket buffer
 * (socket.writableLength), those in the kernel's buffers and on the wire, and those the peer has not written
 * yet. Discards and zeroing carry no payload and are not counted.
 */
import type { WireProtocol } from "./connection.js";

export type OnCongestion = "block" | "pull-ahead" | "disconnect";

export interface CongestionOptions {
  /** net { on-congestion }, default "block". */
  onCongestion?: OnCongestion;
  /** net { congestion-fill } in 512-byte sectors; 0 (default) turns the fill check off. */
  congestionFillSectors?: number;
  /** net { congestion-extents }: activity-log extents in use that count as congestion (default 1237). */
  congestionExtents?: number;
}

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

/** Data in flight per epoch and the congestion thresholds of one connection. */
export class CongestionMonitor {
  readonly policy: OnCongestion;
  readonly fillSectors: number;
  readonly extents: number;
  private readonly byEpoch = new Map<number, number>();
  private total = 0;

  constructor(opts: CongestionOptions) {
    this.policy = opts.onCongestion ?? "block";
    this.fillSectors = opts.congestionFillSectors ?? 0;
    this.extents = opts.congestionExtents ?? DEFAULT_CONGESTION_EXTENTS;
  }

  /** True when a policy other than "block" is configured. */
  get active(): boolean {
    return this.policy !== "block";
  }

  /** Sectors of P_DATA sent and not yet confirmed by a barrier ack. */
  get inFlightSectors(): number {
    return this.total;
  }

  /** P_DATA of `sectors` sectors went out in epoch `epoch`. */
  sent(epoch: number, sectors: number): void {
    this.byEpoch.set(epoch, (this.byEpoch.get(epoch) ?? 0) + sectors);
    this.total += sectors;
  }

  /** P_BARRIER_ACK for `epoch`: its writes are on the peer's disk. Returns the sectors still in flight. */
  barrierAcked(epoch: number): number {
    const s = this.byEpoch.get(epoch);
    if (s !== undefined) {
      this.byEpoch.delete(epoch);
      this.total -= s;
    }
    return this.total;
  }

  /** The connection is gone: nothing is in flight any more. */
  reset(): void {
    this.byEpoch.clear();
    this.total = 0;
  }

  /**
   * maybe_pull_ahead: which threshold is reached with `extentsInUse` activity-log extents held by writes
   * in flight, or undefined when neither is (or the policy is "block").
   */
  congested(extentsInUse: number): string | undefined {
    if (!this.active) return undefined;
    if (this.fillSectors > 0 && this.total >= this.fillSectors)
      return `congestion-fill threshold reached (${this.total} sectors in flight, limit ${this.fillSectors})`;
    if (extentsInUse >= this.extents)
      return `congestion-extents threshold reached (${extentsInUse} extents in use, limit ${this.extents})`;
    return undefined;
  }
}
