#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Client write latency with and without a live migration, and the
# switch-over pause: a `blkmig serve` daemon runs the built-in writer
# (--workload, through the same tracked path as NBD clients) on a 1 GiB
# image; first N seconds with no migration, then a migration to a
# `serve --incoming` daemon on 127.0.0.1.  Prints p50/p99/max for both
# phases and the migration's downtime, per workload.
#
#   bench/latency.sh [--size 1G] [--quiet-secs 5]
set -euo pipefail
cd "$(dirname "$0")/.."
size=1G quiet=5
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--quiet-secs) quiet=$2; shift 2 ;;
	*) echo "usage: bench/latency.sh [--size SIZE] [--quiet-secs N]" >&2; exit 2 ;;
	esac
done
. bench/lib.sh
bench_setup lat "$size"

printf '%-22s %-14s %7s %7s %8s | %7s %7s %8s | %9s %7s %6s\n' workload phase p50us p99us maxus p50us p99us maxus downtime total passes
for spec in "bs=4K,rate=256K" "bs=64K,rate=4M" "bs=64K,rate=16M"; do
	start "$spec"
	ctl "$W/src.sock" query-workload '{"reset": true}' >/dev/null
	sleep "$quiet"
	base=$(ctl "$W/src.sock" query-workload '{"reset": true}')
	"$BLKMIG" migrate --control "$W/src.sock" --to "$dst_addr" --wait --json >"$W/mig.json"
	during=$(ctl "$W/src.sock" query-workload)
	mig=$(cat "$W/mig.json")
	printf '%-22s %-14s %7s %7s %8s | %7s %7s %8s | %7sms %5.1fs %6s\n' "$spec" "none|migrating" \
		"$(field "$base" latency-p50-us)" "$(field "$base" latency-p99-us)" "$(field "$base" latency-max-us)" \
		"$(field "$during" latency-p50-us)" "$(field "$during" latency-p99-us)" "$(field "$during" latency-max-us)" \
		"$(field "$mig" downtime)" "$("$PY" -c "print($(field "$mig" total-time)/1000)")" "$(field "$mig" iterations)"
	stop
done
