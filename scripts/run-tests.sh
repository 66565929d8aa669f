#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build blkmig three times, each with -Werror:
#  - plain (the optimised build users run), running the cmocka unit tests;
#  - with ASan+UBSan, running the whole suite (unit tests, and integration
#    tests that drive the real daemon with real peers);
#  - with ThreadSanitizer, running the 'tsan' suite (every unit test and the
#    threaded live migrations).
# The integration tests run once under ASan+UBSan rather than also in the
# plain build: the code is the same and the sanitizers check more; running
# them twice cost about ten minutes of CI.  Finish with one line:
# "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0 skipped=0

run_suite() { # name builddir meson-test-args meson-setup-args...
	local name=$1 dir=$2 test_args=$3
	shift 3
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
	# shellcheck disable=SC2086 # word splitting wanted
	meson test -C "$dir" --num-processes 2 --print-errorlogs $test_args $MESON_TEST_ARGS
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

run_suite "build (-Werror)" build "--suite unit"
run_suite "build (ASan+UBSan)" build-asan "" -Db_sanitize=address,undefined -Db_lundef=false

# ThreadSanitizer: a race ends the process at once with status 66, so the
# test fails.  Reports go to files, because the integration tests' daemons
# write their stderr into scratch directories that are removed; they are
# printed here, and count as one failure if every test passed (a daemon's
# race need not fail its test).
# QEMU and qemu-io are not instrumented; only blkmig's own threads are
# checked.
tsan_reports=$PWD/build-tsan/tsan-reports
mkdir -p "$tsan_reports"
rm -f "$tsan_reports"/report*
TSAN_OPTIONS="halt_on_error=1:exitcode=66:second_deadlock_stack=1:log_path=$tsan_reports/report"
export TSAN_OPTIONS
failed_before=$failed
run_suite "build (TSan)" build-tsan "--suite tsan" -Db_sanitize=thread
if compgen -G "$tsan_reports/report*" >/dev/null; then
	cat "$tsan_reports"/report*
	echo "run-tests: ThreadSanitizer reported $(cat "$tsan_reports"/report* | grep -c '^SUMMARY:') problem(s)"
	[ "$failed" -eq "$failed_before" ] && failed=$((failed + 1))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
