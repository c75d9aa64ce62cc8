#!/usr/bin/env node
/**
 * The `usertgt` command.
 *
 *   usertgt serve [-c FILE] [--log-level L] [--state-dir DIR]   run a config (no -c: the embedded default);
 *                 [--wait-for-rpc]                              FILE legacy INI or SPDK JSON (by content);
 *                                                               --wait-for-rpc: nothing until framework_start_init
 *                 [--mount-point DIR | --no-fuse] [--handler-dir DIR]   device tree (docs/devtree.md)
 *                 [--rpc-socket PATH | --no-rpc]                JSON-RPC control socket (docs/rpc.md)
 *   usertgt check [-c FILE]                                      validate a config, print its notices
 *   usertgt config convert FILE                                  legacy INI → SPDK JSON config on stdout
 *                 [--drbd-config FILE] [--node-name NAME]        DRBD resources (docs/drbd.md)
 *   usertgt rpc [-s SOCKET] METHOD [JSON | --key value ...]      call a method on a running server
 *   usertgt drbdadm [-s SOCKET] [-c FILE] COMMAND [RES] [--force] [--clear-bitmap]   drbdadm(8) on it
 *                   status [--verbose] [--statistics], cstate, dstate, role, wait-sync (drbd_monitor_command.ts)
 *   usertgt drbdsetup [-s SOCKET] events2 [RES|all] [--now] [--statistics]   drbdsetup's event stream
 *   usertgt --version
 *
 * `serve` reports on stderr, one line each, in a form tests and scripts parse:
 *   usertgt: listening on 127.0.0.1:3260        (one per bound portal; IPv6 as [::1]:3260)
 *   usertgt: ready
 *   usertgt: stopped                            (after SIGINT/SIGTERM and a clean shutdown; exit 0)
 * A config error prints `usertgt: FILE:LINE: what was expected` and exits 2; any other start-up
 * failure exits 1. Every usage error (unknown option or command, missing argument) exits 2.
 */
import { Command, Option } from "commander";
import { createRequire } from "node:module";
import { defaultConfig } from "../config/default.js";
import { ConfigError, formatNotice } from "../config/errors.js";
import { loadSpdkConfig, type SpdkConfig } from "../config/spdk_config.js";
import { readFile } from "node:fs/promises";
import { looksLikeJsonConfig, parseJsonConfig, type JsonConfig } from "../server/json_config.js";
import { convertLegacyConfig } from "../server/config_convert.js";
import { devtreeWiring } from "../server/devtree_wiring.js";
import { chainHooks, DrbdWiring } from "../server/drbd_wiring.js";
import { DrbdConfigError } from "../drbd/config/model.js";
import { procEntryOf, renderProcDrbd } from "../drbd/proc_drbd.js";
import { runDrbdadmCommand, type DrbdadmCommandOptions } from "./drbdadm_command.js";
import { runEvents2, type DrbdMonitorOptions } from "./drbd_monitor_command.js";
import { UsertgtServer } from "../server/server.js";
import type { MethodRegistry } from "../rpc/registry.js";
import { DEFAULT_RPC_SOCKET } from "../rpc/client.js";
import { runRpcCommand, type RpcCommandOptions } from "./rpc_command.js";
import { SERVICE_RPC_SOCKET } from "./socket_path.js";
import { SystemdNotifier } from "../server/systemd_notify.js";
import { MetricsEndpoint, parseMetricsAddress } from "../server/metrics.js";
import { deviceUsers } from "../server/device_usage.js";
import { log } from "../util/log.js";
import { applyCpuAffinity, cpuMaskOption, UsageError } from "./cpu_affinity.js";
import { formatCpuList } from "../util/cpu_mask.js";

const EXIT_CONFIG = 2;
const EXIT_FAILURE = 1;

function say(line: string): void {
  process.stderr.write(`usertgt: ${line}\n`);
}

