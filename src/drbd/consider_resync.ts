/**
 * When a Connected pair runs the sync handshake again (drbd_receiver.c receive_state, its "consider resync"
 * part; the CONSIDER_RESYNC flag set in drbd_state.c after_state_ch). The standard first start of a pair —
 * both nodes up and Connected on fresh metadata, then `drbdadm primary --force` on one — relies on it:
 *
 * 1. The forced node becomes Primary with UpToDate data while the other's disk and its own were
 *    Inconsistent. On the other node that peer change (Secondary → Primary, both Inconsistent) sets
 *    CONSIDER_RESYNC.
 * 2. The forced node then sends P_UUIDS and P_STATE; with the flag set, that P_STATE makes the other node
 *    run the sync handshake (it becomes WFBitMapT) and send P_UUIDS and P_STATE back.
 * 3. A Connected node that sees the peer in WFBitMapS or WFBitMapT (or StartingSyncS/T) runs the sync
 *    handshake too, and the bitmap exchange and resync follow as on a new connection.
 * 4. A peer that attaches its disk while connected (P_SIZES, P_UUIDS, then P_STATE with disk Negotiating)
 *    gets the sync handshake as on a new connection ("one of the nodes newly attaches a disk").
 *
 * Pure rules here; DrbdConnection does the I/O.
 */
import { ConnState, DiskState, Role, type DrbdState } from "./protocol.js";

export interface ConsiderResyncInput {
  /** My disk state (DiskState value). */
  myDisk: number;
  /** The peer's state before this P_STATE (undefined: none seen yet). */
  before: DrbdState | undefined;
  /** The peer's state in this P_STATE. */
  after: DrbdState;
  /** CONSIDER_RESYNC as set by an earlier P_STATE. */
  flag: boolean;
}

export interface ConsiderResyncOutput {
  /** Run the sync handshake now (receive_state's `cr`). */
  run: boolean;
  /** CONSIDER_RESYNC after this P_STATE. */
  flag: boolean;
}

/** For a P_STATE received while Connected. */
export function considerResync(i: ConsiderResyncInput): ConsiderResyncOutput {
  const peerStartsSync = i.after.conn >= ConnState.StartingSyncS && i.after.conn <= ConnState.WFBitMapT;
  // "one of the nodes newly attaches a disk": the peer reports Negotiating while we are Connected.
  const peerAttaches = i.after.disk === DiskState.Negotiating;
  const run = i.flag || peerStartsSync || peerAttaches;
  // Judged on the states before this packet, so it takes effect with the next P_STATE.
  const forcedPeer = peerForcedPrimary(i.myDisk, i.before, i.after.role);
  return { run, flag: run ? false : i.flag || forcedPeer };
}

/**
 * after_state_ch: "Peer was forced D_UP_TO_DATE & R_PRIMARY, consider to resync" — both disks were
 * Inconsistent and the peer becomes Primary. A kernel peer announces that with P_STATE_CHG_REQ (becoming
 * Primary while connected is a cluster-wide change), then sends P_UUIDS and the P_STATE that starts it.
 */
export function peerForcedPrimary(
  myDisk: number,
  before: DrbdState | undefined,
  newPeerRole: number,
): boolean {
  return (
    myDisk === DiskState.Inconsistent &&
    before !== undefined &&
    before.disk === DiskState.Inconsistent &&
    before.role === Role.Secondary &&
    newPeerRole === Role.Primary
  );
}

/**
 * The node that was forced (drbd_nl.c drbd_set_role): after its P_STATE announcing Primary, P_UUIDS with
 * the new generation and P_STATE again, so a peer that was Inconsistent with it starts the full sync.
 */
export function announceForcedPrimary(p: {
  wasUpToDate: boolean;
  nowUpToDate: boolean;
  primary: boolean;
  peerDisk: number | undefined;
}): boolean {
  return !p.wasUpToDate && p.nowUpToDate && p.primary && p.peerDisk === DiskState.Inconsistent;
}
