#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Convergence under writes: live migrations of a 1 GiB image over a link
# capped with --max-bandwidth (100M) while the source daemon's built-in
# writer issues 4 KiB or 64 KiB random writes at 20, 80 and 200 MB/s
# (below, near and above the link), in each mode (dirty, active, auto).
# For every run: converged or not (a run still going after --limit seconds
# is cancelled), total time, bytes on the wire, passes, downtime (the pause
# of the switch-over) and the longest pause of any attempt, mirrored
# writes, the write rate the writer achieved during the migration, and its
# write latency p50/p99 against the same writer with no migration, with
# the p99.9 and the slowest write during the migration ('-': a build that
# does not report p99.9).
#
# Then each run is held to the pause goal it asked for with --max-downtime
# (300 ms, blkmig's default): the longest pause of the writers in any
# attempt (max-pause) and, in a completed run, the switch-over (downtime)
# must not exceed it.  query-migrate reports whole milliseconds, truncated,
# so a pause shown as exactly the goal passes (it may have overrun it by
# under 1 ms).  A run whose migration failed fails.  One PASS or FAIL line
# per run follows the table, and the exit status is 1 if any run failed.
# Not converging within --limit is reported, not failed: dirty mode is not
# expected to under writes faster than the link.  Nothing else is
# asserted: the other figures are for reading, and depend on the machine.
#
# With --baseline BLKMIG, every row runs first with that binary (an older
# build, say) and then with this one, one after the other, and the table
# shows both, marked 'before' and 'after', so that the two see the same
# machine at nearly the same time.  --dst-opts adds options to the
# destination's `serve --incoming` (its --cache, say).
#
# Mode "hog" is a control row, not a migration: for --limit seconds a
# shell busy loop takes one CPU (about what a migration takes of this
# 2-vCPU test machine) and the writer is measured as during a migration.
# A lock-free tracking path leaves the writer no worse off in dirty mode
# than it is beside any other load of the same size; this row says how
# much that is on the machine at hand.
#
# --link wanN runs the two daemons as two hosts of bench/wan.sh's emulated
# WAN (N ms round trip at --wan-rate, 1gbit by default; root only), where
# a mirrored write costs at least one round trip; --bandwidth 0 leaves the
# migration uncapped, so that it fills the link.
#
# --dst-dir DIR puts the destination's image in DIR (on another file
# system, say, as it would be on another host: on one, the destination's
# writeback and journal commits are the source's too).
#
# --repeat N runs every row N times, the builds taking turns (before,
# after, before, after, ...), prints each run as it ends and then, per row
# and build, the median of each figure over the N runs, with the lowest
# and highest mig_p99: on a machine whose p99 moves several-fold between
# runs of the same build, one run says little and a difference smaller
# than the spread says nothing.
#
# --dst-nice N runs the destination daemon at that nice value: on one
# machine both daemons share its CPUs, where between two hosts the
# destination would take none of the source's (19 comes close).
#
# --mirror-share PCT passes that share of the rate for mirrored writes to
# both builds' migrate (a baseline without the option fails to start).
#
#   bench/converge.sh [--size 1G] [--bandwidth 100M] [--limit 60]
#                     [--rates "20M 80M 200M"] [--sizes "4K 64K"]
#                     [--modes "dirty active auto"] [--quiet-secs 3]
#                     [--max-downtime 300] [--baseline BLKMIG]
#                     [--dst-opts "--cache none"]
#                     [--link loopback|wanN] [--wan-rate 1gbit] [--dst-nice N]
#                     [--dst-dir DIR] [--repeat N] [--mirror-share PCT]
set -euo pipefail
cd "$(dirname "$0")/.."
size=1G bw=100M limit=60 quiet=3 maxdt=300 baseline= link=loopback wan_rate=1gbit repeat=1
rates="20M 80M 200M" sizes="4K 64K" modes="dirty active auto" share=()
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--bandwidth) bw=$2; shift 2 ;;
	--limit) limit=$2; shift 2 ;;
	--rates) rates=$2; shift 2 ;;
	--sizes) sizes=$2; shift 2 ;;
	--modes) modes=$2; shift 2 ;;
	--quiet-secs) quiet=$2; shift 2 ;;
	--max-downtime) maxdt=$2; shift 2 ;;
	--baseline) baseline=$2; shift 2 ;;
	--dst-opts) DST_OPTS=$2; shift 2 ;;
	--link) link=$2; shift 2 ;;
	--wan-rate) wan_rate=$2; shift 2 ;;
	--dst-nice) DST_WRAP="nice -n $2"; shift 2 ;;
	--dst-dir) DST_DIR=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--mirror-share) share=(--mirror-share "$2"); shift 2 ;;
	*) echo "usage: bench/converge.sh [--size SIZE] [--bandwidth RATE|0] [--limit SECS] [--rates LIST] [--sizes LIST] [--modes LIST] [--quiet-secs N] [--max-downtime MS] [--baseline BLKMIG] [--dst-opts OPTS] [--link loopback|wanN] [--wan-rate RATE] [--dst-nice N] [--dst-dir DIR] [--repeat N] [--mirror-share PCT]" >&2; exit 2 ;;
	esac
