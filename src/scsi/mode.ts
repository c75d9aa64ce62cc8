/**
 * MODE SENSE(6)/(10) and MODE SELECT(6)/(10) (SPC-4 6.9–6.12, 7.5): mode parameter header, block
 * descriptor (short or long LBA), and the pages of mode_pages.ts.
 */
import { Op } from "./cdb.js";
import { dataOutBuffer, respond, type CommandContext } from "./command.js";
import { ModePage, PageControl } from "./mode_pages.js";
import { ASC, SenseError, SenseKey, invalidCdbField, invalidParameterField } from "./sense.js";

/** Device-specific parameter for direct-access devices (SBC-3 6.4.1): WP and DPOFUA. */
function deviceSpecificParameter(ctx: CommandContext): number {
  return (ctx.lu.mode.softwareWriteProtect ? 0x80 : 0) | 0x10;
}

function blockDescriptor(ctx: CommandContext, long: boolean): Buffer {
  const { blockCount, blockSize } = ctx.lu.bdev;
  if (long) {
    const d = Buffer.alloc(16);
    d.writeBigUInt64BE(BigInt(blockCount), 0);
    d.writeUInt32BE(blockSize, 12);
    return d;
  }
  const d = Buffer.alloc(8);
  // SBC-3 6.4.2: a capacity beyond 32 bits reports FFFFFFFFh.
  d.writeUInt32BE(Math.min(blockCount, 0xffffffff), 0);
  d.writeUIntBE(blockSize, 5, 3);
  return d;
}

export function modeSense(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const ten = cdb[0] === Op.ModeSense10;
  const dbd = (cdb[1] & 0x08) !== 0;
  const llbaa = ten && (cdb[1] & 0x10) !== 0;
  if (!ten && cdb[1] & 0x10) throw invalidCdbField(1, 4);
  const pc = (cdb[2] >> 6) as PageControl;
  const code = cdb[2] & 0x3f;
  const subpage = cdb[3];
  const alloc = ten ? cdb.readUInt16BE(7) : cdb[4];
  if (pc === PageControl.Saved)
    throw new SenseError(SenseKey.IllegalRequest, ASC.SAVING_PARAMETERS_NOT_SUPPORTED);

  let codes: number[];
  if (code === ModePage.AllPages) {
    if (subpage !== 0x00 && subpage !== 0xff) throw invalidCdbField(3);
    codes = lu.mode.codes();
  } else {
    if (!lu.mode.has(code)) throw invalidCdbField(2, 5);
    // None of our pages has subpages; 0xFF asks for the page with all its subpages.
    if (subpage !== 0x00 && subpage !== 0xff) throw invalidCdbField(3);
    codes = [code];
  }
  const pages = codes.map((c) => lu.mode.get(c, pc) as Buffer);
  const desc = dbd ? Buffer.alloc(0) : blockDescriptor(ctx, llbaa);
  const header = Buffer.alloc(ten ? 8 : 4);
  const body = Buffer.concat([header, desc, ...pages]);
  if (ten) {
    body.writeUInt16BE(body.length - 2, 0);
    body[3] = deviceSpecificParameter(ctx);
    if (llbaa && !dbd) body[4] = 0x01; // LONGLBA
    body.writeUInt16BE(desc.length, 6);
  } else {
    body[0] = Math.min(body.length - 1, 0xff);
    body[2] = deviceSpecificParameter(ctx);
    body[3] = desc.length;
  }
  respond(task, body, alloc);
}

export function modeSelect(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const ten = cdb[0] === Op.ModeSelect10;
  // SPC-4 6.9: SP=1 asks to save pages, which this target cannot.
  if (cdb[1] & 0x01) throw invalidCdbField(1, 0);
  const listLength = ten ? cdb.readUInt16BE(7) : cdb[4];
  task.transferLength = listLength;
  if (listLength === 0) return;
  const list = dataOutBuffer(task, listLength);
  const headerLength = ten ? 8 : 4;
  if (list.length < listLength || listLength < headerLength) {
    throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
  }
  const bdLength = ten ? list.readUInt16BE(6) : list[3];
  if (list[1] !== 0) throw invalidParameterField(1); // MEDIUM TYPE: 00h for SBC
  const longLba = ten && (list[4] & 0x01) !== 0;
  const bdSize = longLba ? 16 : 8;
  if (bdLength % bdSize !== 0) throw invalidParameterField(ten ? 6 : 3);
  if (headerLength + bdLength > list.length) {
    throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
  }
  for (let off = headerLength; off < headerLength + bdLength; off += bdSize) {
    // The block length cannot be changed (no FORMAT UNIT); the number of blocks is ignored.
    const blockLength = longLba ? list.readUInt32BE(off + 12) : list.readUIntBE(off + 5, 3);
    if (blockLength !== lu.bdev.blockSize) throw invalidParameterField(off + (longLba ? 12 : 5));
  }
  // Validate every page before applying any (SPC-4 6.9: no partial effect on an error).
  const accepted: [number, Buffer][] = [];
  let off = headerLength + bdLength;
  while (off < list.length) {
    if (off + 2 > list.length) throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
    const code = list[off] & 0x3f;
    if (list[off] & 0x80) throw invalidParameterField(off, 7); // PS is reserved in MODE SELECT
    if (list[off] & 0x40) throw invalidParameterField(off, 6); // no subpages
    const len = list[off + 1] + 2;
    if (off + len > list.length)
      throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
    if (!lu.mode.has(code)) throw invalidParameterField(off, 5);
    const pageData = list.subarray(off, off + len);
    const bad = lu.mode.validate(code, pageData);
    if (bad >= 0) throw invalidParameterField(off + bad);
    accepted.push([code, pageData]);
    off += len;
  }
  let changed = false;
  for (const [code, data] of accepted) changed = lu.mode.apply(code, data) || changed;
  // SPC-4 7.5.1: other I_T nexuses learn of the change through MODE PARAMETERS CHANGED.
  if (changed) lu.unitAttentions.establishForOthers(task.nexus.key, ASC.MODE_PARAMETERS_CHANGED);
}
