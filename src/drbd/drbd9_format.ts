/**
 * The text drbd-utils 9 prints, from resource snapshots, so that scripts and monitoring written for
 * the kernel module read usertgt unchanged:
 *
 * `drbdsetup status --verbose --statistics` (drbdsetup.c, status):
 *
 *     r0 node-id:0 role:Primary suspended:no
 *         write-ordering:flush
 *       volume:0 minor:2 disk:UpToDate quorum:yes
 *           size:65404 read:1234 written:5678 al-writes:3
 *       beta node-id:1 connection:Connected role:Secondary congested:no
 *         volume:0 replication:SyncSource peer-disk:Inconsistent done:42.30 resync-suspended:no
 *             received:0 sent:27620 out-of-sync:37784 pending:0 unacked:0 dbdt1:15.98 eta:2
 *
 * `drbdsetup events2 [--now] [--statistics]` (drbdsetup.c, print_notifications): one line per object,
 * `exists` for the current state (ended by `exists -`), then `create`, `change` and `destroy` as things
 * happen; a change line names the object and only the fields that changed:
 *
 *     exists resource name:r0 role:Primary suspended:no
 *     exists connection name:r0 peer-node-id:1 conn-name:beta connection:Connected role:Secondary
 *     exists device name:r0 volume:0 minor:2 disk:UpToDate client:no quorum:yes
 *     exists peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
 *     exists -
 *     change peer-device name:r0 peer-node-id:1 conn-name:beta volume:0 replication:SyncSource peer-disk:Inconsistent
 *
 * Sizes are KiB as drbd-utils prints them. Of drbd-utils' statistics this prints those usertgt keeps
 * (size, read, written, al-writes; received, sent, out-of-sync, pending, unacked; dbdt1 in MiB/s and
 * eta in seconds while a resync runs) and leaves out the others rather than print made-up zeroes.
 * DRBD 8.4 has one volume (0) per resource here and the peer's name is its `on` section.
 */
import type { DrbdSnapshot } from "./resource_snapshot.js";

export interface Drbd9FormatOptions {
  readonly verbose?: boolean;
  readonly statistics?: boolean;
}

type Fields = [string, string | number][];

function text(fields: Fields): string {
  return fields.map(([k, v]) => `${k}:${v}`).join(" ");
}

function peerName(s: DrbdSnapshot): string {
  return s.peerName ?? "peer";
}

function resyncing(s: DrbdSnapshot): boolean {
  return s.done !== undefined && /^(SyncSource|SyncTarget|PausedSyncS|PausedSyncT)$/.test(s.replication);
}

function resyncStats(s: DrbdSnapshot): Fields {
  if (!resyncing(s)) return [];
  const out: Fields = [["dbdt1", (s.resyncBytesPerSecond / (1024 * 1024)).toFixed(2)]];
  if (s.resyncEtaSeconds !== undefined) out.push(["eta", Math.ceil(s.resyncEtaSeconds)]);
  return out;
}

function deviceStats(s: DrbdSnapshot): Fields {
  return [
    ["size", s.sizeKiB],
    ["read", s.readKiB],
    ["written", s.writtenKiB],
    ["al-writes", s.alWrites],
  ];
}

function peerDeviceStats(s: DrbdSnapshot): Fields {
  return [
    ["received", s.receivedKiB],
    ["sent", s.sentKiB],
    ["out-of-sync", s.outOfSyncKiB],
    ["pending", s.pending],
    ["unacked", s.unacked],
    ...resyncStats(s),
  ];
}

/** `drbdsetup status [--verbose] [--statistics]` of one resource. */
export function renderDrbd9Status(s: DrbdSnapshot, o: Drbd9FormatOptions = {}): string {
  const v = o.verbose === true;
  const lines: string[] = [];
  lines.push(
    // suspended: always with --verbose, else only while suspended (as drbdsetup prints it).
    `${s.name} ${text([...(v ? [["node-id", s.nodeId] as [string, number]] : []), ["role", s.role], ...(v || s.suspended !== "no" ? [["suspended", s.suspended] as [string, string]] : [])])}`,
  );
  if (o.statistics) lines.push("    write-ordering:flush");
  const vols = [s, ...(s.otherVolumes ?? [])];
  // drbdsetup names the volume without --verbose too once a resource has several.
  const named = v || vols.length > 1;
  for (const d of vols) {
    const volume: Fields = v
      ? [
          ["volume", d.volume],
          ["minor", d.minor],
          ["disk", d.disk],
          ["quorum", "yes"],
        ]
      : named
        ? [
            ["volume", d.volume],
            ["disk", d.disk],
          ]
        : [["disk", d.disk]];
    lines.push(`  ${text(volume)}`);
    if (o.statistics) lines.push(`      ${text(deviceStats(d))}`);
  }
  if (!s.hasPeer) return lines.join("\n") + "\n";
  const conn: Fields = v ? [["node-id", s.peerNodeId]] : [];
  if (s.connection === "Connected") {
    conn.push(...(v ? ([["connection", "Connected"]] as Fields) : []), ["role", s.peerRole]);
    if (v) conn.push(["congested", "no"]);
    lines.push(`  ${peerName(s)} ${text(conn)}`);
    for (const d of vols) {
      const pd: Fields = named ? [["volume", d.volume]] : [];
      // drbdsetup shows replication:Established only with --verbose; a resync always.
      if (v || d.replication !== "Established") pd.push(["replication", d.replication]);
      pd.push(["peer-disk", d.peerDisk]);
      if (d.done !== undefined) pd.push(["done", d.done.toFixed(2)]);
      if (v) pd.push(["resync-suspended", "no"]);
      lines.push(`    ${text(pd)}`);
      if (o.statistics) lines.push(`        ${text(peerDeviceStats(d))}`);
    }
  } else {
    conn.push(["connection", s.connection]);
    if (v) conn.push(["role", "Unknown"], ["congested", "no"]);
    lines.push(`  ${peerName(s)} ${text(conn)}`);
  }
  return lines.join("\n") + "\n";
}

