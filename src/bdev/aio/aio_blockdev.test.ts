/**
 * The AIO block device over a real block device: loop devices with 512- and 4096-byte sectors,
 * through the io_uring engine and through the thread-pool fallback. Data written is checked on the
 * device itself (dd iflag=direct), not read back through the block device under test.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import {
  attachLoop,
  canUseLoopDevices,
  readDirect,
  type LoopDevice,
} from "../../../test/support/loop_device.js";
import type { IoEngineName } from "../../io_engine/engine.js";
import { AioBdev } from "./aio.js";

const exec = promisify(execFile);
const SIZE = 32 * 1024 * 1024;
const skip = await canUseLoopDevices();

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

async function allocatedBytes(file: string): Promise<number> {
  return (await stat(file)).blocks * 512;
}

for (const engine of ["io_uring", "threadpool"] as IoEngineName[]) {
  describe(`AIO on a block device (${engine})`, { skip }, () => {
    let dir: string;
    const loops = new Map<number, LoopDevice>();
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "usertgt-aio-blk-"));
      for (const sector of [512, 4096])
        loops.set(sector, await attachLoop(join(dir, `loop${sector}.img`), SIZE, sector));
    });
    after(async () => {
      for (const l of loops.values()) await l.detach();
      await rm(dir, { recursive: true, force: true });
    });

    for (const sector of [512, 4096]) {
      it(`${sector}-byte sectors: the LUN takes the device's geometry`, async () => {
        const loop = loops.get(sector)!;
        const dev = await AioBdev.open({ name: "B0", path: loop.device, engine });
        try {
          assert.equal(dev.blockSize, sector);
          assert.equal(dev.blockCount, SIZE / sector);
          assert.equal(dev.engine.name, engine);
          // O_DIRECT on block devices under io_uring; the thread pool uses the page cache.
          assert.equal(dev.engine.direct, engine === "io_uring");
          assert.ok((dev.maxRequestBytes ?? 0) > 0, "max transfer from the queue's max_sectors_kb");
          const rotational = await readFile(`/sys/block/${basename(loop.device)}/queue/rotational`, "utf8");
          assert.equal(dev.rotational, rotational.trim() === "1");
        } finally {
          await dev.close();
        }
        if (sector === 4096) {
          await assert.rejects(
            AioBdev.open({ name: "B0", path: loop.device, blockSize: 512, engine }),
            /block size 512 is smaller than the device's logical block size 4096/,
          );
        }
      });

      it(`${sector}-byte sectors: FUA writes are on the device; unaligned buffers work`, async () => {
        const loop = loops.get(sector)!;
        const dev = await AioBdev.open({ name: "B0", path: loop.device, engine });
        try {
          const data = pattern(3 * 4096, sector);
          // Odd buffer boundaries force the O_DIRECT bounce path.
          await dev.writev(
            8192 / sector,
            [data.subarray(0, 100), data.subarray(100, 9000), data.subarray(9000)],
            {
              fua: true,
            },
          );
          assert.deepEqual(await readDirect(loop.device, 8192, data.length, sector), data);
          const back = [Buffer.alloc(5000), Buffer.alloc(data.length - 5000)];
          await dev.readv(8192 / sector, back);
          assert.deepEqual(Buffer.concat(back), data);
          // A request larger than a bounce chunk (256 KiB) and many buffers.
          const big = pattern(1024 * 1024, 3);
          const parts: Buffer[] = [];
          for (let off = 0; off < big.length; off += 512) parts.push(big.subarray(off, off + 512));
          await dev.writev(1048576 / sector, parts, { fua: true });
          assert.deepEqual(await readDirect(loop.device, 1048576, big.length, sector), big);
          const bigBack = Buffer.alloc(big.length);
          await dev.readv(1048576 / sector, [bigBack]);
          assert.deepEqual(bigBack, big);
          await dev.flush();
        } finally {
          await dev.close();
        }
      });

      it(`${sector}-byte sectors: UNMAP reaches the device, WRITE ZEROES zeroes it`, async () => {
        const loop = loops.get(sector)!;
        const dev = await AioBdev.open({ name: "B0", path: loop.device, engine });
        try {
          assert.equal(dev.supportsUnmap, true, "a loop device discards");
          const at = 4 * 1024 * 1024;
          const len = 2 * 1024 * 1024;
          await dev.writev(at / sector, [pattern(len, 9)], { fua: true });
          const before = await allocatedBytes(loop.file);
          await dev.unmap(at / sector, len / sector);
          // The loop driver punches the range out of its backing file.
          const afterUnmap = await allocatedBytes(loop.file);
          assert.ok(
            before - afterUnmap >= len / 2,
            `backing file kept ${before - afterUnmap} of ${len} bytes`,
          );
          await dev.writev(at / sector, [pattern(len, 10)], { fua: true });
          await dev.writeZeroes(at / sector, len / sector);
          assert.deepEqual(await readDirect(loop.device, at, len, sector), Buffer.alloc(len));
        } finally {
          await dev.close();
        }
      });
    }

    it("direct: false puts the device behind its page cache; FUA and flush still reach the device", async () => {
      const loop = loops.get(4096)!;
      const dev = await AioBdev.open({ name: "B0", path: loop.device, engine, direct: false });
      try {
        assert.equal(dev.engine.direct, false);
        const data = pattern(2 * 4096, 21);
        // A FUA write is on the device (read past the page cache) when it completes.
        await dev.writev(2, [data.subarray(0, 100), data.subarray(100)], { fua: true });
        assert.deepEqual(await readDirect(loop.device, 8192, data.length, 4096), data);
        // A plain write may stay cached; after flush() it is on the device.
        const more = pattern(3 * 4096, 22);
        await dev.writev(64, [more]);
        const back = Buffer.alloc(more.length);
        await dev.readv(64, [back]);
        assert.deepEqual(back, more);
        await dev.flush();
        assert.deepEqual(await readDirect(loop.device, 64 * 4096, more.length, 4096), more);
      } finally {
        await dev.close();
      }
    });

    it("the device is held exclusively: mkfs fails while it is open and works after close; a mounted disk is refused", async () => {
      const loop = loops.get(4096)!;
      const dev = await AioBdev.open({ name: "B0", path: loop.device, engine });
      const busy = await exec("mkfs.ext4", ["-q", "-F", loop.device]).then(
        () => undefined,
        (e: Error & { stderr?: string }) => e.stderr ?? e.message,
      );
      await dev.close();
      assert.notEqual(busy, undefined, "mkfs.ext4 succeeded on a device usertgt held");
      await exec("mkfs.ext4", ["-q", "-F", loop.device]);
      const mnt = join(dir, "mnt");
      await exec("mkdir", ["-p", mnt]);
      await exec("mount", [loop.device, mnt]);
      try {
        await assert.rejects(AioBdev.open({ name: "B0", path: loop.device, engine }), /is in use \(mounted/);
      } finally {
        await exec("umount", [mnt]);
      }
    });
  });
}
