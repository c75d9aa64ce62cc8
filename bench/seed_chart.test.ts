/** docs/benchmarks-seed.svg is what bench/seed_chart.ts makes of docs/benchmarks-seed.csv (kept in step). */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { medians, parseSeedCsv, renderSeedChart, SEED_CHART_TITLE } from "./seed_chart.js";

const doc = (name: string) => fileURLToPath(new URL(`../../docs/${name}`, import.meta.url));

test("the committed chart is generated from the committed CSV", () => {
  const runs = parseSeedCsv(readFileSync(doc("benchmarks-seed.csv"), "utf8"));
  assert.equal(runs.length, 5);
  assert.equal(renderSeedChart(runs, SEED_CHART_TITLE), readFileSync(doc("benchmarks-seed.svg"), "utf8"));
});

test("medians per type; failed runs and bad numbers", () => {
  const csv =
    "round,type,copy_s,unpack_s,total_s,files,status\n1,aio,1,2,3,,ok\n2,aio,2,3,5,,ok\n3,aio,4,4,8,,ok\n1,tgt,1,1,2,,FAILED\n";
  assert.deepEqual(medians(parseSeedCsv(csv)), [{ type: "aio", copy: 2, unpack: 3, total: 5 }]);
  assert.throws(
    () => parseSeedCsv("round,type,copy_s,unpack_s,total_s,files,status\n1,aio,x,2,3,,ok\n", "r.csv"),
    /r\.csv:2: expected seconds/,
  );
  assert.throws(() => parseSeedCsv("a,b\n", "r.csv"), /r\.csv:1: no column type/);
});
