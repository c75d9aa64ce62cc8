/**
 * The `/proc/drbd` text of DRBD 8.4 (drbd_proc.c) for the resources of this node, published in the
 * device tree's FUSE view as `proc/drbd` so that scripts written for the kernel module (`cat /proc/drbd`,
 * `watch`, monitoring that greps `cs:` / `ds:` / `oos:`) work against usertgt:
 *
 *     version: 8.4 (api:1/proto:86-101)
 *     srcversion: usertgt
 *
 *      2: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
 *         ns:131072 nr:0 dw:131072 dr:133120 oos:917504
 *     	[==>.................] sync'ed: 12.5% (917504/1048576)K
 *
 * One line per configured minor in minor order; a resource that is not up is "cs:Unconfigured", as a
 * minor drbdadm down removed. Of the kernel's counters this node keeps ns, nr, dw, dr (KiB since attach)
 * and oos; the others (al, bm, lo, pe, ua, ap, ep, wo) are left out rather than shown as made-up zeroes.
 */
import type { DrbdResource } from "./resource.js";

/** What one minor's lines say (the input of renderProcDrbd, so the format is testable alone). */
export interface ProcDrbdEntry {
  minor: number;
  /** Undefined: the minor is not configured (resource down). */
  cs?: string;
  role?: string;
  peerRole?: string;
  disk?: string;
  peerDisk?: string;
  /** The wire protocol letter while a network configuration is active, else undefined. */
  protocol?: string;
  /** Counters in KiB or counts as the kernel prints them, in its order; oos last. */
  counters?: ReadonlyArray<readonly [string, number]>;
  oosKiB?: number;
  /** A resync or verify in progress: KiB still to go and in total. */
  progress?: { verb: "sync'ed" | "verified"; leftKiB: number; totalKiB: number };
}

export function renderProcDrbd(entries: readonly ProcDrbdEntry[]): string {
  const out = ["version: 8.4 (api:1/proto:86-101)", "srcversion: usertgt", ""];
  for (const e of [...entries].sort((a, b) => a.minor - b.minor)) {
    const minor = String(e.minor).padStart(2);
    if (e.cs === undefined) {
      out.push(`${minor}: cs:Unconfigured`);
      continue;
    }
    out.push(
      `${minor}: cs:${e.cs} ro:${e.role ?? "Secondary"}/${e.peerRole ?? "Unknown"} ` +
        `ds:${e.disk ?? "Diskless"}/${e.peerDisk ?? "DUnknown"} ${e.protocol ?? " "} r-----`,
    );
    const fields = [...(e.counters ?? []), ...(e.oosKiB !== undefined ? [["oos", e.oosKiB] as const] : [])];
    if (fields.length > 0) out.push(`    ${fields.map(([k, v]) => `${k}:${v}`).join(" ")}`);
    if (e.progress) out.push(progressBar(e.progress));
  }
  return out.join("\n") + "\n";
}

/** drbd_syncer_progress: a 20-character bar, per-mille done, and left/total in K (M above 1 GiB). */
function progressBar(p: NonNullable<ProcDrbdEntry["progress"]>): string {
  const total = Math.max(p.totalKiB, 1);
  const left = Math.min(Math.max(p.leftKiB, 0), total);
  const permille = Math.floor((1000 * (total - left)) / total);
  const x = Math.floor(permille / 50);
  // As the kernel draws it: x-1 "=", ">", 20-x "." (21 characters at 0%).
  const bar = "=".repeat(Math.max(x - 1, 0)) + ">" + ".".repeat(20 - x);
  const pct = `${String(Math.floor(permille / 10)).padStart(3)}.${permille % 10}%`;
  const mega = total > 0x100000;
  const unit = mega ? "M" : "K";
  const l = mega ? Math.floor(left / 1024) : left;
  const t = mega ? Math.floor(total / 1024) : total;
  return `\t[${bar}] ${p.verb}:${pct} (${l}/${t})${unit}`;
}

/** The entry of one resource from its device and connection. */
export function procEntryOf(r: DrbdResource): ProcDrbdEntry {
  const dev = r.device;
  const conn = r.connection;
  const attached = dev !== undefined && dev.disk !== "Diskless";
  const connState = conn?.state ?? "StandAlone";
  if (!attached && connState === "StandAlone") return { minor: r.opts.minor };
  const linked = conn !== undefined && connState !== "StandAlone";
  const entry: ProcDrbdEntry = {
    minor: r.opts.minor,
    cs: connState,
    role: dev?.role ?? "Secondary",
    peerRole: linked ? conn.peerRole : "Unknown",
    disk: attached ? dev.disk : "Diskless",
    peerDisk: linked ? conn.peerDisk : "DUnknown",
    ...(linked ? { protocol: r.opts.protocol ?? "C" } : {}),
    ...(attached
      ? {
          counters: [
            ["ns", kib(dev.io.netSentBytes)],
            ["nr", kib(dev.io.netReceivedBytes)],
            ["dw", kib(dev.io.diskWrittenBytes)],
            ["dr", kib(dev.io.diskReadBytes)],
          ] as const,
          oosKiB: dev.bitmap.outOfSyncKiB,
        }
      : {}),
  };
  if (attached && conn && /^(SyncSource|SyncTarget|PausedSync[ST])$/.test(connState)) {
    const totalKiB = conn.resyncStats.total * 4;
    entry.progress = { verb: "sync'ed", leftKiB: dev.bitmap.outOfSyncKiB, totalKiB };
  }
  return entry;
}

function kib(bytes: number): number {
  return Math.floor(bytes / 1024);
}
