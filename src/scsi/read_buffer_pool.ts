/**
 * Buffers for READ data, reused instead of allocated per command. A fresh multi-KiB Buffer per read
 * is an external allocation each time; at tens of thousands of reads per second V8 answers the
 * external-memory pressure with a mark-compact every few dozen milliseconds (about a quarter of the
 * target's CPU for 32 KiB reads). A transport that knows when its socket has taken the data hands
 * the buffer back (ScsiTask.releaseDataIn) and the next read of that size class reuses it.
 *
 * Bounded: at most `capacityBytes` are kept while idle; buffers beyond that, larger than the
 * biggest size class, or never handed back are left to the garbage collector. A buffer is only
 * ever handed out again after its holder gave it back, so one that is lost is never reused.
 */

/** Smallest size class: below this, Buffer.allocUnsafe cuts requests from Node's shared slab anyway. */
const MIN_CLASS_SHIFT = 12; // 4 KiB
/** Largest size class; larger reads get a buffer of their own each time. */
const MAX_CLASS_SHIFT = 20; // 1 MiB

export class ReadBufferPool {
  /** Free buffers by size class (index = log2(size) - MIN_CLASS_SHIFT), used as stacks. */
  private readonly free: Buffer[][] = [];
  private idleBytes = 0;
  /** Counters for tests and the curious: buffers allocated, reused, dropped on return. */
  allocated = 0;
  reused = 0;
  dropped = 0;

  constructor(
    /** The most bytes kept while idle (e.g. QueueDepth × MaxBurstLength). */
    readonly capacityBytes: number,
    /**
     * Makes a class's buffer (a Buffer of exactly `bytes`, over memory of its own): e.g. page-aligned
     * memory, so that an O_DIRECT read fills it without a bounce copy. Default Buffer.allocUnsafeSlow.
     */
    private readonly allocate: (bytes: number) => Buffer = Buffer.allocUnsafeSlow,
  ) {
    for (let s = MIN_CLASS_SHIFT; s <= MAX_CLASS_SHIFT; s++) this.free.push([]);
  }

  /**
   * A buffer of at least `bytes` bytes: a whole size-class buffer (cut it to length with subarray),
   * or one of exactly `bytes` when no class fits. Give the returned buffer itself back, not a slice.
   */
  take(bytes: number): Buffer {
    const cls = classOf(bytes);
    if (cls < 0) return Buffer.allocUnsafe(bytes);
    const stack = this.free[cls]!;
    const buf = stack.pop();
    if (buf) {
      this.idleBytes -= buf.length;
      this.reused++;
      return buf;
    }
    this.allocated++;
    // Its own ArrayBuffer (not a slice of Node's shared slab), so give() can recognise it.
    return this.allocate(1 << (cls + MIN_CLASS_SHIFT));
  }

  /**
   * Hand back a buffer from take() that nothing reads or writes any more: no socket write still
   * pending on it, no device I/O still filling it. Anything not from take() is ignored.
   */
  give(buf: Buffer): void {
    const cls = classOf(buf.length);
    if (cls < 0 || buf.length !== 1 << (cls + MIN_CLASS_SHIFT)) return;
    if (buf.byteOffset !== 0 || buf.buffer.byteLength !== buf.length) return;
    if (this.idleBytes + buf.length > this.capacityBytes) {
      this.dropped++;
      return;
    }
    this.free[cls]!.push(buf);
    this.idleBytes += buf.length;
  }

  /** Bytes kept for reuse now. */
  get idle(): number {
    return this.idleBytes;
  }
}

/** Index of the smallest class holding `bytes`, or -1 when none does (too small or too large). */
function classOf(bytes: number): number {
  if (bytes < 1 << MIN_CLASS_SHIFT || bytes > 1 << MAX_CLASS_SHIFT) return -1;
  return 32 - Math.clz32(bytes - 1) - MIN_CLASS_SHIFT;
}
