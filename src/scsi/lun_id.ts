/**
 * SAM-5 4.6 LUN encoding, as carried in the 8-byte iSCSI LUN field and in REPORT LUNS data.
 * LUNs below 256 use peripheral device addressing; 256..16383 use flat space addressing.
 */

export const MAX_LUN = 16383;

/** Encode a LUN number into its 8-byte SAM form. */
export function encodeLun(lun: number, out: Buffer = Buffer.alloc(8), offset = 0): Buffer {
  out.fill(0, offset, offset + 8);
  if (lun < 256) {
    out[offset + 1] = lun;
  } else {
    out[offset] = 0x40 | ((lun >> 8) & 0x3f);
    out[offset + 1] = lun & 0xff;
  }
  return out;
}

/**
 * Decode the first level of an 8-byte SAM LUN. Returns -1 for an addressing method this target
 * does not use (logical unit / extended addressing), which the caller reports as a bad LUN.
 */
export function decodeLun(buf: Buffer, offset = 0): number {
  const method = buf[offset] >> 6;
  if (method === 0) return (buf[offset] & 0x3f) === 0 ? buf[offset + 1] : -1; // peripheral, bus 0 only
  if (method === 1) return ((buf[offset] & 0x3f) << 8) | buf[offset + 1]; // flat space
  return -1;
}
