#!/usr/bin/env bash
# Daemons across a failing link: `migrate` through a relay that cuts the
# connection half way resumes on its own (the destination offers what it
# holds); a migration that gave up continues with `migrate --resume`; a
# source daemon started again on an image it handed over refuses to serve
# it until the operator says --reclaim (no split brain).
. "$(dirname "$0")/lib.sh"
requires nbdinfo qemu-io python3 cmp
size=$((48 * MiB))

# ---- a cut half way: resumed by the daemons themselves
make_random "$T/a.src" $size 21
start_serve adst --incoming 127.0.0.1:0 --device d0="$T/a.dst" --create
ADST_NBD=$NBD_PORT ADST_PID=$SERVE_PID
start_relay a "$INCOMING_PORT" --cut-at $((40 * MiB))
start_serve asrc --device d0="$T/a.src" --control "$T/a.sock"
ASRC_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/a.sock" --to "127.0.0.1:$RELAY_PORT" --wait --json \
	>"$T/a.json" 2>"$T/a.err" || { cat "$T/a.err" "$T/asrc.err" "$T/adst.err" >&2; fail "migrate across a cut failed"; }
wait_export "$ADST_NBD" d0
cmp "$T/a.src" "$T/a.dst" || fail "cut: images differ"
conns=$(json_field "$T/a.json" "['connections']")
matched=$(json_field "$T/a.json" "['devices'][0]['matched-chunks']")
[ "$conns" = 2 ] || fail "cut: $conns connections, expected 2"
[ "$matched" -gt 0 ] || fail "cut: the resumed connection sent everything again"
grep -q "fault cut-at" "$T/a.relay.log" || fail "cut: the relay did not cut"
pass "migrate cut at 40 MiB resumed on its own: $matched chunks were not sent again, identical"

# ---- the handed-over source refuses to serve the image when started again
stop "$ASRC_PID"
[ "$RC" = 0 ] || fail "source serve exited $RC"
[ -e "$T/a.src.blkmig-handover" ] || fail "no hand-over record beside the source image"
"$BLKMIG" serve --nbd 127.0.0.1:0 --device d0="$T/a.src" >"$T/again.out" 2>"$T/again.err"
expect_error $? 1 "$T/again.err" "was handed over to 127.0.0.1:$RELAY_PORT .*refusing to serve it.*--reclaim"
pass "a restarted source refuses the image it handed over: $(head -c 120 "$T/again.err")"
start_serve reclaimed --device d0="$T/a.src" --reclaim
nbdinfo --size "nbd://127.0.0.1:$NBD_PORT/d0" >/dev/null || fail "--reclaim: not served"
grep -q "reclaimed" "$T/reclaimed.err" || fail "--reclaim: not logged"
[ ! -e "$T/a.src.blkmig-handover" ] || fail "--reclaim: the record is still there"
stop "$SERVE_PID"
pass "serve --reclaim takes it back (logged, record removed)"
stop "$ADST_PID"

# ---- a migration that gave up: migrate --resume continues it
make_random "$T/b.src" $size 22
start_serve bdst --incoming 127.0.0.1:0 --device d0="$T/b.dst" --create --retry-for 60s
BDST_NBD=$NBD_PORT
start_relay b "$INCOMING_PORT" --cut-at $((40 * MiB))
start_serve bsrc --device d0="$T/b.src" --control "$T/b.sock"
"$BLKMIG" migrate --control "$T/b.sock" --to "127.0.0.1:$RELAY_PORT" --retry-for 0 --wait \
	>"$T/b1.out" 2>"$T/b1.err"
expect_error $? 1 "$T/b1.err" "failed|reset|closed"
"$BLKMIG" migrate --control "$T/b.sock" --to "127.0.0.1:$RELAY_PORT" --resume --wait --json \
	>"$T/b2.json" 2>"$T/b2.err" || { cat "$T/b2.err" "$T/bsrc.err" "$T/bdst.err" >&2; fail "migrate --resume failed"; }
wait_export "$BDST_NBD" d0
cmp "$T/b.src" "$T/b.dst" || fail "resume: images differ"
matched=$(json_field "$T/b2.json" "['devices'][0]['matched-chunks']")
[ "$matched" -gt 0 ] || fail "resume: every chunk was sent again"
pass "a migration that gave up continued with migrate --resume: $matched chunks not sent again"

"$BLKMIG" migrate --control "$T/b.sock" --to "127.0.0.1:1" --resume 2>"$T/b3.err"
expect_error $? 1 "$T/b3.err" "already migrated"
make_random "$T/fresh.img" $MiB 23
start_serve fresh --device d0="$T/fresh.img" --control "$T/f.sock"
"$BLKMIG" migrate --control "$T/f.sock" --to "127.0.0.1:1" --resume 2>"$T/f.err"
expect_error $? 1 "$T/f.err" "no migration to resume"
pass "migrate --resume with nothing to resume is refused"

# ---- migrate --verify-only between daemons: the source keeps its devices
make_random "$T/v.src" $size 24
cp "$T/v.src" "$T/v.dst"
start_serve vdst --incoming 127.0.0.1:0 --device d0="$T/v.dst" --verify-only
VDST_PID=$SERVE_PID VDST_NBD=$NBD_PORT VDST_IN=$INCOMING_PORT
start_serve vsrc --device d0="$T/v.src" --control "$T/v.sock"
VSRC_PID=$SERVE_PID VSRC_NBD=$NBD_PORT
"$BLKMIG" migrate --control "$T/v.sock" --to "127.0.0.1:$VDST_IN" --verify-only --wait --json \
	>"$T/v.json" 2>"$T/v.err" || { cat "$T/v.err" "$T/vdst.err" >&2; fail "verify: identical daemons reported different"; }
[ "$(json_field "$T/v.json" "['verify']")" = True ] || fail "verify: the report does not say verify"
wait_export "$VDST_NBD" d0
grep -q "verify: identical to the source" "$T/vdst.err" || { cat "$T/vdst.err" >&2; fail "verify: no verdict logged"; }
! is_marked "$T/v.dst" || fail "verify: the destination marked its image"
[ ! -e "$T/v.src.blkmig-handover" ] || fail "verify: a hand-over was recorded"
qemu-io -f raw "nbd://127.0.0.1:$VSRC_NBD/d0" -c "write -P 9 0 4k" >/dev/null 2>&1 ||
	fail "verify: the source no longer takes writes"
pass "migrate --verify-only: identical, nothing handed over, the source still takes writes"
stop "$VDST_PID"
start_serve vdst2 --incoming 127.0.0.1:0 --device d0="$T/v.dst" --verify-only
"$BLKMIG" migrate --control "$T/v.sock" --to "127.0.0.1:$INCOMING_PORT" --verify-only --wait \
	>"$T/v2.out" 2>"$T/v2.err"
expect_error $? 1 "$T/v2.err" "1 chunk differs"
wait_export "$NBD_PORT" d0
grep -q "verify: 1 chunk differs" "$T/vdst2.err" || { cat "$T/vdst2.err" >&2; fail "verify: the destination did not log the difference"; }
pass "migrate --verify-only after one write on the source: 1 chunk differs, on both sides"
