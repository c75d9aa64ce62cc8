/**
 * Growing a DRBD device online (DrbdDevice.grow, online_grow.ts) over a real file: the metadata at the new
 * end is complete — after a "crash" right after the grow (nothing detached, the file read back as it is),
 * the superblock there carries the new size and offsets, drbdmeta-style apply-al finds the Primary's hot
 * extents in the relocated activity log, and the bitmap kept its old bits and (or not) the new area's.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import {
  applyActivityLog,
  computeLayout,
  createMetadata,
  MDF_PRIMARY_IND,
  readBitmap,
  readMetadata,
  blockDeviceStore,
  SECTOR,
} from "./metadata.js";
import { DrbdDevice } from "./device.js";
import { OutOfSyncBitmap } from "./bitmap.js";

const MiB = 1024 * 1024;
const internal = { kind: "internal" } as const;

async function disk(t: { after: (fn: () => Promise<void>) => void }, mib: number) {
  const dir = await mkdtemp(join(tmpdir(), "drbd-grow-"));
  const path = join(dir, "lower.img");
  const lower = await AioBdev.open({ name: "lower0", path, blockSize: 512, blockCount: (mib * MiB) / 512 });
  await createMetadata(lower, { placement: internal });
  t.after(async () => {
    await lower.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  return { lower, path };
}

const usable = (mib: number) =>
  computeLayout({ lowerSectors: (mib * MiB) / SECTOR, placement: internal }).usableSectors;

test("grow moves the metadata to the new end; a crash right after finds size, hot extents and bits there", async (t) => {
  const { lower, path } = await disk(t, 16);
  const dev = await DrbdDevice.attach({ minor: 1, lower });
  await dev.primary({ force: true });
  const before = dev.sizeSectors;
  assert.equal(before, usable(16));
  // Two writes in different 4 MiB extents (hot in the activity log), and one block marked out of sync.
  await dev.writev(8, [Buffer.alloc(4096, 1)]);
  await dev.writev((9 * MiB) / 512, [Buffer.alloc(4096, 2)]);
  dev.markOutOfSync(12 * MiB, 4096);
  // Without a peer the writes are out of sync too: three bits.
  const had = dev.bitmap.outOfSyncBits;
  assert.equal(had, 3);
  const resized: number[] = [];
  dev.onResize((blocks) => resized.push(blocks));

  await truncate(path, 32 * MiB);
  assert.deepEqual(await lower.rescan(false), { before: (16 * MiB) / 512, after: (32 * MiB) / 512 });
  assert.equal(await dev.maxSectors(), usable(32));
  assert.equal(await dev.grow(usable(32), { setNewBits: true }), true);
  assert.equal(dev.sizeSectors, usable(32));
  assert.equal(dev.blockCount, usable(32));
  assert.deepEqual(resized, [usable(32)]);
  const newBits = Math.ceil(usable(32) / 8) - Math.floor(before / 8);
  assert.equal(dev.bitmap.outOfSyncBits, had + newBits);
  // Writes into the new area work at once.
  await dev.writev(usable(32) - 8, [Buffer.alloc(4096, 3)]);
  assert.equal(await dev.grow(usable(32), { setNewBits: true }), false, "not larger: nothing to do");

  // "Crash": read what is on disk now, without detaching.
  const { layout, superBlock } = await readMetadata(lower, { placement: internal, allowUnclean: true });
  assert.equal(layout.mdOffsetSect, (32 * MiB) / 512 - 8, "the superblock at the new end");
  assert.equal(superBlock.laSizeSect, usable(32));
  assert.ok(superBlock.flags & MDF_PRIMARY_IND);
  const bits = new OutOfSyncBitmap(
    layout.bmBits,
    Buffer.from(await readBitmap(blockDeviceStore(lower), layout)),
  );
  assert.equal(bits.outOfSyncBits, had + newBits, "the grown bitmap was written at its new place");
  // apply-al on the relocated log marks the two hot extents (2 × 1024 bits, two of them already set) and
  // the one the write into the new area made hot (its bits are set already: all new-area bits are).
  const marked = await applyActivityLog(lower, { placement: internal });
  assert.equal(marked, 2 * 1024 - 2, `apply-al marked ${marked} bits`);
  const after = await readMetadata(lower, { placement: internal, allowUnclean: true });
  const replayed = new OutOfSyncBitmap(
    after.layout.bmBits,
    Buffer.from(await readBitmap(blockDeviceStore(lower), after.layout)),
  );
  assert.ok(
    replayed.test(0) && replayed.test((9 * MiB) / 4096),
    "both hot extents out of sync after apply-al",
  );
});

test("--assume-clean: the new area counts as in sync; the size survives a clean detach and attach", async (t) => {
  const { lower, path } = await disk(t, 16);
  const dev = await DrbdDevice.attach({ minor: 2, lower });
  await truncate(path, 24 * MiB);
  await lower.rescan(false);
  assert.equal(await dev.grow(await dev.maxSectors(), { setNewBits: false }), true);
  assert.equal(dev.bitmap.outOfSyncBits, 0);
  await dev.detach();
  const again = await DrbdDevice.attach({ minor: 2, lower });
  assert.equal(again.sizeSectors, usable(24));
  assert.equal(again.bitmap.outOfSyncBits, 0);
  await again.detach();
});

test("the recorded size wins at attach: a backing disk larger than the last agreed size does not grow drbdN", async (t) => {
  const { lower, path } = await disk(t, 16);
  const dev = await DrbdDevice.attach({ minor: 3, lower });
  await truncate(path, 24 * MiB);
  await lower.rescan(false);
  // Grown only to 20 MiB worth (a smaller peer): the metadata sits at the 24 MiB end, the size is the agreed one.
  const agreed = usable(20);
  assert.equal(await dev.grow(agreed, { setNewBits: false }), true);
  await dev.detach();
  const again = await DrbdDevice.attach({ minor: 3, lower });
  assert.equal(again.sizeSectors, agreed);
  assert.equal(again.blockCount, agreed);
  await again.detach();
});
