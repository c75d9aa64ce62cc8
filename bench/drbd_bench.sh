#!/usr/bin/env bash
# DRBD write throughput through iSCSI and resync throughput, on this one machine, in one run.
# Two `usertgt serve` processes, alpha on 127.0.0.1 and beta on 127.0.0.2, share one two-node .res (as
# test/e2e/drbd_pair.test.ts builds it); each backs drbd2 with a TCMUR file (BACKING_DIR, default /dev/shm so
# that no disk is the bottleneck) and serves LUN0 = BIO bio1 over drbd2 (alpha drbdadm_up_primary, beta
# drbdadm_up). Sequential WRITE(16) load from bench/drbd/write_load.ts (DEPTH sessions, one command each;
# libiscsi 1.19's iscsi-perf only reads), per IO size, for:
#   - floors without replication: usertgt Malloc, AIO, BIO over a TCMUR file (the DRBD stack minus DRBD),
#     and tgtd (Debian tgt, rdwr on a BACKING_DIR file) — none of them replicates;
#   - DRBD standalone: alpha Primary, peer never started (connection WFConnection, writes local only);
#   - DRBD protocol C, then A and B (PROTOCOLS): both nodes, connected, disks UpToDate.
# Resync: a full initial sync of the LUN (fresh metadata on both, alpha primary --force, then beta starts),
# once per entry of SYNC_RATES, timed by bench/drbd/sync_watch.ts on alpha's RPC socket. An entry is a fixed
# resync-rate with `c-plan-ahead 0` (the fixed-rate controller; 4G is the largest rate the grammar allows, i.e.
# unlimited) or `dynamic`: the .res sets nothing, so DRBD 8.4's defaults apply (c-plan-ahead 20: the dynamic
# controller toward c-fill-target, capped by c-max-rate 100M; resync-rate is then only its starting point).
# `dynamic:FILL` is the same with `c-fill-target FILL` (e.g. dynamic:10M): what a fast link wants, since the
# default 100 sectors ramps up by only ~400 KiB/s per second on a link that answers within a turn.
# The first entry must be a rate: it is also the .res of the write runs.
#
#   bench/drbd_bench.sh
#   BACKING_DIR=/var/tmp SIZES=4096 PROTOCOLS=C bench/drbd_bench.sh     # backing files on the real disk
#
# Knobs: DURATION (s per load run, 10), SIZES (bytes per WRITE, "4096 65536"), DEPTH (commands in flight,
# 32 as bench/iscsi_perf.sh), SIZE_MB (each backing file, 256), BACKING_DIR, PROTOCOLS ("C A B"),
# SYNC_RATES ("4G 20M dynamic"), FLOORS (1; 0 skips the non-replicated floors).
# Ports: DRBD 7840-7841, iSCSI 3470-3472, tgtd control 5470. Needs root for tgtd; 127.0.0.2 must be usable.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/tgtd.sh

DURATION=${DURATION:-10}
SIZES=${SIZES:-"4096 65536"}
DEPTH=${DEPTH:-32}
SIZE_MB=${SIZE_MB:-256}
BACKING_DIR=${BACKING_DIR:-/dev/shm}
PROTOCOLS=${PROTOCOLS:-"C A B"}
SYNC_RATES=${SYNC_RATES:-"4G 20M dynamic"}
FLOORS=${FLOORS:-1}
DRBD_PORT_A=7840
DRBD_PORT_B=7841
PORT_A=3470
PORT_B=3471
TGT_PORT=3472
TGT_CONTROL_PORT=5470
IQN=iqn.2016-06.io.spdk:drbdbench
IQN_TGT=iqn.2001-04.com.example:drbdbench

for tool in node tgtd tgtadm; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install tgt)" >&2; exit 1; }
done
[ -f dist/bench/drbd/write_load.js ] && [ -f dist/bench/drbd/sync_watch.js ] || npx tsc -p .

work=$(mktemp -d /tmp/usertgt-drbdbench.XXXXXX)
data=$(mktemp -d "$BACKING_DIR/usertgt-drbdbench.XXXXXX")
declare -A pids=()

stop_node() {
  local name=$1
  [ -n "${pids[$name]:-}" ] || return 0
  kill -TERM "${pids[$name]}" 2>/dev/null || true
  wait "${pids[$name]}" 2>/dev/null || true
  unset "pids[$name]"
}
stop_all() {
  for name in "${!pids[@]}"; do stop_node "$name"; done
  tgtd_stop "$TGT_CONTROL_PORT"
}
trap 'stop_all; rm -rf "$work" "$data"' EXIT INT TERM

