#!/usr/bin/env bash
# usertgt <-> Linux kernel DRBD 8.4.11 interoperability run (docs/drbd-kernel-interop.md). From scratch: fresh
# disks, the guest booted (vm.sh), usertgt's node started in the guest's netns (utgt.sh), then each step
# checks what it claims with md5 over the replicated data. Prints "INTEROP ..." lines; exit 0 when all pass.
# Logs kept under $WORK: console.log (guest kernel), dmesg.txt, utgt.log. Needs root, qemu, drbd-utils, and
# `npx tsc -p .` done. Takes ~2 minutes. DRBD ports 7860 (guest) / 7861 (usertgt), iSCSI 3490.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/var/tmp/usertgt-kpeer}
export WORK
NETNS=${NETNS:-usertgt-kpeer}
export NETNS # vm.sh and utgt.sh read NETNS, TAP and WORK: set them to run beside another pair
KB=32728 # usable KiB of the 32 MiB disks with internal metadata
# Variants: PROTO=A|B|C (net { protocol }), SECRET=... (cram-hmac-alg sha1 + shared-secret), VERIFY=1
# (verify-alg crc32c and an online verify at the end), FORCE_ON=kernel (step 2 forced on the guest),
# INTEGRITY=ALG (net { data-integrity-alg ALG }: every P_DATA / P_RS_DATA_REPLY both ways carries a digest),
# CSUMS=crc32c|md5|sha1 (csums-alg: every resync checksum-based; step 13 counts the blocks it sends, both
# directions), RS_DEFAULTS=1 (no disk options: DRBD 8.4's resync controller defaults on both sides),
# DETACH=1 (after step 3, detach steps D1-D3 instead of 4-10: usertgt's disk fails under its Primary and
# the kernel serves it; the kernel Primary detaches and usertgt serves it; the kernel reconnects
# Diskless to usertgt; usertgt's Primary detaches and re-attaches: D4),
# ADJUST=1 (step 11: drbdadm adjust of the protocol and resync-rate on a connected pair, both directions).
# RESIZE=1 (step 12: online grow of both disks, `drbdadm resize` on usertgt, then on the kernel).
# VOLUMES=2 (steps V1-V5 of volumes.sh instead: one resource of two volumes, a second guest disk /dev/vdb).
# Several runs at once need their own NETNS=..., TAP=... and WORK=... (vm.sh and utgt.sh honour them).
PROTO=${PROTO:-C}
# usertgt's device must follow its file for RESIZE (utgt.sh drops size= from its TCMUR line).
[ -n "${RESIZE:-}" ] && export GROWABLE=1
mkdir -p "$WORK"
# DETACH: usertgt's backing file is served by the test's TCMUR handler "faulty" (utgt.sh), made to fail below.
[ -n "${DETACH:-}" ] && export TCMUR_HANDLER=faulty
rm -f "$WORK/udisk.img.fail"
net="protocol $PROTO;"
[ -n "${SECRET:-}" ] && net="$net cram-hmac-alg sha1; shared-secret \"$SECRET\";"
[ -n "${VERIFY:-}" ] && net="$net verify-alg crc32c;"
[ -n "${INTEGRITY:-}" ] && net="$net data-integrity-alg $INTEGRITY;"
[ -n "${CSUMS:-}" ] && net="$net csums-alg $CSUMS;"
disk="resync-rate 40M;"
[ -n "${RS_DEFAULTS:-}" ] && disk=""
sed -e "s|protocol C;|$net|" -e "s|resync-rate 40M;|$disk|" "$here/r0.res" >"$WORK/r0.res"
export RES=$WORK/r0.res
failed=0

