/**
 * One logical unit (SAM-5 logical unit model): a block device with its task set, unit attentions, mode page
 * state and its reservations. execute() runs the SAM-5 command sequence: task attribute → unit
 * attention → CDB checks → reservation conflict → the command.
 */
import { BlockDeviceError, type BlockDevice } from "../bdev/bdev.js";
import { log, type Logger } from "../util/log.js";
import { Op, checkControlByte, cdbLengthOf } from "./cdb.js";
import type { CommandContext, CommandDescriptor, LogicalUnitView, TargetInfo } from "./command.js";
import { lookupCommand } from "./commands.js";
import { LbaRangeLock } from "./lba_range_lock.js";
import { ioDirectionOf, LunStats } from "./lun_stats.js";
import { ModePages } from "./mode_pages.js";
import { Reservations, ReservationConflict } from "./reservations.js";
import { ASC, SenseError, SenseKey, buildSense, invalidCdbField, type AscAscq } from "./sense.js";
import { ScsiStatus, type ITNexus, type ScsiTask } from "./task.js";
import { TaskSet } from "./task_set.js";
import { UnitAttentions } from "./unit_attention.js";

export interface LogicalUnitOptions {
  readonly id: number;
  readonly bdev: BlockDevice;
  /** "<device name>/<lun>", for logs and the reservation state file. */
  readonly name: string;
  readonly vendor: string;
  readonly aptplFile?: string;
}

/** NOT READY, MEDIUM NOT PRESENT after an eject (SBC-3 5.25 START STOP UNIT, LOEJ). */

export class LogicalUnit implements LogicalUnitView {
  readonly id: number;
  readonly bdev: BlockDevice;
  readonly name: string;
  readonly vendor: string;
  readonly taskSet = new TaskSet();
  readonly unitAttentions = new UnitAttentions();
  readonly rangeLock = new LbaRangeLock();
  readonly mode: ModePages;
  readonly reservations: Reservations;
  readonly stats = new LunStats();
  private readonly logger: Logger;

  constructor(opts: LogicalUnitOptions) {
    this.id = opts.id;
    this.bdev = opts.bdev;
    this.name = opts.name;
    this.vendor = opts.vendor;
    this.mode = new ModePages(opts.bdev);
    // SBC-4 4.8 / SPC-4 6.33: a device resized underneath tells every I_T nexus before its next command.
    opts.bdev.onResize?.(() =>
      this.unitAttentions.establishForOthers(undefined, ASC.CAPACITY_DATA_HAS_CHANGED),
    );
    this.logger = log.child({ module: "scsi", lun: opts.name });
    this.reservations = new Reservations({
      lunName: opts.name,
      aptplFile: opts.aptplFile,
      hooks: {
        unitAttention: (keys, asc) => this.unitAttentions.establish(keys, asc),
        abortTasksOf: (keys) => {
          const set = new Set(keys);
          for (const e of this.taskSet.select((x) => set.has(x.nexusKey))) e.task.aborted = true;
        },
      },
    });
  }

  /** Sense data in the format the control mode page selects (D_SENSE, SPC-4 7.5.8). */
  sense(err: SenseError): Buffer {
    return buildSense(this.mode.descriptorSense, err);
  }

  /** Complete `task` with CHECK CONDITION and this sense. */
  checkCondition(task: ScsiTask, key: SenseKey, asc: AscAscq): void {
    task.status = ScsiStatus.CheckCondition;
    task.sense = this.sense(new SenseError(key, asc));
  }

  /** Execute one task through the task set; never throws. */
  async execute(task: ScsiTask, target: TargetInfo): Promise<void> {
    const started = performance.now();
    this.stats.inFlight++;
    const member = this.taskSet.enter(task);
    try {
      if (member.ready) await member.ready;
      if (task.aborted) return;
      // run() checks synchronously and hands back the handler's promise: one await per command here.
      const running = this.run(task, target);
      if (running) await running;
    } catch (e) {
      this.fail(task, e);
    } finally {
      this.taskSet.leave(member);
      this.stats.inFlight--;
      this.count(task, started);
    }
  }

  private count(task: ScsiTask, started: number): void {
    if (task.aborted || task.status !== ScsiStatus.Good) return;
    const direction = ioDirectionOf(task.cdb[0]);
    if (direction === "other") return;
    this.stats[direction].record(task.transferLength, (performance.now() - started) / 1000);
  }

