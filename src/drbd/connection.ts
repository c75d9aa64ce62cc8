/**
 * The connection of one DRBD 8.4 volume to its peer (drbd_receiver.c conn_connect / drbd_do_features /
 * drbd_do_auth / drbd_sync_handshake, drbd_worker.c, drbd_asender): two TCP sockets, "data" for packets that
 * carry or order data and "meta" for acknowledgements and pings.
 *
 * Connect (docs/drbd-protocol.md §2a): both nodes listen and connect; a node announces a socket it opened
 * with P_INITIAL_DATA when it has no data socket yet, else P_INITIAL_META; the acceptor classifies a socket by
 * that packet. Sockets that cross (both sides opened a data socket) are resolved by dropping one and
 * retrying at random. The node that accepted the meta socket holds RESOLVE_CONFLICTS.
 *
 * Then on the data socket: P_CONNECTION_FEATURES, optional CRAM-HMAC, P_PROTOCOL, P_SYNC_PARAM89, P_SIZES,
 * P_UUIDS, P_STATE both ways, and the sync decision from the UUIDs. This increment replicates when the
 * decision is "no resync" (rule 0); a decision that needs a resync, split brain or unrelated data drops to
 * StandAlone and says why.
 *
 * Replication: P_DATA with a sequence number and the ack the wire protocol asks for (C: P_WRITE_ACK after
 * the peer's disk write, B: P_RECV_ACK on receipt, A: none — done once sent). Writes are grouped into epochs
 * closed by P_BARRIER; the receiver flushes and answers P_BARRIER_ACK when the epoch's writes are done.
 * P_PING/P_PING_ACK on the meta socket every ping-int, answered within ping-timeout. Any packet the framer
 * refuses (wrong magic, unknown command, oversized or truncated) drops the connection.
 */
import { createServer, type Server } from "node:net";
import { once } from "node:events";
import { log, type Logger } from "../util/log.js";
import {
  authResponse,
  checkPeerChallenge,
  commandName,
  ConnState,
  decodeBarrier,
  decodeBarrierAck,
  decodeBlockAck,
  decodeConnectionFeatures,
  decodeData,
  decodeProtocol,
  decodeSizes,
  decodeState,
  decodeSyncParams,
  decodeUuids,
  DiskState,
  decodeTrim,
  DP_DISCARD,
  DP_FUA,
  DP_SEND_RECEIVE_ACK,
  DP_ZEROES,
  DRBD_MAX_BIO_SIZE,
  encodeTrim,
  encodeBlockDesc,
  decodeBlockDesc,
  FF_TRIM,
  FF_WZEROES,
  type DataHeader,
  DP_SEND_WRITE_ACK,
  DrbdCommand,
  DrbdProtocolError,
  encodeBarrier,
  encodeBarrierAck,
  encodeBlockAck,
  encodeBlockRequest,
  encodeConnectionFeatures,
  encodeSyncUuid,
  decodeSyncUuid,
  decodeBlockRequest,
  encodeBitmapPackets,
  BitmapTransfer,
  decodePlainBitmapChunk,
  decodeRleBitmapChunk,
  ID_SYNCER,
  encodeData,
  encodeProtocol,
  encodeSizes,
  encodeState,
  encodeSyncParams,
  encodeUuids,
  frame,
  makeChallenge,
  maxBioSizeFor,
  negotiateFeatures,
  PRO_VERSION_MAX,
  PRO_VERSION_MIN,
  protocolMismatch,
  Role,
  UUID_FLAG_CRASHED_PRIMARY,
  UUID_FLAG_INCONSISTENT,
  UUID_FLAG_SKIP_INITIAL_SYNC,
  verifyAuthResponse,
  WIRE_PROTOCOL,
  CF_DISCARD_MY_DATA,
  UUID_FLAG_DISCARD_MY_DATA,
  convertPeerState,
  decodeStateChangeReply,
  decodeStateChangeRequest,
  encodeStateChangeReply,
  encodeStateChangeRequest,
  ID_IN_SYNC,
  ID_OUT_OF_SYNC,
  packState,
  SS_CONCURRENT_ST_CHG,
  SS_CW_FAILED_BY_PEER,
  SS_SUCCESS,
  stateMask,
  unpackState,
  type Packet,
  type ProtocolParams,
  type DrbdState,
  type BlockRequest,
} from "./protocol.js";
import { MDF_CRASHED_PRIMARY, newUuid, SECTOR } from "./metadata.js";
import { compareUuids, newCurrentUuidAtSplit, resyncFinished, type UuidSet } from "./uuids.js";
import { OutOfSyncBitmap } from "./bitmap.js";
import { announceForcedPrimary, considerResync, peerForcedPrimary } from "./consider_resync.js";
import { RESYNC_DEFAULTS, RESYNC_TURN_MS, ResyncController } from "./resync_controller.js";
import { DrbdStateError, diskStateOnWire, roleOnWire, peerDiskName, peerRoleName } from "./drbd_states.js";
import {
  isVerifyAlg,
  OV_BLOCK,
  STATE_ERROR_TEXT,
  verifyDigest,
  VerifyRun,
  VERIFY_ALGS,
  type VerifyCounters,
} from "./verify.js";
import type { Deallocation, PeerLink } from "./peer_device_port.js";
import type { ConnectionOptions, ConnectionStateName, WireProtocol } from "./connection_options.js";
import { AHEAD_RESYNC_DELAY_MS, congestionConfigError, CongestionMonitor } from "./congestion.js";
import { TransferLog } from "./transfer_log.js";
import { PacketStream, type RawSocket } from "./packet_stream.js";
import { closeGently, establishSocketPair, sleep, type SocketPair } from "./sockets.js";
import { DEFAULT_AFTER_SB, discardMyDataVerdict, recoverSplitBrain } from "./after_sb.js";

export type {
  ConnectionOptions,
  ConnectionStateName,
  Endpoint,
  ResyncControlOptions,
  WireProtocol,
} from "./connection_options.js";

/** Resync data requested and not yet received, at most (max-buffers 2048 pages / 2, in sectors). */
const MAX_RS_IN_FLIGHT_SECTORS = 8192;

interface PendingWrite {
  resolve: (ok: boolean) => void;
  sector: number;
}

export class DrbdConnection implements PeerLink {
  private stateName: ConnectionStateName = "StandAlone";
  private server: Server | undefined;
  private data: PacketStream | undefined;
  private meta: PacketStream | undefined;
  private agreedVersion = 0;
  /** DRBD_FF_* both sides offered in P_CONNECTION_FEATURES. */
  private agreedFeatures = 0;
  private stopped = true;
  private readonly log: Logger;
  private readonly protocol: WireProtocol;
  private peerState: DrbdState | undefined;
  private peerUuids: UuidSet | undefined;
  private resolveConflicts = false;
  private nextBlockId = 1n;
  private seqNum = 0;
  private readonly pending = new Map<bigint, PendingWrite>();
  private pingTimer: NodeJS.Timeout | undefined;
  private pingDeadline: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private lastError: string | undefined;
  private loop: Promise<void> | undefined;
  // Epochs (write ordering): the sender's current epoch number and whether one of its writes completed.
  private epoch = 0;
  private epochWrites = 0;
  private epochHadCompletion = false;
  // Receiver side: writes of the epoch being received, by barrier number when P_BARRIER arrives.
  private peerEpochWrites = new Set<Promise<void>>();
  /** Resolves when every epoch closed by a P_BARRIER so far is written and flushed. */
  private epochGate: Promise<unknown> = Promise.resolve();
  private peerEpochCount = 0;
  /** Receiver side: settles when the last P_BARRIER_ACK queued has gone out (acks keep barrier order). */
  private barrierAcksSent: Promise<void> = Promise.resolve();
  /** Counters for status and tests. */
  readonly stats = {
    staleResyncReplies: 0,
    /** 4 KiB blocks of those stale replies: requested once more, so counted twice in resyncStats. */
    staleResyncBlocks: 0,
    sentWrites: 0,
    receivedWrites: 0,
    /** P_TRIM + P_ZEROES sent / received. */
    sentDeallocations: 0,
    receivedDeallocations: 0,
    barriersSent: 0,
    barrierAcks: 0,
    pingsAnswered: 0,
    /** Times this node pulled ahead / fell behind; P_OUT_OF_SYNC sent / received. */
    wentAhead: 0,
    wentBehind: 0,
    outOfSyncSent: 0,
    outOfSyncReceived: 0,
    /** Protocol A/B requests marked out of sync because the connection broke before their barrier ack. */
    unconfirmedMarked: 0,
  };
  private readonly congestion: CongestionMonitor;
  /** Protocols A and B: requests sent whose epoch the peer has not confirmed with P_BARRIER_ACK. */
  private readonly transferLog = new TransferLog();
  private aheadTimer: NodeJS.Timeout | undefined;
  private idleEpochTimer: NodeJS.Timeout | undefined;
  /** Result of the last sync decision (for status and tests). */
  lastDecision: { result: number; rule: number } | undefined;

  constructor(private readonly opts: ConnectionOptions) {
    this.protocol = opts.protocol ?? "C";
    if ((opts.cramHmacAlg === undefined) !== (opts.sharedSecret === undefined))
      throw new Error("drbd: cram-hmac-alg and shared-secret go together");
    const congestionError = congestionConfigError(this.protocol, opts);
    if (congestionError) throw new Error(`drbd ${opts.device.name}: ${congestionError}`);
    this.congestion = new CongestionMonitor(opts);
    this.log = log.child({
      module: "drbd-conn",
      device: opts.device.name,
      peer: `${opts.peer.host}:${opts.peer.port}`,
    });
  }

  get state(): ConnectionStateName {
    return this.stateName;
  }

  /** Why the connection last dropped or refused to go on. */
  get error(): string | undefined {
    return this.lastError;
  }

  get peerRole(): string {
    return this.peerState && this.isUp ? peerRoleName(this.peerState.role) : "Unknown";
  }

  get peerDisk(): string {
    return this.peerState && this.isUp ? peerDiskName(this.peerState.disk) : "DUnknown";
  }

  get replicating(): boolean {
    return this.isUp;
  }

  /** Connected, resyncing, Ahead or Behind: writes are mirrored or marked for the peer. */
  private get isUp(): boolean {
    return (
      this.stateName === "Connected" ||
      this.stateName === "SyncSource" ||
      this.stateName === "SyncTarget" ||
      this.stateName === "Ahead" ||
      this.stateName === "Behind" ||
      this.stateName === "VerifyS" ||
      this.stateName === "VerifyT" ||
      this.stateName === "StartingSyncS" ||
      this.stateName === "StartingSyncT" ||
      this.stateName === "WFSyncUUID"
    );
  }

  /** Resync progress for status: percent done, or undefined when no resync runs. */
  get resyncDone(): number | undefined {
    if ((this.stateName === "VerifyS" || this.stateName === "VerifyT") && this.verifyRun)
      return this.verifyRun.percent;
    if (this.stateName !== "SyncSource" && this.stateName !== "SyncTarget") return undefined;
    const total = this.resync.total;
    if (total === 0) return 100;
    return Math.floor((1000 * (total - this.opts.device.bitmap.outOfSyncBits)) / total) / 10;
  }

