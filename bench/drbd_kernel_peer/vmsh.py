#!/usr/bin/env python3
"""Runs one shell command in the kernel DRBD peer guest through its command port (init.sh: nc -e sh on
10.77.0.2:2323, reachable inside the netns; vm.sh sh runs this under `ip netns exec`).

    bench/drbd_kernel_peer/vmsh.py [-a ADDR] [-p PORT] [-t SECONDS] 'command'

Prints the command's output (stdout and stderr); exits with its exit status (124 on timeout, 125 when the
guest cannot be reached).
"""
import argparse, socket, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("-a", "--addr", default="10.77.0.2")
ap.add_argument("-p", "--port", type=int, default=2323)
ap.add_argument("-t", "--timeout", type=float, default=300)
ap.add_argument("command")
a = ap.parse_args()
tag = "__KPEER_RC"
try:
    s = socket.create_connection((a.addr, a.port), timeout=10)
except OSError as e:
    print(f"vmsh: {a.addr}:{a.port}: {e}", file=sys.stderr)
    sys.exit(125)
# The marker is joined only when echo runs, so no echo of the input could be mistaken for it.
s.sendall(("{ %s\n} 2>&1; echo %s\"\"=$?\n" % (a.command, tag)).encode())
s.shutdown(socket.SHUT_WR)
buf = b""
end = time.time() + a.timeout
s.settimeout(1)
while time.time() < end:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        continue
    if not chunk:
        break
    buf += chunk
out = buf.decode(errors="replace")
i = out.rfind(tag + "=")
if i < 0:
    sys.stdout.write(out)
    sys.exit(124)
sys.stdout.write(out[:i])
sys.exit(int(out[i + len(tag) + 1 :].strip() or 1))
