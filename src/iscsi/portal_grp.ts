/**
 * Portal groups (SPDK's portal_grp): the listening addresses that share one Target Portal Group
 * Tag (RFC 7143 §4.4.1). Every portal is one TCP listener; a connection remembers the tag of the
 * group it came through, which decides the targets it may log in to.
 */
import { createServer, type Server, type Socket } from "node:net";
import type { PortalGroupConfig } from "./options.js";

export interface BoundPortal {
  portalGroup: number;
  host: string;
  port: number;
}

export class PortalGroup {
  private readonly servers: { server: Server; host: string }[] = [];

  constructor(readonly config: PortalGroupConfig) {}

  get tag(): number {
    return this.config.tag;
  }

  get listening(): boolean {
    return this.servers.length > 0;
  }

  /** Listen on every portal; rejects naming the portal that could not be bound. */
  async start(onConnection: (socket: Socket, tag: number) => void): Promise<void> {
    try {
      await this.listenAll(onConnection);
    } catch (err) {
      // All or nothing: a group half bound would answer on some of its portals.
      await this.stop();
      throw err;
    }
  }

  private async listenAll(onConnection: (socket: Socket, tag: number) => void): Promise<void> {
    for (const portal of this.config.portals) {
      const server = createServer((socket) => onConnection(socket, this.tag));
      const host = portal.host.replace(/^\[(.*)\]$/, "$1");
      await new Promise<void>((resolve, reject) => {
        server.once("error", (err) =>
          reject(
            new Error(
              `PortalGroup${this.tag}: cannot listen on ${portal.host}:${portal.port}: ${err.message}`,
            ),
          ),
        );
        server.listen(portal.port, host, () => resolve());
      });
      this.servers.push({ server, host });
    }
  }

  addresses(): BoundPortal[] {
    const out: BoundPortal[] = [];
    for (const { server, host } of this.servers) {
      const a = server.address();
      if (a && typeof a === "object") out.push({ portalGroup: this.tag, host, port: a.port });
    }
    return out;
  }

  /** Stop accepting; existing connections are closed by their sessions. */
  async stop(): Promise<void> {
    await Promise.all(
      this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
    this.servers.length = 0;
  }
}
