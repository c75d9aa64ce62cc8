/**
 * disk { on-io-error } (drbd.conf(5) 8.4, drbd_int.h __drbd_chk_io_error_): what a failed read or write of
 * the backing disk does.
 *
 * - `detach` (the default): the disk goes Failed, then Diskless; the failed request and all later ones are
 *   served by the peer (reads as P_DATA_REQUEST, writes only replicated), with no error to the initiator
 *   as long as the peer is connected and UpToDate.
 * - `call-local-io-error`: the same, with the `local-io-error` handler run as the disk fails.
 * - `pass_on`: the disk is marked Inconsistent and stays attached; the failed request is still retried on
 *   the peer (the kernel's drbd_req_complete retries failed reads and completes a write good when the peer
 *   took it); without a peer the error reaches the initiator.
 */
import { BlockDeviceError } from "../bdev/bdev.js";

export type OnIoError = "pass_on" | "call-local-io-error" | "detach";

export const ON_IO_ERROR_POLICIES: readonly OnIoError[] = ["pass_on", "call-local-io-error", "detach"];

/**
 * Whether an error from the lower device is an I/O error of the disk (as opposed to a request the device
 * refused as malformed, which says nothing about the disk's health).
 */
export function isLowerIoError(e: unknown): boolean {
  if (e instanceof BlockDeviceError) return e.kind !== "out-of-range" && e.kind !== "read-only";
  return e instanceof Error;
}

/**
 * disk { disk-timeout } (drbd_req.c request_timer_fn): a lower request that has not completed in time
 * counts as a failed disk — a forced detach (DRBD_FORCE_DETACH), whatever on-io-error says. The request's
 * late completion is ignored: the caller already went on with the peer.
 */
export class DiskTimeoutError extends Error {
  constructor(device: string, ms: number) {
    super(`${device}: backing device did not complete a request within disk-timeout (${ms} ms)`);
    this.name = "DiskTimeoutError";
  }
}

/** `p`, or a DiskTimeoutError after `ms` (0: no limit, `p` itself). */
export function withDiskTimeout<T>(p: Promise<T>, ms: number, device: string): Promise<T> {
  if (ms <= 0) return p;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DiskTimeoutError(device, ms)), ms);
  });
  // The lower request may still fail after the deadline: that rejection is handled (ignored) here.
  p.catch(() => {});
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
