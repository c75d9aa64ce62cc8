/**
 * The control plane end to end: `usertgt serve --rpc-socket` in one process, `usertgt rpc` (the real
 * CLI) in others, and a raw socket feeding it garbage. The socket file must be gone after SIGTERM.
 */
import assert from "node:assert/strict";
import { lstat } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { spawn } from "node:child_process";
import { cleanup, makeTempDir, runCli, startServer, stopCleanly, type RunningServer } from "./harness.js";

type Obj = Record<string, unknown>;

describe("usertgt rpc against usertgt serve --rpc-socket", () => {
  let dir: string;
  let sock: string;
  let server: RunningServer;

  before(async () => {
    dir = await makeTempDir("rpc");
    sock = join(dir, "ctl.sock");
    server = await startServer(
      (ports) => `[Malloc]
  NumberOfLuns 2
  LunSizeInMB 4
  BlockSize 4096
[PortalGroup1]
  Portal A 127.0.0.1:${ports[0]}
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName rpcdisk
  Mapping PortalGroup1 InitiatorGroup1
  LUN0 Malloc1
`,
      { dir, args: ["--no-fuse", "--rpc-socket", sock] },
    );
    assert.match(server.stderr(), new RegExp(`^usertgt: rpc on ${sock.replace(/[.]/g, "\\.")}$`, "m"));
  });

  after(async () => {
    if (server.child.exitCode === null) await server.stop();
    await cleanup(dir);
  });

  it("prints results as JSON: rpc_get_methods, bdev_get_bdevs with --key value and with a JSON object", async () => {
    const methods = await runCli(["rpc", "-s", sock, "rpc_get_methods"]);
    assert.equal(methods.code, 0, methods.stderr);
    assert.ok((JSON.parse(methods.stdout) as string[]).includes("iscsi_get_connections"));

    const byFlag = await runCli(["rpc", "-s", sock, "bdev_get_bdevs", "--name", "Malloc1"]);
    assert.equal(byFlag.code, 0, byFlag.stderr);
    const [dev] = JSON.parse(byFlag.stdout) as Obj[];
    assert.equal(dev!.name, "Malloc1");
    assert.equal(dev!.block_size, 4096);
    assert.equal(dev!.num_blocks, 1024);
    assert.equal(dev!.claimed, true);

    const byJson = await runCli(["rpc", "-s", sock, "bdev_get_bdevs", '{"name":"Malloc0"}']);
    assert.equal(byJson.code, 0, byJson.stderr);
    assert.equal((JSON.parse(byJson.stdout) as Obj[])[0]!.claimed, false);

    const nodes = await runCli(["rpc", "-s", sock, "iscsi_get_target_nodes"]);
    assert.equal((JSON.parse(nodes.stdout) as Obj[])[0]!.name, "iqn.2016-06.io.spdk:rpcdisk");
    const pgs = await runCli(["rpc", "-s", sock, "iscsi_get_portal_groups"]);
    assert.deepEqual((JSON.parse(pgs.stdout) as Obj[])[0]!.portals, [
      { host: "127.0.0.1", port: String(server.ports[0]) },
    ]);
  });

  it("exits non-zero with the server's message on an error response or bad usage", async () => {
    const unknown = await runCli(["rpc", "-s", sock, "no_such_method"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /Method not found: no_such_method \(code -32601\)/);
    const badParam = await runCli(["rpc", "-s", sock, "bdev_get_bdevs", "--name", "5"]);
    assert.equal(badParam.code, 1);
    assert.match(badParam.stderr, /"name" must be a string, got integer \(code -32602\)/);
    const noDev = await runCli(["rpc", "-s", sock, "bdev_get_bdevs", "--name", "Nope"]);
    assert.equal(noDev.code, 1);
    assert.match(noDev.stderr, /Nope.*\(code -19\)/);
    const badJson = await runCli(["rpc", "-s", sock, "bdev_get_bdevs", "{name"]);
    assert.equal(badJson.code, 2);
    assert.match(badJson.stderr, /not JSON/);
    const noServer = await runCli(["rpc", "-s", join(dir, "nobody.sock"), "rpc_get_methods"]);
    assert.equal(noServer.code, 1);
    assert.match(noServer.stderr, /nobody\.sock/);
  });

  it("survives garbage and an oversized request on the socket", async () => {
    const answers = await new Promise<string>((resolve, reject) => {
      const s = connect(sock);
      let got = "";
      s.on("data", (d: Buffer) => {
        got += d.toString();
        if (got.split("\n").length > 2) s.end();
      });
      s.on("close", () => resolve(got));
      s.on("error", reject);
      s.write('\u0000\u00ffnot json\n{"jsonrpc":"2.0","method":"spdk_get_version","id":1}');
    });
    const [garbage, version] = answers
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Obj);
    assert.equal((garbage!.error as Obj).code, -32700);
    assert.match(((version!.result as Obj).version as string) ?? "", /^usertgt v/);

    const closed = await new Promise<boolean>((resolve) => {
      const s = connect(sock);
      s.on("close", () => resolve(true));
      s.on("error", () => undefined);
      s.on("data", () => undefined);
      s.write('{"jsonrpc":"2.0","method":"x","params":{"p":"' + "A".repeat(1_100_000));
    });
    assert.equal(closed, true);

    const still = await runCli(["rpc", "-s", sock, "spdk_get_version"]);
    assert.equal(still.code, 0, still.stderr);
  });

  it("iscsi_get_connections shows a live iSCSI session from libiscsi's iscsi-perf", async () => {
    const initiator = "iqn.2099-01.test:rpc-e2e";
    const target = "iqn.2016-06.io.spdk:rpcdisk";
    // iscsi-perf keeps its session in full feature phase until killed.
    const perf = spawn(
      "iscsi-perf",
      ["-i", initiator, "-t", "30", `iscsi://127.0.0.1:${server.ports[0]}/${target}/0`],
      {
        stdio: "ignore",
      },
    );
    try {
      let conns: Obj[] = [];
      for (let i = 0; i < 100; i++) {
        const out = await runCli(["rpc", "-s", sock, "iscsi_get_connections"]);
        assert.equal(out.code, 0, out.stderr);
        conns = (JSON.parse(out.stdout) as Obj[]).filter((c) => c.state === "full-feature");
        if (conns.length > 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(conns.length, 1, "one full-feature connection");
      const c = conns[0]!;
      assert.equal(c.initiator_node_name, initiator);
      assert.equal(c.target_node_name, target);
      assert.equal(c.session_type, "normal");
      assert.equal(c.target_port, server.ports[0]);
      assert.notEqual(c.tsih, 0);
    } finally {
      perf.kill("SIGKILL");
      await new Promise((r) => perf.once("close", r));
    }
  });

  it("removes the socket file on SIGTERM", async () => {
    assert.ok((await lstat(sock)).isSocket());
    await stopCleanly(server);
    await assert.rejects(lstat(sock), { code: "ENOENT" });
  });
});
