#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What a migration that does not start over costs, in bytes on the wire and
# time, with the built-in writer running on the source (send --workload):
#
#   uncut      send -> receive, the reference
#   cut        the same, cut once at half way by tests/tools/faultrelay.py
#              and resumed (send --retry-for)
#   killed     the receiver killed (-9) at half way and started again
#   delta      a migration back (send --delta) of the received image with
#              5% of its chunks changed, against a full copy of it
#   verify     send --verify-only of two identical images, against cmp
#
# Prints each figure and its ratio to the reference; medians of N runs.
#
#   bench/resume.sh [--size 1G] [--runs 1] [--rate 4M] [--chunk 1M]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G runs=1 rate=4M chunk=1M
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--chunk) chunk=$2; shift 2 ;;
	*) echo "usage: bench/resume.sh [--size SIZE] [--runs N] [--rate RATE] [--chunk SIZE]" >&2; exit 2 ;;
	esac
done
BLKMIG=${BLKMIG:-build/tools/blkmig}
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }
RELAY=tests/tools/faultrelay.py
W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-resume.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
bytes=$(python3 -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")
head -c "$bytes" /dev/urandom >"$W/base.img"

now() { date +%s.%N; }
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
wait_file() { for _ in $(seq 400); do [ -s "$1" ] && return; sleep 0.025; done; echo "bench: no $1" >&2; exit 1; }

receiver() { # NAME ARGS...: $rpid, $rport
	rm -f "$W/$1.port"
	"$BLKMIG" receive --listen 127.0.0.1:${RPORT:-0} --port-file "$W/$1.port" "${@:2}" >/dev/null 2>"$W/$1.rerr" &
	rpid=$!
	wait_file "$W/$1.port"
	rport=$(cat "$W/$1.port")
}

# One migration of a fresh copy of base.img into a new image; prints
# "BYTES SECONDS".  MODE: uncut, cut, killed.
migrate() {
	local mode=$1 to t0 t1 spid relay=""
	cp "$W/base.img" "$W/src.img"
	rm -f "$W/dst.img" "$W"/*.blkmig-*
	receiver rx --device d0="$W/dst.img" --create
	to=$rport
	if [ "$mode" = cut ]; then
		rm -f "$W/relay.port"
		/usr/bin/python3 "$RELAY" --listen 0 --port-file "$W/relay.port" --to "127.0.0.1:$rport" \
			--cut-at $((bytes / 2)) 2>/dev/null &
		relay=$!
		wait_file "$W/relay.port"
		to=$(cat "$W/relay.port")
	fi
	t0=$(now)
	"$BLKMIG" send --to "127.0.0.1:$to" --device d0="$W/src.img" --workload "d0,bs=4K,rate=$rate,seed=5" \
		--chunk-size "$chunk" \
		--json >"$W/send.json" 2>"$W/send.err" &
	spid=$!
	if [ "$mode" = killed ]; then
		# Half way by the receiver's image, then kill -9 and restart it.
		while [ "$(stat -c %b "$W/dst.img" 2>/dev/null || echo 0)" -lt $((bytes / 1024)) ]; do sleep 0.02; done
		kill -9 "$rpid"; wait "$rpid" 2>/dev/null || true
		RPORT=$rport receiver rx2 --device d0="$W/dst.img"
	fi
	wait "$spid" || { cat "$W/send.err" >&2; echo "bench: send failed ($mode)" >&2; exit 1; }
	t1=$(now)
	wait "$rpid" || { echo "bench: receive failed ($mode)" >&2; exit 1; }
	[ -n "$relay" ] && kill "$relay" 2>/dev/null
	cmp -s "$W/src.img" "$W/dst.img" || { echo "bench: images differ ($mode)" >&2; exit 1; }
	echo "$(field "$W/send.json" "['transferred']") $(python3 -c "print($t1 - $t0)")"
}

declare -A B T
for mode in uncut cut killed; do
	bs=() ts=()
	for _ in $(seq "$runs"); do
		read -r b t < <(migrate $mode)
		bs+=("$b") ts+=("$t")
	done
	B[$mode]=$(median "${bs[@]}") T[$mode]=$(median "${ts[@]}")
done
printf '%-34s %14s %8s %9s\n' "$size, writer 4K at $rate/s, $chunk chunks" "bytes on wire" "ratio" "seconds"
for mode in uncut cut killed; do
	printf '%-34s %14.0f %7.2fx %9.2f\n' "$mode" "${B[$mode]}" \
		"$(python3 -c "print(${B[$mode]} / ${B[uncut]})")" "${T[$mode]}"
done

# ---- delta: 5% of the chunks of dst.img changed, migrated back
cp "$W/base.img" "$W/old.img"
cp "$W/base.img" "$W/new.img"
python3 - "$W/new.img" "$bytes" <<'PY'
import os, random, sys
path, size = sys.argv[1], int(sys.argv[2])
chunks = size >> 20
r = random.Random(7)
with open(path, "r+b") as f:
    for c in r.sample(range(chunks), max(1, chunks // 20)):
        f.seek(c << 20)
        f.write(os.urandom(4096))
PY
delta_run() { # extra send/receive args: prints "BYTES SECONDS"
	local t0 t1
	cp "$W/old.img" "$W/back.img"
	receiver d --device d0="$W/back.img" "$@"
	t0=$(now)
	"$BLKMIG" send --to "127.0.0.1:$rport" --device d0="$W/new.img" "$@" --json >"$W/d.json" 2>"$W/d.err" ||
		{ cat "$W/d.err" >&2; exit 1; }
	t1=$(now)
	wait "$rpid"
	cmp -s "$W/new.img" "$W/back.img" || { echo "bench: delta images differ" >&2; exit 1; }
	rm -f "$W"/*.blkmig-handover
	echo "$(field "$W/d.json" "['transferred']") $(python3 -c "print($t1 - $t0)")"
}
read -r fb ft < <(delta_run)
read -r db dt < <(delta_run --delta)
printf '%-34s %14.0f %7.2f%% %9.2f   (full copy: %.0f bytes, %.2f s; %.2fx faster)\n' \
	"delta back, 5% of chunks changed" "$db" "$(python3 -c "print(100 * $db / $bytes)")" "$dt" \
	"$fb" "$ft" "$(python3 -c "print($ft / $dt)")"

# ---- verify against cmp
cp "$W/new.img" "$W/same.img"
sync
t0=$(now)
cmp "$W/new.img" "$W/same.img"
t1=$(now)
ct=$(python3 -c "print($t1 - $t0)")
receiver v --device d0="$W/same.img" --verify-only
t0=$(now)
"$BLKMIG" send --to "127.0.0.1:$rport" --device d0="$W/new.img" --verify-only >/dev/null 2>"$W/v.err" ||
	{ cat "$W/v.err" >&2; exit 1; }
t1=$(now)
wait "$rpid"
vt=$(python3 -c "print($t1 - $t0)")
gib=$(python3 -c "print($bytes / (1 << 30))")
printf '%-34s %8.2f s/GiB   (cmp of the two files: %.2f s/GiB; %.2fx)\n' "verify-only (identical)" \
	"$(python3 -c "print($vt / $gib)")" "$(python3 -c "print($ct / $gib)")" "$(python3 -c "print($vt / $ct)")"
