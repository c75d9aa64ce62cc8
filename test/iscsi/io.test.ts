import { test } from "node:test";
import assert from "node:assert/strict";
import { RawInitiator } from "../support/raw_initiator.js";
import { Opcode } from "../../src/iscsi/pdu.js";
import { TARGET, inquiry, pattern, read10, runTool, startTarget, write10 } from "./harness.js";
import { MemoryDevice } from "./memory_device.js";

test("login, INQUIRY, write via R2T then read back via Data-In, logout", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    ini.immediateData = false;
    const login = await ini.login({ targetName: TARGET });
    assert.equal(login.statusClass, 0);
    assert.equal(login.keys.get("TargetPortalGroupTag"), "1");
    assert.ok(login.tsih > 0);
    assert.equal(h.target.sessionCount(), 1);

    const inq = await ini.scsi(inquiry(36), { read: 36 });
    assert.equal(inq.status, 0);
    assert.equal(inq.data.subarray(8, 15).toString(), "USERTGT");

    const data = pattern(64 * 1024, 3);
    const w = await ini.scsi(write10(10, 128), { write: data });
    assert.equal(w.status, 0);
    assert.deepEqual(h.devices[0].blocks.subarray(10 * 512, 10 * 512 + data.length), data);

    const r = await ini.scsi(read10(10, 128), { read: data.length });
    assert.equal(r.status, 0);
    assert.deepEqual(r.data, data);

    const lo = await ini.logout();
    assert.equal(lo.opcode, Opcode.LogoutResponse);
    assert.equal(lo.response, 0);
    await ini.waitClosed();
    assert.equal(h.target.sessionCount(), 0);
    assert.equal(h.devices[0].nexusLosses.length, 1);
  } finally {
    await h.stop();
  }
});

