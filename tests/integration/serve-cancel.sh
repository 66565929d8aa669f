#!/usr/bin/env bash
# A cancelled migration, and one whose destination dies: the source daemon
# carries on serving, no acknowledged write is lost, and the destination is
# left marked incomplete (and would refuse to serve it).  On the way: JSON
# null arguments are refused without harm (they used to crash serve), and
# `blkmig status` during the rate-limited migration shows a phase, the time
# so far, the rate now, what is left and an ETA.
. "$(dirname "$0")/lib.sh"
requires qemu-io python3

# null_args SOCK PID: a null where a string belongs is an InvalidParameter
# reply, and the daemon lives on.
null_args() {
	local sock=$1 pid=$2 cmd args
	while read -r cmd args; do
		$QMP "$sock" "$cmd" "$args" >"$T/null.out" 2>&1 && fail "$cmd $args was accepted"
		grep -q "must be a string, not null" "$T/null.out" || { cat "$T/null.out" >&2; fail "$cmd $args: wrong message"; }
	done <<-'EOF'
	migrate {"to":"127.0.0.1:1","mode":null}
	migrate {"to":"127.0.0.1:1","format":null}
	migrate {"to":null}
	migrate-set-parameters {"mode":null}
	EOF
	kill -0 "$pid" 2>/dev/null || fail "serve died on a null argument"
	$QMP "$sock" query-migrate | grep -q '"status": "none"' || fail "a refused migrate started something"
	pass "null arguments refused: $(cat "$T/null.out")"
}

# live_status SOCK: status while the migration runs (the rate is there once
# the engine has reported twice, so wait for it).
live_status() {
	local sock=$1
	for _ in $(seq 100); do
		"$BLKMIG" status --control "$sock" --json >"$T/live.json" || fail "status --json"
		[ "$(json_field "$T/live.json" "['rate']")" -gt 0 ] && break
		sleep 0.1
	done
	python3 - "$T/live.json" <<-'EOF' || { cat "$T/live.json" >&2; fail "status during the migration"; }
	import json, sys
	q = json.load(open(sys.argv[1]))
	checks = [q["status"] == "active", q["phase"] in ("bulk", "dirty", "mirroring"),
	          q["pass"] >= 1, q["total-time"] > 0, q["rate"] > 0, q["mbps"] > 0,
	          0 < q["remaining"] <= q["total"], q["eta"] >= 0]
	sys.exit(0 if all(checks) else "failed: %s" % checks)
	EOF
	"$BLKMIG" status --control "$sock" >"$T/live.txt" || fail "status"
	grep -q "^phase: \(bulk\|dirty pass [0-9]*\)" "$T/live.txt" &&
		grep -q "^elapsed: [0-9.:]* s\?, sent: .*, rate now: [1-9][0-9.]* [KMG]\?i\?B/s" "$T/live.txt" &&
		grep -q "^left to send: .* of 128.0 MiB, ETA: [0-9]" "$T/live.txt" ||
		{ cat "$T/live.txt" >&2; fail "status text during the migration"; }
	pass "status during the migration: $(tr '\n' ';' <"$T/live.txt")"
}

size=$((128 * MiB))
make_random "$T/src.img" $size 111

run_pair() { # label, how to interrupt
	local label=$1 how=$2
	rm -f "$T/dst.img"
	start_serve "d$label" --incoming 127.0.0.1:0 --device d0="$T/dst.img" --create --retry-for 0
	local dpid=$SERVE_PID din=$INCOMING_PORT
	start_serve "s$label" --device d0="$T/src.img" --control "$T/$label.sock"
	local spid=$SERVE_PID snbd=$NBD_PORT
	[ "$how" = cancel ] && null_args "$T/$label.sock" "$spid"
	"$BLKMIG" migrate --control "$T/$label.sock" --to "127.0.0.1:$din" --max-bandwidth 16M 2>"$T/$label.mig.err" ||
		{ cat "$T/$label.mig.err" >&2; fail "$label: migrate did not start"; }
	sleep 1
	qemu-io -f raw "nbd://127.0.0.1:$snbd/d0" -c "write -P 0x61 8M 64k" >/dev/null 2>&1 || fail "$label: write during the migration"
	[ "$how" = cancel ] && live_status "$T/$label.sock"
	case $how in
	cancel) "$BLKMIG" cancel --control "$T/$label.sock" || fail "$label: cancel" ;;
	kill) kill -KILL "$dpid" ;;
	esac
	for _ in $(seq 100); do
		"$BLKMIG" status --control "$T/$label.sock" >"$T/$label.status" 2>&1
		grep -q "status: \(cancelled\|failed\|retrying\)" "$T/$label.status" && break
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
# The destination gone: the source keeps trying to resume (--retry-for),
# and says so, while it goes on serving.
run_pair killed kill retrying
