/**
 * The generic bdev layer's per-device accounting and QoS (SPDK lib/bdev/bdev.c: spdk_bdev_io_stat,
 * bdev_qos): every consumer (each LUN backed by the device) uses one AccountedBdev in front of the
 * module's device, so counters and limits are per block device whatever its users.
 *
 * Counters are SPDK's bdev_get_iostat fields; latencies are kept in ticks of `TICK_RATE` per second
 * (nanoseconds). QoS is SPDK's: limits per second enforced in timeslices of 1 ms; an I/O over the
 * slice's allowance waits, in arrival order, for a later slice. The wait queue is bounded by the
 * callers (each session's CmdSN window bounds the commands a LUN can have in flight).
 */
import { performance } from "node:perf_hooks";
import type { BlockDevice, WriteOptions } from "./bdev.js";
import { iovLength } from "./bdev.js";

/** Ticks per second of the latency counters (SPDK reports its TSC rate; ours are nanoseconds). */
export const TICK_RATE = 1_000_000_000;

/** SPDK_BDEV_QOS_TIMESLICE_IN_USEC: allowances are handed out per 1 ms. */
const TIMESLICE_MS = 1;

function nowTicks(): number {
  return Math.round(performance.now() * 1e6);
}

/** One operation kind's counters, as spdk_bdev_io_stat. */
export class OpStat {
  bytes = 0;
  ops = 0;
  latencyTicks = 0;
  maxLatencyTicks = 0;
  minLatencyTicks = 0;

  /** SPDK's reset modes: "all" clears everything, "maxmin" only the extremes. */
  reset(mode: "all" | "maxmin"): void {
    if (mode === "all") {
      this.bytes = 0;
      this.ops = 0;
      this.latencyTicks = 0;
    }
    this.maxLatencyTicks = 0;
    this.minLatencyTicks = 0;
  }

  done(bytes: number, ticks: number): void {
    this.bytes += bytes;
    this.ops++;
    this.latencyTicks += ticks;
    if (ticks > this.maxLatencyTicks) this.maxLatencyTicks = ticks;
    if (this.minLatencyTicks === 0 || ticks < this.minLatencyTicks) this.minLatencyTicks = ticks;
  }
}

/** Limits per second; 0 = none (SPDK's bdev_set_qos_limit). */
export interface QosLimits {
  readonly rwIosPerSec: number;
  readonly rwMbytesPerSec: number;
  readonly rMbytesPerSec: number;
  readonly wMbytesPerSec: number;
}

export const NO_QOS: QosLimits = { rwIosPerSec: 0, rwMbytesPerSec: 0, rMbytesPerSec: 0, wMbytesPerSec: 0 };

type Dir = "read" | "write" | "other";

interface Waiter {
  readonly dir: Dir;
  readonly bytes: number;
  readonly go: () => void;
}

/** SPDK's bdev_qos: per-timeslice allowances for IOPS and bytes, read-only and write-only bytes. */
class Qos {
  private ios = 0;
  private rwBytes = 0;
  private rBytes = 0;
  private wBytes = 0;
  private sliceEnd = 0;
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly limits: QosLimits) {}

  private refill(now: number): void {
    if (now < this.sliceEnd) return;
    const perSlice = (perSec: number): number => (perSec * TIMESLICE_MS) / 1000;
    // Whole slices that passed: unused allowance does not pile up (SPDK resets each slice).
    this.ios = perSlice(this.limits.rwIosPerSec);
    this.rwBytes = perSlice(this.limits.rwMbytesPerSec * 1024 * 1024);
    this.rBytes = perSlice(this.limits.rMbytesPerSec * 1024 * 1024);
    this.wBytes = perSlice(this.limits.wMbytesPerSec * 1024 * 1024);
    this.sliceEnd = now + TIMESLICE_MS;
  }

  /** Over the allowance? An I/O may take the allowance below zero (SPDK lets one I/O overdraw). */
  private blocked(dir: Dir): boolean {
    const l = this.limits;
    if (l.rwIosPerSec > 0 && this.ios <= 0) return true;
    if (l.rwMbytesPerSec > 0 && this.rwBytes <= 0) return true;
    if (dir === "read" && l.rMbytesPerSec > 0 && this.rBytes <= 0) return true;
    if (dir === "write" && l.wMbytesPerSec > 0 && this.wBytes <= 0) return true;
    return false;
  }

  private take(dir: Dir, bytes: number): void {
    this.ios--;
    this.rwBytes -= bytes;
    if (dir === "read") this.rBytes -= bytes;
    if (dir === "write") this.wBytes -= bytes;
  }

  /** Resolves when the I/O may start. */
  admit(dir: Dir, bytes: number): Promise<void> | undefined {
    this.refill(performance.now());
    if (this.queue.length === 0 && !this.blocked(dir)) {
      this.take(dir, bytes);
      return undefined;
    }
    return new Promise((go) => {
      this.queue.push({ dir, bytes, go });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.refill(performance.now());
      while (this.queue.length > 0 && !this.blocked(this.queue[0]!.dir)) {
        const w = this.queue.shift()!;
        this.take(w.dir, w.bytes);
        w.go();
      }
      if (this.queue.length > 0) this.schedule();
    }, TIMESLICE_MS);
  }

  /** Limits removed or changed: whoever waits goes now (the new Qos, if any, counts from here). */
  release(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.queue.splice(0)) w.go();
  }
}

