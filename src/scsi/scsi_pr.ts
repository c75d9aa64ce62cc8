/**
 * Wire formats of SPC-4 persistent reservations: the PERSISTENT RESERVE OUT parameter lists
 * (SPC-4 6.15.3, 6.15.4), the PERSISTENT RESERVE IN parameter data (SPC-4 6.14.2 to 6.14.5) and
 * iSCSI TransportIDs (SPC-4 7.6.4.6). The reservation state machine lives in reservations.ts.
 */
import { ASC, SenseError, SenseKey, invalidParameterField } from "./sense.js";

/** PERSISTENT RESERVE IN service actions (SPC-4 Table 169). */
export const enum PrInAction {
  ReadKeys = 0x00,
  ReadReservation = 0x01,
  ReportCapabilities = 0x02,
  ReadFullStatus = 0x03,
}

/** PERSISTENT RESERVE OUT service actions (SPC-4 Table 177). */
export const enum PrOutAction {
  Register = 0x00,
  Reserve = 0x01,
  Release = 0x02,
  Clear = 0x03,
  Preempt = 0x04,
  PreemptAndAbort = 0x05,
  RegisterAndIgnoreExistingKey = 0x06,
  RegisterAndMove = 0x07,
}

/** Persistent reservation types (SPC-4 Table 172). */
export const enum PrType {
  WriteExclusive = 0x1,
  ExclusiveAccess = 0x3,
  WriteExclusiveRegistrantsOnly = 0x5,
  ExclusiveAccessRegistrantsOnly = 0x6,
  WriteExclusiveAllRegistrants = 0x7,
  ExclusiveAccessAllRegistrants = 0x8,
}

/** LU_SCOPE, the only scope SPC-4 still defines (SPC-4 6.14.3.3). */
export const LU_SCOPE = 0x0;

export function isValidPrType(t: number): t is PrType {
  return t === 1 || t === 3 || t === 5 || t === 6 || t === 7 || t === 8;
}

/** All-registrants types: every registered I_T nexus is a reservation holder (SPC-4 5.13.9). */
export function isAllRegistrants(t: PrType): boolean {
  return t === PrType.WriteExclusiveAllRegistrants || t === PrType.ExclusiveAccessAllRegistrants;
}

/** Registrants-only and all-registrants types give every registrant full access (SPC-4 Table 171). */
export function registrantsHaveAccess(t: PrType): boolean {
  return t >= PrType.WriteExclusiveRegistrantsOnly;
}

/** Exclusive Access types also keep non-holders from reading. */
export function isExclusiveAccess(t: PrType): boolean {
  return (
    t === PrType.ExclusiveAccess ||
    t === PrType.ExclusiveAccessRegistrantsOnly ||
    t === PrType.ExclusiveAccessAllRegistrants
  );
}

/** An initiator port named by an iSCSI TransportID: the name alone (format 00b) or name + ISID (01b). */
export interface IscsiInitiatorPortId {
  /** iSCSI name, lower-cased (RFC 3722 names compare case-insensitively). */
  readonly name: string;
  /** ISID as 12 lowercase hex digits, absent for a FORMAT CODE 00b TransportID. */
  readonly isid?: string;
}

const ISCSI_PROTOCOL_ID = 0x5;

/**
 * Encode an iSCSI TransportID (SPC-4 7.6.4.6): FORMAT CODE 01b with the ISID, 00b without.
 * The name field is null-terminated and padded to a multiple of four bytes, at least 20.
 */
export function encodeIscsiTransportId(port: IscsiInitiatorPortId): Buffer {
  const text = port.isid !== undefined ? `${port.name},i,0x${port.isid}` : port.name;
  const name = Buffer.from(`${text}\0`, "utf8");
  const len = Math.max((name.length + 3) & ~3, 20);
  const id = Buffer.alloc(4 + len);
  id[0] = (port.isid !== undefined ? 0x40 : 0x00) | ISCSI_PROTOCOL_ID;
  id.writeUInt16BE(len, 2);
  name.copy(id, 4);
  return id;
}

