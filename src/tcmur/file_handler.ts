/**
 * tcmu-runner's `file` handler: the device is a regular file, created when absent, or a block device.
 *
 * A file's size: the cfgstring's `size=`, else the existing file's size, else the 1 GiB default; a
 * file shorter than the device is extended (sparse), so reads of never-written blocks return zeroes.
 * A block device (opened O_EXCL; see src/io_engine/backing.ts) has its own size and block size: `bs=`
 * may ask for a larger block, never a smaller one, and `size=` for less than the whole device.
 *
 * I/O goes through the process's I/O engine (io_uring or the thread pool).
 */
import { BackingStore } from "../io_engine/backing.js";
import { nativeAddon } from "../io_engine/native.js";
import { DEFAULT_SIZE_BYTES, type TcmurDeviceBackend, type TcmurHandler } from "./handler.js";

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

class FileBackend implements TcmurDeviceBackend {
  readonly volatileWriteCache = true; // writes land in the page cache (or the disk's cache) until a sync
  readonly discard?: (offset: number, length: number) => Promise<void>;
  /** Without `size=` the device is as big as the file or block device, also after it grew (rescan). */
  readonly rescan?: () => Promise<number>;
  readonly physicalBlockSize?: number;
  readonly optimalTransferBytes?: number;
  readonly maxRequestBytes?: number;
  readonly rotational?: boolean;

  constructor(
    private readonly store: BackingStore,
    public sizeBytes: number,
    readonly blockSize: number,
    readonly readOnly: boolean,
    sizeFollowsStore = false,
  ) {
    if (sizeFollowsStore)
      this.rescan = async () => {
        const now = await this.store.currentSize();
        this.sizeBytes = now - (now % this.blockSize);
        return this.sizeBytes;
      };
    const bd = store.blockDevice;
    if (bd) {
      // As the AIO module reports them (src/bdev/aio/aio.ts): SBC-4 6.6.2 / 6.6.3, READ CAPACITY(16).
      if (bd.physicalBlockSize > blockSize) this.physicalBlockSize = bd.physicalBlockSize;
      if (bd.optimalIoSize > 0) this.optimalTransferBytes = bd.optimalIoSize;
      if (bd.maxRequestBytes > 0) this.maxRequestBytes = bd.maxRequestBytes;
      this.rotational = bd.rotational;
    }
    const native = nativeAddon();
    if (bd?.discard && native?.blockZeroOut) {
      // The backend's discard must leave zeroes: BLKDISCARD does not promise them, BLKZEROOUT does
      // (and deallocates where the device can, e.g. a loop device punches its file).
      const zeroOut = native.blockZeroOut;
      this.discard = (offset, length) => zeroOut(store.fd, offset, length);
    } else if (!bd) {
      this.discard = (offset, length) => this.writeZeroes(offset, length);
    }
  }

  readv(iov: readonly Buffer[], offset: number): Promise<void> {
    return this.store.readv(iov, offset);
  }

  writev(iov: readonly Buffer[], offset: number): Promise<void> {
    return this.store.writev(iov, offset);
  }

  flush(): Promise<void> {
    return this.store.flush();
  }

  /** Node has no fallocate(PUNCH_HOLE) here; write zeroes so the range reads back as zeroes. */
  private async writeZeroes(offset: number, length: number): Promise<void> {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const n = Math.min(ZERO_CHUNK.length, end - pos);
      await this.store.writev([ZERO_CHUNK.subarray(0, n)], pos);
      pos += n;
    }
  }

  close(): Promise<void> {
    return this.store.close(!this.readOnly);
  }
}

export const fileHandler: TcmurHandler = {
  name: "file",
  productName: "TCMU file",
  async open(req) {
    const label = `TCMUR ${req.name} (${req.cfg.raw})`;
    if (!req.cfg.path.startsWith("/")) {
      throw new Error(
        `${label}: the file handler needs an absolute path after "/file/", e.g. /file//tmp/disk0`,
      );
    }
    let store: BackingStore;
    try {
      store = await BackingStore.open(req.cfg.path, {
        create: !req.cfg.readOnly,
        readOnly: req.cfg.readOnly,
      });
    } catch (err) {
      throw new Error(`${label}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const bd = store.blockDevice;
      if (bd) {
        const blockSize = req.cfg.blockSize ?? bd.logicalBlockSize;
        if (blockSize < bd.logicalBlockSize) {
          throw new Error(
            `${label}: bs ${blockSize} is smaller than the device's logical block size ${bd.logicalBlockSize}`,
          );
        }
        let size = req.sizeBytes ?? store.sizeBytes;
        if (size > store.sizeBytes) {
          throw new Error(`${label}: size ${size} is larger than the device (${store.sizeBytes} bytes)`);
        }
        size -= size % blockSize;
        if (size < blockSize) throw new Error(`${label}: device ${req.cfg.path} is smaller than one block`);
        return new FileBackend(store, size, blockSize, req.cfg.readOnly, req.sizeBytes === undefined);
      }
      const blockSize = req.blockSize;
      const fileSize = store.sizeBytes;
      let size = req.sizeBytes ?? (fileSize > 0 ? fileSize - (fileSize % blockSize) : DEFAULT_SIZE_BYTES);
      if (size < blockSize) throw new Error(`${label}: file ${req.cfg.path} is smaller than one block`);
      size -= size % blockSize;
      if (fileSize < size) {
        if (req.cfg.readOnly)
          throw new Error(`${label}: read-only file is shorter (${fileSize}) than size ${size}`);
        await store.truncate(size);
      }
      return new FileBackend(store, size, blockSize, req.cfg.readOnly, req.sizeBytes === undefined);
    } catch (err) {
      await store.close(false);
      throw err;
    }
  },
};
