/**
 * The control-plane server: JSON-RPC 2.0 over a Unix stream socket (SPDK's /var/tmp/spdk.sock, ours
 * /var/tmp/usertgt.sock). Requests are framed by JsonStreamFramer (rpc.py style or one per line);
 * each response is one JSON object followed by "\n". Requests on one connection are answered in
 * order. Bad input gets an error response; a request over 1 MiB ends the connection.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { lstat, unlink } from "node:fs/promises";
import { log as rootLog, type Logger } from "../util/log.js";
import { FrameTooLargeError, JsonStreamFramer } from "./framing.js";
import {
  isJsonObject,
  RpcError,
  RpcErrorCode,
  type JsonObject,
  type RequestId,
  type RpcResponse,
} from "./jsonrpc.js";
import type { MethodRegistry } from "./registry.js";

/** Connections served at once; more are refused (closed) rather than queued without bound. */
const MAX_CONNECTIONS = 32;
/** Requests framed but not yet answered on one connection; a client pipelining more is cut off. */
const MAX_QUEUED_REQUESTS = 64;

export interface RpcServerOptions {
  readonly path: string;
  readonly registry: MethodRegistry;
  readonly logger?: Logger;
}

function validId(v: unknown): v is RequestId {
  return v === null || typeof v === "string" || (typeof v === "number" && Number.isFinite(v));
}

