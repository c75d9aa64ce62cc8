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
import { fencePeerVerdict, type FencingPolicy } from "./fencing.js";
import { NO_HANDLERS, type HandlerRunner } from "./handlers.js";

export type SyncSide = "SyncSource" | "SyncTarget";

/** The states in which the connection ends when the link to the peer goes (conn_disconnect). */
export type LinkLostState = "Disconnecting" | "NetworkFailure" | "ProtocolError";

/** States from the end of the handshake on (the kernel's conn >= C_CONNECTED). */
function connectedOrBeyond(s: ConnectionStateName): boolean {
  return (
    s !== "StandAlone" &&
    s !== "Unconnected" &&
    s !== "WFConnection" &&
    s !== "WFReportParams" &&
    s !== "Disconnecting" &&
    s !== "NetworkFailure" &&
    s !== "ProtocolError"
  );
}

export interface ConnectionStateOptions {
  /** disk { fencing } (fencing.ts). */
  fencing?: FencingPolicy;
  /** handlers { } (handlers.ts): fence-peer here. */
  handlers?: HandlerRunner;
}

export class ConnectionStateMachine {
  private current: ConnectionStateName = "StandAlone";
  /**
   * A disk is being attached while connected (D_ATTACHING / D_NEGOTIATING): P_STATE reports Negotiating,
   * local changes are not announced until P_SIZES and P_UUIDS went out, and the sync handshake may make
   * even a Primary the SyncTarget (its disk is below D_CONSISTENT).
   */
  attaching = false;
  private peerState: DrbdState | undefined;
  /** The peer's disk as fence-peer left it while not connected (the kernel's pdsk); undefined: DUnknown. */
  private fencedPeerDisk: "Outdated" | "Inconsistent" | undefined;
  /** Connections established so far: a fence-peer result that outlived a reconnect is ignored (connect_cnt). */
  private connectCount = 0;
  /** The fence-peer handler running now, if any (tests and shutdown wait for it). */
  fencing: Promise<void> | undefined;
  /** after_state_ch's follow-up on entering SyncSource / SyncTarget: the resync's bookkeeping starts. */
  onSyncStart: (side: SyncSide) => void = () => {};
  /** A new current UUID while connected is sent to the peer (drbd_send_uuids); set by the link. */
  announceUuids: () => void = () => {};
  private readonly fencingPolicy: FencingPolicy;
  private readonly handlers: HandlerRunner;

