/**
 * A DRBD resource (one volume) driven by drbdadm-like commands: create-md, attach, detach, connect,
 * disconnect, up, down, primary [--force], secondary, new-current-uuid [--clear-bitmap], invalidate,
 * invalidate-remote, verify, adjust, resize [--assume-clean], status.
 *
 * The backing disk is a device of the device tree, claimed "exclusive" while attached; the DRBD device is
 * registered in the tree as drbd<minor> (kind "drbd") so that LUNs and the FUSE view can use it.
 */
import { ResyncProgress } from "./resync_progress.js";
import type { DeviceClaim, DeviceTree } from "../devtree/device_tree.js";
import { numericOption, optionValue, type VolumeConfig } from "./config/model.js";
import { adjustVolumes, VolumeSet, volumesStatus } from "./resource_volumes.js";
import type { LocalView } from "./config/res_parser.js";
import { createMetadata, MDF_PEER_OUT_DATED, type MetaDiskPlacement } from "./metadata.js";
import type { BlockDevice } from "../bdev/bdev.js";
import { DrbdDevice } from "./device.js";
import { DrbdResourceConnection } from "./volume_connection.js";
import {
  DrbdConnection,
  type ConnectionOptions,
  type ResyncControlOptions,
  type Endpoint,
  type WireProtocol,
} from "./connection.js";
import { afterSbPolicyNumber, type AfterSbPolicies } from "./after_sb.js";
import { congestionConfigError, type CongestionOptions, type OnCongestion } from "./congestion.js";
import type { FencingPolicy } from "./fencing.js";
import type { OnIoError } from "./io_error.js";
import { ShellHandlers, type HandlerRunner } from "./handlers.js";
import { log } from "../util/log.js";
import { sameOption, type LiveOptionChanges } from "./live_settings.js";

export interface DrbdResourceOptions extends CongestionOptions {
  name: string;
  tree: DeviceTree;
  minor: number;
  /** The volume number within the resource (`volume N { }`; 0 for a resource of one volume). */
  volume?: number;
  /** The backing disk: a device-tree name or path. */
  backing: string;
  /** Absent for a one-node resource (never connects). */
  local?: Endpoint;
  peer?: Endpoint;
  /** The `on NAME` sections of this node and its peer (drbdsetup status names connections by them). */
  localName?: string;
  peerName?: string;
  localNodeId?: number;
  peerNodeId?: number;
  protocol?: WireProtocol;
  cramHmacAlg?: string;
  sharedSecret?: string;
  /** net { max-buffers }: pages the peer's received writes may hold before the data socket is not read. */
  maxBuffers?: number;
  pingIntSec?: number;
  pingTimeoutDs?: number;
  connectIntSec?: number;
  timeoutDs?: number;
  resyncRateKiB?: number;
  /** disk { c-plan-ahead … c-min-rate }: the dynamic resync controller (c-plan-ahead 0: fixed resync-rate). */
  resyncControl?: ResyncControlOptions;
  /** External metadata: the tree device holding it and its placement (absent: internal). */
  metaDisk?: string;
  metaPlacement?: MetaDiskPlacement;
  /** disk { disk-flushes }. */
  diskFlushes?: boolean;
  alExtents?: number;
  /** net { after-sb-0pri/1pri/2pri } as wire numbers (afterSbPolicyNumber). */
  afterSb?: AfterSbPolicies;
  alwaysAsbp?: boolean;
  /** net { verify-alg }: sha1, md5, sha256 or crc32c. */
  verifyAlg?: string;
  /** net { data-integrity-alg }: crc32c, sha1, md5, … (integrity.ts). */
  dataIntegrityAlg?: string;
  /** net { csums-alg } and { csums-after-crash-only }: checksum-based resync. */
  csumsAlg?: string;
  csumsAfterCrashOnly?: boolean;
  /** net { discard-my-data }: every connect is a `connect --discard-my-data`. */
  discardMyData?: boolean;
  /** disk { fencing } (fencing.ts). */
  fencing?: FencingPolicy;
  /** disk { on-io-error } (io_error.ts). */
  onIoError?: OnIoError;
  /** disk { disk-timeout } in tenths of a second (0: none). */
  diskTimeoutDs?: number;
  /** handlers { } as configured (handlers.ts). */
  handlers?: HandlerRunner;
  /** startup { wfc-timeout, degr-wfc-timeout, outdated-wfc-timeout }, seconds (0: wait forever). */
  wfcTimeoutSec?: number;
  degrWfcTimeoutSec?: number;
  outdatedWfcTimeoutSec?: number;
}

