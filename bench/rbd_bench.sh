#!/bin/bash
# 4 KiB random writes and reads at queue depth 32 on one image, interleaved round by round:
#   rbd bench --io-threads 32 with rbd_cache=false (how usertgt runs librbd), with usertgt stopped (it holds
#   the image's exclusive lock), then usertgt serving the image under iscsi-load, once per checkout in
#   USERTGT_DIRS (to compare builds: e.g. "/work/wt/baseline $PWD").
# Prints IOPS, and CPU µs per I/O: for rbd bench its whole process (user+sys over the run), for usertgt the
# target process over the measured window (iscsi-load -p, librbd's threads included) and its event-loop
# thread alone (main_us_per_io: /proc/PID/task/PID/stat over 5 s of the run, SECS >= 8). THREADS=1 adds,
# over the same 5 s, each of the target's threads (by name): CPU µs per I/O and how often it was woken
# (voluntary context switches per I/O: it slept, and another thread or an interrupt woke it).
# CPUS=LIST pins rbd bench, the target and iscsi-load alike (taskset -c LIST): on a VM whose idle vCPUs
# halt, a wake-up across CPUs costs an IPI and a VM exit, so placement changes CPU per I/O
# (docs/benchmarks-ceph.md); compare like with like. CLUSTER_CPUS=LIST pins the cluster's daemons (every
# thread of the ceph-mon, ceph-mgr and ceph-osd processes started with CEPH_CONF) before the first round, as
# if the OSD had a host of its own; with CPUS on the other CPUs, client and cluster stop competing for CPU.
#
#   CEPH_CONF=DIR/ceph.conf USERTGT_CONF=tgt.conf bench/rbd_bench.sh
# USERTGT_CONF exports rbd/img0 (`TCMUR 7 rbd_a /rbd/rbd/img0;conf=...`) as LUN 0 of
# iqn.2016-06.io.spdk:rbd on 127.0.0.1:$PORT (docs/benchmarks-ceph.md).
C=${CEPH_CONF:?set CEPH_CONF to the cluster (test/ceph/cluster.sh start DIR)}
CONF=${USERTGT_CONF:?set USERTGT_CONF to a config exporting rbd/img0 (docs/benchmarks-ceph.md)}
PORT=${PORT:-3585}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CPUS=${CPUS:-}
THREADS=${THREADS:-0}
CLUSTER_CPUS=${CLUSTER_CPUS:-}
pin=()
[ -n "$CPUS" ] && pin=(taskset -c "$CPUS")
if [ -n "$CLUSTER_CPUS" ]; then
  daemons=$(pgrep -f -- "ceph-(mon|mgr|osd) .*-c $C( |$)") || { echo "rbd_bench: no ceph daemon runs with -c $C" >&2; exit 1; }
  for p in $daemons; do taskset -a -p -c "$CLUSTER_CPUS" "$p" >/dev/null; done
fi
here=$(cd "$(dirname "$0")/.." && pwd)

# One line per thread of process $1: name, CPU ticks, voluntary and involuntary context switches.
thread_snapshot() {
  local t
  for t in /proc/"$1"/task/*; do
    awk -v status="$t/status" '{
      line = $0; lp = index(line, "("); rp = match(line, /\) [A-Z] /)
      name = substr(line, lp + 1, rp - lp - 1); gsub(/ /, "_", name)
      split(substr(line, rp + 2), f, " ") # f[1] is field 3 (state): utime, stime are f[12], f[13]
      while ((getline l < status) > 0) { split(l, kv, /:[ \t]*/); if (kv[1] == "voluntary_ctxt_switches") v = kv[2]; if (kv[1] == "nonvoluntary_ctxt_switches") n = kv[2] }
      print name, f[12] + f[13], v, n }' "$t/stat" 2>/dev/null
  done
}

# Per thread name: CPU µs and wake-ups (voluntary switches) per I/O between two snapshots.
thread_table() {
  awk -v ios="$3" -v hz="$(getconf CLK_TCK)" 'FNR == NR { c0[$1] += $2; v0[$1] += $3; next }
    { c1[$1] += $2; v1[$1] += $3 }
    END { if (ios <= 0) exit; for (k in c1) { cpu = (c1[k] - c0[k]) * 1e6 / hz / ios; w = (v1[k] - v0[k]) / ios
      if (cpu >= 0.5 || w >= 0.05) printf " %s=%.1fus/%.2fw", k, cpu, w } }' "$1" "$2"
}
DIRS=${USERTGT_DIRS:-$here}
log=${TMPDIR:-/tmp}/rbd_bench_server.log
for round in $(seq 1 "$ROUNDS"); do
  for t in write read; do
    r=$(/usr/bin/time -f "cpu_s=%U %S" "${pin[@]}" rbd -c "$C" bench --rbd_cache=false --io-type $t --io-size 4K --io-threads 32 \
      --io-pattern rand --io-total 160M rbd/img0 2>&1 | tail -2 | tr '\n' ' ')
    echo "round=$round rbd-bench $t $r" | awk '{
      for (i = 1; i <= NF; i++) { if ($i == "ops:") ops = $(i + 1); if ($i == "ops/sec:") iops = $(i + 1); if ($i ~ /^cpu_s=/) { u = substr($i, 7); s = $(i + 1) } }
      printf "%s %s %s iops=%d cpu_us_per_io=%.1f\n", $1, $2, $3, iops, (u + s) * 1e6 / ops }'
    # Alternate the order of the checkouts round by round: the OSD's state after one run (deferred writes
    # still being flushed) must not always favour the same one.
    order=$DIRS
    [ $((round % 2)) -eq 0 ] && order=$(echo $DIRS | tr ' ' '\n' | tac | tr '\n' ' ')
    for d in $order; do
      (cd "$d" && exec "${pin[@]}" node dist/src/cli/main.js serve -c "$CONF" --no-fuse --no-rpc --log-level warn) >"$log" 2>&1 &
      pid=$!
      for _ in $(seq 1 50); do grep -q "usertgt: ready" "$log" && break; sleep 0.2; done
      sleep 1
      "${pin[@]}" iscsi-load -u "iscsi://127.0.0.1:$PORT/iqn.2016-06.io.spdk:rbd/0" -o $t -b 4096 -q 32 -n 1 -t "$SECS" -w 1 -r -p $pid >"$log.load" 2>&1 &
      load=$!
      sleep 2
      t0=$(awk '{print $14 + $15}' /proc/$pid/task/$pid/stat)
      [ "$THREADS" = 1 ] && thread_snapshot $pid >"$log.t0"
      sleep 5
      t1=$(awk '{print $14 + $15}' /proc/$pid/task/$pid/stat)
      [ "$THREADS" = 1 ] && thread_snapshot $pid >"$log.t1"
      wait $load
      out=$(cat "$log.load")
      iops=$(echo "$out" | grep -o 'iops=[0-9]*' | cut -d= -f2)
      main=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v iops="${iops:-0}" 'BEGIN { if (iops > 0) printf "%.1f", d * 1e6 / hz / 5 / iops }')
      echo "round=$round usertgt($d) $t iops=$iops $(echo "$out" | grep -o 'lat_p50_us=[0-9]*') $(echo "$out" | grep -o 'cpu_us_per_io=[0-9.]*') main_us_per_io=$main"
      [ "$THREADS" = 1 ] && echo "  threads:$(thread_table "$log.t0" "$log.t1" $((${iops:-0} * 5)))"
      kill $pid
      wait $pid
    done
  done
done
uptime
