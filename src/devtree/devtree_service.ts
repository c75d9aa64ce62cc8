/**
 * The device tree subsystem as one piece the server wires in: the device tree, the TCMUR handlers, the BIO
 * bdevs and the FUSE view. It takes plain specs (the shapes of the config model's
 * TcmurBdevSpec/BioBdevSpec), so it depends on neither config/ nor server/; the server calls:
 *
 *   const devtree = await DevtreeService.create({ mountPoint, handlerDir, logger });
 *   bdevModules: { tcmur: (s) => devtree.openTcmur(s), bio: (s) => devtree.openBio(s) }
 *   devtree.claimForLun(bdevName, "LUN2 of iqn...")  // when a LUN uses a tree device directly
 *   await devtree.mount()                            // once the devices exist (a warning if it cannot)
 *   await devtree.stop()                             // at shutdown: unmount, release LUN claims
 */
import type { BlockDevice } from "../bdev/bdev.js";
import { BioBdev } from "../bdev/bio/bio.js";
import type { BioHelperFn } from "../bdev/bio/helper.js";
import { createTcmurDevice, type TcmurBdev } from "../bdev/tcmur/tcmur.js";
import {
  DEFAULT_MOUNT_POINT,
  mountDeviceTree,
  type FuseMount,
  type FuseMountOptions,
} from "../fuse/mount.js";
import { TcmurHandlerRegistry } from "../tcmur/handler_registry.js";
import { log as rootLog, type Logger } from "../util/log.js";
import { DEFAULT_TREE_PREFIX, DeviceTree, type DeviceClaim } from "./device_tree.js";

export interface DevtreeServiceOptions {
  /** Tree prefix used in config paths, default "/UMCfuse". */
  readonly prefix?: string;
  /** Where the FUSE view is mounted, default "/UMCfuse"; `false`: no FUSE view. */
  readonly mountPoint?: string | false;
  /** A directory of handler_<name>.js modules to load besides the built-in file and ram. */
  readonly handlerDir?: string;
  /** In-process BIO helpers by name (DRBD registers `drbdadm_up_primary`). */
  readonly helpers?: ReadonlyMap<string, BioHelperFn>;
  readonly fuse?: Omit<FuseMountOptions, "logger">;
  readonly logger?: Logger;
}

/** The fields of a `[TCMUR]` line this service needs. */
export interface TcmurLine {
  readonly minor: number;
  readonly name: string;
  readonly cfgString: string;
  readonly extra?: readonly string[];
}

/** The fields of a `[BIO]` line. */
export interface BioLine {
  readonly name: string;
  readonly path: string;
  readonly helper?: readonly string[];
}

export class DevtreeService {
  readonly tree: DeviceTree;
  private readonly log: Logger;
  private readonly lunClaims: DeviceClaim[] = [];
  private readonly helpers: Map<string, BioHelperFn>;
  private fuse: FuseMount | undefined;

  private constructor(
    readonly handlers: TcmurHandlerRegistry,
    private readonly opts: DevtreeServiceOptions,
  ) {
    this.tree = new DeviceTree(opts.prefix ?? DEFAULT_TREE_PREFIX);
    this.log = (opts.logger ?? rootLog).child({ module: "devtree" });
    this.helpers = new Map(opts.helpers ?? []);
  }

  static async create(opts: DevtreeServiceOptions = {}): Promise<DevtreeService> {
    const handlers = new TcmurHandlerRegistry();
    if (opts.handlerDir) await handlers.loadDirectory(opts.handlerDir);
    return new DevtreeService(handlers, opts);
  }

  /** Register an in-process BIO helper (e.g. DRBD's `drbdadm_up_primary`). */
  registerHelper(name: string, fn: BioHelperFn): void {
    this.helpers.set(name, fn);
  }

  /** Open a `[TCMUR]` device and add it to the tree as `<prefix>/dev/<name>`. */
  async openTcmur(line: TcmurLine): Promise<TcmurBdev> {
    const dev = await createTcmurDevice(
      { minor: line.minor, name: line.name, cfgstring: line.cfgString, extra: line.extra },
      this.handlers,
    );
    try {
      this.tree.add(line.name, dev, "tcmur", { readOnly: dev.readOnly });
    } catch (err) {
      await dev.close();
      throw err;
    }
    // Leave the tree when closed (the server closes every bdev at shutdown).
    dev.onClose(() => {
      if (this.tree.get(line.name)?.device === dev) this.tree.remove(line.name, { force: true });
    });
    return dev;
  }

  /** Open a `[BIO]` bdev: run its helper, then claim the tree device at its path. */
  openBio(line: BioLine): Promise<BioBdev> {
    return BioBdev.open(
      this.tree,
      { name: line.name, path: line.path, helper: line.helper },
      { helpers: this.helpers },
    );
  }

  /**
   * A LUN uses a block device directly: when it is a tree device, claim it for writing, so a BIO
   * bdev, DRBD or a FUSE writer cannot write it behind the LUN's back. Throws DeviceBusyError if
   * someone else has it; does nothing for devices outside the tree (Malloc, AIO).
   */
  claimForLun(bdev: BlockDevice | string, owner: string): DeviceClaim | undefined {
    const name = typeof bdev === "string" ? bdev : bdev.name;
    const node = this.tree.get(name);
    if (!node || (typeof bdev !== "string" && node.device !== bdev)) return undefined;
    const claim = this.tree.claim(name, owner, "write");
    this.lunClaims.push(claim);
    return claim;
  }

  /** The LUN named `owner` is gone (hot-removed, its target deleted): its claim goes too. */
  releaseForLun(owner: string): void {
    const i = this.lunClaims.findIndex((c) => c.owner === owner);
    if (i >= 0) this.lunClaims.splice(i, 1)[0]!.release();
  }

  /** Mount the FUSE view (unless disabled). Never throws for an unusable FUSE: it warns. */
  async mount(): Promise<FuseMount | undefined> {
    if (this.opts.mountPoint === false || this.fuse) return this.fuse;
    this.fuse = await mountDeviceTree(this.tree, this.opts.mountPoint ?? DEFAULT_MOUNT_POINT, {
      ...this.opts.fuse,
      logger: this.opts.logger ?? rootLog,
    });
    return this.fuse;
  }

  get fuseMount(): FuseMount | undefined {
    return this.fuse;
  }

  /** Unmount the FUSE view and drop the LUN claims. Devices are closed by their owner (the registry). */
  async stop(): Promise<void> {
    const fuse = this.fuse;
    this.fuse = undefined;
    if (fuse) await fuse.unmount();
    for (const c of this.lunClaims.splice(0)) c.release();
    this.log.debug("device tree stopped");
  }
}
