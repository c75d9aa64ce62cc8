/**
 * The one iSCSI PDU parser (RFC 7143 §11): keeps the unconsumed tail of the byte stream, frames
 * every complete PDU in a loop (BHS, AHS, header digest, data segment, padding, data digest —
 * CRC32C, RFC 7143 §12.1, little-endian on the wire), refuses a data segment longer than the
 * MaxRecvDataSegmentLength this side declared, and decodes each PDU into its typed message with
 * one small method per opcode. The data segment stays slices of the received bytes, never copied:
 * a PDU that straddled TCP reads carries several slices.
 */
import { crc32c } from "@node-rs/crc32";
import {
  BHS_LENGTH,
  EMPTY,
  Opcode,
  joinData,
  pad4,
  type AsyncMessagePdu,
  type DataInPdu,
  type DataOutPdu,
  type LoginRequestPdu,
  type LoginResponsePdu,
  type LogoutRequestPdu,
  type LogoutResponsePdu,
  type NopInPdu,
  type NopOutPdu,
  type Parsed,
  type ParsedPdu,
  type R2TPdu,
  type RejectPdu,
  type ScsiCommandPdu,
  type ScsiResponsePdu,
  type SnackRequestPdu,
  type TaskAttributeCode,
  type TaskMgmtRequestPdu,
  type TaskMgmtResponsePdu,
  type TextRequestPdu,
  type TextResponsePdu,
  type UnknownPdu,
} from "./pdu.js";
import { shiftSlices } from "../util/chunk_slices.js";

/** A framing error. `fatal` ones leave the stream unsynchronised: the connection must be dropped. */
export class PduFramingError extends Error {
  constructor(
    message: string,
    readonly kind: "header-digest" | "data-digest" | "too-long" | "bad-ahs",
    /** For data-digest errors: the PDU whose data was corrupt, so it can be rejected (§11.17). */
    readonly pdu?: ParsedPdu,
  ) {
    super(message);
  }
  get fatal(): boolean {
    return this.kind !== "data-digest";
  }
}

/** Largest data segment the 24-bit field can describe; used before MaxRecvDataSegmentLength is known. */
export const MAX_DATA_SEGMENT = 0xffffff;
/** The longest CDB accepted via the Extended CDB AHS (RFC 7143 §11.2.2.3). */
const MAX_CDB = 260;
/** RFC 7143 §11.2.2.3: AHSType 1 is the Extended CDB. */
const AHS_EXTENDED_CDB = 1;

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
  push(chunk: Buffer): ParsedPdu[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const out: ParsedPdu[] = [];
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
      const pdu = decodePdu(header.subarray(0, BHS_LENGTH), header.subarray(BHS_LENGTH), data);
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
    this.buffered -= n;
    return shiftSlices(this.chunks, n);
  }
}

/** Decode one framed PDU: its 48-byte BHS, its AHS and its data segment (RFC 7143 §11). */
export function decodePdu(bhs: Buffer, ahs: Buffer, data: readonly Buffer[]): ParsedPdu {
  switch ((bhs[0] & 0x3f) as Opcode) {
    case Opcode.NopOut:
      return parseNopOut(bhs, data);
    case Opcode.ScsiCommand:
      return parseScsiCommand(bhs, ahs, data);
    case Opcode.TaskMgmtRequest:
      return parseTaskMgmtRequest(bhs, data);
    case Opcode.LoginRequest:
      return parseLoginRequest(bhs, data);
    case Opcode.TextRequest:
      return parseTextRequest(bhs, data);
    case Opcode.DataOut:
      return parseDataOut(bhs, data);
    case Opcode.LogoutRequest:
      return parseLogoutRequest(bhs, data);
    case Opcode.SnackRequest:
      return parseSnackRequest(bhs, data);
    case Opcode.NopIn:
      return parseNopIn(bhs, data);
    case Opcode.ScsiResponse:
      return parseScsiResponse(bhs, data);
    case Opcode.TaskMgmtResponse:
      return parseTaskMgmtResponse(bhs, data);
    case Opcode.LoginResponse:
      return parseLoginResponse(bhs, data);
    case Opcode.TextResponse:
      return parseTextResponse(bhs, data);
    case Opcode.DataIn:
      return parseDataIn(bhs, data);
    case Opcode.LogoutResponse:
      return parseLogoutResponse(bhs, data);
    case Opcode.R2T:
      return parseR2T(bhs, data);
    case Opcode.AsyncMessage:
      return parseAsyncMessage(bhs, data);
    case Opcode.Reject:
      return parseReject(bhs, data);
    default:
      return parseUnknown(bhs, data);
  }
}

