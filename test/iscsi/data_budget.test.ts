import { test } from "node:test";
import assert from "node:assert/strict";
import { WriteDataBudget } from "../../src/iscsi/data_budget.js";
import { IscsiStats } from "../../src/iscsi/iscsi_stats.js";

function connection(budget: WriteDataBudget) {
  const events: string[] = [];
  const c = budget.forConnection({
    pause: () => events.push("pause"),
    resume: () => events.push("resume"),
    timedOut: (why) => events.push(`timeout ${why}`),
  });
  return { c, events };
}

test("write budget: per connection, then target-wide; waiting writes start in order as room frees", () => {
  const budget = new WriteDataBudget(
    { perConnection: 100, total: 150, dataOutTimeoutMs: 60_000 },
    new IscsiStats(),
  );
  const a = connection(budget);
  const b = connection(budget);
  const started: string[] = [];
  const w = (name: string) => ({ name });
  const [a1, a2, a3, b1, b2] = ["a1", "a2", "a3", "b1", "b2"].map(w);
  assert.equal(
    a.c.request(a1!, 60, "a1", () => started.push("a1")),
    "now",
  );
  assert.equal(
    a.c.request(a2!, 60, "a2", () => started.push("a2")),
    "queued",
  ); // over a's 100
  assert.equal(
    a.c.request(a3!, 10, "a3", () => started.push("a3")),
    "queued",
  ); // behind a2: in order
  assert.equal(
    b.c.request(b1!, 80, "b1", () => started.push("b1")),
    "now",
  );
  assert.equal(
    b.c.request(b2!, 20, "b2", () => started.push("b2")),
    "queued",
  ); // target-wide 150 reached
  assert.equal(budget.used, 140);
  assert.deepEqual(started, ["a1", "b1"]);
  // a is not read while it only has waiting writes... but a1 still collects data, so it stays read.
  assert.deepEqual(a.events, []);
  a.c.progress(a1!, true); // a1's data is all in: now a has nothing to read for
  assert.deepEqual(a.events, ["pause"]);
  a.c.release(a1!);
  assert.deepEqual(started, ["a1", "b1", "a2", "a3"]); // 60 + 10 of a's 100; 150 of the target's 150
  assert.deepEqual(a.events, ["pause", "resume"]);
  b.c.release(b1!);
  assert.deepEqual(started, ["a1", "b1", "a2", "a3", "b2"]);
  assert.equal(budget.used, 90);
  a.c.close();
  b.c.close();
  assert.equal(budget.used, 0);
});

test("write budget: one write larger than the connection's share runs alone; larger than the target's is refused", () => {
  const budget = new WriteDataBudget(
    { perConnection: 100, total: 300, dataOutTimeoutMs: 60_000 },
    new IscsiStats(),
  );
  const a = connection(budget);
  assert.equal(
    a.c.request({}, 250, "big", () => undefined),
    "now",
  );
  assert.equal(
    a.c.request({}, 301, "huge", () => undefined),
    "too-large",
  );
  a.c.close();
});

test("write budget: a write whose Data-Out stops arriving times out", async () => {
  const stats = new IscsiStats();
  const budget = new WriteDataBudget({ perConnection: 100, total: 100, dataOutTimeoutMs: 200 }, stats);
  const a = connection(budget);
  const key = {};
  a.c.request(key, 50, "ITT 0x7", () => undefined);
  await new Promise((r) => setTimeout(r, 120));
  a.c.progress(key, false); // progress restarts the clock
  await new Promise((r) => setTimeout(r, 120));
  assert.deepEqual(a.events, []);
  await new Promise((r) => setTimeout(r, 250));
  assert.deepEqual(a.events, ["timeout ITT 0x7: no Data-Out for 0 s"]);
  assert.equal(stats.dataOutTimeouts, 1);
  a.c.close();
});
