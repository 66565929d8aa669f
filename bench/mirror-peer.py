#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A client's write latency during an active-mode migration, against the
peer that does the same thing: QEMU 7.2's active mirror (blockdev-mirror
with copy-mode write-blocking, which writes each guest write through to
the target before it completes, as blkmig's active mode mirrors it).

The same NBD client (bench/nbd-writer.c, built here with cc and libnbd)
writes bs bytes at a time at random offsets at a fixed rate, one write in
flight, to either
  blkmig: a `blkmig serve` source exporting the image over NBD, migrating
          with `migrate --mode active --max-bandwidth BW` to a
          `serve --incoming` on 127.0.0.1; or
  qemu:   a qemu-storage-daemon exporting the image over NBD, mirroring it
          (sync full, write-blocking, speed BW) to a qemu-nbd on 127.0.0.1;
  floor:  a third `blkmig serve`, exporting a copy of the image and
          migrating nothing, while the pair of blkmig's row migrates the
          same image in dirty mode with nobody writing to it: an NBD write
          (a round trip and a write to the page cache) beside the same
          copy, and nothing else.  A mirrored write makes two round trips
          (the client's, then the mirror's): about twice this is what the
          machine at hand allows;
first for --quiet-secs with nothing else running (base, after a second
of warm-up), then from the start of the migration to its end (blkmig:
completed, after its switch-over; qemu: the job ready, every byte
copied).  blkmig and qemu write through the page cache on both hosts,
so the two see the same disk.

Per run: how long the copy took, and the writer's p50/p99/p99.9/max and
rate in both phases, and during the copy the p99 of how late each write
completed against when it was due (a system the writer cannot keep pace
with loses rate, not latency: late_p99 and mig_MB/s show it).  Rates are
as converge.sh's: RATE 20M is 20 MiB/s, the MB/s columns 10^6 bytes/s.  --repeat N runs each row N times, the systems
taking turns, and then prints the median of each figure per row and
system with the lowest and highest mig p99 (on a noisy machine one run
says little).  Nothing is asserted: the figures are for reading.

    bench/mirror-peer.py [--size 1G] [--bandwidth 100M] [--sizes 64K,4K]
                         [--rates 20M] [--quiet-secs 3] [--limit 60]
                         [--repeat 1] [--systems blkmig,qemu,floor]
