/**
 * The tcmu-runner handler interface: a handler (file, ram, or a loaded module) opens a device from its
 * cfgstring and serves byte-addressed I/O on it. The bdev module (src/bdev/tcmur) turns a backend into
 * a BlockDevice; this layer knows nothing of blocks beyond the block size it reports.
 */
import type { TcmurCfg } from "./cfgstring.js";

/** Seed defaults (tcmu-runner's own): 4096-byte blocks and a 1 GiB device. */
export const DEFAULT_BLOCK_SIZE = 4096;
export const DEFAULT_SIZE_BYTES = 1024 * 1024 * 1024;

/** What a handler receives to open one device. */
export interface TcmurOpenRequest {
  /** The TCMUR minor (0..255) and device name from the config line. */
  readonly minor: number;
  readonly name: string;
  /** The parsed cfgstring; `cfg.path` is the handler-specific part. */
  readonly cfg: TcmurCfg;
  /** Size and block size, already resolved from the cfgstring options and the defaults. */
  readonly sizeBytes: number | undefined;
  readonly blockSize: number;
}

/** One open device, as a handler serves it. Offsets and lengths are in bytes, block aligned. */
export interface TcmurDeviceBackend {
  /** Fixed, unless the backend reports a resize (onResize). */
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly readOnly: boolean;
  /** True when completed writes may be lost before flush() (reported to SCSI as WCE=1). */
  readonly volatileWriteCache: boolean;
  /** A block device's physical block size in bytes, when larger than blockSize. */
  readonly physicalBlockSize?: number;
  /** A block device's optimal I/O size in bytes. */
  readonly optimalTransferBytes?: number;
  /** The largest request a block device's queue takes whole, bytes. */
  readonly maxRequestBytes?: number;
  /** A block device's rotational flag (VPD B1h MEDIUM ROTATION RATE). */
  readonly rotational?: boolean;
  /** Fill every buffer of `iov` from `offset` on; bytes never written read as zeroes. */
  readv(iov: readonly Buffer[], offset: number): Promise<void>;
  writev(iov: readonly Buffer[], offset: number): Promise<void>;
  /** Make completed writes durable. */
  flush(): Promise<void>;
  /** Optional deallocation; afterwards the range reads as zeroes. */
  discard?(offset: number, length: number): Promise<void>;
  /** Optional WRITE SAME: `pattern` (one block) repeated over `length` bytes at `offset`. */
  writeSame?(offset: number, length: number, pattern: Buffer): Promise<void>;
  /**
   * Optional atomic compare-and-write: resolves -1 when `write` was written at `offset`, else the
   * byte offset (within `compare`) of the first difference, with nothing written.
   */
  compareAndWrite?(offset: number, compare: Buffer, write: Buffer): Promise<number>;
  /** The longest range compareAndWrite takes; longer ones are compared and written by the caller. */
  readonly maxCompareAndWriteBytes?: number;
  /** Optional: `listener` runs after the device's size changed underneath (sizeBytes is then new). */
  onResize?(listener: () => void): void;
  /** Optional: re-read the size of the backing store (grown outside); resolves the new sizeBytes. */
  rescan?(): Promise<number>;
  close(): Promise<void>;
}

export interface TcmurHandler {
  /** The first cfgstring segment that selects this handler, e.g. "file". */
  readonly name: string;
  /** INQUIRY product string (at most 16 characters); default "TCMU <name>". */
  readonly productName?: string;
  open(req: TcmurOpenRequest): Promise<TcmurDeviceBackend>;
}
