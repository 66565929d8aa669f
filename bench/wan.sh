#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# An emulated WAN between two hosts on this machine, for the benchmarks
# (root only; nothing in the tests uses it).
#
#   bench/wan.sh up [--rtt MS] [--rate RATE] [--queue BYTES] [--mtu N]
#                   [--shaper relay|htb] [--tcp-rmem "MIN DEF MAX"]
#                   [--tcp-wmem "MIN DEF MAX"]
#   bench/wan.sh check [--time S]   ping, then iperf3 with 1 and 4 streams
#   bench/wan.sh down
#
# Defaults: --rtt 20 --rate 1gbit (also 100mbit, 2.5gbit, 0 = no limit)
# --queue one bandwidth-delay product --mtu 1500 --shaper relay.
#
#   host A: namespace bmwan-a, 10.77.0.1 on a0   ip netns exec bmwan-a CMD
#   host B: namespace bmwan-b, 10.77.0.2 on b0   ip netns exec bmwan-b CMD
#
# The link:  a0 ==veth== ra [wan-relay] rb ==veth== b0,  ra and rb in a third
# namespace, bmwan-r.  bench/wan-relay.c (built here with cc) reads every
# frame arriving on ra or rb with an AF_PACKET socket and writes it out of
# the other after half the round trip, so TCP in A and B sees the whole RTT
# on its own packets: a window limits a stream to window/RTT exactly as on
# a long link (a relay that terminated TCP would hide the delay in its
# buffer).  The rate limit is in the relay too (a bottleneck at RATE with a
# drop-tail queue of --queue bytes in each direction), or, with
# --shaper htb, an htb class at RATE on ra's and rb's egress.  Offloads stay
# on: the relay moves TSO/GSO frames of up to 64 KiB whole.
#
# Each namespace has its own TCP settings, copied from the host's when it
# is created (net.ipv4.tcp_rmem/tcp_wmem are per namespace; net.core.*mem_max
# are not); --tcp-rmem/--tcp-wmem set them in A and B, e.g. Debian 12's
# defaults "4096 131072 6291456" and "4096 16384 4194304".
#
# Measured here (busy 2-core machine, iperf3 5 s, A -> B, 1gbit):
#   20 ms: 1 stream 813-872 Mbit/s, 4 streams 907-911; 80 ms: 291-300, 812-825.
#   With no delay and no rate the relay carries about 5 Gbit/s (one thread).
#   One stream at 80 ms is held by the sender's tcp_wmem max, 4 MiB here and
#   on Debian 12 (291 Mbit/s; the receiver's 32 MiB or Debian's 6 MiB
#   tcp_rmem max made no difference); with tcp_wmem max 32 MiB: 693 Mbit/s
#   with tcp_rmem max 32 MiB, 338 Mbit/s with Debian's 6 MiB.  A window of W
#   bytes carries at most W / RTT: 4 MiB / 80 ms = 420 Mbit/s before
#   overheads.  --shaper htb gave the same figures within the noise.
#
# Sourced (. bench/wan.sh), it only defines wan_up, wan_down, wan_check,
# wan_exec_a, wan_exec_b and WAN_A_IP/WAN_B_IP for other scripts.  Set
# WAN_NAME first (default bmwan) for namespaces NAME-a, NAME-b, NAME-r and
# state in /run/NAME: bench/compare uses bmcmp, so that it leaves a WAN
# brought up by hand alone.

WAN_NAME=${WAN_NAME:-bmwan}
WAN_A=$WAN_NAME-a WAN_B=$WAN_NAME-b WAN_R=$WAN_NAME-r
WAN_A_IP=10.77.0.1 WAN_B_IP=10.77.0.2
WAN_STATE=${WAN_STATE:-/run/$WAN_NAME}
WAN_SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

wan_exec_a() { ip netns exec $WAN_A "$@"; }
wan_exec_b() { ip netns exec $WAN_B "$@"; }

