#!/usr/bin/env bash
# A fresh connected pair for manual experiments: new disks, the guest booted with r0 up (create-md), usertgt
# started (BIO helper drbdadm_up: create-md, up). Both end Secondary/Inconsistent, Connected. Uses $RES or r0.res.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/usertgt-kpeer}
export WORK RES=${RES:-$here/r0.res}
"$here/utgt.sh" stop
"$here/vm.sh" stop
rm -f "$WORK/kdisk.img" "$WORK/udisk.img" "$WORK/utgt.log"
"$here/vm.sh" start >/dev/null
"$here/vm.sh" sh "mkdir -p /etc/drbd.d && cat >/etc/drbd.d/r0.res <<'RES'
$(cat "$RES")
RES
drbdadm-84 create-md r0 </dev/null >/dev/null 2>&1; drbdadm-84 up r0 2>&1 | grep -v -e 'version: ' -e mixing" || true
"$here/utgt.sh" start
