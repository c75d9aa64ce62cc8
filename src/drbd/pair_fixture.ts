/**
 * Test fixture for two DRBD nodes in one process (split-brain, verify and invalidate tests): two file-backed
 * lower devices that share a data generation, prepared as DRBD's "truck based replication" does (one disk
 * made UpToDate and cleanly detached, then copied byte for byte), and connections on 127.0.0.1.
 */
import type { AioBdev } from "../bdev/aio/aio.js";
import type { DrbdDevice } from "./device.js";
import type { ConnectionOptions, DrbdConnection } from "./connection.js";
import * as base from "./test_support.js";

const { MiB } = base;
export { HOST, pattern } from "./test_support.js";

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

/** test_support's pair (16 MiB by default), one record per node. */
export async function sharedGenerationPair(t: AfterHook, sizeMiB = 16): Promise<Pair> {
  const p = await base.sharedGenerationPair(t, { sizeMiB });
  return {
    a: { dev: p.a, lower: p.lowerA, path: p.pathA, minor: 0 },
    b: { dev: p.b, lower: p.lowerB, path: p.pathB, minor: 1 },
  };
}

/** test_support's link with a fast resync (100 MB/s) unless the test says otherwise. */
export function link(
  t: AfterHook,
  dev: DrbdDevice,
  port: number,
  peerPort: number,
  extra: Partial<ConnectionOptions> = {},
): DrbdConnection {
  return base.link(t, dev, port, peerPort, { resyncRateKiB: 100000, ...extra });
}

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
