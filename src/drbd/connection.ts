/**
 * The connection of one DRBD 8.4 volume to its peer: what drbdsetup connect / disconnect start and stop
 * (drbd_receiver.c conn_connect, conn_disconnect, drbd_asender's pings) and the PeerLink the device mirrors
 * its writes through. It wires the parts, each along the seam the kernel's sources draw:
 *
 * - sockets.ts, packet_stream.ts: the two TCP sockets and their framing (conn_connect, drbd_recv_header);
 * - handshake.ts: features, CRAM-HMAC, P_PROTOCOL and the per-volume parameters (drbd_do_features, …);
 * - sync_handshake.ts: the UUID comparison, split brain, resync while Connected (drbd_sync_handshake);
 * - conn_state.ts: the connection, disk and peer-disk states and their follow-ups (drbd_state.c);
 * - state_change_request.ts: cluster-wide state changes (P_STATE_CHG_REQ / _REPLY);
 * - request_sender.ts, peer_writes.ts: the request path both ways (drbd_req.c, receive_Data, receive_Barrier);
 * - resync.ts, verify_link.ts, ahead_behind.ts: resync, online verify, on-congestion pull-ahead;
 * - receiver.ts: the packet handler tables of both sockets (drbd_cmd_handler[], asender_tbl[]);
 * - link.ts: what they share; peer_device_port.ts: what they may ask of the local volume.
 *
 * Any packet the framer refuses (wrong magic, unknown command, oversized or truncated) drops the connection,
 * as does a P_PING_ACK that does not come within ping-timeout; the node then connects again.
 */
import type { Server } from "node:net";
import { createPeerServer } from "./peer_address_filter.js";
import { once } from "node:events";
import { ConnState, DiskState, DrbdCommand, DrbdProtocolError } from "./protocol.js";
import { announceForcedPrimary } from "./consider_resync.js";
import { congestionConfigError } from "./congestion.js";
import type { ConnectionOptions, ConnectionStateName, WireProtocol } from "./connection_options.js";
import type { Deallocation, PeerLink } from "./peer_device_port.js";
import type { VerifyCounters } from "./verify.js";
import { Link, type LinkStats } from "./link.js";
import type { PacketStream } from "./packet_stream.js";
import { closeGently, establishSocketPair, sleep, type SocketPair } from "./sockets.js";
import { handshake, handshakeVolume, sendSizes } from "./handshake.js";
import type { SenderEpoch } from "./sender_epoch.js";
import type { BarrierJoin } from "./barrier_join.js";
import { StateChangeRequests } from "./state_change_request.js";
import { Resync, type ResyncStats } from "./resync.js";
import { VerifyLink } from "./verify_link.js";
import { RequestSender } from "./request_sender.js";
import { PeerWriteReceiver } from "./peer_writes.js";
import { AheadBehind } from "./ahead_behind.js";
import { SyncHandshake } from "./sync_handshake.js";
import { PacketReceiver } from "./receiver.js";
import { isIntegrityAlg } from "./integrity.js";
import { RemoteReads } from "./remote_reads.js";
import { applyLiveOptions, type LiveOptionChanges } from "./live_settings.js";
import { ResizeLink } from "./resize_link.js";

export type {
  ConnectionOptions,
  ConnectionStateName,
  Endpoint,
  ResyncControlOptions,
  WireProtocol,
} from "./connection_options.js";

/**
 * A volume of a multi-volume resource (volume_connection.ts): its packets carry `volume`; the sockets, the
 * epochs and the pings are the resource's, and a failure of any volume drops the whole connection.
 */
export interface VolumeMembership {
  volume: number;
  epoch: SenderEpoch;
  barriers: BarrierJoin;
  /** This volume sends the connection's P_PINGs (the peer answers them connection-wide). */
  pings: boolean;
  /** The shared connection broke (NetworkFailure / ProtocolError). */
  lost: (e: Error) => void;
  /** The shared connection goes StandAlone for good. */
  standAlone: (why: string) => void;
}

/** mirror()'s answer while the link is down: not mirrored (one shared, settled promise). */
const NOT_MIRRORED: Promise<boolean> = Promise.resolve(false);

