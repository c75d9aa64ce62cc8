import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { judge, parseCunitOutput, parseKnownFailures } from "./cunit_report.js";

/** Excerpts of a real iscsi-test-cu 1.19 run (against tgt 1.0.85), kept byte for byte. */
const OUTPUT = `

     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: ExtendedCopy
  Test: Simple ...    [SKIPPED] EXTENDED COPY is not implemented.
passed
Suite: GetLBAStatus
  Test: Simple ...passed
  Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed with ILLEGAL_REQUEST(0x05)/LBA_OUT_OF_RANGE(0x2100)
FAILED
    1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
  Test: UnmapSingle ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
passed
Suite: Reserve6
  Test: Logout ...    Take out a RESERVE6 from the first initiator
    Try to take out a RESERVE6 from the second initiator
    RELEASE6 from the second initiator
passed
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6) ASCQ:BUS_RESET(0x2900)

Suite: iSCSITMF
  Test: AbortTaskSimpleAsync ...passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      4      4    n/a      0        0
               tests      7      7      6      1        0
             asserts    100    100     99      1      n/a

Elapsed time =    3.232 seconds
`;

describe("iscsi-test-cu output", () => {
  it("reads verdicts, skips and the summary", () => {
    const r = parseCunitOutput(OUTPUT);
    assert.deepEqual(
      r.tests.map((t) => [t.name, t.verdict]),
      [
        ["ExtendedCopy.Simple", "skipped"],
        ["GetLBAStatus.Simple", "passed"],
        ["GetLBAStatus.BeyondEol", "failed"],
        ["GetLBAStatus.UnmapSingle", "skipped"],
        ["Reserve6.Logout", "passed"],
        ["Reserve6.LUNReset", "passed"],
        ["iSCSITMF.AbortTaskSimpleAsync", "passed"],
      ],
    );
    assert.deepEqual(r.summary, { ran: 7, passed: 6, failed: 1 });
    assert.match(r.tests[2].detail, /LBA_OUT_OF_RANGE/);
  });

  it("counts a test without a verdict (tool crashed) as failed", () => {
    const r = parseCunitOutput("Suite: Read10\n  Test: Simple ...    Reading\n");
    assert.deepEqual(
      r.tests.map((t) => t.verdict),
      ["failed"],
    );
    assert.equal(r.summary, undefined);
  });

  it("judges against the known-failures list, both ways", () => {
    const report = parseCunitOutput(OUTPUT);
    const known = parseKnownFailures(
      "# comment\n* GetLBAStatus.BeyondEol  # gap\naio512 Reserve6.Logout\nmalloc512,malloc4096 Nope.Missing\n",
    );
    const malloc = judge("malloc512", report, known);
    assert.deepEqual(malloc.counts, { passed: 4, failed: 1, skipped: 2 });
    assert.deepEqual(malloc.problems, [
      "GetLBAStatus.UnmapSingle SKIPPED (only ExtendedCopy, ReceiveCopyResults, WriteAtomic16, Sanitize and skips for what the device is may skip): ...    [SKIPPED] Logical unit is fully provisioned. Skipping test",
      "conformance-known-failures.txt:4: Nope.Missing did not run",
    ]);
    const aio = judge("aio512", report, known);
    assert.ok(
      aio.problems.includes(
        "Reserve6.Logout passed but conformance-known-failures.txt:3 lists it as failing: remove the entry",
      ),
    );
    const bare = judge("aio4096", report, []);
    assert.match(bare.problems[0], /^GetLBAStatus.BeyondEol FAILED: /);
  });

  it("accepts skips that state what the device is (not removable, one logical block per physical block)", () => {
    const out = [
      "Suite: PreventAllow",
      "  Test: Simple ...    [SKIPPED] Logical unit is not removable. Skipping test.",
      "passed",
      "Suite: WriteSame10",
      "  Test: UnmapUnaligned ...    [SKIPPED] LBPPB < 2. Skipping test",
      "passed",
      "Suite: Unmap",
      "  Test: Simple ...    [SKIPPED] Target does not support UNMAP. Skipping test",
      "passed",
      "",
      "Run Summary:    Type  Total    Ran Passed Failed Inactive",
      "              suites      3      3    n/a      0        0",
      "               tests      3      3      3      0        0",
      "",
    ].join("\n");
    const j = judge("malloc512", parseCunitOutput(out), []);
    assert.deepEqual(j.counts, { passed: 0, failed: 0, skipped: 3 });
    assert.equal(j.problems.length, 1);
    assert.match(j.problems[0], /^Unmap.Simple SKIPPED/);
  });

  it("rejects a malformed known-failures line", () => {
    assert.throws(() => parseKnownFailures("Read10 Simple\n"), /conformance-known-failures.txt:1: expected/);
  });
});