function version(): string {
  // dist/src/cli/main.js → the package root.
  const pkg = createRequire(import.meta.url)("../../../package.json") as { version: string };
  return pkg.version;
}

async function readConfig(file: string | undefined): Promise<SpdkConfig> {
  return file === undefined ? defaultConfig() : loadSpdkConfig(file);
}

function failed(err: unknown): number {
  if (err instanceof ConfigError || err instanceof DrbdConfigError || err instanceof UsageError) {
    say(err.message);
    return EXIT_CONFIG;
  }
  if (err instanceof AggregateError) {
    say(err.message);
    for (const e of err.errors) say(`  ${(e as Error).message ?? String(e)}`);
    return EXIT_FAILURE;
  }
  say(`start-up failed: ${(err as Error).message ?? String(err)}`);
  return EXIT_FAILURE;
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

interface ServeOptions {
  config?: string;
  logLevel: string;
  stateDir?: string;
  mountPoint: string;
  fuse: boolean;
  handlerDir?: string;
  /** false with --no-rpc; undefined: the default path, skipped (with a warning) if another server holds it. */
  rpc: boolean;
  rpcSocket?: string;
  rpcSocketGroup?: string;
  drbdConfig?: string;
  nodeName?: string;
  /** ADDR:PORT of the Prometheus endpoint; none without it. */
  metrics?: string;
  waitForRpc?: boolean;
  /** SPDK's -m: CPUs to run on; overrides [Global] ReactorMask. */
  cpumask?: string;
}

/** The config to start from: legacy INI, SPDK JSON (told apart by content), or none (--wait-for-rpc). */
type StartConfig =
  | { kind: "legacy"; config: SpdkConfig }
  | { kind: "json"; file: string; json: JsonConfig }
  | { kind: "wait" };

async function readStartConfig(opts: ServeOptions): Promise<StartConfig> {
  if (opts.waitForRpc) {
    if (opts.config !== undefined)
      throw new Error("--wait-for-rpc and -c exclude each other (load_config after start-up)");
    return { kind: "wait" };
  }
  if (opts.config !== undefined) {
    const text = await readFile(opts.config, "utf8").catch((err: Error) => {
      throw new ConfigError(opts.config!, 0, `cannot read the config file: ${err.message}`);
    });
    if (looksLikeJsonConfig(text))
      return { kind: "json", file: opts.config, json: parseJsonConfig(opts.config, text) };
  }
  return { kind: "legacy", config: await readConfig(opts.config) };
}

async function serve(opts: ServeOptions): Promise<void> {
  log.level = opts.logLevel;
  let server: UsertgtServer;
  let notifier: SystemdNotifier | undefined;
  let metrics: MetricsEndpoint | undefined;
  if (opts.metrics !== undefined) {
    try {
      parseMetricsAddress(opts.metrics);
    } catch (err) {
      say((err as Error).message);
      process.exit(EXIT_CONFIG);
    }
  }
  let drbd: DrbdWiring | undefined;
  let devtreeMounted = false;
  try {
    notifier = SystemdNotifier.fromEnvironment();
    const start = await readStartConfig(opts);
    // Before any device opens: threads made later (librbd's, io-wq's) inherit the mask.
    const mask =
      opts.cpumask !== undefined
        ? cpuMaskOption(opts.cpumask)
        : start.kind === "legacy" && start.config.reactorMask
          ? {
              ...start.config.reactorMask,
              where: `${start.config.file}:${start.config.reactorMask.line}: ReactorMask`,
              error: (message: string) =>
                new ConfigError(start.config.file, start.config.reactorMask!.line, `ReactorMask: ${message}`),
            }
          : undefined;
    if (mask) log.info(applyCpuAffinity(mask));
    // [TCMUR]/[BIO] devices live in the device tree (src/devtree); without them no tree and no FUSE mount.
    // A JSON config needs one when it creates such devices; --wait-for-rpc when handlers or DRBD are given.
    const treeCalls = /^bdev_(tcmur|bio)_create$/;
    const devtree = await devtreeWiring(start.kind === "legacy" ? start.config : { bdevs: [] }, {
      mountPoint: opts.fuse ? opts.mountPoint : false,
      handlerDir: opts.handlerDir,
      always:
        opts.drbdConfig !== undefined ||
        (start.kind === "json" && start.json.calls.some((c) => treeCalls.test(c.method))) ||
        (start.kind === "wait" && opts.handlerDir !== undefined),
    });
    // DRBD resources live in the tree too; nothing is brought up here (drbdadm up or the BIO helper does).
    devtreeMounted = devtree !== undefined && opts.fuse;
    if (opts.drbdConfig !== undefined && devtree) {
      drbd = DrbdWiring.load({
        configFile: opts.drbdConfig,
        nodeName: opts.nodeName,
        tree: devtree.service.tree,
      });
      devtree.service.registerHelper("drbdadm_up_primary", drbd.upPrimary);
      devtree.service.registerHelper("drbdadm_up", drbd.upOnly);
      // The kernel module's /proc/drbd, as <mount point>/proc/drbd: one entry per minor, every volume's.
      const resources = [...drbd.resources.values()].flatMap((r) => r.volumes);
      devtree.service.tree.publishStatusFile("proc/drbd", () =>
        renderProcDrbd(resources.map((r) => procEntryOf(r))),
      );
    }
    const wiring = drbd;
    const serverOptions = {
      stateDir: opts.stateDir,
      bdevModules: devtree?.bdevModules,
      hooks: chainHooks(devtree?.hooks, wiring?.hooks()),
      rpcMethods: wiring ? [(r: MethodRegistry) => wiring.registerMethods(r)] : [],
      rpcSocket: opts.rpc ? (opts.rpcSocket ?? DEFAULT_RPC_SOCKET) : undefined,
      // --wait-for-rpc without its socket could never be configured.
      rpcSocketRequired: opts.rpcSocket !== undefined || start.kind === "wait",
      rpcSocketGroup: opts.rpcSocketGroup,
      // spdk_kill_instance: as if the signal came from outside (the handlers below).
      onKill: (signal: NodeJS.Signals) => process.kill(process.pid, signal),
    };
    if (start.kind === "wait" && !opts.rpc)
      throw new Error("--wait-for-rpc needs the control socket (drop --no-rpc)");
    server =
      start.kind === "legacy"
        ? await UsertgtServer.start(start.config, serverOptions)
        : start.kind === "json"
          ? await UsertgtServer.startFromJson(start.file, start.json, serverOptions)
          : await UsertgtServer.startWaitingForRpc(serverOptions);
    if (drbd && devtree) {
      const running = server;
      const tree = devtree.service.tree;
      drbd.setUsageProbe((device) =>
        deviceUsers(
          {
            holders: (name) => (tree.get(name) ? tree.holders(name) : []),
            luns: () =>
              running
                .scsiDevices()
                .flatMap((d) =>
                  d
                    .lunIds()
                    .map((lun) => ({ target: d.name, lun, bdev: d.logicalUnit(lun)?.bdev.name ?? "" })),
                ),
            sessions: (target) =>
              new Set(
                (running.iscsiTarget()?.connectionInfo() ?? [])
                  .filter((c) => !c.discovery && c.targetNodeName === target)
                  .map((c) => c.tsih),
              ).size,
          },
          device,
        ),
      );
    }
    if (opts.metrics !== undefined) {
      const running = server;
      const resources = drbd ? [...drbd.resources.values()] : [];
      metrics = await MetricsEndpoint.start(opts.metrics, {
        scsiDevices: () => running.scsiDevices(),
        iscsiTarget: () => running.iscsiTarget(),
        drbdResources: () => resources,
      }).catch(async (err: unknown) => {
        await running.stop();
        throw err;
      });
    }
  } catch (err) {
    process.exit(failed(err));
  }

  let signalled = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (signalled) {
      // A second signal while draining: the operator wants out now.
      say(`${signal} again: exiting without waiting for the shutdown to finish`);
      process.exit(EXIT_FAILURE);
    }
    signalled = true;
    say(`${signal}: shutting down`);
    notify(() => notifier?.stopping());
    Promise.all([metrics?.stop(), server.stop()]).then(
      () => {
        say("stopped");
        process.exit(0);
      },
      (err: unknown) => {
        failed(err);
        process.exit(EXIT_FAILURE);
      },
    );
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
  // SIGHUP (systemctl reload): what can change without a restart is re-read; see reload().
  let reloading = Promise.resolve();
  process.on("SIGHUP", () => {
    reloading = reloading.then(() => reload(server, opts.config, notifier));
  });

  const rpcPath = server.rpcSocketPath();
  if (server.addresses().length === 0 && rpcPath === undefined && !drbd && !devtreeMounted) {
    // Nothing would keep the process alive: it would print "ready" and exit 0 at once.
    await server.stop();
    say(
      `${opts.config ?? "default config"}: nothing to serve: no portal, no control socket (--no-rpc), no DRBD resource and no device tree`,
    );
    process.exit(EXIT_CONFIG);
  }
  for (const a of server.addresses()) say(`listening on ${hostPort(a.host, a.port)}`);
  if (rpcPath !== undefined) say(`rpc on ${rpcPath}`);
  if (metrics) say(`metrics on http://${hostPort(metrics.host, metrics.port)}/metrics`);
  const ready = (): void => {
    const portals = server.addresses().length;
    notify(() => notifier?.ready(`serving: ${portals} portal${portals === 1 ? "" : "s"}`));
    say("ready");
  };
  if (opts.waitForRpc) {
    say("waiting for framework_start_init");
    void server.frameworkInitialized().then(ready);
  } else ready();
}

/** A failed notification is logged, never fatal: the server keeps serving. */
function notify(send: () => void): void {
  try {
    send();
  } catch (err) {
    say(`warning: ${(err as Error).message}`);
  }
}

/**
 * Reload (SIGHUP): re-read a legacy config file and apply what can change under running sessions, the
 * CHAP secrets of the AuthFile (new logins use them). Portals, targets and LUNs change at a restart or
 * over RPC (docs/rpc.md). A config that no longer parses is reported and the running one kept.
 */
async function reload(
  server: UsertgtServer,
  file: string | undefined,
  notifier: SystemdNotifier | undefined,
): Promise<void> {
  notify(() => notifier?.reloading());
  if (file === undefined) {
    say("SIGHUP: serving the embedded default config, nothing to reload");
  } else {
    try {
      const text = await readFile(file, "utf8");
      if (looksLikeJsonConfig(text)) {
        say(
          `SIGHUP: ${file} is a JSON config; change a running server over RPC (docs/rpc.md), nothing re-read`,
        );
        notify(() => notifier?.ready("serving"));
        return;
      }
      const config = await loadSpdkConfig(file);
      // AuthFile groups replace the running ones of the same tag; groups made over RPC stay.
      for (const ag of config.authGroups)
        server.graph.setAuthGroup(ag.tag, ag.secrets, !server.live.authGroupMap.has(ag.tag));
      say(
        `SIGHUP: reloaded ${file}: CHAP secrets of ${config.authGroups.length} auth group(s); ` +
          "portal, target and LUN changes take effect at a restart or over RPC",
      );
    } catch (err) {
      say(`SIGHUP: reload failed, the running config is kept: ${(err as Error).message}`);
    }
  }
  notify(() => notifier?.ready("serving (reloaded)"));
}

async function check(opts: { config?: string }): Promise<void> {
  try {
    if (opts.config !== undefined) {
      const start = await readStartConfig({
        ...opts,
        logLevel: "silent",
        mountPoint: "",
        fuse: false,
        rpc: false,
      });
      if (start.kind === "json") {
        // Shape and method names only: values are checked by the methods when the file is served.
        const methods = new Set(start.json.calls.map((c) => c.method));
        say(
          `${opts.config}: JSON config, ${start.json.calls.length} calls (${[...methods].join(", ") || "none"})`,
        );
        return;
      }
    }
    const config = await readConfig(opts.config);
    for (const n of config.notices) say(`notice: ${formatNotice(n)}`);
    const targets = config.targetNodes.map(
      (t) => `${t.name} (${t.luns.length} LUN${t.luns.length === 1 ? "" : "s"})`,
    );
    say(
      `${opts.config ?? "default config"}: OK, ${config.bdevs.length} block devices, targets: ${targets.join(", ") || "none"}` +
        (config.reactorMask ? `; runs on CPUs ${formatCpuList(config.reactorMask.cpus)} (ReactorMask)` : ""),
    );
  } catch (err) {
    process.exit(failed(err));
  }
}

const SOCKET_HELP = `control socket (default $USERTGT_RPC_SOCKET, else ${DEFAULT_RPC_SOCKET}, else ${SERVICE_RPC_SOCKET})`;

const program = new Command("usertgt")
  .description(
    "User-space iSCSI target with SPDK-style config, tcmu-runner style handlers and DRBD replication",
  )
  .version(version(), "-V, --version")
  // Usage errors (unknown option or command, missing argument, bad choice) exit 2 like every other
  // usage error of this command; commander's own default is 1. Subcommands inherit this.
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG);
  });

