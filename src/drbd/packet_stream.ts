/**
 * Framing glue between a TCP socket and DRBD's packets (drbd_receiver.c drbd_recv_header / decode_header,
 * receive_first_packet): RawSocket holds a freshly connected or accepted socket until its role is known,
 * PacketStream reads one socket's packets in sequence (the handshake) or dispatches them (replication).
 */
import type { Socket } from "node:net";
import {
  commandName,
  decodeHeader,
  DrbdCommand,
  DrbdProtocolError,
  ownedPacket,
  PacketFramer,
  type DrbdSocket,
  type Packet,
} from "./protocol.js";
import { PacketWriter } from "./packet_writer.js";
import { readsOwned, setReadSink } from "./owned_reads.js";

/**
 * Where a volume's view of a shared socket takes its packets (volume_router.ts): the volumes of one
 * resource share one socket pair, and the router hands each volume the packets that carry its number.
 */
export interface PacketSource {
  next(): Packet | undefined;
  end(): void;
  setAgreedVersion(v: number): void;
}

/** A volume's view of a socket another PacketStream reads: its packets come from `source`, sent through `writer`. */
export interface SharedSocketView {
  source: PacketSource;
  writer: PacketWriter;
}

/** Sockets whose reading pauseReading() stopped, with how many readers stopped it. */
const readingStopped = new WeakMap<Socket, number>();

/**
 * Sequential reader of one socket's packets (handshake) that turns into a dispatcher (replication). Packets
 * are framed only when someone takes them, so the header format can change right after the feature packet
 * even when the peer's next packets arrived in the same TCP segment.
 */
