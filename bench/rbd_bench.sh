#!/bin/bash
# 4 KiB random writes and reads at queue depth 32 on one image, interleaved round by round:
#   rbd bench --io-threads 32 with rbd_cache=false (how usertgt runs librbd), with usertgt stopped (it holds
#   the image's exclusive lock), then usertgt serving the image under iscsi-load, once per checkout in
#   USERTGT_DIRS (to compare builds: e.g. "/work/wt/baseline $PWD").
# Prints IOPS, and CPU µs per I/O: for rbd bench its whole process (user+sys over the run), for usertgt the
# target process over the measured window (iscsi-load -p, librbd's threads included) and its event-loop
# thread alone (main_us_per_io: /proc/PID/task/PID/stat over 5 s of the run, SECS >= 8).
#
#   CEPH_CONF=DIR/ceph.conf USERTGT_CONF=tgt.conf bench/rbd_bench.sh
# USERTGT_CONF exports rbd/img0 (`TCMUR 7 rbd_a /rbd/rbd/img0;conf=...`) as LUN 0 of
# iqn.2016-06.io.spdk:rbd on 127.0.0.1:$PORT (docs/benchmarks-ceph.md).
C=${CEPH_CONF:?set CEPH_CONF to the cluster (test/ceph/cluster.sh start DIR)}
CONF=${USERTGT_CONF:?set USERTGT_CONF to a config exporting rbd/img0 (docs/benchmarks-ceph.md)}
PORT=${PORT:-3585}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
here=$(cd "$(dirname "$0")/.." && pwd)
DIRS=${USERTGT_DIRS:-$here}
log=${TMPDIR:-/tmp}/rbd_bench_server.log
for round in $(seq 1 "$ROUNDS"); do
  for t in write read; do
    r=$(/usr/bin/time -f "cpu_s=%U %S" rbd -c "$C" bench --rbd_cache=false --io-type $t --io-size 4K --io-threads 32 \
      --io-pattern rand --io-total 160M rbd/img0 2>&1 | tail -2 | tr '\n' ' ')
    echo "round=$round rbd-bench $t $r" | awk '{
      for (i = 1; i <= NF; i++) { if ($i == "ops:") ops = $(i + 1); if ($i == "ops/sec:") iops = $(i + 1); if ($i ~ /^cpu_s=/) { u = substr($i, 7); s = $(i + 1) } }
      printf "%s %s %s iops=%d cpu_us_per_io=%.1f\n", $1, $2, $3, iops, (u + s) * 1e6 / ops }'
    # Alternate the order of the checkouts round by round: the OSD's state after one run (deferred writes
    # still being flushed) must not always favour the same one.
    order=$DIRS
    [ $((round % 2)) -eq 0 ] && order=$(echo $DIRS | tr ' ' '\n' | tac | tr '\n' ' ')
    for d in $order; do
      (cd "$d" && exec node dist/src/cli/main.js serve -c "$CONF" --no-fuse --no-rpc --log-level warn) >"$log" 2>&1 &
      pid=$!
      for _ in $(seq 1 50); do grep -q "usertgt: ready" "$log" && break; sleep 0.2; done
      sleep 1
      iscsi-load -u "iscsi://127.0.0.1:$PORT/iqn.2016-06.io.spdk:rbd/0" -o $t -b 4096 -q 32 -n 1 -t "$SECS" -w 1 -r -p $pid >"$log.load" 2>&1 &
      load=$!
      sleep 2
      t0=$(awk '{print $14 + $15}' /proc/$pid/task/$pid/stat)
      sleep 5
      t1=$(awk '{print $14 + $15}' /proc/$pid/task/$pid/stat)
      wait $load
      out=$(cat "$log.load")
      iops=$(echo "$out" | grep -o 'iops=[0-9]*' | cut -d= -f2)
      main=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v iops="${iops:-0}" 'BEGIN { if (iops > 0) printf "%.1f", d * 1e6 / hz / 5 / iops }')
      echo "round=$round usertgt($d) $t iops=$iops $(echo "$out" | grep -o 'lat_p50_us=[0-9]*') $(echo "$out" | grep -o 'cpu_us_per_io=[0-9.]*') main_us_per_io=$main"
      kill $pid
      wait $pid
    done
  done
done
uptime
