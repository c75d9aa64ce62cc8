/**
 * Serialises I/O on overlapping LBA ranges so that COMPARE AND WRITE is atomic towards every other
 * command touching its blocks (SBC-3 5.2: the compare and the write happen as one uninterrupted
 * operation). Readers share a range; writers hold it alone. Waiters are served in arrival order,
 * so a waiter never waits on a later arrival and there is no deadlock.
 *
 * Every READ and WRITE takes a hold, so the common case — nothing overlapping — allocates no promise:
 * a hold's `released()` promise is only made when a later conflicting hold asks for it.
 */

export class RangeHold {
  /** Undefined: the hold is granted now; otherwise it is granted when this resolves. */
  ready: Promise<void> | undefined = undefined;
  private ended = false;
  private waiters: (() => void)[] | undefined = undefined;

  constructor(
    readonly lba: number,
    /** First block after the range. */
    readonly end: number,
    readonly exclusive: boolean,
  ) {}

  /** Resolves once the hold is released. */
  released(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => (this.waiters ??= []).push(resolve));
  }

  finish(): void {
    this.ended = true;
    const w = this.waiters;
    this.waiters = undefined;
    if (w) for (const f of w) f();
  }
}

function allReleased(conflicts: readonly Promise<void>[]): Promise<void> {
  return conflicts.length === 1 ? conflicts[0]! : Promise.all(conflicts).then(() => undefined);
}

export class LbaRangeLock {
  private readonly holds: RangeHold[] = [];

  /**
   * Take [lba, lba+blocks) in arrival order: wait for `ready` (when set) before touching the blocks,
   * and give the hold back with release() exactly once, also when the wait was abandoned.
   */
  hold(lba: number, blocks: number, exclusive: boolean): RangeHold {
    const end = lba + Math.max(blocks, 1);
    let conflicts: Promise<void>[] | undefined;
    for (const h of this.holds) {
      if (h.lba < end && lba < h.end && (exclusive || h.exclusive)) (conflicts ??= []).push(h.released());
    }
    const hold = new RangeHold(lba, end, exclusive);
    this.holds.push(hold);
    if (conflicts) hold.ready = allReleased(conflicts);
    return hold;
  }

  release(hold: RangeHold): void {
    const i = this.holds.indexOf(hold);
    if (i >= 0) this.holds.splice(i, 1);
    hold.finish();
  }

  /** Acquire [lba, lba+blocks); resolves with the release function. */
  async acquire(lba: number, blocks: number, exclusive: boolean): Promise<() => void> {
    const hold = this.hold(lba, blocks, exclusive);
    if (hold.ready) await hold.ready;
    return () => this.release(hold);
  }
}
