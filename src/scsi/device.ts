/**
 * A SCSI target device (SPDK's spdk_scsi_dev, SAM-5 4.6): the logical units one iSCSI target node
 * exports, routing of tasks to them, and the task management functions of SAM-5 7.
 */
import { join } from "node:path";
import type { BlockDevice } from "../bdev/bdev.js";
import { log, type Logger } from "../util/log.js";
import { Op } from "./cdb.js";
import { respond, type TargetInfo } from "./command.js";
import { inquiryNoLun } from "./inquiry.js";
import { LogicalUnit } from "./lun.js";
import { MAX_LUN } from "./lun_id.js";
import { answerReportLuns } from "./spc.js";
import { ASC, SenseError, SenseKey, fixedSense, invalidCdbField, type AscAscq } from "./sense.js";
import {
  ScsiStatus,
  type ITNexus,
  type ScsiTargetDevice,
  type ScsiTask,
  type TaskManagementRequest,
  type TaskManagementResult,
} from "./task.js";

export interface LunConfig {
  readonly id: number;
  readonly bdev: BlockDevice;
}

export interface ScsiDeviceOptions {
  name: string;
  luns: readonly LunConfig[];
  /** T10 vendor identification for INQUIRY, default "USERTGT". */
  vendor?: string;
  /** Where APTPL reservation state files go; undefined = APTPL=1 is refused. */
  aptplDir?: string;
}

/** File-name-safe form of a target name for per-LU state files. */
function safeFileName(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, "_");
}

export class ScsiDevice implements ScsiTargetDevice, TargetInfo {
  readonly name: string;
  private readonly luns = new Map<number, LogicalUnit>();
  private readonly logger: Logger;
  private readonly vendor: string;
  private readonly aptplDir: string | undefined;

  constructor(opts: ScsiDeviceOptions) {
    this.name = opts.name;
    this.logger = log.child({ module: "scsi", device: opts.name });
    this.vendor = opts.vendor ?? "USERTGT";
    this.aptplDir = opts.aptplDir;
    for (const l of opts.luns) this.luns.set(l.id, this.makeLogicalUnit(l));
  }

  private makeLogicalUnit(l: LunConfig): LogicalUnit {
    if (!Number.isInteger(l.id) || l.id < 0 || l.id > MAX_LUN) {
      throw new Error(`SCSI device ${this.name}: LUN ${l.id} is not an integer in 0..${MAX_LUN}`);
    }
    if (this.luns.has(l.id)) throw new Error(`SCSI device ${this.name}: LUN ${l.id} is configured twice`);
    const aptplFile = this.aptplDir
      ? join(this.aptplDir, `${safeFileName(this.name)}.lun${l.id}.pr.json`)
      : undefined;
    return new LogicalUnit({
      id: l.id,
      bdev: l.bdev,
      name: `${this.name}/${l.id}`,
      vendor: this.vendor,
      aptplFile,
    });
  }

  /**
   * Add a logical unit while initiators are logged in: every nexus that knows another LU of this
   * device gets REPORTED LUNS DATA HAS CHANGED (SPC-4 6.33, SAM-5 5.14) so it rescans.
   */
  async addLun(l: LunConfig): Promise<void> {
    const lu = this.makeLogicalUnit(l);
    await lu.reservations.load();
    if (this.luns.has(l.id)) throw new Error(`SCSI device ${this.name}: LUN ${l.id} is configured twice`);
    this.luns.set(l.id, lu);
    this.lunInventoryChanged(l.id);
    this.logger.info({ lun: l.id, bdev: l.bdev.name }, "logical unit added");
  }

  /**
   * Hot removal (SPDK spdk_scsi_dev_delete_lun): new commands to the LUN get LOGICAL UNIT NOT
   * SUPPORTED at once; those already in its task set run to completion on the still-open block
   * device and are answered as usual; this resolves when the last one has. The other LUs' nexuses
   * get REPORTED LUNS DATA HAS CHANGED.
   */
  async removeLun(id: number): Promise<void> {
    const lu = this.luns.get(id);
    if (!lu) throw new Error(`SCSI device ${this.name}: no LUN ${id}`);
    this.luns.delete(id);
    this.lunInventoryChanged(id);
    await Promise.all(lu.taskSet.select(() => true).map((e) => e.done));
    this.logger.info({ lun: id, bdev: lu.bdev.name }, "logical unit removed");
  }

  /** The LUs backed by `bdev`. */
  lunsOf(bdevName: string): LogicalUnit[] {
    return [...this.luns.values()].filter((lu) => lu.bdev.name === bdevName);
  }

  private lunInventoryChanged(changed: number): void {
    for (const lu of this.luns.values()) {
      if (lu.id !== changed)
        lu.unitAttentions.establishForOthers(undefined, ASC.REPORTED_LUNS_DATA_HAS_CHANGED);
    }
  }

