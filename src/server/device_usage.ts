/**
 * Who uses a device-tree device the way the kernel counts a block device's openers, for DRBD's
 * "Device is held open by someone" (drbd_set_role refuses to demote an open device, -12
 * SS_DEVICE_IN_USE): an initiator logged in to a target exporting it as a LUN (directly, or through
 * a BIO bdev on it), or a file open through the FUSE mount. An exported LUN without sessions is not
 * in use: nobody can write through it, and `secondary` before maintenance is what operators do.
 */
export interface DeviceUsageSources {
  /** The claims on a tree device (DeviceTree.holders); [] for a name not in the tree. */
  holders(device: string): readonly { owner: string }[];
  /** Every LUN: its target, number and block device name. */
  luns(): readonly { target: string; lun: number; bdev: string }[];
  /** Normal (not discovery) sessions logged in to a target. */
  sessions(target: string): number;
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? "" : "s"}`;
}

/** Descriptions of the users of `device`; empty when nobody has it open. */
export function deviceUsers(src: DeviceUsageSources, device: string): string[] {
  const users: string[] = [];
  for (const { owner } of src.holders(device)) {
    const direct = /^LUN(\d+) of (.+)$/.exec(owner);
    if (direct) {
      const n = src.sessions(direct[2]);
      if (n > 0) users.push(`${owner}: ${plural(n, "session")} logged in`);
      continue;
    }
    const bio = /^BIO (\S+)$/.exec(owner);
    if (bio) {
      for (const l of src.luns())
        if (l.bdev === bio[1]) {
          const n = src.sessions(l.target);
          if (n > 0) users.push(`${owner} as LUN${l.lun} of ${l.target}: ${plural(n, "session")} logged in`);
        }
      continue;
    }
    if (owner.startsWith("FUSE mount ")) {
      users.push(`${owner}: open`);
      continue;
    }
    // Anything else stacked on the device (another tree user) holds it open.
    users.push(owner);
  }
  return users;
}
