import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, lstat, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pino } from "pino";
import { RpcClient } from "./client.js";
import { RpcError, RpcErrorCode, type JsonValue } from "./jsonrpc.js";
import { MethodRegistry } from "./registry.js";
import { RpcServer } from "./server.js";

const quiet = pino({ level: "silent" });
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "usertgt-rpc-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function testRegistry(): MethodRegistry {
  const r = new MethodRegistry();
  r.register("echo", {
    description: "returns its params",
    params: { text: { type: "string", required: true }, times: { type: "integer" } },
    handler: (p) => ({ text: p.text ?? null, times: p.times ?? 1 }),
  });
  r.register("fail", {
    description: "throws a plain error",
    handler: () => {
      throw new Error("disk on fire");
    },
  });
  r.register("slow", {
    description: "answers after a delay",
    params: { ms: { type: "integer", required: true } },
    handler: async (p) => {
      await new Promise((res) => setTimeout(res, p.ms as number));
      return p.ms as number;
    },
  });
  r.register("unserializable", {
    description: "returns what JSON cannot carry (a handler bug)",
    handler: () => ({ n: 1n }) as unknown as JsonValue,
  });
  r.register("nothing", {
    description: "returns undefined (a handler bug)",
    handler: () => undefined as unknown as JsonValue,
  });
  return r;
}

/** Send raw bytes, collect newline-terminated responses until `count` arrive or the socket closes. */
function rawExchange(
  path: string,
  data: string | Buffer,
  count: number,
): Promise<{ lines: string[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = "";
    const lines: string[] = [];
    const finish = (closed: boolean): void => {
      s.destroy();
      resolve({ lines, closed });
    };
    s.on("data", (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (lines.length >= count) finish(false);
    });
    s.on("close", () => finish(true));
    s.on("error", (err: NodeJS.ErrnoException) =>
      err.code === "EPIPE" || err.code === "ECONNRESET" ? undefined : reject(err),
    );
    s.write(data);
  });
}

async function start(name: string): Promise<RpcServer> {
  return RpcServer.start({ path: join(dir, name), registry: testRegistry(), logger: quiet });
}

test("rpc: client calls a method and gets its result; socket file is removed on stop", async () => {
  const srv = await start("ok.sock");
  const client = await RpcClient.connect(srv.path);
  assert.deepEqual(await client.call("echo", { text: "hi", times: 3 }), { text: "hi", times: 3 });
  assert.deepEqual(await client.call("echo", { text: "again" }), { text: "again", times: 1 });
  client.close();
  await srv.stop();
  await assert.rejects(stat(srv.path), { code: "ENOENT" });
});

test("rpc: requests pipelined on one connection are answered in order", async () => {
  const srv = await start("order.sock");
  const client = await RpcClient.connect(srv.path);
  const results = await Promise.all([client.call("slow", { ms: 30 }), client.call("slow", { ms: 1 })]);
  assert.deepEqual(results, [30, 1]);
  client.close();
  await srv.stop();
});

