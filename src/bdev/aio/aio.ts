/**
 * The AIO module (SPDK module/bdev/aio): a block device backed by a regular file or a block device
 * (a disk, a partition, a loop device).
 *
 * I/O goes through the process's I/O engine (src/io_engine): io_uring on the event loop when it is
 * available, else Node's thread pool. flush() is fdatasync; FUA writes are RWF_DSYNC writes to
 * O_DIRECT files and block devices, and writes followed by a shared fdatasync to buffered files
 * (src/io_engine/group_commit.ts). Files on tmpfs are read and written inline (backing.ts).
 *
 * Regular files: UNMAP and WRITE ZEROES punch holes (fallocate PUNCH_HOLE|KEEP_SIZE) through the
 * native addon when it is built and the file system supports holes (probed at open); otherwise they
 * write zeroes in chunks of at most 1 MiB and the device reports supportsUnmap=false.
 *
 * Block devices (opened O_EXCL, and O_DIRECT under io_uring unless `direct: false`; a buffered
 * device's flush and FUA writes are fdatasync of the device, which writes back its dirty pages and
 * flushes its cache): the size and block sizes come from
 * the device (BLKGETSIZE64, BLKSSZGET, BLKPBSZGET); the logical block size defaults to the device's
 * and may be larger, never smaller. UNMAP is BLKDISCARD (reported only when the device discards;
 * discarded blocks are not promised to read as zeroes), WRITE ZEROES is BLKZEROOUT.
 *
 * The UUID is derived from the real path, device and inode number: stable across restarts for the
 * same file, different for a copy, and nothing needs to be stored.
 */
import { createHash } from "node:crypto";
import { realpath } from "node:fs/promises";
import { BackingStore } from "../../io_engine/backing.js";
import type { IoEngineName } from "../../io_engine/engine.js";
import { nativeAddon } from "../../io_engine/native.js";
import { log } from "../../util/log.js";
import { BlockDeviceError, checkRange, iovLength, type BlockDevice, type WriteOptions } from "../bdev.js";

export interface AioOptions {
  /** Registry name, e.g. "AIO0". */
  readonly name: string;
  /** The backing file (created if absent) or block device. */
  readonly path: string;
  /** Logical block size: a power of two, at least 512. Default: a block device's own, else 512. */
  readonly blockSize?: number;
  /** Size in blocks; a smaller file is extended to it. Without it the file's or device's size. */
  readonly blockCount?: number;
  /** Use the native hole-punching helper when available (default true). */
  readonly nativeUnmap?: boolean;
  /**
   * O_DIRECT under io_uring: true for a regular file too; false puts a block device behind its page
   * cache (reads with readahead, writes returning once cached, as tgt's rdwr store does); undefined:
   * block devices O_DIRECT, files not.
   */
  readonly direct?: boolean;
  /** Force the process's I/O engine (USERTGT_IO_ENGINE otherwise). */
  readonly engine?: IoEngineName;
}

type RangeOp = (fd: number, offset: number, length: number) => Promise<void>;

/** Largest WRITE ZEROES chunk written at once when holes cannot be punched. */
const ZERO_CHUNK = 1 << 20;

function isPowerOfTwoBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && (n & (n - 1)) === 0;
}

