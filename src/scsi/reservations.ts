/**
 * Reservations of one logical unit: SPC-4 5.13 persistent reservations (PERSISTENT RESERVE IN/OUT)
 * and SPC-2 reservations (RESERVE/RELEASE 6/10), with the command conflict tables of SPC-4 5.13.1
 * (Table 63) and SBC-3 4.17 (Table 13). The LU (scsi/device.ts) dispatches opcodes
 * 0x5E/0x5F/0x16/0x17/0x56/0x57 here and asks conflicts() before executing any other command.
 *
 * Registrations are kept per initiator port (iSCSI name + ISID) and target port, as SPC-4 defines
 * an I_T nexus; an ALL_TG_PT registration matches every target port, and a SPEC_I_PT TransportID of
 * FORMAT CODE 00b (name only) matches every ISID of that initiator. Registrations outlive the
 * session, so an initiator that logs in again with the same ISID finds its key.
 *
 * APTPL state is a small JSON file (see PersistedState) replaced atomically: temp file, fsync,
 * rename, fsync of the directory.
 */
import { open, readFile, rename, unlink } from "node:fs/promises";
import { dirname, basename, join } from "node:path";
import { log } from "../util/log.js";
import type { ITNexus, ScsiTask } from "./task.js";
import { ASC, SenseError, SenseKey, invalidCdbField, invalidParameterField, type AscAscq } from "./sense.js";
import {
  LU_SCOPE,
  PrInAction,
  PrOutAction,
  PrType,
  encodeIscsiTransportId,
  encodeReadFullStatus,
  encodeReadKeys,
  encodeReadReservation,
  encodeReportCapabilities,
  isAllRegistrants,
  isExclusiveAccess,
  isValidPrType,
  parsePrOutParameters,
  parseRegisterAndMoveParameters,
  registrantsHaveAccess,
  type IscsiInitiatorPortId,
} from "./scsi_pr.js";

/** What the LU does for the reservation logic: unit attentions and task aborts on other nexuses. */
export interface ReservationHooks {
  /** Establish a unit attention with `asc` for each I_T nexus key (ITNexus.key). */
  unitAttention(nexusKeys: readonly string[], asc: AscAscq): void;
  /** Abort the tasks of these I_T nexuses (PREEMPT AND ABORT, SPC-4 5.13.11.2.5). */
  abortTasksOf(nexusKeys: readonly string[]): void;
}

export interface ReservationsOptions {
  readonly lunName: string;
  /** Where APTPL state lives; without it APTPL=1 is refused and PTPL_C is reported as 0. */
  readonly aptplFile?: string;
  readonly hooks: ReservationHooks;
}

/** Thrown when the caller must answer RESERVATION CONFLICT status (no sense data). */
export class ReservationConflict extends Error {
  constructor(message = "reservation conflict") {
    super(message);
    this.name = "ReservationConflict";
  }
}

const OP_TEST_UNIT_READY = 0x00;
const OP_REQUEST_SENSE = 0x03;
const OP_INQUIRY = 0x12;
const OP_RESERVE6 = 0x16;
const OP_RELEASE6 = 0x17;
const OP_START_STOP_UNIT = 0x1b;
const OP_PREVENT_ALLOW = 0x1e;
const OP_READ_CAPACITY10 = 0x25;
const OP_LOG_SENSE = 0x4d;
const OP_RESERVE10 = 0x56;
const OP_RELEASE10 = 0x57;
const OP_PERSISTENT_RESERVE_IN = 0x5e;
const OP_PERSISTENT_RESERVE_OUT = 0x5f;
const OP_SERVICE_ACTION_IN16 = 0x9e;
const OP_REPORT_LUNS = 0xa0;
const OP_MAINTENANCE_IN = 0xa3;
const OP_SERVICE_ACTION_IN12 = 0xab;

/** Upper bound on registrations per LU; beyond it INSUFFICIENT REGISTRATION RESOURCES. */
const MAX_REGISTRATIONS = 1024;

type CommandClass = "allowed" | "read" | "write";

/**
 * How a command fares under a persistent reservation held by someone else (SPC-4 Table 63,
 * SBC-3 Table 13): "allowed" never conflicts, "read" conflicts only under Exclusive Access types,
 * "write" conflicts under every type. Unknown commands count as "write".
 */
