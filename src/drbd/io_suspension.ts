/**
 * Suspended I/O of a DRBD volume (drbd_suspended: the state bits susp and susp_fen; inc_ap_bio makes new
 * requests wait while they are set). "user": `drbdadm suspend-io`; "fencing": a resource-and-stonith
 * Primary that lost its peer, until fence-peer outdated it, the peer reconnected, or `drbdadm resume-io`.
 */
import type { IoSuspension } from "./peer_device_port.js";

export class IoSuspensionGate {
  private current: { why: IoSuspension; resumed: Promise<void>; resume: () => void } | undefined;

  /** Why I/O waits now, if it does. */
  get why(): IoSuspension | undefined {
    return this.current?.why;
  }

  /** Starts a suspension; false when one is on already (its reason is kept: either resume lifts it). */
  suspend(why: IoSuspension): boolean {
    if (this.current) return false;
    let resume = () => {};
    const resumed = new Promise<void>((r) => (resume = r));
    this.current = { why, resumed, resume };
    return true;
  }

  /** Lifts the suspension of that reason (undefined: any); returns the reason lifted, if one was. */
  resume(why?: IoSuspension): IoSuspension | undefined {
    const s = this.current;
    if (!s || (why !== undefined && s.why !== why)) return undefined;
    this.current = undefined;
    s.resume();
    return s.why;
  }

  /** Resolves once no suspension is on. */
  async wait(): Promise<void> {
    while (this.current) await this.current.resumed;
  }
}
