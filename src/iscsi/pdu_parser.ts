/**
 * Incremental PDU framing (RFC 7143 §11.2): keeps the unconsumed tail of the byte stream and
 * frames every complete PDU. Header and data digests (CRC32C, RFC 7143 §12.1) are checked when
 * negotiated. The data segment is a slice of the received bytes, never a copy, unless a PDU
 * straddled several TCP reads (then the pieces are joined once).
 */
import { crc32c } from "@node-rs/crc32";
import { BHS_LENGTH, Pdu, pad4 } from "./pdu.js";

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
      const whole = this.take(total);
      const header = whole.subarray(0, headerLen);
      if (hdLen) {
        const got = whole.readUInt32LE(headerLen);
        const want = crc32c(header);
        if (got !== want) {
          throw new PduFramingError(
            `header digest mismatch: received 0x${got.toString(16)}, computed 0x${want.toString(16)}`,
            "header-digest",
          );
        }
      }
      const dataStart = headerLen + hdLen;
      const data = whole.subarray(dataStart, dataStart + dsl);
      const pdu = new Pdu(header.subarray(0, BHS_LENGTH), header.subarray(BHS_LENGTH), data);
      if (ddLen) {
        const padded = whole.subarray(dataStart, dataStart + dsl + pad4(dsl));
        const got = whole.readUInt32LE(dataStart + dsl + pad4(dsl));
        const want = crc32c(padded);
        if (got !== want) {
          throw new PduFramingError(
            `data digest mismatch: received 0x${got.toString(16)}, computed 0x${want.toString(16)}`,
            "data-digest",
            pdu,
          );
        }
      }
      out.push(pdu);
    }
    return out;
  }

  /** The first n buffered bytes, joining chunks only when the first one is too short. */
  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0].subarray(0, n);
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    let first = this.chunks[0];
    if (first.length < n) {
      // Join only what this PDU needs, keeping the remainder as its own slice.
      let have = 0;
      let i = 0;
      while (have < n) have += this.chunks[i++].length;
      const joined = Buffer.concat(this.chunks.slice(0, i));
      this.chunks.splice(0, i, joined);
      first = joined;
    }
    const result = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return result;
  }
}
