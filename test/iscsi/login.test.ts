import { test } from "node:test";
import assert from "node:assert/strict";
import { RawInitiator, pduAs } from "../support/raw_initiator.js";
import { Opcode, joinData, type LoginRequestPdu } from "../../src/iscsi/pdu.js";
import { TARGET, read10, startTarget, waitFor } from "./harness.js";

async function loginStatus(port: number, opts: Parameters<RawInitiator["login"]>[0], localAddress?: string) {
  const ini = await RawInitiator.connect(port, "127.0.0.1", localAddress);
  const r = await ini.login(opts);
  const status = (r.statusClass << 8) | r.statusDetail;
  if (status !== 0) await ini.waitClosed();
  else ini.close();
  return { status, keys: r.keys };
}

test("login outcomes: not found, missing names, unsupported session type", async () => {
  const h = await startTarget();
  try {
    assert.equal((await loginStatus(h.port, { targetName: "iqn.2016-06.io.spdk:nope" })).status, 0x0203);
    assert.equal((await loginStatus(h.port, { targetName: undefined })).status, 0x0207);
    assert.equal((await loginStatus(h.port, { targetName: TARGET, initiatorName: "" })).status, 0x0207);
    assert.equal((await loginStatus(h.port, { targetName: TARGET })).status, 0);
    await waitFor(() => h.target.sessionCount() === 0);
  } finally {
    await h.stop();
  }
});

test("login negotiates keys and declares MaxRecvDataSegmentLength and TargetPortalGroupTag", async () => {
  const h = await startTarget({ targets: [{ alias: "Data Disk1" }] });
  try {
    const r = await loginStatus(h.port, {
      targetName: TARGET,
      keys: [
        ["HeaderDigest", "CRC32C,None"],
        ["DataDigest", "None"],
        ["MaxConnections", "4"],
        ["MaxBurstLength", "4194304"],
        ["X-com.example.Key", "1"],
        ["MaxRecvDataSegmentLength", "8192"],
      ],
    });
    assert.equal(r.status, 0);
    assert.equal(r.keys.get("HeaderDigest"), "CRC32C");
    assert.equal(r.keys.get("DataDigest"), "None");
    assert.equal(r.keys.get("MaxConnections"), "2");
    assert.equal(r.keys.get("MaxBurstLength"), "1048576");
    assert.equal(r.keys.get("X-com.example.Key"), "NotUnderstood");
    assert.equal(r.keys.get("MaxRecvDataSegmentLength"), "65536");
    assert.equal(r.keys.get("TargetPortalGroupTag"), "1");
    assert.equal(r.keys.get("TargetAlias"), "Data Disk1");
  } finally {
    await h.stop();
  }
});

test("a key declared twice in the login is refused with initiator error", async () => {
  const h = await startTarget();
  try {
    const r = await loginStatus(h.port, {
      targetName: TARGET,
      keys: [
        ["MaxBurstLength", "65536"],
        ["MaxBurstLength", "65536"],
      ],
    });
    assert.equal(r.status, 0x0200);
  } finally {
    await h.stop();
  }
});

test("initiator group: netmask refuses an address outside it, name deny list refuses a name", async () => {
  const h = await startTarget({
    initiatorGroups: [
      { tag: 1, initiators: ["ANY", "!iqn.2024-01.test:banned"], netmasks: ["127.0.0.1/32"] },
    ],
  });
  try {
    assert.equal((await loginStatus(h.port, { targetName: TARGET }, "127.0.0.5")).status, 0x0202);
    assert.equal(
      (await loginStatus(h.port, { targetName: TARGET, initiatorName: "iqn.2024-01.test:banned" })).status,
      0x0202,
    );
    assert.equal((await loginStatus(h.port, { targetName: TARGET }, "127.0.0.1")).status, 0);
  } finally {
    await h.stop();
  }
});

