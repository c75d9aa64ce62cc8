/**
 * A minimal in-test SCSI device over a Buffer, implementing the ScsiTargetDevice contract just far
 * enough for transport tests: INQUIRY (standard, VPD 00/80/83), TEST UNIT READY, READ CAPACITY
 * 10/16, READ/WRITE 10/16, REPORT LUNS, REQUEST SENSE. Other opcodes: INVALID COMMAND OPERATION CODE.
 * Tests can hold commands (to abort them) and see nexus losses and task management calls.
 */
import {
  ScsiStatus,
  type ITNexus,
  type ScsiTargetDevice,
  type ScsiTask,
  type TaskManagementRequest,
  type TaskManagementResult,
} from "../../src/scsi/task.js";

function checkCondition(task: ScsiTask, key: number, asc: number, ascq = 0): void {
  task.status = ScsiStatus.CheckCondition;
  const s = Buffer.alloc(18);
  s[0] = 0x70;
  s[2] = key;
  s[7] = 10;
  s[12] = asc;
  s[13] = ascq;
  task.sense = s;
}

export class MemoryDevice implements ScsiTargetDevice {
  readonly blocks: Buffer;
  readonly nexusLosses: string[] = [];
  readonly tmfCalls: TaskManagementRequest[] = [];
  /** When set, READ/WRITE commands wait here until released (for abort tests). */
  hold: Promise<void> | undefined;
  private readonly running = new Set<ScsiTask>();

  constructor(
    readonly name: string,
    readonly blockSize = 512,
    readonly blockCount = 2048,
    readonly luns: number[] = [0],
  ) {
    this.blocks = Buffer.alloc(blockSize * blockCount);
  }

  lunIds(): number[] {
    return this.luns;
  }

  nexusLost(nexus: ITNexus): void {
    this.nexusLosses.push(nexus.key);
  }

  async taskManagement(req: TaskManagementRequest): Promise<TaskManagementResult> {
    this.tmfCalls.push(req);
    let found = false;
    for (const t of this.running) {
      const sameNexus = t.nexus.key === req.nexus.key;
      const hit =
        req.fn === "abort-task"
          ? sameNexus && t.tag === req.referencedTag
          : req.fn === "abort-task-set"
            ? sameNexus && t.lun === req.lun
            : req.fn === "clear-task-set" || req.fn === "logical-unit-reset"
              ? t.lun === req.lun
              : req.fn !== "clear-aca";
      if (hit) {
        t.aborted = true;
        found = true;
      }
    }
    if (req.fn === "abort-task" && !found) return "no-such-task";
    return "complete";
  }

  async execute(task: ScsiTask): Promise<void> {
    this.running.add(task);
    try {
      await this.run(task);
    } finally {
      this.running.delete(task);
    }
  }

  private async run(task: ScsiTask): Promise<void> {
    const cdb = task.cdb;
    if (!this.luns.includes(task.lun) && cdb[0] !== 0x12 && cdb[0] !== 0xa0) {
      checkCondition(task, 0x05, 0x25);
      return;
    }
    switch (cdb[0]) {
      case 0x00: // TEST UNIT READY
        return;
      case 0x03: {
        const d = Buffer.alloc(18);
        d[0] = 0x70;
        d[7] = 10;
        this.dataIn(task, d, cdb[4]);
        return;
      }
      case 0x12:
        return this.inquiry(task);
      case 0x25: {
        const d = Buffer.alloc(8);
        d.writeUInt32BE(this.blockCount - 1, 0);
        d.writeUInt32BE(this.blockSize, 4);
        this.dataIn(task, d, 8);
        return;
      }
      case 0x9e: {
        const d = Buffer.alloc(32);
        d.writeBigUInt64BE(BigInt(this.blockCount - 1), 0);
        d.writeUInt32BE(this.blockSize, 8);
        this.dataIn(task, d, cdb.readUInt32BE(10));
        return;
      }
      case 0xa0: {
        const d = Buffer.alloc(8 + 8 * this.luns.length);
        d.writeUInt32BE(8 * this.luns.length, 0);
        this.luns.forEach((l, i) => (d[8 + 8 * i + 1] = l));
        this.dataIn(task, d, cdb.readUInt32BE(6));
        return;
      }
      case 0x28:
      case 0x88:
      case 0x2a:
      case 0x8a: {
        const is16 = cdb[0] === 0x88 || cdb[0] === 0x8a;
        const lba = is16 ? Number(cdb.readBigUInt64BE(2)) : cdb.readUInt32BE(2);
        const count = is16 ? cdb.readUInt32BE(10) : cdb.readUInt16BE(7);
        const bytes = count * this.blockSize;
        task.transferLength = bytes;
        if (lba + count > this.blockCount) {
          checkCondition(task, 0x05, 0x21);
          return;
        }
        if (this.hold) await this.hold;
        if (task.aborted) return;
        const start = lba * this.blockSize;
        if (cdb[0] === 0x28 || cdb[0] === 0x88) {
          task.dataIn = [this.blocks.subarray(start, start + bytes)];
        } else {
          let off = start;
          let left = Math.min(bytes, task.expectedDataLength);
          for (const b of task.dataOut) {
            const n = Math.min(b.length, left);
            b.copy(this.blocks, off, 0, n);
            off += n;
            left -= n;
          }
        }
        return;
      }
      default:
        checkCondition(task, 0x05, 0x20);
    }
  }

  private dataIn(task: ScsiTask, d: Buffer, alloc: number): void {
    const n = Math.min(d.length, alloc);
    task.dataIn = [d.subarray(0, n)];
    task.transferLength = n;
  }

  private inquiry(task: ScsiTask): void {
    const cdb = task.cdb;
    const alloc = cdb.readUInt16BE(3);
    const pq = this.luns.includes(task.lun) ? 0 : 0x7f;
    if (cdb[1] & 1) {
      const page = cdb[2];
      let body: Buffer;
      if (page === 0x00) body = Buffer.from([0x00, 0x80, 0x83]);
      else if (page === 0x80) body = Buffer.from("SERIAL0001");
      else if (page === 0x83) {
        const id = Buffer.from(`${this.name}:${task.lun}`);
        body = Buffer.concat([Buffer.from([0x03, 0x08, 0, id.length]), id]);
      } else {
        checkCondition(task, 0x05, 0x24);
        return;
      }
      const head = Buffer.from([pq, page, 0, body.length]);
      this.dataIn(task, Buffer.concat([head, body]), alloc);
      return;
    }
    const d = Buffer.alloc(36, 0x20);
    d[0] = pq;
    d[1] = 0;
    d[2] = 0x06;
    d[3] = 0x02;
    d[4] = 31;
    d[5] = 0;
    d[6] = 0;
    d[7] = 0x02;
    d.write("USERTGT ", 8, "ascii");
    d.write("MEMORY TEST DEV ", 16, "ascii");
    d.write("0001", 32, "ascii");
    this.dataIn(task, d, alloc);
  }
}
