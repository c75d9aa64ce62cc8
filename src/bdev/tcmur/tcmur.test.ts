import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, open, rm, stat, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TcmurHandlerRegistry } from "../../tcmur/handler_registry.js";
import { createTcmurDevice } from "./tcmur.js";
import { BlockDeviceError } from "../bdev.js";

const handlers = new TcmurHandlerRegistry();

test("TCMUR file: created sparse at the default 1 GiB / 4096, data reaches the file", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tcmur-file-"));
  try {
    const path = join(dir, "tcmur_file00");
    const dev = await createTcmurDevice({ minor: 1, name: "file_a", cfgstring: `/file/${path}` }, handlers);
    assert.equal(dev.productName, "TCMU file");
    assert.equal(dev.blockSize, 4096);
    assert.equal(dev.blockCount * dev.blockSize, 1024 ** 3);
    assert.equal((await stat(path)).size, 1024 ** 3);
    const data = randomBytes(3 * 4096);
    await dev.writev(100, [data.subarray(0, 4096), data.subarray(4096)], { fua: true });
    const back = [Buffer.alloc(8192), Buffer.alloc(4096)];
    await dev.readv(100, back);
    assert.deepEqual(Buffer.concat(back), data);
    await dev.flush();
    const fh = await open(path);
    const raw = Buffer.alloc(data.length);
    await fh.read(raw, 0, raw.length, 100 * 4096);
    await fh.close();
    assert.deepEqual(raw, data);
    await dev.writeZeroes(101, 1);
    const z = Buffer.alloc(4096, 1);
    await dev.readv(101, [z]);
    assert.ok(z.every((x) => x === 0));
    await assert.rejects(dev.readv(dev.blockCount, [Buffer.alloc(4096)]), BlockDeviceError);
    const uuid = dev.uuid;
    await dev.close();
    await assert.rejects(dev.readv(0, [Buffer.alloc(4096)]), /closed/);

    // Reopen: the size comes from the existing file, the data and UUID are the same.
    const again = await createTcmurDevice({ minor: 1, name: "file_a", cfgstring: `/file/${path}` }, handlers);
    assert.equal(again.uuid, uuid);
    const r = Buffer.alloc(4096);
    await again.readv(100, [r]);
    assert.deepEqual(r, data.subarray(0, 4096));
    await again.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("TCMUR file: size and bs from the cfgstring, read-only refuses writes", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tcmur-file-"));
  try {
    const path = join(dir, "small");
    const dev = await createTcmurDevice(
      { minor: 2, name: "file_b", cfgstring: `/file/${path}?size=1M&bs=512` },
      handlers,
    );
    assert.equal(dev.blockSize, 512);
    assert.equal(dev.blockCount, 2048);
    await dev.writev(2047, [Buffer.alloc(512, 7)]);
    await dev.close();
    const ro = await createTcmurDevice(
      { minor: 2, name: "file_b", cfgstring: `/file/${path}?bs=512&ro=1` },
      handlers,
    );
    assert.equal(ro.readOnly, true);
    const b = Buffer.alloc(512);
    await ro.readv(2047, [b]);
    assert.equal(b[511], 7);
    await assert.rejects(ro.writev(0, [Buffer.alloc(512)]), /read-only/);
    await ro.close();
    await writeFile(join(dir, "d"), "");
    await assert.rejects(
      createTcmurDevice({ minor: 3, name: "x", cfgstring: `/file/relative/path` }, handlers),
      /absolute path/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("TCMUR ram: sparse chunks, reads zeroes, writes across chunk edges, discard", async () => {
  const dev = await createTcmurDevice(
    { minor: 0, name: "ram_a", cfgstring: "/ram/tmp/tcmur_ram00" },
    handlers,
  );
  assert.equal(dev.productName, "TCMU ram");
  assert.equal(dev.blockCount * dev.blockSize, 1024 ** 3);
  assert.equal(dev.supportsUnmap, true);
  const lba = (1024 * 1024) / 4096 - 1; // last block of the first 1 MiB chunk
  const data = randomBytes(3 * 4096);
  await dev.writev(lba, [data]);
  const back = Buffer.alloc(5 * 4096, 0xff);
  await dev.readv(lba - 1, [back]);
  assert.ok(back.subarray(0, 4096).every((x) => x === 0));
  assert.deepEqual(back.subarray(4096, 4 * 4096), data);
  assert.ok(back.subarray(4 * 4096).every((x) => x === 0));
  await dev.unmap(lba + 1, 1);
  const mid = Buffer.alloc(4096, 1);
  await dev.readv(lba + 1, [mid]);
  assert.ok(mid.every((x) => x === 0));
  await dev.close();
});
