/**
 * A task's end that others may wait for. Most tasks end without anybody waiting (only a logout, a task
 * management function or an ORDERED task does), so the promise is made only when someone asks.
 */
export class Completion {
  private ended = false;
  private donePromise: Promise<void> | undefined = undefined;
  private resolveDone: (() => void) | undefined = undefined;

  /** Settles once finish() was called (at once if it already was). */
  get done(): Promise<void> {
    if (!this.donePromise) {
      this.donePromise = this.ended
        ? Promise.resolve()
        : new Promise<void>((resolve) => (this.resolveDone = resolve));
    }
    return this.donePromise;
  }

  finish(): void {
    this.ended = true;
    this.resolveDone?.();
  }
}
