/**
 * The server: builds the object graph a config describes and runs it.
 *
 *   config → block devices (BdevRegistry) → one ScsiDevice per target node → IscsiTarget
 *
 * Every piece is built through ServerGraph (graph_control.ts), the same operations the control
 * plane's write methods use, and recorded in a LiveConfig; a legacy INI file, a JSON config and
 * RPC calls after `--wait-for-rpc` all end up there. Stopping goes in the reverse order: the target
 * stops listening and ends its sessions (waiting for tasks in flight), then every block device is
 * flushed and closed, then module clean-ups run.
 */
import type { ScsiDevice } from "../scsi/device.js";
import { BdevRegistry } from "../bdev/registry.js";
import type { QosLimits } from "../bdev/accounted_bdev.js";
import { ConfigError, formatNotice } from "../config/errors.js";
import type { SpdkConfig } from "../config/spdk_config.js";
import type { IscsiTarget } from "../iscsi/target.js";
import { log, type Logger } from "../util/log.js";
import { MethodRegistry } from "../rpc/registry.js";
import { RpcError } from "../rpc/jsonrpc.js";
import { RpcServer } from "../rpc/server.js";
import { registerServerMethods } from "./rpc_methods.js";
import type { ServerHooks } from "./server_hooks.js";
import { registerControlMethods } from "./rpc/register.js";
import { BUILTIN_BDEV_MODULES, type BdevModuleContext, type BdevModules } from "./bdev_modules.js";
import { ServerGraph } from "./graph_control.js";
import { LiveConfig } from "./live_config.js";
import { applyJsonConfig, type JsonConfig } from "./json_config.js";

export interface ServerOptions {
  readonly logger?: Logger;
  /** Directory for state that outlives the process (APTPL reservations); undefined = none kept. */
  readonly stateDir?: string;
  /** Block device modules added to (or replacing) the built-in ones, e.g. "tcmur" and "bio". */
  readonly bdevModules?: BdevModules;
  readonly hooks?: ServerHooks;
  /** Unix socket for the JSON-RPC control plane (docs/rpc.md); undefined = no control socket. */
  readonly rpcSocket?: string;
  /**
   * false: if the socket cannot be opened (another server holds it), log and run without one. The
   * CLI uses this for its default path so several servers (tests) can run at once; an explicit
   * --rpc-socket stays a start-up failure.
   */
  readonly rpcSocketRequired?: boolean;
  /** A group given read-write access to the control socket (0660); without it the socket is 0600. */
  readonly rpcSocketGroup?: string;
  /** More control-plane methods (e.g. DRBD's), each registering its own on the server's registry. */
  readonly rpcMethods?: readonly ((registry: MethodRegistry) => void)[];
  /**
   * spdk_kill_instance: what to do with the signal it names (the CLI sends it to its own process,
   * which shuts down as for a real one). Without it the method is not offered.
   */
  readonly onKill?: (signal: NodeJS.Signals) => void;
}

export interface BoundPortal {
  readonly portalGroup: number;
  readonly host: string;
  readonly port: number;
}

export class UsertgtServer {
  readonly registry = new BdevRegistry();
  readonly live: LiveConfig;
  readonly graph: ServerGraph;
  readonly methods = new MethodRegistry();
  private rpc: RpcServer | undefined;
  private readonly stopHooks: (() => Promise<void>)[] = [];
  private stopping: Promise<void> | undefined;
  private readonly logger: Logger;
  private readonly rootLogger: Logger;
  private initialized = false;
  private initWaiters: (() => void)[] = [];
  /** A JSON config runs the started hook once all of it is applied, as the INI start-up does. */
  private deferStartedHook = false;

