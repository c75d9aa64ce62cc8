/**
 * `usertgt rpc [-s SOCKET] METHOD [JSON-params | --key value ...]`: SPDK's scripts/rpc.py for our
 * control socket. Parameters are either one JSON object or --key value pairs (dashes in a key
 * become underscores, as rpc.py's flags map to SPDK's parameter names; a value that parses as JSON
 * — 5, true, {"a":1} — is sent as such, anything else as a string; a --flag with no value is true).
 * Prints the result as indented JSON on stdout. Exit codes: 0 success, 1 the call failed (error
 * response or no server), 2 bad usage.
 */
import { RpcClient } from "../rpc/client.js";
import { clientSocketPath } from "./socket_path.js";
import { isJsonObject, RpcError, type JsonObject, type JsonValue } from "../rpc/jsonrpc.js";

export const EXIT_RPC_FAILED = 1;
export const EXIT_RPC_USAGE = 2;

export class RpcUsageError extends Error {}

function parseValue(text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return text;
  }
}

/** The words after METHOD → the params object (undefined: none given). */
export function parseRpcParams(words: readonly string[]): JsonObject | undefined {
  if (words.length === 0) return undefined;
  if (!words[0]!.startsWith("--")) {
    if (words.length > 1) {
      throw new RpcUsageError(`give params as one JSON object or as --key value pairs, not both`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(words[0]!);
    } catch (err) {
      throw new RpcUsageError(`params ${JSON.stringify(words[0])} are not JSON: ${(err as Error).message}`);
    }
    if (!isJsonObject(parsed)) throw new RpcUsageError("params must be a JSON object ({...})");
    return parsed;
  }
  const out: JsonObject = {};
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (!w.startsWith("--") || w.length === 2) {
      throw new RpcUsageError(`expected --key, got ${JSON.stringify(w)}`);
    }
    let key = w.slice(2);
    let value: JsonValue;
    const eq = key.indexOf("=");
    if (eq >= 0) {
      value = parseValue(key.slice(eq + 1));
      key = key.slice(0, eq);
    } else if (i + 1 < words.length && !words[i + 1]!.startsWith("--")) {
      value = parseValue(words[++i]!);
    } else {
      value = true;
    }
    out[key.replace(/-/g, "_")] = value;
  }
  return out;
}

export interface RpcCommandOptions {
  readonly socket?: string;
  readonly timeout?: string;
}

/** Run one call; returns the exit code (prints the result or the error). */
export async function runRpcCommand(
  method: string,
  words: readonly string[],
  opts: RpcCommandOptions,
): Promise<number> {
  const fail = (msg: string, code: number): number => {
    process.stderr.write(`usertgt rpc: ${msg}\n`);
    return code;
  };
  let params: JsonObject | undefined;
  try {
    params = parseRpcParams(words);
  } catch (err) {
    return fail((err as Error).message, EXIT_RPC_USAGE);
  }
  const timeoutMs = Math.round(Number(opts.timeout ?? "60") * 1000);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    return fail(`--timeout ${opts.timeout}: expected a positive number of seconds`, EXIT_RPC_USAGE);
  }
  const path = clientSocketPath(opts.socket);
  let client: RpcClient;
  try {
    client = await RpcClient.connect(path, timeoutMs);
  } catch (err) {
    return fail(
      `${(err as Error).message} (is \`usertgt serve --rpc-socket ${path}\` running?)`,
      EXIT_RPC_FAILED,
    );
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      client.call(method, params),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
      }),
    ]);
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    return 0;
  } catch (err) {
    if (err instanceof RpcError) return fail(`${method}: ${err.message} (code ${err.code})`, EXIT_RPC_FAILED);
    return fail(`${method}: ${(err as Error).message}`, EXIT_RPC_FAILED);
  } finally {
    clearTimeout(timer);
    client.close();
  }
}
