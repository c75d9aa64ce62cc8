/**
 * Reading the verbose output of libiscsi's iscsi-test-cu (CUnit 2.1 "basic" mode):
 *
 *   Suite: GetLBAStatus
 *     Test: Simple ...passed
 *     Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed ...
 *   FAILED
 *       1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
 *     Test: UnmapSingle ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
 *   passed
 *   ...
 *   Run Summary:    Type  Total    Ran Passed Failed Inactive
 *                  tests    230    230    222      8        0
 *
 * CUnit's verdict is the word right after "..." or, when the test printed something, the first line
 * that is only "passed" or "FAILED". A test that printed "[SKIPPED]" and passed counts as skipped.
 */

export type Verdict = "passed" | "failed" | "skipped";

export interface TestResult {
  /** "Suite.Test", e.g. "GetLBAStatus.BeyondEol". */
  readonly name: string;
  readonly suite: string;
  readonly verdict: Verdict;
  /** The test's own output lines (reasons for failures and skips). */
  readonly detail: string;
}

export interface CunitSummary {
  readonly ran: number;
  readonly passed: number;
  readonly failed: number;
}

export interface CunitReport {
  readonly tests: readonly TestResult[];
  readonly summary?: CunitSummary;
}

export function parseCunitOutput(text: string): CunitReport {
  const tests: TestResult[] = [];
  let suite = "";
  let current: { name: string; suite: string; body: string[] } | undefined;

  const finish = (): void => {
    if (!current) return;
    const body = current.body.join("\n");
    let verdict: Verdict | undefined;
    const inline = /^\.\.\.(passed|FAILED)/.exec(body);
    if (inline) verdict = inline[1] === "passed" ? "passed" : "failed";
    else {
      const own = /^(passed|FAILED)\s*$/m.exec(body);
      if (own) verdict = own[1] === "passed" ? "passed" : "failed";
    }
    // A test cut off by a crash has no verdict: count it as failed, so it cannot pass unnoticed.
    verdict ??= "failed";
    if (verdict === "passed" && body.includes("[SKIPPED]")) verdict = "skipped";
    tests.push({
      name: `${current.suite}.${current.name}`,
      suite: current.suite,
      verdict,
      detail: body.trim(),
    });
    current = undefined;
  };

  const lines = text.split("\n");
  let summary: CunitSummary | undefined;
  for (const line of lines) {
    const s = /^Suite: (\S+)/.exec(line);
    if (s) {
      finish();
      suite = s[1];
      continue;
    }
    const t = /^ {2}Test: (\S+) (.*)$/.exec(line);
    if (t) {
      finish();
      current = { name: t[1], suite, body: [t[2]] };
      continue;
    }
    if (/^Run Summary:/.test(line)) {
      finish();
      continue;
    }
    const sum = /^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/.exec(line);
    if (sum && !current) {
      summary = { ran: Number(sum[2]), passed: Number(sum[3]), failed: Number(sum[4]) };
      continue;
    }
    if (current) current.body.push(line);
  }
  finish();
  return { tests, summary };
}

export interface KnownFailure {
  /** Configurations it applies to ("*" = all). */
  readonly configs: readonly string[];
  readonly name: string;
  readonly line: number;
}

/**
 * test/e2e/conformance-known-failures.txt: one `<configs> <Suite.Test>  # why` per line, configs `*` or
 * a comma list (malloc512,aio4096). It records gaps; the conformance test fails when a listed test passes.
 */
export function parseKnownFailures(text: string): KnownFailure[] {
  const out: KnownFailure[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/#.*$/, "").trim();
    if (line === "") return;
    const m = /^(\*|[a-z0-9]+(?:,[a-z0-9]+)*)\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(line);
    if (!m)
      throw new Error(
        `conformance-known-failures.txt:${i + 1}: expected "<configs|*> <Suite.Test>", got "${raw}"`,
      );
    out.push({ configs: m[1] === "*" ? ["*"] : m[1].split(","), name: m[2], line: i + 1 });
  });
  return out;
}

/** Suites whose tests may be skipped: commands out of scope (README: What works). */
export const ALLOWED_SKIP_SUITES = ["ExtendedCopy", "ReceiveCopyResults", "WriteAtomic16", "Sanitize"];

/**
 * Skips that state what the device truly is, which is right for a virtual disk: its medium is not
 * removable (RMB 0) and its physical block is its logical block (LOGICAL BLOCKS PER PHYSICAL BLOCK
 * EXPONENT 0). The device must never claim otherwise to make such a test run.
 */
export const DEVICE_PROPERTY_SKIPS: readonly RegExp[] = [
  /\[SKIPPED\] Logical unit is not removable/,
  /\[SKIPPED\] Media is not removable/,
  /\[SKIPPED\] LBPPB < 2/,
];

export interface Judgement {
  readonly counts: { passed: number; failed: number; skipped: number };
  /** Reasons the run is not acceptable; empty when it is. */
  readonly problems: string[];
}

/** Compare one configuration's report with the known-failures list. */
export function judge(config: string, report: CunitReport, known: readonly KnownFailure[]): Judgement {
  const problems: string[] = [];
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const listed = new Map<string, KnownFailure>();
  for (const k of known) if (k.configs.includes("*") || k.configs.includes(config)) listed.set(k.name, k);
  const seen = new Set<string>();
  for (const t of report.tests) {
    counts[t.verdict]++;
    seen.add(t.name);
    const k = listed.get(t.name);
    if (t.verdict === "failed" && !k)
      problems.push(`${t.name} FAILED: ${t.detail.split("\n").slice(0, 4).join(" | ")}`);
    if (t.verdict !== "failed" && k) {
      problems.push(
        `${t.name} ${t.verdict} but conformance-known-failures.txt:${k.line} lists it as failing: remove the entry`,
      );
    }
    if (
      t.verdict === "skipped" &&
      !ALLOWED_SKIP_SUITES.includes(t.suite) &&
      !DEVICE_PROPERTY_SKIPS.some((re) => re.test(t.detail))
    ) {
      problems.push(
        `${t.name} SKIPPED (only ${ALLOWED_SKIP_SUITES.join(", ")} and skips for what the device is may skip): ${t.detail.split("\n")[0]}`,
      );
    }
  }
  for (const [name, k] of listed) {
    if (!seen.has(name)) problems.push(`conformance-known-failures.txt:${k.line}: ${name} did not run`);
  }
  if (!report.summary) problems.push("no CUnit Run Summary in the output (did iscsi-test-cu crash?)");
  else if (report.summary.failed !== counts.failed || report.summary.ran !== report.tests.length) {
    problems.push(
      `parsed ${report.tests.length} tests / ${counts.failed} failed but CUnit says ${report.summary.ran} ran / ${report.summary.failed} failed`,
    );
  }
  return { counts, problems };
}