/** Is something accepting connections on this Unix socket path? */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export class RpcServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly log: Logger;
  private closed = false;
  private connectionCount = 0;

  private constructor(private readonly options: RpcServerOptions) {
    this.log = (options.logger ?? rootLog).child({ module: "rpc", socket: options.path });
    this.server = createServer((socket) => this.accept(socket));
    this.server.maxConnections = MAX_CONNECTIONS;
  }

  get path(): string {
    return this.options.path;
  }

  /**
   * Listen on options.path. A socket file left by a dead process is removed; one that a live
   * server answers on is an error (two targets must not share a control socket).
   */
  static async start(options: RpcServerOptions): Promise<RpcServer> {
    const rpc = new RpcServer(options);
    try {
      await rpc.listen();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw rpcStartError(options.path, err);
      if (await listening(options.path)) {
        throw new Error(`RPC socket ${options.path}: another server is listening on it`);
      }
      // Only ever remove a socket: a regular file at the path is the operator's mistake, not ours.
      // (It may vanish meanwhile: a server that was stopping has just removed it.)
      const st = await lstat(options.path).catch(() => undefined);
      if (st && !st.isSocket()) throw new Error(`RPC socket ${options.path}: exists and is not a socket`);
      if (st) {
        rpc.log.warn("removing a stale RPC socket file nothing listens on");
        await unlink(options.path).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "ENOENT") throw rpcStartError(options.path, err);
        });
      }
      try {
        await rpc.listen();
      } catch (err2) {
        throw rpcStartError(options.path, err2);
      }
    }
    rpc.log.info("RPC server listening");
    return rpc;
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once("error", onError);
      this.server.listen(this.options.path, () => {
        this.server.off("error", onError);
        this.server.on("error", (err) => this.log.error({ err }, "RPC server error"));
        resolve();
      });
    });
  }

  /** Stop listening, end open connections; Node removes the socket file when a Unix server closes. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    // Node unlinks a Unix socket's path when its server closes; unlinking again here could remove
    // the socket of a server that has taken the path over in the meantime.
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.log.info("RPC server stopped");
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    const framer = new JsonStreamFramer();
    const queue: string[] = [];
    let busy = false;
    let cutOff = false;
    const conn = this.log.child({ conn: ++this.connectionCount });

    const drainQueue = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      while (queue.length > 0 && !socket.destroyed) {
        const response = await this.handle(queue.shift()!, conn);
        if (response === undefined || socket.destroyed) continue;
        // Respect back-pressure: a client that does not read its answers stops being read.
        if (!socket.write(serialize(response, conn))) {
          socket.pause();
          await new Promise<void>((resolve) => {
            socket.once("drain", resolve);
            socket.once("close", resolve);
          });
          if (!socket.destroyed) socket.resume();
        }
      }
      busy = false;
    };

    socket.on("data", (chunk: Buffer) => {
      if (cutOff) return;
      let frames: string[];
      try {
        frames = framer.push(chunk);
      } catch (err) {
        if (err instanceof FrameTooLargeError) {
          conn.warn({ bytes: err.bytes }, "RPC request too large; closing the connection");
          const response: RpcResponse = {
            jsonrpc: "2.0",
            id: null,
            error: new RpcError(RpcErrorCode.InvalidRequest, err.message).toObject(),
          };
          // Stop reading, answer once, then close; the rest of the request is never looked at.
          cutOff = true;
          socket.pause();
          queue.length = 0;
          socket.end(JSON.stringify(response) + "\n", () => socket.destroy());
          return;
        }
        throw err;
      }
      queue.push(...frames);
      if (queue.length > MAX_QUEUED_REQUESTS) {
        conn.warn({ queued: queue.length }, "RPC client pipelined too many requests; closing");
        socket.destroy();
        return;
      }
      void drainQueue();
    });
    socket.on("error", (err) => conn.debug({ err }, "RPC connection error"));
    socket.on("close", () => this.sockets.delete(socket));
  }

  /** One framed request → its response (undefined for a notification). Never throws. */
  private async handle(text: string, conn: Logger): Promise<RpcResponse | undefined> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      return {
        jsonrpc: "2.0",
        id: null,
        error: { code: RpcErrorCode.ParseError, message: `Parse error: ${(err as Error).message}` },
      };
    }
    if (Array.isArray(parsed)) {
      return {
        jsonrpc: "2.0",
        id: null,
        error: {
          code: RpcErrorCode.InvalidRequest,
          message: "Invalid request: batch requests are not supported",
        },
      };
    }
    const req = parsed as JsonObject;
    const id: RequestId = isJsonObject(parsed) && validId(req.id) ? req.id : null;
    const invalid = (why: string): RpcResponse => ({
      jsonrpc: "2.0",
      id,
      error: { code: RpcErrorCode.InvalidRequest, message: `Invalid request: ${why}` },
    });
    if (!isJsonObject(parsed)) return invalid("not a JSON object");
    if (req.jsonrpc !== "2.0") return invalid('"jsonrpc" must be "2.0"');
    if (typeof req.method !== "string") return invalid('"method" must be a string');
    if ("id" in req && !validId(req.id)) return invalid('"id" must be a string, number or null');
    const params = req.params;
    if (params !== undefined && typeof params !== "object")
      return invalid('"params" must be an object or array');
    const notification = !("id" in req);

    try {
      const result = await this.options.registry.call(req.method, params ?? undefined);
      // A handler that returns nothing still answers: JSON-RPC 2.0 §5 requires "result".
      return notification ? undefined : { jsonrpc: "2.0", id, result: result ?? null };
    } catch (err) {
      if (notification) return undefined;
      if (err instanceof RpcError) return { jsonrpc: "2.0", id, error: err.toObject() };
      conn.error({ err, method: req.method }, "RPC method failed");
      return {
        jsonrpc: "2.0",
        id,
        error: {
          code: RpcErrorCode.InternalError,
          message: `${req.method}: ${(err as Error).message ?? String(err)}`,
        },
      };
    }
  }
}

/** The response as one line; a result JSON cannot carry (a BigInt, a cycle) becomes -32603. */
function serialize(response: RpcResponse, conn: Logger): string {
  try {
    return JSON.stringify(response) + "\n";
  } catch (err) {
    conn.error({ err }, "RPC result cannot be written as JSON");
    const failed: RpcResponse = {
      jsonrpc: "2.0",
      id: response.id,
      error: {
        code: RpcErrorCode.InternalError,
        message: `result cannot be written as JSON: ${(err as Error).message}`,
      },
    };
    return JSON.stringify(failed) + "\n";
  }
}

function rpcStartError(path: string, err: unknown): Error {
  return new Error(`RPC socket ${path}: ${(err as Error).message}`);
}
