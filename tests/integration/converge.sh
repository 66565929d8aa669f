#!/usr/bin/env bash
# Convergence under writes faster than the link.  The source daemon's
# built-in writer dirties 4 KiB random blocks at 16 MB/s while the migration
# is capped at 8 MB/s:
#  - active and auto complete, with the destination equal to the source at
#    the switch-over (the source is fenced from then on, so its image stays
#    as it was) and the pause within --max-downtime's reach;
#  - dirty mode says it is not converging and keeps the writers running
#    (no pause at all) until it is cancelled;
#  - in active mode, writes from a real NBD client (qemu-io, to a second
#    device the built-in writer leaves alone) made during the migration are
#    all on the destination, whether it writes through its page cache or
#    with --cache none (writer threads, which a mirrored write passes
#    unless they hold one of its chunks).
. "$(dirname "$0")/lib.sh"
requires python3 cmp qemu-io

size=$((16 * MiB))
load="d0,bs=4K,rate=16M,seed=7"

# run_mode NAME [DESTINATION-OPTION...]: a fresh source and destination,
# with d0 (the built-in writer's) and d1 (for a real client).
run_mode() {
	local name=$1
	shift
	make_random "$T/$name.src" $size 201
	make_random "$T/$name.src1" $((4 * MiB)) 202
	start_serve "$name-dst" --incoming 127.0.0.1:0 --device d0="$T/$name.dst" \
		--device d1="$T/$name.dst1" --create "$@"
	DST_IN=$INCOMING_PORT DST_PID=$SERVE_PID DST_NBD=$NBD_PORT
	start_serve "$name-src" --device d0="$T/$name.src" --device d1="$T/$name.src1" \
		--control "$T/$name.sock" --workload "$load"
	SRC_PID=$SERVE_PID SRC_NBD=$NBD_PORT
	sleep 0.3
}

check_done() {
	local name=$1
	[ "$(json_field "$T/$name.json" "['status']")" = completed ] || fail "$name: not completed"
	[ "$(json_field "$T/$name.json" "['mirroring']")" = True ] || fail "$name: writes were not mirrored"
	[ "$(json_field "$T/$name.json" "['mirrored-writes']")" -gt 0 ] || fail "$name: no write was mirrored"
	# The source refuses writes from the switch-over on (--after refuse:
	# forwarded writes would change the destination), so its image is
	# what the destination must hold.
	wait_export "$DST_NBD" d0
	stop "$SRC_PID"
	stop "$DST_PID"
	cmp "$T/$name.src" "$T/$name.dst" || fail "$name: destination differs from the source at the switch-over"
	cmp "$T/$name.src1" "$T/$name.dst1" || fail "$name: d1 differs"
}

# ---- active --------------------------------------------------------------------
# active_run NAME [DESTINATION-OPTION...]
active_run() {
	local name=$1
	run_mode "$@"
	rm -f "$T/stop"
	# A real client writes known patterns too; each acknowledged one must reach
	# the destination.
	(
		i=0
		while [ ! -e "$T/stop" ]; do
			off=$(( (i * 7919 % 1000) * 4096 )) pat=$(( i % 250 + 1 ))
			if qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d1" -c "write -P $pat $off 4k" >/dev/null 2>&1; then
				echo "$off $pat ok"
			fi
			i=$((i + 1))
		done >"$T/client.log"
	) &
	CLIENT=$!
	"$BLKMIG" migrate --control "$T/$name.sock" --to "127.0.0.1:$DST_IN" --after refuse --max-bandwidth 8M \
		--mode active --wait --json >"$T/$name.json" 2>"$T/$name.err" ||
		{ cat "$T/$name.err" "$T/$name-src.err" "$T/$name-dst.err" >&2; fail "$name: migrate failed"; }
	touch "$T/stop"
	wait $CLIENT
	check_done "$name"
	[ "$(json_field "$T/$name.json" "['mode']")" = active ] || fail "$name: mode not reported"
	# The last write to each offset wins; the destination has it.
	python3 - "$T/$name.dst1" "$T/client.log" <<'PY' || fail "$name: an acknowledged client write is missing on the destination"
import sys
d = open(sys.argv[1], "rb").read()
last = {}
for line in open(sys.argv[2]):
    off, pat, _ = line.split()
    last[int(off)] = int(pat)
assert last, "no client write was acknowledged"
for off, pat in last.items():
    assert d[off:off + 4096] == bytes([pat]) * 4096, (off, pat, d[off], d[off + 4095], len(last))
print(len(last), "client offsets checked")
PY
	pass "$name: completed under 16 MB/s of writes over an 8 MB/s link, $(json_field "$T/$name.json" "['mirrored-writes']") writes mirrored, downtime $(json_field "$T/$name.json" "['downtime']") ms; client writes all on the destination"
}
active_run active
active_run active-direct --cache none

# ---- auto ----------------------------------------------------------------------
run_mode auto
# Listen to the MIGRATION events while it runs.
python3 - "$T/auto.sock" >"$T/auto.events" <<'PY' &
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("r")
for line in f:
    m = json.loads(line)
    if m.get("event") == "MIGRATION":
        print(json.dumps(m["data"]), flush=True)
        if m["data"].get("status") in ("completed", "failed", "cancelled"):
            break
