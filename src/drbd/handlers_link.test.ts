/**
 * Handlers the connection runs (two devices in one process, ports 8120-8125 and 8108-8109): before-resync-target (a
 * non-zero exit drops the connection for good, as drbd_start_resync does), after-resync-target,
 * initial-split-brain, split-brain and pri-lost-after-sb.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { HandlerName, HandlerRunner } from "./handlers.js";
import { eventually, link, pattern, sharedGenerationPair } from "./test_support.js";

function recordingHandlers(
  codes: Partial<Record<HandlerName, number>>,
): HandlerRunner & { calls: HandlerName[] } {
  const calls: HandlerName[] = [];
  return {
    calls,
    configured: (name) => name in codes,
    run(name) {
      calls.push(name);
      return Promise.resolve(codes[name] ?? 0);
    },
  };
}

/** a Primary writes while b is away, so that b's reconnect is a resync with b as SyncTarget. */
async function resyncToB(
  t: Parameters<typeof link>[0],
  ports: [number, number],
  codes: Partial<Record<HandlerName, number>>,
) {
  const { a, b } = await sharedGenerationPair(t, { sizeMiB: 8 });
  const handlers = recordingHandlers(codes);
  const ca = link(t, a, ports[0], ports[1]);
  const cb = link(t, b, ports[1], ports[0], { handlers });
  await a.primary({ force: true });
  await a.writev(0, [pattern(64 * 1024, 7)]);
  await ca.connect();
  await cb.connect();
  return { a, b, ca, cb, handlers };
}

test("before-resync-target 0: the resync runs, after-resync-target follows", async (t) => {
  const { b, cb, handlers } = await resyncToB(t, [8120, 8121], {
    "before-resync-target": 0,
    "after-resync-target": 0,
  });
  await cb.waitFor("Connected", 20000);
  assert.ok(await eventually(() => b.disk === "UpToDate"));
  assert.ok(await eventually(() => handlers.calls.includes("after-resync-target")));
  assert.deepEqual(handlers.calls, ["before-resync-target", "after-resync-target"]);
});

test("before-resync-target non-zero: no resync, the target goes StandAlone", async (t) => {
  const { b, cb, handlers } = await resyncToB(t, [8122, 8123], { "before-resync-target": 1 });
  assert.ok(await eventually(() => cb.state === "StandAlone", 20000), `state ${cb.state}`);
  assert.match(cb.error ?? "", /before-resync-target handler returned 1/);
  assert.deepEqual(handlers.calls, ["before-resync-target"]);
  assert.notEqual(b.disk, "UpToDate");
});

test("an unresolved split brain runs initial-split-brain and split-brain", async (t) => {
  const { a, b } = await sharedGenerationPair(t, { sizeMiB: 8 });
  const ha = recordingHandlers({ "initial-split-brain": 0, "split-brain": 0 });
  const hb = recordingHandlers({ "initial-split-brain": 0, "split-brain": 0 });
  // Both sides change the shared generation while apart.
  for (const d of [a, b]) {
    await d.primary({ force: true });
    await d.writev(0, [pattern(4096, d.minor)]);
    await d.secondary();
  }
  const ca = link(t, a, 8124, 8125, { handlers: ha });
  const cb = link(t, b, 8125, 8124, { handlers: hb });
  await ca.connect();
  await cb.connect();
  assert.ok(await eventually(() => ca.state === "StandAlone" && cb.state === "StandAlone", 20000));
  for (const h of [ha, hb])
    assert.ok(await eventually(() => h.calls.join() === "initial-split-brain,split-brain"), h.calls.join());
});

test("call-pri-lost-after-sb with a pri-lost-after-sb handler: it runs, the Primary stays, the split brain stays unresolved", async (t) => {
  const { a, b } = await sharedGenerationPair(t, { sizeMiB: 8 });
  // enum drbd_after_sb_p: discard-least-changes 4, call-pri-lost-after-sb 9.
  const afterSb = { after0p: 4, after1p: 9, after2p: 0 };
  const hb = recordingHandlers({ "pri-lost-after-sb": 0, "split-brain": 0, "initial-split-brain": 0 });
  const ca = link(t, a, 8108, 8109, { afterSb });
  const cb = link(t, b, 8109, 8108, { afterSb, handlers: hb });
  // a changes more blocks than b while apart; b is Primary when they meet again: b is the Primary that loses.
  await a.primary({ force: true });
  for (let i = 0; i < 5; i++) await a.writev(800 + i * 8, [pattern(4096, i)]);
  await a.secondary();
  await b.primary({ force: true });
  await b.writev(0, [pattern(4096, 9)]);
  await ca.connect();
  await cb.connect();
  assert.ok(await eventually(() => cb.state === "StandAlone", 20000), `b ${cb.state}`);
  assert.ok(await eventually(() => hb.calls.includes("split-brain")), hb.calls.join());
  assert.deepEqual(hb.calls, ["initial-split-brain", "pri-lost-after-sb", "split-brain"]);
  assert.equal(b.role, "Primary", "the handler decides what happens to the Primary, not a demotion");
  assert.equal(cb.lastSplitBrain?.by, "unresolved");
});
