/**
 * The opt-in Prometheus endpoint (`usertgt serve --metrics ADDR:PORT`, GET /metrics): per LUN I/O
 * counters, latency histograms and queue depth; per target sessions and connections; refused logins
 * and digest errors; per DRBD resource the states, out-of-sync amount, resync speed and ETA and the
 * counters /proc/drbd shows; and prom-client's Node process metrics. Every value is read from the
 * layers' own counter objects at scrape time (LunStats, IscsiStats, the DRBD snapshot), so the data
 * path does no metrics work beyond bumping a few numbers. The metric names are listed in METRIC_NAMES
 * (docs/metrics.md, and the Grafana dashboard is checked against them).
 */
import { createServer, type Server } from "node:http";
import { collectDefaultMetrics, Registry } from "prom-client";
import { snapshotOf, type DrbdSnapshot } from "../drbd/resource_snapshot.js";
import type { DrbdResource } from "../drbd/resource.js";
import type { IscsiTarget } from "../iscsi/target.js";
import { LATENCY_BUCKETS_SECONDS, type IoCounters } from "../scsi/lun_stats.js";
import type { ScsiDevice } from "../scsi/device.js";

export interface MetricsSources {
  scsiDevices(): readonly ScsiDevice[];
  iscsiTarget(): IscsiTarget | undefined;
  drbdResources(): readonly DrbdResource[];
}

type Labels = Record<string, string>;
interface Sample {
  readonly labels: Labels;
  readonly value: number;
  readonly metricName?: string;
}

/** A metric whose samples are computed at scrape time (prom-client's registry formats it). */
class ScrapeMetric {
  readonly aggregator = "sum";
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "gauge" | "histogram",
    private readonly samples: () => Sample[],
  ) {}
  get(): { name: string; help: string; type: string; aggregator: string; values: Sample[] } {
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: this.samples(),
    };
  }
  reset(): void {}
}

interface LunEntry {
  readonly labels: Labels;
  readonly read: IoCounters;
  readonly write: IoCounters;
  readonly queueDepth: number;
}

function lunEntries(src: MetricsSources): LunEntry[] {
  const out: LunEntry[] = [];
  for (const dev of src.scsiDevices())
    for (const id of dev.lunIds()) {
      const lu = dev.logicalUnit(id);
      if (!lu) continue;
      out.push({
        labels: { target: dev.name, lun: String(id), bdev: lu.bdev.name },
        read: lu.stats.read,
        write: lu.stats.write,
        queueDepth: lu.stats.inFlight,
      });
    }
  return out;
}

function histogram(name: string, labels: Labels, c: IoCounters): Sample[] {
  const out: Sample[] = [];
  let cumulative = 0;
  LATENCY_BUCKETS_SECONDS.forEach((le, i) => {
    cumulative += c.buckets[i];
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: String(le) }, value: cumulative });
  });
  cumulative += c.buckets[LATENCY_BUCKETS_SECONDS.length];
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: cumulative });
  out.push({ metricName: `${name}_sum`, labels, value: c.latencySumSeconds });
  out.push({ metricName: `${name}_count`, labels, value: c.ops });
  return out;
}

function perTarget(src: MetricsSources, pick: "sessions" | "connections"): Sample[] {
  const target = src.iscsiTarget();
  const counts = new Map<string, { sessions: Set<number>; connections: number }>();
  for (const dev of src.scsiDevices()) counts.set(dev.name, { sessions: new Set(), connections: 0 });
  for (const c of target?.connectionInfo() ?? []) {
    if (c.discovery || c.targetNodeName === "") continue;
    const e = counts.get(c.targetNodeName) ?? { sessions: new Set<number>(), connections: 0 };
    e.sessions.add(c.tsih);
    e.connections++;
    counts.set(c.targetNodeName, e);
  }
  return [...counts].map(([name, e]) => ({
    labels: { target: name },
    value: pick === "sessions" ? e.sessions.size : e.connections,
  }));
}

const B = 1024;

