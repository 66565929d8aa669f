#!/usr/bin/env bash
# The fault-injecting relay (tests/tools/faultrelay.py) checked on its own,
# between two small Python peers: bytes pass through intact both ways, a cut
# cuts at the right offset (RST and FIN), a corruption flips exactly one bit,
# reply parsing finds the N'th message of a type (cut after it, stall after
# it, drop it), stalls stall, a reconnect after a cut goes through cleanly,
# and the signals and the control FIFO act on the open connections.
. "$(dirname "$0")/lib.sh"
requires cmp /usr/bin/python3

RELAY=$FAULTRELAY
PEER="$T/peer.py"
cat >"$PEER" <<'PY'
# peer.py dest PORTFILE OUT REPLIES  |  peer.py src PORT IN OUT [PAUSE]
# dest: accept one connection, store what arrives in OUT, send REPLIES (a
# comma-separated list of TYPE:HEXBODY or TYPE:xLEN messages, each written
# in two pieces with a pause, 50 ms apart), then close after the source's
# EOF.  src: send IN, shut the write side, store the replies in OUT.  Both
# write how the connection ended (eof, reset) to OUT.status.
import socket, struct, sys, threading, time

def status(path, s):
    open(path + ".status", "w").write(s)

def recv_all(sock, out):
    with open(out, "wb") as f:
        try:
            while True:
                d = sock.recv(1 << 20)
                if not d:
                    return "eof"
                f.write(d)
                f.flush()
        except OSError:
            return "reset"

def messages(spec):
    for m in filter(None, spec.split(",")):
        t, body = m.split(":")
        body = bytes(int(body[1:])) if body.startswith("x") else bytes.fromhex(body)
        yield struct.pack(">BI", int(t, 16), len(body)) + body

if sys.argv[1] == "dest":
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    open(sys.argv[2] + ".tmp", "w").write(str(ls.getsockname()[1]))
    import os; os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    c, _ = ls.accept()
    if sys.argv[4].endswith(",rst"):
        # Read a little, answer, and reset the connection mid-stream (as a
        # receiver that fails, sends ERROR and closes with data unread).
        got = c.recv(65536)
        open(sys.argv[3], "wb").write(got)
        for m in messages(sys.argv[4][:-4]):
            c.sendall(m)
        # Sent means on the wire: a reset discards what is still in our
        # own send queue, which under load the ERROR may be.
        import fcntl, termios
        buf = bytearray(4)
        for _ in range(2000):
            fcntl.ioctl(c.fileno(), termios.TIOCOUTQ, buf)
            if int.from_bytes(buf, "little") == 0:
                break
            time.sleep(0.001)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        status(sys.argv[3], "sent-rst")
        sys.exit(0)
    # A reset is reported once, to whichever call comes first: if the
    # replies' send takes it, the reading side then sees only the end of
    # the stream.  Either call seeing it means the peer saw a reset.
    reset_seen = []
    def replies():
        try:
            for m in messages(sys.argv[4]):
                time.sleep(0.05)
                c.sendall(m[:3]); time.sleep(0.01); c.sendall(m[3:])
        except ConnectionResetError:
            reset_seen.append(True)
        except OSError:
            pass
    th = threading.Thread(target=replies)
    th.start()
    st = recv_all(c, sys.argv[3])
    th.join()
    status(sys.argv[3], "reset" if reset_seen else st)
else:
    try:
        c = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
    except ConnectionResetError:
        # --cut-at 0 can reset the connection before connect() returns.
        open(sys.argv[4], "wb").close()
        status(sys.argv[4], "reset")
        sys.exit(0)
    st = None
    try:
        with open(sys.argv[3], "rb") as f:
            while True:
                d = f.read(1 << 20)
                if not d:
                    break
                c.sendall(d)
        if len(sys.argv) > 5:
            time.sleep(float(sys.argv[5]))
        c.shutdown(socket.SHUT_WR)
    except OSError:    # EPIPE, ECONNRESET, ENOTCONN: the relay cut us
        st = "reset"
    got = recv_all(c, sys.argv[4])
    status(sys.argv[4], st or got)
PY

