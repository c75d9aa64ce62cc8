/**
 * Resync speed and ETA from the out-of-sync amount over time, as drbdsetup status --statistics and
 * /proc/drbd's "speed:" / "finish:" show them: the bytes that became in sync over the recent window
 * divided by its length. Samples are taken whenever someone asks (a status, a scrape, wait-sync's
 * poll), at most one per second is kept, and only the last WINDOW_MS: memory stays bounded.
 */
const WINDOW_MS = 30_000;
const MAX_SAMPLES = 64;

export interface ResyncRate {
  /** Bytes per second over the window (0 until two samples exist). */
  readonly bytesPerSecond: number;
  /** Seconds until the out-of-sync amount reaches 0 at that speed; undefined when not moving. */
  readonly etaSeconds: number | undefined;
}

export class ResyncProgress {
  private readonly samples: { atMs: number; outOfSyncBytes: number }[] = [];

  /** Record the out-of-sync amount now; `running` false (no resync) forgets the history. */
  sample(outOfSyncBytes: number, running: boolean, nowMs = Date.now()): ResyncRate {
    if (!running) {
      this.samples.length = 0;
      return { bytesPerSecond: 0, etaSeconds: undefined };
    }
    const last = this.samples.at(-1);
    // A rise means a new resync round (or new out-of-sync writes on a Primary): start over.
    if (last && outOfSyncBytes > last.outOfSyncBytes) this.samples.length = 0;
    if (!last || nowMs - last.atMs >= 1000 || this.samples.length === 0)
      this.samples.push({ atMs: nowMs, outOfSyncBytes });
    while (
      this.samples.length > MAX_SAMPLES ||
      (this.samples.length > 2 && nowMs - this.samples[0].atMs > WINDOW_MS)
    )
      this.samples.shift();
    const first = this.samples[0];
    const seconds = (nowMs - first.atMs) / 1000;
    if (seconds <= 0) return { bytesPerSecond: 0, etaSeconds: undefined };
    const bytesPerSecond = Math.max(0, (first.outOfSyncBytes - outOfSyncBytes) / seconds);
    return {
      bytesPerSecond,
      etaSeconds: bytesPerSecond > 0 ? outOfSyncBytes / bytesPerSecond : undefined,
    };
  }
}
