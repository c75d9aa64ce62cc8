/**
 * Mount the device tree with FUSE, speaking the /dev/fuse protocol directly (docs/devtree.md says
 * why not libfuse): open /dev/fuse, let mount(8) attach that descriptor to the mount point
 * (`-o fd=3,...`, the descriptor handed to the child as its fd 3), then serve requests on it.
 * `-i` keeps mount(8) from calling /sbin/mount.fuse, which would try to run a file system program.
 *
 * When FUSE is unavailable (no /dev/fuse, not root, mount refused) the caller gets `undefined` and a
 * warning is logged: the server runs on without the host view.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, readFile, readdir, stat, writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { DeviceTree } from "../devtree/device_tree.js";
import { log as rootLog, type Logger } from "../util/log.js";
import { DevtreeFs } from "./devtree_fs.js";
import { FuseSession } from "./fuse_session.js";

export const DEFAULT_MOUNT_POINT = "/UMCfuse";

export interface FuseMountOptions {
  /**
   * Largest write (and read) request in bytes, default 1 MiB. Large requests are what make
   * sequential throughput: with 4 KiB requests (libfuse2's default) dd reached 69 MB/s.
   */
  readonly maxWrite?: number;
  /** Requests served at once, default 32. Memory: slots × (maxWrite + 4 KiB), shared. */
  readonly slots?: number;
  readonly logger?: Logger;
}

/** Run a command with argv (no shell); resolves with its exit code and stderr. */
function run(cmd: string, args: string[], fd?: number): Promise<{ code: number; stderr: string }> {
  return new Promise((done) => {
    const stdio: ("ignore" | "pipe" | number)[] = ["ignore", "ignore", "pipe"];
    if (fd !== undefined) stdio.push(fd);
    const child = spawn(cmd, args, { stdio });
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.on("error", (err) => done({ code: -1, stderr: err.message }));
    child.on("close", (code) => done({ code: code ?? -1, stderr: stderr.trim() }));
  });
}

export class FuseMount {
  private unmounting: Promise<void> | undefined;

  constructor(
    readonly mountPoint: string,
    private readonly fd: number,
    readonly session: FuseSession,
    readonly fs: DevtreeFs,
    private readonly log: Logger,
  ) {
    void session.done.then((reason) => {
      if (this.unmounting) return;
      // Unmounted from outside (umount on the host) or the connection was aborted: nothing will
      // send RELEASE any more, so drop this mount's claims now and free the descriptor.
      this.log.warn({ reason }, "FUSE session ended without an unmount from this server");
      this.unmounting = this.release().then(async () => {
        // An aborted connection leaves a dead mount ("not connected") behind: detach it.
        if ((await connectionMinor(this.mountPoint)) !== undefined)
          await run("umount", ["-l", this.mountPoint]);
      });
    });
  }

  /** True once the mount is gone (unmounted by us or from outside). */
  get ended(): boolean {
    return this.unmounting !== undefined;
  }

  /**
   * Unmount and stop serving. A plain umount first; if the host still uses the mount (a loop
   * device, an open file) a lazy umount detaches it so shutdown is never stuck. Safe to call twice.
   */
  unmount(): Promise<void> {
    this.unmounting ??= this.doUnmount();
    return this.unmounting;
  }

  private async doUnmount(): Promise<void> {
    let r = await run("umount", [this.mountPoint]);
    if (r.code !== 0) {
      this.log.warn({ stderr: r.stderr }, "FUSE umount failed; detaching lazily");
      r = await run("umount", ["-l", this.mountPoint]);
      if (r.code !== 0) this.log.error({ stderr: r.stderr }, "FUSE lazy umount failed");
    }
    await this.release();
    this.log.info("FUSE unmounted");
  }

  private async release(): Promise<void> {
    if (!(await this.session.close())) await this.abort();
    this.fs.dispose();
    closeSync(this.fd);
  }

