#!/usr/bin/env bash
# The reference deployment's "time to copy and unpack a large tar image, mounted on a remote initiator" per LUN type, with a
# real Linux initiator: a Debian 6.1 kernel in QEMU/TCG (bench/linux_initiator/) logs in with iscsi_tcp,
# makes ext4 on the LUN, copies the tar image onto it, unpacks it there and syncs. Measured inside the guest.
# One target and one VM boot per LUN type: usertgt Malloc, AIO, TCMUR file, BIO (over a TCMUR file), DRBD
# standalone and protocol C (below), then tgt (STGT, rdwr backing store) on the same machine. Backing files live in a fresh dir under /tmp as in the
# seed ("all bdevs (except malloc) are backed by large files in /tmp").
# The reference deployment's LUN5 rows: BIO bio1 over drbd2 (DRBD 8.4, TCMUR file backing, drbdadm_up_primary) with the peer
# never started (drbd: "standalone", connection WFConnection, writes stay local), and with a second usertgt
# on 127.0.0.2 as the protocol C (drbdc) or A (drbda) peer; the full initial sync of the LUN (fixed rate
# 4G: c-plan-ahead 0) is finished (and timed) before the guest boots.
#
#   bench/seed_tar_bench.sh                      # all types
#   TYPES="malloc tgt" bench/seed_tar_bench.sh   # a subset
#
# CSV=FILE also writes the rows (round,type,copy_s,unpack_s,total_s,files,status) as CSV, the input of
# bench/seed_chart.ts (docs/benchmarks-seed.svg).
# Knobs: TYPES (malloc aio tcmur bio drbd drbdc tgt; also drbda), REPEAT (boots per type, rounds interleave the types; a median of
# total_s per type is printed at the end: TCG and a shared host make single runs noisy), SIZE_MB (LUN size), TAR (the image; default: built once from
# /usr/share/doc (~120 MB) into /var/cache/usertgt-bench/seed.tar), PORT, TGT_PORT, BETA_PORT, DRBD_PORTS.
# Needs root, qemu-system-x86 (apt-get install --no-install-recommends qemu-system-x86), tgt, binutils.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/tgtd.sh

TYPES=${TYPES:-"malloc aio tcmur bio drbd drbdc tgt"}
REPEAT=${REPEAT:-1}
SIZE_MB=${SIZE_MB:-512}
CACHE=${CACHE:-/var/cache/usertgt-bench}
TAR=${TAR:-$CACHE/seed.tar}
PORT=${PORT:-3412}
TGT_PORT=${TGT_PORT:-3413}
TGT_CONTROL_PORT=${TGT_CONTROL_PORT:-5413}
BETA_PORT=${BETA_PORT:-3474}
DRBD_PORTS=${DRBD_PORTS:-"7842 7843"}
IQN=iqn.2016-06.io.spdk:seedtar
IQN_TGT=iqn.2001-04.com.example:seedtar

[ -f dist/src/cli/main.js ] && [ -f dist/bench/drbd/sync_watch.js ] || npx tsc -p .
bench/linux_initiator/build.sh >/dev/null
if [ ! -f "$TAR" ]; then
  mkdir -p "$(dirname "$TAR")"
  tar --format=gnu -cf "$TAR.tmp" -C /usr/share doc 2>/dev/null || true
  mv "$TAR.tmp" "$TAR"
fi

work=$(mktemp -d /tmp/usertgt-seedtar.XXXXXX)
usertgt_pid=""
beta_pid=""
stop_all() {
  for pid in "$usertgt_pid" "$beta_pid"; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  usertgt_pid=""
  beta_pid=""
  tgtd_stop "$TGT_CONTROL_PORT"
}
trap 'stop_all; rm -rf "$work"' EXIT INT TERM

