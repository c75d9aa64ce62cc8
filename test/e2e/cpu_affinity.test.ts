/**
 * `[Global] ReactorMask` and `serve -m`: every thread of the running server is restricted to the
 * mask's CPUs (read back from /proc/PID/task/TID/status, as taskset -p would), the option overrides
 * the config, and a mask naming a CPU the process may not use stops start-up with the line named.
 */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { after, before, describe, it } from "node:test";
import { cleanup, makeTempDir, runCli, startServer, stopCleanly } from "./harness.js";

const PORTS: [number, number] = [3920, 3929];

function config(port: number, mask?: string): string {
  return `${mask === undefined ? "" : `[Global]\n  ReactorMask ${mask}\n`}[Malloc]
  NumberOfLuns 1
  LunSizeInMB 8
[PortalGroup1]
  Portal P 127.0.0.1:${port}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName iqn.2016-06.io.spdk:affinity
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc0
`;
}

/** Cpus_allowed_list of every thread of `pid`, e.g. ["0", "0", ...]. */
async function threadCpuLists(pid: number): Promise<string[]> {
  const out: string[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const status = await readFile(`/proc/${pid}/task/${tid}/status`, "utf8").catch(() => "");
    const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(status);
    if (m) out.push(m[1]!);
  }
  return out;
}

describe("CPU affinity (ReactorMask, -m)", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("affinity");
  });
  after(async () => {
    await cleanup(dir);
  });

  it("pins every thread to [Global] ReactorMask's CPUs", async () => {
    const server = await startServer(([port]) => config(port!, "0x1"), {
      dir,
      portRange: PORTS,
      args: ["--log-level", "info"],
    });
    try {
      const lists = await threadCpuLists(server.child.pid!);
      assert.ok(lists.length >= 5, `a Node process has several threads; saw ${lists.length}`);
      assert.deepEqual(new Set(lists), new Set(["0"]), `threads' CPU lists: ${lists.join(" ")}`);
      assert.match(server.stderr(), /CPU affinity: CPUs 0 \(.*usertgt\.conf:2: ReactorMask 0x1\)/);
    } finally {
      await stopCleanly(server);
    }
  });

  it("-m overrides the config's mask", { skip: availableParallelism() < 2 && "needs 2 CPUs" }, async () => {
    const server = await startServer(([port]) => config(port!, "0x1"), {
      dir,
      portRange: PORTS,
      args: ["-m", "[1]"],
    });
    try {
      assert.deepEqual(new Set(await threadCpuLists(server.child.pid!)), new Set(["1"]));
    } finally {
      await stopCleanly(server);
    }
  });

  it("refuses a mask naming a CPU the process may not use, naming the line", async () => {
    const { writeFile } = await import("node:fs/promises");
    const file = `${dir}/bad.conf`;
    await writeFile(file, config(PORTS[0], "0x8000000000000000"));
    const r = await runCli(["serve", "-c", file, "--no-rpc", "--no-fuse"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /bad\.conf:2: ReactorMask: CPU mask "0x8000000000000000" names CPU 63, which this process may not run on \(allowed: /,
    );
    const opt = await runCli(["serve", "-c", file, "-m", "0xq", "--no-rpc", "--no-fuse"]);
    assert.equal(opt.code, 2, opt.stderr);
    assert.match(opt.stderr, /-m\/--cpumask: CPU mask "0xq" is neither a hexadecimal mask/);
  });
});
