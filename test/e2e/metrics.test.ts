/**
 * The Prometheus endpoint during real work: two servers replicating r0 (drbd_fixture.ts) with
 * `--metrics`, scraped over HTTP while the initial full sync runs (out-of-sync falls to 0, resync
 * speed is seen) and while an iSCSI session writes and reads through the Primary's LUN (IOPS, bytes,
 * latency histogram count and the DRBD bytes sent move; the session shows in the target's gauges). A
 * login to a target that does not exist is counted as refused. Ports: DRBD 7950-7959, iSCSI
 * 3534-3539, metrics 3550-3551.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { DrbdPair, IQN, rw10, until } from "./drbd_fixture.js";
import { run } from "./harness.js";

const BS = 4096;
const METRICS = { alpha: "127.0.0.1:3550", beta: "127.0.0.2:3551" } as const;

async function scrape(addr: string): Promise<string> {
  const res = await fetch(`http://${addr}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
  return res.text();
}

/** The value of the first sample of `name` whose labels include every given one; undefined if none. */
function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

describe("metrics endpoint", () => {
  let pair: DrbdPair;
  before(async () => {
    pair = await DrbdPair.create("metrics", {
      blockSize: BS,
      sizeMiB: 64,
      // Slow enough that several scrapes see the full sync run (64 MiB at 16 MiB/s ≈ 4 s).
      disk: "resync-rate 16M; c-plan-ahead 0;",
      drbdPorts: [7950, 7959],
      iscsiPorts: [3534, 3539],
    });
  });
  after(async () => {
    await pair.close();
  });

  it(
    "out-of-sync falls to 0 during the resync; IOPS and bytes move under iSCSI I/O",
    { timeout: 5 * 60_000 },
    async () => {
      await pair.start("alpha", "drbdadm_up_primary", ["--metrics", METRICS.alpha]);
      assert.match(pair.stderr("alpha"), /^usertgt: metrics on http:\/\/127\.0\.0\.1:3550\/metrics$/m);
      const idle = await scrape(METRICS.alpha);
      assert.equal(value(idle, "usertgt_drbd_role", { resource: "r0", role: "Primary" }), 1);
      assert.equal(value(idle, "usertgt_drbd_connection_state", { resource: "r0", state: "Connecting" }), 1);
      assert.notEqual(value(idle, "usertgt_drbd_out_of_sync_bytes", { resource: "r0" }), undefined);
      assert.ok(value(idle, "process_resident_memory_bytes") !== undefined, "Node process metrics");
      assert.ok(value(idle, "nodejs_eventloop_lag_seconds") !== undefined);

      await pair.start("beta", "drbdadm_up", ["--metrics", METRICS.beta]);
      const seen: number[] = [];
      let speed = 0;
      let eta: number | undefined;
      let replication = "";
      await until("out-of-sync reaches 0", async () => {
        const t = await scrape(METRICS.alpha);
        const oos = value(t, "usertgt_drbd_out_of_sync_bytes", { resource: "r0" }) ?? -1;
        seen.push(oos);
        speed = Math.max(
          speed,
          value(t, "usertgt_drbd_resync_speed_bytes_per_second", { resource: "r0" }) ?? 0,
        );
        eta ??= value(t, "usertgt_drbd_resync_eta_seconds", { resource: "r0" });
        if (value(t, "usertgt_drbd_connection_state", { resource: "r0", replication: "SyncSource" }) === 1)
          replication = "SyncSource";
        await new Promise((r) => setTimeout(r, 300));
        return oos === 0 && seen.some((v) => v > 0);
      });
      const falling = seen.filter((v, i) => i > 0 && v < seen[i - 1] && v > 0);
      assert.ok(falling.length >= 2, `out-of-sync seen falling in steps: ${seen.join(" ")}`);
      assert.equal(replication, "SyncSource", "a scrape saw the resync running");
      assert.ok(speed > 1024 * 1024, `resync speed seen: ${speed} B/s`);
      assert.ok(eta !== undefined && eta > 0, `an ETA was exported: ${eta}`);
      const synced = await scrape(METRICS.alpha);
      assert.equal(value(synced, "usertgt_drbd_peer_disk_state", { resource: "r0", state: "UpToDate" }), 1);
      assert.equal(value(synced, "usertgt_drbd_resync_eta_seconds", { resource: "r0" }), undefined);
      // The full sync sent every block as P_RS_DATA_REPLY; without csums-alg none was found equal.
      const resyncSent = value(synced, "usertgt_drbd_resync_transferred_bytes", { resource: "r0" }) ?? 0;
      assert.ok(resyncSent >= 60 * 1024 * 1024, `resync transferred ${resyncSent} bytes`);
      assert.equal(value(synced, "usertgt_drbd_resync_same_csum_bytes", { resource: "r0" }), 0);
      const betaText = await scrape(METRICS.beta);
      assert.ok(
        (value(betaText, "usertgt_drbd_received_bytes_total", { resource: "r0" }) ?? 0) >= 60 * 1024 * 1024,
      );

      const lun = { target: IQN, lun: "0" };
      const before = await scrape(METRICS.alpha);
      const ini = await pair.session("alpha");
      const during = await scrape(METRICS.alpha);
      assert.equal(value(during, "usertgt_target_sessions", { target: IQN }), 1);
      assert.equal(value(during, "usertgt_target_connections", { target: IQN }), 1);
      const writes = 40;
      for (let i = 0; i < writes; i++) {
        const w = await ini.scsi(rw10(0x2a, i * 8, 8), { write: Buffer.alloc(8 * BS, i) });
        assert.equal(w.status, 0);
        const r = await ini.scsi(rw10(0x28, i * 8, 8), { read: 8 * BS });
        assert.equal(r.status, 0);
      }
      ini.close();
      const after = await scrape(METRICS.alpha);
      const delta = (name: string) => (value(after, name, lun) ?? 0) - (value(before, name, lun) ?? 0);
      assert.equal(delta("usertgt_lun_write_ops_total"), writes);
      assert.equal(delta("usertgt_lun_write_bytes_total"), writes * 8 * BS);
      assert.ok(delta("usertgt_lun_read_ops_total") >= writes);
      assert.ok(delta("usertgt_lun_read_bytes_total") >= writes * 8 * BS);
      assert.equal(delta("usertgt_lun_write_latency_seconds_count"), writes);
      assert.equal(
        value(after, "usertgt_lun_write_latency_seconds_bucket", { ...lun, le: "+Inf" }),
        value(after, "usertgt_lun_write_latency_seconds_count", lun),
      );
      assert.equal(value(after, "usertgt_lun_queue_depth", lun), 0);
      const sent = (t: string) => value(t, "usertgt_drbd_sent_bytes_total", { resource: "r0" }) ?? 0;
      assert.ok(sent(after) - sent(before) >= writes * 8 * BS, "the writes were replicated");
      assert.ok((value(after, "usertgt_drbd_al_writes_total", { resource: "r0" }) ?? 0) >= 1);

      const refused = await run("iscsi-inq", [
        `iscsi://127.0.0.1:${pair.nodes.alpha.iscsiPort}/iqn.2016-06.io.spdk:nosuch/0`,
      ]);
      assert.notEqual(refused.code, 0);
      await until(
        "refused login counted",
        async () => {
          const t = await scrape(METRICS.alpha);
          return (value(t, "usertgt_iscsi_logins_refused_total", { reason: "not-found" }) ?? 0) >= 1;
        },
        10_000,
      );
      await pair.stop("beta");
      await pair.stop("alpha");
    },
  );
});