export class DrbdConnection implements PeerLink {
  private readonly link: Link;
  private readonly stateRequests: StateChangeRequests;
  private readonly resync: Resync;
  private readonly verify: VerifyLink;
  private readonly sender: RequestSender;
  private readonly peerWrites: PeerWriteReceiver;
  private readonly aheadBehind: AheadBehind;
  private readonly syncHandshake: SyncHandshake;
  private readonly receiver: PacketReceiver;
  private readonly remoteReads: RemoteReads;
  private readonly resize: ResizeLink;
  private server: Server | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private pingDeadline: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  /** A connect is pairing sockets: the listener keeps what arrives. */
  private establishing = false;
  private closed: Promise<void> = Promise.resolve();
  /** While a disk attaches on this connected node (attachWhileConnected): writes wait for it. */
  private attachGate: Promise<void> | undefined;
  /** An attach while connected is not finished (localDiskSyncing). */
  private attachPending = false;
  private markClosed: (() => void) | undefined;

  constructor(
    opts: ConnectionOptions,
    private readonly member?: VolumeMembership,
  ) {
    const protocol = opts.protocol ?? "C";
    if ((opts.cramHmacAlg === undefined) !== (opts.sharedSecret === undefined))
      throw new Error("drbd: cram-hmac-alg and shared-secret go together");
    if (
      opts.dataIntegrityAlg !== undefined &&
      opts.dataIntegrityAlg !== "" &&
      !isIntegrityAlg(opts.dataIntegrityAlg)
    )
      throw new Error(
        `drbd ${opts.device.name}: data-integrity-alg ${opts.dataIntegrityAlg} is not a known hash`,
      );
    const congestionError = congestionConfigError(protocol, opts);
    if (congestionError) throw new Error(`drbd ${opts.device.name}: ${congestionError}`);
    const link = (this.link = new Link(opts, (e) => this.connectionLost(e)));
    link.standAlone = (why) => this.goStandAlone(why);
    if (member) link.volume = member.volume;
    this.stateRequests = new StateChangeRequests(link, {
      acceptConnState: (conn) => this.acceptPeerConnState(conn),
      peerRoleChanged: (role) => this.syncHandshake.peerRoleChanged(role),
    });
    const request = (mask: number, val: number) => this.requestPeerStateChange(mask, val);
    this.resync = new Resync(link, request);
    this.verify = new VerifyLink(link, request);
    this.sender = new RequestSender(link, this.resync, member?.epoch);
    this.peerWrites = new PeerWriteReceiver(link, this.resync, member?.barriers);
    this.aheadBehind = new AheadBehind(link, this.sender, this.resync, (why) => this.goStandAlone(why));
    this.syncHandshake = new SyncHandshake(link, this.resync);
    this.remoteReads = new RemoteReads(link);
    this.resize = new ResizeLink(link, this.resync);
    this.receiver = new PacketReceiver({
      remoteReads: this.remoteReads,
      link,
      peerWrites: this.peerWrites,
      sender: this.sender,
      resync: this.resync,
      verify: this.verify,
      aheadBehind: this.aheadBehind,
      syncHandshake: this.syncHandshake,
      stateRequests: this.stateRequests,
      resize: this.resize,
      pingAnswered: () => {
        clearTimeout(this.pingDeadline);
        this.pingDeadline = undefined;
      },
    });
  }

  get state(): ConnectionStateName {
    return this.link.state.name;
  }

  /** Why the connection last dropped or refused to go on. */
  get error(): string | undefined {
    return this.link.lastError;
  }

  get peerRole(): string {
    return this.link.state.peerRoleName;
  }

  get peerDisk(): string {
    return this.link.state.peerDiskName;
  }

  get replicating(): boolean {
    // While a disk attaches, the exchange states (WFBitMapT) count too: the writes wait for the gate.
    return this.link.state.isUp || this.attachGate !== undefined;
  }

  /** PeerLink.localWrite: from an attach while connected until the disk is UpToDate (Resync tracks it). */
  localWrite(start: number, end: number): { before: Promise<unknown>; done: () => void } | undefined {
    if (!this.attachPending || this.link.device.disk === "UpToDate") return undefined;
    return this.resync.localWriteWhileTarget(start, end);
  }

  /** Counters for status and tests. */
  get stats(): LinkStats {
    return this.link.stats;
  }

  /** Result of the last sync decision (for status and tests). */
  get lastDecision(): { result: number; rule: number } | undefined {
    return this.syncHandshake.lastDecision;
  }

  /** How the last split brain was handled (for status and tests). */
  get lastSplitBrain(): SyncHandshake["lastSplitBrain"] {
    return this.syncHandshake.lastSplitBrain;
  }

