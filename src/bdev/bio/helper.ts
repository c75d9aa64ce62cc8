/**
 * The optional helper of a `[BIO]` line, run before the device is opened (the reference config's
 * `drbdadm_up_primary spdk /UMCfuse/dev/ram_b` brings a DRBD resource up as primary so its node
 * appears in the tree). A helper is either registered in-process by a module (DRBD registers its
 * own) or an executable, run with its argv and no shell.
 */
import { spawn } from "node:child_process";

export type BioHelperFn = (args: readonly string[]) => Promise<void>;

const STDERR_LIMIT = 4096;

export interface RunHelperOptions {
  /** In-process helpers by name, tried before PATH. */
  readonly helpers?: ReadonlyMap<string, BioHelperFn>;
  /** Kill the helper after this long (default 60 s). */
  readonly timeoutMs?: number;
}

/** Run `argv[0]` with `argv[1..]`; rejects with its exit status and stderr when it fails. */
export async function runBioHelper(
  where: string,
  argv: readonly string[],
  opts: RunHelperOptions = {},
): Promise<void> {
  if (argv.length === 0) return;
  const [cmd, ...args] = argv;
  const shown = argv.join(" ");
  const builtin = opts.helpers?.get(cmd);
  if (builtin) {
    try {
      await builtin(args);
    } catch (err) {
      throw new Error(`${where}: helper "${shown}" failed: ${(err as Error).message}`, { cause: err });
    }
    return;
  }
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"], shell: false });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (s: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += s.slice(0, STDERR_LIMIT - stderr.length);
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 60_000);
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = err.code === "ENOENT" ? "not found (not on PATH and not a registered helper)" : err.message;
      reject(new Error(`${where}: helper "${cmd}" ${why}`, { cause: err }));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      const status = signal ? `was killed by ${signal}` : `exited with status ${code}`;
      const text = stderr.trim();
      reject(new Error(`${where}: helper "${shown}" ${status}${text ? `: ${text}` : ""}`));
    });
  });
}
