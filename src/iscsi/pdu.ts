/**
 * The iSCSI PDU wire format (RFC 7143 §11) as typed messages: one interface per opcode, with the
 * fields named as the RFC names them. The parser (pdu_parser.ts) produces them from the byte
 * stream, the serializer (pdu_serializer.ts) turns them back into bytes; no other file knows
 * where a field sits in the 48-byte Basic Header Segment.
 *
 * Outgoing messages may leave out fields whose value is zero (or empty); what the parser returns
 * has every field (`Parsed<T>`). `data` is the data segment as a list of buffers so that bulk data
 * (Data-In from a read buffer, Data-Out into a write) travels as slices, never joined.
 */

export const BHS_LENGTH = 48;
/** RFC 7143 §11.2.1: ITT / TTT value meaning "none". */
export const RESERVED_TAG = 0xffffffff;

/** RFC 7143 §11.2.1.2 opcodes. */
export const enum Opcode {
  NopOut = 0x00,
  ScsiCommand = 0x01,
  TaskMgmtRequest = 0x02,
  LoginRequest = 0x03,
  TextRequest = 0x04,
  DataOut = 0x05,
  LogoutRequest = 0x06,
  SnackRequest = 0x10,
  NopIn = 0x20,
  ScsiResponse = 0x21,
  TaskMgmtResponse = 0x22,
  LoginResponse = 0x23,
  TextResponse = 0x24,
  DataIn = 0x25,
  LogoutResponse = 0x26,
  R2T = 0x31,
  AsyncMessage = 0x32,
  Reject = 0x3f,
}

/** RFC 7143 §11.17.1 Reject reasons. */
export const enum RejectReason {
  DataDigestError = 0x02,
  SnackReject = 0x03,
  ProtocolError = 0x04,
  CommandNotSupported = 0x05,
  ImmediateCommandReject = 0x06,
  TaskInProgress = 0x07,
  InvalidDataAck = 0x08,
  InvalidPduField = 0x09,
  LongOperationReject = 0x0a,
  NegotiationReset = 0x0b,
  WaitingForLogout = 0x0c,
}

/** RFC 7143 §11.3.1 task attributes (ATTR field of the SCSI Command). */
export const enum TaskAttributeCode {
  Untagged = 0,
  Simple = 1,
  Ordered = 2,
  HeadOfQueue = 3,
  Aca = 4,
}

/** RFC 7143 §11.5.1 task management function codes. */
export const enum TmfFunction {
  AbortTask = 1,
  AbortTaskSet = 2,
  ClearAca = 3,
  ClearTaskSet = 4,
  LogicalUnitReset = 5,
  TargetWarmReset = 6,
  TargetColdReset = 7,
  TaskReassign = 8,
}

/** RFC 7143 §11.14.1 logout reason codes. */
export const enum LogoutReason {
  CloseSession = 0,
  CloseConnection = 1,
  RemoveConnectionForRecovery = 2,
}

export const EMPTY = Buffer.alloc(0);
/** An all-zero LUN field (RFC 7143 §11.2.1.7 / SAM-5 LUN 0). */
export const LUN_ZERO: Buffer = Buffer.alloc(8);

/** Fields every PDU has (RFC 7143 §11.2.1). */
interface PduCommon {
  /** The I bit (RFC 7143 §11.2.1.1); meaningful on initiator PDUs only. */
  immediate?: boolean;
  /** Initiator Task Tag (RFC 7143 §11.2.1.8). */
  itt: number;
  /** The data segment without padding or digest (RFC 7143 §11.2.3). */
  data?: readonly Buffer[];
  /**
   * The received BHS, set by the parser only: a Reject echoes it as its data (RFC 7143 §11.17).
   * Nothing reads fields from it.
   */
  header?: Buffer;
}

/** Fields of every target PDU (RFC 7143 §11.2.1: StatSN, ExpCmdSN, MaxCmdSN). */
interface TargetCommon extends PduCommon {
  statSN?: number;
  expCmdSN?: number;
  maxCmdSN?: number;
}

