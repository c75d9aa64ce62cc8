/**
 * Automatic split-brain recovery (drbd_receiver.c drbd_asb_recover_0p / _1p / _2p as drbd_sync_handshake
 * uses them): when the UUID compare finds that both sides changed the data since they last shared a
 * generation (+100, or −100 with always-asbp), the net { after-sb-Npri } policy for the number of Primaries
 * may pick a winner. The result is in drbd_uuid_compare's terms: +1 this node is the SyncSource, −1 the
 * SyncTarget, −100 unresolved.
 *
 * Then, failing that, the manual recovery: the node started with `connect --discard-my-data` (its P_UUIDS
 * flag 1) loses, unless both or neither asked.
 */
import { AFTER_SB_POLICY } from "./protocol.js";
import { AFTER_SB_0PRI, AFTER_SB_1PRI, AFTER_SB_2PRI } from "./config/model.js";

/** Policy names as the .res file spells them (discard-node-NAME is turned into discard-local/-remote). */
export type AfterSbPolicyName = keyof typeof AFTER_SB_POLICY & string;

export interface AfterSbPolicies {
  /** net { after-sb-0pri }, enum drbd_after_sb_p numbers (AFTER_SB_POLICY). */
  after0p: number;
  after1p: number;
  after2p: number;
}

export const DEFAULT_AFTER_SB: AfterSbPolicies = { after0p: 0, after1p: 0, after2p: 0 };

/** Which policy values each after-sb-Npri accepts (drbd-utils v84 config_flags.c, as the .res grammar). */
const ALLOWED: Record<"0" | "1" | "2", readonly string[]> = {
  "0": AFTER_SB_0PRI,
  "1": AFTER_SB_1PRI,
  "2": AFTER_SB_2PRI,
};

/**
 * A policy name of after-sb-`primaries`pri as its wire number. `discard-node-NAME` becomes discard-local
 * when NAME is this node (one of `localNames`) and discard-remote otherwise, as drbdadm does.
 */
export function afterSbPolicyNumber(
  primaries: 0 | 1 | 2,
  value: string | undefined,
  localNames: readonly string[] = [],
): number {
  let v = value ?? "disconnect";
  if (primaries === 0 && v.startsWith("discard-node-"))
    v = localNames.includes(v.slice("discard-node-".length)) ? "discard-local" : "discard-remote";
  const n = AFTER_SB_POLICY[v];
  if (n === undefined || !ALLOWED[String(primaries) as "0" | "1" | "2"].includes(v))
    throw new Error(
      `after-sb-${primaries}pri: '${value}' is not one of ${ALLOWED[String(primaries) as "0"].join(", ")}${primaries === 0 ? ", discard-node-NAME" : ""}`,
    );
  return n;
}

const P = AFTER_SB_POLICY as Record<AfterSbPolicyName, number>;

/** What the handshake knows about both sides when the UUIDs say split brain. */
export interface SplitBrainFacts {
  policies: AfterSbPolicies;
  myPrimary: boolean;
  peerPrimary: boolean;
  /**
   * Bit 0 of the bitmap UUIDs: set on the side that was Primary when the two generations parted (the
   * connection dropped under a Primary, so its current UUID with the Primary bit became the bitmap UUID).
   */
  myBitmapUuid: bigint;
  peerBitmapUuid: bigint;
  /** Bits set in my bitmap when I sent P_UUIDS (comm_bm_set) and the peer's P_UUIDS "bits set" field. */
  myChanges: number;
  peerChanges: number;
  /** This node holds RESOLVE_CONFLICTS: it loses ties. */
  resolveConflicts: boolean;
}

export interface SplitBrainVerdict {
  /** +1 sync from this node, −1 sync from the peer, −100 unresolved. */
  result: number;
  /** Number of Primaries the policy was chosen by. */
  primaries: number;
  /** call-pri-lost-after-sb decided against this Primary: it must give up the Primary role first. */
  demoteSelf: boolean;
  /** A policy that is not valid for this number of Primaries was configured (the kernel's "Configuration error."). */
  configError: boolean;
  /** discard-younger/older-primary could not decide and fell back to discard-least-changes. */
  fellBack: boolean;
}

