/**
 * SBC-3 block commands: READ/WRITE 6/10/12/16, WRITE AND VERIFY, VERIFY, ORWRITE, COMPARE AND
 * WRITE, WRITE SAME, UNMAP, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY 10/16, GET LBA STATUS,
 * START STOP UNIT and READ DEFECT DATA. No protection information: any nonzero RDPROTECT/WRPROTECT/
 * VRPROTECT/ORPROTECT is an invalid field (SBC-3 4.22.1).
 */
import { Op, blockRange, cdbLengthOf, readU64 } from "./cdb.js";
import { iovLength } from "../bdev/bdev.js";
import {
  dataOutBuffer,
  dataOutVector,
  respond,
  type CommandContext,
  type LogicalUnitView,
} from "./command.js";
import { blockLimits, maxTransferBlocks } from "./inquiry.js";
import type { RangeHold } from "./lba_range_lock.js";
import { ASC, SenseError, SenseKey, invalidCdbField, invalidParameterField } from "./sense.js";
import type { ScsiTask } from "./task.js";

const lbaOutOfRange = (): SenseError => new SenseError(SenseKey.IllegalRequest, ASC.LBA_OUT_OF_RANGE);

/**
 * SBC-3 4.5: the range must lie inside the medium (LBA OUT OF RANGE), and the transfer must not
 * exceed MAXIMUM TRANSFER LENGTH (INVALID FIELD IN CDB, pointing at the length field).
 */
function checkBlockRange(
  lu: LogicalUnitView,
  cdb: Buffer,
  lba: number,
  blocks: number,
  maxBlocks: number,
): void {
  const count = lu.bdev.blockCount;
  if (lba > count || lba + blocks > count || (blocks === 0 && lba >= count)) throw lbaOutOfRange();
  if (blocks > maxBlocks) throw invalidCdbField(lengthFieldOffset(cdb));
}

function lengthFieldOffset(cdb: Buffer): number {
  switch (cdbLengthOf(cdb[0])) {
    case 6:
      return 4;
    case 10:
      return 7;
    case 12:
      return 6;
    default:
      return 10;
  }
}

/** RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT in byte 1 bits 7..5 (not in the 6-byte CDBs). */
function checkNoProtection(cdb: Buffer): void {
  if (cdbLengthOf(cdb[0]) !== 6 && cdb[1] & 0xe0) throw invalidCdbField(1, 7);
}

/** SPC-4 7.5.8 SWP: writes fail with DATA PROTECT, WRITE PROTECTED. */
function checkWritable(lu: LogicalUnitView): void {
  if (lu.mode.softwareWriteProtect) throw new SenseError(SenseKey.DataProtect, ASC.WRITE_PROTECTED);
}

/**
 * Take the exclusive range lock for a modifying command. Returns undefined when a task management
 * function aborted the task while it waited, so no data of an aborted command reaches the medium.
 */
async function lockForWrite(
  lu: LogicalUnitView,
  task: ScsiTask,
  lba: number,
  blocks: number,
): Promise<RangeHold | undefined> {
  const hold = lu.rangeLock.hold(lba, blocks, true);
  if (hold.ready) await hold.ready;
  if (!task.aborted) return hold;
  lu.rangeLock.release(hold);
  return undefined;
}

/** FUA, or write-through when the volatile cache is disabled (caching page WCE=0). */
function forceUnitAccess(lu: LogicalUnitView, cdb: Buffer): boolean {
  const fua = cdbLengthOf(cdb[0]) !== 6 && (cdb[1] & 0x08) !== 0;
  return fua || (lu.bdev.volatileWriteCache && !lu.mode.writeCacheEnabled);
}

export async function read(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  checkNoProtection(cdb);
  const { lba, blocks } = blockRange(cdb);
  checkBlockRange(lu, cdb, lba, blocks, maxTransferBlocks(lu));
  if (blocks === 0) return;
  const buf = task.dataInBuffer(blocks * lu.bdev.blockSize);
  const hold = lu.rangeLock.hold(lba, blocks, false);
  try {
    if (hold.ready) await hold.ready;
    await lu.bdev.readv(lba, [buf]);
  } catch (err) {
    task.forgetDataInBuffer();
    throw err;
  } finally {
    lu.rangeLock.release(hold);
  }
  task.dataIn = [buf];
  task.transferLength = buf.length;
}

const WRITE_AND_VERIFY: ReadonlySet<number> = new Set([
  Op.WriteAndVerify10,
  Op.WriteAndVerify12,
  Op.WriteAndVerify16,
]);

