#!/bin/sh
# FUSE device-tree throughput: sequential 1 MiB dd writes/reads and 4 KiB random I/O through the
# FUSE files of a TCMUR `ram` and `file` device. Needs root and /dev/fuse; run after `npx tsc -p .`.
#   bench/fuse_bench.sh [size=1G] [seconds per random run=5]
set -eu
SIZE=${1:-1G}
SECS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/usertgt-fuse-bench.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT"
node "$ROOT/dist/bench/fuse_serve.js" "$MNT" "$WORK" "$SIZE" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  mountpoint -q "$MNT" && umount -l "$MNT"
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q ready "$WORK/serve.out" 2>/dev/null && break
  sleep 0.1
done
grep -q ready "$WORK/serve.out" || { cat "$WORK/serve.err"; exit 1; }
MB=$(node -e "const s='$SIZE';const u={K:1/1024,M:1,G:1024}[s.slice(-1)]||1/1048576;console.log(Math.floor(parseInt(s)*u))")

rate() { sed -n 's/.*copied, \([0-9.]*\) s, \(.*\)$/\2/p'; }
echo "FUSE device tree benchmark: $SIZE devices, $(nproc) CPUs, kernel $(uname -r)"
for dev in ram_a file_a; do
  F=$MNT/dev/$dev
  # First pass allocates (ram) or extends the sparse file (file); the second is steady state.
  w1=$(dd if=/dev/zero of="$F" bs=1M count="$MB" conv=notrunc 2>&1 | rate)
  w2=$(dd if=/dev/zero of="$F" bs=1M count="$MB" conv=notrunc,fsync 2>&1 | rate)
  r1=$(dd if="$F" of=/dev/null bs=1M count="$MB" 2>&1 | rate)
  echo "$dev seq 1MiB: write first pass $w1, write+fsync $w2, read $r1"
  for op in write read; do
    for depth in 1 16; do
      echo "$dev random $(node "$ROOT/dist/bench/fuse_random.js" "$F" "$op" 4096 "$depth" "$SECS")"
    done
  done
done
