#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build blkmig twice (plain with -Werror, and with ASan+UBSan), run the whole
# suite (cmocka unit tests, integration tests with real peers) in both, and
# finish with one line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0 skipped=0

run_suite() { # name builddir meson-args...
	local name=$1 dir=$2
	shift 2
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" -Dtests=enabled -Dwerror=true "$@" >"$dir.setup.log" 2>&1 ||
			{ cat "$dir.setup.log"; echo "run-tests: meson setup failed ($name)"; failed=$((failed + 1)); return; }
	fi
	if ! ninja -C "$dir" >"$dir.ninja.log" 2>&1; then
		cat "$dir.ninja.log"
		echo "run-tests: build failed ($name)"
		failed=$((failed + 1))
		return
	fi
	echo "== $name =="
	meson test -C "$dir" --num-processes 2 --print-errorlogs $MESON_TEST_ARGS
	local counts
	counts=$(python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
print(p, f, s)
PY
)
	read -r p f s <<<"$counts"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

MESON_TEST_ARGS=${MESON_TEST_ARGS:-}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1

echo "== format =="
scripts/check-format.sh
case $? in
0) passed=$((passed + 1)) ;;
77) skipped=$((skipped + 1)) ;;
*) failed=$((failed + 1)) ;;
esac

run_suite "build (-Werror)" build
run_suite "build (ASan+UBSan)" build-asan -Db_sanitize=address,undefined -Db_lundef=false

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
