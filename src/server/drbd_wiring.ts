/**
 * DRBD joined to the server: the DRBD resources of a drbd.conf / .res file for this node, the
 * `drbd_adm` / `drbd_status` control-plane methods behind `usertgt drbdadm`, and the in-process BIO
 * helper `drbdadm_up_primary` of the reference SPDK+DRBD config's `BIO bio1 /UMCfuse/dev/drbd2 drbdadm_up_primary spdk
 * /UMCfuse/dev/ram_b`.
 *
 * As with kernel DRBD, loading the config brings nothing up: `drbdadm up RES` (or the BIO helper) does.
 * At shutdown every resource still up is taken down (secondary, disconnect, detach → clean metadata)
 * once nothing in the tree holds its device any more, which is before the device below it closes.
 */
import { snapshotOf } from "../drbd/resource_snapshot.js";
import { hostname } from "node:os";
import type { BioHelperFn } from "../bdev/bio/helper.js";
import type { BlockDevice } from "../bdev/bdev.js";
import type { DeviceTree } from "../devtree/device_tree.js";
import { parseDrbdConfig, selectLocalHost } from "../drbd/config/res_parser.js";
import { DrbdMetadataError } from "../drbd/metadata.js";
import { DrbdResource } from "../drbd/resource.js";
import { ENODEV, RpcError, RpcErrorCode, type JsonObject, type JsonValue } from "../rpc/jsonrpc.js";
import type { MethodRegistry } from "../rpc/registry.js";
import { log as rootLog, type Logger } from "../util/log.js";
import type { ServerHooks } from "./server_hooks.js";

/** drbdadm subcommands the facade implements (status and dump are handled apart). */
export const DRBD_ADM_COMMANDS = [
  "up",
  "down",
  "attach",
  "detach",
  "connect",
  "disconnect",
  "primary",
  "secondary",
  "create-md",
  "new-current-uuid",
  "invalidate",
  "verify",
  "invalidate-remote",
  "suspend-io",
  "resume-io",
  "adjust",
  "resize",
] as const;
export type DrbdAdmCommand = (typeof DRBD_ADM_COMMANDS)[number];

/** Server-defined JSON-RPC error (JSON-RPC 2.0 §5.1 reserves -32000..-32099 for these). */
export const DRBD_COMMAND_FAILED = -32000;
/**
 * A state change DRBD refused (drbdsetup's "State change failed", exit code 11 of drbdadm): the CLI
 * exits 11 for it, as drbdadm does.
 */
export const DRBD_STATE_CHANGE_FAILED = -32011;

export interface DrbdAdmOptions {
  readonly force?: boolean;
  readonly clearBitmap?: boolean;
  /** connect --discard-my-data: lose an unresolved split brain (refused on a Primary). */
  readonly discardMyData?: boolean;
  /** resize --assume-clean / --assume-peer-has-space. */
  readonly assumeClean?: boolean;
  readonly assumePeerHasSpace?: boolean;
}

export interface DrbdWiringOptions {
  /** The drbd.conf or .res file (includes are followed). */
  readonly configFile: string;
  /** The `on NAME` section that is this node (drbdadm's --node-name); default os.hostname(). */
  readonly nodeName?: string;
  readonly tree: DeviceTree;
  readonly logger?: Logger;
}

function isDrbdAdmCommand(c: string): c is DrbdAdmCommand {
  return (DRBD_ADM_COMMANDS as readonly string[]).includes(c);
}

export class DrbdWiring {
  readonly resources = new Map<string, DrbdResource>();
  readonly nodeName: string;
  private readonly log: Logger;
  /** One command at a time per resource: `up` racing `down` would leave half a device. */
  private readonly queues = new Map<string, Promise<unknown>>();

  private constructor(
    private readonly opts: DrbdWiringOptions,
    logger: Logger,
  ) {
    this.nodeName = opts.nodeName ?? hostname();
    this.log = logger;
  }

  /**
   * Parse the file and build a resource for each one with an `on` section for this node (others are
   * another node's business, as for drbdadm). A parse error (DrbdConfigError, FILE:LINE) fails the start.
   */
  static load(opts: DrbdWiringOptions): DrbdWiring {
    const w = new DrbdWiring(opts, (opts.logger ?? rootLog).child({ module: "drbd" }));
    const config = parseDrbdConfig(opts.configFile);
    for (const res of config.resources) {
      if (!res.hosts.some((h) => h.names.includes(w.nodeName))) {
        w.log.debug({ resource: res.name }, `no 'on ${w.nodeName}' section: not this node's resource`);
        continue;
      }
      w.resources.set(res.name, DrbdResource.fromConfig(selectLocalHost(res, w.nodeName), opts.tree));
    }
    if (w.resources.size === 0)
      w.log.warn(
        { file: opts.configFile },
        `no resource has an 'on ${w.nodeName}' section (set --node-name?)`,
      );
    return w;
  }

