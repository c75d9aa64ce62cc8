/**
 * tcmu-runner's `rbd` handler: a Ceph RBD image through librbd's asynchronous API (native/rbd.c).
 * Requests complete on librbd's threads and are handed to the event loop in batches; nothing here
 * blocks. The device size follows the image (an `rbd resize` while exported is a resize event, and
 * SCSI reports CAPACITY DATA HAS CHANGED); COMPARE AND WRITE is librbd's compare-and-write, atomic
 * in the cluster whichever gateway a host goes through.
 *
 * Exclusive lock: the first write takes librbd's exclusive lock explicitly (rbd_lock_acquire), and a
 * clean close releases it. A second gateway exporting the same image serves reads, but its writes fail
 * (NOT READY) while this one holds the lock; see docs/tcmur-handlers.md.
 */
import type { TcmurDeviceBackend, TcmurHandler } from "../handler.js";
import { loadRbdNative, RbdOp, type RbdHandle, type RbdNative } from "./native_rbd.js";
import { parseRbdPath } from "./rbd_cfgstring.js";

const RBD_DEFAULT_BLOCK_SIZE = 512;
/** Without osd_op_timeout in the cfgstring a dead cluster would block I/O forever: 30 s, as ceph-iscsi sets. */
const DEFAULT_OSD_OP_TIMEOUT = 30;
const EILSEQ = 84; // librbd's compare-and-write miscompare
/**
 * librbd's compare-and-write takes a range inside one 512-byte sector (and one stripe unit) only:
 * ImageCompareAndWriteRequest::prune_object_extents returns EINVAL for anything longer (Ceph 16).
 */
const RBD_CAW_SECTOR = 512;

const ERRNO_NAMES: Readonly<Record<number, string>> = {
  2: "ENOENT",
  5: "EIO",
  16: "EBUSY",
  22: "EINVAL",
  28: "ENOSPC",
  30: "EROFS",
  107: "ENOTCONN",
  108: "ESHUTDOWN", // also Ceph's EBLOCKLISTED: this client was fenced
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  125: "ECANCELED",
};

interface Pending {
  readonly op: RbdOp;
  readonly offset: number;
  resolve(mismatch: number): void;
  reject(err: Error): void;
}

