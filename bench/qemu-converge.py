#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""QEMU 7.2 block migration under writes, for comparison with
bench/converge.sh: a -M none QEMU with one raw drive migrates it
(`migrate` with blk: true, max-bandwidth capped) into `blkmig receive
--format qemu`, while a writer issues random writes through the HMP
`qemu-io` command at a target rate.  Reports, per block size and rate:
converged or not within the limit (QEMU has no other answer than to go on
iterating), total time, bytes on the wire (as the receiving socket counted
them), downtime as QEMU reports it, the dirty bytes QEMU had left when it
was cancelled,
the write rate reached and the writer's latency p50/p99 (one QMP round
trip per write, measured the same way with no migration).

    bench/qemu-converge.py [--size 1G] [--bandwidth 100M] [--limit 45]
                           [--rates 20M,80M,200M] [--sizes 4K,64K]
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from qmp import QMP  # noqa: E402  (the shared client)

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(s):
    return int(s[:-1]) * UNITS[s[-1]] if s[-1] in UNITS else int(s)


def received(port):
    """Bytes the receiver's end of the migration connection has received,
    from the kernel (ss): QEMU's own query-migrate figures stop counting
    after the bulk pass."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    for tok in out.split():
        if tok.startswith("bytes_received:"):
            return int(tok.split(":")[1])
    return 0


class Writer(threading.Thread):
    """Random writes of bs bytes at rate bytes/s through HMP qemu-io."""

    def __init__(self, qmp, dev_size, bs, rate):
        super().__init__(daemon=True)
        self.q, self.size, self.bs, self.rate = qmp, dev_size, bs, rate
        self.stop = threading.Event()
        self.lat = []
        self.bytes = 0
        self.rng = random.Random(3)

    def run(self):
        t0 = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = t0 + n * self.bs / self.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            off = self.rng.randrange(self.size // self.bs) * self.bs
            a = time.monotonic()
            out = self.q.call("human-monitor-command",
                              **{"command-line": f'qemu-io drive0 "write -P {n % 255 + 1} {off} {self.bs}"'})
            if "failed" in out or "error" in out.lower():
                break  # the drive is inactive after completion
            self.lat.append(time.monotonic() - a)
            self.bytes += self.bs
            n += 1

    def figures(self, secs):
        lat = sorted(self.lat) or [0]
        pct = lambda p: int(lat[min(len(lat) - 1, int(len(lat) * p))] * 1e6)
        return pct(0.50), pct(0.99), self.bytes / secs / 1e6 if secs else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--bandwidth", default="100M")
    ap.add_argument("--limit", type=float, default=45)
    ap.add_argument("--rates", default="20M,80M,200M")
    ap.add_argument("--sizes", default="4K,64K")
    ap.add_argument("--quiet-secs", type=float, default=3)
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    blkmig = os.environ.get("BLKMIG", os.path.join(here, "..", "build", "tools", "blkmig"))
    if not shutil.which("qemu-system-x86_64") or not os.access(blkmig, os.X_OK):
        sys.exit("bench: needs qemu-system-x86_64 and a built blkmig (make)")
    w = tempfile.mkdtemp(prefix="blkmig-qconv.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    dev_size = size(a.size)
    with open(os.path.join(w, "base.img"), "wb") as f:
        for _ in range(dev_size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    print(f"QEMU 7.2 block migration: {a.size} drive, max-bandwidth {a.bandwidth}, "
          f"writes via HMP qemu-io, limit {a.limit:.0f}s")
    print(f"{'bs':4} {'rate':5} | {'conv':4} {'total_s':>7} {'wire_MiB':>8} {'downtime':>8} {'left_MiB':>8} | "
          f"{'base_p50':>9} {'base_p99':>9} {'base_MB/s':>9} | {'mig_p50':>9} {'mig_p99':>9} {'mig_MB/s':>8}")
    try:
        for bs in a.sizes.split(","):
            for rate in a.rates.split(","):
                run(a, w, blkmig, dev_size, size(bs), size(rate), bs, rate)
    finally:
        shutil.rmtree(w, ignore_errors=True)


def run(a, w, blkmig, dev_size, bs, rate, bs_s, rate_s):
    shutil.copy(os.path.join(w, "base.img"), os.path.join(w, "src.img"))
    dst = os.path.join(w, "dst.img")
    with open(dst, "wb") as f:  # QEMU's stream does not say how large
        f.truncate(dev_size)
    ports = os.path.join(w, "ports")
    if os.path.exists(ports):
        os.unlink(ports)
    recv = subprocess.Popen([blkmig, "receive", "--listen", "127.0.0.1:0", "--port-file", ports,
                             "--format", "qemu", "--device", f"drive0={dst}",
                             "--timeout", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for sock in ("q1", "q2"):
        p = os.path.join(w, sock)
        if os.path.exists(p):
            os.unlink(p)
    qemu = subprocess.Popen(["qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                             "-drive", f"file={os.path.join(w, 'src.img')},format=raw,if=none,id=drive0",
                             "-qmp", f"unix:{os.path.join(w, 'q1')},server=on,wait=off",
                             "-qmp", f"unix:{os.path.join(w, 'q2')},server=on,wait=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        q1, q2 = QMP(os.path.join(w, "q1")), QMP(os.path.join(w, "q2"))
        for _ in range(200):
            if os.path.exists(ports) and os.path.getsize(ports) > 0:
                break
            time.sleep(0.025)
        port = open(ports).read().strip().split(":")[-1].split("=")[-1]
        base = Writer(q1, dev_size, bs, rate)
        base.start()
        time.sleep(a.quiet_secs)
        base.stop.set()
        base.join()
        b50, b99, bmb = base.figures(a.quiet_secs)
        q2.call("migrate-set-parameters", **{"max-bandwidth": size(a.bandwidth)})
        wr = Writer(q1, dev_size, bs, rate)
        t0 = time.monotonic()
        q2.call("migrate", uri=f"tcp:127.0.0.1:{port}", blk=True)
        wr.start()
        conv = "yes"
        wire = 0
        left = "-"
        while True:
            time.sleep(0.2)
            st = q2.call("query-migrate")
            wire = max(wire, received(port))
            if st.get("status") == "active":
                left = st.get("disk", {}).get("remaining", 0) // (1 << 20)
            if st.get("status") == "completed":
                break
            if st.get("status") in ("failed", "cancelled"):
                conv = "FAIL"
                break
            if time.monotonic() - t0 > a.limit:
                conv = "no"
                q2.call("migrate_cancel")
                for _ in range(100):
                    time.sleep(0.1)
                    st = q2.call("query-migrate")
                    if st.get("status") in ("cancelled", "failed", "completed"):
                        break
                break
        secs = time.monotonic() - t0
        wr.stop.set()
        wr.join(timeout=10)
        m50, m99, mmb = wr.figures(secs)
        print(f"{bs_s:4} {rate_s:5} | {conv:4} {st.get('total-time', secs * 1000) / 1000:7.1f} "
              f"{wire // (1 << 20):8} {str(st.get('downtime', '-')) + 'ms':>8} {left:>8} | "
              f"{b50:7}us {b99:7}us {bmb:9.1f} | {m50:7}us {m99:7}us {mmb:8.1f}", flush=True)
    finally:
        qemu.kill()
        recv.kill()
        qemu.wait()
        recv.wait()


if __name__ == "__main__":
    main()