  /** The counters of the running or last verify run (drbd_status `verify`). */
  get lastVerify(): VerifyCounters | undefined {
    return this.verify.last;
  }

  /** Resync counters for status and tests. */
  get resyncStats(): ResyncStats {
    return this.resync.stats;
  }

  /** /proc/drbd "pe:" (RequestSender). */
  get pendingRequests(): number {
    return this.sender.pendingRequests;
  }

  /** /proc/drbd "ua:" (PeerWriteReceiver). */
  get unackedRequests(): number {
    return this.peerWrites.unackedRequests;
  }

  /** Sectors of data in flight to the peer (for status and tests). */
  get inFlightSectors(): number {
    return this.sender.inFlightSectors;
  }

  /** Resync progress for status: percent done, or undefined when no resync runs. */
  get resyncDone(): number | undefined {
    const s = this.link.state.name;
    if (s === "VerifyS" || s === "VerifyT") {
      const percent = this.verify.percentDone;
      if (percent !== undefined) return percent;
    }
    if (s !== "SyncSource" && s !== "SyncTarget") return undefined;
    return this.resync.percentDone;
  }

  /** drbdsetup connect: listen and keep trying to reach the peer until disconnect(). */
  async connect(opts: { discardMyData?: boolean } = {}): Promise<void> {
    const link = this.link;
    if (!link.stopped) return;
    const discard = opts.discardMyData ?? link.opts.discardMyData ?? false;
    // drbd_adm_connect: ERR_DISCARD_IMPOSSIBLE
    if (discard && link.device.role === "Primary")
      throw new Error(`${link.device.name}: --discard-my-data not allowed when primary.`);
    link.discardMyData = discard;
    link.stopped = false;
    this.server = createPeerServer(link.opts.peer.host, link.log);
    // A socket that arrives while no connect is in progress belongs to a pairing the peer gave up on.
    this.server.on("connection", (s) => {
      if (!this.establishing) s.destroy();
    });
    this.server.listen(link.opts.local.port, link.opts.local.host);
    await once(this.server, "listening");
    link.state.change("WFConnection");
    this.loop = this.run();
  }

  /** Resolves when the state is `want` (or rejects after `timeoutMs`). */
  async waitFor(want: ConnectionStateName, timeoutMs = 10000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.link.state.name !== want) {
      if (Date.now() > until)
        throw new Error(
          `${this.link.device.name}: still ${this.link.state.name} after ${timeoutMs} ms, wanted ${want} (${this.link.lastError ?? ""})`,
        );
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** drbdsetup disconnect: drop the sockets, stop listening, StandAlone. */
  async disconnect(): Promise<void> {
    this.link.stopped = true;
    this.link.state.linkLost("Disconnecting");
    this.dropSockets(new Error("disconnect requested"));
    this.server?.close();
    this.server = undefined;
    await this.loop;
    this.link.state.change("StandAlone");
  }

  /**
   * drbdadm invalidate while connected: StartingSyncT, agreed by the peer (its StartingSyncS) through
   * P_STATE_CHG_REQ, every block out of sync on both sides, then a full resync from the peer.
   */
  invalidate(): Promise<void> {
    return this.resync.invalidate();
  }

  /** drbdadm invalidate-remote while connected: StartingSyncS, the peer's data is overwritten by a full resync. */
  invalidateRemote(): Promise<void> {
    return this.resync.invalidateRemote();
  }

  /** The wire protocol in force (net { protocol }, or what the peer's P_PROTOCOL_UPDATE set). */
  get protocol(): WireProtocol {
    return this.link.protocol;
  }

  /** The live net options (the running configuration `drbdadm adjust` compares the file with). */
  get options(): Readonly<ConnectionOptions> {
    return this.link.opts;
  }

  /**
   * drbdsetup net-options / disk-options on this connection (live_settings.ts): the changed options take
   * effect without reconnecting; the protocol, after-sb policies and resync settings are sent to the peer.
   * Returns the names of the options that changed.
   */
  async changeOptions(changes: LiveOptionChanges): Promise<string[]> {
    const changed = await applyLiveOptions(this.link, changes);
    if (changed.includes("pingIntSec") && this.pingTimer) {
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.ping(), (this.link.opts.pingIntSec ?? 10) * 1000);
    }
    return changed;
  }