/** RFC 7143 §11.3 SCSI Command. */
export interface ScsiCommandPdu extends PduCommon {
  opcode: Opcode.ScsiCommand;
  final?: boolean;
  read?: boolean;
  write?: boolean;
  attribute?: TaskAttributeCode;
  lun?: Buffer;
  expectedDataTransferLength?: number;
  cmdSN: number;
  expStatSN?: number;
  /** The CDB: the 16 bytes of the BHS plus any Extended CDB AHS (RFC 7143 §11.2.2.3). */
  cdb: Buffer;
}

/** RFC 7143 §11.4 SCSI Response. */
export interface ScsiResponsePdu extends TargetCommon {
  opcode: Opcode.ScsiResponse;
  bidiReadResidualOverflow?: boolean;
  bidiReadResidualUnderflow?: boolean;
  residualOverflow?: boolean;
  residualUnderflow?: boolean;
  /** §11.4.3: 0 = Command Completed at Target. */
  response?: number;
  status?: number;
  snackTag?: number;
  expDataSN?: number;
  bidiReadResidualCount?: number;
  residualCount?: number;
  /**
   * Sense data (SPC-4 4.5, built by src/scsi/sense.ts). On the wire the data segment is SenseLength
   * (2 bytes) followed by it (§11.4.7.2); when present it replaces `data`.
   */
  senseData?: Buffer;
}

/** RFC 7143 §11.5 Task Management Function Request. */
export interface TaskMgmtRequestPdu extends PduCommon {
  opcode: Opcode.TaskMgmtRequest;
  function: number;
  lun?: Buffer;
  referencedTaskTag?: number;
  cmdSN: number;
  expStatSN?: number;
  refCmdSN?: number;
  expDataSN?: number;
}

/** RFC 7143 §11.6 Task Management Function Response. */
export interface TaskMgmtResponsePdu extends TargetCommon {
  opcode: Opcode.TaskMgmtResponse;
  response: number;
}

/** RFC 7143 §11.7.1 SCSI Data-Out. */
export interface DataOutPdu extends PduCommon {
  opcode: Opcode.DataOut;
  final?: boolean;
  lun?: Buffer;
  ttt: number;
  expStatSN?: number;
  dataSN?: number;
  bufferOffset?: number;
}

/** RFC 7143 §11.7.1 SCSI Data-In. */
export interface DataInPdu extends TargetCommon {
  opcode: Opcode.DataIn;
  final?: boolean;
  acknowledge?: boolean;
  residualOverflow?: boolean;
  residualUnderflow?: boolean;
  /** The S bit (§11.7.3): this PDU carries the command's status. */
  statusPresent?: boolean;
  status?: number;
  lun?: Buffer;
  ttt?: number;
  dataSN?: number;
  bufferOffset?: number;
  residualCount?: number;
}

/** RFC 7143 §11.8 Ready To Transfer. */
export interface R2TPdu extends TargetCommon {
  opcode: Opcode.R2T;
  lun?: Buffer;
  ttt: number;
  r2tSN: number;
  bufferOffset: number;
  desiredDataTransferLength: number;
}

/** RFC 7143 §11.9 Asynchronous Message. */
export interface AsyncMessagePdu extends TargetCommon {
  opcode: Opcode.AsyncMessage;
  lun?: Buffer;
  asyncEvent: number;
  asyncVCode?: number;
  parameter1?: number;
  parameter2?: number;
  parameter3?: number;
}

/** RFC 7143 §11.10 Text Request. */
export interface TextRequestPdu extends PduCommon {
  opcode: Opcode.TextRequest;
  final?: boolean;
  continue?: boolean;
  lun?: Buffer;
  ttt?: number;
  cmdSN: number;
  expStatSN?: number;
}

/** RFC 7143 §11.11 Text Response. */
export interface TextResponsePdu extends TargetCommon {
  opcode: Opcode.TextResponse;
  final?: boolean;
  continue?: boolean;
  lun?: Buffer;
  ttt?: number;
}

/** RFC 7143 §11.12 Login Request. */
export interface LoginRequestPdu extends PduCommon {
  opcode: Opcode.LoginRequest;
  transit?: boolean;
  continue?: boolean;
  /** CSG and NSG (§11.12.3): 0 security, 1 operational, 3 full feature. */
  currentStage?: number;
  nextStage?: number;
  versionMax?: number;
  versionMin?: number;
  /** The 6-byte ISID (§11.12.5). */
  isid: Buffer;
  tsih?: number;
  cid?: number;
  cmdSN: number;
  expStatSN?: number;
}

