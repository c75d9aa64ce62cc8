/**
 * The control plane's write path without a socket: the server's method table called directly on a
 * --wait-for-rpc server (startup/runtime states), all-or-nothing creates, reference clean-up on
 * deletes, and the JSON config reader's errors. Portals bind to 127.0.0.1:0.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { ConfigError } from "../config/errors.js";
import { RpcError } from "../rpc/jsonrpc.js";
import { log } from "../util/log.js";
import { applyJsonConfig, looksLikeJsonConfig, parseJsonConfig } from "./json_config.js";
import { UsertgtServer } from "./server.js";

const quiet = log.child({ test: "graph_control" }, { level: "silent" });

async function code(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RpcError, String(err));
    return err.code;
  }
  assert.fail("expected an RPC error");
}

describe("ServerGraph through the method table", () => {
  let server: UsertgtServer;
  const call = (m: string, p: Record<string, unknown> = {}): Promise<unknown> =>
    server.methods.call(m, p as never);

  before(async () => {
    server = await UsertgtServer.startWaitingForRpc({ logger: quiet });
  });
  after(async () => {
    await server.stop();
  });

  it("startup allows only startup methods; framework_start_init opens the rest", async () => {
    assert.equal(await code(call("bdev_malloc_create", { num_blocks: 8, block_size: 512 })), -1);
    const now = (await call("rpc_get_methods", { current: true })) as string[];
    assert.ok(now.includes("iscsi_set_options") && !now.includes("iscsi_create_target_node"));
    await call("iscsi_set_options", { node_base: "iqn.2099-01.unit", max_queue_depth: 16 });
    assert.equal(await code(call("iscsi_set_options", { max_sessions: 0 })), -32602);
    await call("framework_start_init");
    assert.equal(await call("framework_wait_init"), true);
    assert.equal(await code(call("iscsi_set_options", { max_sessions: 2 })), -1);
    assert.equal(await code(call("framework_start_init")), -1);
  });

  it("a failed iscsi_create_target_node leaves no target; names get the node base", async () => {
    assert.equal(await call("bdev_malloc_create", { num_blocks: 16, block_size: 512 }), "Malloc0");
    await call("iscsi_create_portal_group", { tag: 1, portals: [{ host: "127.0.0.1", port: "0" }] });
    await call("iscsi_create_initiator_group", { tag: 1, initiators: ["ANY"], netmasks: ["127.0.0.1/32"] });
    const base = { pg_ig_maps: [{ pg_tag: 1, ig_tag: 1 }], queue_depth: 8 };
    for (const bad of [
      {
        name: "t",
        luns: [
          { bdev_name: "Malloc0", lun_id: 0 },
          { bdev_name: "Nope", lun_id: 1 },
        ],
      },
      {
        name: "t",
        luns: [
          { bdev_name: "Malloc0", lun_id: 0 },
          { bdev_name: "Malloc0", lun_id: 0 },
        ],
      },
      { name: "t", luns: [{ bdev_name: "Malloc0", lun_id: 0 }], queue_depth: 17 },
      { name: "t", luns: [{ bdev_name: "Malloc0", lun_id: 0 }], pg_ig_maps: [{ pg_tag: 9, ig_tag: 1 }] },
      { name: "t", luns: [{ bdev_name: "Malloc0", lun_id: 0 }], require_chap: true, disable_chap: true },
      { name: "bad name", luns: [{ bdev_name: "Malloc0", lun_id: 0 }] },
    ]) {
      assert.equal(
        await code(call("iscsi_create_target_node", { ...base, ...bad })),
        -32602,
        JSON.stringify(bad),
      );
    }
    assert.deepEqual(await call("iscsi_get_target_nodes"), []);
    assert.deepEqual(server.graph.scsiDevices(), []);
    await call("iscsi_create_target_node", {
      ...base,
      name: "t",
      luns: [{ bdev_name: "Malloc0", lun_id: 0 }],
    });
    const nodes = (await call("iscsi_get_target_nodes")) as { name: string }[];
    assert.deepEqual(
      nodes.map((n) => n.name),
      ["iqn.2099-01.unit:t"],
    );
    assert.equal(await code(call("iscsi_create_target_node", { ...base, name: "t", luns: [] })), -32602);
  });

  it("a portal that cannot be bound leaves no portal group", async () => {
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      const portals = [
        { host: "127.0.0.1", port: 0 },
        { host: "127.0.0.1", port: String(port) },
      ];
      assert.equal(await code(call("iscsi_create_portal_group", { tag: 5, portals })), -32602);
      const pgs = (await call("iscsi_get_portal_groups")) as { tag: number }[];
      assert.deepEqual(
        pgs.map((p) => p.tag),
        [1],
      );
      assert.ok(!server.addresses().some((a) => a.portalGroup === 5));
    } finally {
      busy.close();
    }
  });

  it("write methods run one at a time: concurrent add_lun calls get different LUN IDs", async () => {
    for (const name of ["C1", "C2", "C3"])
      await call("bdev_malloc_create", { name, num_blocks: 8, block_size: 512 });
    await Promise.all(
      ["C1", "C2", "C3"].map((b) => call("iscsi_target_node_add_lun", { name: "t", bdev_name: b })),
    );
    const [node] = (await call("iscsi_get_target_nodes")) as { luns: { lun_id: number }[] }[];
    assert.deepEqual(node!.luns.map((l) => l.lun_id).sort(), [0, 1, 2, 3]);
  });

  it("deleting groups removes the mappings that name them; bdev errors carry SPDK's errno", async () => {
    await call("iscsi_create_initiator_group", { tag: 2, initiators: ["ANY"], netmasks: ["ANY"] });
    await call("iscsi_target_node_add_pg_ig_maps", { name: "t", pg_ig_maps: [{ pg_tag: 1, ig_tag: 2 }] });
    assert.equal(
      await code(
        call("iscsi_target_node_add_pg_ig_maps", { name: "t", pg_ig_maps: [{ pg_tag: 1, ig_tag: 2 }] }),
      ),
      -32602,
    );
    await call("iscsi_delete_initiator_group", { tag: 2 });
    const [node] = (await call("iscsi_get_target_nodes")) as { pg_ig_maps: unknown[] }[];
    assert.deepEqual(node!.pg_ig_maps, [{ pg_tag: 1, ig_tag: 1 }]);
    assert.equal(
      await code(call("bdev_malloc_create", { name: "Malloc0", num_blocks: 8, block_size: 512 })),
      -17,
    );
    assert.equal(await code(call("bdev_malloc_create", { num_blocks: 8, block_size: 500 })), -22);
    assert.equal(await code(call("bdev_aio_delete", { name: "Malloc0" })), -19);
    assert.equal(await code(call("bdev_aio_rescan", { name: "Malloc0" })), -19);
    await call("bdev_malloc_delete", { name: "Malloc0" });
    const [after] = (await call("iscsi_get_target_nodes")) as { luns: { bdev_name: string }[] }[];
    assert.ok(!after!.luns.some((l) => l.bdev_name === "Malloc0"), "the LUN went with its bdev");
  });
});

describe("LUN hooks follow the LUNs", () => {
  it("a failed create undoes its claims; hot removal and target deletion release them", async () => {
    const events: string[] = [];
    const server = await UsertgtServer.startWaitingForRpc({
      logger: quiet,
      hooks: {
        lunMapped: ({ targetName, id, bdev }) => {
          if (bdev.name === "Held") throw new Error("held by someone else");
          events.push(`map ${targetName}/${id}`);
        },
        lunUnmapped: ({ targetName, id }) => events.push(`unmap ${targetName}/${id}`),
      },
    });
    const call = (m: string, p: Record<string, unknown> = {}): Promise<unknown> =>
      server.methods.call(m, p as never);
    try {
      await call("framework_start_init");
      for (const name of ["A", "B", "Held"])
        await call("bdev_malloc_create", { name, num_blocks: 8, block_size: 512 });
      await call("iscsi_create_portal_group", { tag: 1, portals: [{ host: "127.0.0.1", port: "0" }] });
      await call("iscsi_create_initiator_group", { tag: 1, initiators: ["ANY"], netmasks: ["ANY"] });
      const node = { name: "iqn.2099-01.unit:h", pg_ig_maps: [{ pg_tag: 1, ig_tag: 1 }], queue_depth: 8 };
      const luns = [
        { bdev_name: "A", lun_id: 0 },
        { bdev_name: "Held", lun_id: 1 },
      ];
      assert.equal(await code(call("iscsi_create_target_node", { ...node, luns })), -32602);
      assert.deepEqual(events.splice(0), ["map iqn.2099-01.unit:h/0", "unmap iqn.2099-01.unit:h/0"]);
      await call("iscsi_create_target_node", { ...node, luns: [luns[0], { bdev_name: "B", lun_id: 1 }] });
      await call("bdev_malloc_delete", { name: "B" });
      await call("iscsi_delete_target_node", { name: node.name });
      assert.deepEqual(events.splice(0), [
        "map iqn.2099-01.unit:h/0",
        "map iqn.2099-01.unit:h/1",
        "unmap iqn.2099-01.unit:h/1",
        "unmap iqn.2099-01.unit:h/0",
      ]);
    } finally {
      await server.stop();
    }
  });
});

describe("JSON config reader", () => {
  it("tells JSON from INI by content and names the place of a bad call", async () => {
    assert.equal(looksLikeJsonConfig('  {"subsystems": []}'), true);
    assert.equal(looksLikeJsonConfig("[Malloc]\n"), false);
    assert.throws(
      () => parseJsonConfig("x.json", "{nope"),
      (e: Error) => e instanceof ConfigError && /not valid JSON/.test(e.message),
    );
    assert.throws(() => parseJsonConfig("x.json", "{}"), /"subsystems" array/);
    assert.throws(
      () => parseJsonConfig("x.json", '{"subsystems":[{"subsystem":"bdev","config":[{"params":{}}]}]}'),
      /subsystems\[0\]\.config\[0\]: expected/,
    );
    const server = await UsertgtServer.startWaitingForRpc({ logger: quiet });
    try {
      const json = parseJsonConfig(
        "x.json",
        JSON.stringify({
          subsystems: [
            {
              subsystem: "bdev",
              config: [
                { method: "bdev_malloc_create", params: { name: "M", num_blocks: 8, block_size: 512 } },
                [{ method: "bdev_malloc_create", params: { name: "M", num_blocks: 8, block_size: 512 } }],
              ],
            },
          ],
        }),
      );
      await assert.rejects(
        applyJsonConfig("x.json", json, server.methods),
        /x\.json: subsystems\[0\]\.config\[1\]\[0\] \(bdev_malloc_create\): .*already exists.*\(code -17\)/,
      );
      const unknown = parseJsonConfig(
        "y.json",
        '{"subsystems":[{"subsystem":"x","config":[{"method":"nope"}]}]}',
      );
      await assert.rejects(applyJsonConfig("y.json", unknown, server.methods), /unknown method nope/);
    } finally {
      await server.stop();
    }
  });
});
