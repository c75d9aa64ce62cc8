/**
 * The task set of one logical unit (SAM-5 8.6 / 8.7): the tasks that have entered it, in order,
 * with the task attribute rules — SIMPLE tasks wait for earlier ORDERED tasks, ORDERED tasks wait for
 * every earlier task, HEAD OF QUEUE tasks start at once — and the bookkeeping task management needs.
 */
import type { ScsiTask } from "./task.js";

export interface TaskSetEntry {
  readonly task: ScsiTask;
  readonly nexusKey: string;
  /** Settles when the task has left the task set (completed or aborted). */
  readonly done: Promise<void>;
}

interface Entry extends TaskSetEntry {
  finish(): void;
}

export class TaskSet {
  private readonly entries: Entry[] = [];

  /** Tasks currently in the task set, in arrival order. */
  get size(): number {
    return this.entries.length;
  }

  /**
   * Enter the task set and wait until the task may start. Returns the function that removes it
   * again; call it exactly once when the task ends.
   */
  async enter(task: ScsiTask): Promise<() => void> {
    const prior = this.entries.slice();
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const entry: Entry = { task, nexusKey: task.nexus.key, done, finish };
    this.entries.push(entry);
    const leave = (): void => {
      const i = this.entries.indexOf(entry);
      if (i >= 0) this.entries.splice(i, 1);
      entry.finish();
    };
    let waitFor: Entry[];
    switch (task.attribute) {
      case "head-of-queue":
        waitFor = [];
        break;
      case "ordered":
        waitFor = prior;
        break;
      default:
        waitFor = prior.filter((e) => e.task.attribute === "ordered");
    }
    if (waitFor.length > 0) await Promise.all(waitFor.map((e) => e.done));
    return leave;
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
