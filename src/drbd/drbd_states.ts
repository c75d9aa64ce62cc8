/**
 * The state vocabulary of a DRBD 8.4 volume (drbd_int.h / linux/drbd.h: enum drbd_role, enum
 * drbd_disk_state): roles and disk states by the names drbdsetup prints, used by the device and the
 * connection alike, and their numbers in P_STATE (protocol.ts Role, DiskState) converted here only.
 */
import { DiskState, Role } from "./protocol.js";

export type DrbdRole = "Primary" | "Secondary";

/**
 * The disk states a local disk takes here (enum drbd_disk_state by name). Failed is passed through after a
 * local I/O error on the way to Diskless (on-io-error). Attaching, Negotiating and DUnknown exist only on
 * the wire: a peer may report them (peerDiskName).
 */
export type DrbdDiskState = "Diskless" | "Failed" | "Inconsistent" | "Outdated" | "Consistent" | "UpToDate";

/** A refused state change, worded like drbdsetup's "State change failed: (code) text". */
export class DrbdStateError extends Error {
  constructor(
    readonly device: string,
    readonly code: number,
    text: string,
  ) {
    super(`${device}: State change failed: (${code}) ${text}`);
    this.name = "DrbdStateError";
  }
}

/** The P_STATE number of a local disk state. */
export function diskStateOnWire(disk: DrbdDiskState): DiskState {
  return DiskState[disk];
}

/** The P_STATE number of a local role. */
export function roleOnWire(role: DrbdRole): Role {
  return role === "Primary" ? Role.Primary : Role.Secondary;
}

const ROLE_NAME: Record<number, string> = { [Role.Primary]: "Primary", [Role.Secondary]: "Secondary" };
const DISK_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(DiskState)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v as number, k]),
);

/** A role a peer reported in P_STATE, by name ("Unknown" for anything else). */
export function peerRoleName(role: number): string {
  return ROLE_NAME[role] ?? "Unknown";
}

/** A disk state a peer reported in P_STATE, by name ("DUnknown" for a number outside the enum). */
export function peerDiskName(disk: number): string {
  return DISK_NAME[disk] ?? "DUnknown";
}
