/**
 * Pin the server to CPUs, as SPDK pins its reactors to `-m` / `[Global] ReactorMask`. usertgt's
 * event loop is its one reactor; its helper threads (libuv's pool, V8's, io_uring's io-wq workers,
 * librbd's) get the same set, so the whole process stays on the CPUs an admin gave it and leaves
 * the rest to, say, a Ceph OSD on the same host.
 */
import { nativeAddon } from "../io_engine/native.js";
import { formatCpuList, parseCpuMask } from "../util/cpu_mask.js";

interface AffinityAddon {
  setCpuAffinity(cpus: readonly number[]): number;
  getCpuAffinity(): number[];
}

export interface CpuMaskSetting {
  readonly text: string;
  readonly cpus: readonly number[];
  /** Where the mask came from, for the log: `-m/--cpumask` or `FILE:LINE: ReactorMask`. */
  readonly where: string;
  /** The error to throw for a mask that cannot be applied (a ConfigError naming the line). */
  readonly error: (message: string) => Error;
}

function optionError(message: string): Error {
  return new UsageError(`-m/--cpumask: ${message}`);
}

/** A bad command-line option: the CLI exits 2 for it, as for a config error. */
export class UsageError extends Error {}

/** `-m MASK` on the command line: parsed here, so a bad mask is named as the option's. */
export function cpuMaskOption(text: string): CpuMaskSetting {
  try {
    return { text, cpus: parseCpuMask(text), where: "-m/--cpumask", error: optionError };
  } catch (err) {
    throw optionError((err as Error).message);
  }
}

/**
 * Restrict every thread of the process to the mask's CPUs. Throws, naming the setting, when the
 * mask names a CPU the process may not use (offline, or outside the cpuset or taskset it was started
 * in) or the native addon is missing. Returns the line to log.
 */
export function applyCpuAffinity(mask: CpuMaskSetting): string {
  const addon = nativeAddon() as Partial<AffinityAddon> | null;
  if (typeof addon?.setCpuAffinity !== "function" || typeof addon.getCpuAffinity !== "function") {
    throw mask.error("pinning to CPUs needs the native addon (npm ci builds it)");
  }
  const allowed = addon.getCpuAffinity();
  const outside = mask.cpus.filter((c) => !allowed.includes(c));
  if (outside.length > 0) {
    throw mask.error(
      `CPU mask "${mask.text}" names CPU ${formatCpuList(outside)}, which this process may not run on ` +
        `(allowed: ${formatCpuList(allowed)})`,
    );
  }
  const rc = addon.setCpuAffinity(mask.cpus);
  if (rc < 0) throw mask.error(`sched_setaffinity failed (errno ${-rc})`);
  return `CPU affinity: CPUs ${formatCpuList(mask.cpus)} (${mask.where} ${mask.text})`;
}
