/**
 * JSON-RPC 2.0 message shapes and the error codes of its §5.1, as SPDK's control socket uses them
 * (lib/jsonrpc). Method handlers throw RpcError; anything else they throw becomes -32603.
 */

/** JSON-RPC 2.0 §5.1 pre-defined error codes. */
export const enum RpcErrorCode {
  ParseError = -32700,
  InvalidRequest = -32600,
  MethodNotFound = -32601,
  InvalidParams = -32602,
  InternalError = -32603,
}

/** SPDK answers "no such bdev" with -ENODEV (lib/bdev/bdev_rpc.c); we keep the code for rpc.py users. */
export const ENODEV = -19;

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export type RequestId = string | number | null;

export interface RpcRequest {
  readonly jsonrpc: "2.0";
  readonly method: string;
  readonly params?: JsonObject | JsonValue[];
  /** Absent: a notification, which gets no response (JSON-RPC 2.0 §4.1). */
  readonly id?: RequestId;
}

export interface RpcErrorObject {
  readonly code: number;
  readonly message: string;
  readonly data?: JsonValue;
}

export type RpcResponse =
  | { readonly jsonrpc: "2.0"; readonly id: RequestId; readonly result: JsonValue }
  | { readonly jsonrpc: "2.0"; readonly id: RequestId; readonly error: RpcErrorObject };

export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: JsonValue,
  ) {
    super(message);
    this.name = "RpcError";
  }

  toObject(): RpcErrorObject {
    return this.data === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, data: this.data };
  }
}

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
