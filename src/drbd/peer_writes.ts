/**
 * The Secondary's side of the request path (drbd_receiver.c receive_Data, receive_Barrier,
 * drbd_flush_after_epoch): mirrored writes from the Primary (P_DATA, P_TRIM, P_ZEROES) are written with
 * the ack the sender asked for; P_BARRIER closes an epoch, which is acknowledged with P_BARRIER_ACK once
 * its writes are done and the lower device flushed, in barrier order.
 *
 * Epochs are kept as a queue (the kernel's epoch list): the head is the oldest epoch not yet acknowledged.
 * Only the head's writes run; a later epoch's writes wait, received, until every earlier epoch is written
 * and flushed — receive_Barrier with write ordering flush or drain (conn_wait_active_ee_empty, drbd_flush)
 * before the next epoch's writes are submitted: a write the Primary issued after an earlier one completed
 * must not reach stable storage here before it. Acks are queued on the meta socket, so the acks of every
 * write that finished in one event-loop turn leave in one writev (packet_writer.ts); a write's completion is
 * one callback, not a promise chain.
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
import type { PacketStream } from "./packet_stream.js";
import type { Resync } from "./resync.js";
import type { BarrierJoin } from "./barrier_join.js";

/** One epoch as received (struct drbd_epoch). */
interface PeerEpoch {
  /** Writes received in it (P_BARRIER_ACK's set_size). */
  size: number;
  /** Writes received and not yet finished (started or waiting). */
  active: number;
  /** Its number, once P_BARRIER closed it. */
  barrier: number | undefined;
  /** Every earlier epoch is stable: its writes may run. */
  open: boolean;
  /** Its writes that wait for the earlier epochs. */
  waiting: (() => void)[];
  /** The flush after its writes is running. */
  flushing: boolean;
  /** Resolves when it opens (made only for a SyncTarget's ordering against resync writes). */
  opened: Promise<void> | undefined;
  markOpened: (() => void) | undefined;
}

function newEpoch(open: boolean): PeerEpoch {
  return {
    size: 0,
    active: 0,
    barrier: undefined,
    open,
    waiting: [],
    flushing: false,
    opened: undefined,
    markOpened: undefined,
  };
}

export class PeerWriteReceiver {
  /** Epochs not yet acknowledged, oldest first; the last one receives the new writes. */
  private epochs: PeerEpoch[] = [newEpoch(true)];
  /** The meta socket the epochs belong to: a new connection starts afresh. */
  private meta: PacketStream | undefined;

  constructor(
    private readonly link: Link,
    private readonly resync: Resync,
    /** The volumes of a multi-volume resource acknowledge each epoch together (barrier_join.ts). */
    private readonly barriers?: BarrierJoin,
  ) {}

  /** /proc/drbd "ua:": peer writes received and not yet written (and acknowledged). */
  get unackedRequests(): number {
    let n = 0;
    for (const e of this.epochs) n += e.active;
    return n;
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

  /** The epoch list of the current connection (a reconnect forgets the old one's unfinished epochs). */
  private current(): PeerEpoch[] {
    const meta = this.link.meta;
    if (meta !== this.meta) {
      this.meta = meta;
      this.epochs = [newEpoch(true)];
    }
    return this.epochs;
  }

  /**
   * receive_Data for one request of `length` bytes at byte `start`: the ack the sender asked for, epoch
   * membership for P_BARRIER, ordering after resync writes to the same blocks while SyncTarget.
   */
  private receiveWrite(h: DataHeader, start: number, length: number, apply: () => Promise<void>): void {
    const link = this.link;
    const epochs = this.current();
    const meta = this.meta;
    const ack = { sector: h.sector, blockId: h.blockId, size: length, seqNum: h.seqNum };
    // receive_Data: a Diskless Primary's writes exist only here; they go out of sync for its re-attach.
    if (link.state.peerHasNoDisk) link.device.markOutOfSync(start, length);
    if (h.dpFlags & DP_SEND_RECEIVE_ACK) link.post(meta, DrbdCommand.RecvAck, encodeBlockAck(ack));
    const epoch = epochs[epochs.length - 1];
    epoch.size++;
    epoch.active++;
    const finished = (e?: Error) => {
      if (e) {
        link.log.error({ err: e.message, sector: h.sector }, "peer write failed");
        if (h.dpFlags & (DP_SEND_WRITE_ACK | DP_SEND_RECEIVE_ACK))
          link.post(meta, DrbdCommand.NegAck, encodeBlockAck(ack));
      } else if (h.dpFlags & DP_SEND_WRITE_ACK) link.post(meta, DrbdCommand.WriteAck, encodeBlockAck(ack));
      epoch.active--;
      if (epochs === this.epochs) this.mayFinishEpoch();
    };
    const run = () => {
      apply().then(() => finished(), finished);
    };
    if (link.state.name === "SyncTarget") {
      const end = start + length;
      this.resync.peerWriteWhileTarget(start, end, this.openedPromise(epoch)).then(run, finished);
    } else if (epoch.open) run();
    else epoch.waiting.push(run);
  }

  /** A promise that resolves when `epoch` opens (settled at once when it is open). */
  private openedPromise(epoch: PeerEpoch): Promise<void> {
    if (epoch.open) return Promise.resolve();
    epoch.opened ??= new Promise<void>((r) => (epoch.markOpened = r));
    return epoch.opened;
  }

  /** receive_Barrier: the epoch closes; its P_BARRIER_ACK goes once its writes are stable. */
  receiveBarrier(payload: Buffer): void {
    const nr = decodeBarrier(payload);
    const epochs = this.current();
    epochs[epochs.length - 1].barrier = nr;
    epochs.push(newEpoch(false));
    this.mayFinishEpoch();
  }

  /**
   * drbd_may_finish_epoch: the oldest epoch, once closed by its barrier and with every write done, is
   * flushed (write-ordering flush); then its P_BARRIER_ACK goes (acks leave in barrier order: the kernel
   * drops the connection on any other, "BAD! BarrierAck #8 received, expected #7!", tl_release) and the next
   * epoch's writes start.
   */
  private mayFinishEpoch(): void {
    const epochs = this.epochs;
    const head = epochs[0];
    if (head.barrier === undefined || head.active > 0 || head.flushing) return;
    head.flushing = true;
    const meta = this.meta;
    const openNext = () => {
      if (epochs !== this.epochs) return;
      epochs.shift();
      const next = epochs[0];
      next.open = true;
      next.markOpened?.();
      const waiting = next.waiting;
      next.waiting = [];
      for (const run of waiting) run();
      this.mayFinishEpoch();
    };
    const ack = (size: number) =>
      this.link.post(meta, DrbdCommand.BarrierAck, encodeBarrierAck(head.barrier as number, size));
    const stable = () => {
      if (epochs !== this.epochs) return;
      if (!this.barriers) {
        ack(head.size);
        openNext();
      } else this.barriers.reached(head.barrier as number, head.size, ack, openNext);
    };
    if (!this.flushNeeded()) stable();
    else
      this.link.device.lower.flush().then(stable, (e: Error) => {
        if (epochs === this.epochs) this.link.lost(e);
      });
  }

  /**
   * A lower device without a volatile cache needs no flush (the block layer's flush is a no-op there too);
   * disk { disk-flushes no } turns it off for caches that survive power loss.
   */
  private flushNeeded(): boolean {
    return this.link.device.lower.volatileWriteCache && this.link.opts.diskFlushes !== false;
  }
}
