/**
 * `usertgt drbdadm wait-connect RES [--wfc-timeout S] [--degr-wfc-timeout S] [--outdated-wfc-timeout S]
 * [--wait-after-sb]`: drbdsetup 8.4's wait-connect (drbdsetup.c generic_get_cmd with w_connected_state and
 * choose_timeout). It waits until the resource is connected (Connected or any state past it: a resync,
 * verify, Ahead/Behind), polling the server's `drbd_status`.
 *
 * The timeout is the resource's `startup { }` value the server reports, or the option given: degr-wfc-timeout
 * when this node was a Primary without its peer when it last went away, outdated-wfc-timeout when its peer is
 * known Outdated, else wfc-timeout; 0 waits forever. As drbdsetup, a longer degr-wfc-timeout than wfc-timeout
 * is cut to wfc-timeout (with its message), StandAlone ends the wait at once unless --wait-after-sb (exit 0,
 * as drbdsetup), and a timeout exits 5.
 */
import { RpcClient } from "../rpc/client.js";
import { isJsonObject, RpcError, type JsonObject } from "../rpc/jsonrpc.js";
import { EXIT_RPC_FAILED, EXIT_RPC_USAGE } from "./rpc_command.js";
import { clientSocketPath } from "./socket_path.js";

/** drbdsetup's exit code when wait-connect / wait-sync timed out. */
export const EXIT_WAIT_TIMED_OUT = 5;

export interface WaitConnectOptions {
  readonly socket?: string;
  readonly wfcTimeout?: string;
  readonly degrWfcTimeout?: string;
  readonly outdatedWfcTimeout?: string;
  readonly waitAfterSb?: boolean;
}

/** Connection states in which the node is connected (conn >= C_CONNECTED). */
const CONNECTED = new Set([
  "Connected",
  "StartingSyncS",
  "StartingSyncT",
  "WFBitMapS",
  "WFBitMapT",
  "WFSyncUUID",
  "SyncSource",
  "SyncTarget",
  "VerifyS",
  "VerifyT",
  "Ahead",
  "Behind",
]);
/** conn < C_UNCONNECTED: nothing will connect without an administrator. */
const GIVEN_UP = new Set(["StandAlone", "Disconnecting"]);
const POLL_MS = 200;

function fail(msg: string, code: number): number {
  process.stderr.write(`usertgt drbdadm: ${msg}\n`);
  return code;
}

function seconds(text: string | undefined, what: string): number | undefined | string {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 300000)
    return `--${what} ${text}: expected whole seconds 0..300000`;
  return n;
}

interface Startup {
  wfc: number;
  degr: number;
  outdated: number;
  type: string;
}

function startupOf(res: JsonObject): Startup {
  const s = isJsonObject(res.startup) ? res.startup : {};
  const n = (v: unknown) => (typeof v === "number" ? v : 0);
  return {
    wfc: n(s.wfc_timeout),
    degr: n(s.degr_wfc_timeout),
    outdated: n(s.outdated_wfc_timeout),
    type: typeof s.timeout_type === "string" ? s.timeout_type : "default",
  };
}

/** choose_timeout: the timeout in seconds for this node's situation (0: none). */
export function chooseTimeout(s: Startup, warn: (msg: string) => void): number {
  let { degr, outdated } = s;
  const wfc = s.wfc;
  if (wfc > 0 && (wfc < degr || degr === 0)) {
    degr = wfc;
    warn(
      `degr-wfc-timeout has to be shorter than wfc-timeout\ndegr-wfc-timeout implicitly set to wfc-timeout (${degr}s)`,
    );
  }
  if (degr > 0 && (degr < outdated || outdated === 0)) {
    outdated = degr;
    warn(
      `outdated-wfc-timeout has to be shorter than degr-wfc-timeout\noutdated-wfc-timeout implicitly set to degr-wfc-timeout (${degr}s)`,
    );
  }
  return s.type === "degraded" ? degr : s.type === "peer-outdated" ? outdated : wfc;
}

export async function runWaitConnect(
  resource: string | undefined,
  opts: WaitConnectOptions,
): Promise<number> {
  if (resource === undefined) return fail("wait-connect needs a resource name", EXIT_RPC_USAGE);
  const given: Record<string, number | undefined> = {};
  for (const [key, what, text] of [
    ["wfc", "wfc-timeout", opts.wfcTimeout],
    ["degr", "degr-wfc-timeout", opts.degrWfcTimeout],
    ["outdated", "outdated-wfc-timeout", opts.outdatedWfcTimeout],
  ] as const) {
    const v = seconds(text, what);
    if (typeof v === "string") return fail(v, EXIT_RPC_USAGE);
    given[key] = v;
  }
  const path = clientSocketPath(opts.socket);
  let client: RpcClient;
  try {
    client = await RpcClient.connect(path, 10000);
  } catch (err) {
    return fail(`${(err as Error).message} (is the server running?)`, EXIT_RPC_FAILED);
  }
  const status = async (): Promise<JsonObject> => {
    const r = await client.call("drbd_status", { resource });
    const res = isJsonObject(r) && Array.isArray(r.resources) ? r.resources[0] : undefined;
    if (!isJsonObject(res)) throw new Error(`${resource}: no status`);
    return res;
  };
  try {
    const first = await status();
    if (first.connection === undefined)
      return fail(`${resource}: a one-node resource has no peer to wait for`, EXIT_RPC_FAILED);
    const s = startupOf(first);
    const timeout = chooseTimeout(
      { ...s, wfc: given.wfc ?? s.wfc, degr: given.degr ?? s.degr, outdated: given.outdated ?? s.outdated },
      (msg) => process.stderr.write(`${msg}\n`),
    );
    const deadline = timeout > 0 ? Date.now() + timeout * 1000 : Infinity;
    let said = false;
    for (let res = first; ; res = await status()) {
      const conn = String(res.connection);
      if (CONNECTED.has(conn)) return 0;
      if (GIVEN_UP.has(conn)) {
        if (opts.waitAfterSb !== true) {
          process.stderr.write(`${resource} is ${conn}: not waiting (--wait-after-sb waits anyway)\n`);
          return 0;
        }
        if (!said)
          process.stderr.write(
            `${resource} is ${conn}, but I'm configured to wait anyways (--wait-after-sb)\n`,
          );
        said = true;
      }
      if (Date.now() >= deadline)
        return fail(`${resource}: not connected after ${timeout} s (${conn})`, EXIT_WAIT_TIMED_OUT);
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))));
    }
  } catch (err) {
    return fail(err instanceof RpcError ? err.message : (err as Error).message, EXIT_RPC_FAILED);
  } finally {
    client.close();
  }
}
