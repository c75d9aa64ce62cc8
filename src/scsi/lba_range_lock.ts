/**
 * Serialises I/O on overlapping LBA ranges so that COMPARE AND WRITE is atomic towards every other
 * command touching its blocks (SBC-3 5.2: the compare and the write happen as one uninterrupted
 * operation). Readers share a range; writers hold it alone. Waiters are served in arrival order,
 * so a waiter never waits on a later arrival and there is no deadlock.
 */

interface Hold {
  readonly lba: number;
  readonly end: number;
  readonly exclusive: boolean;
  readonly released: Promise<void>;
}

export class LbaRangeLock {
  private readonly holds: Hold[] = [];

  /** Acquire [lba, lba+blocks); resolves with the release function. */
  async acquire(lba: number, blocks: number, exclusive: boolean): Promise<() => void> {
    const end = lba + Math.max(blocks, 1);
    const conflicts = this.holds.filter((h) => h.lba < end && lba < h.end && (exclusive || h.exclusive));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const hold: Hold = { lba, end, exclusive, released };
    this.holds.push(hold);
    if (conflicts.length > 0) await Promise.all(conflicts.map((h) => h.released));
    return () => {
      const i = this.holds.indexOf(hold);
      if (i >= 0) this.holds.splice(i, 1);
      release();
    };
  }
}
