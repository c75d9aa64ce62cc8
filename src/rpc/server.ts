/**
 * The control-plane server: JSON-RPC 2.0 over a Unix stream socket (SPDK's /var/tmp/spdk.sock, ours
 * /var/tmp/usertgt.sock). Requests are framed by JsonStreamFramer (rpc.py style or one per line);
 * each response is one JSON object followed by "\n". Requests on one connection are answered in
 * order. Bad input gets an error response; a request over 1 MiB ends the connection.
 *
 * The socket can make the target forget data (`invalidate`, `down`, `primary --force`), so it is
 * created 0600 (0660 with a group) whatever the umask, and never in a directory that other users
 * can write without the sticky bit (they could replace it). A client idle for idleTimeoutMs is
 * closed, and when the table is full the longest-idle client makes room, so idle clients cannot
 * lock the administrator out.
 */
import { connect, createServer, type Server, type Socket } from "node:net";
import { chmod, chown, lstat, readFile, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
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
/** Default for RpcServerOptions.idleTimeoutMs. */
export const DEFAULT_RPC_IDLE_TIMEOUT_MS = 30_000;

export interface RpcServerOptions {
  readonly path: string;
  readonly registry: MethodRegistry;
  readonly logger?: Logger;
  /** A group (name or number) given read-write access: the socket is then 0660, owner:group. */
  readonly group?: string;
  /** A connection with no request in progress and no bytes received for this long is closed. */
  readonly idleTimeoutMs?: number;
}

interface ControlConnection {
  lastActivity: number;
  busy: boolean;
}

/** A group name from /etc/group, or a number, as a gid. */
async function resolveGroup(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const text = await readFile("/etc/group", "utf8").catch(() => "");
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`group ${group} not found in /etc/group`);
}

/** Refuse a directory where another user could remove or replace the socket. */
async function checkSocketDirectory(path: string): Promise<void> {
  const dir = dirname(path);
  const st = await stat(dir);
  const sticky = (st.mode & 0o1000) !== 0;
  if ((st.mode & 0o002) !== 0 && !sticky) {
    throw new Error(`directory ${dir} is writable by other users (mode ${(st.mode & 0o7777).toString(8)})`);
  }
  const uid = process.getuid?.() ?? 0;
  if ((st.mode & 0o020) !== 0 && !sticky && st.uid !== uid) {
    throw new Error(`directory ${dir} is group-writable and owned by uid ${st.uid}, not by this server`);
  }
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
  private readonly sockets = new Map<Socket, ControlConnection>();
  private readonly log: Logger;
  private closed = false;
  private connectionCount = 0;

  private constructor(private readonly options: RpcServerOptions) {
    this.log = (options.logger ?? rootLog).child({ module: "rpc", socket: options.path });
    this.server = createServer((socket) => this.accept(socket));
  }

  private get idleTimeoutMs(): number {
    return this.options.idleTimeoutMs ?? DEFAULT_RPC_IDLE_TIMEOUT_MS;
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
    const gid = options.group === undefined ? undefined : await resolveGroup(options.group);
    await checkSocketDirectory(options.path).catch((err) => {
      throw rpcStartError(options.path, err);
    });
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
      if (st && st.uid !== (process.getuid?.() ?? 0)) {
        throw new Error(`RPC socket ${options.path}: left by another user (uid ${st.uid}); not removing it`);
      }
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
    try {
      // The umask already kept the socket private from bind on; set the final mode explicitly.
      if (gid !== undefined) await chown(options.path, process.getuid?.() ?? 0, gid);
      await chmod(options.path, gid === undefined ? 0o600 : 0o660);
    } catch (err) {
      await rpc.stop();
      throw rpcStartError(options.path, err);
    }
    rpc.log.info("RPC server listening");
    return rpc;
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once("error", onError);
      // Node binds a Unix socket synchronously inside listen(): with this umask the socket is never,
      // even for a moment, open to other users (chmod after bind would leave a window).
      const umask = process.umask(0o177);
      try {
        this.server.listen(this.options.path, () => {
          this.server.off("error", onError);
          this.server.on("error", (err) => this.log.error({ err }, "RPC server error"));
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
  }

  /** Stop listening, end open connections; Node removes the socket file when a Unix server closes. */
  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets.keys()) s.destroy();
    // Node unlinks a Unix socket's path when its server closes; unlinking again here could remove
    // the socket of a server that has taken the path over in the meantime.
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.log.info("RPC server stopped");
  }

  /** Make room for a new client: close the one idle longest, if any is idle; false when all are busy. */
  private evictIdle(): boolean {
    let oldest: [Socket, ControlConnection] | undefined;
    for (const entry of this.sockets) {
      if (entry[1].busy) continue;
      if (!oldest || entry[1].lastActivity < oldest[1].lastActivity) oldest = entry;
    }
    if (!oldest) return false;
    this.sockets.delete(oldest[0]);
    oldest[0].destroy();
    return true;
  }

  private accept(socket: Socket): void {
    if (this.sockets.size >= MAX_CONNECTIONS && !this.evictIdle()) {
      this.log.warn({ limit: MAX_CONNECTIONS }, "RPC connection table full of busy clients; refused");
      socket.destroy();
      return;
    }
    const state: ControlConnection = { lastActivity: Date.now(), busy: false };
    this.sockets.set(socket, state);
    const framer = new JsonStreamFramer();
    const queue: string[] = [];
    let cutOff = false;
    const conn = this.log.child({ conn: ++this.connectionCount });
    socket.setTimeout(this.idleTimeoutMs, () => {
      if (state.busy) return; // a long method call is not idleness; the timer re-arms on its own
      conn.debug("RPC client idle; closing");
      socket.destroy();
    });

    const drainQueue = async (): Promise<void> => {
      if (state.busy) return;
      state.busy = true;
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
      state.busy = false;
      state.lastActivity = Date.now();
    };

    socket.on("data", (chunk: Buffer) => {
      state.lastActivity = Date.now();
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
