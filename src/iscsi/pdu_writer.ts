/**
 * Sending PDUs on one connection's socket: each PDU is serialized and written at once (corked, so
 * its header and data leave together). Data buffers go to the socket as they are (no copy); the
 * writer tells the caller when the socket asks it to wait ('drain'), so bulk senders (Data-In)
 * respect back-pressure.
 */
import type { Socket } from "node:net";
import type { AnyPdu } from "./pdu.js";
import { serializePdu } from "./pdu_serializer.js";

export class PduWriter {
  headerDigest = false;
  dataDigest = false;
  private waiters: (() => void)[] = [];
  private isBlocked = false;

  /** `onFull` runs when a write leaves the socket's send buffer full. */
  constructor(
    private readonly socket: Socket,
    private readonly onFull: () => void = () => undefined,
  ) {
    socket.on("drain", () => this.release());
    socket.on("close", () => this.release());
  }

  /** Queue a PDU on the socket. Returns false when the socket's buffer is full (see drained()). */
  send(pdu: AnyPdu): boolean {
    if (this.socket.destroyed) return false;
    const bufs = serializePdu(pdu, this.headerDigest, this.dataDigest);
    let ok = true;
    if (bufs.length === 1) {
      ok = this.socket.write(bufs[0]);
    } else {
      this.socket.cork();
      for (const b of bufs) ok = this.socket.write(b);
      this.socket.uncork();
    }
    if (!ok && !this.isBlocked) {
      this.isBlocked = true;
      this.onFull();
    }
    return ok;
  }

  /** Nothing is held back: each PDU is written when sent. */
  flush(): void {}

  /** True while the socket asks us to wait. */
  get blocked(): boolean {
    return this.isBlocked && !this.socket.destroyed;
  }

  /** Resolves once the socket has room again (immediately when it has). */
  drained(): Promise<void> {
    if (!this.isBlocked || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private release(): void {
    this.isBlocked = false;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
