/**
 * Per logical unit I/O counters, read by whoever wants them (the server's metrics endpoint): reads
 * and writes completed with GOOD status, their bytes (the CDB's transfer length) and a latency
 * histogram from the task's arrival at the LU to its completion (task set wait included, as an
 * initiator sees it), and the commands in flight. Plain numbers in fixed arrays: nothing is
 * allocated per command.
 */
import { Op } from "./cdb.js";

/** Upper bounds of the latency buckets in seconds (Prometheus `le`), 50 µs to 5 s. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

export class IoCounters {
  ops = 0;
  bytes = 0;
  latencySumSeconds = 0;
  /** Non-cumulative counts per bucket; the last one counts what is above every bound. */
  readonly buckets = new Float64Array(LATENCY_BUCKETS_SECONDS.length + 1);

  record(bytes: number, seconds: number): void {
    this.ops++;
    this.bytes += bytes;
    this.latencySumSeconds += seconds;
    let i = 0;
    while (i < LATENCY_BUCKETS_SECONDS.length && seconds > LATENCY_BUCKETS_SECONDS[i]) i++;
    this.buckets[i]++;
  }
}

export type IoDirection = "read" | "write" | "other";

/** SBC-4's READ and WRITE commands (WRITE AND VERIFY writes too). */
export function ioDirectionOf(opcode: number): IoDirection {
  switch (opcode) {
    case Op.Read6:
    case Op.Read10:
    case Op.Read12:
    case Op.Read16:
      return "read";
    case Op.Write6:
    case Op.Write10:
    case Op.Write12:
    case Op.Write16:
    case Op.WriteAndVerify10:
    case Op.WriteAndVerify12:
    case Op.WriteAndVerify16:
      return "write";
    default:
      return "other";
  }
}

export class LunStats {
  readonly read = new IoCounters();
  readonly write = new IoCounters();
  /** Commands received and not yet completed (the LU's queue depth). */
  inFlight = 0;
}
