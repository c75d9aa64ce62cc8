/**
 * DRBD sockets read into a buffer of their own (net.Socket's `onread: { buffer, callback }`) instead of a
 * fresh ArrayBuffer per read(2). At 100+ MB/s of replicated writes those per-read buffers, outside the JS
 * heap, reached V8's external-memory limit between the rare scavenges and forced a full mark-compact every
 * ~100 ms on the Secondary (docs/benchmarks-drbd.md); read into one reused buffer, a 64 KiB P_DATA goes
 * from there straight into the receive pages, and a read takes up to OWNED_READ_BYTES at once.
 *
 * A read's bytes are valid only during the call that hands them over (the next read overwrites them). A
 * PacketStream consumes them there (setReadSink); before that (the first packet, the handshake's start) they
 * arrive as 'data' events of a copy, as from any socket.
 *
 * Node 20 takes `onread` only for a socket it connects; a socket a net.Server accepted is wrapped anew
 * around its handle (the server is created with pauseOnConnect, so the handle has not read yet). Should that
 * handle not be there (another Node), the accepted socket is used as it is: it reads the ordinary way.
 */
import { Socket, connect as tcpConnect, type NetConnectOpts } from "node:net";

/** One read(2) at most: a few 64 KiB P_DATA at a time. */
export const OWNED_READ_BYTES = 256 * 1024;

/** Consumes a read before returning; `view` is not valid after it. */
export type ReadSink = (view: Buffer) => void;

const sinks = new WeakMap<Socket, ReadSink>();
const owned = new WeakSet<Socket>();

function onread(socket: () => Socket): { buffer: Buffer; callback: (n: number, buf: Uint8Array) => boolean } {
  const buffer = Buffer.allocUnsafeSlow(OWNED_READ_BYTES);
  return {
    buffer,
    callback: (n) => {
      const s = socket();
      const view = buffer.subarray(0, n);
      const sink = sinks.get(s);
      if (sink) sink(view);
      else s.emit("data", Buffer.from(view));
      // Keep reading; a sink that must stop pauses the socket itself (PacketStream.pauseReading).
      return true;
    },
  };
}

/** net.connect with the socket reading into its own buffer. */
export function connectOwned(opts: NetConnectOpts): Socket {
  let s: Socket | undefined = undefined;
  s = tcpConnect({ ...opts, onread: onread(() => s as Socket) });
  owned.add(s);
  return s;
}

/** An accepted socket (from a server made with pauseOnConnect) re-made to read into its own buffer. */
export function adoptOwned(accepted: Socket): Socket {
  const inner = accepted as unknown as { _handle?: object | null };
  const handle = inner._handle;
  if (!handle || accepted.destroyed) {
    accepted.resume();
    return accepted;
  }
  let s: Socket | undefined = undefined;
  const opts = { handle, readable: true, writable: true, onread: onread(() => s as Socket) };
  s = new Socket(opts as ConstructorParameters<typeof Socket>[0]);
  // The old wrapper lets go of the handle without closing it (and the server stops counting it).
  inner._handle = null;
  accepted.destroy();
  owned.add(s);
  return s;
}

/** The socket reads into its own buffer: its reads can go to a sink. */
export function readsOwned(s: Socket): boolean {
  return owned.has(s);
}

/** Reads go to `sink`, consumed during the call (undefined: back to copied 'data' events). */
export function setReadSink(s: Socket, sink: ReadSink | undefined): void {
  if (sink) sinks.set(s, sink);
  else sinks.delete(s);
}
