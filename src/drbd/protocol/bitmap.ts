/**
 * The bitmap exchange before a resync: plain P_BITMAP words and P_COMPRESSED_BITMAP's run-length VLI
 * code (drbd_vli.h).
 */
import { DrbdCommand, DrbdProtocolError } from "./commands.js";
import { DRBD_SOCKET_BUFFER_SIZE, headerSize } from "./framing.js";

// Bitmap transfer (drbd_main.c send_bitmap_rle_or_plain / fill_bitmap_rle_bits,
// drbd_receiver.c receive_bitmap_plain / recv_bm_rle_bits, drbd_vli.h)
//
// The bitmap is handled as bytes: bit n (4 KiB block n) is bit n%8 of byte n/8, which is exactly the layout
// of the little-endian u64 words on the wire and on disk.

/** Progress of one bitmap transfer direction (struct bm_xfer_ctx). */
export class BitmapTransfer {
  bitOffset = 0;
  wordOffset = 0;
  readonly words: number;
  /** Packets and bytes, plain and compressed, for the "transfer totals" log line. */
  readonly stats = { plainPackets: 0, plainBytes: 0, rlePackets: 0, rleBytes: 0 };

  constructor(readonly bits: number) {
    this.words = Math.ceil(bits / 64);
  }
  get done(): boolean {
    return this.bitOffset >= this.bits;
  }
  /** After an RLE chunk the plain cursor follows the bit cursor (bm_xfer_ctx_bit_to_word_offset, 64-bit). */
  syncWordOffset(): void {
    this.wordOffset = Math.floor(this.bitOffset / 64);
  }
}

/** Bytes of bitmap needed for a device of `sectors` 512-byte sectors: one bit per 4 KiB, in whole u64 words. */
export function bitmapBytesFor(sectors: number): number {
  return Math.ceil(Math.ceil(sectors / 8) / 64) * 8;
}

/** Plain P_BITMAP payload: as many whole words as fit a 4 KiB packet with its header, or what remains. */
export function encodePlainBitmapChunk(bitmap: Buffer, xfer: BitmapTransfer, agreedVersion: number): Buffer {
  const perPacket = Math.floor((DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion)) / 8);
  const n = Math.min(perPacket, xfer.words - xfer.wordOffset);
  const out = bitmap.subarray(xfer.wordOffset * 8, (xfer.wordOffset + n) * 8);
  xfer.wordOffset += n;
  xfer.bitOffset = Math.min(xfer.wordOffset * 64, xfer.bits);
  xfer.stats.plainPackets++;
  xfer.stats.plainBytes += out.length;
  return out;
}

/** ORs a received plain P_BITMAP payload into `bitmap`; the word count must be exactly what the sender had to send. */
export function decodePlainBitmapChunk(
  payload: Buffer,
  xfer: BitmapTransfer,
  bitmap: Buffer,
  agreedVersion: number,
): void {
  const perPacket = Math.floor((DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion)) / 8);
  const n = Math.min(perPacket, xfer.words - xfer.wordOffset);
  if (payload.length !== n * 8)
    throw new DrbdProtocolError(
      `P_BITMAP: expected ${n * 8} bytes at word ${xfer.wordOffset}, got ${payload.length}`,
    );
  const base = xfer.wordOffset * 8;
  for (let i = 0; i < payload.length; i++)
    bitmap[base + i] = (bitmap[base + i] as number) | (payload[i] as number);
  xfer.wordOffset += n;
  xfer.bitOffset = Math.min(xfer.wordOffset * 64, xfer.bits);
  xfer.stats.plainPackets++;
  xfer.stats.plainBytes += payload.length;
}

/** VLI code table (drbd_vli.h VLI_L_1_1): [total bits, prefix bits, prefix value]. */
const VLI_LEVELS: readonly (readonly [number, number, number])[] = [
  [2, 1, 0x00],
  [3, 2, 0x01],
  [5, 3, 0x03],
  [7, 4, 0x07],
  [10, 5, 0x0f],
  [14, 6, 0x1f],
  [21, 8, 0x3f],
  [29, 8, 0x7f],
  [42, 8, 0xbf],
  [64, 8, 0xff],
];

