#!/usr/bin/env bash
# --shared-base: only allocated ranges are sent; the destination keeps its
# own (base) contents everywhere else.
. "$(dirname "$0")/lib.sh"
requires cmp python3

size=$((64 * MiB))
make_random "$T/base.img" $size 31           # what both hosts share
cp "$T/base.img" "$T/dst.img"
# The source's own data: three extents; the rest is unallocated.
make_sparse "$T/src.img" $size "$((2 * MiB)):$MiB,$((10 * MiB + 4096)):8192,$((40 * MiB)):$((3 * MiB))" 32

start_receiver sb --device d0="$T/dst.img" --shared-base
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --shared-base --json >"$T/sb.json" 2>"$T/sb.err2" ||
	{ cat "$T/sb.err2" >&2; fail "send --shared-base failed"; }
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || { cat "$T/sb.err" >&2; fail "receive failed"; }

python3 - "$T/src.img" "$T/base.img" "$T/dst.img" <<'PY' || fail "shared-base contents wrong"
import sys
src, base, dst = (open(p, "rb").read() for p in sys.argv[1:])
MiB = 1 << 20
sent = set()
for off, ln in ((2 * MiB, MiB), (10 * MiB + 4096, 8192), (40 * MiB, 3 * MiB)):
    sent.update(range(off // MiB, (off + ln - 1) // MiB + 1))
for c in range(len(src) // MiB):
    s = slice(c * MiB, (c + 1) * MiB)
    want = src[s] if c in sent else base[s]
    if dst[s] != want:
        sys.exit(f"chunk {c}: expected the {'source' if c in sent else 'base'} contents")
PY
wire=$(json_field "$T/sb.json" "['transferred']")
skipped=$(json_field "$T/sb.json" "['devices'][0]['skipped-chunks']")
[ "$wire" -lt $((8 * MiB)) ] || fail "--shared-base sent $wire bytes for 5 allocated chunks"
[ "$skipped" -eq 59 ] || fail "--shared-base skipped $skipped chunks, expected 59"
pass "--shared-base: $wire bytes on the wire, $skipped chunks left to the base"
