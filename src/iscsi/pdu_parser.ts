/**
 * Incremental PDU framing (RFC 7143 §11.2): keeps the unconsumed tail of the byte stream and
 * frames every complete PDU. Header and data digests (CRC32C, RFC 7143 §12.1) are checked when
 * negotiated. The data segment is kept as slices of the received bytes, never copied: a PDU that
 * straddled TCP reads carries several slices (Pdu.dataParts).
 */
import { crc32c } from "@node-rs/crc32";
import { BHS_LENGTH, EMPTY, Pdu, pad4 } from "./pdu.js";

/** A framing error. `fatal` ones leave the stream unsynchronised: the connection must be dropped. */
export class PduFramingError extends Error {
  constructor(
    message: string,
    readonly kind: "header-digest" | "data-digest" | "too-long" | "bad-ahs",
    /** For data-digest errors: the PDU whose data was corrupt, so it can be rejected (§11.17). */
    readonly pdu?: Pdu,
  ) {
    super(message);
  }
  get fatal(): boolean {
    return this.kind !== "data-digest";
  }
}

/** Largest data segment the 24-bit field can describe; used before MaxRecvDataSegmentLength is known. */
export const MAX_DATA_SEGMENT = 0xffffff;

export class PduParser {
  headerDigest = false;
  dataDigest = false;
  /** What this side declared it accepts (MaxRecvDataSegmentLength); longer data segments are refused. */
  maxDataSegmentLength: number;

  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(maxDataSegmentLength: number) {
    this.maxDataSegmentLength = maxDataSegmentLength;
  }

  /** Bytes held for an incomplete PDU. */
  get pending(): number {
    return this.buffered;
  }

  /**
   * Feed bytes; returns the PDUs now complete, in order. Throws PduFramingError. A data-digest error
   * still consumes the PDU (framing stays intact) so the caller may Reject it and go on, by calling
   * push(EMPTY) again to frame what follows.
   */
  push(chunk: Buffer): Pdu[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: Pdu[] = [];
    while (this.buffered >= BHS_LENGTH) {
      const head = this.peek(BHS_LENGTH);
      const ahsLen = head[4] * 4;
      const dsl = head.readUIntBE(5, 3);
      if (dsl > this.maxDataSegmentLength) {
        throw new PduFramingError(
          `data segment of ${dsl} bytes exceeds MaxRecvDataSegmentLength ${this.maxDataSegmentLength} (opcode 0x${(head[0] & 0x3f).toString(16)})`,
          "too-long",
        );
      }
      const hdLen = this.headerDigest ? 4 : 0;
      const ddLen = this.dataDigest && dsl > 0 ? 4 : 0;
      const headerLen = BHS_LENGTH + ahsLen;
      const total = headerLen + hdLen + dsl + pad4(dsl) + ddLen;
      if (this.buffered < total) break;
      const header = this.takeContiguous(headerLen);
      if (hdLen) {
        const got = this.takeContiguous(4).readUInt32LE(0);
        const want = crc32c(header);
        if (got !== want) {
          throw new PduFramingError(
            `header digest mismatch: received 0x${got.toString(16)}, computed 0x${want.toString(16)}`,
            "header-digest",
          );
        }
      }
      const data = this.takeParts(dsl);
      const tail = this.takeContiguous(pad4(dsl) + ddLen);
      const pdu = new Pdu(header.subarray(0, BHS_LENGTH), header.subarray(BHS_LENGTH), data);
      if (ddLen) {
        let crc = 0;
        for (const part of data) crc = crc32c(part, crc);
        crc = crc32c(tail.subarray(0, pad4(dsl)), crc);
        const got = tail.readUInt32LE(pad4(dsl));
        if (got !== crc) {
          throw new PduFramingError(
            `data digest mismatch: received 0x${got.toString(16)}, computed 0x${crc.toString(16)}`,
            "data-digest",
            pdu,
          );
        }
      }
      out.push(pdu);
    }
    return out;
  }

  /** The first n buffered bytes without consuming them; copies only those n bytes if split. */
  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    const head = Buffer.allocUnsafe(n);
    let at = 0;
    for (const c of this.chunks) {
      at += c.copy(head, at, 0, Math.min(c.length, n - at));
      if (at === n) break;
    }
    return head;
  }

  /** The next n bytes as one buffer: a slice when they lie in one chunk (headers almost always). */
  private takeContiguous(n: number): Buffer {
    if (n === 0) return EMPTY;
    const parts = this.takeParts(n);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** The next n bytes as slices of the received chunks, never copied. */
  private takeParts(n: number): Buffer[] {
    const out: Buffer[] = [];
    this.buffered -= n;
    while (n > 0) {
      const first = this.chunks[0];
      if (first.length <= n) {
        out.push(first);
        this.chunks.shift();
        n -= first.length;
      } else {
        out.push(first.subarray(0, n));
        this.chunks[0] = first.subarray(n);
        n = 0;
      }
    }
    return out;
  }
}
