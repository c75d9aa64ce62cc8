/**
 * What the iSCSI layer needs to run, already validated: the config parser (src/config) and the
 * server assembly (src/server) build these; the iSCSI layer never reads config files itself.
 */
import type { ScsiTargetDevice } from "../scsi/task.js";

/** AuthMethod / DiscoveryAuthMethod as SPDK reads them: None, Auto, CHAP, Mutual. */
export interface AuthPolicy {
  /** "None": CHAP is never used. */
  readonly disableChap: boolean;
  /** "CHAP" or "Mutual": the initiator must authenticate with CHAP. */
  readonly requireChap: boolean;
  /** "Mutual": the target authenticates itself too. */
  readonly mutualChap: boolean;
}

export interface ChapSecret {
  readonly user: string;
  readonly secret: string;
  /** Mutual CHAP: the name and secret the target answers with. */
  readonly muser?: string;
  readonly msecret?: string;
}

/** [AuthGroupN] in the AuthFile. */
export interface AuthGroup {
  readonly tag: number;
  readonly secrets: readonly ChapSecret[];
}

export interface Portal {
  readonly host: string;
  /** 0 lets the OS choose (tests); the bound port is reported by IscsiTarget.addresses(). */
  readonly port: number;
}

/** [PortalGroupN] */
export interface PortalGroupConfig {
  readonly tag: number;
  readonly portals: readonly Portal[];
  /** SPDK's private portal groups: logins work, SendTargets never lists their portals. */
  readonly private?: boolean;
}

/** [InitiatorGroupN]: names (ANY, an IQN, or !IQN to deny) and netmasks (ANY, an address, a CIDR). */
export interface InitiatorGroupConfig {
  readonly tag: number;
  readonly initiators: readonly string[];
  readonly netmasks: readonly string[];
}

/** UseDigest: Header and/or Data make that digest required (CRC32C only); Auto negotiates. */
export interface DigestPolicy {
  readonly headerRequired: boolean;
  readonly dataRequired: boolean;
}

/** [TargetNodeN] */
export interface TargetNodeConfig {
  /** The full iSCSI name, NodeBase already applied ("iqn.2016-06.io.spdk:disk1"). */
  readonly name: string;
  readonly alias?: string;
  readonly maps: readonly { readonly portalGroup: number; readonly initiatorGroup: number }[];
  readonly auth: AuthPolicy;
  /** AuthGroup tag whose secrets this target accepts; undefined = none configured. */
  readonly authGroup?: number;
  readonly digest: DigestPolicy;
  /** Commands queued per session (the CmdSN window). */
  readonly queueDepth: number;
  /** The SCSI device holding this target's LUNs. */
  readonly device: ScsiTargetDevice;
}

/** [iSCSI]: global options and the target's offer for each negotiated key (RFC 7143 §13). */
export interface IscsiGlobalOptions {
  readonly nodeBase: string;
  /** Timeout: seconds without an answer to a NOP-In before the connection is dropped. */
  readonly nopTimeoutSec: number;
  /** NopInInterval: seconds of idleness before the target sends a NOP-In ping. */
  readonly nopInIntervalSec: number;
  readonly discoveryAuth: AuthPolicy;
  readonly discoveryAuthGroup?: number;
  readonly maxSessions: number;
  readonly maxConnectionsPerSession: number;
  readonly allowDuplicateIsid: boolean;
  readonly defaultTime2Wait: number;
  readonly defaultTime2Retain: number;
  readonly firstBurstLength: number;
  readonly maxBurstLength: number;
  /** The target's MaxRecvDataSegmentLength (what it accepts in one PDU). */
  readonly maxRecvDataSegmentLength: number;
  readonly immediateData: boolean;
  readonly initialR2T: boolean;
  readonly maxOutstandingR2T: number;
  readonly errorRecoveryLevel: number;
  /** Seconds a login may take before the connection is dropped. */
  readonly loginTimeoutSec: number;
  /** Connections that have not completed login, from all sources (prelogin_pool.ts). */
  readonly preLoginPoolSize: number;
  /** Connections that have not completed login, from one source address. */
  readonly preLoginPerAddress: number;
  /** Milliseconds from accept to the first complete PDU before the connection is dropped. */
  readonly firstPduTimeoutMs: number;
  /** Delay after the first authentication failure, doubling per failure (login_throttle.ts); 0 = none. */
  readonly authFailureDelayMs: number;
  /** The longest authentication-failure delay. */
  readonly authFailureDelayMaxMs: number;
  /** Write data (bytes) buffered for unfinished WRITE commands on one connection (data_budget.ts). */
  readonly maxWriteDataPerConnection: number;
  /** Write data (bytes) buffered for unfinished WRITE commands across the whole target. */
  readonly maxWriteDataTotal: number;
  /** Seconds a WRITE may wait for its next Data-Out before the connection is dropped (ERL 0). */
  readonly dataOutTimeoutSec: number;
}

/** SPDK's defaults (lib/iscsi/iscsi.h), used where the config file is silent. */
export const DEFAULT_ISCSI_OPTIONS: IscsiGlobalOptions = {
  nodeBase: "iqn.2016-06.io.spdk",
  nopTimeoutSec: 60,
  nopInIntervalSec: 30,
  discoveryAuth: { disableChap: false, requireChap: false, mutualChap: false },
  maxSessions: 128,
  maxConnectionsPerSession: 2,
  allowDuplicateIsid: false,
  defaultTime2Wait: 2,
  defaultTime2Retain: 20,
  firstBurstLength: 8192,
  maxBurstLength: 1048576,
  maxRecvDataSegmentLength: 65536,
  immediateData: true,
  initialR2T: true,
  maxOutstandingR2T: 1,
  errorRecoveryLevel: 0,
  loginTimeoutSec: 30,
  preLoginPoolSize: 128,
  // open-iscsi logs in to every node of a host at once (iscsiadm -m node -L all): leave room for it.
  preLoginPerAddress: 32,
  firstPduTimeoutMs: 5000,
  authFailureDelayMs: 100,
  authFailureDelayMaxMs: 5000,
  // A write is held whole until the device has it: room for two of the largest writes the Block Limits
  // VPD page allows (32 MiB), and a target-wide cap in the hundreds of MiB as LIO and tgt users expect.
  maxWriteDataPerConnection: 64 * 1024 * 1024,
  maxWriteDataTotal: 256 * 1024 * 1024,
  dataOutTimeoutSec: 30,
};

export interface IscsiTargetOptions {
  readonly globals: IscsiGlobalOptions;
  readonly authGroups: readonly AuthGroup[];
  readonly portalGroups: readonly PortalGroupConfig[];
  readonly initiatorGroups: readonly InitiatorGroupConfig[];
  readonly targets: readonly TargetNodeConfig[];
  /**
   * Makes READ data buffers (ReadBufferPool): page-aligned ones let an O_DIRECT read fill them
   * without a bounce copy. Default: ordinary Buffers.
   */
  readonly readBufferAllocator?: (bytes: number) => Buffer;
}
