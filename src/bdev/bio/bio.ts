/**
 * The BIO bdev module (bdev_bio of the reference SPDK deployment): a bdev over any node of the device tree,
 * named by its tree path (`BIO bio0 /UMCfuse/dev/file_b`). It claims the node for writing for as long as it
 * is open, so a second writer (another BIO line, a LUN on the same TCMUR device, a FUSE writer) is refused
 * with the holder's name. Closing releases the claim; the tree device itself stays open — its owner (the
 * TCMUR or DRBD module) closes it.
 */
import type { DeviceClaim, DeviceTree } from "../../devtree/device_tree.js";
import { stableUuid } from "../tcmur/tcmur.js";
import { BlockDeviceError, type BlockDevice, type WriteOptions } from "../bdev.js";
import { runBioHelper, type RunHelperOptions } from "./helper.js";

export interface BioConfig {
  /** The bdev name (`bio0`), as LUN lines refer to it. */
  readonly name: string;
  /** Tree path of the device, `<prefix>/dev/<name>`. */
  readonly path: string;
  /** Optional helper argv run before the device is opened. */
  readonly helper?: readonly string[];
}

export class BioBdev implements BlockDevice {
  readonly productName = "BIO disk";
  readonly blockSize: number;
  readonly uuid: string;
  readonly volatileWriteCache: boolean;
  readonly supportsUnmap: boolean;
  readonly unmapReadsZeroes: boolean;
  private claim: DeviceClaim | undefined;
  private lastBlockCount: number;

  private constructor(
    readonly name: string,
    readonly path: string,
    claim: DeviceClaim,
  ) {
    const dev = claim.device;
    this.claim = claim;
    this.blockSize = dev.blockSize;
    this.lastBlockCount = dev.blockCount;
    this.uuid = stableUuid("bio", name, path);
    this.volatileWriteCache = dev.volatileWriteCache;
    this.supportsUnmap = dev.supportsUnmap;
    this.unmapReadsZeroes = dev.unmapReadsZeroes;
  }

  /** Run the helper (if any), then claim the tree device at `cfg.path` for writing. */
  static async open(tree: DeviceTree, cfg: BioConfig, opts: RunHelperOptions = {}): Promise<BioBdev> {
    const where = `BIO ${cfg.name} ${cfg.path}`;
    if (cfg.helper && cfg.helper.length > 0) await runBioHelper(where, cfg.helper, opts);
    if (!cfg.path.startsWith(`${tree.prefix}/dev/`)) {
      throw new Error(`${where}: path must be under ${tree.prefix}/dev/`);
    }
    if (!tree.resolve(cfg.path)) {
      const have = tree.list().map((n) => n.path);
      throw new Error(`${where}: no such device in the tree (have: ${have.join(", ") || "none"})`);
    }
    const claim = tree.claim(cfg.path, `BIO ${cfg.name}`, "write");
    return new BioBdev(cfg.name, cfg.path, claim);
  }

  /** The tree device's size now: a DRBD device grows with `drbdadm resize`. */
  get blockCount(): number {
    if (this.claim) this.lastBlockCount = this.claim.device.blockCount;
    return this.lastBlockCount;
  }

  /** The tree device's resize events (a LUN over it reports CAPACITY DATA HAS CHANGED). */
  onResize(listener: (blockCount: number) => void): void {
    this.claim?.device.onResize?.(listener);
  }

  private dev(): BlockDevice {
    if (!this.claim) throw new BlockDeviceError(`${this.name}: device is closed`, "closed");
    return this.claim.device;
  }

  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    return this.dev().readv(lba, iov);
  }

  async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    return this.dev().writev(lba, iov, options);
  }

  async flush(): Promise<void> {
    return this.dev().flush();
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    return this.dev().unmap(lba, blocks);
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    return this.dev().writeZeroes(lba, blocks);
  }

  /** Flush the lower device and release the claim (the lower device stays open). */
  async close(): Promise<void> {
    const claim = this.claim;
    this.claim = undefined;
    if (!claim) return;
    try {
      await claim.device.flush();
    } finally {
      claim.release();
    }
  }
}
