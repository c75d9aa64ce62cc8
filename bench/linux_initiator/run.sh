#!/usr/bin/env bash
# Boots the benchmark guest (build.sh) under QEMU/TCG with user-mode networking, so the guest reaches the
# host's 127.0.0.1:PORT at 10.0.2.2:PORT, logs in to IQN with the Linux kernel initiator (iscsi_tcp via
# iscsistart), makes ext4 on the LUN, copies and unpacks TAR on it (TAR is the guest's /dev/vda) and powers off.
#
#   bench/linux_initiator/run.sh PORT IQN TAR [TPGT]
#
# Prints the guest's "BENCH ..." lines; exit 0 only if the guest reached "BENCH done". The full console
# goes to $CONSOLE_LOG (default /tmp/usertgt-vm-console.log). Knobs: VM_MEM (MiB), VM_TIMEOUT (s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-/var/cache/usertgt-bench}
port=${1:?port}
iqn=${2:?iqn}
tar=${3:?tar image}
tpgt=${4:-1}
VM_MEM=${VM_MEM:-1024}
VM_TIMEOUT=${VM_TIMEOUT:-900}
CONSOLE_LOG=${CONSOLE_LOG:-/tmp/usertgt-vm-console.log}
[ -f "$CACHE/initramfs.cpio.gz" ] && [ -f "$CACHE/vmlinuz" ] || "$here/build.sh" >/dev/null
command -v qemu-system-x86_64 >/dev/null || { echo "run: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2; exit 1; }

# KVM is not usable here (it hangs); TCG with several threads. The tar image is attached read-only.
timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -m "$VM_MEM" -smp 2 -nodefaults -no-reboot \
  -display none -serial "file:$CONSOLE_LOG" \
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1 bench_addr=10.0.2.2 bench_port=$port bench_iqn=$iqn bench_tpgt=$tpgt" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
  -drive "file=$tar,format=raw,if=virtio,readonly=on" || true
grep '^BENCH ' "$CONSOLE_LOG" | tr -d '\r' || true
grep -q '^BENCH done' "$CONSOLE_LOG"
