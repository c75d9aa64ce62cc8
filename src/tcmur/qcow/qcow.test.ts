import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtemp, open, readFile, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QcowImage } from "./image.js";
import { TcmurHandlerRegistry } from "../handler_registry.js";

const MiB = 1024 * 1024;

function qemuImg(...args: string[]): string {
  return execFileSync("qemu-img", args, { encoding: "utf8" });
}

/** `qemu-img check` as JSON; exit 0 clean, 3 leaks only, 2 corruptions. */
function check(path: string): { status: number | null; corruptions: number; leaks: number; out: string } {
  const r = spawnSync("qemu-img", ["check", "--output=json", path], { encoding: "utf8" });
  const j = JSON.parse(r.stdout || "{}") as { corruptions?: number; leaks?: number };
  return { status: r.status, corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0, out: r.stdout + r.stderr };
}

function compare(raw: string, qcow: string): { status: number | null; out: string } {
  const r = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", "qcow2", raw, qcow], { encoding: "utf8" });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** Deterministic pseudo-random numbers (xorshift32), so a failure reproduces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

async function withDir(label: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `qcow-${label}-`));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Random writes (some unaligned to clusters, some spanning two) and discards on the image and on a
 * raw reference, many in flight at once; then flush and close.
 */
async function randomWorkload(
  img: QcowImage,
  rawPath: string,
  size: number,
  ops: number,
  seed: number,
): Promise<void> {
  const raw = await open(rawPath, "r+");
  const next = rng(seed);
  const sector = 512;
  const inFlight: Promise<void>[] = [];
  const touched: [number, number][] = [];
  const overlaps = (a: number, n: number) => touched.some(([b, m]) => a < b + m && b < a + n);
  for (let i = 0; i < ops; i++) {
    const len = (1 + Math.floor(next() * 256)) * sector;
    const off = Math.floor(next() * ((size - len) / sector)) * sector;
    // Concurrent I/O to one range is the initiator's business (SCSI range locks): keep a batch disjoint.
    if (overlaps(off, len)) {
      await Promise.all(inFlight.splice(0));
      touched.length = 0;
    }
    touched.push([off, len]);
    if (next() < 0.2) {
      inFlight.push(img.discard(off, len));
      await raw.write(Buffer.alloc(len), 0, len, off);
    } else {
      const data = Buffer.alloc(len, i & 0xff);
      data.writeUInt32BE(i, 0);
      inFlight.push(img.writev([data.subarray(0, 512), data.subarray(512)], off));
      await raw.write(data, 0, len, off);
    }
    if (inFlight.length >= 32) {
      await Promise.all(inFlight.splice(0));
      touched.length = 0;
    }
  }
  await Promise.all(inFlight);
  await img.flush();
  await raw.close();
}

for (const { label, opts, size } of [
  { label: "v3, 64 KiB clusters", opts: [], size: 64 * MiB },
  { label: "v3, 4 KiB clusters", opts: ["-o", "cluster_size=4096"], size: 64 * MiB },
  { label: "v2 (compat=0.10)", opts: ["-o", "compat=0.10"], size: 32 * MiB },
  { label: "v3, 1-bit refcounts", opts: ["-o", "refcount_bits=1,cluster_size=4096"], size: 16 * MiB },
  { label: "v3, 64-bit refcounts", opts: ["-o", "refcount_bits=64"], size: 16 * MiB },
]) {
  test(`qcow2 ${label}: random writes and discards match a raw reference, qemu-img check clean`, async () => {
    await withDir("rw", async (dir) => {
      const path = join(dir, "img.qcow2");
      const rawPath = join(dir, "ref.raw");
      qemuImg("create", "-q", "-f", "qcow2", ...opts, path, String(size));
      await writeFile(rawPath, "");
      const fh = await open(rawPath, "r+");
      await fh.truncate(size);
      await fh.close();
      const img = await QcowImage.open(path, { readOnly: false });
      assert.equal(img.sizeBytes, size);
      await randomWorkload(img, rawPath, size, 400, 7);
      // Read back through our reader before closing.
      const ours = Buffer.alloc(size);
      await img.readv([ours], 0);
      await img.close();
      const ref = await open(rawPath);
      const expect = Buffer.alloc(size);
      await ref.read(expect, 0, size, 0);
      await ref.close();
      assert.ok(ours.equals(expect), "our read of the image differs from the raw reference");
      const c = check(path);
      assert.equal(c.status, 0, c.out);
      assert.equal(c.leaks, 0, c.out);
      const cmp = compare(rawPath, path);
      assert.equal(cmp.status, 0, cmp.out);
    });
  });
}

