/**
 * Net and disk options changed on a live connection (drbdsetup net-options / disk-options, what
 * `drbdadm adjust` runs on a connected resource), both ways:
 *
 * - out: drbd_nl.c drbd_adm_net_opts sends P_PROTOCOL_UPDATE (apv ≥ 100) when the wire protocol or the
 *   after-sb policies change, and drbd_adm_net_opts / drbd_adm_disk_opts send P_SYNC_PARAM89 for the
 *   resync controller and verify-alg;
 * - in: drbd_receiver.c receive_protocol takes a P_PROTOCOL_UPDATE without the handshake's comparison
 *   (the peer's protocol and after-sb policies become this node's), and receive_SyncParam, while
 *   connected, takes the peer's resync-rate, c-* settings and verify-alg as its own.
 *
 * So one node's adjust changes both: the other node's own adjust then finds nothing to do. A write carries
 * its acks in its dp_flags (DP_SEND_WRITE_ACK / DP_SEND_RECEIVE_ACK, apv ≥ 100), so a protocol change
 * between two writes needs no pause: each request keeps the protocol it was sent with (request_sender.ts).
 */
import {
  decodeProtocol,
  decodeSyncParams,
  DrbdCommand,
  DrbdProtocolError,
  encodeProtocol,
  encodeSyncParams,
  mirrorAfterSb,
  WIRE_PROTOCOL,
  type ProtocolParams,
} from "./protocol.js";
import { RESYNC_DEFAULTS } from "./resync_controller.js";
import { DEFAULT_AFTER_SB } from "./after_sb.js";
import { congestionConfigError } from "./congestion.js";
import type { Link } from "./link.js";
import type { ConnectionOptions, PeerSettings, WireProtocol } from "./connection_options.js";

/** The net { } and disk { } options a running connection takes without reconnecting. */
export type LiveOptionChanges = Partial<
  Pick<
    ConnectionOptions,
    | "protocol"
    | "afterSb"
    | "alwaysAsbp"
    | "maxBuffers"
    | "pingIntSec"
    | "pingTimeoutDs"
    | "connectIntSec"
    | "timeoutDs"
    | "resyncRateKiB"
    | "resyncControl"
    | "diskFlushes"
    | "verifyAlg"
    | "cramHmacAlg"
    | "sharedSecret"
  >
>;

const PROTOCOL_BY_WIRE: Record<number, WireProtocol> = { 1: "A", 2: "B", 3: "C" };

/** This node's P_PROTOCOL / P_PROTOCOL_UPDATE settings. */
export function protocolParams(link: Link, connFlags = 0): ProtocolParams {
  const asb = link.opts.afterSb ?? DEFAULT_AFTER_SB;
  return {
    protocol: WIRE_PROTOCOL[link.protocol],
    afterSb0p: asb.after0p,
    afterSb1p: asb.after1p,
    afterSb2p: asb.after2p,
    connFlags,
    twoPrimaries: false,
    // The digest in use stays: a P_PROTOCOL_UPDATE names it as P_PROTOCOL did.
    integrityAlg: link.agreedVersion >= 87 ? (link.opts.dataIntegrityAlg ?? "") : "",
  };
}

/** drbd_send_sync_param: resync-rate, verify-alg and the dynamic controller's settings. */
function sendSyncParams(link: Link): Promise<void> {
  const opts = link.opts;
  const sp = encodeSyncParams(
    {
      resyncRate: opts.resyncRateKiB ?? RESYNC_DEFAULTS.resyncRateKiB,
      verifyAlg: opts.verifyAlg ?? "",
      // Ours as in the handshake: an empty one would turn a kernel peer's checksum-based resync off.
      csumsAlg: opts.csumsAlg ?? "",
      cPlanAhead: opts.resyncControl?.cPlanAhead ?? 0,
      cDelayTarget: opts.resyncControl?.cDelayTarget ?? RESYNC_DEFAULTS.cDelayTarget,
      cFillTarget: opts.resyncControl?.cFillTarget ?? RESYNC_DEFAULTS.cFillTarget,
      cMaxRate: opts.resyncControl?.cMaxRateKiB ?? RESYNC_DEFAULTS.cMaxRateKiB,
    },
    link.agreedVersion,
  );
  return link.send(link.data, sp.command, sp.payload);
}

/**
 * Applies `changes` to a connection (drbd_adm_net_opts / drbd_adm_disk_opts). Refuses what the kernel
 * refuses (on-congestion without protocol A: ERR_CONG_NOT_PROTO_A; a protocol change with a peer below
 * protocol version 100, which cannot take P_PROTOCOL_UPDATE: ERR_NEED_APV_100) before changing anything.
 * Returns the names of the options that changed. Timers (ping-int) are the caller's.
 */
