/**
 * The connection of a multi-volume DRBD 8.4 resource to its peer (drbd_receiver.c conn_connect,
 * drbd_connected, conn_disconnect): one socket pair and one handshake of features, authentication and
 * P_PROTOCOL for the resource, then each volume's P_SIZES / P_UUIDS / P_STATE, sync handshake, resync and
 * request path over its view of the shared sockets (volume_router.ts). Each volume is a DrbdConnection as a
 * single-volume resource has, joined to the others (VolumeMembership): its packets carry its volume
 * number, the epochs are the connection's (sender_epoch.ts, barrier_join.ts), only the first volume pings,
 * and whatever drops one volume's connection drops all of them — the kernel's connection state is one.
 *
 * Volume numbers travel in p_header100 only, so the peer must agree on protocol 100 or later.
 */
import type { Server } from "node:net";
import { once } from "node:events";
import { createPeerServer } from "./peer_address_filter.js";
import { DrbdProtocolError } from "./protocol.js";
import { DrbdConnection, type ConnectionOptions, type ConnectionStateName } from "./connection.js";
import type { Link } from "./link.js";
import type { PacketStream } from "./packet_stream.js";
import { handshakeConnection } from "./handshake.js";
import { closeGently, establishSocketPair, sleep, type SocketPair } from "./sockets.js";
import { SenderEpoch } from "./sender_epoch.js";
import { BarrierJoin } from "./barrier_join.js";
import { VolumeRouter } from "./volume_router.js";

/** One volume of the resource: its number and its connection options (its device, its handlers). */
export interface VolumeConnectionOptions {
  volume: number;
  options: ConnectionOptions;
}

export class DrbdResourceConnection {
  /** The volumes' connections by volume number, lowest first. */
  readonly volumes: ReadonlyMap<number, DrbdConnection>;
  private readonly first: DrbdConnection;
  private readonly barriers: BarrierJoin;
  private server: Server | undefined;
  private establishing = false;
  private stopped = true;
  /** The volumes replicate (or are in their per-volume handshake) over the current socket pair. */
  private live = false;
  private loop: Promise<void> | undefined;
  private closed: Promise<void> = Promise.resolve();
  private markClosed: (() => void) | undefined;
  /** Why the connection last dropped or refused to go on. */
  lastError: string | undefined;

  constructor(volumes: readonly VolumeConnectionOptions[]) {
    if (volumes.length === 0) throw new Error("drbd: a resource connection needs at least one volume");
    const sorted = [...volumes].sort((a, b) => a.volume - b.volume);
    const epoch = new SenderEpoch();
    this.barriers = new BarrierJoin(sorted.length);
    const map = new Map<number, DrbdConnection>();
    for (const v of sorted) {
      if (map.has(v.volume)) throw new Error(`drbd: volume ${v.volume} given twice`);
      map.set(
        v.volume,
        new DrbdConnection(v.options, {
          volume: v.volume,
          epoch,
          barriers: this.barriers,
          pings: map.size === 0,
          lost: (e) => this.lost(e),
          standAlone: (why) => this.goStandAlone(why),
        }),
      );
    }
    this.volumes = map;
    this.first = map.values().next().value as DrbdConnection;
  }

  /** The connection state of the first volume (the resource's connection state while not resyncing). */
  get state(): ConnectionStateName {
    return this.first.state;
  }

  get error(): string | undefined {
    return this.lastError ?? this.first.error;
  }

  private get links(): Link[] {
    return [...this.volumes.values()].map((c) => c.volumeLink);
  }

  /** drbdsetup connect for the resource: listen and keep trying to reach the peer until disconnect(). */
  async connect(opts: { discardMyData?: boolean } = {}): Promise<void> {
    if (!this.stopped) return;
    const lead = this.first.volumeLink;
    for (const link of this.links) {
      const discard = opts.discardMyData ?? link.opts.discardMyData ?? false;
      if (discard && link.device.role === "Primary")
        throw new Error(`${link.device.name}: --discard-my-data not allowed when primary.`);
      link.discardMyData = discard;
    }
    this.stopped = false;
    for (const link of this.links) link.stopped = false;
    this.server = createPeerServer(lead.opts.peer.host, lead.log);
    this.server.on("connection", (s) => {
      if (!this.establishing) s.destroy();
    });
    this.server.listen(lead.opts.local.port, lead.opts.local.host);
    await once(this.server, "listening");
    this.setStates("WFConnection");
    this.loop = this.run();
  }