test("digests required by the target: refused without, I/O works with CRC32C on both", async () => {
  const h = await startTarget({ targets: [{ digest: { headerRequired: true, dataRequired: true } }] });
  try {
    const plain = await loginStatus(h.port, { targetName: TARGET });
    assert.equal(plain.status, 0x0200);
    const ini = await RawInitiator.connect(h.port);
    const r = await ini.login({
      targetName: TARGET,
      keys: [
        ["HeaderDigest", "CRC32C"],
        ["DataDigest", "CRC32C"],
        ["MaxRecvDataSegmentLength", "8192"],
      ],
    });
    assert.equal(r.statusClass, 0);
    assert.ok(ini.headerDigest && ini.dataDigest);
    h.devices[0].blocks.fill(0x5a, 0, 8192);
    const rd = await ini.scsi(read10(0, 16), { read: 8192 });
    assert.equal(rd.status, 0);
    assert.ok(rd.data.every((b) => b === 0x5a));
    ini.close();
  } finally {
    await h.stop();
  }
});

test("session reinstatement: a new leading login with the same ISID ends the old session", async () => {
  const h = await startTarget();
  try {
    const a = await RawInitiator.connect(h.port);
    const ra = await a.login({ targetName: TARGET });
    assert.equal(ra.statusClass, 0);
    const b = await RawInitiator.connect(h.port);
    const rb = await b.login({ targetName: TARGET });
    assert.equal(rb.statusClass, 0);
    assert.notEqual(rb.tsih, ra.tsih);
    await a.waitClosed();
    assert.equal(h.target.sessionCount(), 1);
    assert.equal(h.devices[0].nexusLosses.length, 1);
    b.close();
  } finally {
    await h.stop();
  }
});

test("MC/S: a second connection joins by TSIH; a third exceeds MaxConnections", async () => {
  const h = await startTarget();
  try {
    const a = await RawInitiator.connect(h.port);
    const ra = await a.login({ targetName: TARGET, keys: [["MaxConnections", "2"]] });
    assert.equal(ra.keys.get("MaxConnections"), "2");
    const b = await RawInitiator.connect(h.port);
    b.cmdSN = a.cmdSN;
    const rb = await b.login({ targetName: TARGET, tsih: ra.tsih, cid: 1, keys: [] });
    assert.equal(rb.statusClass, 0);
    assert.equal(rb.tsih, ra.tsih);
    assert.equal(h.target.sessionCount(), 1);
    // Commands on both connections share one CmdSN sequence.
    b.cmdSN = a.cmdSN;
    const r1 = await b.scsi(read10(0, 1), { read: 512 });
    a.cmdSN = b.cmdSN;
    const r2 = await a.scsi(read10(1, 1), { read: 512 });
    assert.equal(r1.status, 0);
    assert.equal(r2.status, 0);
    const c = await RawInitiator.connect(h.port);
    const rc = await c.login({ targetName: TARGET, tsih: ra.tsih, cid: 2, keys: [] });
    assert.equal((rc.statusClass << 8) | rc.statusDetail, 0x0206);
    // Logging out one connection keeps the session.
    const lo = await b.logout(1, 1);
    assert.equal(lo.opcode, Opcode.LogoutResponse);
    assert.equal(lo.response, 0);
    await b.waitClosed();
    assert.equal(h.target.sessionCount(), 1);
    assert.equal((await a.scsi(read10(0, 1), { read: 512 })).status, 0);
    a.close();
  } finally {
    await h.stop();
  }
});

test("joining a session that does not exist is refused", async () => {
  const h = await startTarget();
  try {
    assert.equal((await loginStatus(h.port, { targetName: TARGET, tsih: 0x4242, keys: [] })).status, 0x020a);
  } finally {
    await h.stop();
  }
});

