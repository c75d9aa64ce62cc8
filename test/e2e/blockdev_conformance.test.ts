/**
 * Exporting a block device: an AIO LUN over a loop device (512- and 4096-byte sectors), once through
 * the io_uring engine and once through the thread-pool fallback (USERTGT_IO_ENGINE=threadpool).
 * Each run checks the geometry the initiator sees (READ CAPACITY(16)), that the disk is held
 * exclusively while exported (mkfs fails) and free again after the server stops (mkfs works), and
 * runs `iscsi-test-cu -d -t ALL`, judged like conformance.test.ts.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { attachLoop, canUseLoopDevices, type LoopDevice } from "../support/loop_device.js";
import { judge, parseCunitOutput, parseKnownFailures, type KnownFailure } from "./cunit_report.js";
import { cleanup, makeTempDir, run, startServer, stopCleanly } from "./harness.js";
import { twoPortalTarget } from "./seed_fixture.js";

const exec = promisify(execFile);
const KNOWN_FAILURES = fileURLToPath(
  new URL("../../../test/e2e/conformance-known-failures.txt", import.meta.url),
);
const IQN = "iqn.2016-06.io.spdk:blockdev";
const SIZE = 64 * 1024 * 1024;
const skip = await canUseLoopDevices();

const RUNS = [
  { name: "aio_blockdev4096", sector: 4096, engine: "io_uring" },
  { name: "aio_blockdev512_threadpool", sector: 512, engine: "threadpool" },
] as const;

describe("iscsi-test-cu on a block-device LUN", { skip }, () => {
  let known: KnownFailure[];
  let dir: string;
  const loops: LoopDevice[] = [];
  const savedEngine = process.env.USERTGT_IO_ENGINE;
  before(async () => {
    known = parseKnownFailures(await readFile(KNOWN_FAILURES, "utf8"));
    dir = await makeTempDir("blockdev");
  });
  after(async () => {
    if (savedEngine === undefined) delete process.env.USERTGT_IO_ENGINE;
    else process.env.USERTGT_IO_ENGINE = savedEngine;
    for (const l of loops) await l.detach();
    await cleanup(dir);
  });

  for (const r of RUNS) {
    it(
      `${r.name}: geometry, exclusive hold, iscsi-test-cu -d -t ALL`,
      { timeout: 20 * 60 * 1000 },
      async (t) => {
        const loop = await attachLoop(join(dir, `${r.name}.img`), SIZE, r.sector);
        loops.push(loop);
        // The server inherits the environment: this forces its engine.
        process.env.USERTGT_IO_ENGINE = r.engine;
        const server = await startServer(
          (ports) => `[AIO]\n  AIO ${loop.device} AIO0\n\n${twoPortalTarget(IQN, ports, "AIO0")}`,
          {
            dir,
            portCount: 2,
            args: ["--state-dir", join(dir, `state-${r.name}`), "--no-fuse", "--log-level", "info"],
          },
        );
        let output: string;
        try {
          assert.match(
            server.stderr(),
            new RegExp(`I/O engine: ${r.engine === "io_uring" ? "io_uring" : "thread pool"}`),
          );
          const [p1, p2] = server.ports;
          const url = `iscsi://127.0.0.1:${p1}/${IQN}/0`;
          const cap = await run("iscsi-readcapacity16", [url]);
          assert.equal(cap.code, 0, cap.stderr);
          assert.match(cap.stdout, new RegExp(`LOGICAL BLOCK LENGTH IN BYTES:${r.sector}\\b`));
          assert.match(cap.stdout, new RegExp(`RETURNED LOGICAL BLOCK ADDRESS:${SIZE / r.sector - 1}\\b`));
          const mkfs = await exec("mkfs.ext4", ["-q", "-F", loop.device]).then(
            () => "succeeded",
            () => "failed",
          );
          assert.equal(mkfs, "failed", "mkfs.ext4 on the exported disk must fail while usertgt holds it");
          const cu = await run(
            "iscsi-test-cu",
            ["-d", "-t", "ALL", url, `iscsi://127.0.0.1:${p2}/${IQN}/0`],
            15 * 60 * 1000,
          );
          output = cu.stdout + cu.stderr;
        } finally {
          await stopCleanly(server);
        }
        await exec("mkfs.ext4", ["-q", "-F", loop.device]);
        const log = join(tmpdir(), `usertgt-conformance-${r.name}.log`);
        await writeFile(log, output);
        t.diagnostic(`iscsi-test-cu output: ${log}`);
        const report = parseCunitOutput(output);
        const verdict = judge(r.name, report, known);
        const { passed, failed, skipped } = verdict.counts;
        const summary = `${r.name}: ${passed} passed, ${failed} failed, ${skipped} skipped of ${report.tests.length}`;
        t.diagnostic(summary);
        process.stderr.write(`conformance ${summary}\n`);
        assert.ok(
          report.tests.length > 200,
          `only ${report.tests.length} tests ran; output tail:\n${output.slice(-2000)}`,
        );
        // SCSI.ReadOnly needs a write-protected LU (conformance.test.ts runs it with SWP on): a skip here.
        assert.deepEqual(
          verdict.problems.filter((p) => !/^ReadOnly\.ReadOnlySBC SKIPPED/.test(p)),
          [],
          `${summary}\n${verdict.problems.join("\n")}`,
        );
      },
    );
  }
});
