/**
 * A rate limit on log lines a remote peer can cause. Every malformed PDU, refused login or dropped
 * connection is worth one line, but an attacker repeating them could fill the disk; so each source
 * (an IP address) gets `perWindow` lines per `windowMs`, and all sources together `totalPerWindow`
 * (an attacker with many addresses); whatever is caused beyond that is counted and reported in one
 * line when the source's next window opens.
 */
import type { Logger } from "./log.js";

const LIMITED_LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);
/** Sources tracked at once; beyond this all new sources share one budget (memory stays bounded). */
const MAX_SOURCES = 4096;
const SHARED_SOURCE = "*";

interface SourceWindow {
  start: number;
  lines: number;
  suppressed: number;
}

export class LogRateLimiter {
  private readonly sources = new Map<string, SourceWindow>();
  private readonly total: SourceWindow = { start: 0, lines: 0, suppressed: 0 };

  constructor(
    private readonly perWindow = 20,
    private readonly windowMs = 10_000,
    private readonly totalPerWindow = 200,
    /** Told about every suppressed line (the target counts them in its stats). */
    private readonly onSuppressed: () => void = () => undefined,
  ) {}

  /** May `source` log one more line now? Reports, through `logger`, what its last window suppressed. */
  allow(source: string, logger: Logger): boolean {
    const now = Date.now();
    const w = this.window(source, now);
    if (now - w.start >= this.windowMs) {
      if (w.suppressed > 0) {
        logger.warn(
          { source, suppressed: w.suppressed },
          `${w.suppressed} log lines caused by ${source} were suppressed (more than ${this.perWindow} per ${this.windowMs / 1000}s)`,
        );
      }
      w.start = now;
      w.lines = 0;
      w.suppressed = 0;
    }
    if (now - this.total.start >= this.windowMs) {
      this.total.start = now;
      this.total.lines = 0;
    }
    if (w.lines < this.perWindow && this.total.lines < this.totalPerWindow) {
      w.lines++;
      this.total.lines++;
      return true;
    }
    w.suppressed++;
    this.onSuppressed();
    return false;
  }

  private window(source: string, now: number): SourceWindow {
    let w = this.sources.get(source);
    if (w) return w;
    if (this.sources.size >= MAX_SOURCES) {
      for (const [key, old] of this.sources) {
        if (now - old.start >= this.windowMs && old.suppressed === 0) this.sources.delete(key);
      }
      if (this.sources.size >= MAX_SOURCES) source = SHARED_SOURCE;
      w = this.sources.get(source);
      if (w) return w;
    }
    w = { start: now, lines: 0, suppressed: 0 };
    this.sources.set(source, w);
    return w;
  }

  /** `logger`, with every line (and every child's) counted against `source`. */
  wrap(logger: Logger, source: string): Logger {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const limiter = this;
    return new Proxy(logger, {
      get(target, prop) {
        if (prop === "child") {
          return (bindings: Record<string, unknown>) => limiter.wrap(target.child(bindings), source);
        }
        if (typeof prop === "string" && LIMITED_LEVELS.has(prop)) {
          const level = prop as "trace" | "debug" | "info" | "warn" | "error";
          const write = target[level].bind(target) as (...a: unknown[]) => void;
          return (...args: unknown[]) => {
            if (target.isLevelEnabled(level) && limiter.allow(source, target)) write(...args);
          };
        }
        return Reflect.get(target, prop) as unknown;
      },
    });
  }
}
