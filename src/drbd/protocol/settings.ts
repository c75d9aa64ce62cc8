/**
 * The settings both peers compare after the handshake: P_PROTOCOL / P_PROTOCOL_UPDATE (net options,
 * receive_protocol) and P_SYNC_PARAM / P_SYNC_PARAM89 (resync controller and algorithms).
 */
import { DrbdCommand, DrbdProtocolError } from "./commands.js";
import { cString, fixedString, need } from "./codec.js";

// P_PROTOCOL / P_PROTOCOL_UPDATE (p_protocol)

export const WIRE_PROTOCOL = { A: 1, B: 2, C: 3 } as const;
/** enum drbd_after_sb_p, as configured names map to it. */
export const AFTER_SB_POLICY: Record<string, number> = {
  disconnect: 0,
  "discard-younger-primary": 1,
  "discard-older-primary": 2,
  "discard-zero-changes": 3,
  "discard-least-changes": 4,
  "discard-local": 5,
  "discard-remote": 6,
  consensus: 7,
  "discard-secondary": 8,
  "call-pri-lost-after-sb": 9,
  "violently-as0p": 10,
};
export const CF_DISCARD_MY_DATA = 1;
export const CF_DRY_RUN = 2;

export interface ProtocolParams {
  protocol: number;
  afterSb0p: number;
  afterSb1p: number;
  afterSb2p: number;
  connFlags: number;
  twoPrimaries: boolean;
  /** data-integrity-alg; "" for none. Sent from protocol 87 on. */
  integrityAlg: string;
}

export function encodeProtocol(p: ProtocolParams, agreedVersion: number): Buffer {
  const alg = agreedVersion >= 87 ? Buffer.from(p.integrityAlg + "\0", "latin1") : Buffer.alloc(0);
  if (alg.length > 64) throw new DrbdProtocolError(`integrity-alg "${p.integrityAlg}" longer than 63 bytes`);
  const b = Buffer.alloc(24 + alg.length);
  [p.protocol, p.afterSb0p, p.afterSb1p, p.afterSb2p, p.connFlags, p.twoPrimaries ? 1 : 0].forEach((v, i) =>
    b.writeUInt32BE(v, i * 4),
  );
  alg.copy(b, 24);
  return b;
}

export function decodeProtocol(b: Buffer, agreedVersion: number): ProtocolParams {
  need(b, 24, "P_PROTOCOL");
  let integrityAlg = "";
  if (agreedVersion >= 87 && b.length > 24) {
    if (b.length - 24 > 64)
      throw new DrbdProtocolError(`P_PROTOCOL integrity-alg of ${b.length - 24} bytes exceeds 64`);
    integrityAlg = cString(b.subarray(24));
  }
  return {
    protocol: b.readUInt32BE(0),
    afterSb0p: b.readUInt32BE(4),
    afterSb1p: b.readUInt32BE(8),
    afterSb2p: b.readUInt32BE(12),
    connFlags: b.readUInt32BE(16),
    twoPrimaries: b.readUInt32BE(20) !== 0,
    integrityAlg,
  };
}

/** The peer's after-sb policy seen from this side: its discard-local is my discard-remote (convert_after_sb). */
export function mirrorAfterSb(policy: number): number {
  if (policy === AFTER_SB_POLICY["discard-remote"]) return AFTER_SB_POLICY["discard-local"] as number;
  if (policy === AFTER_SB_POLICY["discard-local"]) return AFTER_SB_POLICY["discard-remote"] as number;
  return policy;
}

/**
 * The setting that makes a peer's P_PROTOCOL incompatible with mine, as receive_protocol checks it (the
 * kernel then disconnects with "incompatible <setting> settings"), or undefined when they agree.
 */