  private constructor(
    live: LiveConfig,
    private readonly options: ServerOptions,
  ) {
    // Children of the root, not of each other: pino repeats a binding given twice.
    this.rootLogger = options.logger ?? log;
    this.logger = this.rootLogger.child({ module: "server" });
    this.live = live;
    const moduleContext: BdevModuleContext = {
      registry: this.registry,
      logger: this.rootLogger.child({ module: "bdev" }),
      onStop: (fn) => this.stopHooks.push(fn),
    };
    this.graph = new ServerGraph({
      live,
      registry: this.registry,
      modules: this.bdevModules(),
      moduleContext,
      hooks: options.hooks,
      stateDir: options.stateDir,
      logger: this.logger,
      rootLogger: this.rootLogger,
    });
    registerServerMethods(this.methods, this);
    registerControlMethods(this.methods, this);
    for (const add of options.rpcMethods ?? []) add(this.methods);
  }

  /** The block device modules this server has (built-in ones and those the options add). */
  bdevModules(): BdevModules {
    return { ...BUILTIN_BDEV_MODULES, ...this.options.bdevModules };
  }

  qosOf(name: string): QosLimits | undefined {
    const q = this.graph.accountedBdev(name)?.qosLimits;
    return q && (q.rwIosPerSec || q.rwMbytesPerSec || q.rMbytesPerSec || q.wMbytesPerSec) ? q : undefined;
  }

  /** What the control plane reads: the running configuration. */
  get config(): LiveConfig {
    return this.live;
  }

