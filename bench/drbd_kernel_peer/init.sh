#!/bin/sh
# /init of the kernel DRBD peer guest (build.sh). Kernel command line (no dots, they stay in /proc/cmdline):
#   kpeer_addr=10.77.0.2/24 kpeer_host=kpeer
# Loads drbd, brings up eth0, names the host (drbdadm matches `on HOST` against it), then serves a command
# shell on TCP port 2323 for vmsh.py (vm.sh sh). Lines starting "KPEER " go to the console.
export PATH=/sbin:/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/drbd /var/run/drbd /var/lib/drbd /var/lock

for arg in $(cat /proc/cmdline); do
  case $arg in
    kpeer_addr=*) addr=${arg#*=} ;;
    kpeer_host=*) host=${arg#*=} ;;
  esac
done
: "${addr:=10.77.0.2/24}" "${host:=kpeer}"
hostname "$host"
for m in virtio_pci virtio_net virtio_blk crc32c_generic drbd; do
  modprobe "$m" || echo "KPEER fail modprobe $m"
done
ip link set lo up
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done
ip link set eth0 up
ip addr add "$addr" dev eth0
# The command shell for vmsh.py: one sh per TCP connection on port 2323 (guest side of the tap only).
nc -ll -p 2323 -e /bin/sh &
echo "KPEER ready host=$(hostname) addr=$addr drbd=$(head -1 /proc/drbd)"
while :; do sleep 3600; done
