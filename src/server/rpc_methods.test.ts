import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseSpdkConfig } from "../config/spdk_config.js";
import { RpcClient } from "../rpc/client.js";
import { RpcError, RpcErrorCode } from "../rpc/jsonrpc.js";
import { log } from "../util/log.js";
import { UsertgtServer } from "./server.js";

const quiet = log.child({ test: "rpc_methods" }, { level: "silent" });

type Obj = Record<string, unknown>;

describe("server RPC methods", () => {
  let dir: string;
  let server: UsertgtServer;
  let client: RpcClient;
  let sock: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "usertgt-rpcm-"));
    sock = join(dir, "usertgt.sock");
    const config = parseSpdkConfig(
      `[iSCSI]
  NodeBase iqn.2099-01.test
  MaxSessions 7
[Malloc]
  NumberOfLuns 1
  LunSizeInMB 2
  BlockSize 4096
[AIO]
  AIO disk.img AIO0 512 3
[PortalGroup1]
  Portal A 127.0.0.1:0
[InitiatorGroup2]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName unit
  TargetAlias "Unit Disk"
  Mapping PortalGroup1 InitiatorGroup2
  LUN0 Malloc0
  QueueDepth 16
`,
      join(dir, "test.conf"),
    );
    server = await UsertgtServer.start(config, { logger: quiet, rpcSocket: sock });
    client = await RpcClient.connect(sock);
  });

  after(async () => {
    client.close();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("rpc_get_methods lists every method; aliases only when asked", async () => {
    const names = (await client.call("rpc_get_methods")) as string[];
    for (const m of [
      "rpc_get_methods",
      "spdk_get_version",
      "bdev_get_bdevs",
      "iscsi_get_options",
      "iscsi_get_portal_groups",
      "iscsi_get_initiator_groups",
      "iscsi_get_target_nodes",
      "iscsi_get_connections",
      "framework_get_config",
    ]) {
      assert.ok(names.includes(m), m);
    }
    assert.ok(!names.includes("usertgt_get_version"));
    const all = (await client.call("rpc_get_methods", { include_aliases: true })) as string[];
    assert.ok(all.includes("usertgt_get_version"));
    await assert.rejects(
      client.call("rpc_get_methods", { include_aliases: "yes" }),
      (e: RpcError) => e.code === RpcErrorCode.InvalidParams,
    );
  });

  it("spdk_get_version and its alias report the package version", async () => {
    const pkg = createRequire(import.meta.url)("../../../package.json") as { version: string };
    const v = (await client.call("spdk_get_version")) as { version: string; fields: Obj };
    assert.equal(v.version, `usertgt v${pkg.version}`);
    assert.equal(`${v.fields.major}.${v.fields.minor}.${v.fields.patch}${v.fields.suffix}`, pkg.version);
    assert.deepEqual(await client.call("usertgt_get_version"), v);
  });

  it("bdev_get_bdevs: both devices with SPDK's fields; a name filter; -19 for an unknown name", async () => {
    const all = (await client.call("bdev_get_bdevs")) as Obj[];
    assert.deepEqual(
      all.map((b) => [b.name, b.block_size, b.num_blocks, b.claimed]),
      [
        ["Malloc0", 4096, 512, true],
        ["AIO0", 512, 3 * 2048, false],
      ],
    );
    const [aio] = (await client.call("bdev_get_bdevs", { name: "AIO0" })) as Obj[];
    assert.equal(typeof aio!.uuid, "string");
    assert.match(aio!.uuid as string, /^[0-9a-f-]{36}$/);
    assert.equal(typeof aio!.product_name, "string");
    assert.equal((aio!.supported_io_types as Obj).read, true);
    await assert.rejects(
      client.call("bdev_get_bdevs", { name: "nope" }),
      (e: RpcError) => e.code === -19 && /nope/.test(e.message),
    );
  });

  it("iscsi_get_target_nodes, portal and initiator groups, options reflect the config", async () => {
    const [node] = (await client.call("iscsi_get_target_nodes")) as Obj[];
    assert.equal(node!.name, "iqn.2099-01.test:unit");
    assert.equal(node!.alias_name, "Unit Disk");
    assert.equal(node!.queue_depth, 16);
    assert.deepEqual(node!.pg_ig_maps, [{ pg_tag: 1, ig_tag: 2 }]);
    assert.deepEqual(node!.luns, [{ bdev_name: "Malloc0", lun_id: 0 }]);

    const pgs = (await client.call("iscsi_get_portal_groups")) as Obj[];
    const port = server.addresses()[0]!.port;
    assert.notEqual(port, 0);
    assert.deepEqual(pgs, [{ tag: 1, portals: [{ host: "127.0.0.1", port: String(port) }], private: false }]);

    assert.deepEqual(await client.call("iscsi_get_initiator_groups"), [
      { tag: 2, initiators: ["ANY"], netmasks: ["127.0.0.1/32"] },
    ]);
    const opts = (await client.call("iscsi_get_options")) as Obj;
    assert.equal(opts.node_base, "iqn.2099-01.test");
    assert.equal(opts.max_sessions, 7);
    assert.equal(opts.first_burst_length, 8192);
  });

  it("framework_get_config dumps the bdev and iscsi subsystems as create calls", async () => {
    const subs = (await client.call("framework_get_subsystems")) as Obj[];
    assert.deepEqual(
      subs.map((x) => x.subsystem),
      ["bdev", "iscsi"],
    );
    const bdev = (await client.call("framework_get_config", { name: "bdev" })) as Obj[];
    assert.deepEqual(
      bdev.map((c) => c.method),
      ["bdev_malloc_create", "bdev_aio_create"],
    );
    const malloc = bdev[0]!.params as Obj;
    assert.equal(malloc.num_blocks, 512);
    const [dev] = (await client.call("bdev_get_bdevs", { name: "Malloc0" })) as Obj[];
    assert.equal(malloc.uuid, dev!.uuid);
    assert.equal((bdev[1]!.params as Obj).filename, join(dir, "disk.img"));

    const iscsi = (await client.call("framework_get_config", { name: "iscsi" })) as Obj[];
    assert.deepEqual(
      iscsi.map((c) => c.method),
      [
        "iscsi_set_options",
        "iscsi_create_portal_group",
        "iscsi_create_initiator_group",
        "iscsi_create_target_node",
      ],
    );
    assert.equal((iscsi[3]!.params as Obj).name, "iqn.2099-01.test:unit");
    await assert.rejects(
      client.call("framework_get_config", { name: "nvmf" }),
      (e: RpcError) => e.code === RpcErrorCode.InvalidParams && /no subsystem "nvmf"/.test(e.message),
    );
  });

  it("iscsi_get_connections shows a TCP connection still logging in, and forgets it when closed", async () => {
    const port = server.addresses()[0]!.port;
    assert.deepEqual(await client.call("iscsi_get_connections"), []);
    const s: Socket = connect(port, "127.0.0.1");
    await new Promise<void>((res) => s.once("connect", () => res()));
    let conns: Obj[] = [];
    for (let i = 0; i < 50 && conns.length === 0; i++) {
      conns = (await client.call("iscsi_get_connections")) as Obj[];
      if (conns.length === 0) await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(conns.length, 1);
    assert.equal(conns[0]!.state, "login");
    assert.equal(conns[0]!.initiator_port, s.localPort);
    assert.equal(conns[0]!.target_port, port);
    assert.equal(conns[0]!.pg_tag, 1);
    s.destroy();
    for (let i = 0; i < 50 && conns.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
      conns = (await client.call("iscsi_get_connections")) as Obj[];
    }
    assert.deepEqual(conns, []);
  });

  it("a second server on the same socket fails to start; a non-required socket is skipped", async () => {
    const config = parseSpdkConfig(`[PortalGroup1]\n  Portal A 127.0.0.1:0\n`, join(dir, "second.conf"));
    await assert.rejects(
      UsertgtServer.start(config, { logger: quiet, rpcSocket: sock }),
      /another server is listening/,
    );
    const second = await UsertgtServer.start(config, {
      logger: quiet,
      rpcSocket: sock,
      rpcSocketRequired: false,
    });
    assert.equal(second.rpcSocketPath(), undefined);
    await second.stop();
    // The first server's socket survived both attempts.
    assert.ok((await stat(sock)).isSocket());
    assert.deepEqual(await client.call("iscsi_get_initiator_groups"), [
      { tag: 2, initiators: ["ANY"], netmasks: ["127.0.0.1/32"] },
    ]);
  });
});
