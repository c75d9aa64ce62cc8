/**
 * Group commit for FUA writes to a buffered regular file: each write goes to the page cache alone,
 * then asks for a sync, and writes that ask while one fdatasync runs share the next one.
 *
 * The durability rule (SBC-3 4.11: FUA data is on the medium before the command completes):
 * a write is acknowledged only after an fdatasync that *started after the write completed* has
 * finished. fdatasync writes back what was dirty when it started; a page dirtied while it runs may
 * or may not be in it. So a caller that asks while a sync is running waits for that one and the
 * next, which starts once the running one has finished; every caller that asked in between shares
 * it. At most one fdatasync is in flight per file, and the waiters are bounded by the writes in
 * flight.
 */
interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

export class GroupCommit {
  private running = false;
  /** Callers waiting for the next fdatasync (none has started since they asked). */
  private next: Waiter[] = [];
  private startQueued = false;

  constructor(private readonly datasync: () => Promise<void>) {}

  /** Resolves once an fdatasync that started after this call has finished. */
  sync(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.next.push({ resolve, reject });
      this.queueStart();
    });
  }

  /**
   * Start in a microtask: the writes completed in one batch resume one after another in the same
   * microtask checkpoint, and all of them ask before the fdatasync is issued.
   */
  private queueStart(): void {
    if (this.running || this.startQueued) return;
    this.startQueued = true;
    queueMicrotask(() => {
      this.startQueued = false;
      this.start();
    });
  }

  private start(): void {
    if (this.running || this.next.length === 0) return;
    const batch = this.next;
    this.next = [];
    this.running = true;
    this.datasync().then(
      () => this.finish(batch, undefined, true),
      (err: unknown) => this.finish(batch, err, false),
    );
  }

  private finish(batch: Waiter[], err: unknown, ok: boolean): void {
    this.running = false;
    for (const w of batch) {
      if (ok) w.resolve();
      else w.reject(err);
    }
    if (this.next.length > 0) this.queueStart();
  }
}
