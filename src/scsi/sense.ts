/**
 * Sense data (SPC-4 4.5): sense keys, the additional sense codes this target reports, and builders
 * for fixed (0x70) and descriptor (0x72) formats. A command handler throws a SenseError; the LU turns
 * it into CHECK CONDITION with sense in the format its control mode page (D_SENSE) selects.
 */

export const enum SenseKey {
  NoSense = 0x0,
  RecoveredError = 0x1,
  NotReady = 0x2,
  MediumError = 0x3,
  HardwareError = 0x4,
  IllegalRequest = 0x5,
  UnitAttention = 0x6,
  DataProtect = 0x7,
  BlankCheck = 0x8,
  CopyAborted = 0xa,
  AbortedCommand = 0xb,
  Miscompare = 0xe,
}

/** Additional sense code and qualifier, as [ASC, ASCQ] (SPC-4 Annex D). */
export type AscAscq = readonly [number, number];

export const ASC = {
  NO_ADDITIONAL_SENSE: [0x00, 0x00],
  LUN_NOT_READY_CAUSE_NOT_REPORTABLE: [0x04, 0x00],
  LUN_NOT_READY_MANUAL_INTERVENTION: [0x04, 0x03],
  WRITE_ERROR: [0x0c, 0x00],
  INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT: [0x0e, 0x03],
  UNRECOVERED_READ_ERROR: [0x11, 0x00],
  MISCOMPARE_DURING_VERIFY: [0x1d, 0x00],
  PARAMETER_LIST_LENGTH_ERROR: [0x1a, 0x00],
  INVALID_COMMAND_OPERATION_CODE: [0x20, 0x00],
  LBA_OUT_OF_RANGE: [0x21, 0x00],
  INVALID_FIELD_IN_CDB: [0x24, 0x00],
  LOGICAL_UNIT_NOT_SUPPORTED: [0x25, 0x00],
  INVALID_FIELD_IN_PARAMETER_LIST: [0x26, 0x00],
  PARAMETER_NOT_SUPPORTED: [0x26, 0x01],
  INVALID_RELEASE_OF_PERSISTENT_RESERVATION: [0x26, 0x04],
  WRITE_PROTECTED: [0x27, 0x00],
  NOT_READY_TO_READY_CHANGE: [0x28, 0x00],
  POWER_ON_RESET_OR_BUS_DEVICE_RESET: [0x29, 0x00],
  POWER_ON_OCCURRED: [0x29, 0x01],
  BUS_DEVICE_RESET_FUNCTION_OCCURRED: [0x29, 0x03],
  I_T_NEXUS_LOSS_OCCURRED: [0x29, 0x07],
  PARAMETERS_CHANGED: [0x2a, 0x00],
  MODE_PARAMETERS_CHANGED: [0x2a, 0x01],
  RESERVATIONS_PREEMPTED: [0x2a, 0x03],
  RESERVATIONS_RELEASED: [0x2a, 0x04],
  REGISTRATIONS_PREEMPTED: [0x2a, 0x05],
  CAPACITY_DATA_HAS_CHANGED: [0x2a, 0x09],
  COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: [0x2f, 0x00],
  SAVING_PARAMETERS_NOT_SUPPORTED: [0x39, 0x00],
  MEDIUM_NOT_PRESENT: [0x3a, 0x00],
  REPORTED_LUNS_DATA_HAS_CHANGED: [0x3f, 0x0e],
  INTERNAL_TARGET_FAILURE: [0x44, 0x00],
  INVALID_MESSAGE_ERROR: [0x49, 0x00],
  COMMAND_PHASE_ERROR: [0x4a, 0x00],
  DATA_PHASE_ERROR: [0x4b, 0x00],
  OVERLAPPED_COMMANDS_ATTEMPTED: [0x4e, 0x00],
  MEDIUM_REMOVAL_PREVENTED: [0x53, 0x02],
  INSUFFICIENT_REGISTRATION_RESOURCES: [0x55, 0x04],
} as const satisfies Record<string, AscAscq>;

