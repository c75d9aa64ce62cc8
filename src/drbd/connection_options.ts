/**
 * The settings of one DRBD connection (drbd.conf(5) net { } and the disk { } options the peer is told of)
 * and the connection state names drbdadm prints (drbd_strings.c drbd_conn_s_names).
 */
import type { ResyncControllerOptions } from "./resync_controller.js";
import type { PeerDevicePort } from "./peer_device_port.js";
import type { AfterSbPolicies } from "./after_sb.js";
import type { FencingPolicy } from "./fencing.js";
import type { HandlerRunner } from "./handlers.js";

export type WireProtocol = "A" | "B" | "C";

/** The dynamic resync controller's settings (resync-rate is ConnectionOptions.resyncRateKiB). */
export type ResyncControlOptions = Omit<ResyncControllerOptions, "resyncRateKiB">;

export interface Endpoint {
  host: string;
  port: number;
}

/** net { on-congestion } (congestion.ts). */
export type OnCongestion = "block" | "pull-ahead" | "disconnect";

export interface CongestionOptions {
  /** net { on-congestion }, default "block". */
  onCongestion?: OnCongestion;
  /** net { congestion-fill } in 512-byte sectors; 0 (default) turns the fill check off. */
  congestionFillSectors?: number;
  /** net { congestion-extents }: activity-log extents in use that count as congestion (default 1237). */
  congestionExtents?: number;
}

export interface ConnectionOptions extends CongestionOptions {
  device: PeerDevicePort;
  local: Endpoint;
  peer: Endpoint;
  /** net { protocol }, default C. */
  protocol?: WireProtocol;
  /** net { cram-hmac-alg } and { shared-secret }: both or neither. */
  cramHmacAlg?: string;
  sharedSecret?: string;
  /**
   * net { max-buffers } (default 2048): pages of 4 KiB that the peer's writes may hold here, received and not
   * yet written; past it the data socket is not read until writes complete (drbd_alloc_pages).
   */
  maxBuffers?: number;
  /** net { ping-int }, seconds (default 10). */
  pingIntSec?: number;
  /** net { ping-timeout }, tenths of a second (default 5). */
  pingTimeoutDs?: number;
  /** net { connect-int }, seconds between connect attempts (default 10; tests use less). */
  connectIntSec?: number;
  /** net { timeout }, tenths of a second: how long a handshake packet may take (default 60). */
  timeoutDs?: number;
  /** disk { resync-rate }, KiB/s, announced in P_SYNC_PARAM89. */
  resyncRateKiB?: number;
  /**
   * disk { disk-flushes } (default yes): flush the lower device between epochs received from the peer. `no`
   * is for lower devices whose cache survives power loss (battery-backed), as drbd.conf(5) warns.
   */
  diskFlushes?: boolean;
  /** disk { c-plan-ahead, c-fill-target, c-delay-target, c-max-rate, c-min-rate }; absent: fixed resync-rate. */
  resyncControl?: ResyncControlOptions;
  /** DRBD_FF_* offered in P_CONNECTION_FEATURES (default TRIM | WZEROES; tests offer less to play an older peer). */
  featureFlags?: number;
  /** net { after-sb-0pri/1pri/2pri } as enum drbd_after_sb_p numbers (after_sb.ts); all disconnect by default. */
  afterSb?: AfterSbPolicies;
  /** net { always-asbp }: apply the after-sb policies also when the UUIDs leave the split brain ambiguous. */
  alwaysAsbp?: boolean;
  /** connect --discard-my-data: this node loses an otherwise unresolved split brain (one-shot). */
  discardMyData?: boolean;
  /** net { verify-alg } (verify.ts VERIFY_ALGS), announced in P_SYNC_PARAM89; needed for online verify. */
  verifyAlg?: string;
  /**
   * net { data-integrity-alg } (integrity.ts): crc32c, sha1, md5, …; both nodes must name the same one in
   * P_PROTOCOL. Every P_DATA, P_DATA_REPLY and P_RS_DATA_REPLY then carries a digest of its data.
   */
  dataIntegrityAlg?: string;
  /** disk { fencing } (fencing.ts), default dont-care. */
  fencing?: FencingPolicy;
  /** handlers { } (handlers.ts): fence-peer, split-brain, before/after-resync-target, pri-lost-after-sb. */
  handlers?: HandlerRunner;
  /**
   * The peer changed settings on the live connection (P_PROTOCOL_UPDATE, P_SYNC_PARAM89 while connected) and
   * this node took them as its own, as the kernel does: the running configuration `drbdadm adjust` compares.
   */
  peerSettingsAdopted?: (s: PeerSettings) => void;
  /**
   * net { csums-alg } (verify.ts VERIFY_ALGS), announced in P_SYNC_PARAM89: checksum-based resync, the
   * SyncTarget sends a digest of each block and the SyncSource sends only blocks whose digest differs.
   */
  csumsAlg?: string;
  /** net { csums-after-crash-only }: checksum-based resync only when this node's Primary crashed. */
  csumsAfterCrashOnly?: boolean;
}

/** What a peer may change on a live connection (live_settings.ts). */
export type PeerSettings = Partial<
  Pick<ConnectionOptions, "protocol" | "afterSb" | "resyncRateKiB" | "resyncControl" | "verifyAlg">
>;

/** The connection state names drbdadm status prints. */
export type ConnectionStateName =
  | "StandAlone"
  | "Unconnected"
  | "WFConnection"
  | "WFReportParams"
  | "Connected"
  | "WFBitMapS"
  | "WFBitMapT"
  | "WFSyncUUID"
  | "SyncSource"
  | "SyncTarget"
  | "Ahead"
  | "Behind"
  | "VerifyS"
  | "VerifyT"
  | "StartingSyncS"
  | "StartingSyncT"
  | "NetworkFailure"
  | "ProtocolError"
  | "Disconnecting";
