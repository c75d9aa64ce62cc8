/**
 * The iSCSI target as a whole (SPDK's iscsi_tgt): portal groups listening, initiator groups and
 * target nodes from the options, the table of sessions by TSIH, and the SendTargets answer.
 * Layering: this sits on the SCSI layer's ScsiTargetDevice and nothing above it.
 */
import { isIPv6, type Socket } from "node:net";
import { log as rootLog, type Logger } from "../util/log.js";
import { ReadBufferPool } from "../scsi/read_buffer_pool.js";
import { ITNexus } from "../scsi/task.js";
import { LogRateLimiter } from "../util/log_rate_limit.js";
import { Connection, type ConnectionHost } from "./conn.js";
import { WriteDataBudget } from "./data_budget.js";
import { InitiatorGroup } from "./init_grp.js";
import { IscsiStats, loginRefusalOf } from "./iscsi_stats.js";
import type { NewSession } from "./login.js";
import { LoginThrottle } from "./login_throttle.js";
import { PreLoginPool } from "./prelogin_pool.js";
import type {
  AuthPolicy,
  ChapSecret,
  InitiatorGroupConfig,
  IscsiGlobalOptions,
  IscsiTargetOptions,
  PortalGroupConfig,
  TargetNodeConfig,
} from "./options.js";
import type { LoginFailure } from "./param.js";
import { PortalGroup } from "./portal_grp.js";
import { Session } from "./session.js";
import { TargetNode } from "./tgt_node.js";

/** RFC 7143 §11.9.1 AsyncEvent 1: the target requests a logout within Parameter3 seconds. */
const ASYNC_REQUEST_LOGOUT = 1;
/** RFC 7143 §11.9.1 AsyncEvent 3: the target will drop all connections of the session. */
const ASYNC_DROP_ALL = 3;
/** How long stop() waits for tasks in flight before closing anyway. */
const STOP_GRACE_MS = 5000;
/** QueueDepth assumed for the read-buffer pool when no target node is configured yet (SPDK's default). */
const DEFAULT_QUEUE_DEPTH = 64;

/** One connection as the control plane shows it; tsih 0 and empty names while still logging in. */
export interface IscsiConnectionInfo {
  readonly cid: number;
  readonly tsih: number;
  readonly state: string;
  readonly portalGroup: number;
  readonly initiatorAddress: string;
  readonly initiatorPort: number;
  readonly targetAddress: string;
  readonly targetPort: number;
  readonly initiatorName: string;
  readonly isid: string;
  readonly targetNodeName: string;
  readonly discovery: boolean;
}

export class IscsiTarget implements ConnectionHost {
  /** Replaced whole when the control plane changes discovery authentication. */
  globals: IscsiGlobalOptions;
  private readonly log: Logger;
  private readonly portalGroups = new Map<number, PortalGroup>();
  private readonly initiatorGroups = new Map<number, InitiatorGroup>();
  private readonly nodes = new Map<string, TargetNode>();
  private readonly authGroups = new Map<number, readonly ChapSecret[]>();
  private readonly sessions = new Map<number, Session>();
  private readonly connections = new Set<Connection>();
  private nextTsih = 1;
  private stopping = false;
  /** Refused logins, digest errors and what misbehaving peers were refused (metrics, iscsi_get_stats). */
  readonly stats = new IscsiStats();
  readonly preLogin: PreLoginPool;
  readonly loginThrottle: LoginThrottle;
  readonly logLimiter: LogRateLimiter;
  readonly writeBudget: WriteDataBudget;
  readonly readBuffers: ReadBufferPool;