# run LABEL INFILE REPLIES [SRC-PAUSE] -- RELAY-OPTIONS...: one connection
# from a source peer sending INFILE through a relay with RELAY-OPTIONS to a
# destination peer answering REPLIES.  Leaves $T/LABEL.{dst,src} (+.status)
# and $T/LABEL.log.
run() {
	local label=$1 in=$2 replies=$3 pause=${4:-}
	shift 4
	rm -f "$T/$label".*
	/usr/bin/python3 "$PEER" dest "$T/$label.dport" "$T/$label.dst" "$replies" &
	local dpid=$!
	for _ in $(seq 1 200); do [ -s "$T/$label.dport" ] && break; sleep 0.025; done
	$RELAY --listen 0 --port-file "$T/$label.rport" --to "127.0.0.1:$(cat "$T/$label.dport")" \
		--log "$T/$label.log" --exit-after 1 "$@" &
	local rpid=$!
	for _ in $(seq 1 200); do [ -s "$T/$label.rport" ] && break; sleep 0.025; done
	[ -s "$T/$label.rport" ] || fail "$label: the relay did not start"
	timeout 60 /usr/bin/python3 "$PEER" src "$(cat "$T/$label.rport")" "$in" "$T/$label.src" $pause ||
		fail "$label: the source peer failed"
	timeout 30 tail --pid=$dpid -f /dev/null || fail "$label: the destination peer hangs"
	wait $dpid
	wait_rc $rpid
	[ "$RC" = 0 ] || fail "$label: the relay exited $RC"
}

# ---- bytes pass through intact, both ways ---------------------------------
make_random "$T/big.in" $((64 * MiB)) 1
# A reply stream of many messages and one large body (above 64 KiB: parsing
# is generic) to check the reverse direction too.
replies="81:00000001"
for i in $(seq 1 50); do replies="$replies,85:$(printf %016x "$i")"; done
replies="$replies,99:x200000,84:0000000000000001,82:"
run pass "$T/big.in" "$replies" "" --conn all
cmp "$T/big.in" "$T/pass.dst" || fail "pass: forward bytes differ"
[ "$(cat "$T/pass.dst.status")" = eof ] || fail "pass: destination saw $(cat "$T/pass.dst.status")"
[ "$(cat "$T/pass.src.status")" = eof ] || fail "pass: source saw $(cat "$T/pass.src.status")"
/usr/bin/python3 - "$T/pass.src" "$replies" <<'PY' || fail "pass: reverse bytes differ"
import struct, sys
want = b""
for m in sys.argv[2].split(","):
    t, body = m.split(":")
    body = bytes(int(body[1:])) if body.startswith("x") else bytes.fromhex(body)
    want += struct.pack(">BI", int(t, 16), len(body)) + body
assert open(sys.argv[1], "rb").read() == want
PY
grep -q "close fwd=$((64 * MiB)) rev=[0-9]* replies=54: both sides finished" "$T/pass.log" ||
	{ cat "$T/pass.log" >&2; fail "pass: log"; }
pass "64 MiB forward and 54 framed replies (one of 200000 bytes) backward, intact"

# A destination that answers ERROR and resets while the source is still
# sending: the source still gets the ERROR before the reset, as it would
# without the relay.
run errrst "$T/big.in" "81:00000001,83:0000001c6469736b2066756c6c,rst" "" --conn all
expect_err="$T/errrst.want"
/usr/bin/python3 -c "import struct,sys; sys.stdout.buffer.write(struct.pack('>BI',0x81,4)+bytes.fromhex('00000001')+struct.pack('>BI',0x83,13)+bytes.fromhex('0000001c6469736b2066756c6c'))" >"$expect_err"
cmp -s "$expect_err" "$T/errrst.src" || { cat "$T/errrst.log" >&2; fail "errrst: the source did not get READY and ERROR before the reset"; }
[ "$(cat "$T/errrst.src.status")" = reset ] || fail "errrst: the source saw $(cat "$T/errrst.src.status")"
pass "a destination's ERROR, then its reset, both reach the source in that order"

# ---- cuts at a byte offset ------------------------------------------------
for mode in rst fin; do
	run cut-$mode "$T/big.in" "81:00000001" "" --cut-at 1000003 --cut-mode $mode
	[ "$(stat -c %s "$T/cut-$mode.dst")" = 1000003 ] ||
		fail "cut-$mode: destination got $(stat -c %s "$T/cut-$mode.dst") bytes, not 1000003"
	cmp -s -n 1000003 "$T/big.in" "$T/cut-$mode.dst" || fail "cut-$mode: the bytes before the cut differ"
	want=$([ $mode = rst ] && echo reset || echo eof)
	[ "$(cat "$T/cut-$mode.dst.status")" = "$want" ] || fail "cut-$mode: destination saw $(cat "$T/cut-$mode.dst.status"), not $want"
	grep -q "fault cut-at fwd=1000003 " "$T/cut-$mode.log" || { cat "$T/cut-$mode.log" >&2; fail "cut-$mode: log"; }
	pass "--cut-at 1000003 --cut-mode $mode: exactly 1000003 bytes arrived, then $want"
