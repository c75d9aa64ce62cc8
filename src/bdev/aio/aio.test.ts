import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AioBdev } from "./aio.js";
import { BlockDeviceError } from "../bdev.js";

const nativeBuilt = existsSync(
  fileURLToPath(new URL("../../../../native/build/Release/usertgt_native.node", import.meta.url)),
);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "usertgt-aio-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test("AIO: creates the file at the given size; vectored write reads back; data and UUID survive reopen", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "disk.img");
    const dev = await AioBdev.open({ name: "AIO0", path, blockSize: 512, blockCount: 64 });
    assert.equal(dev.blockCount, 64);
    assert.equal(dev.productName, "AIO disk");
    assert.equal(dev.volatileWriteCache, true);
    assert.match(dev.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal((await stat(path)).size, 64 * 512);
    const data = pattern(3 * 512, 7);
    // Uneven buffer boundaries within the vector.
    await dev.writev(5, [data.subarray(0, 100), data.subarray(100, 1300), data.subarray(1300)], {
      fua: true,
    });
    const out = [Buffer.alloc(512), Buffer.alloc(1024)];
    await dev.readv(5, out);
    assert.deepEqual(Buffer.concat(out), data);
    await dev.flush();
    const uuid = dev.uuid;
    await dev.close();
    await assert.rejects(dev.readv(0, [Buffer.alloc(512)]), (e: unknown) => {
      return e instanceof BlockDeviceError && e.kind === "closed";
    });

    // Reopen without a block count: the file's size decides.
    const again = await AioBdev.open({ name: "AIO0", path, blockSize: 512 });
    assert.equal(again.blockCount, 64);
    assert.equal(again.uuid, uuid);
    const back = Buffer.alloc(3 * 512);
    await again.readv(5, [back]);
    assert.deepEqual(back, data);
    // The same file seen as 4096-byte blocks.
    await again.close();
    const big = await AioBdev.open({ name: "AIO0", path, blockSize: 4096 });
    assert.equal(big.blockCount, 8);
    await big.close();
  });
});

test("AIO: a smaller existing file is extended to blockCount and keeps its data", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "small.img");
    const head = pattern(4096, 3);
    await writeFile(path, head);
    const dev = await AioBdev.open({ name: "AIO1", path, blockSize: 4096, blockCount: 16 });
    assert.equal(dev.blockCount, 16);
    assert.equal((await stat(path)).size, 16 * 4096);
    const out = Buffer.alloc(2 * 4096, 0xff);
    await dev.readv(0, [out]);
    assert.deepEqual(out.subarray(0, 4096), head);
    assert.ok(out.subarray(4096).every((b) => b === 0));
    await dev.close();
  });
});

test("AIO: bad block sizes, odd file sizes and empty files are refused naming the file", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "odd.img");
    for (const bs of [0, 256, 1000, 3072]) {
      await assert.rejects(
        AioBdev.open({ name: "AIO2", path, blockSize: bs, blockCount: 4 }),
        new RegExp(`AIO AIO2 \\(${path}\\): block size ${bs} is not a power of two`),
      );
    }
    await writeFile(path, Buffer.alloc(1000));
    await assert.rejects(
      AioBdev.open({ name: "AIO2", path, blockSize: 512 }),
      /odd\.img\): file size 1000 is not a multiple of the block size 512/,
    );
    await assert.rejects(
      AioBdev.open({ name: "AIO2", path: join(dir, "new.img"), blockSize: 512 }),
      /new\.img\): file is empty/,
    );
    await assert.rejects(AioBdev.open({ name: "AIO2", path: dir, blockSize: 512 }), /cannot open: EISDIR/);
    await assert.rejects(
      AioBdev.open({ name: "AIO2", path: "/dev/null", blockSize: 512 }),
      /not a regular file/,
    );
    await assert.rejects(
      AioBdev.open({ name: "AIO2", path: join(dir, "missing", "x.img"), blockSize: 512, blockCount: 1 }),
      /x\.img\): cannot open/,
    );
  });
});

