/**
 * The volumes of one DRBD resource (drbd.conf(5) `volume N { device; disk; meta-disk; }`): each is a
 * DrbdResource of its own — its minor, backing disk, metadata, bitmap, activity log, UUIDs and disk state —
 * and the first one stands for the resource: drbdadm's resource-wide commands (up, down, attach, primary,
 * ...) run on every volume, `RES/VOL` names one volume (drbdadm attach r0/1), and the volumes replicate over
 * one connection (volume_connection.ts), as a kernel resource's devices share one drbd_connection.
 */
import type { DrbdConnection } from "./connection.js";
import type { DrbdDevice } from "./device.js";
import type { DrbdResourceConnection } from "./volume_connection.js";

/**
 * What this file needs of a volume (a DrbdResource). Named here rather than imported, because resource.ts
 * builds on this file.
 */
export interface Volume {
  readonly volumeSet: VolumeSet<Volume>;
  readonly volumes: readonly Volume[];
  readonly opts: { readonly name: string; readonly peer?: unknown; readonly volume?: number };
  readonly device: DrbdDevice | undefined;
  readonly connection: DrbdConnection | undefined;
  up(): Promise<void>;
}

export class VolumeSet<V extends { readonly volumeSet: VolumeSet<V> }> {
  private others: V[] = [];
  /** For a volume after the first: the first, which stands for the resource. */
  private head: V | undefined;
  /** The head is running a command on each volume, itself included: its own part is that volume's alone. */
  private fanning = false;
  /** The resource's connection, on the head, once connected (a resource of several volumes). */
  connection: DrbdResourceConnection | undefined;

  constructor(private readonly self: V) {}

  /** The volumes after the first (fromConfig, once). */
  add(others: V[]): void {
    this.others = others;
    for (const o of others) o.volumeSet.head = this.self;
  }

  /** Every volume, the first one first. */
  get all(): readonly V[] {
    return this.head ? this.head.volumeSet.all : [this.self, ...this.others];
  }

  /** The volume that stands for the resource (the first). */
  get first(): V {
    return this.head ?? this.self;
  }

  /** The resource has more than one volume. */
  get several(): boolean {
    return this.all.length > 1;
  }

  /** A resource-wide command on the head: it runs on each volume instead (eachVolume). */
  get fansOut(): boolean {
    return this.others.length > 0 && !this.fanning;
  }

  /** Runs `fn` (a command addressed to this volume as RES/VOL) on this volume alone, the head included. */
  async alone<T>(fn: () => Promise<T>): Promise<T> {
    const was = this.fanning;
    this.fanning = true;
    try {
      return await fn();
    } finally {
      this.fanning = was;
    }
  }

  /** Runs `fn` on every volume in order (the head's part as a volume of its own); the first error stops. */
  async eachVolume(fn: (v: V) => Promise<void> | void): Promise<void> {
    this.fanning = true;
    try {
      await fn(this.self);
    } finally {
      this.fanning = false;
    }
    for (const v of this.others) await fn(v);
  }
}

/**
 * drbdadm adjust of a resource of several volumes: only bringing it up when it is down (a resource new in
 * the file, or one `drbdadm down` took down) — comparing and changing the running volumes one by one is not
 * done; the error says what to do instead.
 */
export async function adjustVolumes(r: Volume, nextVolumes: number): Promise<string[]> {
  const down = r.volumes.every((v) => !v.device || v.device.disk === "Diskless");
  if (down && nextVolumes === r.volumes.length) {
    await r.up();
    return r.opts.peer ? ["attach", "connect"] : ["attach"];
  }
  throw new Error(
    `resource ${r.opts.name}: adjust of a resource of several volumes (${r.volumes.length} running, ${nextVolumes} in the file) is only done when it is down; run drbdadm down ${r.opts.name}, then up`,
  );
}

/**
 * `drbdadm status` of a resource of several volumes, as drbdsetup status prints one (DRBD 9 layout): the
 * role once, each volume's disk, the connection once, each volume's replication state.
 *
 *     r0 role:Primary
 *       volume:0 disk:UpToDate
 *       volume:1 disk:UpToDate
 *       peer role:Secondary
 *         volume:0 replication:Established peer-disk:UpToDate
 *         volume:1 replication:SyncSource peer-disk:Inconsistent done:42.30
 */
export function volumesStatus(r: Volume): string {
  const vols = r.volumes;
  const role = vols.some((v) => v.device?.role === "Primary") ? "Primary" : "Secondary";
  const suspended = vols.map((v) => v.device?.ioSuspended).find((s) => s);
  const lines = [`${r.opts.name} role:${role}${suspended ? ` suspended:${suspended}` : ""}`];
  for (const v of vols)
    lines.push(`  volume:${v.opts.volume ?? 0} disk:${v.device ? v.device.disk : "Diskless"}`);
  if (r.opts.peer) {
    const conns = vols.map((v) => v.connection);
    const c0 = conns[0];
    if (c0?.replicating === true) {
      lines.push(`  peer role:${c0.peerRole}`);
      vols.forEach((v, i) => {
        const c = conns[i];
        const state = c?.state ?? "StandAlone";
        const repl = state === "Connected" ? "Established" : state;
        const done = c?.resyncDone;
        lines.push(
          `    volume:${v.opts.volume ?? 0} replication:${repl} peer-disk:${c?.peerDisk ?? "DUnknown"}${done !== undefined ? ` done:${done.toFixed(2)}` : ""}`,
        );
      });
    } else {
      const state = c0?.state ?? "StandAlone";
      const conn = state === "WFConnection" || state === "WFReportParams" ? "Connecting" : state;
      lines.push(`  peer connection:${conn}`);
    }
  }
  return lines.join("\n") + "\n";
}
