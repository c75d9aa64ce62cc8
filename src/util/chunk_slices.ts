/**
 * Socket chunks queued by a parser (iSCSI PDUs, DRBD packets): taking bytes off the front as slices of the
 * chunks they lie in, so a payload that spans socket reads is never copied to be framed.
 */

/** Removes n bytes (at most what `chunks` holds) from the front of `chunks` as slices, never copied. */
export function shiftSlices(chunks: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  while (n > 0) {
    const first = chunks[0] as Buffer;
    if (first.length <= n) {
      out.push(first);
      chunks.shift();
      n -= first.length;
    } else {
      out.push(first.subarray(0, n));
      chunks[0] = first.subarray(n);
      n = 0;
    }
  }
  return out;
}