const logLevel = new Option("--log-level <level>", "log level (logs go to stderr as JSON)")
  .choices(["trace", "debug", "info", "warn", "error", "fatal", "silent"])
  .default(process.env.USERTGT_LOG ?? "info");

program
  .command("serve")
  .description(
    "run the iSCSI target (without -c: one 128 MiB Malloc LUN as iqn.2016-06.io.spdk:disk1 on 127.0.0.1:3260)",
  )
  .option("-c, --config <file>", "SPDK legacy config or SPDK JSON config (see docs/config.md, docs/rpc.md)")
  .option("--wait-for-rpc", "start with nothing configured; configure over RPC, then framework_start_init")
  .addOption(logLevel)
  .option("--state-dir <dir>", "directory for persistent state (APTPL reservations); none kept without it")
  .option(
    "--mount-point <dir>",
    "where the device tree of [TCMUR]/[BIO] devices is shown through FUSE",
    "/UMCfuse",
  )
  .option("--no-fuse", "do not mount the device tree")
  .option("--handler-dir <dir>", "directory of handler_<name>.js TCMUR handler modules")
  .option("--rpc-socket <path>", `JSON-RPC control socket (default ${DEFAULT_RPC_SOCKET})`)
  .option("--no-rpc", "open no control socket")
  .option("--rpc-socket-group <group>", "give this group read-write access to the control socket (0660)")
  .option("--drbd-config <file>", "drbd.conf / .res file of the DRBD resources (brought up by drbdadm up)")
  .option("--node-name <name>", "this node's 'on NAME' section in the DRBD config (default: the host name)")
  .option("--metrics <addr:port>", "serve Prometheus metrics at http://ADDR:PORT/metrics (docs/metrics.md)")
  .option(
    "-m, --cpumask <mask>",
    "run on these CPUs, as SPDK's -m (0x3 or [0-1]; overrides [Global] ReactorMask)",
  )
  .action((opts: ServeOptions) => serve(opts));

