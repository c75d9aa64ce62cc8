/**
 * DRBD wired in as the reference deployment runs it (LUN5): `[TCMUR] ram_b` + `BIO bio1 /UMCfuse/dev/drbd2
 * drbdadm_up_primary spdk /UMCfuse/dev/ram_b`, with a one-node .res for drbd2 on ram_b. The in-process
 * helper (no resource is named "spdk": it picks the one whose disk is ram_b) creates the metadata, brings
 * the resource up and makes it Primary; `usertgt drbdadm status` shows it; iscsi-test-cu -d -t ALL on bio1
 * is judged as test/e2e/conformance.test.ts judges its runs. Then the whole seed fixture (LUN0-5) with
 * LUN5 over DRBD: a write through LUN5 lands in ram_b's backing file. iSCSI ports 3400-3419.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { open, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { RawInitiator } from "../support/raw_initiator.js";
import { judge, parseCunitOutput, parseKnownFailures } from "./cunit_report.js";
import { freePorts } from "./drbd_ports.js";
import { cleanup, makeTempDir, run, runCli, startServer, stopCleanly } from "./harness.js";
import { SEED_FIXTURE as SEED, localSeedWithDevices, twoPortalTarget } from "./seed_fixture.js";

const KNOWN_FAILURES = fileURLToPath(
  new URL("../../../test/e2e/conformance-known-failures.txt", import.meta.url),
);
const IQN = "iqn.2016-06.io.spdk:drbdseed";

/** The seed fixture as written, moved to 127.0.0.1 and a temp dir; bio1 and LUN5 stay (DRBD is wired now). */
function fullSeed(seed: string, port: number, dir: string): string {
  const { text } = localSeedWithDevices(seed, port, dir);
  assert.match(text, /^ {2}BIO bio1 \/UMCfuse\/dev\/drbd2 drbdadm_up_primary spdk \/UMCfuse\/dev\/ram_b$/m);
  assert.match(text, /^ {2}LUN5 bio1$/m);
  return text;
}

const RES = `resource r2 {
    on seednode {
        address 127.0.0.1:7809;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/ram_b"; meta-disk internal; }
    }
}
`;

function config(ports: number[]): string {
  return `[TCMUR]
  TCMUR 3 ram_b /ram/drbdseed size=64M bs=512
[BIO]
  BIO bio1 /UMCfuse/dev/drbd2 drbdadm_up_primary spdk /UMCfuse/dev/ram_b
${twoPortalTarget(IQN, ports, "bio1")}`;
}