export function protocolMismatch(mine: ProtocolParams, peer: ProtocolParams): string | undefined {
  if (peer.protocol !== mine.protocol) return "protocol";
  if (mirrorAfterSb(peer.afterSb0p) !== mine.afterSb0p) return "after-sb-0pri";
  if (mirrorAfterSb(peer.afterSb1p) !== mine.afterSb1p) return "after-sb-1pri";
  if (mirrorAfterSb(peer.afterSb2p) !== mine.afterSb2p) return "after-sb-2pri";
  if (peer.connFlags & CF_DISCARD_MY_DATA && mine.connFlags & CF_DISCARD_MY_DATA) return "discard-my-data";
  if (peer.twoPrimaries !== mine.twoPrimaries) return "allow-two-primaries";
  if (peer.integrityAlg !== mine.integrityAlg) return "data-integrity-alg";
  return undefined;
}

// P_SYNC_PARAM / P_SYNC_PARAM89 (p_rs_param, p_rs_param_89, p_rs_param_95; drbd_send_sync_param)

export interface SyncParams {
  /** KiB/s */
  resyncRate: number;
  verifyAlg: string;
  csumsAlg: string;
  cPlanAhead: number;
  cDelayTarget: number;
  cFillTarget: number;
  cMaxRate: number;
}

const SHARED_SECRET_MAX = 64;

/** The command and payload the kernel sends at this version: ≤87 rate only, 88 + verify-alg, 89–94, ≥95. */
export function encodeSyncParams(
  p: SyncParams,
  agreedVersion: number,
): { command: DrbdCommand; payload: Buffer } {
  if (agreedVersion <= 88) {
    const alg = agreedVersion === 88 ? Buffer.from(p.verifyAlg + "\0", "latin1") : Buffer.alloc(0);
    const b = Buffer.alloc(4 + alg.length);
    b.writeUInt32BE(p.resyncRate, 0);
    alg.copy(b, 4);
    return { command: DrbdCommand.SyncParam, payload: b };
  }
  const b = Buffer.alloc(agreedVersion >= 95 ? 148 : 132);
  b.writeUInt32BE(p.resyncRate, 0);
  fixedString(b, 4, SHARED_SECRET_MAX, p.verifyAlg, "verify-alg");
  fixedString(b, 68, SHARED_SECRET_MAX, p.csumsAlg, "csums-alg");
  if (agreedVersion >= 95) {
    b.writeUInt32BE(p.cPlanAhead, 132);
    b.writeUInt32BE(p.cDelayTarget, 136);
    b.writeUInt32BE(p.cFillTarget, 140);
    b.writeUInt32BE(p.cMaxRate, 144);
  }
  return { command: DrbdCommand.SyncParam89, payload: b };
}

export function decodeSyncParams(
  b: Buffer,
  agreedVersion: number,
): Partial<SyncParams> & { resyncRate: number } {
  need(b, 4, "P_SYNC_PARAM");
  // receive_SyncParam: the longest payload each version may send.
  const expMax =
    agreedVersion <= 87 ? 4 : agreedVersion === 88 ? 4 + SHARED_SECRET_MAX : agreedVersion <= 94 ? 132 : 148;
  if (b.length > expMax)
    throw new DrbdProtocolError(
      `SyncParam packet too long: ${b.length} bytes, at most ${expMax} at protocol ${agreedVersion}`,
    );
  const resyncRate = b.readUInt32BE(0);
  if (agreedVersion <= 87) return { resyncRate };
  if (agreedVersion === 88) return { resyncRate, verifyAlg: cString(b.subarray(4)) };
  need(b, 132, "P_SYNC_PARAM89");
  const out: Partial<SyncParams> & { resyncRate: number } = {
    resyncRate,
    verifyAlg: cString(b.subarray(4, 68)),
    csumsAlg: cString(b.subarray(68, 132)),
  };
  if (agreedVersion >= 95) {
    need(b, 148, "P_SYNC_PARAM89 at protocol ≥95");
    out.cPlanAhead = b.readUInt32BE(132);
    out.cDelayTarget = b.readUInt32BE(136);
    out.cFillTarget = b.readUInt32BE(140);
    out.cMaxRate = b.readUInt32BE(144);
  }
  return out;
}
