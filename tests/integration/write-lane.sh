#!/usr/bin/env bash
# The write lane (docs/write-lane.md): in active mode, mirrored writes
# travel on a connection of their own, and their order against the chunk
# records of the main stream rests on 'after' (a write waits for the
# records of its chunks) and FENCE (what follows waits for the writes
# before it).  A relay holds back one of the two connections at a time by
# 40 ms, so that without either wait the destination would apply a write
# before its chunk's record (the record then undoes it) or complete before
# the last writes (its digests then differ): the migration must complete,
# and the destination equal the source at the switch-over.  The built-in
# writer dirties 4 KiB random blocks at 16 MB/s over an 8 MB/s link; a
# real NBD client writes a second device.
. "$(dirname "$0")/lib.sh"
requires python3 cmp qemu-io

size=$((16 * MiB))
RELAY_PY="$(dirname "$0")/../tools/delayrelay.py"

# lane_run NAME CONNECTIONS delay DELAYS: through delayrelay.py (DELAYS as
# it takes them: main,lane); lane_run NAME CONNECTIONS fault OPTIONS...:
# through faultrelay.py with OPTIONS.  CONNECTIONS: how many the migration
# may take.  LANE_CLIENT=0: no qemu-io client, the built-in writer alone.
lane_run() {
	local name=$1 conns=$2 kind=$3 port
	shift 3
	make_random "$T/$name.src" $size 301
	make_random "$T/$name.src1" $((4 * MiB)) 302
	start_serve "$name-dst" --incoming 127.0.0.1:0 --device d0="$T/$name.dst" \
		--device d1="$T/$name.dst1" --create
	DST_PID=$SERVE_PID DST_NBD=$NBD_PORT
	if [ "$kind" = delay ]; then
		/usr/bin/python3 "$RELAY_PY" "$T/$name.relay" "127.0.0.1:$INCOMING_PORT" "$1" &
		RELAY=$!
		BG_PIDS+=("$RELAY")
		for _ in $(seq 1 100); do [ -s "$T/$name.relay" ] && break; sleep 0.05; done
		[ -s "$T/$name.relay" ] || fail "$name: the relay did not start"
		port=$(cat "$T/$name.relay")
	else
		start_relay "$name" "$INCOMING_PORT" "$@"
		RELAY=$RELAY_PID port=$RELAY_PORT
	fi
	start_serve "$name-src" --device d0="$T/$name.src" --device d1="$T/$name.src1" \
		--control "$T/$name.sock" --workload "d0,bs=4K,rate=16M,seed=9"
	SRC_PID=$SERVE_PID SRC_NBD=$NBD_PORT
	rm -f "$T/stop"
	[ "${LANE_CLIENT:-1}" = 0 ] && touch "$T/stop"
	(
		i=0
		while [ ! -e "$T/stop" ]; do
			off=$(( (i * 7919 % 1000) * 4096 )) pat=$(( i % 250 + 1 ))
			qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d1" -c "write -P $pat $off 4k" \
				>/dev/null 2>&1 && echo "$off $pat ok"
			i=$((i + 1))
		done >"$T/$name.client"
	) &
	CLIENT=$!
	"$BLKMIG" migrate --control "$T/$name.sock" --to "127.0.0.1:$port" \
		--after refuse --max-bandwidth 8M --mode active --wait --json >"$T/$name.json" \
		2>"$T/$name.err" ||
		{ cat "$T/$name.err" "$T/$name-src.err" "$T/$name-dst.err" >&2; fail "$name: migrate failed"; }
	touch "$T/stop"
	wait $CLIENT
	[ "$(json_field "$T/$name.json" "['status']")" = completed ] || fail "$name: not completed"
	mirrored=$(json_field "$T/$name.json" "['mirrored-writes']")
	[ "$mirrored" -gt 0 ] || fail "$name: no write was mirrored"
	# In one go: a write applied out of order is caught by the digests and
	# healed on a new connection, which must not have been needed.
	used=$(json_field "$T/$name.json" "['connections']")
	[ "$used" = "$conns" ] || { cat "$T/$name-dst.err" >&2; fail "$name: took $used connections, not $conns"; }
	[ "$(json_field "$T/$name.json" "['switchover-attempts']")" = 1 ] ||
		fail "$name: needed $(json_field "$T/$name.json" "['switchover-attempts']") switch-over attempts"
	wait_export "$DST_NBD" d0
	stop "$SRC_PID"
	stop "$DST_PID"
	kill "$RELAY" 2>/dev/null
	wait "$RELAY" 2>/dev/null
	if [ "$kind" = fault ]; then
		grep -q "conn 2 fault" "$T/$name.relay.log" ||
			fail "$name: the lane never reached its fault point"
	fi
	cmp "$T/$name.src" "$T/$name.dst" || fail "$name: d0 differs from the source at the switch-over"
	cmp "$T/$name.src1" "$T/$name.dst1" || fail "$name: d1 differs from the source at the switch-over"
	pass "$name: completed on $used connection(s) with $mirrored writes mirrored on the write lane; both devices equal"
}