  /**
   * Abort the FUSE connection through fusectl (`/sys/fs/fuse/connections/<minor>/abort`): every
   * request waiting on this server fails with ENOTCONN. The last resort when the reader does not stop.
   */
  async abort(): Promise<void> {
    const conns = "/sys/fs/fuse/connections";
    try {
      const minor = await connectionMinor(this.mountPoint);
      if (minor === undefined) return;
      if ((await readdir(conns)).length === 0) await run("mount", ["-t", "fusectl", "none", conns]);
      await writeFile(`${conns}/${minor}/abort`, "1");
      this.log.warn({ connection: minor }, "FUSE connection aborted");
    } catch (err) {
      this.log.error({ err: (err as Error).message }, "FUSE connection abort failed");
    }
  }
}

/**
 * Mount `tree` at `mountPoint` (created if missing). Returns undefined, with a warning, when FUSE
 * cannot be used here.
 */
export async function mountDeviceTree(
  tree: DeviceTree,
  mountPoint: string = DEFAULT_MOUNT_POINT,
  opts: FuseMountOptions = {},
): Promise<FuseMount | undefined> {
  const mnt = resolve(mountPoint);
  const log = (opts.logger ?? rootLog).child({ module: "fuse", mountPoint: mnt });
  const maxWrite = opts.maxWrite ?? 1024 * 1024;
  if (maxWrite < 4096 || maxWrite % 4096 !== 0 || maxWrite > 1024 * 1024) {
    throw new Error(`FUSE maxWrite ${maxWrite} must be a multiple of 4096 from 4096 to 1 MiB`);
  }
  const slots = opts.slots ?? 32;

  let fd: number;
  try {
    fd = openSync("/dev/fuse", "r+");
  } catch (err) {
    log.warn(
      { err: (err as Error).message },
      "FUSE unavailable (cannot open /dev/fuse); device tree not mounted",
    );
    return undefined;
  }
  try {
    await prepareMountPoint(mnt, log);
  } catch (err) {
    closeSync(fd);
    log.warn({ err: (err as Error).message }, "FUSE mount point unusable; device tree not mounted");
    return undefined;
  }
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const options = [
    "fd=3",
    "rootmode=40000",
    `user_id=${uid}`,
    `group_id=${gid}`,
    `max_read=${maxWrite}`,
    "allow_other",
    "default_permissions",
    "subtype=usertgt",
  ].join(",");
  const fs = new DevtreeFs(tree, log, { maxWrite, owner: `FUSE mount ${mnt}` });
  // A request is at most the in-header, a write-in and max_write bytes; a read reply at most
  // max_read after the out-header. One page of room covers both.
  const session = new FuseSession(fd, (req) => fs.handle(req), log, {
    slotSize: maxWrite + 4096,
    slotCount: slots,
  });
  await session.ready;
  const r = await run("mount", ["-i", "-t", "fuse", "-o", options, "usertgt", mnt], fd);
  if (r.code !== 0) {
    session.start(false);
    await session.close();
    fs.dispose();
    closeSync(fd);
    log.warn({ stderr: r.stderr, code: r.code }, "FUSE mount failed; device tree not mounted");
    return undefined;
  }
  session.start(true);
  log.info({ maxWrite, slots }, "device tree mounted");
  return new FuseMount(mnt, fd, session, fs, log);
}

/** The FUSE connection number of the mount at `mnt` (the minor of its device), from mountinfo. */
async function connectionMinor(mnt: string): Promise<number | undefined> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  for (const line of info.split("\n")) {
    const f = line.split(" ");
    // mountinfo: id parent major:minor root mountpoint ... - fstype source options
    if (f[4] === mnt && line.includes(" - fuse")) return Number(f[2].split(":")[1]);
  }
  return undefined;
}

/** Create the mount point; clear a dead FUSE mount a crashed run left there ("not connected"). */
async function prepareMountPoint(mnt: string, log: Logger): Promise<void> {
  try {
    const st = await stat(mnt);
    if (!st.isDirectory()) throw new Error(`${mnt} is not a directory`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOTCONN") {
      log.warn("stale FUSE mount found; detaching it");
      await run("umount", ["-l", mnt]);
    } else if (code !== "ENOENT") {
      throw err;
    }
    await mkdir(mnt, { recursive: true });
  }
}