test("rpc: error codes for unknown method, bad params, parse errors, invalid requests, handler failure", async () => {
  const srv = await start("errors.sock");
  const client = await RpcClient.connect(srv.path);
  await assert.rejects(
    client.call("nope"),
    (e: RpcError) => e.code === RpcErrorCode.MethodNotFound && /nope/.test(e.message),
  );
  await assert.rejects(
    client.call("echo", {}),
    (e: RpcError) =>
      e.code === RpcErrorCode.InvalidParams && /missing required parameter "text"/.test(e.message),
  );
  await assert.rejects(
    client.call("echo", { text: 5 }),
    (e: RpcError) =>
      e.code === RpcErrorCode.InvalidParams && /"text" must be a string, got integer/.test(e.message),
  );
  await assert.rejects(
    client.call("echo", { text: "a", extra: 1 }),
    (e: RpcError) => e.code === RpcErrorCode.InvalidParams && /unknown parameter "extra"/.test(e.message),
  );
  await assert.rejects(
    client.call("echo", { text: "a", times: 1.5 }),
    (e: RpcError) => e.code === RpcErrorCode.InvalidParams,
  );
  await assert.rejects(
    client.call("fail"),
    (e: RpcError) => e.code === RpcErrorCode.InternalError && /disk on fire/.test(e.message),
  );
  client.close();

  const { lines } = await rawExchange(
    srv.path,
    'garbage here\n{"jsonrpc":"2.0","method":"echo",,}\n{"jsonrpc":"1.0","method":"echo","id":7}\n[1,2]\n' +
      '{"jsonrpc":"2.0","method":"echo","params":[1],"id":8}\n{"jsonrpc":"2.0","method":"echo","params":{"text":"n"}}\n' +
      '{"jsonrpc":"2.0","method":"echo","params":{"text":"after"},"id":"z"}',
    6,
  );
  const msgs = lines.map((l) => JSON.parse(l) as { id: unknown; error?: { code: number }; result?: unknown });
  assert.deepEqual(
    msgs.map((m) => [m.id, m.error?.code ?? m.result]),
    [
      [null, RpcErrorCode.ParseError],
      [null, RpcErrorCode.ParseError],
      [7, RpcErrorCode.InvalidRequest],
      [null, RpcErrorCode.InvalidRequest],
      [8, RpcErrorCode.InvalidParams],
      // the notification got no answer
      ["z", { text: "after", times: 1 }],
    ],
  );
  await srv.stop();
});

test("rpc: handler bugs (a BigInt result, no result) still get well-formed answers", async () => {
  const srv = await start("bugs.sock");
  const client = await RpcClient.connect(srv.path);
  await assert.rejects(
    client.call("unserializable"),
    (e: RpcError) => e.code === RpcErrorCode.InternalError && /BigInt/.test(e.message),
  );
  assert.equal(await client.call("nothing"), null);
  client.close();
  await srv.stop();
});

test("rpc: a request over 1 MiB closes that connection; the server keeps serving others", async () => {
  const srv = await start("huge.sock");
  const huge = '{"jsonrpc":"2.0","method":"echo","params":{"text":"' + "x".repeat(1024 * 1024 + 10);
  const { lines, closed } = await rawExchange(srv.path, huge, 2);
  assert.equal(lines.length, 1);
  assert.equal(
    (JSON.parse(lines[0]!) as { error: { code: number } }).error.code,
    RpcErrorCode.InvalidRequest,
  );
  assert.equal(closed, true);
  const client = await RpcClient.connect(srv.path);
  assert.deepEqual(await client.call("echo", { text: "still here" }), { text: "still here", times: 1 });
  client.close();
  await srv.stop();
});

test("rpc: a stale socket file is replaced; a live one is refused", async () => {
  const path = join(dir, "stale.sock");
  // A server killed with SIGKILL leaves its socket file behind with nobody listening.
  const child = spawn(process.execPath, [
    "-e",
    `require("node:net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`,
  ]);
  await new Promise<void>((res) => child.stdout.once("data", () => res()));
  child.kill("SIGKILL");
  await new Promise<void>((res) => child.once("exit", () => res()));
  assert.ok((await lstat(path)).isSocket());
  const srv = await RpcServer.start({ path, registry: testRegistry(), logger: quiet });
  const client = await RpcClient.connect(path);
  assert.deepEqual(await client.call("echo", { text: "x" }), { text: "x", times: 1 });
  client.close();

  await assert.rejects(
    RpcServer.start({ path, registry: testRegistry(), logger: quiet }),
    /another server is listening on it/,
  );
  // The refused start must not have removed the live server's socket.
  const again = await RpcClient.connect(path);
  assert.deepEqual(await again.call("echo", { text: "y" }), { text: "y", times: 1 });
  again.close();
  await srv.stop();
});

test("rpc: a regular file at the socket path is left alone and reported", async () => {
  const path = join(dir, "plain-file");
  await writeFile(path, "keep me");
  await assert.rejects(
    RpcServer.start({ path, registry: testRegistry(), logger: quiet }),
    /exists and is not a socket/,
  );
  assert.equal((await stat(path)).size, 7);
});

