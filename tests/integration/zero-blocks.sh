#!/usr/bin/env bash
# --zero-blocks: holes and zero chunks travel as flags, and the destination
# stays sparse; without it they travel as data, and still land as holes.
. "$(dirname "$0")/lib.sh"
# Each send hands its image over; the next send of it takes it back (--reclaim).
requires cmp du python3

size=$((256 * MiB))
make_sparse "$T/src.img" $size "0:$((8 * MiB)),$((128 * MiB)):$((8 * MiB))" 5
# Zeros that are written (allocated) rather than holes.
dd if=/dev/zero of="$T/src.img" bs=1M seek=64 count=16 conv=notrunc status=none

start_receiver zb --device d0="$T/zb.dst" --create
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --zero-blocks --json >"$T/zb.json" 2>"$T/zb.send.err" ||
	{ cat "$T/zb.send.err" >&2; fail "send --zero-blocks failed"; }
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || { cat "$T/zb.err" >&2; fail "receive failed"; }
cmp "$T/src.img" "$T/zb.dst" || fail "--zero-blocks: images differ"
wire=$(json_field "$T/zb.json" "['transferred']")
[ "$wire" -lt $((24 * MiB)) ] || fail "--zero-blocks sent $wire bytes for 16 MiB of data"
zeros=$(json_field "$T/zb.json" "['devices'][0]['zero-chunks']")
[ "$zeros" -ge 240 ] || fail "--zero-blocks: only $zeros zero chunks"
used=$(du -k "$T/zb.dst" | cut -f1)
[ "$used" -lt $((32 * 1024)) ] || fail "--zero-blocks: destination uses ${used} KiB (not sparse)"
pass "--zero-blocks: $wire bytes on the wire, destination uses ${used} KiB"

# Without the flag the zeros are sent in full, and the receiver still
# punches holes for them, over a destination full of old data.
make_random "$T/full.dst" $size 77
start_receiver nz --device d0="$T/full.dst"
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --json >"$T/nz.json" 2>"$T/nz.send.err" ||
	{ cat "$T/nz.send.err" >&2; fail "send without --zero-blocks failed"; }
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || { cat "$T/nz.err" >&2; fail "receive failed"; }
cmp "$T/src.img" "$T/full.dst" || fail "without --zero-blocks: images differ"
wire=$(json_field "$T/nz.json" "['transferred']")
[ "$wire" -ge $size ] || fail "without --zero-blocks only $wire bytes were sent"
used=$(du -k "$T/full.dst" | cut -f1)
[ "$used" -lt $((32 * 1024)) ] || fail "zero chunks over old data were not punched (${used} KiB used)"
pass "without --zero-blocks: $wire bytes on the wire, destination uses ${used} KiB"
