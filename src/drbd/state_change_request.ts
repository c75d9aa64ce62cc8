/**
 * Cluster-wide state changes (drbd_state.c drbd_req_state / _req_st_cond with drbd_send_state_req, and
 * drbd_receiver.c receive_req_state): a change both nodes must agree to — online verify, invalidate and
 * invalidate-remote while connected, a kernel peer's primary or disconnect — travels as P_STATE_CHG_REQ on
 * the data socket and is answered with P_STATE_CHG_REPLY on the meta socket.
 */
import {
  ConnState,
  convertPeerState,
  decodeStateChangeReply,
  decodeStateChangeRequest,
  DrbdCommand,
  encodeStateChangeReply,
  encodeStateChangeRequest,
  Role,
  SS_CONCURRENT_ST_CHG,
  SS_CW_FAILED_BY_PEER,
  SS_SUCCESS,
  unpackState,
} from "./protocol.js";
import type { Link } from "./link.js";

/** Sends a P_STATE_CHG_REQ (mask, val) and resolves with the peer's SS_* answer. */
export type PeerStateChangeRequest = (mask: number, val: number) => Promise<number>;

export interface StateChangeAcceptor {
  /** The connection state the peer asked for, in my terms: an SS_* code (SS_SUCCESS when taken). */
  acceptConnState(conn: ConnState): number;
  /** The peer's role change to `role` was agreed (CONSIDER_RESYNC, consider_resync.ts). */
  peerRoleChanged(role: Role): void;
}

export class StateChangeRequests {
  private waiter: ((rv: number) => void) | undefined;

  constructor(
    private readonly link: Link,
    private readonly acceptor: StateChangeAcceptor,
  ) {}

  /** Sends P_STATE_CHG_REQ and waits for P_STATE_CHG_REPLY (drbd_send_state_req / _req_st_cond). */
  request(mask: number, val: number): Promise<number> {
    if (this.waiter) return Promise.resolve(SS_CONCURRENT_ST_CHG);
    const link = this.link;
    const t = link.timeoutMs;
    return new Promise<number>((resolve) => {
      const done = (rv: number) => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve(rv);
      };
      const timer = setTimeout(() => done(SS_CW_FAILED_BY_PEER), t);
      this.waiter = done;
      link
        .send(link.data, DrbdCommand.StateChgReq, encodeStateChangeRequest(mask, val))
        .catch(() => done(SS_CW_FAILED_BY_PEER));
    });
  }

  /** got_RqSReply. */
  receiveReply(payload: Buffer): void {
    this.waiter?.(decodeStateChangeReply(payload));
  }

  /** The connection went: a request still waiting fails (SS_CW_FAILED_BY_PEER). */
  cancel(): void {
    this.waiter?.(SS_CW_FAILED_BY_PEER);
  }

  /** receive_req_state: the peer asks for a cluster-wide change in its terms, converted to mine. */
  receiveRequest(payload: Buffer, reply = DrbdCommand.StateChgReply): void {
    const link = this.link;
    const req = decodeStateChangeRequest(payload);
    const mask = unpackState(convertPeerState(req.mask));
    const val = unpackState(convertPeerState(req.val));
    // Both asked at once: the node holding RESOLVE_CONFLICTS refuses the peer's request and keeps its own
    // (receive_req_state), the other one takes the peer's and gets SS_CONCURRENT_ST_CHG for its own.
    let rv: number;
    if (this.waiter && link.resolveConflicts) rv = SS_CONCURRENT_ST_CHG;
    // A kernel peer's primary: two Primaries need allow-two-primaries (SS_TWO_PRIMARIES).
    else if (mask.peer !== 0 && val.peer === Role.Primary && link.device.role === "Primary") rv = -1;
    // Its disconnect (C_DISCONNECTING, TearDown here): agreed; the sockets closing does the rest.
    else if (mask.conn === 0 || val.conn === ConnState.TearDown) rv = SS_SUCCESS;
    else rv = this.acceptor.acceptConnState(val.conn);
    if (rv === SS_SUCCESS && mask.peer !== 0) this.acceptor.peerRoleChanged(val.peer);
    link.send(link.meta, reply, encodeStateChangeReply(rv)).catch(() => {});
  }
}
