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
 * The conflict tables are in pr_conflicts.ts, the registration model in pr_registration.ts, the
 * parameter data formats in scsi_pr.ts and the APTPL state file (a small JSON file replaced
 * atomically) in aptpl_file.ts.
 */
import { readFile } from "node:fs/promises";
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
} from "./scsi_pr.js";
import { decodeAptplState, encodeAptplState, removeIfPresent, writeFileAtomically } from "./aptpl_file.js";
import {
  OP_PERSISTENT_RESERVE_IN,
  OP_PERSISTENT_RESERVE_OUT,
  OP_RELEASE10,
  OP_RELEASE6,
  OP_RESERVE10,
  OP_RESERVE6,
  allowedUnderSpc2Reservation,
  commandClass,
} from "./pr_conflicts.js";
import {
  covers,
  portMatches,
  samePort,
  type PersistentReservation,
  type Registration,
} from "./pr_registration.js";

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

/** Upper bound on registrations per LU; beyond it INSUFFICIENT REGISTRATION RESOURCES. */
const MAX_REGISTRATIONS = 1024;

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
    const state = decodeAptplState(text, fail);
    this.registrations = state.registrations;
    this.reservation = state.reservation;
    this.generation = state.generation;
    this.aptpl = true;
    this.log.info(
      { file: this.aptplFile, registrations: state.registrations.length },
      "restored APTPL reservation state",
    );
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
    const snapshot = this.aptpl
      ? JSON.stringify(
          encodeAptplState(this.lunName, this.generation, this.registrations, this.reservation),
          null,
          1,
        )
      : undefined;
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
}
