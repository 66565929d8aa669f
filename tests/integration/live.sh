#!/usr/bin/env bash
# A live migration with the built-in workload writing throughout: the
# destination must equal the source at the switch-over.  After the
# switch-over the source is fenced, so the source file *is* that state and a
# whole-image cmp is the check.  A read-only device rides along and must be
# skipped.
. "$(dirname "$0")/lib.sh"
requires cmp python3

size=$((128 * MiB))
make_random "$T/src.img" $size 41
make_random "$T/ro.img" $MiB 42
# Capped so the migration takes a few seconds with writes going on.
start_receiver live --device d0="$T/dst.img" --create
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --device ro="$T/ro.img,readonly" \
	--max-bandwidth 48M --chunk-size 64K --workload d0,bs=4K,rate=1M,seed=9 --json >"$T/live.json" 2>"$T/live.send.err" ||
	{ cat "$T/live.send.err" "$T/live.err" >&2; fail "live send failed"; }
wait_rc "$RECV_PID"; [ "$RC" = 0 ] || { cat "$T/live.err" >&2; fail "live receive failed"; }
cmp "$T/src.img" "$T/dst.img" || fail "destination differs from the source at switch-over"

writes=$(json_field "$T/live.json" "['workload']['writes']")
iters=$(json_field "$T/live.json" "['iterations']")
ndev=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['devices']))" "$T/live.json")
[ "$writes" -gt 100 ] || fail "the workload wrote only $writes times"
resent=$(json_field "$T/live.json" "['data-bytes']")
[ "$iters" -ge 2 ] || fail "only $iters passes"
[ "$resent" -gt $size ] || fail "$resent payload bytes for a $size-byte image: dirty chunks were never resent"
[ "$ndev" = 1 ] || fail "the read-only device was migrated"
# The source really changed during the migration (it is not the original).
make_random "$T/orig.img" $size 41
cmp -s "$T/orig.img" "$T/src.img" && fail "the workload did not change the source"
pass "live: $writes writes during $iters passes; destination equals source at switch-over"

# Read-only devices only: nothing to migrate.
"$BLKMIG" send --to 127.0.0.1:1 --device ro="$T/ro.img,readonly" 2>"$T/ro.err"
expect_error $? 1 "$T/ro.err" "read-only"
pass "only read-only devices: refused"