lane_run late-records 1 delay 40,0
lane_run late-writes 1 delay 0,40
# The lane cut mid-pass (its 2nd connection, after about 100 writes): the
# attempt fails and the migration resumes on a new connection (and lane).
lane_run lane-cut 2 fault --conn 2 --cut-at 400000
# The lane stalled for 4 s: writers stop waiting after their patience (their
# writes are marked dirty and sent again), the destination holds its next
# FENCE until the lane moves again, and nothing is lost.
lane_run lane-stall 1 fault --conn 2 --stall-at 400000:4
# A WACK cut in two: the lane stalls for 4 s between the 40th WACK's
# header and its body.  The writer waiting for it reads the lane itself;
# it must not wait inside the message (for the idle timeout, or the
# stall), but give up after its patience (2 s at the default 300 ms
# --max-downtime; twice that beyond 1 s): its write is marked dirty
# and mirroring suspended until the lane answers again.  The built-in
# writer alone, so that no other writer gives up on a WACK of its own,
# and a 48 MiB image, so that the migration outlasts the stall (a writer
# that waited inside the message would have its WACK then, and no
# suspension).
size=$((48 * MiB)) LANE_CLIENT=0 lane_run lane-split 1 fault --conn 2 --split-reply 0x85:40:4
susp=$(json_field "$T/lane-split.json" "['mirror-suspensions']")
[ "$susp" -ge 1 ] || fail "lane-split: the writer waited out the stall inside the WACK (mirror-suspensions $susp)"
pass "lane-split: the writer gave up on a WACK cut in two after its patience ($susp suspension(s))"

# A WACK the destination did not owe: the lane's 40th WACK comes twice.
# The writer that reads the copy refuses it (it acknowledges nothing new),
# the attempt fails with that reason (the destination hears it in the
# source's ABORT), and the migration resumes on a new connection.
lane_run lane-dup 2 fault --conn 2 --dup-reply 0x85:40
grep -q "write lane: destination acknowledged write 40; 40 were acknowledged" \
	"$T/lane-dup-dst.err" || { cat "$T/lane-dup-dst.err" >&2; fail "lane-dup: the duplicate WACK was not refused"; }
pass "lane-dup: a WACK sent twice was refused, and the migration resumed on a new connection"

# The lane over TLS (PSK): the writers' look-ahead (xport_peek_now())
# and reads of the lane go through GnuTLS, and the destination closes the
# lane without close_notify at its end.  The built-in writer at 16 MB/s
# over an 8 MB/s link, in active mode; a completed migration means the
# destination committed, so its image is final once migrate returns.
make_psk "$T/lane.psk" src
make_random "$T/tls.src" $size 305
start_serve tls-dst --incoming 127.0.0.1:0 --device d0="$T/tls.dst" --create \
	--tls-psk "$T/lane.psk"
DST_PID=$SERVE_PID DST_PORT=$INCOMING_PORT
start_serve tls-src --device d0="$T/tls.src" --control "$T/tls.sock" \
	--workload "d0,bs=4K,rate=16M,seed=9"
SRC_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/tls.sock" --to "127.0.0.1:$DST_PORT" --tls-psk "$T/lane.psk" \
	--after refuse --max-bandwidth 8M --mode active --wait --json >"$T/tls.json" 2>"$T/tls.err" ||
	{ cat "$T/tls.err" "$T/tls-src.err" "$T/tls-dst.err" >&2; fail "tls lane: migrate failed"; }
