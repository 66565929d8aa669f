#!/usr/bin/env bash
# A migration that survives its connection: cut by a relay and resumed,
# the receiver killed (-9) and started again, a delta sync into an older
# copy, an online verify, a destination file replaced mid-migration.  Each
# ends with cmp (or the verify's verdict), and the report's figures say
# what was sent again.
. "$(dirname "$0")/lib.sh"
requires cmp python3
size=$((48 * MiB))
tried=0


# ---- a cut inside the bulk pass, at seeded points: resumed, nothing lost
for point in 5000 $((20 * MiB + 77)) $((35 * MiB + 4099)); do
	make_random "$T/cut.src" $size 3
	rm -f "$T/cut.dst"
	start_receiver cut-rx --device d0="$T/cut.dst" --create
	start_relay cut "$RECV_PORT" --cut-at "$point"
	# --reclaim: the previous point handed cut.src (rewritten since) over.
	"$BLKMIG" send --reclaim --to "127.0.0.1:$RELAY_PORT" --device d0="$T/cut.src" --chunk-size 256K \
		--workload d0,bs=4K,rate=1M --json >"$T/cut.json" 2>"$T/cut.err" || {
		cat "$T/cut.err" >&2
		fail "cut at $point: send failed"
	}
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/cut-rx.err" "$T/cut.err" >&2; fail "cut at $point: receive exited $RC"; }
	kill "$RELAY_PID" 2>/dev/null
	cmp "$T/cut.src" "$T/cut.dst" || fail "cut at $point: images differ"
	! is_marked "$T/cut.dst" || fail "cut at $point: still marked incomplete"
	[ ! -e "$T/cut.dst.blkmig-state" ] || fail "cut at $point: the record was left behind"
	grep -q "fault cut-at" "$T/cut.relay.log" || fail "cut at $point: the relay did not cut"
	conns=$(json_field "$T/cut.json" "['connections']")
	[ "$conns" = 2 ] || fail "cut at $point: $conns connections, expected 2"
	grep -q "connection 1 failed: .*resuming" "$T/cut.err" || { cat "$T/cut.err" >&2; fail "cut at $point: no resume logged"; }
	matched=$(json_field "$T/cut.json" "['devices'][0]['matched-chunks']")
	sent=$(json_field "$T/cut.json" "['transferred']")
	# Past the first checkpoint (32 MiB) the receiver held chunks durably.
	if [ "$point" -gt $((33 * MiB)) ] && [ "$matched" -eq 0 ]; then
		fail "cut at $point: nothing was resumed (every chunk sent again)"
	fi
	tried=$((tried + 1))
	pass "cut at byte $point: resumed and identical ($matched chunks held, $sent bytes on the wire)"
done

# ---- the receiver killed at half way and started again: it remembers
make_random "$T/k.src" $size 4
rm -f "$T/k.dst"
start_receiver k1 --device d0="$T/k.dst" --create
port=$RECV_PORT
"$BLKMIG" send --to "127.0.0.1:$port" --device d0="$T/k.src" --max-bandwidth 16M --json \
	>"$T/k.json" 2>"$T/k.err" &
spid=$!
BG_PIDS+=("$spid")
for _ in $(seq 1 400); do
	[ -e "$T/k.dst.blkmig-state" ] && [ "$(stat -c %s "$T/k.dst")" -gt $((24 * MiB)) ] && break
	sleep 0.05
done
[ -e "$T/k.dst.blkmig-state" ] || fail "kill: the receiver kept no record"
kill -9 "$RECV_PID"
wait "$RECV_PID" 2>/dev/null || true
is_marked "$T/k.dst" || fail "kill: the killed receiver's image is not marked incomplete"
"$BLKMIG" receive --listen "127.0.0.1:$port" --device d0="$T/k.dst" >"$T/k2.out" 2>"$T/k2.err" &
rpid=$!
BG_PIDS+=("$rpid")
wait_rc "$spid"
[ "$RC" = 0 ] || { cat "$T/k.err" >&2; fail "kill: send exited $RC"; }
wait_rc "$rpid"
[ "$RC" = 0 ] || { cat "$T/k2.err" >&2; fail "kill: the restarted receiver exited $RC"; }
cmp "$T/k.src" "$T/k.dst" || fail "kill: images differ"
! is_marked "$T/k.dst" || fail "kill: still marked incomplete"
matched=$(json_field "$T/k.json" "['devices'][0]['matched-chunks']")
[ "$matched" -gt 0 ] || fail "kill: the restarted receiver offered nothing it held"
tried=$((tried + 1))
pass "receiver killed (-9) and restarted: resumed with $matched chunks it held, identical"

