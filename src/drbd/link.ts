/**
 * What the parts of one DRBD connection share (the kernel's struct drbd_connection with its one
 * drbd_peer_device): the local volume as the peer may use it, the two packet streams once paired, the
 * agreed protocol version and features, the peer's generation UUIDs, the connection state, the counters,
 * and how a packet is sent.
 */
import { log, type Logger } from "../util/log.js";
import {
  decodeBlockRequest,
  encodeBlockAck,
  DrbdCommand,
  DrbdProtocolError,
  encodeState,
  encodeUuids,
  frame,
  UUID_FLAG_CRASHED_PRIMARY,
  UUID_FLAG_DISCARD_MY_DATA,
  UUID_FLAG_INCONSISTENT,
  type BlockRequest,
  type ConnState,
  type Packet,
} from "./protocol.js";
import { MDF_CRASHED_PRIMARY, SECTOR } from "./metadata.js";
import type { UuidSet } from "./uuids.js";
import type { ConnectionOptions, WireProtocol } from "./connection_options.js";
import type { PeerDevicePort } from "./peer_device_port.js";
import { ConnectionStateMachine } from "./conn_state.js";
import { NO_HANDLERS, type HandlerName } from "./handlers.js";
import type { PacketStream } from "./packet_stream.js";
import { carriesDigest, type DataIntegrity } from "./integrity.js";

/** Counters for status and tests. */
export interface LinkStats {
  staleResyncReplies: number;
  /** 4 KiB blocks of those stale replies: requested once more, so counted twice in resyncStats. */
  staleResyncBlocks: number;
  sentWrites: number;
  receivedWrites: number;
  /** P_TRIM + P_ZEROES sent / received. */
  sentDeallocations: number;
  receivedDeallocations: number;
  barriersSent: number;
  barrierAcks: number;
  pingsAnswered: number;
  /** Times this node pulled ahead / fell behind; P_OUT_OF_SYNC sent / received. */
  wentAhead: number;
  wentBehind: number;
  outOfSyncSent: number;
  outOfSyncReceived: number;
  /** Protocol A/B requests marked out of sync because the connection broke before their barrier ack. */
  unconfirmedMarked: number;
  /** Times the data socket was not read because the receive pages (net { max-buffers }) ran out. */
  receiveStalls: number;
}

export class Link {
  readonly log: Logger;
  readonly device: PeerDevicePort;
  /** net { protocol }: changed on a live connection by net-options or the peer's P_PROTOCOL_UPDATE. */
  protocol: WireProtocol;
  readonly state: ConnectionStateMachine;
  readonly stats: LinkStats = {
    staleResyncReplies: 0,
    staleResyncBlocks: 0,
    sentWrites: 0,
    receivedWrites: 0,
    sentDeallocations: 0,
    receivedDeallocations: 0,
    barriersSent: 0,
    barrierAcks: 0,
    pingsAnswered: 0,
    wentAhead: 0,
    wentBehind: 0,
    outOfSyncSent: 0,
    outOfSyncReceived: 0,
    unconfirmedMarked: 0,
    receiveStalls: 0,
  };
  data: PacketStream | undefined;
  meta: PacketStream | undefined;
  agreedVersion = 0;
  /**
   * The volume number this link's packets carry in p_header100 (a multi-volume resource shares one socket
   * pair among its volumes, volume_connection.ts); 0 for a single-volume resource.
   */
  volume = 0;
  /** DRBD_FF_* both sides offered in P_CONNECTION_FEATURES. */
  agreedFeatures = 0;
  /** The data-integrity-alg both sides named in P_PROTOCOL (integrity.ts); undefined: none. */
  integrity: DataIntegrity | undefined;
  /** The peer's last P_UUIDS: its UUIDs, flags, and "bits set" (comm_bm_set, for the split-brain counts). */
  peerUuids: UuidSet | undefined;
  peerUuidFlags = 0;
  peerBitsSet = 0;
  /** The peer's usable backing size (P_SIZES d_size), sectors; 0 before its first P_SIZES. */
  peerDiskSectors = 0;
  /** My bitmap's bits set when I sent P_UUIDS. */
  myBitsSent = 0;
  /** This node accepted the meta socket (RESOLVE_CONFLICTS). */
  resolveConflicts = false;
  /** connect --discard-my-data, until the sync handshake used it. */
  discardMyData = false;
  /** Why the connection last dropped or refused to go on. */
  lastError: string | undefined;
  /** No connect in progress or wanted (StandAlone, or disconnect() called). */
  stopped = true;
  /** The receiver's handler for data-socket packets (receiver.ts). */
  dataHandler: (p: Packet) => void = () => {};
  /** Drops the connection for good (C_DISCONNECTING → StandAlone), naming why; set by the connection. */
  standAlone: (why: string) => void = () => {};