/**
 * WRITE 6/10/12/16 and WRITE AND VERIFY 10/12/16 (SBC-3 5.35–5.41). WRITE AND VERIFY reads the
 * blocks back under the same range lock and compares them with the data-out: a difference is a
 * MISCOMPARE with BYTCHK=1 (byte comparison asked for) and an unrecovered medium error otherwise.
 */
export async function write(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  checkNoProtection(cdb);
  const { lba, blocks } = blockRange(cdb);
  checkWritable(lu);
  checkBlockRange(lu, cdb, lba, blocks, maxTransferBlocks(lu));
  const bs = lu.bdev.blockSize;
  task.transferLength = blocks * bs;
  // Only whole blocks that actually arrived are written: a short Expected Data Transfer Length
  // leaves the rest of the range untouched (the transport reports the residual).
  let got = 0;
  for (const b of task.dataOut) got += b.length;
  const whole = Math.min(blocks, Math.floor(got / bs));
  if (whole === 0) return;
  const iov = dataOutVector(task, whole * bs);
  const hold = await lockForWrite(lu, task, lba, whole);
  if (!hold) return;
  try {
    await lu.bdev.writev(lba, iov, { fua: forceUnitAccess(lu, cdb) });
    if (WRITE_AND_VERIFY.has(cdb[0])) await verifyWritten(lu, lba, iov, (cdb[1] & 0x02) !== 0);
  } finally {
    lu.rangeLock.release(hold);
  }
}

async function verifyWritten(
  lu: LogicalUnitView,
  lba: number,
  iov: readonly Buffer[],
  byteCheck: boolean,
): Promise<void> {
  const back = Buffer.allocUnsafe(iovLength(iov));
  await lu.bdev.readv(lba, [back]);
  let off = 0;
  for (const part of iov) {
    const at = firstDifference(back.subarray(off, off + part.length), part);
    if (at >= 0) {
      if (byteCheck) throw miscompare(off + at);
      throw new SenseError(SenseKey.MediumError, ASC.UNRECOVERED_READ_ERROR, {
        information: lba + Math.floor((off + at) / lu.bdev.blockSize),
      });
    }
    off += part.length;
  }
}

/** The first offset where `a` and `b` differ, or -1. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function miscompare(offset: number): SenseError {
  return new SenseError(SenseKey.Miscompare, ASC.MISCOMPARE_DURING_VERIFY, { information: offset });
}

/** VERIFY 10/12/16 (SBC-3 5.33): BYTCHK 00b medium check, 01b compare all, 11b compare one block to each. */
export async function verify(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  checkNoProtection(cdb);
  const bytchk = (cdb[1] >> 1) & 0x03;
  if (bytchk === 2) throw invalidCdbField(1, 2);
  const { lba, blocks } = blockRange(cdb);
  checkBlockRange(lu, cdb, lba, blocks, maxTransferBlocks(lu));
  const bs = lu.bdev.blockSize;
  if (bytchk === 0) {
    if (blocks > 0) await lu.bdev.readv(lba, [Buffer.allocUnsafe(blocks * bs)]);
    return;
  }
  const want = bytchk === 1 ? blocks * bs : bs;
  task.transferLength = blocks === 0 ? 0 : want;
  if (blocks === 0) return;
  const data = dataOutBuffer(task, want);
  if (data.length < want) throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
  const medium = Buffer.allocUnsafe(blocks * bs);
  const release = await lu.rangeLock.acquire(lba, blocks, false);
  try {
    await lu.bdev.readv(lba, [medium]);
  } finally {
    release();
  }
  for (let i = 0; i < blocks; i++) {
    const expect = bytchk === 1 ? data.subarray(i * bs, (i + 1) * bs) : data;
    const at = firstDifference(medium.subarray(i * bs, (i + 1) * bs), expect);
    if (at >= 0) throw miscompare(i * bs + at);
  }
}

/**
 * COMPARE AND WRITE (SBC-3 5.2): compare NUMBER OF LOGICAL BLOCKS with the first half of the
 * data-out and, only if equal, write the second half — atomically, under an exclusive range lock.
 * On a mismatch the INFORMATION field holds the offset of the first differing byte.
 */