// Offsets below are those of RFC 7143 §11.2.1 (the BHS layout) and of each opcode's section.

function immediate(b: Buffer): boolean {
  return (b[0] & 0x40) !== 0;
}
function u32(b: Buffer, at: number): number {
  return b.readUInt32BE(at);
}
function u16(b: Buffer, at: number): number {
  return b.readUInt16BE(at);
}
/** Bytes 8..15: the LUN (RFC 7143 §11.2.1.7), a slice of the received header. */
function lun(b: Buffer): Buffer {
  return b.subarray(8, 16);
}

/** RFC 7143 §11.3. */
function parseScsiCommand(b: Buffer, ahs: Buffer, data: readonly Buffer[]): Parsed<ScsiCommandPdu> {
  let cdb = b.subarray(32, 48);
  // RFC 7143 §11.2.2: AHSLength counts the bytes after the AHSType and reserved byte.
  for (let off = 0; off + 4 <= ahs.length;) {
    const len = ahs.readUInt16BE(off);
    if (ahs[off + 2] === AHS_EXTENDED_CDB && len > 1) {
      const ext = ahs.subarray(off + 4, off + 3 + len);
      if (16 + ext.length > MAX_CDB) break;
      cdb = Buffer.concat([cdb, ext]);
    }
    off += 4 + ((len - 1 + 3) & ~3);
  }
  return {
    opcode: Opcode.ScsiCommand,
    immediate: immediate(b),
    final: (b[1] & 0x80) !== 0,
    read: (b[1] & 0x40) !== 0,
    write: (b[1] & 0x20) !== 0,
    attribute: (b[1] & 0x07) as TaskAttributeCode,
    lun: lun(b),
    itt: u32(b, 16),
    expectedDataTransferLength: u32(b, 20),
    cmdSN: u32(b, 24),
    expStatSN: u32(b, 28),
    cdb,
    data,
    header: b,
  };
}

/** RFC 7143 §11.4. */
function parseScsiResponse(b: Buffer, data: readonly Buffer[]): Parsed<ScsiResponsePdu> {
  return {
    opcode: Opcode.ScsiResponse,
    immediate: false,
    bidiReadResidualOverflow: (b[1] & 0x10) !== 0,
    bidiReadResidualUnderflow: (b[1] & 0x08) !== 0,
    residualOverflow: (b[1] & 0x04) !== 0,
    residualUnderflow: (b[1] & 0x02) !== 0,
    response: b[2],
    status: b[3],
    itt: u32(b, 16),
    snackTag: u32(b, 20),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    expDataSN: u32(b, 36),
    bidiReadResidualCount: u32(b, 40),
    residualCount: u32(b, 44),
    senseData: senseData(data),
    data,
    header: b,
  };
}

/** RFC 7143 §11.4.7.2: SenseLength, then that many bytes of sense data (truncated to what came). */
function senseData(data: readonly Buffer[]): Buffer {
  const segment = joinData(data);
  if (segment.length < 2) return EMPTY;
  return segment.subarray(2, 2 + segment.readUInt16BE(0));
}

