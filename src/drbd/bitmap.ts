/**
 * The out-of-sync bitmap of a DRBD device in memory (drbd_bitmap.c): one bit per 4 KiB of the device, in
 * the on-disk order (little-endian 64-bit words, so bit n is bit n%8 of byte n/8). A set bit means "this
 * block may differ from the peer's copy and must be resynced".
 *
 * Changed bits mark their 4 KiB bitmap page dirty; `takeDirtyPages()` hands the pages to write back, so the
 * metadata device sees only the pages that changed (the kernel's lazy bitmap writeout does the same).
 */
import { BM_BLOCK_SIZE } from "./metadata.js";

/** Bytes of bitmap per dirty-tracking page (one metadata 4 KiB block). */
export const BITMAP_PAGE_BYTES = 4096;

export class OutOfSyncBitmap {
  private readonly dirty = new Set<number>();
  private weight: number;

  /** `bits` is the number of 4 KiB blocks covered; `words` is the bitmap as read from disk (taken over). */
  constructor(
    readonly bits: number,
    readonly words: Buffer,
  ) {
    if (words.length * 8 < bits)
      throw new RangeError(`bitmap of ${words.length} bytes cannot hold ${bits} bits`);
    // Bits past the end must never count (a lower device may have been shrunk under old metadata).
    for (let b = bits; b < words.length * 8; b++) this.clearBit(b);
    this.dirty.clear();
    this.weight = 0;
    for (let i = 0; i < words.length; i++) this.weight += popcount8(words[i] as number);
  }

  /** Number of set bits (blocks out of sync). */
  get outOfSyncBits(): number {
    return this.weight;
  }

  /** Out-of-sync amount in KiB, as drbdadm status reports it. */
  get outOfSyncKiB(): number {
    return this.weight * (BM_BLOCK_SIZE / 1024);
  }

  test(bit: number): boolean {
    return (((this.words[bit >>> 3] as number) >>> (bit & 7)) & 1) === 1;
  }

  /** Sets bits [first, last]; returns how many were newly set. */
  setRange(first: number, last: number): number {
    let n = 0;
    for (let b = Math.max(0, first); b <= Math.min(last, this.bits - 1); b++) {
      if (this.test(b)) continue;
      this.words[b >>> 3] = (this.words[b >>> 3] as number) | (1 << (b & 7));
      this.dirty.add(Math.floor((b >>> 3) / BITMAP_PAGE_BYTES));
      n++;
    }
    this.weight += n;
    return n;
  }

  /** Clears bits [first, last]; returns how many were cleared. */
  clearRange(first: number, last: number): number {
    let n = 0;
    for (let b = Math.max(0, first); b <= Math.min(last, this.bits - 1); b++) {
      if (!this.test(b)) continue;
      this.clearBit(b);
      n++;
    }
    this.weight -= n;
    return n;
  }

  /** Sets every bit (full sync). */
  setAll(): void {
    this.setRange(0, this.bits - 1);
  }

  clearAll(): void {
    this.clearRange(0, this.bits - 1);
  }

  /** ORs a bitmap received from the peer (same layout) into this one; returns how many bits were newly set. */
  merge(other: Buffer): number {
    let n = 0;
    const len = Math.min(other.length, Math.ceil(this.bits / 8));
    for (let i = 0; i < len; i++) {
      const mine = this.words[i] as number;
      let add = (other[i] as number) & ~mine;
      // Bits past the end of the device never count.
      if ((i + 1) * 8 > this.bits) add &= (1 << (this.bits - i * 8)) - 1;
      if (add === 0) continue;
      this.words[i] = mine | add;
      this.dirty.add(Math.floor(i / BITMAP_PAGE_BYTES));
      n += popcount8(add);
    }
    this.weight += n;
    return n;
  }

  /** The bits covering bytes [offset, offset + length) of the device. */
  static bitsOf(offset: number, length: number): [number, number] {
    return [
      Math.floor(offset / BM_BLOCK_SIZE),
      Math.floor((offset + Math.max(length, 1) - 1) / BM_BLOCK_SIZE),
    ];
  }

  /** Next set bit at or after `from`, or -1. */
  nextSet(from: number): number {
    for (let b = Math.max(0, from); b < this.bits;) {
      if ((b & 7) === 0 && this.words[b >>> 3] === 0) {
        b += 8;
        continue;
      }
      if (this.test(b)) return b;
      b++;
    }
    return -1;
  }

  /** The dirty pages as [byte offset in the bitmap, bytes]; marks them clean. */
  takeDirtyPages(): { offset: number; data: Buffer }[] {
    const pages = [...this.dirty].sort((a, b) => a - b);
    this.dirty.clear();
    return pages.map((p) => {
      const offset = p * BITMAP_PAGE_BYTES;
      return {
        offset,
        data: this.words.subarray(offset, Math.min(offset + BITMAP_PAGE_BYTES, this.words.length)),
      };
    });
  }

  private clearBit(b: number): void {
    this.words[b >>> 3] = (this.words[b >>> 3] as number) & ~(1 << (b & 7));
    this.dirty.add(Math.floor((b >>> 3) / BITMAP_PAGE_BYTES));
  }
}

function popcount8(v: number): number {
  let n = 0;
  for (let x = v; x; x &= x - 1) n++;
  return n;
}
