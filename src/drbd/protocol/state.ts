/**
 * Roles, connection and disk states as the u32 of linux/drbd.h union drbd_state, and the packets that
 * carry them: P_STATE, P_STATE_CHG_REQ / P_CONN_ST_CHG_REQ and their replies.
 */
import { exactly } from "./codec.js";

// P_STATE, state change requests and replies (linux/drbd.h union drbd_state, enum drbd_state_rv)

export enum Role {
  Unknown = 0,
  Primary = 1,
  Secondary = 2,
}
export enum ConnState {
  StandAlone = 0,
  Disconnecting,
  Unconnected,
  Timeout,
  BrokenPipe,
  NetworkFailure,
  ProtocolError,
  TearDown,
  WFConnection,
  WFReportParams,
  Connected,
  StartingSyncS,
  StartingSyncT,
  WFBitMapS,
  WFBitMapT,
  WFSyncUUID,
  SyncSource,
  SyncTarget,
  VerifyS,
  VerifyT,
  PausedSyncS,
  PausedSyncT,
  Ahead,
  Behind,
}
export enum DiskState {
  Diskless = 0,
  Attaching,
  Failed,
  Negotiating,
  Inconsistent,
  Outdated,
  DUnknown,
  Consistent,
  UpToDate,
}

export interface DrbdState {
  role: Role;
  peer: Role;
  conn: ConnState;
  disk: DiskState;
  pdsk: DiskState;
  susp: boolean;
  aftrIsp: boolean;
  peerIsp: boolean;
  userIsp: boolean;
  suspNod: boolean;
  suspFen: boolean;
}

/** Bit positions within the u32 (the little-endian bit-field order, which the wire value always uses). */
const STATE_FIELDS = [
  ["role", 0, 2],
  ["peer", 2, 2],
  ["conn", 4, 5],
  ["disk", 9, 4],
  ["pdsk", 13, 4],
  ["susp", 17, 1],
  ["aftrIsp", 18, 1],
  ["peerIsp", 19, 1],
  ["userIsp", 20, 1],
  ["suspNod", 21, 1],
  ["suspFen", 22, 1],
] as const;

export function packState(s: Partial<DrbdState>): number {
  let v = 0;
  for (const [name, shift, bits] of STATE_FIELDS) {
    const f = s[name];
    if (f === undefined) continue;
    const n = typeof f === "boolean" ? (f ? 1 : 0) : f;
    v |= (n & ((1 << bits) - 1)) << shift;
  }
  return v >>> 0;
}

export function unpackState(v: number): DrbdState {
  const get = (shift: number, bits: number) => (v >>> shift) & ((1 << bits) - 1);
  return {
    role: get(0, 2),
    peer: get(2, 2),
    conn: get(4, 5),
    disk: get(9, 4),
    pdsk: get(13, 4),
    susp: get(17, 1) === 1,
    aftrIsp: get(18, 1) === 1,
    peerIsp: get(19, 1) === 1,
    userIsp: get(20, 1) === 1,
    suspNod: get(21, 1) === 1,
    suspFen: get(22, 1) === 1,
  };
}

/** A mask covering the named fields, for P_STATE_CHG_REQ. */
export function stateMask(fields: readonly (keyof DrbdState)[]): number {
  let m = 0;
  for (const [name, shift, bits] of STATE_FIELDS) if (fields.includes(name)) m |= ((1 << bits) - 1) << shift;
  return m >>> 0;
}

/** conn values a peer's request maps to on this side (convert_state's c_tab; all others read as 0). */
const CONN_AS_SEEN_HERE: Partial<Record<number, number>> = {
  [ConnState.WFReportParams]: ConnState.WFReportParams,
  [ConnState.Connected]: ConnState.Connected,
  [ConnState.StartingSyncS]: ConnState.StartingSyncT,
  [ConnState.StartingSyncT]: ConnState.StartingSyncS,
  [ConnState.Disconnecting]: ConnState.TearDown,
  [ConnState.VerifyS]: ConnState.VerifyT,
  31: 31, // C_MASK: a mask covering conn stays a full mask
};

/**
 * A packed state (or mask) from a peer's P_STATE_CHG_REQ / P_CONN_ST_CHG_REQ, turned into this node's view
 * (receive_req_state's convert_state): role and peer swap, disk and pdsk swap, conn maps through the table
 * above, and peer_isp becomes the peer's aftr_isp | user_isp. Apply it to both mask and val.
 */
export function convertPeerState(v: number): number {
  const s = unpackState(v);
  const converted: DrbdState = {
    ...s,
    conn: CONN_AS_SEEN_HERE[s.conn] ?? 0,
    role: s.peer,
    peer: s.role,
    disk: s.pdsk,
    pdsk: s.disk,
    peerIsp: s.aftrIsp || s.userIsp,
  };
  return (packState(converted) | (v & ~0x7fffff)) >>> 0;
}

export function encodeState(s: DrbdState): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(packState(s), 0);
  return b;
}
export function decodeState(b: Buffer): DrbdState {
  exactly(b, 4, "P_STATE");
  return unpackState(b.readUInt32BE(0));
}

/** P_STATE_CHG_REQ / P_CONN_ST_CHG_REQ (p_req_state). */
export function encodeStateChangeRequest(mask: number, val: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(mask >>> 0, 0);
  b.writeUInt32BE(val >>> 0, 4);
  return b;
}
export function decodeStateChangeRequest(b: Buffer): { mask: number; val: number } {
  exactly(b, 8, "state change request");
  return { mask: b.readUInt32BE(0), val: b.readUInt32BE(4) };
}

export const SS_SUCCESS = 1;
export const SS_CW_FAILED_BY_PEER = -10;
export const SS_CONCURRENT_ST_CHG = -19;

/** P_STATE_CHG_REPLY / P_CONN_ST_CHG_REPLY: a signed enum drbd_state_rv. */
export function encodeStateChangeReply(retcode: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(retcode, 0);
  return b;
}
export function decodeStateChangeReply(b: Buffer): number {
  exactly(b, 4, "state change reply");
  return b.readInt32BE(0);
}
