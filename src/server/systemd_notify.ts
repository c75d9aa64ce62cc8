/**
 * The service manager's readiness protocol (sd_notify(3)): when systemd starts `usertgt serve` from a
 * `Type=notify` unit it sets NOTIFY_SOCKET, and the server reports READY=1 once every portal listens,
 * RELOADING=1/READY=1 around a reload and STOPPING=1 when it begins to shut down. The datagram is
 * sent by native/sd_notify.c (Node has no AF_UNIX datagram sockets).
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

interface SdNotifyAddon {
  notify(socketPath: string, state: string): number;
}

/** dist/src/server/ → native/build/Release/usertgt_sd_notify.node */
const ADDON = fileURLToPath(new URL("../../../native/build/Release/usertgt_sd_notify.node", import.meta.url));

function loadAddon(): SdNotifyAddon | undefined {
  try {
    const mod = createRequire(import.meta.url)(ADDON) as Partial<SdNotifyAddon> | undefined;
    return typeof mod?.notify === "function" ? (mod as SdNotifyAddon) : undefined;
  } catch {
    return undefined;
  }
}

export class SystemdNotifier {
  private constructor(
    private readonly socketPath: string,
    private readonly addon: SdNotifyAddon,
  ) {}

  /**
   * The notifier for $NOTIFY_SOCKET, or undefined when the server was not started by a service manager
   * that asked for notifications. NOTIFY_SOCKET is taken out of the environment (sd_notify's
   * unset_environment) so that helper programs the server runs do not report for it.
   * Throws when the socket is set but the native helper is missing: a Type=notify unit would otherwise
   * wait for a READY=1 that never comes and kill the server at its start timeout.
   */
  static fromEnvironment(env: NodeJS.ProcessEnv = process.env): SystemdNotifier | undefined {
    const socketPath = env.NOTIFY_SOCKET;
    if (socketPath === undefined || socketPath === "") return undefined;
    const addon = loadAddon();
    if (!addon)
      throw new Error(
        `NOTIFY_SOCKET is set (${socketPath}) but the native helper ${ADDON} is not built ` +
          "(rebuild it with `node native/build.mjs`, or run the unit as Type=simple)",
      );
    delete env.NOTIFY_SOCKET;
    return new SystemdNotifier(socketPath, addon);
  }

  /** Send one state message (lines KEY=VALUE); an error names the socket and the errno. */
  send(state: string): void {
    const errno = this.addon.notify(this.socketPath, state);
    if (errno !== 0) throw new Error(`sd_notify to ${this.socketPath}: errno ${errno}`);
  }

  ready(status: string): void {
    this.send(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
  }

  /** systemd.service(5) Type=notify-reload: RELOADING=1 carries the monotonic time in µs. */
  reloading(): void {
    const usec = process.hrtime.bigint() / 1000n;
    this.send(`RELOADING=1\nMONOTONIC_USEC=${usec}\nSTATUS=reloading`);
  }

  stopping(): void {
    this.send("STOPPING=1\nSTATUS=stopping: ending sessions, flushing block devices");
  }

  status(text: string): void {
    this.send(`STATUS=${text}`);
  }
}