# start_node NAME CONFIG [serve args...]: start `usertgt serve`, wait for "usertgt: ready".
start_node() {
  local name=$1 conf=$2
  shift 2
  node dist/src/cli/main.js serve -c "$conf" --no-fuse --log-level warn --rpc-socket "$work/$name.sock" \
    --state-dir "$work/state-$name" "$@" 2>"$work/$name.log" &
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

write_res() {
  local protocol=$1 rate=$2 disk="resync-rate $2; c-plan-ahead 0;"
  case $rate in
    dynamic) disk="" ;;
    dynamic:*) disk="c-fill-target ${rate#dynamic:};" ;;
  esac
  cat >"$work/r0.res" <<EOF
resource r0 {
    net { protocol $protocol; }
    disk { $disk }
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

target_section() {
  local host=$1 port=$2
  shift 2
  printf '[PortalGroup1]\n  Portal P %s:%s\n[InitiatorGroup1]\n  InitiatorName ANY\n  Netmask %s/32\n' "$host" "$port" "$host"
  printf '[TargetNode1]\n  TargetName %s\n  Mapping PortalGroup1 InitiatorGroup1\n  AuthMethod None\n  QueueDepth 64\n' "$IQN"
  local i=0
  for lun in "$@"; do printf '  LUN%s %s\n' "$i" "$lun"; i=$((i + 1)); done
}

drbd_node_conf() {
  local name=$1 host=$2 port=$3 helper=$4
  {
    printf '[TCMUR]\n  TCMUR 2 file_b /file/%s/%s.img size=%sM bs=4096\n' "$data" "$name" "$SIZE_MB"
    printf '[BIO]\n  BIO bio1 /UMCfuse/dev/drbd2 %s r0 /UMCfuse/dev/file_b\n' "$helper"
    target_section "$host" "$port" bio1
  } >"$work/$name.conf"
}

start_drbd_node() {
  local name=$1 host=$2 port=$3 helper=$4
  drbd_node_conf "$name" "$host" "$port" "$helper"
  start_node "$name" "$work/$name.conf" --drbd-config "$work/r0.res" --node-name "$name"
}

drbd_status() { node dist/src/cli/main.js drbdadm -s "$work/$1.sock" status r0 | tr '\n' ' ' | tr -s ' '; }

# load LABEL HOST PORT LUN [IQN]: one write_load run per size, one table row each.
load() {
  local label=$1 host=$2 port=$3 lun=$4 iqn=${5:-$IQN} bs out
  for bs in $SIZES; do
    out=$(node dist/bench/drbd/write_load.js --host "$host" --port "$port" --iqn "$iqn" --lun "$lun" \
      --bs "$bs" --depth "$DEPTH" --seconds "$DURATION" 2>&1) || {
      printf '%-34s %-7s FAILED: %s\n' "$label" "$bs" "$(printf '%s' "$out" | grep -m1 'write_load:' || printf '%s' "$out" | tail -1)"
      continue
    }
    printf '%-34s %-7s %-8s %s\n' "$label" "$bs" "$(printf '%s' "$out" | grep -o '"iops":[0-9]*' | cut -d: -f2)" \
      "$(printf '%s' "$out" | grep -o '"mbs":[0-9.]*' | cut -d: -f2)"
  done
}

# fresh_pair: new backing files (no metadata: drbdadm_up_primary runs create-md and primary --force).
fresh_pair() {
  rm -f "$data/alpha.img" "$data/beta.img"
}

# timed_sync RATE_LABEL: beta joins a Primary alpha; sync_watch on alpha times the full initial sync.
# Appends a row to $work/sync.txt (not printed from a subshell: it starts beta, whose pid must stay known).
timed_sync() {
  local label=$1 out
  node dist/bench/drbd/sync_watch.js "$work/alpha.sock" r0 900 >"$work/sync.json" &
  local watch=$!
  start_drbd_node beta 127.0.0.2 "$PORT_B" drbdadm_up
  wait "$watch" || true
  out=$(cat "$work/sync.json")
  field() { printf '%s' "$out" | grep -o "\"$1\":[0-9.a-z]*" | cut -d: -f2; }
  printf '%-12s %-10s %-12s %-12s %-14s %s\n' "$label" "$(field resync_kib)" "$(field handshake_s)" \
    "$(field sync_start_s)" "$(field uptodate_s)" "$(field mbs)" >>"$work/sync.txt"
  grep -q '"timeout"' "$work/sync.json" && echo "bench: resync did not finish: $out" >&2
  return 0
}

echo "DRBD write benchmark: sequential WRITE(16), $DEPTH in flight ($DEPTH sessions), ${DURATION}s per run, backing ${SIZE_MB} MiB files in $BACKING_DIR, LUN block 4096"
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(uname -r), node $(node --version), commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo "?")}"
printf '%-34s %-7s %-8s %s\n' "target / LUN" "bytes" "IOPS" "MB/s"