  /**
   * drbdadm attach on a Diskless node while connected (drbd_adm_attach): `reattach` reads the metadata
   * again with P_STATE held back, then the peer hears P_SIZES, P_UUIDS and P_STATE with disk Negotiating
   * and the sync handshake resyncs what changed while this node had no disk (sync_handshake.ts).
   */
  async attachWhileConnected(reattach: () => Promise<void>): Promise<void> {
    const link = this.link;
    if (!link.state.isUp) throw new Error(`${link.device.name}: not connected`);
    link.state.attaching = true;
    this.attachPending = true;
    // Writes wait until the bitmaps are exchanged: the peer reads its data socket in sequence then, and a
    // P_DATA among the bitmap packets would break the exchange.
    let open = () => {};
    this.attachGate = new Promise<void>((r) => (open = r));
    try {
      await reattach();
      // The writes before the gate end their epoch now: a later P_BARRIER would also fall among the bitmap
      // packets (the kernel's state change starts a new epoch alike, start_new_tl_epoch).
      this.sender.closeNonEmptyEpoch();
      await this.syncHandshake.attachedWhileConnected(() => sendSizes(link));
      const until = Date.now() + link.timeoutMs;
      const s = link.state;
      const negotiating = () =>
        s.attaching || s.name === "WFBitMapS" || s.name === "WFBitMapT" || s.name === "WFSyncUUID";
      // (WFBitMapT is not "up": the data socket tells whether the connection is still there.)
      while (link.data && negotiating() && Date.now() < until) await sleep(5);
      if (s.attaching) link.log.warn("attach: the peer started no resync; the disk stays Inconsistent");
    } finally {
      link.state.attaching = false;
      this.attachGate = undefined;
      open();
    }
  }

  /** drbdadm resize while connected (resize_link.ts): both nodes grow to the smaller usable size. */
  startResize(opts: { assumeClean: boolean }): Promise<void> {
    return this.resize.start(opts);
  }

  /** drbdadm verify (verify_link.ts): resolves once the run started; `lastVerify` follows it. */
  startVerify(): Promise<void> {
    return this.verify.start();
  }

  /** new-current-uuid --clear-bitmap on a connected, never-synced pair (sync_handshake.ts). */
  skipInitialSync(): Promise<void> {
    return this.syncHandshake.skipInitialSync();
  }

  // ---- PeerLink

  /**
   * Mirror a write: on-congestion may first pull ahead (maybe_pull_ahead); Ahead, the blocks are only
   * marked for the peer; else P_DATA / P_TRIM / P_ZEROES (request_sender.ts).
   */
  mirror(
    offset: number,
    bytes: number,
    data: readonly Buffer[] | Deallocation,
    fua: boolean,
  ): Promise<boolean> {
    const state = this.link.state;
    if (this.attachGate) return this.attachGate.then(() => this.mirror(offset, bytes, data, fua));
    // drbd_should_do_remote: a Diskless peer takes no writes; they stay out of sync here (drbd_req_destroy).
    if (!state.isUp || state.peerHasNoDisk) return NOT_MIRRORED;
    if (state.name === "Connected" && this.aheadBehind.congestionActive) this.aheadBehind.maybePullAhead();
    if (state.name === "Ahead") return this.aheadBehind.sendOutOfSync(offset, bytes);
    return this.sender.mirror(offset, bytes, data, fua);
  }

  /** The peer's disk is UpToDate: it can serve reads this node cannot (drbd_req.c remote reads). */
  get peerReadable(): boolean {
    return this.replicating && this.link.state.peer?.disk === DiskState.UpToDate;
  }

  /** A read served by the peer (P_DATA_REQUEST, remote_reads.ts). */
  readRemote(offset: number, into: Buffer): Promise<void> {
    // A P_DATA_REQUEST must not land among the bitmap packets of an attach's sync handshake.
    if (this.attachGate) return this.attachGate.then(() => this.readRemote(offset, into));
    if (!this.peerReadable)
      return Promise.reject(new Error("the peer cannot serve reads (not connected or not UpToDate)"));
    return this.remoteReads.read(offset, into);
  }

  // ---- Multi-volume resources (volume_connection.ts)

  /** The link, for the resource connection that drives the volumes of a multi-volume resource. */
  get volumeLink(): Link {
    return this.link;
  }