  constructor(options: IscsiTargetOptions, logger?: Logger) {
    this.globals = options.globals;
    this.log = (logger ?? rootLog).child({ module: "iscsi" });
    for (const ig of options.initiatorGroups) {
      try {
        this.initiatorGroups.set(ig.tag, new InitiatorGroup(ig));
      } catch (err) {
        throw new Error(`InitiatorGroup${ig.tag}: ${(err as Error).message}`);
      }
    }
    for (const ag of options.authGroups) this.authGroups.set(ag.tag, ag.secrets);
    for (const t of options.targets) {
      const key = t.name.toLowerCase();
      if (this.nodes.has(key)) throw new Error(`target ${t.name} is configured twice`);
      this.nodes.set(key, new TargetNode(t, this.initiatorGroups));
    }
    for (const pg of options.portalGroups) this.portalGroups.set(pg.tag, new PortalGroup(pg));
    const g = this.globals;
    this.preLogin = new PreLoginPool(
      { size: g.preLoginPoolSize, perAddress: g.preLoginPerAddress, firstPduTimeoutMs: g.firstPduTimeoutMs },
      this.stats,
    );
    this.writeBudget = new WriteDataBudget(
      {
        perConnection: g.maxWriteDataPerConnection,
        total: g.maxWriteDataTotal,
        dataOutTimeoutMs: g.dataOutTimeoutSec * 1000,
      },
      this.stats,
    );
    // Idle READ buffers kept for reuse: one session's full queue of MaxBurstLength reads.
    const depth = options.targets.reduce((d, t) => Math.max(d, t.queueDepth), 0) || DEFAULT_QUEUE_DEPTH;
    this.readBuffers = new ReadBufferPool(depth * g.maxBurstLength, options.readBufferAllocator);
    this.logLimiter = new LogRateLimiter(
      undefined,
      undefined,
      undefined,
      () => this.stats.logLinesSuppressed++,
    );
    this.loginThrottle = new LoginThrottle(
      { baseDelayMs: g.authFailureDelayMs, maxDelayMs: g.authFailureDelayMaxMs },
      this.stats,
      this.log.child({ component: "login-throttle" }),
    );
  }

  async start(): Promise<void> {
    for (const pg of this.portalGroups.values()) await this.listen(pg);
    this.log.info({ portals: this.addresses() }, "iSCSI target listening");
  }

  private listen(pg: PortalGroup): Promise<void> {
    return pg.start((socket, tag) => this.accept(socket, tag));
  }

  addresses(): { portalGroup: number; host: string; port: number }[] {
    return [...this.portalGroups.values()].flatMap((pg) => pg.addresses());
  }

  // ---- Changes while running (the control plane; SPDK's iscsi_*_rpc.c) ------------------------

  /** Add a portal group; it listens at once unless `listen` is false (iscsi_start_portal_group later). */
  async addPortalGroup(config: PortalGroupConfig, listen: boolean): Promise<void> {
    if (this.portalGroups.has(config.tag)) throw new Error(`portal group ${config.tag} exists`);
    const pg = new PortalGroup(config);
    if (listen) await this.listen(pg); // a bind failure leaves nothing behind
    this.portalGroups.set(config.tag, pg);
  }

  async startPortalGroup(tag: number): Promise<void> {
    const pg = this.portalGroups.get(tag);
    if (!pg) throw new Error(`no portal group ${tag}`);
    if (!pg.listening) await this.listen(pg);
  }

  /** Close the group's listeners and every connection that came through it (SPDK iscsi_portal_grp_release). */
  async removePortalGroup(tag: number): Promise<void> {
    const pg = this.portalGroups.get(tag);
    if (!pg) throw new Error(`no portal group ${tag}`);
    this.portalGroups.delete(tag);
    const closed = pg.stop();
    const conns = [...this.connections].filter((c) => c.portalGroupTag === tag);
    const sessions = new Set(conns.map((c) => c.session).filter((s): s is Session => s !== undefined));
    for (const s of sessions) this.endSession(s, `portal group ${tag} deleted`);
    for (const c of conns) {
      c.drop(`portal group ${tag} deleted`);
      c.socket.destroy();
    }
    await closed;
  }

  portalGroupListening(tag: number): boolean {
    return this.portalGroups.get(tag)?.listening ?? false;
  }

  /** Add or replace an initiator group; target nodes see the change at their next login. */
  setInitiatorGroup(config: InitiatorGroupConfig): void {
    this.initiatorGroups.set(config.tag, new InitiatorGroup(config));
  }

  removeInitiatorGroup(tag: number): void {
    this.initiatorGroups.delete(tag);
  }

  setAuthGroup(tag: number, secrets: readonly ChapSecret[]): void {
    this.authGroups.set(tag, secrets);
  }

  removeAuthGroup(tag: number): void {
    this.authGroups.delete(tag);
  }

  setDiscoveryAuth(auth: AuthPolicy, group: number | undefined): void {
    this.globals = { ...this.globals, discoveryAuth: auth, discoveryAuthGroup: group };
  }

  addNode(config: TargetNodeConfig): TargetNode {
    const key = config.name.toLowerCase();
    if (this.nodes.has(key)) throw new Error(`target ${config.name} exists`);
    const node = new TargetNode(config, this.initiatorGroups);
    this.nodes.set(key, node);
    return node;
  }

