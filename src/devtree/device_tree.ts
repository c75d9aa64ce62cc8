/**
 * The device tree (/UMCfuse/dev in the reference SPDK deployment): every TCMUR and DRBD device is a named
 * node with a path `<prefix>/dev/<name>`. Consumers (a LUN, a BIO bdev, a DRBD device, a FUSE open for
 * write) claim a node before using it, so two writers never share a device without knowing — in the
 * reference deployment, "exclusive" opens were not exclusive.
 *
 * The prefix names the tree in config files (`BIO bio0 /UMCfuse/dev/file_b`); it stays the same wherever the
 * FUSE view is mounted.
 */
import { EventEmitter } from "node:events";
import type { BlockDevice } from "../bdev/bdev.js";

export const DEFAULT_TREE_PREFIX = "/UMCfuse";

/** What kind of device a node is; free text so later modules add their own ("drbd"). */
export type DeviceKind = "tcmur" | "drbd" | (string & {});

/**
 * "read": shares with anyone; "write": one writer, readers allowed; "exclusive": nobody else at all.
 */
export type ClaimMode = "read" | "write" | "exclusive";

export interface DeviceNode {
  readonly name: string;
  readonly path: string;
  readonly kind: DeviceKind;
  readonly device: BlockDevice;
  /** True when the device refuses writes (the FUSE view shows mode 0400). */
  readonly readOnly: boolean;
}

/** A second writer (or an exclusive claim) was refused. `holder` names who has the device. */
export class DeviceBusyError extends Error {
  readonly code = "EBUSY";
  constructor(
    readonly device: string,
    readonly holder: string,
    wanted: ClaimMode,
    held: ClaimMode,
  ) {
    super(`device ${device} is busy: ${wanted} claim refused, ${held} claim held by ${holder}`);
    this.name = "DeviceBusyError";
  }
}

export class DeviceClaim {
  private released = false;
  constructor(
    private readonly tree: DeviceTree,
    readonly node: DeviceNode,
    readonly owner: string,
    readonly mode: ClaimMode,
  ) {}

  get device(): BlockDevice {
    return this.node.device;
  }

  get active(): boolean {
    return !this.released;
  }

  /** Give the device back; calling it twice is harmless. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.tree.dropClaim(this);
  }
}

interface TreeEvents {
  add: [DeviceNode];
  remove: [DeviceNode];
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/;

/** A text file shown next to `dev/` (e.g. `proc/drbd`): rendered afresh for every open, like procfs. */
export interface StatusFile {
  readonly dir: string;
  readonly name: string;
  readonly render: () => string;
}

export class DeviceTree extends EventEmitter<TreeEvents> {
  readonly prefix: string;
  private readonly nodes = new Map<string, DeviceNode>();
  private readonly claims = new Map<string, Set<DeviceClaim>>();
  private readonly statusFiles = new Map<string, StatusFile>();

  constructor(prefix: string = DEFAULT_TREE_PREFIX) {
    super();
    if (!prefix.startsWith("/")) throw new Error(`device tree prefix "${prefix}" must be an absolute path`);
    this.prefix = prefix.replace(/\/+$/, "");
  }

  /** `<prefix>/dev/<name>` */
  pathOf(name: string): string {
    return `${this.prefix}/dev/${name}`;
  }

  add(name: string, device: BlockDevice, kind: DeviceKind, opts: { readOnly?: boolean } = {}): DeviceNode {
    if (!NAME.test(name)) throw new Error(`device tree: "${name}" is not a valid device name`);
    if (this.nodes.has(name)) throw new Error(`device tree: a device named "${name}" already exists`);
    const readOnly = opts.readOnly ?? (device as Partial<{ readOnly: boolean }>).readOnly === true;
    const node: DeviceNode = { name, path: this.pathOf(name), kind, device, readOnly };
    this.nodes.set(name, node);
    this.emit("add", node);
    return node;
  }