/**
 * Decode one iSCSI TransportID at `offset` of a parameter list. Returns the port and the
 * TransportID's total length. Malformed input throws INVALID FIELD IN PARAMETER LIST pointing at
 * the offending byte (SPC-4 6.15.3: a TransportID the device server cannot parse).
 */
export function decodeIscsiTransportId(
  list: Buffer,
  offset: number,
  end: number,
): { port: IscsiInitiatorPortId; length: number } {
  if (offset + 4 > end) throw invalidParameterField(offset);
  const format = list[offset] >> 6;
  const protocol = list[offset] & 0x0f;
  if (protocol !== ISCSI_PROTOCOL_ID) throw invalidParameterField(offset, 0);
  if (format !== 0 && format !== 1) throw invalidParameterField(offset, 6);
  const addLen = list.readUInt16BE(offset + 2);
  // SPC-4 7.6.4.6: the ADDITIONAL LENGTH is a multiple of four and covers at least 20 bytes.
  if (addLen < 20 || addLen % 4 !== 0 || offset + 4 + addLen > end) throw invalidParameterField(offset + 2);
  const field = list.subarray(offset + 4, offset + 4 + addLen);
  const nul = field.indexOf(0);
  if (nul <= 0) throw invalidParameterField(offset + 4);
  const text = field.subarray(0, nul).toString("utf8");
  let port: IscsiInitiatorPortId;
  if (format === 0) {
    if (text.includes(",i,0x")) throw invalidParameterField(offset + 4);
    port = { name: text.toLowerCase() };
  } else {
    const sep = text.toLowerCase().lastIndexOf(",i,0x");
    const isid = sep > 0 ? text.slice(sep + 5).toLowerCase() : "";
    if (!/^[0-9a-f]{12}$/.test(isid)) throw invalidParameterField(offset + 4);
    port = { name: text.slice(0, sep).toLowerCase(), isid };
  }
  if (!/^(iqn\.|eui\.|naa\.)/.test(port.name)) throw invalidParameterField(offset + 4);
  return { port, length: 4 + addLen };
}

function parameterListLengthError(): SenseError {
  return new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
}

/** The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.15.3), with SPEC_I_PT TransportIDs. */
export interface PrOutParameters {
  readonly reservationKey: bigint;
  readonly serviceActionKey: bigint;
  readonly specIPt: boolean;
  readonly allTgPt: boolean;
  readonly aptpl: boolean;
  /** Initiator ports from the SPEC_I_PT TransportID list. */
  readonly transportIds: readonly IscsiInitiatorPortId[];
}

/** Parse the basic parameter list; `list` is the whole data-out, `length` the CDB's PARAMETER LIST LENGTH. */
export function parsePrOutParameters(list: Buffer, length: number): PrOutParameters {
  if (length < 24 || list.length < length) throw parameterListLengthError();
  const specIPt = (list[20] & 0x08) !== 0;
  const transportIds: IscsiInitiatorPortId[] = [];
  if (!specIPt) {
    // SPC-4 6.15.3: without SPEC_I_PT the list is exactly 24 bytes.
    if (length !== 24) throw parameterListLengthError();
  } else {
    if (length < 28) throw parameterListLengthError();
    const tidLen = list.readUInt32BE(24);
    if (28 + tidLen !== length) throw parameterListLengthError();
    let off = 28;
    while (off < length) {
      const { port, length: n } = decodeIscsiTransportId(list, off, length);
      transportIds.push(port);
      off += n;
    }
  }
  return {
    reservationKey: list.readBigUInt64BE(0),
    serviceActionKey: list.readBigUInt64BE(8),
    specIPt,
    allTgPt: (list[20] & 0x04) !== 0,
    aptpl: (list[20] & 0x01) !== 0,
    transportIds,
  };
}

/** The REGISTER AND MOVE parameter list (SPC-4 6.15.4). */
export interface RegisterAndMoveParameters {
  readonly reservationKey: bigint;
  readonly serviceActionKey: bigint;
  readonly unreg: boolean;
  readonly aptpl: boolean;
  readonly relativeTargetPortId: number;
  readonly destination: IscsiInitiatorPortId;
}

