/**
 * The request path of a Primary towards its peer (drbd_req.c, drbd_main.c drbd_send_dblock,
 * drbd_receiver.c got_BlockAck / got_NegAck / got_BarrierAck): each write becomes P_DATA (P_TRIM, P_ZEROES
 * for discards and zeroing) with a sequence number in the current epoch; epochs are closed by P_BARRIER;
 * the request completes on the ack its wire protocol asks for (C: P_WRITE_ACK after the peer's disk write,
 * B: P_RECV_ACK on receipt, A: none — once sent). Protocols A and B keep each request in the transfer log
 * until P_BARRIER_ACK confirms its epoch; a connection lost before that marks it out of sync (tl_clear).
 */
import {
  commandName,
  decodeBarrierAck,
  decodeBlockAck,
  DP_DISCARD,
  DP_FUA,
  DP_SEND_RECEIVE_ACK,
  DP_SEND_WRITE_ACK,
  DP_ZEROES,
  DRBD_MAX_BIO_SIZE,
  DrbdCommand,
  DrbdProtocolError,
  encodeBarrier,
  encodeDataParts,
  encodeTrim,
  FF_TRIM,
  FF_WZEROES,
  frame,
  type DataHeader,
} from "./protocol.js";
import { SECTOR } from "./metadata.js";
import { TransferLog } from "./transfer_log.js";
import { SenderEpoch } from "./sender_epoch.js";
import type { Deallocation } from "./peer_device_port.js";
import type { Link } from "./link.js";
import type { Resync } from "./resync.js";

/**
 * Largest P_TRIM / P_ZEROES: one activity-log extent (4 MiB). The kernel sends and expects larger batches
 * (up to DRBD_MAX_BBIO_SECTORS) only when DRBD_FF_WSAME is agreed, which we do not offer
 * (drbd_max_discard_sectors).
 */
const MAX_TRIM_BYTES = 4 << 20;
/** One shared buffer of zeroes for zeroing sent as data; never written to. */
let ZERO_CHUNK: Buffer | undefined;

interface PendingWrite {
  resolve: (ok: boolean) => void;
  offset: number;
  bytes: number;
}

/** mirror()'s answer when the link is down: not mirrored (one shared, settled promise). */
const NOT_MIRRORED: Promise<boolean> = Promise.resolve(false);

