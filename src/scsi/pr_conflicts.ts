/**
 * Which commands a reservation held by another I_T nexus lets through: the persistent reservation
 * conflict table (SPC-4 5.13.1 Table 63, SBC-3 4.17 Table 13) and the SPC-2 reservation exceptions
 * (SPC-2 5.5.1). Reservations.conflicts() (reservations.ts) applies them to the LU's state.
 */
export const OP_TEST_UNIT_READY = 0x00;
export const OP_REQUEST_SENSE = 0x03;
export const OP_INQUIRY = 0x12;
export const OP_RESERVE6 = 0x16;
export const OP_RELEASE6 = 0x17;
export const OP_START_STOP_UNIT = 0x1b;
export const OP_PREVENT_ALLOW = 0x1e;
export const OP_READ_CAPACITY10 = 0x25;
export const OP_LOG_SENSE = 0x4d;
export const OP_RESERVE10 = 0x56;
export const OP_RELEASE10 = 0x57;
export const OP_PERSISTENT_RESERVE_IN = 0x5e;
export const OP_PERSISTENT_RESERVE_OUT = 0x5f;
export const OP_SERVICE_ACTION_IN16 = 0x9e;
export const OP_REPORT_LUNS = 0xa0;
export const OP_MAINTENANCE_IN = 0xa3;
export const OP_SERVICE_ACTION_IN12 = 0xab;

export type CommandClass = "allowed" | "read" | "write";

/**
 * How a command fares under a persistent reservation held by someone else (SPC-4 Table 63,
 * SBC-3 Table 13): "allowed" never conflicts, "read" conflicts only under Exclusive Access types,
 * "write" conflicts under every type. Unknown commands count as "write".
 */
export function commandClass(cdb: Buffer): CommandClass {
  switch (cdb[0]) {
    case OP_TEST_UNIT_READY:
    case OP_REQUEST_SENSE:
    case OP_INQUIRY:
    case OP_READ_CAPACITY10:
    case OP_LOG_SENSE:
    case OP_REPORT_LUNS:
      return "allowed";
    case OP_PREVENT_ALLOW:
      // PREVENT=0 is allowed, a prevent conflicts (SBC-3 Table 13).
      return (cdb[4] & 0x03) === 0 ? "allowed" : "write";
    case OP_START_STOP_UNIT:
      // START=1 with POWER CONDITION 0 is allowed; stopping conflicts.
      return (cdb[4] & 0x01) === 1 && cdb[4] >> 4 === 0 ? "allowed" : "write";
    case OP_SERVICE_ACTION_IN16: {
      const sa = cdb[1] & 0x1f;
      if (sa === 0x10) return "allowed"; // READ CAPACITY(16)
      if (sa === 0x11 || sa === 0x12) return "read"; // READ LONG(16), GET LBA STATUS
      return "write";
    }
    case OP_MAINTENANCE_IN: {
      const sa = cdb[1] & 0x1f;
      // REPORT IDENTIFYING INFORMATION, REPORT TARGET PORT GROUPS, REPORT SUPPORTED OPERATION
      // CODES, REPORT SUPPORTED TMF, REPORT TIMESTAMP, REPORT PRIORITY, REPORT ALIASES.
      if ([0x05, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f].includes(sa)) return "allowed";
      if (sa === 0x10) return "read"; // MANAGEMENT PROTOCOL IN
      return "write";
    }
    case OP_SERVICE_ACTION_IN12:
      return (cdb[1] & 0x1f) === 0x01 ? "allowed" : "write"; // READ MEDIA SERIAL NUMBER
    case 0x08: // READ(6)
    case 0x28: // READ(10)
    case 0xa8: // READ(12)
    case 0x88: // READ(16)
    case 0x7f: // READ(32) and other variable-length CDBs
    case 0x2f: // VERIFY(10)
    case 0xaf: // VERIFY(12)
    case 0x8f: // VERIFY(16)
    case 0x34: // PRE-FETCH(10)
    case 0x90: // PRE-FETCH(16)
    case 0x37: // READ DEFECT DATA(10)
    case 0xb7: // READ DEFECT DATA(12)
    case 0x3e: // READ LONG(10)
    case 0xa2: // SECURITY PROTOCOL IN
      return "read";
    default:
      return "write";
  }
}

/**
 * Commands another I_T nexus may still send while an SPC-2 reservation is held (SPC-2 5.5.1):
 * those that only report identity or sense, and RELEASE, which is then a no-op.
 */
export function allowedUnderSpc2Reservation(cdb: Buffer): boolean {
  switch (cdb[0]) {
    case OP_INQUIRY:
    case OP_REQUEST_SENSE:
    case OP_REPORT_LUNS:
    case OP_RELEASE6:
    case OP_RELEASE10:
      return true;
    case OP_PREVENT_ALLOW:
      return (cdb[4] & 0x03) === 0;
    case OP_MAINTENANCE_IN:
      return (cdb[1] & 0x1f) === 0x0c || (cdb[1] & 0x1f) === 0x0d;
    default:
      return false;
  }
}