# ---- another migration's record is never used
make_random "$T/o.src" $size 5
cp "$T/k.src" "$T/o.dst"
python3 - "$T/o.dst" <<'PY'
import sys
# A forged record beside the image: a valid header would name another id;
# garbage must be discarded all the same.
open(sys.argv[1] + ".blkmig-state", "wb").write(b"BLKMIGST" + bytes(64))
PY
start_receiver o-rx --device d0="$T/o.dst"
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/o.src" --json >"$T/o.json" 2>"$T/o.err" ||
	{ cat "$T/o.err" >&2; fail "other record: send failed"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || fail "other record: receive exited $RC"
cmp "$T/o.src" "$T/o.dst" || fail "other record: images differ"
[ "$(json_field "$T/o.json" "['devices'][0]['matched-chunks']")" = 0 ] ||
	fail "other record: chunks were taken from a record that was not this migration's"
pass "a corrupt record beside the image was discarded; every chunk sent"

# ---- delta: 5% of the chunks changed, only those travel
make_random "$T/d.src" $size 6
cp "$T/d.src" "$T/d.dst"
python3 - "$T/d.src" <<'PY'
import random, sys
r = random.Random(9)
with open(sys.argv[1], "r+b") as f:
    for c in r.sample(range(48), 3):        # 3 of 48 1-MiB chunks: 6%
        f.seek(c * 1048576 + r.randrange(1048576 - 16))
        f.write(r.randbytes(16))
PY
start_receiver d-rx --device d0="$T/d.dst" --delta
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/d.src" --delta --json \
	>"$T/d.json" 2>"$T/d.err" || { cat "$T/d.err" >&2; fail "delta: send failed"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || fail "delta: receive exited $RC"
cmp "$T/d.src" "$T/d.dst" || fail "delta: images differ"
data=$(json_field "$T/d.json" "['devices'][0]['data-chunks']")
[ "$data" = 3 ] || fail "delta: $data chunks sent, expected the 3 that differ"
pass "delta: 3 of 48 chunks differed and only they were sent"

start_receiver d2-rx --device d0="$T/d.dst" --max-refused 1 --retry-for 0
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/d.src" --delta >/dev/null 2>"$T/d2.err"
expect_error $? 1 "$T/d2.err" "delta sync.*accept it with --delta"
wait_rc "$RECV_PID"
pass "delta refused by a receiver without --delta"

# ---- verify: identical, then one differing range
start_receiver v-rx --device d0="$T/d.dst" --verify-only
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/d.src" --verify-only \
	>"$T/v.out" 2>"$T/v.err" || { cat "$T/v.err" >&2; fail "verify: identical images reported different"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || fail "verify: receive exited $RC on identical images"
grep -q "^identical" "$T/v.out" || fail "verify: no verdict printed"
printf 'X' | dd of="$T/d.dst" bs=1 seek=$((17 * MiB + 5)) conv=notrunc 2>/dev/null
before=$(sha256sum <"$T/d.dst")
start_receiver v2-rx --device d0="$T/d.dst" --verify-only
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/d.src" --verify-only \
	>"$T/v2.out" 2>"$T/v2.err"
expect_error $? 1 "$T/v2.err" "1 chunk differs"
grep -q "^differs: d0 offset $((17 * MiB)) length $MiB\$" "$T/v2.out" ||
	{ cat "$T/v2.out" >&2; fail "verify: the differing range is not reported"; }
wait_rc "$RECV_PID"
[ "$RC" = 1 ] || fail "verify: receive exited $RC on differing images, expected 1"
[ "$(sha256sum <"$T/d.dst")" = "$before" ] || fail "verify: the receiver wrote to its image"
! is_marked "$T/d.dst" || fail "verify: the receiver marked its image"
pass "verify: identical images exit 0; one changed byte is reported as its chunk, exit 1, nothing written"

# ---- a destination file replaced during the migration is not handed over
make_random "$T/r.src" $size 7
rm -f "$T/r.dst"
start_receiver r-rx --device d0="$T/r.dst" --create --retry-for 0
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$T/r.src" --max-bandwidth 24M \
	--retry-for 0 >"$T/r.out" 2>"$T/r.err" &
spid=$!
BG_PIDS+=("$spid")
for _ in $(seq 1 400); do [ -e "$T/r.dst" ] && break; sleep 0.02; done
sleep 0.5
cp "$T/r.src" "$T/r.new" && mv "$T/r.new" "$T/r.dst"
wait_rc "$spid"
expect_error "$RC" 1 "$T/r.err" "replaced by another file"
wait_rc "$RECV_PID"
expect_error "$RC" 1 "$T/r-rx.err" "replaced by another file"
pass "a destination file replaced mid-migration: refused before the acknowledgement, both sides fail"

echo "fault points tried and survived: $tried"
