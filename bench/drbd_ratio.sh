#!/usr/bin/env bash
# What DRBD replication costs a writer, as a ratio: the same alpha node, the same files, the same LUN
# (BIO over /UMCfuse/dev/drbd2 over a TCMUR file), once disconnected (`drbdadm disconnect`: Primary,
# StandAlone, writes local only) and once connected to beta (Established, both UpToDate), interleaved
# ROUNDS times per protocol and IO size. The load is /usr/local/bin/iscsi-load (libiscsi, C: the client
# costs little and the same for both), which reads alpha's CPU over its measured window; beta's CPU is read
# here from /proc/PID/stat over the same window (started after the warm-up, stopped at the end).
#
#   bench/drbd_ratio.sh
#   BACKING_DIR=/var/tmp PROTOCOLS=C SIZES=4096 ROUNDS=5 bench/drbd_ratio.sh
#
# Prints one line per run and, per protocol and size, the medians and the connected/disconnected ratios:
# IOPS, MB/s, CPU µs per write (disconnected: alpha alone; connected: alpha + beta).
# Knobs: DURATION (measured s, 5), WARM (s, 1), SIZES ("4096 65536 262144"), DEPTH (32, one session),
# ROUNDS (3), PROTOCOLS ("C A"), SIZE_MB (backing files, 256), REGION_MB (LBAs written, 64: keeps the
# resync after each disconnected run short), BACKING_DIR (/dev/shm), PATTERN (seq | rand), NODE_ARGS (for
# both nodes' node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"), V8_ARGS (V8 flags for both nodes, printed in
# the header, e.g. "--max-semi-space-size=1"), CONNECTED_ONLY (1: skip the disconnected runs).
# Ports: DRBD 7850-7851, iSCSI 3480-3481. Run it in a private network namespace on a shared machine:
#   unshare -n sh -c 'ip link set lo up && bench/drbd_ratio.sh'
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARM=${WARM:-1}
SIZES=${SIZES:-"4096 65536 262144"}
DEPTH=${DEPTH:-32}
ROUNDS=${ROUNDS:-3}
PROTOCOLS=${PROTOCOLS:-"C A"}
SIZE_MB=${SIZE_MB:-256}
REGION_MB=${REGION_MB:-64}
BACKING_DIR=${BACKING_DIR:-/dev/shm}
PATTERN=${PATTERN:-seq}
V8_ARGS=${V8_ARGS:-}
DRBD_PORT_A=7850
DRBD_PORT_B=7851
PORT_A=3480
PORT_B=3481
IQN=iqn.2016-06.io.spdk:drbdratio
LOAD=${LOAD:-/usr/local/bin/iscsi-load}

[ -x "$LOAD" ] || { echo "bench: $LOAD is missing (../shared/bench/README.md)" >&2; exit 1; }
[ -f dist/src/cli/main.js ] || npx tsc -p .

work=$(mktemp -d /tmp/usertgt-drbdratio.XXXXXX)
data=$(mktemp -d "$BACKING_DIR/usertgt-drbdratio.XXXXXX")
declare -A pids=()

stop_node() {
  local name=$1
  [ -n "${pids[$name]:-}" ] || return 0
  kill -TERM "${pids[$name]}" 2>/dev/null || true
  wait "${pids[$name]}" 2>/dev/null || true
  unset "pids[$name]"
}
stop_all() { for name in "${!pids[@]}"; do stop_node "$name"; done; }
trap 'stop_all; rm -rf "$work" "$data"' EXIT INT TERM

