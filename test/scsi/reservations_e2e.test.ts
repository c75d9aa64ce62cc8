/**
 * Reservations end to end, through the real CLI on an AIO LUN: libiscsi's persistent reservation and
 * RESERVE(6) suites, and APTPL state surviving a server restart (SPC-4 5.13.5).
 */
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseCunitOutput } from "../e2e/cunit_report.js";
import { cleanup, makeTempDir, run, startServer, stopCleanly } from "../e2e/harness.js";
import { RawInitiator, type ScsiResult } from "../support/raw_initiator.js";

const IQN = "iqn.2016-06.io.spdk:prtest";
const RESERVATION_CONFLICT = 0x18;
const CHECK_CONDITION = 0x02;

function config(ports: number[], dir: string): string {
  return `[AIO]
  AIO ${join(dir, "pr.img")} AIO0 512 16
[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  LUN0 AIO0
`;
}

function prout(
  action: number,
  type: number,
  sark: bigint,
  aptpl: boolean,
  rk = 0n,
): { cdb: Buffer; list: Buffer } {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5f;
  cdb[1] = action;
  cdb[2] = type;
  cdb.writeUInt32BE(24, 5);
  const list = Buffer.alloc(24);
  list.writeBigUInt64BE(rk, 0);
  list.writeBigUInt64BE(sark, 8);
  list[20] = aptpl ? 0x01 : 0;
  return { cdb, list };
}

function prin(action: number): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = 0x5e;
  cdb[1] = action;
  cdb.writeUInt16BE(256, 7);
  return cdb;
}

const read10 = Buffer.from([0x28, 0, 0, 0, 0, 4, 0, 0, 1, 0]);
const write10 = Buffer.from([0x2a, 0, 0, 0, 0, 4, 0, 0, 1, 0]);
const tur = Buffer.alloc(6);

/** Log in and clear the power-on unit attention a new nexus may have. */
async function session(port: number, initiatorName: string, isid: Buffer): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port);
  const login = await ini.login({ targetName: IQN, initiatorName, isid });
  assert.equal(login.statusClass, 0, `login of ${initiatorName}`);
  for (let i = 0; i < 5; i++) {
    const r = await ini.scsi(tur);
    if (r.status !== CHECK_CONDITION) break;
  }
  return ini;
}

async function ok(p: Promise<ScsiResult>, what: string): Promise<ScsiResult> {
  const r = await p;
  assert.equal(r.status, 0, `${what}: status 0x${r.status.toString(16)} sense ${r.sense.toString("hex")}`);
  return r;
}

describe("reservations end to end (AIO LUN)", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("pr-e2e");
  });
  after(async () => {
    await cleanup(dir);
  });

  it("passes libiscsi's PERSISTENT RESERVE IN/OUT and RESERVE(6) suites", async () => {
    const server = await startServer(config, { dir, args: ["--state-dir", join(dir, "state")] });
    try {
      const url = `iscsi://127.0.0.1:${server.ports[0]}/${IQN}/0`;
      const suites = [
        "SCSI.PrinReadKeys",
        "SCSI.PrinServiceactionRange",
        "SCSI.PrinReportCapabilities",
        "SCSI.ProutRegister",
        "SCSI.ProutReserve",
        "SCSI.ProutClear",
        "SCSI.ProutPreempt",
        "SCSI.Reserve6.Simple",
        "SCSI.Reserve6.2Initiators",
        "SCSI.Reserve6.Logout",
        "SCSI.Reserve6.ITNexusLoss",
        "SCSI.Reserve6.TargetWarmReset",
        "SCSI.Reserve6.TargetColdReset",
      ];
      const res = await run("iscsi-test-cu", ["-d", "-t", suites.join(","), url], 240_000);
      const report = parseCunitOutput(res.stdout + res.stderr);
      const notPassed = report.tests.filter((t) => t.verdict !== "passed");
      assert.deepEqual(
        notPassed.map((t) => `${t.name}: ${t.verdict}\n${t.detail}`),
        [],
        "every reservation test passes (none skipped)",
      );
      assert.ok(report.tests.length >= 26, `ran ${report.tests.length} tests`);
    } finally {
      await stopCleanly(server);
    }
  });

  it("keeps APTPL registrations and the reservation across a restart", async () => {
    const state = join(dir, "state-aptpl");
    const args = ["--state-dir", state];
    const isidA = Buffer.from([0x80, 0, 0, 0, 0, 0xa1]);
    const isidB = Buffer.from([0x80, 0, 0, 0, 0, 0xb2]);
    const nameA = "iqn.2024-01.test:host-a";
    const nameB = "iqn.2024-01.test:host-b";

    let server = await startServer(config, { dir, args });
    try {
      const a = await session(server.ports[0], nameA, isidA);
      const reg = prout(0x06, 0, 0xfeedn, true);
      await ok(a.scsi(reg.cdb, { write: reg.list }), "REGISTER AND IGNORE EXISTING KEY, APTPL=1");
      const rsv = prout(0x01, 5, 0n, false, 0xfeedn); // WRITE EXCLUSIVE – REGISTRANTS ONLY
      await ok(a.scsi(rsv.cdb, { write: rsv.list }), "RESERVE");
      await a.logout();
    } finally {
      await stopCleanly(server);
    }
    const files = await readdir(join(state, "aptpl"), { recursive: true });
    assert.ok(
      files.some((f) => f.endsWith(".pr.json")),
      `APTPL file written: ${files.join(", ")}`,
    );

    server = await startServer(config, { dir, args });
    try {
      const b = await session(server.ports[0], nameB, isidB);
      const rr = await ok(b.scsi(prin(0x01), { read: 256 }), "READ RESERVATION");
      assert.equal(rr.data.readUInt32BE(4), 16, "a reservation is reported");
      assert.equal(rr.data.readBigUInt64BE(8), 0xfeedn);
      assert.equal(rr.data[21] & 0x0f, 5);
      const keys = await ok(b.scsi(prin(0x00), { read: 256 }), "READ KEYS");
      assert.equal(keys.data.readUInt32BE(4), 8);
      assert.equal(keys.data.readBigUInt64BE(8), 0xfeedn);
      // Registrants-only Write Exclusive: the unregistered host B reads but may not write.
      await ok(b.scsi(read10, { read: 512 }), "READ(10) by a non-registrant");
      const w = await b.scsi(write10, { write: Buffer.alloc(512, 0xbb) });
      assert.equal(w.status, RESERVATION_CONFLICT);

      // Host A comes back with the same ISID: its registration is restored, so it writes.
      const a = await session(server.ports[0], nameA, isidA);
      await ok(a.scsi(write10, { write: Buffer.alloc(512, 0xaa) }), "WRITE(10) by the restored holder");
      // Unregister with APTPL=0: the state is forgotten.
      const unreg = prout(0x00, 0, 0n, false, 0xfeedn);
      await ok(a.scsi(unreg.cdb, { write: unreg.list }), "unregister");
      await ok(b.scsi(write10, { write: Buffer.alloc(512, 0xbb) }), "WRITE(10) after the release");
      await a.logout();
      await b.logout();
    } finally {
      await stopCleanly(server);
    }
    const left = await readdir(join(state, "aptpl"), { recursive: true });
    assert.ok(!left.some((f) => f.endsWith(".pr.json")), `APTPL file removed: ${left.join(", ")}`);
  });
});
