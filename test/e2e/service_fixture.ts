/**
 * Run a `usertgt serve` as a service manager or an admin would: any executable (the installed
 * command, or node + the built CLI), any environment, on a fixed port of the operations tests
 * (3530-3559). Resolves once the server printed "usertgt: ready".
 */
import { spawn, type ChildProcess } from "node:child_process";
import { CLI } from "./harness.js";

export interface ServiceProcess {
  readonly child: ChildProcess;
  stderr(): string;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then the exit code (SIGKILL after 30 s). */
  stop(): Promise<number | null>;
}

export interface ServiceOptions {
  /** The program to run; default: node with the built CLI. */
  readonly bin?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly readyTimeoutMs?: number;
}

export async function startService(
  args: readonly string[],
  opts: ServiceOptions = {},
): Promise<ServiceProcess> {
  const [cmd, argv] = opts.bin ? [opts.bin, args] : [process.execPath, [CLI, ...args]];
  const child = spawn(cmd, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const timeoutMs = opts.readyTimeoutMs ?? 20_000;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`serve not ready in ${timeoutMs} ms; stderr:\n${err}`));
    }, timeoutMs);
    child.stderr!.on("data", () => {
      if (/^usertgt: ready$/m.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before it was ready; stderr:\n${err}`));
    });
  });
  return {
    child,
    stderr: () => err,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
