/**
 * The one path that builds and changes the running object graph — block devices, SCSI devices, the
 * iSCSI target's portal groups, initiator groups, auth groups and target nodes — and keeps the
 * LiveConfig true to it. The legacy INI start-up, a JSON config and every RPC write method go
 * through these operations, so what `save_config` dumps is what runs.
 *
 * Each operation checks everything before it changes anything (a refused call leaves no trace) and
 * throws RpcError with SPDK's code: negative errno for the bdev layer (lib/bdev/bdev_rpc.c), -32602
 * for the iSCSI methods (lib/iscsi/iscsi_rpc.c answers "Invalid parameters"), always with a message
 * that names the parameter at fault.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { AccountedBdev, type QosLimits } from "../bdev/accounted_bdev.js";
import { AioBdev } from "../bdev/aio/aio.js";
import type { BlockDevice } from "../bdev/bdev.js";
import type { BdevRegistry } from "../bdev/registry.js";
import { ConfigError } from "../config/errors.js";
import type { BdevSpec } from "../config/spdk_config.js";
import { parseNetmask } from "../iscsi/init_grp.js";
import type { AuthPolicy, ChapSecret, InitiatorGroupConfig, IscsiGlobalOptions } from "../iscsi/options.js";
import { IscsiTarget } from "../iscsi/target.js";
import { alignedBufferAllocator } from "../io_engine/native.js";
import { RpcError, RpcErrorCode } from "../rpc/jsonrpc.js";
import { ScsiDevice } from "../scsi/device.js";
import { MAX_LUN } from "../scsi/lun_id.js";
import { ASC } from "../scsi/sense.js";
import type { Logger } from "../util/log.js";
import { createBdev, type BdevModuleContext, type BdevModules } from "./bdev_modules.js";
import type { LiveConfig, LunState, PortalGroupState, TargetNodeState } from "./live_config.js";
import type { ServerHooks } from "./server_hooks.js";

/** Negative errno codes SPDK's bdev RPCs answer with (spdk_strerror). */
export const Errno = {
  EBUSY: -16,
  EEXIST: -17,
  ENODEV: -19,
  EINVAL: -22,
} as const;

/** How long a deleted target node's sessions get to log out before they are dropped (SPDK: 1 s per try). */
const LOGOUT_GRACE_MS = 2000;

function invalid(message: string): RpcError {
  return new RpcError(RpcErrorCode.InvalidParams, message);
}

/** SPDK (iscsi_tgt_node_construct): a name that is not iqn./eui./naa. gets "<node base>:" in front. */
export function fullTargetName(nodeBase: string, name: string): string {
  return /^(iqn|eui|naa)\./i.test(name) ? name : `${nodeBase}:${name}`;
}

const ISCSI_NAME_RE =
  /^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?)$/;
/** RFC 7143 §4.2.7.1: at most 223 bytes. */
const MAX_ISCSI_NAME = 223;

/** SPDK iscsi_check_chap_params: None excludes CHAP; Mutual needs CHAP required. */
export function checkChapParams(auth: AuthPolicy, group: number | undefined, what: string): void {
  if (auth.disableChap && auth.requireChap)
    throw invalid(`${what}: disable_chap and require_chap cannot both be true`);
  if (auth.mutualChap && !auth.requireChap) throw invalid(`${what}: mutual_chap needs require_chap`);
  if (group !== undefined && (!Number.isInteger(group) || group < 0))
    throw invalid(`${what}: chap_group must be a non-negative integer, got ${group}`);
}

export interface GraphContext {
  readonly live: LiveConfig;
  readonly registry: BdevRegistry;
  readonly modules: BdevModules;
  readonly moduleContext: BdevModuleContext;
  readonly hooks?: ServerHooks;
  readonly stateDir?: string;
  readonly logger: Logger;
  readonly rootLogger: Logger;
}

export class ServerGraph {
  private target: IscsiTarget | undefined;
  private readonly devices = new Map<string, ScsiDevice>();
  /** The generic layer in front of each module's device: I/O statistics and QoS (what LUNs use). */
  private readonly accounted = new Map<string, AccountedBdev>();

  constructor(private readonly ctx: GraphContext) {}

  get live(): LiveConfig {
    return this.ctx.live;
  }

  iscsiTarget(): IscsiTarget | undefined {
    return this.target;
  }

  // ---- framework ---------------------------------------------------------------------------