describe("seed LUN5: BIO over DRBD drbd2 brought up by drbdadm_up_primary", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("drbd-seed");
    await writeFile(join(dir, "r2.res"), RES);
  });
  after(async () => {
    await cleanup(dir);
  });

  it(
    "drbdadm status Primary/UpToDate, iscsi-test-cu -d -t ALL: 0 failed",
    { timeout: 20 * 60 * 1000 },
    async (t) => {
      const ports = await freePorts(2, 3400, 3419);
      const sock = join(dir, "rpc.sock");
      const server = await startServer(() => config(ports), {
        dir,
        args: [
          "--no-fuse",
          "--drbd-config",
          join(dir, "r2.res"),
          "--node-name",
          "seednode",
          "--rpc-socket",
          sock,
        ],
      });
      let output: string;
      let readOnlyOutput: string;
      try {
        const st = await runCli(["drbdadm", "-s", sock, "status", "r2"]);
        assert.equal(st.code, 0, st.stderr);
        assert.equal(st.stdout, "r2 role:Primary\n  disk:UpToDate\n");
        // The backing disk is DRBD's while attached: down is refused while bio1 holds drbd2.
        const down = await runCli(["drbdadm", "-s", sock, "down", "r2"]);
        assert.equal(down.code, 1);
        assert.match(down.stderr, /drbd2.*bio1/);
        const verify = await runCli(["drbdadm", "-s", sock, "verify", "r2"]);
        assert.equal(verify.code, 1);
        // A one-node resource has no peer to compare with: drbdsetup's refusal.
        assert.match(
          verify.stderr,
          /drbd2: State change failed: \(-15\) Need a connection to start verify or resync/,
        );

        const url = `iscsi://127.0.0.1:${ports[0]}/${IQN}/0`;
        const r = await run(
          "iscsi-test-cu",
          ["-d", "-t", "ALL", url, `iscsi://127.0.0.1:${ports[1]}/${IQN}/0`],
          15 * 60 * 1000,
        );
        output = r.stdout + r.stderr;
        // SCSI.ReadOnly needs a write-protected LU: a second pass with software write protect (as conformance.test.ts).
        assert.equal((await run("iscsi-swp", ["--swp=on", url])).code, 0);
        readOnlyOutput = (await run("iscsi-test-cu", ["-d", "-t", "SCSI.ReadOnly", url], 5 * 60 * 1000))
          .stdout;
        assert.equal((await run("iscsi-swp", ["--swp=off", url])).code, 0);
      } finally {
        await stopCleanly(server);
      }
      const log = join(tmpdir(), "usertgt-conformance-drbd512.log");
      await writeFile(log, `${output}\n==== SCSI.ReadOnly with SWP on ====\n${readOnlyOutput}`);
      t.diagnostic(`iscsi-test-cu output: ${log}`);
      const readOnly = parseCunitOutput(readOnlyOutput);
      assert.deepEqual(
        readOnly.tests.map((x) => x.name),
        ["ReadOnly.ReadOnlySBC"],
      );
      const first = parseCunitOutput(output);
      const report = {
        summary: first.summary,
        tests: first.tests.map((x) =>
          x.name === "ReadOnly.ReadOnlySBC" && x.verdict === "skipped" ? readOnly.tests[0] : x,
        ),
      };
      if (report.summary && readOnly.tests[0].verdict === "failed")
        report.summary = { ...report.summary, failed: report.summary.failed + 1 };
      const known = parseKnownFailures(await readFile(KNOWN_FAILURES, "utf8"));
      const verdict = judge("drbd512", report, known);
      const { passed, failed, skipped } = verdict.counts;
      const summary = `drbd512: ${passed} passed, ${failed} failed, ${skipped} skipped of ${report.tests.length}`;
      t.diagnostic(summary);
      assert.ok(report.tests.length > 200, `only ${report.tests.length} tests ran:\n${output.slice(-2000)}`);
      assert.deepEqual(verdict.problems, [], `${summary}\n${verdict.problems.join("\n")}`);
    },
  );
  it("the whole seed config: LUN0-5, LUN5 = bio1 over drbd2 on ram_b, writes reach ram_b's file", async (t) => {
    const [port] = await freePorts(1, 3400, 3419);
    const sock = join(dir, "seed.sock");
    const seed = await readFile(SEED, "utf8");
    // The reference config's `spdk` is not a resource name: the helper takes the resource whose disk is ram_b.
    await writeFile(join(dir, "seed.res"), RES.replace("seednode", "seedhost"));
    const server = await startServer((_p, d) => fullSeed(seed, port, d), {
      dir: await makeTempDir("drbd-seed-full"),
      args: [
        "--no-fuse",
        "--drbd-config",
        join(dir, "seed.res"),
        "--node-name",
        "seedhost",
        "--rpc-socket",
        sock,
      ],
    });
    t.after(() => cleanup(server.dir));
    const data = randomBytes(16 * 4096);
    try {
      const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${port}`]);
      assert.equal(ls.code, 0, ls.stderr);
      for (const lun of [0, 1, 2, 3, 4, 5])
        assert.match(ls.stdout, new RegExp(`Lun:${lun}\\s+Type:DIRECT_ACCESS`));
      const st = await runCli(["drbdadm", "-s", sock, "status"]);
      assert.equal(st.stdout, "r2 role:Primary\n  disk:UpToDate\n", st.stderr);

      const ini = await RawInitiator.connect(port);
      t.after(() => ini.close());
      assert.equal((await ini.login({ targetName: "iqn.2016-06.io.spdk:disk1" })).statusClass, 0);
      const cdb = Buffer.from([0x2a, 0, 0, 0, 0, 100, 0, 0, 16, 0]); // WRITE(10) LBA 100, 16 blocks
      let w = await ini.scsi(cdb, { lun: 5, write: data });
      if (w.status === 2) w = await ini.scsi(cdb, { lun: 5, write: data }); // POWER ON UA
      assert.equal(w.status, 0, `WRITE(10) to LUN5: sense ${w.sense.toString("hex")}`);
      ini.close();
    } finally {
      await stopCleanly(server);
    }
    // Through bio1 → drbd2 → ram_b (a TCMUR file here): the bytes sit at the same offset of its file.
    const fh = await open(join(server.dir, "tcmur_ram01"), "r");
    try {
      const back = Buffer.alloc(data.length);
      await fh.read(back, 0, back.length, 100 * 4096);
      assert.ok(back.equals(data), "ram_b's backing file does not hold what LUN5 wrote");
    } finally {
      await fh.close();
    }
  });
});
