import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
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
    // Compressed clusters: refused when touched, naming the way out.
    const src = join(dir, "src.raw");
    await writeFile(src, Buffer.alloc(MiB, 0x61));
    const comp = join(dir, "comp.qcow2");
    qemuImg("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", src, comp);
    const img = await QcowImage.open(comp, { readOnly: true });
    await assert.rejects(img.readv([Buffer.alloc(512)], 0), /compressed clusters are not supported/);
    await img.close();
    const snap = join(dir, "snap.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", snap, "1M");
    qemuImg("snapshot", "-c", "s1", snap);
    await assert.rejects(
      QcowImage.open(snap, { readOnly: false }),
      /1 internal snapshot\(s\); it can be served read-only/,
    );
    await (await QcowImage.open(snap, { readOnly: true })).close();
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