  /** The resource by name; RpcError ENODEV (as a missing bdev) when this node has none of that name. */
  get(name: string): DrbdResource {
    const slash = name.indexOf("/");
    if (slash >= 0) return this.volume(name.slice(0, slash), name.slice(slash + 1));
    const r = this.resources.get(name);
    if (!r)
      throw new RpcError(
        ENODEV,
        `'${name}' not defined in your config (for this host ${this.nodeName}); resources: ${[...this.resources.keys()].join(", ") || "none"}`,
      );
    return r;
  }

  /** drbdadm's RES/VOL: one volume of a resource. */
  private volume(name: string, vol: string): DrbdResource {
    const r = this.get(name);
    const v = /^\d+$/.test(vol) ? r.volumes.find((x) => (x.opts.volume ?? 0) === Number(vol)) : undefined;
    if (!v)
      throw new RpcError(
        ENODEV,
        `'${name}/${vol}': resource ${name} has no volume ${vol}; volumes: ${r.volumes.map((x) => x.opts.volume ?? 0).join(", ")}`,
      );
    return v;
  }

  private usage: ((device: string) => string[]) | undefined;

  /** Tell who uses a DRBD device (sessions on LUNs over it, open FUSE files): secondary refuses then. */
  setUsageProbe(probe: (device: string) => string[]): void {
    this.usage = probe;
  }

  /** Run one drbdadm command on a resource, serialised with the resource's other commands. */
  adm(command: string, name: string, opts: DrbdAdmOptions = {}): Promise<void> {
    if (command === "adjust") return this.adjust(name).then(() => undefined);
    if (!isDrbdAdmCommand(command))
      throw new RpcError(
        RpcErrorCode.InvalidParams,
        `drbdadm ${command}: not supported (supported: ${DRBD_ADM_COMMANDS.join(", ")}, status, dump)`,
      );
    const r = this.get(name);
    // RES/VOL: the command runs on that volume alone (drbdadm attach r0/1).
    const run = () =>
      name.includes("/") ? r.volumeSet.alone(() => this.run(r, command, opts)) : this.run(r, command, opts);
    // resume-io must not queue behind a command that waits for the frozen I/O (secondary, down).
    if (command === "resume-io") return run();
    return this.serial(name.split("/")[0] as string, run);
  }

  /**
   * drbdadm adjust RES (or `all`): reads the config file again and makes each named resource of this node
   * match it (DrbdResource.adjust). A resource new in the file is added and brought up. Returns, per
   * resource, what was done (empty: nothing differed).
   */
  async adjust(name: string): Promise<Record<string, string[]>> {
    const config = parseDrbdConfig(this.opts.configFile);
    const mine = config.resources.filter((res) => res.hosts.some((h) => h.names.includes(this.nodeName)));
    const wanted = name === "all" ? mine : mine.filter((res) => res.name === name);
    if (wanted.length === 0) {
      // Not (or no longer) in the file for this node: the same error as for any unknown resource.
      if (!this.resources.has(name) || name === "all") this.get(name);
      throw new Error(
        `'${name}' is no longer defined for this host ${this.nodeName} in ${this.opts.configFile}; run drbdadm down first`,
      );
    }
    const out: Record<string, string[]> = {};
    for (const res of wanted) {
      const next = DrbdResource.fromConfig(selectLocalHost(res, this.nodeName), this.opts.tree);
      let r = this.resources.get(res.name);
      // A resource that is down and whose volumes changed in the file is built anew from it.
      const down = (x: DrbdResource) =>
        x.volumes.every((v) => !v.device || (v.device.disk === "Diskless" && v.device.role !== "Primary")) &&
        x.volumes.every((v) => !v.connection || v.connection.state === "StandAlone");
      if (!r || (r.volumes.length !== next.volumes.length && down(r))) {
        r = next;
        this.resources.set(res.name, r);
      }
      const target = r;
      out[res.name] = await this.serial(res.name, async () => {
        this.log.info({ resource: res.name }, "drbdadm adjust");
        const done = await target.adjust(next.opts, next.volumes.length);
        this.log.info({ resource: res.name, done }, done.length > 0 ? "adjusted" : "adjust: nothing to do");
        return done;
      });
    }
    return out;
  }

