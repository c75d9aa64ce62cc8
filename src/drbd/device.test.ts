import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { BlockDeviceError } from "../bdev/bdev.js";
import {
  createMetadata,
  DRBD_MD_MAGIC_08,
  DRBD_MD_MAGIC_84_UNCLEAN,
  MDF_AL_CLEAN,
  MDF_CONSISTENT,
  MDF_CRASHED_PRIMARY,
  MDF_PRIMARY_IND,
  blockDeviceStore,
  readBitmap,
  readMetadata,
  UUID_JUST_CREATED,
} from "./metadata.js";
import { DrbdDevice, DrbdStateError } from "./device.js";

const MiB = 1024 * 1024;

async function freshDisk(t: { after: (fn: () => Promise<void>) => void }, sizeMiB = 64) {
  const dir = await mkdtemp(join(tmpdir(), "drbd-dev-"));
  const path = join(dir, "lower.img");
  const lower = await AioBdev.open({
    name: "lower0",
    path,
    blockSize: 512,
    blockCount: (sizeMiB * MiB) / 512,
  });
  await createMetadata(lower, { placement: { kind: "internal" } });
  t.after(async () => {
    await lower.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });
  return { lower, path };
}

const pattern = (bytes: number, seed: number) => {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
};

test("fresh metadata attaches Secondary/Inconsistent with the usable size of the layout", async (t) => {
  const { lower } = await freshDisk(t);
  const dev = await DrbdDevice.attach({ minor: 3, lower });
  assert.equal(dev.name, "drbd3");
  assert.equal(dev.role, "Secondary");
  assert.equal(dev.disk, "Inconsistent");
  assert.equal(dev.blockCount, dev.layout.usableSectors);
  assert.ok(dev.blockCount < lower.blockCount);
  assert.equal(dev.uuids[0], UUID_JUST_CREATED);
  // While attached the metadata is marked in use: a crash must make the next attach apply the log.
  await assert.rejects(readMetadata(lower, { placement: { kind: "internal" } }), /unclean/);
  const { superBlock } = await readMetadata(lower, { placement: { kind: "internal" }, allowUnclean: true });
  assert.equal(superBlock.magic, DRBD_MD_MAGIC_84_UNCLEAN);
  assert.equal(superBlock.laSizeSect, dev.layout.usableSectors);
  await dev.close();
});

test("Secondary refuses writes as read-only; primary needs UpToDate data unless --force", async (t) => {
  const { lower } = await freshDisk(t);
  const dev = await DrbdDevice.attach({ minor: 0, lower });
  await assert.rejects(dev.writev(0, [Buffer.alloc(4096)]), (e: unknown) => {
    assert.ok(e instanceof BlockDeviceError);
    assert.equal(e.kind, "read-only");
    return true;
  });
  await assert.rejects(dev.primary(), (e: unknown) => {
    assert.ok(e instanceof DrbdStateError);
    assert.match(e.message, /Need access to UpToDate data/);
    return true;
  });
  // Inconsistent data is not served without a peer.
  await assert.rejects(dev.readv(0, [Buffer.alloc(512)]), /Inconsistent/);
  await dev.primary({ force: true });
  assert.equal(dev.role, "Primary");
  assert.equal(dev.disk, "UpToDate");
  const cur = dev.uuids[0];
  assert.notEqual(cur & ~1n, UUID_JUST_CREATED);
  assert.equal(cur & 1n, 1n, "bit 0 of the current UUID marks a Primary");
  assert.equal(dev.uuids[1], 0n, "a just-created generation is not kept as bitmap UUID");
  const flags = dev.superBlock.flags;
  assert.ok(flags & MDF_PRIMARY_IND && flags & MDF_CONSISTENT);
  await dev.secondary();
  await assert.rejects(dev.writev(0, [Buffer.alloc(512)]), /Secondary refuses writes/);
  await dev.close();
});

