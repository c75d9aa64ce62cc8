/**
 * The sender's transfer log (drbd_req.c / drbd_main.c tl_release, tl_clear): the mirrored requests of each
 * epoch until the peer's P_BARRIER_ACK says the whole epoch is on its disk.
 *
 * With protocol A a request completes when it is sent, with B when the peer received it; neither means the
 * peer wrote it. If the connection breaks before the epoch's barrier ack, the kernel marks every such
 * request out of sync (CONNECTION_LOST_WHILE_PENDING: sent but not RQ_NET_DONE), so the next resync repairs
 * what the peer lost. Protocol C needs no log: a request completes only after the peer's write ack.
 *
 * The log also yields the data in flight for net { congestion-fill } (the kernel's ap_in_flight): P_DATA
 * sectors of epochs not yet acknowledged. Discards and zeroing carry no payload and count 0 there.
 */
export class TransferLog {
  private readonly epochs = new Map<number, { ranges: [number, number][]; dataSectors: number }>();
  private dataSectors = 0;

  /** A request of `bytes` bytes at byte `offset` went out in `epoch`; `payloadSectors` of data with it. */
  add(epoch: number, offset: number, bytes: number, payloadSectors: number): void {
    let e = this.epochs.get(epoch);
    if (!e) this.epochs.set(epoch, (e = { ranges: [], dataSectors: 0 }));
    e.ranges.push([offset, bytes]);
    e.dataSectors += payloadSectors;
    this.dataSectors += payloadSectors;
  }

  /** P_BARRIER_ACK for `epoch` (tl_release): its requests are on the peer's disk. */
  release(epoch: number): void {
    const e = this.epochs.get(epoch);
    if (!e) return;
    this.epochs.delete(epoch);
    this.dataSectors -= e.dataSectors;
  }

  /** Sectors of P_DATA sent and not yet confirmed by a barrier ack. */
  get inFlightSectors(): number {
    return this.dataSectors;
  }

  /** Requests not confirmed by a barrier ack. */
  get pendingRequests(): number {
    let n = 0;
    for (const e of this.epochs.values()) n += e.ranges.length;
    return n;
  }

  /** tl_clear: the connection is gone; returns the byte ranges [offset, bytes] the peer may not have. */
  clear(): [number, number][] {
    const out: [number, number][] = [];
    for (const e of this.epochs.values()) out.push(...e.ranges);
    this.epochs.clear();
    this.dataSectors = 0;
    return out;
  }
}
