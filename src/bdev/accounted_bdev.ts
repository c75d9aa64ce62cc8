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

/**
 * SPDK's bdev_qos: per-timeslice allowances for IOPS, bytes, read bytes and write bytes. An I/O may
 * overdraw an allowance; the overrun is paid back from the following slices (bdev_channel_poll_qos),
 * so a 1 MB/s limit holds for 4 KiB writes as for 512-byte ones. Unused allowance never piles up
 * beyond one slice.
 */
class Qos {
  /** Remaining this slice: IOPS, rw bytes, read bytes, write bytes. */
  private readonly remaining = [0, 0, 0, 0];
  private readonly perSlice: readonly number[];
  private lastSlice = -Infinity;
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly limits: QosLimits) {
    const mib = 1024 * 1024;
    const slice = (perSec: number): number => (perSec * TIMESLICE_MS) / 1000;
    this.perSlice = [
      slice(limits.rwIosPerSec),
      slice(limits.rwMbytesPerSec * mib),
      slice(limits.rMbytesPerSec * mib),
      slice(limits.wMbytesPerSec * mib),
    ];
  }

  private refill(now: number): void {
    const slices = Math.floor((now - this.lastSlice) / TIMESLICE_MS);
    if (slices < 1) return;
    this.lastSlice = Number.isFinite(this.lastSlice) ? this.lastSlice + slices * TIMESLICE_MS : now;
    for (let i = 0; i < 4; i++) {
      const per = this.perSlice[i]!;
      this.remaining[i] = Math.min(Math.min(this.remaining[i]!, 0) + slices * per, per);
    }
  }

  /** Does any limit that applies to this direction have nothing left this slice? */
  private blocked(dir: Dir): boolean {
    const [ios, rw, r, w] = this.remaining as [number, number, number, number];
    const per = this.perSlice;
    if (per[0]! > 0 && ios <= 0) return true;
    if (per[1]! > 0 && rw <= 0) return true;
    if (dir === "read" && per[2]! > 0 && r <= 0) return true;
    if (dir === "write" && per[3]! > 0 && w <= 0) return true;
    return false;
  }

  private take(dir: Dir, bytes: number): void {
    this.remaining[0]!--;
    this.remaining[1]! -= bytes;
    if (dir === "read") this.remaining[2]! -= bytes;
    if (dir === "write") this.remaining[3]! -= bytes;
  }

  /** Undefined: the I/O may start now; otherwise a promise that resolves when it may. */
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

  /** The module's own (atomic) COMPARE AND WRITE, when it has one; counted as a write. */
  readonly compareAndWrite?: (lba: number, compare: Buffer, write: Buffer) => Promise<number>;
  /** The module's own WRITE SAME, when it has one; counted as a write. */
  readonly writeSame?: (lba: number, blocks: number, pattern: Buffer) => Promise<void>;
  /** Resize events of the module's device (e.g. a Ceph image resized while exported). */
  readonly onResize?: (listener: (blockCount: number) => void) => void;

  constructor(readonly inner: BlockDevice) {
    if (inner.compareAndWrite) this.compareAndWrite = (lba, c, w) => this.innerCompareAndWrite(lba, c, w);
    if (inner.writeSame) this.writeSame = (lba, blocks, p) => this.innerWriteSame(lba, blocks, p);
    if (inner.onResize) this.onResize = (listener) => inner.onResize!(listener);
  }

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
  // The geometry a block device reports (VPD B0h/B1h, READ CAPACITY(16)) passes through unchanged.
  get physicalBlockSize(): number | undefined {
    return this.inner.physicalBlockSize;
  }
  get optimalTransferBytes(): number | undefined {
    return this.inner.optimalTransferBytes;
  }
  get maxRequestBytes(): number | undefined {
    return this.inner.maxRequestBytes;
  }
  get rotational(): boolean | undefined {
    return this.inner.rotational;
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

  async readv(lba: number, iov: readonly Buffer[]): Promise<void> {
    const bytes = iovLength(iov);
    const wait = this.qos?.admit("read", bytes);
    if (wait) await wait; // no await (no microtask turn) when nothing limits
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
    const wait = this.qos?.admit("write", bytes);
    if (wait) await wait; // no await (no microtask turn) when nothing limits
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
    const wait = this.qos?.admit("other", 0);
    if (wait) await wait; // no await (no microtask turn) when nothing limits
    try {
      await this.inner.flush();
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
  }

  async unmap(lba: number, blocks: number): Promise<void> {
    const bytes = blocks * this.blockSize;
    const wait = this.qos?.admit("other", bytes);
    if (wait) await wait; // no await (no microtask turn) when nothing limits
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
    const wait = this.qos?.admit("write", bytes);
    if (wait) await wait; // no await (no microtask turn) when nothing limits
    const start = nowTicks();
    try {
      await this.inner.writeZeroes(lba, blocks);
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
    this.write.done(bytes, nowTicks() - start);
  }

  private async innerCompareAndWrite(lba: number, compare: Buffer, write: Buffer): Promise<number> {
    const wait = this.qos?.admit("write", write.length);
    if (wait) await wait;
    const start = nowTicks();
    let at: number;
    try {
      at = await this.inner.compareAndWrite!(lba, compare, write);
    } catch (err) {
      this.ioErrors++;
      throw err;
    }
    this.write.done(write.length, nowTicks() - start);
    return at;
  }

  private async innerWriteSame(lba: number, blocks: number, pattern: Buffer): Promise<void> {
    const bytes = blocks * this.blockSize;
    const wait = this.qos?.admit("write", bytes);
    if (wait) await wait;
    const start = nowTicks();
    try {
      await this.inner.writeSame!(lba, blocks, pattern);
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
