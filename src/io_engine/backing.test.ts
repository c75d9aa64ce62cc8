/**
 * BackingStore through both engines on regular files: more requests in flight than the io_uring
 * engine has slots (they wait and drain), O_DIRECT from unaligned buffers with more requests than
 * bounce chunks, vectors longer than IOV_MAX, and reads past the end of the file.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, statfs } from "node:fs/promises";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { BackingStore } from "./backing.js";
import type { IoEngineName } from "./engine.js";
import { UringEngine } from "./uring.js";

function block(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let j = 0; j + 4 <= size; j += 4) b.writeUInt32LE((i * 2654435761 + j) >>> 0, j);
  return b;
}

for (const engine of ["io_uring", "threadpool"] as IoEngineName[]) {
  describe(`BackingStore (${engine})`, () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "usertgt-backing-"));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("2000 writes and reads in flight at once all land where they belong", async () => {
      const path = join(dir, "many.img");
      const s = await BackingStore.open(path, { create: true, engine });
      try {
        assert.equal(s.engine.name, engine);
        await s.truncate(2000 * 4096);
        await Promise.all(
          Array.from({ length: 2000 }, (_, i) => s.writev([block(i, 4096)], i * 4096, i % 7 === 0)),
        );
        const outs = Array.from({ length: 2000 }, () => Buffer.alloc(4096));
        await Promise.all(outs.map((b, i) => s.readv([b], i * 4096)));
        outs.forEach((b, i) => assert.deepEqual(b, block(i, 4096), `block ${i}`));
        await s.flush();
      } finally {
        await s.close(true);
      }
      const file = await readFile(path);
      assert.deepEqual(file.subarray(1234 * 4096, 1235 * 4096), block(1234, 4096));
    });

    it("O_DIRECT from unaligned buffers: more requests than bounce chunks, larger than a chunk", async () => {
      const path = join(dir, "direct.img");
      const s = await BackingStore.open(path, { create: true, direct: true, engine });
      try {
        // O_DIRECT only under io_uring (the thread pool uses the page cache).
        assert.equal(s.direct, engine === "io_uring");
        const size = 192 * 1024;
        await s.truncate(100 * size + 1024 * 1024);
        // subarray(1) of a larger buffer: never page aligned.
        const datas = Array.from({ length: 100 }, (_, i) => block(i, size + 1).subarray(1));
        await Promise.all(datas.map((d, i) => s.writev([d], i * size, i % 3 === 0)));
        const outs = datas.map(() => Buffer.alloc(size + 1).subarray(1));
        await Promise.all(outs.map((b, i) => s.readv([b], i * size)));
        outs.forEach((b, i) => assert.deepEqual(b, datas[i], `request ${i}`));
        // 1 MiB in one request (several bounce chunks), in 2048 buffers (beyond IOV_MAX).
        const big = block(7, 1024 * 1024 + 1).subarray(1);
        const parts: Buffer[] = [];
        for (let off = 0; off < big.length; off += 512) parts.push(big.subarray(off, off + 512));
        await s.writev(parts, 100 * size, true);
        const back = Buffer.alloc(big.length);
        await s.readv([back], 100 * size);
        assert.deepEqual(back, big);
      } finally {
        await s.close(true);
      }
    });

    it("O_DIRECT one request at a time: each completion reaches the event loop on its own", async () => {
      // Nothing else is in flight, so each completion must arrive through the eventfd alone
      // (with deferred task work: the signal, then io_uring_get_events posts the CQE).
      const s = await BackingStore.open(join(dir, "qd1.img"), { create: true, direct: true, engine });
      try {
        await s.truncate(64 * 4096);
        const buf = Buffer.alloc(4096 + 1).subarray(1);
        for (let i = 0; i < 64; i++) {
          await s.writev([block(i, 4096)], i * 4096, i % 8 === 0);
          await s.readv([buf], i * 4096);
          assert.deepEqual(buf, block(i, 4096), `block ${i}`);
        }
        if (s.engine instanceof UringEngine) {
          const [major, minor] = release().split(".").map(Number);
          // IORING_SETUP_DEFER_TASKRUN is Linux 6.1; COOP_TASKRUN 5.19.
          const want = major > 6 || (major === 6 && minor >= 1) ? "deferred" : undefined;
          if (want) assert.equal(s.engine.completionMode, want);
        }
      } finally {
        await s.close(true);
      }
    });

    it("reads past the end of the file fill zeroes", async () => {
      const s = await BackingStore.open(join(dir, "short.img"), { create: true, engine });
      try {
        await s.writev([Buffer.alloc(4096, 0xaa)], 0);
        const out = Buffer.alloc(8192, 0x55);
        await s.readv([out], 0);
        assert.deepEqual(out, Buffer.concat([Buffer.alloc(4096, 0xaa), Buffer.alloc(4096)]));
      } finally {
        await s.close(false);
      }
    });
  });
}

describe("BackingStore on tmpfs (inline reads and writes)", () => {
  const shm = "/dev/shm";
  it(
    "reads and writes a /dev/shm file inline, through both engines",
    { skip: !existsSync(shm) },
    async () => {
      const dir = await mkdtemp(join(shm, "usertgt-backing-"));
      try {
        for (const engine of ["io_uring", "threadpool"] as IoEngineName[]) {
          const path = join(dir, `${engine}.img`);
          const s = await BackingStore.open(path, { create: true, engine });
          try {
            assert.equal(s.inMemory, true);
            await s.truncate(256 * 4096);
            await Promise.all(
              Array.from({ length: 256 }, (_, i) => s.writev([block(i, 4096)], i * 4096, i % 5 === 0)),
            );
            // Two buffers per read, and one read that runs past the end of the file (zero-filled).
            const outs = Array.from({ length: 256 }, () => [Buffer.alloc(1024), Buffer.alloc(3072)]);
            await Promise.all(outs.map((b, i) => s.readv(b, i * 4096)));
            outs.forEach((b, i) => assert.deepEqual(Buffer.concat(b), block(i, 4096), `block ${i}`));
            const tail = Buffer.alloc(8192, 0x55);
            await s.readv([tail], 255 * 4096);
            assert.deepEqual(tail, Buffer.concat([block(255, 4096), Buffer.alloc(4096)]));
          } finally {
            await s.close(true);
          }
          const file = await readFile(path);
          assert.deepEqual(file.subarray(77 * 4096, 78 * 4096), block(77, 4096));
        }
        const onDisk = await BackingStore.open(join(tmpdir(), `usertgt-backing-${process.pid}.img`), {
          create: true,
        });
        try {
          const fsType = (await statfs(tmpdir())).type;
          assert.equal(onDisk.inMemory, fsType === 0x01021994 || fsType === 0x858458f6);
        } finally {
          await onDisk.close(false);
          await rm(onDisk.path, { force: true });
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