function commandClass(cdb: Buffer): CommandClass {
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
function allowedUnderSpc2Reservation(cdb: Buffer): boolean {
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

/** One registration: a reservation key for an initiator port on one (or every) target port. */
interface Registration {
  key: bigint;
  readonly port: IscsiInitiatorPortId;
  /** Lower-cased target port ("<target>,t,0x<tpgt>"), or undefined for ALL_TG_PT. */
  readonly targetPort: string | undefined;
  readonly relativeTargetPortId: number;
  readonly transportId: Buffer;
  /** The nexus that registered, so its unit attentions reach it even before it sends again. */
  readonly originNexusKey: string | undefined;
}

interface PersistentReservation {
  /** The holder for WE/EA/RO types; undefined for all-registrants types (every registrant holds). */
  readonly holder: Registration | undefined;
  readonly type: PrType;
}

/** The APTPL file's content (version 1). Keys are 16 hex digits. */
interface PersistedState {
  readonly version: 1;
  readonly lun: string;
  readonly generation: number;
  readonly registrations: {
    key: string;
    initiatorName: string;
    isid?: string;
    targetPort?: string;
    relativeTargetPortId: number;
  }[];
  /** Index into registrations of the holder, -1 for all-registrants types. */
  readonly reservation: { type: number; holder: number } | null;
}

function portMatches(port: IscsiInitiatorPortId, nexus: ITNexus): boolean {
  return (
    port.name === nexus.initiatorName.toLowerCase() &&
    (port.isid === undefined || port.isid === nexus.isid.toLowerCase())
  );
}

/**
 * Whether `reg` already applies to initiator port `port` on `targetPort` (undefined: every target
 * port): a name-only registration covers every ISID, an ALL_TG_PT one every target port.
 */
function covers(reg: Registration, port: IscsiInitiatorPortId, targetPort: string | undefined): boolean {
  return (
    reg.port.name === port.name &&
    (reg.port.isid === undefined || reg.port.isid === port.isid) &&
    (reg.targetPort === undefined || reg.targetPort === targetPort)
  );
}

function samePort(a: IscsiInitiatorPortId, b: IscsiInitiatorPortId): boolean {
  return a.name === b.name && a.isid === b.isid;
}

export class Reservations {
  private readonly lunName: string;
  private readonly aptplFile: string | undefined;
  private readonly hooks: ReservationHooks;
  private readonly log;
  private registrations: Registration[] = [];
  private reservation: PersistentReservation | undefined = undefined;
  /** PRgeneration (SPC-4 6.14.2): bumped by REGISTER, CLEAR, PREEMPT*, REGISTER AND MOVE. */
  private generation = 0;
  /** Activate Persist Through Power Loss, from the last REGISTER-type command. */
  private aptpl = false;
  /** SPC-2 reservation holder (ITNexus.key). */
  private spc2Holder: string | undefined = undefined;
  /** I_T nexuses seen on this LU, so unit attentions can reach every nexus a registration covers. */
  private readonly nexuses = new Map<string, ITNexus>();
  private readonly seen = new WeakSet<ITNexus>();
  private persistChain: Promise<void> = Promise.resolve();

  constructor(o: ReservationsOptions) {
    this.lunName = o.lunName;
    this.aptplFile = o.aptplFile;
    this.hooks = o.hooks;
    this.log = log.child({ module: "scsi-pr", lun: o.lunName });
  }

  /** Restore APTPL state from aptplFile if present (SPC-4 5.13.5). A malformed file is an error naming it. */
  async load(): Promise<void> {
    if (this.aptplFile === undefined) return;
    let text: string;
    try {
      text = await readFile(this.aptplFile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new Error(`${this.lunName}: cannot read APTPL file ${this.aptplFile}: ${(err as Error).message}`);
    }
    const fail = (what: string): never => {
      throw new Error(`${this.lunName}: APTPL file ${this.aptplFile}: ${what}`);
    };
    let state: PersistedState;
    try {
      state = JSON.parse(text) as PersistedState;
    } catch (err) {
      return fail(`not JSON (${(err as Error).message})`);
    }
    if (typeof state !== "object" || state === null || state.version !== 1) fail("unknown version");
    if (!Number.isInteger(state.generation) || state.generation < 0) fail("bad generation");
    if (!Array.isArray(state.registrations)) fail("registrations is not a list");
    const regs: Registration[] = state.registrations.map((r, i) => {
      if (typeof r !== "object" || r === null) fail(`registration ${i} is not an object`);
      if (typeof r.key !== "string" || !/^[0-9a-f]{16}$/.test(r.key)) fail(`registration ${i}: bad key`);
      if (typeof r.initiatorName !== "string" || r.initiatorName === "")
        fail(`registration ${i}: bad initiatorName`);
      if (r.isid !== undefined && (typeof r.isid !== "string" || !/^[0-9a-f]{12}$/.test(r.isid)))
        fail(`registration ${i}: bad isid`);
      if (r.targetPort !== undefined && typeof r.targetPort !== "string")
        fail(`registration ${i}: bad targetPort`);
      if (!Number.isInteger(r.relativeTargetPortId)) fail(`registration ${i}: bad relativeTargetPortId`);
      const port: IscsiInitiatorPortId =
        r.isid !== undefined ? { name: r.initiatorName, isid: r.isid } : { name: r.initiatorName };
      return {
        key: BigInt(`0x${r.key}`),
        port,
        targetPort: r.targetPort,
        relativeTargetPortId: r.relativeTargetPortId,
        transportId: encodeIscsiTransportId(port),
        originNexusKey: undefined,
      };
    });
    let reservation: PersistentReservation | undefined;
    if (state.reservation !== null && state.reservation !== undefined) {
      const { type, holder } = state.reservation;
      if (!isValidPrType(type)) return fail("bad reservation type");
      if (isAllRegistrants(type)) {
        if (regs.length === 0) fail("all-registrants reservation without registrants");
        reservation = { holder: undefined, type };
      } else {
        if (!Number.isInteger(holder) || holder < 0 || holder >= regs.length) fail("bad reservation holder");
        reservation = { holder: regs[holder], type };
      }
    }
    this.registrations = regs;
    this.reservation = reservation;
    this.generation = state.generation >>> 0;
    this.aptpl = true;
    this.log.info({ file: this.aptplFile, registrations: regs.length }, "restored APTPL reservation state");
  }

  /** True when `cdb` from `nexus` must end in RESERVATION CONFLICT. */
  conflicts(nexus: ITNexus, cdb: Buffer): boolean {
    this.touch(nexus);
    const op = cdb[0];
    if (this.spc2Holder !== undefined) {
      // SPC-4 5.13.3 (and SPC-2 5.5.1): while an SPC-2 reservation exists, every PERSISTENT
      // RESERVE IN/OUT conflicts, whoever sends it.
      if (op === OP_PERSISTENT_RESERVE_IN || op === OP_PERSISTENT_RESERVE_OUT) return true;
      if (this.spc2Holder !== nexus.key && !allowedUnderSpc2Reservation(cdb)) return true;
    }
    // RESERVE/RELEASE follow SPC-4 5.13.3 in reserve()/release(); PR OUT checks keys itself.
    if (
      op === OP_RESERVE6 ||
      op === OP_RESERVE10 ||
      op === OP_RELEASE6 ||
      op === OP_RELEASE10 ||
      op === OP_PERSISTENT_RESERVE_IN ||
      op === OP_PERSISTENT_RESERVE_OUT
    ) {
      return false;
    }
    const res = this.reservation;
    if (!res) return false;
    if (this.hasFullAccess(nexus, res)) return false;
    const cls = commandClass(cdb);
    if (cls === "allowed") return false;
    if (cls === "read") return isExclusiveAccess(res.type);
    return true;
  }

  async persistentReserveIn(task: ScsiTask): Promise<void> {
    const { nexus, cdb } = task;
    this.touch(nexus);
    if (this.spc2Holder !== undefined)
      throw new ReservationConflict(`${this.lunName}: LU has an SPC-2 reservation`);
    if (cdb.length < 10) throw invalidCdbField(0);
    const action = cdb[1] & 0x1f;
    const allocationLength = cdb.readUInt16BE(7);
    let data: Buffer;
    switch (action) {
      case PrInAction.ReadKeys:
        data = encodeReadKeys(
          this.generation,
          this.registrations.map((r) => r.key),
        );
        break;
      case PrInAction.ReadReservation: {
        const res = this.reservation;
        data = encodeReadReservation(
          this.generation,
          res && { key: isAllRegistrants(res.type) ? 0n : (res.holder?.key ?? 0n), type: res.type },
        );
        break;
      }
      case PrInAction.ReportCapabilities:
        data = encodeReportCapabilities({
          crh: true,
          sipC: true,
          atpC: true,
          ptplC: this.aptplFile !== undefined,
          ptplA: this.aptpl,
          // 001b: TEST UNIT READY passes Write Exclusive and Exclusive Access reservations.
          allowCommands: 1,
        });
        break;
      case PrInAction.ReadFullStatus: {
        const res = this.reservation;
        data = encodeReadFullStatus(
          this.generation,
          this.registrations.map((r) => {
            const holder = res !== undefined && (isAllRegistrants(res.type) || res.holder === r);
            return {
              key: r.key,
              allTgPt: r.targetPort === undefined,
              holder,
              type: holder ? res?.type : undefined,
              relativeTargetPortId: r.relativeTargetPortId,
              transportId: r.transportId,
            };
          }),
        );
        break;
      }
      default:
        throw invalidCdbField(1, 4);
    }
    const out = data.subarray(0, Math.min(allocationLength, data.length));
    task.dataIn.push(out);
    task.transferLength = out.length;
  }

  async persistentReserveOut(task: ScsiTask): Promise<void> {
    const { nexus, cdb } = task;
    this.touch(nexus);
    if (this.spc2Holder !== undefined)
      throw new ReservationConflict(`${this.lunName}: LU has an SPC-2 reservation`);
    if (cdb.length < 10) throw invalidCdbField(0);
    const action = cdb[1] & 0x1f;
    const scope = cdb[2] >> 4;
    const type = cdb[2] & 0x0f;
    const length = cdb.readUInt32BE(5);
    task.transferLength = length;
    if (action > PrOutAction.RegisterAndMove) throw invalidCdbField(1, 4);
    const list = task.dataOut.length === 1 ? task.dataOut[0] : Buffer.concat(task.dataOut);
    if (action === PrOutAction.RegisterAndMove) {
      this.registerAndMove(nexus, list, length, scope, type);
    } else {
      const p = parsePrOutParameters(list, length);
      const reg = this.registrationOf(nexus);
      const isRegisterType =
        action === PrOutAction.Register || action === PrOutAction.RegisterAndIgnoreExistingKey;
      // SPC-4 6.15.3: SPEC_I_PT is valid only with REGISTER.
      if (p.specIPt && action !== PrOutAction.Register) throw invalidParameterField(20, 3);
      if (isRegisterType && p.aptpl && this.aptplFile === undefined) throw invalidParameterField(20, 0);
      // SPC-4 5.13.7: only REGISTER-type commands may come from an unregistered I_T nexus, and
      // every other service action needs the registered key.
      if (!isRegisterType && (reg === undefined || reg.key !== p.reservationKey)) {
        throw new ReservationConflict(
          `${this.lunName}: PR OUT service action ${action} from ${nexus.initiatorPort}`,
        );
      }
      switch (action) {
        case PrOutAction.Register:
        case PrOutAction.RegisterAndIgnoreExistingKey:
          this.register(nexus, reg, p, action === PrOutAction.RegisterAndIgnoreExistingKey);
          this.aptpl = p.aptpl;
          break;
        case PrOutAction.Reserve:
          this.checkScopeAndType(scope, type);
          this.reserveService(nexus, reg as Registration, type as PrType);
          break;
        case PrOutAction.Release:
          this.checkScopeAndType(scope, type);
          this.releaseService(nexus, reg as Registration, type as PrType);
          break;
        case PrOutAction.Clear:
          this.clear(nexus);
          break;
        case PrOutAction.Preempt:
        case PrOutAction.PreemptAndAbort:
          this.checkScopeAndType(scope, type);
          this.preempt(
            nexus,
            reg as Registration,
            p.serviceActionKey,
            type as PrType,
            action === PrOutAction.PreemptAndAbort,
          );
          break;
      }
    }
    await this.persist();
  }

  /** RESERVE(6)/RESERVE(10), SPC-2 7.21/7.22 with the CRH=1 exceptions of SPC-4 5.13.3. */
  reserve(task: ScsiTask): void {
    const { nexus, cdb } = task;
    this.touch(nexus);
    // Extent reservations (RESERVE(6) EXTENT), third-party and long-ID reservations (RESERVE(10)
    // 3RDPTY, LONGID) are obsolete and not supported.
    if (cdb[0] === OP_RESERVE6 && (cdb[1] & 0x01) !== 0) throw invalidCdbField(1, 0);
    if (cdb[0] === OP_RESERVE10 && (cdb[1] & 0x12) !== 0)
      throw invalidCdbField(1, (cdb[1] & 0x10) !== 0 ? 4 : 1);
    if (this.persistentStateOverrides(nexus, "RESERVE")) return;
    if (this.spc2Holder !== undefined && this.spc2Holder !== nexus.key) {
      throw new ReservationConflict(`${this.lunName}: LU reserved by another I_T nexus`);
    }
    this.spc2Holder = nexus.key;
  }

  /** RELEASE(6)/RELEASE(10), SPC-2 7.17/7.18: releasing someone else's reservation is a no-op. */
  release(task: ScsiTask): void {
    const { nexus, cdb } = task;
    this.touch(nexus);
    if (cdb[0] === OP_RELEASE10 && (cdb[1] & 0x12) !== 0)
      throw invalidCdbField(1, (cdb[1] & 0x10) !== 0 ? 4 : 1);
    if (this.persistentStateOverrides(nexus, "RELEASE")) return;
    if (this.spc2Holder === nexus.key) this.spc2Holder = undefined;
  }

  /**
   * SPC-4 5.13.3 (CRH=1): RESERVE/RELEASE from a persistent reservation holder, or from a registrant
   * under a registrants-only or all-registrants type, completes with GOOD and changes nothing (true).
   * Otherwise, while any registration exists, SPC-2 5.5.1 makes every RESERVE and RELEASE conflict.
   * Without registrations (false) the command is processed as SPC-2 defines.
   */
  private persistentStateOverrides(nexus: ITNexus, what: string): boolean {
    if (this.reservation && this.hasFullAccess(nexus, this.reservation)) return true;
    if (this.registrations.length > 0) {
      throw new ReservationConflict(
        `${this.lunName}: ${what} while persistent reservation keys are registered`,
      );
    }
    return false;
  }

  /** I_T nexus loss releases its SPC-2 reservation (SPC-2 5.5.1); registrations survive (SPC-4 5.13.4). */
  nexusLost(nexus: ITNexus): void {
    const key = nexus.key;
    if (this.spc2Holder === key) this.spc2Holder = undefined;
    // A reinstated session may already use the same key with a new ITNexus object: keep that one.
    if (this.nexuses.get(key) === nexus) this.nexuses.delete(key);
    this.seen.delete(nexus);
  }

  /** LOGICAL UNIT RESET (and target resets) release SPC-2 reservations; persistent ones stay. */
  logicalUnitReset(): void {
    this.spc2Holder = undefined;
  }

  // ---- PERSISTENT RESERVE OUT service actions ----

  /** REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4 5.13.7). */
  private register(
    nexus: ITNexus,
    reg: Registration | undefined,
    p: ReturnType<typeof parsePrOutParameters>,
    ignoreKey: boolean,
  ): void {
    const sark = p.serviceActionKey;
    if (reg === undefined) {
      if (!ignoreKey && p.reservationKey !== 0n) {
        throw new ReservationConflict(
          `${this.lunName}: REGISTER with a reservation key from an unregistered nexus`,
        );
      }
      if (sark === 0n) return; // nothing to register, nothing changes (SPC-4 5.13.7.2)
      const targetPort = p.allTgPt ? undefined : nexus.targetPort.toLowerCase();
      const added: Registration[] = [
        {
          key: sark,
          port: { name: nexus.initiatorName.toLowerCase(), isid: nexus.isid.toLowerCase() },
          targetPort,
          relativeTargetPortId: nexus.portalGroupTag,
          transportId: nexus.transportId(),
          originNexusKey: nexus.key,
        },
      ];
      for (const [i, port] of p.transportIds.entries()) {
        // A TransportID naming an already registered or repeated initiator port is invalid.
        const dup =
          this.registrations.some((r) => covers(r, port, targetPort)) ||
          added.some((r) => samePort(r.port, port));
        if (dup) throw invalidParameterField(28 + i * 4);
        added.push({
          key: sark,
          port,
          targetPort,
          relativeTargetPortId: nexus.portalGroupTag,
          transportId: encodeIscsiTransportId(port),
          originNexusKey: undefined,
        });
      }
      if (this.registrations.length + added.length > MAX_REGISTRATIONS) {
        throw new SenseError(SenseKey.IllegalRequest, ASC.INSUFFICIENT_REGISTRATION_RESOURCES);
      }
      this.registrations.push(...added);
      this.bumpGeneration();
      return;
    }
    if (!ignoreKey && p.reservationKey !== reg.key) {
      throw new ReservationConflict(`${this.lunName}: REGISTER with a wrong reservation key`);
    }
    // SPC-4 6.15.3: SPEC_I_PT from a registered I_T nexus is invalid.
    if (p.specIPt) throw invalidParameterField(20, 3);
    if (sark === 0n) this.unregister(reg);
    else reg.key = sark;
    this.bumpGeneration();
  }

  /** Remove one registration and release what it held (SPC-4 5.13.10.2, 5.13.11.2.2). */
  private unregister(reg: Registration): void {
    const uaKeys = this.nexusKeysOf([reg]);
    this.registrations = this.registrations.filter((r) => r !== reg);
    const res = this.reservation;
    if (!res) return;
    if (isAllRegistrants(res.type)) {
      // An all-registrants reservation lasts until the last registrant goes.
      if (this.registrations.length === 0) this.reservation = undefined;
    } else if (res.holder === reg) {
      this.reservation = undefined;
      if (registrantsHaveAccess(res.type)) {
        this.unitAttention(this.nexusKeysOf(this.registrations), ASC.RESERVATIONS_RELEASED, uaKeys);
      }
    }
  }

  /** RESERVE service action (SPC-4 5.13.9). */
  private reserveService(nexus: ITNexus, reg: Registration, type: PrType): void {
    const res = this.reservation;
    if (!res) {
      this.reservation = { holder: isAllRegistrants(type) ? undefined : reg, type };
      return;
    }
    // Reserving again what one already holds, with the same type, is a no-op; anything else conflicts.
    if (this.isHolder(nexus, res) && res.type === type) return;
    throw new ReservationConflict(`${this.lunName}: LU already has a persistent reservation`);
  }

  /** RELEASE service action (SPC-4 5.13.11.2). */
  private releaseService(nexus: ITNexus, reg: Registration, type: PrType): void {
    const res = this.reservation;
    if (!res || !this.isHolder(nexus, res)) return; // GOOD, nothing to release
    if (res.type !== type) {
      throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_RELEASE_OF_PERSISTENT_RESERVATION);
    }
    this.reservation = undefined;
    if (registrantsHaveAccess(type)) {
      const others = this.registrations.filter((r) => r !== reg);
      this.unitAttention(this.nexusKeysOf(others), ASC.RESERVATIONS_RELEASED, [nexus.key]);
    }
  }

  /** CLEAR (SPC-4 5.13.11.2.6): drop the reservation and every registration. */
  private clear(nexus: ITNexus): void {
    const keys = this.nexusKeysOf(this.registrations);
    this.registrations = [];
    this.reservation = undefined;
    this.unitAttention(keys, ASC.RESERVATIONS_PREEMPTED, [nexus.key]);
    this.bumpGeneration();
  }

  /** PREEMPT and PREEMPT AND ABORT (SPC-4 5.13.11.2.4, 5.13.11.2.5). */
  private preempt(nexus: ITNexus, reg: Registration, sark: bigint, type: PrType, abort: boolean): void {
    const res = this.reservation;
    const othersWith = (key: bigint): Registration[] =>
      this.registrations.filter((r) => r !== reg && r.key === key);
    let removed: Registration[];
    let typeChanged = false;
    if (res && isAllRegistrants(res.type) && sark === 0n) {
      // SPC-4 5.13.11.2.4.3: with an all-registrants reservation a zero key preempts everyone else.
      removed = this.registrations.filter((r) => r !== reg);
      this.reservation = { holder: isAllRegistrants(type) ? undefined : reg, type };
      typeChanged = res.type !== type;
    } else if (res && !isAllRegistrants(res.type) && res.holder !== undefined && sark === res.holder.key) {
      // Preempting the holder: its registrations go and the sender takes the reservation.
      removed = othersWith(sark);
      this.reservation = { holder: isAllRegistrants(type) ? undefined : reg, type };
      typeChanged = res.type !== type;
    } else {
      // Only registrations are preempted; the reservation (if any) stays as it is.
      if (sark === 0n) throw invalidParameterField(8);
      removed = othersWith(sark);
      if (removed.length === 0) {
        throw new ReservationConflict(`${this.lunName}: PREEMPT names no registered key`);
      }
    }
    const removedKeys = this.nexusKeysOf(removed);
    this.registrations = this.registrations.filter((r) => !removed.includes(r));
    if (this.reservation && isAllRegistrants(this.reservation.type) && this.registrations.length === 0) {
      this.reservation = undefined;
    }
    if (abort) this.hooks.abortTasksOf(removedKeys.filter((k) => k !== nexus.key));
    this.unitAttention(removedKeys, ASC.REGISTRATIONS_PREEMPTED, [nexus.key]);
    if (typeChanged) {
      // SPC-4 5.13.11.2.4.3: remaining registrants learn that the reservation changed.
      const remaining = this.nexusKeysOf(this.registrations.filter((r) => r !== reg));
      this.unitAttention(remaining, ASC.RESERVATIONS_RELEASED, [nexus.key, ...removedKeys]);
    }
    this.bumpGeneration();
  }

  /** REGISTER AND MOVE (SPC-4 5.13.8): hand the reservation to another I_T nexus. */
  private registerAndMove(nexus: ITNexus, list: Buffer, length: number, scope: number, type: number): void {
    const p = parseRegisterAndMoveParameters(list, length);
    const reg = this.registrationOf(nexus);
    if (reg === undefined || reg.key !== p.reservationKey) {
      throw new ReservationConflict(
        `${this.lunName}: REGISTER AND MOVE from an unregistered nexus or with a wrong key`,
      );
    }
    const res = this.reservation;
    if (!res || isAllRegistrants(res.type) || res.holder !== reg) {
      throw new ReservationConflict(
        `${this.lunName}: REGISTER AND MOVE from a nexus that holds no reservation`,
      );
    }
    this.checkScopeAndType(scope, type);
    if (p.serviceActionKey === 0n) throw invalidParameterField(8);
    if (p.aptpl && this.aptplFile === undefined) throw invalidParameterField(17, 0);
    const targetPort =
      `${nexus.targetName},t,0x${p.relativeTargetPortId.toString(16).padStart(4, "0")}`.toLowerCase();
    if (portMatches(p.destination, nexus) && targetPort === nexus.targetPort.toLowerCase()) {
      // SPC-4 5.13.8: moving to the I_T nexus that sends the command is invalid.
      throw invalidParameterField(24);
    }
    // The destination may already be registered, possibly through a broader registration.
    let dest = this.registrations.find((r) => covers(r, p.destination, targetPort));
    if (dest) {
      dest.key = p.serviceActionKey;
    } else {
      if (this.registrations.length >= MAX_REGISTRATIONS) {
        throw new SenseError(SenseKey.IllegalRequest, ASC.INSUFFICIENT_REGISTRATION_RESOURCES);
      }
      dest = {
        key: p.serviceActionKey,
        port: p.destination,
        targetPort,
        relativeTargetPortId: p.relativeTargetPortId,
        transportId: encodeIscsiTransportId(p.destination),
        originNexusKey: undefined,
      };
      this.registrations.push(dest);
    }
    this.reservation = { holder: dest, type: type as PrType };
    if (p.unreg) this.registrations = this.registrations.filter((r) => r !== reg);
    this.aptpl = p.aptpl;
    this.bumpGeneration();
  }

  // ---- helpers ----

  private checkScopeAndType(scope: number, type: number): asserts type is PrType {
    if (scope !== LU_SCOPE) throw invalidCdbField(2, 7);
    if (!isValidPrType(type)) throw invalidCdbField(2, 3);
  }

  private touch(nexus: ITNexus): void {
    // conflicts() runs before every command: skip building the key string for a known nexus.
    if (this.seen.has(nexus)) return;
    this.seen.add(nexus);
    this.nexuses.set(nexus.key, nexus);
  }

  private matches(reg: Registration, nexus: ITNexus): boolean {
    return (
      portMatches(reg.port, nexus) &&
      (reg.targetPort === undefined || reg.targetPort === nexus.targetPort.toLowerCase())
    );
  }

  private registrationOf(nexus: ITNexus): Registration | undefined {
    return this.registrations.find((r) => this.matches(r, nexus));
  }

  /** Reservation holder (SPC-4 5.13.10): the reserving nexus, or any registrant for all-registrants types. */
  private isHolder(nexus: ITNexus, res: PersistentReservation): boolean {
    const reg = this.registrationOf(nexus);
    if (reg === undefined) return false;
    return isAllRegistrants(res.type) || res.holder === reg;
  }

  /** The holder, or a registrant under a registrants-only / all-registrants type (SPC-4 Table 63). */
  private hasFullAccess(nexus: ITNexus, res: PersistentReservation): boolean {
    const reg = this.registrationOf(nexus);
    if (reg === undefined) return false;
    return res.holder === reg || registrantsHaveAccess(res.type);
  }

  /** Every known I_T nexus key a set of registrations covers. */
  private nexusKeysOf(regs: readonly Registration[]): string[] {
    const keys = new Set<string>();
    for (const r of regs) {
      if (r.originNexusKey !== undefined) keys.add(r.originNexusKey);
      for (const [key, n] of this.nexuses) if (this.matches(r, n)) keys.add(key);
    }
    return [...keys];
  }

  private unitAttention(keys: readonly string[], asc: AscAscq, except: readonly string[]): void {
    const to = keys.filter((k) => !except.includes(k));
    if (to.length > 0) this.hooks.unitAttention(to, asc);
  }

  private bumpGeneration(): void {
    this.generation = (this.generation + 1) >>> 0;
  }

  /**
   * Save (APTPL=1) or forget (APTPL=0) the state. The snapshot is taken now, so writes land in
   * command order; a failed write is reported to the initiator as HARDWARE ERROR.
   */
  private async persist(): Promise<void> {
    const file = this.aptplFile;
    if (file === undefined) return;
    const snapshot = this.aptpl ? JSON.stringify(this.snapshot(), null, 1) : undefined;
    const write = this.persistChain.then(() =>
      snapshot === undefined ? removeIfPresent(file) : writeFileAtomically(file, snapshot),
    );
    this.persistChain = write.catch(() => undefined);
    try {
      await write;
    } catch (err) {
      this.log.error({ err, file }, "cannot save APTPL reservation state");
      throw new SenseError(SenseKey.HardwareError, ASC.INTERNAL_TARGET_FAILURE);
    }
  }

  private snapshot(): PersistedState {
    const res = this.reservation;
    return {
      version: 1,
      lun: this.lunName,
      generation: this.generation,
      registrations: this.registrations.map((r) => ({
        key: r.key.toString(16).padStart(16, "0"),
        initiatorName: r.port.name,
        ...(r.port.isid !== undefined ? { isid: r.port.isid } : {}),
        ...(r.targetPort !== undefined ? { targetPort: r.targetPort } : {}),
        relativeTargetPortId: r.relativeTargetPortId,
      })),
      reservation: res
        ? { type: res.type, holder: res.holder === undefined ? -1 : this.registrations.indexOf(res.holder) }
        : null,
    };
  }
}

async function removeIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

/** Write `text` to `file` so that a crash leaves either the old or the new content. */
async function writeFileAtomically(file: string, text: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, "w", 0o600);
  try {
    await fh.writeFile(text, "utf8");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  // Make the rename itself durable.
  const dir = await open(dirname(file), "r");
  try {
    await dir.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic.
  } finally {
    await dir.close();
  }
}