  constructor(
    private readonly device: PeerDevicePort,
    private readonly log: Logger,
    opts: ConnectionStateOptions = {},
  ) {
    this.fencingPolicy = opts.fencing ?? "dont-care";
    this.handlers = opts.handlers ?? NO_HANDLERS;
  }

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
    const was = this.current;
    this.current = next;
    if (!connectedOrBeyond(was) && connectedOrBeyond(next)) this.reconnected();
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
    const peerDisk = this.peerState?.disk ?? DiskState.DUnknown;
    this.current = next;
    if (!wasUp) return;
    this.startGenerationWithoutPeer();
    // conn_disconnect: a Primary that did not know its peer Outdated or worse fences it (pdsk >= DUnknown).
    if (
      this.fencingPolicy !== "dont-care" &&
      this.device.role === "Primary" &&
      peerDisk >= DiskState.DUnknown
    )
      this.fencePeer();
  }

  /**
   * conn_try_outdate_peer: with resource-and-stonith I/O is frozen first (sanitize_state sets susp_fen as
   * the Primary loses the peer), then the fence-peer handler decides what the peer's disk is. A result that
   * comes after the peer reconnected is ignored, as the kernel ignores it ("Ignoring fence-peer exit code").
   */
  private fencePeer(): void {
    const dev = this.device;
    const policy = this.fencingPolicy;
    if (policy === "resource-and-stonith") dev.suspendIo("fencing");
    const attempt = this.connectCount;
    this.log.info({ fencing: policy }, "fencing the peer: running the fence-peer handler");
    this.fencing = this.handlers.run("fence-peer").then(async (code) => {
      const verdict = fencePeerVerdict(code, policy, dev.disk);
      if (verdict.broken) {
        this.log.error(
          { exitCode: code, suspended: dev.ioSuspended ?? "no" },
          `${verdict.text}${dev.ioSuspended ? "; I/O stays frozen until the peer reconnects or resume-io" : ""}`,
        );
        return;
      }
      this.log.info({ exitCode: code }, `fence-peer helper returned ${code} (${verdict.text})`);
      if (this.connectCount !== attempt || connectedOrBeyond(this.current)) {
        this.log.info("Ignoring fence-peer exit code (the peer reconnected meanwhile)");
        return;
      }
      if (verdict.peerDisk === undefined) return;
      this.fencedPeerDisk = verdict.peerDisk;
      // __drbd_set_state: MDF_PEER_OUT_DATED follows pdsk == Outdated.
      if (verdict.peerDisk === "Outdated")
        await dev
          .setPeerOutdated(true)
          .catch((e: Error) => this.log.error({ err: e.message }, "writing the peer-outdated flag failed"));
      // after_state_ch case 1: the peer is Outdated or worse, frozen I/O goes on.
      dev.resumeIo("fencing");
    });
  }

  /** after_state_ch case 2: the connection is back, fencing is over (frozen I/O resumes). */
  private reconnected(): void {
    this.connectCount++;
    this.fencedPeerDisk = undefined;
    if (this.device.ioSuspended === "fencing") {
      this.log.info("peer reconnected: I/O suspended for fencing resumes");
      this.device.resumeIo("fencing");
    }
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
    const before = this.peerState?.disk;
    const roleBefore = this.peerState?.role;
    this.peerState = state;
    const noDisk = state.disk < DiskState.Inconsistent;
    // after_state_ch "Lost contact to peer's copy of the data": the peer detached its disk (an I/O error,
    // drbdadm detach) while it or this node is Primary, so this UpToDate node holds the only copy and starts
    // a new generation, against which the peer's re-attach resyncs the blocks written meanwhile (they are
    // marked out of sync as they arrive). And "pdsk < D_INCONSISTENT ... ns.peer == R_PRIMARY": a Diskless
    // peer that connected as Secondary becomes Primary.
    const lostPeerDisk =
      before !== undefined &&
      before >= DiskState.Inconsistent &&
      noDisk &&
      (state.role === Role.Primary || this.device.role === "Primary");
    const disklessPeerPromoted = noDisk && roleBefore === Role.Secondary && state.role === Role.Primary;
    if (lostPeerDisk || disklessPeerPromoted) {
      this.log.warn({ peerDisk: state.disk }, "the peer has no disk: this node has the only copy");
      const dev = this.device;
      if (dev.disk === "UpToDate" && dev.uuids[1] === 0n) {
        const u = newCurrentUuidAtSplit(dev.uuids);
        // Sent at once: a Diskless Primary takes it as the UUID of the data it exposes (receive_uuids'
        // drbd_set_ed_uuid) and will only reconnect to data of that UUID.
        const written = dev.setUuids(u);
        this.announceUuids();
        written.catch((e: Error) =>
          this.log.error({ err: e.message }, "writing the new current UUID failed"),
        );
      }
    }
  }

  /** The peer reported a disk state below Inconsistent (Diskless, Failed): its writes are only here. */
  get peerHasNoDisk(): boolean {
    return this.peerState !== undefined && this.peerState.disk < DiskState.Inconsistent;
  }

  forgetPeer(): void {
    this.peerState = undefined;
  }

  get peerRoleName(): string {
    return this.peerState && this.isUp ? peerRoleName(this.peerState.role) : "Unknown";
  }

  get peerDiskName(): string {
    if (this.peerState && this.isUp) return peerDiskName(this.peerState.disk);
    return this.fencedPeerDisk ?? "DUnknown";
  }

  /** The connection state a P_STATE carries when the local role or disk changes; none in other states. */
  get announcedConnState(): ConnState | undefined {
    if (this.attaching) return undefined;
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
      disk: this.attaching ? DiskState.Negotiating : diskStateOnWire(dev.disk),
      pdsk: this.peerState?.disk ?? DiskState.DUnknown,
      susp: dev.ioSuspended === "user",
      aftrIsp: false,
      peerIsp: false,
      userIsp: false,
      suspNod: false,
      suspFen: dev.ioSuspended === "fencing",
    };
  }
}
