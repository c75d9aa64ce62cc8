/**
 * The AIO module (SPDK module/bdev/aio): a block device backed by a regular file.
 *
 * I/O goes through FileHandle.readv/writev at explicit positions, which libuv runs on its thread
 * pool, so the event loop never waits for the disk; short transfers (and vectors longer than
 * IOV_MAX, which libuv splits) are continued until done. flush() and FUA writes use fdatasync.
 *
 * UNMAP and WRITE ZEROES punch holes (fallocate PUNCH_HOLE|KEEP_SIZE) through the optional native
 * helper in native/ when it is built and the file system supports holes (probed at open); otherwise
 * they write zeroes in chunks of at most 1 MiB and the device reports supportsUnmap=false.
 *
 * The UUID is derived from the file's real path, device and inode number: stable across restarts
 * for the same file, different for a copy, and nothing needs to be stored.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { open, realpath, type FileHandle } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { log } from "../../util/log.js";
import { BlockDeviceError, checkRange, iovLength, type BlockDevice, type WriteOptions } from "../bdev.js";

export interface AioOptions {
  /** Registry name, e.g. "AIO0". */
  readonly name: string;
  /** The backing file; created if absent. */
  readonly path: string;
  /** Logical block size: a power of two, at least 512. */
  readonly blockSize: number;
  /** Size in blocks; a smaller file is extended to it. Without it the file's size is used. */
  readonly blockCount?: number;
  /** Use the native hole-punching helper when available (default true). */
  readonly nativeUnmap?: boolean;
}

interface NativeHelper {
  punchHole(fd: number, offset: number, length: number): Promise<void>;
}

/** Largest WRITE ZEROES chunk written at once when holes cannot be punched. */
const ZERO_CHUNK = 1 << 20;

let nativeHelper: NativeHelper | null | undefined;

/** Load native/build/Release/usertgt_native.node once; null when it is not built. */
function loadNativeHelper(): NativeHelper | null {
  if (nativeHelper !== undefined) return nativeHelper;
  try {
    // dist/src/bdev/aio/aio.js → package root is four levels up.
    const require = createRequire(import.meta.url);
    const mod = require(
      fileURLToPath(new URL("../../../../native/build/Release/usertgt_native.node", import.meta.url)),
    ) as Partial<NativeHelper> | undefined;
    nativeHelper = typeof mod?.punchHole === "function" ? (mod as NativeHelper) : null;
  } catch {
    nativeHelper = null;
  }
  if (nativeHelper === null) {
    log.child({ module: "bdev-aio" }).debug("native helper not built: AIO unmap writes zeroes");
  }
  return nativeHelper;
}

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

export class AioBdev implements BlockDevice {
  readonly productName = "AIO disk";
  readonly volatileWriteCache = true;
  readonly unmapReadsZeroes = true;
  private fh: FileHandle | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private zeroes: Buffer | undefined;

  private constructor(
    readonly name: string,
    readonly path: string,
    readonly blockSize: number,
    private count: number,
    readonly uuid: string,
    fh: FileHandle,
    private readonly punch: NativeHelper | null,
  ) {
    this.fh = fh;
  }

  get blockCount(): number {
    return this.count;
  }

