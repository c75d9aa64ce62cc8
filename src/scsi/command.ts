/**
 * What a command handler sees and the helpers every handler uses to return parameter data or to
 * read its data-out (SPC-4 4.2.5.6 allocation length, 4.2.5.7 parameter list length).
 */
import type { BlockDevice } from "../bdev/bdev.js";
import type { LbaRangeLock } from "./lba_range_lock.js";
import type { ModePages } from "./mode_pages.js";
import type { Reservations } from "./reservations.js";
import type { ScsiTask } from "./task.js";
import type { TaskSet } from "./task_set.js";
import type { UnitAttentions } from "./unit_attention.js";

/** The target-wide facts some commands report (REPORT LUNS, VPD 0x83). */
export interface TargetInfo {
  /** The SCSI target device name (the iSCSI target node name). */
  readonly name: string;
  /** LUN numbers that exist, ascending. */
  lunIds(): number[];
}

/**
 * The logical unit as a command handler sees it: its block device and the per-LU state SAM-5 and
 * SPC-4 define. `LogicalUnit` (lun.ts) implements it; handlers depend on this, not on the LU class
 * that dispatches to them, so the command table and the LU do not import each other.
 */
export interface LogicalUnitView {
  readonly id: number;
  readonly bdev: BlockDevice;
  /** T10 VENDOR IDENTIFICATION for INQUIRY. */
  readonly vendor: string;
  readonly taskSet: TaskSet;
  readonly unitAttentions: UnitAttentions;
  readonly rangeLock: LbaRangeLock;
  readonly mode: ModePages;
  readonly reservations: Reservations;
}

export interface CommandContext {
  readonly task: ScsiTask;
  readonly lu: LogicalUnitView;
  readonly target: TargetInfo;
}

export type CommandHandler = (ctx: CommandContext) => Promise<void> | void;

/**
 * One supported command, as REPORT SUPPORTED OPERATION CODES describes it (SPC-4 6.35): the
 * CDB USAGE DATA marks every bit the handler examines, so the table is the single place that says
 * which fields are accepted.
 */
export interface CommandDescriptor {
  readonly opcode: number;
  /** For opcodes with a SERVICE ACTION field in byte 1 bits 4..0. */
  readonly serviceAction?: number;
  readonly name: string;
  /** CDB USAGE DATA: byte 0 is the opcode, the rest masks of the bits this target looks at. */
  readonly usage: readonly number[];
  readonly handler: CommandHandler;
  /**
   * SPC-4 5.14 / SAM-5 5.14: INQUIRY, REPORT LUNS and REQUEST SENSE execute while a unit
   * attention is pending and do not report it.
   */
  readonly uaExempt?: boolean;
}

/** Return parameter data, cut to the ALLOCATION LENGTH (SPC-4 4.2.5.6). */
export function respond(task: ScsiTask, data: Buffer, allocationLength: number): void {
  const n = Math.min(data.length, allocationLength);
  task.dataIn = n === 0 ? [] : [data.subarray(0, n)];
  task.transferLength = n;
}

/** The data-out of a task as one buffer (parameter lists are small: MODE SELECT, UNMAP, PR OUT). */
export function dataOutBuffer(task: ScsiTask, maxBytes: number): Buffer {
  const parts = task.dataOut;
  if (parts.length === 1) return parts[0].subarray(0, maxBytes);
  return Buffer.concat(parts).subarray(0, maxBytes);
}

/**
 * The first `bytes` of data-out as an I/O vector of subarrays (no copy). Returns fewer bytes when
 * the initiator sent less (its Expected Data Transfer Length was short).
 */
export function dataOutVector(task: ScsiTask, bytes: number): Buffer[] {
  const iov: Buffer[] = [];
  let left = bytes;
  for (const b of task.dataOut) {
    if (left <= 0) break;
    const part = b.length <= left ? b : b.subarray(0, left);
    iov.push(part);
    left -= part.length;
  }
  return iov;
}
