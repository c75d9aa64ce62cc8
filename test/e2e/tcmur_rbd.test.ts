/**
 * The TCMUR `rbd` handler against a real one-node Ceph cluster (test/ceph/cluster.sh: Debian's
 * ceph-mon, ceph-mgr and ceph-osd on 127.0.0.1), exported over iSCSI: libiscsi's SBC suites, data
 * read back with `rbd export`, `rbd resize` seen by the initiator, COMPARE AND WRITE, an OSD outage
 * (NOT READY within osd_op_timeout, then recovery), two gateways on one image, and a burst of writes
 * closed in the same turn (the handler directly).
 *
 * Ceph listens on the host's loopback, so these tests run in the host network namespace on ports
 * 3570-3589. Where Ceph cannot start (packages missing, ports taken) every test skips with the reason.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { RawInitiator, type ScsiResult } from "../support/raw_initiator.js";
import { cleanup, makeTempDir, startServer, stopCleanly, type RunningServer } from "./harness.js";
import { runSbcSuites } from "./sbc_suites.js";
import { parseCfgstring } from "../../src/tcmur/cfgstring.js";
import { rbdHandler } from "../../src/tcmur/rbd/rbd_handler.js";

const CLUSTER_SH = fileURLToPath(new URL("../../../test/ceph/cluster.sh", import.meta.url));
const IQN = "iqn.2016-06.io.spdk:rbd";
const PORTS: [number, number] = [3570, 3589];
const BS = 512;
const MiB = 1024 * 1024;

let dir = "";
let conf = "";
let skipReason: string | undefined;

function ceph(tool: "rbd" | "ceph", ...args: string[]): string {
  const r = spawnSync(tool, ["-c", conf, ...args], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function config(image: string, port: number, options = "", words = ""): string {
  return `[TCMUR]
  TCMUR 7 rbd_a /rbd/rbd/${image};conf=${conf}${options}${words}
[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 rbd_a
`;
}

function gateway(image: string, options = "", words = ""): Promise<RunningServer> {
  return startServer((ports) => config(image, ports[0], options, words), {
    dir,
    portRange: PORTS,
    args: ["--no-fuse"],
    readyTimeoutMs: 60_000,
  });
}

function rw16(opcode: 0x88 | 0x8a, lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb.writeUInt32BE(blocks, 10);
  return cdb;
}

function compareAndWrite16(lba: number, blocks: number): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x89;
  cdb.writeBigUInt64BE(BigInt(lba), 2);
  cdb[13] = blocks;
  return cdb;
}

const readCapacity16 = Buffer.from([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);

/** Sense key, ASC and ASCQ of a fixed-format sense buffer. */
function senseOf(r: ScsiResult): string {
  if (r.sense.length < 14) return `status ${r.status}`;
  return `${(r.sense[2] & 0x0f).toString(16)}/${r.sense[12].toString(16).padStart(2, "0")}/${r.sense[13].toString(16).padStart(2, "0")}`;
}

async function session(port: number, name: string): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port);
  const login = await ini.login({ targetName: IQN, initiatorName: `iqn.2024-01.test:${name}` });
  assert.equal(login.statusClass, 0, `login status ${login.statusClass}/${login.statusDetail}`);
  for (let i = 0; i < 4; i++) if ((await ini.scsi(Buffer.alloc(6))).status === 0) return ini;
  assert.fail("unit attentions did not clear after 4 TEST UNIT READY");
}

