#!/usr/bin/env bash
# The Debian tools the test suite uses. `npm test` runs this first (pretest), .ci/run too: what is missing
# is installed with apt-get when we are root, else the run stops at once naming the packages.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
# libiscsi's iscsi-test-cu, iscsi-inq, iscsi-ls ...: conformance and end-to-end tests.
command -v iscsi-test-cu >/dev/null 2>&1 || need_pkgs+=(libiscsi-bin)
command -v tgtd >/dev/null 2>&1 || need_pkgs+=(tgt)
command -v mkfs.ext4 >/dev/null 2>&1 || need_pkgs+=(e2fsprogs)
command -v fusermount >/dev/null 2>&1 || command -v fusermount3 >/dev/null 2>&1 || need_pkgs+=(fuse3)
# drbd-utils' drbdmeta: the DRBD metadata tests compare our create-md/apply-al bytes with it.
command -v drbdmeta >/dev/null 2>&1 || [ -x /usr/sbin/drbdmeta ] || need_pkgs+=(drbd-utils)
# liburing-dev: the native addon's io_uring engine is built with it (without it: thread-pool fallback).
[ -e /usr/include/liburing.h ] || need_pkgs+=(liburing-dev)
# losetup and mount (util-linux): the block-device tests export loop devices.
command -v losetup >/dev/null 2>&1 || need_pkgs+=(util-linux)
# systemd-analyze verify checks the unit (test/e2e/systemd.test.ts); python3 holds its notify socket
# and runs SPDK's rpc.py.
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
# qemu-img: the qcow2 handler's tests make and check images with it.
command -v qemu-img >/dev/null 2>&1 || need_pkgs+=(qemu-utils)
# A one-node Ceph cluster (test/ceph/cluster.sh) for the rbd handler's tests, and librbd-dev for the
# native addon's librbd binding (native/rbd.c; without it the rbd handler reports itself unavailable).
command -v ceph-osd >/dev/null 2>&1 || need_pkgs+=(ceph-mon ceph-mgr ceph-osd ceph-common)
[ -f /usr/include/rbd/librbd.h ] || need_pkgs+=(librbd-dev)

[ ${#need_pkgs[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test: missing Debian packages: ${need_pkgs[*]} (as root: apt-get install ${need_pkgs[*]})" >&2
  exit 1
fi
echo "test: installing ${need_pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
# A native addon built before liburing-dev (librbd-dev) was there has no io_uring engine (no librbd
# binding): build it again.
if [[ " ${need_pkgs[*]} " == *" liburing-dev "* || " ${need_pkgs[*]} " == *" librbd-dev "* ]] && [ -d node_modules ]; then
  node native/build.mjs
fi
