/**
 * The control plane driven by SPDK's own client, unchanged: `serve --wait-for-rpc`, then
 * scripts/rpc.py builds a target from nothing, changes it live while an initiator does I/O (a LUN
 * added, an AIO file grown and rescanned, a bdev in use deleted, a target deleted), and the unit
 * attentions, Async Messages and data are checked; save_config, a restart from that JSON, and
 * save_config again must agree. iSCSI ports 3470, 3471, 3473.
 *
 * rpc.py is taken from ../shared/spdk-rpc beside the repository (SPDK_RPC_DIR overrides).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFile, truncate, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { Opcode } from "../../src/iscsi/pdu.js";
import { RawInitiator, pduAs } from "../support/raw_initiator.js";
import { CLI, cleanup, makeTempDir, run, runCli } from "./harness.js";

/** dist/test/e2e → repository root → its sibling shared/. */
const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const SPDK_RPC = process.env.SPDK_RPC_DIR ?? resolve(REPO, "../shared/spdk-rpc");
const PORT = 3470;
const PORT2 = 3471;
const PORT3 = 3473;
const IQN = "iqn.2016-06.io.e2e";

interface RpcResult {
  code: number | null;
  out: string;
  err: string;
}

/** rpc.py as a user runs it; `input` goes to its stdin (load_config). */
function rpcPy(sock: string, args: readonly string[], input?: string): Promise<RpcResult> {
  return new Promise((res, rej) => {
    const child = spawn("python3", [join(SPDK_RPC, "scripts/rpc.py"), "-s", sock, ...args], {
      env: { ...process.env, PYTHONPATH: join(SPDK_RPC, "python") },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60000);
    child.once("error", rej);
    child.once("close", (code) => {
      clearTimeout(timer);
      res({ code, out, err });
    });
    child.stdin.end(input ?? "");
  });
}

async function rpcOk(sock: string, args: readonly string[], input?: string): Promise<string> {
  const r = await rpcPy(sock, args, input);
  assert.equal(r.code, 0, `rpc.py ${args.join(" ")}: ${r.err}${r.out}`);
  return r.out;
}

interface Served {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<number | null>;
}

function serve(args: readonly string[], readyLine: RegExp): Promise<Served> {
  const child = spawn(process.execPath, [CLI, "serve", "--no-fuse", "--log-level", "warn", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`not ready: ${err}`)), 20000);
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (c: string) => {
      err += c;
      if (readyLine.test(err)) {
        clearTimeout(timer);
        res({ child, stderr: () => err, exited });
      }
    });
    void exited.then((code) => rej(new Error(`exited ${code}: ${err}`)));
  });
}

