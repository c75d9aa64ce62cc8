/**
 * SPDK's JSON config (`{"subsystems": [{"subsystem": "bdev", "config": [{"method", "params"}]}]}`,
 * what `rpc.py save_config` writes) read and replayed through the server's own methods in the order
 * rpc.py load_config uses: every call the current state allows, then framework_start_init, then
 * the rest. A call that fails stops the start with the file, the place and the server's message.
 */
import { ConfigError } from "../config/errors.js";
import { isJsonObject, RpcError, type JsonObject, type JsonValue } from "../rpc/jsonrpc.js";
import type { MethodRegistry } from "../rpc/registry.js";

export interface JsonConfigCall {
  readonly method: string;
  readonly params?: JsonObject;
  /** "subsystems[1].config[3]", for errors. */
  readonly where: string;
}

export interface JsonConfig {
  readonly calls: readonly JsonConfigCall[];
}

/** Does this file look like a JSON config (rather than a legacy INI one)? Decided by content. */
export function looksLikeJsonConfig(text: string): boolean {
  return /^\s*\{/.test(text);
}

/** Parse and check the shape; batches (arrays of calls) are flattened in order. */
export function parseJsonConfig(file: string, text: string): JsonConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(file, 0, `not valid JSON: ${(err as Error).message}`);
  }
  if (!isJsonObject(doc as JsonValue) || !Array.isArray((doc as JsonObject).subsystems))
    throw new ConfigError(file, 0, 'a JSON config is an object with a "subsystems" array');
  const calls: JsonConfigCall[] = [];
  const one = (c: JsonValue, where: string): void => {
    if (!isJsonObject(c) || typeof c.method !== "string")
      throw new ConfigError(file, 0, `${where}: expected {"method": ..., "params": {...}}`);
    if (c.params !== undefined && c.params !== null && !isJsonObject(c.params))
      throw new ConfigError(file, 0, `${where} (${c.method}): params must be an object`);
    calls.push({
      method: c.method,
      ...(isJsonObject(c.params ?? null) ? { params: c.params as JsonObject } : {}),
      where,
    });
  };
  ((doc as JsonObject).subsystems as JsonValue[]).forEach((s, i) => {
    const where = `subsystems[${i}]`;
    if (!isJsonObject(s) || typeof s.subsystem !== "string")
      throw new ConfigError(file, 0, `${where}: expected {"subsystem": NAME, "config": [...]}`);
    if (s.config === null || s.config === undefined) return;
    if (!Array.isArray(s.config)) throw new ConfigError(file, 0, `${where}.config must be an array`);
    s.config.forEach((c, j) => {
      if (Array.isArray(c)) c.forEach((b, k) => one(b, `${where}.config[${j}][${k}]`));
      else one(c, `${where}.config[${j}]`);
    });
  });
  return { calls };
}

/**
 * Replay `json` on a server in its start-up state (rpc.py load_config's loop): calls allowed now
 * run in order; then framework_start_init if the server offers it; repeat while anything ran.
 */
export async function applyJsonConfig(
  file: string,
  json: JsonConfig,
  methods: MethodRegistry,
): Promise<void> {
  for (const c of json.calls) {
    if (!methods.get(c.method)) throw new ConfigError(file, 0, `${c.where}: unknown method ${c.method}`);
  }
  let pending = [...json.calls];
  for (;;) {
    const now = pending.filter((c) => methods.allowedNow(methods.get(c.method)!));
    for (const c of now) {
      try {
        await methods.call(c.method, c.params);
      } catch (err) {
        const msg = err instanceof RpcError ? `${err.message} (code ${err.code})` : (err as Error).message;
        throw new ConfigError(file, 0, `${c.where} (${c.method}): ${msg}`);
      }
    }
    pending = pending.filter((c) => !now.includes(c));
    const canInit = methods.state === "startup";
    if (canInit) await methods.call("framework_start_init", {});
    if (pending.length === 0) return;
    if (now.length === 0 && !canInit) {
      throw new ConfigError(
        file,
        0,
        `${pending[0]!.where} (${pending[0]!.method}): not callable after start-up`,
      );
    }
  }
}
