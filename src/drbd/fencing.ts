/**
 * Resource-level fencing (drbd.conf(5) 8.4 `disk { fencing }`, drbd_nl.c conn_try_outdate_peer,
 * drbd_state.c sanitize_state / after_state_ch for susp_fen).
 *
 * When a Primary loses the connection while it did not know the peer's disk to be Outdated or worse
 * (conn_disconnect: role Primary, pdsk >= DUnknown), it runs the `fence-peer` handler, whose exit code says
 * what became of the peer:
 *
 * | exit | kernel's name | meaning | effect |
 * |---|---|---|---|
 * | 3 | P_INCONSISTENT | peer is Inconsistent or worse | peer disk Inconsistent |
 * | 4 | P_OUTDATED | peer was outdated (or already was) | peer disk Outdated |
 * | 5 | P_DOWN | peer unreachable, assumed dead | peer disk Outdated if my disk is UpToDate, else nothing |
 * | 6 | P_PRIMARY | peer is Primary | outdate myself — refused for a Primary, so nothing |
 * | 7 | P_FENCING | peer was stonithed | peer disk Outdated |
 * | other | — | "fence-peer helper broken" | nothing: I/O stays frozen with resource-and-stonith |
 *
 * With `resource-and-stonith` the Primary suspends all new I/O the moment it loses the peer (susp_fen),
 * before the handler runs, and resumes once the peer disk is Outdated or worse, the peer reconnects, or an
 * administrator runs `resume-io`. With `resource-only` I/O goes on while the handler runs, whatever it
 * returns. `dont-care` (the default) runs nothing.
 */
import type { DrbdDiskState } from "./drbd_states.js";

export type FencingPolicy = "dont-care" | "resource-only" | "resource-and-stonith";

export const FENCING_POLICIES: readonly FencingPolicy[] = [
  "dont-care",
  "resource-only",
  "resource-and-stonith",
];

/** What a fence-peer exit code does (conn_try_outdate_peer). */
export interface FenceVerdict {
  /** The peer's disk state the Primary now assumes; undefined: unchanged (DUnknown). */
  peerDisk: "Outdated" | "Inconsistent" | undefined;
  /** The kernel's log text for the code. */
  text: string;
  /** The helper failed: the kernel logs "fence-peer helper broken" and leaves I/O frozen. */
  broken: boolean;
}

export function fencePeerVerdict(code: number, policy: FencingPolicy, myDisk: DrbdDiskState): FenceVerdict {
  switch (code) {
    case 3:
      return { peerDisk: "Inconsistent", text: "peer is inconsistent or worse", broken: false };
    case 4:
      return { peerDisk: "Outdated", text: "peer was fenced", broken: false };
    case 5:
      return myDisk === "UpToDate"
        ? { peerDisk: "Outdated", text: "peer is unreachable, assumed to be dead", broken: false }
        : {
            peerDisk: undefined,
            text: "peer unreachable, doing nothing since disk != UpToDate",
            broken: false,
          };
    case 6:
      // The kernel asks to outdate its own disk, which a Primary may not: the state change fails.
      return { peerDisk: undefined, text: "peer is active", broken: false };
    case 7:
      return {
        peerDisk: "Outdated",
        text:
          policy === "resource-and-stonith"
            ? "peer was stonithed"
            : "peer was stonithed (fence-peer() = 7 && fencing != Stonith !!!)",
        broken: false,
      };
    default:
      return { peerDisk: undefined, text: `fence-peer helper broken, returned ${code}`, broken: true };
  }
}
