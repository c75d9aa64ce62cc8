/**
 * The read-only DRBD commands monitoring and people use, from the `drbd_snapshot` RPC:
 *
 *   usertgt drbdadm status [RES] --verbose --statistics   drbd-utils 9's status layout (drbd9_format.ts)
 *   usertgt drbdadm cstate|dstate|role RES                DRBD 8.4 drbdadm: Connected, UpToDate/UpToDate, Primary/Secondary
 *   usertgt drbdadm wait-sync RES                         wait for the resync to end: a progress bar with
 *                                                         speed and ETA on a terminal, plain lines otherwise
 *   usertgt drbdsetup events2 [RES|all] [--now] [--statistics]   drbdsetup's event stream
 *
 * Exit codes as the rest of the CLI: 0 success, 1 failed (no server, no such resource, wait-sync
 * ended without a sync), 2 bad usage.
 */
import { SingleBar } from "cli-progress";
import { events2Changes, events2Exists, renderDrbd9Status } from "../drbd/drbd9_format.js";
import type { DrbdSnapshot } from "../drbd/resource_snapshot.js";
import { RpcClient } from "../rpc/client.js";
import { EXIT_RPC_FAILED, EXIT_RPC_USAGE } from "./rpc_command.js";
import { clientSocketPath } from "./socket_path.js";

export interface DrbdMonitorOptions {
  readonly socket?: string;
  readonly verbose?: boolean;
  readonly statistics?: boolean;
  readonly now?: boolean;
  /** wait-sync: give up after this many seconds (default: wait as long as the resync runs). */
  readonly waitTimeout?: string;
  /** Poll interval of events2 and wait-sync, in seconds. */
  readonly interval?: string;
}

export const DRBDADM_MONITOR_COMMANDS = ["cstate", "dstate", "role", "wait-sync"] as const;

class UsageError extends Error {}

function fail(prefix: string, msg: string, code: number): number {
  process.stderr.write(`${prefix}: ${msg}\n`);
  return code;
}

async function snapshots(client: RpcClient, resource: string | undefined): Promise<DrbdSnapshot[]> {
  const r = (await client.call("drbd_snapshot", resource === undefined ? {} : { resource })) as unknown as {
    resources: DrbdSnapshot[];
  };
  return r.resources;
}

function seconds(text: string | undefined, what: string, dflt: number): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0)
    throw new UsageError(`${what} ${text}: expected a positive number of seconds`);
  return n;
}

async function withClient(
  prefix: string,
  opts: DrbdMonitorOptions,
  fn: (c: RpcClient) => Promise<number>,
): Promise<number> {
  const path = clientSocketPath(opts.socket);
  let client: RpcClient;
  try {
    client = await RpcClient.connect(path, 10_000);
  } catch (err) {
    return fail(
      prefix,
      `${(err as Error).message} (is \`usertgt serve --drbd-config FILE --rpc-socket ${path}\` running?)`,
      EXIT_RPC_FAILED,
    );
  }
  try {
    return await fn(client);
  } catch (err) {
    if (err instanceof UsageError) return fail(prefix, err.message, EXIT_RPC_USAGE);
    return fail(prefix, (err as Error).message, EXIT_RPC_FAILED);
  } finally {
    client.close();
  }
}

/** drbdadm status --verbose/--statistics, cstate, dstate, role, wait-sync. */
export async function runDrbdadmMonitor(
  command: string,
  resource: string | undefined,
  opts: DrbdMonitorOptions,
): Promise<number> {
  const prefix = "usertgt drbdadm";
  if (command !== "status" && resource === undefined)
    return fail(prefix, `${command} needs a resource name`, EXIT_RPC_USAGE);
  let waitTimeout: number;
  let interval: number;
  try {
    waitTimeout = seconds(opts.waitTimeout, "--wait-timeout", Infinity);
    interval = seconds(opts.interval, "--interval", 1);
  } catch (err) {
    return fail(prefix, (err as Error).message, EXIT_RPC_USAGE);
  }
  return withClient(prefix, opts, async (client) => {
    if (command === "wait-sync") return waitSync(client, resource as string, waitTimeout, interval);
    const snaps = await snapshots(client, resource);
    if (command === "status") {
      process.stdout.write(snaps.map((s) => renderDrbd9Status(s, opts)).join("\n"));
      return 0;
    }
    const s = snaps[0];
    const line =
      command === "cstate"
        ? s.cstate
        : command === "dstate"
          ? `${s.disk}/${s.peerDisk}`
          : `${s.role}/${s.hasPeer ? s.peerRole : "Unknown"}`;
    process.stdout.write(`${line}\n`);
    return 0;
  });
}

function kib(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} GiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} MiB`;
  return `${n} KiB`;
}

function clock(sec: number | undefined): string {
  if (sec === undefined || !Number.isFinite(sec)) return "--:--";
  const s = Math.ceil(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (x: number) => String(x).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`;
}