done

run cut0 "$T/big.in" "" "" --cut-at 0
[ ! -s "$T/cut0.dst" ] && [ "$(cat "$T/cut0.dst.status")" = reset ] || fail "cut-at 0: something arrived"
pass "--cut-at 0: cut before the first byte"

run rnd "$T/big.in" "" "" --cut-at-random 7:1000:2000000
got=$(stat -c %s "$T/rnd.dst")
[ "$got" -ge 1000 ] && [ "$got" -le 2000000 ] || fail "cut-at-random: cut at $got"
grep -q "fault cut-at fwd=$got .*random seed=7" "$T/rnd.log" || { cat "$T/rnd.log" >&2; fail "cut-at-random: log"; }
run rnd2 "$T/big.in" "" "" --cut-at-random 7:1000:2000000
[ "$(stat -c %s "$T/rnd2.dst")" = "$got" ] || fail "cut-at-random: not reproducible"
pass "--cut-at-random 7:1000:2000000: cut at $got, the same again with the same seed"

# ---- corruption: exactly one bit ------------------------------------------
run corrupt "$T/big.in" "" "" --corrupt-at 5242881 --corrupt-at 7 --corrupt-bit 3
/usr/bin/python3 - "$T/big.in" "$T/corrupt.dst" <<'PY' || fail "corrupt: not exactly the bits asked for"
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
assert len(a) == len(b)
diff = [(i, a[i] ^ b[i]) for i in range(len(a)) if a[i] != b[i]] if False else None
# compare in blocks, then bytes within a differing block
found = []
for off in range(0, len(a), 1 << 16):
    if a[off:off + 65536] != b[off:off + 65536]:
        found += [(i, a[i] ^ b[i]) for i in range(off, min(off + 65536, len(a))) if a[i] != b[i]]
assert found == [(7, 8), (5242881, 8)], found
PY
[ "$(grep -c "fault corrupt-at" "$T/corrupt.log")" = 2 ] || fail "corrupt: log"
pass "--corrupt-at 7 and 5242881 --corrupt-bit 3: exactly those two bits flipped"

# ---- reply points ---------------------------------------------------------
echo hello >"$T/small.in"
R="81:00000001,84:0000000000000001,85:0000000000000007,84:0000000000000002,84:0000000000000003,82:"
msg() { /usr/bin/python3 -c "import struct,sys; t,b=sys.argv[1].split(':'); b=bytes.fromhex(b); sys.stdout.buffer.write(struct.pack('>BI',int(t,16),len(b))+b)" "$1"; }
expect_replies() { # label, the messages the source must have received
	local label=$1
	shift
	: >"$T/$label.want"
	for m in "$@"; do msg "$m" >>"$T/$label.want"; done
	cmp -s "$T/$label.want" "$T/$label.src" || { cat "$T/$label.log" >&2; od -An -tx1 "$T/$label.src" | head >&2; fail "$label: the source received other replies"; }
}

# The source keeps its side open for 1 s so the replies all come before EOF.
run cutreply "$T/small.in" "$R" 1 --cut-after-reply 0x84:2
expect_replies cutreply 81:00000001 84:0000000000000001 85:0000000000000007 84:0000000000000002
[ "$(cat "$T/cutreply.src.status")" = reset ] || fail "cut-after-reply: source saw $(cat "$T/cutreply.src.status")"
grep -q "fault cut-after-reply type=0x84 n=2 fwd=6 rev=48" "$T/cutreply.log" || { cat "$T/cutreply.log" >&2; fail "cut-after-reply: log"; }
pass "--cut-after-reply 0x84:2: the source got the 2nd SYNCED, then a reset"

run cutack "$T/small.in" "$R" 1 --cut-after-reply 0x82 --cut-mode fin
expect_replies cutack 81:00000001 84:0000000000000001 85:0000000000000007 84:0000000000000002 84:0000000000000003 82:
[ "$(cat "$T/cutack.src.status")" = eof ] || fail "cut-after-reply ACK: source saw $(cat "$T/cutack.src.status")"
pass "--cut-after-reply 0x82 --cut-mode fin: everything up to the ACK, then EOF"

run drop "$T/small.in" "$R" 1 --drop-reply 0x84:2 --drop-reply 0x82
expect_replies drop 81:00000001 84:0000000000000001 85:0000000000000007 84:0000000000000003
cmp -s "$T/small.in" "$T/drop.dst" || fail "drop-reply: forward bytes changed"
[ "$(grep -c "fault drop-reply" "$T/drop.log")" = 2 ] || fail "drop-reply: log"
pass "--drop-reply 0x84:2 --drop-reply 0x82: both swallowed, the rest relayed"

