/**
 * Task Management Function Requests (RFC 7143 §11.5, §11.6): ABORT TASK (including a referenced
 * task that does not exist or already completed), ABORT TASK SET, CLEAR ACA, CLEAR TASK SET,
 * LOGICAL UNIT RESET, TARGET WARM/COLD RESET. Tasks still collecting data-out are ended here; tasks
 * the SCSI layer holds are aborted by it (and come back with `aborted`, so no response is sent).
 * TASK REASSIGN needs ErrorRecoveryLevel 2: answered "function not supported".
 */
import { decodeLun } from "../scsi/lun_id.js";
import type { TaskManagementFunction, TaskManagementResult } from "../scsi/task.js";
import type { Logger } from "../util/log.js";
import {
  Opcode,
  TmfFunction,
  snLess,
  snLessEq,
  type Parsed,
  type TaskMgmtRequestPdu,
  type TaskMgmtResponsePdu,
} from "./pdu.js";
import type { ActiveTask, Session } from "./session.js";

/** What task management needs from the connection the request came on. */
export interface TmfConnection {
  readonly log: Logger;
  /** Send a status-carrying PDU (StatSN assigned by the connection). */
  sendStatus(pdu: TaskMgmtResponsePdu): boolean;
  /** Sessions of a target node (resets act on all of them). */
  sessionsOfNode(nodeName: string): Session[];
  endSession(session: Session, reason: string): void;
}

/** RFC 7143 §11.6.1 response codes. */
export const enum TmfResponse {
  Complete = 0,
  NoSuchTask = 1,
  NoSuchLun = 2,
  StillAllegiant = 3,
  ReassignNotSupported = 4,
  NotSupported = 5,
  AuthorizationFailed = 6,
  Rejected = 255,
}

const FUNCTIONS: Record<number, TaskManagementFunction> = {
  [TmfFunction.AbortTask]: "abort-task",
  [TmfFunction.AbortTaskSet]: "abort-task-set",
  [TmfFunction.ClearAca]: "clear-aca",
  [TmfFunction.ClearTaskSet]: "clear-task-set",
  [TmfFunction.LogicalUnitReset]: "logical-unit-reset",
  [TmfFunction.TargetWarmReset]: "target-warm-reset",
  [TmfFunction.TargetColdReset]: "target-cold-reset",
};

const RESULT_CODES: Record<TaskManagementResult, TmfResponse> = {
  complete: TmfResponse.Complete,
  "no-such-task": TmfResponse.NoSuchTask,
  "no-such-lun": TmfResponse.NoSuchLun,
  "not-supported": TmfResponse.NotSupported,
  rejected: TmfResponse.Rejected,
};

export async function handleTaskManagement(
  conn: TmfConnection,
  session: Session,
  pdu: Parsed<TaskMgmtRequestPdu>,
): Promise<void> {
  const code = pdu.function;
  const fn = FUNCTIONS[code];
  const respond = (response: TmfResponse): void => {
    conn.sendStatus({ opcode: Opcode.TaskMgmtResponse, response, itt: pdu.itt });
  };
  const node = session.node;
  const nexus = session.nexus;
  if (!fn || !node || !nexus) {
    respond(
      code === TmfFunction.TaskReassign
        ? TmfResponse.NotSupported
        : session.discovery
          ? TmfResponse.Rejected
          : TmfResponse.NotSupported,
    );
    return;
  }
  const device = node.config.device;
  const decoded = decodeLun(pdu.lun);
  const lun = decoded < 0 ? 0xffff : decoded;
  conn.log.info({ fn, lun, rtt: pdu.referencedTaskTag }, "task management");

  if (fn === "abort-task") {
    const rtt = pdu.referencedTaskTag;
    const refCmdSN = pdu.refCmdSN;
    const task = session.tasks.get(rtt);
    if (!task) {
      // RFC 7143 §11.5.1: a RefCmdSN inside the window and before this request counts as
      // received and completed ("Function complete"); otherwise the task does not exist.
      const inWindow = snLessEq(session.expCmdSN, refCmdSN) && snLessEq(refCmdSN, session.maxCmdSN);
      respond(inWindow && snLess(refCmdSN, pdu.cmdSN) ? TmfResponse.Complete : TmfResponse.NoSuchTask);
      return;
    }
    const result = await abortTasks([task], () =>
      device.taskManagement({ fn, nexus, lun: task.lun, referencedTag: rtt }),
    );
    respond(result === "no-such-task" ? TmfResponse.Complete : RESULT_CODES[result]);
    return;
  }
  if (fn !== "target-warm-reset" && fn !== "target-cold-reset" && !device.lunIds().includes(lun)) {
    respond(TmfResponse.NoSuchLun);
    return;
  }
  let affected: ActiveTask[];
  let sessions: Session[];
  if (fn === "abort-task-set" || fn === "clear-aca") {
    sessions = [session];
    affected = fn === "clear-aca" ? [] : session.inFlight().filter((t) => t.lun === lun);
  } else {
    sessions = conn.sessionsOfNode(node.name);
    const all = sessions.flatMap((s) => s.inFlight());
    affected =
      fn === "target-warm-reset" || fn === "target-cold-reset" ? all : all.filter((t) => t.lun === lun);
  }
  const result = await abortTasks(affected, () => device.taskManagement({ fn, nexus, lun }));
  respond(RESULT_CODES[result]);
  if (fn === "target-cold-reset" && result === "complete") {
    // SAM-5: a cold reset ends every I_T nexus; RFC 7143 §11.5.1 drops the connections after the response.
    for (const s of sessions) conn.endSession(s, "target cold reset");
  }
}

/** Mark tasks aborted, end those still collecting data here, let the device abort the rest. */
async function abortTasks(
  tasks: readonly ActiveTask[],
  deviceCall: () => Promise<TaskManagementResult>,
): Promise<TaskManagementResult> {
  for (const t of tasks) {
    t.aborted = true;
    if (t.collector) t.conn.abandon(t);
  }
  const result = await deviceCall();
  await Promise.all(tasks.map((t) => t.done));
  return result;
}
