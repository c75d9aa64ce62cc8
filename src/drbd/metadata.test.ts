import { test } from "node:test";
import assert from "node:assert/strict";
import {
  mkdtempSync,
  writeFileSync,
  readFileSync,
  openSync,
  writeSync,
  closeSync,
  truncateSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AL_TR_INITIALIZED,
  DRBD_MD_MAGIC_84_UNCLEAN,
  DrbdMetadataError,
  MDF_AL_CLEAN,
  LC_FREE,
  alRingSlot,
  applyActivityLog,
  blockDeviceStore,
  computeLayout,
  createMetadata,
  decodeAlTransaction,
  decodeSuperBlock,
  drbdCrc32c,
  encodeAlTransaction,
  encodeSuperBlock,
  openFileStore,
  readActivityLog,
  readBitmap,
  readMetadata,
  replayActivityLog,
  writeAlTransaction,
  writeBitmap,
  writeSuperBlock,
  type MetadataStore,
} from "./metadata.js";
import { MallocBdev } from "../bdev/malloc/malloc.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");
const MiB = 1024 * 1024;
const internal = { placement: { kind: "internal" } as const };

/** Bitwise CRC-32C (reflected 0x82F63B78) from seed 0 without final inversion, as drbd's crc32c(0, …). */
function referenceCrc(b: Buffer): number {
  let crc = 0;
  for (const byte of b) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return crc >>> 0;
}

function tempFile(bytes: number): string {
  const dir = mkdtempSync(join(tmpdir(), "drbdmd-"));
  const p = join(dir, "lower.img");
  writeFileSync(p, "");
  truncateSync(p, bytes);
  return p;
}