# RATE ("1gbit", "100mbit", "500kbit", "0") in bits per second.
wan_rate_bps() {
	local r=${1,,} n
	case $r in
	0 | none) echo 0 ;;
	*gbit) n=${r%gbit}; awk -v n="$n" 'BEGIN { printf "%.0f\n", n * 1e9 }' ;;
	*mbit) n=${r%mbit}; awk -v n="$n" 'BEGIN { printf "%.0f\n", n * 1e6 }' ;;
	*kbit) n=${r%kbit}; awk -v n="$n" 'BEGIN { printf "%.0f\n", n * 1e3 }' ;;
	*bit) echo "${r%bit}" ;;
	*) echo "wan: rate '$1': use e.g. 1gbit, 100mbit or 0" >&2; return 1 ;;
	esac
}

wan_down() {
	if [ -s "$WAN_STATE/relay.pid" ]; then
		local pid; pid=$(cat "$WAN_STATE/relay.pid")
		# The relay prints its counters when it stops.
		kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
		rm -f "$WAN_STATE/relay.pid"
	fi
	local ns
	for ns in $WAN_A $WAN_B $WAN_R; do
		ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null
		ip netns del $ns 2>/dev/null
	done
	return 0
}

wan_up() {
	local rtt=20 rate=1gbit queue="" mtu=1500 shaper=relay rmem="" wmem=""
	while [ $# -gt 0 ]; do
		case $1 in
		--rtt) rtt=$2; shift 2 ;;
		--rate) rate=$2; shift 2 ;;
		--queue) queue=$2; shift 2 ;;
		--mtu) mtu=$2; shift 2 ;;
		--shaper) shaper=$2; shift 2 ;;
		--tcp-rmem) rmem=$2; shift 2 ;;
		--tcp-wmem) wmem=$2; shift 2 ;;
		*) echo "wan up: unknown option $1" >&2; return 2 ;;
		esac
	done
	[ "$(id -u)" -eq 0 ] || { echo "wan: needs root (network namespaces)" >&2; return 1; }
	case $shaper in relay | htb) ;; *) echo "wan: --shaper relay or htb" >&2; return 2 ;; esac
	local bps; bps=$(wan_rate_bps "$rate") || return 2
	# One bandwidth-delay product of queue, at least 256 KiB.
	[ -n "$queue" ] || queue=$(awk -v b="$bps" -v r="$rtt" 'BEGIN { q = b / 8 * r / 1000; if (q < 262144) q = 262144; printf "%.0f\n", q }')
	local delay_us; delay_us=$(awk -v r="$rtt" 'BEGIN { printf "%.0f\n", r * 500 }')

	wan_down
	mkdir -p "$WAN_STATE"
	cc -O2 -Wall -Wextra -Werror -o "$WAN_STATE/wan-relay" "$WAN_SRC_DIR/wan-relay.c" || return 1

	ip netns add $WAN_A && ip netns add $WAN_B && ip netns add $WAN_R || return 1
	ip link add a0 netns $WAN_A type veth peer name ra netns $WAN_R || return 1
	ip link add b0 netns $WAN_B type veth peer name rb netns $WAN_R || return 1
	local ns
	for ns in $WAN_A $WAN_B $WAN_R; do
		ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
		ip -n $ns link set lo up
	done
	ip -n $WAN_A addr add $WAN_A_IP/24 dev a0
	ip -n $WAN_B addr add $WAN_B_IP/24 dev b0
	ip -n $WAN_A link set a0 mtu "$mtu" up
	ip -n $WAN_B link set b0 mtu "$mtu" up
	ip -n $WAN_R link set ra mtu "$mtu" promisc on up
	ip -n $WAN_R link set rb mtu "$mtu" promisc on up
	for ns in $WAN_A $WAN_B; do
		[ -z "$rmem" ] || ip netns exec $ns sysctl -qw net.ipv4.tcp_rmem="$rmem"
		[ -z "$wmem" ] || ip netns exec $ns sysctl -qw net.ipv4.tcp_wmem="$wmem"
	done

	local relay_bps=$bps
	if [ $shaper = htb ] && [ "$bps" != 0 ]; then
		for dev in ra rb; do
			tc -n $WAN_R qdisc add dev $dev root handle 1: htb default 1 &&
				tc -n $WAN_R class add dev $dev parent 1: classid 1:1 htb rate "${bps}bit" ceil "${bps}bit" quantum 200000 &&
				tc -n $WAN_R qdisc add dev $dev parent 1:1 bfifo limit "$queue" || return 1
		done
		relay_bps=0
	fi
	ip netns exec $WAN_R "$WAN_STATE/wan-relay" ra rb "$delay_us" "$relay_bps" "$queue" \
		</dev/null >"$WAN_STATE/relay.log" 2>&1 &
	echo $! >"$WAN_STATE/relay.pid"
	# Up when A reaches B (ARP crosses the relay too).
	local ok=0
	for _ in $(seq 50); do
		if wan_exec_a ping -c 1 -W 1 -q $WAN_B_IP >/dev/null 2>&1; then ok=1; break; fi
		kill -0 "$(cat "$WAN_STATE/relay.pid")" 2>/dev/null || break
	done
	if [ $ok = 0 ]; then
		echo "wan: A cannot reach B; relay log:" >&2
		cat "$WAN_STATE/relay.log" >&2
		wan_down
		return 1
	fi
	WAN_DESC="rtt ${rtt} ms, rate $rate ($shaper), queue $queue bytes, mtu $mtu"
	echo "$WAN_DESC" >"$WAN_STATE/desc"
}