/** refcount_table_offset and refcount_table_clusters from the image's header. */
async function refcountTableOf(path: string): Promise<{ offset: number; clusters: number }> {
  const fh = await open(path);
  const h = Buffer.alloc(64);
  await fh.read(h, 0, 64, 0);
  await fh.close();
  return { offset: Number(h.readBigUInt64BE(48)), clusters: h.readUInt32BE(56) };
}

test("qcow2 with a one-cluster refcount table (512 B clusters, 64-bit refcounts): the table grows, qemu-img check clean, compare equal", async () => {
  await withDir("grow", async (dir) => {
    const path = join(dir, "img.qcow2");
    const rawPath = join(dir, "ref.raw");
    const size = 16 * MiB;
    qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", path, String(size));
    const before = await refcountTableOf(path);
    // 512-byte clusters and 64-bit refcounts: a refcount block counts 64 clusters (32 KiB) and a
    // one-cluster table 64 blocks, so the table is full at 2 MiB of image file.
    assert.equal(before.clusters, 1);
    await writeFile(rawPath, "");
    const fh = await open(rawPath, "r+");
    await fh.truncate(size);
    await fh.close();
    const img = await QcowImage.open(path, { readOnly: false });
    await randomWorkload(img, rawPath, size, 300, 11);
    await img.close();
    const after = await refcountTableOf(path);
    assert.ok(after.clusters >= 3, `the refcount table grew more than once (${after.clusters} clusters)`);
    assert.notEqual(after.offset, before.offset);
    const c = check(path);
    assert.equal(c.status, 0, c.out);
    assert.equal(c.leaks, 0, c.out);
    const cmp = compare(rawPath, path);
    assert.equal(cmp.status, 0, cmp.out);
  });
});

