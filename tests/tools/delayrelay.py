"""delayrelay: a TCP relay that holds each connection's forward bytes back.

  delayrelay.py PORT_FILE TO_HOST:TO_PORT DELAY_MS[,DELAY_MS...]

Listens on 127.0.0.1 (any free port, written to PORT_FILE) and relays every
connection to TO.  The N'th connection accepted (from 1) holds what the
client sends for the N'th delay in milliseconds (the last one for any
after), keeping its order; what the server sends back passes at once.  A
blkmig migration's first connection is its main stream and the next its
write lane, so "30,0" makes the chunk records late, "0,30" the writes.
Runs until SIGTERM.
"""

import heapq
import socket
import sys
import threading
import time


def pump_back(src, dst):
    try:
        while True:
            b = src.recv(1 << 20)
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    for s in (dst,):
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def pump_late(src, dst, delay):
    """Forward src to dst, each read delay seconds after it arrived."""
    q = []
    cv = threading.Condition()
    done = [False]

    def sender():
        while True:
            with cv:
                while not q and not done[0]:
                    cv.wait()
                if not q:
                    break
                due, seq, b = q[0]
                now = time.monotonic()
                if due > now:
                    cv.wait(due - now)
                    continue
                heapq.heappop(q)
            try:
                dst.sendall(b)
            except OSError:
                return
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    seq = 0
    try:
        while True:
            b = src.recv(1 << 20)
            if not b:
                break
            with cv:
                heapq.heappush(q, (time.monotonic() + delay, seq, b))
                seq += 1
                cv.notify()
    except OSError:
        pass
    with cv:
        done[0] = True
        cv.notify()
    t.join()


def main():
    port_file, to, delays = sys.argv[1], sys.argv[2], sys.argv[3]
    host, port = to.rsplit(":", 1)
    delays = [int(d) / 1000.0 for d in delays.split(",")]
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    import os
    os.rename(port_file + ".tmp", port_file)
    n = 0
    while True:
        c, _ = ls.accept()
        s = socket.create_connection((host, int(port)))
        for x in (c, s):
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        delay = delays[min(n, len(delays) - 1)]
        n += 1
        threading.Thread(target=pump_late, args=(c, s, delay), daemon=True).start()
        threading.Thread(target=pump_back, args=(s, c), daemon=True).start()


if __name__ == "__main__":
    main()
