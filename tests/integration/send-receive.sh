#!/usr/bin/env bash
# send -> receive of dense, sparse, odd-sized and multi-device images, each
# compared byte for byte with cmp; the --json report is checked too.
. "$(dirname "$0")/lib.sh"
requires cmp python3

migrate_and_compare() { # label, then --device pairs as "NAME=SRC:DST"
	local label=$1
	shift
	local sargs=() rargs=() pairs=("$@")
	for p in "${pairs[@]}"; do
		local name=${p%%=*} rest=${p#*=}
		sargs+=(--device "$name=${rest%%:*}")
		rargs+=(--device "$name=${rest#*:}")
	done
	start_receiver "$label" "${rargs[@]}" --create --json
	"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" "${sargs[@]}" ${send_opts:-} --json >"$T/$label.send.json" 2>"$T/$label.send.err" ||
		{ cat "$T/$label.send.err" "$T/$label.err" >&2; fail "$label: send failed"; }
	wait_rc "$RECV_PID"; rc=$RC
	[ "$rc" = 0 ] || { cat "$T/$label.err" >&2; fail "$label: receive exited $rc"; }
	for p in "${pairs[@]}"; do
		local rest=${p#*=}
		cmp "${rest%%:*}" "${rest#*:}" || fail "$label: ${rest#*:} differs from ${rest%%:*}"
		is_marked "${rest#*:}" && fail "$label: ${rest#*:} still marked incomplete"
	done
	[ "$(json_field "$T/$label.send.json" "['status']")" = completed ] || fail "$label: status not completed"
	[ "$(json_field "$T/$label.out" "['status']")" = completed ] || fail "$label: receiver status not completed"
	pass "$label"
}

make_random "$T/dense.img" $((32 * MiB)) 11
migrate_and_compare dense "d0=$T/dense.img:$T/dense.dst"

make_sparse "$T/sparse.img" $((64 * MiB)) "0:4096,$((5 * MiB + 100)):300000,$((63 * MiB)):$MiB" 12
migrate_and_compare sparse "d0=$T/sparse.img:$T/sparse.dst"

# 8.5 MiB plus 1234 bytes: neither a multiple of the chunk nor of a sector.
make_random "$T/odd.img" $((8 * MiB + 512 * 1024 + 1234)) 13
migrate_and_compare odd "d0=$T/odd.img:$T/odd.dst"
[ "$(stat -c %s "$T/odd.dst")" = $((8 * MiB + 512 * 1024 + 1234)) ] || fail "odd: wrong size"

make_random "$T/m1.img" $((3 * MiB)) 21
make_sparse "$T/m2.img" $((17 * MiB)) "$((16 * MiB)):$MiB" 22
make_random "$T/m3.img" 4096 23
migrate_and_compare multi "alpha=$T/m1.img:$T/m1.dst" "beta=$T/m2.img:$T/m2.dst" "gamma=$T/m3.img:$T/m3.dst"
[ "$(json_field "$T/multi.send.json" "['devices'][1]['name']")" = beta ] || fail "multi: per-device report"

# dense.img was handed over to the "dense" receiver: it is that host's now.
# Sending it again is refused before anything is sent, and its record is
# kept (refused the same way twice); comparing it is not a migration.
dense_to=127.0.0.1:$(cat "$T/dense.port")
for try in 1 2; do
	"$BLKMIG" send --to 127.0.0.1:1 --device d0="$T/dense.img" >/dev/null 2>"$T/again.err"
	expect_error $? 1 "$T/again.err" "dense.img was handed over to $dense_to .*refusing to send it \(send --reclaim takes it back"
done
pass "send refuses an image it handed over, and keeps its record"
start_receiver verify --device d0="$T/dense.dst" --verify-only
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/dense.img" --verify-only >"$T/verify.out" 2>"$T/verify.err" ||
	{ cat "$T/verify.err" >&2; fail "verify-only of a handed-over image failed"; }
grep -q "^identical" "$T/verify.out" || fail "verify-only of a handed-over image: not identical"
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || fail "verify-only receiver exited $RC"
pass "send --verify-only compares an image it handed over"

# An existing destination with other contents is overwritten completely;
# --reclaim takes dense.img back to send it again, and it is then the new
# receiver's.
make_random "$T/over.dst" $((32 * MiB)) 99
send_opts=--reclaim migrate_and_compare overwrite "d0=$T/dense.img:$T/over.dst"
"$BLKMIG" send --to 127.0.0.1:1 --device d0="$T/dense.img" >/dev/null 2>"$T/again.err"
expect_error $? 1 "$T/again.err" "dense.img was handed over to 127.0.0.1:$(cat "$T/overwrite.port") "
pass "send --reclaim sends it again, to be handed over to the new receiver"

# Smaller chunks than QEMU's 1 MiB.
start_receiver chunk --device d0="$T/chunk.dst" --create
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/odd.img" --chunk-size 64K >/dev/null 2>"$T/chunk.send.err" ||
	{ cat "$T/chunk.send.err" >&2; fail "chunk-size 64K: send failed"; }
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || fail "chunk-size 64K: receive failed"
cmp "$T/odd.img" "$T/chunk.dst" || fail "chunk-size 64K: differs"
pass "chunk-size 64K"

# A hand-over record that cannot be read may be one: refused the same way.
printf 'not a record' >"$T/m3.img.blkmig-handover"
"$BLKMIG" send --to 127.0.0.1:1 --device d0="$T/m3.img" >/dev/null 2>"$T/badrec.err"
expect_error $? 1 "$T/badrec.err" "m3.img has an unreadable hand-over record: refusing to send it \(send --reclaim takes it back\)"
pass "send refuses an image whose hand-over record is unreadable"

# The final pass's SYNCED and the ACK of the digests sent right behind that
# pass reach the source in one read (the relay holds the SYNCED back and
# passes it on with the ACK): it takes both, in order.  A source that
# waited for SYNCED before sending the digests would wait here for ever
# (--timeout bounds it).
make_random "$T/join.img" $((8 * MiB)) 31
start_receiver join --device d0="$T/join.dst" --create
start_relay join "$RECV_PORT" --join-reply 0x84:2
"$BLKMIG" send --to "127.0.0.1:$RELAY_PORT" --device d0="$T/join.img" --timeout 20 --retry-for 0 \
	--json >"$T/join.json" 2>"$T/join.send.err" ||
	{ cat "$T/join.send.err" "$T/join.relay.log" >&2; fail "joined answers: send failed"; }
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || fail "joined answers: receive exited $RC"
cmp "$T/join.img" "$T/join.dst" || fail "joined answers: images differ"
grep -q "fault join-reply type=0x84 n=2" "$T/join.relay.log" ||
	{ cat "$T/join.relay.log" >&2; fail "joined answers: the relay did not hold the final SYNCED"; }
[ "$(json_field "$T/join.json" "['iterations']")" = 2 ] || fail "joined answers: not a bulk and a final pass"
pass "the final SYNCED and the ACK arrive together"

# An answer nothing asked for: the bulk pass's SYNCED comes twice.  The
# source takes the copy for the final pass's (and finds it counts one pass
# of two) or meets it before that; either way it stops with one line, and
# the receiver has not committed.
make_random "$T/dup.img" $((8 * MiB)) 32
start_receiver dup --device d0="$T/dup.dst" --create
start_relay dup "$RECV_PORT" --dup-reply 0x84:1
"$BLKMIG" send --to "127.0.0.1:$RELAY_PORT" --device d0="$T/dup.img" --timeout 20 --retry-for 0 \
	>/dev/null 2>"$T/dup.send.err"
expect_error $? 1 "$T/dup.send.err" \
	"destination (synced 1 passes, 2 were sent|sent SYNCED, which nothing asked for)"
[ "$(wc -l <"$T/dup.send.err")" = 1 ] || { cat "$T/dup.send.err" >&2; fail "answer twice: more than one line"; }
grep -q "fault dup-reply type=0x84 n=1" "$T/dup.relay.log" ||
	{ cat "$T/dup.relay.log" >&2; fail "answer twice: the relay did not repeat the SYNCED"; }
wait_rc "$RECV_PID"; [ "$RC" != 0 ] || fail "answer twice: the receiver completed"
is_marked "$T/dup.dst" || fail "answer twice: the image is not marked incomplete"
# Nothing was handed over: the image is still the source's to send.
"$BLKMIG" send --to 127.0.0.1:1 --retry-for 0 --device d0="$T/dup.img" >/dev/null 2>"$T/dup.again.err"
expect_error $? 1 "$T/dup.again.err" "connect to 127.0.0.1:1: Connection refused"
pass "a SYNCED sent twice: $(cat "$T/dup.send.err")"
