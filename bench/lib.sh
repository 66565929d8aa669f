# SPDX-License-Identifier: MIT
# Shared by the benchmarks that drive `blkmig serve` daemons (latency.sh,
# converge.sh): source it from the repository root after parsing options.
#
#   bench_setup NAME SIZE   a work directory $W (removed at exit) holding
#                           $W/base.img, SIZE bytes of random data
#   ctl SOCK COMMAND [ARGS-JSON]   one control-socket command (scripts/qmp.py);
#                           prints its return, fails on an error reply
#   wait_ports FILE KEY     until a --port-file has KEY=
#   field JSON KEY          one member of a JSON object
#   start SPEC / stop       a destination `serve --incoming` and a source
#                           `serve --workload d0,SPEC` on a copy of base.img
#                           ($spid, $dpid; $W/src.sock, $W/dst.ports)

BLKMIG=${BLKMIG:-build/tools/blkmig}
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }

bench_setup() {
	local bytes
	W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-$1.XXXXXX")
	trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
	bytes=$(python3 -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$2")
	head -c "$bytes" /dev/urandom >"$W/base.img"
}

ctl() { python3 scripts/qmp.py "$@"; }

wait_ports() {
	for _ in $(seq 400); do grep -q "^$2=" "$1" 2>/dev/null && return; sleep 0.025; done
	echo "bench: no $2 port in $1" >&2
	cat "$W"/*.log >&2 2>/dev/null
	exit 1
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

start() {
	# The records a completed migration leaves (the source's hand-over
	# fence, the destination's state) belong to the previous run.
	cp "$W/base.img" "$W/src.img"; rm -f "$W/dst.img" "$W"/*.ports "$W"/*.blkmig-*
	"$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$W/dst.ports" --incoming 127.0.0.1:0 --device d0="$W/dst.img" --create 2>"$W/dst.log" &
	dpid=$!
	"$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$W/src.ports" --control "$W/src.sock" --device d0="$W/src.img" \
		--workload "d0,$1,seed=3" 2>"$W/src.log" &
	spid=$!
	wait_ports "$W/dst.ports" incoming; wait_ports "$W/src.ports" nbd
	for _ in $(seq 100); do [ -S "$W/src.sock" ] && break; sleep 0.05; done
}
stop() { kill $spid $dpid 2>/dev/null; wait $spid $dpid 2>/dev/null || true; }

