/**
 * The metric names the endpoint exports, and the Grafana dashboard (docs/grafana-dashboard.json) built
 * on exactly those: every query of every panel names only metrics the endpoint exports (a histogram's
 * _bucket/_sum/_count series included), so a renamed metric breaks this test rather than a user's
 * dashboard.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { buildRegistry, parseMetricsAddress } from "./metrics.js";

const DASHBOARD = fileURLToPath(new URL("../../../docs/grafana-dashboard.json", import.meta.url));

async function exportedNames(): Promise<Set<string>> {
  const registry = buildRegistry({
    scsiDevices: () => [],
    iscsiTarget: () => undefined,
    drbdResources: () => [],
  });
  const names = new Set<string>();
  for (const line of (await registry.metrics()).split("\n")) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (!m) continue;
    names.add(m[1]);
    if (m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m[1] + s);
  }
  return names;
}

interface Panel {
  title: string;
  targets?: { expr: string }[];
}

test("every dashboard query names metrics the endpoint exports", async () => {
  const names = await exportedNames();
  for (const n of [
    "usertgt_lun_read_ops_total",
    "usertgt_drbd_out_of_sync_bytes",
    "process_cpu_seconds_total",
  ])
    assert.ok(names.has(n), n);
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as { panels: Panel[] };
  let queries = 0;
  for (const panel of dashboard.panels) {
    assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has queries`);
    for (const { expr } of panel.targets ?? []) {
      queries++;
      const used = [...expr.matchAll(/\b(usertgt_[a-z0-9_]+|process_[a-z0-9_]+|nodejs_[a-z0-9_]+)\b/g)].map(
        (m) => m[1],
      );
      assert.ok(used.length > 0, `panel "${panel.title}": ${expr} names no metric`);
      for (const name of used) assert.ok(names.has(name), `panel "${panel.title}": ${name} is not exported`);
    }
  }
  assert.ok(queries >= 20, `${queries} queries`);
  // And the other way round: every usertgt_ metric appears on the dashboard.
  const text = JSON.stringify(dashboard);
  for (const name of names)
    if (name.startsWith("usertgt_") && !/_(sum|count)$/.test(name) && !/latency_seconds$/.test(name))
      assert.ok(text.includes(name), `${name} is on no panel`);
});

test("--metrics ADDR:PORT parsing", () => {
  assert.deepEqual(parseMetricsAddress("127.0.0.1:9470"), { host: "127.0.0.1", port: 9470 });
  assert.deepEqual(parseMetricsAddress("[::1]:9470"), { host: "::1", port: 9470 });
  assert.throws(() => parseMetricsAddress("9470"), /--metrics 9470: expected ADDR:PORT/);
  assert.throws(() => parseMetricsAddress("host:99999"), /expected ADDR:PORT/);
});
