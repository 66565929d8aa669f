#!/usr/bin/env bash
# Cancelling (SIGINT, SIGTERM) leaves the source untouched and the
# destination marked incomplete; so does a destination that dies.
. "$(dirname "$0")/lib.sh"
requires cmp python3 md5sum

size=$((256 * MiB))
make_random "$T/src.img" $size 51
sum=$(md5sum <"$T/src.img")

for sig in INT TERM; do
	start_receiver "c$sig" --device d0="$T/dst$sig.img" --create --retry-for 0
	"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --max-bandwidth 32M \
		>/dev/null 2>"$T/c$sig.send.err" &
	spid=$!
	sleep 1.5
	kill -"$sig" "$spid"
	wait_rc "$spid"; src_rc=$RC
	expect_error "$src_rc" 1 "$T/c$sig.send.err" "cancel"
	wait_rc "$RECV_PID"; rrc=$RC
	expect_error "$rrc" 1 "$T/c$sig.err" "source aborted|connection closed|closed the connection"
	is_marked "$T/dst$sig.img" || fail "SIG$sig: destination not marked incomplete"
	[ "$(md5sum <"$T/src.img")" = "$sum" ] || fail "SIG$sig: the source changed"
	pass "SIG$sig cancels: source untouched, destination marked incomplete"
done

# The destination dies mid-way: the source fails cleanly and is untouched.
start_receiver killed --device d0="$T/dstK.img" --create --retry-for 0
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --max-bandwidth 32M --retry-for 0 \
	>/dev/null 2>"$T/killed.send.err" &
spid=$!
sleep 1.5
kill -KILL "$RECV_PID"
wait_rc "$spid"; src_rc=$RC
expect_error "$src_rc" 1 "$T/killed.send.err" "send: "
[ "$(md5sum <"$T/src.img")" = "$sum" ] || fail "destination killed: the source changed"
is_marked "$T/dstK.img" || fail "destination killed: image not marked incomplete"
pass "destination killed: source fails cleanly and is untouched"

# SIGINT while still trying to connect is a cancel too, not a 10 s wait.
"$BLKMIG" send --to 127.0.0.1:1 --device d0="$T/src.img" >/dev/null 2>"$T/conn.err" &
spid=$!
sleep 0.5
kill -INT "$spid"
wait_rc "$spid"
expect_error "$RC" 1 "$T/conn.err" "cancelled while connecting"
pass "SIGINT while connecting cancels"
