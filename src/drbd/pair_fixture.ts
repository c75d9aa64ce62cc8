/**
 * Test fixture for two DRBD nodes in one process (split-brain, verify and invalidate tests): two file-backed
 * lower devices that share a data generation, prepared as DRBD's "truck based replication" does (one disk
 * made UpToDate and cleanly detached, then copied byte for byte), and connections on 127.0.0.1.
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import { createMetadata } from "./metadata.js";
import { DrbdDevice } from "./device.js";
import { DrbdConnection, type ConnectionOptions } from "./connection.js";

const MiB = 1024 * 1024;
export const HOST = "127.0.0.1";

interface AfterHook {
  after: (fn: () => Promise<void>) => void;
}

export interface Node {
  dev: DrbdDevice;
  lower: AioBdev;
  path: string;
  minor: number;
}

export interface Pair {
  a: Node;
  b: Node;
}

export async function sharedGenerationPair(t: AfterHook, sizeMiB = 16): Promise<Pair> {
  const dir = await mkdtemp(join(tmpdir(), "drbd-e1-"));
  const pathA = join(dir, "a.img");
  const pathB = join(dir, "b.img");
  const lowerA = await AioBdev.open({
    name: "lowerA",
    path: pathA,
    blockSize: 512,
    blockCount: (sizeMiB * MiB) / 512,
  });
  await createMetadata(lowerA, { placement: { kind: "internal" } });
  const seed = await DrbdDevice.attach({ minor: 0, lower: lowerA });
  await seed.primary({ force: true });
  await seed.close();
  await copyFile(pathA, pathB);
  const lowerB = await AioBdev.open({ name: "lowerB", path: pathB, blockSize: 512 });
  const a: Node = {
    dev: await DrbdDevice.attach({ minor: 0, lower: lowerA }),
    lower: lowerA,
    path: pathA,
    minor: 0,
  };
  const b: Node = {
    dev: await DrbdDevice.attach({ minor: 1, lower: lowerB }),
    lower: lowerB,
    path: pathB,
    minor: 1,
  };
  t.after(async () => {
    for (const n of [a, b]) {
      await n.dev.secondary().catch(() => {});
      await n.dev.close().catch(() => {});
      await n.lower.close();
    }
    await rm(dir, { recursive: true, force: true });
  });
  return { a, b };
}

export function link(
  t: AfterHook,
  dev: DrbdDevice,
  port: number,
  peerPort: number,
  extra: Partial<ConnectionOptions> = {},
): DrbdConnection {
  const c = new DrbdConnection({
    device: dev,
    local: { host: HOST, port },
    peer: { host: HOST, port: peerPort },
    connectIntSec: 1,
    pingIntSec: 1,
    resyncRateKiB: 100000,
    ...extra,
  });
  t.after(() => c.disconnect());
  return c;
}

export const pattern = (bytes: number, seed: number): Buffer => {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
};

/** The data area of both lower devices (metadata excluded) compared byte for byte. */
export async function dataEqual(p: Pair): Promise<boolean> {
  const bytes = p.a.dev.layout.usableSectors * 512;
  const chunk = 1 * MiB;
  const x = Buffer.alloc(chunk);
  const y = Buffer.alloc(chunk);
  for (let off = 0; off < bytes; off += chunk) {
    const n = Math.min(chunk, bytes - off);
    await p.a.lower.readv(off / 512, [x.subarray(0, n)]);
    await p.b.lower.readv(off / 512, [y.subarray(0, n)]);
    if (!x.subarray(0, n).equals(y.subarray(0, n))) return false;
  }
  return true;
}

/** Polls `cond` every 10 ms until true or `ms` passed. */
export async function until(cond: () => boolean, ms = 10000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
