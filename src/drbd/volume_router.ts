/**
 * The volumes of a multi-volume resource share one socket pair (DRBD 8.4: one drbd_connection, a
 * drbd_peer_device per volume). From protocol 100 on every packet's p_header100 carries a volume number;
 * the kernel's receiver looks the device up by it (conn_peer_device(connection, pi->vnr)) for the
 * per-volume packets, and handles the connection's own packets without it. VolumeRouter reads the shared
 * sockets and gives each volume a view of them (a PacketStream of its own packets), so each volume's
 * handshake, sync handshake, resync and request path run as they do for a single volume.
 *
 * Connection-wide (drbd_receiver.c, the handlers that take the connection, not a peer device): P_BARRIER
 * and P_BARRIER_ACK (the epoch spans all volumes: every volume takes them, barrier_join.ts and the shared
 * SenderEpoch answer once) and P_PROTOCOL_UPDATE (every volume's link follows the new protocol; nothing is
 * answered) go to every volume; P_PING / P_PING_ACK, P_CONN_ST_CHG_REQ / _REPLY, P_UNPLUG_REMOTE to the
 * first volume (the kernel sends them with volume number 0; the first volume pings).
 */
import type { Socket } from "node:net";
import { commandName, DrbdCommand, DrbdProtocolError, ownedPacket, type Packet } from "./protocol.js";
import { PacketStream, type PacketSource } from "./packet_stream.js";

/** How a packet is routed to the volumes of a connection. */
export type Route = "volume" | "every-volume" | "connection";

/** Packets every volume takes: the epoch is the connection's. */
const EVERY_VOLUME = new Set<DrbdCommand>([
  DrbdCommand.Barrier,
  DrbdCommand.BarrierAck,
  DrbdCommand.ProtocolUpdate,
]);
/** Packets of the connection itself; the first volume handles them. */
const CONNECTION = new Set<DrbdCommand>([
  DrbdCommand.Ping,
  DrbdCommand.PingAck,
  DrbdCommand.ConnStChgReq,
  DrbdCommand.ConnStChgReply,
  DrbdCommand.UnplugRemote,
]);

/** Where a packet with this command goes once the handshake's connection-wide part is over. */
export function routeOf(cmd: DrbdCommand): Route {
  if (EVERY_VOLUME.has(cmd)) return "every-volume";
  if (CONNECTION.has(cmd)) return "connection";
  return "volume";
}

/**
 * Packets (by payload bytes) a volume's view may hold while that volume reads in sequence (its handshake or
 * bitmap exchange) and the others keep going; beyond it the peer is not following the protocol.
 */
export const VOLUME_INBOX_LIMIT = 64 << 20;

/** A packet's payload bytes, a P_DATA's data slices (Packet.rest) included. */
function bytesOf(p: Packet): number {
  let n = p.payload.length;
  if (p.rest) for (const b of p.rest) n += b.length;
  return n;
}

/** A volume's packets waiting until its view takes them. */
class VolumeInbox implements PacketSource {
  private readonly queue: Packet[] = [];
  private head = 0;
  private bytes = 0;

  constructor(private readonly what: string) {}

  push(p: Packet): void {
    this.bytes += bytesOf(p);
    if (this.bytes > VOLUME_INBOX_LIMIT)
      throw new DrbdProtocolError(`${this.what}: more than ${VOLUME_INBOX_LIMIT} bytes of packets not taken`);
    this.queue.push(p);
  }

  /**
   * The packet just delivered was not taken at once and its read is about to be reused: a borrowed P_DATA
   * gets its own copy. Only the newest can be borrowed (each one before it went through here).
   */
  retain(): void {
    const last = this.queue.length - 1;
    if (last >= this.head) this.queue[last] = ownedPacket(this.queue[last] as Packet);
  }

  next(): Packet | undefined {
    if (this.head === this.queue.length) return undefined;
    const p = this.queue[this.head++];
    this.bytes -= bytesOf(p);
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
    return p;
  }

  end(): void {}

  setAgreedVersion(): void {}
}

interface VolumeView {
  inbox: VolumeInbox;
  stream: PacketStream;
}

/** Views of one shared socket (data or meta) for each volume. */
class SocketRouter {
  private readonly views = new Map<number, VolumeView>();
  private readonly first: VolumeView;

  constructor(
    shared: PacketStream,
    volumes: readonly number[],
    private readonly barrierWhileReading?: (volume: number, p: Packet) => void,
  ) {
    const socket: Socket = shared.socket;
    const raw = { socket, alive: !socket.destroyed, release: (): Buffer[] => [] };
    // Each view watches the socket's end, error and close as the shared stream does.
    socket.setMaxListeners(socket.getMaxListeners() + 4 * volumes.length);
    for (const v of volumes) {
      const inbox = new VolumeInbox(`volume ${v} (${shared.kind} socket)`);
      const stream = new PacketStream(raw, shared.kind, { source: inbox, writer: shared.writer });
      this.views.set(v, { inbox, stream });
    }
    this.first = this.views.get(Math.min(...volumes)) as VolumeView;
  }

  stream(volume: number): PacketStream {
    return (this.views.get(volume) as VolumeView).stream;
  }

  route(p: Packet): void {
    const cmd = p.header.command;
    const how = routeOf(cmd);
    if (how === "every-volume") {
      for (const [volume, v] of this.views) {
        // A volume reading its view in sequence (its handshake, a bitmap exchange) cannot take a P_BARRIER
        // there, yet the epoch is also its: its write receiver takes it at once. (Its own P_DATA cannot
        // arrive in that phase, so the barrier overtakes none of them.)
        if (cmd === DrbdCommand.Barrier && this.barrierWhileReading && !v.stream.dispatching)
          this.barrierWhileReading(volume, p);
        else deliver(v, p);
      }
      return;
    }
    if (how === "connection") return deliver(this.first, p);
    const v = this.views.get(p.header.volume);
    if (!v)
      throw new DrbdProtocolError(
        `${commandName(cmd)} for volume ${p.header.volume}, which is not configured`,
      );
    deliver(v, p);
  }
}

function deliver(v: VolumeView, p: Packet): void {
  v.inbox.push(p);
  v.stream.poke();
  if (p.borrowed) v.inbox.retain();
}

/**
 * Routes the packets of a connection's shared data and meta sockets to per-volume views. Created after the
 * connection-wide part of the handshake (features, authentication, P_PROTOCOL), which reads `data` itself.
 */
export class VolumeRouter {
  private readonly dataRouter: SocketRouter;
  private readonly metaRouter: SocketRouter;

  constructor(
    data: PacketStream,
    meta: PacketStream,
    volumes: readonly number[],
    /** The shared sockets failed or a packet could not be routed: the connection drops. */
    lost: (e: Error) => void,
    /** A P_BARRIER for a volume whose view is read in sequence: straight to its write receiver. */
    barrierWhileReading?: (volume: number, p: Packet) => void,
  ) {
    if (volumes.length === 0) throw new Error("a connection needs at least one volume");
    this.dataRouter = new SocketRouter(data, volumes, barrierWhileReading);
    this.metaRouter = new SocketRouter(meta, volumes);
    data.dispatch((p) => this.dataRouter.route(p), lost);
    meta.dispatch((p) => this.metaRouter.route(p), lost);
  }

  /** The volume's view of the data socket. */
  data(volume: number): PacketStream {
    return this.dataRouter.stream(volume);
  }

  /** The volume's view of the meta socket. */
  meta(volume: number): PacketStream {
    return this.metaRouter.stream(volume);
  }
}
