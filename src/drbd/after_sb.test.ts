import { test } from "node:test";
import assert from "node:assert/strict";
import {
  afterSbPolicyNumber,
  discardMyDataVerdict,
  recoverSplitBrain,
  type SplitBrainFacts,
} from "./after_sb.js";
import { AFTER_SB_POLICY, mirrorAfterSb, protocolMismatch, type ProtocolParams } from "./protocol.js";

const n = (name: string) => AFTER_SB_POLICY[name] as number;

/** Facts as node X sees them; `swap` gives the peer's view of the same split brain. */
function facts(p: Partial<SplitBrainFacts> = {}): SplitBrainFacts {
  return {
    policies: { after0p: 0, after1p: 0, after2p: 0 },
    myPrimary: false,
    peerPrimary: false,
    myBitmapUuid: 0x1000n,
    peerBitmapUuid: 0x1000n,
    myChanges: 3,
    peerChanges: 5,
    resolveConflicts: false,
    ...p,
  };
}
function swap(f: SplitBrainFacts): SplitBrainFacts {
  return {
    policies: {
      after0p: mirrorAfterSb(f.policies.after0p),
      after1p: f.policies.after1p,
      after2p: f.policies.after2p,
    },
    myPrimary: f.peerPrimary,
    peerPrimary: f.myPrimary,
    myBitmapUuid: f.peerBitmapUuid,
    peerBitmapUuid: f.myBitmapUuid,
    myChanges: f.peerChanges,
    peerChanges: f.myChanges,
    resolveConflicts: !f.resolveConflicts,
  };
}
/** Both sides must reach opposite verdicts (one SyncSource, one SyncTarget) or both none. */
function both(f: SplitBrainFacts): [number, number] {
  const x = recoverSplitBrain(f).result;
  const y = recoverSplitBrain(swap(f)).result;
  if (x === -100) assert.equal(y, -100, "one side resolved, the other not");
  else assert.equal(x, -y, "both sides picked the same role");
  return [x, y];
}

test("after-sb-0pri disconnect leaves the split brain unresolved", () => {
  assert.deepEqual(both(facts()), [-100, -100]);
});

test("discard-younger-primary keeps the side that was Primary at the split; older the other", () => {
  const pol = { after0p: n("discard-younger-primary"), after1p: 0, after2p: 0 };
  // I was Primary when the link dropped (bit 0 of my bitmap UUID), the peer was promoted later.
  assert.equal(both(facts({ policies: pol, myBitmapUuid: 0x1001n }))[0], 1);
  assert.equal(both(facts({ policies: pol, peerBitmapUuid: 0x1001n }))[0], -1);
  const older = { after0p: n("discard-older-primary"), after1p: 0, after2p: 0 };
  assert.equal(both(facts({ policies: older, myBitmapUuid: 0x1001n }))[0], -1);
  // No Primary at the split: fall back to the fewer changes (I have 3, the peer 5: I lose).
  const v = recoverSplitBrain(facts({ policies: pol }));
  assert.equal(v.result, -1);
  assert.equal(v.fellBack, true);
});

test("discard-zero-changes: only a side without changes loses; a tie goes against RESOLVE_CONFLICTS", () => {
  const pol = { after0p: n("discard-zero-changes"), after1p: 0, after2p: 0 };
  assert.equal(both(facts({ policies: pol }))[0], -100);
  assert.equal(both(facts({ policies: pol, myChanges: 0 }))[0], -1);
  assert.equal(both(facts({ policies: pol, peerChanges: 0 }))[0], 1);
  assert.equal(both(facts({ policies: pol, myChanges: 0, peerChanges: 0, resolveConflicts: true }))[0], -1);
});

test("discard-least-changes, discard-local/-remote", () => {
  const pol = { after0p: n("discard-least-changes"), after1p: 0, after2p: 0 };
  assert.equal(both(facts({ policies: pol }))[0], -1);
  assert.equal(both(facts({ policies: pol, myChanges: 9 }))[0], 1);
  assert.equal(both(facts({ policies: pol, myChanges: 5, resolveConflicts: false }))[0], 1);
  assert.equal(both(facts({ policies: { after0p: n("discard-local"), after1p: 0, after2p: 0 } }))[0], -1);
  assert.equal(both(facts({ policies: { after0p: n("discard-remote"), after1p: 0, after2p: 0 } }))[0], 1);
});

