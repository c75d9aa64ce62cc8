import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { announceForcedPrimary, considerResync, peerForcedPrimary } from "./consider_resync.js";
import { ConnState, DiskState, Role, type DrbdState } from "./protocol.js";

function st(role: Role, disk: DiskState, conn = ConnState.Connected): DrbdState {
  return {
    role,
    peer: Role.Unknown,
    conn,
    disk,
    pdsk: DiskState.DUnknown,
    susp: false,
    aftrIsp: false,
    peerIsp: false,
    userIsp: false,
    suspNod: false,
    suspFen: false,
  };
}

describe("consider resync (receive_state while Connected)", () => {
  const secInc = st(Role.Secondary, DiskState.Inconsistent);
  const priUtd = st(Role.Primary, DiskState.UpToDate);

  it("a peer that attaches its disk while connected (Negotiating) gets the sync handshake", () => {
    const diskless = st(Role.Primary, DiskState.Diskless);
    const attaching = st(Role.Primary, DiskState.Negotiating);
    assert.deepEqual(
      considerResync({ myDisk: DiskState.UpToDate, before: diskless, after: attaching, flag: false }),
      { run: true, flag: false },
    );
    assert.equal(
      considerResync({ myDisk: DiskState.UpToDate, before: diskless, after: diskless, flag: false }).run,
      false,
    );
  });

  it("a peer forced to Primary sets the flag; the next P_STATE runs the handshake and clears it", () => {
    const first = considerResync({
      myDisk: DiskState.Inconsistent,
      before: secInc,
      after: priUtd,
      flag: false,
    });
    assert.deepEqual(first, { run: false, flag: true });
    const second = considerResync({
      myDisk: DiskState.Inconsistent,
      before: priUtd,
      after: priUtd,
      flag: true,
    });
    assert.deepEqual(second, { run: true, flag: false });
  });

  it("no flag when my disk was not Inconsistent, or the peer was not Inconsistent Secondary", () => {
    assert.equal(peerForcedPrimary(DiskState.UpToDate, secInc, Role.Primary), false);
    assert.equal(
      peerForcedPrimary(DiskState.Inconsistent, st(Role.Secondary, DiskState.UpToDate), Role.Primary),
      false,
    );
    assert.equal(peerForcedPrimary(DiskState.Inconsistent, undefined, Role.Primary), false);
    assert.equal(peerForcedPrimary(DiskState.Inconsistent, secInc, Role.Secondary), false);
    assert.equal(peerForcedPrimary(DiskState.Inconsistent, secInc, Role.Primary), true);
  });

  it("a peer already in WFBitMapS/T or StartingSyncS/T makes a Connected node run it", () => {
    for (const conn of [
      ConnState.StartingSyncS,
      ConnState.StartingSyncT,
      ConnState.WFBitMapS,
      ConnState.WFBitMapT,
    ])
      assert.equal(
        considerResync({
          myDisk: DiskState.UpToDate,
          before: secInc,
          after: st(Role.Secondary, DiskState.Inconsistent, conn),
          flag: false,
        }).run,
        true,
      );
    for (const conn of [ConnState.Connected, ConnState.SyncSource, ConnState.SyncTarget, ConnState.VerifyS])
      assert.equal(
        considerResync({
          myDisk: DiskState.UpToDate,
          before: secInc,
          after: st(Role.Secondary, DiskState.Inconsistent, conn),
          flag: false,
        }).run,
        false,
      );
  });

  it("the forced node announces P_UUIDS + P_STATE only for an Inconsistent peer", () => {
    const base = { wasUpToDate: false, nowUpToDate: true, primary: true };
    assert.equal(announceForcedPrimary({ ...base, peerDisk: DiskState.Inconsistent }), true);
    assert.equal(announceForcedPrimary({ ...base, peerDisk: DiskState.UpToDate }), false);
    assert.equal(announceForcedPrimary({ ...base, peerDisk: undefined }), false);
    assert.equal(
      announceForcedPrimary({ ...base, wasUpToDate: true, peerDisk: DiskState.Inconsistent }),
      false,
    );
    assert.equal(announceForcedPrimary({ ...base, primary: false, peerDisk: DiskState.Inconsistent }), false);
  });
});
