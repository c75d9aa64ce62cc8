#!/usr/bin/env bash
# For comparison with test/e2e/conformance.test.ts: libiscsi's iscsi-test-cu -d -t ALL against tgt (STGT)
# on a RAM-backed LUN (/dev/shm file) with the same block sizes, counted by the same parser
# (test/e2e/cunit_report.ts). Not a test: tgt's failures are tgt's. Needs root, tgt and libiscsi-bin.
#
#   bench/conformance_tgt.sh            # block sizes 512 and 4096
#   BLOCK_SIZES=4096 bench/conformance_tgt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/tgtd.sh

BLOCK_SIZES=${BLOCK_SIZES:-"512 4096"}
SIZE_MB=${SIZE_MB:-64}
PORT=${PORT:-3261}
CONTROL_PORT=${CONTROL_PORT:-5399}
IQN=iqn.2001-04.com.example:conformance
[ -f dist/test/e2e/cunit_report.js ] || npx tsc -p .

work=$(mktemp -d /tmp/usertgt-tgtconf.XXXXXX)
shm_file=/dev/shm/usertgt-tgtconf-$$.img
stop_tgtd() { tgtd_stop "$CONTROL_PORT"; }
trap 'stop_tgtd; rm -rf "$work" "$shm_file"' EXIT INT TERM

echo "iscsi-test-cu -d -t ALL against tgt $(tgtd -V 2>/dev/null || echo '?'), ${SIZE_MB} MiB /dev/shm LUN, one portal"
for bs in $BLOCK_SIZES; do
  rm -f "$shm_file"
  truncate -s "${SIZE_MB}M" "$shm_file"
  tgtd_start "$CONTROL_PORT" "$PORT" "$IQN" "$shm_file" "$bs" "$work/tgtd.log"
  timeout 1200 iscsi-test-cu -d -t ALL "iscsi://127.0.0.1:$PORT/$IQN/1" >"$work/cu-$bs.txt" 2>&1 || true
  stop_tgtd
  node --input-type=module -e '
    import { readFileSync } from "node:fs";
    const { parseCunitOutput, judge } = await import(process.argv[1]);
    const report = parseCunitOutput(readFileSync(process.argv[2], "utf8"));
    const { counts } = judge("tgt", report, []);
    const failed = report.tests.filter((t) => t.verdict === "failed").map((t) => t.name);
    console.log(`tgt bs=${process.argv[3]}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped of ${report.tests.length}`);
    if (failed.length) console.log(`  failed: ${failed.join(", ")}`);
  ' "$PWD/dist/test/e2e/cunit_report.js" "$work/cu-$bs.txt" "$bs"
done
