/**
 * The server: builds the object graph a config describes and runs it.
 *
 *   config model → block devices (BdevRegistry) → one ScsiDevice per [TargetNodeN] → IscsiTarget
 *
 * and takes it down in the reverse order: the target stops listening and ends its sessions (waiting
 * for tasks in flight), then every block device is flushed and closed, then module clean-ups run.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { BlockDevice } from "../bdev/bdev.js";
import { BdevRegistry } from "../bdev/registry.js";
import { ConfigError, formatNotice } from "../config/errors.js";
import type { SpdkConfig } from "../config/spdk_config.js";
import { IscsiTarget } from "../iscsi/target.js";
import type { TargetNodeConfig } from "../iscsi/options.js";
import { ScsiDevice, type LunConfig } from "../scsi/device.js";
import { log, type Logger } from "../util/log.js";
import { MethodRegistry } from "../rpc/registry.js";
import { RpcServer } from "../rpc/server.js";
import { registerServerMethods } from "./rpc_methods.js";
import {
  BUILTIN_BDEV_MODULES,
  createBdevs,
  type BdevModuleContext,
  type BdevModules,
} from "./bdev_modules.js";

/**
 * Points where a subsystem outside the iSCSI graph joins in (the device tree: claims on tree
 * devices used as LUNs, the FUSE view). Each runs once; failures in start-up hooks fail the start.
 */
export interface ServerHooks {
  /** Each LUN, once its block device exists and before the target listens. */
  lunMapped?(lun: { readonly targetName: string; readonly id: number; readonly bdev: BlockDevice }): void;
  /** Everything is built and listening. */
  started?(): Promise<void>;
  /** Stopping: the target has stopped; block devices are still open. */
  beforeClose?(): Promise<void>;
  /** Stopping: one block device has just closed (the ones below it are still open). */
  bdevClosed?(dev: BlockDevice): Promise<void>;
}

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
  /** More control-plane methods (e.g. DRBD's), each registering its own on the server's registry. */
  readonly rpcMethods?: readonly ((registry: MethodRegistry) => void)[];
}

export interface BoundPortal {
  readonly portalGroup: number;
  readonly host: string;
  readonly port: number;
}

/** A target name as a file name: iSCSI names hold only [a-z0-9.:-], and ':' is awkward in paths. */
function stateName(targetName: string): string {
  return targetName.replace(/[^A-Za-z0-9.-]/g, "_");
}

export class UsertgtServer {
  readonly registry = new BdevRegistry();
  private target: IscsiTarget | undefined;
  private rpc: RpcServer | undefined;
  private readonly stopHooks: (() => Promise<void>)[] = [];
  private stopping: Promise<void> | undefined;
  private readonly logger: Logger;
  private readonly rootLogger: Logger;

  private constructor(
    readonly config: SpdkConfig,
    private readonly options: ServerOptions,
  ) {
    // Children of the root, not of each other: pino repeats a binding given twice.
    this.rootLogger = options.logger ?? log;
    this.logger = this.rootLogger.child({ module: "server" });
  }

  /** Build everything and start listening. On failure, whatever was built is closed again. */
  static async start(config: SpdkConfig, options: ServerOptions = {}): Promise<UsertgtServer> {
    const server = new UsertgtServer(config, options);
    try {
      await server.build();
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  }

  private async build(): Promise<void> {
    const { config, logger } = this;
    for (const n of config.notices) logger.warn(formatNotice(n));

    const ctx: BdevModuleContext = {
      registry: this.registry,
      logger: this.rootLogger.child({ module: "bdev" }),
      onStop: (fn) => this.stopHooks.push(fn),
    };
    await createBdevs(config.bdevs, { ...BUILTIN_BDEV_MODULES, ...this.options.bdevModules }, ctx);

    const targets: TargetNodeConfig[] = [];
    for (const node of config.targetNodes) {
      const luns: LunConfig[] = node.luns.map((lun) => {
        const bdev = this.registry.get(lun.bdev);
        if (!bdev)
          throw new ConfigError(
            lun.file,
            lun.line,
            `LUN${lun.id} names block device "${lun.bdev}", which does not exist`,
          );
        try {
          this.options.hooks?.lunMapped?.({ targetName: node.name, id: lun.id, bdev });
        } catch (err) {
          throw new ConfigError(lun.file, lun.line, `LUN${lun.id} ${lun.bdev}: ${(err as Error).message}`);
        }
        return { id: lun.id, bdev };
      });
      let aptplDir: string | undefined;
      if (this.options.stateDir) {
        aptplDir = join(this.options.stateDir, "aptpl", stateName(node.name));
        await mkdir(aptplDir, { recursive: true });
      }
      const device = new ScsiDevice({ name: node.name, luns, aptplDir });
      await device.init();
      const { section: _section, file: _file, line: _line, luns: _luns, ...iscsi } = node;
      targets.push({ ...iscsi, device });
      logger.info(
        { target: node.name, luns: node.luns.map((l) => `${l.id}:${l.bdev}`) },
        "target node ready",
      );
    }

    this.target = new IscsiTarget(
      {
        globals: config.globals,
        authGroups: config.authGroups,
        portalGroups: config.portalGroups,
        initiatorGroups: config.initiatorGroups,
        targets,
      },
      this.rootLogger, // IscsiTarget names its own module
    );
    await this.target.start();
    if (this.options.rpcSocket !== undefined) {
      const methods = new MethodRegistry();
      registerServerMethods(methods, this);
      for (const add of this.options.rpcMethods ?? []) add(methods);
      try {
        this.rpc = await RpcServer.start({
          path: this.options.rpcSocket,
          registry: methods,
          logger: this.rootLogger,
        });
      } catch (err) {
        if (this.options.rpcSocketRequired !== false) throw err;
        this.logger.warn({ err }, "running without a control socket");
      }
    }
    await this.options.hooks?.started?.();
  }

  /** The addresses the portals are bound to (ports resolved when the config says 0). */
  addresses(): BoundPortal[] {
    return this.target?.addresses() ?? [];
  }

  sessionCount(): number {
    return this.target?.sessionCount() ?? 0;
  }

  /** The running iSCSI target (read-only use: the control plane's queries). */
  iscsiTarget(): IscsiTarget | undefined {
    return this.target;
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
    if (this.target) {
      try {
        await this.target.stop();
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
