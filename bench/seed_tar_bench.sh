#!/usr/bin/env bash
# The seed's "time to copy and unpack a large tar image, mounted on a remote initiator" per LUN type, with a
# real Linux initiator: a Debian 6.1 kernel in QEMU/TCG (bench/linux_initiator/) logs in with iscsi_tcp,
# makes ext4 on the LUN, copies the tar image onto it, unpacks it there and syncs. Measured inside the guest.
# One target and one VM boot per LUN type: usertgt Malloc, AIO, TCMUR file, BIO (over a TCMUR file), then
# tgt (STGT, rdwr backing store) on the same machine. Backing files live in a fresh dir under /tmp as in the
# seed ("all bdevs (except malloc) are backed by large files in /tmp").
#
#   bench/seed_tar_bench.sh                      # all types
#   TYPES="malloc tgt" bench/seed_tar_bench.sh   # a subset
#
# Knobs: TYPES (malloc aio tcmur bio tgt), REPEAT (boots per type, rounds interleave the types; a median of
# total_s per type is printed at the end: TCG and a shared host make single runs noisy), SIZE_MB (LUN size), TAR (the image; default: built once from
# /usr/share/doc (~120 MB) into /var/cache/usertgt-bench/seed.tar), PORT, TGT_PORT.
# Needs root, qemu-system-x86 (apt-get install --no-install-recommends qemu-system-x86), tgt, binutils.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/tgtd.sh

TYPES=${TYPES:-"malloc aio tcmur bio tgt"}
REPEAT=${REPEAT:-1}
SIZE_MB=${SIZE_MB:-512}
CACHE=${CACHE:-/var/cache/usertgt-bench}
TAR=${TAR:-$CACHE/seed.tar}
PORT=${PORT:-3412}
TGT_PORT=${TGT_PORT:-3413}
TGT_CONTROL_PORT=${TGT_CONTROL_PORT:-5413}
IQN=iqn.2016-06.io.spdk:seedtar
IQN_TGT=iqn.2001-04.com.example:seedtar

[ -f dist/src/cli/main.js ] || npx tsc -p .
bench/linux_initiator/build.sh >/dev/null
if [ ! -f "$TAR" ]; then
  mkdir -p "$(dirname "$TAR")"
  tar --format=gnu -cf "$TAR.tmp" -C /usr/share doc 2>/dev/null || true
  mv "$TAR.tmp" "$TAR"
fi

work=$(mktemp -d /tmp/usertgt-seedtar.XXXXXX)
usertgt_pid=""
stop_all() {
  if [ -n "$usertgt_pid" ]; then
    kill -TERM "$usertgt_pid" 2>/dev/null || true
    wait "$usertgt_pid" 2>/dev/null || true
    usertgt_pid=""
  fi
  tgtd_stop "$TGT_CONTROL_PORT"
}
trap 'stop_all; rm -rf "$work"' EXIT INT TERM

bdev_section() {
  case $1 in
    malloc) printf '[Malloc]\n  NumberOfLuns 1\n  LunSizeInMB %s\n  BlockSize 512\n' "$SIZE_MB" ;;
    aio) printf '[AIO]\n  AIO %s/aio0.img AIO0 4096 %s\n' "$work" "$SIZE_MB" ;;
    tcmur) printf '[TCMUR]\n  TCMUR 1 file_a /file/%s/tcmur_file00 size=%sM bs=4096\n' "$work" "$SIZE_MB" ;;
    bio) printf '[TCMUR]\n  TCMUR 2 file_b /file/%s/tcmur_file01 size=%sM bs=4096\n[BIO]\n  BIO bio0 /UMCfuse/dev/file_b\n' "$work" "$SIZE_MB" ;;
  esac
}
lun_name() { case $1 in malloc) echo Malloc0 ;; aio) echo AIO0 ;; tcmur) echo file_a ;; bio) echo bio0 ;; esac; }

start_usertgt() {
  local type=$1 conf=$work/$1.conf
  {
    bdev_section "$type"
    printf '[PortalGroup1]\n  Portal P 127.0.0.1:%s\n[InitiatorGroup1]\n  InitiatorName ANY\n  Netmask 127.0.0.1/32\n' "$PORT"
    printf '[TargetNode1]\n  TargetName %s\n  Mapping PortalGroup1 InitiatorGroup1\n  AuthMethod None\n  QueueDepth 64\n  LUN0 %s\n' "$IQN" "$(lun_name "$type")"
  } >"$conf"
  node dist/src/cli/main.js serve -c "$conf" --no-fuse --log-level warn 2>"$work/usertgt-$type.log" &
  usertgt_pid=$!
  for _ in $(seq 1 150); do
    grep -q '^usertgt: ready$' "$work/usertgt-$type.log" 2>/dev/null && return 0
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
declare -A totals=()
for round in $(seq 1 "$REPEAT"); do
for type in $TYPES; do
  log=$work/console-$type.log
  status=ok
  if [ "$type" = tgt ]; then
    start_tgtd
    CONSOLE_LOG=$log bench/linux_initiator/run.sh "$TGT_PORT" "$IQN_TGT" "$TAR" 1 >/dev/null || status=FAILED
  else
    start_usertgt "$type" || { printf '%-8s %s\n' "$type" "usertgt did not start"; continue; }
    CONSOLE_LOG=$log bench/linux_initiator/run.sh "$PORT" "$IQN" "$TAR" 1 >/dev/null || status=FAILED
  fi
  stop_all
  line=$(grep '^BENCH copy' "$log" | tr -d '\r' || true)
  field() { printf '%s\n' "$line" | grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
  printf '%-8s %-10s %-10s %-10s %-8s %s\n' "$type" "$(field 'copy seconds')" "$(field 'unpack seconds')" \
    "$(field total_seconds)" "$(field files)" "$status"
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
