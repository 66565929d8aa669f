#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""One TCP stream's rate with the kernel's buffer autotuning or explicit
SO_SNDBUF / SO_RCVBUF (bench/connections.sh runs it in the WAN's
namespaces).

  sockbuf.py recv PORT [RCVBUF]          serve one connection, print MB/s
  sockbuf.py send HOST PORT BYTES [SNDBUF]
A buffer of 0 (or none) leaves the kernel's autotuning on."""
import socket
import sys
import time

def setbuf(s, opt, v):
    if v:
        s.setsockopt(socket.SOL_SOCKET, opt, v)

if sys.argv[1] == "recv":
    port = int(sys.argv[2])
    rcv = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    setbuf(l, socket.SO_RCVBUF, rcv)
    l.bind(("0.0.0.0", port))
    l.listen(1)
    c, _ = l.accept()
    buf = bytearray(1 << 20)
    n, t0 = 0, None
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        if t0 is None:
            t0 = time.monotonic()
        n += k
    dt = time.monotonic() - t0
    got = c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    print(f"{n / dt / 1e6:.1f} MB/s ({n * 8 / dt / 1e6:.0f} Mbit/s), SO_RCVBUF {got}")
else:
    host, port, total = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    snd = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    setbuf(s, socket.SO_SNDBUF, snd)
    s.connect((host, port))
    blk = b"\xa5" * (1 << 20)
    left = total
    while left > 0:
        left -= s.send(blk[: min(left, len(blk))])
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
