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
 *   usertgt --version
 *
 * `serve` reports on stderr, one line each, in a form tests and scripts parse:
 *   usertgt: listening on 127.0.0.1:3260        (one per bound portal; IPv6 as [::1]:3260)
 *   usertgt: ready
 *   usertgt: stopped                            (after SIGINT/SIGTERM and a clean shutdown; exit 0)
 * A config error prints `usertgt: FILE:LINE: what was expected` and exits 2; any other start-up
 * failure exits 1.
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
import { UsertgtServer } from "../server/server.js";
import type { MethodRegistry } from "../rpc/registry.js";
import { DEFAULT_RPC_SOCKET } from "../rpc/client.js";
import { runRpcCommand, type RpcCommandOptions } from "./rpc_command.js";
import { log } from "../util/log.js";

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
  if (err instanceof ConfigError || err instanceof DrbdConfigError) {
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
  waitForRpc?: boolean;
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
  let drbd: DrbdWiring | undefined;
  let devtreeMounted = false;
  try {
    const start = await readStartConfig(opts);
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
      // The kernel module's /proc/drbd, as <mount point>/proc/drbd.
      const resources = [...drbd.resources.values()];
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
    server.stop().then(
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
  if (opts.waitForRpc) {
    say("waiting for framework_start_init");
    void server.frameworkInitialized().then(() => say("ready"));
  } else say("ready");
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
      `${opts.config ?? "default config"}: OK, ${config.bdevs.length} block devices, targets: ${targets.join(", ") || "none"}`,
    );
  } catch (err) {
    process.exit(failed(err));
  }
}

const program = new Command("usertgt")
  .description(
    "User-space iSCSI target with SPDK-style config, tcmu-runner style handlers and DRBD replication",
  )
  .version(version(), "-V, --version");

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
  .option("-s, --socket <path>", `control socket (default ${DEFAULT_RPC_SOCKET})`)
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
    "up|down|attach|detach|connect|disconnect|primary|secondary|create-md|new-current-uuid|invalidate|invalidate-remote|verify|status|dump",
  )
  .argument("[resource]", "resource name (status without one: all)")
  .option("-s, --socket <path>", `control socket (default ${DEFAULT_RPC_SOCKET})`)
  .option("-c, --config <file>", "drbd.conf / .res file (for dump)")
  .option("--force", "primary --force: declare this node's data UpToDate")
  .option("--clear-bitmap", "new-current-uuid --clear-bitmap: skip the initial sync")
  .option("--discard-my-data", "connect --discard-my-data: this node loses an unresolved split brain")
  .option("-t, --timeout <seconds>", "how long to wait for the answer", "120")
  .action(async (command: string, resource: string | undefined, opts: DrbdadmCommandOptions) => {
    process.exitCode = await runDrbdadmCommand(command, resource, opts);
  });

await program.parseAsync(process.argv);
