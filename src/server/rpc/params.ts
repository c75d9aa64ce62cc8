/**
 * Reading the nested parts of RPC params (arrays of objects) with errors that name the parameter,
 * as `portals[1].port`. The registry has already checked the top-level names and types.
 */
import { isJsonObject, RpcError, RpcErrorCode, type JsonObject, type JsonValue } from "../../rpc/jsonrpc.js";

export function invalidParam(method: string, message: string): RpcError {
  return new RpcError(RpcErrorCode.InvalidParams, `${method}: ${message}`);
}

export function objects(method: string, value: JsonValue | undefined, name: string): JsonObject[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalidParam(method, `${name} must be an array`);
  return value.map((v, i) => {
    if (!isJsonObject(v)) throw invalidParam(method, `${name}[${i}] must be an object`);
    return v;
  });
}

export function strings(method: string, value: JsonValue | undefined, name: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw invalidParam(method, `${name} must be an array of strings`);
  return value.map((v, i) => {
    if (typeof v !== "string") throw invalidParam(method, `${name}[${i}] must be a string`);
    return v;
  });
}

export function field(
  method: string,
  o: JsonObject,
  where: string,
  key: string,
  type: "string" | "integer" | "boolean",
  required = true,
): string | number | boolean | undefined {
  const v = o[key];
  if (v === undefined) {
    if (required) throw invalidParam(method, `missing ${where}.${key}`);
    return undefined;
  }
  const ok = type === "integer" ? typeof v === "number" && Number.isInteger(v) : typeof v === type;
  if (!ok) throw invalidParam(method, `${where}.${key} must be ${type === "integer" ? "an" : "a"} ${type}`);
  return v as string | number | boolean;
}

/** A TCP port given as SPDK does (a string, "3260") or as a number. */
export function port(method: string, o: JsonObject, where: string): number {
  const v = o.port;
  const n = typeof v === "string" && /^[0-9]{1,5}$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > 65535)
    throw invalidParam(method, `${where}.port must be a port number 0..65535, got ${JSON.stringify(v)}`);
  return n;
}
