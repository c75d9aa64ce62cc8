/**
 * Only the configured peer may open a replication socket. DRBD 8.4's kernel module accepts a socket
 * from any address (drbd_receiver.c drbd_wait_for_connect) and a failed CRAM-HMAC exchange on it
 * (drbd_do_auth returning -1) makes conn_connect give up: "Discarding network configuration", StandAlone
 * until `drbdadm connect`. DRBD 9's TCP transport closes a socket whose source address matches no
 * configured path before any packet is read ("Closing unexpected connection from ..."); usertgt does
 * the same for 8.4, so a stranger can neither take part in the handshake nor end replication.
 */
import { isIP } from "node:net";
import { Server, type Socket } from "node:net";
import type { Logger } from "../util/log.js";
import { adoptOwned } from "./owned_reads.js";

/** Addresses reported at most once each (a bound, so a scan of many addresses cannot grow memory). */
const MAX_REPORTED = 1024;

/** "::ffff:10.0.0.1" → "10.0.0.1": an IPv4 peer on a dual-stack socket. */
function canonical(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith("::ffff:") && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

export class PeerAddressFilter {
  private readonly peer: string;
  private readonly reported = new Set<string>();
  /** Sockets closed because they came from elsewhere (for tests and status). */
  refused = 0;

  constructor(
    peerHost: string,
    private readonly log: Logger,
  ) {
    this.peer = canonical(peerHost);
  }

  /** True for a socket from the peer; any other is closed here, logged once per address. */
  admit(socket: Socket): boolean {
    const from = canonical(socket.remoteAddress ?? "");
    if (from === this.peer) return true;
    this.refused++;
    socket.destroy();
    if (!this.reported.has(from) && this.reported.size < MAX_REPORTED) {
      this.reported.add(from);
      this.log.warn({ from, peer: this.peer }, `Closing unexpected connection from ${from}`);
    }
    return false;
  }
}

/** A listening server whose "connection" event only ever sees sockets from the peer. */
class PeerOnlyServer extends Server {
  constructor(readonly filter: PeerAddressFilter) {
    // Paused: an admitted socket is re-made to read into a buffer of its own before it reads (owned_reads.ts).
    super({ pauseOnConnect: true });
  }

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event !== "connection") return super.emit(event, ...args);
    if (!this.filter.admit(args[0] as Socket)) return false;
    return super.emit(event, adoptOwned(args[0] as Socket));
  }
}

/** The replication listener: net.createServer() that drops sockets from anywhere but `peerHost`. */
export function createPeerServer(peerHost: string, log: Logger): Server & { filter: PeerAddressFilter } {
  return new PeerOnlyServer(new PeerAddressFilter(peerHost, log));
}
