/**
 * Target-wide iSCSI counters for whoever reads them (the metrics endpoint, the iscsi_get_stats RPC
 * method): logins refused, by target and by reason (RFC 7143 §11.13.5 status), digest errors (§7.8),
 * and the target's defences against misbehaving peers. Plain numbers that only grow, counted on the
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

  /** Logins refused for a CHAP or other authentication failure. */
  authFailures = 0;
  /** Logins whose CHAP answer was held back because earlier guesses from the same place had failed. */
  authDelayedLogins = 0;
  /** Total time those logins were held back, in milliseconds. */
  authDelayMs = 0;
  /** Connections refused at accept: the source address already had its share of unfinished logins. */
  preLoginRefusedPerAddress = 0;
  /** Unfinished logins closed to make room for a new connection when the pre-login pool was full. */
  preLoginEvicted = 0;
  /** Connections closed because no complete first PDU arrived in time. */
  firstPduTimeouts = 0;
  /** Log lines about peer behaviour that were suppressed by the per-source rate limit. */
  logLinesSuppressed = 0;
  /** Times a connection stopped being read because its or the server's write-data budget was used up. */
  dataBudgetWaits = 0;
  /** Write commands whose Data-Out did not arrive within DataOutTimeout (the connection was dropped). */
  dataOutTimeouts = 0;

  toJSON(): Record<string, number> {
    return {
      auth_failures: this.authFailures,
      auth_delayed_logins: this.authDelayedLogins,
      auth_delay_ms: this.authDelayMs,
      prelogin_refused_per_address: this.preLoginRefusedPerAddress,
      prelogin_evicted: this.preLoginEvicted,
      first_pdu_timeouts: this.firstPduTimeouts,
      log_lines_suppressed: this.logLinesSuppressed,
      data_budget_waits: this.dataBudgetWaits,
      data_out_timeouts: this.dataOutTimeouts,
      header_digest_errors: this.headerDigestErrors,
      data_digest_errors: this.dataDigestErrors,
    };
  }

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
