/**
 * What a hand-made DRBD peer says in tests: the P_STATE of an UpToDate Secondary that has just seen
 * the Primary's parameters (drbd_receiver.c receive_state expects it during WFReportParams).
 */
import { ConnState, DiskState, encodeState, Role } from "../../src/drbd/protocol.js";

export function secondaryPeerState(): Buffer {
  return encodeState({
    role: Role.Secondary,
    peer: Role.Primary,
    conn: ConnState.WFReportParams,
    disk: DiskState.UpToDate,
    pdsk: DiskState.UpToDate,
    susp: false,
    aftrIsp: false,
    peerIsp: false,
    userIsp: false,
    suspNod: false,
    suspFen: false,
  });
}
