/**
 * `primary --force` on a Connected pair of fresh nodes starts the full sync (consider_resync.ts): the way the
 * kernel's DRBD pairs do it, and checked against one in docs/drbd-kernel-interop.md. Ports 7870-7871.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { AioBdev } from "../bdev/aio/aio.js";
import { DrbdDevice } from "./device.js";
import { createMetadata } from "./metadata.js";
import { link, MiB, pattern } from "./test_support.js";

test("primary --force while Connected to an Inconsistent peer: full sync, both UpToDate, disks equal", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "drbd-force-"));
  const lowers = await Promise.all(
    ["a.img", "b.img"].map((f, i) =>
      AioBdev.open({ name: `force${i}`, path: join(dir, f), blockSize: 512, blockCount: (8 * MiB) / 512 }),
    ),
  );
  for (const l of lowers) await createMetadata(l, { placement: { kind: "internal" } });
  const [la, lb] = lowers as [AioBdev, AioBdev];
  // Data that only a's disk holds (below the internal metadata), written before DRBD attaches.
  const content = pattern(4 * MiB, 7);
  await la.writev(0, [content]);
  const a = await DrbdDevice.attach({ minor: 0, lower: la });
  const b = await DrbdDevice.attach({ minor: 1, lower: lb });
  t.after(async () => {
    await a.secondary().catch(() => {});
    await a.close().catch(() => {});
    await b.close().catch(() => {});
    await la.close();
    await lb.close();
    await rm(dir, { recursive: true, force: true });
  });
  const ca = link(t, a, 7870, 7871, { resyncRateKiB: 1 << 20 });
  const cb = link(t, b, 7871, 7870, { resyncRateKiB: 1 << 20 });
  await Promise.all([ca.connect(), cb.connect()]);
  await Promise.all([ca.waitFor("Connected", 20000), cb.waitFor("Connected", 20000)]);
  assert.equal(ca.lastDecision?.rule, 10, "both just created: no sync on connect");
  assert.equal(a.disk, "Inconsistent");

  await a.primary({ force: true });
  await cb.waitFor("SyncTarget", 10000).catch(() => {});
  await Promise.all([ca.waitFor("Connected", 20000), cb.waitFor("Connected", 20000)]);
  assert.deepEqual(
    cb.lastDecision,
    { result: -2, rule: 20 },
    "the peer ran the sync handshake: full sync as target",
  );
  assert.deepEqual(ca.lastDecision, { result: 2, rule: 30 }, "the forced node: full sync as source");
  assert.equal(cb.resyncStats.requestedBlocks, b.layout.bmBits, "every block was synced");
  assert.equal(b.disk, "UpToDate");
  assert.equal(cb.peerDisk, "UpToDate");
  const got = Buffer.alloc(content.length);
  await lb.readv(0, [got]);
  assert.ok(got.equals(content), "b's disk has a's data");
});
