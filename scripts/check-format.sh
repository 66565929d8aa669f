#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fail when a C file differs from what the committed .clang-format makes of
# it, naming each such file.  Run by `make test`; `make format` fixes.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format missing (skipped)"; exit 77; }
bad=0
while IFS= read -r f; do
	if ! clang-format "$f" | cmp -s - "$f"; then
		echo "check-format: $f is not formatted (make format)"
		bad=1
	fi
done < <(git ls-files '*.c' '*.h')
exit $bad
