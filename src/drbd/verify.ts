/**
 * Online verify (drbd_worker.c w_make_ov_request / w_e_end_ov_req / w_e_end_ov_reply, drbd_receiver.c
 * got_OVResult): the node that runs `drbdadm verify` (VerifyS) walks the device in 4 KiB blocks at
 * resync-rate and sends P_OV_REQUEST for each; the peer (VerifyT) reads the block and answers P_OV_REPLY with
 * its digest under net { verify-alg }; VerifyS digests its own copy, compares, and answers P_OV_RESULT with
 * ID_IN_SYNC or ID_OUT_OF_SYNC. Both sides mark differing blocks out of sync in their bitmaps — they are not
 * resynced now; the next resync (after a disconnect/connect that finds a reason to sync) carries them.
 *
 * This file holds the digests and the per-run bookkeeping; the connection moves the packets.
 */
import { createHash } from "node:crypto";
import { crc32c } from "@node-rs/crc32";

/** net { verify-alg } values this implementation computes (kernel crypto API names). */
export const VERIFY_ALGS = ["sha1", "md5", "sha256", "crc32c"] as const;
export type VerifyAlg = (typeof VERIFY_ALGS)[number];

export function isVerifyAlg(alg: string): alg is VerifyAlg {
  return (VERIFY_ALGS as readonly string[]).includes(alg);
}

/** The digest of one block as the kernel's shash of that name produces it (crc32c: 4 bytes, little-endian). */
export function verifyDigest(alg: VerifyAlg, block: Buffer): Buffer {
  if (alg === "crc32c") {
    const b = Buffer.alloc(4);
    // The kernel's crc32c shash starts at ~0 and emits the inverted value little-endian, as iSCSI does.
    b.writeUInt32LE(crc32c(block) >>> 0, 0);
    return b;
  }
  return createHash(alg).update(block).digest();
}

/** Bytes per verify request: one bitmap bit (BM_BLOCK_SIZE). */
export const OV_BLOCK = 4096;
/** Requests VerifyS keeps outstanding. */
const MAX_INFLIGHT = 64;

export interface VerifyCounters {
  running: boolean;
  /** Blocks compared in the current or last run. */
  checkedBlocks: number;
  /** Of those, found to differ. */
  outOfSyncBlocks: number;
  /** Blocks the run covers. */
  totalBlocks: number;
}

/** One verify run, from either side's point of view. */
export class VerifyRun {
  checked = 0;
  outOfSync = 0;
  /** VerifyS: the next block to request, requests outstanding. */
  private position: number;
  inflight = 0;
  private tokensKiB = 0;
  private refill = Date.now();

  constructor(
    readonly side: "VerifyS" | "VerifyT",
    /** Bitmap bits (4 KiB blocks) of the device. */
    readonly totalBlocks: number,
    /** Usable bytes of the device: the last block may be short. */
    private readonly deviceBytes: number,
    startBlock = 0,
  ) {
    this.position = startBlock;
  }

  get done(): boolean {
    return this.checked >= this.totalBlocks;
  }

  /** Percent done for status. */
  get percent(): number {
    return this.totalBlocks === 0 ? 100 : Math.floor((1000 * this.checked) / this.totalBlocks) / 10;
  }

  /**
   * VerifyS: the requests to send now, as {sector, size}: at most `rateKiB` KiB per second (a token bucket
   * with 100 ms of burst, one block always fits) and MAX_INFLIGHT outstanding.
   */
  nextRequests(rateKiB: number): { sector: number; size: number }[] {
    const now = Date.now();
    const cap = Math.max(4, rateKiB / 10);
    this.tokensKiB = Math.min(cap, this.tokensKiB + ((now - this.refill) * rateKiB) / 1000);
    this.refill = now;
    const out: { sector: number; size: number }[] = [];
    while (this.inflight < MAX_INFLIGHT && this.tokensKiB >= 4 && this.position < this.totalBlocks) {
      const offset = this.position * OV_BLOCK;
      out.push({ sector: offset / 512, size: Math.min(OV_BLOCK, this.deviceBytes - offset) });
      this.position++;
      this.inflight++;
      this.tokensKiB -= 4;
    }
    return out;
  }

  /** All blocks requested (VerifyS). */
  get allRequested(): boolean {
    return this.position >= this.totalBlocks;
  }

  /** One block compared; `same` false marks it out of sync. */
  result(same: boolean): void {
    this.checked++;
    if (!same) this.outOfSync++;
  }

  counters(running: boolean): VerifyCounters {
    return {
      running,
      checkedBlocks: this.checked,
      outOfSyncBlocks: this.outOfSync,
      totalBlocks: this.totalBlocks,
    };
  }
}

/** drbd_state.c's texts for the refusals verify and invalidate-remote report (enum drbd_state_rv). */
export const STATE_ERROR_TEXT: Record<number, string> = {
  [-1]: "Multiple primaries not allowed by config",
  [-2]: "Need access to UpToDate data",
  [-4]: "Can not resync without local disk",
  [-5]: "Can not resync without remote disk",
  [-8]: "Can not start OV/resync since it is already active",
  [-10]: "State change was refused by peer node",
  [-14]: "Need a verify algorithm to start online verify",
  [-15]: "Need a connection to start verify or resync",
  [-17]: "Peer does not support protocol",
  [-19]: "Concurrent state changes detected and aborted",
};
