/**
 * The generic block-device layer (SPDK's lib/bdev): one interface every module fills in.
 *
 * Addresses and lengths are in logical blocks of `blockSize` bytes. Data travels in caller-owned
 * buffers (an I/O vector): a module reads into them or writes from them and never keeps a reference
 * after the returned promise settles, so the caller may reuse or hand them to a socket at once.
 */

export interface WriteOptions {
  /** Force Unit Access: the data is on stable storage when the promise resolves (SBC-3 4.11). */
  readonly fua?: boolean;
}

export interface BlockDeviceInfo {
  /** Registry name, e.g. "Malloc0", "AIO0". Unique among all block devices. */
  readonly name: string;
  /** Short product string for INQUIRY, at most 16 ASCII characters, e.g. "Malloc disk". */
  readonly productName: string;
  /** Logical block size in bytes: 512 or 4096 (any power of two from 512 works). */
  readonly blockSize: number;
  /** Number of logical blocks. */
  readonly blockCount: number;
  /** A stable UUID (RFC 4122 text form), used for VPD 0x80/0x83 identifiers. */
  readonly uuid: string;
  /** True when writes may sit in a volatile cache until flush() (reported as WCE=1). */
  readonly volatileWriteCache: boolean;
  /** True when unmap() really deallocates (thin provisioning, LBPU/LBPWS in VPD 0xB2). */
  readonly supportsUnmap: boolean;
  /** True when unmapped blocks read back as zeroes (LBPRZ). */
  readonly unmapReadsZeroes: boolean;
  /** Physical block size in bytes when larger than blockSize (READ CAPACITY(16) exponent). */
  readonly physicalBlockSize?: number;
  /** The device's preferred request size in bytes (its optimal I/O size). */
  readonly optimalTransferBytes?: number;
  /** The largest request the device's queue takes in one piece, bytes (larger ones are split). */
  readonly maxRequestBytes?: number;
  /** true: rotating medium (rate not known); false: non-rotating (VPD B1h MEDIUM ROTATION RATE). */
  readonly rotational?: boolean;
}

export interface BlockDevice extends BlockDeviceInfo {
  /** Read `sum(len(iov)) / blockSize` blocks starting at `lba` into the buffers of `iov`. */
  readv(lba: number, iov: readonly Buffer[]): Promise<void>;
  /** Write the buffers of `iov` starting at `lba`. Lengths must add up to whole blocks. */
  writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void>;
  /** Make every completed write durable (SYNCHRONIZE CACHE). */
  flush(): Promise<void>;
  /** Deallocate `blocks` blocks at `lba`; afterwards they read as zeroes if unmapReadsZeroes. */
  unmap(lba: number, blocks: number): Promise<void>;
  /** Make `blocks` blocks at `lba` read as zeroes (may deallocate them). */
  writeZeroes(lba: number, blocks: number): Promise<void>;
  /** Flush and release resources. Further I/O fails. */
  close(): Promise<void>;
  /**
   * Optional atomic COMPARE AND WRITE done by the device itself (e.g. Ceph RBD, atomic across every
   * gateway of the image): writes `write` at `lba` only if the medium equals `compare`. Resolves to
   * -1 when written, else the byte offset of the first difference (nothing written).
   */
  compareAndWrite?(lba: number, compare: Buffer, write: Buffer): Promise<number>;
  /** Optional WRITE SAME done by the device: the one-block `pattern` repeated over `blocks` blocks. */
  writeSame?(lba: number, blocks: number, pattern: Buffer): Promise<void>;
  /** Optional: call `listener` after the device's block count changed underneath (image resized). */
  onResize?(listener: (blockCount: number) => void): void;
  /**
   * Optional: take the current size of what backs the device (a file grown with truncate, a loop device
   * after losetup -c), as SPDK's bdev_aio_rescan; shrinking is refused unless `mayShrink`. Returns the old
   * and new block counts (a DRBD device's `drbdadm resize` asks its backing disk this way).
   */
  rescan?(mayShrink: boolean): Promise<{ before: number; after: number }>;
}

/** An error from a block device, carrying what SCSI needs to build sense data. */
export class BlockDeviceError extends Error {
  constructor(
    message: string,
    /** "unavailable": the backing store cannot be reached now (a storage cluster down); may recover. */
    readonly kind: "medium" | "out-of-range" | "read-only" | "closed" | "io" | "unavailable",
  ) {
    super(message);
    this.name = "BlockDeviceError";
  }
}

/** Total byte length of an I/O vector. */
export function iovLength(iov: readonly Buffer[]): number {
  let total = 0;
  for (const b of iov) total += b.length;
  return total;
}

/**
 * Check that an I/O of `bytes` bytes at `lba` is whole blocks and inside the device.
 * Throws a BlockDeviceError naming the device otherwise.
 */
export function checkRange(dev: BlockDeviceInfo, lba: number, bytes: number): number {
  if (bytes % dev.blockSize !== 0) {
    throw new BlockDeviceError(
      `${dev.name}: I/O length ${bytes} is not a multiple of block size ${dev.blockSize}`,
      "io",
    );
  }
  const blocks = bytes / dev.blockSize;
  if (!Number.isSafeInteger(lba) || lba < 0 || lba + blocks > dev.blockCount) {
    throw new BlockDeviceError(
      `${dev.name}: I/O at LBA ${lba} for ${blocks} blocks is beyond the end (${dev.blockCount} blocks)`,
      "out-of-range",
    );
  }
  return blocks;
}
