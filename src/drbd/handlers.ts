/**
 * DRBD's handlers (drbd.conf(5) `handlers { }`): shell commands run on events, as the 8.4 kernel runs them.
 * The kernel's drbd_khelper (drbd_nl.c) calls the usermode helper `drbdadm HANDLER minor-N` with a clean
 * environment (HOME=/, TERM=linux, PATH=/sbin:/usr/sbin:/bin:/usr/bin) plus DRBD_PEER_AF and
 * DRBD_PEER_ADDRESS (setup_khelper_env); drbdadm (adm_khelper) adds DRBD_RESOURCE, DRBD_PEER, DRBD_PEERS,
 * DRBD_CONF, DRBD_MINOR, DRBD_VOLUME, DRBD_LL_DISK and runs the configured command with `/bin/sh -c`. The
 * kernel reads the helper's exit status as `(status >> 8) & 0xff`: the command's exit code. An event whose
 * handler is not configured counts as exit code 0 (drbdadm returns 0 then).
 *
 * Beyond 8.4 (harmless extras a DRBD 9 handler script may read): DRBD_MY_ADDRESS, DRBD_MY_AF and
 * DRBD_BACKING_DEV, as DRBD 9's drbd_khelper sets them.
 *
 * Difference: the kernel waits for a helper without limit (a hung fence-peer freezes I/O for good); here a
 * handler is killed after `timeoutMs` (default 120 s, drbdadm's cmd-timeout-medium) and counts as failed
 * (exit code -1), as does one killed by a signal or that could not be started. Its output is logged.
 */
import { spawn } from "node:child_process";
import { isIPv6 } from "node:net";
import type { Logger } from "../util/log.js";

/** The handlers of drbd.conf(5) for 8.4 (config/model.ts has the same list for the parser). */
export type HandlerName =
  | "pri-on-incon-degr"
  | "pri-lost-after-sb"
  | "pri-lost"
  | "fence-peer"
  | "unfence-peer"
  | "local-io-error"
  | "initial-split-brain"
  | "split-brain"
  | "before-resync-target"
  | "after-resync-target"
  | "before-resync-source"
  | "out-of-sync";

/** The exit code a handler reports when it timed out, was killed by a signal or could not start. */
export const HANDLER_FAILED = -1;

/** What the handlers run by: the helper's side of drbd_khelper. */
export interface HandlerRunner {
  /** Whether a command is configured for the event. */
  configured(name: HandlerName): boolean;
  /** Runs the event's handler; resolves with its exit code (0 when none is configured). Never rejects. */
  run(name: HandlerName): Promise<number>;
}

/** Runs nothing: every event's handler counts as exit code 0 (no `handlers { }` section). */
export const NO_HANDLERS: HandlerRunner = {
  configured: () => false,
  run: () => Promise.resolve(0),
};

export interface HandlerContext {
  resource: string;
  minor: number;
  volume: number;
  /** The configuration file (DRBD_CONF). */
  conf: string;
  /** The backing disk as the .res names it (DRBD_LL_DISK, DRBD_BACKING_DEV). */
  backingDev: string;
  /** The `on` names of the peer (DRBD_PEER, DRBD_PEERS). */
  peerNames?: readonly string[];
  myAddress?: string;
  peerAddress?: string;
}

export interface HandlerOptions {
  /** A handler running longer is killed and counts as failed (default 120 s). */
  timeoutMs?: number;
  log: Logger;
}

/** Output kept per stream for the log: a handler that prints without end does not fill memory. */
const OUTPUT_LIMIT = 4096;

const addressFamily = (ip: string) => (isIPv6(ip) ? "ipv6" : "ipv4");

/** The environment drbd_khelper + drbdadm's adm_khelper give a handler. */
export function handlerEnvironment(ctx: HandlerContext): Record<string, string> {
  const env: Record<string, string> = {
    HOME: "/",
    TERM: "linux",
    PATH: "/sbin:/usr/sbin:/bin:/usr/bin",
    DRBD_RESOURCE: ctx.resource,
    DRBD_CONF: ctx.conf,
    DRBD_MINOR: String(ctx.minor),
    DRBD_VOLUME: String(ctx.volume),
    DRBD_LL_DISK: ctx.backingDev,
    DRBD_BACKING_DEV: ctx.backingDev,
    DRBD_PEER: ctx.peerNames?.[0] ?? "",
    DRBD_PEERS: (ctx.peerNames ?? []).join(" "),
  };
  if (ctx.peerAddress !== undefined) {
    env.DRBD_PEER_ADDRESS = ctx.peerAddress;
    env.DRBD_PEER_AF = addressFamily(ctx.peerAddress);
  }
  if (ctx.myAddress !== undefined) {
    env.DRBD_MY_ADDRESS = ctx.myAddress;
    env.DRBD_MY_AF = addressFamily(ctx.myAddress);
  }
  return env;
}

/** The handlers of one resource volume: the configured commands and the environment they run with. */
export class ShellHandlers implements HandlerRunner {
  private readonly env: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  constructor(
    private readonly commands: ReadonlyMap<string, string>,
    ctx: HandlerContext,
    opts: HandlerOptions,
  ) {
    this.env = handlerEnvironment(ctx);
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.log = opts.log.child({ resource: ctx.resource });
  }

  configured(name: HandlerName): boolean {
    return this.commands.has(name);
  }

  run(name: HandlerName): Promise<number> {
    const command = this.commands.get(name);
    if (command === undefined) return Promise.resolve(0);
    this.log.info({ handler: name, command }, `helper command: drbdadm ${name}`);
    return new Promise<number>((resolve) => {
      const child = spawn("/bin/sh", ["-c", command], {
        env: this.env,
        cwd: "/",
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group, so that a timeout kills what the command started too (sleep, ssh, ...).
        detached: true,
      });
      const output = { stdout: "", stderr: "" };
      const keep = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
        if (output[stream].length < OUTPUT_LIMIT)
          output[stream] += chunk.toString("utf8", 0, OUTPUT_LIMIT - output[stream].length);
      };
      child.stdout.on("data", keep("stdout"));
      child.stderr.on("data", keep("stderr"));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
        } catch {
          child.kill("SIGKILL");
        }
      }, this.timeoutMs);
      const finish = (code: number, detail: Record<string, unknown>) => {
        clearTimeout(timer);
        const fields = { handler: name, exitCode: code, ...detail, ...trimmed(output) };
        if (code === 0) this.log.info(fields, `helper command: drbdadm ${name} exit code 0`);
        else this.log.warn(fields, `helper command: drbdadm ${name} exit code ${code}`);
        resolve(code);
      };
      child.on("error", (e) => finish(HANDLER_FAILED, { err: e.message }));
      child.on("close", (code, signal) => {
        if (timedOut) finish(HANDLER_FAILED, { err: `killed after ${this.timeoutMs} ms` });
        else if (code === null) finish(HANDLER_FAILED, { err: `killed by ${signal ?? "a signal"}` });
        else finish(code, {});
      });
    });
  }
}

function trimmed(o: { stdout: string; stderr: string }): Record<string, string> {
  const out: Record<string, string> = {};
  if (o.stdout.trim() !== "") out.stdout = o.stdout.trim();
  if (o.stderr.trim() !== "") out.stderr = o.stderr.trim();
  return out;
}
