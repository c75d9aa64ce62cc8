/**
 * Resync speed on a real link (ports 8030-8033): with a c-fill-target large enough for the link, the
 * dynamic controller runs a full resync at c-max-rate; application writes during a resync complete promptly
 * while the resync backs off (c-min-rate), and the resync finishes afterwards with both copies equal.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dataEqual, link, pattern, sharedGenerationPair, until } from "./pair_fixture.js";
import type { ConnectionOptions } from "./connection.js";

const KiB = 1024;

async function invalidatedPair(
  t: { after: (fn: () => Promise<void>) => void },
  port: number,
  sizeMiB: number,
  opts: Partial<ConnectionOptions>,
) {
  const pair = await sharedGenerationPair(t, sizeMiB);
  const ca = link(t, pair.a.dev, port, port + 1, opts);
  const cb = link(t, pair.b.dev, port + 1, port, opts);
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected"), cb.waitFor("Connected")]);
  await pair.a.dev.primary();
  await until(() => cb.peerRole === "Primary", 2000, "peer role");
  return { pair, ca, cb };
}

test("dynamic controller, c-fill-target for a fast link: a full resync runs at c-max-rate (8 MiB/s ±25 %)", async (t) => {
  // Low enough that a machine loaded by other work still has the CPU for it (20 MiB/s was not always).
  const cMaxRateKiB = 8 * KiB;
  const { pair, ca, cb } = await invalidatedPair(t, 8030, 32, {
    resyncRateKiB: 250,
    resyncControl: { cPlanAhead: 20, cFillTarget: 1 << 20, cDelayTarget: 10, cMaxRateKiB, cMinRateKiB: 250 },
  });
  await cb.invalidate();
  await cb.waitFor("SyncTarget", 5000);
  const started = Date.now();
  await Promise.all([ca.waitFor("Connected", 30000), cb.waitFor("Connected", 30000)]);
  const seconds = (Date.now() - started) / 1000;
  const kib = cb.resyncStats.total * 4;
  const rate = kib / seconds;
  process.stderr.write(
    `resync_rate_link: ${kib} KiB in ${seconds.toFixed(2)} s = ${Math.round(rate)} KiB/s\n`,
  );
  assert.ok(
    rate >= cMaxRateKiB * 0.75 && rate <= cMaxRateKiB * 1.25,
    `${Math.round(rate)} KiB/s, want c-max-rate ${cMaxRateKiB} KiB/s ±25 %`,
  );
  assert.ok(await dataEqual(pair));
});

test("c-min-rate: application writes during a resync complete promptly; the resync backs off, then finishes", async (t) => {
  const cMinRateKiB = 1024;
  const { pair, ca, cb } = await invalidatedPair(t, 8032, 48, {
    resyncRateKiB: 8 * KiB,
    resyncControl: { cPlanAhead: 0, cFillTarget: 100, cDelayTarget: 10, cMaxRateKiB: 100 * KiB, cMinRateKiB },
  });
  const dev = pair.a.dev;
  await cb.invalidate();
  await cb.waitFor("SyncTarget", 5000);
  // Unthrottled first: 1 s at resync-rate 8 MiB/s.
  await new Promise((r) => setTimeout(r, 1000));
  const bits0 = dev.bitmap.outOfSyncBits;
  // Application writes for 2 s: two writers, each a 4 KiB write every 5 ms, each write timed.
  const latencies: number[] = [];
  const windowStart = Date.now();
  const writer = async (w: number) => {
    for (let i = 0; Date.now() - windowStart < 2000; i++) {
      const at = Date.now();
      await dev.writev((((i * 2 + w) * 997) % 10000) * 8, [pattern(4096, i)]);
      latencies.push(Date.now() - at);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await Promise.all([writer(0), writer(1)]);
  const windowSeconds = (Date.now() - windowStart) / 1000;
  const duringKiB = ((bits0 - dev.bitmap.outOfSyncBits) * 4) / windowSeconds;
  const max = Math.max(...latencies);
  process.stderr.write(
    `resync_rate_link: ${latencies.length} writes, max ${max} ms; resync ${Math.round(duringKiB)} KiB/s during them\n`,
  );
  assert.equal(cb.state, "SyncTarget", "still resyncing");
  assert.ok(max < 1000, `an application write took ${max} ms during the resync`);
  // Backed off: far below resync-rate while the writes ran (it resumes once its recent rate is under c-min-rate).
  assert.ok(duringKiB < 4 * KiB, `resync ran at ${Math.round(duringKiB)} KiB/s during application writes`);
  await Promise.all([ca.waitFor("Connected", 60000), cb.waitFor("Connected", 60000)]);
  assert.ok(await dataEqual(pair), "both copies equal after the resync");
});

test("c-min-rate on the SyncSource: application reads there slow the resync down, then it finishes", async (t) => {
  const { pair, ca, cb } = await invalidatedPair(t, 8032, 48, {
    resyncRateKiB: 8 * KiB,
    resyncControl: {
      cPlanAhead: 0,
      cFillTarget: 100,
      cDelayTarget: 10,
      cMaxRateKiB: 100 * KiB,
      cMinRateKiB: 1024,
    },
  });
  const dev = pair.a.dev;
  await cb.invalidate();
  await cb.waitFor("SyncTarget", 5000);
  await new Promise((r) => setTimeout(r, 1000));
  // Reads are not mirrored: only the SyncSource sees them (drbd_rs_c_min_rate_throttle's disk events).
  const bits0 = dev.bitmap.outOfSyncBits;
  const windowStart = Date.now();
  const buf = Buffer.alloc(64 * KiB);
  let reads = 0;
  while (Date.now() - windowStart < 2000) {
    await dev.readv(((reads * 16) % 10000) * 8, [buf]);
    reads++;
    await new Promise((r) => setTimeout(r, 5));
  }
  const duringKiB = ((bits0 - dev.bitmap.outOfSyncBits) * 4) / ((Date.now() - windowStart) / 1000);
  process.stderr.write(
    `resync_rate_link: ${reads} reads on the SyncSource; resync ${Math.round(duringKiB)} KiB/s\n`,
  );
  assert.equal(cb.state, "SyncTarget", "still resyncing");
  assert.ok(duringKiB < 4 * KiB, `resync ran at ${Math.round(duringKiB)} KiB/s during application reads`);
  await Promise.all([ca.waitFor("Connected", 60000), cb.waitFor("Connected", 60000)]);
  assert.ok(await dataEqual(pair), "both copies equal after the resync");
});

test("c-min-rate on the SyncSource: application writes before the resync do not count as I/O during it (ports 8250-8251)", async (t) => {
  const { pair, ca, cb } = await invalidatedPair(t, 8250, 16, {
    resyncRateKiB: 4 * KiB * KiB,
    resyncControl: {
      cPlanAhead: 0,
      cFillTarget: 100,
      cDelayTarget: 10,
      cMaxRateKiB: 100 * KiB,
      cMinRateKiB: 250,
    },
  });
  // 1 MiB of application writes on the Primary, all done before the resync starts.
  for (let i = 0; i < 16; i++) await pair.a.dev.writev(i * 16 * 8, [pattern(64 * KiB, i)]);
  await cb.invalidate();
  await cb.waitFor("SyncTarget", 5000);
  await Promise.all([ca.waitFor("Connected", 30000), cb.waitFor("Connected", 30000)]);
  // drbd_rs_controller_reset takes the disk's counters at the start: nothing ran during this resync, so the
  // SyncSource never held a request back.
  assert.equal(ca.resyncStats.throttledRequests, 0, "requests held back for c-min-rate");
  assert.ok(await dataEqual(pair), "both copies equal after the resync");
});
