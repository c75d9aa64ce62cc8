/**
 * An image file with positional vectored I/O that finishes short transfers, and a coalescing
 * fdatasync: qcow2 metadata updates wait on it as a write barrier (data and refcounts durable before
 * the L2 entry that references them), and concurrent waiters share one sync.
 */
import type { FileHandle } from "node:fs/promises";

export class SyncedFile {
  private syncing: Promise<void> | undefined;
  private next: Promise<void> | undefined;

  constructor(
    readonly fh: FileHandle,
    readonly label: string,
  ) {}

  /** Fill every buffer of `iov` from `pos`; bytes past the end of the file read as zeroes. */
  async readFully(iov: readonly Buffer[], pos: number): Promise<void> {
    let rest = iov.slice();
    while (rest.length > 0) {
      const { bytesRead } = await this.fh.readv(rest, pos);
      if (bytesRead === 0) {
        for (const b of rest) b.fill(0);
        return;
      }
      pos += bytesRead;
      rest = advanceIov(rest, bytesRead);
    }
  }

  async writeFully(iov: readonly Buffer[], pos: number): Promise<void> {
    let rest = iov.slice();
    while (rest.length > 0) {
      const { bytesWritten } = await this.fh.writev(rest, pos);
      if (bytesWritten === 0) throw new Error(`${this.label}: write at ${pos} made no progress`);
      pos += bytesWritten;
      rest = advanceIov(rest, bytesWritten);
    }
  }

  /**
   * Make every write that completed before this call durable. A sync already running may have
   * started before the caller's writes completed, so callers then wait for the one after it; all
   * callers arriving meanwhile share that one.
   */
  sync(): Promise<void> {
    if (!this.syncing) {
      this.syncing = this.fh.datasync().finally(() => {
        this.syncing = undefined;
      });
      return this.syncing;
    }
    this.next ??= this.syncing
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return this.sync();
      });
    return this.next;
  }
}

/** Drop the first `n` bytes of an I/O vector (subarrays, no copies). */
export function advanceIov(iov: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < iov.length && n >= iov[i].length) n -= iov[i++].length;
  const rest = iov.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0].subarray(n);
  return rest;
}

/** The bytes [start, start+len) of an I/O vector as subarrays of its buffers. */
export function sliceIov(iov: readonly Buffer[], start: number, len: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of iov) {
    if (len === 0) break;
    if (start >= b.length) {
      start -= b.length;
      continue;
    }
    const n = Math.min(b.length - start, len);
    out.push(b.subarray(start, start + n));
    start = 0;
    len -= n;
  }
  return out;
}