export async function compareAndWrite(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  checkNoProtection(cdb);
  const lba = readU64(cdb, 2);
  const blocks = cdb[13];
  checkWritable(lu);
  const limits = blockLimits(lu);
  const count = lu.bdev.blockCount;
  if (lba > count || lba + blocks > count) throw lbaOutOfRange();
  if (blocks > limits.maxCompareAndWriteBlocks) throw invalidCdbField(13);
  const bs = lu.bdev.blockSize;
  const bytes = blocks * bs;
  task.transferLength = 2 * bytes;
  // The data-out must be exactly the verify and write instances: a NUMBER OF LOGICAL BLOCKS that
  // disagrees with the transfer is an invalid CDB field (libiscsi CompareAndWrite.* expects this
  // for 256 blocks, which wraps to 0 in the one-byte field).
  if (!hasExactDataOut(task, 2 * bytes)) throw invalidCdbField(13);
  if (blocks === 0) return;
  const data = dataOutBuffer(task, 2 * bytes);
  const hold = await lockForWrite(lu, task, lba, blocks);
  if (!hold) return;
  try {
    if (lu.bdev.compareAndWrite) {
      // Atomic in the device itself (for RBD: in the cluster, whichever gateway a host uses).
      const at = await lu.bdev.compareAndWrite(lba, data.subarray(0, bytes), data.subarray(bytes));
      if (at >= 0) throw miscompare(at);
      if (forceUnitAccess(lu, cdb) && lu.bdev.volatileWriteCache) await lu.bdev.flush();
      return;
    }
    const medium = Buffer.allocUnsafe(bytes);
    await lu.bdev.readv(lba, [medium]);
    const at = firstDifference(medium, data.subarray(0, bytes));
    if (at >= 0) throw miscompare(at);
    await lu.bdev.writev(lba, [data.subarray(bytes)], { fua: forceUnitAccess(lu, cdb) });
  } finally {
    lu.rangeLock.release(hold);
  }
}

/** ORWRITE(16) (SBC-3 5.9): the medium becomes medium OR data-out, under an exclusive range lock. */
export async function orWrite(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  checkNoProtection(cdb);
  const { lba, blocks } = blockRange(cdb);
  checkWritable(lu);
  checkBlockRange(lu, cdb, lba, blocks, maxTransferBlocks(lu));
  const bytes = blocks * lu.bdev.blockSize;
  task.transferLength = bytes;
  if (blocks === 0) return;
  const data = dataOutBuffer(task, bytes);
  if (data.length < bytes) throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
  const hold = await lockForWrite(lu, task, lba, blocks);
  if (!hold) return;
  try {
    const medium = Buffer.allocUnsafe(bytes);
    await lu.bdev.readv(lba, [medium]);
    for (let i = 0; i < bytes; i++) medium[i] |= data[i];
    await lu.bdev.writev(lba, [medium], { fua: forceUnitAccess(lu, cdb) });
  } finally {
    lu.rangeLock.release(hold);
  }
}

/**
 * COMPARE AND WRITE and WRITE SAME take a data-out of an exact size; a transfer of any other size
 * means the initiator and the CDB disagree, and the command is not carried out.
 */
function hasExactDataOut(task: ScsiTask, bytes: number): boolean {
  let got = 0;
  for (const b of task.dataOut) got += b.length;
  return got === bytes && task.expectedDataLength === bytes;
}

function isAllZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * WRITE SAME 10/16 (SBC-3 5.42/5.43): one block of data-out (or zeroes with NDOB) written to every
 * block of the range; UNMAP=1 deallocates. NUMBER OF LOGICAL BLOCKS 0 means "to the
 * end of the medium", within MAXIMUM WRITE SAME LENGTH. ANCHOR is not supported.
 */
