#!/usr/bin/env bash
# For comparison with test/e2e/conformance.test.ts: libiscsi's iscsi-test-cu -d -t ALL against tgt (STGT)
# on a RAM-backed LUN (/dev/shm file) with the same block sizes, counted by the same parser
# (test/e2e/cunit_report.ts). Not a test: tgt's failures are tgt's. Needs root, tgt and libiscsi-bin.
#
#   bench/conformance_tgt.sh            # block sizes 512 and 4096
#   BLOCK_SIZES=4096 bench/conformance_tgt.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BLOCK_SIZES=${BLOCK_SIZES:-"512 4096"}
SIZE_MB=${SIZE_MB:-64}
PORT=${PORT:-3261}
CONTROL_PORT=${CONTROL_PORT:-5399}
IQN=iqn.2001-04.com.example:conformance
[ -f dist/test/e2e/cunit_report.js ] || npx tsc -p .

work=$(mktemp -d /tmp/usertgt-tgtconf.XXXXXX)
shm_file=/dev/shm/usertgt-tgtconf-$$.img
tgtd_pid=""
stop_tgtd() {
  if [ -n "$tgtd_pid" ]; then
    tgtadm -C "$CONTROL_PORT" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    tgtadm -C "$CONTROL_PORT" --op delete --mode system >/dev/null 2>&1 || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$tgtd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$tgtd_pid" 2>/dev/null || true
    wait "$tgtd_pid" 2>/dev/null || true
    tgtd_pid=""
  fi
}
trap 'stop_tgtd; rm -rf "$work" "$shm_file"' EXIT INT TERM

echo "iscsi-test-cu -d -t ALL against tgt $(tgtd -V 2>/dev/null || echo '?'), ${SIZE_MB} MiB /dev/shm LUN, one portal"
for bs in $BLOCK_SIZES; do
  rm -f "$shm_file"
  truncate -s "${SIZE_MB}M" "$shm_file"
  tgtd -f -C "$CONTROL_PORT" --iscsi "portal=127.0.0.1:$PORT" >"$work/tgtd.log" 2>&1 &
  tgtd_pid=$!
  t="tgtadm -C $CONTROL_PORT --lld iscsi"
  for _ in $(seq 1 50); do $t --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
  $t --op new --mode target --tid 1 -T "$IQN"
  $t --op new --mode logicalunit --tid 1 --lun 1 -b "$shm_file" --blocksize "$bs"
  $t --op bind --mode target --tid 1 -I ALL
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
