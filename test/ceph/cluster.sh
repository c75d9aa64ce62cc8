#!/usr/bin/env bash
# A one-node Ceph cluster for tests, from Debian's packages (ceph-mon, ceph-mgr, ceph-osd, ceph-common):
# one monitor on 127.0.0.1 (3300/6789), one manager, one BlueStore OSD on a sparse file, pool "rbd"
# (size 1) and image "rbd/img0". Everything lives in DIR; nothing touches /etc/ceph or /var/lib/ceph.
#
#   test/ceph/cluster.sh start DIR [IMAGE_SIZE]   # prints CEPH_CONF=DIR/ceph.conf when HEALTH is usable
#   test/ceph/cluster.sh stop DIR                 # stops the daemons (DIR is left for the caller)
#   test/ceph/cluster.sh osd-stop|osd-start DIR   # for outage tests
# Exit 3 with a reason on stderr when Ceph cannot run here (packages missing, ports taken).
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop|osd-stop|osd-start DIR [IMAGE_SIZE]}
dir=${2:?usage: cluster.sh start|stop|osd-stop|osd-start DIR [IMAGE_SIZE]}
size=${3:-1G}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/ceph.conf
C=(-c "$conf")

skip() {
  echo "ceph cluster unavailable: $*" >&2
  exit 3
}

pidfile() { echo "$dir/run/$1.pid"; }

stop_daemon() {
  local pf
  pf=$(pidfile "$1")
  [ -f "$pf" ] || return 0
  local pid
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

start_osd() {
  ceph-osd "${C[@]}" -i 0 2>>"$dir/log/osd.0.stderr"
  for _ in $(seq 1 120); do
    ceph "${C[@]}" osd dump 2>/dev/null | grep -q '^osd.0 up' && return 0
    sleep 0.5
  done
  echo "osd.0 did not come up; log: $dir/log/osd.0.log" >&2
  return 1
}

case "$cmd" in
start)
  for b in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd; do
    command -v "$b" >/dev/null || skip "$b not installed (apt-get install ceph-mon ceph-mgr ceph-osd ceph-common)"
  done
  for p in 3300 6789; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then skip "port 127.0.0.1:$p is in use (another monitor?)"; fi
  done
  rm -rf "${dir:?}"/{mon,mgr,osd,run,log,keyring,monmap,ceph.conf}
  mkdir -p "$dir"/{mon,mgr/ceph-x,osd/ceph-0,run,log}
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$conf" <<CONF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public network = 127.0.0.0/8
ms bind ipv6 = false
keyring = $dir/keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon data = $dir/mon/ceph-\$id
mgr data = $dir/mgr/ceph-\$id
osd data = $dir/osd/ceph-\$id
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon pg warn min per osd = 0
mgr initial modules =
mon warn on insecure global id reclaim allowed = false
[client]
# Gateways and tools: no admin sockets (several clients at once would collide), one log file.
admin socket =
log file = $dir/log/client.log
[mon]
keyring = $dir/mon/ceph-\$id/keyring
[mgr]
keyring = $dir/mgr/ceph-\$id/keyring
[osd]
keyring = $dir/osd/ceph-\$id/keyring
osd objectstore = bluestore
bluestore block path = $dir/osd/block
bluestore block create = true
bluestore block size = 4294967296
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 134217728
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 2
CONF
  ceph-authtool "$dir/keyring" --create-keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$dir/monmap" >/dev/null
  ceph-mon "${C[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" >/dev/null 2>&1 ||
    skip "ceph-mon --mkfs failed (log: $dir/log/mon.a.log)"
  ceph-mon "${C[@]}" -i a || skip "ceph-mon would not start (log: $dir/log/mon.a.log)"
  timeout 30 ceph "${C[@]}" -s >/dev/null || skip "the monitor does not answer (log: $dir/log/mon.a.log)"
  ceph "${C[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$dir/mgr/ceph-x/keyring" >/dev/null
  ceph-mgr "${C[@]}" -i x
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_key=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}' "$osd_key" >"$dir/osd/secret.json"
  id=$(ceph "${C[@]}" osd new "$osd_uuid" -i "$dir/osd/secret.json")
  [ "$id" = 0 ] || skip "unexpected OSD id $id"
  ceph-authtool "$dir/osd/ceph-0/keyring" --create-keyring --name osd.0 --add-key "$osd_key" >/dev/null
  ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 ||
    skip "ceph-osd --mkfs failed (log: $dir/log/osd.0.log)"
  start_osd || skip "the OSD would not start (log: $dir/log/osd.0.log)"
  ceph "${C[@]}" osd pool create rbd 8 8 >/dev/null 2>&1
  ceph "${C[@]}" osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
  rbd "${C[@]}" pool init rbd
  rbd "${C[@]}" create rbd/img0 --size "$size"
  echo "CEPH_CONF=$conf"
  ;;
stop)
  [ -f "$conf" ] || exit 0
  stop_daemon osd.0
  stop_daemon mgr.x
  stop_daemon mon.a
  ;;
osd-stop)
  stop_daemon osd.0
  ;;
osd-start)
  start_osd
  ;;
*)
  echo "usage: cluster.sh start|stop|osd-stop|osd-start DIR [IMAGE_SIZE]" >&2
  exit 2
  ;;
esac
