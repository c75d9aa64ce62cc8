# The VOLUMES=2 run of interop.sh (sourced by it, after the guest booted with a second disk): one resource r0
# of two volumes — volume 0 on the guest's /dev/vda (32 MiB) and usertgt's file_k, volume 1 on /dev/vdb
# (16 MiB) and file_k1 — over one connection. Steps V1-V6: handshake of both volumes, full sync of both from
# the kernel, kernel writes to both, usertgt writes to both over iSCSI, a reconnect after writes to volume 1
# only (only volume 1 resyncs), a kill -9 of the usertgt Primary during writes to both. Uses interop.sh's
# say/ok/bad/ksh/kadm/uadm and $WORK, $here, $PROTO.
cat >"$WORK/r0.res" <<RES
resource r0 {
    net { protocol $PROTO; }
    disk { resync-rate 40M; }
    on kpeer {
        address 10.77.0.2:7860;
        volume 0 { device /dev/drbd0 minor 0; disk /dev/vda; meta-disk internal; }
        volume 1 { device /dev/drbd1 minor 1; disk /dev/vdb; meta-disk internal; }
    }
    on utgt {
        address 10.77.0.1:7861;
        volume 0 { device /dev/drbd0 minor 0; disk "/UMCfuse/dev/file_k"; meta-disk internal; }
        volume 1 { device /dev/drbd1 minor 1; disk "/UMCfuse/dev/file_k1"; meta-disk internal; }
    }
}
RES
export CONF=$here/usertgt_volumes.conf
rm -f "$WORK/udisk1.img"
kstate_v() { ksh "sed -n 's/^ *$1: //p' /proc/drbd"; }
wait_kv() { # both minors' /proc/drbd lines match the regex
  local i
  for i in $(seq 1 "${2:-60}"); do
    kstate_v 0 | grep -Eq "$1" && kstate_v 1 | grep -Eq "$1" && return 0
    sleep 1
  done
  echo "  guest 0: $(kstate_v 0)"
  echo "  guest 1: $(kstate_v 1)"
  return 1
}
# md5 of the replicated data of volume V: the first KiB of the DRBD device's size, guest disk vs usertgt file.
kib_of() { ksh "echo \$((\$(cat /sys/block/drbd$1/size) / 2))"; }
same_volume() { # step, volume
  local disk file kib k u
  disk=$([ "$2" = 0 ] && echo vda || echo vdb)
  file=$([ "$2" = 0 ] && echo udisk.img || echo udisk1.img)
  kib=$(kib_of "$2" | tr -d '\r')
  k=$(ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/$disk bs=1k count=$kib 2>/dev/null | md5sum | cut -c1-32")
  u=$(dd if="$WORK/$file" bs=1k count="$kib" 2>/dev/null | md5sum | cut -c1-32)
  if [ "$k" = "$u" ]; then ok "$1 volume $2 ($kib KiB): both disks md5 $k"; else bad "$1 volume $2: guest $k, usertgt $u"; fi
}

# V1. Both volumes' handshake over the one connection: both fresh, Secondary/Secondary Inconsistent.
ksh "mkdir -p /etc/drbd.d && cat >/etc/drbd.d/r0.res <<'RES'
$(cat "$WORK/r0.res")
RES"
kadm create-md r0 </dev/null >/dev/null
kadm up r0
"$here/utgt.sh" start || { bad "usertgt did not start"; return; }
if wait_kv 'cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent' &&
  wait_u 'volume:0 replication:Established .*volume:1 replication:Established'; then
  ok "V1 handshake of 2 volumes: $(uadm status r0 | tr -s ' \n' ' ')"
else bad "V1 handshake: usertgt $(ustate)"; fi

# V2. Full sync of both volumes from the kernel (primary --force on the guest).
kadm primary --force r0
if wait_u 'role:Secondary volume:0 disk:UpToDate volume:1 disk:UpToDate peer role:Primary volume:0 replication:Established peer-disk:UpToDate volume:1 replication:Established peer-disk:UpToDate' 120; then
  ok "V2 full sync kernel -> usertgt, both volumes: $(grep '"resync done"' "$WORK/utgt.log" | grep -o '"device":"drbd[01]".*"transferredBlocks":[0-9]*' | paste -sd' ')"
else bad "V2 full sync"; fi
same_volume V2 0
same_volume V2 1

# V3. The kernel Primary writes different data to each volume (buffered, many epochs spanning both; direct).
ksh "dd if=/dev/urandom of=/tmp/p0.bin bs=64k count=32 2>/dev/null; dd if=/dev/urandom of=/tmp/p1.bin bs=64k count=32 2>/dev/null; for i in 1 2 3; do dd if=/tmp/p0.bin of=/dev/drbd0 bs=4k seek=\$((i*600)) 2>/dev/null & dd if=/tmp/p1.bin of=/dev/drbd1 bs=4k seek=\$((i*500)) 2>/dev/null; wait; done; sync; dd if=/dev/urandom of=/dev/drbd1 bs=1M count=2 seek=8 oflag=direct 2>/dev/null"
wait_kv 'cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate' 10 || bad "V3 connection dropped during kernel writes"
same_volume V3 0
same_volume V3 1

# V4. Roles swap; usertgt writes to each volume over iSCSI (LUN0 = drbd0, LUN1 = drbd1).
kadm secondary r0
uadm primary r0
head -c 2M /dev/urandom >"$WORK/v0.bin"
head -c 1M /dev/urandom >"$WORK/v1.bin"
UTGT_LUN=0 iscsi write 4096 "$WORK/v0.bin" >/dev/null || bad "V4 iSCSI write to LUN0"
UTGT_LUN=1 iscsi write 2048 "$WORK/v1.bin" >/dev/null || bad "V4 iSCSI write to LUN1"
w0=$(md5sum <"$WORK/v0.bin" | cut -c1-32)
w1=$(md5sum <"$WORK/v1.bin" | cut -c1-32)
g0=$(ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=4096 count=4096 2>/dev/null | md5sum | cut -c1-32")
g1=$(ksh "echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/vdb bs=512 skip=2048 count=2048 2>/dev/null | md5sum | cut -c1-32")
if [ "$w0" = "$g0" ] && [ "$w1" = "$g1" ]; then
  ok "V4 usertgt Primary writes -> kernel: volume 0 md5 $g0, volume 1 md5 $g1"
else bad "V4 writes: volume 0 want $w0 got $g0, volume 1 want $w1 got $g1"; fi
same_volume V4 0
same_volume V4 1

# V5. The kernel disconnects; usertgt writes to volume 1 only; the reconnect resyncs volume 1 alone.
kadm disconnect r0
head -c 512K /dev/urandom >"$WORK/v5.bin"
UTGT_LUN=1 iscsi write 10000 "$WORK/v5.bin" >/dev/null || bad "V5 iSCSI write to LUN1"
ksh "dmesg -c >/dev/null"
kadm connect r0
if wait_kv 'cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate' 60; then
  ok "V5 reconnect: $(ksh "dmesg | grep -o 'drbd[01]: Began resync as SyncTarget.*\|drbd[01]: Resync done.*'" | tr -d '\r' | paste -sd' ')"
else bad "V5 reconnect"; fi
k0=$(ksh "dmesg | grep -o 'drbd0: Began resync as SyncTarget (will sync [0-9]* KB'" | tr -d '\r' | grep -o '[0-9]* KB' | head -1)
k1=$(ksh "dmesg | grep -o 'drbd1: Began resync as SyncTarget (will sync [0-9]* KB'" | tr -d '\r' | grep -o '[0-9]* KB' | head -1)
if [ "${k0:-0 KB}" = "0 KB" ] && [ "$k1" = "512 KB" ]; then
  ok "V5 only volume 1 resynced: volume 0 ${k0:-no resync}, volume 1 $k1"
else bad "V5 resync amounts: volume 0 '${k0:-none}', volume 1 '${k1:-none}' (want 0 / 512 KB)"; fi
same_volume V5 0
same_volume V5 1

# V6. kill -9 of the usertgt Primary while it writes to both volumes; the kernel takes over and writes to
#     both; usertgt restarts (its activity log marks the hot extents of each volume, P_UUIDS says crashed
#     primary): both volumes resync from the kernel.
head -c 4M /dev/urandom >"$WORK/v6a.bin"
head -c 4M /dev/urandom >"$WORK/v6b.bin"
UTGT_LUN=0 iscsi write 8192 "$WORK/v6a.bin" >/dev/null 2>&1 &
w0=$!
UTGT_LUN=1 iscsi write 16384 "$WORK/v6b.bin" >/dev/null 2>&1 &
w1=$!
sleep 1.5
kill -9 "$(cat "$WORK/utgt.pid")"
rm -f "$WORK/utgt.pid"
wait "$w0" "$w1" 2>/dev/null
if wait_kv 'cs:WFConnection ro:Secondary/Unknown ds:UpToDate/DUnknown' 30; then
  ok "V6 usertgt killed (-9) during writes to both volumes: kernel WFConnection on both minors"
else bad "V6 kernel after the kill"; fi
kadm primary r0
ksh "dd if=/dev/urandom of=/dev/drbd0 bs=4k seek=6000 count=64 oflag=direct 2>/dev/null; dd if=/dev/urandom of=/dev/drbd1 bs=4k seek=3000 count=64 oflag=direct 2>/dev/null"
"$here/utgt.sh" start || bad "V6 usertgt did not restart"
if wait_kv 'cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate' 120; then
  ok "V6 usertgt back: $(grep '"resync done"' "$WORK/utgt.log" | tail -2 | grep -o '"device":"drbd[01]".*"transferredBlocks":[0-9]*' | paste -sd' ')"
else bad "V6 usertgt back"; fi
same_volume V6 0
same_volume V6 1
ksh "dmesg" >"$WORK/dmesg.txt"
