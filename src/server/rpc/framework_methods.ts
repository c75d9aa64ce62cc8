/**
 * The framework methods (SPDK lib/event/app_rpc.c, lib/init/rpc.c): framework_start_init,
 * framework_wait_init, spdk_kill_instance, and the log_* methods (lib/log/log_rpc.c) over our pino
 * logger. Log flags are SPDK's per-component trace switches; we keep the set (for log_get_flags)
 * and turn the level to debug while any is set, our logs having no per-flag gates.
 */
import type { JsonObject } from "../../rpc/jsonrpc.js";
import { log } from "../../util/log.js";
import { invalidParam } from "./params.js";
import type { ControlServer, MethodTable } from "./control_server.js";

const BOTH = ["startup", "runtime"] as const;

/** spdk_kill_instance's names (app_rpc.c). */
const SIGNALS: Record<string, NodeJS.Signals> = {
  SIGINT: "SIGINT",
  SIGTERM: "SIGTERM",
  SIGQUIT: "SIGQUIT",
  SIGHUP: "SIGHUP",
  SIGKILL: "SIGKILL",
};

/** SPDK's log flags that name parts of our target (spdk_log_get_flag names). */
const LOG_FLAGS = ["iscsi", "scsi", "bdev", "bdev_malloc", "aio", "rpc", "app_rpc", "log_rpc"];

/** SPDK levels (spdk_log_level) ↔ pino levels. */
const LEVELS: Record<string, string> = {
  ERROR: "error",
  WARNING: "warn",
  NOTICE: "info",
  INFO: "info",
  DEBUG: "debug",
};

export function registerFrameworkControl(registry: MethodTable, server: ControlServer): void {
  registry.register("framework_start_init", {
    description: "leave start-up: bring the iSCSI target up with the options set so far",
    states: ["startup"],
    handler: async () => {
      await server.frameworkStartInit();
      return true;
    },
  });
  registry.register("framework_wait_init", {
    description: "answer once the framework is initialized",
    states: BOTH,
    handler: async () => {
      await server.frameworkInitialized();
      return true;
    },
  });
  const kill = server.killHandler;
  if (kill) {
    registry.register("spdk_kill_instance", {
      description: "stop the server as the named signal would (SIGTERM, SIGINT: clean shutdown)",
      states: BOTH,
      params: { sig_name: { type: "string", required: true } },
      handler: (p) => {
        const sig = SIGNALS[(p.sig_name as string).toUpperCase()];
        if (!sig)
          throw invalidParam(
            "spdk_kill_instance",
            `sig_name "${p.sig_name as string}" is not one of ${Object.keys(SIGNALS).join(", ")}`,
          );
        // After the answer is on its way: the shutdown closes this socket.
        setImmediate(() => kill(sig));
        return true;
      },
    });
  }

  let flags = new Set<string>();
  let level = "NOTICE";
  let printLevel = "NOTICE";
  const applyLevel = (): void => {
    log.level = flags.size > 0 ? "debug" : (LEVELS[level] ?? "info");
  };
  const flagParam = (method: string, p: JsonObject): string => {
    const flag = p.flag as string;
    if (flag !== "all" && !LOG_FLAGS.includes(flag))
      throw invalidParam(method, `flag "${flag}" is not one of all, ${LOG_FLAGS.join(", ")}`);
    return flag;
  };
  registry.register("log_set_flag", {
    description: "turn on a log flag (debug logging)",
    states: BOTH,
    params: { flag: { type: "string", required: true } },
    handler: (p) => {
      const flag = flagParam("log_set_flag", p);
      flags = new Set(flag === "all" ? LOG_FLAGS : [...flags, flag]);
      applyLevel();
      return true;
    },
  });
  registry.register("log_clear_flag", {
    description: "turn off a log flag",
    states: BOTH,
    params: { flag: { type: "string", required: true } },
    handler: (p) => {
      const flag = flagParam("log_clear_flag", p);
      if (flag === "all") flags.clear();
      else flags.delete(flag);
      applyLevel();
      return true;
    },
  });
  registry.register("log_get_flags", {
    description: "every log flag and whether it is on",
    states: BOTH,
    handler: () => Object.fromEntries(LOG_FLAGS.map((f) => [f, flags.has(f)])),
  });
  const levelParam = (method: string, p: JsonObject): string => {
    const l = (p.level as string).toUpperCase();
    if (!(l in LEVELS))
      throw invalidParam(
        method,
        `level "${p.level as string}" is not one of ${Object.keys(LEVELS).join(", ")}`,
      );
    return l;
  };
  registry.register("log_set_level", {
    description: "the level of messages logged",
    states: BOTH,
    params: { level: { type: "string", required: true } },
    handler: (p) => {
      level = levelParam("log_set_level", p);
      applyLevel();
      return true;
    },
  });
  registry.register("log_get_level", {
    description: "the level of messages logged",
    states: BOTH,
    handler: () => level,
  });
  registry.register("log_set_print_level", {
    description: "the level of messages printed (one stream here: kept for log_get_print_level)",
    states: BOTH,
    params: { level: { type: "string", required: true } },
    handler: (p) => {
      printLevel = levelParam("log_set_print_level", p);
      return true;
    },
  });
  registry.register("log_get_print_level", {
    description: "the level of messages printed",
    states: BOTH,
    handler: () => printLevel,
  });
}