  /** framework_start_init: the iSCSI target comes up with the options set so far, serving nothing yet. */
  async startIscsi(): Promise<void> {
    const live = this.ctx.live;
    this.target = new IscsiTarget(
      {
        globals: live.globals,
        authGroups: live.authGroups,
        portalGroups: [],
        initiatorGroups: [],
        targets: [],
        readBufferAllocator: alignedBufferAllocator(),
      },
      this.ctx.rootLogger,
    );
    await this.target.start();
  }

  private running(): IscsiTarget {
    if (!this.target) throw new RpcError(-1, "the iSCSI target is not running yet (framework_start_init)");
    return this.target;
  }

  setIscsiOptions(globals: IscsiGlobalOptions, maxQueueDepth: number, authFile: string | undefined): void {
    if (this.target) throw new RpcError(-1, "iscsi_set_options: only before framework_start_init");
    this.ctx.live.globals = globals;
    this.ctx.live.maxQueueDepth = maxQueueDepth;
    this.ctx.live.authFile = authFile;
  }

  setDiscoveryAuth(auth: AuthPolicy, group: number | undefined): void {
    checkChapParams(auth, group, "iscsi_set_discovery_auth");
    if (group !== undefined && group !== 0 && !this.ctx.live.authGroupMap.has(group))
      throw invalid(`iscsi_set_discovery_auth: chap_group ${group} does not exist`);
    const g = group === 0 ? undefined : group;
    this.ctx.live.globals = { ...this.ctx.live.globals, discoveryAuth: auth, discoveryAuthGroup: g };
    this.target?.setDiscoveryAuth(auth, g);
  }

  // ---- block devices -----------------------------------------------------------------------

  async createBdev(spec: BdevSpec): Promise<BlockDevice> {
    if (this.ctx.registry.get(spec.name))
      throw new RpcError(Errno.EEXIST, `bdev "${spec.name}" already exists (name)`);
    let dev: BlockDevice;
    try {
      dev = await createBdev(spec, this.ctx.modules, this.ctx.moduleContext);
    } catch (err) {
      if (err instanceof ConfigError && spec.line === 0) throw new RpcError(Errno.EINVAL, err.detail);
      throw err;
    }
    this.ctx.live.bdevMap.set(spec.name, spec);
    this.accounted.set(spec.name, new AccountedBdev(dev));
    return dev;
  }

  /** The accounted device every LUN of `name` uses. */
  accountedBdev(name: string): AccountedBdev | undefined {
    return this.accounted.get(name);
  }

  /** bdev_set_qos_limit: limits per second, 0 = none; enforced from the next I/O. */
  setQos(name: string, limits: QosLimits): void {
    const dev = this.accounted.get(name);
    if (!dev) throw new RpcError(Errno.ENODEV, `No such device: no bdev "${name}" (name)`);
    dev.setQos(limits);
  }

  /**
   * Delete a block device (SPDK spdk_bdev_unregister): every LUN it backs is hot-removed first —
   * commands already running finish and are answered, the LUN leaves REPORT LUNS and the other
   * LUNs' initiators get REPORTED LUNS DATA HAS CHANGED — then it is flushed and closed.
   */
  async deleteBdev(name: string, kind: BdevSpec["kind"]): Promise<void> {
    const spec = this.ctx.live.bdevMap.get(name);
    const dev = this.ctx.registry.get(name);
    if (!spec || !dev || spec.kind !== kind)
      throw new RpcError(Errno.ENODEV, `No such device: no ${kind} bdev "${name}" (name)`);
    const stacked = this.ctx.live.bdevs.find((b) => b.kind === "bio" && b.path.endsWith(`/${name}`));
    if (stacked) throw new RpcError(Errno.EBUSY, `bdev "${name}" is below bdev "${stacked.name}"`);
    const holder = this.ctx.hooks?.bdevHolder?.(name);
    if (holder) throw new RpcError(Errno.EBUSY, `bdev "${name}" is held by ${holder}`);
    for (const node of this.ctx.live.targetNodes) {
      const gone = node.luns.filter((l) => l.bdev === name);
      if (gone.length === 0) continue;
      this.ctx.live.setTargetNode({ ...node, luns: node.luns.filter((l) => l.bdev !== name) });
      const device = this.devices.get(node.name.toLowerCase());
      for (const l of gone) {
        await device?.removeLun(l.id);
        this.ctx.hooks?.lunUnmapped?.({ targetName: node.name, id: l.id });
      }
    }
    this.ctx.registry.unregister(name);
    this.ctx.live.bdevMap.delete(name);
    await this.accounted.get(name)?.close();
    this.accounted.delete(name);
    try {
      await dev.close();
    } finally {
      this.ctx.hooks?.bdevDeleted?.(dev);
      await this.ctx.hooks?.bdevClosed?.(dev);
    }
  }

