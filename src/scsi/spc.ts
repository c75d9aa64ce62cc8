/**
 * SPC-4 primary commands: TEST UNIT READY, REQUEST SENSE, REPORT LUNS, REPORT SUPPORTED OPERATION
 * CODES, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, PREVENT ALLOW MEDIUM REMOVAL, and the hand-off
 * of PERSISTENT RESERVE IN/OUT and RESERVE/RELEASE to the LU's reservations.
 */
import { respond, type CommandContext, type CommandDescriptor, type TargetInfo } from "./command.js";
import type { ScsiTask } from "./task.js";
import { encodeLun } from "./lun_id.js";
import { ASC, SenseError, SenseKey, buildSense, invalidCdbField } from "./sense.js";

/** TEST UNIT READY (SPC-4 6.37): a virtual disk is always ready; unit attentions are reported before. */
export function testUnitReady(_ctx: CommandContext): void {}

/**
 * SPC-4 6.29: report (and clear) a pending unit attention, else the current condition of the LU,
 * else NO SENSE; in the format the DESC bit asks for.
 */
export function requestSense(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const desc = (task.cdb[1] & 0x01) !== 0;
  if (task.cdb[1] & 0xfe) throw invalidCdbField(1);
  const ua = lu.unitAttentions.take(task.nexus.key);
  let err: SenseError;
  if (ua) err = new SenseError(SenseKey.UnitAttention, ua);
  else err = new SenseError(SenseKey.NoSense, ASC.NO_ADDITIONAL_SENSE);
  respond(task, buildSense(desc, err), task.cdb[4]);
}

/** SPC-4 6.33: SELECT REPORT 00h/02h list every LUN; 01h only well-known LUNs (none here). */
export function reportLuns(ctx: CommandContext): void {
  answerReportLuns(ctx.task, ctx.target);
}

/** REPORT LUNS without a logical unit (it works on any LUN, SPC-4 6.33). */
export function answerReportLuns(task: ScsiTask, target: TargetInfo): void {
  const select = task.cdb[2];
  if (select > 0x02) throw invalidCdbField(2);
  const alloc = task.cdb.readUInt32BE(6);
  const ids = select === 0x01 ? [] : target.lunIds();
  const data = Buffer.alloc(8 + 8 * ids.length);
  data.writeUInt32BE(8 * ids.length, 0);
  ids.forEach((id, i) => encodeLun(id, data, 8 + 8 * i));
  respond(task, data, alloc);
}

/** SBC-3 5.14 / SPC-4 6.13: PREVENT=01b blocks medium removal for this nexus until allowed. */
export function preventAllowMediumRemoval(ctx: CommandContext): void {
  const prevent = ctx.task.cdb[4] & 0x03;
  // With a non-removable medium (RMB 0) there is nothing to lock: the command is checked and
  // accepted, as LIO and tgt do (SBC-3 5.14).
  if (prevent > 1) throw invalidCdbField(4, 1);
}

export async function persistentReserveIn(ctx: CommandContext): Promise<void> {
  await ctx.lu.reservations.persistentReserveIn(ctx.task);
}

export async function persistentReserveOut(ctx: CommandContext): Promise<void> {
  await ctx.lu.reservations.persistentReserveOut(ctx.task);
}

export function reserve(ctx: CommandContext): void {
  ctx.lu.reservations.reserve(ctx.task);
}

export function release(ctx: CommandContext): void {
  ctx.lu.reservations.release(ctx.task);
}

/** SPC-4 6.37: ATS, ATSS, CTSS, LURS (TARGET RESET is carried out per LU by the transport). */
export function reportSupportedTaskManagementFunctions(ctx: CommandContext): void {
  const { task } = ctx;
  const repd = (task.cdb[2] & 0x80) !== 0;
  const data = Buffer.alloc(repd ? 16 : 4);
  data[0] = 0x80 | 0x40 | 0x10 | 0x08;
  if (repd) data[3] = 0x0c; // ADDITIONAL DATA LENGTH
  respond(task, data, task.cdb.readUInt32BE(6));
}

/** Command timeouts descriptor (SPC-4 6.35.4): no specific timeouts, 30 s recommended. */
function timeoutsDescriptor(): Buffer {
  const d = Buffer.alloc(12);
  d.writeUInt16BE(0x0a, 0);
  d.writeUInt32BE(0, 4);
  d.writeUInt32BE(30, 8);
  return d;
}

/**
 * SPC-4 6.35 REPORT SUPPORTED OPERATION CODES over the command table, so what is reported is what
 * is accepted. REPORTING OPTIONS 000b all, 001b one opcode, 010b opcode + service action,
 * 011b opcode with or without service action.
 */
export function makeReportSupportedOperationCodes(
  table: () => readonly CommandDescriptor[],
): (ctx: CommandContext) => void {
  return (ctx) => {
    const { task } = ctx;
    const cdb = task.cdb;
    const rctd = (cdb[2] & 0x80) !== 0;
    const options = cdb[2] & 0x07;
    const opcode = cdb[3];
    const sa = cdb.readUInt16BE(4);
    const alloc = cdb.readUInt32BE(6);
    const all = table();
    if (options === 0) {
      const parts: Buffer[] = [Buffer.alloc(4)];
      for (const c of all) {
        const d = Buffer.alloc(8);
        d[0] = c.opcode;
        if (c.serviceAction !== undefined) {
          d.writeUInt16BE(c.serviceAction, 2);
          d[5] |= 0x01; // SERVACTV
        }
        if (rctd) d[5] |= 0x02; // CTDP
        d.writeUInt16BE(c.usage.length, 6);
        parts.push(d);
        if (rctd) parts.push(timeoutsDescriptor());
      }
      const data = Buffer.concat(parts);
      data.writeUInt32BE(data.length - 4, 0);
      respond(task, data, alloc);
      return;
    }
    const withSa = all.filter((c) => c.opcode === opcode && c.serviceAction !== undefined);
    const hasServiceActions = withSa.length > 0;
    let found: CommandDescriptor | undefined;
    switch (options) {
      case 1:
        if (hasServiceActions) throw invalidCdbField(2);
        found = all.find((c) => c.opcode === opcode);
        break;
      case 2:
        if (!hasServiceActions) throw invalidCdbField(2);
        found = withSa.find((c) => c.serviceAction === sa);
        break;
      case 3:
        found = hasServiceActions
          ? withSa.find((c) => c.serviceAction === sa)
          : all.find((c) => c.opcode === opcode);
        break;
      default:
        throw invalidCdbField(2);
    }
    let data: Buffer;
    if (!found) {
      data = Buffer.alloc(4);
      data[1] = 0x01; // SUPPORT: not supported
    } else {
      const head = Buffer.alloc(4);
      head[1] = (rctd ? 0x80 : 0) | 0x03; // CTDP, SUPPORT: supported as the standard says
      head.writeUInt16BE(found.usage.length, 2);
      data = Buffer.concat([head, Buffer.from(found.usage), ...(rctd ? [timeoutsDescriptor()] : [])]);
    }
    respond(task, data, alloc);
  };
}
