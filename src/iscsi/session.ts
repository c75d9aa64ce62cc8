/**
 * An iSCSI session (RFC 7143 §4.2.2): its identity (initiator name, ISID, TSIH), its connections,
 * the negotiated session-wide parameters and the command numbering: ExpCmdSN / MaxCmdSN with a
 * window of QueueDepth commands, delivery of non-immediate commands in CmdSN order across all
 * connections, and the table of tasks in progress by Initiator Task Tag.
 */
import type { Logger } from "../util/log.js";
import { Completion } from "../util/completion.js";
import type { ITNexus, ScsiTask } from "../scsi/task.js";
import type { DataOutCollector } from "./dataout.js";
import type { NegotiatedParams } from "./param.js";
import {
  snAdd,
  snLess,
  snLessEq,
  type LogoutRequestPdu,
  type NopOutPdu,
  type Parsed,
  type ScsiCommandPdu,
  type TaskMgmtRequestPdu,
  type TextRequestPdu,
} from "./pdu.js";
import type { TargetNode } from "./tgt_node.js";

/** The requests numbered by CmdSN (RFC 7143 §4.2.2.1) that a session orders and delivers. */
export type CommandPdu = Parsed<
  ScsiCommandPdu | NopOutPdu | TaskMgmtRequestPdu | TextRequestPdu | LogoutRequestPdu
>;

/** The connection side a session needs: where to deliver commands and how to end it. */
export interface SessionConnection {
  readonly cid: number;
  deliverCommand(pdu: CommandPdu): void;
  /** End a task that never reached the SCSI layer, without a response (it was aborted). */
  abandon(task: ActiveTask): void;
  /** Close the connection now (after flushing what is queued). */
  drop(reason: string): void;
}

/** A SCSI command from its arrival to its response. */
export class ActiveTask extends Completion {
  collector: DataOutCollector | undefined;
  scsiTask: ScsiTask | undefined;
  /** Builds the SCSI task once all data-out is in. */
  build: ((dataOut: readonly Buffer[]) => ScsiTask) | undefined;
  /** R2Ts sent for this command's data-out. */
  r2tCount = 0;
  /** Holds a CmdSN window slot until answered (non-immediate commands). */
  holdsSlot = false;
  /** Ended by a task management function or by the connection going away: send nothing. */
  aborted = false;

  constructor(
    readonly itt: number,
    readonly cmdSN: number,
    readonly lun: number,
    readonly conn: SessionConnection,
    readonly command: Parsed<ScsiCommandPdu>,
  ) {
    super();
  }
}

export class Session {
  readonly connections = new Map<number, SessionConnection>();
  readonly tasks = new Map<number, ActiveTask>();
  expCmdSN: number;
  private lastMaxCmdSN: number;
  /** Non-immediate SCSI commands accepted but not yet answered; they hold window slots. */
  private running = 0;
  private readonly pending = new Map<number, { conn: SessionConnection; pdu: CommandPdu }>();
  ended = false;

  constructor(
    readonly tsih: number,
    readonly initiatorName: string,
    /** The ISID as 12 lowercase hex digits. */
    readonly isid: string,
    readonly discovery: boolean,
    readonly node: TargetNode | undefined,
    readonly nexus: ITNexus | undefined,
    readonly params: NegotiatedParams,
    readonly queueDepth: number,
    initialCmdSN: number,
    readonly log: Logger,
  ) {
    this.expCmdSN = initialCmdSN >>> 0;
    this.lastMaxCmdSN = snAdd(this.expCmdSN, queueDepth - 1);
  }

  /** MaxCmdSN never moves backwards (RFC 7143 §4.2.2.1); it opens as running commands finish. */
  get maxCmdSN(): number {
    // With every slot taken the window closes: MaxCmdSN = ExpCmdSN - 1 (RFC 7143 §4.2.2.1).
    const free = Math.max(this.queueDepth - this.running, 0);
    const candidate = (this.expCmdSN + free - 1) >>> 0;
    if (snLess(this.lastMaxCmdSN, candidate)) this.lastMaxCmdSN = candidate;
    return this.lastMaxCmdSN;
  }

  /**
   * Accept a command PDU (SCSI Command, NOP-Out, Task Management, Text, Logout). Immediate ones
   * are delivered at once; the rest in CmdSN order. Commands outside the window are ignored
   * (RFC 7143 §4.2.2.1). Returns false when the PDU was dropped for being out of window.
   */
  submit(conn: SessionConnection, pdu: CommandPdu): boolean {
    const cmdSN = pdu.cmdSN;
    if (pdu.immediate) {
      conn.deliverCommand(pdu);
      return true;
    }
    if (snLess(cmdSN, this.expCmdSN) || !snLessEq(cmdSN, this.maxCmdSN)) {
      this.log.warn(
        { cmdSN, expCmdSN: this.expCmdSN, maxCmdSN: this.lastMaxCmdSN },
        "CmdSN outside the window; ignored",
      );
      return false;
    }
    if (this.pending.has(cmdSN)) return false;
    this.pending.set(cmdSN, { conn, pdu });
    for (let next = this.pending.get(this.expCmdSN); next; next = this.pending.get(this.expCmdSN)) {
      this.pending.delete(this.expCmdSN);
      this.expCmdSN = snAdd(this.expCmdSN, 1);
      next.conn.deliverCommand(next.pdu);
    }
    return true;
  }

  /** A non-immediate SCSI command took a window slot. */
  commandStarted(): void {
    this.running++;
  }
  commandEnded(): void {
    if (this.running > 0) this.running--;
  }

  addTask(task: ActiveTask): void {
    this.tasks.set(task.itt, task);
  }

  removeTask(task: ActiveTask): void {
    if (this.tasks.get(task.itt) === task) this.tasks.delete(task.itt);
  }

  /** Tasks in progress, optionally only those of one connection. */
  inFlight(conn?: SessionConnection): ActiveTask[] {
    return [...this.tasks.values()].filter((t) => conn === undefined || t.conn === conn);
  }

  /** Forget queued commands that came on a connection that is gone. */
  dropPendingOf(conn: SessionConnection): void {
    for (const [sn, p] of this.pending) if (p.conn === conn) this.pending.delete(sn);
  }
}