test("after-sb-1pri: discard-secondary, consensus, violently-as0p, call-pri-lost-after-sb", () => {
  const least = n("discard-least-changes");
  assert.equal(
    both(
      facts({ policies: { after0p: 0, after1p: n("discard-secondary"), after2p: 0 }, myPrimary: true }),
    )[0],
    1,
  );
  assert.equal(
    both(
      facts({ policies: { after0p: 0, after1p: n("discard-secondary"), after2p: 0 }, peerPrimary: true }),
    )[0],
    -1,
  );
  // consensus: the 0pri policy must discard the Secondary; here it would discard the Primary (fewer changes).
  const cons = { after0p: least, after1p: n("consensus"), after2p: 0 };
  assert.equal(both(facts({ policies: cons, myPrimary: true }))[0], -100);
  assert.equal(both(facts({ policies: cons, peerPrimary: true }))[0], -1);
  const viol = { after0p: least, after1p: n("violently-as0p"), after2p: 0 };
  assert.equal(both(facts({ policies: viol, myPrimary: true }))[0], -1);
  const lost = { after0p: least, after1p: n("call-pri-lost-after-sb"), after2p: 0 };
  const v = recoverSplitBrain(facts({ policies: lost, myPrimary: true }));
  assert.deepEqual([v.result, v.demoteSelf], [-1, true]);
  assert.equal(recoverSplitBrain(facts({ policies: lost, peerPrimary: true })).demoteSelf, false);
});

test("after-sb-2pri: disconnect, violently-as0p, call-pri-lost-after-sb; a 0pri-only policy is a configuration error", () => {
  const least = n("discard-least-changes");
  const two = { myPrimary: true, peerPrimary: true };
  assert.equal(both(facts({ ...two }))[0], -100);
  assert.equal(
    both(facts({ ...two, policies: { after0p: least, after1p: 0, after2p: n("violently-as0p") } }))[0],
    -1,
  );
  const v = recoverSplitBrain(
    facts({ ...two, policies: { after0p: least, after1p: 0, after2p: n("call-pri-lost-after-sb") } }),
  );
  assert.deepEqual([v.result, v.demoteSelf, v.primaries], [-1, true, 2]);
  const bad = recoverSplitBrain(
    facts({ ...two, policies: { after0p: 0, after1p: 0, after2p: n("discard-secondary") } }),
  );
  assert.deepEqual([bad.result, bad.configError], [-100, true]);
});

test("discard-my-data decides for the side that asked, unless both or neither did", () => {
  assert.equal(discardMyDataVerdict(true, false), -1);
  assert.equal(discardMyDataVerdict(false, true), 1);
  assert.equal(discardMyDataVerdict(true, true), -100);
  assert.equal(discardMyDataVerdict(false, false), -100);
});

test("policy names map to the kernel's ASB numbers; discard-node-NAME by host; wrong section refused", () => {
  assert.equal(afterSbPolicyNumber(0, undefined), 0);
  assert.equal(afterSbPolicyNumber(0, "discard-least-changes"), 4);
  assert.equal(afterSbPolicyNumber(1, "discard-secondary"), 8);
  assert.equal(afterSbPolicyNumber(2, "call-pri-lost-after-sb"), 9);
  assert.equal(afterSbPolicyNumber(2, "violently-as0p"), 10);
  assert.equal(afterSbPolicyNumber(0, "discard-node-alpha", ["alpha"]), 5);
  assert.equal(afterSbPolicyNumber(0, "discard-node-alpha", ["beta"]), 6);
  assert.throws(
    () => afterSbPolicyNumber(2, "discard-secondary"),
    /after-sb-2pri: 'discard-secondary' is not one of/,
  );
  assert.throws(() => afterSbPolicyNumber(1, "discard-node-x"), /after-sb-1pri/);
});

test("P_PROTOCOL: after-sb settings must agree, discard-local matching the peer's discard-remote", () => {
  const base: ProtocolParams = {
    protocol: 3,
    afterSb0p: n("discard-local"),
    afterSb1p: 0,
    afterSb2p: 0,
    connFlags: 0,
    twoPrimaries: false,
    integrityAlg: "",
  };
  assert.equal(protocolMismatch(base, { ...base, afterSb0p: n("discard-remote") }), undefined);
  assert.equal(protocolMismatch(base, base), "after-sb-0pri");
  assert.equal(protocolMismatch({ ...base, afterSb1p: 8 }, { ...base, afterSb0p: 6 }), "after-sb-1pri");
});