test("standalone Primary writes reach the lower device and mark 4 KiB bits out of sync", async (t) => {
  const { lower } = await freshDisk(t);
  const dev = await DrbdDevice.attach({ minor: 1, lower });
  await dev.primary({ force: true });
  const a = pattern(8192, 1); // blocks 16..31 → bits 2..3
  const b = pattern(512, 7); // one sector in bit 1000
  await dev.writev(16, [a.subarray(0, 4096), a.subarray(4096)]);
  await dev.writev(8000, [b]);
  const onLower = Buffer.alloc(8192);
  await lower.readv(16, [onLower]);
  assert.deepEqual(onLower, a);
  const back = Buffer.alloc(512);
  await dev.readv(8000, [back]);
  assert.deepEqual(back, b);
  assert.equal(dev.bitmap.outOfSyncBits, 3);
  assert.ok(dev.bitmap.test(2) && dev.bitmap.test(3) && dev.bitmap.test(1000));
  assert.equal(dev.status().outOfSyncKiB, 12);
  await assert.rejects(dev.writev(dev.blockCount, [Buffer.alloc(512)]), /beyond the end/);
  await dev.close();
});

test("a clean down and re-attach keeps data, bitmap and UUIDs and replays nothing", async (t) => {
  const { lower } = await freshDisk(t);
  let released = 0;
  const dev = await DrbdDevice.attach({ minor: 2, lower, onDetach: () => released++ });
  await dev.primary({ force: true });
  await dev.writev(2048, [pattern(4096, 3)]);
  const uuids = dev.uuids;
  await dev.close();
  assert.equal(released, 1);
  assert.equal(dev.disk, "Diskless");
  await assert.rejects(dev.readv(0, [Buffer.alloc(512)]), /no local disk/);
  const { superBlock } = await readMetadata(lower, { placement: { kind: "internal" } });
  assert.equal(superBlock.magic, DRBD_MD_MAGIC_08);
  assert.ok(superBlock.flags & MDF_AL_CLEAN);
  assert.equal(superBlock.flags & (MDF_PRIMARY_IND | MDF_CRASHED_PRIMARY), 0);

  const again = await DrbdDevice.attach({ minor: 2, lower });
  assert.equal(again.disk, "UpToDate");
  assert.equal(again.bitmap.outOfSyncBits, 1, "only the one written 4 KiB block, no activity-log extent");
  assert.deepEqual(again.uuids, [uuids[0] & ~1n, uuids[1], uuids[2], uuids[3]]);
  const back = Buffer.alloc(4096);
  await again.readv(2048, [back]);
  assert.deepEqual(back, pattern(4096, 3));
  await again.close();
});

test("after a Primary crash the attach applies the activity log: whole hot extents go out of sync", async (t) => {
  const { lower } = await freshDisk(t);
  const dev = await DrbdDevice.attach({ minor: 4, lower, alExtents: 7 });
  await dev.primary({ force: true });
  await dev.writev(0, [pattern(4096, 1)]); // extent 0
  await dev.writev((5 * 4 * MiB) / 512, [pattern(4096, 2)]); // extent 5
  assert.equal(dev.bitmap.outOfSyncBits, 2);
  // No close: the process "crashed" with the metadata in use and PRIMARY_IND set.
  const again = await DrbdDevice.attach({ minor: 4, lower });
  assert.equal(again.bitmap.outOfSyncBits, 2 * 1024, "1024 bits per 4 MiB extent of the log");
  assert.ok(again.bitmap.test(0) && again.bitmap.test(5 * 1024 + 1023));
  assert.ok(again.superBlock.flags & MDF_CRASHED_PRIMARY);
  assert.equal(again.role, "Secondary");
  await again.close();
});

