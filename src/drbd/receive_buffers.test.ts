import { test } from "node:test";
import assert from "node:assert/strict";
import { iovLength, type WriteOptions } from "../bdev/bdev.js";
import { ReceivePages, RECEIVE_PAGE } from "./receive_pages.js";
import { ForwardingDevice, link, pattern, sharedGenerationPair } from "./test_support.js";
import type { WireProtocol } from "./connection.js";

// Ports 8150-8159 belong to these tests.

test("receive pages: a copy across socket-read and page boundaries, exhaustion, pages given back", () => {
  const pages = new ReceivePages(4);
  const data = pattern(3 * RECEIVE_PAGE + 512, 3);
  // Three "socket reads" whose boundaries fall inside pages.
  const reads = [data.subarray(0, 1000), data.subarray(1000, 9000), data.subarray(9000)];
  const iov = pages.copyIn(reads, data.length);
  assert.ok(iov);
  assert.deepEqual(
    iov.map((b) => b.length),
    [RECEIVE_PAGE, RECEIVE_PAGE, RECEIVE_PAGE, 512],
  );
  assert.ok(Buffer.concat(iov).equals(data));
  assert.equal(pages.free, 0);
  assert.equal(pages.copyIn([Buffer.alloc(512)], 512), undefined, "no page left");
  pages.give(iov);
  assert.equal(pages.free, 4);
  assert.equal(
    pages.copyIn([Buffer.alloc(5 * RECEIVE_PAGE)], 5 * RECEIVE_PAGE),
    undefined,
    "larger than all",
  );
  const again = pages.copyIn([pattern(RECEIVE_PAGE, 7)], RECEIVE_PAGE);
  assert.ok(again?.[0]?.equals(pattern(RECEIVE_PAGE, 7)), "a page is reused with the new data");
});

/** A lower device whose writes take 15 ms; records the most bytes of writes in flight at once. */
class SlowWrites extends ForwardingDevice {
  slow = false;
  inFlight = 0;
  peak = 0;

  override async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    if (!this.slow) return this.lower.writev(lba, iov, options);
    const bytes = iovLength(iov);
    this.inFlight += bytes;
    this.peak = Math.max(this.peak, this.inFlight);
    try {
      await new Promise((r) => setTimeout(r, 15));
      await this.lower.writev(lba, iov, options);
    } finally {
      this.inFlight -= bytes;
    }
  }
}

for (const [protocol, port] of [
  ["C", 8150],
  ["A", 8152],
] as [WireProtocol, number][]) {
  test(`protocol ${protocol}: max-buffers bounds what the Secondary holds; every write still lands intact`, async (t) => {
    let slowB: SlowWrites | undefined;
    const { a, b, lowerB } = await sharedGenerationPair(t, {
      wrapB: (l) => (slowB = new SlowWrites(l)),
    });
    const ca = link(t, a, port, port + 1, { protocol });
    // 32 pages (128 KiB): the smallest max-buffers drbd.conf allows.
    const cb = link(t, b, port + 1, port, { protocol, maxBuffers: 32 });
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    await a.primary();
    await a.writev(0, [pattern(4096, 0)]); // the extent enters both activity logs
    const slow = slowB as SlowWrites;
    slow.slow = true;
    // 24 writes of 64 KiB and two of 1 MiB (larger than all the pages) at once: 3.5 MiB.
    const writes: [number, Buffer][] = [];
    for (let i = 0; i < 24; i++) writes.push([(i * 65536) / 512, pattern(65536, i + 1)]);
    writes.push([(4 << 20) / 512, pattern(1 << 20, 50)], [(6 << 20) / 512, pattern(1 << 20, 51)]);
    await Promise.all(writes.map(([lba, data]) => a.writev(lba, [data])));
    // Protocol A completes before the peer wrote: wait until B wrote everything.
    const deadline = Date.now() + 20000;
    while ((cb.stats.receivedWrites < 27 || slow.inFlight > 0) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 50));
    for (const [lba, data] of writes) {
      const got = Buffer.alloc(data.length);
      await lowerB.readv(lba, [got]);
      assert.ok(got.equals(data), `the write at LBA ${lba} landed intact`);
    }
    assert.ok(cb.stats.receiveStalls > 0, "the Secondary stopped reading when its pages ran out");
    // The pages (128 KiB), one write larger than them held as socket reads (1 MiB), and what one more read
    // brought before reading stopped; not the 3.5 MiB the Primary sent.
    assert.ok(slow.peak <= (128 + 1024 + 256) * 1024, `${slow.peak} bytes of peer writes in flight at once`);
  });
}