  /** bdev_aio_rescan: a grown file becomes a bigger device; its LUNs' initiators get CAPACITY DATA HAS CHANGED. */
  async rescanAio(name: string): Promise<void> {
    const dev = this.ctx.registry.get(name);
    if (!(dev instanceof AioBdev))
      throw new RpcError(Errno.ENODEV, `No such device: no aio bdev "${name}" (name)`);
    const luns = [...this.devices.values()].flatMap((d) => d.lunsOf(name));
    let change: { before: number; after: number };
    try {
      change = await dev.rescan(luns.length === 0);
    } catch (err) {
      throw new RpcError(Errno.EBUSY, (err as Error).message);
    }
    if (change.before === change.after) return;
    this.ctx.logger.info({ bdev: name, ...change }, "block device resized");
    // SBC-4 4.8 / SPC-4 6.33: every I_T nexus learns the new capacity before its next command.
    for (const lu of luns) lu.unitAttentions.establishForOthers(undefined, ASC.CAPACITY_DATA_HAS_CHANGED);
  }

  // ---- portal groups -------------------------------------------------------------------------

  async createPortalGroup(pg: PortalGroupState): Promise<void> {
    const target = this.running();
    if (!Number.isInteger(pg.tag) || pg.tag < 1 || pg.tag > 65535)
      throw invalid(`tag must be 1..65535, got ${pg.tag}`);
    if (this.ctx.live.portalGroupMap.has(pg.tag)) throw invalid(`tag: portal group ${pg.tag} already exists`);
    if (pg.portals.length === 0) throw invalid(`portals: portal group ${pg.tag} needs at least one portal`);
    for (const [i, p] of pg.portals.entries()) {
      if (p.host === "") throw invalid(`portals[${i}].host is empty`);
      if (!Number.isInteger(p.port) || p.port < 0 || p.port > 65535)
        throw invalid(`portals[${i}].port must be 0..65535, got ${p.port}`);
    }
    try {
      await target.addPortalGroup(pg, !pg.wait);
    } catch (err) {
      throw invalid(`portals: ${(err as Error).message}`);
    }
    this.ctx.live.portalGroupMap.set(pg.tag, pg);
  }

  async startPortalGroup(tag: number): Promise<void> {
    const pg = this.ctx.live.portalGroupMap.get(tag);
    if (!pg) throw invalid(`tag: no portal group ${tag}`);
    try {
      await this.running().startPortalGroup(tag);
    } catch (err) {
      throw invalid(`tag ${tag}: ${(err as Error).message}`);
    }
    this.ctx.live.portalGroupMap.set(tag, { ...pg, wait: false });
  }

  /** Delete a portal group: its listeners close, its connections end, mappings to it go (SPDK). */
  async deletePortalGroup(tag: number): Promise<void> {
    if (!this.ctx.live.portalGroupMap.has(tag)) throw invalid(`tag: no portal group ${tag}`);
    this.ctx.live.portalGroupMap.delete(tag);
    for (const node of this.ctx.live.targetNodes) {
      if (node.maps.some((m) => m.portalGroup === tag))
        this.updateNode({ ...node, maps: node.maps.filter((m) => m.portalGroup !== tag) });
    }
    await this.running().removePortalGroup(tag);
  }

  // ---- initiator groups ----------------------------------------------------------------------

  private checkInitiatorGroup(ig: InitiatorGroupConfig): void {
    if (!Number.isInteger(ig.tag) || ig.tag < 1 || ig.tag > 65535)
      throw invalid(`tag must be 1..65535, got ${ig.tag}`);
    if (ig.initiators.length === 0) throw invalid(`initiators: initiator group ${ig.tag} needs at least one`);
    if (ig.netmasks.length === 0) throw invalid(`netmasks: initiator group ${ig.tag} needs at least one`);
    for (const [i, n] of ig.initiators.entries()) {
      if (n.trim() === "" || n.length > MAX_ISCSI_NAME + 1)
        throw invalid(`initiators[${i}] "${n}" is not a name`);
    }
    for (const [i, m] of ig.netmasks.entries()) {
      try {
        parseNetmask(m);
      } catch (err) {
        throw invalid(`netmasks[${i}]: ${(err as Error).message}`);
      }
    }
  }

