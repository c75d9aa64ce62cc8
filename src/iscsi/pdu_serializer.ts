/**
 * The one iSCSI PDU serializer (RFC 7143 §11): a typed message becomes the list of buffers to send
 * — BHS, header digest, the data segment's own buffers (never copied), padding, data digest
 * (CRC32C, RFC 7143 §12.1, little-endian on the wire). One small method per opcode fills the BHS;
 * fields left out are zero.
 */
import { crc32c } from "@node-rs/crc32";
import {
  BHS_LENGTH,
  LUN_ZERO,
  Opcode,
  RESERVED_TAG,
  pad4,
  type AnyPdu,
  type AsyncMessagePdu,
  type DataInPdu,
  type DataOutPdu,
  type LoginRequestPdu,
  type LoginResponsePdu,
  type LogoutRequestPdu,
  type LogoutResponsePdu,
  type NopInPdu,
  type NopOutPdu,
  type R2TPdu,
  type RejectPdu,
  type ScsiCommandPdu,
  type ScsiResponsePdu,
  type SnackRequestPdu,
  type TaskMgmtRequestPdu,
  type TaskMgmtResponsePdu,
  type TextRequestPdu,
  type TextResponsePdu,
  type UnknownPdu,
} from "./pdu.js";

const PAD = Buffer.alloc(4);

/**
 * The buffers that put `pdu` on the wire, in order. `out` (when given) is appended to, so a
 * connection gathers every PDU of one event-loop turn into one list for one writev.
 */