  /** Load persisted (APTPL) reservation state of every LU. */
  async init(): Promise<void> {
    for (const lu of this.luns.values()) await lu.reservations.load();
  }

  lunIds(): number[] {
    return [...this.luns.keys()].sort((a, b) => a - b);
  }

  /** The logical unit with this LUN, for tests and management. */
  logicalUnit(id: number): LogicalUnit | undefined {
    return this.luns.get(id);
  }

  execute(task: ScsiTask): Promise<void> {
    const lu = this.luns.get(task.lun);
    // The LU's own promise, not one more async layer around it: every command passes here.
    if (lu) return lu.execute(task, this);
    try {
      this.executeWithoutLun(task);
    } catch (e) {
      task.dataIn = [];
      task.status = ScsiStatus.CheckCondition;
      task.sense =
        e instanceof SenseError
          ? fixedSense(e.key, e.asc, e.details)
          : fixedSense(SenseKey.HardwareError, ASC.INTERNAL_TARGET_FAILURE);
    }
    return Promise.resolve();
  }

  /**
   * SPC-4 6.6.2 and SAM-5 for an incorrect logical unit: INQUIRY answers with peripheral qualifier 011b,
   * REPORT LUNS works, REQUEST SENSE reports LOGICAL UNIT NOT SUPPORTED, anything else fails.
   */
  private executeWithoutLun(task: ScsiTask): void {
    const cdb = task.cdb;
    switch (cdb[0]) {
      case Op.Inquiry:
        if (cdb[1] & 0x01) throw invalidCdbField(1, 0);
        respond(task, inquiryNoLun(), cdb.readUInt16BE(3));
        return;
      case Op.ReportLuns:
        answerReportLuns(task, this);
        return;
      case Op.RequestSense:
        respond(task, fixedSense(SenseKey.IllegalRequest, ASC.LOGICAL_UNIT_NOT_SUPPORTED), cdb[4]);
        return;
      default:
        throw new SenseError(SenseKey.IllegalRequest, ASC.LOGICAL_UNIT_NOT_SUPPORTED);
    }
  }

  async taskManagement(req: TaskManagementRequest): Promise<TaskManagementResult> {
    const key = req.nexus.key;
    const lu = this.luns.get(req.lun);
    switch (req.fn) {
      case "abort-task": {
        if (!lu) return "no-such-lun";
        const hit = lu.taskSet.select((e) => e.nexusKey === key && e.task.tag === req.referencedTag);
        if (hit.length === 0) return "no-such-task";
        await lu.taskSet.abort(hit);
        return "complete";
      }
      case "abort-task-set": {
        if (!lu) return "no-such-lun";
        await lu.taskSet.abort(lu.taskSet.select((e) => e.nexusKey === key));
        return "complete";
      }
      case "clear-task-set": {
        if (!lu) return "no-such-lun";
        const all = lu.taskSet.select(() => true);
        const others = new Set(all.filter((e) => e.nexusKey !== key).map((e) => e.nexusKey));
        await lu.taskSet.abort(all);
        // SAM-5 7.4 (TAS=0): initiators whose tasks were cleared are told so.
        lu.unitAttentions.establish([...others], ASC.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR);
        return "complete";
      }
      case "logical-unit-reset": {
        if (!lu) return "no-such-lun";
        await this.resetLogicalUnit(lu, key, ASC.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        return "complete";
      }
      case "target-warm-reset":
      case "target-cold-reset":
        // RFC 7143 §11.5.1 / SAM-5 6.3.2: a hard reset resets every LU; the unit attention is the
        // generic POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
        await Promise.all(
          [...this.luns.values()].map((l) =>
            this.resetLogicalUnit(l, key, ASC.POWER_ON_RESET_OR_BUS_DEVICE_RESET),
          ),
        );
        return "complete";
      case "clear-aca":
        return "not-supported";
      default:
        return "not-supported";
    }
  }

  /**
   * SAM-5 7.6: abort every task, telling other initiators whose tasks went (COMMANDS CLEARED BY
   * ANOTHER INITIATOR), then reset the LU's state with the reset's unit attention for every nexus.
   */
  private async resetLogicalUnit(lu: LogicalUnit, issuer: string, asc: AscAscq): Promise<void> {
    this.logger.info({ lun: lu.id }, "logical unit reset");
    const all = lu.taskSet.select(() => true);
    const others = new Set(all.filter((e) => e.nexusKey !== issuer).map((e) => e.nexusKey));
    await lu.taskSet.abort(all);
    lu.reset(asc);
    lu.unitAttentions.establish([...others], ASC.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR);
  }

  nexusLost(nexus: ITNexus): void {
    for (const lu of this.luns.values()) lu.nexusLost(nexus);
  }
}
