/**
 * A target node (SPDK's tgt_node): an iSCSI name, the portal group / initiator group mappings that
 * say who may reach it where, its CHAP policy, digests and queue depth, and the SCSI device behind it.
 */
import type { InitiatorGroup } from "./init_grp.js";
import type { TargetNodeConfig } from "./options.js";

export type AccessResult = "allowed" | "not-mapped" | "forbidden";

export class TargetNode {
  constructor(
    /** Replaced whole when the control plane changes mappings or authentication. */
    public config: TargetNodeConfig,
    private readonly initiatorGroups: ReadonlyMap<number, InitiatorGroup>,
  ) {}

  get name(): string {
    return this.config.name;
  }

  /** Portal group tags this target is reachable through. */
  portalGroupTags(): number[] {
    return [...new Set(this.config.maps.map((m) => m.portalGroup))];
  }

  /**
   * May this initiator, from this address, log in through portal group `pgTag`? A mapping whose
   * initiator group names the initiator AND covers its address grants access (SPDK tgt_node.c).
   */
  access(pgTag: number, initiatorName: string, address: string): AccessResult {
    const maps = this.config.maps.filter((m) => m.portalGroup === pgTag);
    if (maps.length === 0) return "not-mapped";
    for (const m of maps) {
      const ig = this.initiatorGroups.get(m.initiatorGroup);
      if (ig && ig.allows(initiatorName, address)) return "allowed";
    }
    return "forbidden";
  }

  /** Discovery visibility: reachable through any portal group for this initiator and address. */
  visibleTo(initiatorName: string, address: string): number[] {
    return this.portalGroupTags().filter((pg) => this.access(pg, initiatorName, address) === "allowed");
  }
}