run join "$T/small.in" "$R" 1 --join-reply 0x85 --join-reply 0x82
expect_replies join 81:00000001 84:0000000000000001 85:0000000000000007 84:0000000000000002 84:0000000000000003 82:
grep -q "fault join-reply type=0x85 n=1 rev=35 (held)" "$T/join.log" &&
	grep -q "fault join-reply type=0x82 n=1 " "$T/join.log" ||
	{ cat "$T/join.log" >&2; fail "join-reply: log"; }
pass "--join-reply 0x85 --join-reply 0x82: held, then passed on with the next message and at EOF"

run dup "$T/small.in" "$R" 1 --dup-reply 0x85 --dup-reply 0x84:3
expect_replies dup 81:00000001 84:0000000000000001 85:0000000000000007 85:0000000000000007 \
	84:0000000000000002 84:0000000000000003 84:0000000000000003 82:
cmp -s "$T/small.in" "$T/dup.dst" || fail "dup-reply: forward bytes changed"
[ "$(grep -c "fault dup-reply" "$T/dup.log")" = 2 ] || { cat "$T/dup.log" >&2; fail "dup-reply: log"; }
pass "--dup-reply 0x85 --dup-reply 0x84:3: each passed on twice, the rest once"

start=$(date +%s%N)
run stallreply "$T/small.in" "$R" 0.5 --stall-after-reply 0x84:1:1.5
took=$((($(date +%s%N) - start) / 1000000))
expect_replies stallreply 81:00000001 84:0000000000000001 85:0000000000000007 84:0000000000000002 84:0000000000000003 82:
[ "$took" -ge 1500 ] || fail "stall-after-reply: took only $took ms"
grep -q "stall-after-reply type=0x84 n=1 .*seconds=1.5" "$T/stallreply.log" && grep -q "stall ends" "$T/stallreply.log" ||
	{ cat "$T/stallreply.log" >&2; fail "stall-after-reply: log"; }
pass "--stall-after-reply 0x84:1:1.5: everything arrives, $took ms"

# A message cut in two: the stall comes after the WACK's 5-byte header
# (reverse offset 22 + 5), before its body.
run split "$T/small.in" "$R" 0.5 --split-reply 0x85:1:1.5
expect_replies split 81:00000001 84:0000000000000001 85:0000000000000007 84:0000000000000002 84:0000000000000003 82:
grep -q "fault split-reply type=0x85 n=1 fwd=[0-9]* rev=27 seconds=1.5" "$T/split.log" &&
	grep -q "stall ends" "$T/split.log" || { cat "$T/split.log" >&2; fail "split-reply: log"; }
pass "--split-reply 0x85:1:1.5: a stall between the WACK's header and its body, then everything arrives"

# ---- stalls, signals, the control FIFO, reconnects ------------------------
start=$(date +%s%N)
run stall "$T/big.in" "" "" --stall-at 3000000:1
took=$((($(date +%s%N) - start) / 1000000))
cmp "$T/big.in" "$T/stall.dst" || fail "stall-at: bytes differ"
[ "$took" -ge 1000 ] || fail "stall-at: took only $took ms"
grep -q "fault stall-at fwd=3000000 " "$T/stall.log" || fail "stall-at: log"
pass "--stall-at 3000000:1: paused there, then everything arrived"

# A stall for ever, then SIGUSR1 cuts; SIGUSR2 stalls, SIGHUP resumes;
# "cut fin" on the FIFO.  The relay accepts several connections here.
/usr/bin/python3 "$PEER" dest "$T/sig.dport" "$T/sig.dst" "" &
dpid=$!
for _ in $(seq 1 200); do [ -s "$T/sig.dport" ] && break; sleep 0.025; done
$RELAY --listen 0 --port-file "$T/sig.rport" --to "127.0.0.1:$(cat "$T/sig.dport")" \
	--log "$T/sig.log" --stall-at 2000000 --control "$T/ctl" &
