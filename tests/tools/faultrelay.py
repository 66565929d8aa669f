#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""faultrelay: a TCP relay that injects network faults into a migration.

Sits between a blkmig source and its destination on 127.0.0.1 and relays
every connection it accepts to --to, each independently, in one poll loop
(large buffers, no per-byte Python work except at the fault points).  The
faults given on the command line apply to one connection, the --conn'th
(default the first), so a source that reconnects after a cut goes through
cleanly.

Forward (source -> destination) fault points are byte offsets in that
connection's forward stream, counted from its first byte (HELLO):

  --cut-at BYTES                forward exactly BYTES bytes, then cut
  --cut-at-random SEED:LO:HI    the same at an offset drawn from [LO, HI]
  --cut-mode rst|fin            how a cut closes both sides: rst (default;
                                SO_LINGER 0, the peers see ECONNRESET) or fin
                                (an orderly shutdown, the peers see EOF)
  --stall-at BYTES[:SECONDS]    forward BYTES bytes, then forward nothing in
                                either direction for SECONDS (default: for
                                ever), keeping both sockets open
  --corrupt-at BYTES            flip one bit (--corrupt-bit, default 0) of
                                the byte at that offset; may be repeated

Reply fault points are defined by the destination's messages.  The reverse
stream is parsed generically as framed messages (u8 type, be32 len, body;
docs/wire-format.md), so new message types need no change here:

  --cut-after-reply TYPE[:N]              cut right after forwarding the N'th
                                          (default 1st) message of TYPE
  --stall-after-reply TYPE[:N[:SECONDS]]  stall there instead
  --drop-reply TYPE[:N]                   swallow that message, relay the rest
  --join-reply TYPE[:N]                   hold that message back and pass it
                                          on with the whole next one, in one
                                          send (two answers that reach the
                                          source at once), or at the
                                          destination's EOF
  --dup-reply TYPE[:N]                    pass that message on twice, the
                                          copy right behind it (an answer
                                          the source did not ask for)
  --split-reply TYPE[:N[:SECONDS]]        stall right after that message's
                                          5-byte header, before its body (a
                                          message cut in two by a stall)

TYPE is a number, 0x84 or 132.  Every option above may be given more than
once.  A cut waits (up to 2 s) for what was already forwarded to reach the
peers' sockets, so the destination has received exactly the bytes before the
cut point.

Faults on demand, applied to every connection open at that moment (a cut
now drops what the relay has read but not yet passed on):
  SIGUSR1: cut now (--cut-mode); SIGUSR2: stall now, until SIGHUP.
  --control FIFO: lines "cut", "cut rst", "cut fin", "stall [SECONDS]",
  "resume" (the FIFO is created if it does not exist).

--log FILE gets one line per connection opened and closed and per fault
applied, with the bytes passed on so far to the destination (fwd=) and to
the source (rev=), e.g. "conn 1 fault cut-at fwd=1048613 rev=9"; the last
line counts connections and faults: "exit: 3 connections, 2 faults applied"
(only on a clean exit: --exit-after, SIGTERM, SIGINT).