  private async run(r: DrbdResource, command: DrbdAdmCommand, opts: DrbdAdmOptions): Promise<void> {
    this.log.info({ resource: r.opts.name, command, ...opts }, "drbdadm");
    // The volumes the command acts on: every volume of the resource, or the one RES/VOL named.
    const scope = r.volumeSet.fansOut ? r.volumes : [r];
    for (const v of scope) {
      if (command === "secondary" && v.device?.role === "Primary") {
        // drbd_set_role: a Primary whose device is open stays Primary (SS_DEVICE_IN_USE).
        const users = this.usage?.(v.deviceName) ?? [];
        if (users.length > 0)
          throw new RpcError(
            DRBD_STATE_CHANGE_FAILED,
            `${v.deviceName}: State change failed: (-12) Device is held open by someone (${users.join("; ")})`,
          );
      }
      // A connected Primary's detach keeps the device in use (its I/O goes to the peer): nothing to refuse.
      if (command === "down" || (command === "detach" && !v.detachKeepsDevice)) {
        // Refuse before the facade demotes anything: down would otherwise leave a Primary in use Secondary.
        const holders = this.opts.tree.get(v.deviceName) ? this.opts.tree.holders(v.deviceName) : [];
        if (holders.length > 0)
          throw new Error(
            `${v.deviceName}: State change failed: (-12) Device is held open by someone (${holders.map((h) => h.owner).join(", ")})`,
          );
      }
    }
    switch (command) {
      case "up":
        return r.up();
      case "down":
        return r.down();
      case "attach":
        return r.attach();
      case "detach":
        return r.detach();
      case "connect":
        return r.connect({ discardMyData: opts.discardMyData === true });
      case "disconnect":
        return r.disconnect();
      case "primary":
        return r.primary({ force: opts.force === true });
      case "secondary":
        return r.secondary();
      case "create-md":
        return r.createMd();
      case "new-current-uuid":
        return r.newCurrentUuid({ clearBitmap: opts.clearBitmap === true });
      case "invalidate":
        return r.invalidate();
      case "verify":
        return r.verify();
      case "invalidate-remote":
        return r.invalidateRemote();
      case "suspend-io":
        return r.suspendIo();
      case "resume-io":
        return r.resumeIo();
      case "adjust":
        await this.adjust(r.opts.name);
        return;
      case "resize":
        return r.resize({
          assumeClean: opts.assumeClean === true,
          assumePeerHasSpace: opts.assumePeerHasSpace === true,
        });
    }
  }

