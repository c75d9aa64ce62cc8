/**
 * One P_BARRIER_ACK for the volumes of a multi-volume resource (drbd_receiver.c receive_Barrier,
 * drbd_may_finish_epoch): the epoch belongs to the connection, so the peer's P_BARRIER closes it on every
 * volume at once. Each volume's receiver reports when its writes of the epoch are done and flushed; once all
 * have, one P_BARRIER_ACK goes with the writes of all of them as set_size (the sender's tl_release checks
 * it), and only then does any volume start the next epoch's writes — the kernel drains and flushes every
 * volume (conn_wait_active_ee_empty, drbd_flush) before a new epoch, so dependent writes across volumes
 * (a journal on one, data on another) keep their order on stable storage.
 */
interface Joining {
  volumes: number;
  size: number;
  opens: (() => void)[];
}

export class BarrierJoin {
  private readonly epochs = new Map<number, Joining>();

  /** `volumes`: how many volumes the connection has (each reports every barrier once). */
  constructor(private readonly volumes: number) {}

  /**
   * A volume's part of the epoch closed by `barrier` is stable: `size` writes. When every volume's part is,
   * `ack` sends the P_BARRIER_ACK with the total and every volume's `open` starts its next epoch.
   */
  reached(barrier: number, size: number, ack: (size: number) => void, open: () => void): void {
    let j = this.epochs.get(barrier);
    if (!j) this.epochs.set(barrier, (j = { volumes: 0, size: 0, opens: [] }));
    j.volumes++;
    j.size += size;
    j.opens.push(open);
    if (j.volumes < this.volumes) return;
    this.epochs.delete(barrier);
    ack(j.size);
    for (const o of j.opens) o();
  }

  /** A new connection: the epochs of the old one are forgotten (as each receiver forgets its own). */
  reset(): void {
    this.epochs.clear();
  }
}
