/**
 * Sending PDUs on one connection's socket. Every PDU that becomes ready during one event-loop turn
 * is serialized into one gather list, and the list leaves in one corked write — one writev(2) —
 * once the turn's I/O callbacks have run (setImmediate). Data buffers go to the socket as they are
 * (no copy). Back-pressure: the gather list is flushed early when it holds `GATHER_LIMIT` bytes, and
 * a socket whose send buffer is full makes `blocked` true until 'drain' — bulk senders (Data-In) wait
 * on `drained()`, and the connection stops reading requests after the read that found it blocked.
 *
 * A PDU whose data segment points into a pooled buffer names that buffer's holder: the holder is
 * told once the socket's write callback has fired for the flush that carried the PDU — the kernel
 * has copied the bytes by then and nothing reads the buffer again. A holder whose PDU never reached
 * the socket is not told (its buffer goes to the garbage collector, never back to a pool).
 */
import type { Socket } from "node:net";
import type { AnyPdu } from "./pdu.js";
import { serializePdu } from "./pdu_serializer.js";

/** Bytes gathered before a flush is forced within the turn (bounds the list, not the socket). */
export const GATHER_LIMIT = 256 * 1024;

/** Holds the buffer a PDU's data segment points into (a READ's pooled buffer). */
export interface DataInHolder {
  /** The socket has taken the bytes: the buffer may be reused. */
  releaseDataIn(): void;
}

function releaseAll(holders: readonly DataInHolder[]): void {
  for (const h of holders) h.releaseDataIn();
}

export class PduWriter {
  headerDigest = false;
  dataDigest = false;
  private gather: Buffer[] = [];
  private gatherBytes = 0;
  /** Holders of buffers in `gather`, told when the flush carrying them has been written. */
  private holders: DataInHolder[] = [];
  private flushScheduled = false;
  private socketFull = false;
  private waiters: (() => void)[] = [];
  private readonly flushNow = (): void => this.flush();

  constructor(private readonly socket: Socket) {
    socket.on("drain", () => this.release());
    socket.on("close", () => this.release());
  }

  /**
   * Queue a PDU for this turn's write. Returns false when the socket's buffer is full: a bulk
   * sender should then wait for drained(). `holder` (if any) is told once the PDU has been
   * written; give it with the last PDU that points into its buffer (writes complete in order).
   */
  send(pdu: AnyPdu, holder?: DataInHolder): boolean {
    if (this.socket.destroyed) return false;
    const from = this.gather.length;
    serializePdu(pdu, this.headerDigest, this.dataDigest, this.gather);
    if (holder) this.holders.push(holder);
    for (let i = from; i < this.gather.length; i++) this.gatherBytes += this.gather[i].length;
    if (this.gatherBytes >= GATHER_LIMIT) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushNow);
    }
    return !this.blocked;
  }

  /** Write everything gathered, in one corked write (one writev). */
  flush(): void {
    this.flushScheduled = false;
    if (this.gather.length === 0) return;
    const bufs = this.gather;
    this.gather = [];
    this.gatherBytes = 0;
    const holders = this.holders;
    if (holders.length) this.holders = [];
    // Not written: the holders are not told; what an earlier flush still writes may point into their buffers.
    if (this.socket.destroyed || !this.socket.writable) return;
    // The last buffer's callback fires once the whole corked writev has completed (or failed).
    const written = holders.length ? (): void => releaseAll(holders) : undefined;
    let ok = true;
    const last = bufs.length - 1;
    if (last === 0) ok = this.socket.write(bufs[0], written);
    else {
      this.socket.cork();
      for (let i = 0; i < last; i++) this.socket.write(bufs[i]);
      ok = this.socket.write(bufs[last], written);
      this.socket.uncork();
    }
    if (!ok) this.socketFull = true;
  }

  /** True while the socket asks us to wait. */
  get blocked(): boolean {
    return this.socketFull && !this.socket.destroyed;
  }

  /** Resolves once the socket has room again (immediately when it has); flushes what is gathered. */
  drained(): Promise<void> {
    this.flush();
    if (!this.socketFull || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private release(): void {
    this.socketFull = false;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
