/**
 * Counters of the target's defences against misbehaving peers, shown by the `iscsi_get_stats` RPC
 * method. Plain numbers that only grow, so a metrics exporter can turn each into a counter.
 */
export class IscsiStats {
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
    };
  }
}
