/**
 * Test set-up shared by the DRBD link tests (connection, trim_link, ahead_behind, and through
 * pair_fixture.ts the split-brain, verify and invalidate tests): two attached devices on AIO files that
 * share one data generation, and a connection factory on 127.0.0.1.
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AioBdev } from "../bdev/aio/aio.js";
import type { BlockDevice, WriteOptions } from "../bdev/bdev.js";
import { createMetadata } from "./metadata.js";
import { DrbdDevice, type DrbdAttachOptions } from "./device.js";
import { DrbdConnection, type ConnectionOptions } from "./connection.js";

export const MiB = 1024 * 1024;
export const HOST = "127.0.0.1";

interface After {
  after: (fn: () => Promise<void>) => void;
}

export interface Pair {
  a: DrbdDevice;
  b: DrbdDevice;
  lowerA: AioBdev;
  lowerB: AioBdev;
  pathA: string;
  pathB: string;
}

/**
 * Two nodes sharing a data generation the way "truck based replication" makes them: one disk made UpToDate
 * (primary --force), cleanly detached and copied byte for byte. `wrapB` may put a wrapper (a slow disk)
 * between the second device and its file.
 */
export async function sharedGenerationPair(
  t: After,
  opts: {
    sizeMiB?: number;
    wrapB?: (lower: BlockDevice) => BlockDevice;
    /** More attach options of the second device (on-io-error, handlers). */
    attachB?: Pick<DrbdAttachOptions, "onIoError" | "handlers" | "diskTimeoutMs">;
  } = {},
): Promise<Pair> {
  const dir = await mkdtemp(join(tmpdir(), "drbd-e2-"));
  const pathA = join(dir, "a.img");
  const pathB = join(dir, "b.img");
  const lowerA = await AioBdev.open({
    name: "lowerA",
    path: pathA,
    blockSize: 512,
    blockCount: ((opts.sizeMiB ?? 32) * MiB) / 512,
  });
  await createMetadata(lowerA, { placement: { kind: "internal" } });
  const seed = await DrbdDevice.attach({ minor: 0, lower: lowerA });
  await seed.primary({ force: true });
  await seed.close();
  await copyFile(pathA, pathB);
  const lowerB = await AioBdev.open({ name: "lowerB", path: pathB, blockSize: 512 });
  const a = await DrbdDevice.attach({ minor: 0, lower: lowerA });
  const b = await DrbdDevice.attach({
    minor: 1,
    lower: opts.wrapB ? opts.wrapB(lowerB) : lowerB,
    ...opts.attachB,
  });
  t.after(async () => {
    await a.secondary().catch(() => {});
    await a.close().catch(() => {});
    await b.close().catch(() => {});
    await lowerA.close();
    await lowerB.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { a, b, lowerA, lowerB, pathA, pathB };
}

/** A connection of `dev` listening on `port` and reaching its peer on `peerPort`; disconnected after the test. */
export function link(
  t: After,
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
    ...extra,
  });
  t.after(() => c.disconnect());
  return c;
}

export function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

/** Polls `check` every 20 ms until it holds or `ms` pass; returns whether it held. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A block device that passes everything to `lower` with its geometry: tests extend it and override the
 * requests they make slow or failing.
 */
export class ForwardingDevice implements BlockDevice {
  readonly name: string;
  readonly productName: string;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid: string;
  readonly volatileWriteCache: boolean;
  readonly supportsUnmap: boolean;
  readonly unmapReadsZeroes: boolean;

  constructor(protected readonly lower: BlockDevice) {
    this.name = lower.name;
    this.productName = lower.productName;
    this.blockSize = lower.blockSize;
    this.blockCount = lower.blockCount;
    this.uuid = lower.uuid;
    this.volatileWriteCache = lower.volatileWriteCache;
    this.supportsUnmap = lower.supportsUnmap;
    this.unmapReadsZeroes = lower.unmapReadsZeroes;
  }

  readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    return this.lower.readv(lba, iov);
  }

  writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    return this.lower.writev(lba, iov, options);
  }

  flush(): Promise<void> {
    return this.lower.flush();
  }

  unmap(lba: number, blocks: number): Promise<void> {
    return this.lower.unmap(lba, blocks);
  }

  writeZeroes(lba: number, blocks: number): Promise<void> {
    return this.lower.writeZeroes(lba, blocks);
  }

  close(): Promise<void> {
    return this.lower.close();
  }
}
