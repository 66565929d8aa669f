#!/usr/bin/env bash
# Live migration of disks in use by real clients: qemu-io keeps writing
# known patterns through the source daemon's NBD export while `blkmig
# migrate` moves the image to a `serve --incoming` daemon.  Afterwards every
# acknowledged pattern reads back from the destination's export, the images
# are equal, and the source refuses further writes.
. "$(dirname "$0")/lib.sh"
requires nbdinfo qemu-io python3 cmp md5sum

size=$((64 * MiB))
make_random "$T/src.img" $size 101

start_serve dst --incoming 127.0.0.1:0 --device d0="$T/dst.img" --create
DST_NBD=$NBD_PORT DST_IN=$INCOMING_PORT DST_PID=$SERVE_PID
# Until the migration is complete the destination refuses NBD clients, and says why.
# (qemu-io prints the server's message; nbdinfo 1.14 does not.)
qemu-io -f raw "nbd://127.0.0.1:$DST_NBD/d0" -c "read 0 4k" >"$T/early.out" 2>&1 && fail "destination served before the migration"
grep -q "incoming migration is in progress" "$T/early.out" || { cat "$T/early.out" >&2; fail "refusal does not say why"; }
pass "destination refuses clients until migrated: $(grep -o 'an incoming.*' "$T/early.out" | head -1)"

start_serve src --device d0="$T/src.img" --control "$T/src.sock"
SRC_NBD=$NBD_PORT SRC_PID=$SERVE_PID
[ "$(stat -c %a "$T/src.sock")" = 600 ] || fail "control socket mode is $(stat -c %a "$T/src.sock")"

# Writers: short-lived qemu-io clients, each writing one 4 KiB pattern at
# its own offset; the log says which writes were acknowledged.
writer() {
	local w=$1 i=0
	while [ ! -e "$T/stop" ]; do
		local off=$(( (w * 4096 + i) * 4096 )) pat=$(( (w * 37 + i) % 250 + 1 ))
		if qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" -c "write -P $pat $off 4k" >/dev/null 2>&1; then
			echo "$off $pat ok"
		else
			echo "$off $pat fail"
		fi
		i=$((i + 1))
	done >"$T/writer$w.log"
}
writer 0 & W0=$!
writer 1 & W1=$!
sleep 0.5
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" --after refuse --max-bandwidth 24M --wait --json \
	>"$T/mig.json" 2>"$T/mig.err" || { cat "$T/mig.err" "$T/src.err" "$T/dst.err" >&2; fail "migrate --wait failed"; }
sleep 0.5
touch "$T/stop"
wait $W0 $W1
[ "$(json_field "$T/mig.json" "['status']")" = completed ] || fail "status not completed"

oks=$(cat "$T"/writer*.log | grep -c " ok$")
fails=$(cat "$T"/writer*.log | grep -c " fail$")
[ "$oks" -gt 20 ] || fail "only $oks writes were acknowledged during the migration"
[ "$fails" -gt 0 ] || fail "no write was refused after the switch-over"
pass "$oks client writes acknowledged during the migration, $fails refused after it"

wait_export "$DST_NBD" d0
# Every acknowledged write reads back from the destination.
cmds=()
while read -r off pat res; do
	[ "$res" = ok ] && cmds+=(-c "read -P $pat $off 4k")
done < <(cat "$T"/writer*.log)
qemu-io -f raw "nbd://127.0.0.1:$DST_NBD/d0" "${cmds[@]}" >"$T/verify.out" 2>&1 || fail "qemu-io on the destination"
grep -qi "verification failed\|error" "$T/verify.out" && { grep -i -m3 "failed" "$T/verify.out" >&2; fail "an acknowledged write is missing on the destination"; }
pass "all $oks acknowledged patterns read back from the destination's export"

cmp "$T/src.img" "$T/dst.img" || fail "destination image differs from the source at switch-over"
pass "destination image equals the source at the switch-over"

# The source refuses writes now, and its file no longer changes.
sum=$(md5sum <"$T/src.img")
qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" -c "write -P 7 0 4k" >"$T/late.out" 2>&1 && fail "the source accepted a write after the switch-over"
[ "$(md5sum <"$T/src.img")" = "$sum" ] || fail "the source file changed after the switch-over"
pass "source refuses writes after the switch-over: $(head -c 160 "$T/late.out" | tr '\n' ' ')"
"$BLKMIG" status --control "$T/src.sock" | grep -q "status: completed" || fail "status"
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" 2>"$T/again.err"
expect_error $? 1 "$T/again.err" "already migrated"
pass "status reports completed; a second migration is refused"

stop "$SRC_PID"; [ "$RC" = 0 ] || fail "source serve exited $RC"
stop "$DST_PID"; [ "$RC" = 0 ] || fail "destination serve exited $RC"