/** A stable RFC 4122 UUID (version 5 layout) from the file's identity. */
function fileUuid(path: string, dev: number | bigint, ino: number | bigint): string {
  const h = createHash("sha1").update(`usertgt-aio\0${path}\0${dev}\0${ino}`).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** How a device deallocates and zeroes ranges. */
interface RangeOps {
  /** UNMAP: deallocate (undefined: not supported, falls back to zeroing). */
  readonly discard?: RangeOp;
  /** WRITE ZEROES without writing from a buffer (undefined: write zero buffers). */
  readonly zeroOut?: RangeOp;
  readonly discardReadsZeroes: boolean;
}

export class AioBdev implements BlockDevice {
  readonly productName = "AIO disk";
  readonly volatileWriteCache = true;
  private store: BackingStore | undefined;
  /** I/O in flight, so close() can wait for it (a count: no per-I/O closures). */
  private inflight = 0;
  private drained: (() => void) | undefined;
  private zeroes: Buffer | undefined;
  readonly physicalBlockSize?: number;
  readonly optimalTransferBytes?: number;
  readonly maxRequestBytes?: number;
  readonly rotational?: boolean;

  private constructor(
    readonly name: string,
    readonly path: string,
    readonly blockSize: number,
    private count: number,
    readonly uuid: string,
    store: BackingStore,
    private readonly ranges: RangeOps,
  ) {
    this.store = store;
    const bd = store.blockDevice;
    if (bd) {
      if (bd.physicalBlockSize > blockSize) this.physicalBlockSize = bd.physicalBlockSize;
      if (bd.optimalIoSize > 0) this.optimalTransferBytes = bd.optimalIoSize;
      if (bd.maxRequestBytes > 0) this.maxRequestBytes = bd.maxRequestBytes;
      this.rotational = bd.rotational;
    }
  }

  get blockCount(): number {
    return this.count;
  }

  /**
   * Take the file's (or device's) current size as the device's (SPDK bdev_aio_rescan, after the file
   * was grown outside). Shrinking is refused while `mayShrink` is false: blocks in use would vanish.
   * Returns the old and new block counts.
   */
  async rescan(mayShrink: boolean): Promise<{ before: number; after: number }> {
    const size = await this.live().currentSize();
    const after = Math.floor(size / this.blockSize);
    const before = this.count;
    if (after === 0) throw new Error(`AIO ${this.name} (${this.path}): file is now empty`);
    if (after < before && !mayShrink) {
      throw new Error(
        `AIO ${this.name} (${this.path}): file shrank from ${before} to ${after} blocks while in use`,
      );
    }
    this.count = after;
    return { before, after };
  }

  /** True when unmap() deallocates. */
  get supportsUnmap(): boolean {
    return this.ranges.discard !== undefined;
  }

  get unmapReadsZeroes(): boolean {
    return this.ranges.discardReadsZeroes;
  }

  /** The I/O engine serving this device ("io_uring" or "threadpool") and whether O_DIRECT is used. */
  get engine(): { name: string; direct: boolean } {
    const s = this.live();
    return { name: s.engine.name, direct: s.direct };
  }

  /** Open (create if absent) and size the backing file or device. Errors name the device and path. */
  static async open(o: AioOptions): Promise<AioBdev> {
    const what = `AIO ${o.name} (${o.path})`;
    if (o.blockSize !== undefined && !isPowerOfTwoBlockSize(o.blockSize)) {
      throw new Error(`${what}: block size ${o.blockSize} is not a power of two >= 512`);
    }
    if (o.blockCount !== undefined && (!Number.isSafeInteger(o.blockCount) || o.blockCount <= 0)) {
      throw new Error(`${what}: block count ${o.blockCount} must be a positive integer`);
    }
    let store: BackingStore;
    try {
      store = await BackingStore.open(o.path, { create: true, direct: o.direct, engine: o.engine });
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const bd = store.blockDevice;
      const blockSize = o.blockSize ?? bd?.logicalBlockSize ?? 512;
      if (bd && blockSize < bd.logicalBlockSize) {
        throw new Error(
          `${what}: block size ${blockSize} is smaller than the device's logical block size ${bd.logicalBlockSize}`,
        );
      }
      if (store.direct && !bd && blockSize < 4096) {
        // O_DIRECT on a file needs the file system's block alignment; 4096 is safe everywhere.
        throw new Error(`${what}: O_DIRECT on a file needs a block size of at least 4096`);
      }
      let size = store.sizeBytes;
      if (o.blockCount !== undefined && size < o.blockCount * blockSize) {
        if (bd) {
          throw new Error(
            `${what}: the device has ${size} bytes, less than ${o.blockCount} blocks of ${blockSize}`,
          );
        }
        size = o.blockCount * blockSize;
        await store.truncate(size);
      } else if (o.blockCount !== undefined && bd) {
        size = o.blockCount * blockSize;
      }
      if (size === 0) throw new Error(`${what}: file is empty and no block count was given`);
      if (size % blockSize !== 0) {
        if (!bd) {
          throw new Error(`${what}: file size ${size} is not a multiple of the block size ${blockSize}`);
        }
        size -= size % blockSize; // a disk's tail shorter than one logical block is not exported
      }
      const uuid = fileUuid(await realpath(o.path), store.stats.dev, bd ? store.stats.rdev : store.stats.ino);
      const ranges = bd ? blockDeviceRanges(bd.discard) : await fileRanges(o, store, size);
      return new AioBdev(o.name, o.path, blockSize, size / blockSize, uuid, store, ranges);
    } catch (err) {
      await store.close(false);
      throw err;
    }
  }

  private live(): BackingStore {
    if (!this.store) throw new BlockDeviceError(`${this.name}: device is closed`, "closed");
    return this.store;
  }

  private done(): void {
    if (--this.inflight === 0 && this.drained) this.drained();
  }

  private ioError(op: string, lba: number, err: unknown): BlockDeviceError {
    const kind =
      err instanceof BlockDeviceError
        ? err.kind
        : (err as NodeJS.ErrnoException).code === "EIO"
          ? "medium"
          : "io";
    return new BlockDeviceError(
      `${this.name}: ${op} at LBA ${lba} failed on ${this.path}: ${(err as Error).message}`,
      kind,
    );
  }

  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    const s = this.live();
    checkRange(this, lba, iovLength(iov));
    this.inflight++;
    try {
      await s.readv(iov, lba * this.blockSize);
    } catch (err) {
      throw this.ioError("read", lba, err);
    } finally {
      this.done();
    }
  }

  async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    const s = this.live();
    checkRange(this, lba, iovLength(iov));
    this.inflight++;
    try {
      // SBC-3 4.11: FUA data is on the medium before the command completes.
      await s.writev(iov, lba * this.blockSize, options?.fua === true);
    } catch (err) {
      throw this.ioError("write", lba, err);
    } finally {
      this.done();
    }
  }

  async flush(): Promise<void> {
    const s = this.live();
    this.inflight++;
    try {
      await s.flush();
    } catch (err) {
      throw this.ioError("flush", 0, err);
    } finally {
      this.done();
    }
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    const s = this.live();
    checkRange(this, lba, blocks * this.blockSize);
    if (blocks === 0) return;
    const discard = this.ranges.discard;
    if (!discard) return this.writeZeroes(lba, blocks);
    this.inflight++;
    try {
      await discard(s.fd, lba * this.blockSize, blocks * this.blockSize);
    } catch (err) {
      throw this.ioError("unmap", lba, err);
    } finally {
      this.done();
    }
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    const s = this.live();
    checkRange(this, lba, blocks * this.blockSize);
    if (blocks === 0) return;
    const offset = lba * this.blockSize;
    const length = blocks * this.blockSize;
    this.inflight++;
    try {
      const zeroOut = this.ranges.zeroOut;
      await (zeroOut ? zeroOut(s.fd, offset, length) : this.writeZeroChunks(s, offset, length));
    } catch (err) {
      throw this.ioError("write zeroes", lba, err);
    } finally {
      this.done();
    }
  }

  private async writeZeroChunks(s: BackingStore, offset: number, length: number): Promise<void> {
    // One shared zero buffer: writes only read from it.
    this.zeroes ??= Buffer.alloc(Math.min(ZERO_CHUNK, this.blockSize * this.blockCount));
    const zeroes = this.zeroes;
    for (let done = 0; done < length;) {
      const n = Math.min(zeroes.length, length - done);
      await s.writev([zeroes.subarray(0, n)], offset + done);
      done += n;
    }
  }

  /** Wait for in-flight I/O, make writes durable, close the file. Further I/O fails. */
  async close(): Promise<void> {
    const s = this.store;
    if (!s) return;
    this.store = undefined;
    if (this.inflight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    await s.close(true);
  }
}

function blockDeviceRanges(discards: boolean): RangeOps {
  const n = nativeAddon();
  return {
    discard: discards ? n?.blockDiscard : undefined,
    zeroOut: n?.blockZeroOut,
    discardReadsZeroes: false,
  };
}

/** Hole punching when the native helper is there and the file system has holes. */
async function fileRanges(o: AioOptions, store: BackingStore, size: number): Promise<RangeOps> {
  const punch = o.nativeUnmap === false ? undefined : nativeAddon()?.punchHole;
  if (!punch) {
    log.child({ module: "bdev-aio" }).debug("native helper not built: AIO unmap writes zeroes");
    return { discardReadsZeroes: true };
  }
  try {
    // Probe hole support past the end of the file, where punching changes nothing.
    await punch(store.fd, size, 4096);
  } catch (err) {
    log
      .child({ module: "bdev-aio", bdev: o.name })
      .info(
        { code: (err as NodeJS.ErrnoException).code },
        "file system cannot punch holes: unmap writes zeroes",
      );
    return { discardReadsZeroes: true };
  }
  return { discard: punch, zeroOut: punch, discardReadsZeroes: true };
}
