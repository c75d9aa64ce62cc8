/**
 * The state of one DRBD 8.4 connection (drbd_state.c): the connection state, what the peer last reported in
 * P_STATE (its role and disk), and the local disk state as far as the connection changes it. This is the
 * only place they change, and the place that derives what follows from a change, as after_state_ch does:
 * losing contact to an UpToDate Primary's peer starts a new data generation, entering SyncSource or
 * SyncTarget starts a resync's bookkeeping. The P_STATE a change is announced with is built here too.
 */
import type { Logger } from "../util/log.js";
import { ConnState, DiskState, Role, type DrbdState } from "./protocol.js";
import { newCurrentUuidAtSplit } from "./uuids.js";
import type { ConnectionStateName } from "./connection_options.js";
import {
  diskStateOnWire,
  peerDiskName,
  peerRoleName,
  roleOnWire,
  type DrbdDiskState,
} from "./drbd_states.js";
import type { PeerDevicePort } from "./peer_device_port.js";

export type SyncSide = "SyncSource" | "SyncTarget";

/** The states in which the connection ends when the link to the peer goes (conn_disconnect). */
export type LinkLostState = "Disconnecting" | "NetworkFailure" | "ProtocolError";

export class ConnectionStateMachine {
  private current: ConnectionStateName = "StandAlone";
  private peerState: DrbdState | undefined;
  /** after_state_ch's follow-up on entering SyncSource / SyncTarget: the resync's bookkeeping starts. */
  onSyncStart: (side: SyncSide) => void = () => {};

  constructor(
    private readonly device: PeerDevicePort,
    private readonly log: Logger,
  ) {}

  get name(): ConnectionStateName {
    return this.current;
  }

  /** Connected, resyncing, Ahead or Behind: writes are mirrored or marked for the peer. */
  get isUp(): boolean {
    const s = this.current;
    return (
      s === "Connected" ||
      s === "SyncSource" ||
      s === "SyncTarget" ||
      s === "Ahead" ||
      s === "Behind" ||
      s === "VerifyS" ||
      s === "VerifyT" ||
      s === "StartingSyncS" ||
      s === "StartingSyncT" ||
      s === "WFSyncUUID"
    );
  }

  /** Sets the connection state; entering SyncSource or SyncTarget starts a resync (drbd_start_resync). */
  change(next: ConnectionStateName): void {
    this.current = next;
    if (next === "SyncSource" || next === "SyncTarget") this.onSyncStart(next);
  }

  /**
   * The link to the peer is gone or being taken down. Coming from a state in which the peer had this node's
   * writes, an UpToDate Primary starts a new generation now (after_state_ch, "Lost contact to peer's copy
   * of the data"): the old current UUID with its Primary bit becomes the bitmap UUID, which
   * discard-younger/older-primary read later.
   */
  linkLost(next: LinkLostState): void {
    const wasUp = this.isUp;
    this.current = next;
    if (wasUp) this.startGenerationWithoutPeer();
  }

  private startGenerationWithoutPeer(): void {
    const dev = this.device;
    if (dev.disk !== "UpToDate" || dev.role !== "Primary" || dev.uuids[1] !== 0n) return;
    const u = newCurrentUuidAtSplit(dev.uuids);
    this.log.info({ current: u[0].toString(16), bitmap: u[1].toString(16) }, "new current UUID (peer lost)");
    dev
      .setUuids(u)
      .catch((e: Error) => this.log.error({ err: e.message }, "writing the new current UUID failed"));
  }

  /** The local disk state, changed on the connection's behalf; the device announces it (onStateChange). */
  setDisk(disk: DrbdDiskState): Promise<void> {
    return this.device.setDiskState(disk);
  }

  /** What the peer last reported in P_STATE (undefined while not connected). */
  get peer(): DrbdState | undefined {
    return this.peerState;
  }

  peerReported(state: DrbdState): void {
    this.peerState = state;
  }

  forgetPeer(): void {
    this.peerState = undefined;
  }

  get peerRoleName(): string {
    return this.peerState && this.isUp ? peerRoleName(this.peerState.role) : "Unknown";
  }

  get peerDiskName(): string {
    return this.peerState && this.isUp ? peerDiskName(this.peerState.disk) : "DUnknown";
  }

  /** The connection state a P_STATE carries when the local role or disk changes; none in other states. */
  get announcedConnState(): ConnState | undefined {
    switch (this.current) {
      case "Connected":
        return ConnState.Connected;
      case "SyncSource":
        return ConnState.SyncSource;
      case "SyncTarget":
        return ConnState.SyncTarget;
      case "Ahead":
        return ConnState.Ahead;
      case "Behind":
        return ConnState.Behind;
      case "VerifyS":
        return ConnState.VerifyS;
      case "VerifyT":
        return ConnState.VerifyT;
      default:
        return undefined;
    }
  }

  /** This node's P_STATE with connection state `conn`. */
  localState(conn: ConnState): DrbdState {
    const dev = this.device;
    return {
      role: roleOnWire(dev.role),
      peer: this.peerState?.role ?? Role.Unknown,
      conn,
      disk: diskStateOnWire(dev.disk),
      pdsk: this.peerState?.disk ?? DiskState.DUnknown,
      susp: false,
      aftrIsp: false,
      peerIsp: false,
      userIsp: false,
      suspNod: false,
      suspFen: false,
    };
  }
}
