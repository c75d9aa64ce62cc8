#!/usr/bin/env bash
# Builds the kernel DRBD peer guest: the Debian 6.1 kernel of bench/linux_initiator (its cached packages are
# only read) and an initramfs with busybox, drbd.ko (8.4.11 in-tree) and its dependencies, virtio net/blk,
# drbd-utils' 8.4 userland (drbdadm-84, drbdsetup-84, drbdmeta, from the host's drbd-utils package) and
# init.sh as /init.
#
#   bench/drbd_kernel_peer/build.sh        # prints the paths of the kernel and the initramfs
#
# Output: $OUT/vmlinuz and $OUT/initramfs.cpio.gz (default OUT=/var/cache/usertgt-drbd-peer, not in git).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-/var/cache/usertgt-bench}
OUT=${OUT:-/var/cache/usertgt-drbd-peer}
KVER=${KVER:-6.1.0-50-amd64}
if [ -z "${REBUILD:-}" ] && [ -f "$OUT/vmlinuz" ] && [ "$OUT/initramfs.cpio.gz" -nt "$here/init.sh" ] &&
  [ "$OUT/initramfs.cpio.gz" -nt "$here/build.sh" ]; then
  echo "$OUT/vmlinuz"
  echo "$OUT/initramfs.cpio.gz"
  exit 0
fi
K=$CACHE/x/linux-image-$KVER-unsigned
BB=$CACHE/x/busybox-static/bin/busybox
if [ ! -d "$K" ] || [ ! -x "$BB" ]; then
  # The kernel and busybox come from the Linux-initiator bench's cache; let it download them.
  "$here/../linux_initiator/build.sh" >/dev/null
fi
[ -x /usr/lib/drbd/drbdsetup-84 ] || apt-get install -y -q drbd-utils >/dev/null
M=$K/lib/modules/$KVER
mkdir -p "$OUT"
root=$(mktemp -d /tmp/usertgt-drbd-initramfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,dev,proc,sys,mnt,tmp,etc,run,var/lib/drbd,var/run/drbd,lib64,lib/x86_64-linux-gnu,lib/drbd,usr/lib/drbd,usr/sbin,etc/drbd.d,lib/modules/$KVER}
cp "$BB" "$root/bin/busybox"
for a in $("$BB" --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done

declare -A have=()
add_mod() { # a module and its depends= closure (read from the .ko's modinfo section)
  local name=$1 f deps d
  [ -n "${have[$name]:-}" ] && return 0
  f=$(find "$M/kernel" -name "$name.ko" -o -name "${name//_/-}.ko" | head -1)
  [ -n "$f" ] || { echo "build: module $name not found in $M" >&2; exit 1; }
  have[$name]=1
  mkdir -p "$root/lib/modules/$KVER/$(dirname "${f#"$M"/}")"
  cp "$f" "$root/lib/modules/$KVER/${f#"$M"/}"
  deps=$(strings -a "$f" | sed -n 's/^depends=//p' | head -1)
  for d in ${deps//,/ }; do add_mod "$d"; done
}
for m in virtio_pci virtio_net virtio_blk drbd crc32c_generic; do add_mod "$m"; done
cp "$M"/modules.order "$M"/modules.builtin "$root/lib/modules/$KVER/" 2>/dev/null || true
"$BB" depmod -b "$root" "$KVER"

# drbd-utils: the 8.4 tools at the paths drbdadm looks for them, with their libraries.
add_bin() { # src dest
  local lib
  cp "$1" "$root/$2"
  for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
    case $lib in
      /lib64/*) cp -L "$lib" "$root/lib64/" ;;
      *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
    esac
  done
}
add_bin /lib/drbd/drbdadm-84 lib/drbd/drbdadm-84
add_bin /lib/drbd/drbdsetup-84 lib/drbd/drbdsetup-84
add_bin /sbin/drbdmeta sbin/drbdmeta
ln -s /lib/drbd/drbdadm-84 "$root/sbin/drbdadm-84"
ln -s /lib/drbd/drbdsetup-84 "$root/sbin/drbdsetup-84"
# drbdadm-84 calls "drbdsetup" and "drbdmeta": the 8.4 drbdsetup under that name.
ln -s /lib/drbd/drbdsetup-84 "$root/sbin/drbdsetup"
ln -s /lib/drbd/drbdadm-84 "$root/sbin/drbdadm"
ln -s /sbin/drbdmeta "$root/usr/sbin/drbdmeta"
ln -s /lib/drbd/drbdsetup-84 "$root/usr/sbin/drbdsetup"
printf 'global { usage-count no; }\ninclude "drbd.d/*.res";\n' >"$root/etc/drbd.conf"

cp "$here/init.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1) >"$OUT/initramfs.cpio.gz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
cp "$K/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$OUT/vmlinuz"
echo "$OUT/initramfs.cpio.gz"