/** RFC 7143 §11.5. */
function parseTaskMgmtRequest(b: Buffer, data: readonly Buffer[]): Parsed<TaskMgmtRequestPdu> {
  return {
    opcode: Opcode.TaskMgmtRequest,
    immediate: immediate(b),
    function: b[1] & 0x7f,
    lun: lun(b),
    itt: u32(b, 16),
    referencedTaskTag: u32(b, 20),
    cmdSN: u32(b, 24),
    expStatSN: u32(b, 28),
    refCmdSN: u32(b, 32),
    expDataSN: u32(b, 36),
    data,
    header: b,
  };
}

/** RFC 7143 §11.6. */
function parseTaskMgmtResponse(b: Buffer, data: readonly Buffer[]): Parsed<TaskMgmtResponsePdu> {
  return {
    opcode: Opcode.TaskMgmtResponse,
    immediate: false,
    response: b[2],
    itt: u32(b, 16),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    data,
    header: b,
  };
}

/** RFC 7143 §11.7.1 (Data-Out). */
function parseDataOut(b: Buffer, data: readonly Buffer[]): Parsed<DataOutPdu> {
  return {
    opcode: Opcode.DataOut,
    immediate: immediate(b),
    final: (b[1] & 0x80) !== 0,
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    expStatSN: u32(b, 28),
    dataSN: u32(b, 36),
    bufferOffset: u32(b, 40),
    data,
    header: b,
  };
}

/** RFC 7143 §11.7.1 (Data-In). */
function parseDataIn(b: Buffer, data: readonly Buffer[]): Parsed<DataInPdu> {
  return {
    opcode: Opcode.DataIn,
    immediate: false,
    final: (b[1] & 0x80) !== 0,
    acknowledge: (b[1] & 0x40) !== 0,
    residualOverflow: (b[1] & 0x04) !== 0,
    residualUnderflow: (b[1] & 0x02) !== 0,
    statusPresent: (b[1] & 0x01) !== 0,
    status: b[3],
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    dataSN: u32(b, 36),
    bufferOffset: u32(b, 40),
    residualCount: u32(b, 44),
    data,
    header: b,
  };
}

/** RFC 7143 §11.8. */
function parseR2T(b: Buffer, data: readonly Buffer[]): Parsed<R2TPdu> {
  return {
    opcode: Opcode.R2T,
    immediate: false,
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    r2tSN: u32(b, 36),
    bufferOffset: u32(b, 40),
    desiredDataTransferLength: u32(b, 44),
    data,
    header: b,
  };
}

/** RFC 7143 §11.9. */
function parseAsyncMessage(b: Buffer, data: readonly Buffer[]): Parsed<AsyncMessagePdu> {
  return {
    opcode: Opcode.AsyncMessage,
    immediate: false,
    lun: lun(b),
    itt: u32(b, 16),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    asyncEvent: b[36],
    asyncVCode: b[37],
    parameter1: u16(b, 38),
    parameter2: u16(b, 40),
    parameter3: u16(b, 42),
    data,
    header: b,
  };
}

/** RFC 7143 §11.10. */
function parseTextRequest(b: Buffer, data: readonly Buffer[]): Parsed<TextRequestPdu> {
  return {
    opcode: Opcode.TextRequest,
    immediate: immediate(b),
    final: (b[1] & 0x80) !== 0,
    continue: (b[1] & 0x40) !== 0,
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    cmdSN: u32(b, 24),
    expStatSN: u32(b, 28),
    data,
    header: b,
  };
}

/** RFC 7143 §11.11. */
function parseTextResponse(b: Buffer, data: readonly Buffer[]): Parsed<TextResponsePdu> {
  return {
    opcode: Opcode.TextResponse,
    immediate: false,
    final: (b[1] & 0x80) !== 0,
    continue: (b[1] & 0x40) !== 0,
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    data,
    header: b,
  };
}