/** Which startup timeout `drbdadm wait-connect` uses (drbd_adm_get_timeout_type). */
export type WaitTimeoutType = "default" | "degraded" | "peer-outdated";

export class DrbdResource {
  /** Resync speed and ETA, sampled by whoever reads the resource's snapshot. */
  readonly resyncProgress = new ResyncProgress();
  private dev: DrbdDevice | undefined;
  private conn: DrbdConnection | undefined;
  /** The resource's volumes (this one first) and their shared connection. */
  readonly volumeSet: VolumeSet<DrbdResource> = new VolumeSet<DrbdResource>(this);

  constructor(readonly opts: DrbdResourceOptions) {}

  /** Every volume of the resource, this one first (just this one for a resource of one volume). */
  get volumes(): readonly DrbdResource[] {
    return this.volumeSet.all;
  }

  /**
   * The resource of this node's `on` section of a parsed .res file (selectLocalHost). A resource of several
   * volumes is its first volume's DrbdResource, holding the others (resource_volumes.ts).
   */
  static fromConfig(view: LocalView, tree: DeviceTree): DrbdResource {
    const { resource, local } = view;
    const [first, ...others] = local.volumes;
    if (!first) throw new Error(`resource ${resource.name}: 'on ${local.names[0] ?? "?"}' has no volume`);
    const r = DrbdResource.volumeFromConfig(view, tree, first);
    if (others.length > 0) r.volumeSet.add(others.map((v) => DrbdResource.volumeFromConfig(view, tree, v)));
    return r;
  }