wan_tcp_mem() {
	local ns
	for ns in $WAN_A $WAN_B; do
		echo "$ns: tcp_rmem $(ip netns exec $ns sysctl -n net.ipv4.tcp_rmem | tr '\t' ' ')," \
			"tcp_wmem $(ip netns exec $ns sysctl -n net.ipv4.tcp_wmem | tr '\t' ' ')"
	done
	echo "host: net.core.rmem_max $(sysctl -n net.core.rmem_max), net.core.wmem_max $(sysctl -n net.core.wmem_max)"
}

wan_check() {
	local secs=5
	[ "${1:-}" = --time ] && secs=$2
	ip netns list | grep -q "^$WAN_R" || { echo "wan: not up (bench/wan.sh up)" >&2; return 1; }
	echo "link: $(cat "$WAN_STATE/desc")"
	wan_tcp_mem
	wan_exec_a ping -c 5 -i 0.2 -q $WAN_B_IP | tail -n 1
	command -v iperf3 >/dev/null || { echo "wan: needs iperf3 (scripts/install-deps.sh)" >&2; return 1; }
	wan_exec_b iperf3 -s -B $WAN_B_IP >"$WAN_STATE/iperf3.log" 2>&1 &
	local srv=$! n
	for _ in $(seq 100); do
		wan_exec_b ss -Hltn "sport = 5201" | grep -q . && break
		sleep 0.05
	done
	for n in 1 4; do
		echo "iperf3 A -> B, $n stream(s), ${secs} s: $(wan_exec_a iperf3 -c $WAN_B_IP -t "$secs" -P $n -f m |
			awk '/receiver/ { r = $0 } END { n = split(r, f, " "); print f[n - 2], f[n - 1] }')"
	done
	kill $srv; wait $srv 2>/dev/null
	return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -u
	cmd=${1:-}
	[ $# -gt 0 ] && shift
	case $cmd in
	up)
		wan_up "$@" || exit 1
		echo "wan up: $WAN_DESC"
		echo "  host A: $WAN_A_IP   ip netns exec $WAN_A CMD"
		echo "  host B: $WAN_B_IP   ip netns exec $WAN_B CMD"
		echo "  relay:  namespace $WAN_R, log $WAN_STATE/relay.log; bench/wan.sh down to remove"
		;;
	down) wan_down; [ -f "$WAN_STATE/relay.log" ] && cat "$WAN_STATE/relay.log"; rm -rf "$WAN_STATE" ;;
	check) wan_check "$@" ;;
	*) sed -n '3,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
fi
