/**
 * `usertgt drbdadm [-s SOCKET] [-c FILE] COMMAND RESOURCE [--force] [--clear-bitmap] [--discard-my-data]
 * [--assume-clean] [--assume-peer-has-space]`: drbdadm(8) for the
 * DRBD resources of a running server (JSON-RPC `drbd_adm` / `drbd_status`, docs/rpc.md). `status [RES]`
 * prints drbdadm's status text; `dump RES` reads the config file locally (-c) and needs no server.
 * Exit codes: 0 success, 1 the command failed (or no server), 2 bad usage — as `usertgt rpc` — and 11
 * when DRBD refused the state change (secondary while the device is in use), as drbdadm.
 */
import { parseDrbdConfig } from "../drbd/config/res_parser.js";
import { dumpDrbdConfig } from "../drbd/config/res_dump.js";
import { RpcClient } from "../rpc/client.js";
import { clientSocketPath } from "./socket_path.js";
import {
  DRBDADM_MONITOR_COMMANDS,
  runDrbdadmMonitor,
  type DrbdMonitorOptions,
} from "./drbd_monitor_command.js";
import { isJsonObject, RpcError, type JsonObject } from "../rpc/jsonrpc.js";
import { DRBD_ADM_COMMANDS, DRBD_STATE_CHANGE_FAILED } from "../server/drbd_wiring.js";
import { EXIT_RPC_FAILED, EXIT_RPC_USAGE } from "./rpc_command.js";
import { runWaitConnect, type WaitConnectOptions } from "./drbd_wait_connect.js";

export interface DrbdadmCommandOptions extends DrbdMonitorOptions, WaitConnectOptions {
  readonly socket?: string;
  readonly config?: string;
  readonly force?: boolean;
  readonly clearBitmap?: boolean;
  readonly discardMyData?: boolean;
  readonly assumeClean?: boolean;
  readonly assumePeerHasSpace?: boolean;
  readonly timeout?: string;
}

/** drbdsetup's exit code when the kernel refuses a state change ("State change failed"). */
export const EXIT_STATE_CHANGE = 11;

function fail(msg: string, code: number): number {
  process.stderr.write(`usertgt drbdadm: ${msg}\n`);
  return code;
}

/** Run one drbdadm command; returns the exit code. */
export async function runDrbdadmCommand(
  command: string,
  resource: string | undefined,
  opts: DrbdadmCommandOptions,
): Promise<number> {
  if (command === "dump") {
    if (opts.config === undefined) return fail("dump needs the config file: -c FILE", EXIT_RPC_USAGE);
    try {
      process.stdout.write(dumpDrbdConfig(parseDrbdConfig(opts.config), resource));
      return 0;
    } catch (err) {
      return fail((err as Error).message, EXIT_RPC_FAILED);
    }
  }
  if (command === "wait-connect") return runWaitConnect(resource, opts);
  if (
    (command === "status" && (opts.verbose === true || opts.statistics === true)) ||
    (DRBDADM_MONITOR_COMMANDS as readonly string[]).includes(command)
  )
    return runDrbdadmMonitor(command, resource, opts);
  if (command !== "status" && !(DRBD_ADM_COMMANDS as readonly string[]).includes(command))
    return fail(
      `${command}: not supported (supported: ${DRBD_ADM_COMMANDS.join(", ")}, status, ${DRBDADM_MONITOR_COMMANDS.join(", ")}, wait-connect, dump)`,
      EXIT_RPC_FAILED,
    );
  if (command !== "status" && resource === undefined)
    return fail(`${command} needs a resource name`, EXIT_RPC_USAGE);
  const timeoutMs = Math.round(Number(opts.timeout ?? "120") * 1000);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0)
    return fail(`--timeout ${opts.timeout}: expected a positive number of seconds`, EXIT_RPC_USAGE);

  const path = clientSocketPath(opts.socket);
  let client: RpcClient;
  try {
    client = await RpcClient.connect(path, timeoutMs);
  } catch (err) {
    return fail(
      `${(err as Error).message} (is \`usertgt serve --drbd-config FILE --rpc-socket ${path}\` running?)`,
      EXIT_RPC_FAILED,
    );
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const params: JsonObject =
      command === "status"
        ? resource === undefined
          ? {}
          : { resource }
        : {
            command,
            resource: resource as string,
            ...(opts.force ? { force: true } : {}),
            ...(opts.clearBitmap ? { clear_bitmap: true } : {}),
            ...(opts.discardMyData ? { discard_my_data: true } : {}),
            ...(opts.assumeClean ? { assume_clean: true } : {}),
            ...(opts.assumePeerHasSpace ? { assume_peer_has_space: true } : {}),
          };
    const result = await Promise.race([
      client.call(command === "status" ? "drbd_status" : "drbd_adm", params),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
      }),
    ]);
    // status prints drbdadm's text; other commands are silent on success, as drbdadm is.
    if (command === "status" && isJsonObject(result) && typeof result.status === "string")
      process.stdout.write(result.status);
    return 0;
  } catch (err) {
    // drbdadm's exit code for a refused state change (e.g. secondary on a device in use).
    if (err instanceof RpcError && err.code === DRBD_STATE_CHANGE_FAILED)
      return fail(err.message, EXIT_STATE_CHANGE);
    if (err instanceof RpcError) return fail(err.message, EXIT_RPC_FAILED);
    return fail((err as Error).message, EXIT_RPC_FAILED);
  } finally {
    clearTimeout(timer);
    client.close();
  }
}
