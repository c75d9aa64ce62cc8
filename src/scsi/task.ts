import type { ReadBufferPool } from "./read_buffer_pool.js";

/**
 * The contract between a transport (iSCSI) and the SCSI layer, after SAM-5's model:
 * a transport delivers tasks (a CDB plus its data-out) on an I_T nexus to a logical unit
 * and gets back status, sense and data-in.
 */

/** SAM-5 status codes. */
export const enum ScsiStatus {
  Good = 0x00,
  CheckCondition = 0x02,
  ConditionMet = 0x04,
  Busy = 0x08,
  ReservationConflict = 0x18,
  TaskSetFull = 0x28,
  AcaActive = 0x30,
  TaskAborted = 0x40,
}

/** SAM-5 task attributes (iSCSI carries them in the ATTR field of the SCSI Command PDU). */
export type TaskAttribute = "untagged" | "simple" | "ordered" | "head-of-queue" | "aca";

/**
 * An I_T nexus: one initiator port talking to one target port. For iSCSI the initiator port is
 * the session (initiator name + ISID) and the target port is target name + portal group tag
 * (RFC 7143 §4.4.2, SPC-4 7.6.4.6).
 */
export class ITNexus {
  /** "<initiator name>,i,0x<isid in 12 hex digits>" */
  readonly initiatorPort: string;
  /** "<target name>,t,0x<tpgt in 4 hex digits>" */
  readonly targetPort: string;
  /** Stable key for maps: one entry per I_T nexus (built once: every command looks it up). */
  readonly key: string;

  constructor(
    readonly initiatorName: string,
    /** The 6-byte ISID as 12 lowercase hex digits. */
    readonly isid: string,
    readonly targetName: string,
    /** Target portal group tag; also used as the relative target port identifier. */
    readonly portalGroupTag: number,
  ) {
    this.initiatorPort = `${initiatorName},i,0x${isid}`;
    this.targetPort = `${targetName},t,0x${portalGroupTag.toString(16).padStart(4, "0")}`;
    this.key = `${this.initiatorPort}|${this.targetPort}`;
  }

  /**
   * The iSCSI TransportID of the initiator port (SPC-4 7.6.4.6, FORMAT CODE 01b):
   * used by PERSISTENT RESERVE IN READ FULL STATUS.
   */
  transportId(): Buffer {
    const name = Buffer.from(`${this.initiatorName},i,0x${this.isid}\0`, "utf8");
    const padded = (name.length + 3) & ~3;
    const len = Math.max(padded, 20);
    const id = Buffer.alloc(4 + len);
    id[0] = 0x40 | 0x05; // FORMAT CODE 01b, PROTOCOL IDENTIFIER 5 (iSCSI)
    id.writeUInt16BE(len, 2);
    name.copy(id, 4);
    return id;
  }
}

/**
 * One SCSI command in flight. The transport fills the request fields, collects all data-out
 * before calling execute(), and reads the result fields when execute() settles.
 */
export class ScsiTask {
  // Result, filled by the SCSI layer.
  status: ScsiStatus = ScsiStatus.Good;
  /** Sense data (fixed or descriptor format, as the LU's D_SENSE says), when status is CHECK CONDITION. */
  sense: Buffer | undefined = undefined;
  /** Data-in produced by the command (not yet truncated to expectedDataLength). */
  dataIn: Buffer[] = [];
  /**
   * Bytes the command wanted to move, by its CDB: for data-in commands the length of the data
   * it would return (after the allocation length is applied), for data-out commands the bytes it
   * needed. The transport computes the residual from this and expectedDataLength (RFC 7143 §11.4.5).
   */
  transferLength = 0;
  /** Set when a task management function aborted the task; the transport sends no response. */
  aborted = false;
  /**
   * Where READ takes its data-in buffer from; set by a transport that calls releaseDataIn() once
   * its socket has taken the data. Without one, every read allocates.
   */
  readBuffers: ReadBufferPool | undefined = undefined;
  /** The pooled buffer dataIn was cut from, until released. */
  private leased: Buffer | undefined = undefined;

  constructor(
    readonly cdb: Buffer,
    readonly lun: number,
    /** The transport's tag (iSCSI Initiator Task Tag), used by ABORT TASK. */
    readonly tag: number,
    readonly attribute: TaskAttribute,
    readonly nexus: ITNexus,
    /** Expected Data Transfer Length from the transport (EDTL): data-out or data-in, by direction. */
    readonly expectedDataLength: number,
    /** True when the transport says the command reads (R bit), i.e. data-in is expected. */
    readonly readDirection: boolean,
    /** True when the transport says the command writes (W bit), i.e. data-out follows. */
    readonly writeDirection: boolean,
    /** The collected data-out, at most expectedDataLength bytes in all. */
    readonly dataOut: readonly Buffer[],
  ) {}

  /**
   * A buffer for `bytes` of data-in (READ): from the transport's pool when it gave one. A task
   * holds at most one; asking again forgets the earlier one (it is not reused).
   */
  dataInBuffer(bytes: number): Buffer {
    const pool = this.readBuffers;
    if (!pool) return Buffer.allocUnsafe(bytes);
    const buf = pool.take(bytes);
    this.leased = buf;
    return buf.length === bytes ? buf : buf.subarray(0, bytes);
  }

  /**
   * The device I/O meant to fill the data-in buffer failed: whatever it did to the buffer, it is
   * not handed out again (a module that failed may not have stopped touching it).
   */
  forgetDataInBuffer(): void {
    this.leased = undefined;
  }

  /**
   * The transport is done with dataIn — its socket took the bytes, or they will never be sent —
   * so the pooled buffer may serve another read. Idempotent; dataIn is empty afterwards.
   */
  releaseDataIn(): void {
    const buf = this.leased;
    this.dataIn = [];
    if (!buf) return;
    this.leased = undefined;
    this.readBuffers?.give(buf);
  }

  get dataInLength(): number {
    let n = 0;
    for (const b of this.dataIn) n += b.length;
    return n;
  }
}

/** SAM-5 task management functions (RFC 7143 §11.5.1 function codes). */
export type TaskManagementFunction =
  | "abort-task"
  | "abort-task-set"
  | "clear-aca"
  | "clear-task-set"
  | "logical-unit-reset"
  | "target-warm-reset"
  | "target-cold-reset";

export interface TaskManagementRequest {
  readonly fn: TaskManagementFunction;
  readonly nexus: ITNexus;
  readonly lun: number;
  /** For abort-task: the tag of the task to abort. */
  readonly referencedTag?: number;
}

/** RFC 7143 §11.6.1 response codes, as the SCSI layer decides them. */
export type TaskManagementResult = "complete" | "no-such-task" | "no-such-lun" | "not-supported" | "rejected";

/**
 * A SCSI target device (SPDK's spdk_scsi_dev): the logical units one iSCSI target node exports.
 * Implemented in scsi/device.ts.
 */
export interface ScsiTargetDevice {
  readonly name: string;
  /** The LUN numbers that exist, ascending. */
  lunIds(): number[];
  /** Execute a task. Always resolves: errors become CHECK CONDITION in the task. */
  execute(task: ScsiTask): Promise<void>;
  /** Carry out a task management function; resolves once affected tasks have ended. */
  taskManagement(req: TaskManagementRequest): Promise<TaskManagementResult>;
  /** The transport has lost an I_T nexus (session ended): drop SPC-2 reservations, prevent state. */
  nexusLost(nexus: ITNexus): void;
}