async function withStore<T>(path: string, fn: (s: MetadataStore) => Promise<T>): Promise<T> {
  const s = await openFileStore(path);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

test("metadata: internal layout of a 1 GiB device: [data][bitmap][AL][superblock]", () => {
  const l = computeLayout({ lowerSectors: 2097152, ...internal });
  assert.deepEqual(
    [l.mdOffsetSect, l.mdSizeSect, l.alOffset, l.bmOffset, l.usableSectors, l.bmBits, l.bmBytes],
    [2097144, 136, -64, -128, 2097016, 262127, 32768],
  );
  assert.equal(l.mdOffsetSect + l.bmOffset, 2097016, "bitmap starts right after the data");
  assert.equal(l.mdOffsetSect + l.alOffset, 2097080);
  // An unaligned size: the superblock sits in the last whole 4 KiB, one more bitmap 4 KiB is needed.
  const odd = computeLayout({ lowerSectors: 2097152 + 11, ...internal });
  assert.deepEqual([odd.mdOffsetSect, odd.mdSizeSect, odd.usableSectors], [2097152, 144, 2097016]);
  assert.throws(() => computeLayout({ lowerSectors: 64, ...internal }), /too small for internal metadata/);
});

test("metadata: external layouts (flexible and indexed 128 MiB slots)", () => {
  const flex = computeLayout({ lowerSectors: 2097152, metaSectors: 2048, placement: { kind: "flexible" } });
  assert.deepEqual(
    [flex.mdOffsetSect, flex.mdSizeSect, flex.alOffset, flex.bmOffset, flex.usableSectors],
    [0, 2048, 8, 72, 2097152],
  );
  const tiny = computeLayout({ lowerSectors: 2097152, metaSectors: 80, placement: { kind: "flexible" } });
  assert.equal(tiny.usableSectors, 8 * 512 * 8 * 8, "8 bitmap sectors describe 128 MiB");
  const idx = computeLayout({
    lowerSectors: 2097152,
    metaSectors: 3 * 262144,
    placement: { kind: "indexed", index: 2 },
  });
  assert.deepEqual([idx.mdOffsetSect, idx.mdSizeSect, idx.alOffset, idx.bmOffset], [524288, 262144, 8, 72]);
  assert.throws(
    () =>
      computeLayout({ lowerSectors: 2097152, metaSectors: 262144, placement: { kind: "indexed", index: 1 } }),
    /metadata index 1 needs 524288 sectors, the metadata device has 262144/,
  );
});

test("metadata: superblock fields at their byte offsets, big-endian", () => {
  const sb = {
    laSizeSect: 2097016,
    uuids: [0x1234567890abcdefn, 4n, 0xffn, 0n] as [bigint, bigint, bigint, bigint],
    deviceUuid: 0xdeadbeefn,
    flags: 0x81,
    magic: 0x8374026b,
    mdSizeSect: 136,
    alOffset: -64,
    alNrExtents: 1237,
    bmOffset: -128,
    bmBytesPerBit: 4096,
    laPeerMaxBioSize: 1 << 20,
    alStripes: 1,
    alStripeSize4k: 8,
  };
  const b = encodeSuperBlock(sb);
  assert.equal(b.length, 4096);
  assert.deepEqual(
    b.subarray(0, 96),
    hex(
      "00000000001fff78 1234567890abcdef 0000000000000004 00000000000000ff 0000000000000000" +
        "00000000deadbeef 0000000000000000 00000081 8374026b 00000088 ffffffc0 000004d5 ffffff80 00001000" +
        "00100000 00000001 00000008",
    ),
  );
  assert.ok(b.subarray(96).every((x) => x === 0));
  assert.deepEqual(decodeSuperBlock(b), sb);
});

test("metadata: DRBD's crc32c is the seed-0, non-inverted Castagnoli CRC", () => {
  const data = Buffer.from("123456789");
  assert.equal(drbdCrc32c(data), referenceCrc(data));
  const block = Buffer.alloc(4096);
  block.writeUInt32BE(0x69cb65a2, 0);
  block.writeUInt16BE(0xffff, 12);
  assert.equal(drbdCrc32c(block), referenceCrc(block));
});

test("metadata: create-md on a real file writes superblock, initialized AL and a clear bitmap", async () => {
  const path = tempFile(64 * MiB);
  writeFileSync(path, Buffer.alloc(4 * MiB, 0xee), { flag: "r+" }); // old data at the start must survive
  const md = await withStore(path, (s) => createMetadata(s, internal));
  const raw = readFileSync(path);
  // 64 MiB = 131072 sectors: 8 bitmap sectors, md_size 80, superblock at sector 131064.
  const sbAt = 131064 * 512;
  assert.deepEqual(
    raw.subarray(sbAt, sbAt + 96),
    hex(
      "0000000000000000 0000000000000004 0000000000000000 0000000000000000 0000000000000000" +
        "0000000000000000 0000000000000000 00000080 8374026b 00000050 ffffffc0 00000101 ffffffb8 00001000" +
        "00000000 00000001 00000008",
    ),
  );
  const alAt = sbAt - 64 * 512;
  for (let i = 0; i < 8; i++) {
    const blk = raw.subarray(alAt + i * 4096, alAt + (i + 1) * 4096);
    assert.equal(blk.readUInt32BE(0), 0x69cb65a2);
    assert.equal(blk.readUInt16BE(12), AL_TR_INITIALIZED);
    const zeroed = Buffer.from(blk);
    zeroed.writeUInt32BE(0, 8);
    assert.equal(blk.readUInt32BE(8), referenceCrc(zeroed));
  }
  assert.ok(
    raw.subarray(sbAt - 72 * 512, alAt).every((x) => x === 0),
    "bitmap is clear",
  );
  assert.ok(
    raw.subarray(0, 4 * MiB).every((x) => x === 0xee),
    "data area untouched",
  );
  assert.equal(md.layout.usableSectors, 131072 - 80);
  const back = await withStore(path, (s) => readMetadata(s, internal));
  assert.deepEqual(back.superBlock, md.superBlock);
});

test("metadata: read refuses missing, foreign, unclean and mismatched metadata with a reason", async () => {
  const path = tempFile(16 * MiB);
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /lower\.img \(superblock at sector 32760\): no DRBD metadata magic \(found 0x00000000\); run "drbdadm create-md"/,
  );
  const { layout, superBlock } = await withStore(path, (s) => createMetadata(s, internal));
  await withStore(path, (s) =>
    writeSuperBlock(s, layout, { ...superBlock, magic: DRBD_MD_MAGIC_84_UNCLEAN }),
  );
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /found unclean metadata; run "drbdadm apply-al" first/,
  );
  await withStore(path, (s) => writeSuperBlock(s, layout, { ...superBlock, flags: 0 }));
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /apply-al/,
  );
  await withStore(path, (s) => writeSuperBlock(s, layout, { ...superBlock, bmBytesPerBit: 512 }));
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /bm_bytes_per_bit is 512, expected 4096/,
  );
  await withStore(path, (s) => writeSuperBlock(s, layout, { ...superBlock, magic: 0x8374026d }));
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /DRBD 9 \(v09\) metadata/,
  );
  // Growing the lower device moves the expected superblock: the old one is not found there.
  await withStore(path, (s) => writeSuperBlock(s, layout, superBlock));
  truncateSync(path, 16 * MiB + 256 * MiB);
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /no DRBD metadata magic/,
  );
  // A superblock at the right place whose offsets disagree with the size.
  const grown = computeLayout({ lowerSectors: (16 * MiB + 256 * MiB) / 512, ...internal });
  await withStore(path, (s) => writeSuperBlock(s, grown, superBlock));
  await assert.rejects(
    withStore(path, (s) => readMetadata(s, internal)),
    /md_size_sect is 80, expected 96 for this device size/,
  );
});