  createInitiatorGroup(ig: InitiatorGroupConfig): void {
    this.checkInitiatorGroup(ig);
    if (this.ctx.live.initiatorGroupMap.has(ig.tag))
      throw invalid(`tag: initiator group ${ig.tag} already exists`);
    this.running().setInitiatorGroup(ig);
    this.ctx.live.initiatorGroupMap.set(ig.tag, ig);
  }

  deleteInitiatorGroup(tag: number): void {
    if (!this.ctx.live.initiatorGroupMap.has(tag)) throw invalid(`tag: no initiator group ${tag}`);
    for (const node of this.ctx.live.targetNodes) {
      if (node.maps.some((m) => m.initiatorGroup === tag))
        this.updateNode({ ...node, maps: node.maps.filter((m) => m.initiatorGroup !== tag) });
    }
    this.running().removeInitiatorGroup(tag);
    this.ctx.live.initiatorGroupMap.delete(tag);
  }

  /** iscsi_initiator_group_add/remove_initiators: change names and netmasks of a group. */
  changeInitiatorGroup(
    tag: number,
    add: boolean,
    initiators: readonly string[],
    netmasks: readonly string[],
  ): void {
    const ig = this.ctx.live.initiatorGroupMap.get(tag);
    if (!ig) throw invalid(`tag: no initiator group ${tag}`);
    const has = (list: readonly string[], v: string): boolean =>
      list.some((x) => x.toLowerCase() === v.toLowerCase());
    let next: InitiatorGroupConfig;
    if (add) {
      for (const n of initiators)
        if (has(ig.initiators, n)) throw invalid(`initiators: "${n}" is already in group ${tag}`);
      for (const n of netmasks)
        if (has(ig.netmasks, n)) throw invalid(`netmasks: "${n}" is already in group ${tag}`);
      next = { tag, initiators: [...ig.initiators, ...initiators], netmasks: [...ig.netmasks, ...netmasks] };
      this.checkInitiatorGroup(next);
    } else {
      for (const n of initiators)
        if (!has(ig.initiators, n)) throw invalid(`initiators: "${n}" is not in group ${tag}`);
      for (const n of netmasks)
        if (!has(ig.netmasks, n)) throw invalid(`netmasks: "${n}" is not in group ${tag}`);
      next = {
        tag,
        initiators: ig.initiators.filter((x) => !has(initiators, x)),
        netmasks: ig.netmasks.filter((x) => !has(netmasks, x)),
      };
    }
    this.running().setInitiatorGroup(next);
    this.ctx.live.initiatorGroupMap.set(tag, next);
  }

  // ---- auth groups ---------------------------------------------------------------------------

  setAuthGroup(tag: number, secrets: readonly ChapSecret[], create: boolean): void {
    if (!Number.isInteger(tag) || tag < 1 || tag > 65535) throw invalid(`tag must be 1..65535, got ${tag}`);
    const exists = this.ctx.live.authGroupMap.has(tag);
    if (create && exists) throw invalid(`tag: auth group ${tag} already exists`);
    if (!create && !exists) throw invalid(`tag: no auth group ${tag}`);
    const users = new Set<string>();
    for (const [i, s] of secrets.entries()) {
      if (s.user === "" || s.secret === "") throw invalid(`secrets[${i}]: user and secret must not be empty`);
      if ((s.muser === undefined) !== (s.msecret === undefined))
        throw invalid(`secrets[${i}]: muser and msecret go together`);
      if (users.has(s.user)) throw invalid(`secrets[${i}]: user "${s.user}" appears twice`);
      users.add(s.user);
    }
    this.target?.setAuthGroup(tag, secrets);
    this.ctx.live.authGroupMap.set(tag, { tag, secrets });
  }

  deleteAuthGroup(tag: number): void {
    if (!this.ctx.live.authGroupMap.has(tag)) throw invalid(`tag: no auth group ${tag}`);
    const user = this.ctx.live.targetNodes.find((n) => n.authGroup === tag);
    if (user) throw invalid(`tag: auth group ${tag} is used by target ${user.name}`);
    this.target?.removeAuthGroup(tag);
    this.ctx.live.authGroupMap.delete(tag);
  }

  // ---- target nodes --------------------------------------------------------------------------