  /** One volume of the resource with all of the resource's settings. */
  private static volumeFromConfig(view: LocalView, tree: DeviceTree, vol: VolumeConfig): DrbdResource {
    const { resource, local, peer } = view;
    // meta-disk internal | DEV (flexible) | DEV [IDX] (indexed 128 MiB slots); DEV is a device-tree device.
    const meta: Pick<DrbdResourceOptions, "metaDisk" | "metaPlacement"> =
      vol.metaIndex === "internal"
        ? {}
        : {
            metaDisk: vol.metaDisk,
            metaPlacement:
              vol.metaIndex === "flexible" ? { kind: "flexible" } : { kind: "indexed", index: vol.metaIndex },
          };
    const net = resource.net;
    const disk = vol.diskOptions.size > 0 ? vol.diskOptions : resource.disk;
    const str = (name: string) => {
      const v = optionValue(net, "net", name);
      return typeof v === "string" ? v : undefined;
    };
    const cramHmacAlg = str("cram-hmac-alg");
    const sharedSecret = str("shared-secret");
    const verifyAlg = str("verify-alg");
    const dataIntegrityAlg = str("data-integrity-alg");
    const csumsAlg = str("csums-alg");
    const protocol = String(optionValue(net, "net", "protocol")).toUpperCase() as WireProtocol;
    const congestion: CongestionOptions = {
      onCongestion: String(optionValue(net, "net", "on-congestion")) as OnCongestion,
      congestionFillSectors: numericOption(net, "net", "congestion-fill"),
      congestionExtents: numericOption(net, "net", "congestion-extents"),
    };
    // drbd_nl.c refuses the net options at adjust/connect time; we refuse them when the config is read.
    const congestionError = congestionConfigError(protocol, congestion);
    if (congestionError) throw new Error(`resource ${resource.name}: ${congestionError}`);
    const afterSb: AfterSbPolicies = {
      after0p: afterSbPolicyNumber(0, str("after-sb-0pri"), local.names),
      after1p: afterSbPolicyNumber(1, str("after-sb-1pri")),
      after2p: afterSbPolicyNumber(2, str("after-sb-2pri")),
    };
    const handlerCommands = new Map<string, string>();
    for (const [name, { value }] of resource.handlers) handlerCommands.set(name, String(value));
    const handlers = new ShellHandlers(
      handlerCommands,
      {
        resource: resource.name,
        minor: vol.minor,
        volume: vol.volume,
        conf: resource.where.file,
        backingDev: vol.disk,
        ...(peer ? { peerNames: peer.names, peerAddress: peer.address.ip, myAddress: local.address.ip } : {}),
      },
      { log: log.child({ module: "drbd-handler" }) },
    );
    return new DrbdResource({
      name: resource.name,
      handlers,
      fencing: String(optionValue(disk, "disk", "fencing")) as FencingPolicy,
      onIoError: String(optionValue(disk, "disk", "on-io-error")) as OnIoError,
      diskTimeoutDs: numericOption(disk, "disk", "disk-timeout"),
      tree,
      minor: vol.minor,
      volume: vol.volume,
      backing: vol.disk,
      ...meta,
      ...(peer ? { local: { host: local.address.ip, port: local.address.port } } : {}),
      ...(peer ? { peer: { host: peer.address.ip, port: peer.address.port } } : {}),
      ...(peer ? { localName: local.names[0], peerName: peer.names[0] } : {}),
      // DRBD 9's node ids: the `node-id` of an `on` section, else its place among the `on` sections.
      localNodeId: local.nodeId ?? resource.hosts.indexOf(local),
      ...(peer ? { peerNodeId: peer.nodeId ?? resource.hosts.indexOf(peer) } : {}),
      protocol,
      ...congestion,
      ...(cramHmacAlg !== undefined ? { cramHmacAlg } : {}),
      ...(sharedSecret !== undefined ? { sharedSecret } : {}),
      maxBuffers: numericOption(net, "net", "max-buffers"),
      pingIntSec: numericOption(net, "net", "ping-int"),
      pingTimeoutDs: numericOption(net, "net", "ping-timeout"),
      connectIntSec: numericOption(net, "net", "connect-int"),
      timeoutDs: numericOption(net, "net", "timeout"),
      resyncRateKiB: numericOption(disk, "disk", "resync-rate"),
      resyncControl: {
        cPlanAhead: numericOption(disk, "disk", "c-plan-ahead"),
        cFillTarget: numericOption(disk, "disk", "c-fill-target"),
        cDelayTarget: numericOption(disk, "disk", "c-delay-target"),
        cMaxRateKiB: numericOption(disk, "disk", "c-max-rate"),
        cMinRateKiB: numericOption(disk, "disk", "c-min-rate"),
      },
      alExtents: numericOption(disk, "disk", "al-extents"),
      diskFlushes: optionValue(disk, "disk", "disk-flushes") !== false,
      afterSb,
      alwaysAsbp: optionValue(net, "net", "always-asbp") === true,
      discardMyData: optionValue(net, "net", "discard-my-data") === true,
      ...(verifyAlg !== undefined ? { verifyAlg } : {}),
      ...(dataIntegrityAlg !== undefined ? { dataIntegrityAlg } : {}),
      wfcTimeoutSec: numericOption(resource.startup, "startup", "wfc-timeout"),
      degrWfcTimeoutSec: numericOption(resource.startup, "startup", "degr-wfc-timeout"),
      outdatedWfcTimeoutSec: numericOption(resource.startup, "startup", "outdated-wfc-timeout"),
      ...(csumsAlg !== undefined ? { csumsAlg } : {}),
      csumsAfterCrashOnly: optionValue(net, "net", "csums-after-crash-only") === true,
    });
  }

  /**
   * drbd_adm_get_timeout_type: peer-outdated when the metadata says the peer's disk is Outdated, degraded
   * when this node was a Primary without its peer when it last went away, else default.
   */
  get waitTimeoutType(): WaitTimeoutType {
    const dev = this.dev;
    if (!dev || dev.disk === "Diskless") return "default";
    if (dev.superBlock.flags & MDF_PEER_OUT_DATED) return "peer-outdated";
    return dev.degradedAtAttach ? "degraded" : "default";
  }

  get deviceName(): string {
    return `drbd${this.opts.minor}`;
  }

  /** The attached device, if any. */
  get device(): DrbdDevice | undefined {
    return this.dev;
  }

  get connection(): DrbdConnection | undefined {
    return this.conn;
  }

