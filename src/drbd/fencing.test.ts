/**
 * Fencing on a Primary that loses its peer (two devices in one process, ports 8100-8109): the fence-peer
 * handler's exit code decides, resource-and-stonith freezes I/O meanwhile (writes wait, none fails).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fencePeerVerdict } from "./fencing.js";
import type { HandlerName, HandlerRunner } from "./handlers.js";
import { eventually, link, pattern, sharedGenerationPair } from "./test_support.js";

test("fence-peer exit codes as conn_try_outdate_peer reads them", () => {
  const v = (code: number, disk: "UpToDate" | "Consistent" = "UpToDate") =>
    fencePeerVerdict(code, "resource-and-stonith", disk);
  assert.equal(v(3).peerDisk, "Inconsistent");
  assert.equal(v(4).peerDisk, "Outdated");
  assert.equal(v(5).peerDisk, "Outdated");
  assert.equal(v(5, "Consistent").peerDisk, undefined);
  assert.equal(v(6).peerDisk, undefined);
  assert.equal(v(6).broken, false);
  assert.equal(v(7).peerDisk, "Outdated");
  for (const code of [0, 1, 2, 8, 127, -1]) assert.equal(v(code).broken, true, `exit ${code}`);
});

/** A handler runner whose fence-peer answers what the test says, when the test says. */
function scriptedHandlers(): HandlerRunner & { answer: (code: number) => void; calls: HandlerName[] } {
  let answer: (code: number) => void = () => {};
  const calls: HandlerName[] = [];
  return {
    calls,
    answer: (code) => answer(code),
    configured: () => true,
    run(name) {
      calls.push(name);
      if (name !== "fence-peer") return Promise.resolve(0);
      return new Promise<number>((r) => (answer = r));
    },
  };
}

async function connectedPair(
  t: Parameters<typeof link>[0],
  ports: [number, number],
  fencing: "resource-only" | "resource-and-stonith",
) {
  const { a, b } = await sharedGenerationPair(t, { sizeMiB: 8 });
  const handlers = scriptedHandlers();
  const ca = link(t, a, ports[0], ports[1], { fencing, handlers });
  const cb = link(t, b, ports[1], ports[0]);
  await ca.connect();
  await cb.connect();
  await ca.waitFor("Connected");
  await cb.waitFor("Connected");
  await a.primary();
  assert.ok(await eventually(() => cb.peerRole === "Primary"));
  return { a, b, ca, cb, handlers };
}

test("resource-and-stonith: writes freeze when the peer goes, fence-peer 7 lets them complete", async (t) => {
  const { a, ca, cb, handlers } = await connectedPair(t, [8100, 8101], "resource-and-stonith");
  await a.writev(0, [pattern(4096, 1)]);
  await cb.disconnect();
  assert.ok(await eventually(() => ca.state !== "Connected"));
  assert.deepEqual(handlers.calls, ["fence-peer"]);
  assert.equal(a.ioSuspended, "fencing");
  let done = false;
  const w = a.writev(8, [pattern(4096, 2)]).then(() => (done = true));
  const r = a.readv(0, [Buffer.alloc(512)]);
  await new Promise((res) => setTimeout(res, 300));
  assert.equal(done, false, "a write waits while fence-peer runs");
  handlers.answer(7);
  await w;
  await r;
  assert.equal(a.ioSuspended, undefined);
  assert.equal(ca.peerDisk, "Outdated");
  await a.writev(16, [pattern(4096, 3)]);
});

test("resource-and-stonith: a failing fence-peer keeps I/O frozen until resume-io", async (t) => {
  const { a, ca, cb, handlers } = await connectedPair(t, [8102, 8103], "resource-and-stonith");
  await cb.disconnect();
  assert.ok(await eventually(() => handlers.calls.length === 1));
  handlers.answer(1);
  let settled = false;
  const w = a.writev(8, [pattern(4096, 2)]).then(
    () => (settled = true),
    () => (settled = true),
  );
  await new Promise((res) => setTimeout(res, 500));
  assert.equal(settled, false, "the write neither completes nor fails");
  assert.equal(a.ioSuspended, "fencing");
  assert.equal(ca.peerDisk, "DUnknown");
  a.resumeIo();
  await w;
  const back = Buffer.alloc(4096);
  await a.readv(8, [back]);
  assert.ok(back.equals(pattern(4096, 2)));
});

test("resource-and-stonith: the peer reconnecting ends the freeze; a late fence-peer result is ignored", async (t) => {
  const { a, ca, cb, handlers } = await connectedPair(t, [8104, 8105], "resource-and-stonith");
  await cb.disconnect();
  assert.ok(await eventually(() => handlers.calls.length === 1));
  const w = a.writev(8, [pattern(4096, 4)]);
  await cb.connect();
  await ca.waitFor("Connected", 20000).catch(async () => {
    await ca.waitFor("SyncSource", 100);
  });
  await w;
  assert.equal(a.ioSuspended, undefined);
  handlers.answer(4);
  await new Promise((res) => setTimeout(res, 50));
  assert.notEqual(ca.peerDisk, "Outdated");
});

test("resource-only: I/O goes on while fence-peer runs; its result marks the peer", async (t) => {
  const { a, ca, cb, handlers } = await connectedPair(t, [8106, 8107], "resource-only");
  await cb.disconnect();
  assert.ok(await eventually(() => handlers.calls.length === 1));
  assert.equal(a.ioSuspended, undefined);
  await a.writev(8, [pattern(4096, 5)]);
  handlers.answer(4);
  assert.ok(await eventually(() => ca.peerDisk === "Outdated"));
});