/** drbd_asb_recover_0p: the policy of after-sb-0pri (also used by violently-as0p, consensus, call-pri-lost). */
function recover0p(f: SplitBrainFacts, out: SplitBrainVerdict): number {
  const self = Number(f.myBitmapUuid & 1n);
  const peer = Number(f.peerBitmapUuid & 1n);
  const tie = f.resolveConflicts ? -1 : 1;
  const policy = f.policies.after0p;
  const leastChanges = (): number =>
    f.myChanges < f.peerChanges ? -1 : f.myChanges > f.peerChanges ? 1 : tie;
  const zeroChanges = (): number | undefined => {
    if (f.peerChanges === 0 && f.myChanges === 0) return tie;
    if (f.peerChanges === 0) return 1;
    if (f.myChanges === 0) return -1;
    return undefined;
  };
  switch (policy) {
    case P.disconnect:
      return -100;
    case P["discard-younger-primary"]:
    case P["discard-older-primary"]: {
      // Younger = became Primary after the split (bitmap UUID without the Primary bit): it loses.
      const younger = policy === P["discard-younger-primary"];
      if (self === 0 && peer === 1) return younger ? -1 : 1;
      if (self === 1 && peer === 0) return younger ? 1 : -1;
      out.fellBack = true;
      return zeroChanges() ?? leastChanges();
    }
    case P["discard-zero-changes"]:
      return zeroChanges() ?? -100;
    case P["discard-least-changes"]:
      return leastChanges();
    case P["discard-local"]:
      return -1;
    case P["discard-remote"]:
      return 1;
    default:
      out.configError = true;
      return -100;
  }
}

/** The after-sb policy's verdict for a split brain (drbd_sync_handshake's pcount switch). */
export function recoverSplitBrain(f: SplitBrainFacts): SplitBrainVerdict {
  const primaries = (f.myPrimary ? 1 : 0) + (f.peerPrimary ? 1 : 0);
  const out: SplitBrainVerdict = {
    result: -100,
    primaries,
    demoteSelf: false,
    configError: false,
    fellBack: false,
  };
  const { after1p, after2p } = f.policies;
  if (primaries === 0) {
    out.result = recover0p(f, out);
  } else if (primaries === 1) {
    switch (after1p) {
      case P.disconnect:
        break;
      case P.consensus: {
        // Only when the 0pri policy would discard the Secondary anyway.
        const hg = recover0p(f, out);
        if ((hg === -1 && !f.myPrimary) || (hg === 1 && f.myPrimary)) out.result = hg;
        break;
      }
      case P["violently-as0p"]:
        out.result = recover0p(f, out);
        break;
      case P["discard-secondary"]:
        out.result = f.myPrimary ? 1 : -1;
        break;
      case P["call-pri-lost-after-sb"]: {
        const hg = recover0p(f, out);
        if (hg === -1 && f.myPrimary) out.demoteSelf = true;
        out.result = hg;
        break;
      }
      default:
        out.configError = true;
    }
  } else {
    switch (after2p) {
      case P.disconnect:
        break;
      case P["violently-as0p"]:
        out.result = recover0p(f, out);
        break;
      case P["call-pri-lost-after-sb"]: {
        const hg = recover0p(f, out);
        if (hg === -1) out.demoteSelf = true;
        out.result = hg;
        break;
      }
      default:
        out.configError = true;
    }
  }
  return out;
}

/**
 * The manual recovery after an unresolved split brain (drbd_sync_handshake): the side that connected with
 * --discard-my-data becomes the SyncTarget; both or neither leaves it unresolved.
 */
export function discardMyDataVerdict(myDiscard: boolean, peerDiscard: boolean): number {
  if (myDiscard && !peerDiscard) return -1;
  if (!myDiscard && peerDiscard) return 1;
  return -100;
}