  /** drbdadm create-md: refused while attached (the backing disk is claimed). */
  async createMd(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.createMd());
    const owner = `drbd ${this.opts.name} create-md`;
    const claims = this.claimDisks(owner);
    try {
      const [lower, meta] = claims.map((c) => c.device) as [BlockDevice, BlockDevice | undefined];
      await createMetadata(lower, {
        placement: this.opts.metaPlacement ?? { kind: "internal" },
        ...(meta ? { metaStore: meta } : {}),
      });
    } finally {
      for (const c of claims) c.release();
    }
  }

  /** The backing disk and, for external metadata, the metadata device: both "exclusive", released on error. */
  private claimDisks(owner: string): DeviceClaim[] {
    const claims = [this.opts.tree.claim(this.opts.backing, owner, "exclusive")];
    if (this.opts.metaDisk !== undefined) {
      try {
        claims.push(this.opts.tree.claim(this.opts.metaDisk, `${owner} metadata`, "exclusive"));
      } catch (e) {
        for (const c of claims) c.release();
        throw e;
      }
    }
    return claims;
  }

  async attach(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.attach());
    if (this.dev && this.dev.disk !== "Diskless") return;
    const conn = this.conn;
    if (this.dev && conn?.replicating) return this.attachWhileConnected(this.dev, conn);
    if (this.dev?.role === "Primary")
      throw new Error(
        `${this.deviceName}: re-attaching a disk to a Diskless Primary needs the peer connected; run secondary (or down) first`,
      );
    // Detached after an I/O error: the old connection belongs to the old device; reconnect with the new one.
    const reconnect = this.dev !== undefined && this.conn !== undefined && this.conn.state !== "StandAlone";
    if (this.dev) {
      if (this.conn) await this.disconnect();
      this.conn = undefined;
      if (this.opts.tree.get(this.deviceName)) this.opts.tree.remove(this.deviceName);
    }
    const claims = this.claimDisks(`DRBD ${this.deviceName} (${this.opts.name})`);
    const release = () => {
      for (const c of claims) c.release();
    };
    let dev: DrbdDevice;
    try {
      dev = await DrbdDevice.attach({
        minor: this.opts.minor,
        lower: (claims[0] as DeviceClaim).device,
        ...(this.opts.metaPlacement && claims[1]
          ? { placement: this.opts.metaPlacement, metaDevice: claims[1].device }
          : {}),
        ...(this.opts.alExtents !== undefined ? { alExtents: this.opts.alExtents } : {}),
        ...(this.opts.onIoError !== undefined ? { onIoError: this.opts.onIoError } : {}),
        ...(this.opts.diskTimeoutDs ? { diskTimeoutMs: this.opts.diskTimeoutDs * 100 } : {}),
        ...(this.opts.handlers !== undefined ? { handlers: this.opts.handlers } : {}),
        onDetach: release,
      });
    } catch (e) {
      release();
      throw e;
    }
    this.dev = dev;
    this.register(dev);
    if (reconnect) await this.connect();
  }

  /**
   * drbdadm attach on a connected Diskless node: the same device (a LUN over it stays) takes its disk
   * back; the resync from the peer brings it up to date (DrbdConnection.attachWhileConnected).
   */
  private async attachWhileConnected(dev: DrbdDevice, conn: DrbdConnection): Promise<void> {
    const claims = this.claimDisks(`DRBD ${this.deviceName} (${this.opts.name})`);
    const release = () => {
      for (const c of claims) c.release();
    };
    try {
      if ((claims[0] as DeviceClaim).device !== dev.lower)
        throw new Error(`${this.deviceName}: the backing disk is not the one it was attached to`);
      await conn.attachWhileConnected(() => dev.reattach(release));
    } catch (e) {
      if (dev.disk === "Diskless") release();
      throw e;
    }
  }

  /**
   * drbd_adm_detach on a connected Primary: the device stays (a LUN over it too), Diskless, and its I/O goes
   * to the peer (is_valid_state allows a Primary without a disk while the peer's disk is UpToDate).
   */
  get detachKeepsDevice(): boolean {
    const dev = this.dev;
    const c = this.conn;
    return (
      dev?.role === "Primary" &&
      dev.disk !== "Diskless" &&
      c?.replicating === true &&
      c.peerDisk === "UpToDate"
    );
  }

  /** drbdadm detach: the tree refuses while a LUN or mount still uses drbd<minor>. */
  async detach(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.detach());
    const dev = this.dev;
    if (!dev) return;
    if (dev.disk === "Diskless") {
      // Detached after an I/O error: drbd<minor> may still be in the tree (served by the peer).
      if (this.conn) await this.disconnect();
      if (this.opts.tree.get(this.deviceName)) this.opts.tree.remove(this.deviceName);
      return;
    }
    if (this.detachKeepsDevice) return dev.detach();
    if (this.conn) await this.disconnect();
    if (this.opts.tree.get(this.deviceName)) this.opts.tree.remove(this.deviceName);
    try {
      await dev.detach();
    } catch (e) {
      this.register(dev);
      throw e;
    }
  }

  /** drbdadm connect [--discard-my-data] (refused on a Primary, as drbdsetup does). */
  async connect(opts: { discardMyData?: boolean } = {}): Promise<void> {
    if (this.volumeSet.several) return this.volumeSet.first.connectVolumes(opts);
    // A detached (Diskless) device connects too: it uses the peer's disk (onConnectDiskless).
    const dev = this.dev;
    if (!dev) throw new Error(`${this.deviceName}: no disk attached (run attach or up first)`);
    const discardMyData = opts.discardMyData === true || this.opts.discardMyData === true;
    if (discardMyData && dev.role === "Primary")
      throw new Error(`${this.deviceName}: --discard-my-data not allowed when primary.`);
    if (this.conn && this.conn.state !== "StandAlone") return;
    if (!this.opts.local || !this.opts.peer)
      throw new Error(`resource ${this.opts.name}: no peer configured (one-node resource)`);
    this.conn = new DrbdConnection(this.connectionOptions(dev));
    await this.conn.connect({ discardMyData });
  }

  /**
   * connect for a resource of several volumes (on the first): one connection for all of them
   * (volume_connection.ts); every volume must have its disk.
   */
  private async connectVolumes(opts: { discardMyData?: boolean }): Promise<void> {
    const discardMyData = opts.discardMyData === true || this.opts.discardMyData === true;
    const devs = this.volumes.map((v) => v.requireDevice());
    const primary = devs.find((d) => d.role === "Primary");
    if (discardMyData && primary)
      throw new Error(`drbd${primary.minor}: --discard-my-data not allowed when primary.`);
    const current = this.volumeSet.connection;
    if (current && current.state !== "StandAlone") return;
    if (!this.opts.local || !this.opts.peer)
      throw new Error(`resource ${this.opts.name}: no peer configured (one-node resource)`);
    const c = new DrbdResourceConnection(
      this.volumes.map((v, i) => ({ volume: v.opts.volume ?? 0, options: v.connectionOptions(devs[i]) })),
    );
    this.volumeSet.connection = c;
    for (const v of this.volumes) v.conn = c.volumes.get(v.opts.volume ?? 0);
    await c.connect({ discardMyData });
  }

  /** The connection options of this volume from the resource's net and disk settings. */
  private connectionOptions(dev: DrbdDevice): ConnectionOptions {
    const o = this.opts;
    return {
      device: dev,
      local: o.local as Endpoint,
      peer: o.peer as Endpoint,
      ...(o.protocol ? { protocol: o.protocol } : {}),
      ...(o.cramHmacAlg !== undefined ? { cramHmacAlg: o.cramHmacAlg } : {}),
      ...(o.sharedSecret !== undefined ? { sharedSecret: o.sharedSecret } : {}),
      ...(o.maxBuffers !== undefined ? { maxBuffers: o.maxBuffers } : {}),
      ...(o.pingIntSec !== undefined ? { pingIntSec: o.pingIntSec } : {}),
      ...(o.pingTimeoutDs !== undefined ? { pingTimeoutDs: o.pingTimeoutDs } : {}),
      ...(o.connectIntSec !== undefined ? { connectIntSec: o.connectIntSec } : {}),
      ...(o.timeoutDs !== undefined ? { timeoutDs: o.timeoutDs } : {}),
      ...(o.resyncRateKiB !== undefined ? { resyncRateKiB: o.resyncRateKiB } : {}),
      ...(o.resyncControl !== undefined ? { resyncControl: o.resyncControl } : {}),
      ...(o.diskFlushes !== undefined ? { diskFlushes: o.diskFlushes } : {}),
      ...(o.afterSb !== undefined ? { afterSb: o.afterSb } : {}),
      ...(o.alwaysAsbp !== undefined ? { alwaysAsbp: o.alwaysAsbp } : {}),
      ...(o.verifyAlg !== undefined ? { verifyAlg: o.verifyAlg } : {}),
      ...(o.dataIntegrityAlg !== undefined ? { dataIntegrityAlg: o.dataIntegrityAlg } : {}),
      ...(o.csumsAlg !== undefined ? { csumsAlg: o.csumsAlg } : {}),
      ...(o.csumsAfterCrashOnly !== undefined ? { csumsAfterCrashOnly: o.csumsAfterCrashOnly } : {}),
      ...(o.onCongestion !== undefined ? { onCongestion: o.onCongestion } : {}),
      ...(o.congestionFillSectors !== undefined ? { congestionFillSectors: o.congestionFillSectors } : {}),
      ...(o.congestionExtents !== undefined ? { congestionExtents: o.congestionExtents } : {}),
      ...(o.fencing !== undefined ? { fencing: o.fencing } : {}),
      ...(o.handlers !== undefined ? { handlers: o.handlers } : {}),
      // What the peer changes on the live connection becomes this resource's running configuration.
      peerSettingsAdopted: (changed) => Object.assign(this.opts, changed),
    };
  }

  /**
   * drbdadm adjust: makes the running resource match `next` (the .res as it is now), changing only what
   * differs, as drbdadm compares `drbdsetup show` with the file (the running configuration includes what the
   * peer changed on the live connection, so the second node's adjust after the first finds nothing to do):
   *
   * - a resource that is down is brought up (attach, connect); StandAlone is connected again;
   * - another backing disk or metadata device: disconnect, detach, attach, connect;
   * - another local or peer address, data-integrity-alg or on-congestion settings: disconnect and connect;
   * - net and disk options: changed on the live connection (net-options / disk-options, live_settings.ts),
   *   the protocol and resync settings sent to the peer (P_PROTOCOL_UPDATE, P_SYNC_PARAM89);
   * - al-extents and net { discard-my-data } take effect at the next attach / connect.
   *
   * Returns what it did in drbdsetup's terms ("net-options protocol", "connect" …); empty when nothing differed.
   */
  async adjust(next: DrbdResourceOptions, nextVolumes = 1): Promise<string[]> {
    if (this.volumeSet.several || nextVolumes > 1) return adjustVolumes(this, nextVolumes);
    const o = this.opts;
    const done: string[] = [];
    if (next.name !== o.name) throw new Error(`adjust: resource ${next.name} is not ${o.name}`);
    let attached = this.dev !== undefined && this.dev.disk !== "Diskless";
    if (attached && next.minor !== o.minor)
      throw new Error(
        `${this.deviceName}: adjust cannot move an attached volume to minor ${next.minor}; run down, then up`,
      );
    const congestionError = congestionConfigError(next.protocol ?? "C", next);
    if (congestionError) throw new Error(`resource ${o.name}: ${congestionError}`);
    const diskMoved =
      next.backing !== o.backing ||
      next.metaDisk !== o.metaDisk ||
      !sameOption(next.metaPlacement, o.metaPlacement);
    const linkMoved =
      !sameOption(next.local, o.local) ||
      !sameOption(next.peer, o.peer) ||
      next.dataIntegrityAlg !== o.dataIntegrityAlg ||
      next.onCongestion !== o.onCongestion ||
      next.congestionFillSectors !== o.congestionFillSectors ||
      next.congestionExtents !== o.congestionExtents;
    const live: LiveOptionChanges = {
      protocol: next.protocol ?? "C",
      afterSb: next.afterSb,
      alwaysAsbp: next.alwaysAsbp,
      maxBuffers: next.maxBuffers,
      pingIntSec: next.pingIntSec,
      pingTimeoutDs: next.pingTimeoutDs,
      connectIntSec: next.connectIntSec,
      timeoutDs: next.timeoutDs,
      resyncRateKiB: next.resyncRateKiB,
      resyncControl: next.resyncControl,
      diskFlushes: next.diskFlushes,
      verifyAlg: next.verifyAlg,
      cramHmacAlg: next.cramHmacAlg,
      sharedSecret: next.sharedSecret,
    };
    const c = this.conn;
    const linked = c !== undefined && c.state !== "StandAlone";
    if (attached && diskMoved) {
      if (this.dev?.role === "Primary")
        throw new Error(
          `${this.deviceName}: adjust would detach a Primary to change its disk; demote it first`,
        );
      if (linked) done.push("disconnect");
      await this.detach();
      done.push("detach");
      attached = false;
    } else if (linked && (linkMoved || !next.peer)) {
      await this.disconnect();
      done.push("disconnect");
    } else if (linked && c) {
      const changed = await c.changeOptions(live);
      const diskOptions = ["resyncRateKiB", "resyncControl", "diskFlushes"];
      const disk = changed.filter((k) => diskOptions.includes(k));
      const net = changed.filter((k) => !disk.includes(k));
      if (net.length > 0) done.push(`net-options ${net.join(" ")}`);
      if (disk.length > 0) done.push(`disk-options ${disk.join(" ")}`);
    }
    if (next.alExtents !== o.alExtents && attached)
      done.push(`disk-options al-extents (${next.alExtents ?? "default"}: at the next attach)`);
    // The running configuration is now the file's.
    for (const k of Object.keys(o) as (keyof DrbdResourceOptions)[])
      if (!(k in next) && k !== "tree") delete o[k];
    Object.assign(o, next);
    if (!attached) {
      await this.attach();
      done.push("attach");
    }
    if (o.peer && (!this.conn || this.conn.state === "StandAlone")) {
      await this.connect();
      done.push("connect");
    }
    return done;
  }

  async disconnect(): Promise<void> {
    // is_valid_state: a Primary keeps access to UpToDate data; a Diskless one has it only through the peer.
    if (this.dev?.role === "Primary" && this.dev.disk === "Diskless" && this.conn?.replicating)
      throw new Error(`${this.deviceName}: State change failed: (-2) Need access to UpToDate data`);
    if (this.volumeSet.several) await this.volumeSet.first.volumeSet.connection?.disconnect();
    else await this.conn?.disconnect();
  }

  /** drbdadm up: attach, then connect when a peer is configured. */
  async up(): Promise<void> {
    await this.attach();
    if (this.opts.peer) await this.connect();
  }

  /** drbdadm down: secondary, disconnect, detach. */
  async down(): Promise<void> {
    for (const v of this.volumeSet.fansOut ? this.volumes : [this])
      if (v.dev?.role === "Primary") await v.dev.secondary();
    await this.disconnect();
    await this.detach();
  }

  async primary(opts: { force?: boolean } = {}): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.primary(opts));
    // A Diskless device may be promoted too, while connected to an UpToDate peer (DrbdDevice.primary).
    const dev = this.dev;
    if (!dev) throw new Error(`${this.deviceName}: no disk attached (run attach or up first)`);
    if (this.conn?.peerRole === "Primary")
      throw new Error(
        `${this.deviceName}: State change failed: (-1) Multiple primaries not allowed by config`,
      );
    await dev.primary(opts);
  }

  async secondary(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.secondary());
    const dev = this.dev;
    if (!dev) throw new Error(`${this.deviceName}: no disk attached (run attach or up first)`);
    await dev.secondary();
  }

  /** drbdadm suspend-io: new I/O waits until resume-io. */
  suspendIo(): void {
    if (this.volumeSet.fansOut) return void this.volumeSet.eachVolume((v) => v.suspendIo());
    this.requireDevice().suspendIo("user");
  }

  /**
   * drbdadm resume-io (drbd_adm_resume_io): lifts any suspension, also a resource-and-stonith freeze whose
   * fence-peer failed — the administrator then vouches that the peer will not take over with old data.
   */
  resumeIo(): void {
    if (this.volumeSet.fansOut) return void this.volumeSet.eachVolume((v) => v.resumeIo());
    const dev = this.dev;
    if (!dev) throw new Error(`${this.deviceName}: no disk attached (run attach or up first)`);
    dev.resumeIo();
  }

  /** With --clear-bitmap on a connected, never-synced pair: both become UpToDate without the initial sync. */
  async newCurrentUuid(opts: { clearBitmap?: boolean } = {}): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.newCurrentUuid(opts));
    const dev = this.requireDevice();
    if (opts.clearBitmap && this.conn?.state === "Connected") return this.conn.skipInitialSync();
    await dev.newCurrentUuid(opts);
  }

  /** drbdadm verify: online verify against the peer (needs net { verify-alg } and the Connected state). */
  async verify(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.verify());
    this.requireDevice();
    const c = this.conn;
    if (!c || !c.replicating)
      throw new Error(
        `${this.deviceName}: State change failed: (-15) Need a connection to start verify or resync`,
      );
    await c.startVerify();
  }

  /**
   * drbdadm resize (grow only) after the backing disks grew: connected, both nodes agree on the smaller of
   * their usable sizes over P_SIZES, the metadata moves to the new end and the new area is resynced
   * (resize_link.ts; not with --assume-clean). A one-node resource just grows. A two-node resource that is
   * not connected is refused: the peer's size is unknown, and growing it at the next handshake (what the
   * kernel's --assume-peer-has-space relies on) is not done here. Resolves once this node has its new size.
   */
  async resize(opts: { assumeClean?: boolean; assumePeerHasSpace?: boolean } = {}): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.resize(opts));
    const dev = this.requireDevice();
    const c = this.conn;
    if (c?.replicating) return c.startResize({ assumeClean: opts.assumeClean === true });
    if (this.opts.peer)
      throw new Error(
        `${this.deviceName}: resize needs the peer connected (its size is unknown; --assume-peer-has-space is not supported); the device keeps ${dev.sizeSectors} sectors`,
      );
    await dev.grow(await dev.maxSectors(), { setNewBits: false });
  }

  /**
   * drbdadm invalidate: StandAlone, the local data is declared Inconsistent (every block out of sync);
   * connected, a full resync from the peer starts at once (StartingSyncT). In between (connecting) it is
   * refused as drbdsetup refuses it.
   */
  async invalidate(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.invalidate());
    const dev = this.requireDevice();
    const c = this.conn;
    if (!c || c.state === "StandAlone") return dev.invalidate();
    await c.invalidate();
  }

  /**
   * drbdadm invalidate-remote: connected, the peer's data is overwritten by a full resync from this node
   * (StartingSyncS). Not connected, only a Primary may do it: every block is marked, so the resync the next
   * connect starts (the Primary has a newer generation) is a full one (drbd_adm_invalidate_peer).
   */
  async invalidateRemote(): Promise<void> {
    if (this.volumeSet.fansOut) return this.volumeSet.eachVolume((v) => v.invalidateRemote());
    const dev = this.requireDevice();
    const c = this.conn;
    if (c?.replicating) return c.invalidateRemote();
    if (dev.role !== "Primary")
      throw new Error(
        `${this.deviceName}: State change failed: (-15) Need a connection to start verify or resync`,
      );
    // The next connect must see a newer generation here, or it would not resync at all.
    if (dev.uuids[1] === 0n) await dev.newCurrentUuid();
    dev.bitmap.setAll();
    await dev.persistBitmap();
  }

  /**
   * `drbdadm status` text in the DRBD 9 layout (the 8.4 tools print the same since 8.4.x's status command):
   *
   *     r0 role:Primary
   *       disk:UpToDate
   *       peer role:Secondary
   *         replication:SyncSource peer-disk:Inconsistent done:42.30
   */
  status(): string {
    if (this.volumeSet.several) return volumesStatus(this.volumeSet.first);
    const dev = this.dev;
    // A Primary whose disk failed stays Primary, Diskless (its I/O goes to the peer).
    const role = dev?.role ?? "Secondary";
    // drbdsetup status shows suspended:REASON only while suspended (user, fencing, …).
    const suspended = dev?.ioSuspended;
    const lines = [`${this.opts.name} role:${role}${suspended ? ` suspended:${suspended}` : ""}`];
    const disk = dev ? dev.disk : "Diskless";
    lines.push(`  disk:${disk}`);
    if (this.opts.peer) {
      const c = this.conn;
      const state = c?.state ?? "StandAlone";
      // Every state in which writes reach the peer: Connected, Sync*, Verify*, StartingSync*, Ahead/Behind.
      if (c?.replicating === true) {
        lines.push(`  peer role:${c?.peerRole ?? "Unknown"}`);
        const repl = state === "Connected" ? "Established" : state;
        const done = c?.resyncDone;
        lines.push(
          `    replication:${repl} peer-disk:${c?.peerDisk ?? "DUnknown"}${done !== undefined ? ` done:${done.toFixed(2)}` : ""}`,
        );
      } else {
        const conn = state === "WFConnection" || state === "WFReportParams" ? "Connecting" : state;
        lines.push(`  peer connection:${conn}`);
      }
    }
    return lines.join("\n") + "\n";
  }

  /**
   * The tree's read-only mark is fixed when a node is added, but a DRBD device's writability follows its
   * role: it is added writable and a Secondary refuses writes itself (BlockDeviceError "read-only").
   */
  private register(dev: DrbdDevice): void {
    this.opts.tree.add(this.deviceName, dev, "drbd", { readOnly: false });
  }

  private requireDevice(): DrbdDevice {
    if (!this.dev || this.dev.disk === "Diskless")
      throw new Error(`${this.deviceName}: no disk attached (run attach or up first)`);
    return this.dev;
  }
}
