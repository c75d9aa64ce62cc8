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
