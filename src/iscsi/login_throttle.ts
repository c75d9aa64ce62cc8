/**
 * A growing delay on logins after authentication failures, so CHAP secrets cannot be guessed at
 * network speed (RFC 7143 §12.1.3 leaves this to the implementation; RFC 1994 §4 expects secrets
 * that can be brute-forced offline only if an exchange is captured). Failures are counted per
 * (initiator name, source address) and per source address alone; while either has failed recently,
 * the answer to each further CHAP response is held back, and each waiting login takes the next slot
 * so parallel connections cannot guess faster than one at a time. A success clears its pair.
 */
import type { Logger } from "../util/log.js";
import type { IscsiStats } from "./iscsi_stats.js";

export interface LoginThrottleOptions {
  /** The delay after the first failure, doubled after each further one (0: no throttling). */
  readonly baseDelayMs: number;
  /** The longest delay. */
  readonly maxDelayMs: number;
  /** Failures are forgotten after this long without another. */
  readonly forgetAfterMs?: number;
}

/** Keys tracked at once: the oldest are forgotten first, so the table stays bounded. */
const MAX_KEYS = 4096;

interface FailureRecord {
  failures: number;
  /** When the next waiting login may be answered. */
  nextSlot: number;
  lastFailure: number;
  /** Logins held back in this burst (logged when it ends). */
  delayed: number;
}

export class LoginThrottle {
  private readonly records = new Map<string, FailureRecord>();
  private readonly forgetAfterMs: number;

  constructor(
    private readonly options: LoginThrottleOptions,
    private readonly stats: IscsiStats,
    private readonly log: Logger,
  ) {
    this.forgetAfterMs = options.forgetAfterMs ?? Math.max(60_000, 4 * options.maxDelayMs);
  }

  /**
   * A login from `initiator` at `address` is about to have its CHAP response checked: how long to
   * hold it first. Takes a slot, so a second login waiting at the same time waits one delay more.
   */
  admit(initiator: string, address: string): number {
    if (this.options.baseDelayMs <= 0) return 0;
    const now = Date.now();
    let wait = 0;
    for (const key of this.keys(initiator, address)) {
      const r = this.current(key, now);
      if (!r) continue;
      const slot = Math.max(now, r.nextSlot);
      r.nextSlot = slot + this.delayFor(r.failures);
      r.delayed++;
      wait = Math.max(wait, slot - now);
    }
    if (wait > 0) {
      this.stats.authDelayedLogins++;
      this.stats.authDelayMs += wait;
    }
    return wait;
  }

  /** The login failed authentication. */
  failed(initiator: string, address: string): void {
    this.stats.authFailures++;
    if (this.options.baseDelayMs <= 0) return;
    const now = Date.now();
    for (const key of this.keys(initiator, address)) {
      let r = this.current(key, now);
      if (!r) {
        if (this.records.size >= MAX_KEYS) this.records.delete(this.records.keys().next().value!);
        r = { failures: 0, nextSlot: now, lastFailure: now, delayed: 0 };
        this.records.set(key, r);
        // Once per burst: the line that tells the operator someone is guessing.
        this.log.warn({ key }, "authentication failed; further logins from here are delayed");
      }
      r.failures++;
      r.lastFailure = now;
      r.nextSlot = Math.max(r.nextSlot, now + this.delayFor(r.failures));
      // Most recently failing last, so the oldest is dropped first when the table is full.
      this.records.delete(key);
      this.records.set(key, r);
    }
  }

  /** The login authenticated: its (initiator, address) pair starts afresh. */
  succeeded(initiator: string, address: string): void {
    const key = this.keys(initiator, address)[0]!;
    const r = this.records.get(key);
    if (r) this.end(key, r);
  }

  private delayFor(failures: number): number {
    const { baseDelayMs, maxDelayMs } = this.options;
    return Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(failures - 1, 30));
  }

  private keys(initiator: string, address: string): string[] {
    return [`${initiator.toLowerCase()} from ${address}`, `* from ${address}`];
  }

  /** The record of a burst still going on (one that has gone quiet long enough is ended). */
  private current(key: string, now: number): FailureRecord | undefined {
    const r = this.records.get(key);
    if (r && now - r.lastFailure >= this.forgetAfterMs && now >= r.nextSlot) {
      this.end(key, r);
      return undefined;
    }
    return r;
  }

  private end(key: string, r: FailureRecord): void {
    this.records.delete(key);
    this.log.info({ key, failures: r.failures, delayed: r.delayed }, "authentication failure burst over");
  }
}