export async function writeSame(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const sixteen = cdb[0] === Op.WriteSame16;
  checkNoProtection(cdb);
  if (cdb[1] & 0x10) throw invalidCdbField(1, 4); // ANCHOR (this target has no anchored LBA state)
  const unmap = (cdb[1] & 0x08) !== 0;
  const ndob = sixteen && (cdb[1] & 0x01) !== 0;
  const lba = sixteen ? readU64(cdb, 2) : cdb.readUInt32BE(2);
  let blocks = sixteen ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7);
  checkWritable(lu);
  const count = lu.bdev.blockCount;
  if (lba >= count || lba + blocks > count) throw lbaOutOfRange();
  if (blocks === 0) blocks = count - lba;
  if (blocks > blockLimits(lu).maxWriteSameBlocks) throw invalidCdbField(sixteen ? 10 : 7);
  if (unmap && !lu.bdev.supportsUnmap) throw invalidCdbField(1, 3);
  const bs = lu.bdev.blockSize;
  let pattern: Buffer;
  if (ndob) {
    pattern = Buffer.alloc(bs);
  } else {
    task.transferLength = bs;
    if (!hasExactDataOut(task, bs)) {
      throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT);
    }
    pattern = dataOutBuffer(task, bs);
  }
  const hold = await lockForWrite(lu, task, lba, blocks);
  if (!hold) return;
  try {
    // UNMAP=1 asks for deallocation (SBC-3 4.7.3.4); like other targets, and as libiscsi's
    // WriteSame*.UnmapUntilEnd expects, the blocks are deallocated whatever the data block holds.
    if (unmap) {
      await lu.bdev.unmap(lba, blocks);
      return;
    }
    if (isAllZero(pattern)) {
      await lu.bdev.writeZeroes(lba, blocks);
      return;
    }
    const fua = forceUnitAccess(lu, cdb);
    if (lu.bdev.writeSame) {
      await lu.bdev.writeSame(lba, blocks, pattern);
      if (fua && lu.bdev.volatileWriteCache) await lu.bdev.flush();
      return;
    }
    // Write in chunks of at most 1 MiB of repeated pattern.
    const perChunk = Math.max(1, Math.min(blocks, Math.floor((1024 * 1024) / bs)));
    const chunk = Buffer.allocUnsafe(perChunk * bs);
    for (let i = 0; i < perChunk; i++) pattern.copy(chunk, i * bs);
    for (let done = 0; done < blocks;) {
      const n = Math.min(perChunk, blocks - done);
      await lu.bdev.writev(lba + done, [chunk.subarray(0, n * bs)], { fua });
      done += n;
    }
  } finally {
    lu.rangeLock.release(hold);
  }
}

/** UNMAP (SBC-3 5.28): parameter list of block descriptors, each checked before any is carried out. */
export async function unmap(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  if (!lu.bdev.supportsUnmap)
    throw new SenseError(SenseKey.IllegalRequest, ASC.INVALID_COMMAND_OPERATION_CODE);
  if (cdb[1] & 0x01) throw invalidCdbField(1, 0); // ANCHOR
  const listLength = cdb.readUInt16BE(7);
  task.transferLength = listLength;
  checkWritable(lu);
  if (listLength === 0) return;
  if (listLength < 8) throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
  const list = dataOutBuffer(task, listLength);
  if (list.length < 8) throw new SenseError(SenseKey.IllegalRequest, ASC.PARAMETER_LIST_LENGTH_ERROR);
  const descLength = Math.min(list.readUInt16BE(2), list.length - 8) & ~15;
  const n = descLength / 16;
  const limits = blockLimits(lu);
  if (n > limits.maxUnmapDescriptors) throw invalidParameterField(2);
  const ranges: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    const off = 8 + 16 * i;
    const lba = readU64(list, off);
    const blocks = list.readUInt32BE(off + 8);
    if (lba + blocks > lu.bdev.blockCount || lba > lu.bdev.blockCount) throw lbaOutOfRange();
    if (blocks > limits.maxUnmapBlocks) throw invalidParameterField(off + 8);
    if (blocks > 0) ranges.push([lba, blocks]);
  }
  for (const [lba, blocks] of ranges) {
    const hold = await lockForWrite(lu, task, lba, blocks);
    if (!hold) return;
    try {
      await lu.bdev.unmap(lba, blocks);
    } finally {
      lu.rangeLock.release(hold);
    }
  }
}

/** SYNCHRONIZE CACHE 10/16 (SBC-3 5.22): the whole device is flushed whatever the range. */
export async function synchronizeCache(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const sixteen = cdb[0] === Op.SynchronizeCache16;
  const lba = sixteen ? readU64(cdb, 2) : cdb.readUInt32BE(2);
  const blocks = sixteen ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7);
  const count = lu.bdev.blockCount;
  if (lba > count || lba + blocks > count) throw lbaOutOfRange();
  await lu.bdev.flush();
}

/** PRE-FETCH 10/16 (SBC-3 5.10): nothing to stage in a device without a read cache of its own. */
export function preFetch(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const sixteen = cdb[0] === Op.PreFetch16;
  const lba = sixteen ? readU64(cdb, 2) : cdb.readUInt32BE(2);
  const blocks = sixteen ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7);
  const count = lu.bdev.blockCount;
  if (lba > count || lba + blocks > count) throw lbaOutOfRange();
}