export function parseRegisterAndMoveParameters(list: Buffer, length: number): RegisterAndMoveParameters {
  if (length < 24 || list.length < length) throw parameterListLengthError();
  const tidLen = list.readUInt32BE(20);
  if (24 + tidLen > length || tidLen < 24) throw parameterListLengthError();
  const { port } = decodeIscsiTransportId(list, 24, 24 + tidLen);
  return {
    reservationKey: list.readBigUInt64BE(0),
    serviceActionKey: list.readBigUInt64BE(8),
    unreg: (list[17] & 0x02) !== 0,
    aptpl: (list[17] & 0x01) !== 0,
    relativeTargetPortId: list.readUInt16BE(18),
    destination: port,
  };
}

/** READ KEYS parameter data (SPC-4 6.14.2). */
export function encodeReadKeys(generation: number, keys: readonly bigint[]): Buffer {
  const out = Buffer.alloc(8 + 8 * keys.length);
  out.writeUInt32BE(generation >>> 0, 0);
  out.writeUInt32BE(8 * keys.length, 4);
  keys.forEach((k, i) => out.writeBigUInt64BE(k, 8 + 8 * i));
  return out;
}

/** READ RESERVATION parameter data (SPC-4 6.14.3); the key is zero for all-registrants types. */
export function encodeReadReservation(
  generation: number,
  reservation: { key: bigint; type: PrType } | undefined,
): Buffer {
  const out = Buffer.alloc(reservation ? 24 : 8);
  out.writeUInt32BE(generation >>> 0, 0);
  if (reservation) {
    out.writeUInt32BE(16, 4);
    out.writeBigUInt64BE(reservation.key, 8);
    out[21] = (LU_SCOPE << 4) | reservation.type;
  }
  return out;
}

export interface PrCapabilities {
  /** Compatible Reservation Handling (SPC-4 5.13.3). */
  readonly crh: boolean;
  readonly sipC: boolean;
  readonly atpC: boolean;
  /** Persist Through Power Loss Capable: an APTPL file is configured. */
  readonly ptplC: boolean;
  /** Persist Through Power Loss Activated. */
  readonly ptplA: boolean;
  /** ALLOW COMMANDS field (SPC-4 Table 173). */
  readonly allowCommands: number;
}

/** REPORT CAPABILITIES parameter data (SPC-4 6.14.4), with every reservation type supported. */
export function encodeReportCapabilities(c: PrCapabilities): Buffer {
  const out = Buffer.alloc(8);
  out.writeUInt16BE(8, 0);
  out[2] = (c.crh ? 0x10 : 0) | (c.sipC ? 0x08 : 0) | (c.atpC ? 0x04 : 0) | (c.ptplC ? 0x01 : 0);
  // TMV: the type mask below is valid.
  out[3] = 0x80 | ((c.allowCommands & 7) << 4) | (c.ptplA ? 0x01 : 0);
  // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; then EX_AC_AR (SPC-4 Table 174).
  out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
  out[5] = 0x01;
  return out;
}

export interface FullStatusEntry {
  readonly key: bigint;
  readonly allTgPt: boolean;
  /** Set when this registrant holds the reservation; then `type` is reported. */
  readonly holder: boolean;
  readonly type: PrType | undefined;
  readonly relativeTargetPortId: number;
  readonly transportId: Buffer;
}

/** READ FULL STATUS parameter data (SPC-4 6.14.5). */
export function encodeReadFullStatus(generation: number, entries: readonly FullStatusEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const d = Buffer.alloc(24);
    d.writeBigUInt64BE(e.key, 0);
    d[12] = (e.allTgPt ? 0x02 : 0) | (e.holder ? 0x01 : 0);
    if (e.holder && e.type !== undefined) d[13] = (LU_SCOPE << 4) | e.type;
    // RELATIVE TARGET PORT IDENTIFIER is not meaningful when ALL_TG_PT is set.
    if (!e.allTgPt) d.writeUInt16BE(e.relativeTargetPortId & 0xffff, 18);
    d.writeUInt32BE(e.transportId.length, 20);
    parts.push(d, e.transportId);
  }
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(generation >>> 0, 0);
  head.writeUInt32BE(body.length, 4);
  return Buffer.concat([head, body]);
}