  constructor(
    readonly opts: ConnectionOptions,
    /** Drops the connection after an error (NetworkFailure / ProtocolError); the connection reconnects. */
    readonly lost: (e: Error) => void,
  ) {
    this.device = opts.device;
    this.protocol = opts.protocol ?? "C";
    this.log = log.child({
      module: "drbd-conn",
      device: opts.device.name,
      peer: `${opts.peer.host}:${opts.peer.port}`,
    });
    this.state = new ConnectionStateMachine(opts.device, this.log, {
      ...(opts.fencing !== undefined ? { fencing: opts.fencing } : {}),
      ...(opts.handlers !== undefined ? { handlers: opts.handlers } : {}),
    });
    this.state.announceUuids = () => void this.sendUuids().catch(() => {});
  }

  /** Runs a `handlers { }` command (handlers.ts); its exit code, 0 when none is configured. */
  runHandler(name: HandlerName): Promise<number> {
    return (this.opts.handlers ?? NO_HANDLERS).run(name);
  }

  /** Whether a `handlers { }` command is configured for the event. */
  hasHandler(name: HandlerName): boolean {
    return (this.opts.handlers ?? NO_HANDLERS).configured(name);
  }

  /** net { timeout }: how long one handshake packet may take, ms. */
  get timeoutMs(): number {
    return (this.opts.timeoutDs ?? 60) * 100;
  }

  /**
   * Queues a packet on a socket; resolves once it is handed to the kernel. While replicating, the packets of
   * one event-loop turn leave together in one writev (packet_writer.ts).
   */
  send(stream: PacketStream | undefined, cmd: DrbdCommand, payload: Buffer | Buffer[]): Promise<void> {
    if (!stream || stream.socket.destroyed) return Promise.reject(new DrbdProtocolError("not connected"));
    // P_DATA_REPLY / P_RS_DATA_REPLY as encodeData builds them get the data-integrity-alg digest here.
    if (this.integrity && Array.isArray(payload) && carriesDigest(cmd))
      payload = this.integrity.withDigest(payload);
    const parts = frame(cmd, payload, this.agreedVersion, this.volume);
    return new Promise<void>((resolve, reject) =>
      stream.writer.queue(parts, (e) => (e ? reject(e) : resolve())),
    );
  }

  /**
   * As send() for a packet nobody waits for (acks, barriers, P_DATA of protocols B and C, which complete on
   * the peer's ack): no promise per packet. A socket that fails drops the connection through its stream.
   */
  post(stream: PacketStream | undefined, cmd: DrbdCommand, payload: Buffer | Buffer[]): void {
    if (!stream || stream.socket.destroyed) return;
    stream.writer.queue(frame(cmd, payload, this.agreedVersion, this.volume));
  }

  /** P_STATE on the data socket with connection state `conn`. */
  sendState(conn: ConnState): Promise<void> {
    return this.send(this.data, DrbdCommand.State, encodeState(this.state.localState(conn)));
  }

  /** P_UUIDS on the data socket (drbd_send_uuids). */
  sendUuids(extraFlags = 0n): Promise<void> {
    const dev = this.device;
    // _drbd_send_uuids: nothing without a local disk (get_ldev_if_state(device, D_NEGOTIATING)).
    if (dev.disk === "Diskless") return Promise.resolve();
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

  /** The handshake ends in StandAlone for `why` (drbd_sync_handshake's and receive_protocol's refusals). */
  refuse(why: string): "standalone" {
    this.lastError = why;
    this.log.error({ err: why }, "going StandAlone");
    return "standalone";
  }

  /** Hands every later packet of the data socket to the receiver; errors drop the connection. */
  dispatchData(data: PacketStream): void {
    data.dispatch(
      (p) => this.dataHandler(p),
      (e) => this.lost(e),
    );
  }

  /**
   * A p_block_req the peer may send only in some states (`allowed`), for whole sectors up to `max` bytes;
   * anything else is a protocol error that drops the connection.
   */
  /**
   * Answers a peer's block request without data (P_NEG_DREPLY, P_NEG_RS_DREPLY, P_RS_IS_IN_SYNC): the
   * request's sector, block id and size, on the meta socket.
   */
  answerRequest(cmd: DrbdCommand, r: Pick<BlockRequest, "sector" | "blockId" | "size">): Promise<void> {
    const ack = encodeBlockAck({ sector: r.sector, blockId: r.blockId, size: r.size, seqNum: 0 });
    return this.send(this.meta, cmd, ack);
  }

  checkedRequest(payload: Buffer, what: string, allowed: boolean, max: number): BlockRequest {
    const r = decodeBlockRequest(payload);
    if (!allowed) throw new DrbdProtocolError(`${what} while ${this.state.name}`);
    if (r.size === 0 || r.size % SECTOR !== 0 || r.size > max)
      throw new DrbdProtocolError(`${what} of ${r.size} bytes`);
    return r;
  }
}