program
  .command("check")
  .description("validate a config file and print what it defines")
  .option("-c, --config <file>", "SPDK legacy config file or SPDK JSON config")
  .action((opts: { config?: string }) => check(opts));

const configCommand = program.command("config").description("config file tools");
configCommand
  .command("convert")
  .description(
    "print a legacy INI config (with its AuthFile) as an SPDK JSON config (rpc.py load_config, serve -c)",
  )
  .argument("<file>", "legacy config file")
  .action(async (file: string) => {
    try {
      const config = await loadSpdkConfig(file);
      for (const n of config.notices) say(`notice: ${formatNotice(n)}`);
      process.stdout.write(JSON.stringify(convertLegacyConfig(config), null, 2) + "\n");
    } catch (err) {
      process.exitCode = failed(err);
    }
  });

program
  .command("rpc")
  .description("call a JSON-RPC method on a running server and print its result (like SPDK's rpc.py)")
  .argument("<method>", "method name (usertgt rpc rpc_get_methods lists them)")
  .argument("[params...]", "one JSON object, or --key value pairs")
  .option("-s, --socket <path>", SOCKET_HELP)
  .option("-t, --timeout <seconds>", "how long to wait for the answer", "60")
  // --key value pairs are the method's parameters, not options of this command.
  .allowUnknownOption()
  .action(async (method: string, params: string[], opts: RpcCommandOptions) => {
    process.exitCode = await runRpcCommand(method, params, opts);
  });

