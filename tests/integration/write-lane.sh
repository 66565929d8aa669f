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

# lane_run NAME DELAYS: DELAYS as delayrelay.py takes them (main,lane).
lane_run() {
	local name=$1 delays=$2
	make_random "$T/$name.src" $size 301
	make_random "$T/$name.src1" $((4 * MiB)) 302
	start_serve "$name-dst" --incoming 127.0.0.1:0 --device d0="$T/$name.dst" \
		--device d1="$T/$name.dst1" --create
	DST_PID=$SERVE_PID DST_NBD=$NBD_PORT
	python3 "$RELAY_PY" "$T/$name.relay" "127.0.0.1:$INCOMING_PORT" "$delays" &
	RELAY=$!
	for _ in $(seq 1 100); do [ -s "$T/$name.relay" ] && break; sleep 0.05; done
	[ -s "$T/$name.relay" ] || fail "$name: the relay did not start"
	start_serve "$name-src" --device d0="$T/$name.src" --device d1="$T/$name.src1" \
		--control "$T/$name.sock" --workload "d0,bs=4K,rate=16M,seed=9"
	SRC_PID=$SERVE_PID SRC_NBD=$NBD_PORT
	rm -f "$T/stop"
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
	"$BLKMIG" migrate --control "$T/$name.sock" --to "127.0.0.1:$(cat "$T/$name.relay")" \
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
	[ "$(json_field "$T/$name.json" "['connections']")" = 1 ] ||
		{ cat "$T/$name-dst.err" >&2; fail "$name: needed $(json_field "$T/$name.json" "['connections']") connections"; }
	[ "$(json_field "$T/$name.json" "['switchover-attempts']")" = 1 ] ||
		fail "$name: needed $(json_field "$T/$name.json" "['switchover-attempts']") switch-over attempts"
	wait_export "$DST_NBD" d0
	stop "$SRC_PID"
	stop "$DST_PID"
	kill "$RELAY" 2>/dev/null
	wait "$RELAY" 2>/dev/null
	cmp "$T/$name.src" "$T/$name.dst" || fail "$name: d0 differs from the source at the switch-over"
	cmp "$T/$name.src1" "$T/$name.dst1" || fail "$name: d1 differs from the source at the switch-over"
	pass "$name: completed with $mirrored writes mirrored on the write lane; both devices equal"
}

lane_run late-records 40,0
lane_run late-writes 0,40