rpid=$!
BG_PIDS+=("$rpid")
for _ in $(seq 1 200); do [ -s "$T/sig.rport" ] && break; sleep 0.025; done
/usr/bin/python3 "$PEER" src "$(cat "$T/sig.rport")" "$T/big.in" "$T/sig.src" &
spid=$!
for _ in $(seq 1 200); do grep -q "fault stall-at" "$T/sig.log" && break; sleep 0.025; done
sleep 0.3
[ "$(stat -c %s "$T/sig.dst")" = 2000000 ] || fail "stall for ever: $(stat -c %s "$T/sig.dst") bytes arrived"
kill -USR1 $rpid
timeout 10 tail --pid=$spid -f /dev/null || fail "SIGUSR1: the source still hangs"
timeout 10 tail --pid=$dpid -f /dev/null || fail "SIGUSR1: the destination still hangs"
[ "$(cat "$T/sig.src.status")" = reset ] && [ "$(cat "$T/sig.dst.status")" = reset ] || fail "SIGUSR1: not a reset"
kill $rpid; wait $rpid 2>/dev/null
grep -q "fault cut-now fwd=2000000 " "$T/sig.log" || { cat "$T/sig.log" >&2; fail "SIGUSR1: log"; }
pass "--stall-at 2000000 held the stream there; SIGUSR1 cut both sides"
PY_MULTI="$T/multi.py"
cat >"$PY_MULTI" <<'PY'
# A destination that takes three connections in turn and records each.
import socket, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(4)
open(sys.argv[1], "w").write(str(ls.getsockname()[1]))
for i in range(1, 4):
    c, _ = ls.accept()
    n = 0
    try:
        while True:
            d = c.recv(1 << 20)
            if not d: break
            n += len(d)
        st = "eof"
    except ConnectionResetError:
        st = "reset"
    open("%s.%d" % (sys.argv[2], i), "w").write("%d %s" % (n, st))
    c.close()
PY
/usr/bin/python3 "$PY_MULTI" "$T/multi.port" "$T/multi" &
mpid=$!
for _ in $(seq 1 200); do [ -s "$T/multi.port" ] && break; sleep 0.025; done
# (lib.sh's start_relay: the log is $T/m.relay.log.)
start_relay m "$(cat "$T/multi.port")" --conn 2 --cut-at 100 --control "$T/ctl" --exit-after 3
rpid=$RELAY_PID
echo "$RELAY_PORT" >"$T/m.rport"
ln -s "$T/m.relay.log" "$T/m.log"
for i in 1 2; do
	timeout 60 /usr/bin/python3 "$PEER" src "$(cat "$T/m.rport")" "$T/big.in" "$T/m$i.src"
	for _ in $(seq 1 200); do [ -s "$T/multi.$i" ] && break; sleep 0.025; done
done
[ "$(cat "$T/multi.1")" = "$((64 * MiB)) eof" ] || fail "--conn 2: connection 1 got $(cat "$T/multi.1")"
[ "$(cat "$T/multi.2")" = "100 reset" ] || fail "--conn 2: connection 2 got $(cat "$T/multi.2")"
pass "--conn 2 --cut-at 100: connection 1 intact, connection 2 cut at 100"
# Connection 3: stalled by SIGUSR2 (and nothing moves), resumed by SIGHUP,
# then cut by "cut fin" on the control FIFO (which the source peer, pausing
# 3 s before its EOF, notices when it reads).
/usr/bin/python3 "$PEER" src "$(cat "$T/m.rport")" "$T/big.in" "$T/m3.src" 3 &
spid=$!
for _ in $(seq 1 200); do grep -q "conn 3 open" "$T/m.log" && break; sleep 0.025; done
sleep 0.2
kill -USR2 $rpid
for _ in $(seq 1 200); do grep -q "stall-now" "$T/m.log" && break; sleep 0.025; done
grep -q "conn 3 fault stall-now" "$T/m.log" || fail "SIGUSR2: no stall"
kill -HUP $rpid
for _ in $(seq 1 200); do grep -q "conn 3 resumed" "$T/m.log" && break; sleep 0.025; done
grep -q "conn 3 resumed" "$T/m.log" || fail "SIGHUP: no resume"
sleep 0.5
echo "cut fin" >"$T/ctl"
timeout 20 tail --pid=$spid -f /dev/null || { cat "$T/m.log" >&2; fail "control cut: the source still hangs"; }
wait_rc $rpid
[ "$RC" = 0 ] || fail "the relay exited $RC"
at=$(sed -n 's/.*conn 3 fault cut-now fwd=\([0-9]*\) rev=0 mode=fin/\1/p' "$T/m.log")
[ -n "$at" ] || { cat "$T/m.log" >&2; fail "control cut: log"; }
[ "$(cat "$T/multi.3")" = "$at eof" ] || fail "control cut fin: connection 3 got $(cat "$T/multi.3"), cut at $at"
wait $mpid
pass "SIGUSR2 stalled, SIGHUP resumed, 'cut fin' on the control FIFO closed connection 3"

pass "faultrelay self-test"
