/**
 * One iSCSI connection (RFC 7143 §4, §7.1): a TCP socket, its PDU framing, the login phase, then
 * Full Feature Phase dispatch — SCSI commands with their data-out and results, NOP-Out / NOP-In
 * (including the target's idle pings and the drop after Timeout), Logout, Reject, and the StatSN
 * this connection numbers its responses with.
 */
import type { Socket } from "node:net";
import type { Logger } from "../util/log.js";
import { decodeLun } from "../scsi/lun_id.js";
import type { ReadBufferPool } from "../scsi/read_buffer_pool.js";
import { ASC, SenseKey, fixedSense } from "../scsi/sense.js";
import { ScsiStatus, ScsiTask, type TaskAttribute } from "../scsi/task.js";
import { DataOutCollector } from "./dataout.js";
import { sendScsiResult, type ResultSink } from "./datain.js";
import { LoginNegotiator, type LoginEnvironment } from "./login.js";
import { defaultParams, type NegotiatedParams } from "./param.js";
import {
  EMPTY,
  LogoutReason,
  Opcode,
  RESERVED_TAG,
  RejectReason,
  joinData,
  opcodeOf,
  snAdd,
  type DataOutPdu,
  type LogoutRequestPdu,
  type NopOutPdu,
  type Parsed,
  type ParsedPdu,
  type ScsiCommandPdu,
  type TargetPdu,
} from "./pdu.js";
import { PduFramingError, PduParser } from "./pdu_parser.js";
import { PduWriter, type DataInHolder } from "./pdu_writer.js";
import { ActiveTask, type CommandPdu, type Session, type SessionConnection } from "./session.js";
import type { ConnectionWriteBudget, WriteDataBudget } from "./data_budget.js";
import type { LoginThrottle } from "./login_throttle.js";
import type { PreLoginPool } from "./prelogin_pool.js";
import type { LogRateLimiter } from "../util/log_rate_limit.js";
import { handleTaskManagement, type TmfConnection } from "./tmf.js";
import { TextExchange, type TextConnection } from "./text.js";

/** What a connection needs from the target beyond login. */
export interface ConnectionHost extends LoginEnvironment {
  connectionClosed(conn: Connection): void;
  /** End a session: close its connections, release its nexus. */
  endSession(session: Session, reason: string): void;
  /** Sessions of a target node (TMF resets act on all of them). */
  sessionsOfNode(nodeName: string): Session[];
  sendTargetsText(conn: Connection, value: string): string[];
  /** Told of every digest error (for the counters). */
  digestError?(kind: "header-digest" | "data-digest"): void;
  /** Connections still logging in (first-PDU deadline; they leave it at login). */
  readonly preLogin: PreLoginPool;
  /** Delays CHAP answers after authentication failures. */
  readonly loginThrottle: LoginThrottle;
  /** Bounds the log lines one peer address can cause. */
  readonly logLimiter: LogRateLimiter;
  /** Bounds WRITE data held for commands still receiving Data-Out. */
  readonly writeBudget: WriteDataBudget;
  /** READ data buffers, handed back once the socket has taken a command's Data-In. */
  readonly readBuffers: ReadBufferPool;
}

/** Login Requests held while the throttle delays a CHAP answer; an initiator sends one at a time. */
const MAX_DEFERRED_LOGIN_PDUS = 4;

const ATTRIBUTES: TaskAttribute[] = [
  "untagged",
  "simple",
  "ordered",
  "head-of-queue",
  "aca",
  "simple",
  "simple",
  "simple",
];

type State = "login" | "full-feature" | "logout" | "closed";

