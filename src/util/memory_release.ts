/**
 * Giving memory back to the kernel after a burst. Buffers freed by the program stay in V8 until a
 * garbage collection finds them, and the socket-read buffers behind them stay in glibc's malloc
 * arenas afterwards; an idle server does neither on its own, so its RSS would stay at the peak of
 * the last burst. After a large write-data budget drains (data_budget.ts) this runs one full
 * collection and glibc's malloc_trim (the native helper; skipped when it is not built). Rare by
 * design: at most once per `minIntervalMs`.
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

interface TrimHelper {
  mallocTrim(): boolean;
}

let collect: (() => void) | null | undefined;
let trim: TrimHelper | null | undefined;
let timer: NodeJS.Timeout | undefined;
let lastRun = 0;

function fullCollection(): (() => void) | null {
  if (collect !== undefined) return collect;
  try {
    // V8 only offers gc() to code when --expose-gc is set; setting it now makes a fresh context get it.
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  } catch {
    collect = null;
  }
  return collect;
}

function trimHelper(): TrimHelper | null {
  if (trim !== undefined) return trim;
  try {
    // dist/src/util/memory_release.js → the package root is three levels up.
    const mod = createRequire(import.meta.url)(
      fileURLToPath(new URL("../../../native/build/Release/usertgt_native.node", import.meta.url)),
    ) as Partial<TrimHelper> | undefined;
    trim = typeof mod?.mallocTrim === "function" ? (mod as TrimHelper) : null;
  } catch {
    trim = null;
  }
  return trim;
}

/** Ask for a collection and a trim soon (after the caller has dropped its references). */
export function scheduleMemoryRelease(delayMs = 200, minIntervalMs = 2000): void {
  if (timer) return;
  const wait = Math.max(delayMs, lastRun + minIntervalMs - Date.now());
  timer = setTimeout(() => {
    timer = undefined;
    lastRun = Date.now();
    fullCollection()?.();
    // V8 frees ArrayBuffer backing stores on a background thread after the collection: trim once that
    // has had time to run, and once more later for stragglers.
    for (const after of [300, 2000]) setTimeout(() => trimHelper()?.mallocTrim(), after).unref();
  }, wait);
  timer.unref();
}