/** READ CAPACITY(10) (SBC-3 5.15): RETURNED LOGICAL BLOCK ADDRESS capped at FFFFFFFFh. */
export function readCapacity10(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const cdb = task.cdb;
  const pmi = (cdb[8] & 0x01) !== 0;
  if (!pmi && cdb.readUInt32BE(2) !== 0) throw invalidCdbField(2);
  const data = Buffer.alloc(8);
  data.writeUInt32BE(Math.min(lu.bdev.blockCount - 1, 0xffffffff), 0);
  data.writeUInt32BE(lu.bdev.blockSize, 4);
  respond(task, data, 8);
}

/** READ CAPACITY(16) (SBC-3 5.16): with LBPME and LBPRZ for thin provisioning. */
export function readCapacity16(ctx: CommandContext): void {
  const { task, lu } = ctx;
  const alloc = task.cdb.readUInt32BE(10);
  const data = Buffer.alloc(32);
  data.writeBigUInt64BE(BigInt(lu.bdev.blockCount - 1), 0);
  data.writeUInt32BE(lu.bdev.blockSize, 8);
  if (lu.bdev.supportsUnmap) data[14] |= 0x80; // LBPME
  if (lu.bdev.unmapReadsZeroes) data[14] |= 0x40; // LBPRZ
  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: a block device exported with 512-byte blocks over
  // 4096-byte sectors says so, for the initiator's alignment (0 when they are the same).
  const physical = lu.bdev.physicalBlockSize ?? lu.bdev.blockSize;
  if (physical > lu.bdev.blockSize) data[13] = Math.log2(physical / lu.bdev.blockSize) & 0x0f;
  respond(task, data, alloc);
}

/** How many blocks GET LBA STATUS examines per call; it may describe less than the whole rest. */
const LBA_STATUS_SCAN_BLOCKS = 1024;

/**
 * GET LBA STATUS (SBC-3 5.6). This target keeps no allocation map: on a device whose unmapped
 * blocks read as zeroes, a zero block is reported deallocated and any other mapped.
 */
export async function getLbaStatus(ctx: CommandContext): Promise<void> {
  const { task, lu } = ctx;
  const lba = readU64(task.cdb, 2);
  const alloc = task.cdb.readUInt32BE(10);
  const count = lu.bdev.blockCount;
  if (lba >= count) throw lbaOutOfRange();
  const start = lba;
  const descriptors: Buffer[] = [];
  const describe = (start: number, n: number, deallocated: boolean): void => {
    const d = Buffer.alloc(16);
    d.writeBigUInt64BE(BigInt(start), 0);
    d.writeUInt32BE(n, 8);
    d[12] = deallocated ? 0x01 : 0x00;
    descriptors.push(d);
  };
  if (!(lu.bdev.supportsUnmap && lu.bdev.unmapReadsZeroes)) {
    describe(start, Math.min(count - start, 0xffffffff), false);
  } else {
    const bs = lu.bdev.blockSize;
    const n = Math.min(count - start, LBA_STATUS_SCAN_BLOCKS);
    const buf = Buffer.allocUnsafe(n * bs);
    await lu.bdev.readv(start, [buf]);
    let runStart = 0;
    let runZero = isAllZero(buf.subarray(0, bs));
    for (let i = 1; i <= n; i++) {
      const zero = i < n ? isAllZero(buf.subarray(i * bs, (i + 1) * bs)) : !runZero;
      if (zero !== runZero) {
        describe(start + runStart, i - runStart, runZero);
        runStart = i;
        runZero = zero;
      }
    }
  }
  const data = Buffer.concat([Buffer.alloc(8), ...descriptors]);
  data.writeUInt32BE(data.length - 4, 0);
  respond(task, data, alloc);
}

/**
 * START STOP UNIT (SBC-3 5.25). The medium of a virtual disk is not removable (RMB 0) and always
 * ready, so START and LOEJ have nothing to do; the power condition fields are accepted and ignored.
 */
export function startStopUnit(_ctx: CommandContext): void {}

/** READ DEFECT DATA 10/12 (SBC-3 5.17/5.18): a virtual medium has an empty defect list. */
export function readDefectData(ctx: CommandContext): void {
  const { task } = ctx;
  const cdb = task.cdb;
  const twelve = cdb[0] === Op.ReadDefectData12;
  const flags = twelve ? cdb[1] : cdb[2];
  const data = Buffer.alloc(twelve ? 8 : 4);
  // Echo REQ_PLIST/REQ_GLIST as PLISTV/GLISTV and the format; the list length stays 0.
  data[1] = flags & 0x1f;
  respond(task, data, twelve ? cdb.readUInt32BE(6) : cdb.readUInt16BE(7));
}
