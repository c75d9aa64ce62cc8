/**
 * Connections that have not completed login, kept apart from logged-in ones (RFC 7143 leaves the
 * number of connections to the implementation). Anyone who can reach a portal can open one, so they
 * get their own smaller pool: at most `perAddress` from one source address, at most `size` in all,
 * and a short deadline for the first complete PDU. When the pool is full, a new connection still
 * gets in: the oldest unfinished login of the address holding the most is closed to make room, so
 * one host's idle or dribbled connections never lock out a login from another host, and logged-in
 * sessions are never touched.
 */
import type { IscsiStats } from "./iscsi_stats.js";

export interface PreLoginPoolOptions {
  /** Unfinished logins at once, from all sources. */
  readonly size: number;
  /** Unfinished logins at once from one source address. */
  readonly perAddress: number;
  /** A connection with no complete PDU this long after accept is closed. */
  readonly firstPduTimeoutMs: number;
}

/** What the pool needs of a connection. */
export interface PreLoginConnection {
  drop(reason: string): void;
}

interface Entry {
  readonly address: string;
  readonly since: number;
  timer: NodeJS.Timeout | undefined;
}

export class PreLoginPool {
  private readonly entries = new Map<PreLoginConnection, Entry>();
  private readonly perAddress = new Map<string, Set<PreLoginConnection>>();

  constructor(
    private readonly options: PreLoginPoolOptions,
    private readonly stats: IscsiStats,
  ) {}

  get count(): number {
    return this.entries.size;
  }

  /**
   * May a new connection from `address` start a login? A "no" names why; the caller closes it.
   * Call `add` once the connection object exists.
   */
  admit(address: string): string | undefined {
    const mine = this.perAddress.get(address)?.size ?? 0;
    if (mine >= this.options.perAddress) {
      this.stats.preLoginRefusedPerAddress++;
      return `${mine} unfinished logins from ${address} already`;
    }
    if (this.entries.size >= this.options.size) this.evictOne();
    return undefined;
  }

  add(conn: PreLoginConnection, address: string): void {
    const entry: Entry = { address, since: Date.now(), timer: undefined };
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      this.stats.firstPduTimeouts++;
      conn.drop(`no complete login PDU within ${this.options.firstPduTimeoutMs} ms`);
    }, this.options.firstPduTimeoutMs);
    entry.timer.unref();
    this.entries.set(conn, entry);
    let set = this.perAddress.get(address);
    if (!set) this.perAddress.set(address, (set = new Set()));
    set.add(conn);
  }

  /** The connection's first complete PDU arrived. */
  firstPdu(conn: PreLoginConnection): void {
    const e = this.entries.get(conn);
    if (e?.timer) {
      clearTimeout(e.timer);
      e.timer = undefined;
    }
  }

  /** The connection logged in or closed: it leaves the pool. */
  release(conn: PreLoginConnection): void {
    const e = this.entries.get(conn);
    if (!e) return;
    clearTimeout(e.timer);
    this.entries.delete(conn);
    const set = this.perAddress.get(e.address);
    set?.delete(conn);
    if (set?.size === 0) this.perAddress.delete(e.address);
  }

  /** Close the oldest unfinished login of the address that holds the most. */
  private evictOne(): void {
    let busiest: Set<PreLoginConnection> | undefined;
    for (const set of this.perAddress.values()) if (!busiest || set.size > busiest.size) busiest = set;
    let victim: PreLoginConnection | undefined;
    let since = Infinity;
    for (const c of busiest ?? []) {
      const e = this.entries.get(c)!;
      if (e.since < since) {
        since = e.since;
        victim = c;
      }
    }
    if (!victim) return;
    this.stats.preLoginEvicted++;
    this.release(victim);
    victim.drop("unfinished login closed to make room for a new connection");
  }
}
