/**
 * A backing store for the AIO block device and the TCMUR file handler: a regular file or a block
 * device, opened once, read and written through the process's I/O engine.
 *
 * Block devices are opened O_EXCL, so the kernel refuses a disk that is mounted or claimed (and,
 * while we hold it, refuses mount, mkfs -- which opens O_EXCL -- and other exclusive openers), and
 * O_DIRECT when the engine is io_uring (the data goes to the disk, not twice through the page
 * cache; unaligned buffers are bounced) unless `direct: false` asks for the page cache. Their
 * geometry comes from the block-device ioctls and sysfs. Regular files use the page cache unless
 * `direct` is asked for.
 *
 * A regular file on tmpfs (or ramfs) is memory, as a Malloc disk is: its reads and writes are
 * copies to and from page-cache pages that never wait for a device. The kernel does not take them
 * without blocking (no FMODE_NOWAIT: `preadv2(RWF_NOWAIT)` fails with EOPNOTSUPP), so io_uring
 * hands each one to an io-wq worker: two thread switches and an event-loop wake-up per request
 * (~6 µs of CPU at QD1 on a 4 KiB read, where the copy is under 1 µs). They are done inline
 * instead, with preadv/pwritev on the event loop.
 *
 * FUA writes to a buffered regular file share fdatasyncs (group_commit.ts); O_DIRECT files and
 * block devices take FUA per write from the engine (RWF_DSYNC).
 */
import { constants, readvSync, writevSync, type Stats } from "node:fs";
import { open, readFile, stat, statfs, type FileHandle } from "node:fs/promises";
import { ioEngine, type IoEngine, type IoEngineName } from "./engine.js";
import { GroupCommit } from "./group_commit.js";
import { nativeAddon, type BlockDeviceGeometry } from "./native.js";

export interface BackingOpenOptions {
  /** Create a missing regular file. */
  readonly create?: boolean;
  readonly readOnly?: boolean;
  /**
   * O_DIRECT (io_uring engine only): true for a regular file too, false for a block device too
   * (its page cache then serves reads, with readahead, and takes writes); undefined: O_DIRECT for
   * block devices, the page cache for files.
   */
  readonly direct?: boolean;
  /** Force an engine for this process (USERTGT_IO_ENGINE otherwise). */
  readonly engine?: IoEngineName;
}

/** What a block device tells about itself beyond its size. */
export interface BlockDeviceLimits extends BlockDeviceGeometry {
  /** Largest request the device queue takes (max_sectors_kb), bytes; 0 when unknown. */
  readonly maxRequestBytes: number;
  /** True when the device discards (discard_max_bytes > 0). */
  readonly discard: boolean;
}

function sysfsNumber(text: string): number {
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : 0;
}

/** The device's request queue in sysfs (a partition's is its disk's). */
async function queueLimits(st: Stats): Promise<{ maxRequestBytes: number; discard: boolean }> {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  const base = `/sys/dev/block/${major}:${minor}`;
  for (const q of [`${base}/queue`, `${base}/../queue`]) {
    try {
      const maxKb = sysfsNumber(await readFile(`${q}/max_sectors_kb`, "utf8"));
      const discardMax = sysfsNumber(await readFile(`${q}/discard_max_bytes`, "utf8"));
      return { maxRequestBytes: maxKb * 1024, discard: discardMax > 0 };
    } catch {
      // not this one
    }
  }
  return { maxRequestBytes: 0, discard: false };
}

/** Linux's UIO_MAXIOV: the most buffers one readv/writev takes. */
const IOV_MAX = 1024;

/** statfs f_type of the file systems whose files are memory (linux/magic.h). */
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