test("rpc: registry refuses a name registered twice (also as an alias)", () => {
  const r = testRegistry();
  assert.throws(() => r.register("echo", { description: "", handler: () => null }), /already registered/);
  r.register("a", { description: "", aliases: ["b"], handler: () => 1 });
  assert.throws(() => r.register("b", { description: "", handler: () => null }), /already registered/);
  assert.deepEqual(r.names(true).slice(-2), ["a", "b"]);
  assert.equal(r.get("b")?.name, "a");
});

test("rpc: the socket is 0600 even under umask 000; with a group it is 0660 owner:group", async () => {
  const old = process.umask(0);
  try {
    const srv = await start("private.sock");
    const st = await stat(srv.path);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, process.getuid!());
    await srv.stop();
    const grouped = await RpcServer.start({
      path: join(dir, "group.sock"),
      registry: testRegistry(),
      logger: quiet,
      group: "12345",
    });
    const gst = await stat(grouped.path);
    assert.equal(gst.mode & 0o777, 0o660);
    assert.equal(gst.gid, 12345);
    await grouped.stop();
    // A file the server creates later (not the socket) still gets the process's own umask.
    assert.equal(process.umask(), 0);
  } finally {
    process.umask(old);
  }
});

test("rpc: a socket directory others can write (no sticky bit) is refused; a sticky one is accepted", async () => {
  const open = join(dir, "world-writable");
  await mkdir(open);
  await chmod(open, 0o777);
  await assert.rejects(
    RpcServer.start({ path: join(open, "x.sock"), registry: testRegistry(), logger: quiet }),
    /writable by other users/,
  );
  await chmod(open, 0o1777); // like /tmp and /var/tmp: others cannot remove our socket
  const srv = await RpcServer.start({ path: join(open, "x.sock"), registry: testRegistry(), logger: quiet });
  await srv.stop();
});

test("rpc: a malformed request ending in a newline ('{not json') is answered -32700 at once", async () => {
  const srv = await start("malformed.sock");
  const { lines, closed } = await rawExchange(
    srv.path,
    '{not json\n{"jsonrpc":"2.0","method":"echo","params":{"text":"ok"},"id":2}',
    2,
  );
  assert.equal(closed, false);
  const msgs = lines.map((l) => JSON.parse(l) as { id: unknown; error?: { code: number }; result?: unknown });
  assert.deepEqual(msgs[0], { ...msgs[0], id: null });
  assert.equal(msgs[0]!.error?.code, RpcErrorCode.ParseError);
  assert.deepEqual(msgs[1]!.result, { text: "ok", times: 1 });
  await srv.stop();
});

function openIdle(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

test("rpc: 32 idle clients do not lock out the administrator; idle clients are closed after the timeout", async () => {
  const srv = await RpcServer.start({
    path: join(dir, "idle.sock"),
    registry: testRegistry(),
    logger: quiet,
    idleTimeoutMs: 400,
  });
  const idle: Socket[] = [];
  for (let i = 0; i < 32; i++) idle.push(await openIdle(srv.path));
  const closedCount = (): number => idle.filter((s) => s.destroyed || s.readableEnded).length;
  for (const s of idle) s.on("error", () => undefined).on("close", () => s.destroy());
  const t0 = Date.now();
  const client = await RpcClient.connect(srv.path);
  assert.deepEqual(await client.call("echo", { text: "admin" }), { text: "admin", times: 1 });
  assert.ok(Date.now() - t0 < 300, "the admin got in before any idle timeout");
  client.close();
  assert.ok(closedCount() >= 1, "the longest-idle client made room");
  // Every idle client is closed once the idle timeout passes.
  const deadline = Date.now() + 3000;
  while (closedCount() < 32 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(closedCount(), 32);
  // A slow method call is not idleness.
  const slow = await RpcClient.connect(srv.path);
  assert.equal(await slow.call("slow", { ms: 700 }), 700);
  slow.close();
  await srv.stop();
});