bdev_section() {
  case $1 in
    malloc) printf '[Malloc]\n  NumberOfLuns 1\n  LunSizeInMB %s\n  BlockSize 512\n' "$SIZE_MB" ;;
    aio) printf '[AIO]\n  AIO %s/aio0.img AIO0 4096 %s\n' "$work" "$SIZE_MB" ;;
    tcmur) printf '[TCMUR]\n  TCMUR 1 file_a /file/%s/tcmur_file00 size=%sM bs=4096\n' "$work" "$SIZE_MB" ;;
    bio) printf '[TCMUR]\n  TCMUR 2 file_b /file/%s/tcmur_file01 size=%sM bs=4096\n[BIO]\n  BIO bio0 /UMCfuse/dev/file_b\n' "$work" "$SIZE_MB" ;;
    drbd*) printf '[TCMUR]\n  TCMUR 2 file_b /file/%s/drbd_%s.img size=%sM bs=4096\n[BIO]\n  BIO bio1 /UMCfuse/dev/drbd2 %s r0 /UMCfuse/dev/file_b\n' \
      "$work" "${2:-alpha}" "$SIZE_MB" "${3:-drbdadm_up_primary}" ;;
  esac
}
lun_name() { case $1 in malloc) echo Malloc0 ;; aio) echo AIO0 ;; tcmur) echo file_a ;; bio) echo bio0 ;; drbd*) echo bio1 ;; esac; }

# The two-node resource of test/e2e/drbd_pair.test.ts: alpha (this target) on 127.0.0.1, beta on 127.0.0.2.
write_res() {
  local a b
  read -r a b <<<"$DRBD_PORTS"
  cat >"$work/r0.res" <<EOF
resource r0 {
    net { protocol $1; }
    disk { resync-rate 4G; c-plan-ahead 0; }
    on alpha {
        address 127.0.0.1:$a;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
    on beta {
        address 127.0.0.2:$b;
        volume 0 { device drbd2 minor 2; disk "/UMCfuse/dev/file_b"; meta-disk internal; }
    }
}
EOF
}
drbd_args() { printf '%s\n' --drbd-config "$work/r0.res" --node-name "$1" --rpc-socket "$work/$1.sock" --state-dir "$work/state-$1"; }

# start_beta PROTOCOL: the peer, Secondary (drbdadm_up), on 127.0.0.2; returns when alpha sees the full
# initial sync done (bench/drbd/sync_watch on alpha's RPC socket) and prints that line.
start_beta() {
  local conf=$work/beta.conf
  {
    bdev_section drbd beta drbdadm_up
    printf '[PortalGroup1]\n  Portal P 127.0.0.2:%s\n[InitiatorGroup1]\n  InitiatorName ANY\n  Netmask 127.0.0.2/32\n' "$BETA_PORT"
    printf '[TargetNode1]\n  TargetName %s\n  Mapping PortalGroup1 InitiatorGroup1\n  AuthMethod None\n  LUN0 bio1\n' "$IQN"
  } >"$conf"
  node dist/bench/drbd/sync_watch.js "$work/alpha.sock" r0 900 >"$work/sync.json" &
  local watch=$!
  mapfile -t args < <(drbd_args beta)
  node dist/src/cli/main.js serve -c "$conf" --no-fuse --log-level warn "${args[@]}" 2>"$work/usertgt-beta.log" &
  beta_pid=$!
  if ! wait "$watch"; then
    echo "bench: $1 peer did not reach UpToDate: $(cat "$work/sync.json")" >&2
    cat "$work/usertgt-beta.log" >&2
    return 1
  fi
  echo "  $1: initial sync $(cat "$work/sync.json")" >&2
}

start_usertgt() {
  local type=$1 conf=$work/$1.conf
  {
    bdev_section "$type"
    printf '[PortalGroup1]\n  Portal P 127.0.0.1:%s\n[InitiatorGroup1]\n  InitiatorName ANY\n  Netmask 127.0.0.1/32\n' "$PORT"
    printf '[TargetNode1]\n  TargetName %s\n  Mapping PortalGroup1 InitiatorGroup1\n  AuthMethod None\n  QueueDepth 64\n  LUN0 %s\n' "$IQN" "$(lun_name "$type")"
  } >"$conf"
  local args=()
  case $type in
    drbd*)
      rm -f "$work"/drbd_*.img # fresh metadata every round: drbdadm_up_primary does create-md, primary --force
      case $type in drbda) write_res A ;; *) write_res C ;; esac
      mapfile -t args < <(drbd_args alpha)
      ;;
  esac
  node dist/src/cli/main.js serve -c "$conf" --no-fuse --log-level warn "${args[@]}" 2>"$work/usertgt-$type.log" &
  usertgt_pid=$!
  for _ in $(seq 1 150); do
    if grep -q '^usertgt: ready$' "$work/usertgt-$type.log" 2>/dev/null; then
      case $type in drbdc) start_beta C || return 1 ;; drbda) start_beta A || return 1 ;; esac
      return 0
    fi
    kill -0 "$usertgt_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: usertgt ($type) did not start:" >&2
  cat "$work/usertgt-$type.log" >&2
  return 1
}

