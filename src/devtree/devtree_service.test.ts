import { test } from "node:test";
import assert from "node:assert/strict";
import { accessSync, constants } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { log } from "../util/log.js";
import { DeviceBusyError } from "./device_tree.js";
import { DevtreeService } from "./devtree_service.js";

const quiet = log.child({ test: "devtree" });
quiet.level = "warn";

function fuseUsable(): boolean {
  try {
    accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

test("devtree service: the reference config's TCMUR and BIO lines, LUN claims, close leaves the tree", async () => {
  const dir = await mkdtemp(join(tmpdir(), "devtree-svc-"));
  try {
    const svc = await DevtreeService.create({ mountPoint: false, logger: quiet });
    const ramA = await svc.openTcmur({
      minor: 0,
      name: "ram_a",
      cfgString: "/ram/tmp/tcmur_ram00",
      extra: ["size=16M"],
    });
    const fileA = await svc.openTcmur({
      minor: 1,
      name: "file_a",
      cfgString: `/file/${dir}/tcmur_file00?size=8M`,
    });
    const fileB = await svc.openTcmur({
      minor: 2,
      name: "file_b",
      cfgString: `/file/${dir}/tcmur_file01?size=8M`,
    });
    assert.deepEqual(
      svc.tree.list().map((n) => n.path),
      ["/UMCfuse/dev/ram_a", "/UMCfuse/dev/file_a", "/UMCfuse/dev/file_b"],
    );
    assert.equal((await stat(join(dir, "tcmur_file01"))).size, 8 * 1024 * 1024);
    await assert.rejects(
      svc.openTcmur({ minor: 3, name: "ram_a", cfgString: "/ram/again?size=1M" }),
      /"ram_a" already exists/,
    );

    const bio0 = await svc.openBio({ name: "bio0", path: "/UMCfuse/dev/file_b", helper: [] });
    assert.equal(bio0.blockCount, fileB.blockCount);
    assert.ok(svc.claimForLun(ramA, "LUN2 of iqn.2016-06.io.spdk:disk1"));
    assert.ok(svc.claimForLun("file_a", "LUN3 of iqn.2016-06.io.spdk:disk1"));
    assert.equal(svc.claimForLun("Malloc0", "LUN0"), undefined);
    // A LUN on file_b too would be a second writer beside bio0.
    assert.throws(() => svc.claimForLun("file_b", "LUN6"), DeviceBusyError);

    let ran: readonly string[] = [];
    svc.registerHelper("drbdadm_up_primary", async (args) => {
      ran = args;
      const drbd = await svc.openTcmur({ minor: 9, name: "drbd2", cfgString: "/ram/drbd?size=4M" });
      void drbd;
    });
    const bio1 = await svc.openBio({
      name: "bio1",
      path: "/UMCfuse/dev/drbd2",
      helper: ["drbdadm_up_primary", "spdk", "/UMCfuse/dev/ram_b"],
    });
    assert.deepEqual(ran, ["spdk", "/UMCfuse/dev/ram_b"]);

    // Shutdown order of the server: bdevs in reverse creation order, then stop().
    await bio1.close();
    await bio0.close();
    await fileB.close();
    await fileA.close();
    await ramA.close();
    await svc.stop();
    assert.deepEqual(
      svc.tree.list().map((n) => n.name),
      ["drbd2"],
    );
    await svc.tree.get("drbd2")?.device.close();
    assert.equal(svc.tree.list().length, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test(
  "devtree service: mount() shows the devices, stop() unmounts",
  { skip: fuseUsable() ? false : "needs FUSE" },
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "devtree-svc-"));
    try {
      const mnt = join(dir, "UMCfuse");
      const svc = await DevtreeService.create({ mountPoint: mnt, logger: quiet });
      const ram = await svc.openTcmur({ minor: 0, name: "ram_a", cfgString: "/ram/x?size=4M&bs=512" });
      assert.ok(await svc.mount());
      assert.deepEqual(await readdir(join(mnt, "dev")), ["ram_a"]);
      await ram.close();
      assert.deepEqual(await readdir(join(mnt, "dev")), []);
      await svc.stop();
      assert.deepEqual(await readdir(mnt), []); // the bare mount point again
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);
