#!/usr/bin/env bash
# Strings from the wire never reach the terminal raw (DESIGN.md rule 8): a
# source whose device name holds a newline and terminal escapes, in HELLO
# or in a record, is refused with one escaped line -- no control byte on
# stdout or stderr, and no forged "migration complete" line.
. "$(dirname "$0")/lib.sh"
: "${BLKMIG_CRAFT:?}"
requires python3

size=$((2 * MiB))
evil=$'d0\n\033[1A\033[2Kreceived 2.0 MiB in 0.01 s: migration complete and verified\033[0m'

# No byte below 0x20 but the final newline, no DEL, no high byte.
clean() {
	python3 - "$1" <<'PY' || fail "$1 holds raw control bytes: $(od -c "$1" | head -5)"
import sys
d = open(sys.argv[1], "rb").read()
assert all(0x20 <= b < 0x7f or b == 0x0a for b in d), d
assert d.count(b"\n") <= 1, d
PY
}

# HELLO names a device with a newline and escapes.
make_random "$T/d.img" $size 3
start_receiver hello --device d0="$T/d.img" --timeout 10 --max-refused 1 --retry-for 0
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --name "$evil" --size $size --fault ok \
	>"$T/hello.craft" 2>&1 || true
wait_rc "$RECV_PID"
expect_error "$RC" 1 "$T/hello.err" "hello: device 0 name 'd0\\\\x0a\\\\x1b\[1A\\\\x1b\[2Kreceived.*' has control characters"
clean "$T/hello.err"
clean "$T/hello.out"
[ -s "$T/hello.out" ] && fail "hello: something on stdout: $(cat "$T/hello.out")"
grep -q "^received" "$T/hello.err" && fail "hello: a forged line"
is_marked "$T/d.img" && fail "hello: image marked although refused at the handshake"
pass "a control character in a HELLO device name: $(cat "$T/hello.err")"

# The --json report escapes the message too (json-c escapes control bytes).
start_receiver hjson --device d0="$T/d.img" --timeout 10 --max-refused 1 --retry-for 0 --json
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --name "$evil" --size $size --fault ok \
	>"$T/hjson.craft" 2>&1 || true
wait_rc "$RECV_PID"
expect_error "$RC" 1 "$T/hjson.err" "has control characters"
clean "$T/hjson.out"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert 'control characters' in d['error-desc'], d" "$T/hjson.out" ||
	fail "json: $(cat "$T/hjson.out")"
pass "the --json report of that refusal is clean JSON"

# A record (after a good HELLO) names a device with a newline and an escape.
start_receiver rec --device d0="$T/d.img" --timeout 10 --max-refused 1 --retry-for 0
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault record-name \
	>"$T/rec.craft" 2>&1 || { cat "$T/rec.craft" >&2; fail "record-name: craft"; }
wait_rc "$RECV_PID"
expect_error "$RC" 1 "$T/rec.err" "record: device name 'd0\\\\x0a\\\\x1b\[2K' has control characters"
clean "$T/rec.err"
is_marked "$T/d.img" || fail "record-name: image not marked incomplete"
pass "a control character in a record's device name: $(cat "$T/rec.err")"
