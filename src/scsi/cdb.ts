/**
 * CDB decoding (SPC-4 4.2): operation codes, the length each group code implies, the control byte,
 * and the LBA / transfer-length fields of the SBC-3 read/write family.
 */
import { ASC, SenseError, SenseKey, invalidCdbField } from "./sense.js";

/** Operation codes this target knows (SPC-4 Annex D.3.1, SBC-3 Table 13). */
export const enum Op {
  TestUnitReady = 0x00,
  RequestSense = 0x03,
  Read6 = 0x08,
  Write6 = 0x0a,
  Inquiry = 0x12,
  ModeSelect6 = 0x15,
  Reserve6 = 0x16,
  Release6 = 0x17,
  ModeSense6 = 0x1a,
  StartStopUnit = 0x1b,
  PreventAllowMediumRemoval = 0x1e,
  ReadCapacity10 = 0x25,
  Read10 = 0x28,
  Write10 = 0x2a,
  WriteAndVerify10 = 0x2e,
  Verify10 = 0x2f,
  PreFetch10 = 0x34,
  SynchronizeCache10 = 0x35,
  ReadDefectData10 = 0x37,
  WriteSame10 = 0x41,
  Unmap = 0x42,
  ModeSelect10 = 0x55,
  Reserve10 = 0x56,
  Release10 = 0x57,
  ModeSense10 = 0x5a,
  PersistentReserveIn = 0x5e,
  PersistentReserveOut = 0x5f,
  Read16 = 0x88,
  CompareAndWrite = 0x89,
  Write16 = 0x8a,
  OrWrite16 = 0x8b,
  WriteAndVerify16 = 0x8e,
  Verify16 = 0x8f,
  PreFetch16 = 0x90,
  SynchronizeCache16 = 0x91,
  WriteSame16 = 0x93,
  ServiceActionIn16 = 0x9e,
  ReportLuns = 0xa0,
  MaintenanceIn = 0xa3,
  Read12 = 0xa8,
  Write12 = 0xaa,
  WriteAndVerify12 = 0xae,
  Verify12 = 0xaf,
  ReadDefectData12 = 0xb7,
}

/** Service actions of SERVICE ACTION IN(16) (SBC-3) and MAINTENANCE IN (SPC-4). */
export const enum ServiceAction {
  ReadCapacity16 = 0x10,
  GetLbaStatus = 0x12,
  ReportSupportedTaskManagementFunctions = 0x0d,
  ReportSupportedOperationCodes = 0x0c,
}

/**
 * CDB length implied by the GROUP CODE (SPC-4 4.2.5.1): 0 → 6, 1/2 → 10, 4 → 16, 5 → 12.
 * Group 3 (variable length) and the vendor groups return undefined.
 */
export function cdbLengthOf(opcode: number): number | undefined {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return undefined;
  }
}

/**
 * SAM-5 5.2 / SPC-4 4.2.5.8 control byte: NACA=1 requires ACA support and LINK=1 linked commands;
 * this target supports neither, so either bit is an invalid field.
 */
export function checkControlByte(cdb: Buffer, length: number): void {
  const control = cdb[length - 1];
  if (control & 0x04) throw invalidCdbField(length - 1, 2);
  if (control & 0x01) throw invalidCdbField(length - 1, 0);
}

/** Read a 64-bit big-endian field as a number; values beyond 2^53 are returned as Infinity (never in range). */
export function readU64(cdb: Buffer, offset: number): number {
  const v = cdb.readBigUInt64BE(offset);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
}

/** The fields of a READ/WRITE/VERIFY-family CDB. */
export interface BlockRange {
  readonly lba: number;
  /** Number of logical blocks (TRANSFER LENGTH or VERIFICATION LENGTH). */
  readonly blocks: number;
}

/**
 * LOGICAL BLOCK ADDRESS and TRANSFER LENGTH of a 6/10/12/16-byte read/write-family CDB (SBC-3 READ/WRITE command descriptions).
 * READ(6)/WRITE(6): a transfer length of 0 means 256 blocks (SBC-3 5.8 / 5.36).
 */
export function blockRange(cdb: Buffer): BlockRange {
  switch (cdbLengthOf(cdb[0])) {
    case 6: {
      const lba = ((cdb[1] & 0x1f) << 16) | cdb.readUInt16BE(2);
      const n = cdb[4];
      return { lba, blocks: n === 0 ? 256 : n };
    }
    case 10:
      return { lba: cdb.readUInt32BE(2), blocks: cdb.readUInt16BE(7) };
    case 12:
      return { lba: cdb.readUInt32BE(2), blocks: cdb.readUInt32BE(6) };
    case 16:
      return { lba: readU64(cdb, 2), blocks: cdb.readUInt32BE(10) };
    default:
      throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_COMMAND_OPERATION_CODE);
  }
}

/** ALLOCATION LENGTH at a given CDB offset with the given width (SPC-4 4.2.5.6). */
export function allocationLength(cdb: Buffer, offset: number, width: 1 | 2 | 4): number {
  if (width === 1) return cdb[offset];
  if (width === 2) return cdb.readUInt16BE(offset);
  return cdb.readUInt32BE(offset);
}
