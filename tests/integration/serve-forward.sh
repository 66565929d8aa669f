#!/usr/bin/env bash
# Clients carry on through the switch-over: a qemu-io client and an nbdcopy
# client each hold one NBD connection to the source daemon while `blkmig
# migrate` moves its two devices live; after the switch-over the source
# forwards their requests (and those of a client that connects later) to
# the destination's exports.  Every write acknowledged before, during and
# after it reads back from the destination, no write fails, and the
# source's images do not change after the switch-over.  Then the error
# paths: the destination gone while forwarding (clients get an error), and
# the source stopped while forwarding (exit 0, clients refused).
. "$(dirname "$0")/lib.sh"
requires nbdinfo nbdcopy qemu-io python3 cmp md5sum

size=$((32 * MiB))
make_random "$T/src0.img" $size 301
make_random "$T/src1.img" $size 302
# What the nbdcopy client streams into d1, slowly, through one connection.
make_random "$T/stream.bin" $((24 * MiB)) 303

start_serve dst --incoming 127.0.0.1:0 --device d0="$T/dst0.img" --device d1="$T/dst1.img" --create
DST_NBD=$NBD_PORT DST_IN=$INCOMING_PORT DST_PID=$SERVE_PID
start_serve src --device d0="$T/src0.img" --device d1="$T/src1.img" --control "$T/src.sock"
SRC_NBD=$NBD_PORT SRC_PID=$SERVE_PID

# qemu-io on one connection, fed one write every 5 ms until told to stop;
# each write has its own offset and pattern.  Its output says which were
# acknowledged and how long each took.
qio_feed() {
	local i=0
	while [ ! -e "$T/stop" ]; do
		echo "write -P $(( i % 250 + 1 )) $(( i * 4096 )) 4k"
		i=$((i + 1))
		sleep 0.005
	done
	echo "flush"
	echo "quit"
}
qio_feed | qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" >"$T/qio.out" 2>&1 &
QIO=$!
BG_PIDS+=("$QIO")

# nbdcopy on one connection, its input paced at 4 MiB/s, so the copy spans
# the switch-over.
pace() {
	python3 - "$T/stream.bin" <<'PY'
import sys, time
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(64 * 1024)
        if not b:
            break
        sys.stdout.buffer.write(b)
        sys.stdout.buffer.flush()
        time.sleep(64 / 4096)
PY
}
pace | nbdcopy --connections=1 --flush - "nbd://127.0.0.1:$SRC_NBD/d1" 2>"$T/nbdcopy.err" &
NBDCOPY=$!
BG_PIDS+=("$NBDCOPY")

sleep 1
# No --forward-to: the destination announces where its export is.  A
# second migrate while it runs (asking to refuse) is refused and changes
# nothing.
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" --max-bandwidth 40M 2>"$T/mig.err" ||
	{ cat "$T/mig.err" "$T/src.err" "$T/dst.err" >&2; fail "migrate failed"; }
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" --after refuse 2>"$T/mig2.err"
expect_error $? 1 "$T/mig2.err" "already running"
$QMP "$T/src.sock" wait-migration 120 >"$T/mig.json" || { cat "$T/mig.json" "$T/src.err" "$T/dst.err" >&2; fail "the migration did not complete"; }
[ "$(json_field "$T/mig.json" "['status']")" = completed ] || fail "status not completed"
sum0=$(md5sum <"$T/src0.img") sum1=$(md5sum <"$T/src1.img")
wrote_at_switch=$(grep -c "^wrote\|^qemu-io> wrote" "$T/qio.out")
"$BLKMIG" status --control "$T/src.sock" --json >"$T/status.json"
clients=$(json_field "$T/status.json" "['forwarding']['clients']")
[ "$clients" -ge 2 ] || { cat "$T/status.json" >&2; fail "status shows $clients forwarded clients, 2 expected"; }
pass "switch-over done with $wrote_at_switch qemu-io writes acknowledged; status: $clients clients forwarded to $(json_field "$T/status.json" "['forwarding']['to']")"

