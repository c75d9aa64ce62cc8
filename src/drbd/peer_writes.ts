/**
 * The Secondary's side of the request path (drbd_receiver.c receive_Data, receive_Barrier,
 * drbd_flush_after_epoch): mirrored writes from the Primary (P_DATA, P_TRIM, P_ZEROES) are written with
 * the ack the sender asked for; P_BARRIER closes an epoch, which is acknowledged with P_BARRIER_ACK once
 * its writes are done and the lower device flushed, in barrier order.
 */
import {
  commandName,
  decodeBarrier,
  decodeData,
  decodeTrim,
  DP_FUA,
  DP_SEND_RECEIVE_ACK,
  DP_SEND_WRITE_ACK,
  DrbdCommand,
  DrbdProtocolError,
  encodeBarrierAck,
  encodeBlockAck,
  FF_TRIM,
  FF_WZEROES,
  type DataHeader,
} from "./protocol.js";
import { SECTOR } from "./metadata.js";
import type { Deallocation } from "./peer_device_port.js";
import type { Link } from "./link.js";
import type { Resync } from "./resync.js";

export class PeerWriteReceiver {
  /** Writes of the epoch being received; P_BARRIER takes them. */
  private epochWrites = new Set<Promise<void>>();
  private epochCount = 0;
  /** Resolves when every epoch closed by a P_BARRIER so far is written and flushed. */
  private epochGate: Promise<unknown> = Promise.resolve();
  /** Settles when the last P_BARRIER_ACK queued has gone out (acks keep barrier order). */
  private barrierAcksSent: Promise<void> = Promise.resolve();
  private flushRunning: Promise<void> | undefined;
  private flushQueued: Promise<void> | undefined;

  constructor(
    private readonly link: Link,
    private readonly resync: Resync,
  ) {}

  /** /proc/drbd "ua:": peer writes of the current epoch received and not yet written (and acknowledged). */
  get unackedRequests(): number {
    return this.epochWrites.size;
  }

  /** receive_Data for P_DATA. */
  receiveData(payload: Buffer): void {
    const d = decodeData(payload);
    this.link.stats.receivedWrites++;
    const start = d.sector * SECTOR;
    this.receiveWrite(d, start, d.data.length, () =>
      this.link.device.applyPeerWrite(start, d.data, (d.dpFlags & DP_FUA) !== 0),
    );
  }

  /** P_TRIM / P_ZEROES: like P_DATA without data; only when the feature was agreed (drbd_do_features). */
  receiveDeallocation(cmd: DrbdCommand, payload: Buffer): void {
    const kind: Deallocation = cmd === DrbdCommand.Trim ? "unmap" : "zeroes";
    const feature = kind === "unmap" ? FF_TRIM : FF_WZEROES;
    if (!(this.link.agreedFeatures & feature))
      throw new DrbdProtocolError(`${commandName(cmd)} although the feature was not agreed`);
    const t = decodeTrim(payload);
    if (t.size === 0 || t.size % SECTOR !== 0)
      throw new DrbdProtocolError(`${commandName(cmd)} of ${t.size} bytes is not whole sectors`);
    this.link.stats.receivedDeallocations++;
    const start = t.sector * SECTOR;
    this.receiveWrite(t, start, t.size, () => this.link.device.applyPeerDeallocation(start, t.size, kind));
  }

  /**
   * receive_Data for one request of `length` bytes at byte `start`: the ack the sender asked for, epoch
   * membership for P_BARRIER, ordering after resync writes to the same blocks while SyncTarget.
   */
  private receiveWrite(h: DataHeader, start: number, length: number, apply: () => Promise<void>): void {
    const link = this.link;
    const ack = { sector: h.sector, blockId: h.blockId, size: length, seqNum: h.seqNum };
    if (h.dpFlags & DP_SEND_RECEIVE_ACK)
      link.send(link.meta, DrbdCommand.RecvAck, encodeBlockAck(ack)).catch(() => {});
    this.epochCount++;
    const end = start + length;
    const before =
      link.state.name === "SyncTarget"
        ? this.resync.peerWriteWhileTarget(start, end, this.epochGate)
        : this.epochGate;
    const w = before
      .then(apply)
      .then(
        () =>
          h.dpFlags & DP_SEND_WRITE_ACK
            ? link.send(link.meta, DrbdCommand.WriteAck, encodeBlockAck(ack))
            : undefined,
        (e: Error) => {
          link.log.error({ err: e.message, sector: h.sector }, "peer write failed");
          return h.dpFlags & (DP_SEND_WRITE_ACK | DP_SEND_RECEIVE_ACK)
            ? link.send(link.meta, DrbdCommand.NegAck, encodeBlockAck(ack))
            : undefined;
        },
      )
      .catch(() => {});
    this.epochWrites.add(w);
    void w.then(() => this.epochWrites.delete(w));
  }

  /** receive_Barrier: the epoch closes; its P_BARRIER_ACK goes once its writes are stable. */
  receiveBarrier(payload: Buffer): void {
    const link = this.link;
    const nr = decodeBarrier(payload);
    const writes = [...this.epochWrites];
    const count = this.epochCount;
    this.epochWrites = new Set();
    this.epochCount = 0;
    // The epoch is stable once its writes are done and the lower device flushed (write-ordering flush).
    // Acks leave in barrier order: the kernel drops the connection on any other ("BAD! BarrierAck #8
    // received, expected #7!", tl_release), and a short epoch can finish before a longer earlier one.
    const previous = this.barrierAcksSent;
    const stable = Promise.all(writes).then(() => this.epochFlush());
    // receive_Barrier (WO_BDEV_FLUSH): the next epoch's writes start only once this one is on stable
    // storage — a write the Primary issued after an earlier one completed must not land before it here
    // (with protocol A or B the Primary does not wait for this node, so they can arrive together).
    this.epochGate = stable.catch(() => {});
    const acked = stable
      .then(() => previous)
      .then(() => link.send(link.meta, DrbdCommand.BarrierAck, encodeBarrierAck(nr, count)));
    this.barrierAcksSent = acked.catch((e: Error) => link.lost(e));
  }

  /**
   * The write-ordering flush of an epoch whose writes are done, as a group commit: a flush that starts
   * after those writes completed covers the epoch, so while one runs, every epoch that asks meanwhile shares
   * the next one (protocol A closes an epoch per write; one flush each would serialize the peer on them). A
   * lower device without a volatile cache needs none (the block layer's flush is a no-op there too).
   */
  private epochFlush(): Promise<void> {
    const lower = this.link.device.lower;
    if (!lower.volatileWriteCache || this.link.opts.diskFlushes === false) return Promise.resolve();
    if (!this.flushRunning) {
      const run: Promise<void> = lower.flush().finally(() => {
        if (this.flushRunning === run) this.flushRunning = undefined;
      });
      this.flushRunning = run;
      return run;
    }
    this.flushQueued ??= this.flushRunning
      .catch(() => {})
      .then(() => {
        this.flushQueued = undefined;
        return this.epochFlush();
      });
    return this.flushQueued;
  }
}
