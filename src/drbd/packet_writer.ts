/**
 * The send side of one DRBD socket. The kernel's sender thread and asender each drain everything that is
 * ready before they send (drbd_sender / wait_for_work, drbd_asender's drbd_process_done_ee): many packets
 * leave in one send. The event-loop equivalent: every packet queued during one turn is gathered, and the list
 * leaves in one corked write — one writev(2) — once the turn's I/O callbacks have run (setImmediate). So the
 * P_DATA of all the writes an iSCSI read brought in go out together, and so do the P_WRITE_ACKs of all the
 * peer writes that completed in one turn. Payload buffers are passed through, not copied.
 *
 * Before replication starts (the handshake) packets leave at once: the handshake is a dialogue, and a
 * socket may be closed gently right after its last packet. The gather list is flushed early at
 * `GATHER_LIMIT` bytes so that a turn with many large writes does not hold them all back.
 */
import type { Socket } from "node:net";
import { DrbdProtocolError } from "./protocol.js";

/** Bytes gathered before a flush is forced within the turn (bounds the list, not the socket). */
export const GATHER_LIMIT = 256 * 1024;

/** Called once the packet is handed to the kernel (or with the error that kept it from the socket). */
export type SentCallback = (e?: Error | null) => void;

export class PacketWriter {
  /** Gather within the turn (replication); false: write each packet at once (handshake). */
  batching = false;
  private gather: Buffer[] = [];
  private gatherBytes = 0;
  private callbacks: SentCallback[] = [];
  private flushScheduled = false;
  private readonly flushNow = (): void => this.flush();

  constructor(private readonly socket: Socket) {}

  /** Queues one framed packet (header and payload parts); `sent` runs once it left (or failed). */
  queue(parts: readonly Buffer[], sent?: SentCallback): void {
    for (const p of parts) {
      this.gather.push(p);
      this.gatherBytes += p.length;
    }
    if (sent) this.callbacks.push(sent);
    if (!this.batching || this.gatherBytes >= GATHER_LIMIT) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushNow);
    }
  }

  /** Writes everything gathered in one corked write (one writev); each packet's callback runs after it. */
  flush(): void {
    this.flushScheduled = false;
    if (this.gather.length === 0) return;
    const bufs = this.gather;
    const callbacks = this.callbacks;
    this.gather = [];
    this.gatherBytes = 0;
    this.callbacks = [];
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) {
      const e = new DrbdProtocolError("not connected");
      for (const cb of callbacks) cb(e);
      return;
    }
    const done =
      callbacks.length === 0
        ? undefined
        : callbacks.length === 1
          ? callbacks[0]
          : (e?: Error | null) => {
              for (const cb of callbacks) cb(e);
            };
    const last = bufs.length - 1;
    socket.cork();
    for (let i = 0; i < last; i++) socket.write(bufs[i]);
    socket.write(bufs[last], done);
    socket.uncork();
  }
}
