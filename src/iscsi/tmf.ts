/**
 * Task Management Function Requests (RFC 7143 §11.5, §11.6): ABORT TASK (including a referenced
 * task that does not exist or already completed), ABORT TASK SET, CLEAR ACA, CLEAR TASK SET,
 * LOGICAL UNIT RESET, TARGET WARM/COLD RESET. Tasks still collecting data-out are ended here; tasks
 * the SCSI layer holds are aborted by it (and come back with `aborted`, so no response is sent).
 * TASK REASSIGN needs ErrorRecoveryLevel 2: answered "function not supported".
 */
import { decodeLun } from "../scsi/lun_id.js";
import type { TaskManagementFunction, TaskManagementResult } from "../scsi/task.js";
import type { Connection } from "./conn.js";
import { FLAG_FINAL, Opcode, Pdu, snLess, snLessEq } from "./pdu.js";
import type { ActiveTask, Session } from "./session.js";

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
  1: "abort-task",
  2: "abort-task-set",
  3: "clear-aca",
  4: "clear-task-set",
  5: "logical-unit-reset",
  6: "target-warm-reset",
  7: "target-cold-reset",
};

const RESULT_CODES: Record<TaskManagementResult, TmfResponse> = {
  complete: TmfResponse.Complete,
  "no-such-task": TmfResponse.NoSuchTask,
  "no-such-lun": TmfResponse.NoSuchLun,
  "not-supported": TmfResponse.NotSupported,
  rejected: TmfResponse.Rejected,
};

export async function handleTaskManagement(conn: Connection, session: Session, pdu: Pdu): Promise<void> {
  const code = pdu.flags & 0x7f;
  const fn = FUNCTIONS[code];
  const respond = (response: TmfResponse): void => {
    const rsp = Pdu.create(Opcode.TaskMgmtResponse);
    rsp.flags = FLAG_FINAL;
    rsp.bhs[2] = response;
    rsp.itt = pdu.itt;
    conn.sendStatus(rsp);
  };
  const node = session.node;
  const nexus = session.nexus;
  if (!fn || !node || !nexus) {
    respond(
      code === 8
        ? TmfResponse.NotSupported
        : session.discovery
          ? TmfResponse.Rejected
          : TmfResponse.NotSupported,
    );
    return;
  }
  const device = node.config.device;
  const decoded = decodeLun(pdu.lunField);
  const lun = decoded < 0 ? 0xffff : decoded;
  conn.log.info({ fn, lun, rtt: pdu.ttt }, "task management");

  if (fn === "abort-task") {
    const rtt = pdu.u32(20);
    const refCmdSN = pdu.u32(32);
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
    sessions = conn.hostSessionsOfNode(node.name);
    const all = sessions.flatMap((s) => s.inFlight());
    affected =
      fn === "target-warm-reset" || fn === "target-cold-reset" ? all : all.filter((t) => t.lun === lun);
  }
  const result = await abortTasks(affected, () => device.taskManagement({ fn, nexus, lun }));
  respond(RESULT_CODES[result]);
  if (fn === "target-cold-reset" && result === "complete") {
    // SAM-5: a cold reset ends every I_T nexus; RFC 7143 §11.5.1 drops the connections after the response.
    for (const s of sessions) conn.hostEndSession(s, "target cold reset");
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