export async function applyLiveOptions(link: Link, changes: LiveOptionChanges): Promise<string[]> {
  const opts = link.opts;
  const changed = (Object.keys(changes) as (keyof LiveOptionChanges)[]).filter(
    (k) => !sameOption(changes[k], opts[k]),
  );
  if (changed.length === 0) return [];
  const protocol = changes.protocol ?? link.protocol;
  const congestionError = congestionConfigError(protocol, opts);
  if (congestionError) throw new Error(`${link.device.name}: ${congestionError}`);
  const up = link.state.isUp;
  const protocolChanged = changed.includes("protocol") || changed.includes("afterSb");
  if (protocolChanged && up && link.agreedVersion < 100)
    throw new Error(
      `${link.device.name}: changing the protocol or after-sb policies while connected needs protocol version 100 (the peer agreed ${link.agreedVersion}); disconnect first`,
    );
  Object.assign(opts, Object.fromEntries(changed.map((k) => [k, changes[k]])));
  link.protocol = opts.protocol ?? "C";
  link.log.info({ changed, protocol: link.protocol }, "net/disk options changed");
  if (!up) return changed;
  if (protocolChanged)
    await link.send(
      link.data,
      DrbdCommand.ProtocolUpdate,
      encodeProtocol(protocolParams(link), link.agreedVersion),
    );
  if (changed.some((k) => k === "resyncRateKiB" || k === "resyncControl" || k === "verifyAlg"))
    await sendSyncParams(link);
  return changed;
}

/**
 * receive_protocol for P_PROTOCOL_UPDATE: the peer's wire protocol and after-sb policies (its discard-local
 * is my discard-remote) replace mine, without the handshake's comparison.
 */
export function receiveProtocolUpdate(
  link: Link,
  payload: Buffer,
  adopted: ((s: PeerSettings) => void) | undefined,
): void {
  const p = decodeProtocol(payload, link.agreedVersion);
  // The kernel would switch its digest here; the data path here keeps the one agreed at the handshake, so
  // another one drops the connection (the next handshake then compares them as P_PROTOCOL does).
  const mine = link.agreedVersion >= 87 ? (link.opts.dataIntegrityAlg ?? "") : "";
  if (p.integrityAlg !== mine)
    throw new DrbdProtocolError(
      `P_PROTOCOL_UPDATE changes data-integrity-alg from "${mine}" to "${p.integrityAlg}" on a live connection (not supported: reconnect)`,
    );
  const protocol = PROTOCOL_BY_WIRE[p.protocol];
  if (protocol === undefined) {
    link.log.error({ protocol: p.protocol }, "P_PROTOCOL_UPDATE with an unknown wire protocol: ignored");
    return;
  }
  if (p.twoPrimaries)
    link.log.warn(
      "the peer allows two primaries (allow-two-primaries): not supported here, this node keeps one",
    );
  const afterSb = {
    after0p: mirrorAfterSb(p.afterSb0p),
    after1p: mirrorAfterSb(p.afterSb1p),
    after2p: mirrorAfterSb(p.afterSb2p),
  };
  const congestionError = congestionConfigError(protocol, link.opts);
  if (congestionError) link.log.warn({ err: congestionError }, "the peer changed the protocol");
  link.opts.protocol = protocol;
  link.opts.afterSb = afterSb;
  link.protocol = protocol;
  link.log.info({ protocol }, "the peer changed the net options (P_PROTOCOL_UPDATE)");
  adopted?.({ protocol, afterSb });
}

/**
 * receive_SyncParam while connected: the peer's resync-rate, c-plan-ahead … c-max-rate and verify-alg
 * become mine (a resync already running keeps its controller; the next one uses them). A new csums-alg is
 * not taken on the live connection (this node keeps its own until it reconnects); a kernel SyncSource
 * serves plain requests all the same.
 */
export function receiveSyncParams(
  link: Link,
  payload: Buffer,
  adopted: ((s: PeerSettings) => void) | undefined,
): void {
  const sp = decodeSyncParams(payload, link.agreedVersion);
  const opts = link.opts;
  const next: PeerSettings = { resyncRateKiB: sp.resyncRate };
  if (sp.verifyAlg !== undefined) next.verifyAlg = sp.verifyAlg === "" ? undefined : sp.verifyAlg;
  if (sp.cPlanAhead !== undefined)
    next.resyncControl = {
      cPlanAhead: sp.cPlanAhead,
      cFillTarget: sp.cFillTarget ?? RESYNC_DEFAULTS.cFillTarget,
      cDelayTarget: sp.cDelayTarget ?? RESYNC_DEFAULTS.cDelayTarget,
      cMaxRateKiB: sp.cMaxRate ?? RESYNC_DEFAULTS.cMaxRateKiB,
      // Not on the wire: c-min-rate stays this node's own.
      cMinRateKiB: opts.resyncControl?.cMinRateKiB ?? RESYNC_DEFAULTS.cMinRateKiB,
    };
  if (sp.csumsAlg !== undefined && sp.csumsAlg !== (opts.csumsAlg ?? ""))
    link.log.warn(
      { csumsAlg: sp.csumsAlg, mine: opts.csumsAlg ?? "" },
      "the peer changed csums-alg: this node keeps its own until it reconnects",
    );
  const changed = (Object.keys(next) as (keyof PeerSettings)[]).filter((k) => !sameOption(next[k], opts[k]));
  if (changed.length === 0) return;
  Object.assign(opts, next);
  if (next.verifyAlg === undefined) delete opts.verifyAlg;
  link.log.info({ changed }, "the peer changed the resync settings (P_SYNC_PARAM89)");
  adopted?.(next);
}

/** Two option values are the same: equal scalars, or objects with equal fields (in any order). */
export function sameOption(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => sameOption((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}