/** RFC 7143 §11.12. */
function parseLoginRequest(b: Buffer, data: readonly Buffer[]): Parsed<LoginRequestPdu> {
  return {
    opcode: Opcode.LoginRequest,
    immediate: immediate(b),
    transit: (b[1] & 0x80) !== 0,
    continue: (b[1] & 0x40) !== 0,
    currentStage: (b[1] >> 2) & 3,
    nextStage: b[1] & 3,
    versionMax: b[2],
    versionMin: b[3],
    isid: b.subarray(8, 14),
    tsih: u16(b, 14),
    itt: u32(b, 16),
    cid: u16(b, 20),
    cmdSN: u32(b, 24),
    expStatSN: u32(b, 28),
    data,
    header: b,
  };
}

/** RFC 7143 §11.13. */
function parseLoginResponse(b: Buffer, data: readonly Buffer[]): Parsed<LoginResponsePdu> {
  return {
    opcode: Opcode.LoginResponse,
    immediate: false,
    transit: (b[1] & 0x80) !== 0,
    continue: (b[1] & 0x40) !== 0,
    currentStage: (b[1] >> 2) & 3,
    nextStage: b[1] & 3,
    versionMax: b[2],
    versionActive: b[3],
    isid: b.subarray(8, 14),
    tsih: u16(b, 14),
    itt: u32(b, 16),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    statusClass: b[36],
    statusDetail: b[37],
    data,
    header: b,
  };
}

/** RFC 7143 §11.14. */
function parseLogoutRequest(b: Buffer, data: readonly Buffer[]): Parsed<LogoutRequestPdu> {
  return {
    opcode: Opcode.LogoutRequest,
    immediate: immediate(b),
    reasonCode: b[1] & 0x7f,
    itt: u32(b, 16),
    cid: u16(b, 20),
    cmdSN: u32(b, 24),
    expStatSN: u32(b, 28),
    data,
    header: b,
  };
}

/** RFC 7143 §11.15. */
function parseLogoutResponse(b: Buffer, data: readonly Buffer[]): Parsed<LogoutResponsePdu> {
  return {
    opcode: Opcode.LogoutResponse,
    immediate: false,
    response: b[2],
    itt: u32(b, 16),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    time2Wait: u16(b, 40),
    time2Retain: u16(b, 42),
    data,
    header: b,
  };
}

/** RFC 7143 §11.16. */
function parseSnackRequest(b: Buffer, data: readonly Buffer[]): Parsed<SnackRequestPdu> {
  return {
    opcode: Opcode.SnackRequest,
    immediate: immediate(b),
    type: b[1] & 0x0f,
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    expStatSN: u32(b, 28),
    begRun: u32(b, 40),
    runLength: u32(b, 44),
    data,
    header: b,
  };
}

/** RFC 7143 §11.17. */
function parseReject(b: Buffer, data: readonly Buffer[]): Parsed<RejectPdu> {
  return {
    opcode: Opcode.Reject,
    immediate: false,
    reason: b[2],
    itt: u32(b, 16),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    dataSN: u32(b, 36),
    data,
    header: b,
  };
}

/** RFC 7143 §11.18. */
function parseNopOut(b: Buffer, data: readonly Buffer[]): Parsed<NopOutPdu> {
  return {
    opcode: Opcode.NopOut,
    immediate: immediate(b),
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    cmdSN: u32(b, 24),
    expStatSN: u32(b, 28),
    data,
    header: b,
  };
}

/** RFC 7143 §11.19. */
function parseNopIn(b: Buffer, data: readonly Buffer[]): Parsed<NopInPdu> {
  return {
    opcode: Opcode.NopIn,
    immediate: false,
    lun: lun(b),
    itt: u32(b, 16),
    ttt: u32(b, 20),
    statSN: u32(b, 24),
    expCmdSN: u32(b, 28),
    maxCmdSN: u32(b, 32),
    data,
    header: b,
  };
}

function parseUnknown(b: Buffer, data: readonly Buffer[]): Required<UnknownPdu> {
  return {
    opcode: "unknown",
    rawOpcode: b[0] & 0x3f,
    immediate: immediate(b),
    itt: u32(b, 16),
    data,
    header: b,
  };
}
