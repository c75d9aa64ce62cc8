/**
 * Benchmark: the same TCMUR `ram`, TCMUR `file` and BIO (over a `file`) devices measured through
 * iSCSI (libiscsi's iscsi-perf: sequential 1 MiB and random 4 KiB reads, 1 and 16 in flight) and through
 * their FUSE files (dd sequential 1 MiB writes and reads; 4 KiB random reads and writes with
 * fuse_random.js). Needs root and /dev/fuse for the FUSE half (skipped otherwise).
 *
 *   node dist/bench/fuse_iscsi_bench.js [size=256M] [seconds=5]
 */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseSpdkConfig } from "../src/config/spdk_config.js";
import { parseSize } from "../src/tcmur/cfgstring.js";
import { DevtreeService } from "../src/devtree/devtree_service.js";
import { UsertgtServer } from "../src/server/server.js";
import { log } from "../src/util/log.js";

const exec = promisify(execFile);
const [size = "256M", secondsText = "5"] = process.argv.slice(2);
const seconds = Number(secondsText);
const IQN = "iqn.2016-06.io.spdk:fusebench";
const RANDOM_CLIENT = fileURLToPath(new URL("./fuse_random.js", import.meta.url));

const dir = await mkdtemp(join(tmpdir(), "usertgt-fuse-iscsi-bench-"));
const logger = log.child({ bench: "fuse-iscsi" });
logger.level = "warn";
const devtree = await DevtreeService.create({ mountPoint: join(dir, "mnt"), logger });
const config = parseSpdkConfig(
  `[Malloc]
  NumberOfLuns 1
  LunSizeInMB 16
  BlockSize 4096
[TCMUR]
  TCMUR 0 ram_a /ram/bench size=${size}
  TCMUR 1 file_a /file/${dir}/file_a.img size=${size}
  TCMUR 2 file_b /file/${dir}/file_b.img size=${size}
[BIO]
  BIO bio0 /UMCfuse/dev/file_b
[PortalGroup1]
  Portal A 127.0.0.1:0
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName ${IQN}
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  QueueDepth 64
  LUN0 Malloc0
  LUN2 ram_a
  LUN3 file_a
  LUN4 bio0
`,
  "<fuse_iscsi_bench>",
);
const server = await UsertgtServer.start(config, {
  logger,
  bdevModules: { tcmur: (s) => devtree.openTcmur(s), bio: (s) => devtree.openBio(s) },
});
const port = server.addresses()[0].port;
const lines: string[] = [];
const say = (s: string) => {
  lines.push(s);
  process.stdout.write(`${s}\n`);
};

async function iscsiPerf(lun: number, blocks: number, depth: number, random: boolean): Promise<string> {
  const args = ["-t", String(seconds), "-m", String(depth), "-b", String(blocks)];
  if (random) args.push("-r");
  args.push(`iscsi://127.0.0.1:${port}/${IQN}/${lun}`);
  const r = await exec("iscsi-perf", args, { timeout: (seconds + 30) * 1000 }).catch(
    (e: { stdout?: string; stderr?: string }) => ({ stdout: e.stdout ?? "", stderr: e.stderr ?? "" }),
  );
  // Progress lines end in \r; the summary is the last "iops average N (X MB/s)".
  const text = `${r.stdout}${r.stderr}`;
  const all = [...text.matchAll(/iops average (\d+) \(([^)]*)\)/g)];
  const last = all[all.length - 1];
  return last ? `${last[1]} IOPS, ${last[2]}` : `(no summary: ${text.slice(-200)})`;
}

try {
  say(`usertgt device-tree benchmark, ${size} devices, ${seconds}s per run`);
  for (const [lun, name] of [
    [2, "TCMUR ram"],
    [3, "TCMUR file"],
    [4, "BIO on file"],
  ] as const) {
    say(`iSCSI LUN${lun} (${name}) seq read 1MiB QD16: ${await iscsiPerf(lun, 256, 16, false)}`);
    say(`iSCSI LUN${lun} (${name}) rand read 4KiB QD1: ${await iscsiPerf(lun, 1, 1, true)}`);
    say(`iSCSI LUN${lun} (${name}) rand read 4KiB QD16: ${await iscsiPerf(lun, 1, 16, true)}`);
  }
} finally {
  await server.stop();
  await devtree.stop();
}

// The FUSE half is served by a separate process (fuse_serve.js), as a real host's dd would be: dd
// spawned by the serving process itself would fork it, leaving every page of its memory
// copy-on-write, and the `ram` device would pay a page fault per 4 KiB on the next pass.
const SERVE = fileURLToPath(new URL("./fuse_serve.js", import.meta.url));
const serve = spawn("node", [SERVE, join(dir, "mnt"), dir, size], { stdio: ["ignore", "pipe", "inherit"] });
const ready = await new Promise<boolean>((resolve) => {
  serve.stdout.setEncoding("utf8").on("data", (s: string) => s.includes("ready") && resolve(true));
  serve.on("exit", () => resolve(false));
});
try {
  if (!ready) {
    say("FUSE: not mountable here, skipped");
  } else {
    const mb = Math.floor(parseSize(size, "size") / 2 ** 20);
    for (const dev of ["ram_a", "file_a"]) {
      const f = join(dir, "mnt/dev", dev);
      for (const [what, args] of [
        ["seq write 1MiB", [`if=/dev/zero`, `of=${f}`, "bs=1M", `count=${mb}`, "conv=notrunc"]],
        [
          "seq write 1MiB again +fsync",
          [`if=/dev/zero`, `of=${f}`, "bs=1M", `count=${mb}`, "conv=notrunc,fsync"],
        ],
        ["seq read 1MiB", [`if=${f}`, "of=/dev/null", "bs=1M", `count=${mb}`]],
      ] as const) {
        const r = await exec("dd", [...args]);
        const rate = /copied, [0-9.]+ s, (.*)$/m.exec(r.stderr)?.[1] ?? r.stderr.trim();
        say(`FUSE ${dev} ${what}: ${rate}`);
      }
      for (const op of ["write", "read"]) {
        for (const depth of ["1", "16"]) {
          const r = await exec("node", [RANDOM_CLIENT, f, op, "4096", depth, String(seconds)]);
          say(`FUSE ${dev} random ${r.stdout.trim()}`);
        }
      }
    }
  }
} finally {
  if (serve.exitCode === null) {
    const exited = new Promise((r) => serve.once("exit", r));
    serve.kill("SIGTERM");
    await exited;
  }
  await rm(dir, { recursive: true, force: true });
}