  /**
   * This volume's part of a connection the resource established (drbd_connected for one peer device): its
   * P_SIZES / P_UUIDS / P_STATE exchange and sync handshake on its views of the shared sockets, then
   * replication. The caller copied the connection-wide agreement (version, features, integrity) to the link.
   */
  async joinShared(data: PacketStream, meta: PacketStream): Promise<"connected" | "standalone"> {
    const link = this.link;
    link.data = data;
    link.meta = meta;
    link.state.change("WFReportParams");
    const verdict = await handshakeVolume(link, this.syncHandshake, data);
    if (verdict === "connected" && !link.stopped) this.startReplication();
    return verdict;
  }

  /** A P_BARRIER while this volume reads its view in sequence (volume_router.ts): the epoch is also its. */
  receiveBarrier(payload: Buffer): void {
    this.peerWrites.receiveBarrier(payload);
  }

  /** The resource's shared sockets go: this volume lets go of its views of them (conn_disconnect). */
  dropShared(e: Error): void {
    this.dropSockets(e);
  }

  // -------------------------------------------------------------------------------------------------------

  private async run(): Promise<void> {
    const link = this.link;
    while (!link.stopped) {
      try {
        const { data, meta } = await this.establish();
        if (link.stopped) {
          data.socket.destroy();
          meta.socket.destroy();
          break;
        }
        link.state.change("WFReportParams");
        const verdict = await handshake(link, this.syncHandshake, data, meta);
        if (verdict === "standalone") {
          link.stopped = true;
          // Close the data socket gently first (FIN, the meta socket still open) so that the peer's receiver
          // still reads our P_UUIDS and P_STATE and comes to the same verdict before its ack receiver sees a
          // socket go (a kernel peer then logs its own split-brain detection and goes StandAlone too).
          await closeGently([link.data?.socket], 1000);
          this.dropSockets(new Error(link.lastError ?? "standalone"));
          this.server?.close();
          this.server = undefined;
          link.state.change("StandAlone");
          return;
        }
        // A before-resync handler may have refused the resync the handshake started (StandAlone now).
        if (link.stopped) return;
        this.startReplication();
        await this.closed;
        // conn_disconnect: NetworkFailure / ProtocolError → Unconnected → WFConnection, waiting for the peer again.
        if (!link.stopped) link.state.change("WFConnection");
      } catch (e) {
        if (link.stopped) break;
        link.lastError = (e as Error).message;
        link.log.warn({ err: link.lastError }, "connection attempt failed");
        this.dropSockets(e as Error);
        link.state.change(e instanceof DrbdProtocolError ? "ProtocolError" : "NetworkFailure");
        await sleep(50 + Math.random() * 200);
        if (!link.stopped) link.state.change("WFConnection");
      }
    }
  }

  /** conn_connect's socket pairing (sockets.ts); the node that accepted the meta socket resolves conflicts. */
  private async establish(): Promise<SocketPair> {
    const link = this.link;
    this.establishing = true;
    try {
      const pair = await establishSocketPair(this.server as Server, link.opts, link.log, () => link.stopped);
      link.resolveConflicts = pair.resolveConflicts;
      return pair;
    } finally {
      this.establishing = false;
    }
  }

  private startReplication(): void {
    const link = this.link;
    const dev = link.device;
    const data = this.data as PacketStream;
    const meta = this.meta as PacketStream;
    this.closed = new Promise<void>((r) => (this.markClosed = r));
    link.dispatchData(data);
    meta.dispatch(
      (p) => this.receiver.onMetaPacket(p),
      (e) => this.connectionLost(e),
    );
    dev.setPeer(this);
    let wasUpToDate = dev.disk === "UpToDate";
    // after_state_ch: a local role or disk change is announced with P_STATE (and new UUIDs when forced).
    this.unsubscribe = dev.onStateChange(() => {
      const forced = announceForcedPrimary({
        wasUpToDate,
        nowUpToDate: dev.disk === "UpToDate",
        primary: dev.role === "Primary",
        peerDisk: link.state.name === "Connected" ? link.state.peer?.disk : undefined,
      });
      if (dev.role === "Primary" || dev.disk !== "UpToDate") wasUpToDate = dev.disk === "UpToDate";
      const conn = link.state.announcedConnState;
      if (conn !== undefined) link.sendState(conn).catch(() => {});
      if (forced && conn === ConnState.Connected)
        link
          .sendUuids()
          .then(() => link.sendState(conn))
          .catch(() => {});
    });
    if (link.state.name === "SyncTarget") this.resync.pump();
    if (link.state.name === "SyncSource" && dev.bitmap.outOfSyncBits === 0) void this.resync.finish();
    if (this.member && !this.member.pings) return;
    const pingInt = (link.opts.pingIntSec ?? 10) * 1000;
    this.pingTimer = setInterval(() => this.ping(), pingInt);
  }