export class BackingStore {
  private closed = false;
  /** FUA writes to a buffered regular file (not in memory): shared fdatasyncs. */
  private readonly groupCommit: GroupCommit | undefined;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly stats: Stats,
    /** Bytes: the file's current size, or the device's. */
    readonly sizeBytes: number,
    /** Geometry and limits when the backing is a block device. */
    readonly blockDevice: BlockDeviceLimits | undefined,
    readonly direct: boolean,
    readonly engine: IoEngine,
    /** A regular file on tmpfs or ramfs, read and written inline (see the header). */
    readonly inMemory = false,
  ) {
    if (!blockDevice && !direct && !inMemory) {
      this.groupCommit = new GroupCommit(() => this.engine.datasync(this.fd));
    }
  }

  get fd(): number {
    return this.fh.fd;
  }

  get isBlockDevice(): boolean {
    return this.blockDevice !== undefined;
  }

  /**
   * Open `path`. Errors say what is wrong in words a user can act on (not a regular file or block
   * device; device in use; no native helper for a block device).
   */
  static async open(path: string, o: BackingOpenOptions = {}): Promise<BackingStore> {
    const engine = ioEngine(o.engine);
    let before: Stats | undefined;
    try {
      before = await stat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || !o.create) {
        throw new Error(`cannot open: ${(err as Error).message}`, { cause: err });
      }
    }
    const isBlock = before?.isBlockDevice() ?? false;
    if (before && !isBlock && !before.isFile() && !before.isDirectory()) {
      throw new Error(`${path} is not a regular file or a block device`);
    }
    const native = nativeAddon();
    if (isBlock && typeof native?.blockDeviceInfo !== "function") {
      throw new Error(`${path} is a block device: exporting one needs the native addon (npm ci builds it)`);
    }
    const direct = engine.name === "io_uring" && (o.direct ?? isBlock);
    let flags = o.readOnly ? constants.O_RDONLY : constants.O_RDWR;
    if (isBlock) flags |= constants.O_EXCL;
    else if (o.create && !o.readOnly) flags |= constants.O_CREAT;
    if (direct) flags |= constants.O_DIRECT;
    let fh: FileHandle;
    try {
      fh = await open(path, flags, 0o644);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (isBlock && code === "EBUSY") {
        throw new Error(
          `${path} is in use (mounted, part of a RAID/LVM/DRBD device, or opened exclusively by another program): EBUSY`,
          { cause: err },
        );
      }
      if (code === "EINVAL" && direct) {
        throw new Error(`${path}: the file system does not support O_DIRECT`, { cause: err });
      }
      throw new Error(`cannot open: ${(err as Error).message}`, { cause: err });
    }
    try {
      const st = await fh.stat();
      if (isBlock !== st.isBlockDevice() || (!st.isBlockDevice() && !st.isFile())) {
        throw new Error(`${path} changed type while being opened`);
      }
      if (!isBlock) {
        const fsType = direct ? 0 : (await statfs(path)).type;
        const inMemory = fsType === TMPFS_MAGIC || fsType === RAMFS_MAGIC;
        return new BackingStore(path, fh, st, st.size, undefined, direct, engine, inMemory);
      }
      const geometry = (native as { blockDeviceInfo(fd: number): BlockDeviceGeometry }).blockDeviceInfo(
        fh.fd,
      );
      const limits: BlockDeviceLimits = { ...geometry, ...(await queueLimits(st)) };
      return new BackingStore(path, fh, st, geometry.sizeBytes, limits, direct, engine);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`${this.path} is closed`);
  }

  /** Fill `iov` from byte `pos`; past the end of a file the rest is zeroes. */
  async readv(iov: readonly Buffer[], pos: number): Promise<void> {
    this.checkOpen();
    const total = lengthOf(iov);
    if (iov.length > IOV_MAX || (this.direct && total > this.engine.maxBouncedBytes)) {
      return this.inPieces(iov, pos, total, false, false);
    }
    const n = await this.readOnce(iov, pos);
    if (n === total) return;
    let rest = advance(iov, n);
    let at = pos + n;
    while (rest.length > 0) {
      const m = await this.readOnce(rest, at);
      if (m === 0) {
        for (const b of rest) b.fill(0);
        return;
      }
      at += m;
      rest = advance(rest, m);
    }
  }

  /** Write `iov` at `pos`; with `fua` it is durable when this resolves. */
  async writev(iov: readonly Buffer[], pos: number, fua = false): Promise<void> {
    this.checkOpen();
    const total = lengthOf(iov);
    if (iov.length > IOV_MAX || (this.direct && total > this.engine.maxBouncedBytes)) {
      return this.inPieces(iov, pos, total, true, fua);
    }
    // tmpfs: the page cache is the medium (shmem's fsync is noop_fsync), so FUA asks for nothing more.
    // A buffered file's FUA writes share fdatasyncs (group_commit.ts); the rest take FUA per write.
    const commit = fua && !this.inMemory ? this.groupCommit : undefined;
    const engineFua = fua && !this.inMemory && commit === undefined;
    const n = await this.writeOnce(iov, pos, engineFua);
    if (n !== total) {
      let rest = advance(iov, n);
      let at = pos + n;
      while (rest.length > 0) {
        const m = await this.writeOnce(rest, at, engineFua);
        if (m === 0) throw new Error(`${this.path}: write at byte ${at} made no progress`);
        at += m;
        rest = advance(rest, m);
      }
    }
    // Only now, with every byte written, may the fdatasync that acknowledges them start.
    if (commit) await commit.sync();
  }

  /** One read: inline for a file in memory, else through the engine. */
  private readOnce(iov: readonly Buffer[], pos: number): number | Promise<number> {
    return this.inMemory ? readvSync(this.fd, iov, pos) : this.engine.read(this.fd, iov, pos, this.direct);
  }

  /** One write: inline for a file in memory, else through the engine (`fua`: the engine's FUA). */
  private writeOnce(iov: readonly Buffer[], pos: number, fua: boolean): number | Promise<number> {
    return this.inMemory
      ? writevSync(this.fd, iov, pos)
      : this.engine.write(this.fd, iov, pos, fua, this.direct, this.blockDevice !== undefined);
  }

  /**
   * A request of more than IOV_MAX buffers, or a large O_DIRECT one, goes as pieces of at most
   * IOV_MAX buffers and a bounce chunk's bytes, issued together (the engine bounces a piece only
   * when its buffers are unaligned).
   */
  private async inPieces(
    iov: readonly Buffer[],
    pos: number,
    total: number,
    write: boolean,
    fua: boolean,
  ): Promise<void> {
    const maxBytes = this.direct ? this.engine.maxBouncedBytes : total;
    const parts: Promise<void>[] = [];
    let i = 0;
    let off = 0;
    while (off < total) {
      const sub: Buffer[] = [];
      let bytes = 0;
      let skip = 0;
      while (i < iov.length && sub.length < IOV_MAX && bytes < maxBytes) {
        const b = iov[i].subarray(skip, skip + (maxBytes - bytes));
        sub.push(b);
        bytes += b.length;
        if (skip + b.length === iov[i].length) {
          i++;
          skip = 0;
        } else skip += b.length;
      }
      if (skip > 0) {
        // the next piece starts inside iov[i]
        iov = [iov[i].subarray(skip), ...iov.slice(i + 1)];
        i = 0;
      }
      parts.push(write ? this.writev(sub, pos + off, fua) : this.readv(sub, pos + off));
      off += bytes;
    }
    await Promise.all(parts);
  }

  /** fdatasync: completed writes are durable (a block device's cache is flushed). */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.engine.datasync(this.fd);
  }

  /** The file's size now, or the block device's (it may have been grown since open). */
  async currentSize(): Promise<number> {
    if (!this.blockDevice) return (await this.fh.stat()).size;
    const native = nativeAddon();
    return native?.blockDeviceInfo ? native.blockDeviceInfo(this.fd).sizeBytes : this.sizeBytes;
  }

  /** Grow a regular file to `size` bytes (sparse). */
  async truncate(size: number): Promise<void> {
    await this.fh.truncate(size);
  }

  /** Flush unless read-only, then close. */
  async close(flush: boolean): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (flush) await this.engine.datasync(this.fd);
    } finally {
      await this.fh.close();
    }
  }
}

function lengthOf(iov: readonly Buffer[]): number {
  let n = 0;
  for (const b of iov) n += b.length;
  return n;
}

/** Drop the first `n` bytes of an I/O vector (subarrays, no copies). */
export function advance(iov: readonly Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < iov.length && n >= iov[i].length) n -= iov[i++].length;
  const rest = iov.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0].subarray(n);
  return rest.filter((b) => b.length > 0);
}