  /** drbdsetup connect: listen and keep trying to reach the peer until disconnect(). */
  async connect(opts: { discardMyData?: boolean } = {}): Promise<void> {
    if (!this.stopped) return;
    const discard = opts.discardMyData ?? this.opts.discardMyData ?? false;
    // drbd_adm_connect: ERR_DISCARD_IMPOSSIBLE
    if (discard && this.opts.device.role === "Primary")
      throw new Error(`${this.opts.device.name}: --discard-my-data not allowed when primary.`);
    this.discardMyData = discard;
    this.stopped = false;
    this.server = createServer();
    // A socket that arrives while no connect is in progress belongs to a pairing the peer gave up on.
    this.server.on("connection", (s) => {
      if (!this.establishing) s.destroy();
    });
    this.server.listen(this.opts.local.port, this.opts.local.host);
    await once(this.server, "listening");
    this.stateName = "WFConnection";
    this.loop = this.run();
  }

  /** Resolves when the state is `want` (or rejects after `timeoutMs`). */
  async waitFor(want: ConnectionStateName, timeoutMs = 10000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.stateName !== want) {
      if (Date.now() > until)
        throw new Error(
          `${this.opts.device.name}: still ${this.stateName} after ${timeoutMs} ms, wanted ${want} (${this.lastError ?? ""})`,
        );
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** drbdsetup disconnect: drop the sockets, stop listening, StandAlone. */
  async disconnect(): Promise<void> {
    const wasUp = this.isUp;
    this.stopped = true;
    this.stateName = "Disconnecting";
    if (wasUp) this.lostPeerData();
    this.dropSockets(new Error("disconnect requested"));
    this.server?.close();
    this.server = undefined;
    await this.loop;
    this.stateName = "StandAlone";
  }

  // -------------------------------------------------------------------------------------------------------

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const { data, meta } = await this.establish();
        if (this.stopped) {
          data.socket.destroy();
          meta.socket.destroy();
          break;
        }
        this.stateName = "WFReportParams";
        const verdict = await this.handshake(data, meta);
        if (verdict === "standalone") {
          this.stopped = true;
          // Close the data socket gently first (FIN, the meta socket still open) so that the peer's receiver
          // still reads our P_UUIDS and P_STATE and comes to the same verdict before its ack receiver sees a
          // socket go (a kernel peer then logs its own split-brain detection and goes StandAlone too).
          await closeGently([this.data?.socket], 1000);
          this.dropSockets(new Error(this.lastError ?? "standalone"));
          this.server?.close();
          this.server = undefined;
          this.stateName = "StandAlone";
          return;
        }
        this.startReplication();
        await this.closed;
        // conn_disconnect: NetworkFailure / ProtocolError → Unconnected → WFConnection, waiting for the peer again.
        if (!this.stopped) this.stateName = "WFConnection";
      } catch (e) {
        if (this.stopped) break;
        this.lastError = (e as Error).message;
        this.log.warn({ err: this.lastError }, "connection attempt failed");
        this.dropSockets(e as Error);
        this.stateName = e instanceof DrbdProtocolError ? "ProtocolError" : "NetworkFailure";
        await sleep(50 + Math.random() * 200);
        if (!this.stopped) this.stateName = "WFConnection";
      }
    }
  }

  private establishing = false;
  private closed: Promise<void> = Promise.resolve();
  private markClosed: (() => void) | undefined;

  /** conn_connect's socket pairing (sockets.ts); the node that accepted the meta socket resolves conflicts. */
  private async establish(): Promise<SocketPair> {
    this.establishing = true;
    try {
      const pair = await establishSocketPair(this.server as Server, this.opts, this.log, () => this.stopped);
      this.resolveConflicts = pair.resolveConflicts;
      return pair;
    } finally {
      this.establishing = false;
    }
  }

  private send(
    stream: PacketStream | undefined,
    cmd: DrbdCommand,
    payload: Buffer | Buffer[],
  ): Promise<void> {
    if (!stream || stream.socket.destroyed) return Promise.reject(new DrbdProtocolError("not connected"));
    const parts = frame(cmd, payload, this.agreedVersion);
    const sock = stream.socket;
    return new Promise<void>((resolve, reject) => {
      sock.cork();
      parts.forEach((p, i) =>
        sock.write(p, i === parts.length - 1 ? (e) => (e ? reject(e) : resolve()) : undefined),
      );
      sock.uncork();
    });
  }

  private async handshake(dataSock: RawSocket, metaSock: RawSocket): Promise<"connected" | "standalone"> {
    const t = (this.opts.timeoutDs ?? 60) * 100;
    const data = new PacketStream(dataSock, "data");
    const meta = new PacketStream(metaSock, "meta");
    this.data = data;
    this.meta = meta;
    this.agreedVersion = 0;
    data.socket.setNoDelay(true);
    meta.socket.setNoDelay(true);
    // drbd_do_features
    // Discards (P_TRIM) and zeroing (P_ZEROES) are replicated; WSAME and THIN_RESYNC are not offered.
    const mine = {
      protocolMin: PRO_VERSION_MIN,
      protocolMax: PRO_VERSION_MAX,
      featureFlags: this.opts.featureFlags ?? FF_TRIM | FF_WZEROES,
    };
    await this.send(data, DrbdCommand.ConnectionFeatures, encodeConnectionFeatures(mine));
    const agreed = negotiateFeatures(
      mine,
      decodeConnectionFeatures(await data.expect(DrbdCommand.ConnectionFeatures, t)),
    );
    if (typeof agreed === "string") return this.standalone(agreed);
    this.agreedVersion = agreed.agreedVersion;
    this.agreedFeatures = agreed.agreedFeatures;
    data.setAgreedVersion(this.agreedVersion);
    meta.setAgreedVersion(this.agreedVersion);
    // drbd_do_auth
    if (this.opts.cramHmacAlg !== undefined && this.opts.sharedSecret !== undefined) {
      const alg = this.opts.cramHmacAlg;
      const secret = this.opts.sharedSecret;
      const challenge = makeChallenge();
      await this.send(data, DrbdCommand.AuthChallenge, challenge);
      const peerChallenge = await data.expect(DrbdCommand.AuthChallenge, t);
      const bad = checkPeerChallenge(peerChallenge, challenge);
      if (bad) return this.standalone(`authentication failed: ${bad}`);
      await this.send(data, DrbdCommand.AuthResponse, authResponse(alg, secret, peerChallenge));
      const response = await data.expect(DrbdCommand.AuthResponse, t);
      if (!verifyAuthResponse(alg, secret, challenge, response))
        return this.standalone("authentication of peer failed (wrong shared-secret?)");
      this.log.info({ alg }, "peer authenticated");
    }
    // P_PROTOCOL
    const asb = this.opts.afterSb ?? DEFAULT_AFTER_SB;
    const params: ProtocolParams = {
      protocol: WIRE_PROTOCOL[this.protocol],
      afterSb0p: asb.after0p,
      afterSb1p: asb.after1p,
      afterSb2p: asb.after2p,
      connFlags: this.discardMyData ? CF_DISCARD_MY_DATA : 0,
      twoPrimaries: false,
      integrityAlg: "",
    };
    await this.send(data, DrbdCommand.Protocol, encodeProtocol(params, this.agreedVersion));
    const peerParams = decodeProtocol(await data.expect(DrbdCommand.Protocol, t), this.agreedVersion);
    const mismatch = protocolMismatch(params, peerParams);
    if (mismatch) return this.standalone(`incompatible ${mismatch} settings`);
    // Per volume: P_SYNC_PARAM89, P_SIZES, P_UUIDS, P_STATE.
    const dev = this.opts.device;
    const sp = encodeSyncParams(
      {
        resyncRate: this.opts.resyncRateKiB ?? 250,
        verifyAlg: this.opts.verifyAlg ?? "",
        csumsAlg: "",
        cPlanAhead: this.opts.resyncControl?.cPlanAhead ?? 0,
        cDelayTarget: this.opts.resyncControl?.cDelayTarget ?? RESYNC_DEFAULTS.cDelayTarget,
        cFillTarget: this.opts.resyncControl?.cFillTarget ?? RESYNC_DEFAULTS.cFillTarget,
        cMaxRate: this.opts.resyncControl?.cMaxRateKiB ?? RESYNC_DEFAULTS.cMaxRateKiB,
      },
      this.agreedVersion,
    );
    await this.send(data, sp.command, sp.payload);
    const sizes = dev.layout.usableSectors;
    await this.send(
      data,
      DrbdCommand.Sizes,
      encodeSizes({
        diskSize: sizes,
        userSize: 0,
        currentSize: sizes,
        maxBioSize: maxBioSizeFor(this.agreedVersion),
        queueOrderType: 0,
        ddsFlags: 0,
      }),
    );
    await this.sendUuids();
    await this.send(data, DrbdCommand.State, encodeState(this.localState(ConnState.WFReportParams)));
    let peerSizes: number | undefined;
    while (!this.peerUuids || !this.peerState || peerSizes === undefined) {
      const p = await data.next(t);
      switch (p.header.command) {
        case DrbdCommand.SyncParam:
        case DrbdCommand.SyncParam89: {
          // receive_SyncParam: both sides must name the same verify-alg.
          const sp = decodeSyncParams(p.payload, this.agreedVersion);
          const peerAlg = sp.verifyAlg;
          const mineAlg = this.opts.verifyAlg ?? "";
          if (peerAlg !== undefined && peerAlg !== mineAlg)
            return this.standalone(`Different verify-alg settings. me="${mineAlg}" peer="${peerAlg}"`);
          // And the same csums-alg; usertgt has no checksum-based resync, so it announces none (a kernel
          // peer with csums-alg set refuses alike: docs/drbd-kernel-interop.md).
          if (sp.csumsAlg !== undefined && sp.csumsAlg !== "")
            return this.standalone(`Different csums-alg settings. me="" peer="${sp.csumsAlg}"`);
          break;
        }
        case DrbdCommand.Sizes:
          peerSizes = decodeSizes(p.payload).diskSize;
          break;
        case DrbdCommand.Uuids: {
          const u = decodeUuids(p.payload);
          this.peerUuids = [u.current, u.bitmap, u.history[0], u.history[1]];
          this.peerUuidFlags = Number(u.flags);
          this.peerBitsSet = Number(u.bitsSet);
          break;
        }
        case DrbdCommand.State:
          this.peerState = decodeState(p.payload);
          break;
        default:
          throw new DrbdProtocolError(`unexpected ${commandName(p.header.command)} during the handshake`);
      }
    }
    if (peerSizes !== sizes) this.log.warn({ mine: sizes, peer: peerSizes }, "the peer's disk size differs");
    // drbd_sync_handshake
    const decision = this.compareWithPeer(this.peerUuids, "uuid compare");
    if (decision.result === -1000) return this.standalone("Unrelated data, aborting!");
    const hg =
      Math.abs(decision.result) === 100 ? await this.resolveSplitBrain(decision.result) : decision.result;
    // discard-my-data is one-shot: the next connect without it is an ordinary one (receive_state).
    this.discardMyData = false;
    if (hg === -100) return this.standalone("Split-Brain detected but unresolved, dropping connection!");
    if (hg !== 0) {
      const dev2 = this.opts.device;
      const source = hg > 0;
      // An Inconsistent source or a Primary target cannot be right (drbd_sync_handshake).
      if (source && dev2.disk === "Inconsistent")
        return this.standalone("I shall become SyncSource, but I am inconsistent!");
      if (!source && dev2.role === "Primary")
        return this.standalone("I shall become SyncTarget, but I am primary!");
      if (Math.abs(hg) >= 2) {
        dev2.bitmap.setAll();
        this.log.info({ bits: dev2.bitmap.outOfSyncBits }, "full sync: writing the whole bitmap");
      }
      if (!source) await dev2.setDiskState("Inconsistent");
      await this.exchangeBitmaps(data, source, t);
      if (source) await this.beginSyncSource();
      else {
        this.stateName = "WFSyncUUID";
        await this.beginSyncTarget(
          decodeSyncUuid(await this.expectAfterStates(data, DrbdCommand.SyncUuid, t)),
        );
      }
      return "connected";
    }
    this.stateName = "Connected";
    await this.send(data, DrbdCommand.State, encodeState(this.localState(ConnState.Connected)));
    this.log.info({ agreedVersion: this.agreedVersion, protocol: this.protocol }, "Connected");
    return "connected";
  }

  /** CONSIDER_RESYNC (consider_resync.ts). */
  private considerResyncFlag = false;

  /**
   * receive_state while Connected: whether this P_STATE starts the sync handshake again (a peer forced to
   * Primary, or a peer that already went WFBitMapS/T). If so the data socket is read in sequence until the
   * resync runs; returns true.
   */
  private considerSyncHandshake(before: DrbdState | undefined, after: DrbdState): boolean {
    const c = considerResync({
      myDisk: diskStateOnWire(this.opts.device.disk),
      before,
      after,
      flag: this.considerResyncFlag,
    });
    this.considerResyncFlag = c.flag;
    // StartingSyncS/T come with P_STATE_CHG_REQ, which acceptPeerSyncStart handles.
    const viaRequest = after.conn === ConnState.StartingSyncS || after.conn === ConnState.StartingSyncT;
    if (!c.run || viaRequest || this.stateName !== "Connected" || !this.data) return false;
    const data = this.data;
    data.pause();
    this.syncHandshakeWhileConnected(data)
      .then(() => {
        if (this.data !== data) return;
        data.dispatch(
          (p) => this.onDataPacket(p),
          (e) => this.connectionLost(e),
        );
        if (this.stateName === "SyncTarget") this.pumpResync();
      })
      .catch((e: Error) => this.connectionLost(e));
    return true;
  }

  /** drbd_uuid_compare against the peer's last P_UUIDS, kept for status and logged as `what`. */
  private compareWithPeer(peer: UuidSet, what: string): { result: number; rule: number } {
    const dev = this.opts.device;
    const decision = compareUuids({
      mine: dev.uuids,
      peer,
      myCrashedPrimary: (dev.superBlock.flags & MDF_CRASHED_PRIMARY) !== 0,
      peerCrashedPrimary: (this.peerUuidFlags & UUID_FLAG_CRASHED_PRIMARY) !== 0,
      resolveConflicts: this.resolveConflicts,
    });
    this.lastDecision = decision;
    this.log.info({ ...decision }, what);
    return decision;
  }

  /** drbd_sync_handshake on a Connected pair, then the bitmap exchange and the resync as on connecting. */
  private async syncHandshakeWhileConnected(data: PacketStream): Promise<void> {
    const dev = this.opts.device;
    const t = (this.opts.timeoutDs ?? 60) * 100;
    if (!this.peerUuids) return;
    const hg = this.compareWithPeer(this.peerUuids, "uuid compare while connected").result;
    const source = hg > 0;
    if (hg === 0 || Math.abs(hg) >= 100) return;
    if (source && dev.disk === "Inconsistent") return;
    if (!source && dev.role === "Primary") return;
    if (Math.abs(hg) >= 2) dev.bitmap.setAll();
    if (!source) {
      // "we want resync, peer has not yet decided": the source decides alike on seeing WFBitMapT.
      await dev.setDiskState("Inconsistent");
      this.stateName = "WFBitMapT";
      await this.sendUuids();
      await this.send(data, DrbdCommand.State, encodeState(this.localState(ConnState.WFBitMapT)));
    }
    await this.exchangeBitmaps(data, source, t);
    if (source) await this.beginSyncSource();
    else {
      this.stateName = "WFSyncUUID";
      await this.beginSyncTarget(decodeSyncUuid(await this.expectAfterStates(data, DrbdCommand.SyncUuid, t)));
    }
  }

  /** `cmd` next, taking the P_STATE packets a kernel peer sends between handshake steps on the way. */
  private async expectAfterStates(data: PacketStream, cmd: DrbdCommand, t: number): Promise<Buffer> {
    for (;;) {
      const p = await data.next(t);
      if (p.header.command === cmd) return p.payload;
      if (p.header.command !== DrbdCommand.State)
        throw new DrbdProtocolError(`expected ${commandName(cmd)}, got ${commandName(p.header.command)}`);
      this.peerState = decodeState(p.payload);
    }
  }

  /**
   * drbd_start_resync as SyncSource with drbd_gen_and_send_sync_uuid: a new bitmap UUID marks this resync
   * and P_SYNC_UUID starts the target. Used by the handshake and by invalidate / invalidate-remote.
   */
  private async beginSyncSource(): Promise<void> {
    const dev = this.opts.device;
    const u = dev.uuids;
    const bm = u[1] & ~1n;
    const syncUuid = bm !== 0n && bm !== 4n ? BigInt.asUintN(64, bm + (1n << 48n)) : newUuid();
    await dev.setUuids([u[0], syncUuid, u[2], u[3]]);
    // SyncSource before the target can ask for the first block.
    this.enterResync("SyncSource");
    await this.send(this.data, DrbdCommand.SyncUuid, encodeSyncUuid(syncUuid));
    await this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.SyncSource)));
  }

  /** receive_sync_uuid then drbd_start_resync as SyncTarget: the source's sync UUID becomes my current. */
  private async beginSyncTarget(syncUuid: bigint): Promise<void> {
    const dev = this.opts.device;
    const u = dev.uuids;
    const old = u[0] & ~1n;
    await dev.setUuids(old === 4n ? [syncUuid, 0n, u[2], u[3]] : [syncUuid, 0n, old, u[2]]);
    this.enterResync("SyncTarget");
    await this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.SyncTarget)));
  }

  private enterResync(side: "SyncSource" | "SyncTarget"): void {
    const dev = this.opts.device;
    this.resync = {
      total: dev.bitmap.outOfSyncBits,
      requested: 0,
      requestedBlocks: 0,
      inflight: 0,
      cursor: 0,
    };
    this.resetResyncController();
    this.stateName = side;
    this.log.info({ role: side, outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "resync started");
  }

  /** A P_SYNC_UUID that came while this node was still StartingSyncT (it travels on the other socket). */
  private pendingSyncUuid: bigint | undefined;

  /**
   * drbdadm invalidate while connected: StartingSyncT, agreed by the peer (its StartingSyncS) through
   * P_STATE_CHG_REQ, every block out of sync on both sides, then a full resync from the peer.
   */
  async invalidate(): Promise<void> {
    const dev = this.opts.device;
    if (dev.role === "Primary")
      throw new DrbdStateError(
        dev.name,
        -2,
        "Need access to UpToDate data (a Primary cannot become SyncTarget here)",
      );
    if (this.isUp && this.stateName === "Connected" && this.peerState?.disk !== DiskState.UpToDate)
      throw new DrbdStateError(dev.name, -2, "Need access to UpToDate data");
    await this.requestSyncStart("StartingSyncT");
  }

  /** drbdadm invalidate-remote while connected: StartingSyncS, the peer's data is overwritten by a full resync. */
  async invalidateRemote(): Promise<void> {
    const dev = this.opts.device;
    if (dev.disk !== "UpToDate") throw new DrbdStateError(dev.name, -2, "Need access to UpToDate data");
    if (this.isUp && this.stateName === "Connected" && this.peerState?.role === Role.Primary)
      throw new DrbdStateError(dev.name, -2, "Need access to UpToDate data (the peer is Primary)");
    await this.requestSyncStart("StartingSyncS");
  }

  private async requestSyncStart(want: "StartingSyncS" | "StartingSyncT"): Promise<void> {
    const name = this.opts.device.name;
    if (!this.isUp) throw new DrbdStateError(name, -15, STATE_ERROR_TEXT[-15] as string);
    if (this.stateName !== "Connected") throw new DrbdStateError(name, -8, STATE_ERROR_TEXT[-8] as string);
    // Enter the state before asking: the peer's P_SYNC_UUID (data socket) may beat its reply (meta socket).
    this.stateName = want;
    this.pendingSyncUuid = undefined;
    const conn = want === "StartingSyncS" ? ConnState.StartingSyncS : ConnState.StartingSyncT;
    const rv = await this.requestPeerStateChange(stateMask(["conn"]), packState({ conn }));
    if (rv < SS_SUCCESS) {
      if (this.stateName === want) this.stateName = "Connected";
      throw new DrbdStateError(name, rv, STATE_ERROR_TEXT[rv] ?? "State change was refused by peer node");
    }
    await this.startingSync(want);
  }

  /** after_state_ch for StartingSyncS/T: set and write the whole bitmap, then start (abw_start_sync). */
  private async startingSync(side: "StartingSyncS" | "StartingSyncT"): Promise<void> {
    const dev = this.opts.device;
    this.stateName = side;
    dev.bitmap.setAll();
    this.log.info({ side, bits: dev.bitmap.outOfSyncBits }, "full sync: writing the whole bitmap");
    if (side === "StartingSyncT") await dev.setDiskState("Inconsistent");
    await dev.persistBitmap();
    if (this.stateName !== side) return;
    if (side === "StartingSyncS") {
      await this.beginSyncSource();
      if (dev.bitmap.outOfSyncBits === 0) void this.finishResync();
      return;
    }
    this.stateName = "WFSyncUUID";
    await this.syncUuidArrived();
  }

  /** WFSyncUUID with the source's P_SYNC_UUID in hand: resync as SyncTarget. */
  private async syncUuidArrived(): Promise<void> {
    const uuid = this.pendingSyncUuid;
    if (this.stateName !== "WFSyncUUID" || uuid === undefined) return;
    this.pendingSyncUuid = undefined;
    await this.beginSyncTarget(uuid);
    this.pumpResync();
  }

  private peerUuidFlags = 0;
  /** The peer's P_UUIDS "bits set" and mine when I sent P_UUIDS (comm_bm_set): the split-brain change counts. */
  private peerBitsSet = 0;
  private myBitsSent = 0;
  private discardMyData = false;
  /** How the last split brain was handled (for status and tests). */
  lastSplitBrain:
    { primaries: number; result: number; by: "after-sb" | "discard-my-data" | "unresolved" } | undefined;

  /**
   * drbd_sync_handshake for ±100: +100 (both changed since a shared generation), or −100 (ambiguous
   * histories) with always-asbp, goes to the after-sb policy; what it leaves unresolved may be settled by
   * --discard-my-data. Returns ±1 (bitmap-based), ±2 (full, ambiguous case) or −100.
   */
  private async resolveSplitBrain(uuidResult: number): Promise<number> {
    const dev = this.opts.device;
    let hg = -100;
    const myPrimary = dev.role === "Primary";
    const peerPrimary = this.peerState?.role === Role.Primary;
    const primaries = (myPrimary ? 1 : 0) + (peerPrimary ? 1 : 0);
    if (uuidResult === 100 || this.opts.alwaysAsbp) {
      const v = recoverSplitBrain({
        policies: this.opts.afterSb ?? DEFAULT_AFTER_SB,
        myPrimary,
        peerPrimary,
        myBitmapUuid: dev.uuids[1],
        peerBitmapUuid: this.peerUuids?.[1] ?? 0n,
        myChanges: this.myBitsSent,
        peerChanges: this.peerBitsSet,
        resolveConflicts: this.resolveConflicts,
      });
      if (v.configError) this.log.error({ primaries }, "Configuration error.");
      if (v.fellBack)
        this.log.warn("Discard younger/older primary did not find a decision, using discard-least-changes");
      if (v.demoteSelf) {
        // call-pri-lost-after-sb without handler scripts: the losing Primary gives up its role (always
        // possible here), so its data can be overwritten; nothing is rebooted.
        await dev.secondary();
        this.log.warn("Successfully gave up primary role.");
      }
      if (Math.abs(v.result) < 100) {
        this.log.warn(
          `Split-Brain detected, ${primaries} primaries, automatically solved. Sync from ${v.result < 0 ? "peer" : "this"} node`,
        );
        hg = uuidResult === -100 ? v.result * 2 : v.result;
        if (uuidResult === -100) this.log.warn("Doing a full sync, since UUIDs where ambiguous.");
        this.lastSplitBrain = { primaries, result: hg, by: "after-sb" };
        return hg;
      }
    }
    hg = discardMyDataVerdict(this.discardMyData, (this.peerUuidFlags & UUID_FLAG_DISCARD_MY_DATA) !== 0);
    if (hg !== -100) {
      this.log.warn(`Split-Brain detected, manually solved. Sync from ${hg < 0 ? "peer" : "this"} node`);
      this.lastSplitBrain = { primaries, result: hg, by: "discard-my-data" };
      return hg;
    }
    this.lastSplitBrain = { primaries, result: -100, by: "unresolved" };
    return -100;
  }

  /**
   * The link to the peer's data is gone while this node is an UpToDate Primary (after_state_ch "Lost contact
   * to peer's copy of the data"): start a new generation now, the old current UUID with its Primary bit
   * becoming the bitmap UUID; discard-younger/older-primary read that bit later.
   */
  private lostPeerData(): void {
    const dev = this.opts.device;
    if (dev.disk !== "UpToDate" || dev.role !== "Primary" || dev.uuids[1] !== 0n) return;
    const u = newCurrentUuidAtSplit(dev.uuids);
    this.log.info({ current: u[0].toString(16), bitmap: u[1].toString(16) }, "new current UUID (peer lost)");
    dev
      .setUuids(u)
      .catch((e: Error) => this.log.error({ err: e.message }, "writing the new current UUID failed"));
  }
  /** Resync bookkeeping: bits at the start, requests sent, their 4 KiB blocks, requests outstanding. */
  private resync = { total: 0, requested: 0, requestedBlocks: 0, inflight: 0, cursor: 0 };
  private resyncTimer: NodeJS.Timeout | undefined;
  /** drbd_rs_number_requests: how much each 100 ms turn asks for, and what is left of this turn. */
  private rsController = new ResyncController({ cPlanAhead: 0 });
  private rsSectIn = 0;
  private rsBudget = 0;
  private rsNextTurn = 0;
  private rsAppSeq = 0;
  /** Resync sectors requested and not answered yet, now (the controller learns of replies once a turn). */
  private rsOutstanding = 0;
  /** SyncTarget: the peer-write sequence number when each resync request (by sector) was sent. */
  private readonly rsRequestSeq = new Map<number, number>();
  /** SyncTarget: application writes received while resyncing, to spot stale resync replies. */
  private peerWrites: { seq: number; start: number; end: number }[] = [];
  private peerDataSeq = 0;
  /** SyncTarget: resync writes in flight; a later application write to the same blocks waits for them. */
  private readonly rsWrites = new Set<{ start: number; end: number; done: Promise<void> }>();
  private finishing = false;

  /** Resync counters for status and tests. */
  get resyncStats(): { total: number; requested: number; requestedBlocks: number } {
    const { total, requested, requestedBlocks } = this.resync;
    return { total, requested, requestedBlocks };
  }

  /**
   * The bitmap exchange (WFBitMapS / WFBitMapT): the source sends its bitmap first, the target merges it
   * and answers with its own, which the source merges. RLE (P_COMPRESSED_BITMAP) where it is smaller.
   */
  private async exchangeBitmaps(data: PacketStream, source: boolean, t: number): Promise<void> {
    const dev = this.opts.device;
    this.stateName = source ? "WFBitMapS" : "WFBitMapT";
    const sendMine = async () => {
      for (const [cmd, payload] of encodeBitmapPackets(
        dev.bitmap.words,
        dev.bitmap.bits,
        this.agreedVersion,
        true,
      ))
        await this.send(data, cmd, payload);
    };
    const receivePeers = async () => {
      const xfer = new BitmapTransfer(dev.bitmap.bits);
      const peer = Buffer.alloc(dev.bitmap.words.length);
      while (!xfer.done) {
        const p = await data.next(t);
        if (p.header.command === DrbdCommand.Bitmap)
          decodePlainBitmapChunk(p.payload, xfer, peer, this.agreedVersion);
        else if (p.header.command === DrbdCommand.CompressedBitmap)
          decodeRleBitmapChunk(p.payload, xfer, peer, this.agreedVersion);
        // The kernel announces its WFBitMapS/T state while the bitmaps travel (seen with Linux 6.1's DRBD).
        else if (p.header.command === DrbdCommand.State) this.peerState = decodeState(p.payload);
        else throw new DrbdProtocolError(`expected the peer's bitmap, got ${commandName(p.header.command)}`);
      }
      const added = dev.bitmap.merge(peer);
      this.log.info({ added, stats: xfer.stats }, "received the peer's bitmap");
    };
    if (source) {
      await sendMine();
      await receivePeers();
    } else {
      await receivePeers();
      await sendMine();
    }
    await dev.persistBitmap();
  }

  /**
   * SyncTarget: request out-of-sync blocks in runs of up to 128 KiB, at most `resync-rate` KiB per second
   * (checked every 100 ms) and 16 requests outstanding.
   */
  private pumpResync(): void {
    if (this.stateName !== "SyncTarget" || !this.data || this.finishing) return;
    const dev = this.opts.device;
    const now = Date.now();
    if (now >= this.rsNextTurn) {
      // One controller turn; application writes from the peer since the last one count for c-min-rate.
      const appActive = this.peerDataSeq !== this.rsAppSeq;
      this.rsAppSeq = this.peerDataSeq;
      // Less than a 4 KiB request carries over, so that low rates still move.
      this.rsBudget = (this.rsBudget % 8) + this.rsController.turn(this.rsSectIn, now, appActive);
      this.rsSectIn = 0;
      this.rsNextTurn = now + RESYNC_TURN_MS;
    }
    while (this.rsOutstanding < MAX_RS_IN_FLIGHT_SECTORS && this.rsBudget >= 8) {
      const first = dev.bitmap.nextSet(this.resync.cursor);
      if (first < 0) break;
      let last = first;
      while (
        last + 1 < dev.bitmap.bits &&
        last - first < 31 &&
        dev.bitmap.test(last + 1) &&
        (last - first + 2) * 8 <= this.rsBudget
      )
        last++;
      this.resync.cursor = last + 1;
      const blocks = last - first + 1;
      this.rsBudget -= blocks * 8;
      this.resync.inflight++;
      this.resync.requested++;
      this.resync.requestedBlocks += blocks;
      const sector = (first * 4096) / SECTOR;
      const size = Math.min(blocks * 4096, dev.layout.usableSectors * SECTOR - first * 4096);
      this.rsController.requested(size / SECTOR);
      this.rsOutstanding += size / SECTOR;
      this.rsRequestSeq.set(sector, this.peerDataSeq);
      this.send(
        this.data,
        DrbdCommand.RsDataRequest,
        encodeBlockRequest({ sector, blockId: ID_SYNCER, size }),
      ).catch(() => {});
    }
    if (this.resync.inflight === 0 && dev.bitmap.nextSet(0) < 0) {
      void this.finishResync();
      return;
    }
    // Wrapped around with bits still set (a request failed): start over from the beginning.
    if (this.resync.inflight === 0 && dev.bitmap.nextSet(this.resync.cursor) < 0) this.resync.cursor = 0;
    clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => this.pumpResync(), Math.max(1, this.rsNextTurn - Date.now()));
  }

  /** A new resync starts with a fresh controller (its plan and in-flight count belong to one resync). */
  private resetResyncController(): void {
    const rate = this.opts.resyncRateKiB ?? RESYNC_DEFAULTS.resyncRateKiB;
    const control = this.opts.resyncControl ?? { ...RESYNC_DEFAULTS, cPlanAhead: 0 };
    this.rsController = new ResyncController({ ...control, resyncRateKiB: rate });
    this.rsSectIn = 0;
    this.rsBudget = 0;
    this.rsNextTurn = 0;
    this.rsOutstanding = 0;
    this.rsAppSeq = this.peerDataSeq;
  }

  /** drbd_resync_finished: the target takes the source's current UUID and is UpToDate; the source drops its bitmap UUID. */
  private async finishResync(): Promise<void> {
    const was = this.stateName;
    if ((was !== "SyncSource" && was !== "SyncTarget") || this.finishing) return;
    this.finishing = true;
    try {
      await this.finishResyncNow(was);
    } finally {
      this.finishing = false;
    }
  }

  private async finishResyncNow(was: "SyncSource" | "SyncTarget"): Promise<void> {
    const dev = this.opts.device;
    clearTimeout(this.resyncTimer);
    await dev.persistBitmap();
    if (was === "SyncTarget") {
      const peerCurrent = (this.peerUuids?.[0] ?? dev.uuids[0]) & ~1n;
      const u = dev.uuids;
      await dev.setUuids([peerCurrent, 0n, u[0] & ~1n, u[2]]);
      await dev.setDiskState("UpToDate");
    } else {
      await dev.setUuids(resyncFinished(dev.uuids));
    }
    if (this.stateName === was) this.stateName = "Connected";
    this.log.info(
      { was, requests: this.resync.requested, blocks: this.resync.requestedBlocks },
      "resync done",
    );
    await this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.Connected))).catch(
      () => {},
    );
  }

  private standalone(why: string): "standalone" {
    this.lastError = why;
    this.log.error({ err: why }, "going StandAlone");
    return "standalone";
  }

  /**
   * new-current-uuid --clear-bitmap on a connected pair that has never synced (both current UUIDs
   * JUST_CREATED, both Inconsistent): both sides take one new generation and become UpToDate without the
   * initial full sync (P_UUIDS with UUID_FLAG_SKIP_INITIAL_SYNC, drbd_nl.c drbd_adm_new_c_uuid).
   */
  async skipInitialSync(): Promise<void> {
    const dev = this.opts.device;
    if (this.stateName !== "Connected")
      throw new Error(
        `${dev.name}: new-current-uuid --clear-bitmap needs the Connected state, not ${this.stateName}`,
      );
    if ((dev.uuids[0] & ~1n) !== 4n || ((this.peerUuids?.[0] ?? 0n) & ~1n) !== 4n)
      throw new Error(
        `${dev.name}: skipping the initial sync needs both sides just created (current UUID 4)`,
      );
    const u = newUuid();
    dev.bitmap.clearAll();
    await dev.persistBitmap();
    await dev.setUuids([u, 0n, 0n, 0n]);
    await dev.setDiskState("UpToDate");
    await this.sendUuids(BigInt(UUID_FLAG_SKIP_INITIAL_SYNC));
  }

  private sendUuids(extraFlags = 0n): Promise<void> {
    const dev = this.opts.device;
    const u = dev.uuids;
    let flags = extraFlags;
    if (dev.disk === "Inconsistent") flags |= BigInt(UUID_FLAG_INCONSISTENT);
    if (dev.superBlock.flags & MDF_CRASHED_PRIMARY) flags |= BigInt(UUID_FLAG_CRASHED_PRIMARY);
    if (this.discardMyData) flags |= BigInt(UUID_FLAG_DISCARD_MY_DATA);
    this.myBitsSent = dev.bitmap.outOfSyncBits;
    return this.send(
      this.data,
      DrbdCommand.Uuids,
      encodeUuids({
        current: u[0],
        bitmap: u[1],
        history: [u[2], u[3]],
        bitsSet: BigInt(dev.bitmap.outOfSyncBits),
        flags,
      }),
    );
  }

  private localState(conn: ConnState): DrbdState {
    const dev = this.opts.device;
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

  private startReplication(): void {
    const data = this.data as PacketStream;
    const meta = this.meta as PacketStream;
    this.closed = new Promise<void>((r) => (this.markClosed = r));
    const onError = (e: Error) => this.connectionLost(e);
    data.dispatch((p) => this.onDataPacket(p), onError);
    meta.dispatch((p) => this.onMetaPacket(p), onError);
    this.opts.device.setPeer(this);
    let wasUpToDate = this.opts.device.disk === "UpToDate";
    this.unsubscribe = this.opts.device.onStateChange(() => {
      const dev = this.opts.device;
      const forced = announceForcedPrimary({
        wasUpToDate,
        nowUpToDate: dev.disk === "UpToDate",
        primary: dev.role === "Primary",
        peerDisk: this.stateName === "Connected" ? this.peerState?.disk : undefined,
      });
      if (dev.role === "Primary" || dev.disk !== "UpToDate") wasUpToDate = dev.disk === "UpToDate";
      const conn =
        this.stateName === "Connected"
          ? ConnState.Connected
          : this.stateName === "SyncSource"
            ? ConnState.SyncSource
            : this.stateName === "SyncTarget"
              ? ConnState.SyncTarget
              : this.stateName === "Ahead"
                ? ConnState.Ahead
                : this.stateName === "Behind"
                  ? ConnState.Behind
                  : this.verifyConnState();
      if (conn !== undefined)
        this.send(this.data, DrbdCommand.State, encodeState(this.localState(conn))).catch(() => {});
      if (forced && conn === ConnState.Connected)
        this.sendUuids()
          .then(() => this.send(this.data, DrbdCommand.State, encodeState(this.localState(conn))))
          .catch(() => {});
    });
    if (this.stateName === "SyncTarget") this.pumpResync();
    if (this.stateName === "SyncSource" && this.opts.device.bitmap.outOfSyncBits === 0)
      void this.finishResync();
    const pingInt = (this.opts.pingIntSec ?? 10) * 1000;
    this.pingTimer = setInterval(() => this.ping(), pingInt);
  }

  /** P_PING on the meta socket; no P_PING_ACK within ping-timeout drops the connection. */
  private ping(): void {
    if (this.pingDeadline) return;
    const timeout = (this.opts.pingTimeoutDs ?? 5) * 100;
    this.pingDeadline = setTimeout(
      () => this.connectionLost(new DrbdProtocolError(`PingAck did not arrive in time (${timeout} ms)`)),
      timeout,
    );
    this.send(this.meta, DrbdCommand.Ping, Buffer.alloc(0)).catch(() => {});
  }

  private connectionLost(e: Error): void {
    if (!this.isUp) return;
    this.lostPeerData();
    this.lastError = e.message;
    this.log.warn({ err: e.message }, "connection lost");
    this.stateName = this.stopped
      ? "Disconnecting"
      : e instanceof DrbdProtocolError
        ? "ProtocolError"
        : "NetworkFailure";
    this.dropSockets(e);
    this.markClosed?.();
  }

  private dropSockets(e: Error): void {
    clearInterval(this.pingTimer);
    clearTimeout(this.pingDeadline);
    clearTimeout(this.resyncTimer);
    clearTimeout(this.aheadTimer);
    this.aheadTimer = undefined;
    clearTimeout(this.idleEpochTimer);
    this.idleEpochTimer = undefined;
    this.stopVerify();
    this.markUnconfirmed();
    this.pingTimer = undefined;
    this.pingDeadline = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    if (this.opts.device.disk !== "Diskless") this.opts.device.setPeer(undefined);
    const d = this.data;
    const m = this.meta;
    this.data = undefined;
    this.meta = undefined;
    d?.fail(e);
    m?.fail(e);
    // Writes the peer will never confirm: the device marks them out of sync.
    for (const w of this.pending.values()) w.resolve(false);
    this.pending.clear();
    this.peerState = undefined;
    this.peerUuids = undefined;
    if (this.isUp) this.stateName = "NetworkFailure";
    this.markClosed?.();
  }

  // ---- sender side (PeerLink)

  async mirror(
    offset: number,
    bytes: number,
    data: readonly Buffer[] | Deallocation,
    fua: boolean,
  ): Promise<boolean> {
    if (!this.isUp) return false;
    if (this.stateName === "Connected" && this.congestion.active) this.maybePullAhead();
    if (this.stateName === "Ahead") return this.sendOutOfSync(offset, bytes);
    if (!this.isUp) return false;
    if (typeof data !== "string") {
      // One P_DATA carries at most DRBD_MAX_BIO_SIZE (the kernel splits bios at max_bio_size).
      const parts: Promise<boolean>[] = [];
      for (let off = 0; off < bytes; off += DRBD_MAX_BIO_SIZE) {
        const len = Math.min(DRBD_MAX_BIO_SIZE, bytes - off);
        const piece = len === bytes ? data : sliceIov(data, off, len);
        parts.push(
          this.sendWrite(offset + off, len, fua, DrbdCommand.Data, 0, (h) => [
            ...encodeData({ ...h, digest: Buffer.alloc(0), data: Buffer.alloc(0) }).slice(0, -1),
            ...piece,
          ]),
        );
      }
      return (await Promise.all(parts)).every((ok) => ok);
    }
    // drbd_send_dblock: REQ_OP_DISCARD → P_TRIM, REQ_OP_WRITE_ZEROES → P_ZEROES, each only when the peer
    // agreed to the feature. Without it the kernel turns the offload off and the block layer writes zero
    // pages; we send zero-filled P_DATA instead, for an unmap only when our unmap reads back zeroes (else
    // the content after it is unspecified and the blocks are marked out of sync).
    const feature = data === "unmap" ? FF_TRIM : FF_WZEROES;
    if (!(this.agreedFeatures & feature)) {
      if (data === "unmap" && !this.opts.device.unmapReadsZeroes) return false;
      return this.sendZeroData(offset, bytes, fua);
    }
    const cmd = data === "unmap" ? DrbdCommand.Trim : DrbdCommand.Zeroes;
    const flags = data === "unmap" ? DP_DISCARD : DP_ZEROES;
    const parts: Promise<boolean>[] = [];
    for (let off = 0; off < bytes; off += MAX_TRIM_BYTES) {
      const len = Math.min(MAX_TRIM_BYTES, bytes - off);
      parts.push(this.sendWrite(offset + off, len, fua, cmd, flags, (h) => [encodeTrim(h, len)]));
    }
    return (await Promise.all(parts)).every((ok) => ok);
  }

  /** Zeroing as P_DATA of zeroes (peer without P_TRIM / P_ZEROES), in DRBD_MAX_BIO_SIZE pieces. */
  private async sendZeroData(offset: number, bytes: number, fua: boolean): Promise<boolean> {
    const zeroes = (ZERO_CHUNK ??= Buffer.alloc(DRBD_MAX_BIO_SIZE));
    const parts: Promise<boolean>[] = [];
    for (let off = 0; off < bytes; off += DRBD_MAX_BIO_SIZE) {
      const len = Math.min(DRBD_MAX_BIO_SIZE, bytes - off);
      const chunk = zeroes.subarray(0, len);
      parts.push(
        this.sendWrite(offset + off, len, fua, DrbdCommand.Data, 0, (h) => [
          ...encodeData({ ...h, digest: Buffer.alloc(0), data: chunk }),
        ]),
      );
    }
    return (await Promise.all(parts)).every((ok) => ok);
  }

  /**
   * One mirrored request (P_DATA, P_TRIM or P_ZEROES) in the current epoch, acknowledged as the wire
   * protocol asks: C P_WRITE_ACK, B P_RECV_ACK, A none (done once handed to the socket).
   */
  private async sendWrite(
    offset: number,
    bytes: number,
    fua: boolean,
    cmd: DrbdCommand,
    extraFlags: number,
    build: (h: DataHeader) => Buffer[],
  ): Promise<boolean> {
    if (this.epochHadCompletion && this.epochWrites > 0) {
      // A write issued after an earlier one completed must not be reordered before it on the peer.
      const nr = this.epoch;
      this.epoch = (this.epoch + 1) >>> 0;
      this.epochWrites = 0;
      this.epochHadCompletion = false;
      this.stats.barriersSent++;
      this.send(this.data, DrbdCommand.Barrier, encodeBarrier(nr)).catch(() => {});
    }
    this.epochWrites++;
    const blockId = this.nextBlockId++;
    const seqNum = (this.seqNum = (this.seqNum + 1) >>> 0);
    let dpFlags = extraFlags | (fua ? DP_FUA : 0);
    if (this.protocol === "C") dpFlags |= DP_SEND_WRITE_ACK;
    if (this.protocol === "B") dpFlags |= DP_SEND_RECEIVE_ACK;
    const acked =
      this.protocol === "A"
        ? undefined
        : new Promise<boolean>((resolve) => this.pending.set(blockId, { resolve, sector: offset / SECTOR }));
    const sent = this.send(this.data, cmd, build({ sector: offset / SECTOR, blockId, seqNum, dpFlags })).then(
      () => true,
      () => false,
    );
    if (cmd === DrbdCommand.Data) this.stats.sentWrites++;
    else this.stats.sentDeallocations++;
    // Protocols A and B complete before the peer's disk write: keep the request until its barrier ack.
    if (this.protocol !== "C")
      this.transferLog.add(this.epoch, offset, bytes, cmd === DrbdCommand.Data ? bytes / SECTOR : 0);
    const ok = acked ? await acked : await sent;
    this.epochHadCompletion = true;
    if (this.protocol !== "C") this.closeEpochWhenIdle();
    if (ok && this.stateName === "SyncSource") {
      // Whole blocks the peer now has are in sync (DP_MAY_SET_IN_SYNC); the target clears them alike.
      const dev = this.opts.device;
      const firstFull = Math.ceil(offset / 4096);
      const lastFull = Math.floor((offset + bytes) / 4096) - 1;
      if (lastFull >= firstFull) dev.bitmap.clearRange(firstFull, lastFull);
      if (dev.bitmap.outOfSyncBits === 0) void this.finishResync();
    }
    return ok;
  }

  // ---- on-congestion (congestion.ts): Ahead / Behind

  /** Sectors of data in flight to the peer (for status and tests). */
  get inFlightSectors(): number {
    return this.transferLog.inFlightSectors;
  }

  /**
   * maybe_pull_ahead, before a write is sent while Connected: at a threshold the current epoch is closed
   * (its barrier ack tells when the data in flight drained) and the node goes Ahead, or disconnects.
   */
  private maybePullAhead(): void {
    // Without UpToDate data of its own a node cannot run ahead of its peer.
    if (this.opts.device.disk !== "UpToDate") return;
    const why = this.congestion.congested(
      this.transferLog.inFlightSectors,
      this.opts.device.activityLogExtentsInUse,
    );
    if (!why) return;
    this.log.info({ why, policy: this.congestion.policy }, "congestion");
    if (this.congestion.policy === "disconnect") {
      this.stopped = true;
      this.lastError = `on-congestion disconnect: ${why}`;
      this.lostPeerData();
      this.dropSockets(new Error(this.lastError));
      this.server?.close();
      this.server = undefined;
      this.stateName = "StandAlone";
      return;
    }
    if (this.epochWrites > 0) {
      const nr = this.epoch;
      this.epoch = (this.epoch + 1) >>> 0;
      this.epochWrites = 0;
      this.epochHadCompletion = false;
      this.stats.barriersSent++;
      this.send(this.data, DrbdCommand.Barrier, encodeBarrier(nr)).catch(() => {});
    }
    this.stateName = "Ahead";
    this.stats.wentAhead++;
    this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.Ahead))).catch(() => {});
    if (this.transferLog.inFlightSectors === 0) this.scheduleAheadResync();
  }

  /**
   * A write while Ahead (QUEUE_FOR_SEND_OOS): marked here before P_OUT_OF_SYNC goes out, so a resync that
   * starts in between already sees the bit; the peer marks it on receipt. Resolves false: not mirrored.
   */
  private async sendOutOfSync(offset: number, bytes: number): Promise<boolean> {
    const dev = this.opts.device;
    const [first, last] = OutOfSyncBitmap.bitsOf(offset, bytes);
    dev.bitmap.setRange(first, last);
    this.stats.outOfSyncSent++;
    this.send(this.data, DrbdCommand.OutOfSync, encodeBlockDesc(offset / SECTOR, bytes)).catch(() => {});
    await dev.persistBitmap();
    return false;
  }

  /**
   * tl_clear on a lost connection: requests of unconfirmed epochs may be missing on the peer (protocol A
   * and B complete earlier); their blocks go out of sync, so the next handshake resyncs them.
   */
  private markUnconfirmed(): void {
    const ranges = this.transferLog.clear();
    const dev = this.opts.device;
    if (ranges.length === 0 || dev.disk === "Diskless") return;
    let marked = 0;
    for (const [offset, bytes] of ranges) {
      const [first, last] = OutOfSyncBitmap.bitsOf(offset, bytes);
      marked += dev.bitmap.setRange(first, last);
    }
    this.stats.unconfirmedMarked += ranges.length;
    this.log.info(
      { requests: ranges.length, bits: marked },
      "connection lost: unconfirmed requests out of sync",
    );
    if (marked > 0)
      dev
        .noteDivergence()
        .then(() => dev.persistBitmap())
        .catch((e: Error) => this.log.error({ err: e.message }, "recording the unconfirmed writes failed"));
  }

  /**
   * Protocols A and B: when no further write follows, the sender closes the epoch itself (the kernel's
   * sender does so when it runs out of work), so its barrier ack confirms the last writes of a burst and a
   * later disconnect does not mark them out of sync.
   */
  private closeEpochWhenIdle(): void {
    if (this.idleEpochTimer) return;
    this.idleEpochTimer = setTimeout(() => {
      this.idleEpochTimer = undefined;
      if (this.epochWrites === 0 || !this.isUp) return;
      const nr = this.epoch;
      this.epoch = (this.epoch + 1) >>> 0;
      this.epochWrites = 0;
      this.epochHadCompletion = false;
      this.stats.barriersSent++;
      this.send(this.data, DrbdCommand.Barrier, encodeBarrier(nr)).catch(() => {});
    }, 0);
  }

  private scheduleAheadResync(): void {
    if (this.aheadTimer) return;
    this.aheadTimer = setTimeout(() => {
      this.aheadTimer = undefined;
      this.startResyncFromAhead().catch((e: Error) => this.connectionLost(e));
    }, AHEAD_RESYNC_DELAY_MS);
  }

  /**
   * Ahead → SyncSource (drbd_start_resync, then drbd_gen_and_send_sync_uuid from after_state_ch): a new
   * bitmap UUID marks the resync, P_SYNC_UUID tells the Behind peer to start as SyncTarget.
   */
  private async startResyncFromAhead(): Promise<void> {
    if (this.stateName !== "Ahead") return;
    const dev = this.opts.device;
    const u = dev.uuids;
    const bm = u[1] & ~1n;
    const syncUuid = bm !== 0n && bm !== 4n ? BigInt.asUintN(64, bm + (1n << 48n)) : newUuid();
    await dev.setUuids([u[0], syncUuid, u[2], u[3]]);
    await dev.persistBitmap();
    if (this.stateName !== "Ahead") return;
    this.resync = {
      total: dev.bitmap.outOfSyncBits,
      requested: 0,
      requestedBlocks: 0,
      inflight: 0,
      cursor: 0,
    };
    this.stateName = "SyncSource";
    this.log.info({ outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "Ahead → SyncSource");
    this.send(this.data, DrbdCommand.SyncUuid, encodeSyncUuid(syncUuid)).catch(() => {});
    this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.SyncSource))).catch(
      () => {},
    );
    if (dev.bitmap.outOfSyncBits === 0) void this.finishResync();
  }

  /** The peer is Ahead: our disk is at most Outdated until the resync (sanitize_state for C_BEHIND). */
  private becomeBehind(): void {
    this.stateName = "Behind";
    this.stats.wentBehind++;
    this.log.info("peer pulled ahead: Behind");
    const dev = this.opts.device;
    if (dev.disk === "UpToDate" || dev.disk === "Consistent")
      dev.setDiskState("Outdated").catch((e: Error) => this.connectionLost(e));
    else
      this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.Behind))).catch(() => {});
  }

  /**
   * receive_out_of_sync: expected while Behind (the kernel also in WFSyncUUID / WFBitMapT). Like the kernel,
   * another state is logged, not fatal: the bits are set anyway, which costs at most a resync of them.
   */
  private receiveOutOfSync(payload: Buffer): void {
    const { sector, size } = decodeBlockDesc(payload);
    if (this.stateName !== "Behind")
      this.log.error({ state: this.stateName, sector, size }, "P_OUT_OF_SYNC while not Behind");
    if (size === 0 || size % SECTOR !== 0)
      throw new DrbdProtocolError(`P_OUT_OF_SYNC of ${size} bytes is not whole sectors`);
    const dev = this.opts.device;
    if (sector + size / SECTOR > dev.layout.usableSectors)
      throw new DrbdProtocolError(`P_OUT_OF_SYNC beyond the end of the device (sector ${sector})`);
    this.stats.outOfSyncReceived++;
    const [first, last] = OutOfSyncBitmap.bitsOf(sector * SECTOR, size);
    dev.bitmap.setRange(first, last);
    dev.persistBitmap().catch((e: Error) => this.connectionLost(e));
  }

  /** receive_sync_uuid while Behind: take the SyncSource's UUID and resync the marked blocks as SyncTarget. */
  private startResyncFromBehind(syncUuid: bigint): void {
    const dev = this.opts.device;
    this.enterResync("SyncTarget");
    const start = async () => {
      const u = dev.uuids;
      const old = u[0] & ~1n;
      await dev.setUuids([syncUuid, 0n, old, u[2]]);
      await dev.persistBitmap();
      // setDiskState announces SyncTarget / Inconsistent to the peer (P_STATE).
      await dev.setDiskState("Inconsistent");
      this.log.info({ outOfSyncKiB: dev.bitmap.outOfSyncKiB }, "Behind → SyncTarget");
      this.pumpResync();
    };
    start().catch((e: Error) => this.connectionLost(e));
  }

  // ---- online verify (verify.ts) and cluster-wide state changes (P_STATE_CHG_REQ / P_STATE_CHG_REPLY)

  private verifyRun: VerifyRun | undefined;
  private verifyTimer: NodeJS.Timeout | undefined;
  /** The counters of the running or last verify run (drbd_status `verify`). */
  lastVerify: VerifyCounters | undefined;
  private stateChangeWaiter: ((rv: number) => void) | undefined;

  private verifyConnState(): ConnState | undefined {
    if (this.stateName === "VerifyS") return ConnState.VerifyS;
    if (this.stateName === "VerifyT") return ConnState.VerifyT;
    return undefined;
  }

  /**
   * drbdadm verify: Connected → VerifyS, the peer agreeing to VerifyT (P_STATE_CHG_REQ), then P_OV_REQUEST
   * for every 4 KiB block at resync-rate. Resolves once the run started; `lastVerify` follows it.
   */
  async startVerify(): Promise<void> {
    const name = this.opts.device.name;
    const fail = (code: number) => new DrbdStateError(name, code, STATE_ERROR_TEXT[code] ?? "refused");
    if (!this.isUp) throw fail(-15);
    if (this.stateName !== "Connected") throw fail(-8);
    const alg = this.opts.verifyAlg;
    if (!alg) throw fail(-14);
    if (!isVerifyAlg(alg))
      throw new Error(`${name}: verify-alg ${alg} is not one of ${VERIFY_ALGS.join(", ")}`);
    const rv = await this.requestPeerStateChange(stateMask(["conn"]), packState({ conn: ConnState.VerifyS }));
    if (rv < SS_SUCCESS) throw fail(rv);
    if (this.stateName !== "Connected") throw fail(-8);
    const dev = this.opts.device;
    this.verifyRun = new VerifyRun("VerifyS", dev.bitmap.bits, dev.layout.usableSectors * SECTOR);
    this.lastVerify = this.verifyRun.counters(true);
    this.stateName = "VerifyS";
    this.log.info({ alg, blocks: dev.bitmap.bits }, "Online Verify start sector: 0");
    await this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.VerifyS)));
    this.pumpVerify();
  }

  /** Sends P_STATE_CHG_REQ and waits for P_STATE_CHG_REPLY (drbd_send_state_req / _req_st_cond). */
  private requestPeerStateChange(mask: number, val: number): Promise<number> {
    if (this.stateChangeWaiter) return Promise.resolve(SS_CONCURRENT_ST_CHG);
    const t = (this.opts.timeoutDs ?? 60) * 100;
    return new Promise<number>((resolve) => {
      const done = (rv: number) => {
        clearTimeout(timer);
        this.stateChangeWaiter = undefined;
        resolve(rv);
      };
      const timer = setTimeout(() => done(SS_CW_FAILED_BY_PEER), t);
      this.stateChangeWaiter = done;
      this.send(this.data, DrbdCommand.StateChgReq, encodeStateChangeRequest(mask, val)).catch(() =>
        done(SS_CW_FAILED_BY_PEER),
      );
    });
  }

  private receiveStateChangeReply(payload: Buffer): void {
    this.stateChangeWaiter?.(decodeStateChangeReply(payload));
  }

  /** receive_req_state: the peer asks for a cluster-wide change in its terms, converted to mine. */
  private receiveStateChangeRequest(payload: Buffer, reply = DrbdCommand.StateChgReply): void {
    const req = decodeStateChangeRequest(payload);
    const mask = unpackState(convertPeerState(req.mask));
    const val = unpackState(convertPeerState(req.val));
    // Both asked at once: the node holding RESOLVE_CONFLICTS refuses the peer's request and keeps its own
    // (receive_req_state), the other one takes the peer's and gets SS_CONCURRENT_ST_CHG for its own.
    let rv: number;
    if (this.stateChangeWaiter && this.resolveConflicts) rv = SS_CONCURRENT_ST_CHG;
    // A kernel peer's primary: two Primaries need allow-two-primaries (SS_TWO_PRIMARIES).
    else if (mask.peer !== 0 && val.peer === Role.Primary && this.opts.device.role === "Primary") rv = -1;
    // Its disconnect (C_DISCONNECTING, TearDown here): agreed; the sockets closing does the rest.
    else if (mask.conn === 0 || val.conn === ConnState.TearDown) rv = SS_SUCCESS;
    else rv = this.acceptPeerConnState(val.conn);
    if (rv === SS_SUCCESS && mask.peer !== 0)
      this.considerResyncFlag ||= peerForcedPrimary(
        diskStateOnWire(this.opts.device.disk),
        this.peerState,
        val.peer,
      );
    this.send(this.meta, reply, encodeStateChangeReply(rv)).catch(() => {});
  }

  /** The connection state the peer asked for, as mine: VerifyT (the peer verifies), StartingSyncS/T. */
  private acceptPeerConnState(conn: ConnState): number {
    if (this.stateName !== "Connected") return -8; // SS_RESYNC_RUNNING
    if (conn === ConnState.VerifyT) {
      const dev = this.opts.device;
      this.verifyRun = new VerifyRun("VerifyT", dev.bitmap.bits, dev.layout.usableSectors * SECTOR);
      this.lastVerify = this.verifyRun.counters(true);
      this.stateName = "VerifyT";
      this.log.info("online verify started by the peer: VerifyT");
      return SS_SUCCESS;
    }
    return this.acceptPeerSyncStart(conn);
  }

  /** StartingSyncS/T asked by the peer (invalidate / invalidate-remote there). */
  private acceptPeerSyncStart(conn: ConnState): number {
    const dev = this.opts.device;
    const side =
      conn === ConnState.StartingSyncS
        ? "StartingSyncS"
        : conn === ConnState.StartingSyncT
          ? "StartingSyncT"
          : undefined;
    if (!side) return -17; // SS_NOT_SUPPORTED
    if (side === "StartingSyncS" && dev.disk !== "UpToDate") return -2;
    if (side === "StartingSyncT" && dev.role === "Primary") return -2;
    this.stateName = side;
    this.startingSync(side).catch((e: Error) => this.connectionLost(e));
    return SS_SUCCESS;
  }

  /** VerifyS: keep P_OV_REQUESTs flowing at resync-rate, every 100 ms while the run lasts. */
  private pumpVerify(): void {
    const run = this.verifyRun;
    if (this.stateName !== "VerifyS" || !run) return;
    for (const r of run.nextRequests(this.opts.resyncRateKiB ?? 250))
      this.send(
        this.data,
        DrbdCommand.OvRequest,
        encodeBlockRequest({ sector: r.sector, blockId: ID_SYNCER, size: r.size }),
      ).catch(() => {});
    clearTimeout(this.verifyTimer);
    if (!run.allRequested) this.verifyTimer = setTimeout(() => this.pumpVerify(), 100);
  }

  /**
   * A p_block_req the peer may send only in some states (`allowed`), for whole sectors up to `max` bytes;
   * anything else is a protocol error that drops the connection.
   */
  private checkedRequest(payload: Buffer, what: string, allowed: boolean, max: number): BlockRequest {
    const r = decodeBlockRequest(payload);
    if (!allowed) throw new DrbdProtocolError(`${what} while ${this.stateName}`);
    if (r.size === 0 || r.size % SECTOR !== 0 || r.size > max)
      throw new DrbdProtocolError(`${what} of ${r.size} bytes`);
    return r;
  }

  /** VerifyT: w_e_end_ov_req — read the block and answer with its digest. */
  private receiveOvRequest(payload: Buffer): void {
    const alg = this.opts.verifyAlg;
    const ok = this.stateName === "VerifyT" && alg !== undefined && isVerifyAlg(alg);
    const r = this.checkedRequest(payload, "P_OV_REQUEST", ok, OV_BLOCK);
    if (!alg || !isVerifyAlg(alg)) return; // (checked above; narrows the type)
    this.opts.device
      .readForPeer(r.sector * SECTOR, r.size)
      .then((block) =>
        this.send(
          this.data,
          DrbdCommand.OvReply,
          encodeBlockRequest({
            sector: r.sector,
            blockId: r.blockId,
            size: r.size,
            digest: verifyDigest(alg, block),
          }),
        ),
      )
      .catch((e: Error) => this.connectionLost(e));
  }

  /** VerifyS: w_e_end_ov_reply — compare with my copy, mark a difference, answer P_OV_RESULT. */
  private receiveOvReply(payload: Buffer): void {
    const alg = this.opts.verifyAlg;
    const run = this.verifyRun;
    const ok = this.stateName === "VerifyS" && run !== undefined && alg !== undefined && isVerifyAlg(alg);
    const r = this.checkedRequest(payload, "P_OV_REPLY", ok, OV_BLOCK);
    if (!alg || !run || !isVerifyAlg(alg)) return; // (checked above; narrows the types)
    const peerDigest = Buffer.from(r.digest);
    this.opts.device
      .readForPeer(r.sector * SECTOR, r.size)
      .then(async (block) => {
        if (this.verifyRun !== run) return;
        const same = verifyDigest(alg, block).equals(peerDigest);
        if (!same) this.verifyOutOfSync(r.sector, r.size);
        run.inflight--;
        run.result(same);
        this.lastVerify = run.counters(true);
        const blockId = same ? ID_IN_SYNC : ID_OUT_OF_SYNC;
        await this.send(
          this.meta,
          DrbdCommand.OvResult,
          encodeBlockAck({ sector: r.sector, blockId, size: r.size, seqNum: 0 }),
        );
        if (run.done) await this.finishVerify(run);
        else this.pumpVerify();
      })
      .catch((e: Error) => this.connectionLost(e));
  }

  /** VerifyT: got_OVResult. */
  private receiveOvResult(payload: Buffer): void {
    const a = decodeBlockAck(payload);
    const run = this.verifyRun;
    if (this.stateName !== "VerifyT" || !run)
      throw new DrbdProtocolError(`P_OV_RESULT while ${this.stateName}`);
    const same = a.blockId === ID_IN_SYNC;
    if (!same) this.verifyOutOfSync(a.sector, a.size);
    run.result(same);
    this.lastVerify = run.counters(true);
    if (run.done) this.finishVerify(run).catch((e: Error) => this.connectionLost(e));
  }

  /** drbd_ov_out_of_sync_found: the block stays marked until a later resync. */
  private verifyOutOfSync(sector: number, size: number): void {
    const [first, last] = OutOfSyncBitmap.bitsOf(sector * SECTOR, size);
    this.opts.device.bitmap.setRange(first, last);
  }

  /** drbd_resync_finished for a verify run: report, keep the marks, back to Connected. */
  private async finishVerify(run: VerifyRun): Promise<void> {
    if (this.verifyRun !== run) return;
    this.verifyRun = undefined;
    clearTimeout(this.verifyTimer);
    this.lastVerify = run.counters(false);
    const was = this.stateName;
    await this.opts.device.persistBitmap();
    this.log.info(
      { was, checked: run.checked },
      `Online verify found ${run.outOfSync} 4k blocks out of sync`,
    );
    if (this.stateName === was) this.stateName = "Connected";
    await this.send(this.data, DrbdCommand.State, encodeState(this.localState(ConnState.Connected))).catch(
      () => {},
    );
  }

  private stopVerify(): void {
    clearTimeout(this.verifyTimer);
    this.verifyTimer = undefined;
    if (this.verifyRun) this.lastVerify = this.verifyRun.counters(false);
    this.verifyRun = undefined;
    this.stateChangeWaiter?.(SS_CW_FAILED_BY_PEER);
  }

  private onMetaPacket(p: Packet): void {
    switch (p.header.command) {
      case DrbdCommand.Ping:
        this.stats.pingsAnswered++;
        this.send(this.meta, DrbdCommand.PingAck, Buffer.alloc(0)).catch(() => {});
        return;
      case DrbdCommand.PingAck:
        clearTimeout(this.pingDeadline);
        this.pingDeadline = undefined;
        return;
      case DrbdCommand.WriteAck:
      case DrbdCommand.RecvAck:
      case DrbdCommand.NegAck: {
        const a = decodeBlockAck(p.payload);
        const w = this.pending.get(a.blockId);
        if (!w)
          throw new DrbdProtocolError(`${commandName(p.header.command)} for unknown block_id ${a.blockId}`);
        this.pending.delete(a.blockId);
        w.resolve(p.header.command !== DrbdCommand.NegAck);
        return;
      }
      case DrbdCommand.RsWriteAck: {
        // The target has the block: the source marks it in sync; the last one ends the resync.
        const a = decodeBlockAck(p.payload);
        const dev = this.opts.device;
        const [first, last] = OutOfSyncBitmap.bitsOf(a.sector * SECTOR, a.size);
        dev.bitmap.clearRange(first, last);
        if (this.stateName === "SyncSource" && dev.bitmap.outOfSyncBits === 0) void this.finishResync();
        return;
      }
      case DrbdCommand.NegRsDReply:
        throw new DrbdProtocolError("the SyncSource could not read a block (P_NEG_RS_DREPLY)");
      case DrbdCommand.OvResult:
        return this.receiveOvResult(p.payload);
      case DrbdCommand.StateChgReply:
        return this.receiveStateChangeReply(p.payload);
      case DrbdCommand.BarrierAck: {
        const { barrier } = decodeBarrierAck(p.payload);
        this.stats.barrierAcks++;
        // got_BarrierAck: an Ahead node whose data in flight drained resyncs a moment later.
        this.transferLog.release(barrier);
        if (this.transferLog.inFlightSectors === 0 && this.stateName === "Ahead") this.scheduleAheadResync();
        return;
      }
      default:
        throw new DrbdProtocolError(`unexpected ${commandName(p.header.command)} on the meta socket`);
    }
  }

  // ---- receiver side

  private onDataPacket(p: Packet): void {
    switch (p.header.command) {
      case DrbdCommand.Data:
        return this.receiveData(p.payload);
      case DrbdCommand.Trim:
      case DrbdCommand.Zeroes:
        return this.receiveDeallocation(p.header.command, p.payload);
      case DrbdCommand.Barrier: {
        const nr = decodeBarrier(p.payload);
        const writes = [...this.peerEpochWrites];
        const count = this.peerEpochCount;
        this.peerEpochWrites = new Set();
        this.peerEpochCount = 0;
        // The epoch is stable once its writes are done and the lower device flushed (write-ordering flush).
        // Acks leave in barrier order: the kernel drops the connection on any other ("BAD! BarrierAck #8
        // received, expected #7!", tl_release), and a short epoch can finish before a longer earlier one.
        const previous = this.barrierAcksSent;
        const stable = Promise.all(writes).then(() => this.epochFlush());
        // receive_Barrier (WO_BDEV_FLUSH): the next epoch's writes start only once this one is on stable
        // storage — a write the Primary issued after an earlier one completed must not land before it here
        // (with protocol A or B the Primary does not wait for this node, so they can arrive together).
        this.epochGate = stable.catch(() => {});
        const acked = stable
          .then(() => previous)
          .then(() => this.send(this.meta, DrbdCommand.BarrierAck, encodeBarrierAck(nr, count)));
        this.barrierAcksSent = acked.catch((e: Error) => this.connectionLost(e));
        return;
      }
      case DrbdCommand.State: {
        const before = this.peerState;
        this.peerState = decodeState(p.payload);
        if (this.considerSyncHandshake(before, this.peerState)) return;
        // receive_state: the peer pulled ahead of us.
        if (this.peerState.conn === ConnState.Ahead && this.stateName === "Connected") this.becomeBehind();
        return;
      }
      case DrbdCommand.OutOfSync:
        return this.receiveOutOfSync(p.payload);
      case DrbdCommand.Uuids: {
        const u = decodeUuids(p.payload);
        this.peerUuids = [u.current, u.bitmap, u.history[0], u.history[1]];
        const dev = this.opts.device;
        if (u.flags & BigInt(UUID_FLAG_SKIP_INITIAL_SYNC) && (dev.uuids[0] & ~1n) === 4n) {
          // The peer cleared the bitmap for both: take its generation, UpToDate without a sync.
          dev.bitmap.clearAll();
          const adopt = async () => {
            await dev.persistBitmap();
            await dev.setUuids([u.current & ~1n, 0n, 0n, 0n]);
            await dev.setDiskState("UpToDate");
            this.log.info("initial sync skipped by the peer (new-current-uuid --clear-bitmap)");
          };
          adopt().catch((e: Error) => this.connectionLost(e));
        }
        return;
      }
      case DrbdCommand.RsDataRequest: {
        const r = this.checkedRequest(
          p.payload,
          "P_RS_DATA_REQUEST",
          this.stateName === "SyncSource",
          1 << 20,
        );
        this.opts.device
          .readForPeer(r.sector * SECTOR, r.size)
          .then((block) =>
            this.send(
              this.data,
              DrbdCommand.RsDataReply,
              encodeData({
                sector: r.sector,
                blockId: r.blockId,
                seqNum: 0,
                dpFlags: 0,
                digest: Buffer.alloc(0),
                data: block,
              }),
            ),
          )
          .catch((e: Error) => {
            this.log.error({ err: e.message, sector: r.sector }, "resync read failed");
            this.send(
              this.meta,
              DrbdCommand.NegRsDReply,
              encodeBlockAck({ sector: r.sector, blockId: r.blockId, size: r.size, seqNum: 0 }),
            ).catch(() => {});
          });
        return;
      }
      case DrbdCommand.RsDataReply: {
        const d = decodeData(p.payload);
        if (this.stateName !== "SyncTarget")
          throw new DrbdProtocolError(`P_RS_DATA_REPLY while ${this.stateName}`);
        const ack = { sector: d.sector, blockId: d.blockId, size: d.data.length, seqNum: 0 };
        const start = d.sector * SECTOR;
        const end = start + d.data.length;
        this.rsSectIn += d.data.length / SECTOR;
        this.rsOutstanding = Math.max(0, this.rsOutstanding - d.data.length / SECTOR);
        const askedAt = this.rsRequestSeq.get(d.sector) ?? -1;
        this.rsRequestSeq.delete(d.sector);
        // Newer application data for this range came in after the request: the reply may be older. Drop it
        // without an ack; bits still set are requested again.
        if (this.peerWrites.some((w) => w.seq > askedAt && w.start < end && start < w.end)) {
          this.resync.inflight--;
          this.stats.staleResyncReplies++;
          this.stats.staleResyncBlocks += Math.ceil(d.data.length / 4096);
          this.pumpResync();
          return;
        }
        const rsWrite = this.opts.device.writeResyncData(start, d.data);
        const entry = {
          start,
          end,
          done: rsWrite.then(
            () => {},
            () => {},
          ),
        };
        this.rsWrites.add(entry);
        void entry.done.then(() => this.rsWrites.delete(entry));
        rsWrite
          .then(() => this.send(this.meta, DrbdCommand.RsWriteAck, encodeBlockAck(ack)))
          .catch((e: Error) => this.connectionLost(e))
          .finally(() => {
            this.resync.inflight--;
            this.pumpResync();
          });
        return;
      }
      case DrbdCommand.SyncUuid: {
        const uuid = decodeSyncUuid(p.payload);
        if (this.stateName === "Behind") this.startResyncFromBehind(uuid);
        else if (this.stateName === "StartingSyncT" || this.stateName === "WFSyncUUID") {
          this.pendingSyncUuid = uuid;
          this.syncUuidArrived().catch((e: Error) => this.connectionLost(e));
        }
        return;
      }
      case DrbdCommand.UnplugRemote:
        return;
      case DrbdCommand.OvRequest:
        return this.receiveOvRequest(p.payload);
      case DrbdCommand.OvReply:
        return this.receiveOvReply(p.payload);
      case DrbdCommand.StateChgReq:
        return this.receiveStateChangeRequest(p.payload);
      // The connection-wide form (conn_request_state, protocol >= 100): a kernel peer's `drbdadm disconnect`.
      case DrbdCommand.ConnStChgReq:
        return this.receiveStateChangeRequest(p.payload, DrbdCommand.ConnStChgReply);
      default:
        throw new DrbdProtocolError(`${commandName(p.header.command)} is not handled while Connected`);
    }
  }

  /**
   * The write-ordering flush of an epoch whose writes are done, as a group commit: a flush that starts
   * after those writes completed covers the epoch, so while one runs, every epoch that asks meanwhile shares
   * the next one (protocol A closes an epoch per write; one flush each would serialize the peer on them). A
   * lower device without a volatile cache needs none (the block layer's flush is a no-op there too).
   */
  private epochFlush(): Promise<void> {
    const lower = this.opts.device.lower;
    if (!lower.volatileWriteCache || this.opts.diskFlushes === false) return Promise.resolve();
    if (!this.flushRunning) {
      const run: Promise<void> = lower.flush().finally(() => {
        if (this.flushRunning === run) this.flushRunning = undefined;
      });
      this.flushRunning = run;
      return run;
    }
    this.flushQueued ??= this.flushRunning
      .catch(() => {})
      .then(() => {
        this.flushQueued = undefined;
        return this.epochFlush();
      });
    return this.flushQueued;
  }

  private flushRunning: Promise<void> | undefined;
  private flushQueued: Promise<void> | undefined;

  private receiveData(payload: Buffer): void {
    const d = decodeData(payload);
    this.stats.receivedWrites++;
    const start = d.sector * SECTOR;
    this.receiveWrite(d, start, d.data.length, () =>
      this.opts.device.applyPeerWrite(start, d.data, (d.dpFlags & DP_FUA) !== 0),
    );
  }

  /** P_TRIM / P_ZEROES: like P_DATA without data; only when the feature was agreed (drbd_do_features). */
  private receiveDeallocation(cmd: DrbdCommand, payload: Buffer): void {
    const kind: Deallocation = cmd === DrbdCommand.Trim ? "unmap" : "zeroes";
    const feature = kind === "unmap" ? FF_TRIM : FF_WZEROES;
    if (!(this.agreedFeatures & feature))
      throw new DrbdProtocolError(`${commandName(cmd)} although the feature was not agreed`);
    const t = decodeTrim(payload);
    if (t.size === 0 || t.size % SECTOR !== 0)
      throw new DrbdProtocolError(`${commandName(cmd)} of ${t.size} bytes is not whole sectors`);
    this.stats.receivedDeallocations++;
    const start = t.sector * SECTOR;
    this.receiveWrite(t, start, t.size, () => this.opts.device.applyPeerDeallocation(start, t.size, kind));
  }

  /**
   * receive_Data for one request of `length` bytes at byte `start`: the ack the sender asked for, epoch
   * membership for P_BARRIER, ordering after resync writes to the same blocks while SyncTarget.
   */
  private receiveWrite(h: DataHeader, start: number, length: number, apply: () => Promise<void>): void {
    const ack = { sector: h.sector, blockId: h.blockId, size: length, seqNum: h.seqNum };
    if (h.dpFlags & DP_SEND_RECEIVE_ACK)
      this.send(this.meta, DrbdCommand.RecvAck, encodeBlockAck(ack)).catch(() => {});
    this.peerEpochCount++;
    const end = start + length;
    let before: Promise<unknown> = this.epochGate;
    if (this.stateName === "SyncTarget") {
      this.peerWrites.push({ seq: ++this.peerDataSeq, start, end });
      if (this.rsRequestSeq.size === 0) this.peerWrites = this.peerWrites.slice(-1);
      // Land after any resync write to the same blocks, and count whole blocks as in sync.
      const overlapping = [...this.rsWrites].filter((w) => w.start < end && start < w.end);
      before = Promise.all([this.epochGate, ...overlapping.map((w) => w.done)]);
      const firstFull = Math.ceil(start / 4096);
      const lastFull = Math.floor(end / 4096) - 1;
      if (lastFull >= firstFull) this.opts.device.bitmap.clearRange(firstFull, lastFull);
    }
    const w = before
      .then(apply)
      .then(
        () =>
          h.dpFlags & DP_SEND_WRITE_ACK
            ? this.send(this.meta, DrbdCommand.WriteAck, encodeBlockAck(ack))
            : undefined,
        (e: Error) => {
          this.log.error({ err: e.message, sector: h.sector }, "peer write failed");
          return h.dpFlags & (DP_SEND_WRITE_ACK | DP_SEND_RECEIVE_ACK)
            ? this.send(this.meta, DrbdCommand.NegAck, encodeBlockAck(ack))
            : undefined;
        },
      )
      .catch(() => {});
    this.peerEpochWrites.add(w);
    void w.then(() => this.peerEpochWrites.delete(w));
  }
}

/**
 * Largest P_TRIM / P_ZEROES: one activity-log extent (4 MiB). The kernel sends and expects larger batches
 * (up to DRBD_MAX_BBIO_SECTORS) only when DRBD_FF_WSAME is agreed, which we do not offer
 * (drbd_max_discard_sectors).
 */
const MAX_TRIM_BYTES = 4 << 20;
/** One shared buffer of zeroes for zeroing sent as data; never written to. */
let ZERO_CHUNK: Buffer | undefined;

/** The buffers (views, no copies) covering `len` bytes from byte `off` of an I/O vector. */
function sliceIov(iov: readonly Buffer[], off: number, len: number): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  for (const b of iov) {
    const from = Math.max(off - pos, 0);
    const to = Math.min(off + len - pos, b.length);
    if (from < to) out.push(b.subarray(from, to));
    pos += b.length;
    if (pos >= off + len) break;
  }
  return out;
}
