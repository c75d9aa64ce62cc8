/**
 * The method table: each module adds its methods with `registry.register(...)` (SPDK's
 * SPDK_RPC_REGISTER), declaring its named parameters so bad calls are refused with -32602 before
 * the handler runs. Modules export a `registerXxxMethods(registry, ...)` function; the server calls
 * each one, so adding methods (e.g. DRBD's) touches only the module's own file and one call site.
 */
import { isJsonObject, RpcError, RpcErrorCode, type JsonObject, type JsonValue } from "./jsonrpc.js";

export type ParamType = "string" | "integer" | "number" | "boolean" | "object" | "array";

export interface ParamSpec {
  readonly type: ParamType;
  readonly required?: boolean;
  readonly description?: string;
}

/**
 * SPDK's RPC states (lib/rpc/rpc.c): STARTUP until framework_start_init, RUNTIME after. A method
 * says in which it may be called; default runtime only.
 */
export type RpcState = "startup" | "runtime";

/** SPDK's SPDK_JSONRPC_ERROR_INVALID_STATE: the method exists but not in the current state. */
export const INVALID_STATE = -1;

export interface MethodSpec {
  readonly description: string;
  /** States the method may be called in (SPDK's state_mask); default ["runtime"]. */
  readonly states?: readonly RpcState[];
  /** Named parameters (SPDK passes params as an object). Omitted: the method takes none. */
  readonly params?: Readonly<Record<string, ParamSpec>>;
  /** Other names this method answers to (`usertgt_get_version` for `spdk_get_version`). */
  readonly aliases?: readonly string[];
  /** Receives params already checked against `params`. */
  readonly handler: (params: JsonObject) => JsonValue | Promise<JsonValue>;
}

export interface RegisteredMethod extends MethodSpec {
  readonly name: string;
}

function typeOf(v: JsonValue): ParamType | "null" {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v as "string" | "boolean" | "object";
}

function matches(v: JsonValue, want: ParamType): boolean {
  const got = typeOf(v);
  return got === want || (want === "number" && got === "integer");
}

export class MethodRegistry {
  private readonly methods = new Map<string, RegisteredMethod>();
  private readonly aliases = new Map<string, string>();
  /** Where the server is: methods not allowed here answer -1 (INVALID_STATE). */
  state: RpcState = "runtime";

  register(name: string, spec: MethodSpec): void {
    for (const n of [name, ...(spec.aliases ?? [])]) {
      if (this.methods.has(n) || this.aliases.has(n)) {
        throw new Error(`RPC method "${n}" is already registered`);
      }
    }
    this.methods.set(name, { ...spec, name });
    for (const a of spec.aliases ?? []) this.aliases.set(a, name);
  }

  allowedNow(method: MethodSpec): boolean {
    return (method.states ?? ["runtime"]).includes(this.state);
  }

  /**
   * Method names in registration order; with aliases after their method when asked; only those
   * callable in the current state with `currentOnly` (rpc_get_methods --current).
   */
  names(includeAliases = false, currentOnly = false): string[] {
    const out: string[] = [];
    for (const m of this.methods.values()) {
      if (currentOnly && !this.allowedNow(m)) continue;
      out.push(m.name);
      if (includeAliases) out.push(...(m.aliases ?? []));
    }
    return out;
  }

  get(name: string): RegisteredMethod | undefined {
    return this.methods.get(this.aliases.get(name) ?? name);
  }

  /** Check params and run the method. Throws RpcError (the server turns it into the error response). */
  async call(name: string, params: JsonObject | JsonValue[] | undefined): Promise<JsonValue> {
    const method = this.get(name);
    if (!method) throw new RpcError(RpcErrorCode.MethodNotFound, `Method not found: ${name}`);
    if (!this.allowedNow(method)) {
      // SPDK's two messages (lib/rpc/rpc.c jsonrpc_handler).
      throw new RpcError(
        INVALID_STATE,
        this.state === "startup"
          ? `${name}: Method may only be called after framework is initialized using framework_start_init RPC.`
          : `${name}: Method may only be called before framework is initialized. Use --wait-for-rpc command line parameter and then issue this RPC before the framework_start_init RPC.`,
      );
    }
    return method.handler(checkParams(method, params));
  }
}

/** JSON-RPC 2.0 §4.2: params are by name here (as SPDK's); an array is refused, unknown keys too. */
export function checkParams(
  method: RegisteredMethod,
  params: JsonObject | JsonValue[] | undefined,
): JsonObject {
  const spec = method.params ?? {};
  if (params === undefined || params === null) params = {};
  if (!isJsonObject(params)) {
    throw new RpcError(
      RpcErrorCode.InvalidParams,
      `${method.name}: params must be an object of named parameters, not ${Array.isArray(params) ? "an array" : typeof params}`,
    );
  }
  for (const [key, value] of Object.entries(params)) {
    const p = spec[key];
    if (!p) {
      const known = Object.keys(spec);
      throw new RpcError(
        RpcErrorCode.InvalidParams,
        `${method.name}: unknown parameter "${key}"` +
          (known.length ? ` (takes ${known.join(", ")})` : " (takes none)"),
      );
    }
    if (!matches(value, p.type)) {
      throw new RpcError(
        RpcErrorCode.InvalidParams,
        `${method.name}: parameter "${key}" must be ${p.type === "integer" ? "an" : "a"} ${p.type}, got ${typeOf(value)}`,
      );
    }
  }
  for (const [key, p] of Object.entries(spec)) {
    if (p.required && !(key in params)) {
      throw new RpcError(RpcErrorCode.InvalidParams, `${method.name}: missing required parameter "${key}"`);
    }
  }
  return params;
}
