/**
 * Protocol A/B writes are kept until their epoch's P_BARRIER_ACK (tl_release); a connection lost before it
 * marks them out of sync (tl_clear), and an idle sender closes its epoch so nothing lingers unconfirmed.
 * Ports 7928-7929.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { eventually, link, pattern, sharedGenerationPair } from "./test_support.js";

const KiB = 1024;

test("protocol A: confirmed epochs leave nothing out of sync; writes the peer never confirmed are resynced", async (t) => {
  const { a, b, lowerA, lowerB } = await sharedGenerationPair(t);
  const ca = link(t, a, 7928, 7929, { protocol: "A" });
  const cb = link(t, b, 7929, 7928, { protocol: "A", resyncRateKiB: 1 << 16 });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await a.primary();
  const chunk = 16 * KiB; // far below a socket buffer: no write waits for the paused peer
  for (let i = 0; i < 4; i++) await a.writev((i * chunk) / 512, [pattern(chunk, i)]);
  assert.ok(
    await eventually(() => ca.inFlightSectors === 0),
    "the idle sender closed the epoch; it was acked",
  );
  await cb.disconnect();
  assert.ok(await eventually(() => ca.state !== "Connected"));
  assert.equal(ca.stats.unconfirmedMarked, 0);
  assert.equal(a.bitmap.outOfSyncBits, 0, "every write was confirmed by a barrier ack");

  await cb.connect();
  await Promise.all([ca.waitFor("Connected", 10000), cb.waitFor("Connected", 10000)]);
  (cb as unknown as { data: { socket: Socket } }).data.socket.pause();
  for (let i = 4; i < 7; i++) await a.writev((i * chunk) / 512, [pattern(chunk, i)]);
  assert.equal(a.bitmap.outOfSyncBits, 0, "protocol A: complete once sent");
  assert.equal(ca.inFlightSectors, (3 * chunk) / 512);
  await cb.disconnect();
  assert.ok(await eventually(() => ca.state !== "Connected"));
  assert.equal(ca.stats.unconfirmedMarked, 3, "the three unconfirmed writes");
  assert.equal(a.bitmap.outOfSyncBits, (3 * chunk) / 4096);
  await cb.connect();
  assert.ok(await eventually(() => ca.state === "Connected" && cb.state === "Connected", 15000));
  const onA = Buffer.alloc(7 * chunk);
  const onB = Buffer.alloc(7 * chunk);
  await lowerA.readv(0, [onA]);
  await lowerB.readv(0, [onB]);
  assert.ok(onA.equals(onB), "the lost writes were resynced");
  assert.equal(cb.resyncStats.requestedBlocks, (3 * chunk) / 4096);
});