  /**
   * Take a device out of the tree. Refused while claimed, naming the holders, unless `force` (the
   * device is going away — its owner closed it): then every claim is released.
   */
  remove(name: string, opts: { force?: boolean } = {}): DeviceNode {
    const node = this.nodes.get(name);
    if (!node) throw new Error(`device tree: no device "${name}"`);
    const held = this.claims.get(name);
    if (held && held.size > 0 && opts.force) {
      for (const c of [...held]) c.release();
    } else if (held && held.size > 0) {
      const who = [...held].map((c) => `${c.owner} (${c.mode})`).join(", ");
      throw new Error(`device tree: cannot remove ${name}, claimed by ${who}`);
    }
    this.nodes.delete(name);
    this.emit("remove", node);
    return node;
  }

  get(name: string): DeviceNode | undefined {
    return this.nodes.get(name);
  }

  list(): DeviceNode[] {
    return [...this.nodes.values()];
  }

  /** Find a node by bare name or by its tree path (`/UMCfuse/dev/file_b`). */
  resolve(nameOrPath: string): DeviceNode | undefined {
    const devDir = `${this.prefix}/dev/`;
    if (nameOrPath.startsWith(devDir)) return this.nodes.get(nameOrPath.slice(devDir.length));
    if (nameOrPath.includes("/")) return undefined;
    return this.nodes.get(nameOrPath);
  }

  /**
   * Claim a device for `owner` (free text naming the user, e.g. "LUN2 of iqn...:disk1", "BIO bio0").
   * Throws DeviceBusyError when the mode conflicts with a claim already held.
   */
  claim(nameOrPath: string, owner: string, mode: ClaimMode): DeviceClaim {
    const node = this.resolve(nameOrPath);
    if (!node) {
      throw new Error(
        `device tree: no device "${nameOrPath}" (have: ${[...this.nodes.keys()].join(", ") || "none"})`,
      );
    }
    if (mode !== "read" && node.readOnly) {
      throw new Error(`device tree: ${node.name} is read-only, ${mode} claim by ${owner} refused`);
    }
    const held = this.claims.get(node.name) ?? new Set<DeviceClaim>();
    for (const c of held) {
      const conflict =
        mode === "exclusive" || c.mode === "exclusive" || (mode === "write" && c.mode === "write");
      if (conflict) throw new DeviceBusyError(node.name, c.owner, mode, c.mode);
    }
    const claim = new DeviceClaim(this, node, owner, mode);
    held.add(claim);
    this.claims.set(node.name, held);
    return claim;
  }

  /**
   * Publish a status text file at `<dir>/<name>` beside `dev/` (one directory level, e.g. "proc/drbd"),
   * rendered by `render` whenever it is opened. Returns the function that takes it away again.
   */
  publishStatusFile(path: string, render: () => string): () => void {
    const parts = path.split("/");
    const [dir, name] = parts as [string, string | undefined];
    if (parts.length !== 2 || name === undefined || !NAME.test(dir) || !NAME.test(name) || dir === "dev")
      throw new Error(`device tree: status file "${path}" must be <dir>/<name> beside dev/`);
    if (this.statusFiles.has(path)) throw new Error(`device tree: status file "${path}" already exists`);
    const file: StatusFile = { dir, name, render };
    this.statusFiles.set(path, file);
    return () => {
      if (this.statusFiles.get(path) === file) this.statusFiles.delete(path);
    };
  }

  /** The published status files, sorted by path. */
  listStatusFiles(): StatusFile[] {
    return [...this.statusFiles.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, f]) => f);
  }

  /** Current claims on a device (for diagnostics and the FUSE view). */
  holders(name: string): { owner: string; mode: ClaimMode }[] {
    return [...(this.claims.get(name) ?? [])].map((c) => ({ owner: c.owner, mode: c.mode }));
  }

  /** @internal called by DeviceClaim.release */
  dropClaim(claim: DeviceClaim): void {
    const held = this.claims.get(claim.node.name);
    if (!held) return;
    held.delete(claim);
    if (held.size === 0) this.claims.delete(claim.node.name);
  }
}
