#!/usr/bin/env bash
# `blkmig demo` on a smaller image: it must verify and exit 0.
. "$(dirname "$0")/lib.sh"
requires python3
"$BLKMIG" demo --size 96M --dir "$T" --json >"$T/demo.json" 2>"$T/demo.err" ||
	{ cat "$T/demo.err" >&2; fail "demo failed"; }
[ "$(json_field "$T/demo.json" "['verified']")" = True ] || fail "demo did not verify"
[ "$(ls "$T" | grep -c blkmig-demo)" = 0 ] || fail "demo left its directory behind"
pass "demo verified"
