/**
 * Online resize over the connection (drbd_nl.c drbd_adm_resize, drbd_receiver.c receive_sizes and
 * resync_after_online_grow): after both backing disks grew, the node running `drbdadm resize` sends
 * P_SIZES with its new usable size and c_size 0 (which asks for an answer). Each node that gets a P_SIZES
 * grows to the smaller of the two usable sizes (drbd_new_dev_size), answers with its own P_SIZES when the
 * peer's idea of the size differs, and when it grew while Connected starts the resync of the new area: the
 * Primary (or, both Secondary, the node holding RESOLVE_CONFLICTS) as SyncSource, the other waits in
 * WFSyncUUID for its P_SYNC_UUID — no bitmap exchange, both set the new area's bits when they grew. With
 * --assume-clean (DDSF_NO_RESYNC, carried in both P_SIZES) the new area counts as in sync and nothing runs.
 *
 * The data socket is paused while a P_SIZES is handled, so the packets behind it (a P_DATA into the new
 * area, the P_SYNC_UUID) find the device already grown and in its new state. Shrinking is not done:
 * a smaller size from the peer is logged and the device keeps its size.
 */
import {
  decodeSizes,
  DiskState,
  DDSF_NO_RESYNC,
  DrbdCommand,
  encodeSizes,
  maxBioSizeFor,
  Role,
} from "./protocol.js";
import type { Link } from "./link.js";
import type { Resync } from "./resync.js";

/** How long `drbdadm resize` waits for the peer's P_SIZES. */
const RESIZE_ANSWER_MS = 30000;

export class ResizeLink {
  private waiting: { resolve: () => void; reject: (e: Error) => void } | undefined;

  constructor(
    private readonly link: Link,
    private readonly resync: Resync,
  ) {}

  /**
   * drbdadm resize while connected: tell the peer this node's usable size and wait until its answer was
   * handled (both grown, the resync of the new area started). Refused during a resync or verify
   * (ERR_RESIZE_RESYNC) and without a Primary on either side (ERR_NO_PRIMARY).
   */
  async start(opts: { assumeClean: boolean }): Promise<void> {
    const link = this.link;
    const dev = link.device;
    if (link.state.name !== "Connected")
      throw new Error(`${dev.name}: Resize not allowed during resync. (${link.state.name})`);
    if (dev.role !== "Primary" && link.state.peer?.role !== Role.Primary)
      throw new Error(`${dev.name}: Need one Primary node to resize.`);
    if (this.waiting) throw new Error(`${dev.name}: a resize is already running`);
    const max = await dev.maxSectors();
    const answered = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(
          new Error(
            `${dev.name}: the peer did not answer the resize (P_SIZES) within ${RESIZE_ANSWER_MS} ms`,
          ),
        );
      }, RESIZE_ANSWER_MS);
      this.waiting = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
    link.log.info(
      { usableSectors: max, sizeSectors: dev.sizeSectors, assumeClean: opts.assumeClean },
      "resize",
    );
    await this.sendSizes(max, 0, opts.assumeClean ? DDSF_NO_RESYNC : 0);
    await answered;
  }

  /** receive_sizes while connected. */
  receive(payload: Buffer): void {
    const link = this.link;
    const data = link.data;
    if (!data) return;
    data.pause();
    this.handle(payload).then(
      () => {
        if (link.data === data) link.dispatchData(data);
        const w = this.waiting;
        this.waiting = undefined;
        w?.resolve();
      },
      (e: Error) => {
        const w = this.waiting;
        this.waiting = undefined;
        w?.reject(e);
        link.lost(e);
      },
    );
  }

  /** The connection went: a resize waiting for its answer fails. */
  stop(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(new Error(`${this.link.device.name}: the connection was lost during the resize`));
  }

  private async handle(payload: Buffer): Promise<void> {
    const link = this.link;
    const dev = link.device;
    const p = decodeSizes(payload, link.agreedFeatures);
    link.peerDiskSectors = p.diskSize;
    // A Diskless peer (detached, or attaching later) has no size to agree on.
    if (p.diskSize === 0) return;
    const noResync = (p.ddsFlags & DDSF_NO_RESYNC) !== 0;
    const max = await dev.maxSectors();
    // drbd_new_dev_size: the smaller of the two usable sizes.
    const size = Math.min(p.diskSize, max);
    const before = dev.sizeSectors;
    let grew = false;
    if (size > before) grew = await dev.grow(size, { setNewBits: !noResync });
    else if (size < before)
      link.log.warn(
        { peerSectors: p.diskSize, mySectors: before },
        "the peer's disk is smaller than this device: not shrinking",
      );
    const peerDisk = link.state.peer?.disk ?? DiskState.Diskless;
    const resync = grew && !noResync && link.state.name === "Connected" && peerDisk >= DiskState.Inconsistent;
    const source = resync && this.syncSourceAfterGrow();
    if (resync && !source) {
      // Before the answer: the peer's P_SYNC_UUID follows it and must find this node waiting for it.
      link.state.change("WFSyncUUID");
      await link.state.setDisk("Inconsistent");
    }
    if (p.currentSize !== dev.sizeSectors)
      await this.sendSizes(max, dev.sizeSectors, p.ddsFlags & DDSF_NO_RESYNC);
    if (grew && noResync) link.log.info("Resync of new storage suppressed with --assume-clean");
    if (!source) return;
    link.log.info({ outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "Resync of new storage after online grow");
    await this.resync.beginSyncSource();
    if (dev.bitmap.outOfSyncBits === 0) void this.resync.finish();
  }

  /** resync_after_online_grow: the Primary is the source; with equal roles, the RESOLVE_CONFLICTS holder. */
  private syncSourceAfterGrow(): boolean {
    const link = this.link;
    const mine = link.device.role === "Primary";
    const peers = link.state.peer?.role === Role.Primary;
    return mine !== peers ? mine : link.resolveConflicts;
  }

  /** drbd_send_sizes: d_size = usable backing, c_size = current size (0: answer me). */
  private sendSizes(diskSize: number, currentSize: number, ddsFlags: number): Promise<void> {
    const link = this.link;
    return link.send(
      link.data,
      DrbdCommand.Sizes,
      encodeSizes(
        {
          diskSize,
          userSize: 0,
          currentSize,
          maxBioSize: maxBioSizeFor(link.agreedVersion),
          queueOrderType: 0,
          ddsFlags,
        },
        link.agreedFeatures,
      ),
    );
  }
}