--exit-after N: exit 0 once N connections have ended (default: run until
SIGTERM or SIGINT).
"""

import argparse
import errno
import fcntl
import os
import random
import select
import signal
import socket
import struct
import sys
import termios
import time

BUFSIZE = 4 << 20
DRAIN_SECONDS = 2.0
FOREVER = float("inf")

LOG = None


def log(msg):
    if LOG is not None:
        LOG.write("t=%.3f %s\n" % (time.monotonic() - T0, msg))
        LOG.flush()


T0 = time.monotonic()


def die(msg):
    sys.stderr.write("faultrelay: %s\n" % msg)
    sys.exit(2)


# ---- option parsing -------------------------------------------------------

def parse_int(s, what):
    try:
        v = int(s, 0)
    except ValueError:
        die("%s: '%s' is not a number" % (what, s))
    if v < 0:
        die("%s: '%s' is negative" % (what, s))
    return v


def parse_seconds(s, what):
    try:
        v = float(s)
    except ValueError:
        die("%s: '%s' is not a number of seconds" % (what, s))
    if v < 0:
        die("%s: '%s' is negative" % (what, s))
    return v


def parse_reply(spec, what, with_seconds=False):
    """TYPE[:N] or, with_seconds, TYPE[:N[:SECONDS]] -> (type, n, seconds)."""
    parts = spec.split(":")
    if not 1 <= len(parts) <= (3 if with_seconds else 2):
        die("%s: bad value '%s'" % (what, spec))
    t = parse_int(parts[0], what)
    if t > 255:
        die("%s: type %s is not a byte" % (what, parts[0]))
    n = parse_int(parts[1], what) if len(parts) > 1 else 1
    if n < 1:
        die("%s: N counts from 1" % what)
    secs = parse_seconds(parts[2], what) if len(parts) > 2 else FOREVER
    return t, n, secs


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="faultrelay.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="port to listen on (0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port-file", help="write the port listened on to this file")
    p.add_argument("--to", required=True, help="HOST:PORT of the destination")
    p.add_argument("--conn", default="1", help="which connection the faults apply to: N (from 1) or 'all'")
    p.add_argument("--cut-at", action="append", default=[])
    p.add_argument("--cut-at-random", action="append", default=[])
    p.add_argument("--cut-mode", choices=["rst", "fin"], default="rst")
    p.add_argument("--stall-at", action="append", default=[])
    p.add_argument("--corrupt-at", action="append", default=[])
    p.add_argument("--corrupt-bit", type=int, default=0, choices=range(8))
    p.add_argument("--cut-after-reply", action="append", default=[])
    p.add_argument("--stall-after-reply", action="append", default=[])
    p.add_argument("--drop-reply", action="append", default=[])
    p.add_argument("--join-reply", action="append", default=[])
    p.add_argument("--dup-reply", action="append", default=[])
    p.add_argument("--split-reply", action="append", default=[])
    p.add_argument("--control", help="FIFO for cut/stall/resume commands")
    p.add_argument("--log", help="append a line per connection and fault here")
    p.add_argument("--exit-after", type=int, default=0, help="exit once N connections have ended")
    a = p.parse_args(argv)

    a.listen_port = parse_int(a.listen, "--listen")
    host, sep, port = a.to.rpartition(":")
    if not sep or not host:
        die("--to: expected HOST:PORT, got '%s'" % a.to)
    a.to_addr = (host.strip("[]"), parse_int(port, "--to"))
    if a.conn == "all":
        a.conn_index = 0
    else:
        a.conn_index = parse_int(a.conn, "--conn")
        if a.conn_index < 1:
            die("--conn counts from 1")

    # Forward points: {offset: [(kind, arg)]}; reply points: {(type, n): [(kind, arg)]}.
    a.fwd_points = {}
    a.corrupt = set()
    for s in a.cut_at:
        a.fwd_points.setdefault(parse_int(s, "--cut-at"), []).append(("cut-at", None))
    for s in a.cut_at_random:
        parts = s.split(":")
        if len(parts) != 3:
            die("--cut-at-random: expected SEED:LO:HI, got '%s'" % s)
        seed, lo, hi = (parse_int(x, "--cut-at-random") for x in parts)
        if lo > hi:
            die("--cut-at-random: LO > HI in '%s'" % s)
        off = random.Random(seed).randint(lo, hi)
        a.fwd_points.setdefault(off, []).append(("cut-at", "random seed=%d" % seed))
    for s in a.stall_at:
        off, _, secs = s.partition(":")
        secs = parse_seconds(secs, "--stall-at") if secs else FOREVER
        a.fwd_points.setdefault(parse_int(off, "--stall-at"), []).append(("stall-at", secs))
    for s in a.corrupt_at:
        a.corrupt.add(parse_int(s, "--corrupt-at"))
    a.reply_points = {}
    for s in a.cut_after_reply:
        t, n, _ = parse_reply(s, "--cut-after-reply")
        a.reply_points.setdefault((t, n), []).append(("cut-after-reply", None))
    for s in a.stall_after_reply:
        t, n, secs = parse_reply(s, "--stall-after-reply", True)
        a.reply_points.setdefault((t, n), []).append(("stall-after-reply", secs))
    a.drop = set()
    for s in a.drop_reply:
        t, n, _ = parse_reply(s, "--drop-reply")
        a.drop.add((t, n))
    a.join = set()
    for s in a.join_reply:
        t, n, _ = parse_reply(s, "--join-reply")
        a.join.add((t, n))
    a.dup = set()
    for s in a.dup_reply:
        t, n, _ = parse_reply(s, "--dup-reply")
        a.dup.add((t, n))
    a.split = {}
    for s in a.split_reply:
        t, n, secs = parse_reply(s, "--split-reply", True)
        a.split[(t, n)] = secs
    return a


# ---- one relayed connection ------------------------------------------------

class Action:
    """A fault to apply once everything queued before it has been sent.
    It is logged as HEAD, the offsets at that moment, TAIL."""

    def __init__(self, kind, arg, head, tail=""):
        self.kind, self.arg, self.head, self.tail = kind, arg, head, tail


class Side:
    """One direction: bytes read from src, queued, written to dst."""

    def __init__(self, name):
        self.name = name
        self.buf = bytearray(BUFSIZE) if name == "fwd" else None
        self.queue = []        # memoryview/bytes and Action items, in order
        self.count = 0         # bytes read from src so far (stream offset)
        self.sent = 0          # bytes written to dst so far
        self.eof = False       # src said EOF; shut dst's write side once flushed
        self.shut = False      # dst's write side has been shut


class Conn:
    def __init__(self, relay, idx, src, dst, faulty):
        self.relay, self.idx, self.src, self.dst = relay, idx, src, dst
        self.faulty = faulty
        self.fwd, self.rev = Side("fwd"), Side("rev")
        self.stalled_until = 0.0
        self.state = "open"    # open, draining (cut pending), finning, closed
        self.drain_deadline = 0.0
        self.cut_mode = relay.args.cut_mode
        a = relay.args
        self.fwd_points = sorted(a.fwd_points) if faulty else []
        self.corrupt = sorted(a.corrupt) if faulty else []
        self.reply_points = dict(a.reply_points) if faulty else {}
        self.drop = set(a.drop) if faulty else set()
        self.join = set(a.join) if faulty else set()
        self.dup = set(a.dup) if faulty else set()
        self.split = dict(a.split) if faulty else {}
        self.copy = None       # --dup-reply: the message being read, whole
        self.held = b""        # --join-reply: bytes held back until the next message ends
        self.joining = False
        # Reverse framing: header bytes held back, body bytes left, the
        # message being read (type, its count, whether it is dropped).
        self.hdr = b""
        self.body_left = 0
        self.cur_type = None
        self.cur_n = 0
        self.cur_drop = False
        self.type_counts = {}
        self.msgs = 0

    def offsets(self):
        """Bytes passed on so far: to the destination, to the source."""
        return "fwd=%d rev=%d" % (self.fwd.sent, self.rev.sent)

    def fault(self, what):
        self.relay.faults += 1
        log("conn %d fault %s" % (self.idx, what))

    # -- reading ---------------------------------------------------------

    def next_fwd_point(self):
        while self.fwd_points and self.fwd_points[0] < self.fwd.count:
            self.fwd_points.pop(0)
        return self.fwd_points[0] if self.fwd_points else None

    def queue_fwd_point_actions(self):
        """Queue the actions of the point at the current forward offset."""
        pt = self.next_fwd_point()
        if pt is None or pt != self.fwd.count:
            return
        self.fwd_points.pop(0)
        for kind, arg in self.relay.args.fwd_points[pt]:
            if kind == "cut-at":
                self.fwd.queue.append(Action("cut", None, "cut-at", " (%s)" % arg if arg else ""))
            else:
                self.fwd.queue.append(Action("stall", arg, "stall-at", " seconds=%s" % arg))

    def read_fwd(self):
        side = self.fwd
        limit = BUFSIZE
        pt = self.next_fwd_point()
        if pt is not None:
            limit = min(limit, pt - side.count)
        if limit == 0:
            self.queue_fwd_point_actions()
            return
        mv = memoryview(side.buf)[:limit]
        try:
            n = self.src.recv_into(mv)
        except BlockingIOError:
            return
        except OSError as e:
            self.peer_error("source", e)
            return
        if n == 0:
            side.eof = True
            log("conn %d source EOF %s" % (self.idx, self.offsets()))
            return
        start = side.count
        while self.corrupt and self.corrupt[0] < start:
            self.corrupt.pop(0)
        while self.corrupt and self.corrupt[0] < start + n:
            off = self.corrupt.pop(0)
            old = side.buf[off - start]
            side.buf[off - start] = old ^ (1 << self.relay.args.corrupt_bit)
            self.fault("corrupt-at fwd=%d bit=%d byte 0x%02x->0x%02x"
                       % (off, self.relay.args.corrupt_bit, old, side.buf[off - start]))
        side.count += n
        side.queue.append(mv[:n])
        self.queue_fwd_point_actions()

    def read_rev(self):
        side = self.rev
        try:
            data = self.dst.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as e:
            self.peer_error("destination", e)
            return
        if not data:
            side.eof = True
            if self.held:  # --join-reply held the last message: it goes now
                side.queue.append(self.held)
                self.held, self.joining = b"", False
            log("conn %d destination EOF %s" % (self.idx, self.offsets()))
            return
        self.parse_rev(data)

    def parse_rev(self, data):
        """Walk the framed reverse stream: queue its bytes, leave out dropped
        messages, queue the actions of reply points after their message.  A
        header is held back until it is whole, so a message can be dropped
        even when its header arrives in pieces."""
        side = self.rev
        out = []
        i, n = 0, len(data)
        while i < n:
            if self.cur_type is None:
                take = min(5 - len(self.hdr), n - i)
                self.hdr += data[i:i + take]
                i += take
                if len(self.hdr) < 5:
                    break
                t = self.hdr[0]
                self.body_left = struct.unpack(">I", self.hdr[1:5])[0]
                cnt = self.type_counts.get(t, 0) + 1
                self.type_counts[t] = cnt
                self.cur_type, self.cur_n = t, cnt
                self.cur_drop = (t, cnt) in self.drop
                if not self.cur_drop:
                    out.append(self.hdr)
                if (t, cnt) in self.dup:
                    self.copy = [self.hdr]
                self.hdr = b""
                secs = self.split.pop((t, cnt), None)
                if secs is not None and not self.cur_drop and not self.joining:
                    side.queue.append(b"".join(out))
                    out = []
                    side.queue.append(Action("stall", secs, "split-reply type=0x%02x n=%d" % (t, cnt),
                                             " seconds=%s" % secs))
            take = min(self.body_left, n - i)
            if take and not self.cur_drop:
                out.append(data[i:i + take])
            if take and self.copy is not None:
                self.copy.append(data[i:i + take])
            i += take
            self.body_left -= take
            if self.body_left:
                continue
            t, cnt = self.cur_type, self.cur_n
            self.cur_type = None
            self.msgs += 1
            where = "type=0x%02x n=%d" % (t, cnt)
            if self.cur_drop:
                # Offsets: passed on to the destination, read from it.
                self.cur_drop = False
                self.fault("drop-reply %s fwd=%d rev=%d" % (where, self.fwd.sent, side.count + i))
                continue
            if self.copy is not None:
                self.dup.discard((t, cnt))
                out.append(b"".join(self.copy))
                self.copy = None
                self.fault("dup-reply %s rev=%d" % (where, side.count + i))
            if (t, cnt) in self.join:
                self.join.discard((t, cnt))
                self.held += b"".join(out)
                out = []
                self.joining = True
                self.fault("join-reply %s rev=%d (held)" % (where, side.count + i))
                continue
            if self.joining:
                out.insert(0, self.held)
                self.held = b""
                self.joining = False
            acts = self.reply_points.pop((t, cnt), None)
            if acts:
                if out:
                    side.queue.append(b"".join(out))
                    out = []
                for kind, arg in acts:
                    if kind == "cut-after-reply":
                        side.queue.append(Action("cut", None, "cut-after-reply " + where))
                    else:
                        side.queue.append(Action("stall", arg, "stall-after-reply " + where, " seconds=%s" % arg))
        if out and self.joining:
            self.held += b"".join(out)
        elif out:
            side.queue.append(b"".join(out))
        side.count += n

    # -- writing ---------------------------------------------------------

    def flush(self, side, sock):
        """Send what is queued; apply actions in order.  Returns False when
        the socket would block."""
        while side.queue:
            item = side.queue[0]
            if isinstance(item, Action):
                side.queue.pop(0)
                self.apply(item)
                if self.state != "open" or self.stalled():
                    return True
                continue
            try:
                k = sock.send(item)
            except BlockingIOError:
                return False
            except OSError as e:
                self.peer_error("destination" if side is self.fwd else "source", e)
                return True
            side.sent += k
            if k < len(item):
                side.queue[0] = item[k:]
                return False
            side.queue.pop(0)
        if side.eof and not side.shut:
            side.shut = True
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return True

    def apply(self, act):
        self.fault("%s %s%s" % (act.head, self.offsets(), act.tail))
        if act.kind == "cut":
            self.cut(self.cut_mode)
        elif act.kind == "stall":
            self.stall(act.arg)

    # -- faults ----------------------------------------------------------

    def stalled(self):
        if self.stalled_until and time.monotonic() >= self.stalled_until:
            self.stalled_until = 0.0
            log("conn %d stall ends %s" % (self.idx, self.offsets()))
        return self.stalled_until != 0.0

    def stall(self, secs):
        self.stalled_until = FOREVER if secs == FOREVER else time.monotonic() + secs

    def resume(self):
        if self.stalled_until:
            self.stalled_until = 0.0
            log("conn %d resumed %s" % (self.idx, self.offsets()))

    def cut(self, mode):
        """Stop relaying; once what was forwarded has left our sockets, close
        both sides (RST or FIN)."""
        if self.state != "open":
            return
        self.cut_mode = mode
        self.state = "draining"
        self.drain_deadline = time.monotonic() + DRAIN_SECONDS
        self.stalled_until = 0.0
        self.step_drain()

    def step_drain(self):
        left = outq(self.src) + outq(self.dst)
        if left and time.monotonic() < self.drain_deadline:
            return
        if left:
            log("conn %d cut with %d bytes not yet taken by the peers" % (self.idx, left))
        if self.cut_mode == "rst":
            self.close("cut (rst)", rst=True)
        else:
            for s in (self.src, self.dst):
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            self.state = "finning"
            self.drain_deadline = time.monotonic() + 5
            self.fin_eof = set()

    def step_fin(self):
        """After a FIN cut: discard what the peers still send until both
        close (so close() does not turn into a RST), at most 5 s."""
        for s in (self.src, self.dst):
            if s in self.fin_eof:
                continue
            try:
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        self.fin_eof.add(s)
                        break
            except BlockingIOError:
                pass
            except OSError:
                self.fin_eof.add(s)
        if len(self.fin_eof) == 2 or time.monotonic() >= self.drain_deadline:
            self.close("cut (fin)")

    def peer_error(self, who, e):
        """Mirror an abort: the other side gets a RST too, but only after
        what the failed peer sent before it (an ERROR, say) has been passed
        on, as a direct connection would deliver it.  A send that fails
        must not lose the replies still unread in our receive queue."""
        log("conn %d %s error %s %s" % (self.idx, who, errno.errorcode.get(e.errno, e.errno), self.offsets()))
        if self.state == "open":
            if who == "destination":
                self.salvage(self.dst, self.rev, self.src)
            else:
                self.salvage(self.src, self.fwd, self.dst)
        self.close("%s %s" % (who, os.strerror(e.errno) if e.errno else e), rst=True)

    def salvage(self, rd, side, wr):
        """Forward, best effort, what is queued for wr and what rd still
        has readable; fault actions are ignored from here on."""
        pending = [bytes(x) for x in side.queue if not isinstance(x, Action)]
        side.queue = []
        try:
            while True:
                d = rd.recv(1 << 20)
                if not d:
                    break
                if side is self.rev:
                    self.parse_rev(d)
                    pending += [x for x in side.queue if not isinstance(x, Action)]
                    side.queue = []
                else:
                    side.count += len(d)
                    pending.append(d)
        except OSError:
            pass
        data = b"".join(pending)
        if not data:
            return
        try:
            wr.settimeout(1.0)
            wr.sendall(data)
            side.sent += len(data)
            deadline = time.monotonic() + 1.0
            while outq(wr) and time.monotonic() < deadline:
                time.sleep(0.001)
        except OSError:
            pass
        log("conn %d passed on %d bytes before the reset %s" % (self.idx, len(data), self.offsets()))

    def close(self, why, rst=False):
        if self.state == "closed":
            return
        self.state = "closed"
        for s in (self.src, self.dst):
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass
        log("conn %d close %s replies=%d: %s" % (self.idx, self.offsets(), self.msgs, why))
        self.relay.ended += 1

    def done(self):
        return (self.fwd.eof and self.fwd.shut and self.rev.eof and self.rev.shut)

    # -- poll interest ---------------------------------------------------

    def interest(self):
        """[(sock, events)] for this connection's current state."""
        if self.state == "draining":
            return []
        if self.state == "finning":
            return [(self.src, select.POLLIN), (self.dst, select.POLLIN)]
        if self.stalled():
            return []
        ev = {self.src: 0, self.dst: 0}
        for side, rd, wr in ((self.fwd, self.src, self.dst), (self.rev, self.dst, self.src)):
            if side.queue:
                ev[wr] |= select.POLLOUT
            elif not side.eof:
                ev[rd] |= select.POLLIN
        return [(s, e) for s, e in ev.items() if e]

    def service(self):
        """Relay as much as can go without blocking, both directions."""
        if self.state == "draining":
            self.step_drain()
            return
        if self.state == "finning":
            self.step_fin()
            return
        for _ in range(16):
            progress = False
            for side, wr, reader in ((self.fwd, self.dst, self.read_fwd),
                                     (self.rev, self.src, self.read_rev)):
                if self.state != "open" or self.stalled():
                    return
                before = (side.count, side.sent, side.eof, side.shut)
                if not side.queue and not side.eof:
                    reader()
                    if self.state != "open":
                        return
                if side.queue or (side.eof and not side.shut):
                    self.flush(side, wr)
                    if self.state != "open":
                        return
                if (side.count, side.sent, side.eof, side.shut) != before:
                    progress = True
            if self.done():
                self.close("both sides finished")
                return
            if not progress:
                return