class RbdBackend implements TcmurDeviceBackend {
  /** rbd_cache is off (native/rbd.c): a completed write is in the cluster. */
  readonly volatileWriteCache = false;
  sizeBytes: number;
  private readonly pending = new Map<number, Pending>();
  private nextTag = 1;
  private locking: Promise<void> | undefined;
  /** The exclusive lock is ours (kept until close): writes skip waiting on `locking`. */
  private locked = false;
  private readonly resizeListeners: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly native: RbdNative,
    private readonly handle: RbdHandle,
    private readonly label: string,
    sizeBytes: number,
    readonly blockSize: number,
    readonly readOnly: boolean,
  ) {
    this.sizeBytes = sizeBytes - (sizeBytes % blockSize);
  }

  /** Called by native/rbd.c on the event loop for each completion (tag -1: header changed). */
  readonly dispatch = (tag: number, ret: number, mismatch: number): void => {
    if (tag === -1) {
      void this.refreshSize();
      return;
    }
    const p = this.pending.get(tag);
    if (!p) return;
    this.pending.delete(tag);
    if (p.op === RbdOp.CompareAndWrite && ret === -EILSEQ) p.resolve(mismatch);
    else if (ret < 0) p.reject(this.error(opName(p.op), p.offset, -ret));
    else p.resolve(-1);
  };

  private error(what: string, offset: number, errno: number): Error {
    const code = ERRNO_NAMES[errno] ?? `E${errno}`;
    const err = new Error(`${this.label}: ${what} at byte ${offset}: ${code} (errno ${errno})`);
    (err as Error & { code: string }).code = code;
    return err;
  }

  private submit(
    op: RbdOp,
    offset: number,
    length: number,
    a?: readonly Buffer[] | Buffer,
    b?: Buffer,
  ): Promise<number> {
    if (this.closed) return Promise.reject(new Error(`${this.label}: device is closed`));
    return new Promise<number>((resolve, reject) => {
      const tag = this.nextTag;
      this.nextTag = tag >= 0x7fffffff ? 1 : tag + 1;
      this.pending.set(tag, { op, offset, resolve, reject });
      const rc = this.native.submit(this.handle, tag, op, offset, length, a, b);
      if (rc < 0) {
        this.pending.delete(tag);
        reject(this.error(`submitting ${opName(op)}`, offset, -rc));
      }
    });
  }

  /** librbd's exclusive lock, taken once before the first write (and kept until close). */
  private ensureLock(): Promise<void> {
    this.locking ??= this.native.lock(this.handle, true).then(
      () => {
        this.locked = true;
      },
      (err: Error) => {
        this.locking = undefined;
        // Another gateway holds the lock (EROFS/EBUSY) or the cluster is out of reach: either way the
        // write cannot be done through this gateway now, which SCSI reports as NOT READY.
        const e = new Error(`${this.label}: taking the exclusive lock: ${err.message}`);
        (e as Error & { code: string }).code = "ELOCKHELD";
        throw e;
      },
    );
    return this.locking;
  }

  private async refreshSize(): Promise<void> {
    if (this.closed) return;
    let size: number;
    try {
      size = await this.native.size(this.handle);
    } catch {
      return; // the next header notification (or I/O) tries again
    }
    size -= size % this.blockSize;
    if (size === this.sizeBytes || this.closed) return;
    this.sizeBytes = size;
    for (const fn of this.resizeListeners) fn();
  }

  onResize(listener: () => void): void {
    this.resizeListeners.push(listener);
  }

  // Reads and writes return the request's own promise (no async wrapper: one microtask hop less per
  // I/O between the completion and the SCSI response). Its value (-1) means nothing to the caller.
  readv(iov: readonly Buffer[], offset: number): Promise<void> {
    let n = 0;
    for (const b of iov) n += b.length;
    return this.submit(RbdOp.Readv, offset, n, iov) as Promise<unknown> as Promise<void>;
  }

  writev(iov: readonly Buffer[], offset: number): Promise<void> {
    if (!this.locked) return this.lockedWritev(iov, offset);
    let n = 0;
    for (const b of iov) n += b.length;
    return this.submit(RbdOp.Writev, offset, n, iov) as Promise<unknown> as Promise<void>;
  }

  private async lockedWritev(iov: readonly Buffer[], offset: number): Promise<void> {
    await this.ensureLock();
    await this.writev(iov, offset);
  }

  async flush(): Promise<void> {
    await this.submit(RbdOp.Flush, 0, 0);
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.ensureLock();
    await this.submit(RbdOp.Discard, offset, length);
  }

  async writeSame(offset: number, length: number, pattern: Buffer): Promise<void> {
    await this.ensureLock();
    await this.submit(RbdOp.WriteSame, offset, length, pattern);
  }

  async compareAndWrite(offset: number, compare: Buffer, write: Buffer): Promise<number> {
    await this.ensureLock();
    if ((offset % RBD_CAW_SECTOR) + compare.length <= RBD_CAW_SECTOR) {
      // librbd's compare-and-write: one OSD op (cmpext + write), atomic in the cluster. The mismatch
      // offset is relative to the compared range (-1: written).
      return this.submit(RbdOp.CompareAndWrite, offset, compare.length, compare, write);
    }
    // Longer than librbd takes (a 4096-byte block): read, compare and write while this gateway holds
    // the image's exclusive lock. Taken explicitly, librbd hands that lock to no other client (their
    // writes fail with EROFS), so no other gateway or client writes the image between the read and the
    // write; a client that breaks the lock first blocklists this one, and then the write fails rather
    // than lands. This gateway's own writes to the range wait on the SCSI layer's LBA range lock.
    const medium = Buffer.allocUnsafe(compare.length);
    await this.submit(RbdOp.Readv, offset, medium.length, [medium]);
    if (!medium.equals(compare)) {
      let at = 0;
      while (medium[at] === compare[at]) at++;
      return at;
    }
    await this.submit(RbdOp.Writev, offset, write.length, [write]);
    return -1;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.locking) {
      // A clean stop hands the lock back, so another gateway takes over without waiting.
      await this.locking.then(() => this.native.lock(this.handle, false)).catch(() => undefined);
    }
    await this.native.close(this.handle);
  }
}

function opName(op: RbdOp): string {
  return ["read", "write", "flush", "discard", "write same", "compare and write"][op] ?? `op ${op}`;
}

export const rbdHandler: TcmurHandler = {
  name: "rbd",
  productName: "TCMU rbd",
  async open(req) {
    const label = `TCMUR ${req.name} (${req.cfg.raw})`;
    const target = parseRbdPath(req.cfg.path, label);
    let native: RbdNative;
    try {
      native = loadRbdNative();
    } catch (err) {
      throw new Error(`${label}: ${(err as Error).message}`, { cause: err });
    }
    const blockSize = req.cfg.blockSize ?? RBD_DEFAULT_BLOCK_SIZE;
    const device: { backend?: RbdBackend } = {};
    const opened = await native
      .open(
        {
          pool: target.pool,
          namespace: target.namespace,
          image: target.image,
          conf: target.conf,
          id: target.id,
          osdOpTimeout: String(target.osdOpTimeout ?? DEFAULT_OSD_OP_TIMEOUT),
          readOnly: req.cfg.readOnly,
        },
        (events) => {
          const b = device.backend;
          // The array is reused: a tag of 0 (never issued) ends this call's events.
          for (let i = 0; b && i < events.length && events[i] !== 0; i += 3) {
            b.dispatch(events[i], events[i + 1], events[i + 2]);
          }
        },
      )
      .catch((err: Error) => {
        throw new Error(`${label}: ${err.message}`, { cause: err });
      });
    const backend = new RbdBackend(native, opened.handle, label, opened.size, blockSize, req.cfg.readOnly);
    device.backend = backend;
    if (req.sizeBytes !== undefined && req.sizeBytes !== backend.sizeBytes) {
      await backend.close();
      throw new Error(
        `${label}: size=${req.sizeBytes} differs from the image's size ${opened.size} (use rbd resize)`,
      );
    }
    if (backend.sizeBytes === 0) {
      await backend.close();
      throw new Error(`${label}: the image is smaller than one ${blockSize}-byte block`);
    }
    return backend;
  },
};
