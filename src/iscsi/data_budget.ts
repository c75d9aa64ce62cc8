/**
 * Bounds on WRITE data held in memory while commands wait for their Data-Out (RFC 7143 §11.7-§11.8).
 * A write's data is kept until the whole command has arrived and the device has written it, so an
 * initiator that answers R2Ts and holds back the last Data-Out could otherwise make the target keep
 * everything it sent. Each write that needs Data-Out reserves its Expected Data Transfer Length
 * before the target solicits anything: per connection up to `perConnection` bytes, across the target
 * up to `total`. A write that does not fit waits, without R2Ts, until earlier writes complete; while a
 * connection has nothing but waiting writes it is not read at all (back-pressure). A write that alone
 * exceeds the per-connection budget runs when its connection holds nothing else; one larger than the
 * whole target's budget is refused. A write whose Data-Out stops arriving for `dataOutTimeoutMs` costs
 * its connection (ERL 0: the session ends, its buffers are freed).
 */
import { scheduleMemoryRelease } from "../util/memory_release.js";
import type { IscsiStats } from "./iscsi_stats.js";

/** After a drain from at least this much buffered data, memory is handed back (memory_release.ts). */
const RELEASE_AFTER_BYTES = 16 * 1024 * 1024;

export interface WriteBudgetLimits {
  readonly perConnection: number;
  readonly total: number;
  readonly dataOutTimeoutMs: number;
}

/** What a connection does when its writes wait, resume, or time out. */
export interface WriteBudgetHooks {
  /** Some write of this connection is waiting and none is collecting data: stop reading the socket. */
  pause(): void;
  /** A waiting write was admitted: read again. */
  resume(): void;
  /** A write received no Data-Out for dataOutTimeoutMs. */
  timedOut(what: string): void;
}

interface Reservation {
  readonly bytes: number;
  collecting: boolean;
  lastProgress: number;
  readonly label: string;
}

interface Waiter {
  readonly key: object;
  readonly bytes: number;
  readonly label: string;
  readonly start: () => void;
}

export type WriteAdmission = "now" | "queued" | "too-large";

/** The whole target's budget; hands out per-connection ones. */
export class WriteDataBudget {
  used = 0;
  /** The most buffered since the budget last drained. */
  private peak = 0;
  /** Connections with writes waiting for room, oldest first. */
  private readonly waiting = new Set<ConnectionWriteBudget>();

  constructor(
    readonly limits: WriteBudgetLimits,
    readonly stats: IscsiStats,
  ) {}

  forConnection(hooks: WriteBudgetHooks): ConnectionWriteBudget {
    return new ConnectionWriteBudget(this, hooks);
  }

  /** @internal */ markWaiting(conn: ConnectionWriteBudget, waiting: boolean): void {
    if (waiting) this.waiting.add(conn);
    else this.waiting.delete(conn);
  }

  /** @internal */ reserved(): void {
    if (this.used > this.peak) this.peak = this.used;
  }

  /** Bytes came free: admit what now fits, oldest waiting connection first. */
  /** @internal */ released(): void {
    if (this.used === 0) {
      if (this.peak >= RELEASE_AFTER_BYTES) scheduleMemoryRelease();
      this.peak = 0;
    }
    for (const conn of [...this.waiting]) {
      const outcome = conn.admitWaiting();
      // Strict order across connections: a write blocked by the target's budget holds back later ones,
      // so a large write is not starved by a stream of small ones.
      if (outcome === "blocked-by-total") break;
    }
  }
}

export class ConnectionWriteBudget {
  used = 0;
  private readonly reservations = new Map<object, Reservation>();
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private paused = false;

  constructor(
    private readonly server: WriteDataBudget,
    private readonly hooks: WriteBudgetHooks,
  ) {}