export class Connection implements SessionConnection, ResultSink, TextConnection, TmfConnection {
  state: State = "login";
  cid = 0;
  session: Session | undefined;
  params: NegotiatedParams;
  readonly log: Logger;
  readonly remoteAddress: string;
  readonly localAddress: string;
  readonly localPort: number;
  private statSN = 0;
  private readonly parser: PduParser;
  private readonly writer: PduWriter;
  private readonly login: LoginNegotiator;
  private readonly text = new TextExchange(this);
  private loginResponses = 0;
  private loginTimer: NodeJS.Timeout | undefined;
  private nopTimer: NodeJS.Timeout | undefined;
  private lastActivity = Date.now();
  private pingSentAt = 0;
  private nextTtt = 1;
  /** This connection's share of the target's write-data budget (data_budget.ts). */
  private readonly writeBudget: ConnectionWriteBudget;
  /** Not read because writes wait for budget (independent of the response back-pressure). */
  private budgetPaused = false;
  /** Login Requests waiting for the throttle's delay to pass (undefined: none waiting). */
  private deferredLogin: ParsedPdu[] | undefined;
  /** Ended by a clean logout (the session survives) rather than a failure (it does not, ERL 0). */
  cleanClose = false;

  constructor(
    readonly socket: Socket,
    readonly portalGroupTag: number,
    private readonly host: ConnectionHost,
    parentLog: Logger,
  ) {
    this.remoteAddress = socket.remoteAddress ?? "";
    this.localAddress = socket.localAddress ?? "";
    this.localPort = socket.localPort ?? 0;
    this.log = host.logLimiter.wrap(
      parentLog.child({ peer: `${this.remoteAddress}:${socket.remotePort ?? 0}`, tpgt: portalGroupTag }),
      this.remoteAddress,
    );
    const g = host.globals;
    this.params = defaultParams(g.maxRecvDataSegmentLength);
    // Before negotiation the RFC default of 8192 applies; accept up to our own declared size anyway.
    this.parser = new PduParser(Math.max(8192, g.maxRecvDataSegmentLength));
    this.writer = new PduWriter(socket);
    this.login = new LoginNegotiator(host, portalGroupTag, this.remoteAddress, this.log);
    this.writeBudget = host.writeBudget.forConnection({
      pause: () => {
        this.budgetPaused = true;
        this.socket.pause();
      },
      resume: () => {
        this.budgetPaused = false;
        if (!this.writer.blocked && !this.socket.destroyed) this.socket.resume();
      },
      timedOut: (why) => this.drop(why),
    });
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.log.debug({ err: err.message }, "socket error"));
    socket.on("close", () => this.closed());
    this.loginTimer = setTimeout(() => {
      if (this.state === "login") this.drop(`login not complete after ${g.loginTimeoutSec}s`);
    }, g.loginTimeoutSec * 1000);
    this.loginTimer.unref();
  }

  get maxSendSegment(): number {
    return this.params.initiatorMaxRecvDataSegmentLength;
  }
  get maxBurstLength(): number {
    return this.params.maxBurstLength;
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now();
    let input = chunk;
    for (;;) {
      try {
        for (const pdu of this.parser.push(input)) {
          if (this.state === "closed") return;
          this.receive(pdu);
        }
        this.applyBackPressure();
        return;
      } catch (err) {
        if (!(err instanceof PduFramingError)) {
          // A bug must cost this connection, never the process.
          this.internalError(err as Error);
          return;
        }
        if (err.kind === "header-digest" || err.kind === "data-digest") this.host.digestError?.(err.kind);
        if (err.fatal || !err.pdu || this.state !== "full-feature") {
          this.drop(`framing: ${err.message}`);
          return;
        }
        // RFC 7143 §7.8: a data digest error is answered with Reject; the PDU is discarded.
        this.log.warn(err.message);
        this.reject(err.pdu, RejectReason.DataDigestError);
        input = EMPTY;
      }
    }
  }

  /**
   * While the initiator is not reading our responses, stop reading its requests: what we would
   * answer could otherwise pile up in memory without bound.
   */
  private applyBackPressure(): void {
    if (!this.writer.blocked || this.socket.isPaused()) return;
    this.socket.pause();
    void this.writer.drained().then(() => {
      if (!this.socket.destroyed && !this.budgetPaused) this.socket.resume();
    });
  }

  private receive(pdu: ParsedPdu): void {
    if (this.state === "login") {
      this.host.preLogin.firstPdu(this);
      this.throttledLogin(pdu);
      return;
    }
    if (this.state === "logout" && pdu.opcode === Opcode.DataOut) {
      // Tasks still running when Logout arrived may need their data (RFC 7143 §11.14).
      this.handleDataOut(pdu);
      return;
    }
    if (this.state !== "full-feature") return;
    const session = this.session!;
    switch (pdu.opcode) {
      case Opcode.NopOut:
      case Opcode.ScsiCommand:
      case Opcode.TaskMgmtRequest:
      case Opcode.TextRequest:
      case Opcode.LogoutRequest:
        session.submit(this, pdu);
        return;
      case Opcode.DataOut:
        this.handleDataOut(pdu);
        return;
      case Opcode.SnackRequest:
        // ErrorRecoveryLevel 0: SNACK is not supported (RFC 7143 §11.16).
        this.reject(pdu, RejectReason.SnackReject);
        return;
      case Opcode.LoginRequest:
        this.reject(pdu, RejectReason.ProtocolError);
        return;
      default:
        this.reject(pdu, RejectReason.CommandNotSupported);
    }
  }

  /** A Login Request carrying a CHAP answer waits while the throttle says so (login_throttle.ts). */
  private throttledLogin(pdu: ParsedPdu): void {
    if (this.deferredLogin) {
      if (this.deferredLogin.length >= MAX_DEFERRED_LOGIN_PDUS) this.drop("login PDUs sent without waiting");
      else this.deferredLogin.push(pdu);
      return;
    }
    const waitMs = this.login.awaitingChapResponse
      ? this.host.loginThrottle.admit(this.login.initiator, this.remoteAddress)
      : 0;
    if (waitMs <= 0) {
      this.handleLogin(pdu);
      return;
    }
    const queue = (this.deferredLogin = [pdu]);
    this.socket.pause();
    setTimeout(() => {
      this.deferredLogin = undefined;
      if (this.state === "closed") return;
      this.handleLogin(queue.shift()!);
      for (const next of queue) if ((this.state as State) !== "closed") this.receive(next);
      if (!this.socket.destroyed) this.socket.resume();
    }, waitMs).unref();
  }

  private handleLogin(pdu: ParsedPdu): void {
    const step = this.login.handle(pdu);
    if (step.failed?.statusClass === 0x02 && step.failed.statusDetail === 0x01)
      this.host.loginThrottle.failed(this.login.initiator, this.remoteAddress);
    this.cid = this.login.cid;
    if (this.loginResponses++ === 0) {
      // RFC 7143 §11.13.4: the first response's StatSN starts the connection's numbering; take
      // the initiator's ExpStatSN so both sides agree from the start.
      this.statSN = pdu.opcode === Opcode.LoginRequest ? pdu.expStatSN : 0;
    }
    step.response.statSN = this.statSN;
    this.statSN = snAdd(this.statSN, 1);
    this.writer.send(step.response);
    if (step.failed) {
      // RFC 7143 §11.13.5: after a failing Login Response the target closes the connection.
      this.drop("login failed");
      return;
    }
    if (!step.session || !step.params) return;
    clearTimeout(this.loginTimer);
    this.host.preLogin.release(this);
    this.host.loginThrottle.succeeded(this.login.initiator, this.remoteAddress);
    this.params = step.params;
    this.session = step.session;
    this.state = "full-feature";
    const old = this.session.connections.get(this.cid);
    if (old && old !== this) {
      if (old instanceof Connection) old.cleanClose = true; // replaced, not failed: the session lives on
      old.drop("connection reinstated with the same CID");
    }
    this.session.connections.set(this.cid, this);
    this.parser.headerDigest = this.writer.headerDigest = this.params.headerDigest;
    this.parser.dataDigest = this.writer.dataDigest = this.params.dataDigest;
    this.parser.maxDataSegmentLength = this.params.targetMaxRecvDataSegmentLength;
    this.log.info(
      {
        initiator: this.session.initiatorName,
        isid: this.session.isid,
        tsih: this.session.tsih,
        cid: this.cid,
      },
      `logged in (${this.session.discovery ? "discovery" : this.session.node?.name})`,
    );
    this.startNopTimer();
  }

  /** Called by the session, in CmdSN order. */
  deliverCommand(pdu: CommandPdu): void {
    if (this.state !== "full-feature") return;
    switch (pdu.opcode) {
      case Opcode.NopOut:
        this.handleNopOut(pdu);
        return;
      case Opcode.ScsiCommand:
        this.handleScsiCommand(pdu);
        return;
      case Opcode.TaskMgmtRequest:
        void handleTaskManagement(this, this.session!, pdu).catch((err: Error) => this.internalError(err));
        return;
      case Opcode.TextRequest:
        this.text.handle(pdu);
        return;
      case Opcode.LogoutRequest:
        void this.handleLogout(pdu).catch((err: Error) => this.internalError(err));
        return;
    }
  }

  // ---- sending -------------------------------------------------------------------------------

  /** A PDU carrying status: StatSN assigned and advanced, ExpCmdSN/MaxCmdSN current. */
  sendStatus(pdu: TargetPdu, holder?: DataInHolder): boolean {
    pdu.statSN = this.statSN;
    this.statSN = snAdd(this.statSN, 1);
    return this.sendData(pdu, holder);
  }

  sendData(pdu: TargetPdu, holder?: DataInHolder): boolean {
    if (this.state === "closed") return false;
    const s = this.session;
    if (s) {
      pdu.expCmdSN = s.expCmdSN;
      pdu.maxCmdSN = s.maxCmdSN;
    }
    return this.writer.send(pdu, holder);
  }

  /** StatSN the next status will carry (R2T and NOP-In pings report it without advancing it). */
  get currentStatSN(): number {
    return this.statSN;
  }

  drained(): Promise<void> {
    return this.writer.drained();
  }

  allocateTtt(): number {
    const t = this.nextTtt;
    this.nextTtt = this.nextTtt >= 0x7fffffff ? 1 : this.nextTtt + 1;
    return t;
  }

  /** RFC 7143 §11.17: Reject carries the rejected PDU's header as its data. */
  reject(pdu: ParsedPdu, reason: RejectReason): void {
    this.log.warn({ opcode: `0x${opcodeOf(pdu).toString(16)}`, reason }, "PDU rejected");
    this.sendStatus({ opcode: Opcode.Reject, reason, itt: RESERVED_TAG, data: [Buffer.from(pdu.header)] });
  }

  // ---- NOP -----------------------------------------------------------------------------------

  private handleNopOut(pdu: Parsed<NopOutPdu>): void {
    if (pdu.itt === RESERVED_TAG) return; // an answer to our ping (activity is all that matters)
    if (pdu.ttt !== RESERVED_TAG) {
      this.reject(pdu, RejectReason.InvalidPduField);
      return;
    }
    // The echo may not exceed what the initiator accepts in one PDU.
    const echo = joinData(pdu.data).subarray(0, this.maxSendSegment);
    this.sendStatus({ opcode: Opcode.NopIn, lun: pdu.lun, itt: pdu.itt, ttt: RESERVED_TAG, data: [echo] });
  }

  /** RFC 7143 §11.19: after NopInInterval of silence, ping; no answer within Timeout drops the connection. */
  private startNopTimer(): void {
    const g = this.host.globals;
    if (g.nopInIntervalSec <= 0) return;
    const intervalMs = g.nopInIntervalSec * 1000;
    const timeoutMs = g.nopTimeoutSec * 1000;
    const tick = Math.max(50, Math.min(intervalMs, timeoutMs, 1000) / 2);
    this.nopTimer = setInterval(() => {
      const now = Date.now();
      if (this.pingSentAt) {
        if (this.lastActivity >= this.pingSentAt) this.pingSentAt = 0;
        else if (now - this.pingSentAt >= timeoutMs) {
          this.drop(`no answer to NOP-In within ${g.nopTimeoutSec}s`);
          return;
        }
      }
      if (!this.pingSentAt && now - this.lastActivity >= intervalMs) {
        this.sendData({
          opcode: Opcode.NopIn,
          itt: RESERVED_TAG,
          ttt: this.allocateTtt(),
          statSN: this.statSN,
        });
        this.pingSentAt = now;
      }
    }, tick);
    this.nopTimer.unref();
  }

  // ---- SCSI commands -------------------------------------------------------------------------

  private handleScsiCommand(pdu: Parsed<ScsiCommandPdu>): void {
    const session = this.session!;
    if (session.discovery || !session.node || !session.nexus) {
      this.reject(pdu, RejectReason.ProtocolError); // RFC 7143 §4.3: discovery sessions carry no commands
      return;
    }
    if (session.tasks.has(pdu.itt)) {
      this.reject(pdu, RejectReason.TaskInProgress);
      return;
    }
    if (pdu.immediate && session.tasks.size >= session.queueDepth) {
      // Immediate commands bypass the CmdSN window; bound them by the queue depth (RFC 7143 §11.17.1).
      this.reject(pdu, RejectReason.ImmediateCommandReject);
      return;
    }
    const cdb = pdu.cdb;
    const read = pdu.read;
    const write = pdu.write;
    const edtl = pdu.expectedDataTransferLength;
    const decoded = decodeLun(pdu.lun);
    const lun = decoded < 0 ? 0xffff : decoded;
    const task = new ActiveTask(pdu.itt, pdu.cmdSN, lun, this, pdu);
    const nexus = session.nexus;
    const attribute = ATTRIBUTES[pdu.attribute];
    task.build = (dataOut) => new ScsiTask(cdb, lun, pdu.itt, attribute, nexus, edtl, read, write, dataOut);
    task.holdsSlot = !pdu.immediate;
    if (task.holdsSlot) session.commandStarted();
    session.addTask(task);
    if (write && edtl > 0) {
      try {
        task.collector = new DataOutCollector(edtl, pdu.data, pdu.final, session.params, () =>
          this.allocateTtt(),
        );
      } catch (err) {
        this.protocolErrorOnTask(task, pdu, err as Error);
        return;
      }
      if (!task.collector.complete) {
        const admission = this.writeBudget.request(task, edtl, `ITT 0x${pdu.itt.toString(16)}`, () =>
          this.sendR2Ts(task),
        );
        if (admission === "too-large") this.refuseTooLarge(task, edtl);
        return;
      }
    }
    this.startExecution(task);
  }

  private startExecution(task: ActiveTask): void {
    this.execute(task).catch((err: Error) => this.internalError(err));
  }

  private handleDataOut(pdu: Parsed<DataOutPdu>): void {
    const session = this.session!;
    const task = session.tasks.get(pdu.itt);
    if (!task || !task.collector || task.conn !== this) {
      // Data for a task that was aborted or already failed: discarded (RFC 7143 §4.2.3.3).
      this.log.debug({ itt: pdu.itt }, "Data-Out for no task collecting data; discarded");
      return;
    }
    try {
      task.collector.accept(pdu);
    } catch (err) {
      this.protocolErrorOnTask(task, pdu, err as Error);
      return;
    }
    const complete = task.collector.complete;
    this.writeBudget.progress(task, complete);
    if (complete) this.startExecution(task);
    else if (this.writeBudget.admitted(task)) this.sendR2Ts(task); // else R2Ts follow admission
  }

  private sendR2Ts(task: ActiveTask): void {
    for (const r of task.collector!.nextR2Ts()) {
      this.sendData({
        opcode: Opcode.R2T,
        lun: task.command.lun,
        itt: task.itt,
        ttt: r.ttt,
        statSN: this.statSN,
        r2tSN: r.r2tSN,
        bufferOffset: r.offset,
        desiredDataTransferLength: r.length,
      });
    }
  }

  /**
   * A command or Data-Out broke the data transfer rules: Reject the PDU and end the task with
   * CHECK CONDITION (ABORTED COMMAND / DATA PHASE ERROR) so the initiator is not left waiting.
   */
  private protocolErrorOnTask(task: ActiveTask, pdu: ParsedPdu, err: Error): void {
    this.log.warn({ itt: task.itt }, `data-out: ${err.message}`);
    this.reject(pdu, RejectReason.ProtocolError);
    task.collector = undefined;
    const st = task.build!([]);
    st.status = ScsiStatus.CheckCondition;
    st.sense = fixedSense(SenseKey.AbortedCommand, ASC.DATA_PHASE_ERROR);
    this.respondNow(task, st);
  }

  /**
   * A write whose data could never fit the target's write-data budget: CHECK CONDITION, ILLEGAL REQUEST,
   * INVALID FIELD IN CDB (SPC-4 4.5.6), as for a transfer longer than the Block Limits VPD allows.
   */
  private refuseTooLarge(task: ActiveTask, edtl: number): void {
    this.log.warn({ itt: task.itt, edtl }, "WRITE larger than MaxWriteDataTotal; refused");
    task.collector = undefined;
    const st = task.build!([]);
    st.status = ScsiStatus.CheckCondition;
    const sense = Buffer.alloc(18);
    sense[0] = 0x70;
    sense[2] = 0x05;
    sense[7] = 10;
    sense[12] = 0x24;
    st.sense = sense;
    this.respondNow(task, st);
  }

  private async execute(task: ActiveTask): Promise<void> {
    const session = this.session!;
    const data = task.collector ? task.collector.buffers() : [];
    task.r2tCount = task.collector?.r2tCount ?? 0;
    task.collector = undefined;
    const st = task.build!(data);
    if (st.readDirection) st.readBuffers = this.host.readBuffers;
    task.scsiTask = st;
    try {
      await session.node!.config.device.execute(st);
    } catch (err) {
      this.log.error({ err: (err as Error).message, itt: task.itt }, "device.execute threw");
      st.status = ScsiStatus.CheckCondition;
      st.sense = fixedSense(SenseKey.HardwareError, ASC.INTERNAL_TARGET_FAILURE);
    }
    const sending = this.respond(task, st);
    if (sending) await sending;
  }

  /**
   * Send the task's result and end it. Returns a promise only when the socket pushed back (the
   * task ends once the rest is sent); otherwise the task has ended on return.
   */
  private respond(task: ActiveTask, st: ScsiTask): Promise<void> | undefined {
    const session = this.session!;
    if (task.holdsSlot) {
      task.holdsSlot = false;
      session.commandEnded();
    }
    session.removeTask(task);
    let sending: Promise<void> | undefined;
    try {
      if (!task.aborted && !st.aborted && this.state !== "closed")
        sending = sendScsiResult(this, st, task.r2tCount);
      else st.releaseDataIn(); // nothing of it was sent
    } finally {
      if (!sending) this.endTask(task);
    }
    return sending?.finally(() => this.endTask(task));
  }

  /** Respond outside the command path (a refused or broken command): errors are internal errors. */
  private respondNow(task: ActiveTask, st: ScsiTask): void {
    try {
      this.respond(task, st)?.catch((e: Error) => this.internalError(e));
    } catch (e) {
      this.internalError(e as Error);
    }
  }

  private endTask(task: ActiveTask): void {
    this.writeBudget.release(task);
    task.finish();
  }

  abandon(task: ActiveTask): void {
    task.collector = undefined;
    this.writeBudget.release(task);
    task.aborted = true;
    if (task.holdsSlot) {
      task.holdsSlot = false;
      this.session?.commandEnded();
    }
    this.session?.removeTask(task);
    task.finish();
  }

  /** SendTargets answer lines for this connection's initiator (RFC 7143 §13.3, Appendix C). */
  sendTargets(value: string): string[] {
    return this.host.sendTargetsText(this, value);
  }

  sessionsOfNode(name: string): Session[] {
    return this.host.sessionsOfNode(name);
  }

  endSession(session: Session, reason: string): void {
    this.host.endSession(session, reason);
  }

  // ---- Logout --------------------------------------------------------------------------------

  /** RFC 7143 §11.14/§11.15: close the session or one connection, answer, then close. */
  private async handleLogout(pdu: Parsed<LogoutRequestPdu>): Promise<void> {
    const session = this.session!;
    const reason = pdu.reasonCode;
    const cid = pdu.cid;
    let response = 0;
    let closeSession = false;
    let closeSelf = false;
    if (reason === LogoutReason.CloseSession) {
      closeSession = true;
      closeSelf = true;
    } else if (reason === LogoutReason.CloseConnection) {
      if (cid === this.cid) closeSelf = true;
      else {
        const other = session.connections.get(cid);
        if (other) other.drop(`logged out by CID ${this.cid}`);
        else response = 1; // CID not found
      }
    } else if (reason === LogoutReason.RemoveConnectionForRecovery) {
      response = 2; // connection recovery is not supported at ErrorRecoveryLevel 0
    } else {
      this.reject(pdu, RejectReason.InvalidPduField);
      return;
    }
    if (closeSelf) {
      this.state = "logout";
      const waitFor = session.inFlight(closeSession ? undefined : this).map((t) => t.done);
      await Promise.all(waitFor);
    }
    this.sendStatus({
      opcode: Opcode.LogoutResponse,
      response,
      itt: pdu.itt,
      time2Wait: session.params.defaultTime2Wait,
      time2Retain: session.params.defaultTime2Retain,
    });
    if (!closeSelf) return;
    this.cleanClose = true;
    this.log.info({ tsih: session.tsih, cid: this.cid, reason }, "logout");
    if (closeSession) this.host.endSession(session, "logout");
    else this.drop("logout");
  }

  // ---- teardown ------------------------------------------------------------------------------

  /** Flush what is queued and close the socket. */
  drop(reason: string): void {
    if (this.state === "closed") return;
    this.log.info(`closing connection: ${reason}`);
    this.state = "closed";
    this.clearTimers();
    this.writer.flush(); // what was answered this turn (a failed login's response) goes first
    this.socket.end();
    // A peer that does not close its side is cut off shortly after.
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private clearTimers(): void {
    clearTimeout(this.loginTimer);
    clearInterval(this.nopTimer);
  }

  private closed(): void {
    this.clearTimers();
    const wasClean = this.cleanClose;
    this.state = "closed";
    const s = this.session;
    if (s) {
      if (s.connections.get(this.cid) === this) s.connections.delete(this.cid);
      s.dropPendingOf(this);
      for (const t of s.inFlight(this)) {
        if (t.collector) this.abandon(t);
        else t.aborted = true;
      }
      this.writeBudget.close();
      // ErrorRecoveryLevel 0: losing a connection other than by logout fails the whole session.
      if (!s.ended && (!wasClean || s.connections.size === 0))
        this.host.endSession(s, wasClean ? "last connection logged out" : "connection lost");
    }
    this.host.connectionClosed(this);
  }

  private internalError(err: Error): void {
    this.log.error({ err: err.message, stack: err.stack }, "internal error; dropping connection");
    this.drop("internal error");
  }

  /** Send an Asynchronous Message (RFC 7143 §11.9) — used when the target ends the session. */
  sendAsync(event: number, p1: number, p2: number, p3: number): void {
    if (this.state !== "full-feature") return;
    this.sendStatus({
      opcode: Opcode.AsyncMessage,
      itt: RESERVED_TAG,
      asyncEvent: event,
      parameter1: p1,
      parameter2: p2,
      parameter3: p3,
    });
  }
}