const SYNCING =
  /^(SyncSource|SyncTarget|PausedSyncS|PausedSyncT|WFBitMapS|WFBitMapT|WFSyncUUID|StartingSyncS|StartingSyncT)$/;

/**
 * Wait until the resource is connected with nothing out of sync (drbdsetup wait-sync). While a resync
 * runs: a bar with percent, speed and ETA on stderr when it is a terminal, else a line every 10 s
 * (logs and CI). Returns 1 when the connection is StandAlone (nothing will sync) or the wait times out.
 */
async function waitSync(
  client: RpcClient,
  resource: string,
  timeoutS: number,
  intervalS: number,
): Promise<number> {
  const tty = process.stderr.isTTY === true;
  const started = Date.now();
  let bar: SingleBar | undefined;
  let lastLine = 0;
  try {
    for (;;) {
      const [s] = await snapshots(client, resource);
      const syncing = SYNCING.test(s.cstate);
      const inSync =
        !syncing &&
        s.cstate === "Connected" &&
        s.outOfSyncKiB === 0 &&
        s.disk === "UpToDate" &&
        s.peerDisk === "UpToDate";
      if (inSync) {
        bar?.update(100, { speed: "done", etaText: "00:00", left: "0 KiB" });
        bar?.stop();
        bar = undefined;
        process.stderr.write(`${resource}: in sync (${s.disk}/${s.peerDisk})\n`);
        return 0;
      }
      if (s.disk === "Diskless") {
        bar?.stop();
        bar = undefined;
        process.stderr.write(`usertgt drbdadm: ${resource}: no disk attached, nothing to sync\n`);
        return EXIT_RPC_FAILED;
      }
      if (s.connection === "StandAlone") {
        bar?.stop();
        bar = undefined;
        process.stderr.write(`usertgt drbdadm: ${resource}: StandAlone, no resync to wait for\n`);
        return EXIT_RPC_FAILED;
      }
      const done = s.done ?? 0;
      const speed = `${(s.resyncBytesPerSecond / (1024 * 1024)).toFixed(1)} MiB/s`;
      if (tty && syncing) {
        bar ??= new SingleBar({
          // {etaText}, not {eta}: cli-progress computes its own {eta} from the update rate.
          format: `${resource} ${s.cstate} [{bar}] {percentage}% | {left} left | {speed} | ETA {etaText}`,
          stream: process.stderr,
          hideCursor: true,
        });
        if (!bar.isActive)
          bar.start(100, done, { speed, etaText: clock(s.resyncEtaSeconds), left: kib(s.outOfSyncKiB) });
        bar.update(done, { speed, etaText: clock(s.resyncEtaSeconds), left: kib(s.outOfSyncKiB) });
      } else if (Date.now() - lastLine >= 10_000) {
        lastLine = Date.now();
        process.stderr.write(
          syncing
            ? `${resource}: ${s.cstate} ${done.toFixed(1)}% done, ${kib(s.outOfSyncKiB)} left, ${speed}, ETA ${clock(s.resyncEtaSeconds)}\n`
            : `${resource}: ${s.cstate} ${s.disk}/${s.peerDisk}, ${kib(s.outOfSyncKiB)} out of sync, waiting\n`,
        );
      }
      if ((Date.now() - started) / 1000 > timeoutS) {
        bar?.stop();
        bar = undefined;
        process.stderr.write(`usertgt drbdadm: ${resource}: still ${s.cstate} after ${timeoutS} s\n`);
        return EXIT_RPC_FAILED;
      }
      await new Promise((r) => setTimeout(r, intervalS * 1000));
    }
  } finally {
    bar?.stop();
  }
}

/** drbdsetup events2 [RES|all] [--now] [--statistics]: runs until killed (or once with --now). */
export async function runEvents2(resource: string | undefined, opts: DrbdMonitorOptions): Promise<number> {
  const prefix = "usertgt drbdsetup";
  let interval: number;
  try {
    interval = seconds(opts.interval, "--interval", 0.5);
  } catch (err) {
    return fail(prefix, (err as Error).message, EXIT_RPC_USAGE);
  }
  const only = resource === "all" ? undefined : resource;
  return withClient(prefix, opts, async (client) => {
    let prev = await snapshots(client, only);
    for (const line of events2Exists(prev, opts)) process.stdout.write(`${line}\n`);
    if (opts.now) return 0;
    for (;;) {
      await new Promise((r) => setTimeout(r, interval * 1000));
      const next = await snapshots(client, only);
      const before = new Map(prev.map((s) => [s.name, s]));
      const out: string[] = [];
      for (const s of next) {
        const p = before.get(s.name);
        if (p) out.push(...events2Changes(p, s, opts));
      }
      if (out.length > 0) process.stdout.write(out.map((l) => `${l}\n`).join(""));
      prev = next;
    }
  });
}
