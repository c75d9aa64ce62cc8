/**
 * Target-wide iSCSI counters for whoever reads them (the server's metrics endpoint): logins refused,
 * by target and by reason (RFC 7143 §11.13.5 status), and digest errors (§7.8). Counted on the
 * failure paths only; nothing on the data path.
 */

/** Why a login was refused: CHAP failed (0x0201), the initiator group forbade it (0x0202), other. */
export type LoginRefusal = "authentication" | "authorization" | "not-found" | "other";

export function loginRefusalOf(statusClass: number, statusDetail: number): LoginRefusal {
  if (statusClass !== 0x02) return "other";
  if (statusDetail === 0x01) return "authentication";
  if (statusDetail === 0x02) return "authorization";
  if (statusDetail === 0x03) return "not-found";
  return "other";
}

export class IscsiStats {
  /** "<target>\0<reason>" → count; the target is "" for discovery and unknown names. */
  private readonly refused = new Map<string, number>();
  headerDigestErrors = 0;
  dataDigestErrors = 0;

  loginRefused(target: string, reason: LoginRefusal): void {
    const key = `${target}\0${reason}`;
    this.refused.set(key, (this.refused.get(key) ?? 0) + 1);
  }

  /** Each (target, reason) with its count so far. */
  loginsRefused(): { target: string; reason: LoginRefusal; count: number }[] {
    return [...this.refused].map(([key, count]) => {
      const [target, reason] = key.split("\0") as [string, LoginRefusal];
      return { target, reason, count };
    });
  }
}
