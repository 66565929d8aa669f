#!/usr/bin/env bash
# --mirror-share: in active mode the mirrored writes may take this share of
# --max-bandwidth, and the passes keep the rest.  At the largest share (90)
# and a writer that asks for four times the link, the copy must still end
# (its tenth of the link carries the bulk pass), the report must say which
# share ran, and the destination must equal the source at the switch-over.
. "$(dirname "$0")/lib.sh"
requires python3 cmp

size=$((4 * MiB))
make_random "$T/src.img" $size 311
start_serve dst --incoming 127.0.0.1:0 --device d0="$T/dst.img" --create
DST_PID=$SERVE_PID DST_PORT=$INCOMING_PORT
start_serve src --device d0="$T/src.img" --control "$T/src.sock" \
	--workload "d0,bs=4K,rate=32M,seed=11"
SRC_PID=$SERVE_PID
# The whole image is hot: each 64 KiB chunk is written every 8 ms or so,
# and at a tenth of 8 MB/s its copy takes 80 ms.  A write to a chunk being
# copied must wait for the chunk's record and follow it (src-mirror.c);
# were it marked dirty instead, every chunk copied would be dirty again,
# and the migration would never end (it ran for half an hour so).  The
# copy takes about 5 s; 'timeout' only keeps a regression from hanging.
rc=0
timeout 120 "$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_PORT" --after refuse \
	--max-bandwidth 8M --mode active --mirror-share 90 --wait --json >"$T/m.json" 2>"$T/m.err" ||
	rc=$?
[ "$rc" != 124 ] || fail "no switch-over in 120 s: $("$BLKMIG" status --control "$T/src.sock" 2>&1 | tr '\n' ' ')"
[ "$rc" = 0 ] || { cat "$T/m.err" "$T/src.err" "$T/dst.err" >&2; fail "migrate --mirror-share 90 failed"; }
[ "$(json_field "$T/m.json" "['status']")" = completed ] || fail "not completed"
[ "$(json_field "$T/m.json" "['mirror-share']")" = 90 ] ||
	fail "the report says mirror-share $(json_field "$T/m.json" "['mirror-share']"), not 90"
mirrored=$(json_field "$T/m.json" "['mirrored-writes']")
[ "$mirrored" -gt 0 ] || fail "no write was mirrored"
stop "$SRC_PID"
stop "$DST_PID"
cmp "$T/src.img" "$T/dst.img" || fail "the destination differs from the source at the switch-over"
pass "mirror-share 90: completed under a writer at 4x the link with $mirrored writes mirrored; images equal"

# The share is for the native format; the daemon refuses it with QEMU's
# stream before anything starts, and keeps serving.
make_random "$T/q.img" $MiB 312
start_serve q --device d0="$T/q.img" --control "$T/q.sock"
Q_PID=$SERVE_PID
rc=0
"$BLKMIG" migrate --control "$T/q.sock" --to 127.0.0.1:1 --format qemu --mirror-share 60 \
	>"$T/q.out" 2>"$T/q.err" || rc=$?
[ "$rc" -ne 0 ] || fail "a QEMU-format migrate with --mirror-share was accepted"
grep -q "mirror-share needs the native format" "$T/q.err" ||
	{ cat "$T/q.err" >&2; fail "no clear reason for refusing --mirror-share with --format qemu"; }
[ "$(grep -c . "$T/q.err")" = 1 ] || { cat "$T/q.err" >&2; fail "more than one line of error"; }
"$BLKMIG" status --control "$T/q.sock" >"$T/q.status" 2>&1 ||
	fail "the daemon stopped answering after a refused migrate"
stop "$Q_PID"
pass "mirror-share with --format qemu: refused in one line ($(cat "$T/q.err")); the daemon serves on"