def outq(sock):
    """Bytes in the socket's send queue not yet acknowledged by the peer."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]
    except OSError:
        return 0


# ---- the relay ------------------------------------------------------------

class Relay:
    def __init__(self, args):
        self.args = args
        self.conns = []
        self.accepted = 0
        self.ended = 0
        self.faults = 0
        self.pending_signals = []
        self.quit = False

    def on_demand(self, cmd):
        words = cmd.split()
        if not words:
            return
        live = [c for c in self.conns if c.state == "open"]
        if words[0] == "cut":
            mode = words[1] if len(words) > 1 else self.args.cut_mode
            if mode not in ("rst", "fin"):
                log("control: bad cut mode '%s'" % mode)
                return
            for c in live:
                c.fault("cut-now %s mode=%s" % (c.offsets(), mode))
                c.cut(mode)
        elif words[0] == "stall":
            secs = float(words[1]) if len(words) > 1 else FOREVER
            for c in live:
                c.fault("stall-now %s seconds=%s" % (c.offsets(), secs))
                c.stall(secs)
        elif words[0] == "resume":
            for c in live:
                c.resume()
        else:
            log("control: unknown command '%s'" % cmd)
        if not live:
            log("control: '%s' with no connection open" % cmd)

    def run(self):
        a = self.args
        ls = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.host, a.listen_port))
        ls.listen(16)
        ls.setblocking(False)
        port = ls.getsockname()[1]
        log("listening on %s:%d, relaying to %s:%d" % (a.host, port, a.to_addr[0], a.to_addr[1]))
        if a.port_file:
            tmp = a.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.rename(tmp, a.port_file)

        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig, cmd in ((signal.SIGUSR1, "cut"), (signal.SIGUSR2, "stall"), (signal.SIGHUP, "resume")):
            signal.signal(sig, lambda s, f, c=cmd: self.pending_signals.append(c))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: setattr(self, "quit", True))

        ctl = None
        ctl_buf = b""
        if a.control:
            if not os.path.exists(a.control):
                os.mkfifo(a.control)
            ctl = os.open(a.control, os.O_RDWR | os.O_NONBLOCK)

        while not self.quit:
            while self.pending_signals:
                self.on_demand(self.pending_signals.pop(0))
            self.conns = [c for c in self.conns if c.state != "closed"]
            if a.exit_after and self.ended >= a.exit_after and not self.conns:
                break
            p = select.poll()
            p.register(ls, select.POLLIN)
            p.register(wake_r, select.POLLIN)
            if ctl is not None:
                p.register(ctl, select.POLLIN)
            timeout = None
            now = time.monotonic()
            for c in self.conns:
                if c.state == "draining":
                    timeout = 5
                elif c.state == "finning" or (c.stalled_until and c.stalled_until != FOREVER):
                    left = 50 if c.state == "finning" else max(0, int((c.stalled_until - now) * 1000) + 1)
                    timeout = left if timeout is None else min(timeout, left)
                for s, ev in c.interest():
                    try:
                        p.register(s, ev)
                    except ValueError:
                        pass
            try:
                events = p.poll(timeout)
            except InterruptedError:
                events = []
            for fd, ev in events:
                if fd == ls.fileno():
                    self.accept(ls)
                elif fd == wake_r.fileno():
                    try:
                        wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                elif ctl is not None and fd == ctl:
                    ctl_buf += os.read(ctl, 4096)
                    while b"\n" in ctl_buf:
                        line, ctl_buf = ctl_buf.split(b"\n", 1)
                        self.on_demand(line.decode(errors="replace").strip())
            for c in list(self.conns):
                if c.state != "closed":
                    c.service()
        for c in self.conns:
            c.close("relay exiting", rst=True)
        log("exit: %d connections, %d faults applied" % (self.accepted, self.faults))

    def accept(self, ls):
        try:
            src, peer = ls.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        idx = self.accepted
        dst = socket.socket(socket.AF_INET6 if ":" in self.args.to_addr[0] else socket.AF_INET,
                            socket.SOCK_STREAM)
        try:
            dst.connect(self.args.to_addr)
        except OSError as e:
            log("conn %d from %s:%d: connect to %s:%d failed: %s"
                % (idx, peer[0], peer[1], self.args.to_addr[0], self.args.to_addr[1], e.strerror))
            src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            src.close()
            dst.close()
            self.ended += 1
            return
        for s in (src, dst):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        faulty = self.args.conn_index in (0, idx)
        c = Conn(self, idx, src, dst, faulty)
        self.conns.append(c)
        log("conn %d open from %s:%d%s" % (idx, peer[0], peer[1], "" if faulty else " (no faults)"))
        c.queue_fwd_point_actions()   # a point at offset 0
        c.service()


def main():
    global LOG
    args = parse_args(sys.argv[1:])
    if args.log:
        LOG = open(args.log, "a")
    try:
        Relay(args).run()
    except OSError as e:
        die(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
