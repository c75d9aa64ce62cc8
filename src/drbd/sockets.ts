/**
 * The two TCP sockets of a DRBD connection (drbd_receiver.c conn_connect, drbd_try_connect,
 * drbd_wait_for_connect, receive_first_packet): "data" for packets that carry or order data, "meta" for
 * acknowledgements and pings.
 *
 * Both nodes listen and connect; a node announces a socket it opened with P_INITIAL_DATA when it has no data
 * socket yet, else P_INITIAL_META; the acceptor classifies a socket by that packet. Sockets that cross (both
 * sides opened a data socket) are resolved by dropping one and retrying at random. The node that accepted
 * the meta socket holds RESOLVE_CONFLICTS.
 */
import { type Server, type Socket } from "node:net";
import { connectOwned } from "./owned_reads.js";
import type { Logger } from "../util/log.js";
import { DrbdCommand, encodeHeader } from "./protocol.js";
import type { Endpoint } from "./connection_options.js";
import { RawSocket } from "./packet_stream.js";

export interface SocketPair {
  data: RawSocket;
  meta: RawSocket;
  /** This node accepted the meta socket (RESOLVE_CONFLICTS). */
  resolveConflicts: boolean;
}

/**
 * conn_connect: both sides connect and accept until a data and a meta socket are paired. A socket that
 * crossed with the peer's is replaced by the peer's; then at random either connect again or only accept,
 * so two nodes doing the same thing at the same time drift apart. Before the pair is used both sockets are
 * checked once more after a short pause (the kernel's socket-check-timeout), because the peer may just have
 * dropped one of them.
 */
export async function establishSocketPair(
  server: Server,
  opts: { peer: Endpoint; local: Endpoint; connectIntSec?: number },
  log: Logger,
  stopped: () => boolean,
): Promise<SocketPair> {
  let data: RawSocket | undefined;
  let meta: RawSocket | undefined;
  let resolveConflicts = false;
  const accepted: RawSocket[] = [];
  const onConn = (s: Socket) => accepted.push(new RawSocket(s));
  server.on("connection", onConn);
  let acceptOnly = false;
  try {
    const intervalMs = (opts.connectIntSec ?? 10) * 1000;
    for (;;) {
      if (stopped()) throw new Error("disconnect requested");
      if (data && !data.alive) data = undefined;
      if (meta && !meta.alive) meta = undefined;
      // Sockets the peer already opened come first: the peer counts on them.
      if (!acceptOnly && (!data || !meta) && accepted.length === 0) {
        const s = await tryConnect(opts.peer, opts.local, Math.min(intervalMs, 1000));
        if (s) {
          const raw = new RawSocket(s);
          log.debug({ role: data ? "meta" : "data", port: s.localPort }, "connected out");
          if (!data) {
            data = raw;
            s.write(encodeHeader(DrbdCommand.InitialData, 0, 0));
          } else {
            meta = raw;
            resolveConflicts = false;
            s.write(encodeHeader(DrbdCommand.InitialMeta, 0, 0));
          }
        }
      }
      acceptOnly = false;
      if (data && meta) {
        await sleep(50);
        log.debug({ data: data.alive, meta: meta.alive }, "pair check");
        if (data.alive && meta.alive) return { data, meta, resolveConflicts };
        continue;
      }
      const s = accepted.shift() ?? (await waitAccept(server, accepted, 100 + Math.random() * 200));
      if (!s) {
        if (!data && !meta) await sleep(Math.min(intervalMs, 100 + Math.random() * 200));
        continue;
      }
      const first = await s.firstPacket(1000).catch(() => undefined);
      log.debug({ first, port: s.socket.remotePort, data: !!data, meta: !!meta }, "accepted");
      if (first === DrbdCommand.InitialData) {
        if (data) {
          log.debug("initial packet S crossed");
          data.socket.destroy();
          acceptOnly = Math.random() < 0.5;
        }
        data = s;
      } else if (first === DrbdCommand.InitialMeta) {
        resolveConflicts = true;
        if (meta) {
          log.debug("initial packet M crossed");
          meta.socket.destroy();
          acceptOnly = Math.random() < 0.5;
        }
        meta = s;
      } else s.socket.destroy();
    }
  } catch (e) {
    data?.socket.destroy();
    meta?.socket.destroy();
    for (const s of accepted) s.socket.destroy();
    throw e;
  } finally {
    server.off("connection", onConn);
    for (const s of accepted) if (s !== data && s !== meta) s.socket.destroy();
  }
}

/** end() the sockets and wait until they closed or `ms` passed. */
export function closeGently(sockets: (Socket | undefined)[], ms: number): Promise<void> {
  const open = sockets.filter((s): s is Socket => s !== undefined && !s.destroyed);
  return new Promise((resolve) => {
    let left = open.length;
    const timer = setTimeout(resolve, ms);
    if (left === 0) {
      clearTimeout(timer);
      resolve();
    }
    for (const s of open) {
      s.once("close", () => {
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.end();
    }
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** One connect attempt; undefined when refused or slower than `timeoutMs`. */
function tryConnect(peer: Endpoint, local: Endpoint, timeoutMs: number): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    // drbd_try_connect binds the configured local address as the source ("needed for multihomed hosts"):
    // the peer's filter (peer_address_filter.ts) and a kernel peer see the address they expect.
    const wildcard = local.host === "" || local.host === "0.0.0.0" || local.host === "::";
    const s = connectOwned({
      host: peer.host,
      port: peer.port,
      localAddress: wildcard ? undefined : local.host,
    });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(undefined);
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(timer);
      s.removeAllListeners("error");
      s.on("error", () => {});
      resolve(s);
    });
    s.once("error", () => {
      clearTimeout(timer);
      s.destroy();
      resolve(undefined);
    });
  });
}

/** Waits up to `timeoutMs` for the server to accept a socket. */
function waitAccept(
  server: Server,
  accepted: RawSocket[],
  timeoutMs: number,
): Promise<RawSocket | undefined> {
  return new Promise((resolve) => {
    const onConn = () => {
      clearTimeout(timer);
      resolve(accepted.shift());
    };
    const timer = setTimeout(() => {
      server.off("connection", onConn);
      resolve(undefined);
    }, timeoutMs);
    server.once("connection", onConn);
  });
}