  /**
   * Remove a target node: new logins no longer find it, and its sessions are asked to log out
   * (AsyncEvent 1) and, after `graceMs`, dropped (AsyncEvent 3), as SPDK's iscsi_tgt_node_delete.
   */
  async removeNode(name: string, graceMs: number): Promise<void> {
    const key = name.toLowerCase();
    if (!this.nodes.delete(key)) throw new Error(`no target ${name}`);
    await this.requestLogout(name, undefined, graceMs);
  }

  /**
   * RFC 7143 §11.9.1 AsyncEvent 1 to the node's sessions (those through `pgTag` only, when given);
   * sessions still there after `graceMs` are ended (SPDK iscsi_conns_request_logout).
   */
  async requestLogout(nodeName: string, pgTag: number | undefined, graceMs: number): Promise<void> {
    const sessions = this.sessionsOfNode(nodeName).filter(
      (s) =>
        pgTag === undefined ||
        [...s.connections.values()].some((c) => c instanceof Connection && c.portalGroupTag === pgTag),
    );
    if (sessions.length === 0) return;
    const seconds = Math.max(1, Math.ceil(graceMs / 1000));
    for (const s of sessions)
      for (const c of s.connections.values())
        if (c instanceof Connection) c.sendAsync(ASYNC_REQUEST_LOGOUT, 0, 0, seconds);
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && sessions.some((s) => !s.ended)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const s of sessions) this.endSession(s, "logout requested by the target");
  }

  sessionCount(): number {
    return this.sessions.size;
  }

  /** A read-only snapshot of every open connection, for the control plane (SPDK's iscsi_get_connections). */
  connectionInfo(): IscsiConnectionInfo[] {
    return [...this.connections].map((c) => ({
      cid: c.cid,
      tsih: c.session?.tsih ?? 0,
      state: c.state,
      portalGroup: c.portalGroupTag,
      initiatorAddress: c.remoteAddress,
      initiatorPort: c.socket.remotePort ?? 0,
      targetAddress: c.localAddress,
      targetPort: c.localPort,
      initiatorName: c.session?.initiatorName ?? "",
      isid: c.session?.isid ?? "",
      targetNodeName: c.session?.node?.config.name ?? "",
      discovery: c.session?.discovery ?? false,
    }));
  }

  /**
   * Stop listening, wait (bounded) for tasks in flight, then end every session: each gets
   * AsyncEvent 3 (endSession) and its connections are closed.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    // net.Server.close() calls back only once every connection has ended: stop accepting now, wait below.
    const listenersClosed = Promise.all([...this.portalGroups.values()].map((pg) => pg.stop()));
    const sessions = [...this.sessions.values()];
    const inFlight = sessions.flatMap((s) => s.inFlight().map((t) => t.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(inFlight),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_GRACE_MS))),
    ]);
    clearTimeout(timer);
    for (const s of sessions) this.endSession(s, "target stopping");
    const closing = [...this.connections].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.socket.destroyed) return resolve();
          c.socket.once("close", () => resolve());
          c.drop("target stopping");
          c.socket.destroy();
        }),
    );
    await Promise.all(closing);
    await listenersClosed;
  }

  private accept(socket: Socket, tag: number): void {
    // Connections still logging in have their own pool (prelogin_pool.ts); logged-in ones are bounded
    // by MaxSessions x MaxConnectionsPerSession, which login enforces.
    const address = socket.remoteAddress ?? "";
    const refused = this.stopping ? "target stopping" : this.preLogin.admit(address);
    if (refused !== undefined) {
      if (!this.stopping && this.logLimiter.allow(address, this.log))
        this.log.warn({ peer: address }, `connection refused: ${refused}`);
      socket.destroy();
      return;
    }
    const conn = new Connection(socket, tag, this, this.log);
    this.connections.add(conn);
    this.preLogin.add(conn, address);
  }

  // ---- ConnectionHost / LoginEnvironment ----------------------------------------------------

  loginRefused(targetName: string, failure: LoginFailure): void {
    this.stats.loginRefused(targetName, loginRefusalOf(failure.statusClass, failure.statusDetail));
  }

  digestError(kind: "header-digest" | "data-digest"): void {
    if (kind === "header-digest") this.stats.headerDigestErrors++;
    else this.stats.dataDigestErrors++;
  }

  connectionClosed(conn: Connection): void {
    this.connections.delete(conn);
    this.preLogin.release(conn);
  }

  findNode(name: string): TargetNode | undefined {
    return this.nodes.get(name.toLowerCase());
  }

  authSecrets(tag: number | undefined): readonly ChapSecret[] {
    return tag === undefined ? [] : (this.authGroups.get(tag) ?? []);
  }

  findSession(tsih: number): Session | undefined {
    return this.sessions.get(tsih);
  }

  findSessionByIsid(
    initiatorName: string,
    isid: string,
    targetName: string | undefined,
  ): Session | undefined {
    const init = initiatorName.toLowerCase();
    const target = targetName?.toLowerCase();
    for (const s of this.sessions.values()) {
      if (s.isid === isid && s.initiatorName.toLowerCase() === init && s.node?.name.toLowerCase() === target)
        return s;
    }
    return undefined;
  }

  createSession(init: NewSession): Session {
    let tsih = this.nextTsih;
    while (this.sessions.has(tsih) || tsih === 0) tsih = (tsih + 1) & 0xffff;
    this.nextTsih = (tsih + 1) & 0xffff || 1;
    const nexus = init.node
      ? new ITNexus(init.initiatorName, init.isid, init.node.name, init.portalGroupTag)
      : undefined;
    const session = new Session(
      tsih,
      init.initiatorName,
      init.isid,
      init.node === undefined,
      init.node,
      nexus,
      init.params,
      init.queueDepth,
      init.initialCmdSN,
      this.log.child({ tsih, initiator: init.initiatorName }),
    );
    this.sessions.set(tsih, session);
    return session;
  }

  endSession(session: Session, reason: string): void {
    if (session.ended) return;
    session.ended = true;
    this.sessions.delete(session.tsih);
    session.log.info(`session ended: ${reason}`);
    if (reason !== "logout" && reason !== "connection lost" && reason !== "last connection logged out") {
      // RFC 7143 §11.9.1 AsyncEvent 3: tell the initiator before its connections go.
      for (const c of session.connections.values()) {
        if (c instanceof Connection)
          c.sendAsync(ASYNC_DROP_ALL, 0, session.params.defaultTime2Wait, session.params.defaultTime2Retain);
      }
    }
    for (const t of session.inFlight()) {
      // Tasks still waiting for Data-Out never reach the device: end them here.
      if (t.collector) t.conn.abandon(t);
      else t.aborted = true;
    }
    for (const c of [...session.connections.values()]) c.drop(reason);
    session.connections.clear();
    const nexus = session.nexus;
    const device = session.node?.config.device;
    if (nexus && device) {
      // The nexus is gone once its tasks have ended (SAM-5 I_T nexus loss).
      void Promise.all(session.inFlight().map((t) => t.done)).then(() => device.nexusLost(nexus));
    }
  }

  sessionsOfNode(nodeName: string): Session[] {
    const n = nodeName.toLowerCase();
    return [...this.sessions.values()].filter((s) => s.node?.name.toLowerCase() === n);
  }

  sendTargetsText(conn: Connection, value: string): string[] {
    const session = conn.session;
    if (!session) return [];
    let nodes: TargetNode[];
    if (session.discovery) {
      if (value === "All") nodes = [...this.nodes.values()];
      else if (value === "") nodes = [];
      else nodes = [this.findNode(value)].filter((n): n is TargetNode => n !== undefined);
    } else {
      // In a Normal session only the session's own target is reported (RFC 7143 §13.3).
      const own = session.node!;
      nodes = value === "" || value === "All" || value.toLowerCase() === own.name.toLowerCase() ? [own] : [];
    }
    const bound = this.addresses();
    const lines: string[] = [];
    for (const node of nodes) {
      const tags = node.visibleTo(session.initiatorName, conn.remoteAddress);
      if (tags.length === 0) continue;
      lines.push(`TargetName=${node.name}`);
      for (const a of bound) {
        if (!tags.includes(a.portalGroup)) continue;
        if (this.portalGroups.get(a.portalGroup)?.config.private) continue;
        let host = a.host;
        if (host === "0.0.0.0" || host === "::" || host === "")
          host = conn.localAddress.replace(/^::ffff:/, "");
        if (isIPv6(host)) host = `[${host}]`;
        lines.push(`TargetAddress=${host}:${a.port},${a.portalGroup}`);
      }
    }
    return lines;
  }
}