/** The events2 objects of a snapshot: key (type + identity) → [identity fields, state fields, statistics]. */
function objects(s: DrbdSnapshot): Map<string, { id: Fields; state: Fields; stats: Fields }> {
  const out = new Map<string, { id: Fields; state: Fields; stats: Fields }>();
  if (!s.up) return out;
  out.set("resource", {
    id: [["name", s.name]],
    state: [
      ["role", s.role],
      ["suspended", s.suspended],
    ],
    stats: [["write-ordering", "flush"]],
  });
  const peerId: Fields = [
    ["name", s.name],
    ["peer-node-id", s.peerNodeId],
    ["conn-name", peerName(s)],
  ];
  if (s.hasPeer)
    out.set("connection", {
      id: peerId,
      state: [
        ["connection", s.connection],
        ["role", s.peerRole],
      ],
      stats: [],
    });
  // Keys "device N" / "peer-device N": one of each per volume.
  for (const d of [s, ...(s.otherVolumes ?? [])]) {
    out.set(`device ${d.volume}`, {
      id: [
        ["name", s.name],
        ["volume", d.volume],
        ["minor", d.minor],
      ],
      state: [
        ["disk", d.disk],
        ["client", "no"],
        ["quorum", "yes"],
      ],
      stats: deviceStats(d),
    });
    if (s.hasPeer)
      out.set(`peer-device ${d.volume}`, {
        id: [...peerId, ["volume", d.volume]],
        state: [
          ["replication", d.replication],
          ["peer-disk", d.peerDisk],
          ["peer-client", "no"],
          ["resync-suspended", "no"],
        ],
        stats: peerDeviceStats(d),
      });
  }
  return out;
}

/** The events2 object type of an objects() key ("device 1" → "device"). */
function kind(key: string): string {
  return key.split(" ")[0] as string;
}

function outOfSync(stats: Fields): string | number | undefined {
  return stats.find(([k]) => k === "out-of-sync")?.[1];
}

/** `exists` lines of the current state of these resources, ended by `exists -` (events2 --now). */
export function events2Exists(snaps: readonly DrbdSnapshot[], o: Drbd9FormatOptions = {}): string[] {
  const lines: string[] = [];
  for (const s of snaps)
    for (const [type, obj] of objects(s))
      lines.push(
        `exists ${kind(type)} ${text([...obj.id, ...obj.state, ...(o.statistics ? obj.stats : [])])}`,
      );
  lines.push("exists -");
  return lines;
}

/**
 * The events between two snapshots of one resource: `create` / `destroy` for objects that came or
 * went, `change` with the fields whose value changed; with --statistics the statistics are appended,
 * and a peer-device whose out-of-sync amount moved (a resync) gets a change line of its statistics.
 */
export function events2Changes(prev: DrbdSnapshot, next: DrbdSnapshot, o: Drbd9FormatOptions = {}): string[] {
  const before = objects(prev);
  const after = objects(next);
  const lines: string[] = [];
  for (const [type, obj] of after) {
    const old = before.get(type);
    if (!old) {
      lines.push(
        `create ${kind(type)} ${text([...obj.id, ...obj.state, ...(o.statistics ? obj.stats : [])])}`,
      );
      continue;
    }
    const oldState = new Map(old.state.map(([k, v]) => [k, String(v)]));
    const changed = obj.state.filter(([k, v]) => oldState.get(k) !== String(v));
    if (changed.length > 0)
      lines.push(`change ${kind(type)} ${text([...obj.id, ...changed, ...(o.statistics ? obj.stats : [])])}`);
    else if (o.statistics && kind(type) === "peer-device" && outOfSync(obj.stats) !== outOfSync(old.stats))
      lines.push(`change ${kind(type)} ${text([...obj.id, ...obj.stats])}`);
  }
  // Destroyed objects, innermost first as drbdsetup reports a down.
  for (const k of ["peer-device", "device", "connection", "resource"])
    for (const [type, obj] of before)
      if (kind(type) === k && !after.has(type)) lines.push(`destroy ${k} ${text(obj.id)}`);
  return lines;
}
