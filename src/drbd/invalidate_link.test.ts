/**
 * invalidate and invalidate-remote while connected (ports 7914-7917): P_STATE_CHG_REQ for StartingSyncT /
 * StartingSyncS, the whole bitmap set on both sides, P_SYNC_UUID and a full resync; the invalidated side's
 * lower device (corrupted behind DRBD's back first) ends equal to the other's.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dataEqual, link, pattern, sharedGenerationPair, until, type Pair } from "./pair_fixture.js";
import type { DrbdConnection } from "./connection.js";
import { ConnState, packState, Role, SS_SUCCESS, stateMask } from "./protocol.js";

async function connectedPair(
  t: { after: (fn: () => Promise<void>) => void },
  port: number,
): Promise<{ pair: Pair; ca: DrbdConnection; cb: DrbdConnection }> {
  const pair = await sharedGenerationPair(t, 4);
  const ca = link(t, pair.a.dev, port, port + 1);
  const cb = link(t, pair.b.dev, port + 1, port);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await pair.a.dev.primary();
  await until(() => cb.peerRole === "Primary", 2000, "peer role");
  // B's copy differs from A's in two places nobody marked.
  await pair.b.lower.writev(8, [pattern(4096, 40)]);
  await pair.b.lower.writev(5000, [pattern(512, 41)]);
  assert.equal(await dataEqual(pair), false);
  return { pair, ca, cb };
}

async function assertFullSyncTo(pair: Pair, src: DrbdConnection, dst: DrbdConnection): Promise<void> {
  await Promise.all([src.waitFor("Connected", 15000), dst.waitFor("Connected", 15000)]);
  const bits = pair.a.dev.bitmap.bits;
  assert.equal(dst.resyncStats.total, bits, "full resync");
  assert.equal(dst.resyncStats.requestedBlocks, bits);
  assert.ok(await dataEqual(pair), "the invalidated copy now equals the source");
  assert.equal(pair.a.dev.bitmap.outOfSyncBits + pair.b.dev.bitmap.outOfSyncBits, 0);
  assert.equal(pair.a.dev.disk, "UpToDate");
  assert.equal(pair.b.dev.disk, "UpToDate");
  assert.equal(pair.a.dev.uuids[0] & ~1n, pair.b.dev.uuids[0] & ~1n, "one generation again");
}

test("invalidate on the connected Secondary: StartingSyncT, full resync from the Primary", async (t) => {
  const { pair, ca, cb } = await connectedPair(t, 7914);
  await cb.invalidate();
  assert.ok(["StartingSyncT", "WFSyncUUID", "SyncTarget", "Connected"].includes(cb.state), cb.state);
  await assertFullSyncTo(pair, ca, cb);
  // A write during or after the resync still reaches B.
  await pair.a.dev.writev(16, [pattern(4096, 50)]);
  assert.ok(await dataEqual(pair));
  // Nothing left to do on the next connect.
  await ca.disconnect();
  await cb.disconnect();
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  assert.equal(
    Math.abs(ca.lastDecision?.result ?? 9),
    1,
    "the Primary's new generation: bitmap-based, empty",
  );
  assert.equal(cb.resyncStats.requestedBlocks, 0);
});

test("invalidate-remote on the Primary: the peer becomes SyncTarget of a full resync", async (t) => {
  const { pair, ca, cb } = await connectedPair(t, 7916);
  await ca.invalidateRemote();
  await until(() => cb.state === "SyncTarget" || cb.state === "Connected", 5000, "SyncTarget on the peer");
  await assertFullSyncTo(pair, ca, cb);
});

test("refusals: invalidate on a Primary, invalidate-remote of a Primary peer, a second one during the resync", async (t) => {
  const { ca, cb } = await connectedPair(t, 7914);
  await assert.rejects(ca.invalidate(), /drbd0: State change failed: \(-2\) Need access to UpToDate data/);
  await assert.rejects(cb.invalidateRemote(), /\(-2\) Need access to UpToDate data \(the peer is Primary\)/);
  assert.equal(ca.state, "Connected");
  await ca.invalidateRemote();
  await assert.rejects(ca.invalidateRemote(), /\(-8\) Can not start OV\/resync since it is already active/);
  await Promise.all([ca.waitFor("Connected", 15000), cb.waitFor("Connected", 15000)]);
});

test("a peer's P_STATE_CHG_REQ as a kernel sends them: disconnect agreed, a second Primary refused, others -17", async (t) => {
  const { pair, ca } = await connectedPair(t, 7916);
  // The request path the kernel's drbdsetup takes for cluster-wide changes, driven from our side.
  const ask = (mask: number, val: number) =>
    (
      ca as unknown as { requestPeerStateChange(m: number, v: number): Promise<number> }
    ).requestPeerStateChange(mask, val);
  // A is Primary: B, asked by "A" to see a new Primary peer while itself Primary, refuses.
  await pair.b.dev.primary().catch(() => {});
  const roleMask = stateMask(["role"]);
  assert.equal(await ask(roleMask, packState({ role: Role.Primary })), -1);
  await pair.b.dev.secondary();
  assert.equal(await ask(roleMask, packState({ role: Role.Primary })), SS_SUCCESS);
  // WFReportParams is no state a peer may ask for here.
  assert.equal(await ask(stateMask(["conn"]), packState({ conn: ConnState.WFReportParams })), -17);
  assert.equal(await ask(stateMask(["conn"]), packState({ conn: ConnState.Disconnecting })), SS_SUCCESS);
});
