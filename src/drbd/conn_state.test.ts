/**
 * conn_state.ts on real devices (AIO files): the follow-ups ConnectionStateMachine derives from a change, as
 * drbd_state.c after_state_ch does, and the P_STATE it builds.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { log } from "../util/log.js";
import { ConnState, DiskState, Role } from "./protocol.js";
import { ConnectionStateMachine, type SyncSide } from "./conn_state.js";
import { sharedGenerationPair } from "./test_support.js";

const quiet = log.child({ module: "conn-state-test" });

test("losing the link from an up state starts a new generation on an UpToDate Primary, not from a connecting state", async (t) => {
  const { a } = await sharedGenerationPair(t, { sizeMiB: 16 });
  await a.primary();
  // As after a finished resync: no bitmap UUID, so the next split must start a generation.
  const [current, , h0, h1] = a.uuids;
  await a.setUuids([current, 0n, h0, h1]);
  const sm = new ConnectionStateMachine(a, quiet);

  sm.change("WFConnection");
  sm.linkLost("NetworkFailure");
  assert.deepEqual(a.uuids, [current, 0n, h0, h1], "never connected: nothing to split from");

  sm.change("Connected");
  sm.linkLost("NetworkFailure");
  const after = a.uuids;
  assert.notEqual(after[0] & ~1n, current & ~1n, "a new current UUID");
  assert.equal(after[0] & 1n, 1n, "with the Primary bit");
  assert.equal(after[1], current, "the old current (with its Primary bit) is the bitmap UUID");
  assert.equal(sm.name, "NetworkFailure");

  // A second loss while the bitmap UUID is set changes nothing (drbd_uuid_new_current only once).
  sm.change("Connected");
  sm.linkLost("Disconnecting");
  assert.deepEqual(a.uuids, after);
});

test("a Secondary keeps its UUIDs when the link goes", async (t) => {
  const { b } = await sharedGenerationPair(t, { sizeMiB: 16 });
  const before = b.uuids;
  const sm = new ConnectionStateMachine(b, quiet);
  sm.change("SyncTarget");
  sm.linkLost("ProtocolError");
  assert.deepEqual(b.uuids, before);
});

test("entering SyncSource or SyncTarget starts a resync; other states do not", async (t) => {
  const { a } = await sharedGenerationPair(t, { sizeMiB: 16 });
  const sm = new ConnectionStateMachine(a, quiet);
  const started: SyncSide[] = [];
  sm.onSyncStart = (side) => started.push(side);
  for (const s of ["WFConnection", "WFReportParams", "WFBitMapS", "Connected", "Ahead", "VerifyS"] as const)
    sm.change(s);
  sm.change("SyncSource");
  sm.change("Connected");
  sm.change("Behind");
  sm.change("SyncTarget");
  assert.deepEqual(started, ["SyncSource", "SyncTarget"]);
});

test("P_STATE and the peer's names: the local role and disk on the wire, the peer's only while up", async (t) => {
  const { a } = await sharedGenerationPair(t, { sizeMiB: 16 });
  await a.primary();
  const sm = new ConnectionStateMachine(a, quiet);
  const peer = sm.localState(ConnState.Connected);
  assert.equal(peer.role, Role.Primary);
  assert.equal(peer.disk, DiskState.UpToDate);
  assert.equal(peer.peer, Role.Unknown);
  assert.equal(peer.pdsk, DiskState.DUnknown);

  sm.peerReported({ ...peer, role: Role.Secondary, disk: DiskState.Outdated });
  assert.equal(sm.peerRoleName, "Unknown", "StandAlone: the peer is unknown");
  sm.change("Connected");
  assert.equal(sm.peerRoleName, "Secondary");
  assert.equal(sm.peerDiskName, "Outdated");
  assert.equal(sm.localState(ConnState.Connected).pdsk, DiskState.Outdated);
  assert.equal(sm.announcedConnState, ConnState.Connected);
  sm.change("WFBitMapT");
  assert.equal(sm.announcedConnState, undefined, "states in a handshake announce nothing on their own");
  sm.forgetPeer();
  sm.change("Connected");
  assert.equal(sm.peerDiskName, "DUnknown");
});
