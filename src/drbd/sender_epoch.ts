/**
 * The sender's current epoch (drbd_req.c: connection->current_tle_nr and current_tle_writes): the number the
 * next P_BARRIER carries, the writes sent in it, and whether one of them completed (a later write then
 * starts a new epoch). It belongs to the connection, not the volume: the epoch spans every volume of a
 * resource, and the peer's P_BARRIER_ACK counts the writes of all of them (tl_release checks n_writes).
 */
export class SenderEpoch {
  /** The current epoch's number, carried by the P_BARRIER that closes it. */
  number = 0;
  /** Writes sent in the current epoch. */
  writes = 0;
  /** One of the current epoch's writes completed. */
  hadCompletion = false;
}
