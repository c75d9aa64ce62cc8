/**
 * The Secondary's receive buffers for P_DATA (drbd_receiver.c drbd_alloc_pages / read_in_block, the
 * kernel's drbd_pp_pool): net { max-buffers } pages of 4 KiB, allocated once per connection on first use
 * and reused. A received write's data is copied once, out of the socket reads it arrived in, into pages
 * taken here; the lower device writes those pages as an I/O vector, and they come back when the write
 * completed.
 *
 * Why a copy rather than writing the socket reads themselves: a socket read is a fresh ArrayBuffer, and one
 * held for the duration of a disk write outlives a scavenge, is promoted, and is only freed by a
 * mark-compact, whose frequency V8 ties to the external memory allocated since the last one. At 100+ MB/s of
 * replicated writes that was a mark-compact every ~100 ms and more than half of the Secondary's CPU. With
 * the pages, the reads die young and the pages are never garbage. (The data socket now reads into a buffer
 * of its own, owned_reads.ts, so there is no per-read ArrayBuffer left either.)
 *
 * Bounded: the pages are all there is. A write that finds too few free pages (or is larger than all of
 * them) keeps a copy of its data instead, and the receiver stops reading the socket until pages are free
 * (drbd_alloc_pages waits in the kernel).
 */
import { alignedBufferAllocator } from "../io_engine/native.js";

export const RECEIVE_PAGE = 4096;

export class ReceivePages {
  /** One view per page, made once. */
  private readonly views: Buffer[] = [];
  /** Free page numbers, used as a stack. */
  private readonly freeList: number[] = [];
  private slab: Buffer | undefined;

  constructor(
    /** Pages (net { max-buffers }). */
    readonly count: number,
    /** Allocates the slab; page-aligned when the native addon can (O_DIRECT writes need no bounce then). */
    private readonly allocate: (bytes: number) => Buffer = alignedBufferAllocator() ?? Buffer.allocUnsafeSlow,
  ) {}

  /** Pages not in use. */
  get free(): number {
    return this.slab ? this.freeList.length : this.count;
  }

  /** Pages in use. */
  get inUse(): number {
    return this.count - this.free;
  }

  /**
   * Pages holding a copy of `src` (`bytes` bytes) as an I/O vector (the last page cut to length), or
   * undefined when too few are free. Give the vector back with give() once nothing reads it any more.
   */
  copyIn(src: readonly Buffer[], bytes: number): Buffer[] | undefined {
    const n = Math.ceil(bytes / RECEIVE_PAGE);
    if (n > this.free || n === 0) return undefined;
    const views = this.slabViews();
    const iov: Buffer[] = new Array<Buffer>(n);
    for (let i = 0; i < n; i++) {
      const page = views[this.freeList.pop() as number] as Buffer;
      const left = bytes - i * RECEIVE_PAGE;
      iov[i] = left >= RECEIVE_PAGE ? page : page.subarray(0, left);
    }
    // Copy src into the pages: both sides are vectors with their own boundaries.
    let p = 0;
    let at = 0;
    for (const s of src) {
      let from = 0;
      while (from < s.length && p < n) {
        const dst = iov[p] as Buffer;
        const k = s.copy(dst, at, from, from + Math.min(s.length - from, dst.length - at));
        from += k;
        at += k;
        if (at === dst.length) {
          p++;
          at = 0;
        }
      }
    }
    return iov;
  }

  /** The pages of a vector from copyIn() are free again. */
  give(iov: readonly Buffer[]): void {
    const slab = this.slab as Buffer;
    for (const b of iov) this.freeList.push((b.byteOffset - slab.byteOffset) / RECEIVE_PAGE);
  }

  private slabViews(): Buffer[] {
    if (!this.slab) {
      const slab = (this.slab = this.allocate(this.count * RECEIVE_PAGE));
      for (let i = 0; i < this.count; i++)
        this.views.push(slab.subarray(i * RECEIVE_PAGE, (i + 1) * RECEIVE_PAGE));
      for (let i = this.count - 1; i >= 0; i--) this.freeList.push(i);
    }
    return this.views;
  }
}