  private checkMaps(maps: TargetNodeState["maps"]): void {
    for (const [i, m] of maps.entries()) {
      if (!this.ctx.live.portalGroupMap.has(m.portalGroup))
        throw invalid(`pg_ig_maps[${i}].pg_tag: no portal group ${m.portalGroup}`);
      if (!this.ctx.live.initiatorGroupMap.has(m.initiatorGroup))
        throw invalid(`pg_ig_maps[${i}].ig_tag: no initiator group ${m.initiatorGroup}`);
    }
  }

  /**
   * iscsi_create_target_node, and each [TargetNodeN] of a legacy config: everything is checked and
   * the SCSI device built before the node becomes visible; nothing is left behind on failure.
   * `lunError` turns a LUN's problem into the caller's error (a config line for the INI path).
   */
  async createTargetNode(
    node: TargetNodeState,
    lunError: (lun: LunState, index: number, message: string) => Error = (_l, i, m) =>
      invalid(`luns[${i}]: ${m}`),
  ): Promise<void> {
    const target = this.running();
    const live = this.ctx.live;
    if (node.name.length > MAX_ISCSI_NAME || !ISCSI_NAME_RE.test(node.name))
      throw invalid(`name: "${node.name}" is not an iSCSI name (iqn., eui. or naa.)`);
    if (live.targetNode(node.name)) throw invalid(`name: target ${node.name} already exists`);
    if (!Number.isInteger(node.queueDepth) || node.queueDepth < 1 || node.queueDepth > live.maxQueueDepth)
      throw invalid(`queue_depth must be 1..${live.maxQueueDepth}, got ${node.queueDepth}`);
    checkChapParams(node.auth, node.authGroup, "target node");
    if (node.authGroup !== undefined && !live.authGroupMap.has(node.authGroup))
      throw invalid(`chap_group: no auth group ${node.authGroup}`);
    this.checkMaps(node.maps);
    const ids = new Set<number>();
    const bdevs: BlockDevice[] = [];
    for (const [i, l] of node.luns.entries()) {
      if (!Number.isInteger(l.id) || l.id < 0 || l.id > MAX_LUN)
        throw lunError(l, i, `LUN ID ${l.id} is not in 0..${MAX_LUN}`);
      if (ids.has(l.id)) throw lunError(l, i, `LUN${l.id} is given twice`);
      ids.add(l.id);
      const bdev = this.ctx.registry.get(l.bdev);
      if (!bdev) throw lunError(l, i, `LUN${l.id} names block device "${l.bdev}", which does not exist`);
      bdevs.push(bdev);
    }
    const mapped: LunState[] = [];
    const undo = (): void => {
      for (const l of mapped) this.ctx.hooks?.lunUnmapped?.({ targetName: node.name, id: l.id });
    };
    for (const [i, l] of node.luns.entries()) {
      try {
        this.ctx.hooks?.lunMapped?.({ targetName: node.name, id: l.id, bdev: bdevs[i]! });
        mapped.push(l);
      } catch (err) {
        undo();
        throw lunError(l, i, `LUN${l.id} ${l.bdev}: ${(err as Error).message}`);
      }
    }
    const device = new ScsiDevice({
      name: node.name,
      luns: node.luns.map((l, i) => ({ id: l.id, bdev: this.accounted.get(bdevs[i]!.name) ?? bdevs[i]! })),
      aptplDir: await this.aptplDir(node.name).catch((err: unknown) => {
        undo();
        throw err;
      }),
    });
    try {
      await device.init();
    } catch (err) {
      undo();
      throw err;
    }
    const { luns: _luns, ...iscsi } = node;
    target.addNode({ ...iscsi, device });
    this.devices.set(node.name.toLowerCase(), device);
    live.setTargetNode(node);
    this.ctx.logger.info(
      { target: node.name, luns: node.luns.map((l) => `${l.id}:${l.bdev}`) },
      "target node ready",
    );
  }

  private async aptplDir(targetName: string): Promise<string | undefined> {
    if (!this.ctx.stateDir) return undefined;
    const dir = join(this.ctx.stateDir, "aptpl", targetName.replace(/[^A-Za-z0-9.-]/g, "_"));
    await mkdir(dir, { recursive: true });
    return dir;
  }

  private nodeOf(name: string): TargetNodeState {
    const node = this.ctx.live.targetNode(name);
    if (!node) throw invalid(`name: no target node ${name}`);
    return node;
  }