/** RFC 7143 §11.13 Login Response. */
export interface LoginResponsePdu extends TargetCommon {
  opcode: Opcode.LoginResponse;
  transit?: boolean;
  continue?: boolean;
  currentStage?: number;
  nextStage?: number;
  versionMax?: number;
  versionActive?: number;
  isid: Buffer;
  tsih?: number;
  statusClass?: number;
  statusDetail?: number;
}

/** RFC 7143 §11.14 Logout Request. */
export interface LogoutRequestPdu extends PduCommon {
  opcode: Opcode.LogoutRequest;
  reasonCode: number;
  cid?: number;
  cmdSN: number;
  expStatSN?: number;
}

/** RFC 7143 §11.15 Logout Response. */
export interface LogoutResponsePdu extends TargetCommon {
  opcode: Opcode.LogoutResponse;
  response: number;
  time2Wait?: number;
  time2Retain?: number;
}

/** RFC 7143 §11.16 SNACK Request. */
export interface SnackRequestPdu extends PduCommon {
  opcode: Opcode.SnackRequest;
  type?: number;
  lun?: Buffer;
  ttt?: number;
  expStatSN?: number;
  begRun?: number;
  runLength?: number;
}

/** RFC 7143 §11.17 Reject; its data is the rejected PDU's header. */
export interface RejectPdu extends TargetCommon {
  opcode: Opcode.Reject;
  reason: number;
  dataSN?: number;
}

/** RFC 7143 §11.18 NOP-Out. */
export interface NopOutPdu extends PduCommon {
  opcode: Opcode.NopOut;
  lun?: Buffer;
  ttt?: number;
  cmdSN: number;
  expStatSN?: number;
}

/** RFC 7143 §11.19 NOP-In. */
export interface NopInPdu extends TargetCommon {
  opcode: Opcode.NopIn;
  lun?: Buffer;
  ttt?: number;
}

/** A PDU with an opcode this target does not know; answered with Reject (RFC 7143 §11.17.1). */
export interface UnknownPdu extends PduCommon {
  opcode: "unknown";
  /** The opcode as received (RFC 7143 §11.2.1.2), not one of `Opcode`. */
  rawOpcode: number;
}

/** What an initiator sends. */
export type InitiatorPdu =
  | ScsiCommandPdu
  | TaskMgmtRequestPdu
  | DataOutPdu
  | TextRequestPdu
  | LoginRequestPdu
  | LogoutRequestPdu
  | SnackRequestPdu
  | NopOutPdu;

/** What a target sends. */
export type TargetPdu =
  | ScsiResponsePdu
  | TaskMgmtResponsePdu
  | DataInPdu
  | R2TPdu
  | AsyncMessagePdu
  | TextResponsePdu
  | LoginResponsePdu
  | LogoutResponsePdu
  | RejectPdu
  | NopInPdu;

export type AnyPdu = InitiatorPdu | TargetPdu;

/** A message as the parser returns it: every field present. */
export type Parsed<T> = T extends unknown ? Required<T> : never;
export type ParsedPdu = Parsed<AnyPdu> | Required<UnknownPdu>;

/** The opcode number of a PDU, for messages and logs. */
export function opcodeOf(pdu: ParsedPdu): number {
  return pdu.opcode === "unknown" ? pdu.rawOpcode : pdu.opcode;
}

/** Total length of a data segment given as buffers. */
export function dataLength(parts: readonly Buffer[] | undefined): number {
  let n = 0;
  if (parts) for (const p of parts) n += p.length;
  return n;
}

/** The data segment as one buffer; joins (copies) only when it arrived in pieces. */
export function joinData(parts: readonly Buffer[] | undefined): Buffer {
  if (!parts || parts.length === 0) return EMPTY;
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** Serial number arithmetic on 32-bit sequence numbers (RFC 1982, as RFC 7143 §4.2.2.1 requires). */
export function snLess(a: number, b: number): boolean {
  return a !== b && ((a - b) | 0) < 0;
}
export function snLessEq(a: number, b: number): boolean {
  return a === b || snLess(a, b);
}
export function snAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** Padding to the next 4-byte boundary (RFC 7143 §11.2.3). */
export function pad4(n: number): number {
  return (4 - (n & 3)) & 3;
}