program
  .command("drbdadm")
  .description("drbdadm(8) on the DRBD resources of a running server (dump reads the config file locally)")
  .argument(
    "<command>",
    "up|down|attach|detach|connect|disconnect|primary|secondary|create-md|new-current-uuid|invalidate|invalidate-remote|verify|status|cstate|dstate|role|wait-sync|dump",
  )
  .argument("[resource]", "resource name (status without one: all)")
  .option("-s, --socket <path>", SOCKET_HELP)
  .option("-c, --config <file>", "drbd.conf / .res file (for dump)")
  .option("--force", "primary --force: declare this node's data UpToDate")
  .option("--clear-bitmap", "new-current-uuid --clear-bitmap: skip the initial sync")
  .option("--discard-my-data", "connect --discard-my-data: this node loses an unresolved split brain")
  .option("--assume-clean", "resize --assume-clean: the new area counts as in sync (no resync)")
  .option("--assume-peer-has-space", "resize --assume-peer-has-space: grow while the peer is not connected")
  .option("-t, --timeout <seconds>", "how long to wait for the answer", "120")
  .option("-v, --verbose", "status: drbd-utils 9's verbose layout (node ids, volume, minor, ...)")
  .option("--statistics", "status: the counters (size, read, written, sent, out-of-sync, ...)")
  .option("--wait-timeout <seconds>", "wait-sync: give up after this long (default: as long as it syncs)")
  .option("--interval <seconds>", "wait-sync: poll interval", "1")
  .option("--wfc-timeout <seconds>", "wait-connect: instead of startup { wfc-timeout } (0: forever)")
  .option("--degr-wfc-timeout <seconds>", "wait-connect: instead of startup { degr-wfc-timeout }")
  .option("--outdated-wfc-timeout <seconds>", "wait-connect: instead of startup { outdated-wfc-timeout }")
  .option("--wait-after-sb", "wait-connect: wait also when the resource is StandAlone")
  .action(async (command: string, resource: string | undefined, opts: DrbdadmCommandOptions) => {
    process.exitCode = await runDrbdadmCommand(command, resource, opts);
  });

program
  .command("drbdsetup")
  .description("drbdsetup(8)'s events2 on the DRBD resources of a running server")
  .argument("<command>", "events2")
  .argument("[resource]", "resource name or all (default all)")
  .option("-s, --socket <path>", SOCKET_HELP)
  .option("--now", "print the current state (exists lines, then 'exists -') and exit")
  .option("--statistics", "add the counters to each line")
  .option("--interval <seconds>", "how often the server's state is compared", "0.5")
  .action(async (command: string, resource: string | undefined, opts: DrbdMonitorOptions) => {
    if (command !== "events2") {
      process.stderr.write(`usertgt drbdsetup: ${command}: not supported (supported: events2)\n`);
      process.exitCode = 2;
      return;
    }
    process.exitCode = await runEvents2(resource, opts);
  });

await program.parseAsync(process.argv);