export function serializePdu(
  pdu: AnyPdu | UnknownPdu,
  headerDigest: boolean,
  dataDigest: boolean,
  out: Buffer[] = [],
): Buffer[] {
  const data =
    pdu.opcode === Opcode.ScsiResponse && pdu.senseData ? senseSegment(pdu.senseData) : (pdu.data ?? []);
  let dsl = 0;
  for (const p of data) dsl += p.length;
  const bhs = encodeBhs(pdu);
  // Byte 4 TotalAHSLength stays 0: this side sends no AHS. Bytes 5..7 DataSegmentLength.
  bhs.writeUIntBE(dsl, 5, 3);
  out.push(bhs);
  if (headerDigest) {
    const hd = Buffer.allocUnsafe(4);
    hd.writeUInt32LE(crc32c(bhs), 0);
    out.push(hd);
  }
  if (dsl === 0) return out;
  for (const p of data) if (p.length) out.push(p);
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

/** RFC 7143 §11.4.7.2: SenseLength (2 bytes), then the sense data itself (not copied). */
function senseSegment(sense: Buffer): Buffer[] {
  if (sense.length === 0) return [];
  const length = Buffer.allocUnsafe(2);
  length.writeUInt16BE(sense.length, 0);
  return [length, sense];
}

/** The bytes of `pdu` as one buffer (tests, and callers that need a copy anyway). */
export function serializePduToBuffer(
  pdu: AnyPdu | UnknownPdu,
  headerDigest = false,
  dataDigest = false,
): Buffer {
  return Buffer.concat(serializePdu(pdu, headerDigest, dataDigest));
}

function encodeBhs(pdu: AnyPdu | UnknownPdu): Buffer {
  const b = Buffer.allocUnsafe(BHS_LENGTH).fill(0);
  if (pdu.opcode === "unknown") b[0] = pdu.rawOpcode & 0x3f;
  else {
    b[0] = pdu.opcode;
    encodeFields(b, pdu);
  }
  if (pdu.immediate) b[0] |= 0x40;
  b.writeUInt32BE(pdu.itt >>> 0, 16);
  return b;
}

function encodeFields(b: Buffer, pdu: AnyPdu): void {
  switch (pdu.opcode) {
    case Opcode.NopOut:
      return encodeNopOut(b, pdu);
    case Opcode.ScsiCommand:
      return encodeScsiCommand(b, pdu);
    case Opcode.TaskMgmtRequest:
      return encodeTaskMgmtRequest(b, pdu);
    case Opcode.LoginRequest:
      return encodeLoginRequest(b, pdu);
    case Opcode.TextRequest:
      return encodeTextRequest(b, pdu);
    case Opcode.DataOut:
      return encodeDataOut(b, pdu);
    case Opcode.LogoutRequest:
      return encodeLogoutRequest(b, pdu);
    case Opcode.SnackRequest:
      return encodeSnackRequest(b, pdu);
    case Opcode.NopIn:
      return encodeNopIn(b, pdu);
    case Opcode.ScsiResponse:
      return encodeScsiResponse(b, pdu);
    case Opcode.TaskMgmtResponse:
      return encodeTaskMgmtResponse(b, pdu);
    case Opcode.LoginResponse:
      return encodeLoginResponse(b, pdu);
    case Opcode.TextResponse:
      return encodeTextResponse(b, pdu);
    case Opcode.DataIn:
      return encodeDataIn(b, pdu);
    case Opcode.LogoutResponse:
      return encodeLogoutResponse(b, pdu);
    case Opcode.R2T:
      return encodeR2T(b, pdu);
    case Opcode.AsyncMessage:
      return encodeAsyncMessage(b, pdu);
    case Opcode.Reject:
      return encodeReject(b, pdu);
  }
}

// Offsets below are those of RFC 7143 §11.2.1 (the BHS layout) and of each opcode's section.

function u32(b: Buffer, at: number, v: number | undefined): void {
  if (v) b.writeUInt32BE(v >>> 0, at);
}
function u16(b: Buffer, at: number, v: number | undefined): void {
  if (v) b.writeUInt16BE(v & 0xffff, at);
}
function lun(b: Buffer, v: Buffer | undefined): void {
  (v ?? LUN_ZERO).copy(b, 8, 0, 8);
}
/** StatSN, ExpCmdSN, MaxCmdSN at bytes 24..35 of every target PDU. */
function targetNumbers(b: Buffer, p: { statSN?: number; expCmdSN?: number; maxCmdSN?: number }): void {
  u32(b, 24, p.statSN);
  u32(b, 28, p.expCmdSN);
  u32(b, 32, p.maxCmdSN);
}

/** RFC 7143 §11.3. */
function encodeScsiCommand(b: Buffer, p: ScsiCommandPdu): void {
  b[1] = (p.final ? 0x80 : 0) | (p.read ? 0x40 : 0) | (p.write ? 0x20 : 0) | ((p.attribute ?? 0) & 0x07);
  lun(b, p.lun);
  u32(b, 20, p.expectedDataTransferLength);
  u32(b, 24, p.cmdSN);
  u32(b, 28, p.expStatSN);
  p.cdb.copy(b, 32, 0, Math.min(16, p.cdb.length));
}

/** RFC 7143 §11.4. */
function encodeScsiResponse(b: Buffer, p: ScsiResponsePdu): void {
  b[1] =
    0x80 |
    (p.bidiReadResidualOverflow ? 0x10 : 0) |
    (p.bidiReadResidualUnderflow ? 0x08 : 0) |
    (p.residualOverflow ? 0x04 : 0) |
    (p.residualUnderflow ? 0x02 : 0);
  b[2] = p.response ?? 0;
  b[3] = p.status ?? 0;
  u32(b, 20, p.snackTag);
  targetNumbers(b, p);
  u32(b, 36, p.expDataSN);
  u32(b, 40, p.bidiReadResidualCount);
  u32(b, 44, p.residualCount);
}

/** RFC 7143 §11.5. */
function encodeTaskMgmtRequest(b: Buffer, p: TaskMgmtRequestPdu): void {
  b[1] = 0x80 | (p.function & 0x7f);
  lun(b, p.lun);
  u32(b, 20, p.referencedTaskTag ?? RESERVED_TAG);
  u32(b, 24, p.cmdSN);
  u32(b, 28, p.expStatSN);
  u32(b, 32, p.refCmdSN);
  u32(b, 36, p.expDataSN);
}

/** RFC 7143 §11.6. */
function encodeTaskMgmtResponse(b: Buffer, p: TaskMgmtResponsePdu): void {
  b[1] = 0x80;
  b[2] = p.response;
  targetNumbers(b, p);
}

/** RFC 7143 §11.7.1 (Data-Out). */
function encodeDataOut(b: Buffer, p: DataOutPdu): void {
  b[1] = p.final ? 0x80 : 0;
  lun(b, p.lun);
  u32(b, 20, p.ttt);
  u32(b, 28, p.expStatSN);
  u32(b, 36, p.dataSN);
  u32(b, 40, p.bufferOffset);
}

/** RFC 7143 §11.7.1 (Data-In). */
function encodeDataIn(b: Buffer, p: DataInPdu): void {
  b[1] =
    (p.final ? 0x80 : 0) |
    (p.acknowledge ? 0x40 : 0) |
    (p.residualOverflow ? 0x04 : 0) |
    (p.residualUnderflow ? 0x02 : 0) |
    (p.statusPresent ? 0x01 : 0);
  b[3] = p.status ?? 0;
  lun(b, p.lun);
  u32(b, 20, p.ttt ?? RESERVED_TAG);
  targetNumbers(b, p);
  u32(b, 36, p.dataSN);
  u32(b, 40, p.bufferOffset);
  u32(b, 44, p.residualCount);
}

/** RFC 7143 §11.8. */
function encodeR2T(b: Buffer, p: R2TPdu): void {
  b[1] = 0x80;
  lun(b, p.lun);
  u32(b, 20, p.ttt);
  targetNumbers(b, p);
  u32(b, 36, p.r2tSN);
  u32(b, 40, p.bufferOffset);
  u32(b, 44, p.desiredDataTransferLength);
}

/** RFC 7143 §11.9. */
function encodeAsyncMessage(b: Buffer, p: AsyncMessagePdu): void {
  b[1] = 0x80;
  lun(b, p.lun);
  targetNumbers(b, p);
  b[36] = p.asyncEvent;
  b[37] = p.asyncVCode ?? 0;
  u16(b, 38, p.parameter1);
  u16(b, 40, p.parameter2);
  u16(b, 42, p.parameter3);
}

/** RFC 7143 §11.10. */
function encodeTextRequest(b: Buffer, p: TextRequestPdu): void {
  b[1] = (p.final ? 0x80 : 0) | (p.continue ? 0x40 : 0);
  lun(b, p.lun);
  u32(b, 20, p.ttt ?? RESERVED_TAG);
  u32(b, 24, p.cmdSN);
  u32(b, 28, p.expStatSN);
}

/** RFC 7143 §11.11. */
function encodeTextResponse(b: Buffer, p: TextResponsePdu): void {
  b[1] = (p.final ? 0x80 : 0) | (p.continue ? 0x40 : 0);
  lun(b, p.lun);
  u32(b, 20, p.ttt ?? RESERVED_TAG);
  targetNumbers(b, p);
}

/** T, C, CSG, NSG of Login Request and Response (RFC 7143 §11.12.1–§11.12.3). */
function loginFlags(p: LoginRequestPdu | LoginResponsePdu): number {
  return (
    (p.transit ? 0x80 : 0) |
    (p.continue ? 0x40 : 0) |
    (((p.currentStage ?? 0) & 3) << 2) |
    ((p.nextStage ?? 0) & 3)
  );
}

/** RFC 7143 §11.12. */
function encodeLoginRequest(b: Buffer, p: LoginRequestPdu): void {
  b[1] = loginFlags(p);
  b[2] = p.versionMax ?? 0;
  b[3] = p.versionMin ?? 0;
  p.isid.copy(b, 8, 0, 6);
  u16(b, 14, p.tsih);
  u16(b, 20, p.cid);
  u32(b, 24, p.cmdSN);
  u32(b, 28, p.expStatSN);
}

/** RFC 7143 §11.13. */
function encodeLoginResponse(b: Buffer, p: LoginResponsePdu): void {
  b[1] = loginFlags(p);
  b[2] = p.versionMax ?? 0;
  b[3] = p.versionActive ?? 0;
  p.isid.copy(b, 8, 0, 6);
  u16(b, 14, p.tsih);
  targetNumbers(b, p);
  b[36] = p.statusClass ?? 0;
  b[37] = p.statusDetail ?? 0;
}

/** RFC 7143 §11.14. */
function encodeLogoutRequest(b: Buffer, p: LogoutRequestPdu): void {
  b[1] = 0x80 | (p.reasonCode & 0x7f);
  u16(b, 20, p.cid);
  u32(b, 24, p.cmdSN);
  u32(b, 28, p.expStatSN);
}

/** RFC 7143 §11.15. */
function encodeLogoutResponse(b: Buffer, p: LogoutResponsePdu): void {
  b[1] = 0x80;
  b[2] = p.response;
  targetNumbers(b, p);
  u16(b, 40, p.time2Wait);
  u16(b, 42, p.time2Retain);
}

/** RFC 7143 §11.16. */
function encodeSnackRequest(b: Buffer, p: SnackRequestPdu): void {
  b[1] = 0x80 | ((p.type ?? 0) & 0x0f);
  lun(b, p.lun);
  u32(b, 20, p.ttt ?? RESERVED_TAG);
  u32(b, 28, p.expStatSN);
  u32(b, 40, p.begRun);
  u32(b, 44, p.runLength);
}

/** RFC 7143 §11.17. */
function encodeReject(b: Buffer, p: RejectPdu): void {
  b[1] = 0x80;
  b[2] = p.reason;
  targetNumbers(b, p);
  u32(b, 36, p.dataSN);
}

/** RFC 7143 §11.18. */
function encodeNopOut(b: Buffer, p: NopOutPdu): void {
  b[1] = 0x80;
  lun(b, p.lun);
  u32(b, 20, p.ttt ?? RESERVED_TAG);
  u32(b, 24, p.cmdSN);
  u32(b, 28, p.expStatSN);
}

/** RFC 7143 §11.19. */
function encodeNopIn(b: Buffer, p: NopInPdu): void {
  b[1] = 0x80;
  lun(b, p.lun);
  u32(b, 20, p.ttt ?? RESERVED_TAG);
  targetNumbers(b, p);
}