say() { echo "INTEROP $*"; }
ok() { say "ok   $*"; }
bad() { say "FAIL $*"; failed=1; }
ksh() { "$here/vm.sh" sh "$@"; }
kadm() { ksh "drbdadm-84 $* 2>&1 | grep -v -e 'version: ' -e 'mixing different'"; }
uadm() { "$here/utgt.sh" adm "$@"; }
iscsi() { ip netns exec "$NETNS" node "$here/iscsi_io.mjs" "$@"; }
kstate() { ksh "sed -n 's/^ *0: //p' /proc/drbd"; }
ustate() { uadm status r0 2>/dev/null | tr -s ' \n' ' '; }
wait_k() { # regex on the guest's /proc/drbd line, timeout seconds
  local i
  for i in $(seq 1 "${2:-60}"); do kstate | grep -Eq "$1" && return 0; sleep 1; done
  echo "  guest: $(kstate)"
  return 1
}
wait_u() {
  local i
  for i in $(seq 1 "${2:-60}"); do ustate | grep -Eq "$1" && return 0; sleep 1; done
  echo "  usertgt: $(ustate)"
  return 1
}
# md5 of the replicated data (the first KB KiB): the guest's lower disk, usertgt's backing file.
k_md5() { ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/vda bs=1k count=$KB 2>/dev/null | md5sum | cut -c1-32"; }
u_md5() { dd if="$WORK/udisk.img" bs=1k count=$KB 2>/dev/null | md5sum | cut -c1-32; }
same_data() {
  local k u
  k=$(k_md5)
  u=$(u_md5)
  if [ "$k" = "$u" ]; then ok "$1: both disks md5 $k"; else bad "$1: guest $k, usertgt $u"; fi
}

"$here/utgt.sh" stop
"$here/vm.sh" stop
rm -f "$WORK/kdisk.img" "$WORK/kdisk2.img" "$WORK/udisk.img" "$WORK/utgt.log"
[ -n "${VOLUMES:-}" ] && export DISK2=$WORK/kdisk2.img
"$here/vm.sh" start >/dev/null || { bad "guest did not boot"; exit 1; }
ok "guest: $(ksh 'uname -r; head -1 /proc/drbd' | paste -sd' '); net { $net } disk { $disk }"

if [ -n "${VOLUMES:-}" ]; then
  # VOLUMES=2: one resource of two volumes over one connection (volumes.sh), instead of steps 1-13.
  . "$here/volumes.sh"
  "$here/utgt.sh" stop
  [ -n "${KEEP:-}" ] || "$here/vm.sh" stop
  [ "$failed" = 0 ] && say "done" || say "failed"
  exit "$failed"
fi

# 1. Handshake: both fresh (create-md), both Secondary/Inconsistent, uuid_compare rule 10.
ksh "mkdir -p /etc/drbd.d && cat >/etc/drbd.d/r0.res <<'RES'
$(cat "$RES")
RES"
kadm create-md r0 </dev/null >/dev/null
kadm up r0
"$here/utgt.sh" start || { bad "usertgt did not start"; exit 1; }
if wait_k 'cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent' && wait_u 'replication:Established'; then
  ok "1 handshake: Connected, Secondary/Secondary Inconsistent/Inconsistent"
else bad "1 handshake"; fi

# 2. Initial full sync: `primary --force` on the Connected pair, on usertgt (default) or, FORCE_ON=kernel, on
#    the guest (then the roles swap, so usertgt is Primary for step 3 either way).
if [ "${FORCE_ON:-utgt}" = kernel ]; then
  kadm primary --force r0
  if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 120; then
    ok "2 full sync kernel -> usertgt (forced on the kernel): $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"was":[^}]*')"
  else bad "2 full sync kernel -> usertgt"; fi
  kadm secondary r0
  uadm primary r0
else
  uadm primary --force r0
  if wait_k 'cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate' 120; then
    ok "2 full sync usertgt -> kernel (forced on usertgt): $(ksh "dmesg | grep -o 'Began resync as SyncTarget.*\|Resync done.*'" | paste -sd' ')"
  else bad "2 full sync usertgt -> kernel"; fi
fi

# 3. Protocol C (or $PROTO): an iSCSI write on the usertgt Primary is on the kernel's disk when acknowledged.
head -c 4M /dev/urandom >"$WORK/pat1.bin"
iscsi write 2048 "$WORK/pat1.bin" >/dev/null
want=$(md5sum <"$WORK/pat1.bin" | cut -c1-32)
got=$(ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=2048 count=8192 2>/dev/null | md5sum | cut -c1-32")
if [ "$want" = "$got" ]; then ok "3 protocol $PROTO write usertgt -> kernel: 4 MiB at LBA 2048 md5 $got"; else bad "3 write: want $want got $got"; fi
same_data "3"

if [ -n "${DETACH:-}" ]; then
  # D1. The usertgt Primary's backing file fails (EIO from then on): on-io-error detach makes it Diskless,
  #     still Primary; the failed request and all later ones are served by the kernel (P_DATA_REQUEST).
  touch "$WORK/udisk.img.fail"
  head -c 2M /dev/urandom >"$WORK/patd.bin"
  if iscsi write 12000 "$WORK/patd.bin" >/dev/null && wait_u 'role:Primary disk:Diskless' 20 &&
    wait_k 'ro:Secondary/Primary ds:UpToDate/Diskless' 20; then
    ok "D1 usertgt disk failed under its Primary: usertgt $(ustate | cut -c1-60); kernel $(kstate | cut -c1-60)"
  else bad "D1 usertgt detach after the I/O error"; fi
  want=$(md5sum <"$WORK/patd.bin" | cut -c1-32)
  got=$(ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=12000 count=4096 2>/dev/null | md5sum | cut -c1-32")
  [ "$want" = "$got" ] && ok "D1 the write that hit the failure is on the kernel's disk ($got)" || bad "D1 write: want $want got $got"
  head -c 1M /dev/urandom >"$WORK/pate.bin"
  iscsi write 20000 "$WORK/pate.bin" >/dev/null || bad "D1 write while Diskless"
  ud=$(iscsi read 0 $((KB * 2)) | sed 's/.*md5=//')
  kd=$(k_md5)
  if [ "$ud" = "$kd" ]; then ok "D1 Diskless usertgt's LUN reads the kernel's disk: md5 $ud"; else bad "D1 LUN $ud kernel disk $kd"; fi
  # D2. usertgt restarts with its disk back (marked not Consistent at the failure): resync from the kernel.
  "$here/utgt.sh" stop
  rm -f "$WORK/udisk.img.fail"
  "$here/utgt.sh" start
  if wait_u 'role:Secondary disk:UpToDate peer role:Secondary replication:Established peer-disk:UpToDate' 120; then
    ok "D2 usertgt re-attached: $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"was":[^}]*')"
  else bad "D2 usertgt re-attach"; fi
  same_data "D2"
  # D3. The kernel Primary detaches (drbdadm detach): it reads and writes through usertgt; re-attach resyncs.
  kadm primary r0
  kadm detach r0
  wait_k 'ro:Primary/Secondary ds:Diskless/UpToDate' 20 || bad "D3 kernel detach"
  ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=3000 count=256 oflag=direct 2>/dev/null"
  kd=$(ksh "dd if=/dev/drbd0 bs=1k iflag=direct 2>/dev/null | md5sum | cut -c1-32")
  ud=$(iscsi read 0 $((KB * 2)) | sed 's/.*md5=//')
  if [ "$kd" = "$ud" ] && wait_u 'peer-disk:Diskless' 5; then
    ok "D3 Diskless kernel Primary served by usertgt: /dev/drbd0 md5 = usertgt LUN md5 = $kd"
  else bad "D3 kernel /dev/drbd0 $kd usertgt LUN $ud; usertgt $(ustate)"; fi
  # A Diskless kernel node connects to the UpToDate usertgt (no P_UUIDS from it, P_SIZES without a disk).
  kadm secondary r0
  kadm disconnect r0
  kadm connect r0
  if wait_k 'cs:Connected ro:Secondary/Secondary ds:Diskless/UpToDate' 30 && wait_u 'peer-disk:Diskless' 10; then
    ok "D3 Diskless kernel reconnected to usertgt: usertgt $(ustate | cut -c1-90)"
  else bad "D3 Diskless kernel reconnect; usertgt $(ustate)"; fi
  kadm primary r0
  ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=5000 count=64 oflag=direct 2>/dev/null"
  kadm attach r0
  if wait_k 'cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate' 60; then
    ok "D3 kernel re-attached: $(ksh "dmesg | grep -o 'Began resync as SyncTarget.*' | tail -1")"
  else bad "D3 kernel re-attach"; fi
  same_data "D3"
  # D4. usertgt's Primary detaches (drbdadm detach, its LUN in use): Diskless, served by the kernel, which
  #     marks the writes (its disconnect is refused: no UpToDate data without the peer); attach resyncs them.
  kadm secondary r0
  uadm primary r0
  uadm detach r0
  if wait_u 'role:Primary disk:Diskless' 10 && wait_k 'ro:Secondary/Primary ds:UpToDate/Diskless' 20; then
    ok "D4 usertgt Primary detached: usertgt $(ustate | cut -c1-60); kernel $(kstate | cut -c1-60)"
  else bad "D4 usertgt detach"; fi
  head -c 1M /dev/urandom >"$WORK/patf.bin"
  iscsi write 24000 "$WORK/patf.bin" >/dev/null || bad "D4 write while Diskless"
  want=$(md5sum <"$WORK/patf.bin" | cut -c1-32)
  got=$(ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=24000 count=2048 2>/dev/null | md5sum | cut -c1-32")
  [ "$want" = "$got" ] && ok "D4 the Diskless Primary's write is on the kernel's disk ($got)" || bad "D4 write: want $want got $got"
  uadm disconnect r0 >/dev/null 2>&1 && bad "D4 a Diskless Primary's disconnect was not refused"
  uadm attach r0
  if wait_u 'role:Primary disk:UpToDate peer role:Secondary replication:Established peer-disk:UpToDate' 60; then
    ok "D4 usertgt re-attached: $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"was":[^}]*')"
  else bad "D4 usertgt re-attach"; fi
  same_data "D4"
  ksh "dmesg" >"$WORK/dmesg.txt"
  "$here/utgt.sh" stop
  [ -n "${KEEP:-}" ] || "$here/vm.sh" stop
  [ "$failed" = 0 ] && say "done" || say "failed"
  exit "$failed"
fi

# 4. Kernel disconnects, usertgt writes, kernel reconnects: bitmap-based resync usertgt -> kernel.
kadm disconnect r0
head -c 1M /dev/urandom >"$WORK/pat2.bin"
iscsi write 30000 "$WORK/pat2.bin" >/dev/null
kadm connect r0
if wait_k 'cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate' 60; then
  ok "4 reconnect resync usertgt -> kernel: $(ksh "dmesg | grep -o 'Began resync as SyncTarget.*' | tail -1")"
else bad "4 reconnect resync usertgt -> kernel"; fi
same_data "4"

# 5. Roles swap; the kernel Primary writes (buffered, many epochs; 1 MiB direct; a discard = P_TRIM).
uadm secondary r0
kadm primary r0
ksh "dd if=/dev/urandom of=/tmp/p.bin bs=64k count=64 2>/dev/null; for i in 1 2 3 4; do dd if=/tmp/p.bin of=/dev/drbd0 bs=4k seek=\$((i*700)) 2>/dev/null; done; sync; dd if=/dev/urandom of=/dev/drbd0 bs=1M count=4 seek=20 oflag=direct 2>/dev/null; blkdiscard -o 1048576 -l 1048576 /dev/drbd0"
wait_k 'cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate' 10 || bad "5 connection dropped during kernel writes"
kd=$(ksh "dd if=/dev/drbd0 bs=1k 2>/dev/null | md5sum | cut -c1-32")
ud=$(iscsi read 0 $((KB * 2)) | sed 's/.*md5=//')
if [ "$kd" = "$ud" ]; then ok "5 kernel Primary writes -> usertgt: /dev/drbd0 md5 = usertgt LUN md5 = $kd"; else bad "5 kernel $kd usertgt LUN $ud"; fi
same_data "5"

# 6. usertgt disconnects, the kernel writes, usertgt reconnects: bitmap-based resync kernel -> usertgt.
uadm disconnect r0
ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=5000 count=512 oflag=direct 2>/dev/null"
uadm connect r0
if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 60; then
  ok "6 reconnect resync kernel -> usertgt: $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"was":[^}]*')"
else bad "6 reconnect resync kernel -> usertgt"; fi
same_data "6"

# 7. Full sync kernel -> usertgt: usertgt's disk replaced by a fresh one (create-md by the BIO helper).
"$here/utgt.sh" stop
rm -f "$WORK/udisk.img"
"$here/utgt.sh" start
if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 120; then
  ok "7 full sync kernel -> usertgt: $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"was":[^}]*')"
else bad "7 full sync kernel -> usertgt"; fi
same_data "7"

if [ -n "${VERIFY:-}" ]; then
  # 8. Online verify started on the kernel (VerifyS), usertgt answers as VerifyT: 0 out of sync expected.
  kadm verify r0
  sleep 2
  wait_k 'cs:Connected' 120
  if ksh "dmesg | grep -q 'Online verify done'"; then
    ok "8 verify by the kernel: $(ksh "dmesg | grep -o 'Online verify found.*\|Online verify done.*'" | paste -sd' ')"
  else bad "8 verify: $(ksh "dmesg | tail -5")"; fi
fi

ksh "dmesg" >"$WORK/dmesg.txt"
if grep -E 'BAD|ProtocolError|error receiving' "$WORK/dmesg.txt" >/dev/null; then
  bad "kernel complained: $(grep -E 'BAD|ProtocolError|error receiving' "$WORK/dmesg.txt" | head -3 | paste -sd' ')"
else ok "no protocol errors in the guest's dmesg"; fi

# 9. Split brain: both Primary while disconnected, both write, reconnect: both detect it and go StandAlone
#    (after-sb-* disconnect); usertgt then reconnects with --discard-my-data and resyncs from the kernel.
kadm disconnect r0
wait_k 'cs:StandAlone' 10 >/dev/null
kadm primary r0 >/dev/null
ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k count=10 seek=100 oflag=direct 2>/dev/null"
uadm primary r0
head -c 64k /dev/urandom >"$WORK/pat3.bin"
iscsi write 8000 "$WORK/pat3.bin" >/dev/null
kadm connect r0
if wait_k 'cs:StandAlone' 30 && wait_u 'peer connection:StandAlone' 10 &&
  ksh "dmesg | grep -q 'Split-Brain detected but unresolved'"; then
  ok "9 split brain: both StandAlone; $(ksh "dmesg | grep -o 'uuid_compare.*\|Split-Brain detected but unresolved.*' | tail -2" | paste -sd' ')"
else bad "9 split brain not detected on both sides"; fi
uadm secondary r0
uadm connect --discard-my-data r0
kadm connect r0
if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 60; then
  ok "9 resolved by usertgt's --discard-my-data: $(ksh "dmesg | grep -o 'Split-Brain detected, manually solved.*\|Began resync as SyncSource.*' | tail -2" | paste -sd' ')"
else bad "9 discard-my-data"; fi
same_data "9"
# 10. Crash of the usertgt Primary (kill -9 during iSCSI writes); the kernel takes over and writes; usertgt
#     restarts: its activity log marks the hot extents, P_UUIDS carries crashed-primary, bitmap resync.
kadm secondary r0
uadm primary r0
head -c 8M /dev/urandom >"$WORK/big.bin"
iscsi write 0 "$WORK/big.bin" >/dev/null 2>&1 &
sleep 3
kill -9 "$(cat "$WORK/utgt.pid")"
rm -f "$WORK/utgt.pid"
wait
wait_k 'cs:WFConnection' 30 >/dev/null
kadm primary r0
ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k count=16 seek=4000 oflag=direct 2>/dev/null"
"$here/utgt.sh" start
if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 60; then
  ok "10 usertgt Primary killed, rejoins: $(grep '"attached"' "$WORK/utgt.log" | tail -1 | grep -o '"unclean":[^,]*,"alBitsMarked":[0-9]*'); kernel $(ksh "dmesg | grep -o 'peer [0-9A-F:]* bits:[0-9]* flags:[0-9]*\|uuid_compare.*\|Began resync as SyncSource.*' | tail -3" | paste -sd' ')"
else bad "10 usertgt crash and rejoin"; fi
same_data "10"

if [ -n "${ADJUST:-}" ]; then
  # 11. drbdadm adjust while Connected (kernel Primary, usertgt Secondary), writes in between, no resync:
  #     the protocol changed in both files, adjusted on the kernel first (its P_PROTOCOL_UPDATE reaches
  #     usertgt, whose own adjust then has nothing to do); back, adjusted on usertgt first (usertgt's
  #     P_PROTOCOL_UPDATE, and a new resync-rate as P_SYNC_PARAM89, reach the kernel: `drbdadm-84 -d adjust`
  #     there then plans nothing).
  other=A
  [ "$PROTO" = A ] && other=C
  resyncs=$(ksh "dmesg | grep -c 'Began resync'")
  edit() { # from-protocol to-protocol from-rate to-rate
    sed -i "s|protocol $1;|protocol $2;|; s|resync-rate $3;|resync-rate $4;|" "$RES"
    ksh "sed -i 's|protocol $1;|protocol $2;|; s|resync-rate $3;|resync-rate $4;|' /etc/drbd.d/r0.res"
  }
  edit "$PROTO" "$other" 40M 40M
  kadm adjust r0
  if wait_k "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate $other " 10 &&
    grep -q 'the peer changed the net options (P_PROTOCOL_UPDATE)' "$WORK/utgt.log"; then
    ok "11 kernel adjust -> protocol $other on both: $(kstate | grep -o 'UpToDate/UpToDate [ABC]')"
  else bad "11 kernel adjust to protocol $other: $(kstate)"; fi
  n=$(grep -c 'adjust: nothing to do' "$WORK/utgt.log")
  uadm adjust r0
  if [ "$(grep -c 'adjust: nothing to do' "$WORK/utgt.log")" -gt "$n" ]; then ok "11 usertgt adjust after the kernel's: nothing to do"
  else bad "11 usertgt adjust after the kernel's did something: $(grep '"adjusted"' "$WORK/utgt.log" | tail -1)"; fi
  ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=6000 count=256 oflag=direct 2>/dev/null"
  edit "$other" "$PROTO" 40M 20M
  uadm adjust r0
  sleep 1
  plan=$(ksh "drbdadm-84 -d adjust r0 2>&1 | grep -v -e 'version: ' -e 'mixing different'")
  if wait_k "cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate $PROTO " 10 && [ -z "$plan" ]; then
    ok "11 usertgt adjust -> protocol $PROTO and resync-rate 20M on both (kernel's adjust plans nothing)"
  else bad "11 usertgt adjust back to $PROTO: $(kstate); kernel would still run: $plan"; fi
  ksh "drbdsetup-84 show r0 2>/dev/null | grep -E 'protocol|resync-rate'" | sed 's/^/  guest: /'
  ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=7000 count=256 oflag=direct 2>/dev/null"
  if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 10 &&
    [ "$(ksh "dmesg | grep -c 'Began resync'")" = "$resyncs" ]; then
    ok "11 still Connected, no resync during the adjusts"
  else bad "11 connection or resync changed: $(ustate); $(ksh "dmesg | tail -5" | paste -sd' ')"; fi
  same_data "11"
fi

if [ -n "${RESIZE:-}" ]; then
  # 12. Online grow (kernel Primary, usertgt Secondary): the guest's /dev/vda grown through QMP and usertgt's
  #     file with truncate; `drbdadm resize` on usertgt (its P_SIZES; the kernel grows, answers, and as
  #     Primary resyncs the new area), then once more, 64 MiB, started on the kernel. Each time: both at the
  #     new size, Connected UpToDate/UpToDate, the kernel writes into the new area, both disks equal.
  usable_kb() { # usable KiB of a backing disk of $1 MiB with internal metadata (metadata_layout.ts)
    local cap=$(($1 * 2048)) bm
    bm=$(((((cap + 32767) / 32768) + 7) / 8 * 8))
    echo $(((cap / 8 * 8 - 8 - (bm + 8 + 64) + 8) / 2))
  }
  grow() { # MiB, who runs drbdadm resize
    local mb=$1 who=$2 kb
    "$here/vm.sh" resize "$mb" || bad "12 QMP block_resize to $mb MiB"
    truncate -s "${mb}M" "$WORK/udisk.img"
    if [ "$who" = kernel ]; then kadm resize r0; else uadm resize r0; fi
    kb=$(usable_kb "$mb")
    if wait_k 'cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate' 120 &&
      wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 30 &&
      [ "$(ksh "blockdev --getsize64 /dev/drbd0")" = "$((kb * 1024))" ]; then
      ok "12 resize on $who to $mb MiB: /dev/drbd0 $kb KiB; $(ksh "dmesg | grep -o 'new size.*\|drbd_bm_resize called.*\|Began resync as SyncSource.*\|Resync done.*' | tail -4" | paste -sd' ')"
    else bad "12 resize on $who to $mb MiB: $(kstate); $(ustate); size $(ksh "blockdev --getsize64 /dev/drbd0")"; fi
    grep '"grown (drbdadm resize)"' "$WORK/utgt.log" | tail -1 | grep -o '"beforeSectors":[0-9]*,"sectors":[0-9]*' | sed 's/^/  usertgt: /'
    ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=$(((kb - 64) / 4)) count=16 oflag=direct 2>/dev/null"
    KB=$kb
    same_data "12 ($mb MiB)"
  }
  grow 48 usertgt
  grow 64 kernel
fi

if [ -n "${CSUMS:-}" ]; then
  # 13. Checksum-based resync after a short disconnect, both directions: 3 blocks rewritten with the data
  #     they hold and 2 blocks changed; only the 2 travel (P_RS_DATA_REPLY), the 3 are P_RS_IS_IN_SYNC.
  #     The blocks lie apart, so each is one request of its own.
  #  a. The kernel Primary is SyncSource, usertgt SyncTarget sends P_CSUM_RS_REQUEST.
  uadm disconnect r0
  ksh "for n in 100 300 500; do dd if=/dev/drbd0 of=/tmp/b bs=4k skip=\$n count=1 iflag=direct 2>/dev/null; dd if=/tmp/b of=/dev/drbd0 bs=4k seek=\$n count=1 oflag=direct 2>/dev/null; done; for n in 700 900; do dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=\$n count=1 oflag=direct 2>/dev/null; done"
  uadm connect r0
  if wait_u 'role:Secondary disk:UpToDate peer role:Primary replication:Established peer-disk:UpToDate' 60 &&
    grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -q '"was":"SyncTarget".*"sameCsumBlocks":3,"transferredBlocks":2'; then
    ok "13a csums resync kernel -> usertgt: usertgt $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"sameCsumBlocks":[0-9]*,"transferredBlocks":[0-9]*'); kernel $(ksh "dmesg | grep -o '[0-9]* % had equal checksums.*' | tail -1")"
  else bad "13a csums resync kernel -> usertgt: $(grep '"resync done"' "$WORK/utgt.log" | tail -1)"; fi
  same_data "13a"
  #  b. usertgt Primary is SyncSource, the kernel SyncTarget sends P_CSUM_RS_REQUEST.
  kadm secondary r0
  uadm primary r0
  kadm disconnect r0
  reports=$(ksh "dmesg | grep -c 'had equal checksums'")
  for n in 1100 1300 1500; do
    dd if="$WORK/udisk.img" of="$WORK/same.bin" bs=4k skip=$n count=1 2>/dev/null
    iscsi write $((n * 8)) "$WORK/same.bin" >/dev/null
  done
  for n in 1700 1900; do
    head -c 4k /dev/urandom >"$WORK/diff.bin"
    iscsi write $((n * 8)) "$WORK/diff.bin" >/dev/null
  done
  kadm connect r0
  # A new report (13a's, from the kernel as SyncSource, reads the same) with the figures wanted.
  if wait_k 'cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate' 60 &&
    [ "$(ksh "dmesg | grep -c 'had equal checksums'")" -gt "$reports" ] &&
    ksh "dmesg | grep -o '[0-9]* % had equal checksums.*' | tail -1" | grep -q 'eliminated: 12K; transferred 8K total 20K'; then
    ok "13b csums resync usertgt -> kernel: kernel $(ksh "dmesg | grep -o '[0-9]* % had equal checksums.*' | tail -1"); usertgt $(grep '"resync done"' "$WORK/utgt.log" | tail -1 | grep -o '"was":"SyncSource".*"transferredBlocks":[0-9]*')"
  else bad "13b csums resync usertgt -> kernel: $(ksh "dmesg | grep -i 'checksums\|resync' | tail -3" | paste -sd' ')"; fi
  same_data "13b"
fi

"$here/utgt.sh" stop
[ -n "${KEEP:-}" ] || "$here/vm.sh" stop
[ "$failed" = 0 ] && say "done" || say "failed"
exit "$failed"