export class PacketStream {
  private readonly framer: PacketSource;
  private waiter: { resolve: (p: Packet) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private onPacket: ((p: Packet) => void) | undefined;
  private onError: ((e: Error) => void) | undefined;
  readonly socket: Socket;
  /** The send side: packets of one turn leave in one writev once replication runs (packet_writer.ts). */
  readonly writer: PacketWriter;

  constructor(
    raw: Pick<RawSocket, "socket" | "alive" | "release">,
    readonly kind: DrbdSocket,
    view?: SharedSocketView,
  ) {
    const socket = (this.socket = raw.socket);
    if (view) {
      this.framer = view.source;
      this.writer = view.writer;
    } else {
      // The data socket's P_DATA come as slices of the reads (peer_writes.ts copies them into its pages).
      const framer = (this.framer = new PacketFramer({ socket: kind, scatterData: kind === "data" }));
      this.writer = new PacketWriter(socket);
      const early = raw.release();
      for (const c of early) framer.push(c);
      socket.on("data", (chunk: Buffer) => {
        if (this.failure) return;
        framer.push(chunk);
        this.pump();
      });
      // A socket reading into its own buffer (owned_reads.ts): each read is framed and dispatched while it is
      // valid; what is left of it (a packet cut by the read's end, packets nobody takes yet) is copied.
      if (readsOwned(socket))
        setReadSink(socket, (view) => {
          if (this.failure) return;
          framer.pushBorrowed(view);
          this.pump();
          framer.retain();
        });
    }
    socket.on("end", () => {
      try {
        this.framer.end();
        this.fail(new DrbdProtocolError(`peer closed the ${kind} socket`));
      } catch (e) {
        this.fail(e as Error);
      }
    });
    socket.on("error", (e) => this.fail(e));
    socket.on("close", () => this.fail(new DrbdProtocolError(`${kind} socket closed`)));
    if (!raw.alive) queueMicrotask(() => this.fail(new DrbdProtocolError(`${kind} socket closed`)));
  }

  setAgreedVersion(v: number): void {
    this.framer.setAgreedVersion(v);
  }

  /** A volume view's source has packets (volume_router.ts). */
  poke(): void {
    this.pump();
  }

  /** Frames packets while someone wants them. */
  private pump(): void {
    try {
      while (!this.failure && (this.onPacket || this.waiter)) {
        const p = this.framer.next();
        if (!p) return;
        if (this.onPacket) {
          this.onPacket(p);
          continue;
        }
        const w = this.waiter;
        this.waiter = undefined;
        // The taker runs later (a promise): a borrowed P_DATA's data must outlive the read.
        w?.resolve(ownedPacket(p));
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  /** The next packet, or a rejection after `timeoutMs`, a framing error or EOF. */
  next(timeoutMs: number): Promise<Packet> {
    if (this.failure) return Promise.reject(this.failure);
    const p = new Promise<Packet>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new DrbdProtocolError(`no packet on the ${this.kind} socket within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (pk) => {
          clearTimeout(timer);
          resolve(pk);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
    this.pump();
    return p;
  }

  /** Expect a particular command next. */
  async expect(cmd: DrbdCommand, timeoutMs: number): Promise<Buffer> {
    const p = await this.next(timeoutMs);
    if (p.header.command !== cmd)
      throw new DrbdProtocolError(`expected ${commandName(cmd)}, got ${commandName(p.header.command)}`);
    return p.payload;
  }

  /** Hands every later packet to `handler`; errors (thrown or from the socket) go to `onError`, once. */
  dispatch(handler: (p: Packet) => void, onError: (e: Error) => void): void {
    this.onPacket = handler;
    this.onError = onError;
    this.writer.batching = true;
    if (this.failure) onError(this.failure);
    else this.pump();
  }

  /** Packets go to a handler (dispatch), not to next(). */
  get dispatching(): boolean {
    return this.onPacket !== undefined;
  }

  /**
   * Stops reading the socket (receive buffers exhausted); TCP's window then holds the peer back. The volumes
   * of a resource share the socket: it is read again once every one that stopped it resumed.
   */
  pauseReading(): void {
    const n = readingStopped.get(this.socket) ?? 0;
    readingStopped.set(this.socket, n + 1);
    if (n === 0) this.socket.pause();
  }

  resumeReading(): void {
    const n = readingStopped.get(this.socket) ?? 0;
    if (n > 1) return void readingStopped.set(this.socket, n - 1);
    readingStopped.delete(this.socket);
    if (!this.failure) this.socket.resume();
  }

  /** Back to reading in sequence with next() until dispatch() again; later packets wait in the framer. */
  pause(): void {
    this.onPacket = undefined;
  }

  fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    // What this turn queued still goes to the kernel first (a disconnect right after a P_STATE, as an
    // unbatched send would have done); then the socket goes.
    this.writer.flush();
    this.socket.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(e);
    this.onError?.(e);
  }
}

/**
 * A socket before the handshake: buffers what arrives (so nothing is lost and EOF is seen at once) until a
 * PacketStream takes it over.
 */
export class RawSocket {
  readonly chunks: Buffer[] = [];
  private dead = false;
  private wake: (() => void) | undefined;
  private readonly onData = (c: Buffer) => {
    this.chunks.push(c);
    this.wake?.();
  };
  private readonly onGone = () => {
    this.dead = true;
    this.wake?.();
  };

  constructor(readonly socket: Socket) {
    socket.on("data", this.onData);
    socket.on("end", this.onGone);
    socket.on("close", this.onGone);
    socket.on("error", this.onGone);
  }

  get alive(): boolean {
    return !this.dead && !this.socket.destroyed;
  }

  /** receive_first_packet: an h80 header with length 0 naming the socket's role. */
  async firstPacket(timeoutMs: number): Promise<number> {
    const until = Date.now() + timeoutMs;
    while (this.chunks.reduce((n, c) => n + c.length, 0) < 8) {
      if (!this.alive || Date.now() > until) throw new DrbdProtocolError("no first packet");
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, until - Date.now()));
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wake = undefined;
    }
    const all = Buffer.concat(this.chunks);
    this.chunks.length = 0;
    if (all.length > 8) this.chunks.push(all.subarray(8));
    const h = decodeHeader(all.subarray(0, 8), 0);
    if (h.length !== 0) throw new DrbdProtocolError(`first packet ${commandName(h.command)} with a payload`);
    return h.command;
  }

  /** Stop buffering; returns what was buffered. */
  release(): Buffer[] {
    this.socket.off("data", this.onData);
    this.socket.off("end", this.onGone);
    this.socket.off("close", this.onGone);
    this.socket.off("error", this.onGone);
    return this.chunks.splice(0);
  }
}
