#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# blkmig send -> receive against the tools a user would pick instead, on the
# same images over loopback in the same run: socat piping the raw file (the
# practical limit; shown with and without a final fdatasync, since blkmig's
# receiver makes every pass durable before it acknowledges), and
# qemu-img convert into a qemu-nbd export.  Prints medians of N runs and
# ratios to the socat pipe.  Absolute numbers on a shared 2-core machine are
# noisy; compare the ratios.
#
#   bench/run.sh [--size 1G] [--runs 3] [--sparse]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G runs=3 sparse=0
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--sparse) sparse=1; shift ;;
	*) echo "usage: bench/run.sh [--size SIZE] [--runs N] [--sparse]" >&2; exit 2 ;;
	esac
done

BLKMIG=${BLKMIG:-build/tools/blkmig}
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }
for c in socat qemu-img qemu-nbd python3; do
	command -v $c >/dev/null || { echo "bench: needs $c (scripts/install-deps.sh)" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
bytes=$(python3 -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")

if [ $sparse = 1 ]; then
	kind="sparse (1/16 data)"
	truncate -s "$bytes" "$W/src.img"
	python3 - "$W/src.img" "$bytes" <<'PY'
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    step = 16 << 20
    for off in range(0, size, step):
        f.seek(off)
        f.write(os.urandom(1 << 20))
PY
else
	kind="random"
	head -c "$bytes" /dev/urandom >"$W/src.img"
fi
cat "$W/src.img" >/dev/null # warm the page cache for every contender alike

port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
now() { date +%s.%N; }

t_socat() {
	local p; p=$(port); rm -f "$W/dst.img"
	socat -u TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr OPEN:"$W/dst.img",creat,trunc & local l=$!
	sleep 0.2
	local t0; t0=$(now)
	socat -u OPEN:"$W/src.img" TCP:127.0.0.1:$p
	wait $l
	[ "${1:-}" = sync ] && python3 -c "import os,sys; fd=os.open(sys.argv[1],os.O_RDWR); os.fdatasync(fd)" "$W/dst.img"
	python3 -c "print($(now) - $t0)"
}

t_blkmig() {
	local extra=$1; rm -f "$W/dst.img" "$W/port"
	"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$W/port" --device d0="$W/dst.img" --create >/dev/null & local l=$!
	while [ ! -s "$W/port" ]; do sleep 0.02; done
	local t0; t0=$(now)
	"$BLKMIG" send --to 127.0.0.1:"$(cat "$W/port")" --device d0="$W/src.img" $extra >/dev/null
	wait $l
	python3 -c "print($(now) - $t0)"
}

t_qemu_img() {
	local p; p=$(port); rm -f "$W/dst.img"; truncate -s "$bytes" "$W/dst.img"
	qemu-nbd -f raw -t -b 127.0.0.1 -p $p --cache=writeback "$W/dst.img" & local l=$!
	sleep 0.3
	local t0; t0=$(now)
	qemu-img convert -n -f raw "$W/src.img" -O raw "nbd://127.0.0.1:$p"
	python3 -c "print($(now) - $t0)"
	kill $l; wait $l 2>/dev/null || true
}

median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

declare -A res
run() { # label, function, args
	local label=$1 f=$2; shift 2
	local ts=()
	for _ in $(seq "$runs"); do ts+=("$($f "$@")"); done
	res[$label]=$(median "${ts[@]}")
	if [ "$label" != "socat pipe" ]; then
		cmp -s "$W/src.img" "$W/dst.img" || { echo "bench: $label produced a different image" >&2; exit 1; }
	fi
}

run "socat pipe" t_socat
run "socat pipe + fdatasync" t_socat sync
run "blkmig send/receive" t_blkmig ""
run "blkmig --zero-blocks" t_blkmig --zero-blocks
run "qemu-img convert to qemu-nbd" t_qemu_img

echo "blkmig bench: $size $kind image over 127.0.0.1, median of $runs runs"
printf '%-32s %9s %11s %10s\n' contender seconds "MiB/s" "vs socat"
base=${res["socat pipe"]}
for label in "socat pipe" "socat pipe + fdatasync" "blkmig send/receive" "blkmig --zero-blocks" "qemu-img convert to qemu-nbd"; do
	python3 -c "
import sys
t, b, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print('%-32s %9.2f %11.0f %9.2fx' % (sys.argv[4], t, n / t / 2**20, b / t))" "${res[$label]}" "$base" "$bytes" "$label"
done
