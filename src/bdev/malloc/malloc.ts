/** The Malloc module (SPDK module/bdev/malloc): a block device in RAM. */
import { randomUUID } from "node:crypto";
import { BlockDeviceError, checkRange, iovLength, type BlockDevice } from "../bdev.js";

export interface MallocOptions {
  readonly name: string;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid?: string;
}

export class MallocBdev implements BlockDevice {
  readonly name: string;
  readonly productName = "Malloc disk";
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid: string;
  readonly volatileWriteCache = false;
  readonly supportsUnmap = true;
  readonly unmapReadsZeroes = true;
  private store: Buffer | undefined;

  constructor(opts: MallocOptions) {
    if (!Number.isInteger(opts.blockSize) || opts.blockSize < 512 || opts.blockSize & (opts.blockSize - 1)) {
      throw new Error(`Malloc ${opts.name}: block size ${opts.blockSize} is not a power of two >= 512`);
    }
    if (!Number.isSafeInteger(opts.blockCount) || opts.blockCount <= 0) {
      throw new Error(`Malloc ${opts.name}: block count ${opts.blockCount} must be a positive integer`);
    }
    this.name = opts.name;
    this.blockSize = opts.blockSize;
    this.blockCount = opts.blockCount;
    this.uuid = opts.uuid ?? randomUUID();
    // Zero-filled, so unwritten blocks read as zeroes like a fresh SPDK malloc bdev.
    this.store = Buffer.alloc(opts.blockSize * opts.blockCount);
  }

  private open(): Buffer {
    if (!this.store) throw new BlockDeviceError(`${this.name}: device is closed`, "closed");
    return this.store;
  }

  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    const store = this.open();
    let pos = lba * this.blockSize;
    checkRange(this, lba, iovLength(iov));
    for (const b of iov) {
      store.copy(b, 0, pos, pos + b.length);
      pos += b.length;
    }
  }

  async writev(lba: number, iov: readonly Buffer[]): Promise<void> {
    const store = this.open();
    let pos = lba * this.blockSize;
    checkRange(this, lba, iovLength(iov));
    for (const b of iov) {
      b.copy(store, pos);
      pos += b.length;
    }
  }

  async flush(): Promise<void> {
    this.open();
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    await this.writeZeroes(lba, blocks);
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    const store = this.open();
    checkRange(this, lba, blocks * this.blockSize);
    store.fill(0, lba * this.blockSize, (lba + blocks) * this.blockSize);
  }

  async close(): Promise<void> {
    this.store = undefined;
  }
}