export class RequestSender {
  private nextBlockId = 1n;
  private seqNum = 0;
  /** Requests waiting for P_WRITE_ACK / P_RECV_ACK, by block_id. */
  private readonly pending = new Map<bigint, PendingWrite>();
  /** Protocols A and B: requests sent whose epoch the peer has not confirmed with P_BARRIER_ACK. */
  private readonly transferLog = new TransferLog();
  private idleEpochTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly link: Link,
    private readonly resync: Resync,
    /** Epochs (write ordering); the volumes of one resource share them, as their P_BARRIERs are one stream. */
    private readonly epoch: SenderEpoch = new SenderEpoch(),
  ) {}

  /** /proc/drbd "pe:": writes sent to the peer whose acknowledgement is still awaited. */
  get pendingRequests(): number {
    return this.pending.size;
  }

  /** Sectors of data in flight to the peer (ap_in_flight). */
  get inFlightSectors(): number {
    return this.transferLog.inFlightSectors;
  }

  /** Mirrors a write (or a discard / zeroing) while the connection is up and not Ahead (PeerLink.mirror). */
  mirror(
    offset: number,
    bytes: number,
    data: readonly Buffer[] | Deallocation,
    fua: boolean,
  ): Promise<boolean> {
    if (!this.link.state.isUp) return NOT_MIRRORED;
    if (typeof data !== "string") {
      // One P_DATA carries at most DRBD_MAX_BIO_SIZE (the kernel splits bios at max_bio_size).
      if (bytes <= DRBD_MAX_BIO_SIZE) return this.sendData(offset, bytes, fua, data);
      const parts: Promise<boolean>[] = [];
      for (let off = 0; off < bytes; off += DRBD_MAX_BIO_SIZE) {
        const len = Math.min(DRBD_MAX_BIO_SIZE, bytes - off);
        parts.push(this.sendData(offset + off, len, fua, sliceIov(data, off, len)));
      }
      return allOk(parts);
    }
    // drbd_send_dblock: REQ_OP_DISCARD → P_TRIM, REQ_OP_WRITE_ZEROES → P_ZEROES, each only when the peer
    // agreed to the feature. Without it the kernel turns the offload off and the block layer writes zero
    // pages; we send zero-filled P_DATA instead, for an unmap only when our unmap reads back zeroes (else
    // the content after it is unspecified and the blocks are marked out of sync).
    const feature = data === "unmap" ? FF_TRIM : FF_WZEROES;
    if (!(this.link.agreedFeatures & feature)) {
      if (data === "unmap" && !this.link.device.unmapReadsZeroes) return NOT_MIRRORED;
      return this.sendZeroData(offset, bytes, fua);
    }
    const cmd = data === "unmap" ? DrbdCommand.Trim : DrbdCommand.Zeroes;
    const flags = data === "unmap" ? DP_DISCARD : DP_ZEROES;
    const parts: Promise<boolean>[] = [];
    for (let off = 0; off < bytes; off += MAX_TRIM_BYTES) {
      const len = Math.min(MAX_TRIM_BYTES, bytes - off);
      parts.push(this.sendWrite(offset + off, len, fua, cmd, flags, (h) => [encodeTrim(h, len)]));
    }
    return allOk(parts);
  }

  /** One P_DATA: p_data, the data-integrity-alg digest when one is agreed, the data (not copied). */
  private sendData(offset: number, bytes: number, fua: boolean, iov: readonly Buffer[]): Promise<boolean> {
    const integrity = this.link.integrity;
    return this.sendWrite(offset, bytes, fua, DrbdCommand.Data, 0, (h) =>
      encodeDataParts(h, integrity ? integrity.digest(iov) : undefined, iov),
    );
  }

  /** Zeroing as P_DATA of zeroes (peer without P_TRIM / P_ZEROES), in DRBD_MAX_BIO_SIZE pieces. */
  private sendZeroData(offset: number, bytes: number, fua: boolean): Promise<boolean> {
    const zeroes = (ZERO_CHUNK ??= Buffer.alloc(DRBD_MAX_BIO_SIZE));
    const parts: Promise<boolean>[] = [];
    for (let off = 0; off < bytes; off += DRBD_MAX_BIO_SIZE) {
      const len = Math.min(DRBD_MAX_BIO_SIZE, bytes - off);
      parts.push(this.sendData(offset + off, len, fua, [zeroes.subarray(0, len)]));
    }
    return allOk(parts);
  }

  /**
   * One mirrored request (P_DATA, P_TRIM or P_ZEROES) in the current epoch, acknowledged as the wire
   * protocol asks: C P_WRITE_ACK, B P_RECV_ACK, A none (done once handed to the socket). The packet is
   * queued for this turn's writev on the data socket; the request completes in the ack's handler (or the
   * send callback for A), without a promise chain of its own.
   */
  private sendWrite(
    offset: number,
    bytes: number,
    fua: boolean,
    cmd: DrbdCommand,
    extraFlags: number,
    build: (h: DataHeader) => Buffer[],
  ): Promise<boolean> {
    const link = this.link;
    const data = link.data;
    if (!data || data.socket.destroyed) return NOT_MIRRORED;
    const protocol = link.protocol;
    // A write issued after an earlier one completed must not be reordered before it on the peer.
    if (this.epoch.hadCompletion && this.epoch.writes > 0) this.closeEpoch();
    this.epoch.writes++;
    const blockId = this.nextBlockId++;
    const seqNum = (this.seqNum = (this.seqNum + 1) >>> 0);
    let dpFlags = extraFlags | (fua ? DP_FUA : 0);
    if (protocol === "C") dpFlags |= DP_SEND_WRITE_ACK;
    if (protocol === "B") dpFlags |= DP_SEND_RECEIVE_ACK;
    const parts = frame(
      cmd,
      build({ sector: offset / SECTOR, blockId, seqNum, dpFlags }),
      link.agreedVersion,
      link.volume,
    );
    if (cmd === DrbdCommand.Data) link.stats.sentWrites++;
    else link.stats.sentDeallocations++;
    // Protocols A and B complete before the peer's disk write: keep the request until its barrier ack.
    if (protocol !== "C")
      this.transferLog.add(this.epoch.number, offset, bytes, cmd === DrbdCommand.Data ? bytes / SECTOR : 0);
    return new Promise<boolean>((resolve) => {
      if (protocol === "A")
        data.writer.queue(parts, (e) => {
          this.completed(offset, bytes, !e);
          resolve(!e);
        });
      else {
        this.pending.set(blockId, { resolve, offset, bytes });
        data.writer.queue(parts);
      }
    });
  }

  /** A request completed (acked, or sent for A): later writes go into a new epoch; a SyncSource's blocks are in sync. */
  private completed(offset: number, bytes: number, ok: boolean): void {
    this.epoch.hadCompletion = true;
    if (this.link.protocol !== "C") this.closeEpochWhenIdle();
    if (ok && this.link.state.name === "SyncSource") this.resync.mirroredWhileSource(offset, bytes);
  }

  /** Closes the current epoch if it has writes (P_BARRIER): maybe_pull_ahead before going Ahead. */
  closeNonEmptyEpoch(): void {
    if (this.epoch.writes > 0) this.closeEpoch();
  }

  /** P_BARRIER with the current epoch's number; the next write starts a new epoch. */
  private closeEpoch(): void {
    const link = this.link;
    const nr = this.epoch.number;
    this.epoch.number = (nr + 1) >>> 0;
    this.epoch.writes = 0;
    this.epoch.hadCompletion = false;
    link.stats.barriersSent++;
    link.post(link.data, DrbdCommand.Barrier, encodeBarrier(nr));
  }

  /**
   * Protocols A and B: when no further write follows, the sender closes the epoch itself (the kernel's
   * sender does so when it runs out of work), so its barrier ack confirms the last writes of a burst and a
   * later disconnect does not mark them out of sync.
   */
  private closeEpochWhenIdle(): void {
    if (this.idleEpochTimer) return;
    this.idleEpochTimer = setTimeout(() => {
      this.idleEpochTimer = undefined;
      if (this.epoch.writes === 0 || !this.link.state.isUp) return;
      this.closeEpoch();
    }, 0);
  }

  /** got_BlockAck / got_NegAck: P_WRITE_ACK, P_RECV_ACK or P_NEG_ACK completes a request. */
  receiveAck(cmd: DrbdCommand, payload: Buffer): void {
    const a = decodeBlockAck(payload);
    const w = this.pending.get(a.blockId);
    if (!w) throw new DrbdProtocolError(`${commandName(cmd)} for unknown block_id ${a.blockId}`);
    this.pending.delete(a.blockId);
    const ok = cmd !== DrbdCommand.NegAck;
    this.completed(w.offset, w.bytes, ok);
    w.resolve(ok);
  }

  /** got_BarrierAck: the epoch's requests are on the peer's stable storage (tl_release). */
  receiveBarrierAck(payload: Buffer): void {
    const { barrier } = decodeBarrierAck(payload);
    this.link.stats.barrierAcks++;
    this.transferLog.release(barrier);
  }

  /** The connection went: no more idle-epoch barriers. */
  stop(): void {
    clearTimeout(this.idleEpochTimer);
    this.idleEpochTimer = undefined;
  }

  /** Writes the peer will never confirm: the device marks them out of sync. */
  failPending(): void {
    for (const w of this.pending.values()) w.resolve(false);
    this.pending.clear();
  }

  /**
   * tl_clear on a lost connection: requests of unconfirmed epochs may be missing on the peer (protocol A
   * and B complete earlier); their blocks go out of sync, so the next handshake resyncs them.
   */
  markUnconfirmed(): void {
    const link = this.link;
    const ranges = this.transferLog.clear();
    const dev = link.device;
    if (ranges.length === 0 || dev.disk === "Diskless") return;
    let marked = 0;
    for (const [offset, bytes] of ranges) marked += dev.markOutOfSync(offset, bytes);
    link.stats.unconfirmedMarked += ranges.length;
    link.log.info(
      { requests: ranges.length, bits: marked },
      "connection lost: unconfirmed requests out of sync",
    );
    if (marked > 0)
      dev
        .noteDivergence()
        .then(() => dev.persistBitmap())
        .catch((e: Error) => link.log.error({ err: e.message }, "recording the unconfirmed writes failed"));
  }
}

/** True when every part mirrored. */
async function allOk(parts: Promise<boolean>[]): Promise<boolean> {
  return (await Promise.all(parts)).every((ok) => ok);
}

/** The buffers (views, no copies) covering `len` bytes from byte `off` of an I/O vector. */
function sliceIov(iov: readonly Buffer[], off: number, len: number): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  for (const b of iov) {
    const from = Math.max(off - pos, 0);
    const to = Math.min(off + len - pos, b.length);
    if (from < to) out.push(b.subarray(from, to));
    pos += b.length;
    if (pos >= off + len) break;
  }
  return out;
}