  /** receive_req_state's connection states: VerifyT (the peer verifies), StartingSyncS/T. */
  private acceptPeerConnState(conn: ConnState): number {
    if (this.link.state.name !== "Connected") return -8; // SS_RESYNC_RUNNING
    if (conn === ConnState.VerifyT) return this.verify.acceptAsTarget();
    return this.resync.acceptPeerSyncStart(conn);
  }

  /** P_PING on the meta socket; no P_PING_ACK within ping-timeout drops the connection. */
  private ping(): void {
    if (this.pingDeadline) return;
    const link = this.link;
    const timeout = (link.opts.pingTimeoutDs ?? 5) * 100;
    this.pingDeadline = setTimeout(
      () => this.connectionLost(new DrbdProtocolError(`PingAck did not arrive in time (${timeout} ms)`)),
      timeout,
    );
    link.send(this.meta, DrbdCommand.Ping, Buffer.alloc(0)).catch(() => {});
  }

  /** The connection broke while up (socket error, framing error, ping timeout, a failed peer request). */
  private connectionLost(e: Error): void {
    if (this.member) this.member.lost(e);
    else this.volumeLost(e);
  }

  /** This volume's side of a lost connection (for a multi-volume resource, called for each volume). */
  volumeLost(e: Error): void {
    const link = this.link;
    // The bitmap exchange of a sync handshake while connected fails into here too.
    const exchanging = link.state.name === "WFBitMapS" || link.state.name === "WFBitMapT";
    if (!link.state.isUp && !exchanging) return;
    link.lastError = e.message;
    link.log.warn({ err: e.message }, "connection lost");
    link.state.linkLost(
      link.stopped ? "Disconnecting" : e instanceof DrbdProtocolError ? "ProtocolError" : "NetworkFailure",
    );
    this.dropSockets(e);
    this.markClosed?.();
  }

  /**
   * C_DISCONNECTING for good: on-congestion disconnect (maybe_pull_ahead), a before-resync handler that
   * failed (drbd_start_resync). The connection goes StandAlone and stays there.
   */
  private goStandAlone(why: string): void {
    if (this.member) this.member.standAlone(why);
    else this.volumeStandAlone(why);
  }

  /** This volume's side of goStandAlone (for a multi-volume resource, called for each volume). */
  volumeStandAlone(why: string): void {
    const link = this.link;
    link.stopped = true;
    link.lastError = why;
    link.state.linkLost("Disconnecting");
    this.dropSockets(new Error(why));
    this.server?.close();
    this.server = undefined;
    link.state.change("StandAlone");
  }

  /**
   * conn_disconnect: timers stop, unconfirmed requests go out of sync (tl_clear), the device mirrors no
   * more, the sockets close, requests waiting for an ack fail, the peer's state is forgotten.
   */
  private dropSockets(e: Error): void {
    const link = this.link;
    clearInterval(this.pingTimer);
    clearTimeout(this.pingDeadline);
    this.resync.stop();
    this.aheadBehind.stop();
    this.sender.stop();
    this.verify.stop();
    this.stateRequests.cancel();
    this.resize.stop();
    this.sender.markUnconfirmed();
    this.pingTimer = undefined;
    this.pingDeadline = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.attachPending = false;
    if (link.device.disk !== "Diskless") link.device.setPeer(undefined);
    const d = link.data;
    const m = link.meta;
    link.data = undefined;
    link.meta = undefined;
    d?.fail(e);
    m?.fail(e);
    // Writes the peer will never confirm: the device marks them out of sync.
    this.sender.failPending();
    this.remoteReads.failPending(e);
    link.state.forgetPeer();
    link.peerUuids = undefined;
    if (link.state.isUp) link.state.change("NetworkFailure");
    this.markClosed?.();
  }

  /** The data socket's packet stream while connected. */
  private get data(): PacketStream | undefined {
    return this.link.data;
  }

  /** The meta socket's packet stream while connected. */
  private get meta(): PacketStream | undefined {
    return this.link.meta;
  }

  /** P_STATE_CHG_REQ and its reply (state_change_request.ts). */
  private requestPeerStateChange(mask: number, val: number): Promise<number> {
    return this.stateRequests.request(mask, val);
  }
}
