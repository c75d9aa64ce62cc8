/**
 * The resync controller on a real link: a full initial sync over loopback TCP paced by the dynamic
 * controller (c-plan-ahead > 0) stays under c-max-rate, and a fixed-rate one (c-plan-ahead 0) under
 * resync-rate. Ports 7940-7943.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { createMetadata } from "./metadata.js";
import { DrbdDevice } from "./device.js";
import { DrbdConnection, type ConnectionOptions } from "./connection.js";

const MiB = 1024 * 1024;

async function fullSync(
  t: { after: (fn: () => Promise<void>) => void },
  port: number,
  target: Partial<ConnectionOptions>,
): Promise<{ ms: number; blocks: number; equal: boolean }> {
  const dir = await mkdtemp(join(tmpdir(), "drbd-rsctl-"));
  const lowers = await Promise.all(
    ["a.img", "b.img"].map((f, i) =>
      AioBdev.open({ name: `rs${i}`, path: join(dir, f), blockSize: 4096, blockCount: (8 * MiB) / 4096 }),
    ),
  );
  for (const l of lowers) await createMetadata(l, { placement: { kind: "internal" } });
  const [la, lb] = lowers as [AioBdev, AioBdev];
  const a = await DrbdDevice.attach({ minor: 0, lower: la });
  const b = await DrbdDevice.attach({ minor: 1, lower: lb });
  const conns: DrbdConnection[] = [];
  t.after(async () => {
    for (const c of conns) await c.disconnect();
    await a.secondary().catch(() => {});
    await a.close().catch(() => {});
    await b.close().catch(() => {});
    await la.close();
    await lb.close();
    await rm(dir, { recursive: true, force: true });
  });
  await a.primary({ force: true });
  const content = Buffer.alloc(a.blockCount * a.blockSize);
  for (let i = 0; i < content.length; i += 4096) content.writeUInt32BE(i / 4096 + 1, i);
  await a.writev(0, [content]);
  const common = { connectIntSec: 1, pingIntSec: 1 };
  const ca = new DrbdConnection({
    device: a,
    local: { host: "127.0.0.1", port },
    peer: { host: "127.0.0.1", port: port + 1 },
    ...common,
  });
  const cb = new DrbdConnection({
    device: b,
    local: { host: "127.0.0.1", port: port + 1 },
    peer: { host: "127.0.0.1", port },
    ...common,
    ...target,
  });
  conns.push(ca, cb);
  const started = Date.now();
  await Promise.all([ca.connect(), cb.connect()]);
  await cb.waitFor("SyncTarget", 10000);
  await Promise.all([ca.waitFor("Connected", 30000), cb.waitFor("Connected", 30000)]);
  const ms = Date.now() - started;
  const got = Buffer.alloc(content.length);
  await lb.readv(0, [got]);
  return { ms, blocks: cb.resyncStats.requestedBlocks, equal: got.equals(content) };
}

test("dynamic controller: a full sync runs at no more than c-max-rate", async (t) => {
  // ~8 MiB at c-max-rate 4 MiB/s: about 2 s, however high resync-rate (the first turn's guess) is.
  const r = await fullSync(t, 7940, {
    resyncRateKiB: 1 << 20,
    resyncControl: { cPlanAhead: 20, cFillTarget: 4096, cDelayTarget: 10, cMaxRateKiB: 4096, cMinRateKiB: 0 },
  });
  assert.ok(r.equal, "the target's disk equals the source's");
  assert.ok(r.blocks >= 2000, `only ${r.blocks} blocks requested`);
  assert.ok(r.ms >= 1500, `~8 MiB at c-max-rate 4 MiB/s took only ${r.ms} ms`);
});

test("c-plan-ahead 0: a full sync runs at resync-rate", async (t) => {
  const r = await fullSync(t, 7942, {
    resyncRateKiB: 4096,
    resyncControl: {
      cPlanAhead: 0,
      cFillTarget: 100,
      cDelayTarget: 10,
      cMaxRateKiB: 1 << 20,
      cMinRateKiB: 0,
    },
  });
  assert.ok(r.equal, "the target's disk equals the source's");
  assert.ok(r.ms >= 1500, `~8 MiB at resync-rate 4 MiB/s took only ${r.ms} ms`);
});