  /** Model and running node together (mappings, authentication). */
  private updateNode(next: TargetNodeState): void {
    this.ctx.live.setTargetNode(next);
    const running = this.target?.findNode(next.name);
    if (running) {
      const { luns: _luns, ...iscsi } = next;
      running.config = { ...iscsi, device: running.config.device };
    }
  }

  /** Delete a target node: its sessions are asked to log out (AsyncEvent 1), then dropped. */
  async deleteTargetNode(name: string): Promise<void> {
    const node = this.nodeOf(name);
    this.ctx.live.targetNodeMap.delete(node.name.toLowerCase());
    this.devices.delete(node.name.toLowerCase());
    await this.running().removeNode(node.name, LOGOUT_GRACE_MS);
    for (const l of node.luns) this.ctx.hooks?.lunUnmapped?.({ targetName: node.name, id: l.id });
  }

  /** iscsi_target_node_add_lun; lunId undefined or -1: the lowest free one. Returns the LUN ID. */
  async addLun(name: string, bdevName: string, lunId: number | undefined): Promise<number> {
    const node = this.nodeOf(name);
    const bdev = this.ctx.registry.get(bdevName);
    if (!bdev) throw invalid(`bdev_name: no block device "${bdevName}"`);
    let id = lunId ?? -1;
    if (id === -1) for (id = 0; node.luns.some((l) => l.id === id); id++);
    if (!Number.isInteger(id) || id < 0 || id > MAX_LUN)
      throw invalid(`lun_id must be -1 or 0..${MAX_LUN}, got ${id}`);
    if (node.luns.some((l) => l.id === id)) throw invalid(`lun_id: LUN${id} of ${node.name} exists`);
    try {
      this.ctx.hooks?.lunMapped?.({ targetName: node.name, id, bdev });
    } catch (err) {
      throw invalid(`bdev_name: ${(err as Error).message}`);
    }
    const device = this.devices.get(node.name.toLowerCase());
    try {
      await device?.addLun({ id, bdev: this.accounted.get(bdevName) ?? bdev });
    } catch (err) {
      this.ctx.hooks?.lunUnmapped?.({ targetName: node.name, id });
      throw invalid(`lun_id ${id}: ${(err as Error).message}`);
    }
    this.ctx.live.setTargetNode({ ...node, luns: [...node.luns, { id, bdev: bdevName }] });
    return id;
  }

  changeMaps(name: string, add: boolean, maps: TargetNodeState["maps"]): void {
    const node = this.nodeOf(name);
    const same = (a: TargetNodeState["maps"][number], b: TargetNodeState["maps"][number]): boolean =>
      a.portalGroup === b.portalGroup && a.initiatorGroup === b.initiatorGroup;
    if (add) {
      this.checkMaps(maps);
      for (const [i, m] of maps.entries())
        if (node.maps.some((x) => same(x, m)))
          throw invalid(`pg_ig_maps[${i}]: ${m.portalGroup}:${m.initiatorGroup} is already mapped`);
      this.updateNode({ ...node, maps: [...node.maps, ...maps] });
    } else {
      for (const [i, m] of maps.entries())
        if (!node.maps.some((x) => same(x, m)))
          throw invalid(`pg_ig_maps[${i}]: ${m.portalGroup}:${m.initiatorGroup} is not mapped`);
      this.updateNode({ ...node, maps: node.maps.filter((x) => !maps.some((m) => same(x, m))) });
    }
  }

  setNodeAuth(name: string, auth: AuthPolicy, group: number | undefined): void {
    const node = this.nodeOf(name);
    checkChapParams(auth, group, "iscsi_target_node_set_auth");
    if (group !== undefined && group !== 0 && !this.ctx.live.authGroupMap.has(group))
      throw invalid(`chap_group: no auth group ${group}`);
    this.updateNode({ ...node, auth, authGroup: group === 0 ? undefined : group });
  }

  async requestLogout(name: string, pgTag: number | undefined): Promise<void> {
    const node = this.nodeOf(name);
    if (pgTag !== undefined && !this.ctx.live.portalGroupMap.has(pgTag))
      throw invalid(`pg_tag: no portal group ${pgTag}`);
    await this.running().requestLogout(node.name, pgTag, LOGOUT_GRACE_MS);
  }

  /** SCSI devices (one per target node) for scsi_get_devices, in creation order. */
  scsiDevices(): ScsiDevice[] {
    return [...this.devices.values()];
  }

  /** Stop the iSCSI target (server shutdown). */
  async stopIscsi(): Promise<void> {
    await this.target?.stop();
  }
}