write_res() {
  cat >"$work/r0.res" <<EOF
resource r0 {
    net { protocol $1; }
    disk { resync-rate 4G; c-plan-ahead 0; }
    on alpha {
        address 127.0.0.1:$DRBD_PORT_A;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.2:$DRBD_PORT_B;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
}
EOF
}

start_node() {
  local name=$1 host=$2 port=$3 helper=$4
  {
    printf '[TCMUR]\n  TCMUR 2 file_b /file/%s/%s.img size=%sM bs=4096\n' "$data" "$name" "$SIZE_MB"
    printf '[BIO]\n  BIO bio1 /UMCfuse/dev/drbd2 %s r0 /UMCfuse/dev/file_b\n' "$helper"
    printf '[PortalGroup1]\n  Portal P %s:%s\n[InitiatorGroup1]\n  InitiatorName ANY\n  Netmask %s/32\n' "$host" "$port" "$host"
    printf '[TargetNode1]\n  TargetName %s\n  Mapping PortalGroup1 InitiatorGroup1\n  AuthMethod None\n  QueueDepth 64\n  LUN0 bio1\n' "$IQN"
  } >"$work/$name.conf"
  # shellcheck disable=SC2086 # V8_ARGS, NODE_ARGS: several words (e.g. --cpu-prof --cpu-prof-dir=DIR)
  node $V8_ARGS ${NODE_ARGS:-} dist/src/cli/main.js serve -c "$work/$name.conf" --no-fuse --log-level warn --rpc-socket "$work/$name.sock" \
    --state-dir "$work/state-$name" --drbd-config "$work/r0.res" --node-name "$name" 2>"$work/$name.log" &
  pids[$name]=$!
  for _ in $(seq 1 200); do
    grep -q '^usertgt: ready$' "$work/$name.log" 2>/dev/null && return 0
    kill -0 "${pids[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: $name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

drbdadm() { node dist/src/cli/main.js drbdadm -s "$work/alpha.sock" "$@"; }
status() { drbdadm status r0 | tr '\n' ' ' | tr -s ' '; }
# wait_until PATTERN: alpha's status matches within 120 s.
wait_until() {
  for _ in $(seq 1 1200); do
    status | grep -q "$1" && return 0
    sleep 0.1
  done
  echo "bench: alpha never reached '$1': $(status)" >&2
  exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run MODE BS: one iscsi-load run against alpha; prints "MODE BS iops mbs cpu_alpha_us cpu_beta_us cpu_total_us".
run() {
  local mode=$1 bs=$2 out b0 b1 beta_us=0 ios pat=""
  [ "$PATTERN" = rand ] && pat=-r
  "$LOAD" -u "iscsi://127.0.0.1:$PORT_A/$IQN/0" -o write -b "$bs" -q "$DEPTH" -n 1 -t "$DURATION" -w "$WARM" \
    $pat -R "$REGION_MB" -p "${pids[alpha]}" >"$work/load.out" 2>&1 &
  local lp=$!
  sleep "$WARM"
  b0=$(cpu_ticks "${pids[beta]}")
  sleep "$DURATION"
  b1=$(cpu_ticks "${pids[beta]}")
  wait "$lp" || { echo "bench: iscsi-load failed: $(cat "$work/load.out")" >&2; exit 1; }
  out=$(cat "$work/load.out")
  field() { printf '%s' "$out" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2; }
  ios=$(field ios)
  [ "$mode" = connected ] && beta_us=$(awk -v t=$((b1 - b0)) -v hz="$(getconf CLK_TCK)" -v n="$ios" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
  printf '%s %s %s %s %s %s %s\n' "$mode" "$bs" "$(field iops)" "$(field mbs)" "$(field cpu_us_per_io)" "$beta_us" \
    "$(awk -v a="$(field cpu_us_per_io)" -v b="$beta_us" 'BEGIN{printf "%.1f", a + b}')"
}

median() { sort -n | awk '{v[NR]=$1} END{if (NR % 2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }

echo "DRBD replication cost: iscsi-load WRITE16 $PATTERN, QD$DEPTH one session, ${DURATION}s (+${WARM}s warm-up) per run, first ${REGION_MB} MiB of a ${SIZE_MB} MiB LUN, backing in $BACKING_DIR, $ROUNDS interleaved rounds"
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r), node $(node --version)${V8_ARGS:+ $V8_ARGS}, commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")}"
echo "mode bytes IOPS MB/s cpu_alpha_us/io cpu_beta_us/io cpu_total_us/io"
for protocol in $PROTOCOLS; do
  stop_all
  rm -f "$data/alpha.img" "$data/beta.img"
  write_res "$protocol"
  start_node alpha 127.0.0.1 "$PORT_A" drbdadm_up_primary
  start_node beta 127.0.0.2 "$PORT_B" drbdadm_up
  wait_until "replication:Established peer-disk:UpToDate"
  : >"$work/results.txt"
  for round in $(seq 1 "$ROUNDS"); do
    for bs in $SIZES; do
      if [ "${CONNECTED_ONLY:-0}" != 1 ]; then
        drbdadm disconnect r0 >/dev/null
        wait_until "StandAlone"
        run disconnected "$bs" | tee -a "$work/results.txt"
        drbdadm connect r0 >/dev/null
        wait_until "replication:Established peer-disk:UpToDate"
      fi
      run connected "$bs" | tee -a "$work/results.txt"
    done
  done
  echo "protocol $protocol medians (connected / disconnected):"
  for bs in $SIZES; do
    med() { awk -v m="$1" -v b="$bs" -v c="$2" '$1 == m && $2 == b {print $c}' "$work/results.txt" | median; }
    di=$(med disconnected 3) ci=$(med connected 3) dm=$(med disconnected 4) cm=$(med connected 4)
    dc=$(med disconnected 7) cc=$(med connected 7)
    awk -v p="$protocol" -v b="$bs" -v di="$di" -v ci="$ci" -v dm="$dm" -v cm="$cm" -v dc="$dc" -v cc="$cc" 'BEGIN{
      printf "  %s %7s B: IOPS %s / %s = %.2fx  MB/s %s / %s = %.2fx  CPU us/write %s / %s = %.2fx\n",
        p, b, ci, di, ci / di, cm, dm, cm / dm, cc, dc, cc / dc }'
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
