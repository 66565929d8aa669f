#!/usr/bin/env bash
# A cancelled migration, and one whose destination dies: the source daemon
# carries on serving, no acknowledged write is lost, and the destination is
# left marked incomplete (and would refuse to serve it).
. "$(dirname "$0")/lib.sh"
requires qemu-io python3

size=$((128 * MiB))
make_random "$T/src.img" $size 111

run_pair() { # label, how to interrupt
	local label=$1 how=$2
	rm -f "$T/dst.img"
	start_serve "d$label" --incoming 127.0.0.1:0 --device d0="$T/dst.img" --create
	local dpid=$SERVE_PID din=$INCOMING_PORT
	start_serve "s$label" --device d0="$T/src.img" --control "$T/$label.sock"
	local spid=$SERVE_PID snbd=$NBD_PORT
	"$BLKMIG" migrate --control "$T/$label.sock" --to "127.0.0.1:$din" --max-bandwidth 16M 2>"$T/$label.mig.err" ||
		{ cat "$T/$label.mig.err" >&2; fail "$label: migrate did not start"; }
	sleep 1
	qemu-io -f raw "nbd://127.0.0.1:$snbd/d0" -c "write -P 0x61 8M 64k" >/dev/null 2>&1 || fail "$label: write during the migration"
	case $how in
	cancel) "$BLKMIG" cancel --control "$T/$label.sock" || fail "$label: cancel" ;;
	kill) kill -KILL "$dpid" ;;
	esac
	for _ in $(seq 100); do
		"$BLKMIG" status --control "$T/$label.sock" >"$T/$label.status" 2>&1
		grep -q "status: \(cancelled\|failed\)" "$T/$label.status" && break
		sleep 0.1
	done
	grep -q "status: $3" "$T/$label.status" || { cat "$T/$label.status" >&2; fail "$label: status is not $3"; }
	# The source still serves, reads and writes, and kept the earlier write.
	qemu-io -f raw "nbd://127.0.0.1:$snbd/d0" -c "read -P 0x61 8M 64k" -c "write -P 0x62 9M 64k" \
		-c "read -P 0x62 9M 64k" >"$T/$label.after" 2>&1 || fail "$label: source stopped serving"
	grep -qi "failed" "$T/$label.after" && fail "$label: data lost on the source"
	if [ "$how" = cancel ]; then
		wait_rc "$dpid"
		[ "$RC" = 1 ] || fail "$label: destination exited $RC, expected 1"
		grep -q "^blkmig: serve: incoming migration failed" "$T/d$label.err" || { cat "$T/d$label.err" >&2; fail "$label: destination message"; }
	fi
	is_marked "$T/dst.img" || fail "$label: destination not marked incomplete"
	# A daemon refuses to serve an incomplete image.
	"$BLKMIG" serve --nbd 127.0.0.1:0 --device d0="$T/dst.img" 2>"$T/$label.refuse.err"
	expect_error $? 1 "$T/$label.refuse.err" "marked incomplete"
	stop "$spid"
	pass "$label: source kept serving with no write lost; destination marked incomplete"
}

run_pair cancel cancel cancelled
run_pair killed kill failed
