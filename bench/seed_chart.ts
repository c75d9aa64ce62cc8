/**
 * The seed tar benchmark as a chart: reads the CSV that `CSV=FILE bench/seed_tar_bench.sh` writes
 * (round,type,copy_s,unpack_s,total_s,files,status) and prints an SVG of horizontal bars, copy and
 * unpack stacked, one bar per LUN type (the median total over the rounds that passed, with the copy
 * and unpack of that run). No dependencies: the SVG is written by hand.
 *
 *   node dist/bench/seed_chart.js docs/benchmarks-seed.csv > docs/benchmarks-seed.svg
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const LABELS: Record<string, string> = {
  malloc: "Malloc",
  aio: "AIO",
  tcmur: "TCMUR file",
  bio: "BIO (TCMUR file)",
  drbd: "BIO over DRBD, standalone",
  drbdc: "BIO over DRBD, protocol C",
  drbda: "BIO over DRBD, protocol A",
  tgt: "tgt (rdwr file)",
};

export interface SeedRun {
  readonly type: string;
  readonly copy: number;
  readonly unpack: number;
  readonly total: number;
}

/** Parse the benchmark's CSV; an error names the line. Failed runs are left out. */
export function parseSeedCsv(text: string, file = "<csv>"): SeedRun[] {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const header = lines[0]?.split(",") ?? [];
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i < 0) throw new Error(`${file}:1: no column ${name} (header: ${lines[0] ?? "empty"})`);
    return i;
  };
  const [type, copy, unpack, total, status] = ["type", "copy_s", "unpack_s", "total_s", "status"].map(col);
  const runs: SeedRun[] = [];
  lines.slice(1).forEach((line, i) => {
    const f = line.split(",");
    if (f[status] !== "ok") return;
    const nums = [f[copy], f[unpack], f[total]].map(Number);
    if (nums.some((n) => !Number.isFinite(n) || n < 0))
      throw new Error(`${file}:${i + 2}: expected seconds in copy_s, unpack_s, total_s: ${line}`);
    runs.push({ type: f[type], copy: nums[0], unpack: nums[1], total: nums[2] });
  });
  return runs;
}

/** Per type, in first-seen order: the run with the median total. */
export function medians(runs: readonly SeedRun[]): SeedRun[] {
  const byType = new Map<string, SeedRun[]>();
  for (const r of runs) byType.set(r.type, [...(byType.get(r.type) ?? []), r]);
  return [...byType.values()].map(
    (rs) => [...rs].sort((a, b) => a.total - b.total)[Math.floor((rs.length - 1) / 2)],
  );
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function renderSeedChart(runs: readonly SeedRun[], title: string): string {
  const rows = medians(runs);
  const left = 190;
  const barW = 460;
  const rowH = 30;
  const top = 50;
  const height = top + rows.length * rowH + 50;
  const width = left + barW + 80;
  const max = Math.max(1, ...rows.map((r) => r.total));
  const step = max > 40 ? 10 : max > 16 ? 5 : 2;
  const scaleMax = Math.ceil(max / step) * step;
  const x = (s: number) => left + (s / scaleMax) * barW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (let s = 0; s <= scaleMax; s += step) {
    out.push(
      `<line x1="${x(s)}" y1="${top - 8}" x2="${x(s)}" y2="${top + rows.length * rowH}" stroke="#dddddd"/>`,
    );
    out.push(`<text x="${x(s)}" y="${top + rows.length * rowH + 16}" text-anchor="middle">${s}</text>`);
  }
  out.push(
    `<text x="${left + barW / 2}" y="${top + rows.length * rowH + 34}" text-anchor="middle">seconds in the guest (lower is better)</text>`,
  );
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    out.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${esc(LABELS[r.type] ?? r.type)}</text>`);
    out.push(
      `<rect x="${left}" y="${y}" width="${(x(r.copy) - left).toFixed(1)}" height="20" fill="#4e79a7"/>`,
    );
    out.push(
      `<rect x="${x(r.copy).toFixed(1)}" y="${y}" width="${(x(r.copy + r.unpack) - x(r.copy)).toFixed(1)}" height="20" fill="#f28e2b"/>`,
    );
    out.push(`<text x="${(x(r.total) + 6).toFixed(1)}" y="${y + 15}">${r.total.toFixed(2)}</text>`);
  });
  const ly = 30;
  out.push(`<rect x="${left}" y="${ly}" width="12" height="10" fill="#4e79a7"/>`);
  out.push(`<text x="${left + 16}" y="${ly + 9}">copy</text>`);
  out.push(`<rect x="${left + 60}" y="${ly}" width="12" height="10" fill="#f28e2b"/>`);
  out.push(`<text x="${left + 76}" y="${ly + 9}">unpack</text>`);
  out.push("</svg>");
  return out.join("\n") + "\n";
}

export const SEED_CHART_TITLE = "Seed tar benchmark: copy + unpack of a 111 MiB tar, Linux iscsi_tcp in QEMU";

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("usage: node dist/bench/seed_chart.js RESULTS.csv [TITLE] > chart.svg\n");
    process.exit(2);
  }
  try {
    process.stdout.write(
      renderSeedChart(parseSeedCsv(readFileSync(file, "utf8"), file), process.argv[3] ?? SEED_CHART_TITLE),
    );
  } catch (err) {
    process.stderr.write(`seed_chart: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