test("metadata: bitmap words are little-endian, bit n is bit n%8 of byte n/8", async () => {
  const path = tempFile(64 * MiB);
  const { layout } = await withStore(path, (s) => createMetadata(s, internal));
  const bm = Buffer.alloc(layout.bmBytes);
  bm[0] = 1; // bit 0: sectors 0-7
  bm[8] = 2; // bit 65: the second u64 word's bit 1
  await withStore(path, (s) => writeBitmap(s, layout, bm));
  const raw = readFileSync(path);
  const at = (layout.mdOffsetSect + layout.bmOffset) * 512;
  assert.deepEqual(raw.subarray(at, at + 16), hex("0100000000000000 0200000000000000"));
  assert.deepEqual(await withStore(path, (s) => readBitmap(s, layout)), bm);
  assert.equal(raw.readBigUInt64LE(at + 8), 2n);
});

test("metadata: AL transaction block layout and validation", () => {
  const tr = {
    trNumber: 5,
    type: 0,
    updates: [
      { slot: 3, extent: 17 },
      { slot: 4, extent: 99 },
    ],
    contextSize: 1237,
    contextStartSlot: 919,
    context: [7, LC_FREE],
  };
  const b = encodeAlTransaction(tr);
  assert.deepEqual(b.subarray(0, 4), hex("69cb65a2"));
  assert.deepEqual(b.subarray(4, 8), hex("00000005"));
  assert.deepEqual(b.subarray(12, 20), hex("0000 0002 04d5 0397"));
  assert.deepEqual(b.subarray(36, 42), hex("0003 0004 ffff"));
  assert.deepEqual(b.subarray(164, 176), hex("00000011 00000063 ffffffff"));
  assert.deepEqual(b.subarray(420, 432), hex("00000007 ffffffff ffffffff"));
  const zeroed = Buffer.from(b);
  zeroed.writeUInt32BE(0, 8);
  assert.equal(b.readUInt32BE(8), referenceCrc(zeroed));
  const back = decodeAlTransaction(b);
  assert.deepEqual(back?.updates, tr.updates);
  assert.deepEqual(back?.context.slice(0, 2), [7, LC_FREE]);
  b[2000] ^= 1;
  assert.equal(decodeAlTransaction(b), undefined, "a torn block fails its crc");
});

test("metadata: striped AL ring slots follow al_tr_number_to_on_disk_sector", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7, 8].map((t) => alRingSlot(t, 1, 8)),
    [0, 1, 2, 3, 4, 5, 6, 7, 0],
  );
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7].map((t) => alRingSlot(t, 2, 4)),
    [0, 4, 1, 5, 2, 6, 3, 7],
  );
});

test("metadata: replay finds the hot extents across ring wrap, ignoring a torn newest block", async () => {
  const path = tempFile(64 * MiB);
  const { layout } = await withStore(path, (s) =>
    createMetadata(s, { ...internal, alStripes: 2, alStripeSize4k: 4 }),
  );
  assert.equal(layout.alOffset, -64);
  // 11 transactions into an 8-block ring, written as the kernel does: each moves slot t % 3 to extent 100 + t
  // and carries the slots' committed extents (before this update) as context.
  await withStore(path, async (s) => {
    const slots = [LC_FREE, LC_FREE, LC_FREE];
    for (let t = 0; t < 11; t++) {
      await writeAlTransaction(s, layout, {
        trNumber: t,
        type: 0,
        updates: [{ slot: t % 3, extent: 100 + t }],
        contextSize: 3,
        contextStartSlot: 0,
        context: [...slots],
      });
      slots[t % 3] = 100 + t;
    }
  });
  const al = await withStore(path, (s) => readActivityLog(s, layout));
  assert.deepEqual([...replayActivityLog(al, 2, 4)].sort(), [108, 109, 110]);
  // Tear the newest transaction (10: slot 1 -> 110): the state after 9 is slot 0 = 109, 1 = 107, 2 = 108.
  const slot = alRingSlot(10, 2, 4);
  al[slot * 4096 + 100] ^= 0xff;
  assert.deepEqual([...replayActivityLog(al, 2, 4)].sort(), [107, 108, 109]);
  assert.throws(() => replayActivityLog(Buffer.alloc(8 * 4096), 2, 4), /no valid block found/);
});