test("qcow2 refcount table growth under kill -9: qemu-img check finds no corruption, the next open frees what leaked", async () => {
  await withDir("growkill", async (dir) => {
    const path = join(dir, "img.qcow2");
    const size = 32 * MiB;
    qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", path, String(size));
    const imageModule = new URL("./image.js", import.meta.url).href;
    // A writer that allocates as fast as it can (64 KiB writes, 16 in flight, moving through the image
    // from a different start each round) until it is killed.
    const writer = `
      const { QcowImage } = await import(${JSON.stringify(imageModule)});
      const img = await QcowImage.open(${JSON.stringify(path)}, { readOnly: false });
      const start = Number(process.argv[1]);
      const chunk = 65536;
      let i = 0;
      for (;;) {
        const batch = [];
        for (let k = 0; k < 16; k++, i++) {
          const off = ((start + i) * chunk) % ${size};
          batch.push(img.writev([Buffer.alloc(chunk, i & 0xff)], off));
        }
        await Promise.all(batch);
        process.stdout.write(".");
      }`;
    let grewDuringKills = 0;
    for (let round = 0; round < 8; round++) {
      const before = await refcountTableOf(path);
      const child = spawn(process.execPath, ["--input-type=module", "-e", writer, String(round * 37)], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      // Kill after a number of batches that varies per round, so the kill lands at different points.
      const batches = 2 + ((round * 5) % 9);
      await new Promise<void>((resolve) => {
        let seen = 0;
        child.stdout.on("data", (d: Buffer) => {
          seen += d.length;
          if (seen >= batches) resolve();
        });
        child.on("exit", () => resolve());
      });
      child.kill("SIGKILL");
      await new Promise((resolve) => child.on("exit", resolve));
      const k = check(path);
      assert.ok(
        k.status === 0 || k.status === 3,
        `round ${round}: qemu-img check exit ${k.status}: ${k.out}`,
      );
      assert.equal(k.corruptions, 0, `round ${round}: ${k.out}`);
      if ((await refcountTableOf(path)).offset !== before.offset) grewDuringKills++;
    }
    assert.ok(grewDuringKills >= 2, `the refcount table grew in only ${grewDuringKills} killed rounds`);
    // Our next writable open repairs leaks (what qemu-img check -r leaks would do).
    await (await QcowImage.open(path, { readOnly: false })).close();
    const clean = check(path);
    assert.equal(clean.status, 0, clean.out);
    assert.equal(clean.leaks, 0, clean.out);
  });
});

test("qcow2 refcount table growth, crash after every write of it: qemu-img check finds at most leaks", async () => {
  await withDir("growcrash", async (dir) => {
    const path = join(dir, "img.qcow2");
    const size = 8 * MiB;
    qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", path, String(size));
    const start = await readFile(path);
    // Record every write the image makes (in issue order: each waits for the previous where order
    // matters), so that the file as a crash after any of them would leave it can be rebuilt.
    const writes: { pos: number; data: Buffer }[] = [];
    const probe = await open(path);
    const proto = Object.getPrototypeOf(probe) as { writev: FileHandle["writev"] };
    await probe.close();
    const realWritev = proto.writev;
    proto.writev = async function (
      this: FileHandle,
      buffers: readonly NodeJS.ArrayBufferView[],
      pos?: number,
    ) {
      const r = await realWritev.call(this, buffers, pos);
      const data = Buffer.concat(buffers.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
      writes.push({ pos: pos ?? 0, data: data.subarray(0, r.bytesWritten) });
      return r;
    } as FileHandle["writev"];
    try {
      const img = await QcowImage.open(path, { readOnly: false });
      for (let off = 0; off < 4 * MiB; off += 64 * 1024)
        await img.writev([Buffer.alloc(64 * 1024, 0x5a)], off);
      await img.close();
    } finally {
      proto.writev = realWritev;
    }
    // Each growth ends with the 12-byte header write of refcount_table_offset and _clusters.
    const switches = writes.flatMap((w, i) => (w.pos === 48 && w.data.length === 12 ? [i] : []));
    assert.ok(switches.length >= 2, `the refcount table grew ${switches.length} times`);
    const crashPath = join(dir, "crash.qcow2");
    let checked = 0;
    for (const at of switches) {
      // From just before the new refcount blocks and table are written (one write ending where the
      // new table ends) to a few writes after the header switch, past the old table's release.
      const tableEnd = Number(writes[at].data.readBigUInt64BE(0)) + writes[at].data.readUInt32BE(8) * 512;
      let from = at - 1;
      while (from >= 0 && writes[from].pos + writes[from].data.length !== tableEnd) from--;
      assert.ok(from >= 0, "the new table's write precedes the header switch");
      for (let n = Math.max(0, from - 1); n <= Math.min(writes.length, at + 8); n++) {
        const image = Buffer.alloc(
          Math.max(start.length, ...writes.slice(0, n).map((w) => w.pos + w.data.length)),
        );
        start.copy(image);
        for (const w of writes.slice(0, n)) w.data.copy(image, w.pos);
        await writeFile(crashPath, image);
        const k = check(crashPath);
        assert.ok(
          k.status === 0 || k.status === 3,
          `crash after write ${n}: qemu-img check exit ${k.status}: ${k.out}`,
        );
        assert.equal(k.corruptions, 0, `crash after write ${n}: ${k.out}`);
        checked++;
      }
    }
    process.stderr.write(
      `refcount table growth: ${switches.length} growths, ${checked} crash points checked\n`,
    );
  });
});

test("qcow2: data written by qemu-io reads back through us, ours through qemu-io", async () => {
  await withDir("io", async (dir) => {
    const path = join(dir, "img.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", path, "16M");
    execFileSync("qemu-io", [
      "-f",
      "qcow2",
      "-c",
      "write -P 0xab 65024 70000",
      "-c",
      "write -z 1M 128k",
      path,
    ]);
    const img = await QcowImage.open(path, { readOnly: false });
    const b = Buffer.alloc(70000);
    await img.readv([b], 65024);
    assert.ok(b.every((x) => x === 0xab));
    await img.writev([Buffer.alloc(4096, 0x5c)], 8 * MiB);
    await img.close();
    const out = execFileSync("qemu-io", ["-f", "qcow2", "-c", `read -P 0x5c ${8 * MiB} 4096`, path], {
      encoding: "utf8",
    });
    assert.match(out, /read 4096\/4096 bytes/);
    assert.doesNotMatch(out, /Pattern verification failed/);
    assert.equal(check(path).status, 0);
  });
});

test("qcow2 with a backing file: unwritten ranges show the backing data, writes copy-on-write, the backing file is untouched", async () => {
  await withDir("backing", async (dir) => {
    const base = join(dir, "base.raw");
    const basePattern = Buffer.alloc(8 * MiB);
    for (let i = 0; i < basePattern.length; i += 4) basePattern.writeUInt32BE(i, i);
    await writeFile(base, basePattern);
    const qbase = join(dir, "base.qcow2");
    qemuImg("convert", "-q", "-f", "raw", "-O", "qcow2", base, qbase);
    for (const [backing, fmt] of [
      [base, "raw"],
      ["base.qcow2", "qcow2"], // relative to the overlay's directory
    ] as const) {
      const overlay = join(dir, `overlay-${fmt}.qcow2`);
      qemuImg("create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, overlay, "16M");
      const img = await QcowImage.open(overlay, { readOnly: false });
      const b = Buffer.alloc(MiB);
      await img.readv([b], 3 * MiB);
      assert.ok(b.equals(basePattern.subarray(3 * MiB, 4 * MiB)));
      // Past the backing file's end: zeroes.
      await img.readv([b], 12 * MiB);
      assert.ok(b.every((x) => x === 0));
      // A 512-byte write inside a 64 KiB cluster keeps the rest of the cluster's backing data.
      await img.writev([Buffer.alloc(512, 0xee)], 2 * MiB + 1024);
      const c = Buffer.alloc(64 * 1024);
      await img.readv([c], 2 * MiB);
      const want = Buffer.from(basePattern.subarray(2 * MiB, 2 * MiB + 65536));
      want.fill(0xee, 1024, 1536);
      assert.ok(c.equals(want));
      // A discard of whole clusters reads as zeroes, not as the backing data.
      await img.discard(4 * MiB, MiB);
      await img.readv([b], 4 * MiB);
      assert.ok(b.every((x) => x === 0));
      await img.close();
      const k = check(overlay);
      assert.equal(k.status, 0, k.out);
      const ref = Buffer.from(basePattern);
      ref.fill(0xee, 2 * MiB + 1024, 2 * MiB + 1536);
      ref.fill(0, 4 * MiB, 5 * MiB);
      const refPath = join(dir, `ref-${fmt}.raw`);
      await writeFile(refPath, Buffer.concat([ref, Buffer.alloc(8 * MiB)]));
      const cmp = compare(refPath, overlay);
      assert.equal(cmp.status, 0, cmp.out);
    }
    const after = await open(base);
    const now = Buffer.alloc(basePattern.length);
    await after.read(now, 0, now.length, 0);
    await after.close();
    assert.ok(now.equals(basePattern));
  });
});

for (const clusterSize of [65536, 4096]) {
  test(`qcow2 compressed clusters (qemu-img convert -c, ${clusterSize / 1024} KiB): read back equal; writes and discards over them free their sectors, qemu-img check clean`, async () => {
    await withDir("compressed", async (dir) => {
      const size = 4 * MiB;
      const src = Buffer.alloc(size);
      const next = rng(3);
      // Text-like data compresses to varied lengths, so several compressed clusters share host clusters.
      for (let i = 0; i < size; i++) src[i] = 0x61 + Math.floor(next() * next() * 20);
      src.fill(0, MiB, MiB + 3 * clusterSize); // all-zero clusters stay unallocated
      const rawPath = join(dir, "ref.raw");
      await writeFile(rawPath, src);
      const path = join(dir, "comp.qcow2");
      qemuImg(
        "convert",
        "-q",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        `cluster_size=${clusterSize}`,
        rawPath,
        path,
      );
      const stored = (await stat(path)).size;
      assert.ok(stored < size * 0.75, `qemu-img compressed the clusters (${stored} bytes for ${size})`);
      const ro = await QcowImage.open(path, { readOnly: true });
      const whole = Buffer.alloc(size);
      await ro.readv([whole.subarray(0, 1000), whole.subarray(1000)], 0);
      await ro.close();
      assert.ok(whole.equals(src), "the inflated image differs from the source");
      const img = await QcowImage.open(path, { readOnly: false });
      await randomWorkload(img, rawPath, size, 120, 5);
      await img.close();
      const c = check(path);
      assert.equal(c.status, 0, c.out);
      assert.equal(c.leaks, 0, c.out);
      const cmp = compare(rawPath, path);
      assert.equal(cmp.status, 0, cmp.out);
    });
  });
}

test("qcow2: images this handler does not serve are refused with the reason", async () => {
  await withDir("refuse", async (dir) => {
    const enc = join(dir, "enc.qcow2");
    // qemu-img times its PBKDF iterations on the thread's CPU clock (crypto/pbkdf.c) and gives up with
    // "Unable to get accurate CPU usage" now and then on a loaded machine: try again, a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        qemuImg(
          "create",
          "-q",
          "-f",
          "qcow2",
          "--object",
          "secret,id=s0,data=pw",
          "-o",
          "encrypt.format=luks,encrypt.key-secret=s0",
          enc,
          "1M",
        );
        break;
      } catch (err) {
        if (attempt >= 5 || !/accurate CPU usage/.test(String(err))) throw err;
      }
    }
    await assert.rejects(
      QcowImage.open(enc, { readOnly: false }),
      /encrypted images \(LUKS\) are not supported/,
    );
    const ext = join(dir, "ext.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", ext, "1M");
    await assert.rejects(QcowImage.open(ext, { readOnly: false }), /extended L2 entries/);
    const notQcow = join(dir, "raw.img");
    await writeFile(notQcow, Buffer.alloc(65536));
    await assert.rejects(QcowImage.open(notQcow, { readOnly: true }), /not a qcow2 image/);
    // Internal snapshots: served read-only (the active image), refused writable, the snapshot intact.
    const snap = join(dir, "snap.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", snap, "1M");
    execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 1M", snap]);
    qemuImg("snapshot", "-c", "s1", snap);
    execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 4096 64k", snap]);
    await assert.rejects(
      QcowImage.open(snap, { readOnly: false }),
      /1 internal snapshot\(s\); it can be served read-only/,
    );
    const ro = await QcowImage.open(snap, { readOnly: true });
    const active = Buffer.alloc(MiB);
    await ro.readv([active], 0);
    await ro.close();
    const wantActive = Buffer.alloc(MiB, 0x11).fill(0x22, 4096, 4096 + 65536);
    assert.ok(active.equals(wantActive), "read-only serving shows the active image");
    const k = check(snap);
    assert.equal(k.status, 0, k.out);
    const snapRaw = join(dir, "s1.raw");
    qemuImg("convert", "-q", "-l", "snapshot.name=s1", "-O", "raw", snap, snapRaw);
    assert.ok((await readFile(snapRaw)).equals(Buffer.alloc(MiB, 0x11)), "the snapshot's data is unchanged");
  });
});

test("qcow handler: /qcow//path through the registry; size is the image's, bs 512 unless given", async () => {
  await withDir("handler", async (dir) => {
    const path = join(dir, "vm.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", path, "8M");
    const reg = new TcmurHandlerRegistry();
    const { backend } = await reg.open({ minor: 4, name: "q", cfgstring: `/qcow/${path}` });
    assert.equal(backend.sizeBytes, 8 * MiB);
    assert.equal(backend.blockSize, 512);
    assert.equal(typeof backend.discard, "function");
    await backend.close();
    const b4k = await reg.open({ minor: 4, name: "q", cfgstring: `/qcow/${path}?bs=4096` });
    assert.equal(b4k.backend.blockSize, 4096);
    await b4k.backend.close();
    await assert.rejects(
      reg.open({ minor: 4, name: "q", cfgstring: `/qcow/${path}?size=16M` }),
      /differs from the image's virtual size/,
    );
    await assert.rejects(
      reg.open({ minor: 4, name: "q", cfgstring: `/qcow/relative.qcow2` }),
      /absolute path/,
    );
  });
});
