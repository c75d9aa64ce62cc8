/**
 * The command table: every operation code (and service action) this logical unit accepts, its
 * handler, and its CDB USAGE DATA for REPORT SUPPORTED OPERATION CODES (SPC-4 6.35.3). A mask bit
 * is one where the handler reads the CDB bit; byte 0 is the opcode.
 */
import { Op, ServiceAction } from "./cdb.js";
import type { CommandDescriptor, CommandHandler } from "./command.js";
import { inquiry } from "./inquiry.js";
import { modeSelect, modeSense } from "./mode.js";
import {
  compareAndWrite,
  getLbaStatus,
  orWrite,
  preFetch,
  read,
  readCapacity10,
  readCapacity16,
  readDefectData,
  startStopUnit,
  synchronizeCache,
  unmap,
  verify,
  write,
  writeSame,
} from "./sbc.js";
import {
  makeReportSupportedOperationCodes,
  persistentReserveIn,
  persistentReserveOut,
  preventAllowMediumRemoval,
  release,
  reportLuns,
  reportSupportedTaskManagementFunctions,
  requestSense,
  reserve,
  testUnitReady,
} from "./spc.js";

const F = 0xff;
const lba32 = [F, F, F, F];
const lba64 = [F, F, F, F, F, F, F, F];

function cmd(
  name: string,
  usage: number[],
  handler: CommandHandler,
  extra: { serviceAction?: number; uaExempt?: boolean } = {},
): CommandDescriptor {
  return { name, opcode: usage[0], usage, handler, ...extra };
}

/** Persistent reservation service actions (SPC-4 6.15.1, 6.16.1). */
const PR_IN_ACTIONS = ["READ KEYS", "READ RESERVATION", "REPORT CAPABILITIES", "READ FULL STATUS"];
const PR_OUT_ACTIONS = [
  "REGISTER",
  "RESERVE",
  "RELEASE",
  "CLEAR",
  "PREEMPT",
  "PREEMPT AND ABORT",
  "REGISTER AND IGNORE EXISTING KEY",
  "REGISTER AND MOVE",
];

