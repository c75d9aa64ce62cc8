import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { MallocBdev } from "../malloc/malloc.js";
import { DeviceTree } from "../../devtree/device_tree.js";
import { BioBdev } from "./bio.js";

test("BIO: a bdev over a tree device shares its bytes and holds the write claim", async () => {
  const tree = new DeviceTree();
  const lower = new MallocBdev({ name: "file_b", blockSize: 4096, blockCount: 16 });
  tree.add("file_b", lower, "tcmur");
  const bio = await BioBdev.open(tree, { name: "bio0", path: "/UMCfuse/dev/file_b" });
  assert.equal(bio.blockCount, 16);
  assert.equal(bio.productName, "BIO disk");
  const data = randomBytes(8192);
  await bio.writev(3, [data]);
  const back = Buffer.alloc(8192);
  await lower.readv(3, [back]);
  assert.deepEqual(back, data);
  await assert.rejects(
    BioBdev.open(tree, { name: "bio9", path: "/UMCfuse/dev/file_b" }),
    /busy.*held by BIO bio0/,
  );
  await bio.close();
  await assert.rejects(bio.readv(0, [Buffer.alloc(4096)]), /closed/);
  const again = await BioBdev.open(tree, { name: "bio9", path: "/UMCfuse/dev/file_b" });
  await again.close();
  await assert.rejects(BioBdev.open(tree, { name: "b", path: "/UMCfuse/dev/none" }), /no such device/);
  await assert.rejects(BioBdev.open(tree, { name: "b", path: "/dev/sda" }), /must be under \/UMCfuse\/dev\//);
});

test("BIO: the helper runs with its argv before the device is opened; failures carry stderr", async () => {
  const dir = await mkdtemp(join(tmpdir(), "bio-helper-"));
  try {
    const tree = new DeviceTree();
    const out = join(dir, "argv.txt");
    const script = join(dir, "up_helper");
    await writeFile(script, `#!/bin/sh\nprintf '%s|' "$@" > ${out}\n`);
    await chmod(script, 0o755);
    tree.add("ram_b", new MallocBdev({ name: "ram_b", blockSize: 512, blockCount: 8 }), "tcmur");
    const bio = await BioBdev.open(tree, {
      name: "bio1",
      path: "/UMCfuse/dev/ram_b",
      helper: [script, "spdk", "/UMCfuse/dev/ram b"],
    });
    assert.equal(await readFile(out, "utf8"), "spdk|/UMCfuse/dev/ram b|");
    await bio.close();

    const failing = join(dir, "fails");
    await writeFile(failing, `#!/bin/sh\necho "resource spdk: no such resource" >&2\nexit 3\n`);
    await chmod(failing, 0o755);
    await assert.rejects(
      BioBdev.open(tree, { name: "bio1", path: "/UMCfuse/dev/ram_b", helper: [failing, "spdk"] }),
      /BIO bio1 .*exited with status 3: resource spdk: no such resource/,
    );
    await assert.rejects(
      BioBdev.open(tree, { name: "bio1", path: "/UMCfuse/dev/ram_b", helper: ["no_such_helper_xyz"] }),
      /helper "no_such_helper_xyz" not found/,
    );
    // An in-process helper (as DRBD registers drbdadm_up_primary) can create the node it names.
    const helpers = new Map([
      [
        "drbdadm_up_primary",
        async (args: readonly string[]) => {
          tree.add("drbd2", new MallocBdev({ name: "drbd2", blockSize: 512, blockCount: 8 }), "drbd");
          assert.deepEqual(args, ["spdk", "/UMCfuse/dev/ram_b"]);
        },
      ],
    ]);
    const b2 = await BioBdev.open(
      tree,
      {
        name: "bio1",
        path: "/UMCfuse/dev/drbd2",
        helper: ["drbdadm_up_primary", "spdk", "/UMCfuse/dev/ram_b"],
      },
      { helpers },
    );
    await b2.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