test("out-of-sync bits reach the disk when their extent leaves the activity log, not per write", async (t) => {
  const { lower } = await freshDisk(t, 64);
  const dev = await DrbdDevice.attach({ minor: 7, lower, alExtents: 7 });
  await dev.primary({ force: true });
  const onDisk = async () => {
    const { layout } = await readMetadata(lower, { placement: { kind: "internal" }, allowUnclean: true });
    const bm = await readBitmap(blockDeviceStore(lower), layout);
    return (bit: number) => ((bm[bit >> 3] as number) & (1 << (bit & 7))) !== 0;
  };
  // One 4 KiB block in each of extents 0..6: the log holds all seven, the bitmap on disk is untouched.
  for (let e = 0; e < 7; e++) await dev.writev((e * 4 * MiB) / 512, [pattern(4096, e)]);
  assert.equal(dev.bitmap.outOfSyncBits, 7);
  let bit = await onDisk();
  assert.ok(!bit(0), "no bitmap write for a write whose extent is in the log");
  // An eighth extent evicts extent 0 (least recently used): its bit is written first.
  await dev.writev((7 * 4 * MiB) / 512, [pattern(4096, 7)]);
  bit = await onDisk();
  assert.ok(bit(0), "extent 0's bit is on disk before extent 0 left the log");
  assert.ok(!bit(7 * 1024), "extent 7 is in the log; its bit need not be on disk yet");
  // A crash now: extent 0 comes back from the bitmap, extents 1..7 from the log.
  const again = await DrbdDevice.attach({ minor: 7, lower });
  assert.ok(again.bitmap.test(0));
  for (let e = 1; e <= 7; e++) assert.ok(again.bitmap.test(e * 1024 + 1023), `extent ${e} out of sync`);
  assert.equal(again.bitmap.outOfSyncBits, 1 + 7 * 1024);
  await again.close();
});

test("a Primary promoted without a peer starts a new generation at promotion, once", async (t) => {
  const { lower } = await freshDisk(t);
  const dev = await DrbdDevice.attach({ minor: 5, lower });
  await dev.primary({ force: true });
  await dev.secondary();
  const shared = dev.uuids[0];
  await dev.primary();
  // drbd_set_role: a crashed old Primary coming back must find this side newer even before any write.
  const [cur, bm, h0] = dev.uuids;
  assert.notEqual(cur & ~1n, shared, "promotion without a peer starts a new generation");
  assert.equal(bm, shared, "the old generation is where the bitmap counts from");
  assert.equal(h0, 0n);
  await Promise.all([dev.writev(0, [Buffer.alloc(512, 1)]), dev.writev(8, [Buffer.alloc(512, 2)])]);
  assert.equal(dev.uuids[0], cur, "writes do not start another one");
  await dev.writev(16, [Buffer.alloc(512, 3)]);
  assert.equal(dev.uuids[0], cur, "one new generation per session");
  // While the bitmap UUID still records the divergence, later sessions keep the generation.
  await dev.secondary();
  await dev.primary();
  await dev.writev(24, [Buffer.alloc(512, 4)]);
  assert.equal(dev.uuids[0] & ~1n, cur & ~1n);
  assert.equal(dev.uuids[1], shared);
  await dev.close();
});

test("new-current-uuid --clear-bitmap and invalidate", async (t) => {
  const { lower } = await freshDisk(t);
  const dev = await DrbdDevice.attach({ minor: 6, lower });
  await dev.primary({ force: true });
  await dev.writev(0, [Buffer.alloc(4096, 9)]);
  assert.equal(dev.bitmap.outOfSyncBits, 1);
  await dev.newCurrentUuid({ clearBitmap: true });
  assert.equal(dev.bitmap.outOfSyncBits, 0);
  assert.equal(dev.uuids[1], 0n);
  await assert.rejects(dev.invalidate(), /Primary/);
  await dev.secondary();
  await dev.invalidate();
  assert.equal(dev.disk, "Inconsistent");
  assert.equal(dev.bitmap.outOfSyncBits, dev.layout.bmBits);
  await dev.close();
  const again = await DrbdDevice.attach({ minor: 6, lower });
  assert.equal(again.disk, "Inconsistent");
  assert.equal(again.bitmap.outOfSyncBits, again.layout.bmBits);
  await again.close();
});
