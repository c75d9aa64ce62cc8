/**
 * The I/O engine under the AIO block device and the TCMUR file handler: positioned vectored reads
 * and writes, and fdatasync, on a file descriptor.
 *
 * Two engines: io_uring (native/uring_engine.c: submitted and reaped on the event loop, no thread
 * hand-off per request) and the libuv thread pool (what Node's fs does). The process picks one at
 * the first open and logs it: io_uring when the addon was built with liburing and the kernel allows
 * a ring, else the thread pool. USERTGT_IO_ENGINE=threadpool (or io_uring) forces the choice.
 */
import { log } from "../util/log.js";
import type { IoEngine, IoEngineName } from "./io_engine.js";
import { ThreadpoolEngine } from "./threadpool.js";
import { UringEngine } from "./uring.js";

export type { IoEngine, IoEngineName } from "./io_engine.js";

let chosen: IoEngine | undefined;
let threadpool: ThreadpoolEngine | undefined;

function threadpoolEngine(): ThreadpoolEngine {
  threadpool ??= new ThreadpoolEngine();
  return threadpool;
}

/**
 * The process's engine, chosen at the first call. `prefer` (or USERTGT_IO_ENGINE) forces one; a
 * forced io_uring that cannot start is an error, an unforced one falls back to the thread pool.
 */
export function ioEngine(prefer?: IoEngineName): IoEngine {
  const want = prefer ?? parseEngineName(process.env.USERTGT_IO_ENGINE);
  if (want === "threadpool") {
    if (!chosen) {
      chosen = threadpoolEngine();
      log.child({ module: "io-engine" }).info({ engine: "threadpool" }, "I/O engine: thread pool (forced)");
    }
    return threadpoolEngine();
  }
  if (chosen?.name === "io_uring") return chosen;
  if (chosen && want === undefined) return chosen;
  const started = UringEngine.start();
  if (started instanceof UringEngine) {
    chosen = started;
    log
      .child({ module: "io-engine" })
      .info({ engine: "io_uring", completions: started.completionMode }, "I/O engine: io_uring");
    return chosen;
  }
  if (want === "io_uring") throw new Error(`I/O engine io_uring requested but unavailable: ${started}`);
  chosen = threadpoolEngine();
  log
    .child({ module: "io-engine" })
    .info(
      { engine: "threadpool", reason: started },
      `I/O engine: thread pool (io_uring unavailable: ${started})`,
    );
  return chosen;
}

function parseEngineName(v: string | undefined): IoEngineName | undefined {
  if (v === undefined || v === "") return undefined;
  if (v === "io_uring" || v === "threadpool") return v;
  throw new Error(`USERTGT_IO_ENGINE=${v}: expected io_uring or threadpool`);
}