[ "$(json_field "$T/tls.json" "['status']")" = completed ] || fail "tls lane: not completed"
mirrored=$(json_field "$T/tls.json" "['mirrored-writes']")
[ "$mirrored" -gt 0 ] || fail "tls lane: no write was mirrored"
[ "$(json_field "$T/tls.json" "['connections']")" = 1 ] ||
	{ cat "$T/tls-dst.err" >&2; fail "tls lane: took more than one connection"; }
stop "$SRC_PID"
stop "$DST_PID"
grep -qi "write lane\|TLS receive" "$T/tls-src.err" "$T/tls-dst.err" &&
	{ cat "$T/tls-src.err" "$T/tls-dst.err" >&2; fail "tls lane: a side complained of the lane"; }
cmp "$T/tls.src" "$T/tls.dst" || fail "tls lane: the image differs from the source at the switch-over"
pass "tls lane: completed over TLS on one connection with $mirrored writes mirrored on the lane; images equal"

# An idle lane is no failure: a migration in auto mode with nobody
# writing opens the lane and sends nothing on it, for longer than both
# sides' idle timeout (2 s here; 16 MiB at 4 MB/s takes 4 s).
make_random "$T/idle.img" $size 304
start_receiver idle-rx --device d0="$T/idle.dst" --create --timeout 2
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/idle.img" --max-bandwidth 4M \
	--timeout 2 --json >"$T/idle.json" 2>"$T/idle.err" ||
	{ cat "$T/idle.err" "$T/idle-rx.err" >&2; fail "idle lane: send failed"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || { cat "$T/idle-rx.err" >&2; fail "idle lane: receive failed"; }
[ "$(json_field "$T/idle.json" "['connections']")" = 1 ] || fail "idle lane: took more than one connection"
grep -q "WLANE\|write lane" "$T/idle-rx.err" && { cat "$T/idle-rx.err" >&2; fail "idle lane: the receiver complained"; }
cmp "$T/idle.img" "$T/idle.dst" || fail "idle lane: the image differs"
pass "idle lane: a 4 s migration with the lane idle past a 2 s timeout completed on one connection"

# An older destination refuses the WLANE bit it does not know; the source
# connects again at once without it (mirrored writes then share the one
# stream).  A stand-in answers the first HELLO as an older blkmig does and
# keeps the second's capability bits.
python3 - "$T/old.port" "$T/old.caps" >"$T/old.log" 2>&1 <<'PY' &
import socket, struct, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(2)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
for n in range(2):
    c, _ = s.accept()
    c.settimeout(10)
    hello = b""
    while len(hello) < 16:
        hello += c.recv(65536)
    caps = struct.unpack(">I", hello[12:16])[0]
    if n == 0:
        reason = b"handshake: hello: unknown capability bits 0x200 (known 0x1bf)"
        err = 74  # EBADMSG
    else:
        open(sys.argv[2], "w").write("%#x\n" % caps)
        reason = b"stand-in: no further"
        err = 71  # EPROTO
    c.sendall(struct.pack(">BII", 0x83, 4 + len(reason), err) + reason)
    c.close()
PY
OLD_PID=$!
BG_PIDS+=("$OLD_PID")
for _ in $(seq 1 200); do [ -s "$T/old.port" ] && break; sleep 0.025; done
make_random "$T/old.img" $((1 * MiB)) 303
"$BLKMIG" send --reclaim --to "127.0.0.1:$(cat "$T/old.port")" --device d0="$T/old.img" \
	2>"$T/old.send.err"
expect_error $? 1 "$T/old.send.err" "stand-in: no further"
wait_rc "$OLD_PID"
[ -s "$T/old.caps" ] || { cat "$T/old.send.err" "$T/old.log" >&2; fail "older destination: no second HELLO"; }
python3 -c "import sys; c = int(open(sys.argv[1]).read(), 16); sys.exit(0 if c & 0x4 and not c & 0x200 else 1)" \
	"$T/old.caps" || fail "older destination: the second HELLO has caps $(cat "$T/old.caps")"
grep -q "does not take a write lane" "$T/old.send.err" ||
	{ cat "$T/old.send.err" >&2; fail "older destination: the source did not say why it connected again"; }
pass "older destination: connected again without the write lane (caps $(cat "$T/old.caps")), and said so"
