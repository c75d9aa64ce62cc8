/**
 * The seed's legacy config (moved to 127.0.0.1 and a temp dir, DRBD wired for LUN5) and its
 * `usertgt config convert` JSON serve the same targets and LUNs: the same target nodes, block
 * devices (names, sizes), and libiscsi's iscsi-ls sees LUN0-5 on both. Port 3472, DRBD 7950.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, makeTempDir, run, runCli, startServer, stopCleanly } from "./harness.js";
import { SEED_FIXTURE as SEED, localSeedWithDevices } from "./seed_fixture.js";

const PORT = 3472;
const RES = `resource r2 {
    on seedhost {
        address 127.0.0.1:7950;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/ram_b"; meta-disk internal; }
    }
}
`;

describe("config convert of the seed config", () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir("seedconv");
    await writeFile(join(dir, "seed.res"), RES);
  });
  after(async () => {
    await cleanup(dir);
  });

  it("the legacy file and its JSON serve the same targets, LUNs and block devices", async () => {
    const seed = await readFile(SEED, "utf8");
    const legacy = localSeedWithDevices(seed, PORT, dir).text;
    const legacyFile = join(dir, "seed.conf");
    await writeFile(legacyFile, legacy);
    const converted = await runCli(["config", "convert", legacyFile]);
    assert.equal(converted.code, 0, converted.stderr);
    const json = JSON.parse(converted.stdout) as {
      subsystems: { subsystem: string; config: { method: string }[] }[];
    };
    const methods = json.subsystems.flatMap((s) => s.config.map((c) => c.method));
    for (const m of [
      "bdev_malloc_create",
      "bdev_aio_create",
      "bdev_tcmur_create",
      "bdev_bio_create",
      "iscsi_create_target_node",
    ])
      assert.ok(methods.includes(m), `${m} in the converted config`);

    const seen: { nodes: unknown; bdevs: unknown; luns: string }[] = [];
    // The harness writes each text as the config file; serve tells INI from JSON by content.
    for (const text of [legacy, converted.stdout]) {
      const sock = join(dir, "ctl.sock");
      const server = await startServer(() => text, {
        dir,
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
      try {
        const nodes = await runCli(["rpc", "-s", sock, "iscsi_get_target_nodes"]);
        const bdevs = await runCli(["rpc", "-s", sock, "bdev_get_bdevs"]);
        const ls = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${PORT}`]);
        assert.equal(ls.code, 0, ls.stderr);
        for (const lun of [0, 1, 2, 3, 4, 5])
          assert.match(ls.stdout, new RegExp(`Lun:${lun}\\s+Type:DIRECT_ACCESS`));
        seen.push({
          nodes: JSON.parse(nodes.stdout),
          bdevs: (JSON.parse(bdevs.stdout) as Record<string, unknown>[]).map((b) => [
            b.name,
            b.block_size,
            b.num_blocks,
          ]),
          luns: ls.stdout.replace(/\s+/g, " "),
        });
        if (text !== legacy) {
          // Tree devices change live too: bio0 (LUN4) deleted and made again, its claim released and
          // taken again; ram_b stays while DRBD holds it.
          const rpc = (...a: string[]) => runCli(["rpc", "-s", sock, ...a]);
          assert.equal((await rpc("bdev_bio_delete", "--name", "bio0")).code, 0);
          const held = await rpc("bdev_tcmur_delete", "--name", "ram_b");
          assert.match(held.stderr, /held by .*\(code -16\)/);
          const again = await rpc("bdev_bio_create", '{"name":"bio0","path":"/UMCfuse/dev/file_b"}');
          assert.equal(again.code, 0, again.stderr);
          const add = await rpc(
            "iscsi_target_node_add_lun",
            '{"name":"iqn.2016-06.io.spdk:disk1","bdev_name":"bio0","lun_id":4}',
          );
          assert.equal(add.code, 0, add.stderr);
          const ls2 = await run("iscsi-ls", ["-s", `iscsi://127.0.0.1:${PORT}`]);
          assert.match(ls2.stdout, /Lun:4\s+Type:DIRECT_ACCESS/);
        }
      } finally {
        await stopCleanly(server);
      }
    }
    assert.deepEqual(seen[1], seen[0]);
  });
});
