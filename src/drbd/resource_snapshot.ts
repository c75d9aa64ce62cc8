/**
 * One consistent reading of a DRBD resource's state and counters, in the units drbd-utils prints
 * (KiB, counts): the single source for `drbdadm status --verbose --statistics`, `drbdsetup events2`
 * and the metrics endpoint, so that all three always agree.
 *
 * Names follow DRBD 9's vocabulary, which drbd-utils 9 prints for 8.4 kernels as well: the 8.4
 * connection state splits into connection (StandAlone / Connecting / Connected) and replication
 * (Off / Established / SyncSource / ...), as drbdsetup's status does.
 */
import type { DrbdResource } from "./resource.js";

export interface DrbdSnapshot {
  readonly name: string;
  /** The volume number (`volume N`); the resource's first volume stands for it. */
  readonly volume: number;
  readonly minor: number;
  /** False when the resource is down (no disk attached and not connecting). */
  readonly up: boolean;
  readonly localName: string | undefined;
  readonly peerName: string | undefined;
  readonly nodeId: number;
  readonly peerNodeId: number;
  readonly hasPeer: boolean;
  readonly role: string;
  /** drbdsetup's suspended: "no", or why I/O is suspended ("user", "fencing"). */
  readonly suspended: string;
  readonly disk: string;
  /** The 8.4 connection state (/proc/drbd cs:). */
  readonly cstate: string;
  /** DRBD 9: StandAlone, Connecting, Connected. */
  readonly connection: string;
  /** DRBD 9: Off while not connected, Established while Connected, else the sync state. */
  readonly replication: string;
  readonly peerRole: string;
  readonly peerDisk: string;
  readonly sizeKiB: number;
  readonly readKiB: number;
  readonly writtenKiB: number;
  readonly sentKiB: number;
  readonly receivedKiB: number;
  readonly outOfSyncKiB: number;
  readonly alWrites: number;
  readonly pending: number;
  readonly unacked: number;
  /** Percent done of a resync or verify in progress. */
  readonly done: number | undefined;
  readonly resyncBytesPerSecond: number;
  readonly resyncEtaSeconds: number | undefined;
  /** The last resync (running or done): KiB sent as P_RS_DATA_REPLY, and found equal by csums-alg. */
  readonly resyncTransferredKiB: number;
  readonly resyncSameCsumKiB: number;
  /** A resource of several volumes: the snapshots of its volumes after the first (resource_volumes.ts). */
  readonly otherVolumes: readonly DrbdSnapshot[];
}

const SYNCING = /^(SyncSource|SyncTarget|PausedSyncS|PausedSyncT)$/;

function connectionOf(cs: string): string {
  if (cs === "StandAlone" || cs === "Disconnecting") return "StandAlone";
  if (cs === "Unconnected" || cs === "WFConnection" || cs === "WFReportParams" || cs === "Timeout")
    return "Connecting";
  if (cs === "BrokenPipe" || cs === "NetworkFailure" || cs === "ProtocolError" || cs === "TearDown")
    return "Connecting";
  return "Connected";
}

export function snapshotOf(r: DrbdResource): DrbdSnapshot {
  const [first, ...others] = r.volumes;
  // The first volume of a resource of several volumes stands for it; a volume named as RES/VOL for itself.
  if (first === r && others.length > 0)
    return { ...volumeSnapshot(r), otherVolumes: others.map(volumeSnapshot) };
  return volumeSnapshot(r);
}

function volumeSnapshot(r: DrbdResource): DrbdSnapshot {
  const dev = r.device;
  const conn = r.connection;
  const attached = dev !== undefined && dev.disk !== "Diskless";
  const cstate = conn?.state ?? "StandAlone";
  const connection = connectionOf(cstate);
  const linked = conn !== undefined && connection === "Connected";
  const outOfSyncKiB = attached ? dev.bitmap.outOfSyncKiB : 0;
  const syncing = linked && SYNCING.test(cstate);
  const rate = r.resyncProgress.sample(outOfSyncKiB * 1024, syncing);
  return {
    name: r.opts.name,
    volume: r.opts.volume ?? 0,
    minor: r.opts.minor,
    up: attached || cstate !== "StandAlone",
    localName: r.opts.localName,
    peerName: r.opts.peerName,
    nodeId: r.opts.localNodeId ?? 0,
    peerNodeId: r.opts.peerNodeId ?? 1,
    hasPeer: r.opts.peer !== undefined,
    // A cleanly detached device is Secondary; one detached by an I/O error may still be Primary.
    role: dev?.role ?? "Secondary",
    suspended: dev?.ioSuspended ?? "no",
    disk: dev ? dev.disk : "Diskless",
    cstate,
    connection,
    replication: !linked ? "Off" : cstate === "Connected" ? "Established" : cstate,
    peerRole: linked ? conn.peerRole : "Unknown",
    peerDisk: linked ? conn.peerDisk : "DUnknown",
    sizeKiB: attached ? Math.floor((dev.blockCount * dev.blockSize) / 1024) : 0,
    readKiB: attached ? Math.floor(dev.io.diskReadBytes / 1024) : 0,
    writtenKiB: attached ? Math.floor(dev.io.diskWrittenBytes / 1024) : 0,
    sentKiB: attached ? Math.floor(dev.io.netSentBytes / 1024) : 0,
    receivedKiB: attached ? Math.floor(dev.io.netReceivedBytes / 1024) : 0,
    outOfSyncKiB,
    alWrites: attached ? dev.activityLogUpdates : 0,
    pending: linked ? conn.pendingRequests : 0,
    unacked: linked ? conn.unackedRequests : 0,
    done: linked ? conn.resyncDone : undefined,
    resyncBytesPerSecond: rate.bytesPerSecond,
    resyncEtaSeconds: rate.etaSeconds,
    resyncTransferredKiB: conn ? conn.resyncStats.transferredBlocks * 4 : 0,
    resyncSameCsumKiB: conn ? conn.resyncStats.sameCsumBlocks * 4 : 0,
    otherVolumes: [],
  };
}
