#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# --connections over an emulated WAN (bench/wan.sh): for each round trip,
# iperf3 with 1 and 4 streams (the link's reference), one TCP stream with
# the kernel's buffer autotuning and with an explicit SO_SNDBUF
# (bench/sockbuf.py), then blkmig send -> receive of one random image with
# --connections N for each N.  Root only.  Prints one table.
#
#   bench/connections.sh [--size 1G] [--rtts "20 80"] [--conns "1 2 4 8"]
#                        [--rate 1gbit] [--blkmig PATH] [--dir DIR]
#                        [--tcp-rmem "MIN DEF MAX"] [--tcp-wmem "MIN DEF MAX"]
#
# --dir holds the images (default /dev/shm/bmconn: the disk is not what is
# measured here); --blkmig defaults to build-rel/tools/blkmig (a release
# build: meson setup build-rel --buildtype=release).  MB/s is the image's
# size over send's total time (handshake, lanes, every pass, the final
# fdatasync and acknowledgement included).
set -uo pipefail # not -e: bench/wan.sh is not written for it
cd "$(dirname "$0")/.."
size=1G rtts="20 80" conns="1 2 4 8" rate=1gbit blkmig=$PWD/build-rel/tools/blkmig dir=/dev/shm/bmconn
rmem="" wmem=""
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--rtts) rtts=$2; shift 2 ;;
	--conns) conns=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--blkmig) blkmig=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	--tcp-rmem) rmem=$2; shift 2 ;;
	--tcp-wmem) wmem=$2; shift 2 ;;
	*) echo "usage: see the head of $0" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "connections.sh: root only (network namespaces)" >&2; exit 2; }
[ -x "$blkmig" ] || { echo "connections.sh: no $blkmig (build it, or --blkmig)" >&2; exit 2; }
WAN_NAME=bmconn
. "${WAN_SH:-bench/wan.sh}"
trap 'wan_down >/dev/null 2>&1; rm -rf "$dir"' EXIT
mkdir -p "$dir"
bytes=$(numfmt --from=iec "$size")
head -c "$bytes" /dev/urandom >"$dir/src.img"
link_mbs=$(($(wan_rate_bps "$rate") / 8000000))
rows=()
row() { rows+=("$(printf '%-6s %-40s %9s %7s %9s' "$1" "$2" "$3" "$4" "${5:-}")"); }
pct() { awk -v a="$1" -v b="$link_mbs" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }

for rtt in $rtts; do
	up=(--rtt "$rtt" --rate "$rate")
	[ -n "$rmem" ] && up+=(--tcp-rmem "$rmem")
	[ -n "$wmem" ] && up+=(--tcp-wmem "$wmem")
	wan_up "${up[@]}" >/dev/null
	for p in 1 4; do
		wan_exec_b iperf3 -s -1 -p 5399 -B "$WAN_B_IP" >/dev/null 2>&1 &
		bgp=$!
		sleep 0.3
		mbit=$(wan_exec_a iperf3 -c "$WAN_B_IP" -p 5399 -t 8 -P $p -f m | awk '/receiver/ { v = $(NF-2) } END { print v }')
		mbs=$(awk -v m="$mbit" 'BEGIN { printf "%.1f", m / 8 }')
		row "${rtt}ms" "iperf3, $p stream(s), 8 s" "$mbs" "$(pct "$mbs")"
		wait $bgp # (not every job: the WAN's relay is one)
	done
	for snd in 0 max; do
		v=0
		[ $snd = max ] && v=$(cat /proc/sys/net/core/wmem_max)
		wan_exec_b python3 bench/sockbuf.py recv 5398 >"$dir/sb.out" &
		bgp=$!
		sleep 0.3
		wan_exec_a python3 bench/sockbuf.py send "$WAN_B_IP" 5398 $((bytes / 2)) $v
		wait $bgp
		mbs=$(awk '{ print $1 }' "$dir/sb.out")
		row "${rtt}ms" "1 stream, SO_SNDBUF $([ $snd = max ] && echo "$v (explicit)" || echo auto)" "$mbs" "$(pct "$mbs")"
	done
	for n in $conns; do
		# The previous run handed src.img over: this one starts afresh.
		rm -f "$dir/dst.img" "$dir"/dst.img.blkmig* "$dir/src.img.blkmig-handover"
		wan_exec_b "$blkmig" receive --listen "$WAN_B_IP:5397" --no-tls --device d0="$dir/dst.img" --create \
			--port-file "$dir/port" >/dev/null 2>"$dir/recv.err" &
		bgp=$!
		sleep 0.5
		wan_exec_a "$blkmig" send --to "$WAN_B_IP:5397" --device d0="$dir/src.img" --connections "$n" --json \
			>"$dir/send.json" 2>"$dir/send.err" || { cat "$dir/send.err" "$dir/recv.err" >&2; exit 1; }
		wait $bgp
		cmp "$dir/src.img" "$dir/dst.img" || { echo "connections.sh: images differ" >&2; exit 1; }
		mbs=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('%.1f' % (int(sys.argv[2]) / (d['total-time'] / 1000) / 1e6))" "$dir/send.json" "$bytes")
		wire=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('%.1f' % (d['mbps'] / 8))" "$dir/send.json")
		row "${rtt}ms" "blkmig --connections $n ($size)" "$mbs" "$(pct "$mbs")" "$wire"
	done
	wan_down >/dev/null
done
echo
printf '%-6s %-40s %9s %7s %9s\n' RTT "what" "MB/s" "of link" "wire MB/s"
printf '%s\n' "${rows[@]}"
echo "(MB/s: the image over the whole run; wire MB/s: blkmig's own figure (mbps), the stream's rate"
echo " while it sends; link: $rate = $link_mbs MB/s; tcp_wmem max $(cut -f3 /proc/sys/net/ipv4/tcp_wmem), net.core.wmem_max $(cat /proc/sys/net/core/wmem_max))"
