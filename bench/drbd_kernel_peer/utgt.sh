#!/usr/bin/env bash
# usertgt's node "utgt" of the pair, inside the guest's netns: start|stop. Log: $WORK/utgt.log.
#   bench/drbd_kernel_peer/utgt.sh start [--log-level debug]
#   bench/drbd_kernel_peer/utgt.sh stop
#   bench/drbd_kernel_peer/utgt.sh adm CMD r0 [--force]      # usertgt drbdadm on its RPC socket
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
main=$(cd "$here/../.." && pwd)
WORK=${WORK:-/var/tmp/usertgt-kpeer}
NETNS=${NETNS:-usertgt-kpeer}
RES=${RES:-$here/r0.res} # the .res both nodes read (interop.sh writes variants under $WORK)
CONF=${CONF:-$here/usertgt.conf} # usertgt's config (usertgt_volumes.conf for VOLUMES=2)
mkdir -p "$WORK/state"
case ${1:?start, stop or adm} in
  start)
    shift
    # TCMUR_HANDLER=faulty: the backing file through the test handler that fails while udisk.img.fail exists.
    # GROWABLE=1: no size= on the TCMUR line, so the device follows its file when it grows (drbdadm resize).
    sed -e "s|@WORK@|$WORK|g" -e "s|/file/|/${TCMUR_HANDLER:-file}/|" ${GROWABLE:+-e "s| size=32M||"} \
      "$CONF" >"$WORK/usertgt.conf"
    [ -z "${GROWABLE:-}" ] || [ -f "$WORK/udisk.img" ] || truncate -s 32M "$WORK/udisk.img"
    extra=()
    [ "${TCMUR_HANDLER:-file}" = faulty ] && extra=(--handler-dir "$main/dist/test/support/tcmur_faulty")
    ip netns exec "$NETNS" node "$main/dist/src/cli/main.js" serve -c "$WORK/usertgt.conf" --no-fuse \
      --drbd-config "$RES" --node-name utgt --rpc-socket "$WORK/utgt.sock" --state-dir "$WORK/state" \
      "${extra[@]}" "$@" >>"$WORK/utgt.log" 2>&1 &
    echo $! >"$WORK/utgt.pid"
    for _ in $(seq 1 60); do
      grep -q 'usertgt: ready' "$WORK/utgt.log" 2>/dev/null && exit 0
      kill -0 "$(cat "$WORK/utgt.pid")" 2>/dev/null || break
      sleep 0.5
    done
    echo "utgt: did not start, see $WORK/utgt.log" >&2
    exit 1
    ;;
  stop)
    pid=$(cat "$WORK/utgt.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    rm -f "$WORK/utgt.pid"
    ;;
  adm)
    shift
    exec node "$main/dist/src/cli/main.js" drbdadm -s "$WORK/utgt.sock" "$@"
    ;;
esac
