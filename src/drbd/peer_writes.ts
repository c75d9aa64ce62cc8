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
 *
 * A P_DATA's data arrives as slices of the socket reads (PacketFramer `scatterData`) and is copied once into
 * receive pages (receive_pages.ts, net { max-buffers } of them, reused), which the lower device writes as an
 * I/O vector and which come back when the write completed. When too few pages are free the write keeps a
 * copy of its data and this node stops reading the data socket until pages are free again
 * (drbd_alloc_pages waits in the kernel's receiver), so TCP pushes back on the Primary: memory stays bounded.
 */
import {
  commandName,
  decodeBarrier,
  decodeDataHead,
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
import { ReceivePages, RECEIVE_PAGE } from "./receive_pages.js";

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
  waiting: PeerRequest[];
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

/** One write received from the Primary (struct drbd_peer_request): P_DATA, P_TRIM or P_ZEROES. */
interface PeerRequest {
  readonly epoch: PeerEpoch;
  /** The epoch list it belongs to (a reconnect starts a new one). */
  readonly epochs: PeerEpoch[];
  readonly meta: PacketStream | undefined;
  readonly header: DataHeader;
  /** Bytes at byte `start`. */
  readonly start: number;
  readonly length: number;
  /** P_DATA's data (receive pages, or a copy of its own); undefined for a discard or zeroing. */
  readonly iov: readonly Buffer[] | undefined;
  /** Where `iov` lies: receive pages (given back), a copy of its own ("copy"), or nothing to give back. */
  readonly buffers: ReceivePages | "copy" | undefined;
  readonly kind: Deallocation | undefined;
}

/** The data of a P_DATA without any (nothing to write, nothing to give back). */
const NO_DATA = Buffer.alloc(0);

/** The kernel's default net { max-buffers }: 2048 pages of 4 KiB. */
export const DEFAULT_MAX_BUFFERS = 2048;

export class PeerWriteReceiver {
  /** Epochs not yet acknowledged, oldest first; the last one receives the new writes. */
  private epochs: PeerEpoch[] = [newEpoch(true)];
  /** The meta socket the epochs belong to: a new connection starts afresh. */
  private meta: PacketStream | undefined;
  /** Receive pages (made on the first P_DATA; again after a max-buffers change once none is in use). */
  private pages: ReceivePages | undefined;
  /** Bytes of the copies held by P_DATA not yet written that found no free receive pages. */
  private heldBytes = 0;
  /** The data stream this node stopped reading (max-buffers reached), to be resumed. */
  private pausedStream: PacketStream | undefined;

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

  /** Bytes held by received P_DATA not yet written: receive pages in use and copies held. */
  get receiveBufferBytes(): number {
    return (this.pages?.inUse ?? 0) * RECEIVE_PAGE + this.heldBytes;
  }

  /**
   * receive_Data for P_DATA: p_data and its data, as slices of the socket reads (digest already checked and
   * removed). The data is copied into receive pages, or, when too few are free, into a buffer of its own
   * (the slices may lie in a reused read buffer) and the socket is not read until pages are free.
   */
  receiveData(head: Buffer, slices: readonly Buffer[]): void {
    let length = 0;
    for (const b of slices) length += b.length;
    const h = decodeDataHead(head, length);
    this.link.stats.receivedWrites++;
    this.current(); // a new connection first forgets the old one's waiting writes (and pause)
    const start = h.sector * SECTOR;
    if (length === 0) return this.receiveWrite(h, start, 0, [NO_DATA], undefined, undefined);
    const pages = this.receivePages();
    const copy = pages.copyIn(slices, length);
    if (copy) this.receiveWrite(h, start, length, copy, undefined, pages);
    else {
      // The slices may lie in a read buffer that is reused after this call (owned_reads.ts): keep a copy.
      const own = [Buffer.concat(slices, length)];
      this.hold(length);
      this.receiveWrite(h, start, length, own, undefined, "copy");
    }
  }

  private receivePages(): ReceivePages {
    const count = this.link.opts.maxBuffers ?? DEFAULT_MAX_BUFFERS;
    if (!this.pages || (this.pages.count !== count && this.pages.inUse === 0))
      this.pages = new ReceivePages(count);
    return this.pages;
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
    this.receiveWrite(t, t.sector * SECTOR, t.size, undefined, kind, undefined);
  }

  /** The epoch list of the current connection (a reconnect forgets the old one's unfinished epochs). */
  private current(): PeerEpoch[] {
    const meta = this.link.meta;
    if (meta !== this.meta) {
      // The old connection's writes that never started will not run: their reads are free.
      for (const e of this.epochs) for (const r of e.waiting) this.release(r);
      this.pausedStream = undefined;
      this.meta = meta;
      this.epochs = [newEpoch(true)];
    }
    return this.epochs;
  }

  /**
   * receive_Data for one request of `length` bytes at byte `start`: the ack the sender asked for, epoch
   * membership for P_BARRIER, ordering after resync writes to the same blocks while SyncTarget.
   */
  private receiveWrite(
    header: DataHeader,
    start: number,
    length: number,
    iov: readonly Buffer[] | undefined,
    kind: Deallocation | undefined,
    buffers: ReceivePages | "copy" | undefined,
  ): void {
    const link = this.link;
    const epochs = this.current();
    const meta = this.meta;
    // receive_Data: a Diskless Primary's writes exist only here; they go out of sync for its re-attach.
    if (link.state.peerHasNoDisk) link.device.markOutOfSync(start, length);
    if (header.dpFlags & DP_SEND_RECEIVE_ACK) link.post(meta, DrbdCommand.RecvAck, blockAck(header, length));
    const epoch = epochs[epochs.length - 1];
    epoch.size++;
    epoch.active++;
    const r: PeerRequest = { epoch, epochs, meta, header, start, length, iov, buffers, kind };
    if (link.state.name === "SyncTarget") {
      this.resync.peerWriteWhileTarget(start, start + length, this.openedPromise(epoch)).then(
        () => this.run(r),
        (e: Error) => this.finished(r, e),
      );
    } else if (epoch.open) this.run(r);
    else epoch.waiting.push(r);
  }

  /** Submits a request to the lower device; finished() runs when it completed. */
  private run(r: PeerRequest): void {
    const dev = this.link.device;
    const written = r.iov
      ? dev.applyPeerWrite(r.start, r.iov, r.length, (r.header.dpFlags & DP_FUA) !== 0)
      : dev.applyPeerDeallocation(r.start, r.length, r.kind as Deallocation);
    written.then(
      () => this.finished(r, undefined),
      (e: Error) => this.finished(r, e),
    );
  }

  /** The request's write completed (or failed): its ack, its receive buffers back, maybe its epoch done. */
  private finished(r: PeerRequest, e: Error | undefined): void {
    const link = this.link;
    const h = r.header;
    if (e) {
      link.log.error({ err: e.message, sector: h.sector }, "peer write failed");
      if (h.dpFlags & (DP_SEND_WRITE_ACK | DP_SEND_RECEIVE_ACK))
        link.post(r.meta, DrbdCommand.NegAck, blockAck(h, r.length));
    } else if (h.dpFlags & DP_SEND_WRITE_ACK) link.post(r.meta, DrbdCommand.WriteAck, blockAck(h, r.length));
    this.release(r);
    r.epoch.active--;
    if (r.epochs === this.epochs) this.mayFinishEpoch();
  }

  /**
   * Counts a copy as held (no receive pages were free for it): the data socket is not read until pages are
   * free again (the packets already framed still run: at most one more read).
   */
  private hold(bytes: number): void {
    this.heldBytes += bytes;
    const data = this.link.data;
    if (!this.pausedStream && data) {
      this.link.stats.receiveStalls++;
      this.pausedStream = data;
      data.pauseReading();
    }
  }

  /**
   * A request no longer needs its data: its pages go back, or its copy is let go. Reading resumes once no
   * request holds a copy and at least half the pages are free.
   */
  private release(r: PeerRequest): void {
    const iov = r.iov as readonly Buffer[];
    if (r.buffers === undefined) return;
    if (r.buffers === "copy") this.heldBytes -= r.length;
    else r.buffers.give(iov);
    const paused = this.pausedStream;
    const pages = this.pages;
    if (paused && this.heldBytes === 0 && (!pages || pages.free * 2 >= pages.count)) {
      this.pausedStream = undefined;
      paused.resumeReading();
    }
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
      for (const r of waiting) this.run(r);
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

/** p_block_ack for a received request: its sector, block_id and seq_num, and its size in bytes. */
function blockAck(h: DataHeader, size: number): Buffer {
  return encodeBlockAck({ sector: h.sector, blockId: h.blockId, size, seqNum: h.seqNum });
}