test("AIO: I/O beyond the end is out-of-range; partial blocks are refused", async () => {
  await withDir(async (dir) => {
    const dev = await AioBdev.open({ name: "AIO3", path: join(dir, "d.img"), blockSize: 512, blockCount: 8 });
    const outOfRange = (e: unknown) => e instanceof BlockDeviceError && e.kind === "out-of-range";
    await assert.rejects(dev.readv(7, [Buffer.alloc(1024)]), outOfRange);
    await assert.rejects(dev.writev(8, [Buffer.alloc(512)]), outOfRange);
    await assert.rejects(dev.unmap(6, 3), outOfRange);
    await assert.rejects(dev.writev(0, [Buffer.alloc(100)]), /not a multiple/);
    await dev.readv(7, [Buffer.alloc(512)]);
    await dev.close();
  });
});

test("AIO: more buffers than IOV_MAX in one vector are all transferred", async () => {
  await withDir(async (dir) => {
    const dev = await AioBdev.open({
      name: "AIO4",
      path: join(dir, "v.img"),
      blockSize: 512,
      blockCount: 4096,
    });
    const data = pattern(3000 * 512, 11);
    const iov: Buffer[] = [];
    for (let i = 0; i < 3000; i++) iov.push(data.subarray(i * 512, (i + 1) * 512));
    await dev.writev(10, iov);
    const outs: Buffer[] = [];
    for (let i = 0; i < 3000; i++) outs.push(Buffer.alloc(512));
    await dev.readv(10, outs);
    assert.deepEqual(Buffer.concat(outs), data);
    await dev.close();
  });
});

test("AIO: unmap reads back zeroes and (with the native helper) frees blocks", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "thin.img");
    const blocks = 1024; // 4 MiB of 4096-byte blocks
    const dev = await AioBdev.open({ name: "AIO5", path, blockSize: 4096, blockCount: blocks });
    assert.equal(dev.supportsUnmap, nativeBuilt, "native helper built ⇔ holes are punched (ext4/tmpfs)");
    assert.equal(dev.unmapReadsZeroes, true);
    await dev.writev(0, [pattern(blocks * 4096, 5)]);
    await dev.flush();
    const before = (await stat(path)).blocks;
    await dev.unmap(16, 512);
    await dev.flush();
    const after = (await stat(path)).blocks;
    const out = Buffer.alloc(blocks * 4096);
    await dev.readv(0, [out]);
    assert.ok(out.subarray(16 * 4096, 528 * 4096).every((b) => b === 0));
    assert.deepEqual(out.subarray(0, 16 * 4096), pattern(blocks * 4096, 5).subarray(0, 16 * 4096));
    assert.notEqual(out[528 * 4096 + 1], 0);
    assert.equal((await stat(path)).size, blocks * 4096, "KEEP_SIZE: the file size does not change");
    if (dev.supportsUnmap) {
      // 512 blocks of 4 KiB are 4096 st_blocks of 512 bytes.
      assert.ok(before - after >= 4000, `st_blocks ${before} → ${after}`);
    } else {
      assert.equal(after, before);
    }
    await dev.close();
  });
});

test("AIO: without the native helper writeZeroes writes zeroes in bounded chunks", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "fat.img");
    const dev = await AioBdev.open({
      name: "AIO6",
      path,
      blockSize: 512,
      blockCount: 8192,
      nativeUnmap: false,
    });
    assert.equal(dev.supportsUnmap, false);
    const data = pattern(8192 * 512, 9);
    await dev.writev(0, [data]);
    // 3 MiB + one block: several 1 MiB chunks and a short tail.
    await dev.writeZeroes(1, 6145);
    const out = Buffer.alloc(8192 * 512);
    await dev.readv(0, [out]);
    assert.deepEqual(out.subarray(0, 512), data.subarray(0, 512));
    assert.ok(out.subarray(512, 6146 * 512).every((b) => b === 0));
    assert.deepEqual(out.subarray(6146 * 512), data.subarray(6146 * 512));
    await dev.close();
  });
});

test("AIO: close waits for in-flight writes, which are then durable on reopen", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "c.img");
    const dev = await AioBdev.open({ name: "AIO7", path, blockSize: 512, blockCount: 256 });
    const writes = [];
    for (let i = 0; i < 32; i++) writes.push(dev.writev(i * 8, [pattern(8 * 512, i)]));
    await dev.close();
    await Promise.all(writes);
    const again = await AioBdev.open({ name: "AIO7", path, blockSize: 512 });
    for (let i = 0; i < 32; i++) {
      const out = Buffer.alloc(8 * 512);
      await again.readv(i * 8, [out]);
      assert.deepEqual(out, pattern(8 * 512, i));
    }
    await again.close();
  });
});