  /** The SAM-5 checks (they throw SenseError), then the command: its handler's promise, if any. */
  private run(task: ScsiTask, target: TargetInfo): Promise<void> | void {
    const cdb = task.cdb;
    const nexusKey = task.nexus.key;
    this.unitAttentions.contact(nexusKey);
    const found = lookupCommand(cdb);
    const desc: CommandDescriptor | undefined = found.descriptor;
    // SAM-5 5.14: a pending unit attention is reported instead of running the command, except for
    // the commands SPC-4 lets through (INQUIRY, REPORT LUNS, REQUEST SENSE).
    if (!desc?.uaExempt) {
      const ua = this.unitAttentions.take(nexusKey);
      if (ua) {
        this.checkCondition(task, SenseKey.UnitAttention, ua);
        return;
      }
    }
    if (!desc) {
      if (found.badServiceAction) throw invalidCdbField(1, 4);
      throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_COMMAND_OPERATION_CODE);
    }
    const length = cdbLengthOf(cdb[0]) ?? cdb.length;
    if (cdb.length < length)
      throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_COMMAND_OPERATION_CODE);
    checkControlByte(cdb, length);
    if (this.reservations.conflicts(task.nexus, cdb)) {
      task.status = ScsiStatus.ReservationConflict;
      return;
    }
    const ctx: CommandContext = { task, lu: this, target };
    return desc.handler(ctx);
  }

  /** Turn whatever a handler threw into a status (never rethrows). */
  fail(task: ScsiTask, e: unknown): void {
    task.dataIn = [];
    if (e instanceof SenseError) {
      task.status = ScsiStatus.CheckCondition;
      task.sense = this.sense(e);
      return;
    }
    if (e instanceof ReservationConflict) {
      task.status = ScsiStatus.ReservationConflict;
      task.sense = undefined;
      return;
    }
    if (e instanceof BlockDeviceError) {
      this.logger.warn({ err: e.message, op: task.cdb[0] }, "block device error");
      task.status = ScsiStatus.CheckCondition;
      task.sense = this.sense(senseForBdevError(e, task.cdb[0]));
      return;
    }
    this.logger.error({ err: e, op: task.cdb[0] }, "internal error executing command");
    task.status = ScsiStatus.CheckCondition;
    task.sense = this.sense(new SenseError(SenseKey.HardwareError, ASC.INTERNAL_TARGET_FAILURE));
  }

  /** The nexus is gone: its SPC-2 reservation and unit attentions go with it (SPC-4 6.13). */
  nexusLost(nexus: ITNexus): void {
    this.unitAttentions.forget(nexus.key);
    this.reservations.nexusLost(nexus);
  }

  /**
   * LOGICAL UNIT RESET side effects (SAM-5 6.6): SPC-2 reservations released,
   * mode parameters back to their defaults, and the reset's unit attention (`asc`) for every nexus.
   */
  reset(asc: AscAscq): void {
    this.reservations.logicalUnitReset();
    this.mode.resetToDefaults();
    this.unitAttentions.establishForOthers(undefined, asc);
  }
}

/** SBC-3 / SPC-4 sense for a block device failure. */
function senseForBdevError(e: BlockDeviceError, opcode: number): SenseError {
  switch (e.kind) {
    case "out-of-range":
      return new SenseError(SenseKey.IllegalRequest, ASC.LBA_OUT_OF_RANGE);
    case "read-only":
      return new SenseError(SenseKey.DataProtect, ASC.WRITE_PROTECTED);
    case "closed":
    case "unavailable":
      return new SenseError(SenseKey.NotReady, ASC.LUN_NOT_READY_CAUSE_NOT_REPORTABLE);
    case "medium":
      return new SenseError(
        SenseKey.MediumError,
        isWriteOpcode(opcode) ? ASC.WRITE_ERROR : ASC.UNRECOVERED_READ_ERROR,
      );
    default:
      return new SenseError(SenseKey.HardwareError, ASC.INTERNAL_TARGET_FAILURE);
  }
}

const WRITE_OPCODES: ReadonlySet<number> = new Set([
  Op.Write6,
  Op.Write10,
  Op.Write12,
  Op.Write16,
  Op.WriteAndVerify10,
  Op.WriteAndVerify12,
  Op.WriteAndVerify16,
  Op.WriteSame10,
  Op.WriteSame16,
  Op.CompareAndWrite,
  Op.OrWrite16,
  Op.Unmap,
]);

function isWriteOpcode(op: number): boolean {
  return WRITE_OPCODES.has(op);
}