  /**
   * A write needs `bytes` of Data-Out: `start` (which sends its R2Ts) runs now if they fit, or later
   * when they do. `key` identifies the write for progress() / release().
   */
  request(key: object, bytes: number, label: string, start: () => void): WriteAdmission {
    if (bytes > this.server.limits.total) return "too-large";
    if (this.queue.length === 0 && this.fits(bytes) === "fits") {
      this.admit(key, bytes, label);
      start();
      return "now";
    }
    this.queue.push({ key, bytes, label, start });
    this.server.markWaiting(this, true);
    this.server.stats.dataBudgetWaits++;
    this.updatePause();
    return "queued";
  }

  /** Has the write been admitted (may it be sent R2Ts)? */
  admitted(key: object): boolean {
    return this.reservations.has(key);
  }

  /** Data-Out arrived for the write (its timeout restarts); `complete`: all of it is in. */
  progress(key: object, complete: boolean): void {
    const r = this.reservations.get(key);
    if (!r) return;
    r.lastProgress = Date.now();
    if (complete) {
      r.collecting = false;
      this.updatePause();
    }
  }

  /** The write ended (answered, aborted or failed): its bytes are free. */
  release(key: object): void {
    const r = this.reservations.get(key);
    if (r) {
      this.reservations.delete(key);
      this.used -= r.bytes;
      this.server.used -= r.bytes;
      if (this.reservations.size === 0) this.stopTimer();
      this.server.released();
      this.updatePause();
      return;
    }
    const i = this.queue.findIndex((w) => w.key === key);
    if (i >= 0) {
      this.queue.splice(i, 1);
      if (this.queue.length === 0) this.server.markWaiting(this, false);
      this.updatePause();
    }
  }

  /** The connection is gone: everything it held or waited for is released. */
  close(): void {
    this.queue.length = 0;
    this.server.markWaiting(this, false);
    for (const key of [...this.reservations.keys()]) this.release(key);
    this.stopTimer();
  }

  /** @internal Admit waiting writes from the head of the queue while they fit. */
  admitWaiting(): "done" | "blocked-by-connection" | "blocked-by-total" {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const fit = this.fits(head.bytes);
      if (fit !== "fits") return fit;
      this.queue.shift();
      this.admit(head.key, head.bytes, head.label);
      head.start();
    }
    this.server.markWaiting(this, false);
    this.updatePause();
    return "done";
  }

  private fits(bytes: number): "fits" | "blocked-by-connection" | "blocked-by-total" {
    // A write larger than the per-connection budget may run alone, so it is never stuck for ever.
    if (this.used > 0 && this.used + bytes > this.server.limits.perConnection) return "blocked-by-connection";
    if (this.server.used + bytes > this.server.limits.total) return "blocked-by-total";
    return "fits";
  }

  private admit(key: object, bytes: number, label: string): void {
    this.reservations.set(key, { bytes, collecting: true, lastProgress: Date.now(), label });
    this.used += bytes;
    this.server.used += bytes;
    this.server.reserved();
    this.startTimer();
  }

  /** Not read while writes wait and none of its admitted writes still expects Data-Out on it. */
  private updatePause(): void {
    let collecting = false;
    for (const r of this.reservations.values()) if (r.collecting) collecting = true;
    const pause = this.queue.length > 0 && !collecting;
    if (pause === this.paused) return;
    this.paused = pause;
    if (pause) this.hooks.pause();
    else this.hooks.resume();
  }

  private startTimer(): void {
    if (this.timer) return;
    const timeoutMs = this.server.limits.dataOutTimeoutMs;
    this.timer = setInterval(
      () => {
        const now = Date.now();
        for (const r of this.reservations.values()) {
          if (r.collecting && now - r.lastProgress >= timeoutMs) {
            this.server.stats.dataOutTimeouts++;
            this.stopTimer();
            this.hooks.timedOut(`${r.label}: no Data-Out for ${Math.round(timeoutMs / 1000)} s`);
            return;
          }
        }
      },
      Math.max(50, Math.min(1000, timeoutMs / 4)),
    );
    this.timer.unref();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
