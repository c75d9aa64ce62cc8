/**
 * The task set of one logical unit (SAM-5 8.6 / 8.7): the tasks that have entered it, in order,
 * with the task attribute rules — SIMPLE tasks wait for earlier ORDERED tasks, ORDERED tasks wait for
 * every earlier task, HEAD OF QUEUE tasks start at once — and the bookkeeping task management needs.
 *
 * Every command passes through here, so the common case (SIMPLE tasks, no ORDERED one present)
 * copies no list and makes no promise: an entry's `done` promise exists only once someone waits.
 */
import type { ScsiTask } from "./task.js";
import { Completion } from "../util/completion.js";

export interface TaskSetEntry {
  readonly task: ScsiTask;
  readonly nexusKey: string;
  /** Settles when the task has left the task set (completed or aborted). */
  readonly done: Promise<void>;
}

/** One task in the set; `ready` (when set) resolves once the task may start. */
export class TaskSetMember extends Completion implements TaskSetEntry {
  ready: Promise<void> | undefined = undefined;
  readonly nexusKey: string;

  constructor(readonly task: ScsiTask) {
    super();
    this.nexusKey = task.nexus.key;
  }
}

export class TaskSet {
  private readonly entries: TaskSetMember[] = [];
  /** ORDERED tasks in the set: while none is, a SIMPLE task waits for nothing. */
  private ordered = 0;

  /** Tasks currently in the task set, in arrival order. */
  get size(): number {
    return this.entries.length;
  }

  /**
   * Enter the task set. The task may start once the member's `ready` (if set) resolves; call
   * leave() exactly once when the task ends, whether it started or not.
   */
  enter(task: ScsiTask): TaskSetMember {
    const member = new TaskSetMember(task);
    let waitFor: TaskSetMember[] | undefined;
    if (task.attribute === "ordered") {
      if (this.entries.length > 0) waitFor = this.entries.slice();
    } else if (task.attribute !== "head-of-queue" && this.ordered > 0) {
      waitFor = this.entries.filter((e) => e.task.attribute === "ordered");
    }
    this.entries.push(member);
    if (task.attribute === "ordered") this.ordered++;
    if (waitFor && waitFor.length > 0)
      member.ready = Promise.all(waitFor.map((e) => e.done)).then(() => undefined);
    return member;
  }

  leave(member: TaskSetMember): void {
    const i = this.entries.indexOf(member);
    if (i >= 0) {
      this.entries.splice(i, 1);
      if (member.task.attribute === "ordered") this.ordered--;
    }
    member.finish();
  }

  /** Entries matching `pred` (e.g. one nexus, one tag). */
  select(pred: (e: TaskSetEntry) => boolean): TaskSetEntry[] {
    return this.entries.filter(pred);
  }

  /** Mark the selected tasks aborted (SAM-5 task management functions) and wait until each has left the task set. */
  async abort(entries: readonly TaskSetEntry[]): Promise<void> {
    for (const e of entries) e.task.aborted = true;
    await Promise.all(entries.map((e) => e.done));
  }
}
