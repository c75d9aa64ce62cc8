/**
 * A JSON-RPC 2.0 client for the control socket (what SPDK's scripts/rpc.py's JSONRPCClient does):
 * connect, send requests, match responses by id. Used by `usertgt rpc` and the tests.
 */
import { connect, type Socket } from "node:net";
import { FrameTooLargeError, JsonStreamFramer } from "./framing.js";
import { isJsonObject, RpcError, type JsonObject, type JsonValue, type RpcErrorObject } from "./jsonrpc.js";

export const DEFAULT_RPC_SOCKET = "/var/tmp/usertgt.sock";

interface Pending {
  resolve(v: JsonValue): void;
  reject(e: Error): void;
}

export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly framer = new JsonStreamFramer();
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new Error("the RPC server closed the connection")));
  }

  static connect(path = DEFAULT_RPC_SOCKET, timeoutMs = 5000): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`RPC socket ${path}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new RpcClient(socket));
      });
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`RPC socket ${path}: ${err.message}`));
      });
    });
  }

  /** Call a method; resolves to its result, rejects with RpcError on an error response. */
  call(method: string, params?: JsonObject): Promise<JsonValue> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const request =
      params === undefined ? { jsonrpc: "2.0", method, id } : { jsonrpc: "2.0", method, params, id };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(JSON.stringify(request));
    });
  }

  close(): void {
    this.socket.end();
  }

  private receive(chunk: Buffer): void {
    let frames: string[];
    try {
      frames = this.framer.push(chunk);
    } catch (err) {
      this.fail(err instanceof FrameTooLargeError ? err : new Error(String(err)));
      this.socket.destroy();
      return;
    }
    for (const text of frames) {
      let msg: unknown;
      try {
        msg = JSON.parse(text);
      } catch {
        this.fail(new Error(`RPC server sent something that is not JSON: ${text.slice(0, 80)}`));
        this.socket.destroy();
        return;
      }
      if (!isJsonObject(msg) || typeof msg.id !== "number") {
        // An error without an id (e.g. the server could not parse our request) fails every call.
        const err = isJsonObject(msg) && isJsonObject(msg.error) ? toRpcError(msg.error) : undefined;
        this.fail(err ?? new Error(`RPC server sent an unexpected message: ${text.slice(0, 80)}`));
        continue;
      }
      const p = this.pending.get(msg.id);
      if (!p) continue;
      this.pending.delete(msg.id);
      if (isJsonObject(msg.error)) p.reject(toRpcError(msg.error));
      else p.resolve(msg.result ?? null);
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

function toRpcError(e: JsonObject): RpcError {
  const o = e as unknown as RpcErrorObject;
  return new RpcError(typeof o.code === "number" ? o.code : 0, String(o.message ?? "unknown error"), o.data);
}
