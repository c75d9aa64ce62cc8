/**
 * Bounds-checked reads shared by the packet decoders (not part of the protocol index: internal).
 */
import { DrbdProtocolError } from "./commands.js";

export function need(b: Buffer, n: number, what: string): void {
  if (b.length < n) throw new DrbdProtocolError(`truncated ${what}: ${b.length} of ${n} bytes`);
}
export function exactly(b: Buffer, n: number, what: string): void {
  if (b.length !== n) throw new DrbdProtocolError(`${what} must be ${n} bytes, got ${b.length}`);
}

/** A big-endian u64 that must fit a JavaScript number (≤ 2^53 − 1); read as two u32 (no BigInt per packet). */
export function readU64(b: Buffer, off: number): number {
  const hi = b.readUInt32BE(off);
  if (hi > 0x1fffff) throw new DrbdProtocolError(`u64 at offset ${off} too large: ${b.readBigUInt64BE(off)}`);
  return hi * 0x100000000 + b.readUInt32BE(off + 4);
}

export function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString("latin1");
}

export function fixedString(b: Buffer, off: number, len: number, s: string, what: string): void {
  if (s.length >= len) throw new DrbdProtocolError(`${what} "${s}" longer than ${len - 1} bytes`);
  b.write(s, off, "latin1");
}
