#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The destination's disk: send -> receive of a dense random image over
# loopback, into a fresh image (--create) and into an existing one, with
# receive --cache none and writeback, against what the disk does alone:
#
#   dd if=SRC of=DST bs=1M oflag=direct conv=fdatasync            (fresh)
#   dd if=SRC of=DST bs=1M oflag=direct conv=fdatasync,notrunc    (existing)
#
# Prints a table of medians of N runs (seconds) and each blkmig figure's
# ratio to dd's.  The source image is read with send's default (--cache
# none); with --cold the caches are dropped before every run (needs root),
# and send --cache writeback is compared too.  --chunk-size is send's
# (1 MiB by default; 64K is what `serve` uses for its disks).
#
#   bench/disk.sh [--size 1G] [--runs 3] [--dir /var/tmp] [--cold] [--chunk-size SIZE]
#
# The work directory must be on the disk to measure (not tmpfs).
set -euo pipefail
cd "$(dirname "$0")/.."
BLKMIG=${BLKMIG:-build/tools/blkmig}
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }
size=1G runs=3 dir=${TMPDIR:-/var/tmp} cold=0 chunk=()
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift ;;
	--runs) runs=$2; shift ;;
	--dir) dir=$2; shift ;;
	--cold) cold=1 ;;
	--chunk-size) chunk=(--chunk-size "$2"); shift ;;
	*) echo "usage: bench/disk.sh [--size SIZE] [--runs N] [--dir DIR] [--cold] [--chunk-size SIZE]" >&2; exit 2 ;;
	esac
	shift
done
W=$(mktemp -d "$dir/blkmig-disk.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
[ "$(stat -f -c %T "$W")" = tmpfs ] && echo "bench: $W is on tmpfs: measuring memory, not a disk" >&2
bytes=$(python3 -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")
head -c "$bytes" /dev/urandom >"$W/src.img"
cat "$W/src.img" >/dev/null

prepare() { # fresh|existing
	rm -f "$W/dst.img" "$W"/dst.img.blkmig*
	[ "$1" = existing ] && cp "$W/src.img" "$W/dst.img"
	sync
	if [ $cold = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

now() { date +%s.%N; }

run_dd() { # fresh|existing
	local conv=fdatasync t0
	[ "$1" = existing ] && conv=fdatasync,notrunc
	prepare "$1"
	t0=$(now)
	dd if="$W/src.img" of="$W/dst.img" bs=1M oflag=direct conv=$conv status=none
	echo "$(now) - $t0" | bc
}

run_blkmig() { # fresh|existing receive-cache send-cache
	local create= t0 rpid
	[ "$1" = fresh ] && create=--create
	prepare "$1"
	rm -f "$W/port"
	"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$W/port" --device d0="$W/dst.img" $create \
		--cache "$2" >/dev/null 2>"$W/recv.err" &
	rpid=$!
	while [ ! -s "$W/port" ]; do sleep 0.01; done
	rm -f "$W/src.img.blkmig-handover" # the previous run handed it over
	t0=$(now)
	"$BLKMIG" send --to "127.0.0.1:$(cat "$W/port")" --device d0="$W/src.img" --cache "$3" "${chunk[@]}" >/dev/null 2>"$W/send.err" ||
		{ cat "$W/send.err" "$W/recv.err" >&2; exit 1; }
	wait $rpid || { cat "$W/recv.err" >&2; exit 1; }
	echo "$(now) - $t0" | bc
	cmp -s "$W/src.img" "$W/dst.img" || { echo "bench: images differ" >&2; exit 1; }
}

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

measure() { for _ in $(seq "$runs"); do "$@"; done | median; }

echo "dense random image of $size over loopback, ${chunk[1]:-1M} chunks, median of $runs (s); work dir $W ($(stat -f -c %T "$W"))"
printf "%-10s %-28s %8s %8s\n" target what seconds "x dd"
for target in fresh existing; do
	dd_t=$(measure run_dd $target)
	printf "%-10s %-28s %8.2f %8s\n" $target "dd oflag=direct" "$dd_t" 1.00
	sends=none
	[ $cold = 1 ] && sends="none writeback"
	for rc in none writeback; do
		for sc in $sends; do
			t=$(measure run_blkmig $target $rc $sc)
			printf "%-10s %-28s %8.2f %8.2f\n" $target "blkmig recv=$rc send=$sc" "$t" \
				"$(echo "$t / $dd_t" | bc -l)"
		done
	done
done
