/**
 * The TCMUR bdev module (bdev_tcmur of the reference SPDK deployment): a BlockDevice over a tcmu-runner
 * style handler backend. The UUID is derived from the device name and cfgstring, so a `file` device keeps
 * its SCSI identity (VPD 0x83) across restarts.
 */
import { createHash } from "node:crypto";
import type { TcmurDeviceBackend, TcmurHandler } from "../../tcmur/handler.js";
import type { TcmurDeviceConfig, TcmurHandlerRegistry } from "../../tcmur/handler_registry.js";
import { BlockDeviceError, checkRange, iovLength, type BlockDevice, type WriteOptions } from "../bdev.js";

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** A name-based UUID (RFC 4122 §4.3 layout, SHA-1, version 5 bits) from stable strings. */
export function stableUuid(...parts: string[]): string {
  const h = createHash("sha1").update(parts.join("\0")).digest();
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export class TcmurBdev implements BlockDevice {
  readonly productName: string;
  readonly blockSize: number;
  readonly uuid: string;
  readonly volatileWriteCache: boolean;
  readonly supportsUnmap: boolean;
  readonly unmapReadsZeroes: boolean;
  readonly readOnly: boolean;
  readonly physicalBlockSize?: number;
  readonly optimalTransferBytes?: number;
  readonly maxRequestBytes?: number;
  readonly rotational?: boolean;
  private backend: TcmurDeviceBackend | undefined;
  private readonly closeListeners: (() => void)[] = [];
  private readonly resizeListeners: ((blockCount: number) => void)[] = [];
  private count: number;
  /** Set when the backend does COMPARE AND WRITE itself (atomically). */
  readonly compareAndWrite?: (lba: number, compare: Buffer, write: Buffer) => Promise<number>;
  /** Set when the backend does WRITE SAME itself. */
  readonly writeSame?: (lba: number, blocks: number, pattern: Buffer) => Promise<void>;

  constructor(
    readonly name: string,
    readonly minor: number,
    readonly cfgstring: string,
    backend: TcmurDeviceBackend,
    handler: Pick<TcmurHandler, "name" | "productName">,
  ) {
    this.backend = backend;
    this.productName = (handler.productName ?? `TCMU ${handler.name}`).slice(0, 16);
    this.blockSize = backend.blockSize;
    this.count = backend.sizeBytes / backend.blockSize;
    this.uuid = stableUuid("tcmur", name, cfgstring);
    this.volatileWriteCache = backend.volatileWriteCache;
    this.supportsUnmap = typeof backend.discard === "function";
    this.unmapReadsZeroes = this.supportsUnmap;
    this.readOnly = backend.readOnly;
    // A block device's geometry (the file handler on a disk), for READ CAPACITY(16) and VPD B0h/B1h.
    this.physicalBlockSize = backend.physicalBlockSize;
    this.optimalTransferBytes = backend.optimalTransferBytes;
    this.maxRequestBytes = backend.maxRequestBytes;
    this.rotational = backend.rotational;
    if (backend.compareAndWrite) this.compareAndWrite = (lba, c, w) => this.backendCompareAndWrite(lba, c, w);
    if (backend.writeSame)
      this.writeSame = (lba, blocks, pattern) => this.backendWriteSame(lba, blocks, pattern);
    backend.onResize?.(() => {
      const after = Math.floor(backend.sizeBytes / this.blockSize);
      if (after === this.count) return;
      this.count = after;
      for (const fn of this.resizeListeners) fn(after);
    });
  }

  get blockCount(): number {
    return this.count;
  }

  /**
   * Takes the backend's current size (a `file` device without `size=` whose file or block device grew);
   * listeners hear of a change. Refuses to shrink unless `mayShrink` (blocks in use would vanish).
   */
  async rescan(mayShrink: boolean): Promise<{ before: number; after: number }> {
    const before = this.count;
    const backend = this.backend;
    if (!backend?.rescan) return { before, after: before };
    const after = Math.floor((await backend.rescan()) / this.blockSize);
    if (after < before && !mayShrink)
      throw new Error(
        `TCMUR ${this.name}: backing store shrank from ${before} to ${after} blocks while in use`,
      );
    if (after !== before) {
      this.count = after;
      for (const fn of this.resizeListeners) fn(after);
    }
    return { before, after };
  }

  /** Listeners for a size change underneath (a Ceph image resized while exported). */
  onResize(listener: (blockCount: number) => void): void {
    this.resizeListeners.push(listener);
  }

  private async backendCompareAndWrite(lba: number, compare: Buffer, write: Buffer): Promise<number> {
    const b = this.writable();
    checkRange(this, lba, compare.length);
    try {
      if (compare.length > (b.maxCompareAndWriteBytes ?? Infinity)) {
        // Longer than the backend does atomically: compare and write here, under the caller's
        // LBA range lock (atomic through this target only).
        const medium = Buffer.allocUnsafe(compare.length);
        await b.readv([medium], lba * this.blockSize);
        if (!medium.equals(compare)) {
          let at = 0;
          while (medium[at] === compare[at]) at++;
          return at;
        }
        await b.writev([write], lba * this.blockSize);
        return -1;
      }
      return await b.compareAndWrite!(lba * this.blockSize, compare, write);
    } catch (err) {
      throw ioError(this.name, "compare and write", lba, err);
    }
  }

  private async backendWriteSame(lba: number, blocks: number, pattern: Buffer): Promise<void> {
    const b = this.writable();
    checkRange(this, lba, blocks * this.blockSize);
    try {
      await b.writeSame!(lba * this.blockSize, blocks * this.blockSize, pattern);
    } catch (err) {
      throw ioError(this.name, "write same", lba, err);
    }
  }

  private open(): TcmurDeviceBackend {
    if (!this.backend) throw new BlockDeviceError(`${this.name}: device is closed`, "closed");
    return this.backend;
  }

  private writable(): TcmurDeviceBackend {
    const b = this.open();
    if (b.readOnly) throw new BlockDeviceError(`${this.name}: device is read-only`, "read-only");
    return b;
  }

  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    const b = this.open();
    checkRange(this, lba, iovLength(iov));
    try {
      await b.readv(iov, lba * this.blockSize);
    } catch (err) {
      throw ioError(this.name, "read", lba, err);
    }
  }

  async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    const b = this.writable();
    checkRange(this, lba, iovLength(iov));
    try {
      await b.writev(iov, lba * this.blockSize);
      // SBC-3 4.11: FUA data is on the medium when the command completes.
      if (options?.fua && b.volatileWriteCache) await b.flush();
    } catch (err) {
      throw ioError(this.name, "write", lba, err);
    }
  }

  async flush(): Promise<void> {
    const b = this.open();
    if (b.readOnly) return;
    try {
      await b.flush();
    } catch (err) {
      throw ioError(this.name, "flush", 0, err);
    }
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    await this.writeZeroes(lba, blocks);
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    const b = this.writable();
    checkRange(this, lba, blocks * this.blockSize);
    const offset = lba * this.blockSize;
    const length = blocks * this.blockSize;
    try {
      if (b.discard) {
        await b.discard(offset, length);
        return;
      }
      for (let done = 0; done < length; done += ZERO_CHUNK.length) {
        await b.writev([ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - done))], offset + done);
      }
    } catch (err) {
      throw ioError(this.name, "write zeroes", lba, err);
    }
  }

  /** Call `fn` once when the device is closed (the device tree drops its node then). */
  onClose(fn: () => void): void {
    this.closeListeners.push(fn);
  }

  async close(): Promise<void> {
    const b = this.backend;
    this.backend = undefined;
    if (!b) return;
    for (const fn of this.closeListeners.splice(0)) fn();
    await b.close();
  }
}

/**
 * Codes a handler's error may carry when its store is out of reach rather than broken (ELOCKHELD:
 * another gateway holds the image's write lock).
 */
const UNAVAILABLE = new Set([
  "ETIMEDOUT",
  "ENOTCONN",
  "ESHUTDOWN",
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ELOCKHELD",
]);

function ioError(name: string, op: string, lba: number, err: unknown): BlockDeviceError {
  if (err instanceof BlockDeviceError) return err;
  const code = (err as { code?: unknown }).code;
  const kind = typeof code === "string" && UNAVAILABLE.has(code) ? "unavailable" : "medium";
  const e = new BlockDeviceError(`${name}: ${op} at LBA ${lba} failed: ${(err as Error).message}`, kind);
  e.cause = err;
  return e;
}

/** Open one `[TCMUR]` device with the handler its cfgstring names. */
export async function createTcmurDevice(
  dev: TcmurDeviceConfig,
  handlers: TcmurHandlerRegistry,
): Promise<TcmurBdev> {
  const { backend, handler } = await handlers.open(dev);
  return new TcmurBdev(dev.name, dev.minor, dev.cfgstring, backend, handler);
}
