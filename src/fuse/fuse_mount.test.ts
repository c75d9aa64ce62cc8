/**
 * Tests on a real FUSE mount in a temp directory (needs root and /dev/fuse; skipped otherwise).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdir, mkdtemp, open, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { DeviceTree } from "../devtree/device_tree.js";
import { TcmurHandlerRegistry } from "../tcmur/handler_registry.js";
import { createTcmurDevice } from "../bdev/tcmur/tcmur.js";
import { BioBdev } from "../bdev/bio/bio.js";
import { MallocBdev } from "../bdev/malloc/malloc.js";
import type { BlockDevice } from "../bdev/bdev.js";
import { log } from "../util/log.js";
import { mountDeviceTree, type FuseMount } from "./mount.js";

const exec = promisify(execFile);
const quiet = log.child({ test: "fuse" });
quiet.level = "warn";

function fuseUsable(): boolean {
  try {
    accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}
const skip = fuseUsable() ? false : "needs root and /dev/fuse";
const handlers = new TcmurHandlerRegistry();

async function withMount(
  fn: (ctx: { dir: string; mnt: string; tree: DeviceTree; mount: FuseMount }) => Promise<void>,
  setup?: (tree: DeviceTree, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "usertgt-fuse-"));
  const tree = new DeviceTree();
  let mount: FuseMount | undefined;
  try {
    if (setup) await setup(tree, dir);
    mount = await mountDeviceTree(tree, join(dir, "mnt"), { logger: quiet });
    assert.ok(mount, "FUSE mount failed");
    await fn({ dir, mnt: join(dir, "mnt"), tree, mount });
  } finally {
    await mount?.unmount();
    for (const n of tree.list()) await n.device.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test(
  "FUSE: dev/<name> are regular files of the device size; devices added later appear",
  { skip },
  async () => {
    await withMount(
      async ({ mnt, tree }) => {
        const st = await stat(join(mnt, "dev/ram_a"));
        assert.ok(st.isFile());
        assert.equal(st.size, 8 * 1024 * 1024);
        assert.equal(st.mode & 0o777, 0o600);
        const ro = await stat(join(mnt, "dev/ro_disk"));
        assert.equal(ro.mode & 0o777, 0o400);
        await assert.rejects(open(join(mnt, "dev/ro_disk"), "r+"), { code: "EROFS" });
        tree.add("late", new MallocBdev({ name: "late", blockSize: 512, blockCount: 64 }), "tcmur");
        assert.deepEqual((await readdir(join(mnt, "dev"))).sort(), ["late", "ram_a", "ro_disk"]);
        assert.equal((await stat(join(mnt, "dev/late"))).size, 512 * 64);
        await assert.rejects(writeFile(join(mnt, "dev/newfile"), "x"), { code: "EPERM" });
      },
      async (tree, dir) => {
        tree.add(
          "ram_a",
          await createTcmurDevice({ minor: 0, name: "ram_a", cfgstring: "/ram/a?size=8M" }, handlers),
          "tcmur",
        );
        const f = join(dir, "ro.img");
        await writeFile(f, Buffer.alloc(1 << 20));
        const ro = await createTcmurDevice(
          { minor: 1, name: "ro_disk", cfgstring: `/file/${f}?ro=1` },
          handlers,
        );
        tree.add("ro_disk", ro, "tcmur");
      },
    );
  },
);

test("FUSE: same bytes through the FUSE file and the bdev API, aligned and not", { skip }, async () => {
  let dev: BlockDevice | undefined;
  await withMount(
    async ({ mnt }) => {
      const path = join(mnt, "dev/file_a");
      const viaBdev = randomBytes(3 * 4096);
      await dev!.writev(10, [viaBdev]);
      const fh = await open(path, "r+");
      const got = Buffer.alloc(viaBdev.length);
      await fh.read(got, 0, got.length, 10 * 4096);
      assert.deepEqual(got, viaBdev);
      const viaFuse = randomBytes(2 * 4096);
      await fh.write(viaFuse, 0, viaFuse.length, 20 * 4096);
      const odd = Buffer.from("unaligned bytes across a block edge");
      await fh.write(odd, 0, odd.length, 30 * 4096 - 7);
      await fh.sync();
      await fh.close();
      const back = Buffer.alloc(viaFuse.length);
      await dev!.readv(20, [back]);
      assert.deepEqual(back, viaFuse);
      const edge = Buffer.alloc(2 * 4096);
      await dev!.readv(29, [edge]);
      assert.deepEqual(edge.subarray(4096 - 7, 4096 - 7 + odd.length), odd);
    },
    async (tree, dir) => {
      dev = await createTcmurDevice(
        { minor: 1, name: "file_a", cfgstring: `/file/${dir}/file_a.img?size=4M` },
        handlers,
      );
      tree.add("file_a", dev, "tcmur");
    },
  );
});

test(
  "FUSE: a device claimed by a BIO bdev refuses a FUSE writer (EBUSY), and the reverse",
  { skip },
  async () => {
    await withMount(
      async ({ mnt, tree }) => {
        const path = join(mnt, "dev/file_b");
        const bio = await BioBdev.open(tree, { name: "bio0", path: "/UMCfuse/dev/file_b" });
        await assert.rejects(open(path, "r+"), { code: "EBUSY" });
        const reader = await open(path, "r"); // readers are still welcome
        await reader.close();
        await bio.close();
        const writer = await open(path, "r+");
        const w2 = await open(path, "w"); // a second writer through the same mount shares its claim
        assert.equal((await stat(path)).size, 256 * 4096, "O_TRUNC leaves a device its size");
        await assert.rejects(
          BioBdev.open(tree, { name: "bio0", path: "/UMCfuse/dev/file_b" }),
          /busy.*held by FUSE mount/,
        );
        await writer.close();
        await w2.close();
        // RELEASE reaches the server after close() returns; give it a moment.
        for (let i = 0; i < 50 && tree.holders("file_b").length > 0; i++)
          await new Promise((r) => setTimeout(r, 20));
        const again = await BioBdev.open(tree, { name: "bio0", path: "/UMCfuse/dev/file_b" });
        await again.close();
      },
      async (tree) => {
        tree.add("file_b", new MallocBdev({ name: "file_b", blockSize: 4096, blockCount: 256 }), "tcmur");
      },
    );
  },
);

test("FUSE: requests are served concurrently, not one at a time", { skip }, async () => {
  let maxInFlight = 0;
  await withMount(
    async ({ mnt }) => {
      const handles = await Promise.all(Array.from({ length: 8 }, () => open(join(mnt, "dev/slow"), "r")));
      await Promise.all(handles.map((h, i) => h.read(Buffer.alloc(4096), 0, 4096, i * 4096)));
      for (const h of handles) await h.close();
      assert.ok(maxInFlight >= 4, `at most ${maxInFlight} reads were in flight together`);
    },
    async (tree) => {
      const inner = new MallocBdev({ name: "slow", blockSize: 4096, blockCount: 64 });
      let inFlight = 0;
      const slow: BlockDevice = Object.assign(Object.create(inner) as BlockDevice, {
        async readv(lba: number, iov: readonly Buffer[]) {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await new Promise((r) => setTimeout(r, 100));
          inFlight--;
          return inner.readv(lba, iov);
        },
      });
      tree.add("slow", slow, "tcmur");
    },
  );
});

test("FUSE: mkfs.ext4, loop mount, write and read files, umount, fsck -n clean", { skip }, async () => {
  await withMount(
    async ({ dir, mnt }) => {
      const img = join(mnt, "dev/file_b");
      await exec("mkfs.ext4", ["-q", "-F", img]);
      const fsDir = join(dir, "ext4");
      await mkdir(fsDir);
      await exec("mount", ["-o", "loop", img, fsDir]);
      const data = randomBytes(3 * 1024 * 1024 + 123);
      try {
        await writeFile(join(fsDir, "data.bin"), data);
        await mkdir(join(fsDir, "sub"));
        await writeFile(join(fsDir, "sub/hello.txt"), "hello from ext4 on FUSE\n");
        await exec("sync");
        assert.deepEqual(await readFile(join(fsDir, "data.bin")), data);
      } finally {
        await exec("umount", [fsDir]);
      }
      const { stdout } = await exec("fsck.ext4", ["-n", "-f", img]);
      assert.match(stdout, /Pass 5/);
      await exec("mount", ["-o", "loop,ro", img, fsDir]);
      try {
        assert.deepEqual(await readFile(join(fsDir, "data.bin")), data);
        assert.equal(await readFile(join(fsDir, "sub/hello.txt"), "utf8"), "hello from ext4 on FUSE\n");
      } finally {
        await exec("umount", [fsDir]);
      }
    },
    async (tree, dir) => {
      const dev = await createTcmurDevice(
        { minor: 2, name: "file_b", cfgstring: `/file/${dir}/tcmur_file01?size=64M` },
        handlers,
      );
      tree.add("file_b", dev, "tcmur");
    },
  );
});

test("FUSE: data written through FUSE to a file device survives unmount and reopen", { skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "usertgt-fuse-restart-"));
  const cfgstring = `/file/${dir}/persist.img?size=2M&bs=512`;
  const data = randomBytes(64 * 1024);
  try {
    for (const phase of ["write", "read"] as const) {
      const tree = new DeviceTree();
      const dev = await createTcmurDevice({ minor: 4, name: "file_c", cfgstring }, handlers);
      tree.add("file_c", dev, "tcmur");
      const mount = await mountDeviceTree(tree, join(dir, "mnt"), { logger: quiet });
      assert.ok(mount);
      try {
        const fh = await open(join(dir, "mnt/dev/file_c"), phase === "write" ? "r+" : "r");
        if (phase === "write") {
          await fh.write(data, 0, data.length, 512 * 100);
        } else {
          const back = Buffer.alloc(data.length);
          await fh.read(back, 0, back.length, 512 * 100);
          assert.deepEqual(back, data);
        }
        await fh.close();
      } finally {
        await mount.unmount();
        await dev.close();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("FUSE: an unmount from outside releases the mount's claims", { skip }, async () => {
  await withMount(
    async ({ mnt, tree, mount }) => {
      const fh = await open(join(mnt, "dev/ram_x"), "r+");
      assert.deepEqual(
        tree.holders("ram_x").map((h) => h.mode),
        ["write"],
      );
      await exec("umount", ["-l", mnt]);
      await fh.close().catch(() => undefined);
      for (let i = 0; i < 100 && !mount.ended; i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(mount.ended, "the session noticed the unmount");
      for (let i = 0; i < 50 && tree.holders("ram_x").length > 0; i++)
        await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(tree.holders("ram_x"), []);
    },
    async (tree) => {
      tree.add("ram_x", new MallocBdev({ name: "ram_x", blockSize: 512, blockCount: 64 }), "tcmur");
    },
  );
});

test(
  "FUSE: abort() cuts the connection (the last resort at shutdown); unmount still cleans up",
  { skip },
  async () => {
    await withMount(
      async ({ mnt, mount }) => {
        assert.equal((await stat(join(mnt, "dev/ram_y"))).size, 512 * 64);
        await mount.abort();
        // OPEN always reaches the server (no cache): refused on the dead connection, or ENOENT once
        // the session noticed and detached the dead mount.
        await assert.rejects(open(join(mnt, "dev/ram_y"), "r"), (e: NodeJS.ErrnoException) =>
          ["ENOTCONN", "ECONNABORTED", "ENOENT"].includes(e.code ?? ""),
        );
        for (let i = 0; i < 100 && !mount.ended; i++) await new Promise((r) => setTimeout(r, 20));
        assert.ok(mount.ended);
      },
      async (tree) => {
        tree.add("ram_y", new MallocBdev({ name: "ram_y", blockSize: 512, blockCount: 64 }), "tcmur");
      },
    );
  },
);

test("FUSE: an unusable mount point gives a warning and no mount, not a crash", { skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), "usertgt-fuse-bad-"));
  try {
    const notDir = join(dir, "file");
    await writeFile(notDir, "x");
    assert.equal(await mountDeviceTree(new DeviceTree(), notDir, { logger: quiet }), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test(
  "FUSE: status files beside dev/ are rendered at each open, read-only, and go away",
  { skip },
  async () => {
    let n = 0;
    await withMount(async ({ mnt, tree }) => {
      const unpublish = tree.publishStatusFile("proc/drbd", () => `version: test\nrender ${++n}\n`);
      assert.deepEqual((await readdir(mnt)).sort(), ["dev", "proc"]);
      assert.deepEqual(await readdir(join(mnt, "proc")), ["drbd"]);
      const st = await stat(join(mnt, "proc/drbd"));
      assert.ok(st.isFile());
      assert.equal(st.mode & 0o777, 0o444);
      // cat reads to EOF whatever the (procfs-like, zero) size says.
      const { stdout } = await exec("cat", [join(mnt, "proc/drbd")]);
      assert.equal(stdout, "version: test\nrender 1\n");
      assert.equal(await readFile(join(mnt, "proc/drbd"), "utf8"), "version: test\nrender 2\n");
      await assert.rejects(open(join(mnt, "proc/drbd"), "r+"), { code: "EACCES" });
      await assert.rejects(writeFile(join(mnt, "proc/other"), "x"), { code: "EPERM" });
      unpublish();
      await new Promise((r) => setTimeout(r, 1100)); // past the 1 s entry cache
      await assert.rejects(stat(join(mnt, "proc/drbd")), { code: "ENOENT" });
      assert.deepEqual(await readdir(mnt), ["dev"]);
    });
  },
);
