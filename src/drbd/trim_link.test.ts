/**
 * Discards and zeroing replicated to the peer (drbd_send_dblock P_TRIM / P_ZEROES, receive_Data), and the
 * fallback for a peer that did not agree to DRBD_FF_TRIM / DRBD_FF_WZEROES. Ports 7920-7929.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually, link, pattern, sharedGenerationPair } from "./test_support.js";
import type { WireProtocol } from "./connection.js";

const zero = (b: Buffer) => b.every((x) => x === 0);

for (const [protocol, port] of [
  ["C", 7920],
  ["A", 7922],
] as [WireProtocol, number][]) {
  test(`protocol ${protocol}: UNMAP and WRITE ZEROES on the Primary zero the Secondary's blocks (P_TRIM, P_ZEROES)`, async (t) => {
    const { a, b, lowerB } = await sharedGenerationPair(t);
    const ca = link(t, a, port, port + 1, { protocol });
    const cb = link(t, b, port + 1, port, { protocol });
    await Promise.all([ca.connect(), cb.connect()]);
    await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
    await a.primary();
    const data = pattern(512 * 1024, 7);
    const base = 2048; // LBA, 1 MiB into the device
    await a.writev(base, [data]);
    // Unmap 64 KiB (not 4 KiB aligned at its end), zero 100 KiB further on.
    await a.unmap(base + 16, 128 + 3);
    await a.writeZeroes(base + 512, 200);
    const expected = Buffer.from(data);
    expected.fill(0, 16 * 512, (16 + 131) * 512);
    expected.fill(0, 512 * 512, 712 * 512);
    const got = Buffer.alloc(data.length);
    const same = await eventually(async () => {
      await lowerB.readv(base, [got]);
      return got.equals(expected);
    });
    assert.ok(same, "the Secondary's lower device holds the data with the two ranges zeroed");
    assert.ok(zero(got.subarray(16 * 512, 147 * 512)));
    assert.equal(ca.stats.sentDeallocations, 2, "one P_TRIM and one P_ZEROES");
    assert.ok(await eventually(() => cb.stats.receivedDeallocations === 2));
    assert.equal(a.bitmap.outOfSyncBits, 0, "no block left out of sync on the Primary");
    assert.equal(b.bitmap.outOfSyncBits, 0);
    // 9 MiB of data, then one unmap over all of it: three P_TRIM of at most 4 MiB.
    const wide = pattern(9 * 1024 * 1024, 11);
    await a.writev(8 * 2048, [wide]);
    await a.unmap(8 * 2048, wide.length / 512);
    assert.equal(ca.stats.sentDeallocations, 5);
    const gotWide = Buffer.alloc(wide.length);
    assert.ok(
      await eventually(async () => {
        await lowerB.readv(8 * 2048, [gotWide]);
        return zero(gotWide);
      }),
      "the 9 MiB unmap zeroed the peer's blocks",
    );
    assert.equal(a.bitmap.outOfSyncBits, 0);
    assert.equal(ca.state, "Connected");
  });
}

test("a peer without DRBD_FF_TRIM / WZEROES gets zeroes as P_DATA; nothing goes out of sync", async (t) => {
  const { a, b, lowerB } = await sharedGenerationPair(t);
  const ca = link(t, a, 7924, 7925);
  const cb = link(t, b, 7925, 7924, { featureFlags: 0 }); // an older peer: no TRIM, no WZEROES
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  const data = pattern(3 * 1024 * 1024, 3);
  await a.writev(0, [data]);
  const writesBefore = cb.stats.receivedWrites;
  // 2.5 MiB of zeroes: three P_DATA pieces of at most 1 MiB; the unmap reads zeroes on AIO files, so it
  // is sent as zeroes too.
  await a.writeZeroes(1024, 5 * 1024);
  await a.unmap(0, 8);
  const got = Buffer.alloc(data.length);
  await lowerB.readv(0, [got]);
  const expected = Buffer.from(data);
  expected.fill(0, 0, 8 * 512);
  expected.fill(0, 1024 * 512, 6 * 1024 * 512);
  assert.ok(got.equals(expected), "zeroed on the peer through P_DATA");
  assert.equal(cb.stats.receivedDeallocations, 0, "no P_TRIM / P_ZEROES to a peer that did not agree");
  assert.equal(cb.stats.receivedWrites - writesBefore, 4, "three zero pieces and one for the unmap");
  assert.equal(a.bitmap.outOfSyncBits, 0);
});