if [ "$FLOORS" = 1 ]; then
  {
    printf '[Malloc]\n  NumberOfLuns 1\n  LunSizeInMB %s\n  BlockSize 4096\n' "$SIZE_MB"
    printf '[AIO]\n  AIO %s/aio0.img AIO0 4096 %s\n' "$data" "$SIZE_MB"
    printf '[TCMUR]\n  TCMUR 1 file_a /file/%s/file_a.img size=%sM bs=4096\n' "$data" "$SIZE_MB"
    printf '[BIO]\n  BIO bio0 /UMCfuse/dev/file_a\n'
    target_section 127.0.0.1 "$PORT_A" Malloc0 AIO0 bio0
  } >"$work/floors.conf"
  start_node floors "$work/floors.conf"
  load "usertgt Malloc (no replication)" 127.0.0.1 "$PORT_A" 0
  load "usertgt AIO (no replication)" 127.0.0.1 "$PORT_A" 1
  load "usertgt BIO/TCMUR (no DRBD)" 127.0.0.1 "$PORT_A" 2
  stop_node floors
  rm -f "$data/aio0.img" "$data/file_a.img"
  truncate -s "${SIZE_MB}M" "$data/tgt.img"
  tgtd_start "$TGT_CONTROL_PORT" "$TGT_PORT" "$IQN_TGT" "$data/tgt.img" 4096 "$work/tgtd.log"
  load "tgt 1.0.85 rdwr (no replication)" 127.0.0.1 "$TGT_PORT" 1 "$IQN_TGT"
  tgtd_stop "$TGT_CONTROL_PORT"
  rm -f "$data/tgt.img"
fi

# Standalone, then the first timed sync (first rate) and protocol C on the synced pair.
first_rate=${SYNC_RATES%% *}
fresh_pair
write_res C "$first_rate"
start_drbd_node alpha 127.0.0.1 "$PORT_A" drbdadm_up_primary
echo "  alpha: $(drbd_status alpha)" >&2
load "DRBD standalone (peer not started)" 127.0.0.1 "$PORT_A" 0
timed_sync "$first_rate"
running=C
for protocol in $PROTOCOLS; do
  if [ "$protocol" != "$running" ]; then
    running=$protocol
    # Same files, clean metadata from the last stop: the pair reconnects without a resync.
    stop_all
    write_res "$protocol" "$first_rate"
    start_drbd_node alpha 127.0.0.1 "$PORT_A" drbdadm_up_primary
    start_drbd_node beta 127.0.0.2 "$PORT_B" drbdadm_up
    node dist/bench/drbd/sync_watch.js "$work/alpha.sock" r0 300 >/dev/null || echo "bench: protocol $protocol pair did not come up" >&2
  fi
  echo "  protocol $protocol alpha: $(drbd_status alpha)" >&2
  load "DRBD protocol $protocol (peer UpToDate)" 127.0.0.1 "$PORT_A" 0
done
stop_all

for rate in ${SYNC_RATES#"$first_rate"}; do
  fresh_pair
  write_res C "$rate"
  start_drbd_node alpha 127.0.0.1 "$PORT_A" drbdadm_up_primary
  timed_sync "$rate"
  stop_all
done

echo
echo "full initial resync of the LUN (protocol C, LUN idle; seconds from beta's start; MB/s over the SyncSource span)"
echo "(a rate: resync-rate RATE with c-plan-ahead 0; dynamic: DRBD's default controller settings)"
printf '%-12s %-10s %-12s %-12s %-14s %s\n' resync-rate KiB handshake_s sync_start_s uptodate_s MB/s
cat "$work/sync.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
