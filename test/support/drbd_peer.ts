/**
 * What a hand-made DRBD peer says in tests: the P_STATE of an UpToDate node that has just seen the other
 * node's parameters (drbd_receiver.c receive_state expects it during WFReportParams).
 */
import { ConnState, DiskState, encodeState, Role } from "../../src/drbd/protocol.js";

/** An UpToDate Secondary facing a Primary. */
export function secondaryPeerState(): Buffer {
  return peerState(Role.Secondary);
}

/** An UpToDate node in `role`, facing the other role. */
export function peerState(role: Role.Primary | Role.Secondary): Buffer {
  return encodeState({
    role,
    peer: role === Role.Primary ? Role.Secondary : Role.Primary,
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