done
# 0 would mean "the default" to blkmig, and the goal checked would not be
# the one it used.
case $maxdt in '' | *[!0-9]* | 0) echo "bench/converge.sh: --max-downtime needs a whole number of ms >= 1" >&2; exit 2 ;; esac
case $repeat in '' | *[!0-9]* | 0) echo "bench/converge.sh: --repeat needs a whole number >= 1" >&2; exit 2 ;; esac
. bench/lib.sh
bench_setup conv "$size"
case $link in
loopback) link_desc="loopback" ;;
wan[0-9]*)
	WAN_NAME=bmconv # not bench/wan.sh's own bmwan-*, which someone may be using
	. bench/wan.sh
	trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; wan_down >/dev/null 2>&1; rm -rf "$W" "$WAN_STATE"' EXIT
	wan_up --rtt "${link#wan}" --rate "$wan_rate" >/dev/null || exit 1
	SRC_NS=$WAN_A DST_NS=$WAN_B DST_IP=$WAN_B_IP
	link_desc="emulated WAN, ${link#wan} ms round trip at $wan_rate"
	;;
*) echo "bench/converge.sh: no link $link (loopback, wan20, wan80, ...)" >&2; exit 2 ;;
esac
cap=(--max-bandwidth "$bw")
[ "$bw" != 0 ] || cap=()

echo "blkmig convergence: $size image, $link_desc, --max-bandwidth ${bw/#0/0 (none)}, --max-downtime ${maxdt}ms, built-in writer (random offsets), limit ${limit}s"
checks=() failed=0
[ -z "$baseline" ] || [ -x "$baseline" ] || { echo "bench/converge.sh: --baseline $baseline is not an executable" >&2; exit 2; }
current=$BLKMIG
header() {
	printf '%-6s %-4s %-5s %-6s | %-4s %7s %8s %6s %8s %8s %8s | %9s %9s %8s | %9s %9s %9s %9s %8s%s\n' \
		build bs rate mode conv total_s wire_MiB passes downtime maxpause mirrored \
		base_p50 base_p99 base_MB/s mig_p50 mig_p99 mig_p99.9 mig_max mig_MB/s "$1"
}
header ''
runs=$W/runs.txt
: >"$runs"
# pause_check CONV STATUS DOWNTIME MAXPAUSE: one verdict for a run.
pause_check() {
	local why=()
	[ "$1" = FAIL ] && why+=("migration $2")
	[ "$4" -gt "$maxdt" ] && why+=("max-pause ${4}ms > ${maxdt}ms")
	[ "$2" = completed ] && [ "$3" -gt "$maxdt" ] && why+=("downtime ${3}ms > ${maxdt}ms")
	if [ ${#why[@]} -gt 0 ]; then
		local all
		all=$(printf '%s; ' "${why[@]}")
		echo "FAIL ${all%; }"
	elif [ "$2" = completed ]; then
		echo "PASS downtime ${3}ms, max-pause ${4}ms"
	else
		echo "PASS not converged (cancelled after ${limit}s); max-pause ${4}ms"
	fi
}

# A field of a JSON answer, or '-' when it has none (an older build's).
field_or() { "$PY" -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], '-'))" "$1" "$2"; }

# MB/s of a query-workload answer: over the time its writes were made in
# (elapsed-us), or, from a build without that figure, over SECS.
write_rate() {
	"$PY" -c "import json, sys
w = json.loads(sys.argv[1])
t = w['elapsed-us'] / 1e6 if 'elapsed-us' in w else float(sys.argv[2])
print('%.1f' % (w['bytes'] / t / 1e6 if t else 0))" "$1" "$2"
}

