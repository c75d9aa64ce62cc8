/**
 * End-to-end harness: write a config into a fresh temp dir, run the real CLI
 * (`node dist/src/cli/main.js serve -c FILE`) on ports from 3350-3399, wait for its
 * "usertgt: listening on" / "usertgt: ready" lines, and stop it with SIGTERM (a clean stop exits 0).
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** dist/test/e2e/harness.js → dist/src/cli/main.js */
export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

const PORT_FIRST = 3350;
const PORT_LAST = 3399;

export async function makeTempDir(label: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `usertgt-${label}-`));
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ port, host: "127.0.0.1", exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** `count` ports of 3350-3399 that are free now, starting at a random place (parallel runs collide less). */
export async function pickPorts(
  count: number,
  [first, last]: readonly [number, number] = [PORT_FIRST, PORT_LAST],
): Promise<number[]> {
  const span = last - first + 1;
  const start = Math.floor(Math.random() * span);
  const out: number[] = [];
  for (let i = 0; i < span && out.length < count; i++) {
    const port = first + ((start + i) % span);
    if (await portFree(port)) out.push(port);
  }
  if (out.length < count) throw new Error(`harness: fewer than ${count} free ports in ${first}-${last}`);
  return out;
}

export interface RunningServer {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly configPath: string;
  readonly ports: readonly number[];
  /** "host:port" of each bound portal, as the server printed them. */
  readonly listening: readonly string[];
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM and wait; resolves to the exit code (asserting nothing). */
  stop(): Promise<number | null>;
}

export interface StartOptions {
  /** Existing temp dir to write into (kept); otherwise a fresh one is made (the caller removes it via cleanup()). */
  readonly dir?: string;
  /** Extra files to write next to the config: name → content (e.g. an AuthFile). */
  readonly files?: Record<string, string>;
  readonly args?: readonly string[];
  readonly portCount?: number;
  readonly readyTimeoutMs?: number;
  /** Ports to pick from (inclusive); default 3350-3399. */
  readonly portRange?: readonly [number, number];
}

/**
 * Start the server on `config(ports, dir)`. Retries with other ports when a port was taken between
 * the probe and the bind (another test suite on the machine).
 */
export async function startServer(
  config: (ports: number[], dir: string) => string,
  opts: StartOptions = {},
): Promise<RunningServer> {
  const dir = opts.dir ?? (await makeTempDir("e2e"));
  for (let attempt = 0; ; attempt++) {
    const ports = await pickPorts(opts.portCount ?? 1, opts.portRange);
    try {
      return await startOnce(config(ports, dir), dir, ports, opts);
    } catch (err) {
      if (attempt < 3 && /EADDRINUSE/.test((err as Error).message)) continue;
      throw err;
    }
  }
}

async function startOnce(
  text: string,
  dir: string,
  ports: number[],
  opts: StartOptions,
): Promise<RunningServer> {
  const configPath = join(dir, "usertgt.conf");
  await writeFile(configPath, text);
  for (const [name, content] of Object.entries(opts.files ?? {})) await writeFile(join(dir, name), content);
  const child = spawn(
    process.execPath,
    [CLI, "serve", "-c", configPath, "--log-level", "warn", ...(opts.args ?? [])],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let err = "";
  const listening: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(`harness: server not ready after ${opts.readyTimeoutMs ?? 20000} ms; stderr:\n${err}`),
      );
    }, opts.readyTimeoutMs ?? 20000);
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      err += chunk;
      for (const m of chunk.matchAll(/^usertgt: listening on (\S+)$/gm)) listening.push(m[1]);
      if (/^usertgt: ready$/m.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`harness: server exited with ${code} before it was ready; stderr:\n${err}`));
    });
  });
  return {
    child,
    dir,
    configPath,
    ports,
    listening,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Stop with SIGTERM and assert the clean-shutdown contract: exit code 0 and the "stopped" line. */
export async function stopCleanly(server: RunningServer): Promise<void> {
  const code = await server.stop();
  assert.equal(code, 0, `server exit code after SIGTERM; stderr:\n${server.stderr()}`);
  assert.match(server.stderr(), /^usertgt: stopped$/m);
}

export async function cleanup(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a program to completion (libiscsi tools, the CLI) with a time limit. */
export function run(
  cmd: string,
  args: readonly string[],
  timeoutMs = 60000,
  env?: NodeJS.ProcessEnv,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Run the CLI itself (e.g. `serve` with a bad config) to completion. */
export function runCli(args: readonly string[], timeoutMs = 20000): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], timeoutMs);
}
