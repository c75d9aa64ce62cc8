/**
 * Conformance: `iscsi-test-cu -d -t ALL` (libiscsi-bin 1.19) against usertgt on a Malloc LUN
 * and an AIO LUN, 512- and 4096-byte blocks, with two portals in one portal group so MultipathIO runs;
 * and the same on a TCMUR file device and a BIO bdev over a TCMUR ram device.
 * A run passes when every failure is listed in conformance-known-failures.txt (and every listed test
 * still fails), and the only skips are EXTENDED COPY, WRITE ATOMIC and SANITIZE, plus those that state what a
 * virtual disk truly is (medium not removable, one logical block per physical block: DEVICE_PROPERTY_SKIPS).
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { judge, parseCunitOutput, parseKnownFailures, type KnownFailure } from "./cunit_report.js";
import { cleanup, makeTempDir, run, startServer, stopCleanly } from "./harness.js";
import { twoPortalTarget } from "./seed_fixture.js";

const KNOWN_FAILURES = fileURLToPath(
  new URL("../../../test/e2e/conformance-known-failures.txt", import.meta.url),
);
const IQN = "iqn.2016-06.io.spdk:conformance";
const LUN_MB = 64;

interface Setup {
  readonly name: string;
  readonly bdevSection: (dir: string) => string;
  readonly bdev: string;
}

const SETUPS: Setup[] = [
  ...[512, 4096].flatMap((bs): Setup[] => [
    {
      name: `malloc${bs}`,
      bdev: "Malloc0",
      bdevSection: () => `[Malloc]\n  NumberOfLuns 1\n  LunSizeInMB ${LUN_MB}\n  BlockSize ${bs}\n`,
    },
    {
      name: `aio${bs}`,
      bdev: "AIO0",
      bdevSection: (dir) => `[AIO]\n  AIO ${join(dir, `aio${bs}.img`)} AIO0 ${bs} ${LUN_MB}\n`,
    },
  ]),
  // Device tree devices: tcmu-runner style file and ram handler devices, and a BIO bdev over a ram device.
  {
    name: "tcmur_ram512",
    bdev: "ram_a",
    bdevSection: () => `[TCMUR]\n  TCMUR 0 ram_a /ram/conformance size=${LUN_MB}M bs=512\n`,
  },
  {
    name: "tcmur4096",
    bdev: "file_a",
    bdevSection: (dir) =>
      `[TCMUR]\n  TCMUR 1 file_a /file/${join(dir, "tcmur4096.img")} size=${LUN_MB}M bs=4096\n`,
  },
  {
    name: "bio512",
    bdev: "bio0",
    bdevSection: () =>
      `[TCMUR]\n  TCMUR 3 ram_b /ram/bio512 size=${LUN_MB}M bs=512\n[BIO]\n  BIO bio0 /UMCfuse/dev/ram_b\n`,
  },
];

function config(setup: Setup, ports: number[], dir: string): string {
  return `${setup.bdevSection(dir)}\n${twoPortalTarget(IQN, ports, setup.bdev)}`;
}

describe("iscsi-test-cu conformance", () => {
  let known: KnownFailure[];
  let dir: string;
  before(async () => {
    known = parseKnownFailures(await readFile(KNOWN_FAILURES, "utf8"));
    dir = await makeTempDir("conformance");
  });
  after(async () => {
    await cleanup(dir);
  });

  for (const setup of SETUPS) {
    it(`${setup.name}: iscsi-test-cu -d -t ALL with two portals`, { timeout: 20 * 60 * 1000 }, async (t) => {
      const server = await startServer((ports, d) => config(setup, ports, d), {
        dir,
        portCount: 2,
        args: ["--state-dir", join(dir, `state-${setup.name}`), "--no-fuse"],
      });
      let output: string;
      let readOnlyOutput: string;
      try {
        const [p1, p2] = server.ports;
        const url = `iscsi://127.0.0.1:${p1}/${IQN}/0`;
        const r = await run(
          "iscsi-test-cu",
          ["-d", "-t", "ALL", url, `iscsi://127.0.0.1:${p2}/${IQN}/0`],
          15 * 60 * 1000,
        );
        output = r.stdout + r.stderr;
        // SCSI.ReadOnly runs only on a write-protected LU: a second pass with software write protect
        // (control mode page SWP, set by libiscsi's iscsi-swp) replaces the first pass's skip.
        const on = await run("iscsi-swp", ["--swp=on", url]);
        assert.equal(on.code, 0, `iscsi-swp --swp=on: ${on.stdout}${on.stderr}`);
        const ro = await run("iscsi-test-cu", ["-d", "-t", "SCSI.ReadOnly", url], 5 * 60 * 1000);
        readOnlyOutput = ro.stdout + ro.stderr;
        const off = await run("iscsi-swp", ["--swp=off", url]);
        assert.equal(off.code, 0, `iscsi-swp --swp=off: ${off.stdout}${off.stderr}`);
      } finally {
        await stopCleanly(server);
      }
      const log = join(tmpdir(), `usertgt-conformance-${setup.name}.log`);
      await writeFile(log, `${output}\n==== SCSI.ReadOnly with SWP on ====\n${readOnlyOutput}`);
      t.diagnostic(`iscsi-test-cu output: ${log}`);
      const readOnly = parseCunitOutput(readOnlyOutput);
      assert.deepEqual(
        readOnly.tests.map((x) => x.name),
        ["ReadOnly.ReadOnlySBC"],
        `SCSI.ReadOnly pass ran something else:\n${readOnlyOutput.slice(-2000)}`,
      );
      const first = parseCunitOutput(output);
      const report = {
        summary: first.summary,
        tests: first.tests.map((x) =>
          x.name === "ReadOnly.ReadOnlySBC" && x.verdict === "skipped" ? readOnly.tests[0] : x,
        ),
      };
      if (report.summary && readOnly.tests[0].verdict === "failed") {
        report.summary = { ...report.summary, failed: report.summary.failed + 1 };
      }
      const verdict = judge(setup.name, report, known);
      const { passed, failed, skipped } = verdict.counts;
      const summary = `${setup.name}: ${passed} passed, ${failed} failed, ${skipped} skipped of ${report.tests.length}`;
      t.diagnostic(summary);
      process.stderr.write(`conformance ${summary}\n`);
      assert.ok(
        report.tests.length > 200,
        `only ${report.tests.length} tests ran; output tail:\n${output.slice(-2000)}`,
      );
      assert.deepEqual(verdict.problems, [], `${summary}\n${verdict.problems.join("\n")}`);
    });
  }
});