const TABLE: CommandDescriptor[] = [
  cmd("TEST UNIT READY", [Op.TestUnitReady, 0, 0, 0, 0, 0], testUnitReady),
  cmd("REQUEST SENSE", [Op.RequestSense, 0x01, 0, 0, F, 0], requestSense, { uaExempt: true }),
  cmd("READ(6)", [Op.Read6, 0x1f, F, F, F, 0], read),
  cmd("WRITE(6)", [Op.Write6, 0x1f, F, F, F, 0], write),
  cmd("INQUIRY", [Op.Inquiry, 0x01, F, F, F, 0], inquiry, { uaExempt: true }),
  cmd("MODE SELECT(6)", [Op.ModeSelect6, 0x10, 0, 0, F, 0], modeSelect),
  cmd("RESERVE(6)", [Op.Reserve6, 0, 0, 0, 0, 0], reserve),
  cmd("RELEASE(6)", [Op.Release6, 0, 0, 0, 0, 0], release),
  cmd("MODE SENSE(6)", [Op.ModeSense6, 0x08, F, F, F, 0], modeSense),
  cmd("START STOP UNIT", [Op.StartStopUnit, 0x01, 0, 0x0f, 0xf7, 0], startStopUnit),
  cmd(
    "PREVENT ALLOW MEDIUM REMOVAL",
    [Op.PreventAllowMediumRemoval, 0, 0, 0, 0x03, 0],
    preventAllowMediumRemoval,
  ),
  cmd("READ CAPACITY(10)", [Op.ReadCapacity10, 0, ...lba32, 0, 0, 0x01, 0], readCapacity10),
  cmd("READ(10)", [Op.Read10, 0x18, ...lba32, 0, F, F, 0], read),
  cmd("WRITE(10)", [Op.Write10, 0x18, ...lba32, 0, F, F, 0], write),
  cmd("WRITE AND VERIFY(10)", [Op.WriteAndVerify10, 0x12, ...lba32, 0, F, F, 0], write),
  cmd("VERIFY(10)", [Op.Verify10, 0x16, ...lba32, 0, F, F, 0], verify),
  cmd("PRE-FETCH(10)", [Op.PreFetch10, 0x02, ...lba32, 0, F, F, 0], preFetch),
  cmd("SYNCHRONIZE CACHE(10)", [Op.SynchronizeCache10, 0x02, ...lba32, 0, F, F, 0], synchronizeCache),
  cmd("READ DEFECT DATA(10)", [Op.ReadDefectData10, 0, 0x1f, 0, 0, 0, 0, F, F, 0], readDefectData),
  cmd("WRITE SAME(10)", [Op.WriteSame10, 0x08, ...lba32, 0, F, F, 0], writeSame),
  cmd("UNMAP", [Op.Unmap, 0x01, 0, 0, 0, 0, 0, F, F, 0], unmap),
  cmd("MODE SELECT(10)", [Op.ModeSelect10, 0x10, 0, 0, 0, 0, 0, F, F, 0], modeSelect),
  cmd("RESERVE(10)", [Op.Reserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0], reserve),
  cmd("RELEASE(10)", [Op.Release10, 0, 0, 0, 0, 0, 0, 0, 0, 0], release),
  cmd("MODE SENSE(10)", [Op.ModeSense10, 0x18, F, F, 0, 0, 0, F, F, 0], modeSense),
  ...PR_IN_ACTIONS.map((name, sa) =>
    cmd(
      `PERSISTENT RESERVE IN ${name}`,
      [Op.PersistentReserveIn, 0x1f, 0, 0, 0, 0, 0, F, F, 0],
      persistentReserveIn,
      {
        serviceAction: sa,
      },
    ),
  ),
  ...PR_OUT_ACTIONS.map((name, sa) =>
    cmd(
      `PERSISTENT RESERVE OUT ${name}`,
      [Op.PersistentReserveOut, 0x1f, F, 0, 0, F, F, F, F, 0],
      persistentReserveOut,
      { serviceAction: sa },
    ),
  ),
  cmd("READ(16)", [Op.Read16, 0x18, ...lba64, F, F, F, F, 0, 0], read),
  cmd("COMPARE AND WRITE", [Op.CompareAndWrite, 0x18, ...lba64, 0, 0, 0, F, 0, 0], compareAndWrite),
  cmd("WRITE(16)", [Op.Write16, 0x18, ...lba64, F, F, F, F, 0, 0], write),
  cmd("ORWRITE(16)", [Op.OrWrite16, 0x18, ...lba64, F, F, F, F, 0, 0], orWrite),
  cmd("WRITE AND VERIFY(16)", [Op.WriteAndVerify16, 0x12, ...lba64, F, F, F, F, 0, 0], write),
  cmd("VERIFY(16)", [Op.Verify16, 0x16, ...lba64, F, F, F, F, 0, 0], verify),
  cmd("PRE-FETCH(16)", [Op.PreFetch16, 0x02, ...lba64, F, F, F, F, 0, 0], preFetch),
  cmd("SYNCHRONIZE CACHE(16)", [Op.SynchronizeCache16, 0x02, ...lba64, F, F, F, F, 0, 0], synchronizeCache),
  cmd("WRITE SAME(16)", [Op.WriteSame16, 0x09, ...lba64, F, F, F, F, 0, 0], writeSame),
  cmd(
    "READ CAPACITY(16)",
    [Op.ServiceActionIn16, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, F, F, F, F, 0, 0],
    readCapacity16,
    {
      serviceAction: ServiceAction.ReadCapacity16,
    },
  ),
  cmd("GET LBA STATUS", [Op.ServiceActionIn16, 0x1f, ...lba64, F, F, F, F, 0, 0], getLbaStatus, {
    serviceAction: ServiceAction.GetLbaStatus,
  }),
  cmd("REPORT LUNS", [Op.ReportLuns, 0, F, 0, 0, 0, F, F, F, F, 0, 0], reportLuns, { uaExempt: true }),
  cmd(
    "REPORT SUPPORTED OPERATION CODES",
    [Op.MaintenanceIn, 0x1f, 0x87, F, F, F, F, F, F, F, 0, 0],
    makeReportSupportedOperationCodes(() => TABLE),
    { serviceAction: ServiceAction.ReportSupportedOperationCodes },
  ),
  cmd(
    "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
    [Op.MaintenanceIn, 0x1f, 0x80, 0, 0, 0, F, F, F, F, 0, 0],
    reportSupportedTaskManagementFunctions,
    { serviceAction: ServiceAction.ReportSupportedTaskManagementFunctions },
  ),
  cmd("READ(12)", [Op.Read12, 0x18, ...lba32, F, F, F, F, 0, 0], read),
  cmd("WRITE(12)", [Op.Write12, 0x18, ...lba32, F, F, F, F, 0, 0], write),
  cmd("WRITE AND VERIFY(12)", [Op.WriteAndVerify12, 0x12, ...lba32, F, F, F, F, 0, 0], write),
  cmd("VERIFY(12)", [Op.Verify12, 0x16, ...lba32, F, F, F, F, 0, 0], verify),
  cmd("READ DEFECT DATA(12)", [Op.ReadDefectData12, 0x1f, 0, 0, 0, 0, F, F, F, F, 0, 0], readDefectData),
];

/** Every supported command, in opcode order. */
export function commandTable(): readonly CommandDescriptor[] {
  return TABLE;
}

export interface CommandLookup {
  readonly descriptor?: CommandDescriptor;
  /** The opcode is known but its SERVICE ACTION is not (INVALID FIELD IN CDB, not INVALID OPCODE). */
  readonly badServiceAction: boolean;
}

// Every answer of lookupCommand is built here once: the lookup runs for every command.
const UNKNOWN_OPCODE: CommandLookup = { descriptor: undefined, badServiceAction: false };
const UNKNOWN_SERVICE_ACTION: CommandLookup = { descriptor: undefined, badServiceAction: true };
const byOpcode = new Map<number, CommandLookup>();
const byServiceAction = new Map<number, Map<number, CommandLookup>>();
for (const c of TABLE) {
  const found: CommandLookup = { descriptor: c, badServiceAction: false };
  if (c.serviceAction === undefined) {
    byOpcode.set(c.opcode, found);
  } else {
    let m = byServiceAction.get(c.opcode);
    if (!m) byServiceAction.set(c.opcode, (m = new Map()));
    m.set(c.serviceAction, found);
  }
}

export function lookupCommand(cdb: Buffer): CommandLookup {
  const op = cdb[0];
  const sas = byServiceAction.get(op);
  if (sas) return sas.get(cdb[1] & 0x1f) ?? UNKNOWN_SERVICE_ACTION;
  return byOpcode.get(op) ?? UNKNOWN_OPCODE;
}
