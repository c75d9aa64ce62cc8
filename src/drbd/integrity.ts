/**
 * net { data-integrity-alg } (drbd_main.c drbd_send_dblock / drbd_send_block, drbd_receiver.c read_in_block
 * and recv_dless_read): when both nodes name the same algorithm in P_PROTOCOL, every packet that carries
 * data — P_DATA, P_DATA_REPLY, P_RS_DATA_REPLY — has the digest of that data between its 24-byte p_data and
 * the data. The receiver digests what it read and compares; on a mismatch it logs "Digest integrity check
 * FAILED: <sector>s +<size>", writes nothing and drops the connection (ProtocolError), as the kernel does.
 * P_TRIM and P_ZEROES carry no data and no digest.
 *
 * The digests are the kernel crypto API's of that name: crc32c is 4 bytes, the inverted CRC32C
 * little-endian (as verify.ts and iSCSI's data digest produce it); sha1, md5, sha256, … the plain hash.
 */
import { createHash, getHashes, type Hash } from "node:crypto";
import { crc32c } from "@node-rs/crc32";
import { DrbdCommand, DrbdProtocolError } from "./protocol.js";

/** p_data: sector, block_id, seq_num, dp_flags. */
const P_DATA_HEADER = 24;

/** True when `alg` is a data-integrity-alg this implementation computes (crc32c or a node:crypto hash). */
export function isIntegrityAlg(alg: string): boolean {
  return alg === "crc32c" || getHashes().includes(alg);
}

/** The packets whose data carries the digest. */
export function carriesDigest(cmd: DrbdCommand): boolean {
  return cmd === DrbdCommand.Data || cmd === DrbdCommand.DataReply || cmd === DrbdCommand.RsDataReply;
}

export class DataIntegrity {
  /** Digest bytes in every data packet. */
  readonly size: number;

  constructor(readonly alg: string) {
    if (!isIntegrityAlg(alg)) throw new Error(`data-integrity-alg ${alg} is not a known hash`);
    this.size = alg === "crc32c" ? 4 : createHash(alg).digest().length;
  }

  /** The digest of the data in `iov`, in order. */
  digest(iov: readonly Buffer[]): Buffer {
    if (this.alg === "crc32c") {
      let crc = 0;
      for (const b of iov) crc = crc32c(b, crc);
      const out = Buffer.allocUnsafe(4);
      out.writeUInt32LE(crc >>> 0, 0);
      return out;
    }
    const h: Hash = createHash(this.alg);
    for (const b of iov) h.update(b);
    return h.digest();
  }

  /**
   * A data packet's payload parts as encodeData builds them without a digest ([p_data, data…]): the digest
   * of the data inserted after p_data (drbd_send_block).
   */
  withDigest(parts: readonly Buffer[]): Buffer[] {
    const data = parts.slice(1);
    return [parts[0], this.digest(data), ...data];
  }

  /**
   * read_in_block: checks the digest of a received data packet and returns the payload without it (p_data
   * followed by the data), so that the packet decodes as one without digest. The 24 bytes of p_data are
   * moved up over the digest in place: the data is not copied. Throws DrbdProtocolError on a mismatch.
   */
  verified(cmd: DrbdCommand, payload: Buffer): Buffer {
    if (payload.length < P_DATA_HEADER + this.size)
      throw new DrbdProtocolError(
        `${cmd === DrbdCommand.Data ? "P_DATA" : "data reply"} of ${payload.length} bytes has no room for a ${this.alg} digest`,
      );
    const data = payload.subarray(P_DATA_HEADER + this.size);
    const got = payload.subarray(P_DATA_HEADER, P_DATA_HEADER + this.size);
    if (!got.equals(this.digest([data]))) {
      const sector = payload.readBigUInt64BE(0);
      throw new DrbdProtocolError(`Digest integrity check FAILED: ${sector}s +${data.length}`);
    }
    payload.copyWithin(this.size, 0, P_DATA_HEADER);
    return payload.subarray(this.size);
  }

  /**
   * read_in_block for a P_DATA framed as p_data plus slices (PacketFramer `scatterData`): `rest` starts with
   * the digest; returns the data slices after it once their digest matched. Only the digest is copied, and
   * only when it spans two socket reads.
   */
  verifiedParts(head: Buffer, rest: readonly Buffer[]): Buffer[] {
    let digestBytes = 0;
    for (const b of rest) digestBytes += b.length;
    if (digestBytes < this.size)
      throw new DrbdProtocolError(
        `P_DATA of ${P_DATA_HEADER + digestBytes} bytes has no room for a ${this.alg} digest`,
      );
    const got = Buffer.allocUnsafe(this.size);
    const data: Buffer[] = [];
    let have = 0;
    for (const b of rest) {
      const k = Math.min(this.size - have, b.length);
      if (k > 0) b.copy(got, have, 0, k);
      have += k;
      if (k < b.length) data.push(k === 0 ? b : b.subarray(k));
    }
    if (!got.equals(this.digest(data))) {
      let length = 0;
      for (const b of data) length += b.length;
      throw new DrbdProtocolError(`Digest integrity check FAILED: ${head.readBigUInt64BE(0)}s +${length}`);
    }
    return data;
  }
}
