/**
 * The iSCSI PDU wire format (RFC 7143 §11): opcodes, the 48-byte Basic Header Segment and the
 * accessors for its fields. One place that defines the layout; the parser frames PDUs, the writer
 * emits them, everything else reads and writes fields through this file.
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

/** Flag bits in byte 1 shared by several PDUs. */
export const FLAG_FINAL = 0x80;
export const FLAG_CONTINUE = 0x40; // Text / Login C bit
export const FLAG_TRANSIT = 0x80; // Login T bit

/** SCSI Command byte 1 (RFC 7143 §11.3). */
export const CMD_READ = 0x40;
export const CMD_WRITE = 0x20;
export const CMD_ATTR_MASK = 0x07;

/** SCSI Response and Data-In residual flags (RFC 7143 §11.4.1, §11.7.5). */
export const RSP_BIDI_OVERFLOW = 0x10;
export const RSP_BIDI_UNDERFLOW = 0x08;
export const RSP_OVERFLOW = 0x04;
export const RSP_UNDERFLOW = 0x02;
export const DATAIN_ACK = 0x40;
export const DATAIN_STATUS = 0x01;

/**
 * A framed PDU: slices of the received stream (not copies) or freshly built buffers.
 * The data segment excludes padding and digests.
 */
export class Pdu {
  /** The data segment as received: one slice, or several when it straddled TCP reads. */
  private parts: readonly Buffer[];

  constructor(
    readonly bhs: Buffer,
    readonly ahs: Buffer = EMPTY,
    data: Buffer | readonly Buffer[] = EMPTY,
  ) {
    this.parts = Buffer.isBuffer(data) ? (data.length ? [data] : []) : data;
  }

  /** The data segment as one buffer (joined on first use when it arrived in pieces). */
  get data(): Buffer {
    if (this.parts.length === 0) return EMPTY;
    if (this.parts.length > 1) this.parts = [Buffer.concat(this.parts)];
    return this.parts[0];
  }
  set data(b: Buffer) {
    this.parts = b.length ? [b] : [];
  }
  /** The data segment as slices, for bulk consumers that must not copy (Data-Out). */
  get dataParts(): readonly Buffer[] {
    return this.parts;
  }
  get dataLength(): number {
    let n = 0;
    for (const p of this.parts) n += p.length;
    return n;
  }

  /** A zeroed BHS with the opcode set. */
  static create(opcode: Opcode, data: Buffer = EMPTY): Pdu {
    const bhs = Buffer.alloc(BHS_LENGTH);
    bhs[0] = opcode;
    return new Pdu(bhs, EMPTY, data);
  }

  get opcode(): Opcode {
    return (this.bhs[0] & 0x3f) as Opcode;
  }
  get immediate(): boolean {
    return (this.bhs[0] & 0x40) !== 0;
  }
  set immediate(v: boolean) {
    this.bhs[0] = (this.bhs[0] & ~0x40) | (v ? 0x40 : 0);
  }
  get flags(): number {
    return this.bhs[1];
  }
  set flags(v: number) {
    this.bhs[1] = v;
  }
  get final(): boolean {
    return (this.bhs[1] & FLAG_FINAL) !== 0;
  }
  get totalAhsLength(): number {
    return this.bhs[4] * 4;
  }
  /** DataSegmentLength as declared in the BHS (bytes 5..7). */
  get dataSegmentLength(): number {
    return this.bhs.readUIntBE(5, 3);
  }
  /** The raw 8-byte LUN field. */
  get lunField(): Buffer {
    return this.bhs.subarray(8, 16);
  }
  get itt(): number {
    return this.bhs.readUInt32BE(16);
  }
  set itt(v: number) {
    this.bhs.writeUInt32BE(v >>> 0, 16);
  }
  /** Target Transfer Tag (bytes 20..23) on PDUs that carry one. */
  get ttt(): number {
    return this.bhs.readUInt32BE(20);
  }
  set ttt(v: number) {
    this.bhs.writeUInt32BE(v >>> 0, 20);
  }
  /** Bytes 24..27: CmdSN on initiator PDUs, StatSN on target PDUs. */
  get cmdSN(): number {
    return this.bhs.readUInt32BE(24);
  }
  get statSN(): number {
    return this.bhs.readUInt32BE(24);
  }
  set statSN(v: number) {
    this.bhs.writeUInt32BE(v >>> 0, 24);
  }
  /** Bytes 28..31: ExpStatSN on initiator PDUs, ExpCmdSN on target PDUs. */
  get expStatSN(): number {
    return this.bhs.readUInt32BE(28);
  }
  set expCmdSN(v: number) {
    this.bhs.writeUInt32BE(v >>> 0, 28);
  }
  set maxCmdSN(v: number) {
    this.bhs.writeUInt32BE(v >>> 0, 32);
  }
  u32(offset: number): number {
    return this.bhs.readUInt32BE(offset);
  }
  setU32(offset: number, v: number): void {
    this.bhs.writeUInt32BE(v >>> 0, offset);
  }
  u16(offset: number): number {
    return this.bhs.readUInt16BE(offset);
  }
  setU16(offset: number, v: number): void {
    this.bhs.writeUInt16BE(v & 0xffff, offset);
  }
}

export const EMPTY = Buffer.alloc(0);

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