test("discovery: SendTargets=All lists the targets this initiator may see, with portal group tag", async () => {
  const h = await startTarget({
    targets: [{}, { maps: [{ portalGroup: 1, initiatorGroup: 2 }] }],
    initiatorGroups: [
      { tag: 1, initiators: ["ANY"], netmasks: ["ANY"] },
      { tag: 2, initiators: ["iqn.2024-01.test:other"], netmasks: ["ANY"] },
    ],
  });
  try {
    const ini = await RawInitiator.connect(h.port);
    const r = await ini.login({ discovery: true });
    assert.equal(r.statusClass, 0);
    const st = await ini.text([["SendTargets", "All"]]);
    assert.deepEqual(st.get("TargetName"), [TARGET]);
    assert.deepEqual(st.get("TargetAddress"), [`127.0.0.1:${h.port},1`]);
    // SCSI commands are not allowed in a discovery session.
    ini.send({ opcode: Opcode.ScsiCommand, ...ini.next(), final: true, cdb: Buffer.alloc(16) });
    const rej = await ini.recvResponse();
    assert.equal(rej.opcode, Opcode.Reject);
    const lo = await ini.logout();
    assert.equal(lo.response, 0);
    // The other initiator sees the second target too.
    const other = await RawInitiator.connect(h.port);
    await other.login({ discovery: true, initiatorName: "iqn.2024-01.test:other" });
    const st2 = await other.text([["SendTargets", "All"]]);
    assert.deepEqual(st2.get("TargetName"), [TARGET, "iqn.2016-06.io.spdk:disk2"]);
    other.close();
  } finally {
    await h.stop();
  }
});

test("SendTargets in a normal session reports only the session's target; long answers continue (C bit)", async () => {
  const h = await startTarget({
    portals: Array.from({ length: 40 }, () => ({ host: "127.0.0.1", port: 0 })),
  });
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET, keys: [["MaxRecvDataSegmentLength", "512"]] });
    const st = await ini.text([["SendTargets", ""]]);
    assert.deepEqual(st.get("TargetName"), [TARGET]);
    assert.equal(st.get("TargetAddress")?.length, 40);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("login text split over two PDUs (C bit): empty answer first, then the negotiation", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    const text = Buffer.from(`InitiatorName=iqn.2024-01.test:split\0TargetName=${TARGET}\0AuthMethod=None\0`);
    const mk = (data: Buffer, flags: Partial<LoginRequestPdu>): LoginRequestPdu => ({
      opcode: Opcode.LoginRequest,
      immediate: true,
      ...flags,
      isid: ini.isid,
      itt: 9,
      cmdSN: 1,
      data: [data],
    });
    ini.send(mk(text.subarray(0, 20), { continue: true, currentStage: 0 }));
    const first = pduAs(await ini.recv(), Opcode.LoginResponse);
    assert.equal(first.opcode, Opcode.LoginResponse);
    assert.equal(joinData(first.data).length, 0);
    assert.equal(first.transit, false, "no transit while the request is incomplete");
    ini.send(mk(text.subarray(20), { transit: true, currentStage: 0, nextStage: 1 }));
    const second = pduAs(await ini.recv(), Opcode.LoginResponse);
    assert.equal(second.statusClass, 0);
    // T set, C clear, CSG 0, NSG 1 (flags byte 0x81).
    assert.deepEqual(
      [second.transit, second.continue, second.currentStage, second.nextStage],
      [true, false, 0, 1],
    );
    assert.match(joinData(second.data).toString(), /AuthMethod=None/);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("login refuses version-min above 0 (0x0205) and transit to a bad stage (0x0200)", async () => {
  const h = await startTarget();
  try {
    // T, CSG=1 -> NSG=3 with version-min 1; then T, CSG=1 -> NSG=0.
    for (const [nextStage, versionMin, want] of [
      [3, 1, 0x0205],
      [0, 0, 0x0200],
    ] as const) {
      const ini = await RawInitiator.connect(h.port);
      ini.send({
        opcode: Opcode.LoginRequest,
        immediate: true,
        transit: true,
        currentStage: 1,
        nextStage,
        versionMin,
        isid: ini.isid,
        itt: 0,
        cmdSN: 0,
        data: [Buffer.from(`InitiatorName=iqn.x:y\0TargetName=${TARGET}\0`)],
      });
      const rsp = pduAs(await ini.recv(), Opcode.LoginResponse);
      assert.equal((rsp.statusClass << 8) | rsp.statusDetail, want);
      await ini.waitClosed();
    }
  } finally {
    await h.stop();
  }
});