/** Encodes a run length (≥1) as [code, bits]; the code is LSB-first, prefix in the low bits. */
export function vliEncode(value: bigint): [bigint, number] {
  if (value <= 0n) throw new DrbdProtocolError("VLI run length must be positive");
  let max = 0n;
  let adj = 1n;
  for (const [total, prefixBits, prefix] of VLI_LEVELS) {
    max += 1n << BigInt(total - prefixBits);
    if (value <= max) return [((value - adj) << BigInt(prefixBits)) | BigInt(prefix), total];
    adj = max + 1n;
  }
  throw new DrbdProtocolError(`VLI run length ${value} too large`);
}

/** Decodes the code in the low bits of `input` (up to 64 bits): [value, bits consumed]. */
export function vliDecode(input: bigint): [bigint, number] {
  let adj = 1n;
  for (const [total, prefixBits, prefix] of VLI_LEVELS) {
    if ((input & ((1n << BigInt(prefixBits)) - 1n)) === BigInt(prefix)) {
      const mask = (1n << BigInt(total)) - 1n;
      return [((input & mask) >> BigInt(prefixBits)) + adj, total];
    }
    adj += 1n << BigInt(total - prefixBits);
  }
  throw new DrbdProtocolError("invalid VLI prefix"); // unreachable: 0xff is the catch-all prefix
}

const bitAt = (bm: Buffer, n: number): number => ((bm[n >> 3] as number) >> (n & 7)) & 1;

const ZERO_PAGE = Buffer.alloc(4096, 0x00);
const ONES_PAGE = Buffer.alloc(4096, 0xff);

/** The first bit at or after `from` whose value is `value`, or `limit`. Skips uniform 4 KiB, then bytes. */
function findNext(bm: Buffer, from: number, limit: number, value: number): number {
  let n = from;
  const skipByte = value === 1 ? 0x00 : 0xff;
  const skipPage = value === 1 ? ZERO_PAGE : ONES_PAGE;
  while (n < limit) {
    if ((n & 7) === 0) {
      const byte = n >> 3;
      if (n + 8 * 4096 <= limit && bm.subarray(byte, byte + 4096).equals(skipPage)) {
        n += 8 * 4096;
        continue;
      }
      if (bm[byte] === skipByte) {
        n += 8;
        continue;
      }
    }
    if (bitAt(bm, n) === value) return n;
    n++;
  }
  return limit;
}

export const RLE_VLI_BITS = 2;

/**
 * One P_COMPRESSED_BITMAP payload from the transfer position: the encoding byte (code 2 = RLE_VLI_Bits, bit 7 =
 * first run is of set bits, bits 4–6 = pad bits) then the run lengths, VLI-coded, LSB-first. Returns undefined
 * when the chunk would not be smaller than plain, resetting the cursor to the word boundary as the kernel does
 * so that the caller sends a plain packet instead.
 */
export function encodeRleBitmapChunk(
  bitmap: Buffer,
  xfer: BitmapTransfer,
  agreedVersion: number,
): Buffer | undefined {
  if (agreedVersion < 90 || xfer.done) return undefined;
  const maxCode = DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion) - 1;
  const code = Buffer.alloc(maxCode);
  let bitPos = 0;
  let plainBits = 0;
  let setRun: boolean | undefined;
  let firstSet = false;
  const start = xfer.bitOffset;
  while (xfer.bitOffset < xfer.bits) {
    const looking = setRun === undefined ? 1 : setRun ? 0 : 1;
    const next = findNext(bitmap, xfer.bitOffset, xfer.bits, looking);
    const rl = next - xfer.bitOffset;
    if (setRun === undefined) {
      setRun = false;
      if (rl === 0) {
        firstSet = true;
        setRun = true;
        continue;
      }
    }
    const [c, bits] = vliEncode(BigInt(rl));
    if (bitPos + bits > maxCode * 8) break;
    putBits(code, bitPos, c, bits);
    bitPos += bits;
    plainBits += rl;
    xfer.bitOffset = next;
    setRun = !setRun;
  }
  const len = Math.ceil(bitPos / 8);
  if (plainBits < len * 8) {
    xfer.bitOffset = start;
    xfer.syncWordOffset();
    xfer.bitOffset = xfer.wordOffset * 64;
    return undefined;
  }
  xfer.syncWordOffset();
  const pad = (8 - (bitPos & 7)) & 7;
  const out = Buffer.alloc(1 + len);
  out[0] = RLE_VLI_BITS | (pad << 4) | (firstSet ? 0x80 : 0);
  code.copy(out, 1, 0, len);
  xfer.stats.rlePackets++;
  xfer.stats.rleBytes += out.length;
  return out;
}