"""
import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
from qmp import QMP  # noqa: E402  (the shared client)

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(s):
    return int(s[:-1]) * UNITS[s[-1]] if s[-1] in UNITS else int(s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, secs=10):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.025)
    raise RuntimeError(f"nothing listens on port {port}")


def port_from(path, key, secs=10):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            for line in open(path):
                if line.startswith(key + "="):
                    return int(line.split("=", 1)[1])
        except FileNotFoundError:
            pass
        time.sleep(0.025)
    raise RuntimeError(f"no {key} port in {path}")


class Writer:
    """bench/nbd-writer: phase() ends a phase, finish() the last.  Its
    process is one of the run's (procs), killed with the rest on a
    failure."""

    def __init__(self, procs, exe, uri, bs, rate):
        self.p = subprocess.Popen([exe, uri, str(bs), str(rate)], stdout=subprocess.PIPE, text=True)
        procs.ps.append(self.p)

    def _figures(self):
        # A write that never returns holds the figures back: give up.
        if not select.select([self.p.stdout], [], [], 60)[0]:
            raise RuntimeError("the writer did not answer in 60 s")
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("the writer died")
        return json.loads(line)

    def phase(self):
        self.p.send_signal(signal.SIGUSR1)
        return self._figures()

    def finish(self):
        self.p.send_signal(signal.SIGTERM)
        f = self._figures()
        self.p.wait(timeout=10)
        return f


class Procs:
    """Processes of one run, killed and reaped at its end."""

    def __init__(self):
        self.ps = []

    def start(self, argv, log):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
        self.ps.append(p)
        return p

    def stop(self):
        for p in self.ps:
            if p.poll() is None:
                p.kill()
        for p in self.ps:
            p.wait()


def quiet_phase(a, wr):
    """The base figures: --quiet-secs of writes after a second's warm-up
    (the first writes of a fresh connection and process are slower)."""
    time.sleep(1)
    wr.phase()
    time.sleep(a.quiet_secs)
    return wr.phase()


def fresh_images(w):
    shutil.copy(os.path.join(w, "base.img"), os.path.join(w, "src.img"))
    for name in os.listdir(w):  # the previous run's images and records
        if name.startswith(("dst.img", "src.img.", "floor.img")) or name.endswith((".ports", ".sock")):
            os.unlink(os.path.join(w, name))
    # The page cache holds what the copy just wrote: write it back now,
    # so that no run starts with more dirty memory than another.
    subprocess.run(["sync"], check=True)


def run_blkmig(a, w, procs, writer_exe, bs, rate, floor=False):
    """floor: the writer writes to a third daemon's image instead, while
    blkmig migrates in dirty mode, unwritten: an NBD write with nothing
    behind it, beside the same copy."""
    dst = os.path.join(w, "dst.img")
    procs.start([a.blkmig, "serve", "--nbd", "127.0.0.1:0", "--port-file", os.path.join(w, "dst.ports"),
                 "--incoming", "127.0.0.1:0", "--device", f"d0={dst}", "--create"], os.path.join(w, "dst.log"))
    sock = os.path.join(w, "src.sock")
    procs.start([a.blkmig, "serve", "--nbd", "127.0.0.1:0", "--port-file", os.path.join(w, "src.ports"),
                 "--control", sock, "--device", f"d0={os.path.join(w, 'src.img')}"], os.path.join(w, "src.log"))
    inc = port_from(os.path.join(w, "dst.ports"), "incoming")
    nbd = port_from(os.path.join(w, "src.ports"), "nbd")
    if floor:
        shutil.copy(os.path.join(w, "base.img"), os.path.join(w, "floor.img"))
        subprocess.run(["sync"], check=True)
        procs.start([a.blkmig, "serve", "--nbd", "127.0.0.1:0", "--port-file", os.path.join(w, "floor.ports"),
                     "--device", f"d0={os.path.join(w, 'floor.img')}"], os.path.join(w, "floor.log"))
        nbd = port_from(os.path.join(w, "floor.ports"), "nbd")
    q = QMP(sock)
    wr = Writer(procs, writer_exe, f"nbd://127.0.0.1:{nbd}/d0", bs, rate)
    base = quiet_phase(a, wr)
    t0 = time.monotonic()
    q.call("migrate", to=f"127.0.0.1:{inc}", mode="dirty" if floor else "active",
           **{"max-bandwidth": size(a.bandwidth)})
    try:
        st = q.wait_migration(a.limit, poll=0.2)
        ok = "yes" if st["status"] == "completed" else "FAIL"
    except TimeoutError:
        ok = "no"
        q.call("migrate-cancel")
        st = {}
    secs = time.monotonic() - t0
    mig = wr.finish()
    q.close()
    extra = f"downtime {st.get('downtime', '-')}ms"
    return ok, secs, base, mig, extra


def run_qemu(a, w, procs, writer_exe, bs, rate, dev_size):
    dst = os.path.join(w, "dst.img")
    with open(dst, "wb") as f:
        f.truncate(dev_size)
    dport, sport = free_port(), free_port()
    procs.start(["qemu-nbd", "--persistent", "-f", "raw", "-b", "127.0.0.1",
                 "-p", str(dport), "-x", "d0", "--cache=writeback", dst], os.path.join(w, "qemu-nbd.log"))
    sock = os.path.join(w, "qsd.sock")
    procs.start(["qemu-storage-daemon",
                 "--blockdev", f"driver=file,node-name=f0,filename={os.path.join(w, 'src.img')},cache.direct=off",
                 "--blockdev", "driver=raw,node-name=d0,file=f0",
                 "--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={sport}",
                 "--export", "type=nbd,id=e0,node-name=d0,name=d0,writable=on",
                 "--chardev", f"socket,id=m0,path={sock},server=on,wait=off",
                 "--monitor", "chardev=m0"], os.path.join(w, "qsd.log"))
    wait_listening(dport)
    wait_listening(sport)
    q = QMP(sock)
    wr = Writer(procs, writer_exe, f"nbd://127.0.0.1:{sport}/d0", bs, rate)
    base = quiet_phase(a, wr)
    q.call("blockdev-add", {"driver": "nbd", "node-name": "t0", "export": "d0",
                            "server": {"type": "inet", "host": "127.0.0.1", "port": str(dport)}})
    t0 = time.monotonic()
    q.call("blockdev-mirror", {"job-id": "m0", "device": "d0", "target": "t0", "sync": "full",
                               "copy-mode": "write-blocking", "speed": size(a.bandwidth)})
    ok = "no"
    while time.monotonic() - t0 < a.limit:
        jobs = q.call("query-block-jobs")
        if not jobs:
            ok = "FAIL"
            break
        if jobs[0].get("ready"):
            ok = "yes"
            break
        time.sleep(0.2)
    secs = time.monotonic() - t0
    mig = wr.finish()
    if ok != "FAIL":
        q.call("block-job-cancel", device="m0", force=True)
    q.close()
    return ok, secs, base, mig, ""


ROW = "{:6} {:4} {:5} | {:4} {:>7} | {:>8} {:>8} {:>9} | {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}"
HEAD = ROW.format("system", "bs", "rate", "conv", "total_s", "base_p50", "base_p99", "base_MB/s",
                  "mig_p50", "mig_p99", "mig_p99.9", "mig_max", "mig_MB/s", "late_p99")


def us(v):
    return f"{v:.0f}us"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--bandwidth", default="100M")
    ap.add_argument("--sizes", default="64K,4K")
    ap.add_argument("--rates", default="20M")
    ap.add_argument("--quiet-secs", type=float, default=3)
    ap.add_argument("--limit", type=float, default=60)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--systems", default="blkmig,qemu,floor")
    a = ap.parse_args()
    # A SIGTERM (timeout(1), say) goes through the finally clauses: the
    # daemons are killed and the work directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    a.blkmig = os.environ.get("BLKMIG", os.path.join(HERE, "..", "build", "tools", "blkmig"))
    for tool in ("qemu-storage-daemon", "qemu-nbd", "cc", "pkg-config"):
        if not shutil.which(tool):
            sys.exit(f"bench: needs {tool} (scripts/install-deps.sh)")
    if not os.access(a.blkmig, os.X_OK):
        sys.exit("bench: build first (make)")
    w = tempfile.mkdtemp(prefix="blkmig-mpeer.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libnbd"], check=True,
                               capture_output=True, text=True).stdout.split()
        writer = os.path.join(w, "nbd-writer")
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", writer,
                        os.path.join(HERE, "nbd-writer.c")] + flags + ["-lm"], check=True)
        dev_size = size(a.size)
        with open(os.path.join(w, "base.img"), "wb") as f:
            for _ in range(dev_size // (1 << 20)):
                f.write(os.urandom(1 << 20))
        print(f"active mirroring: {a.size} image, loopback, copy capped at {a.bandwidth}/s, "
              f"one NBD client (bench/nbd-writer), random offsets, one write in flight")
        print(HEAD, flush=True)
        runs = []
        for bs in a.sizes.split(","):
            for rate in a.rates.split(","):
                for _ in range(a.repeat):
                    for system in a.systems.split(","):
                        fresh_images(w)
                        procs = Procs()
                        try:
                            if system == "blkmig":
                                r = run_blkmig(a, w, procs, writer, size(bs), size(rate))
                            elif system == "floor":
                                r = run_blkmig(a, w, procs, writer, size(bs), size(rate), floor=True)
                            elif system == "qemu":
                                r = run_qemu(a, w, procs, writer, size(bs), size(rate), dev_size)
                            else:
                                sys.exit(f"bench: no system {system}")
                        finally:
                            procs.stop()
                        ok, secs, base, mig, extra = r
                        runs.append((system, bs, rate, ok, secs, base, mig))
                        print(ROW.format(system, bs, rate, ok, f"{secs:.1f}", us(base["p50_us"]),
                                         us(base["p99_us"]), f"{base['mbps']:.1f}", us(mig["p50_us"]),
                                         us(mig["p99_us"]), us(mig["p999_us"]), us(mig["max_us"]),
                                         f"{mig['mbps']:.1f}", us(mig["late_p99_us"])), extra, mig["error"],
                              flush=True)
        if a.repeat > 1:
            summary(runs)
    finally:
        shutil.rmtree(w, ignore_errors=True)


def summary(runs):
    print("\nmedians of the runs of each row (conv: runs that got there; mig_p99 range: lowest-highest)")
    print(HEAD, " mig_p99 range")
    rows = {}
    for system, bs, rate, ok, secs, base, mig in runs:
        rows.setdefault((bs, rate, system), []).append((ok, secs, base, mig))
    for (bs, rate, system), rs in rows.items():
        med = lambda f: statistics.median(f(r) for r in rs)
        p99s = [r[3]["p99_us"] for r in rs]
        conv = f"{sum(r[0] == 'yes' for r in rs)}/{len(rs)}"
        print(ROW.format(system, bs, rate, conv, f"{med(lambda r: r[1]):.1f}", us(med(lambda r: r[2]['p50_us'])),
                         us(med(lambda r: r[2]["p99_us"])), f"{med(lambda r: r[2]['mbps']):.1f}",
                         us(med(lambda r: r[3]["p50_us"])), us(statistics.median(p99s)),
                         us(med(lambda r: r[3]["p999_us"])), us(med(lambda r: r[3]["max_us"])),
                         f"{med(lambda r: r[3]['mbps']):.1f}", us(med(lambda r: r[3]["late_p99_us"]))),
              f" {min(p99s):.0f}-{max(p99s):.0f}us")


if __name__ == "__main__":
    main()
