#!/bin/sh
# /init of the benchmark guest (see build.sh). Kernel command line (no dots, so they reach /proc/cmdline only):
#   bench_addr=10.0.2.2 bench_port=3260 bench_iqn=IQN [bench_tpgt=1] [bench_mkfs=1]
# Logs in with iscsistart, makes ext4 on the first SCSI disk, copies the tar image from /dev/vda onto it and
# unpacks it there, syncs, unmounts, checks the copy read back after a remount, and powers off. Results are lines starting "BENCH " on the console.
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "BENCH boot uptime=$(cut -d' ' -f1 /proc/uptime)"

fail() {
  echo "BENCH fail $*"
  dmesg | tail -20
  poweroff -f
}
now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

for arg in $(cat /proc/cmdline); do
  case $arg in
    bench_addr=*) addr=${arg#*=} ;;
    bench_port=*) port=${arg#*=} ;;
    bench_iqn=*) iqn=${arg#*=} ;;
    bench_tpgt=*) tpgt=${arg#*=} ;;
  esac
done
: "${addr:=10.0.2.2}" "${port:=3260}" "${tpgt:=1}"
[ -n "$iqn" ] || fail "no bench_iqn= on the kernel command line"

for m in virtio_pci virtio_net virtio_blk crc32c_generic iscsi_tcp sd_mod ext4; do
  modprobe "$m" || fail "modprobe $m"
done

ip link set lo up
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done
ip link set eth0 up || fail "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

t0=$(now)
iscsistart -i iqn.2026-11.io.usertgt:linux-vm -t "$iqn" -g "$tpgt" -a "$addr" -p "$port" ||
  fail "iscsistart login to $iqn at $addr:$port"
disk=""
for _ in $(seq 1 60); do
  for d in /sys/block/sd*; do [ -e "$d" ] && disk=/dev/${d##*/} && break 2; done
  sleep 0.5
done
[ -n "$disk" ] || fail "no SCSI disk after login"
t1=$(now)
echo "BENCH login disk=$disk size_bytes=$(($(cat /sys/block/${disk#/dev/}/size) * 512)) seconds=$(elapsed "$t0" "$t1")"

mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$disk" || fail "mkfs.ext4 $disk"
mount -t ext4 "$disk" /mnt || fail "mount $disk"
t2=$(now)
echo "BENCH mkfs seconds=$(elapsed "$t1" "$t2")"

# The reference deployment's measure: copy the tar image onto the remote disk, unpack it there, sync.
cat /dev/vda >/mnt/image.tar || fail "copy"
sync
t3=$(now)
mkdir /mnt/x
tar -xf /mnt/image.tar -C /mnt/x || fail "tar -x"
sync
t4=$(now)
files=$(find /mnt/x | wc -l)
used=$(df -k /mnt | awk 'NR == 2 { print $3 }')
umount /mnt || fail "umount"
t5=$(now)
echo "BENCH copy seconds=$(elapsed "$t2" "$t3") unpack seconds=$(elapsed "$t3" "$t4") total_seconds=$(elapsed "$t2" "$t4") files=$files used_kib=$used umount_seconds=$(elapsed "$t4" "$t5")"
# Read back through the initiator after a fresh mount (the page cache dropped): the copy must match the image.
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 -o ro "$disk" /mnt || fail "remount $disk"
want=$(md5sum </dev/vda | cut -d' ' -f1)
got=$(md5sum </mnt/image.tar | cut -d' ' -f1)
umount /mnt
[ "$want" = "$got" ] || fail "verify: image.tar read back from $disk has md5 $got, the image $want"
echo "BENCH verify md5=$got ok"
echo "BENCH done"
poweroff -f