function putBits(buf: Buffer, pos: number, value: bigint, bits: number): void {
  for (let i = 0; i < bits; i++) {
    if ((value >> BigInt(i)) & 1n) {
      const p = pos + i;
      buf[p >> 3] = (buf[p >> 3] as number) | (1 << (p & 7));
    }
  }
}

function getBits(buf: Buffer, pos: number, bits: number, limit: number): bigint {
  let v = 0n;
  const n = Math.min(bits, limit - pos);
  for (let i = 0; i < n; i++) {
    const p = pos + i;
    if (((buf[p >> 3] as number) >> (p & 7)) & 1) v |= 1n << BigInt(i);
  }
  return v;
}

/** Sets bits [from, to): partial bytes bit by bit, whole bytes at once (runs can cover the whole device). */
function setBitRange(bm: Buffer, from: number, to: number): void {
  let i = from;
  for (; i < to && i & 7; i++) bm[i >> 3] = (bm[i >> 3] as number) | (1 << (i & 7));
  const wholeEnd = to & ~7;
  if (i < wholeEnd) {
    bm.fill(0xff, i >> 3, wholeEnd >> 3);
    i = wholeEnd;
  }
  for (; i < to; i++) bm[i >> 3] = (bm[i >> 3] as number) | (1 << (i & 7));
}

/** Decodes one P_COMPRESSED_BITMAP payload into `bitmap` (set runs are ORed in), advancing the transfer. */
export function decodeRleBitmapChunk(
  payload: Buffer,
  xfer: BitmapTransfer,
  bitmap: Buffer,
  agreedVersion: number,
): void {
  if (payload.length > DRBD_SOCKET_BUFFER_SIZE - headerSize(agreedVersion))
    throw new DrbdProtocolError(`P_COMPRESSED_BITMAP of ${payload.length} bytes is too large`);
  if (payload.length <= 1)
    throw new DrbdProtocolError(`P_COMPRESSED_BITMAP of ${payload.length} bytes is too small`);
  const encoding = payload[0] as number;
  if ((encoding & 0x0f) !== RLE_VLI_BITS)
    throw new DrbdProtocolError(`P_COMPRESSED_BITMAP: unknown encoding ${encoding & 0x0f}`);
  const code = payload.subarray(1);
  const pad = (encoding >> 4) & 7;
  const limit = code.length * 8 - pad;
  let set = (encoding & 0x80) !== 0;
  let pos = 0;
  let s = xfer.bitOffset;
  while (pos < limit) {
    const have = Math.min(64, limit - pos);
    const [rl, bits] = vliDecode(getBits(code, pos, 64, limit));
    if (bits > have) throw new DrbdProtocolError(`P_COMPRESSED_BITMAP: code cut short at bit ${pos}`);
    const run = Number(rl);
    if (s + run > xfer.bits)
      throw new DrbdProtocolError(
        `P_COMPRESSED_BITMAP: run of ${run} at bit ${s} passes the end (${xfer.bits} bits)`,
      );
    if (set) setBitRange(bitmap, s, s + run);
    s += run;
    pos += bits;
    set = !set;
  }
  xfer.bitOffset = s;
  xfer.syncWordOffset();
  xfer.stats.rlePackets++;
  xfer.stats.rleBytes += payload.length;
}

/**
 * The whole bitmap as the packets a sender emits: RLE when allowed and smaller, plain otherwise
 * (send_bitmap_rle_or_plain). Each entry is [command, payload].
 */
export function encodeBitmapPackets(
  bitmap: Buffer,
  bits: number,
  agreedVersion: number,
  useRle: boolean,
): [DrbdCommand, Buffer][] {
  const xfer = new BitmapTransfer(bits);
  const out: [DrbdCommand, Buffer][] = [];
  while (!xfer.done) {
    const rle = useRle ? encodeRleBitmapChunk(bitmap, xfer, agreedVersion) : undefined;
    if (rle) out.push([DrbdCommand.CompressedBitmap, rle]);
    else out.push([DrbdCommand.Bitmap, encodePlainBitmapChunk(bitmap, xfer, agreedVersion)]);
  }
  return out;
}
