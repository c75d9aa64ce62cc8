/**
 * The configuration of a running server: what the legacy INI file, a JSON config or RPC calls have
 * built so far, kept up to date by every change (src/server/graph_control.ts). framework_get_config
 * dumps it, so `rpc.py save_config` writes what is running, not what was read at start.
 */
import type { BdevSpec, SpdkConfig } from "../config/spdk_config.js";
import { DEFAULT_MAX_QUEUE_DEPTH } from "../config/spdk_config.js";
import {
  DEFAULT_ISCSI_OPTIONS,
  type AuthGroup,
  type InitiatorGroupConfig,
  type IscsiGlobalOptions,
  type PortalGroupConfig,
  type TargetNodeConfig,
} from "../iscsi/options.js";

/** A portal group as SPDK's iscsi_create_portal_group takes it. */
export interface PortalGroupState extends PortalGroupConfig {
  /** Not reported in SendTargets (SPDK's private portal groups; kept for save_config). */
  readonly private: boolean;
  /** Created with wait=true: listens only after iscsi_start_portal_group. */
  readonly wait: boolean;
}

export interface LunState {
  readonly id: number;
  readonly bdev: string;
}

/** A target node without its SCSI device, with its LUN table (what iscsi_create_target_node takes). */
export interface TargetNodeState extends Omit<TargetNodeConfig, "device"> {
  readonly luns: readonly LunState[];
}

/** Where a spec made through the control plane says it came from (BdevSpec wants a file and line). */
export const RPC_ORIGIN = { file: "<rpc>", line: 0 } as const;

export class LiveConfig {
  globals: IscsiGlobalOptions = DEFAULT_ISCSI_OPTIONS;
  maxQueueDepth = DEFAULT_MAX_QUEUE_DEPTH;
  authFile: string | undefined;
  readonly authGroupMap = new Map<number, AuthGroup>();
  readonly portalGroupMap = new Map<number, PortalGroupState>();
  readonly initiatorGroupMap = new Map<number, InitiatorGroupConfig>();
  /** By lower-case name (iSCSI names compare case-insensitively, RFC 3722). */
  readonly targetNodeMap = new Map<string, TargetNodeState>();
  /** In creation order: stacked devices (BIO) after the ones below them. */
  readonly bdevMap = new Map<string, BdevSpec>();

  /** The global parts of a legacy config; its devices, groups and nodes are added one by one. */
  static fromGlobals(config: SpdkConfig): LiveConfig {
    const live = new LiveConfig();
    live.globals = config.globals;
    live.maxQueueDepth = config.maxQueueDepth;
    live.authFile = config.authFile;
    for (const ag of config.authGroups) live.authGroupMap.set(ag.tag, ag);
    return live;
  }

  get authGroups(): AuthGroup[] {
    return [...this.authGroupMap.values()];
  }
  get portalGroups(): PortalGroupState[] {
    return [...this.portalGroupMap.values()];
  }
  get initiatorGroups(): InitiatorGroupConfig[] {
    return [...this.initiatorGroupMap.values()];
  }
  get targetNodes(): TargetNodeState[] {
    return [...this.targetNodeMap.values()];
  }
  get bdevs(): BdevSpec[] {
    return [...this.bdevMap.values()];
  }

  targetNode(name: string): TargetNodeState | undefined {
    return this.targetNodeMap.get(name.toLowerCase());
  }

  setTargetNode(node: TargetNodeState): void {
    this.targetNodeMap.set(node.name.toLowerCase(), node);
  }
}

/** A Malloc device made through the control plane may carry the UUID it had (save_config → load). */
export type MallocRpcSpec = Extract<BdevSpec, { kind: "malloc" }> & { readonly uuid?: string };
