#!/bin/bash
# Interleaved on one image, 4 KiB random, QD32: rbd bench (default rbd_cache=true, and rbd_cache=false as
# usertgt runs librbd) with usertgt stopped (it holds the image's exclusive lock), then usertgt + iscsi-load.
C=${CEPH_CONF:?set CEPH_CONF to the cluster (test/ceph/cluster.sh start DIR)}
CONF=${USERTGT_CONF:?set USERTGT_CONF to a config exporting rbd/img0 on 127.0.0.1:3585 (docs/benchmarks-ceph.md)}
cd "$(dirname "$0")/.."
for round in 1 2; do
  for t in write read; do
    for cache in true false; do
      r=$(/usr/bin/time -f "cpu_s=%U+%S" rbd -c $C bench --rbd_cache=$cache --io-type $t --io-size 4K --io-threads 32 --io-pattern rand --io-total 40M rbd/img0 2>&1 | tail -2 | tr '\n' ' ')
      echo "round=$round rbd-bench cache=$cache $t $r"
    done
    node dist/src/cli/main.js serve -c "$CONF" --no-fuse --no-rpc --log-level warn > "${TMPDIR:-/tmp}/rbd_bench_server.log" 2>&1 &
    pid=$!
    for i in $(seq 1 50); do grep -q "usertgt: ready" "${TMPDIR:-/tmp}/rbd_bench_server.log" && break; sleep 0.2; done
    sleep 1
    echo "round=$round usertgt $t $(iscsi-load -u iscsi://127.0.0.1:3585/iqn.2016-06.io.spdk:rbd/0 -o $t -b 4096 -q 32 -n 1 -t 6 -w 1 -r -p $pid 2>&1)"
    kill $pid; wait $pid
  done
done
uptime
