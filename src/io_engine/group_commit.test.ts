/**
 * GroupCommit's durability rule: a caller is released only by an fdatasync that started after it
 * asked (its write had completed by then). The fake fdatasync below is released by hand, so the
 * tests decide what is in flight when.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GroupCommit } from "./group_commit.js";

interface FakeSync {
  readonly id: number;
  /** Event counter when the fdatasync started. */
  readonly startedAt: number;
  finish(err?: Error): void;
}

/** Flush microtasks and the promise chains behind them. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

function harness(): {
  commit: GroupCommit;
  syncs: FakeSync[];
  /** Complete a write now and ask for its sync; returns when the sync released it (or threw). */
  write(name: string): { done: Promise<void>; completedAt: number; releasedBy: () => number | undefined };
} {
  let clock = 0;
  const syncs: FakeSync[] = [];
  let current: FakeSync | undefined;
  const commit = new GroupCommit(
    () =>
      new Promise<void>((resolve, reject) => {
        const s: FakeSync = {
          id: syncs.length,
          startedAt: ++clock,
          finish: (err) => {
            current = undefined;
            if (err) reject(err);
            else resolve();
          },
        };
        syncs.push(s);
        current = s;
      }),
  );
  return {
    commit,
    syncs,
    write() {
      const completedAt = ++clock;
      let releasedBy: number | undefined;
      const done = commit.sync().then(() => {
        // The sync that just finished is the last one started and no longer current.
        releasedBy = syncs.length - 1 - (current ? 1 : 0);
      });
      return { done, completedAt, releasedBy: () => releasedBy };
    },
  };
}

describe("GroupCommit", () => {
  it("a write that asks while an fdatasync runs waits for the next one, started after it asked", async () => {
    const h = harness();
    const a = h.write("a");
    await settle();
    assert.equal(h.syncs.length, 1, "the first ask starts a sync");
    const b = h.write("b"); // completed while sync 0 is in flight: sync 0 may not cover it
    await settle();
    assert.equal(h.syncs.length, 1, "no second sync while one runs");
    h.syncs[0].finish();
    await a.done;
    await settle();
    assert.equal(a.releasedBy(), 0);
    assert.equal(b.releasedBy(), undefined, "b acknowledged by a sync that started before it completed");
    assert.equal(h.syncs.length, 2, "b's sync starts when sync 0 has finished");
    assert.ok(h.syncs[1].startedAt > b.completedAt);
    h.syncs[1].finish();
    await b.done;
    assert.equal(b.releasedBy(), 1);
  });

  it("writes that ask in one turn share one fdatasync", async () => {
    const h = harness();
    const ws = Array.from({ length: 32 }, (_, i) => h.write(`w${i}`));
    await settle();
    assert.equal(h.syncs.length, 1);
    for (const w of ws) assert.ok(h.syncs[0].startedAt > w.completedAt);
    h.syncs[0].finish();
    await Promise.all(ws.map((w) => w.done));
    // Writes that asked while sync 1 ran share sync 2.
    const first = h.write("x");
    await settle();
    const later = Array.from({ length: 8 }, (_, i) => h.write(`y${i}`));
    await settle();
    assert.equal(h.syncs.length, 2);
    h.syncs[1].finish();
    await first.done;
    await settle();
    assert.equal(h.syncs.length, 3);
    for (const w of later) assert.equal(w.releasedBy(), undefined);
    h.syncs[2].finish();
    await Promise.all(later.map((w) => w.done));
    for (const w of later) assert.ok(h.syncs[2].startedAt > w.completedAt);
  });

  it("a failed fdatasync fails the writes it was for, and later writes get a new one", async () => {
    const h = harness();
    const a = h.write("a");
    await settle();
    const b = h.write("b");
    await settle();
    h.syncs[0].finish(new Error("EIO"));
    await assert.rejects(a.done, /EIO/);
    await settle();
    assert.equal(h.syncs.length, 2, "b's sync still runs");
    h.syncs[1].finish();
    await b.done;
  });
});
