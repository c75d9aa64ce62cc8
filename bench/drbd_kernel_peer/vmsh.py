#!/usr/bin/env python3
"""Runs one shell command in the kernel DRBD peer guest over its second serial port (a QEMU unix socket).

    bench/drbd_kernel_peer/vmsh.py [-s SOCK] [-t SECONDS] 'command'

Prints the command's output; exits with the command's exit status (124 on timeout).
"""
import argparse, os, secrets, socket, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("-s", "--sock", default=os.environ.get("KPEER_SOCK", "/var/tmp/usertgt-kpeer/shell.sock"))
ap.add_argument("-t", "--timeout", type=float, default=120)
ap.add_argument("command")
a = ap.parse_args()
tag = "__KPEER_" + secrets.token_hex(4)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(a.sock)
# The marker is joined only when echo runs, so a tty echo of the input cannot be mistaken for it.
s.sendall(("{ %s\n} 2>&1; echo %s\"\"%s=$?\n" % (a.command, tag[:8], tag[8:])).encode())
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
    i = buf.find((tag + "=").encode())
    if i >= 0 and buf.find(b"\n", i) >= 0:
        out = buf[:i].decode(errors="replace")
        rc = int(buf[i + len(tag) + 1 : buf.find(b"\n", i)])
        sys.stdout.write(out)
        sys.exit(rc)
sys.stdout.write(buf.decode(errors="replace"))
sys.exit(124)