  /**
   * Take the file's current size as the device's (SPDK bdev_aio_rescan, after the file was grown
   * outside). Shrinking is refused while `mayShrink` is false: blocks in use would vanish.
   * Returns the old and new block counts.
   */
  async rescan(mayShrink: boolean): Promise<{ before: number; after: number }> {
    const fh = this.handle();
    const size = Number((await fh.stat({ bigint: true })).size);
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

  /** True when unmap() deallocates (holes are punched). */
  get supportsUnmap(): boolean {
    return this.punch !== null;
  }

  /** Open (create if absent) and size the backing file. Errors name the device and the file. */
  static async open(o: AioOptions): Promise<AioBdev> {
    const what = `AIO ${o.name} (${o.path})`;
    if (!isPowerOfTwoBlockSize(o.blockSize)) {
      throw new Error(`${what}: block size ${o.blockSize} is not a power of two >= 512`);
    }
    if (o.blockCount !== undefined && (!Number.isSafeInteger(o.blockCount) || o.blockCount <= 0)) {
      throw new Error(`${what}: block count ${o.blockCount} must be a positive integer`);
    }
    let fh: FileHandle;
    try {
      fh = await open(o.path, constants.O_RDWR | constants.O_CREAT, 0o644);
    } catch (err) {
      throw new Error(`${what}: cannot open: ${(err as Error).message}`);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) throw new Error(`${what}: not a regular file`);
      let size = Number(st.size);
      if (o.blockCount !== undefined && size < o.blockCount * o.blockSize) {
        size = o.blockCount * o.blockSize;
        await fh.truncate(size);
      }
      if (size === 0) throw new Error(`${what}: file is empty and no block count was given`);
      if (size % o.blockSize !== 0) {
        throw new Error(`${what}: file size ${size} is not a multiple of the block size ${o.blockSize}`);
      }
      const uuid = fileUuid(await realpath(o.path), st.dev, st.ino);
      let punch = o.nativeUnmap === false ? null : loadNativeHelper();
      if (punch) {
        // Probe hole support past the end of the file, where punching changes nothing.
        try {
          await punch.punchHole(fh.fd, size, o.blockSize);
        } catch (err) {
          log
            .child({ module: "bdev-aio", bdev: o.name })
            .info(
              { code: (err as NodeJS.ErrnoException).code },
              "file system cannot punch holes: unmap writes zeroes",
            );
          punch = null;
        }
      }
      return new AioBdev(o.name, o.path, o.blockSize, size / o.blockSize, uuid, fh, punch);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private handle(): FileHandle {
    if (!this.fh) throw new BlockDeviceError(`${this.name}: device is closed`, "closed");
    return this.fh;
  }

  /** Run one I/O, remembered so close() waits for it. */
  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = (): void => {
      this.inflight.delete(p);
    };
    p.then(done, done);
    return p;
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
    const fh = this.handle();
    checkRange(this, lba, iovLength(iov));
    try {
      await this.track(
        transferAll(iov, lba * this.blockSize, async (bufs, pos) => (await fh.readv(bufs, pos)).bytesRead),
      );
    } catch (err) {
      throw this.ioError("read", lba, err);
    }
  }

  async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    const fh = this.handle();
    checkRange(this, lba, iovLength(iov));
    try {
      await this.track(
        (async () => {
          await transferAll(
            iov,
            lba * this.blockSize,
            async (bufs, pos) => (await fh.writev(bufs, pos)).bytesWritten,
          );
          // SBC-3 4.11: FUA data is on the medium before the command completes.
          if (options?.fua) await fh.datasync();
        })(),
      );
    } catch (err) {
      throw this.ioError("write", lba, err);
    }
  }

  async flush(): Promise<void> {
    const fh = this.handle();
    try {
      await this.track(fh.datasync());
    } catch (err) {
      throw this.ioError("flush", 0, err);
    }
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    await this.writeZeroes(lba, blocks);
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    const fh = this.handle();
    checkRange(this, lba, blocks * this.blockSize);
    if (blocks === 0) return;
    const offset = lba * this.blockSize;
    const length = blocks * this.blockSize;
    try {
      if (this.punch) {
        await this.track(this.punch.punchHole(fh.fd, offset, length));
        return;
      }
      await this.track(this.writeZeroChunks(fh, offset, length));
    } catch (err) {
      throw this.ioError("write zeroes", lba, err);
    }
  }

  private async writeZeroChunks(fh: FileHandle, offset: number, length: number): Promise<void> {
    // One shared zero buffer: writes only read from it.
    this.zeroes ??= Buffer.alloc(Math.min(ZERO_CHUNK, this.blockSize * this.blockCount));
    const zeroes = this.zeroes;
    for (let done = 0; done < length;) {
      const n = Math.min(zeroes.length, length - done);
      await transferAll([zeroes.subarray(0, n)], offset + done, async (bufs, pos) => {
        return (await fh.writev(bufs, pos)).bytesWritten;
      });
      done += n;
    }
  }

  /** Wait for in-flight I/O, make writes durable, close the file. Further I/O fails. */
  async close(): Promise<void> {
    const fh = this.fh;
    if (!fh) return;
    this.fh = undefined;
    await Promise.allSettled([...this.inflight]);
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }
}

/**
 * Move all of `iov` at file position `pos` with `op`, continuing after short transfers. A
 * transfer of zero bytes means the file shrank underneath us (end of file).
 */
async function transferAll(
  iov: readonly Buffer[],
  pos: number,
  op: (bufs: Buffer[], pos: number) => Promise<number>,
): Promise<void> {
  let bufs = iov.filter((b) => b.length > 0);
  let remaining = iovLength(bufs);
  while (remaining > 0) {
    const n = await op(bufs, pos);
    if (n <= 0) throw new BlockDeviceError(`unexpected end of file at byte ${pos}`, "medium");
    pos += n;
    remaining -= n;
    if (remaining === 0) break;
    let skip = n;
    let i = 0;
    while (skip >= bufs[i].length) skip -= bufs[i++].length;
    bufs = bufs.slice(i);
    if (skip > 0) bufs[0] = bufs[0].subarray(skip);
  }
}
