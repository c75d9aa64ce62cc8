import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { describe, it } from "node:test";
import { AccountedBdev } from "./accounted_bdev.js";
import { MallocBdev } from "./malloc/malloc.js";

describe("AccountedBdev", () => {
  it("passes on the device's geometry (physical block, optimal and largest request, rotation)", () => {
    const inner = new MallocBdev({ name: "M", blockSize: 512, blockCount: 16 });
    const disk = Object.assign(inner, {
      physicalBlockSize: 4096,
      optimalTransferBytes: 65536,
      maxRequestBytes: 1310720,
      rotational: true,
    });
    const dev = new AccountedBdev(disk);
    assert.deepEqual(
      [dev.physicalBlockSize, dev.optimalTransferBytes, dev.maxRequestBytes, dev.rotational],
      [4096, 65536, 1310720, true],
    );
    const plain = new AccountedBdev(new MallocBdev({ name: "P", blockSize: 512, blockCount: 16 }));
    assert.deepEqual(
      [plain.physicalBlockSize, plain.optimalTransferBytes, plain.maxRequestBytes, plain.rotational],
      [undefined, undefined, undefined, undefined],
    );
  });

  it("counts bytes, operations, latencies and errors per kind", async () => {
    const dev = new AccountedBdev(new MallocBdev({ name: "M", blockSize: 512, blockCount: 16 }));
    const buf = Buffer.alloc(1024, 1);
    await dev.writev(0, [buf]);
    await dev.readv(0, [Buffer.alloc(512)]);
    await dev.unmap(2, 2);
    await assert.rejects(dev.readv(15, [Buffer.alloc(1024)]));
    assert.deepEqual([dev.write.ops, dev.write.bytes, dev.read.ops, dev.read.bytes], [1, 1024, 1, 512]);
    assert.deepEqual([dev.unmapStat.ops, dev.unmapStat.bytes, dev.ioErrors], [1, 1024, 1]);
    assert.ok(dev.read.maxLatencyTicks >= dev.read.minLatencyTicks && dev.read.minLatencyTicks > 0);
    dev.resetStats("maxmin");
    assert.equal(dev.read.maxLatencyTicks, 0);
    assert.equal(dev.read.ops, 1);
    dev.resetStats("all");
    assert.deepEqual([dev.read.ops, dev.ioErrors], [0, 0]);
  });

  it("holds I/O to the IOPS and MB/s limits, and lets it go when the limit is lifted", async () => {
    const dev = new AccountedBdev(new MallocBdev({ name: "M", blockSize: 512, blockCount: 4096 }));
    dev.setQos({ rwIosPerSec: 1000, rwMbytesPerSec: 0, rMbytesPerSec: 0, wMbytesPerSec: 0 });
    let t0 = performance.now();
    await Promise.all(Array.from({ length: 50 }, (_, i) => dev.readv(i, [Buffer.alloc(512)])));
    assert.ok(performance.now() - t0 >= 45, `50 reads at 1000 IOPS took ${performance.now() - t0} ms`);
    // 1 MB/s of writes: 64 KiB per 1 ms slice is far over; 256 KiB in 4 KiB writes needs ~250 ms.
    dev.setQos({ rwIosPerSec: 0, rwMbytesPerSec: 0, rMbytesPerSec: 0, wMbytesPerSec: 1 });
    t0 = performance.now();
    await Promise.all(Array.from({ length: 64 }, (_, i) => dev.writev(i * 8, [Buffer.alloc(4096)])));
    assert.ok(performance.now() - t0 >= 200, `256 KiB at 1 MB/s took ${performance.now() - t0} ms`);
    // Reads are not limited by a write limit.
    t0 = performance.now();
    await Promise.all(Array.from({ length: 64 }, (_, i) => dev.readv(i * 8, [Buffer.alloc(4096)])));
    assert.ok(performance.now() - t0 < 200);
    const slow = Promise.all(Array.from({ length: 200 }, (_, i) => dev.writev(i, [Buffer.alloc(4096)])));
    dev.setQos({ rwIosPerSec: 0, rwMbytesPerSec: 0, rMbytesPerSec: 0, wMbytesPerSec: 0 });
    await slow;
  });
});
