/** Shared set-up for the SCSI layer tests: a ScsiDevice on Malloc bdevs and a task runner. */
import { MallocBdev } from "../../src/bdev/malloc/malloc.js";
import { ScsiDevice } from "../../src/scsi/device.js";
import { ITNexus, ScsiTask, type TaskAttribute } from "../../src/scsi/task.js";

export const nexusA = new ITNexus("iqn.2026-01.test:a", "400001370000", "iqn.2026-01.test:tgt", 1);
export const nexusB = new ITNexus("iqn.2026-01.test:b", "400001370001", "iqn.2026-01.test:tgt", 1);

export function makeDevice(blockSize = 512, blockCount = 2048, extraLuns = 0): ScsiDevice {
  const luns = [{ id: 0, bdev: new MallocBdev({ name: "Malloc0", blockSize, blockCount }) }];
  for (let i = 1; i <= extraLuns; i++) {
    luns.push({ id: i, bdev: new MallocBdev({ name: `Malloc${i}`, blockSize, blockCount }) });
  }
  return new ScsiDevice({ name: "iqn.2026-01.test:tgt", luns });
}

let nextTag = 1;

export interface RunOptions {
  lun?: number;
  nexus?: ITNexus;
  dataOut?: Buffer;
  edtl?: number;
  attribute?: TaskAttribute;
}

/** Build the CDB from bytes (padded to its length) and execute it. */
export async function run(dev: ScsiDevice, cdb: number[] | Buffer, o: RunOptions = {}): Promise<ScsiTask> {
  const c = Buffer.isBuffer(cdb) ? cdb : Buffer.from(cdb);
  const dataOut = o.dataOut ? [o.dataOut] : [];
  const edtl = o.edtl ?? (o.dataOut ? o.dataOut.length : 65536);
  const task = new ScsiTask(
    c,
    o.lun ?? 0,
    nextTag++,
    o.attribute ?? "simple",
    o.nexus ?? nexusA,
    edtl,
    !o.dataOut,
    !!o.dataOut,
    dataOut,
  );
  await dev.execute(task);
  return task;
}

/** Run TEST UNIT READY until the power-on unit attention is consumed. */
export async function clearUa(dev: ScsiDevice, nexus = nexusA, lun = 0): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const t = await run(dev, [0, 0, 0, 0, 0, 0], { nexus, lun });
    if (t.status === 0) return;
  }
  throw new Error("unit attentions do not clear");
}

export function dataIn(t: ScsiTask): Buffer {
  return Buffer.concat(t.dataIn);
}

/** Sense key and ASC/ASCQ of fixed or descriptor sense. */
export function senseOf(t: ScsiTask): { key: number; asc: number; ascq: number } {
  const s = t.sense;
  if (!s) throw new Error(`no sense data (status 0x${t.status.toString(16)})`);
  if ((s[0] & 0x7f) >= 0x72) return { key: s[1] & 0x0f, asc: s[2], ascq: s[3] };
  return { key: s[2] & 0x0f, asc: s[12], ascq: s[13] };
}

export function cdb10(op: number, lba: number, blocks: number, byte1 = 0): number[] {
  const b = Buffer.alloc(10);
  b[0] = op;
  b[1] = byte1;
  b.writeUInt32BE(lba, 2);
  b.writeUInt16BE(blocks, 7);
  return [...b];
}

export function cdb16(op: number, lba: number | bigint, blocks: number, byte1 = 0): number[] {
  const b = Buffer.alloc(16);
  b[0] = op;
  b[1] = byte1;
  b.writeBigUInt64BE(BigInt(lba), 2);
  b.writeUInt32BE(blocks, 10);
  return [...b];
}