/** Every metric this endpoint exports besides prom-client's process_* and nodejs_* ones. */
export function buildRegistry(src: MetricsSources): Registry {
  const registry = new Registry();
  const add = (m: ScrapeMetric) => registry.registerMetric(m as never);
  const luns = (f: (e: LunEntry) => Sample[]) => () => lunEntries(src).flatMap(f);
  const drbd = (f: (s: DrbdSnapshot, labels: Labels) => Sample[]) => () =>
    src.drbdResources().flatMap((r) => {
      const first = snapshotOf(r);
      // Every volume of a resource of several volumes, each by its minor.
      return [first, ...first.otherVolumes].flatMap((s) =>
        f(s, { resource: s.name, minor: String(s.minor) }),
      );
    });

  for (const dir of ["read", "write"] as const) {
    add(
      new ScrapeMetric(
        `usertgt_lun_${dir}_ops_total`,
        `${dir} commands completed with GOOD status`,
        "counter",
        luns((e) => [{ labels: e.labels, value: e[dir].ops }]),
      ),
    );
    add(
      new ScrapeMetric(
        `usertgt_lun_${dir}_bytes_total`,
        `bytes ${dir === "read" ? "read" : "written"} by those commands`,
        "counter",
        luns((e) => [{ labels: e.labels, value: e[dir].bytes }]),
      ),
    );
    add(
      new ScrapeMetric(
        `usertgt_lun_${dir}_latency_seconds`,
        `${dir} command latency from arrival at the LU to completion`,
        "histogram",
        luns((e) => histogram(`usertgt_lun_${dir}_latency_seconds`, e.labels, e[dir])),
      ),
    );
  }
  add(
    new ScrapeMetric(
      "usertgt_lun_queue_depth",
      "SCSI commands in progress on the LU",
      "gauge",
      luns((e) => [{ labels: e.labels, value: e.queueDepth }]),
    ),
  );
  add(
    new ScrapeMetric("usertgt_target_sessions", "iSCSI sessions logged in to the target", "gauge", () =>
      perTarget(src, "sessions"),
    ),
  );
  add(
    new ScrapeMetric("usertgt_target_connections", "iSCSI connections of those sessions", "gauge", () =>
      perTarget(src, "connections"),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_iscsi_logins_refused_total",
      "logins refused, by target and reason (authentication: CHAP; authorization: initiator group)",
      "counter",
      () =>
        (src.iscsiTarget()?.stats.loginsRefused() ?? []).map((r) => ({
          labels: { target: r.target, reason: r.reason },
          value: r.count,
        })),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_iscsi_digest_errors_total",
      "PDUs with a wrong header or data digest (CRC32C)",
      "counter",
      () => {
        const s = src.iscsiTarget()?.stats;
        return [
          { labels: { kind: "header" }, value: s?.headerDigestErrors ?? 0 },
          { labels: { kind: "data" }, value: s?.dataDigestErrors ?? 0 },
        ];
      },
    ),
  );

  add(
    new ScrapeMetric(
      "usertgt_iscsi_login_delays_total",
      "logins whose CHAP answer was held back after earlier failures from the same initiator or source",
      "counter",
      () => [{ labels: {}, value: src.iscsiTarget()?.stats.authDelayedLogins ?? 0 }],
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_iscsi_connections_refused_total",
      "connections refused or closed before login: per-address share, pool full, no first PDU in time",
      "counter",
      () => {
        const s = src.iscsiTarget()?.stats;
        return [
          { labels: { reason: "per-address" }, value: s?.preLoginRefusedPerAddress ?? 0 },
          { labels: { reason: "evicted" }, value: s?.preLoginEvicted ?? 0 },
          { labels: { reason: "first-pdu-timeout" }, value: s?.firstPduTimeouts ?? 0 },
        ];
      },
    ),
  );

  // DRBD: states as one series with value 1 (the value is in the label), as DRBD exporters do.
  add(
    new ScrapeMetric(
      "usertgt_drbd_role",
      "this node's role (label role)",
      "gauge",
      drbd((s, l) => [{ labels: { ...l, role: s.role }, value: 1 }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_peer_role",
      "the peer's role (label role)",
      "gauge",
      drbd((s, l) => [{ labels: { ...l, role: s.peerRole }, value: 1 }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_connection_state",
      "connection state, drbd-utils 9 name and 8.4 cs (labels state, cstate)",
      "gauge",
      drbd((s, l) => [
        { labels: { ...l, state: s.connection, cstate: s.cstate, replication: s.replication }, value: 1 },
      ]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_disk_state",
      "local disk state (label state)",
      "gauge",
      drbd((s, l) => [{ labels: { ...l, state: s.disk }, value: 1 }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_peer_disk_state",
      "the peer's disk state (label state)",
      "gauge",
      drbd((s, l) => [{ labels: { ...l, state: s.peerDisk }, value: 1 }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_up",
      "1 when the resource is up (attached or connecting)",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.up ? 1 : 0 }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_out_of_sync_bytes",
      "bytes marked out of sync in the bitmap (oos)",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.outOfSyncKiB * B }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_resync_done_ratio",
      "fraction of the running resync or verify done (0..1; absent when none runs)",
      "gauge",
      drbd((s, l) => (s.done === undefined ? [] : [{ labels: l, value: s.done / 100 }])),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_resync_speed_bytes_per_second",
      "resync speed over the last 30 s",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.resyncBytesPerSecond }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_resync_eta_seconds",
      "seconds until the resync ends at that speed (absent when not moving)",
      "gauge",
      drbd((s, l) => (s.resyncEtaSeconds === undefined ? [] : [{ labels: l, value: s.resyncEtaSeconds }])),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_resync_transferred_bytes",
      "the last resync: bytes sent as P_RS_DATA_REPLY (by the SyncSource) or received (by the SyncTarget)",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.resyncTransferredKiB * B }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_resync_same_csum_bytes",
      "the last resync with csums-alg: bytes found equal by checksum and not sent (P_RS_IS_IN_SYNC)",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.resyncSameCsumKiB * B }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_al_writes_total",
      "activity log transactions written since attach (al)",
      "counter",
      drbd((s, l) => [{ labels: l, value: s.alWrites }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_pending_requests",
      "writes sent to the peer awaiting its ack (pe)",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.pending }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_unacked_requests",
      "peer writes received and not yet acked (ua)",
      "gauge",
      drbd((s, l) => [{ labels: l, value: s.unacked }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_sent_bytes_total",
      "bytes sent to the peer (ns)",
      "counter",
      drbd((s, l) => [{ labels: l, value: s.sentKiB * B }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_received_bytes_total",
      "bytes received from the peer (nr)",
      "counter",
      drbd((s, l) => [{ labels: l, value: s.receivedKiB * B }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_disk_written_bytes_total",
      "bytes written to the local disk (dw)",
      "counter",
      drbd((s, l) => [{ labels: l, value: s.writtenKiB * B }]),
    ),
  );
  add(
    new ScrapeMetric(
      "usertgt_drbd_disk_read_bytes_total",
      "bytes read from the local disk (dr)",
      "counter",
      drbd((s, l) => [{ labels: l, value: s.readKiB * B }]),
    ),
  );

  collectDefaultMetrics({ register: registry });
  return registry;
}

/** Parse ADDR:PORT ([v6]:PORT); an error names the option. */
export function parseMetricsAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`--metrics ${text}: expected ADDR:PORT, e.g. 127.0.0.1:9470 or [::1]:9470`);
  return { host: m[1] ?? m[2], port };
}

export class MetricsEndpoint {
  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(address: string, sources: MetricsSources): Promise<MetricsEndpoint> {
    const { host, port } = parseMetricsAddress(address);
    const registry = buildRegistry(sources);
    const server = createServer((req, res) => {
      if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("usertgt: metrics are at GET /metrics\n");
        return;
      }
      registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err: unknown) =>
          res.writeHead(500, { "content-type": "text/plain" }).end(`${(err as Error).message}\n`),
      );
    });
    // A slow or stuck scraper must not hold sockets for ever.
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err) => reject(new Error(`--metrics ${address}: ${err.message}`)));
      server.listen(port, host, () => resolve());
    });
    const bound = server.address();
    return new MetricsEndpoint(server, host, typeof bound === "object" && bound ? bound.port : port);
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}