  /** drbdsetup disconnect for the resource: every volume StandAlone. */
  async disconnect(): Promise<void> {
    this.stopped = true;
    for (const link of this.links) {
      link.stopped = true;
      link.state.linkLost("Disconnecting");
    }
    this.drop(new Error("disconnect requested"));
    this.server?.close();
    this.server = undefined;
    await this.loop;
    this.setStates("StandAlone");
  }

  /** Resolves when every volume's state is `want` (or rejects after `timeoutMs`). */
  async waitFor(want: ConnectionStateName, timeoutMs = 10000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (const c of this.volumes.values()) await c.waitFor(want, Math.max(1, until - Date.now()));
  }

  private setStates(s: ConnectionStateName): void {
    for (const link of this.links) link.state.change(s);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const diskless = this.links.find((l) => l.device.disk === "Diskless");
      if (diskless) {
        this.goStandAlone(
          `${diskless.device.name}: the disk is detached: a Diskless node does not connect (attach first)`,
        );
        return;
      }
      try {
        if ((await this.session()) === "standalone") return;
        await this.closed;
        if (!this.stopped) this.setStates("WFConnection");
      } catch (e) {
        if (this.stopped) break;
        this.lastError = (e as Error).message;
        this.first.volumeLink.log.warn({ err: this.lastError }, "connection attempt failed");
        this.drop(e as Error);
        this.setStates(e instanceof DrbdProtocolError ? "ProtocolError" : "NetworkFailure");
        await sleep(50 + Math.random() * 200);
        if (!this.stopped) this.setStates("WFConnection");
      }
    }
  }

  /** One socket pair: the connection-wide handshake, then every volume's; "standalone" when refused. */
  private async session(): Promise<"running" | "standalone"> {
    const lead = this.first.volumeLink;
    this.establishing = true;
    let pair: SocketPair;
    try {
      pair = await establishSocketPair(this.server as Server, lead.opts, lead.log, () => this.stopped);
    } finally {
      this.establishing = false;
    }
    if (this.stopped) {
      pair.data.socket.destroy();
      pair.meta.socket.destroy();
      return "running";
    }
    this.lastError = undefined;
    this.closed = new Promise<void>((r) => (this.markClosed = r));
    this.setStates("WFReportParams");
    for (const link of this.links) link.resolveConflicts = pair.resolveConflicts;
    if ((await handshakeConnection(lead, pair.data, pair.meta)) === "standalone")
      return this.refused(lead.lastError ?? "refused");
    if (lead.agreedVersion < 100)
      return this.refused(
        `the peer agreed on protocol ${lead.agreedVersion}; a resource of ${this.volumes.size} volumes needs 100 or later (volume numbers travel in p_header100)`,
      );
    const data = lead.data as PacketStream;
    const meta = lead.meta as PacketStream;
    for (const link of this.links) {
      link.agreedVersion = lead.agreedVersion;
      link.agreedFeatures = lead.agreedFeatures;
      link.integrity = lead.integrity;
    }
    this.barriers.reset();
    this.live = true;
    const router = new VolumeRouter(
      data,
      meta,
      [...this.volumes.keys()],
      (e) => this.lost(e),
      (v, p) => this.volumes.get(v)?.receiveBarrier(p.payload),
    );
    const verdicts = await Promise.allSettled(
      [...this.volumes].map(([v, c]) => c.joinShared(router.data(v), router.meta(v))),
    );
    const failed = verdicts.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const refusedBy = [...this.volumes.values()].find(
      (_, i) => (verdicts[i] as PromiseFulfilledResult<string>).value === "standalone",
    );
    if (refusedBy) {
      // As for one volume: the data socket closes gently so the peer reads our last packets first.
      await closeGently([data.socket], 1000);
      return this.refused(refusedBy.error ?? "refused");
    }
    return "running";
  }

  /** The handshake refused: StandAlone for good. */
  private refused(why: string): "standalone" {
    this.goStandAlone(why);
    return "standalone";
  }

  /** A volume's connection broke (or the shared sockets did): every volume drops it. */
  private lost(e: Error): void {
    if (!this.live) return;
    this.live = false;
    this.lastError = e.message;
    for (const c of this.volumes.values()) c.volumeLost(e);
    this.drop(e);
  }

  /** Every volume lets go of the shared sockets. */
  private drop(e: Error): void {
    this.live = false;
    for (const c of this.volumes.values()) c.dropShared(e);
    this.markClosed?.();
  }

  /** C_DISCONNECTING for good: every volume StandAlone. */
  private goStandAlone(why: string): void {
    this.stopped = true;
    this.live = false;
    this.lastError = why;
    for (const c of this.volumes.values()) c.volumeStandAlone(why);
    this.drop(new Error(why));
    this.server?.close();
    this.server = undefined;
    this.setStates("StandAlone");
  }
}
