/**
 * Collecting a write command's data-out (RFC 7143 §4.2.5.1, §11.7, §11.8): immediate data in the
 * command PDU, unsolicited Data-Out up to FirstBurstLength when InitialR2T=No, then R2T-solicited
 * sequences of at most MaxBurstLength with at most MaxOutstandingR2T outstanding. Checks DataSN,
 * Buffer Offset and the F bit of every sequence; keeps the received slices, never copies them.
 */
import { RESERVED_TAG, dataLength, type DataOutPdu, type Parsed } from "./pdu.js";

/** A Data-Out that breaks the rules: the caller rejects it (RFC 7143 §11.17, protocol error). */
export class DataOutError extends Error {}

export interface R2TRequest {
  readonly ttt: number;
  readonly r2tSN: number;
  readonly offset: number;
  readonly length: number;
}

interface Sequence {
  offset: number;
  length: number;
  received: number;
  nextDataSN: number;
  r2tSN: number;
}

export interface DataOutLimits {
  readonly firstBurstLength: number;
  readonly maxBurstLength: number;
  readonly maxOutstandingR2T: number;
  readonly immediateData: boolean;
  readonly initialR2T: boolean;
}

export class DataOutCollector {
  private readonly pieces: { offset: number; buf: Buffer }[] = [];
  private received = 0;
  /** Unsolicited Data-Out still expected (the command's F bit was 0). */
  private unsolicitedOpen: boolean;
  private unsolicitedNextOffset: number;
  private unsolicitedNextDataSN = 0;
  private nextR2TOffset = 0;
  private nextR2TSN = 0;
  private readonly outstanding = new Map<number, Sequence>();

  constructor(
    readonly edtl: number,
    immediate: readonly Buffer[],
    commandFinal: boolean,
    private readonly limits: DataOutLimits,
    private readonly allocateTtt: () => number,
  ) {
    let immediateLength = 0;
    for (const b of immediate) immediateLength += b.length;
    if (immediateLength > 0) {
      if (!limits.immediateData) throw new DataOutError("immediate data sent although ImmediateData=No");
      if (immediateLength > edtl) {
        throw new DataOutError(`immediate data (${immediateLength}) exceeds EDTL ${edtl}`);
      }
      if (immediateLength > limits.firstBurstLength) {
        throw new DataOutError(
          `immediate data (${immediateLength}) exceeds FirstBurstLength ${limits.firstBurstLength}`,
        );
      }
      this.store(0, immediate);
    }
    this.unsolicitedNextOffset = immediateLength;
    this.unsolicitedOpen = !commandFinal && this.received < edtl;
    if (this.unsolicitedOpen && limits.initialR2T) {
      throw new DataOutError("command announces unsolicited Data-Out although InitialR2T=Yes");
    }
    this.nextR2TOffset = this.received;
  }

  /** R2Ts sent so far (ExpDataSN of a write's SCSI Response, RFC 7143 §11.4.8). */
  get r2tCount(): number {
    return this.nextR2TSN;
  }

  get complete(): boolean {
    return this.received >= this.edtl && !this.unsolicitedOpen && this.outstanding.size === 0;
  }

  /** The collected data in offset order (slices of the received PDUs). */
  buffers(): Buffer[] {
    this.pieces.sort((a, b) => a.offset - b.offset);
    return this.pieces.map((p) => p.buf);
  }

  /** R2Ts to send now: as many new sequences as MaxOutstandingR2T allows. */
  nextR2Ts(): R2TRequest[] {
    const out: R2TRequest[] = [];
    if (this.unsolicitedOpen) return out;
    while (this.outstanding.size < this.limits.maxOutstandingR2T && this.nextR2TOffset < this.edtl) {
      const length = Math.min(this.limits.maxBurstLength, this.edtl - this.nextR2TOffset);
      const seq: Sequence = {
        offset: this.nextR2TOffset,
        length,
        received: 0,
        nextDataSN: 0,
        r2tSN: this.nextR2TSN++,
      };
      const ttt = this.allocateTtt();
      this.outstanding.set(ttt, seq);
      this.nextR2TOffset += length;
      out.push({ ttt, r2tSN: seq.r2tSN, offset: seq.offset, length });
    }
    return out;
  }

  /** Accept one Data-Out PDU for this task. Throws DataOutError when it breaks the sequence rules. */
  accept(pdu: Parsed<DataOutPdu>): void {
    const ttt = pdu.ttt;
    const dataSN = pdu.dataSN;
    const offset = pdu.bufferOffset;
    const len = dataLength(pdu.data);
    const final = pdu.final;
    if (ttt === RESERVED_TAG) {
      if (!this.unsolicitedOpen) throw new DataOutError("unsolicited Data-Out not expected");
      if (dataSN !== this.unsolicitedNextDataSN) {
        throw new DataOutError(`unsolicited DataSN ${dataSN}, expected ${this.unsolicitedNextDataSN}`);
      }
      if (offset !== this.unsolicitedNextOffset) {
        throw new DataOutError(`unsolicited Buffer Offset ${offset}, expected ${this.unsolicitedNextOffset}`);
      }
      const limit = Math.min(this.limits.firstBurstLength, this.edtl);
      if (offset + len > limit) {
        throw new DataOutError(`unsolicited data to ${offset + len} exceeds FirstBurstLength/EDTL ${limit}`);
      }
      this.store(offset, pdu.data);
      this.unsolicitedNextDataSN++;
      this.unsolicitedNextOffset += len;
      if (final) {
        this.unsolicitedOpen = false;
        this.nextR2TOffset = this.unsolicitedNextOffset;
      } else if (this.unsolicitedNextOffset === limit) {
        throw new DataOutError("unsolicited burst complete without the F bit");
      }
      return;
    }
    const seq = this.outstanding.get(ttt);
    if (!seq) throw new DataOutError(`Data-Out with unknown Target Transfer Tag 0x${ttt.toString(16)}`);
    if (dataSN !== seq.nextDataSN) throw new DataOutError(`DataSN ${dataSN}, expected ${seq.nextDataSN}`);
    const expectOffset = seq.offset + seq.received;
    if (offset !== expectOffset) throw new DataOutError(`Buffer Offset ${offset}, expected ${expectOffset}`);
    if (seq.received + len > seq.length) {
      throw new DataOutError(`Data-Out runs past the R2T's Desired Data Transfer Length ${seq.length}`);
    }
    this.store(offset, pdu.data);
    seq.nextDataSN++;
    seq.received += len;
    if (seq.received === seq.length) {
      if (!final) throw new DataOutError("R2T sequence complete without the F bit");
      this.outstanding.delete(ttt);
    } else if (final) {
      throw new DataOutError(`F bit after ${seq.received} of ${seq.length} solicited bytes`);
    }
  }

  private store(offset: number, parts: readonly Buffer[]): void {
    for (const buf of parts) {
      if (buf.length === 0) continue;
      this.pieces.push({ offset, buf });
      this.received += buf.length;
      offset += buf.length;
    }
  }
}
