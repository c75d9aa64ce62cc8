/**
 * Generation UUIDs of a DRBD 8.4 volume (drbd_main.c drbd_uuid_new_current / drbd_uuid_set_bm, and
 * drbd_receiver.c drbd_uuid_compare). Four 64-bit values: current, bitmap, history[0], history[1].
 *
 * - current identifies the data generation; bit 0 is set while the node is Primary and ignored in compares.
 * - bitmap is the current UUID both sides last shared while this node records changes in its bitmap
 *   (non-zero only while there is a peer that misses writes).
 * - history holds the two generations before.
 */
import { newUuid, UUID_JUST_CREATED } from "./metadata.js";

export type UuidSet = [current: bigint, bitmap: bigint, history0: bigint, history1: bigint];

const strip = (u: bigint) => u & ~1n;

/**
 * A Primary starts a new data generation without its peer (drbd_uuid_new_current): the old current becomes
 * the bitmap UUID (the point the bitmap counts from), an older bitmap UUID is pushed into the history.
 * A just-created current is not worth remembering: the first connect is a full sync anyway.
 */
export function newCurrentUuid(u: UuidSet, primary: boolean, fresh: bigint = newUuid()): UuidSet {
  const [cur, bm, h0] = u;
  let next: UuidSet = [...u];
  if (strip(cur) !== UUID_JUST_CREATED && cur !== 0n) {
    if (bm !== 0n) next = [cur, 0n, bm, h0];
    next = [next[0], strip(cur), next[2], next[3]];
  }
  next[0] = primary ? fresh | 1n : strip(fresh);
  return next;
}

/**
 * drbd_uuid_new_current when a Primary loses its peer: like newCurrentUuid, but the bitmap UUID keeps the
 * Primary bit of the old current UUID. That bit tells later split-brain recovery which side was Primary when
 * the generations parted (discard-younger-primary / discard-older-primary); a node promoted afterwards
 * starts its generation from a current UUID without the bit.
 */
export function newCurrentUuidAtSplit(u: UuidSet, fresh: bigint = newUuid()): UuidSet {
  const next = newCurrentUuid(u, true, fresh);
  if (next[1] !== 0n) next[1] |= u[0] & 1n;
  return next;
}

/** Sets or clears the "Primary" bit 0 of the current UUID (_drbd_uuid_set). */
export function withPrimaryBit(u: UuidSet, primary: boolean): UuidSet {
  const cur = u[0] === UUID_JUST_CREATED ? u[0] : primary ? u[0] | 1n : strip(u[0]);
  return [cur, u[1], u[2], u[3]];
}

/**
 * After a finished resync the SyncSource's bitmap UUID goes into history (drbd_uuid_set_bm(0)): both sides
 * now share the current UUID and nothing is being recorded against an old generation.
 */
export function resyncFinished(u: UuidSet): UuidSet {
  if (u[1] === 0n) return u;
  return [u[0], 0n, u[1], u[2]];
}

/** The SyncTarget takes the source's current UUID and keeps its own old one in history. */
export function adoptSourceUuids(mine: UuidSet, source: UuidSet): UuidSet {
  return [strip(source[0]), 0n, strip(mine[0]) === strip(source[0]) ? mine[2] : strip(mine[0]), mine[2]];
}

/** Result of the sync decision, from this node's point of view (drbd_uuid_compare's return value). */
export interface SyncDecision {
  /** 0 none, +1/-1 bitmap-based as source/target, +2/-2 full as source/target, ±100 split brain, -1000 unrelated. */
  result: number;
  /** The rule number of docs/drbd-protocol.md that decided it, for the log. */
  rule: number;
}

export interface UuidCompareInput {
  mine: UuidSet;
  peer: UuidSet;
  /** My superblock's CRASHED_PRIMARY flag. */
  myCrashedPrimary: boolean;
  /** The peer's P_UUIDS flag 2. */
  peerCrashedPrimary: boolean;
  /** This node holds RESOLVE_CONFLICTS (it accepted the meta socket). */
  resolveConflicts: boolean;
}

/** drbd_uuid_compare for protocol 8.4 peers (the history-shift corrections of rules 34–37, 51 and 71 aside). */
export function compareUuids(i: UuidCompareInput): SyncDecision {
  const self = i.mine.map(strip) as UuidSet;
  const peer = i.peer.map(strip) as UuidSet;
  const JC = UUID_JUST_CREATED;
  if (self[0] === JC && peer[0] === JC) return { result: 0, rule: 10 };
  if ((self[0] === JC || self[0] === 0n) && peer[0] !== JC) return { result: -2, rule: 20 };
  if (self[0] !== JC && (peer[0] === JC || peer[0] === 0n)) return { result: 2, rule: 30 };
  if (self[0] === peer[0]) {
    if (self[1] !== 0n && peer[1] === 0n) return { result: 1, rule: 34 };
    if (self[1] === 0n && peer[1] !== 0n) return { result: -1, rule: 36 };
    if (!i.myCrashedPrimary && !i.peerCrashedPrimary) return { result: 0, rule: 40 };
    if (i.myCrashedPrimary && !i.peerCrashedPrimary) return { result: 1, rule: 40 };
    if (!i.myCrashedPrimary && i.peerCrashedPrimary) return { result: -1, rule: 40 };
    return { result: i.resolveConflicts ? -1 : 1, rule: 40 };
  }
  if (self[0] === peer[1]) return { result: -1, rule: 50 };
  if (self[0] === peer[2] || self[0] === peer[3]) return { result: -2, rule: 60 };
  if (self[1] === peer[0]) return { result: 1, rule: 70 };
  if (peer[0] === self[2] || peer[0] === self[3]) return { result: 2, rule: 80 };
  if (self[1] !== 0n && self[1] === peer[1]) return { result: 100, rule: 90 };
  for (const a of [self[2], self[3]])
    for (const b of [peer[2], peer[3]]) if (a !== 0n && a === b) return { result: -100, rule: 100 };
  return { result: -1000, rule: 0 };
}
