# Start and stop the peer target, tgtd (Debian package `tgt`), for the benchmark scripts. Source it.
# Sets and clears the global tgtd_pid.
tgtd_pid=""

# tgtd_start CONTROL_PORT PORT IQN BACKING_FILE BLOCK_SIZE LOG [BSTYPE]
# One target (tid 1) on 127.0.0.1:PORT with BACKING_FILE as LUN 1, open to every initiator.
# BSTYPE: tgt's backing store, rdwr (default: pread/pwrite on its worker threads) or aio (Linux AIO).
tgtd_start() {
  local control=$1 port=$2 iqn=$3 backing=$4 bs=$5 log=$6 bstype=${7:-rdwr}
  local t="tgtadm -C $control --lld iscsi"
  # The control socket is a path (/var/run/tgtd/socket.N), shared by every network namespace: a tgtd
  # already there (another run's) would take our tgtadm commands while ours exits on its lock.
  if $t --op show --mode target >/dev/null 2>&1; then
    echo "bench: another tgtd already listens on control port $control; set TGT_CONTROL_PORT" >&2
    return 1
  fi
  tgtd -f -C "$control" --iscsi "portal=127.0.0.1:$port" >"$log" 2>&1 &
  tgtd_pid=$!
  for _ in $(seq 1 50); do
    kill -0 "$tgtd_pid" 2>/dev/null || { echo "bench: tgtd exited: $(cat "$log")" >&2; tgtd_pid=""; return 1; }
    $t --op show --mode target >/dev/null 2>&1 && break
    sleep 0.1
  done
  $t --op new --mode target --tid 1 -T "$iqn"
  $t --op new --mode logicalunit --tid 1 --lun 1 -b "$backing" --blocksize "$bs" --bstype "$bstype"
  $t --op bind --mode target --tid 1 -I ALL
}

# tgtd_stop CONTROL_PORT: delete the target, ask tgtd to exit, kill it if it does not within 2 s.
tgtd_stop() {
  local control=$1
  [ -n "$tgtd_pid" ] || return 0
  tgtadm -C "$control" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
  tgtadm -C "$control" --op delete --mode system >/dev/null 2>&1 || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$tgtd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$tgtd_pid" 2>/dev/null || true
  wait "$tgtd_pid" 2>/dev/null || true
  tgtd_pid=""
}
