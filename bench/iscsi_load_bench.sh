#!/usr/bin/env bash
# usertgt's AIO LUN against tgt (STGT) on the same kind of backing, measured with iscsi-load
# (../shared/bench/iscsi-load.c: libiscsi load generator that also reads the target's CPU time).
# Both targets run at once, each on its own backing of the same kind; runs are interleaved
# (usertgt, tgt, usertgt, tgt, ...) and the table gives medians and usertgt/tgt ratios.
#
#   bench/iscsi_load_bench.sh                  # backings shm ext4 loop, tgt rdwr and aio, 3 rounds
#   ROUNDS=5 DURATION=10 bench/iscsi_load_bench.sh shm
#   USERTGT_IO_ENGINE=threadpool bench/iscsi_load_bench.sh loop   # usertgt's fallback engine
#   AIO_DIRECTIO=No TGT_BSTYPES=rdwr bench/iscsi_load_bench.sh loop # the loop device through its page cache
#
# Backings: shm = a file on /dev/shm (tmpfs), ext4 = a file in EXT4_DIR (default /var/tmp; must be
# ext4), loop = a loop device over a file on /dev/shm (usertgt: O_EXCL + O_DIRECT under io_uring).
# Knobs: ROUNDS, DURATION (s), WARMUP (s), SIZE_MB, TGT_BSTYPES ("rdwr aio"), WORKLOADS (names below),
# AIO_DIRECTIO (Yes|No: usertgt's [AIO] DirectIo; unset = its default), TGT_CONTROL_PORT (tgtd's -C),
# PLACEMENT (QD1 workloads, default "same split") and PLACEMENT_QD (the others, default "any split"): where
# the target (all its threads) and iscsi-load run, applied alike to both targets before every run:
#   same  = target and iscsi-load on CPU 0
#   split = target on CPU 0, iscsi-load on CPU 1
#   any   = both on every CPU (the scheduler places them)
# Each workload runs once per placement named. On a VM whose idle vCPUs halt, a QD1 request's latency
# depends mostly on whether the target and the initiator share a CPU (docs/benchmarks.md), so an
# unpinned QD1 run measures where the scheduler happened to put them; at QD32 an unpinned
# multi-threaded target pays cross-CPU wake-ups between its own threads that a pinned one does not.
# Runs itself inside a private network namespace (unshare -n) so ports never collide; needs root,
# tgt (tgtd, tgtadm), libiscsi-dev (to build iscsi-load), losetup.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${USERTGT_BENCH_NETNS:-}" ]; then
  exec env USERTGT_BENCH_NETNS=1 unshare -n sh -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
. bench/lib/tgtd.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
SIZE_MB=${SIZE_MB:-256}
TGT_BSTYPES=${TGT_BSTYPES:-"rdwr aio"}
EXT4_DIR=${EXT4_DIR:-/var/tmp}
WORKLOADS=${WORKLOADS:-"randread4k_qd32 randwrite4k_qd32 seqread128k_qd8 fuawrite4k_qd32 randread4k_qd1 randwrite4k_qd1"}
PLACEMENT=${PLACEMENT:-"same split"}
PLACEMENT_QD=${PLACEMENT_QD:-"any split"}
ALL_CPUS=0-$(($(nproc) - 1))
BACKINGS=${*:-"shm ext4 loop"}
USERTGT_PORT=3510
TGT_PORT=3511
TGT_CONTROL_PORT=${TGT_CONTROL_PORT:-5511}
IQN_U=iqn.2016-06.io.spdk:loadbench
IQN_T=iqn.2001-04.com.example:loadbench

load_args() {
  case $1 in
    randread4k_qd32) echo "-o read -b 4096 -q 32 -r" ;;
    randwrite4k_qd32) echo "-o write -b 4096 -q 32 -r" ;;
    seqread128k_qd8) echo "-o read -b 131072 -q 8" ;;
    fuawrite4k_qd32) echo "-o write -F -b 4096 -q 32 -r" ;;
    randread4k_qd1) echo "-o read -b 4096 -q 1 -r" ;;
    randwrite4k_qd1) echo "-o write -b 4096 -q 1 -r" ;;
    *) echo "bench: unknown workload $1" >&2; exit 1 ;;
  esac
}