const READ_CAPACITY_16 = Buffer.from([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
const REPORT_LUNS = Buffer.from([0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]);
const TEST_UNIT_READY = Buffer.alloc(6);

function senseAsc(sense: Buffer): [number, number, number] {
  // Fixed format (SPC-4 4.5.3), after the 2-byte SenseLength the iSCSI layer strips or keeps.
  const s = sense[0] === 0x70 || sense[0] === 0x71 ? sense : sense.subarray(2);
  return [s[2]! & 0x0f, s[12]!, s[13]!];
}

function write10(lba: number, blocks: number): Buffer {
  const c = Buffer.alloc(10);
  c[0] = 0x2a;
  c.writeUInt32BE(lba, 2);
  c.writeUInt16BE(blocks, 7);
  return c;
}
function read10(lba: number, blocks: number): Buffer {
  const c = write10(lba, blocks);
  c[0] = 0x28;
  return c;
}

async function login(target: string, port = PORT): Promise<RawInitiator> {
  const ini = await RawInitiator.connect(port);
  const r = await ini.login({ initiatorName: "iqn.2016-06.io.e2e:ini", targetName: target });
  assert.equal(r.statusClass, 0, `login to ${target}`);
  return ini;
}

/** Run `cdb` until no unit attention is left; returns the unit attentions seen, in order. */
async function drainUnitAttentions(ini: RawInitiator, lun: number): Promise<string[]> {
  const seen: string[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await ini.scsi(TEST_UNIT_READY, { lun });
    if (r.status === 0) return seen;
    const [key, asc, ascq] = senseAsc(r.sense);
    assert.equal(key, 6, `sense key ${key}`);
    seen.push(`${asc.toString(16)}/${ascq.toString(16)}`);
  }
  throw new Error("unit attentions never ended");
}

describe("SPDK rpc.py drives a --wait-for-rpc server", () => {
  let dir: string;
  let sock: string;
  let server: Served;

  before(async () => {
    dir = await makeTempDir("spdkrpc");
    sock = join(dir, "rpc.sock");
    server = await serve(["--wait-for-rpc", "--rpc-socket", sock], /waiting for framework_start_init/);
  });

  after(async () => {
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
    await cleanup(dir);
  });

  it("offers only start-up methods before framework_start_init, and refuses others with -1", async () => {
    const current = JSON.parse(await rpcOk(sock, ["rpc_get_methods", "--current"])) as string[];
    assert.ok(current.includes("iscsi_set_options"));
    assert.ok(current.includes("framework_start_init"));
    assert.ok(!current.includes("bdev_malloc_create"));
    const early = await rpcPy(sock, ["bdev_malloc_create", "8", "512", "-b", "M0"]);
    assert.equal(early.code, 1);
    assert.match(early.out + early.err, /"code": -1,[\s\S]*framework_start_init/);
    await rpcOk(sock, ["iscsi_set_options", "-b", IQN, "-q", "64"]);
    await rpcOk(sock, ["framework_start_init"]);
    await rpcOk(sock, ["framework_wait_init"]);
    const late = await rpcPy(sock, ["iscsi_set_options", "-q", "8"]);
    assert.equal(late.code, 1);
    assert.match(late.out + late.err, /"code": -1/);
  });

  it("lists only methods that answer (none says -32601)", async () => {
    const all = JSON.parse(await rpcOk(sock, ["rpc_get_methods"])) as string[];
    // A raw call of each with no params: wrong params are fine, "Method not found" is not.
    const { RpcClient } = await import("../../src/rpc/client.js");
    const c = await RpcClient.connect(sock);
    try {
      for (const m of all.filter((x) => x !== "spdk_kill_instance" && x !== "framework_start_init")) {
        try {
          await c.call(m, {});
        } catch (err) {
          assert.notEqual((err as { code?: number }).code, -32601, `${m} is listed but not found`);
        }
      }
    } finally {
      c.close();
    }
  });

  it("builds a target from nothing; a bad create leaves nothing behind", async () => {
    await rpcOk(sock, ["bdev_malloc_create", "8", "512", "-b", "M0"]);
    await writeFile(join(dir, "aio.img"), Buffer.alloc(1 << 20));
    await rpcOk(sock, ["bdev_aio_create", join(dir, "aio.img"), "A0", "512"]);
    await rpcOk(sock, ["bdev_malloc_create", "4", "512", "-b", "M1"]);
    await rpcOk(sock, ["iscsi_create_portal_group", "1", `127.0.0.1:${PORT}`]);
    await rpcOk(sock, ["iscsi_create_initiator_group", "1", "ANY", "127.0.0.1/32"]);
    await rpcOk(sock, ["iscsi_create_target_node", "disk1", "d1", "M0:0", "1:1", "32", "-d"]);
    await rpcOk(sock, ["iscsi_create_target_node", "disk2", "d2", "M1:0", "1:1", "32", "-d"]);

    const dup = await rpcPy(sock, ["bdev_malloc_create", "8", "512", "-b", "M0"]);
    assert.match(dup.out + dup.err, /"code": -17/);
    const bad = await rpcPy(sock, ["iscsi_create_target_node", "disk3", "d3", "M0:0 Nope:1", "1:1", "32"]);
    assert.equal(bad.code, 1);
    assert.match(bad.out + bad.err, /"code": -32602,[\s\S]*luns\[1\][\s\S]*Nope/);
    const badMap = await rpcPy(sock, ["iscsi_create_target_node", "disk3", "d3", "M0:0", "1:9", "32"]);
    assert.match(badMap.out + badMap.err, /pg_ig_maps\[0\]\.ig_tag/);
    const nodes = JSON.parse(await rpcOk(sock, ["iscsi_get_target_nodes"])) as { name: string }[];
    assert.deepEqual(
      nodes.map((n) => n.name),
      [`${IQN}:disk1`, `${IQN}:disk2`],
    );
    const noBdev = await rpcPy(sock, ["bdev_malloc_delete", "Nope"]);
    assert.match(noBdev.out + noBdev.err, /"code": -19/);

    // libiscsi's tools log in to what rpc.py built.
    const inq = await run("iscsi-inq", [`iscsi://127.0.0.1:${PORT}/${IQN}:disk1/0`]);
    assert.equal(inq.code, 0, inq.stderr);
    assert.match(inq.stdout, /DIRECT_ACCESS/);
  });

  it("changes the target live under I/O: add a LUN, grow and rescan, delete a bdev in use", async () => {
    const ini = await login(`${IQN}:disk1`);
    const other = await login(`${IQN}:disk2`);
    try {
      assert.deepEqual(await drainUnitAttentions(ini, 0), ["29/0"]);
      assert.deepEqual(await drainUnitAttentions(other, 0), ["29/0"]);
      const pattern = Buffer.alloc(8 * 512, 0x5a);
      // I/O in flight while the control plane works.
      let stop = false;
      let ios = 0;
      // A unit attention (the LUN added, the capacity changed) may stop either command once.
      const once = async (cdb: Buffer, o: { write?: Buffer; read?: number }) => {
        let r = await ini.scsi(cdb, o);
        if (r.status === 2) {
          assert.equal(senseAsc(r.sense)[0], 6, "only unit attentions interrupt the I/O");
          r = await ini.scsi(cdb, o);
        }
        return r;
      };
      const io = (async () => {
        while (!stop) {
          const w = await once(write10(ios % 64, 8), { write: pattern });
          assert.equal(w.status, 0);
          const r = await once(read10(ios % 64, 8), { read: pattern.length });
          assert.equal(r.status, 0);
          assert.ok(r.data.equals(pattern), "read back what was written");
          ios++;
        }
      })();

      await rpcOk(sock, ["iscsi_target_node_add_lun", `${IQN}:disk1`, "A0", "-i", "1"]);
      await new Promise((r) => setTimeout(r, 200));
      // Grow the file under the AIO bdev and rescan it.
      await truncate(join(dir, "aio.img"), 2 << 20);
      await rpcOk(sock, ["bdev_aio_rescan", "A0"]);
      await new Promise((r) => setTimeout(r, 200));
      stop = true;
      await io;
      assert.ok(ios > 0);

      const luns = await ini.scsi(REPORT_LUNS, { read: 4096 });
      assert.equal(luns.status, 0);
      assert.equal(luns.data.readUInt32BE(0), 16, "two LUNs reported");
      // LUN 1 is new to this nexus: power on first, then capacity; READ CAPACITY has the new size.
      const ua1 = await drainUnitAttentions(ini, 1);
      assert.ok(ua1.includes("29/0"), ua1.join());
      const cap = await ini.scsi(READ_CAPACITY_16, { lun: 1, read: 32 });
      assert.equal(cap.status, 0);
      assert.equal(Number(cap.data.readBigUInt64BE(0)) + 1, (2 << 20) / 512);

      // Grown again while this nexus knows LUN 1: CAPACITY DATA HAS CHANGED, then the new size.
      await truncate(join(dir, "aio.img"), 3 << 20);
      await rpcOk(sock, ["bdev_aio_rescan", "A0"]);
      assert.deepEqual(await drainUnitAttentions(ini, 1), ["2a/9"]);
      const cap3 = await ini.scsi(READ_CAPACITY_16, { lun: 1, read: 32 });
      assert.equal(Number(cap3.data.readBigUInt64BE(0)) + 1, (3 << 20) / 512);
      const bdev = JSON.parse(await rpcOk(sock, ["bdev_get_bdevs", "-b", "A0"])) as { num_blocks: number }[];
      assert.equal(bdev[0]!.num_blocks, (3 << 20) / 512);

      // Other targets' sessions never notice.
      assert.deepEqual(await drainUnitAttentions(other, 0), []);

      // Delete the bdev behind LUN 1 while commands go to it: each is answered, none lost.
      const inflight = Array.from({ length: 8 }, (_, i) => ini.scsi(read10(i, 8), { lun: 1, read: 4096 }));
      await rpcOk(sock, ["bdev_aio_delete", "A0"]);
      for (const r of await Promise.all(inflight)) {
        assert.ok(r.status === 0 || r.status === 2, `status ${r.status}`);
      }
      const gone = await ini.scsi(TEST_UNIT_READY, { lun: 1 });
      assert.equal(gone.status, 2);
      assert.deepEqual(senseAsc(gone.sense).slice(1), [0x25, 0], "LOGICAL UNIT NOT SUPPORTED");
      const after = await ini.scsi(REPORT_LUNS, { read: 4096 });
      assert.equal(after.data.readUInt32BE(0), 8, "one LUN left");
      assert.ok((await drainUnitAttentions(ini, 0)).includes("3f/e"), "REPORTED LUNS DATA HAS CHANGED");
      assert.deepEqual(await drainUnitAttentions(other, 0), []);
      const bdevs = JSON.parse(await rpcOk(sock, ["bdev_get_bdevs"])) as { name: string }[];
      assert.ok(!bdevs.some((b) => b.name === "A0"));
    } finally {
      ini.close();
      other.close();
    }
  });

  it("counts I/O per bdev (bdev_get_iostat) and enforces bdev_set_qos_limit", async () => {
    const ini = await login(`${IQN}:disk1`);
    try {
      await drainUnitAttentions(ini, 0);
      await rpcOk(sock, ["bdev_reset_iostat", "-b", "M0"]);
      const block = Buffer.alloc(512, 7);
      const timed = async (n: number): Promise<number> => {
        const t0 = performance.now();
        for (let i = 0; i < n; i++) assert.equal((await ini.scsi(write10(i, 1), { write: block })).status, 0);
        return performance.now() - t0;
      };
      await timed(50);
      const stat = JSON.parse(await rpcOk(sock, ["bdev_get_iostat", "--names", "M0"])) as {
        tick_rate: number;
        bdevs: Record<string, number | string>[];
      };
      assert.equal(stat.tick_rate, 1e9);
      assert.equal(stat.bdevs[0]!.name, "M0");
      assert.equal(stat.bdevs[0]!.num_write_ops, 50);
      assert.equal(stat.bdevs[0]!.bytes_written, 50 * 512);
      assert.ok((stat.bdevs[0]!.write_latency_ticks as number) > 0);

      const badIops = await rpcPy(sock, ["bdev_set_qos_limit", "M0", "--rw-ios-per-sec", "1500"]);
      assert.match(badIops.out + badIops.err, /"code": -22,[\s\S]*rw_ios_per_sec/);
      // 1000 IOPS: one I/O per 1 ms slice, so 200 writes take at least ~200 ms whatever the machine.
      await rpcOk(sock, ["bdev_set_qos_limit", "M0", "--rw-ios-per-sec", "1000"]);
      const limited = await timed(200);
      assert.ok(limited >= 180, `200 I/Os at 1000 IOPS took ${limited.toFixed(0)} ms`);
      assert.match(await rpcOk(sock, ["save_config"]), /"bdev_set_qos_limit"/);
      await rpcOk(sock, ["bdev_set_qos_limit", "M0", "--rw-ios-per-sec", "0"]);
      assert.doesNotMatch(await rpcOk(sock, ["save_config"]), /"bdev_set_qos_limit"/);
    } finally {
      ini.close();
    }
  });

  it("log and auth-group methods answer as SPDK's", async () => {
    await rpcOk(sock, ["log_set_level", "DEBUG"]);
    assert.equal(JSON.parse(await rpcOk(sock, ["log_get_level"])), "DEBUG");
    await rpcOk(sock, ["log_set_level", "ERROR"]);
    await rpcOk(sock, ["log_set_flag", "iscsi"]);
    assert.equal((JSON.parse(await rpcOk(sock, ["log_get_flags"])) as Record<string, boolean>).iscsi, true);
    await rpcOk(sock, ["log_clear_flag", "iscsi"]);
    await rpcOk(sock, ["iscsi_create_auth_group", "3", "-c", "user:u1 secret:s1234567890ab"]);
    await rpcOk(sock, ["iscsi_auth_group_add_secret", "3", "-u", "u2", "-s", "s2234567890ab"]);
    const groups = JSON.parse(await rpcOk(sock, ["iscsi_get_auth_groups"])) as {
      tag: number;
      secrets: { user: string }[];
    }[];
    assert.deepEqual(
      groups.find((g) => g.tag === 3)?.secrets.map((x) => x.user),
      ["u1", "u2"],
    );
    await rpcOk(sock, ["iscsi_auth_group_remove_secret", "3", "-u", "u1"]);
    await rpcOk(sock, ["iscsi_delete_auth_group", "3"]);
    const stats = JSON.parse(await rpcOk(sock, ["iscsi_get_stats"])) as Record<string, number>;
    assert.equal(typeof stats.running, "number");
    const devs = JSON.parse(await rpcOk(sock, ["scsi_get_devices"])) as { device_name: string }[];
    assert.ok(devs.some((d) => d.device_name === `${IQN}:disk1`));
  });

  it("deleting a target node sends its sessions an Async Message; deleting a portal group closes it", async () => {
    const ini = await login(`${IQN}:disk2`);
    try {
      const deleted = rpcOk(sock, ["iscsi_delete_target_node", `${IQN}:disk2`]);
      const msg = await ini.recv(5000);
      assert.equal(msg.opcode, Opcode.AsyncMessage);
      assert.equal(pduAs(msg, Opcode.AsyncMessage).asyncEvent, 1, "AsyncEvent 1: logout requested");
      await deleted;
    } finally {
      ini.close();
    }
    // A private portal group: logins work through it, SendTargets never lists it (SPDK).
    await rpcOk(sock, ["iscsi_create_portal_group", "3", `127.0.0.1:${PORT3}`, "--private"]);
    await rpcOk(sock, ["iscsi_target_node_add_pg_ig_maps", `${IQN}:disk1`, "3:1"]);
    const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${PORT}`]);
    assert.match(ls.stdout, new RegExp(`127\\.0\\.0\\.1:${PORT},1`));
    assert.doesNotMatch(ls.stdout, new RegExp(`:${PORT3}`));
    (await login(`${IQN}:disk1`, PORT3)).close();
    await rpcOk(sock, ["iscsi_delete_portal_group", "3"]);
    await rpcOk(sock, ["iscsi_create_portal_group", "2", `127.0.0.1:${PORT2}`]);
    await rpcOk(sock, ["iscsi_target_node_add_pg_ig_maps", `${IQN}:disk1`, "2:1"]);
    const via2 = await login(`${IQN}:disk1`, PORT2);
    try {
      await rpcOk(sock, ["iscsi_delete_portal_group", "2"]);
      await via2.waitClosed();
    } finally {
      via2.close();
    }
    const refused = await RawInitiator.connect(PORT2).then(
      (c) => (c.close(), "connected"),
      () => "refused",
    );
    assert.equal(refused, "refused");
  });

  it("save_config, restart from that JSON, and save_config again agree; spdk_kill_instance exits 0", async () => {
    const saved = await rpcOk(sock, ["save_config"]);
    const file = join(dir, "saved.json");
    await writeFile(file, saved);
    await rpcOk(sock, ["spdk_kill_instance", "SIGTERM"]);
    assert.equal(await server.exited, 0);

    server = await serve(["-c", file, "--rpc-socket", sock], /^usertgt: ready$/m);
    assert.match(server.stderr(), new RegExp(`listening on 127\\.0\\.0\\.1:${PORT}`));
    assert.equal(await rpcOk(sock, ["save_config"]), saved);
    const inq = await run("iscsi-inq", [`iscsi://127.0.0.1:${PORT}/${IQN}:disk1/0`]);
    assert.equal(inq.code, 0, inq.stderr);

    // load_config onto a fresh --wait-for-rpc server builds the same again.
    await rpcOk(sock, ["spdk_kill_instance", "SIGINT"]);
    assert.equal(await server.exited, 0);
    server = await serve(["--wait-for-rpc", "--rpc-socket", sock], /waiting for framework_start_init/);
    await rpcOk(sock, ["load_config"], saved);
    await rpcOk(sock, ["framework_wait_init"]);
    assert.equal(await rpcOk(sock, ["save_config"]), saved);
    await rpcOk(sock, ["spdk_kill_instance", "SIGTERM"]);
    assert.equal(await server.exited, 0);
    assert.equal((await readFile(file, "utf8")).length > 0, true);
  });

  it("config convert: the legacy file and its JSON serve the same targets and LUNs", async () => {
    const conf = join(dir, "legacy.conf");
    await writeFile(
      conf,
      `[iSCSI]\n  NodeBase ${IQN}\n[Malloc]\n  NumberOfLuns 2\n  LunSizeInMB 4\n[PortalGroup1]\n  Portal A 127.0.0.1:${PORT}\n` +
        `[InitiatorGroup1]\n  InitiatorName ANY\n  Netmask 127.0.0.1/32\n[TargetNode1]\n  TargetName conv\n  Mapping PortalGroup1 InitiatorGroup1\n  LUN0 Malloc0\n  LUN1 Malloc1\n`,
    );
    const converted = await runCli(["config", "convert", conf]);
    assert.equal(converted.code, 0, converted.stderr);
    const json = join(dir, "legacy.json");
    await writeFile(json, converted.stdout);
    const dumps: unknown[] = [];
    for (const f of [conf, json]) {
      server = await serve(["-c", f, "--rpc-socket", sock], /^usertgt: ready$/m);
      const nodes = JSON.parse(await rpcOk(sock, ["iscsi_get_target_nodes"])) as {
        name: string;
        luns: unknown;
      }[];
      dumps.push(nodes.map((n) => [n.name, n.luns]));
      const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${PORT}`]);
      assert.match(ls.stdout, /conv/);
      await rpcOk(sock, ["spdk_kill_instance", "SIGTERM"]);
      assert.equal(await server.exited, 0);
    }
    assert.deepEqual(dumps[0], dumps[1]);
  });
  it("a JSON config with a bad call stops the start with exit 2 and the place of the call", async () => {
    const bad = join(dir, "bad.json");
    await writeFile(
      bad,
      JSON.stringify({
        subsystems: [
          {
            subsystem: "bdev",
            config: [{ method: "bdev_malloc_create", params: { name: "X", num_blocks: 8, block_size: 513 } }],
          },
        ],
      }),
    );
    const r = await runCli(["serve", "-c", bad, "--no-rpc", "--no-fuse"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /bad\.json: subsystems\[0\]\.config\[0\] \(bdev_malloc_create\): .*block_size.*\(code -22\)/,
    );
    const checked = await runCli(["check", "-c", bad]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stderr, /JSON config, 1 calls/);
  });
});