  private serial<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.queues.set(
      name,
      next.catch(() => undefined),
    );
    return next;
  }

  /** `drbdadm status [RES]` text: the named resource, or all of this node's. */
  status(name?: string): string {
    if (name !== undefined) return this.get(name).status();
    return [...this.resources.values()].map((r) => r.status()).join("\n");
  }

  /**
   * The BIO helper `drbdadm_up_primary RES DEV`. Which resource: the one named RES; if this node has
   * none of that name (the reference SPDK+DRBD config passes "spdk", a name from its build, not a resource), the one whose
   * local backing disk is DEV. Then, as that config's helper script did with the kernel tools:
   *   - no DRBD metadata on the lower device → create-md (a fresh, Inconsistent device);
   *   - up (attach, and connect when a peer is configured);
   *   - primary; with --force only when the data cannot come from elsewhere: metadata just created, or a
   *     one-node resource, or a peer that is not connected. Otherwise a non-UpToDate disk stays Secondary and
   *     the helper fails (the operator decides which side has the good data).
   */
  readonly upPrimary: BioHelperFn = (args) => this.helperUp("drbdadm_up_primary", args, true);

  /** The BIO helper `drbdadm_up RES DEV`: the same without primary (a Secondary's BIO serves reads only). */
  readonly upOnly: BioHelperFn = (args) => this.helperUp("drbdadm_up", args, false);

  private async helperUp(helper: string, args: readonly string[], primary: boolean): Promise<void> {
    if (args.length < 1 || args.length > 2)
      throw new Error(`usage: ${helper} RESOURCE [DEVICE], got ${args.length} arguments`);
    const [resName, dev] = args as [string, string | undefined];
    const r = this.pickResource(resName, dev);
    await this.serial(r.opts.name, async () => {
      let created = false;
      // Each volume on its own: create-md only where a backing disk has no metadata yet.
      for (const v of r.volumes) {
        if (v.device && v.device.disk !== "Diskless") continue;
        await v.volumeSet.alone(async () => {
          try {
            await v.attach();
          } catch (err) {
            if (!(err instanceof DrbdMetadataError) || !/create-md/.test(err.message)) throw err;
            this.log.info(
              { resource: r.opts.name, device: v.deviceName },
              "no DRBD metadata on the backing disk: create-md",
            );
            await v.createMd();
            created = true;
            await v.attach();
          }
        });
      }
      if (r.opts.peer && (!r.connection || r.connection.state === "StandAlone")) await r.connect();
      const d = r.device;
      if (!primary || !d || d.role === "Primary") return;
      if (d.disk === "UpToDate") return r.primary();
      // Any connected state (also Ahead/Behind, Verify*, a resync): the peer may hold the good data.
      const connected = r.connection?.replicating === true;
      const force = created || !r.opts.peer || !connected;
      if (!force)
        throw new Error(
          `${r.deviceName}: disk ${d.disk} and a connected peer: not forcing primary (run drbdadm primary --force on the node with the good data)`,
        );
      this.log.warn({ resource: r.opts.name, disk: d.disk }, "primary --force");
      await r.primary({ force: true });
    });
  }

  private pickResource(name: string, dev: string | undefined): DrbdResource {
    const byName = this.resources.get(name);
    if (byName) return byName;
    if (dev !== undefined) {
      const want = this.opts.tree.resolve(dev)?.name ?? dev;
      for (const r of this.resources.values()) {
        const backing = this.opts.tree.resolve(r.opts.backing)?.name ?? r.opts.backing;
        if (backing === want) return r;
      }
    }
    throw new Error(
      `no resource named ${name}${dev !== undefined ? ` and none with disk ${dev}` : ""} for node ${this.nodeName}`,
    );
  }

  /** Down every resource that is still attached and whose device nothing in the tree holds. */
  async downUnheld(): Promise<void> {
    for (const r of this.resources.values()) {
      // A Primary detached by an I/O error (Diskless, still serving through the peer) is taken down too.
      if (!r.device || (r.device.disk === "Diskless" && r.device.role !== "Primary")) continue;
      const tree = this.opts.tree;
      if (r.volumes.some((v) => tree.get(v.deviceName) && tree.holders(v.deviceName).length > 0)) continue;
      try {
        await this.serial(r.opts.name, () => r.down());
      } catch (err) {
        this.log.error({ err, resource: r.opts.name }, "drbdadm down at shutdown failed");
        throw err;
      }
    }
  }

  /**
   * Server hooks: before block devices close, down the resources nobody uses; after each block device
   * closes (a BIO bdev on drbdN releases it), down those it freed — before the device below them closes.
   */
  hooks(): ServerHooks {
    return {
      beforeClose: () => this.downUnheld(),
      bdevClosed: (_dev: BlockDevice) => this.downUnheld(),
    };
  }

  registerMethods(registry: MethodRegistry): void {
    registry.register("drbd_adm", {
      description: "run a drbdadm command (up, down, primary, ...) on one of this node's DRBD resources",
      params: {
        command: { type: "string", required: true },
        resource: { type: "string", required: true },
        force: { type: "boolean" },
        clear_bitmap: { type: "boolean" },
        discard_my_data: { type: "boolean" },
        assume_clean: { type: "boolean" },
        assume_peer_has_space: { type: "boolean" },
      },
      handler: async (p): Promise<JsonObject> => {
        const command = p.command as string;
        const resource = p.resource as string;
        if (command === "adjust") {
          let adjusted: Record<string, string[]>;
          try {
            adjusted = await this.adjust(resource);
          } catch (err) {
            throw asRpcError(err);
          }
          return {
            resource,
            command,
            adjusted,
            status: this.status(resource === "all" ? undefined : resource),
          };
        }
        try {
          await this.adm(command, resource, {
            force: p.force === true,
            clearBitmap: p.clear_bitmap === true,
            discardMyData: p.discard_my_data === true,
            assumeClean: p.assume_clean === true,
            assumePeerHasSpace: p.assume_peer_has_space === true,
          });
        } catch (err) {
          throw asRpcError(err);
        }
        return { resource, command, status: this.get(resource).status() };
      },
    });
    registry.register("drbd_snapshot", {
      description:
        "state and counters of one or all of this node's DRBD resources, as drbdsetup status --statistics and events2 show them",
      params: { resource: { type: "string" } },
      handler: (p) => {
        const names = typeof p.resource === "string" ? [p.resource] : [...this.resources.keys()];
        // JSON drops the undefined fields (done, ETA) as absent.
        return {
          resources: names.map((n) => JSON.parse(JSON.stringify(snapshotOf(this.get(n)))) as JsonObject),
        };
      },
    });
    registry.register("drbd_status", {
      description: "drbdadm status text and state of one or all of this node's DRBD resources",
      params: { resource: { type: "string" } },
      handler: (p) => {
        const names = typeof p.resource === "string" ? [p.resource] : [...this.resources.keys()];
        const resources: JsonValue[] = names.map((n) => resourceJson(this.get(n)));
        return { status: this.status(p.resource as string | undefined), resources };
      },
    });
  }
}