# placement_cpus NAME -> "TARGET_CPUS LOAD_CPUS"
placement_cpus() {
  case $1 in
    same) echo "0 0" ;;
    split) echo "0 1" ;;
    any) echo "$ALL_CPUS $ALL_CPUS" ;;
    *) echo "bench: unknown placement $1 (same, split, any)" >&2; exit 1 ;;
  esac
}
for pl in $PLACEMENT $PLACEMENT_QD; do placement_cpus "$pl" >/dev/null; done
if [ "$(nproc)" -lt 2 ] && [[ " $PLACEMENT $PLACEMENT_QD " == *" split "* ]]; then
  echo "bench: placement split needs 2 CPUs" >&2
  exit 1
fi

# pin PID CPUS: every thread of the target (tgtd's workers, node's, io_uring's io-wq workers) on CPUS.
# New threads inherit the mask; check_pinned finds any that did not.
pin() { taskset -a -pc "$2" "$1" >/dev/null; }
check_pinned() {
  local pid=$1 want t got
  want=$(sed -n 's/^Cpus_allowed_list:\t//p' "/proc/$pid/status" 2>/dev/null) || return 0
  for t in /proc/"$pid"/task/*; do
    got=$(sed -n 's/^Cpus_allowed_list:\t//p' "$t/status" 2>/dev/null) || continue
    [ -z "$got" ] || [ "$got" = "$want" ] ||
      echo "bench: thread $(cat "$t/comm" 2>/dev/null) of $pid ran on CPUs $got, not $want" >&2
  done
}

for tool in tgtd tgtadm node losetup taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install tgt util-linux)" >&2; exit 1; }
done
if ! command -v iscsi-load >/dev/null; then
  mkdir -p bench/.bin
  if [ ! -x bench/.bin/iscsi-load ]; then
    gcc -O2 -o bench/.bin/iscsi-load ../shared/bench/iscsi-load.c -liscsi ||
      { echo "bench: cannot build iscsi-load (apt-get install libiscsi-dev)" >&2; exit 1; }
  fi
  PATH=$PWD/bench/.bin:$PATH
fi
[ -f dist/src/cli/main.js ] || npx tsc -p .

work=$(mktemp -d /tmp/usertgt-loadbench.XXXXXX)
usertgt_pid=""
loops=()
files=()
stop_usertgt() {
  if [ -n "$usertgt_pid" ]; then
    kill -TERM "$usertgt_pid" 2>/dev/null || true
    wait "$usertgt_pid" 2>/dev/null || true
    usertgt_pid=""
  fi
}
cleanup() {
  stop_usertgt
  tgtd_stop "$TGT_CONTROL_PORT"
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -f "${files[@]}"
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# make_backing KIND WHO: sets $backing to the path (file or loop device), allocated and filled.
make_backing() {
  local kind=$1 who=$2 f
  case $kind in
    shm | loop) f=/dev/shm/usertgt-loadbench-$who-$$.img ;;
    ext4) f=$EXT4_DIR/usertgt-loadbench-$who-$$.img ;;
  esac
  files+=("$f")
  dd if=/dev/zero of="$f" bs=1M count="$SIZE_MB" status=none conv=fsync
  if [ "$kind" = loop ]; then
    local dev
    dev=$(losetup --find --show "$f")
    loops+=("$dev")
    backing=$dev
  else
    backing=$f
  fi
}

start_usertgt() {
  local backing=$1 conf=$work/usertgt.conf
  cat >"$conf" <<EOF
[AIO]
${AIO_DIRECTIO:+  DirectIo $AIO_DIRECTIO
}  AIO $backing AIO0 4096
[PortalGroup1]
  Portal P 127.0.0.1:$USERTGT_PORT
[InitiatorGroup1]
  InitiatorName ANY
  Netmask 127.0.0.1/32
[TargetNode1]
  TargetName $IQN_U
  Mapping PortalGroup1 InitiatorGroup1
  AuthMethod None
  QueueDepth 64
  LUN0 AIO0
EOF
  node dist/src/cli/main.js serve -c "$conf" --log-level info --no-fuse --state-dir "$work/state" 2>"$work/usertgt.log" &
  usertgt_pid=$!
  for _ in $(seq 1 100); do
    grep -q '^usertgt: ready$' "$work/usertgt.log" 2>/dev/null && break
    kill -0 "$usertgt_pid" 2>/dev/null || { cat "$work/usertgt.log" >&2; exit 1; }
    sleep 0.1
  done
  engine=$(grep -o '"msg":"I/O engine[^"]*"' "$work/usertgt.log" | head -1 | sed 's/"msg":"//; s/"$//')
}

# one_run URL PID WORKLOAD TARGET_CPUS LOAD_CPUS -> "iops cpu_us_per_io lat_p50_us lat_avg_us"
one_run() {
  local out
  pin "$2" "$4"
  # shellcheck disable=SC2046
  out=$(taskset -c "$5" iscsi-load -u "$1" -p "$2" -t "$DURATION" -w "$WARMUP" -n 1 $(load_args "$3") 2>&1) || true
  check_pinned "$2"
  local iops cpu p50 avg
  iops=$(grep -o 'iops=[0-9.]*' <<<"$out" | cut -d= -f2)
  cpu=$(grep -o 'cpu_us_per_io=[0-9.]*' <<<"$out" | cut -d= -f2)
  p50=$(grep -o 'lat_p50_us=[0-9.]*' <<<"$out" | cut -d= -f2)
  avg=$(grep -o 'lat_avg_us=[0-9.]*' <<<"$out" | cut -d= -f2)
  if [ -z "$iops" ]; then
    echo "bench: iscsi-load $1 $3 failed: $(tail -2 <<<"$out")" >&2
    echo "0 0 0 0"
  else
    echo "$iops $cpu $p50 $avg"
  fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "iscsi-load, ${DURATION}s per run after ${WARMUP}s warm-up, ${ROUNDS} interleaved rounds, ${SIZE_MB} MiB LUN, 4096-byte blocks, 1 session"
echo "host: $(nproc) CPUs, $(uname -r), node $(node --version), tgt $(tgtd -V 2>/dev/null || echo '?'), in a private netns"
echo "placement: same = target and iscsi-load on CPU 0, split = target on CPU 0 and iscsi-load on CPU 1, any = unpinned"
printf '| %-6s | %-17s | %-5s | %-8s | %9s | %9s | %8s | %8s | %12s | %12s |\n' backing workload place tgt "usertgt IOPS" "tgt IOPS" "IOPS ×" "CPU/IO ×" "µs/IO u / t" "p50 µs u / t"
printf '|%s|\n' "--------|-------------------|-------|----------|-----------|-----------|----------|----------|--------------|--------------"
for kind in $BACKINGS; do
  make_backing "$kind" u
  ub=$backing
  start_usertgt "$ub"
  echo "[$kind] usertgt: $engine, on $ub${AIO_DIRECTIO:+, DirectIo $AIO_DIRECTIO}" >&2
  for bstype in $TGT_BSTYPES; do
    make_backing "$kind" "t$bstype"
    tb=$backing
    tgtd_start "$TGT_CONTROL_PORT" "$TGT_PORT" "$IQN_T" "$tb" 4096 "$work/tgtd.log" "$bstype"
    for wl in $WORKLOADS; do
      placements=$PLACEMENT_QD
      [[ $wl != *_qd1 ]] || placements=$PLACEMENT
      for pl in $placements; do
        read -r tcpus lcpus <<<"$(placement_cpus "$pl")"
        : >"$work/u" && : >"$work/t"
        for _ in $(seq 1 "$ROUNDS"); do
          one_run "iscsi://127.0.0.1:$USERTGT_PORT/$IQN_U/0" "$usertgt_pid" "$wl" "$tcpus" "$lcpus" >>"$work/u"
          one_run "iscsi://127.0.0.1:$TGT_PORT/$IQN_T/1" "$tgtd_pid" "$wl" "$tcpus" "$lcpus" >>"$work/t"
        done
        ui=$(cut -d' ' -f1 "$work/u" | median); ti=$(cut -d' ' -f1 "$work/t" | median)
        uc=$(cut -d' ' -f2 "$work/u" | median); tc=$(cut -d' ' -f2 "$work/t" | median)
        ul=$(cut -d' ' -f3 "$work/u" | median); tl=$(cut -d' ' -f3 "$work/t" | median)
        awk -v k="$kind" -v w="$wl" -v p="$pl" -v b="$bstype" -v ui="$ui" -v ti="$ti" -v uc="$uc" -v tc="$tc" -v ul="$ul" -v tl="$tl" 'BEGIN {
          printf "| %-6s | %-17s | %-5s | %-8s | %9.0f | %9.0f | %8s | %8s | %5.1f / %-5.1f | %5.0f / %-5.0f |\n",
            k, w, p, b, ui, ti, (ti > 0 ? sprintf("%.2f", ui / ti) : "n/a"), (tc > 0 ? sprintf("%.2f", uc / tc) : "n/a"), uc, tc, ul, tl }'
      done
    done
    tgtd_stop "$TGT_CONTROL_PORT"
  done
  stop_usertgt
done
