import { after, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  rmSync,
  readSync,
  existsSync,
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
  DRBD_MD_MAGIC_84_UNCLEAN,
  DrbdMetadataError,
  MDF_AL_CLEAN,
  MDF_PRIMARY_IND,
  applyActivityLog,
  blockDeviceStore,
  computeLayout,
  createMetadata,
  decodeSuperBlock,
  encodeSuperBlock,
  openFileStore,
  readBitmap,
  readMetadata,
  writeBitmap,
  writeSuperBlock,
  type MetadataStore,
  type MetaDiskPlacement,
} from "./metadata.js";
import {
  ActivityLog,
  AL_TR_INITIALIZED,
  LC_FREE,
  alRingSlot,
  decodeAlTransaction,
  drbdCrc32c,
  encodeAlTransaction,
  readActivityLog,
  replayActivityLog,
  markExtentsOutOfSync,
  writeAlTransaction,
} from "./activity_log.js";
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

const tempDirs: string[] = [];
after(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** A sparse file of `bytes` bytes in a fresh temporary directory (removed after the tests). */
function tempFile(bytes: number): string {
  const dir = mkdtempSync(join(tmpdir(), "drbdmd-"));
  tempDirs.push(dir);
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

test("metadata: DRBD's crc32c is the Castagnoli CRC from seed 0, not inverted", () => {
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
  // A path works as well as an open store.
  assert.deepEqual((await readMetadata(path, internal)).layout, md.layout);
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
    // A Primary that crashed while attached: unclean magic, PRIMARY_IND, la_size set at attach.
    const crashed = {
      magic: DRBD_MD_MAGIC_84_UNCLEAN,
      flags: MDF_PRIMARY_IND,
      laSizeSect: layout.usableSectors,
    };
    await writeSuperBlock(s, layout, { ...superBlock, ...crashed });
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
  // A crashed Secondary's log is only re-initialized: it had no application writes in flight.
  await withStore(path, async (s) => {
    await writeSuperBlock(s, md.layout, { ...md.superBlock, magic: DRBD_MD_MAGIC_84_UNCLEAN, flags: 0 });
    await writeAlTransaction(s, md.layout, {
      trNumber: 1,
      type: 0,
      updates: [{ slot: 0, extent: 5 }],
      contextSize: 61,
      contextStartSlot: 0,
      context: [],
    });
  });
  assert.equal(await withStore(path, (s) => applyActivityLog(s, internal)), 0);
  assert.ok((await withStore(path, (s) => readMetadata(s, internal))).superBlock.flags & MDF_AL_CLEAN);
});

/** Compares two files 4 MiB at a time (the devices here are hundreds of MiB). */
function sameContents(a: string, b: string): boolean {
  const fa = openSync(a, "r");
  const fb = openSync(b, "r");
  try {
    const ba = Buffer.alloc(4 * MiB);
    const bb = Buffer.alloc(4 * MiB);
    for (let pos = 0; ; pos += ba.length) {
      const na = readSync(fa, ba, 0, ba.length, pos);
      const nb = readSync(fb, bb, 0, bb.length, pos);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

const drbdmeta = ["/usr/sbin/drbdmeta", "/sbin/drbdmeta"].find((p) => existsSync(p));

/** drbd-utils' drbdmeta on a regular file, answering its questions with "yes". */
function runDrbdmeta(args: string[]): string {
  return execFileSync(drbdmeta as string, ["--force", "0", "v08", ...args], {
    input: "yes\nyes\nyes\n",
    timeout: 60_000, // never hang the suite on an unexpected prompt
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
  });
}

test(
  "metadata: byte-identical to drbd-utils' drbdmeta create-md (internal, striped AL, flexible and indexed external)",
  { skip: drbdmeta ? false : "drbdmeta (drbd-utils) is not installed" },
  async () => {
    const cases: {
      size: number;
      mdSize?: number;
      placement: MetaDiskPlacement;
      args: string[];
      stripes?: [number, number];
    }[] = [
      { size: 64 * MiB, placement: { kind: "internal" }, args: ["internal", "create-md"] },
      { size: 200 * MiB + 3584, placement: { kind: "internal" }, args: ["internal", "create-md"] },
      {
        size: 300 * MiB,
        placement: { kind: "internal" },
        args: ["internal", "create-md", "--al-stripes=2", "--al-stripe-size-kB=64"],
        stripes: [2, 16],
      },
      {
        size: 300 * MiB,
        mdSize: 1 * MiB,
        placement: { kind: "flexible" },
        args: ["flex-external", "create-md"],
      },
      {
        size: 300 * MiB,
        mdSize: 300 * MiB,
        placement: { kind: "indexed", index: 1 },
        args: ["1", "create-md"],
      },
    ];
    for (const c of cases) {
      const theirs = tempFile(c.mdSize ?? c.size);
      runDrbdmeta([theirs, ...c.args]);
      const mine = tempFile(c.size);
      const mineMd = c.mdSize ? tempFile(c.mdSize) : undefined;
      const lower = await openFileStore(mine);
      const meta = mineMd ? await openFileStore(mineMd) : undefined;
      await createMetadata(lower, {
        placement: c.placement,
        ...(meta ? { metaStore: meta } : {}),
        ...(c.stripes ? { alStripes: c.stripes[0], alStripeSize4k: c.stripes[1] } : {}),
      });
      await lower.close();
      await meta?.close();
      assert.ok(sameContents(mineMd ?? mine, theirs), `${c.args.join(" ")} on ${c.size} bytes`);
    }
  },
);

test(
  "metadata: apply-al after a Primary crash matches drbdmeta apply-al byte for byte (striped, wrapped ring)",
  { skip: drbdmeta ? false : "drbdmeta (drbd-utils) is not installed" },
  async () => {
    const a = tempFile(300 * MiB);
    await withStore(a, async (s) => {
      const { layout, superBlock } = await createMetadata(s, {
        ...internal,
        alStripes: 2,
        alStripeSize4k: 4,
      });
      const slots = new Array<number>(7).fill(LC_FREE);
      for (let t = 1000; t < 1021; t++) {
        const slot = (t * 3) % 7;
        const extent = (t * 5) % 70;
        await writeAlTransaction(s, layout, {
          trNumber: t,
          type: 0,
          updates: [{ slot, extent }],
          contextSize: 7,
          contextStartSlot: 0,
          context: [...slots],
        });
        slots[slot] = extent;
      }
      const crashed = {
        magic: DRBD_MD_MAGIC_84_UNCLEAN,
        flags: MDF_PRIMARY_IND,
        alNrExtents: 7,
        laSizeSect: layout.usableSectors,
      };
      await writeSuperBlock(s, layout, { ...superBlock, ...crashed });
    });
    // The same device for drbdmeta: a sparse copy of the metadata area (the data area is all zero).
    const b = tempFile(300 * MiB);
    const mdStart = 300 * MiB - 1 * MiB;
    const fa = openSync(a, "r");
    const fb = openSync(b, "r+");
    const chunk = Buffer.alloc(1 * MiB);
    readSync(fa, chunk, 0, chunk.length, mdStart);
    writeSync(fb, chunk, 0, chunk.length, mdStart);
    closeSync(fa);
    closeSync(fb);
    const out = runDrbdmeta([b, "internal", "apply-al"]);
    const marked = await withStore(a, (s) => applyActivityLog(s, internal));
    assert.equal(marked, 7 * 1024);
    assert.ok(sameContents(a, b), `differs from drbdmeta's result (${out.trim()})`);
  },
);

test("metadata: external flexible metadata on its own file, and on a tree block device", async () => {
  const lowerPath = tempFile(256 * MiB);
  const mdPath = tempFile(1 * MiB);
  await assert.rejects(
    createMetadata(lowerPath, { placement: { kind: "flexible" } }),
    /external metadata needs a metadata device/,
  );
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
  const md = await createMetadata(dev, internal);
  assert.equal(md.layout.mdOffsetSect, 32 * 2048 - 8);
  assert.deepEqual((await readMetadata(blockDeviceStore(dev), internal)).superBlock, md.superBlock);
  const sb = Buffer.alloc(4096);
  await dev.readv(32 * 2048 - 8, [sb]);
  assert.equal(sb.readUInt32BE(60), 0x8374026b, "the superblock is on the tree device's last 4 KiB");
});

test("metadata: a short file is a clear error, not a crash", async () => {
  const dir = mkdtempSync(join(tmpdir(), "drbdmd-"));
  tempDirs.push(dir);
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

test("metadata: random superblocks and AL transactions give DrbdMetadataError or a valid result, never a crash", async () => {
  let seed = 0xdbd;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const path = tempFile(64 * MiB);
  const { layout } = await createMetadata(path, internal);
  const store = await openFileStore(path);
  try {
    for (let round = 0; round < 60; round++) {
      const sb = Buffer.from(Array.from({ length: 4096 }, () => rand(256)));
      // Keep the magic and AL_CLEAN valid in most rounds so the later checks are reached.
      if (round % 4 !== 0) {
        sb.writeUInt32BE(0x8374026b, 60);
        sb.writeUInt32BE(sb.readUInt32BE(56) | MDF_AL_CLEAN, 56);
        if (round % 2) sb.writeUInt32BE(4096, 80);
      }
      await store.write(layout.mdOffsetSect * 512, sb);
      try {
        const md = await readMetadata(store, internal);
        assert.ok(md.layout.usableSectors > 0);
      } catch (e) {
        if (!(e instanceof DrbdMetadataError)) assert.fail(`readMetadata threw ${String(e)}`);
      }
    }
    // Well-formed (valid crc) transactions with arbitrary slots and extents replay without crashing.
    const al = Buffer.alloc(8 * 4096);
    for (let t = 0; t < 8; t++) {
      const updates = Array.from({ length: rand(65) }, () => ({
        slot: rand(0x10000),
        extent: rand(0x7fffffff),
      }));
      const context = Array.from({ length: rand(920) }, () => (rand(2) ? LC_FREE : rand(100000)));
      encodeAlTransaction({
        trNumber: rand(0x7fffffff),
        type: 0,
        updates,
        contextSize: rand(0x10000),
        contextStartSlot: rand(0x10000),
        context,
      }).copy(al, t * 4096);
    }
    const hot = replayActivityLog(al, 1, 8);
    // Extents beyond the device are ignored: at most the whole bitmap gets marked.
    const bm = Buffer.alloc(layout.bmBytes);
    assert.ok(markExtentsOutOfSync(bm, layout.bmBits, hot) <= layout.bmBits);
  } finally {
    await store.close();
  }
});

/** A metadata device in memory (a Malloc tree device), for tests that write many transactions. */
async function memoryMetadata(mib: number) {
  const dev = new MallocBdev({ name: `Malloc_al${mib}`, blockSize: 512, blockCount: mib * 2048 });
  const store = blockDeviceStore(dev);
  const { layout } = await createMetadata(store, internal);
  const replay = async () =>
    new Set(replayActivityLog(await readActivityLog(store, layout), layout.alStripes, layout.alStripeSize4k));
  return { store, layout, replay };
}

const EXTENT = 8192; // sectors per 4 MiB extent

test("metadata: the activity log writes one transaction per new extent and replays to its active set", async () => {
  const { store, layout, replay } = await memoryMetadata(64);
  const al = new ActivityLog(store, layout, 7);
  for (const e of [0, 1, 2, 3]) {
    await al.begin(e * EXTENT + 16, 8);
    al.complete(e * EXTENT + 16, 8);
  }
  assert.equal(al.nextTrNumber, 4);
  await al.begin(8, 8); // extent 0 is active: no transaction
  al.complete(8, 8);
  assert.equal(al.nextTrNumber, 4);
  // A write across an extent boundary brings both extents in with one transaction.
  await al.begin(5 * EXTENT - 4, 8);
  al.complete(5 * EXTENT - 4, 8);
  assert.equal(al.nextTrNumber, 5);
  assert.deepEqual(
    [...(await replay())].sort((a, b) => a - b),
    [0, 1, 2, 3, 4, 5],
  );
  // Two more extents: one free slot, then the least recently used (1, since 0 was used again) goes.
  for (const e of [6, 7]) {
    await al.begin(e * EXTENT, 8);
    al.complete(e * EXTENT, 8);
  }
  assert.deepEqual(
    al.activeExtents.sort((a, b) => a - b),
    [0, 2, 3, 4, 5, 6, 7],
  );
  assert.deepEqual(
    [...(await replay())].sort((a, b) => a - b),
    [0, 2, 3, 4, 5, 6, 7],
  );
  assert.throws(() => al.complete(1 * EXTENT, 8), /not pinned/);
});

test("metadata: with every slot pinned, a new extent waits for a completion", async () => {
  const { store, layout } = await memoryMetadata(64);
  const al = new ActivityLog(store, layout, 7);
  for (let e = 0; e < 7; e++) await al.begin(e * EXTENT, 8);
  let done = false;
  const eighth = al.begin(7 * EXTENT, 8).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(done, false, "no slot may be evicted while its extent has writes in flight");
  al.complete(3 * EXTENT, 8);
  await eighth;
  assert.ok(al.activeExtents.includes(7) && !al.activeExtents.includes(3));
});

test("metadata: thousands of transactions over 1237 slots wrap the ring and still replay exactly", async () => {
  const { store, layout, replay } = await memoryMetadata(64);
  const al = new ActivityLog(store, layout, 1237, 0xfffffff0); // tr_number wraps too
  for (let i = 0; i < 3000; i++) {
    const e = (i * 7919) % 5000;
    await al.begin(e * EXTENT, 8);
    al.complete(e * EXTENT, 8);
  }
  assert.ok(al.nextTrNumber < 0x1000, "tr_number wrapped around 2^32");
  assert.equal(al.activeExtents.length, 1237);
  assert.deepEqual(await replay(), new Set(al.activeExtents));
});

test(
  "metadata: drbdmeta apply-al after a crash marks exactly the activity log's active extents",
  { skip: drbdmeta ? false : "drbdmeta (drbd-utils) is not installed" },
  async () => {
    const a = tempFile(300 * MiB);
    const active = await withStore(a, async (s) => {
      const { layout, superBlock } = await createMetadata(s, internal);
      const al = new ActivityLog(s, layout, 7);
      for (const e of [3, 9, 3, 12, 40, 41, 42, 43, 44, 9]) {
        await al.begin(e * EXTENT, 16);
        al.complete(e * EXTENT, 16);
      }
      const crashed = {
        magic: DRBD_MD_MAGIC_84_UNCLEAN,
        flags: MDF_PRIMARY_IND,
        alNrExtents: 7,
        laSizeSect: layout.usableSectors,
      };
      await writeSuperBlock(s, layout, { ...superBlock, ...crashed });
      return al.activeExtents;
    });
    const b = tempFile(300 * MiB);
    const fa = openSync(a, "r");
    const fb = openSync(b, "r+");
    const chunk = Buffer.alloc(1 * MiB);
    readSync(fa, chunk, 0, chunk.length, 299 * MiB);
    writeSync(fb, chunk, 0, chunk.length, 299 * MiB);
    closeSync(fa);
    closeSync(fb);
    runDrbdmeta([b, "internal", "apply-al"]);
    assert.equal(await applyActivityLog(a, internal), active.length * 1024);
    assert.ok(sameContents(a, b), "our apply-al and drbdmeta's leave identical devices");
  },
);
