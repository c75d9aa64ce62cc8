/**
 * Unit attention conditions of one logical unit, queued per I_T nexus (SAM-5 5.14, SPC-4 5.14 /
 * 4.5.5): each nexus sees each condition once, oldest first.
 */
import { ASC, type AscAscq } from "./sense.js";

/** Conditions kept per nexus (SAM-5 5.14 lets a device server bound the queue); the oldest goes first. */
const MAX_QUEUED = 8;

export class UnitAttentions {
  private readonly pending = new Map<string, AscAscq[]>();
  private readonly known = new Set<string>();

  /** First command from a nexus: it has not seen the power on yet (SAM-5 6.3.1). */
  contact(nexusKey: string): void {
    if (this.known.has(nexusKey)) return;
    this.known.add(nexusKey);
    this.establish([nexusKey], ASC.POWER_ON_RESET_OR_BUS_DEVICE_RESET);
  }

  /** Every nexus that has talked to this LU. */
  nexusKeys(): string[] {
    return [...this.known];
  }

  establish(nexusKeys: readonly string[], asc: AscAscq): void {
    for (const key of nexusKeys) {
      let q = this.pending.get(key);
      if (!q) {
        q = [];
        this.pending.set(key, q);
      }
      if (q.some((a) => a[0] === asc[0] && a[1] === asc[1])) continue;
      if (q.length >= MAX_QUEUED) q.shift();
      q.push(asc);
    }
  }

  /** Establish `asc` for every known nexus except `except`. */
  establishForOthers(except: string | undefined, asc: AscAscq): void {
    this.establish(
      this.nexusKeys().filter((k) => k !== except),
      asc,
    );
  }

  /** The oldest pending condition for the nexus, removed from the queue. */
  take(nexusKey: string): AscAscq | undefined {
    const q = this.pending.get(nexusKey);
    if (!q || q.length === 0) return undefined;
    const asc = q.shift();
    if (q.length === 0) this.pending.delete(nexusKey);
    return asc;
  }

  has(nexusKey: string): boolean {
    return (this.pending.get(nexusKey)?.length ?? 0) > 0;
  }

  /** The nexus is gone; it starts afresh (with a new power-on condition) if it comes back. */
  forget(nexusKey: string): void {
    this.pending.delete(nexusKey);
    this.known.delete(nexusKey);
  }
}