start_tgtd() {
  truncate -s "${SIZE_MB}M" "$work/tgt.img"
  tgtd_start "$TGT_CONTROL_PORT" "$TGT_PORT" "$IQN_TGT" "$work/tgt.img" 4096 "$work/tgtd.log"
}

echo "seed tar benchmark: image $TAR ($(($(stat -c %s "$TAR") / 1048576)) MiB), LUN ${SIZE_MB} MiB, ext4, Linux $(basename "$(ls -d "$CACHE"/x/linux-image-*)" | sed 's/linux-image-//') iscsi_tcp in QEMU/TCG"
echo "host: $(nproc) CPUs, $(uname -r), node $(node --version), $(qemu-system-x86_64 --version | head -1)"
printf '%-8s %-10s %-10s %-10s %-8s %s\n' type copy_s unpack_s total_s files status
CSV=${CSV:-}
[ -z "$CSV" ] || echo "round,type,copy_s,unpack_s,total_s,files,status" > "$CSV"
declare -A totals=()
for round in $(seq 1 "$REPEAT"); do
for type in $TYPES; do
  log=$work/console-$type.log
  status=ok
  if [ "$type" = tgt ]; then
    start_tgtd
    CONSOLE_LOG=$log bench/linux_initiator/run.sh "$TGT_PORT" "$IQN_TGT" "$TAR" 1 >/dev/null || status=FAILED
  else
    start_usertgt "$type" || { printf '%-8s %s\n' "$type" "usertgt did not start"; stop_all; continue; }
    CONSOLE_LOG=$log bench/linux_initiator/run.sh "$PORT" "$IQN" "$TAR" 1 >/dev/null || status=FAILED
  fi
  stop_all
  line=$(grep '^BENCH copy' "$log" | tr -d '\r' || true)
  field() { printf '%s\n' "$line" | grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
  printf '%-8s %-10s %-10s %-10s %-8s %s\n' "$type" "$(field 'copy seconds')" "$(field 'unpack seconds')" \
    "$(field total_seconds)" "$(field files)" "$status"
  [ -z "$CSV" ] || echo "$round,$type,$(field 'copy seconds'),$(field 'unpack seconds'),$(field total_seconds),$(field files),$status" >> "$CSV"
  [ "$status" = ok ] && totals[$type]="${totals[$type]:-} $(field total_seconds)"
  if [ "$status" != ok ]; then
    grep -a 'BENCH\|iscsi\|error\|Error' "$log" | tail -8 >&2 || true
    cp "$log" "/tmp/usertgt-seedtar-$type-console.log"
    echo "bench: $type console kept in /tmp/usertgt-seedtar-$type-console.log" >&2
  fi
done
done
if [ "$REPEAT" -gt 1 ]; then
  echo "median total_s over $REPEAT rounds (successful runs only):"
  for type in $TYPES; do
    # shellcheck disable=SC2086
    printf '%-8s %s   (%s)\n' "$type" "$(printf '%s\n' ${totals[$type]:-} | sort -n |
      awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')" "${totals[$type]:-}"
  done
fi
