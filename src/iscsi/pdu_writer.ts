/**
 * PDU emission (RFC 7143 §11.2): BHS, AHS, header digest, data segment, padding, data digest.
 * Data buffers go to the socket as they are (no copy); the writer tells the caller when the socket
 * asks it to wait ('drain'), so bulk senders (Data-In) respect back-pressure.
 */
import type { Socket } from "node:net";
import { crc32c } from "@node-rs/crc32";
import { Pdu, pad4 } from "./pdu.js";

const PAD = Buffer.alloc(4);

/** Encode one PDU into the buffers to write, in order. Exported for tests and the raw initiator. */
export function encodePdu(
  pdu: Pdu,
  headerDigest: boolean,
  dataDigest: boolean,
  parts?: readonly Buffer[],
): Buffer[] {
  const data = parts ?? pdu.dataParts;
  let dsl = 0;
  for (const p of data) dsl += p.length;
  pdu.bhs[4] = pdu.ahs.length / 4;
  pdu.bhs.writeUIntBE(dsl, 5, 3);
  const out: Buffer[] = [];
  const header = pdu.ahs.length ? Buffer.concat([pdu.bhs, pdu.ahs]) : pdu.bhs;
  if (headerDigest) {
    const hd = Buffer.allocUnsafe(4);
    hd.writeUInt32LE(crc32c(header), 0);
    out.push(header, hd);
  } else {
    out.push(header);
  }
  if (dsl === 0) return out;
  out.push(...data);
  const pad = pad4(dsl);
  if (pad) out.push(PAD.subarray(0, pad));
  if (dataDigest) {
    let crc = 0;
    for (const p of data) crc = crc32c(p, crc);
    if (pad) crc = crc32c(PAD.subarray(0, pad), crc);
    const dd = Buffer.allocUnsafe(4);
    dd.writeUInt32LE(crc, 0);
    out.push(dd);
  }
  return out;
}

export class PduWriter {
  headerDigest = false;
  dataDigest = false;
  private waiters: (() => void)[] = [];
  private isBlocked = false;

  constructor(private readonly socket: Socket) {
    socket.on("drain", () => this.release());
    socket.on("close", () => this.release());
  }

  /** Queue a PDU on the socket. Returns false when the socket's buffer is full (see drained()). */
  send(pdu: Pdu, parts?: readonly Buffer[]): boolean {
    if (this.socket.destroyed) return false;
    const bufs = encodePdu(pdu, this.headerDigest, this.dataDigest, parts);
    let ok = true;
    if (bufs.length === 1) {
      ok = this.socket.write(bufs[0]);
    } else {
      this.socket.cork();
      for (const b of bufs) ok = this.socket.write(b);
      this.socket.uncork();
    }
    if (!ok) this.isBlocked = true;
    return ok;
  }

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