  /** Build everything a legacy config describes and start listening. On failure, whatever was built is closed again. */
  static async start(config: SpdkConfig, options: ServerOptions = {}): Promise<UsertgtServer> {
    const server = new UsertgtServer(LiveConfig.fromGlobals(config), options);
    try {
      await server.buildLegacy(config);
      await server.openControlSocket();
      await options.hooks?.started?.();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  /**
   * SPDK's --wait-for-rpc: nothing is configured and only the control socket is open; start-up
   * methods (iscsi_set_options, ...) work until framework_start_init brings the target up.
   */
  static async startWaitingForRpc(options: ServerOptions = {}): Promise<UsertgtServer> {
    const server = new UsertgtServer(new LiveConfig(), options);
    server.methods.state = "startup";
    try {
      await server.openControlSocket();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  /** Start from a JSON config (what `rpc.py save_config` writes), replayed as rpc.py load_config does. */
  static async startFromJson(
    file: string,
    json: JsonConfig,
    options: ServerOptions = {},
  ): Promise<UsertgtServer> {
    const server = new UsertgtServer(new LiveConfig(), options);
    server.methods.state = "startup";
    server.deferStartedHook = true;
    try {
      await applyJsonConfig(file, json, server.methods);
      if (!server.initialized) await server.frameworkStartInit();
      await server.openControlSocket();
      await options.hooks?.started?.();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  private async buildLegacy(config: SpdkConfig): Promise<void> {
    for (const n of config.notices) this.logger.warn(formatNotice(n));
    for (const spec of config.bdevs) await this.graph.createBdev(spec);
    await this.graph.startIscsi();
    this.initialized = true;
    for (const ig of config.initiatorGroups) {
      try {
        this.graph.createInitiatorGroup(ig);
      } catch (err) {
        throw new Error(`InitiatorGroup${ig.tag}: ${(err as Error).message}`);
      }
    }
    for (const pg of config.portalGroups)
      this.live.portalGroupMap.set(pg.tag, { ...pg, private: false, wait: true });
    for (const node of config.targetNodes) {
      const { section: _s, file, line, luns, ...rest } = node;
      try {
        await this.graph.createTargetNode(
          { ...rest, luns: luns.map((l) => ({ id: l.id, bdev: l.bdev })) },
          (_l, i, message) => new ConfigError(luns[i]!.file, luns[i]!.line, message),
        );
      } catch (err) {
        if (err instanceof RpcError) throw new ConfigError(file, line, err.message);
        throw err;
      }
    }
    // Listen once every target is there, as before: an initiator never finds a half-built server.
    for (const pg of config.portalGroups) {
      this.live.portalGroupMap.delete(pg.tag);
      await this.graph.createPortalGroup({ ...pg, private: false, wait: false }).catch((err: unknown) => {
        throw new Error(err instanceof RpcError ? err.message.replace(/^portals: /, "") : String(err));
      });
    }
  }

  /** framework_start_init: the iSCSI target starts; the runtime methods open. */
  async frameworkStartInit(): Promise<void> {
    if (this.initialized)
      throw new RpcError(-1, "framework_start_init: the framework is already initialized");
    await this.graph.startIscsi();
    this.initialized = true;
    this.methods.state = "runtime";
    for (const w of this.initWaiters.splice(0)) w();
    if (!this.deferStartedHook) await this.options.hooks?.started?.();
  }

  /** framework_wait_init: resolves once the framework is initialized. */
  frameworkInitialized(): Promise<void> {
    if (this.initialized) return Promise.resolve();
    return new Promise((resolve) => this.initWaiters.push(resolve));
  }

  /** spdk_kill_instance's signal, when the embedding process handles one. */
  get killHandler(): ((signal: NodeJS.Signals) => void) | undefined {
    return this.options.onKill;
  }

  private async openControlSocket(): Promise<void> {
    if (this.options.rpcSocket === undefined) return;
    try {
      this.rpc = await RpcServer.start({
        path: this.options.rpcSocket,
        registry: this.methods,
        logger: this.rootLogger,
        group: this.options.rpcSocketGroup,
      });
    } catch (err) {
      if (this.options.rpcSocketRequired !== false) throw err;
      this.logger.warn({ err }, "running without a control socket");
    }
  }

  /** The addresses the portals are bound to (ports resolved when the config says 0). */
  addresses(): BoundPortal[] {
    return this.graph.iscsiTarget()?.addresses() ?? [];
  }

  sessionCount(): number {
    return this.graph.iscsiTarget()?.sessionCount() ?? 0;
  }

  /** The SCSI devices of the target nodes (read-only use: counters for the metrics endpoint). */
  scsiDevices(): readonly ScsiDevice[] {
    return this.graph.scsiDevices();
  }

  /** The running iSCSI target (read-only use: the control plane's queries). */
  iscsiTarget(): IscsiTarget | undefined {
    return this.graph.iscsiTarget();
  }

  /** The control socket's path, when one is open. */
  rpcSocketPath(): string | undefined {
    return this.rpc?.path;
  }

  /**
   * Stop: end sessions and stop listening, then flush and close block devices, then run module
   * clean-ups. Safe to call more than once; later calls wait for the first.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const errors: unknown[] = [];
    // The control plane goes first: no queries against a graph being taken down.
    if (this.rpc) {
      try {
        await this.rpc.stop();
      } catch (err) {
        errors.push(err);
        this.logger.error({ err }, "stopping the RPC server failed");
      }
    }
    if (this.graph.iscsiTarget()) {
      try {
        await this.graph.stopIscsi();
      } catch (err) {
        errors.push(err);
        this.logger.error({ err }, "stopping the iSCSI target failed");
      }
    }
    if (this.options.hooks?.beforeClose) {
      try {
        await this.options.hooks.beforeClose();
      } catch (err) {
        errors.push(err);
        this.logger.error({ err }, "stop hook failed");
      }
    }
    // Reverse creation order: stacked devices (BIO) before the ones below them. One failing close
    // must not leave the others unflushed.
    for (const dev of this.registry.list().reverse()) {
      try {
        await dev.close();
      } catch (err) {
        errors.push(err);
        this.logger.error({ err, bdev: dev.name }, "closing a block device failed");
      }
      try {
        await this.options.hooks?.bdevClosed?.(dev);
      } catch (err) {
        errors.push(err);
        this.logger.error({ err, bdev: dev.name }, "stop hook after closing a block device failed");
      }
    }
    for (const hook of this.stopHooks.reverse()) {
      try {
        await hook();
      } catch (err) {
        errors.push(err);
        this.logger.error({ err }, "block device module clean-up failed");
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, "the server did not stop cleanly");
  }
}