PY
EVENTS=$!
sleep 0.2
"$BLKMIG" migrate --control "$T/auto.sock" --to "127.0.0.1:$DST_IN" --after refuse --max-bandwidth 8M \
	--wait --json >"$T/auto.json" 2>"$T/auto.err" ||
	{ cat "$T/auto.err" "$T/auto-src.err" "$T/auto-dst.err" >&2; fail "auto: migrate failed"; }
[ "$(json_field "$T/auto.json" "['mode']")" = auto ] || fail "auto: the default mode is not auto"
reason=$(json_field "$T/auto.json" "['mirroring-reason']")
timeout 10 tail --pid=$EVENTS -f /dev/null
python3 - "$T/auto.events" <<'PY' || { cat "$T/auto.events" >&2; fail "auto: no MIGRATION event said that mirroring began, and why"; }
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert any(e.get("mirroring") and e.get("mirroring-reason") and e.get("status") == "active" for e in ev), ev
assert ev[-1]["status"] == "completed", ev[-1]
PY
check_done auto
pass "auto: switched to mirroring by itself ($reason; said so in a MIGRATION event) and completed, downtime $(json_field "$T/auto.json" "['downtime']") ms"

# ---- dirty ---------------------------------------------------------------------
run_mode dirty
"$BLKMIG" migrate --control "$T/dirty.sock" --to "127.0.0.1:$DST_IN" --after refuse --max-bandwidth 8M \
	--mode dirty >/dev/null 2>"$T/dirty.err" || fail "dirty: migrate did not start"
converging=True
for _ in $(seq 1 120); do
	sleep 0.25
	"$BLKMIG" status --control "$T/dirty.sock" --json >"$T/dirty.json" || fail "dirty: status"
	converging=$(json_field "$T/dirty.json" "['converging']")
	[ "$converging" = False ] && break
done
[ "$converging" = False ] || fail "dirty: never reported that it is not converging"
[ "$(json_field "$T/dirty.json" "['status']")" = active ] || fail "dirty: not running any more"
[ "$(json_field "$T/dirty.json" "['max-pause']")" = 0 ] || fail "dirty: the writers were paused"
[ "$(json_field "$T/dirty.json" "['mirroring']")" = False ] || fail "dirty: writes were mirrored"
"$BLKMIG" cancel --control "$T/dirty.sock" || fail "dirty: cancel"
for _ in $(seq 1 200); do
	"$BLKMIG" status --control "$T/dirty.sock" --json >"$T/dirty2.json"
	[ "$(json_field "$T/dirty2.json" "['status']")" = cancelled ] && break
	sleep 0.05
done
[ "$(json_field "$T/dirty2.json" "['status']")" = cancelled ] || fail "dirty: not cancelled"
[ "$(json_field "$T/dirty2.json" "['switchover-attempts']")" = 0 ] || fail "dirty: tried to switch over"
# The source still takes writes.
"$BLKMIG" status --control "$T/dirty.sock" >/dev/null || fail "dirty: source daemon gone"
qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" -c "write -P 9 0 4k" >/dev/null || fail "dirty: source refuses writes after the cancel"
pass "dirty: reported not converging after $(json_field "$T/dirty.json" "['iterations']") passes without pausing the writers; cancelled, the source still serves"

# ---- dirty, then active on request ----------------------------------------------
# migrate-set-parameters turns a running dirty migration that is not getting
# anywhere into an active one, which then completes; asking for dirty again
# once writes are mirrored is refused.
run_mode switch
"$BLKMIG" migrate --control "$T/switch.sock" --to "127.0.0.1:$DST_IN" --after refuse --max-bandwidth 8M \
	--mode dirty >/dev/null 2>"$T/switch.err" || fail "switch: migrate did not start"
for _ in $(seq 1 120); do
	sleep 0.25
	$QMP "$T/switch.sock" query-migrate >"$T/switch.q" || fail "switch: query-migrate"
	[ "$(json_field "$T/switch.q" "['converging']")" = False ] && break
done
[ "$(json_field "$T/switch.q" "['converging']")" = False ] || fail "switch: dirty mode did not report that it is not converging"
$QMP "$T/switch.sock" migrate-set-parameters '{"mode": "active"}' >/dev/null || fail "switch: mode active refused"
for _ in $(seq 1 120); do
	sleep 0.25
	$QMP "$T/switch.sock" query-migrate >"$T/switch.q" || fail "switch: query-migrate"
	[ "$(json_field "$T/switch.q" "['mirroring']")" = True ] && break
done
[ "$(json_field "$T/switch.q" "['mirroring']")" = True ] || fail "switch: writes never mirrored after mode active"
[ "$(json_field "$T/switch.q" "['mode']")" = active ] || fail "switch: mode not reported as active"
$QMP "$T/switch.sock" migrate-set-parameters '{"mode": "dirty"}' >"$T/switch.back" 2>&1 &&
	fail "switch: going back to dirty while mirroring was accepted"
grep -q "mirrored already" "$T/switch.back" || { cat "$T/switch.back" >&2; fail "switch: refusal does not say why"; }
timeout 120 $QMP "$T/switch.sock" wait-migration 110 >"$T/switch.json" || fail "switch: did not complete after mode active"
check_done switch
pass "dirty -> active on request (migrate-set-parameters) completed; dirty again while mirroring is refused"
