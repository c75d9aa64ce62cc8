#!/usr/bin/env bash
# Builds the guest for the Linux-initiator benchmark: a Debian 6.1 kernel and a minimal initramfs holding
# busybox (static), the kernel's iSCSI initiator modules (iscsi_tcp, libiscsi, scsi_transport_iscsi, sd_mod),
# ext4, virtio net/blk, open-iscsi's `iscsistart` and e2fsprogs' mke2fs (with their shared libraries), and
# init.sh as /init. Everything is downloaded with apt-get download and cached under $CACHE (not in git).
#
#   bench/linux_initiator/build.sh          # prints the paths of the kernel and the initramfs
#
# Output: $CACHE/vmlinuz and $CACHE/initramfs.cpio.gz. Needs root (apt-get), gzip, binutils (strings), e2fsprogs on the host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${CACHE:-/var/cache/usertgt-bench}
KVER=${KVER:-6.1.0-50-amd64}
if [ -z "${REBUILD:-}" ] && [ -f "$CACHE/vmlinuz" ] && [ "$CACHE/initramfs.cpio.gz" -nt "$here/init.sh" ] &&
  [ "$CACHE/initramfs.cpio.gz" -nt "$here/build.sh" ]; then # up to date (REBUILD=1 forces)
  echo "$CACHE/vmlinuz"
  echo "$CACHE/initramfs.cpio.gz"
  exit 0
fi
mkdir -p "$CACHE/debs" "$CACHE/x"
cd "$CACHE/debs"

fetch() { # package: download once, unpack into x/<package>
  local p=$1
  if ! ls "${p}"_*.deb >/dev/null 2>&1; then
    apt-get download -q "$p" >/dev/null 2>&1 || { apt-get update -qq && apt-get download -q "$p"; }
  fi
  [ -d "$CACHE/x/$p" ] || { mkdir -p "$CACHE/x/$p" && dpkg -x "$(ls "${p}"_*.deb | head -1)" "$CACHE/x/$p"; }
}
fetch "linux-image-$KVER-unsigned"
fetch busybox-static
fetch open-iscsi
fetch libopeniscsiusr

K=$CACHE/x/linux-image-$KVER-unsigned
M=$K/lib/modules/$KVER
BB=$CACHE/x/busybox-static/bin/busybox
root=$(mktemp -d /tmp/usertgt-initramfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,dev,proc,sys,mnt,tmp,etc,lib64,lib/x86_64-linux-gnu,lib/modules/$KVER}
cp "$BB" "$root/bin/busybox"
for a in $("$BB" --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done

# Kernel modules: the wanted ones plus their depends= closure, read from each .ko's modinfo section.
declare -A have=()
add_mod() {
  local name=$1 f
  [ -n "${have[$name]:-}" ] && return 0
  f=$(find "$M/kernel" -name "$name.ko" -o -name "${name//_/-}.ko" | head -1)
  [ -n "$f" ] || { echo "build: module $name not found in $M" >&2; exit 1; }
  have[$name]=1
  mkdir -p "$root/lib/modules/$KVER/$(dirname "${f#"$M"/}")"
  cp "$f" "$root/lib/modules/$KVER/${f#"$M"/}"
  local deps
  deps=$(strings -a "$f" | sed -n 's/^depends=//p' | head -1)
  for d in ${deps//,/ }; do add_mod "$d"; done
}
for m in virtio_pci virtio_net virtio_blk iscsi_tcp sd_mod ext4 crc32c_generic; do add_mod "$m"; done
cp "$M"/modules.order "$M"/modules.builtin "$root/lib/modules/$KVER/" 2>/dev/null || true
"$BB" depmod -b "$root" "$KVER"

# Dynamic binaries with the libraries ldd resolves (host is Debian 12 like the packages).
add_bin() {
  local src=$1 lib
  cp "$src" "$root/sbin/"
  for lib in $(LD_LIBRARY_PATH=$CACHE/x/libopeniscsiusr/usr/lib/x86_64-linux-gnu ldd "$src" | grep -o '/[^ ]*'); do
    case $lib in
      /lib64/*) cp -L "$lib" "$root/lib64/" ;;
      *) cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
    esac
  done
}
add_bin "$CACHE/x/open-iscsi/sbin/iscsistart"
add_bin "$(command -v mke2fs)"
rm -f "$root/bin/mke2fs" "$root/bin/mkfs.ext2"
ln -s mke2fs "$root/sbin/mkfs.ext4"

cp "$here/init.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1) >"$CACHE/initramfs.cpio.gz.tmp"
mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
cp "$K/boot/vmlinuz-$KVER" "$CACHE/vmlinuz"
echo "$CACHE/vmlinuz"
echo "$CACHE/initramfs.cpio.gz"
