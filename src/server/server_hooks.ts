/**
 * What the server tells the layers it wires up (device tree, DRBD, the control plane) as the graph
 * changes; its own file so that they need not import the server.
 */
import type { BlockDevice } from "../bdev/bdev.js";

/**
 * Points where a subsystem outside the iSCSI graph joins in (the device tree: claims on tree
 * devices used as LUNs, the FUSE view). Each runs once; failures in start-up hooks fail the start.
 */
export interface ServerHooks {
  /** Each LUN, once its block device exists and before the target listens. */
  lunMapped?(lun: { readonly targetName: string; readonly id: number; readonly bdev: BlockDevice }): void;
  /** Who holds block device `name` besides LUNs (e.g. DRBD); undefined = nobody, it may be deleted. */
  bdevHolder?(name: string): string | undefined;
  /** A block device deleted while running is closed; forget it (the device tree removes its node). */
  bdevDeleted?(dev: BlockDevice): void;
  /** A LUN is gone while running (hot-removed, its target deleted, or its creation undone). */
  lunUnmapped?(lun: { readonly targetName: string; readonly id: number }): void;
  /** Everything is built and listening. */
  started?(): Promise<void>;
  /** Stopping: the target has stopped; block devices are still open. */
  beforeClose?(): Promise<void>;
  /** Stopping: one block device has just closed (the ones below it are still open). */
  bdevClosed?(dev: BlockDevice): Promise<void>;
}