test("immediate data and unsolicited Data-Out (InitialR2T=No) then R2T for the rest", async () => {
  const h = await startTarget({ globals: { initialR2T: false, firstBurstLength: 16384 } });
  try {
    const ini = await RawInitiator.connect(h.port);
    ini.initialR2T = false;
    ini.firstBurstLength = 16384;
    ini.maxRecvDataSegmentLength = 4096;
    const login = await ini.login({ targetName: TARGET });
    assert.equal(login.statusClass, 0);
    assert.equal(login.keys.get("InitialR2T"), "No");
    assert.equal(login.keys.get("FirstBurstLength"), "16384");
    const data = pattern(40 * 512, 9);
    const w = await ini.scsi(write10(0, 40), { write: data });
    assert.equal(w.status, 0);
    assert.deepEqual(h.devices[0].blocks.subarray(0, data.length), data);
    // The initiator accepts 4096-byte segments: 20 KiB comes back in 5 Data-In PDUs.
    const r = await ini.scsi(read10(0, 40), { read: data.length });
    assert.equal(r.dataInPdus, 5);
    assert.deepEqual(r.data, data);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("residuals: EDTL larger and smaller than the command's transfer length", async () => {
  const h = await startTarget();
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    const under = await ini.scsi(read10(0, 1), { read: 1024 });
    assert.equal(under.status, 0);
    assert.equal(under.data.length, 512);
    assert.ok(under.residualUnderflow, "U bit");
    assert.equal(under.residual, 512);
    const over = await ini.scsi(read10(0, 2), { read: 512 });
    assert.equal(over.data.length, 512);
    assert.ok(over.residualOverflow, "O bit");
    assert.equal(over.residual, 512);
    const sense = await ini.scsi(Buffer.from([0xff, 0, 0, 0, 0, 0]), { read: 0 });
    assert.equal(sense.status, 2);
    assert.equal(sense.sense[2] & 0x0f, 5);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("iscsi-inq (libiscsi) reads the standard INQUIRY through the target", async () => {
  const h = await startTarget();
  try {
    const { code, out } = await runTool("iscsi-inq", [`iscsi://127.0.0.1:${h.port}/${TARGET}/0`]);
    assert.equal(code, 0, out);
    assert.match(out, /USERTGT/);
    assert.match(out, /MEMORY TEST DEV/);
  } finally {
    await h.stop();
  }
});

test("iscsi-ls (libiscsi) discovers the target through SendTargets", async () => {
  const h = await startTarget();
  try {
    const { code, out } = await runTool("iscsi-ls", ["-s", `iscsi://127.0.0.1:${h.port}`]);
    assert.equal(code, 0, out);
    assert.match(
      out,
      new RegExp(`Target:${TARGET.replace(/\./g, "\\.")} Portal:127\\.0\\.0\\.1:${h.port},1`),
    );
  } finally {
    await h.stop();
  }
});

test("libiscsi with CHAP and CRC32C digests: right secret works, wrong secret is refused", async () => {
  const h = await startTarget({
    authGroups: [{ tag: 1, secrets: [{ user: "bob", secret: "bobsecret123" }] }],
    targets: [
      {
        auth: { disableChap: false, requireChap: true, mutualChap: false },
        authGroup: 1,
        digest: { headerRequired: true, dataRequired: false },
      },
    ],
  });
  try {
    const url = (secret: string) =>
      `iscsi://bob%${secret}@127.0.0.1:${h.port}/${TARGET}/0?header_digest=crc32c`;
    const ok = await runTool("iscsi-inq", [url("bobsecret123")]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /USERTGT/);
    const bad = await runTool("iscsi-inq", [url("nottheone")]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.out, /[Aa]uthentication|Login Failed/);
  } finally {
    await h.stop();
  }
});

test("R2T: MaxBurstLength bursts with MaxOutstandingR2T 4 deliver a 64 KiB write intact", async () => {
  const h = await startTarget({ globals: { maxOutstandingR2T: 4 } });
  try {
    const ini = await RawInitiator.connect(h.port);
    ini.immediateData = false;
    const login = await ini.login({
      targetName: TARGET,
      keys: [
        ["MaxBurstLength", "8192"],
        ["FirstBurstLength", "8192"],
        ["MaxOutstandingR2T", "8"],
        ["ImmediateData", "No"],
      ],
    });
    assert.equal(login.keys.get("MaxOutstandingR2T"), "4");
    assert.equal(login.keys.get("MaxBurstLength"), "8192");
    const data = pattern(64 * 1024, 77);
    const w = await ini.scsi(write10(300, 128), { write: data });
    assert.equal(w.status, 0);
    assert.equal(w.r2ts, 8);
    assert.equal(w.expDataSN, 8);
    assert.deepEqual(h.devices[0].blocks.subarray(300 * 512, 300 * 512 + data.length), data);
    ini.close();
  } finally {
    await h.stop();
  }
});

test("many sessions on two targets do I/O at once; MaxSessions refuses one more (0x0302)", async () => {
  const h = await startTarget({ targets: [{}, {}], globals: { maxSessions: 12 } });
  try {
    const sessions = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const ini = await RawInitiator.connect(h.port);
        ini.isid = Buffer.from([0x80, 0, 0, 0, 1, i]);
        const name = i % 2 ? "iqn.2016-06.io.spdk:disk2" : TARGET;
        assert.equal((await ini.login({ targetName: name })).statusClass, 0);
        return ini;
      }),
    );
    assert.equal(h.target.sessionCount(), 12);
    await Promise.all(
      sessions.map(async (ini, i) => {
        const data = pattern(8192, i);
        const lba = 16 * Math.floor(i / 2);
        assert.equal((await ini.scsi(write10(lba, 16), { write: data })).status, 0);
        assert.deepEqual((await ini.scsi(read10(lba, 16), { read: 8192 })).data, data);
      }),
    );
    const extra = await RawInitiator.connect(h.port);
    extra.isid = Buffer.from([0x80, 0, 0, 0, 2, 0]);
    const r = await extra.login({ targetName: TARGET });
    assert.equal((r.statusClass << 8) | r.statusDetail, 0x0302);
    for (const s of sessions) s.close();
  } finally {
    await h.stop();
  }
});

test("libiscsi mutual CHAP: right target secret logs in, wrong one is caught by the initiator", async () => {
  const h = await startTarget({
    authGroups: [
      { tag: 1, secrets: [{ user: "u1", secret: "secret123456", muser: "m1", msecret: "msecret123456" }] },
    ],
    targets: [{ auth: { disableChap: false, requireChap: true, mutualChap: true }, authGroup: 1 }],
  });
  try {
    const url = (msecret: string) =>
      `iscsi://u1%secret123456@127.0.0.1:${h.port}/${TARGET}/0?target_user=m1&target_password=${msecret}`;
    const ok = await runTool("iscsi-inq", [url("msecret123456")]);
    assert.equal(ok.code, 0, ok.out);
    assert.match(ok.out, /USERTGT/);
    const bad = await runTool("iscsi-inq", [url("wrongsecret")]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.out, /CHAP_R/);
  } finally {
    await h.stop();
  }
});

test("an 8 MiB read to a reader that pauses arrives intact in MRDSL-sized Data-In PDUs", async () => {
  const device = new MemoryDevice("Big", 512, 32768);
  for (let i = 0; i < device.blocks.length; i += 4096) device.blocks.writeUInt32BE(i, i);
  const h = await startTarget({ targets: [{ device }] });
  try {
    const ini = await RawInitiator.connect(h.port);
    await ini.login({ targetName: TARGET });
    const c = Buffer.alloc(16);
    c[0] = 0x88; // READ(16)
    c.writeUInt32BE(16384, 10);
    const pending = ini.scsi(c, { read: 8 * 1024 * 1024 });
    ini.socket.pause();
    await new Promise((r) => setTimeout(r, 200));
    ini.socket.resume();
    const r = await pending;
    assert.equal(r.status, 0);
    assert.equal(r.data.length, 8 * 1024 * 1024);
    assert.ok(r.data.equals(device.blocks.subarray(0, 8 * 1024 * 1024)));
    assert.equal(r.dataInPdus, (8 * 1024 * 1024) / ini.maxRecvDataSegmentLength);
    ini.close();
  } finally {
    await h.stop();
  }
});