for bs in $sizes; do
	for rate in $rates; do
		spec="bs=$bs,rate=$rate"
		for mode in $modes; do
		for rep in $(seq "$repeat"); do
		for build in ${baseline:+before} after; do
			BLKMIG=$current
			[ "$build" = before ] && BLKMIG=$baseline
			[ -n "$baseline" ] || build=-
			start "$spec"
			warm_memory "$W/base.img"
			ctl "$W/src.sock" query-workload '{"reset": true}' >/dev/null
			sleep "$quiet"
			base=$(ctl "$W/src.sock" query-workload '{"reset": true}')
			if [ "$mode" = hog ]; then
				t0=$(now)
				timeout "$limit" sh -c 'while :; do :; done' || true
				secs=$("$PY" -c "print('%.1f' % ($(now) - $t0))")
				mig=(- "$secs" - - - - -)
			else
				"$BLKMIG" migrate --control "$W/src.sock" --to "$dst_addr" \
					"${cap[@]}" "${share[@]}" --max-downtime "$maxdt" --mode "$mode" >/dev/null
				# One process polls until the end or the limit: a
				# poll loop of shell commands here took a third of
				# this 2-vCPU machine during the migration, and the
				# writer measured that too.
				conv=yes
				if ! st=$(ctl "$W/src.sock" wait-migration "$limit" 2>/dev/null); then
					if [ -n "$st" ]; then
						conv=FAIL # failed or cancelled
					else
						conv=no
						ctl "$W/src.sock" migrate-cancel >/dev/null
						st=$(ctl "$W/src.sock" wait-migration 10) || true
					fi
				fi
				secs=$("$PY" -c "print('%.1f' % ($(field "$st" total-time)/1000))")
				mig=("$conv" "$secs" "$(( $(field "$st" transferred) / 1048576 ))"
					"$(field "$st" iterations)" "$(field "$st" downtime)ms"
					"$(field "$st" max-pause)ms" "$(field "$st" mirrored-writes)")
			fi
			during=$(ctl "$W/src.sock" query-workload)
			printf '%-6s %-4s %-5s %-6s | %-4s %7s %8s %6s %8s %8s %8s | %7sus %7sus %8s | %7sus %7sus %7sus %7sus %8s\n' \
				"$build" "$bs" "$rate" "$mode" "${mig[@]}" \
				"$(field "$base" latency-p50-us)" "$(field "$base" latency-p99-us)" \
				"$(write_rate "$base" "$quiet")" \
				"$(field "$during" latency-p50-us)" "$(field "$during" latency-p99-us)" \
				"$(field_or "$during" latency-p999-us)" "$(field "$during" latency-max-us)" \
				"$(write_rate "$during" "$secs")" | tee -a "$runs"
			if [ "$mode" != hog ]; then
				verdict=$(pause_check "$conv" "$(field "$st" status)" "$(field "$st" downtime)" "$(field "$st" max-pause)")
				checks+=("$verdict  build=$build bs=$bs rate=$rate mode=$mode")
				case $verdict in FAIL*) failed=$((failed + 1)) ;; esac
			fi
			stop
		done
		done
		done
	done
done
if [ "$repeat" -gt 1 ]; then
	echo
	echo "median of $repeat runs (mig_p99: lowest-highest after it; conv: runs that converged)"
	header '  mig_p99 range'
	# Each run's line: its words, '|' apart; '-' (a hog row's, or an
	# older build's p99.9) stays '-'.
	"$PY" - "$runs" <<'PYEOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    w = line.split()
    if len(w) < 20:
        continue
    rows.setdefault(tuple(w[:4]), []).append([x for x in w[4:] if x != '|'])
def med(vals):
    nums = []
    for v in vals:
        unit = v[-2:] if v[-2:] in ('us', 'ms') else ''
        try:
            nums.append(float(v[:len(v) - len(unit)]))
        except ValueError:
            return '-'
    m = statistics.median(nums)
    return ('%d' % m if m == int(m) else '%.1f' % m) + unit
for key, runs in rows.items():
    cols = list(zip(*runs))
    conv = '%d/%d' % (sum(r[0] == 'yes' for r in runs), len(runs)) if runs[0][0] != '-' else '-'
    figs = [med(c) for c in cols[1:]]
    p99 = sorted(int(r[11][:-2]) for r in runs if r[11].endswith('us'))
    rng = '%d-%dus' % (p99[0], p99[-1]) if p99 else '-'
    print('%-6s %-4s %-5s %-6s | %-4s %7s %8s %6s %8s %8s %8s | %9s %9s %8s | %9s %9s %9s %9s %8s  %s'
          % (*key, conv, *figs, rng))
PYEOF
fi
echo
echo "pause goal: no pause of the writers longer than --max-downtime ${maxdt}ms"
printf '%s\n' "${checks[@]}"
if [ "$failed" -gt 0 ]; then
	echo "$failed of ${#checks[@]} runs missed the pause goal" >&2
	exit 1
fi
