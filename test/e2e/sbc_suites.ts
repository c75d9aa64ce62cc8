/**
 * libiscsi's SBC command suites (iscsi-test-cu has no "SBC" family; these are the SCSI.* suites of
 * SBC-4 block commands), run one suite per iscsi-test-cu invocation and merged into one report.
 */
import { parseCunitOutput, type TestResult } from "./cunit_report.js";
import { run } from "./harness.js";

export const SBC_SUITES = [
  "CompareAndWrite",
  "GetLBAStatus",
  "Mandatory",
  "OrWrite",
  "Prefetch10",
  "Prefetch16",
  "Read6",
  "Read10",
  "Read12",
  "Read16",
  "ReadCapacity10",
  "ReadCapacity16",
  "Unmap",
  "Verify10",
  "Verify12",
  "Verify16",
  "Write10",
  "Write12",
  "Write16",
  "WriteSame10",
  "WriteSame16",
  "WriteVerify10",
  "WriteVerify12",
  "WriteVerify16",
] as const;

export interface SbcRun {
  readonly tests: readonly TestResult[];
  readonly failed: readonly string[];
  readonly passed: number;
  readonly output: string;
}

export async function runSbcSuites(url: string, timeoutMs = 10 * 60 * 1000): Promise<SbcRun> {
  const tests: TestResult[] = [];
  let output = "";
  for (const suite of SBC_SUITES) {
    const r = await run("iscsi-test-cu", ["-d", "-t", `SCSI.${suite}`, url], timeoutMs);
    output += `==== SCSI.${suite} (exit ${r.code})\n${r.stdout}${r.stderr}`;
    tests.push(...parseCunitOutput(r.stdout + r.stderr).tests);
  }
  return {
    tests,
    failed: tests.filter((t) => t.verdict === "failed").map((t) => t.name),
    passed: tests.filter((t) => t.verdict === "passed").length,
    output,
  };
}