export class AccountedBdev implements BlockDevice {
  readonly read = new OpStat();
  readonly write = new OpStat();
  readonly unmapStat = new OpStat();
  /** I/O that failed (SPDK's io_error counts, summed). */
  ioErrors = 0;
  private qos: Qos | undefined;

  constructor(readonly inner: BlockDevice) {}

  get name(): string {
    return this.inner.name;
  }
  get productName(): string {
    return this.inner.productName;
  }
  get blockSize(): number {
    return this.inner.blockSize;
  }
  get blockCount(): number {
    return this.inner.blockCount;
  }
  get uuid(): string {
    return this.inner.uuid;
  }
  get volatileWriteCache(): boolean {
    return this.inner.volatileWriteCache;
  }
  get supportsUnmap(): boolean {
    return this.inner.supportsUnmap;
  }
  get unmapReadsZeroes(): boolean {
    return this.inner.unmapReadsZeroes;
  }

  /** bdev_reset_iostat / bdev_get_iostat reset_mode (SPDK's spdk_bdev_reset_io_stat modes). */
  resetStats(mode: "all" | "maxmin" | "error"): void {
    if (mode !== "error") for (const s of [this.read, this.write, this.unmapStat]) s.reset(mode);
    if (mode !== "maxmin") this.ioErrors = 0;
  }

  get qosLimits(): QosLimits {
    return this.qos?.limits ?? NO_QOS;
  }

  setQos(limits: QosLimits): void {
    this.qos?.release();
    const any = limits.rwIosPerSec || limits.rwMbytesPerSec || limits.rMbytesPerSec || limits.wMbytesPerSec;
    this.qos = any ? new Qos(limits) : undefined;
  }

  // Each method spelled out (no closure per I/O): wait for QoS, time the module's I/O, count it.
  // A failure is counted (io_error) and passed on unchanged: the SCSI layer builds its sense data.

  private admit(dir: Dir, bytes: number): Promise<void> | undefined {
    return this.qos?.admit(dir, bytes);
  }

  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    const bytes = iovLength(iov);
    await this.admit("read", bytes);
    const start = nowTicks();
    try {
      await this.inner.readv(lba, iov);
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
    this.read.done(bytes, nowTicks() - start);
  }

  async writev(lba: number, iov: readonly Buffer[], options?: WriteOptions): Promise<void> {
    const bytes = iovLength(iov);
    await this.admit("write", bytes);
    const start = nowTicks();
    try {
      await this.inner.writev(lba, iov, options);
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
    this.write.done(bytes, nowTicks() - start);
  }

  async flush(): Promise<void> {
    await this.admit("other", 0);
    try {
      await this.inner.flush();
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    const bytes = blocks * this.blockSize;
    await this.admit("other", bytes);
    const start = nowTicks();
    try {
      await this.inner.unmap(lba, blocks);
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
    this.unmapStat.done(bytes, nowTicks() - start);
  }

  async writeZeroes(lba: number, blocks: number): Promise<void> {
    const bytes = blocks * this.blockSize;
    await this.admit("write", bytes);
    const start = nowTicks();
    try {
      await this.inner.writeZeroes(lba, blocks);
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
    this.write.done(bytes, nowTicks() - start);
  }

  /** The module's device is closed by its owner (the server), never through a consumer. */
  async close(): Promise<void> {
    this.qos?.release();
  }
}
