import { test } from "node:test";
import assert from "node:assert/strict";
import { RawInitiator } from "../support/raw_initiator.js";
import { ChapAuthenticator, chapResponse, decodeChapBinary } from "../../src/iscsi/chap.js";
import { LoginFailure } from "../../src/iscsi/param.js";
import { TARGET, read10, startTarget } from "./harness.js";

const SECRETS = [{ user: "alice", secret: "alicesecret12", muser: "target1", msecret: "targetsecret34" }];

function chapTarget(mutual = false) {
  return startTarget({
    authGroups: [{ tag: 1, secrets: SECRETS }],
    targets: [{ auth: { disableChap: false, requireChap: true, mutualChap: mutual }, authGroup: 1 }],
  });
}

test("CHAP: right secret logs in and does I/O", async () => {
  const h = await chapTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    const r = await ini.login({ targetName: TARGET, chap: { user: "alice", secret: "alicesecret12" } });
    assert.equal(r.statusClass, 0);
    assert.equal(r.keys.get("AuthMethod"), "CHAP");
    assert.equal(r.keys.get("CHAP_A"), "5");
    assert.equal((await ini.scsi(read10(0, 1), { read: 512 })).status, 0);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("CHAP: wrong secret, unknown user and skipping authentication are refused (0x0201)", async () => {
  const h = await chapTarget();
  try {
    for (const chap of [
      { user: "alice", secret: "wrong-secret" },
      { user: "mallory", secret: "alicesecret12" },
    ]) {
      const ini = await RawInitiator.connect(h.port);
      const r = await ini.login({ targetName: TARGET, chap });
      assert.equal((r.statusClass << 8) | r.statusDetail, 0x0201);
      await ini.waitClosed();
    }
    const none = await RawInitiator.connect(h.port);
    const r = await none.login({ targetName: TARGET });
    assert.equal((r.statusClass << 8) | r.statusDetail, 0x0201);
    await none.waitClosed();
    assert.equal(h.target.sessionCount(), 0);
  } finally {
    await h.stop();
  }
});

test("mutual CHAP: the target answers the initiator's challenge with its own secret", async () => {
  const h = await chapTarget(true);
  try {
    const ini = await RawInitiator.connect(h.port);
    const r = await ini.login({
      targetName: TARGET,
      chap: { user: "alice", secret: "alicesecret12", mutual: { expectSecret: "targetsecret34" } },
    });
    assert.equal(r.statusClass, 0);
    assert.equal(r.keys.get("CHAP_N"), "target1");
    ini.close();
    // Mutual required but the initiator sends no challenge: refused.
    const oneWay = await RawInitiator.connect(h.port);
    const r2 = await oneWay.login({ targetName: TARGET, chap: { user: "alice", secret: "alicesecret12" } });
    assert.equal((r2.statusClass << 8) | r2.statusDetail, 0x0201);
  } finally {
    await h.stop();
  }
});

test("CHAP unit: hex and base64 values, reflected challenge refused", () => {
  assert.deepEqual(decodeChapBinary("0x0a0B"), Buffer.from([10, 11]));
  assert.deepEqual(decodeChapBinary("0bAAEC"), Buffer.from([0, 1, 2]));
  assert.equal(decodeChapBinary("1234"), undefined);
  const auth = new ChapAuthenticator(
    { disableChap: false, requireChap: true, mutualChap: true },
    SECRETS,
    "t",
  );
  auth.step(new Map([["AuthMethod", "CHAP"]]));
  const a = new Map(auth.step(new Map([["CHAP_A", "5"]])));
  const id = Number(a.get("CHAP_I"));
  const challenge = decodeChapBinary(a.get("CHAP_C")!)!;
  const resp = chapResponse(id, "alicesecret12", challenge).toString("base64");
  assert.throws(
    () =>
      auth.step(
        new Map([
          ["CHAP_N", "alice"],
          ["CHAP_R", "0b" + resp],
          ["CHAP_I", "1"],
          ["CHAP_C", a.get("CHAP_C")!],
        ]),
      ),
    (e: LoginFailure) => e.statusDetail === 1 && /reflected/.test(e.message),
  );
});

test("discovery CHAP (DiscoveryAuthMethod CHAP): required for SendTargets sessions", async () => {
  const h = await startTarget({
    authGroups: [{ tag: 1, secrets: SECRETS }],
    globals: {
      discoveryAuth: { disableChap: false, requireChap: true, mutualChap: false },
      discoveryAuthGroup: 1,
    },
  });
  try {
    const anon = await RawInitiator.connect(h.port);
    const r1 = await anon.login({ discovery: true });
    assert.equal((r1.statusClass << 8) | r1.statusDetail, 0x0201);
    await anon.waitClosed();
    const ini = await RawInitiator.connect(h.port);
    const r2 = await ini.login({ discovery: true, chap: { user: "alice", secret: "alicesecret12" } });
    assert.equal(r2.statusClass, 0);
    assert.deepEqual((await ini.text([["SendTargets", "All"]])).get("TargetName"), [TARGET]);
    ini.close();
  } finally {
    await h.stop();
  }
});