test("metadata: apply-al after a crash marks the hot extents out of sync and cleans the superblock", async () => {
  const path = tempFile(64 * MiB);
  const { layout, superBlock } = await withStore(path, (s) => createMetadata(s, internal));
  await withStore(path, async (s) => {
    await writeSuperBlock(s, layout, { ...superBlock, magic: DRBD_MD_MAGIC_84_UNCLEAN, flags: 0 });
    await writeAlTransaction(s, layout, {
      trNumber: 0,
      type: 0,
      updates: [
        { slot: 0, extent: 2 },
        { slot: 1, extent: 15 }, // the last extent of a 64 MiB device is partly metadata: fewer bits
      ],
      contextSize: 61,
      contextStartSlot: 0,
      context: [],
    });
  });
  const marked = await withStore(path, (s) => applyActivityLog(s, internal));
  const lastExtentBits = layout.bmBits - 15 * 1024;
  assert.equal(marked, 1024 + lastExtentBits);
  const md = await withStore(path, (s) => readMetadata(s, internal));
  assert.equal(md.superBlock.magic, 0x8374026b);
  assert.ok(md.superBlock.flags & MDF_AL_CLEAN);
  const bm = await withStore(path, (s) => readBitmap(s, md.layout));
  assert.ok(
    bm.subarray(256, 384).every((x) => x === 0xff),
    "extent 2 = bits 2048-3071",
  );
  assert.ok(bm.subarray(0, 256).every((x) => x === 0));
  const al = await withStore(path, (s) => readActivityLog(s, md.layout));
  assert.equal(replayActivityLog(al, 1, 8).size, 0, "the log is re-initialized");
  assert.equal(await withStore(path, (s) => applyActivityLog(s, internal)), 0, "a clean log is a no-op");
});

test("metadata: external flexible metadata on its own file, and on a tree block device", async () => {
  const lowerPath = tempFile(256 * MiB);
  const mdPath = tempFile(1 * MiB);
  const lower = await openFileStore(lowerPath);
  const meta = await openFileStore(mdPath);
  try {
    const created = await createMetadata(lower, { placement: { kind: "flexible" }, metaStore: meta });
    assert.deepEqual(
      [created.layout.mdOffsetSect, created.layout.alOffset, created.layout.bmOffset],
      [0, 8, 72],
    );
    assert.equal(created.layout.usableSectors, 256 * 2048, "external metadata leaves the lower device whole");
    const raw = readFileSync(mdPath);
    assert.equal(raw.readUInt32BE(60), 0x8374026b);
    assert.equal(raw.readInt32BE(68), 8);
    assert.equal(raw.readUInt32BE(64), 2048, "md_size_sect is the whole metadata device");
    const back = await readMetadata(lower, { placement: { kind: "flexible" }, metaStore: meta });
    assert.equal(back.layout.bmBytes, (256 * 2048) / 8 / 8);
  } finally {
    await lower.close();
    await meta.close();
  }
  const dev = new MallocBdev({ name: "Malloc_md", blockSize: 512, blockCount: 32 * 2048 });
  const store = blockDeviceStore(dev);
  const md = await createMetadata(store, internal);
  assert.equal(md.layout.mdOffsetSect, 32 * 2048 - 8);
  assert.deepEqual((await readMetadata(store, internal)).superBlock, md.superBlock);
});

test("metadata: a short file is a clear error, not a crash", async () => {
  const dir = mkdtempSync(join(tmpdir(), "drbdmd-"));
  const p = join(dir, "tiny.img");
  const fd = openSync(p, "w");
  writeSync(fd, Buffer.alloc(4096));
  closeSync(fd);
  await assert.rejects(
    withStore(p, (s) => createMetadata(s, internal)),
    DrbdMetadataError,
  );
  await assert.rejects(openFileStore(join(dir, "missing.img")), /missing\.img: cannot open/);
});