/** Optional details carried into the sense data. */
export interface SenseDetails {
  /** INFORMATION field (e.g. the LBA of a miscompare offset, SBC-3 5.2). */
  readonly information?: number;
  /**
   * SENSE-KEY SPECIFIC field pointer (SPC-4 4.5.2.4.2): which byte (and bit) of the CDB or
   * parameter list was invalid.
   */
  readonly fieldPointer?: { readonly inCdb: boolean; readonly byte: number; readonly bit?: number };
}

/** Thrown by command handlers; becomes CHECK CONDITION with this sense. */
export class SenseError extends Error {
  constructor(
    readonly key: SenseKey,
    readonly asc: AscAscq,
    readonly details: SenseDetails = {},
    message?: string,
  ) {
    super(
      message ??
        `sense key 0x${key.toString(16)} ASC/ASCQ 0x${asc[0].toString(16).padStart(2, "0")}/0x${asc[1]
          .toString(16)
          .padStart(2, "0")}`,
    );
    this.name = "SenseError";
  }
}

/** ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at CDB byte `byte` (bit `bit`). */
export function invalidCdbField(byte: number, bit?: number): SenseError {
  return new SenseError(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_CDB, {
    fieldPointer: { inCdb: true, byte, bit },
  });
}

/** ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, pointing at parameter byte `byte`. */
export function invalidParameterField(byte: number, bit?: number): SenseError {
  return new SenseError(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_PARAMETER_LIST, {
    fieldPointer: { inCdb: false, byte, bit },
  });
}

function senseKeySpecific(details: SenseDetails): Buffer | undefined {
  const fp = details.fieldPointer;
  if (!fp) return undefined;
  const sks = Buffer.alloc(3);
  // SKSV=1, C/D, BPV and BIT POINTER, then the FIELD POINTER (SPC-4 Table 50).
  sks[0] = 0x80 | (fp.inCdb ? 0x40 : 0) | (fp.bit !== undefined ? 0x08 | (fp.bit & 7) : 0);
  sks.writeUInt16BE(fp.byte, 1);
  return sks;
}

/** Fixed-format sense data, 18 bytes (SPC-4 4.5.3). */
export function fixedSense(key: SenseKey, asc: AscAscq, details: SenseDetails = {}): Buffer {
  const s = Buffer.alloc(18);
  const hasInfo = details.information !== undefined;
  s[0] = (hasInfo ? 0x80 : 0) | 0x70; // VALID, current error
  s[2] = key & 0x0f;
  if (hasInfo) s.writeUInt32BE(Number(BigInt.asUintN(32, BigInt(details.information ?? 0))), 3);
  s[7] = 10; // additional sense length
  s[12] = asc[0];
  s[13] = asc[1];
  const sks = senseKeySpecific(details);
  if (sks) sks.copy(s, 15);
  return s;
}

/** Descriptor-format sense data (SPC-4 4.5.2), with information and sense-key-specific descriptors. */
export function descriptorSense(key: SenseKey, asc: AscAscq, details: SenseDetails = {}): Buffer {
  const parts: Buffer[] = [];
  if (details.information !== undefined) {
    const d = Buffer.alloc(12);
    d[0] = 0x00; // information descriptor
    d[1] = 0x0a;
    d[2] = 0x80; // VALID
    d.writeBigUInt64BE(BigInt(details.information), 4);
    parts.push(d);
  }
  const sks = senseKeySpecific(details);
  if (sks) {
    const d = Buffer.alloc(8);
    d[0] = 0x02; // sense key specific descriptor
    d[1] = 0x06;
    sks.copy(d, 4);
    parts.push(d);
  }
  const head = Buffer.alloc(8);
  head[0] = 0x72; // current error, descriptor format
  head[1] = key & 0x0f;
  head[2] = asc[0];
  head[3] = asc[1];
  const body = Buffer.concat(parts);
  head[7] = body.length;
  return Buffer.concat([head, body]);
}

export function buildSense(descriptorFormat: boolean, err: SenseError): Buffer {
  return descriptorFormat
    ? descriptorSense(err.key, err.asc, err.details)
    : fixedSense(err.key, err.asc, err.details);
}
