/** TaskSet attribute rules and LbaRangeLock exclusion, plus CLEAR TASK SET across nexuses. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LbaRangeLock } from "../../src/scsi/lba_range_lock.js";
import { TaskSet } from "../../src/scsi/task_set.js";
import { ScsiTask, type TaskAttribute } from "../../src/scsi/task.js";
import { cdb10, clearUa, makeDevice, nexusA, nexusB, run, senseOf } from "./helpers.js";

const tick = () => new Promise((r) => setTimeout(r, 5));

function task(tag: number, attribute: TaskAttribute): ScsiTask {
  return new ScsiTask(Buffer.from([0, 0, 0, 0, 0, 0]), 0, tag, attribute, nexusA, 0, false, false, []);
}

describe("TaskSet", () => {
  it("SIMPLE tasks start together, ORDERED waits for all earlier, HEAD OF QUEUE starts at once", async () => {
    const set = new TaskSet();
    const started: number[] = [];
    const enter = (t: ScsiTask) => {
      const member = set.enter(t);
      return Promise.resolve(member.ready).then(() => (started.push(t.tag), () => set.leave(member)));
    };
    const s1 = enter(task(1, "simple"));
    const s2 = enter(task(2, "simple"));
    const o3 = enter(task(3, "ordered"));
    const s4 = enter(task(4, "simple"));
    const h5 = enter(task(5, "head-of-queue"));
    await tick();
    assert.deepEqual(started.sort(), [1, 2, 5]);
    (await s1)();
    await tick();
    assert.ok(!started.includes(3));
    (await s2)();
    (await h5)();
    await tick();
    assert.ok(started.includes(3));
    assert.ok(!started.includes(4), "SIMPLE after ORDERED waits for it");
    (await o3)();
    (await s4)();
    assert.equal(set.size, 0);
  });
});

describe("LbaRangeLock", () => {
  it("readers share, a writer excludes overlapping ranges only, in arrival order", async () => {
    const lock = new LbaRangeLock();
    const order: string[] = [];
    const r1 = await lock.acquire(0, 10, false);
    const r2 = await lock.acquire(5, 10, false);
    const w = lock.acquire(8, 1, true).then((rel) => (order.push("w"), rel));
    const other = lock.acquire(100, 1, true).then((rel) => (order.push("other"), rel));
    await tick();
    assert.deepEqual(order, ["other"]);
    r1();
    await tick();
    assert.deepEqual(order, ["other"]);
    r2();
    (await w)();
    (await other)();
    assert.deepEqual(order, ["other", "w"]);
  });
});

describe("CLEAR TASK SET", () => {
  it("aborts every nexus's tasks and tells the other nexus COMMANDS CLEARED BY ANOTHER INITIATOR", async () => {
    const dev = makeDevice(512, 64);
    await clearUa(dev, nexusA);
    await clearUa(dev, nexusB);
    const lu = dev.logicalUnit(0)!;
    const release = await lu.rangeLock.acquire(0, 1, true);
    const w = new ScsiTask(Buffer.from(cdb10(0x2a, 0, 1)), 0, 7, "simple", nexusB, 512, false, true, [
      Buffer.alloc(512, 1),
    ]);
    const pw = dev.execute(w);
    await tick();
    const clear = dev.taskManagement({ fn: "clear-task-set", nexus: nexusA, lun: 0 });
    release();
    assert.equal(await clear, "complete");
    await pw;
    assert.equal(w.aborted, true);
    assert.deepEqual(senseOf(await run(dev, [0, 0, 0, 0, 0, 0], { nexus: nexusB })), {
      key: 0x6,
      asc: 0x2f,
      ascq: 0,
    });
    assert.equal((await run(dev, [0, 0, 0, 0, 0, 0], { nexus: nexusA })).status, 0);
  });
});