# A client that connects after the switch-over is forwarded too.
qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" -c "write -P 77 $((30 * MiB)) 64k" >"$T/late.out" 2>&1 ||
	{ cat "$T/late.out" >&2; fail "a client connecting after the switch-over was refused"; }
pass "a client connecting after the switch-over writes through the source"

sleep 1
touch "$T/stop"
wait_rc $QIO
[ "$RC" = 0 ] || fail "qemu-io exited $RC"
wait_rc $NBDCOPY
[ "$RC" = 0 ] || { cat "$T/nbdcopy.err" >&2; fail "nbdcopy failed across the switch-over"; }

# No write failed; count those after the switch-over.
grep -qi "failed\|error" "$T/qio.out" && { grep -i -m3 "failed\|error" "$T/qio.out" >&2; fail "qemu-io saw an error"; }
oks=$(grep -c "wrote 4096/4096" "$T/qio.out")
[ "$oks" -gt "$wrote_at_switch" ] || fail "no qemu-io write after the switch-over"
pass "qemu-io: $oks writes on one connection, $((oks - wrote_at_switch)) after the switch-over, none failed; nbdcopy streamed 24 MiB on one connection, exit 0"

# The longest write qemu-io saw (1 / its ops per second).
python3 - "$T/qio.out" "$wrote_at_switch" "$(json_field "$T/mig.json" "['downtime']")" <<'PY'
import re, sys
lat = [1000.0 / float(m.group(1)) for m in re.finditer(r"and ([0-9.]+) ops/sec", open(sys.argv[1]).read())]
at = max(range(len(lat)), key=lambda i: lat[i])
srt = sorted(lat)
print("PASS: qemu-io write latency: median %.2f ms, p99 %.2f ms, longest %.1f ms (write %d; %s writes were acknowledged when migrate returned; the final pass paused writers %s ms)"
      % (srt[len(srt) // 2], srt[int(len(srt) * 0.99)], lat[at], at + 1, sys.argv[2], sys.argv[3]))
PY

# The source's images are as they were at the switch-over.
[ "$(md5sum <"$T/src0.img")" = "$sum0" ] && [ "$(md5sum <"$T/src1.img")" = "$sum1" ] ||
	fail "a source image changed after the switch-over"
pass "the source's images did not change after the switch-over"

# Every acknowledged write reads back from the destination's exports.
cmds=()
n=$oks
for ((i = 0; i < n; i++)); do cmds+=(-c "read -P $(( i % 250 + 1 )) $(( i * 4096 )) 4k"); done
cmds+=(-c "read -P 77 $((30 * MiB)) 64k")
qemu-io -f raw "nbd://127.0.0.1:$DST_NBD/d0" "${cmds[@]}" >"$T/verify.out" 2>&1 || fail "qemu-io on the destination"
grep -qi "verification failed\|error" "$T/verify.out" && { grep -i -m3 "failed" "$T/verify.out" >&2; fail "an acknowledged write is missing on the destination"; }
nbdcopy "nbd://127.0.0.1:$DST_NBD/d1" - 2>/dev/null | head -c $((24 * MiB)) >"$T/d1.out"
cmp "$T/stream.bin" "$T/d1.out" || fail "the nbdcopy stream differs on the destination"
pass "all $oks qemu-io writes, the late client's write and nbdcopy's 24 MiB read back from the destination"

# Once the clients are gone, status says so.
for _ in $(seq 1 100); do
	"$BLKMIG" status --control "$T/src.sock" --json >"$T/status.json"
	[ "$(json_field "$T/status.json" "['forwarding']['clients']")" = 0 ] && break
	sleep 0.05
done
[ "$(json_field "$T/status.json" "['forwarding']['clients']")" = 0 ] || fail "forwarded clients never dropped to 0"
"$BLKMIG" status --control "$T/src.sock" | grep -q "^forwarding: 0 clients to 127.0.0.1:$DST_NBD" ||
	{ "$BLKMIG" status --control "$T/src.sock" >&2; fail "status text does not show forwarding"; }
pass "status: $("$BLKMIG" status --control "$T/src.sock" | grep ^forwarding)"

# A client connected and forwarded; then the destination goes away
# (killed): its next write fails, nothing is kept on the source, and a new
# client's write fails too.  Then the source is stopped while forwarding:
# exit 0, and the client's next write fails as well.
mkfifo "$T/hold.fifo"
qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" <"$T/hold.fifo" >"$T/hold.out" 2>&1 &
HOLD=$!
BG_PIDS+=("$HOLD")
exec 7>"$T/hold.fifo"
echo "write -P 88 $((31 * MiB)) 4k" >&7
for _ in $(seq 1 100); do grep -q "wrote 4096" "$T/hold.out" && break; sleep 0.05; done
grep -q "wrote 4096" "$T/hold.out" || fail "the held client's first write"
kill -9 "$DST_PID"
wait_rc "$DST_PID"
echo "write -P 89 $((31 * MiB)) 4k" >&7
for _ in $(seq 1 100); do grep -qi "write failed" "$T/hold.out" && break; sleep 0.05; done
grep -qi "write failed" "$T/hold.out" || { cat "$T/hold.out" >&2; fail "no error on the held connection with the destination gone"; }
qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" -c "write -P 90 $((29 * MiB)) 4k" >"$T/gone.out" 2>&1
grep -qi "failed\|error" "$T/gone.out" || { cat "$T/gone.out" >&2; fail "a new client's write succeeded with the destination gone"; }
[ "$(md5sum <"$T/src0.img")" = "$sum0" ] || fail "the source wrote its own copy with the destination gone"
"$BLKMIG" status --control "$T/src.sock" --json >"$T/status.json"
[ "$(json_field "$T/status.json" "['forwarding']['errors']")" -ge 2 ] || fail "status counts no failed request"
pass "destination gone: writes fail ($(grep -i -m1 "write failed" "$T/hold.out" | head -c 100)), the source's copy is untouched"

stop "$SRC_PID"
[ "$RC" = 0 ] || { cat "$T/src.err" >&2; fail "source serve exited $RC while forwarding"; }
echo "write -P 91 $((31 * MiB)) 4k" >&7
echo "quit" >&7
exec 7>&-
wait_rc $HOLD
[ "$(grep -c "wrote 4096" "$T/hold.out")" = 1 ] || { cat "$T/hold.out" >&2; fail "a write succeeded after the destination went away"; }
pass "source stopped while forwarding: exit 0; its client's writes keep failing"
[ "$(md5sum <"$T/src0.img")" = "$sum0" ] || fail "source image changed"

# The COMMIT lost (the link cut right after the destination's ACK): the
# source is handed over and its clients' requests wait for the destination,
# which takes over once the source reconnects and delivers the COMMIT.  The
# client sees a longer pause, and no error.  This destination's NBD server
# listens on the wildcard address, which it announces as such: the source
# forwards to the host it dialled.
make_random "$T/c.img" $((8 * MiB)) 305
start_serve dstc --incoming 127.0.0.1:0 --device d0="$T/c.dst" --create --nbd 0.0.0.0:0 --no-tls
DSTC_IN=$INCOMING_PORT DSTC_NBD=$NBD_PORT DSTC_PID=$SERVE_PID
start_relay commit "$DSTC_IN" --cut-after-reply 0x82
start_serve srcc --device d0="$T/c.img" --control "$T/srcc.sock"
SRCC_NBD=$NBD_PORT SRCC_PID=$SERVE_PID
rm -f "$T/stop"
qio_feed | qemu-io -f raw "nbd://127.0.0.1:$SRCC_NBD/d0" >"$T/qioc.out" 2>&1 &
QIOC=$!
BG_PIDS+=("$QIOC")
sleep 0.5
"$BLKMIG" migrate --control "$T/srcc.sock" --to "127.0.0.1:$RELAY_PORT" --wait --json >"$T/migc.json" 2>"$T/migc.err" ||
	{ cat "$T/migc.err" "$T/srcc.err" "$T/dstc.err" "$T/commit.relay.log" >&2; fail "migrate with the COMMIT lost"; }
grep -q "fault cut-after-reply" "$T/commit.relay.log" || fail "the relay did not cut after the ACK"
[ "$(json_field "$T/migc.json" "['connections']")" -ge 2 ] || fail "the COMMIT was not delivered on a new connection"
sumc=$(md5sum <"$T/c.img")
sleep 0.5
touch "$T/stop"
wait_rc $QIOC
grep -qi "failed\|error" "$T/qioc.out" && { grep -i -m3 "failed\|error" "$T/qioc.out" >&2; fail "a client write failed with the COMMIT lost"; }
okc=$(grep -c "wrote 4096/4096" "$T/qioc.out")
cmds=()
for ((i = 0; i < okc && i < 2048; i++)); do cmds+=(-c "read -P $(( i % 250 + 1 )) $(( i * 4096 )) 4k"); done
qemu-io -f raw "nbd://127.0.0.1:$DSTC_NBD/d0" "${cmds[@]}" >"$T/verifyc.out" 2>&1 || fail "qemu-io on the destination"
grep -qi "verification failed\|error" "$T/verifyc.out" && fail "an acknowledged write is missing on the destination"
[ "$(md5sum <"$T/c.img")" = "$sumc" ] || fail "the source image changed"
longest=$(python3 -c "import re,sys; print('%.0f' % max(1000.0 / float(m) for m in re.findall(r'and ([0-9.]+) ops/sec', open(sys.argv[1]).read())))" "$T/qioc.out")
[ "$(json_field "$T/migc.json" "['status']")" = completed ] || fail "COMMIT lost: not completed"
"$BLKMIG" status --control "$T/srcc.sock" | grep -q "^forwarding: 0 clients to 127.0.0.1:$DSTC_NBD " ||
	{ "$BLKMIG" status --control "$T/srcc.sock" >&2; fail "not forwarded to the dialled host for a wildcard announcement"; }
pass "COMMIT lost: delivered on connection $(json_field "$T/migc.json" "['connections']"), $okc client writes and none failed (longest $longest ms), all on the destination"
stop "$SRCC_PID"
stop "$DSTC_PID"

# The same, but the source gives up (--retry-for 0) after the hand-over:
# its clients' requests wait for the destination; no other migration may
# start; a resume delivers the COMMIT, in the way chosen at the hand-over
# (forward, though the resume asks to refuse), and the waiting write goes
# through.  Then the destination stops answering (SIGSTOP) and the source
# is stopped: it exits at once.
make_random "$T/e.img" $((8 * MiB)) 306
start_serve dste --incoming 127.0.0.1:0 --device d0="$T/e.dst" --create
DSTE_IN=$INCOMING_PORT DSTE_NBD=$NBD_PORT DSTE_PID=$SERVE_PID
start_relay giveup "$DSTE_IN" --cut-after-reply 0x82
start_serve srce --device d0="$T/e.img" --control "$T/srce.sock"
SRCE_NBD=$NBD_PORT SRCE_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/srce.sock" --to "127.0.0.1:$RELAY_PORT" --retry-for 0 --wait >/dev/null 2>"$T/mige.err" &&
	fail "the migration completed although its COMMIT was lost and retries were off"
qemu-io -f raw "nbd://127.0.0.1:$SRCE_NBD/d0" -c "write -P 6 0 4k" >"$T/qioe.out" 2>&1 &
QIOE=$!
BG_PIDS+=("$QIOE")
"$BLKMIG" migrate --control "$T/srce.sock" --to "127.0.0.1:$DSTE_IN" 2>"$T/mige2.err"
expect_error $? 1 "$T/mige2.err" "handed over to 127.0.0.1:$RELAY_PORT"
"$BLKMIG" migrate --control "$T/srce.sock" --to "127.0.0.1:$RELAY_PORT" 2>"$T/mige3.err"
expect_error $? 1 "$T/mige3.err" "only 'migrate --resume' to it"
kill -0 "$QIOE" 2>/dev/null || { cat "$T/qioe.out" >&2; fail "the client's write did not wait for the destination"; }
"$BLKMIG" migrate --control "$T/srce.sock" --to "127.0.0.1:$RELAY_PORT" --resume --after refuse --wait \
	>/dev/null 2>"$T/mige4.err" || { cat "$T/mige4.err" "$T/srce.err" >&2; fail "the resume did not deliver the COMMIT"; }
wait_rc "$QIOE"
[ "$RC" = 0 ] && grep -q "wrote 4096/4096" "$T/qioe.out" && ! grep -qi "failed\|error" "$T/qioe.out" ||
	{ cat "$T/qioe.out" >&2; fail "the write held across the lost COMMIT failed"; }
qemu-io -f raw "nbd://127.0.0.1:$DSTE_NBD/d0" -c "read -P 6 0 4k" >"$T/verifye.out" 2>&1 &&
	! grep -qi "verification failed" "$T/verifye.out" || fail "the held write is not on the destination"
"$BLKMIG" status --control "$T/srce.sock" | grep -q "^forwarding: .* to 127.0.0.1:$DSTE_NBD" ||
	{ "$BLKMIG" status --control "$T/srce.sock" >&2; fail "the resume changed the way chosen at the hand-over"; }
pass "COMMIT lost and the source gave up: its client's write waited, other migrations were refused, the resume delivered it and the write reached the destination"

qemu-io -f raw "nbd://127.0.0.1:$SRCE_NBD/d0" -c "write -P 7 4k 4k" >/dev/null 2>&1 || fail "a forwarded write"
kill -STOP "$DSTE_PID"
kill -TERM "$SRCE_PID"
for _ in $(seq 1 100); do kill -0 "$SRCE_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SRCE_PID" 2>/dev/null && { kill -CONT "$DSTE_PID"; fail "serve did not exit within 10 s of SIGTERM with the destination not answering"; }
wait_rc "$SRCE_PID"
kill -CONT "$DSTE_PID"
[ "$RC" = 0 ] || fail "serve exited $RC"
pass "SIGTERM while the destination does not answer: the source exits at once (status 0)"
stop "$DSTE_PID"

# A destination without NBD (`blkmig receive`) announces none: the source
# says so in its log and refuses its clients, naming the destination.
make_random "$T/small.img" $((4 * MiB)) 304
start_receiver small --device d0="$T/small.dst" --create
start_serve src4 --device d0="$T/small.img" --control "$T/src4.sock"
SRC4_NBD=$NBD_PORT SRC4_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/src4.sock" --to "127.0.0.1:$RECV_PORT" --wait >/dev/null 2>"$T/mig4.err" ||
	{ cat "$T/mig4.err" "$T/src4.err" >&2; fail "migrate to receive"; }
qemu-io -f raw "nbd://127.0.0.1:$SRC4_NBD/d0" -c "write -P 5 0 4k" >"$T/none.out" 2>&1 && fail "a write was taken with nowhere to forward it"
grep -q "migrated to 127.0.0.1:$RECV_PORT" "$T/none.out" || { cat "$T/none.out" >&2; fail "the refusal does not say where the devices went"; }
grep -q "serves no NBD export" "$T/src4.err" || { cat "$T/src4.err" >&2; fail "the source's log does not say why it refuses"; }
pass "a destination with no NBD export: clients are refused ($(grep -o "migrated to.*there" "$T/none.out" | head -1)), the log says why"
stop "$SRC4_PID"
