#!/usr/bin/env bash
# The kernel DRBD peer: a network namespace with a tap device, the guest (build.sh) on it under QEMU/TCG.
#
#   bench/drbd_kernel_peer/vm.sh start     # netns $NETNS (10.77.0.1/24 on tap $TAP), guest 10.77.0.2, disk $DISK
#   bench/drbd_kernel_peer/vm.sh stop      # power the guest off, delete the netns
#   bench/drbd_kernel_peer/vm.sh sh 'cmd'  # run a shell command in the guest (vmsh.py)
#   bench/drbd_kernel_peer/vm.sh resize MB # grow the guest's /dev/vda online (QMP block_resize)
#
# usertgt runs in the same namespace: `ip netns exec $NETNS node dist/src/cli/main.js serve ...`.
# Files under $WORK (default /var/tmp/usertgt-kpeer): console.log (kernel console, drbd's messages),
# qemu.pid, qmp.sock, kdisk.img (the guest's /dev/vda, $DISK_MB MiB, created if missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/usertgt-kpeer}
NETNS=${NETNS:-usertgt-kpeer}
TAP=${TAP:-tapk0}
DISK=${DISK:-$WORK/kdisk.img}
DISK_MB=${DISK_MB:-32}
# DISK2=FILE: a second disk, the guest's /dev/vdb ($DISK2_MB MiB; the VOLUMES=2 interop run's volume 1).
DISK2=${DISK2:-}
DISK2_MB=${DISK2_MB:-16}
VM_MEM=${VM_MEM:-512}
mkdir -p "$WORK"
case ${1:?start, stop or sh} in
  start)
    read -r vmlinuz initrd < <("$here/build.sh" | paste -sd' ')
    command -v qemu-system-x86_64 >/dev/null || { echo "vm: qemu-system-x86_64 missing" >&2; exit 1; }
    ip netns list | grep -qw "$NETNS" || ip netns add "$NETNS"
    ip -n "$NETNS" link set lo up
    if ! ip -n "$NETNS" link show "$TAP" >/dev/null 2>&1; then
      ip netns exec "$NETNS" ip tuntap add dev "$TAP" mode tap
      ip -n "$NETNS" addr add 10.77.0.1/24 dev "$TAP"
    fi
    ip -n "$NETNS" link set "$TAP" up
    [ -f "$DISK" ] || truncate -s "${DISK_MB}M" "$DISK"
    drive2=()
    if [ -n "$DISK2" ]; then
      [ -f "$DISK2" ] || truncate -s "${DISK2_MB}M" "$DISK2"
      drive2=(-drive "file=$DISK2,format=raw,if=virtio,cache=none,discard=unmap,id=kdisk2")
    fi
    rm -f "$WORK/console.log"
    ip netns exec "$NETNS" qemu-system-x86_64 -accel tcg,thread=multi -m "$VM_MEM" -smp 1 -nodefaults -no-reboot \
      -display none -daemonize -pidfile "$WORK/qemu.pid" -qmp "unix:$WORK/qmp.sock,server=on,wait=off" \
      -serial "file:$WORK/console.log" \
      -kernel "$vmlinuz" -initrd "$initrd" \
      -append "console=ttyS0 loglevel=7 panic=-1 kpeer_addr=10.77.0.2/24 kpeer_host=kpeer" \
      -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" -device virtio-net-pci,netdev=n0 \
      -drive "file=$DISK,format=raw,if=virtio,cache=none,discard=unmap,id=kdisk" "${drive2[@]}"
    for _ in $(seq 1 120); do
      grep -q '^KPEER ready' "$WORK/console.log" 2>/dev/null && break
      sleep 1
    done
    grep '^KPEER ' "$WORK/console.log" | tr -d '\r'
    grep -q '^KPEER ready' "$WORK/console.log"
    ;;
  stop)
    pid=$(cat "$WORK/qemu.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
      ip netns exec "$NETNS" "$here/vmsh.py" -t 5 'sync; poweroff -f' >/dev/null 2>&1 || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill "$pid" 2>/dev/null || true
      rm -f "$WORK/qemu.pid"
    fi
    ip netns del "$NETNS" 2>/dev/null || true
    ;;
  sh)
    shift
    exec ip netns exec "$NETNS" "$here/vmsh.py" "$@"
    ;;
  resize)
    # The disk file grows and the guest's virtio-blk sees the new capacity at once.
    python3 - "$WORK/qmp.sock" "$((${2:?size in MiB} * 1024 * 1024))" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())
for cmd in ({"execute": "qmp_capabilities"},
            {"execute": "block_resize", "arguments": {"device": "kdisk", "size": int(sys.argv[2])}}):
    f.write(json.dumps(cmd) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "error" in r:
            sys.exit("qmp: " + r["error"]["desc"])
        if "return" in r:
            break
PY
    ;;
esac
