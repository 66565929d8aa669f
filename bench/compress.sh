#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What --compress buys: send -> receive of a compressible image (an ext4
# file system filled with /usr/share by mke2fs -d: text, man pages, some of
# them gzipped already, icons) and of random data, over a link capped with
# --max-bandwidth and uncapped on loopback, with --compress off, zstd and
# auto.  Prints time, bytes on the wire and the chunks compressed; medians
# of N runs.  Use a release build (BLKMIG=build-rel/tools/blkmig).
#
#   bench/compress.sh [--size 1G] [--rate 100M] [--runs 1] [--level 1] [--images "fs random"]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G rate=100M runs=1 level=1 images="fs random"
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--level) level=$2; shift 2 ;;
	--images) images=$2; shift 2 ;;
	*) echo "usage: bench/compress.sh [--size SIZE] [--rate RATE] [--runs N] [--level N] [--images \"fs random\"]" >&2; exit 2 ;;
	esac
done
BLKMIG=${BLKMIG:-build/tools/blkmig}
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }
command -v mke2fs >/dev/null || { echo "bench: needs mke2fs (e2fsprogs)" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-compress.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
bytes=$(python3 -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")

# The compressible image: as much of /usr/share as fits in 85% of it.
python3 - "$W/tree" $((bytes * 85 / 100)) <<'PY'
import os, shutil, sys
dst, budget = sys.argv[1], int(sys.argv[2])
used = 0
for d, dirs, files in os.walk("/usr/share"):
    dirs.sort()
    for f in sorted(files):
        p = os.path.join(d, f)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        n = os.path.getsize(p)
        if used + n > budget:
            continue
        t = os.path.join(dst, os.path.relpath(p, "/usr/share"))
        os.makedirs(os.path.dirname(t), exist_ok=True)
        try:
            shutil.copyfile(p, t)
        except OSError:
            continue
        used += n
print(f"bench: {used >> 20} MiB of /usr/share in the image", file=sys.stderr)
PY
mke2fs -q -t ext4 -d "$W/tree" -F "$W/fs.img" "$((bytes / 1024))k"
rm -rf "$W/tree"
case " $images " in *" random "*) head -c "$bytes" /dev/urandom >"$W/random.img" ;; esac

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]])" "$1" "$2"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
wait_file() { for _ in $(seq 400); do [ -s "$1" ] && return; sleep 0.025; done; echo "bench: no $1" >&2; exit 1; }

run() { # image compress cap: one send -> receive; prints "secs wire compressed"
	local img=$1 comp=$2 cap=$3
	rm -f "$W/dst.img" "$W/port"
	"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$W/port" --device d0="$W/dst.img" --create \
		>/dev/null 2>"$W/recv.err" &
	local rpid=$!
	wait_file "$W/port"
	local args=(--compress "$comp")
	[ "$comp" = zstd ] && args=(--compress "zstd:$level")
	[ "$cap" != none ] && args+=(--max-bandwidth "$cap")
	"$BLKMIG" send --to "127.0.0.1:$(cat "$W/port")" --device d0="$img" --json "${args[@]}" \
		>"$W/send.json" 2>"$W/send.err" || { cat "$W/send.err" >&2; exit 1; }
	wait "$rpid"
	cmp -s "$img" "$W/dst.img" || { echo "bench: the copy differs" >&2; exit 1; }
	echo "$(($(field "$W/send.json" total-time))) $(field "$W/send.json" transferred) $(field "$W/send.json" compressed-chunks) $(field "$W/send.json" raw-chunks)"
}

printf "%-10s %-9s %-6s %9s %12s %11s %8s\n" image link mode seconds "wire MiB" compressed raw
for img in $images; do
	for cap in "$rate" none; do
		for comp in off zstd auto; do
			ts=() ws=() c=0 rw=0
			for _ in $(seq "$runs"); do
				read -r ms wire c rw < <(run "$W/$img.img" "$comp" "$cap")
				ts+=("$(python3 -c "print($ms / 1000)")")
				ws+=("$wire")
			done
			printf "%-10s %-9s %-6s %9.2f %12.1f %11s %8s\n" "$img" "${cap/none/loopback}" "$comp" \
				"$(median "${ts[@]}")" "$(python3 -c "print($(median "${ws[@]}") / 1048576)")" "$c" "$rw"
		done
	done
done
