#!/usr/bin/env bash
# Throughput of usertgt against tgt (STGT) with libiscsi's iscsi-perf, same LUN size and block size,
# both RAM-backed: usertgt serves a Malloc LUN, tgtd a file on /dev/shm (tgt has no RAM backing store;
# /dev/shm is tmpfs, so its I/O never touches a disk). Prints both figures and the ratio.
#
#   bench/iscsi_perf.sh                       # 10 s per run, block sizes 512 and 4096
#   DURATION=30 BLOCK_SIZES=4096 RANDOM_IO=1 bench/iscsi_perf.sh
#
# Knobs (environment): DURATION (s, per run), BLOCK_SIZES, SIZE_MB (LUN size), MAX_REQUESTS (iscsi-perf -m,
# commands in flight), BLOCKS (iscsi-perf -b, blocks per READ16), RANDOM_IO=1 (iscsi-perf -r).
# Needs root for tgtd, plus iscsi-perf (libiscsi-bin) and tgtd/tgtadm (tgt). iscsi-perf only reads (READ16).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/tgtd.sh

DURATION=${DURATION:-10}
BLOCK_SIZES=${BLOCK_SIZES:-"512 4096"}
SIZE_MB=${SIZE_MB:-128}
MAX_REQUESTS=${MAX_REQUESTS:-32}
BLOCKS=${BLOCKS:-8}
RANDOM_IO=${RANDOM_IO:-0}
USERTGT_PORT=${USERTGT_PORT:-3398}
TGT_PORT=${TGT_PORT:-3261}
TGT_CONTROL_PORT=${TGT_CONTROL_PORT:-5398}
IQN_USERTGT=iqn.2016-06.io.spdk:bench
IQN_TGT=iqn.2001-04.com.example:bench

for tool in iscsi-perf tgtd tgtadm node; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install libiscsi-bin tgt)" >&2; exit 1; }
done
[ -f dist/src/cli/main.js ] || npx tsc -p .

work=$(mktemp -d /tmp/usertgt-bench.XXXXXX)
usertgt_pid=""
shm_file=/dev/shm/usertgt-bench-$$.img

stop_usertgt() {
  if [ -n "$usertgt_pid" ]; then
    kill -TERM "$usertgt_pid" 2>/dev/null || true
    wait "$usertgt_pid" 2>/dev/null || true
    usertgt_pid=""
  fi
}
stop_tgtd() { tgtd_stop "$TGT_CONTROL_PORT"; }
cleanup() {
  stop_usertgt
  stop_tgtd
  rm -rf "$work" "$shm_file"
}
trap cleanup EXIT INT TERM

perf_args=(-t "$DURATION" -m "$MAX_REQUESTS" -b "$BLOCKS")
[ "$RANDOM_IO" = 1 ] && perf_args+=(-r)

# iscsi-perf redraws one status line with \r; the last "iops average N (M MB/s)" is the result.
run_perf() {
  local url=$1 out
  out=$(iscsi-perf "${perf_args[@]}" "$url" 2>&1 | tr '\r' '\n') || true
  local line
  line=$(printf '%s\n' "$out" | grep -o 'iops average [0-9]* ([0-9]* MB/s)' | tail -1)
  if [ -z "$line" ]; then
    echo "bench: iscsi-perf $url produced no result:" >&2
    printf '%s\n' "$out" | tail -5 >&2
    echo "0 0"
    return
  fi
  printf '%s\n' "$line" | sed -E 's/iops average ([0-9]+) \(([0-9]+) MB\/s\)/\1 \2/'
}

start_usertgt() {
  local bs=$1 conf=$work/usertgt-$1.conf
  cat >"$conf" <<EOF
[Malloc]
  NumberOfLuns 1
  LunSizeInMB $SIZE_MB
  BlockSize $bs
[PortalGroup1]
  Portal P 127.0.0.1:$USERTGT_PORT
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName $IQN_USERTGT
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  QueueDepth 64
  LUN0 Malloc0
EOF
  node dist/src/cli/main.js serve -c "$conf" --log-level warn 2>"$work/usertgt.log" &
  usertgt_pid=$!
  for _ in $(seq 1 100); do
    grep -q '^usertgt: ready$' "$work/usertgt.log" 2>/dev/null && return 0
    kill -0 "$usertgt_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: usertgt did not start:" >&2
  cat "$work/usertgt.log" >&2
  exit 1
}

start_tgtd() {
  rm -f "$shm_file"
  truncate -s "${SIZE_MB}M" "$shm_file"
  tgtd_start "$TGT_CONTROL_PORT" "$TGT_PORT" "$IQN_TGT" "$shm_file" "$1" "$work/tgtd.log"
}

mode=sequential
[ "$RANDOM_IO" = 1 ] && mode=random
echo "iscsi-perf READ16, $mode, ${BLOCKS} blocks per command, ${MAX_REQUESTS} in flight, ${DURATION}s per run, ${SIZE_MB} MiB LUN"
echo "host: $(nproc) CPUs, $(uname -r), node $(node --version), tgt $(tgtd -V 2>/dev/null || echo '?')"
printf '%-6s %-22s %-22s %s\n' "bs" "usertgt IOPS (MB/s)" "tgt IOPS (MB/s)" "usertgt/tgt"
for bs in $BLOCK_SIZES; do
  start_usertgt "$bs"
  read -r u_iops u_mbs < <(run_perf "iscsi://127.0.0.1:$USERTGT_PORT/$IQN_USERTGT/0")
  stop_usertgt

  start_tgtd "$bs"
  read -r t_iops t_mbs < <(run_perf "iscsi://127.0.0.1:$TGT_PORT/$IQN_TGT/1")
  stop_tgtd

  ratio=$(awk -v u="$u_iops" -v t="$t_iops" 'BEGIN { if (t > 0) printf "%.2f", u / t; else print "n/a" }')
  printf '%-6s %-22s %-22s %s\n' "$bs" "$u_iops ($u_mbs)" "$t_iops ($t_mbs)" "$ratio"
done