describe("TCMUR rbd handler on a one-node Ceph cluster", () => {
  before(async () => {
    dir = await makeTempDir("rbd");
    const t0 = Date.now();
    const r = spawnSync(CLUSTER_SH, ["start", join(dir, "ceph"), "1G"], {
      encoding: "utf8",
      timeout: 180_000,
    });
    if (r.status !== 0) {
      skipReason = (
        r.stderr.match(/ceph cluster unavailable: .*/)?.[0] ??
        `cluster.sh exit ${r.status}: ${r.stderr.slice(-500)}`
      ).trim();
      return;
    }
    conf = join(dir, "ceph", "ceph.conf");
    process.stderr.write(`ceph: one-node cluster up in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  });
  after(async () => {
    if (conf) spawnSync(CLUSTER_SH, ["stop", join(dir, "ceph")], { timeout: 60_000 });
    await cleanup(dir);
  });

  it("writes through iSCSI read back with rbd export; the image size is the LUN's", async (t) => {
    if (skipReason) return t.skip(skipReason);
    ceph("rbd", "create", "rbd/data", "--size", "64M");
    const server = await gateway("data");
    const written = new Map<number, Buffer>();
    try {
      const ini = await session(server.ports[0], "data");
      const cap = await ini.scsi(readCapacity16, { read: 32 });
      assert.equal(Number(cap.data.readBigUInt64BE(0)) + 1, (64 * MiB) / BS);
      assert.equal(cap.data.readUInt32BE(8), BS);
      for (const lba of [0, 4095, 8192, 8200, 131064]) {
        const data = randomBytes(8 * BS);
        const r = await ini.scsi(rw16(0x8a, lba, 8), { write: data });
        assert.equal(r.status, 0, senseOf(r));
        written.set(lba, data);
      }
      const back = await ini.scsi(rw16(0x88, 8192, 8), { read: 8 * BS });
      assert.ok(back.data.equals(written.get(8192)!));
      await ini.logout();
    } finally {
      await stopCleanly(server);
    }
    const out = join(dir, "data.raw");
    ceph("rbd", "export", "--no-progress", "rbd/data", out);
    const raw = await readFile(out);
    assert.equal(raw.length, 64 * MiB);
    for (const [lba, data] of written)
      assert.ok(raw.subarray(lba * BS, lba * BS + data.length).equals(data), `LBA ${lba}`);
  });

  it("rbd resize while exported: the initiator gets CAPACITY DATA HAS CHANGED and the new size", async (t) => {
    if (skipReason) return t.skip(skipReason);
    ceph("rbd", "create", "rbd/grow", "--size", "32M");
    const server = await gateway("grow");
    try {
      const ini = await session(server.ports[0], "grow");
      ceph("rbd", "resize", "--no-progress", "rbd/grow", "--size", "48M");
      let ua = "";
      for (let i = 0; i < 50 && ua === ""; i++) {
        const tur = await ini.scsi(Buffer.alloc(6));
        if (tur.status !== 0) ua = senseOf(tur);
        else await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(ua, "6/2a/09", "expected UNIT ATTENTION, CAPACITY DATA HAS CHANGED");
      const cap = await ini.scsi(readCapacity16, { read: 32 });
      assert.equal(Number(cap.data.readBigUInt64BE(0)) + 1, (48 * MiB) / BS);
      // The new blocks are usable.
      const r = await ini.scsi(rw16(0x8a, (40 * MiB) / BS, 1), { write: Buffer.alloc(BS, 0x42) });
      assert.equal(r.status, 0, senseOf(r));
      await ini.logout();
    } finally {
      await stopCleanly(server);
    }
  });

  it("COMPARE AND WRITE: success writes, a miscompare writes nothing and names the offset", async (t) => {
    if (skipReason) return t.skip(skipReason);
    ceph("rbd", "create", "rbd/caw", "--size", "16M");
    const server = await gateway("caw");
    try {
      const ini = await session(server.ports[0], "caw");
      const lba = 100;
      const a = Buffer.alloc(BS, 0xaa);
      const b = Buffer.alloc(BS, 0xbb);
      assert.equal((await ini.scsi(rw16(0x8a, lba, 1), { write: a })).status, 0);
      const ok = await ini.scsi(compareAndWrite16(lba, 1), { write: Buffer.concat([a, b]) });
      assert.equal(ok.status, 0, senseOf(ok));
      const wrong = Buffer.from(b); // the medium now holds b
      wrong[77] = 0;
      const miss = await ini.scsi(compareAndWrite16(lba, 1), { write: Buffer.concat([wrong, a]) });
      assert.equal(miss.status, 2);
      assert.equal(senseOf(miss), "e/1d/00", "MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION");
      assert.equal(miss.sense.readUInt32BE(3), 77, "INFORMATION: offset of the first difference");
      const back = await ini.scsi(rw16(0x88, lba, 1), { read: BS });
      assert.ok(back.data.equals(b), "the miscompare must not have written");
      await ini.logout();
    } finally {
      await stopCleanly(server);
    }
    const out = join(dir, "caw.raw");
    ceph("rbd", "export", "--no-progress", "rbd/caw", out);
    assert.ok((await readFile(out)).subarray(100 * BS, 101 * BS).equals(Buffer.alloc(BS, 0xbb)));
  });

  it("COMPARE AND WRITE of a 4096-byte block (beyond librbd's 512 bytes): success, miscompare, and not through a gateway without the lock", async (t) => {
    if (skipReason) return t.skip(skipReason);
    const bs = 4096;
    ceph("rbd", "create", "rbd/caw4k", "--size", "16M");
    const a = await gateway("caw4k", "", " bs=4096");
    const b = await gateway("caw4k", ";osd_op_timeout=10", " bs=4096");
    const lba = 37;
    const one = Buffer.alloc(bs, 0x11);
    const two = Buffer.alloc(bs, 0x22);
    try {
      const ia = await session(a.ports[0], "caw4ka");
      const cap = await ia.scsi(readCapacity16, { read: 32 });
      assert.equal(cap.data.readUInt32BE(8), bs);
      assert.equal((await ia.scsi(rw16(0x8a, lba, 1), { write: one })).status, 0);
      const ok = await ia.scsi(compareAndWrite16(lba, 1), { write: Buffer.concat([one, two]) });
      assert.equal(ok.status, 0, senseOf(ok));
      const wrong = Buffer.from(two);
      wrong[3000] ^= 0xff; // past the first 512-byte sector
      const miss = await ia.scsi(compareAndWrite16(lba, 1), { write: Buffer.concat([wrong, one]) });
      assert.equal(senseOf(miss), "e/1d/00", "MISCOMPARE DURING VERIFY OPERATION");
      assert.equal(miss.sense.readUInt32BE(3), 3000, "INFORMATION: offset of the first difference");
      const back = await ia.scsi(rw16(0x88, lba, 1), { read: bs });
      assert.ok(back.data.equals(two), "the miscompare must not have written");
      // Gateway B does not hold the image's exclusive lock: its COMPARE AND WRITE (with a matching
      // compare half) must not write behind A's back.
      const ib = await session(b.ports[0], "caw4kb");
      const other = await ib.scsi(compareAndWrite16(lba, 1), {
        write: Buffer.concat([two, Buffer.alloc(bs, 0x33)]),
        timeoutMs: 60_000,
      });
      assert.equal(senseOf(other), "2/04/00", "NOT READY while the other gateway holds the lock");
      const stillTwo = await ia.scsi(rw16(0x88, lba, 1), { read: bs });
      assert.ok(stillTwo.data.equals(two));
      await ia.logout();
      await ib.logout();
    } finally {
      await stopCleanly(a);
      await stopCleanly(b);
    }
    const out = join(dir, "caw4k.raw");
    ceph("rbd", "export", "--no-progress", "rbd/caw4k", out);
    assert.ok((await readFile(out)).subarray(lba * bs, (lba + 1) * bs).equals(two));
  });

  it(
    "OSD stopped: I/O fails with NOT READY within osd_op_timeout; OSD back: I/O resumes",
    { timeout: 300_000 },
    async (t) => {
      if (skipReason) return t.skip(skipReason);
      ceph("rbd", "create", "rbd/outage", "--size", "16M");
      const timeout = 5;
      const server = await gateway("outage", `;osd_op_timeout=${timeout}`);
      const cephDir = join(dir, "ceph");
      try {
        const ini = await session(server.ports[0], "outage");
        assert.equal((await ini.scsi(rw16(0x8a, 0, 8), { write: randomBytes(8 * BS) })).status, 0);
        spawnSync(CLUSTER_SH, ["osd-stop", cephDir], { timeout: 60_000 });
        const t0 = Date.now();
        const r = await ini.scsi(rw16(0x8a, 64, 8), { write: randomBytes(8 * BS), timeoutMs: 60_000 });
        const waited = (Date.now() - t0) / 1000;
        assert.equal(r.status, 2, "a write with the OSD down must end in CHECK CONDITION");
        assert.equal(senseOf(r), "2/04/00", "NOT READY, LOGICAL UNIT NOT READY");
        assert.ok(waited < timeout + 10, `the write failed after ${waited} s (osd_op_timeout ${timeout} s)`);
        const rr = await ini.scsi(rw16(0x88, 4096, 8), { read: 8 * BS, timeoutMs: 60_000 });
        assert.equal(senseOf(rr), "2/04/00");
        process.stderr.write(`rbd outage: write failed after ${waited.toFixed(1)} s\n`);
        const up = spawnSync(CLUSTER_SH, ["osd-start", cephDir], { encoding: "utf8", timeout: 120_000 });
        assert.equal(up.status, 0, up.stderr);
        let resumed: ScsiResult | undefined;
        for (let i = 0; i < 30; i++) {
          resumed = await ini.scsi(rw16(0x8a, 64, 8), {
            write: Buffer.alloc(8 * BS, 0x77),
            timeoutMs: 60_000,
          });
          if (resumed.status === 0) break;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
        assert.equal(resumed?.status, 0, `I/O did not resume: ${resumed && senseOf(resumed)}`);
        const back = await ini.scsi(rw16(0x88, 64, 8), { read: 8 * BS });
        assert.ok(back.data.equals(Buffer.alloc(8 * BS, 0x77)));
        await ini.logout();
      } finally {
        spawnSync(CLUSTER_SH, ["osd-start", cephDir], { timeout: 120_000 });
        await stopCleanly(server);
      }
    },
  );

  it(
    "two gateways on one image: the lock holder writes, the other reads and gets NOT READY on writes until the holder stops",
    { timeout: 300_000 },
    async (t) => {
      if (skipReason) return t.skip(skipReason);
      ceph("rbd", "create", "rbd/shared", "--size", "16M");
      const a = await gateway("shared", ";osd_op_timeout=10");
      const b = await gateway("shared", ";osd_op_timeout=10");
      try {
        const ia = await session(a.ports[0], "gwa");
        const ib = await session(b.ports[0], "gwb");
        const data = Buffer.alloc(8 * BS, 0x5a);
        assert.equal((await ia.scsi(rw16(0x8a, 0, 8), { write: data })).status, 0);
        const readB = await ib.scsi(rw16(0x88, 0, 8), { read: 8 * BS });
        assert.equal(readB.status, 0, senseOf(readB));
        assert.ok(readB.data.equals(data), "gateway B reads what A wrote");
        const t0 = Date.now();
        const wb = await ib.scsi(rw16(0x8a, 16, 8), { write: Buffer.alloc(8 * BS, 1), timeoutMs: 60_000 });
        process.stderr.write(`rbd two gateways: B's write refused after ${Date.now() - t0} ms\n`);
        assert.equal(wb.status, 2, "gateway B must not write while A holds the lock");
        assert.equal(senseOf(wb), "2/04/00");
        await ia.logout();
        await stopCleanly(a); // releases the lock
        const wb2 = await ib.scsi(rw16(0x8a, 16, 8), { write: Buffer.alloc(8 * BS, 2), timeoutMs: 60_000 });
        assert.equal(wb2.status, 0, `after A stopped, B writes: ${senseOf(wb2)}`);
        await ib.logout();
      } finally {
        if (a.child.exitCode === null) await a.stop();
        await stopCleanly(b);
      }
    },
  );

  it("a burst of writes taken in the same turn as close(): every one completes and is on the image", async (t) => {
    if (skipReason) return t.skip(skipReason);
    // The handler queues requests on the event loop and hands them to its submitter thread before the
    // loop next waits; a close (and its lock release) in the same turn must come after all of them.
    ceph("rbd", "create", "rbd/burst", "--size", "8M");
    const cfg = parseCfgstring(`/rbd/rbd/burst;conf=${conf}`);
    const backend = await rbdHandler.open({
      minor: 9,
      name: "burst",
      cfg,
      sizeBytes: undefined,
      blockSize: BS,
    });
    const image = Buffer.alloc(8 * MiB);
    await backend.writev([Buffer.alloc(4096, 0xee)], 0); // takes the exclusive lock
    image.fill(0xee, 0, 4096);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 96; i++) {
      const data = randomBytes(4096);
      const offset = (1 + i * 17) * 4096; // distinct, scattered over the objects
      data.copy(image, offset);
      writes.push(backend.writev([data], offset));
    }
    const closed = backend.close();
    const results = await Promise.allSettled(writes);
    await closed;
    assert.deepEqual(
      results.filter((r) => r.status === "rejected"),
      [],
    );
    const exported = join(dir, "burst.img");
    ceph("rbd", "export", "rbd/burst", exported);
    assert.ok((await readFile(exported)).equals(image), "the image holds exactly the burst's writes");
  });

  it("libiscsi SBC suites on an rbd LUN: 0 failed", { timeout: 20 * 60 * 1000 }, async (t) => {
    if (skipReason) return t.skip(skipReason);
    ceph("rbd", "create", "rbd/sbc", "--size", "64M");
    const server = await gateway("sbc");
    let sbc;
    try {
      sbc = await runSbcSuites(`iscsi://127.0.0.1:${server.ports[0]}/${IQN}/0`);
    } finally {
      await stopCleanly(server);
    }
    process.stderr.write(
      `rbd SBC: ${sbc.passed} passed, ${sbc.failed.length} failed of ${sbc.tests.length}\n`,
    );
    assert.ok(sbc.tests.length > 50, `only ${sbc.tests.length} tests ran:\n${sbc.output.slice(-2000)}`);
    assert.deepEqual(sbc.failed, [], sbc.output.slice(-6000));
  });
});