function asRpcError(err: unknown): RpcError {
  if (err instanceof RpcError) return err;
  return new RpcError(DRBD_COMMAND_FAILED, (err as Error).message ?? String(err));
}

/**
 * A resource's state: its first volume's at the top (as for a resource of one volume), and for a resource of
 * several volumes each volume's under `volumes`, with its volume number.
 */
function resourceJson(r: DrbdResource): JsonObject {
  const out = volumeJson(r);
  if (r.volumes.length > 1)
    out.volumes = r.volumes.map((v) => ({ volume: v.opts.volume ?? 0, ...volumeJson(v) }));
  return out;
}

function volumeJson(r: DrbdResource): JsonObject {
  const d = r.device;
  const c = r.connection;
  const out: JsonObject = {
    name: r.opts.name,
    device: r.deviceName,
    backing: r.opts.backing,
    // A cleanly detached device is Secondary; one detached by an I/O error may still be Primary.
    role: d?.role ?? "Secondary",
    disk: d ? d.disk : "Diskless",
  };
  if (r.opts.peer) {
    out.connection = c?.state ?? "StandAlone";
    // The wire protocol in force: the file's, or what the peer's net-options changed it to.
    out.protocol = c?.protocol ?? r.opts.protocol ?? "C";
    // startup { } and which of its timeouts applies now (drbdadm wait-connect).
    out.startup = {
      wfc_timeout: r.opts.wfcTimeoutSec ?? 0,
      degr_wfc_timeout: r.opts.degrWfcTimeoutSec ?? 0,
      outdated_wfc_timeout: r.opts.outdatedWfcTimeoutSec ?? 0,
      timeout_type: r.waitTimeoutType,
    };
    if (c?.peerRole !== undefined) out.peer_role = c.peerRole;
    if (c?.peerDisk !== undefined) out.peer_disk = c.peerDisk;
    if (c?.resyncDone !== undefined) out.done = c.resyncDone;
    if (c?.error !== undefined) out.last_error = c.error;
    if (c) {
      const rs = c.resyncStats;
      out.resync = {
        total_bits: rs.total,
        requests: rs.requested,
        requested_blocks: rs.requestedBlocks,
        // Checksum-based resync (csums-alg): blocks found equal, and blocks whose data went over the wire.
        csums: rs.csums,
        same_csum_blocks: rs.sameCsumBlocks,
        transferred_blocks: rs.transferredBlocks,
      };
      if (c.lastDecision) out.sync_decision = { result: c.lastDecision.result, rule: c.lastDecision.rule };
      const v = c.lastVerify;
      out.verify = v
        ? { running: v.running, checked_blocks: v.checkedBlocks, out_of_sync_blocks: v.outOfSyncBlocks }
        : { running: false, checked_blocks: 0, out_of_sync_blocks: 0 };
      if (c.lastSplitBrain)
        out.split_brain = {
          primaries: c.lastSplitBrain.primaries,
          result: c.lastSplitBrain.result,
          by: c.lastSplitBrain.by,
        };
    }
  }
  if (d && d.disk !== "Diskless") {
    out.out_of_sync_kib = d.bitmap.outOfSyncKiB;
    out.uuids = d.uuids.map((u) => u.toString(16).toUpperCase().padStart(16, "0"));
  }
  return out;
}

/** Two sets of hooks as one: each point runs a's, then b's. */
export function chainHooks(a: ServerHooks | undefined, b: ServerHooks | undefined): ServerHooks {
  if (!a) return b ?? {};
  if (!b) return a;
  return {
    lunMapped: (lun) => {
      a.lunMapped?.(lun);
      b.lunMapped?.(lun);
    },
    lunUnmapped: (lun) => {
      a.lunUnmapped?.(lun);
      b.lunUnmapped?.(lun);
    },
    bdevHolder: (name) => a.bdevHolder?.(name) ?? b.bdevHolder?.(name),
    bdevDeleted: (dev) => {
      a.bdevDeleted?.(dev);
      b.bdevDeleted?.(dev);
    },
    started: async () => {
      await a.started?.();
      await b.started?.();
    },
    beforeClose: async () => {
      await a.beforeClose?.();
      await b.beforeClose?.();
    },
    bdevClosed: async (dev) => {
      await a.bdevClosed?.(dev);
      await b.bdevClosed?.(dev);
    },
  };
}
