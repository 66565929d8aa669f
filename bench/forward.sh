#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# What forwarding costs a client: after a migration between two `blkmig
# serve` daemons on 127.0.0.1, the same client runs against the
# destination's export directly and through the source, which forwards it,
# in the same run.  Prints the median of --runs for each and the ratio
# (forwarded / direct).
#
#   nbdcopy --connections=1 write: SIZE sequential, 1 MiB requests
#   nbdcopy --connections=1 read:  SIZE sequential
#   qemu-img bench -d 1:  4 KiB writes, one in flight (latency-bound)
#   qemu-img bench -d 16: 4 KiB writes, 16 in flight
#
#   bench/forward.sh [--size 512M] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
size=512M runs=3
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	*) echo "usage: bench/forward.sh [--size SIZE] [--runs N]" >&2; exit 2 ;;
	esac
done
for c in nbdcopy qemu-img; do command -v $c >/dev/null || { echo "bench: needs $c" >&2; exit 1; }; done
. bench/lib.sh
bench_setup fwd "$size"
bytes=$(stat -c %s "$W/base.img")

cp "$W/base.img" "$W/src.img"
"$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$W/dst.ports" --incoming 127.0.0.1:0 --device d0="$W/dst.img" --create 2>/dev/null &
dpid=$!
"$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$W/src.ports" --control "$W/src.sock" --device d0="$W/src.img" 2>/dev/null &
spid=$!
wait_ports "$W/dst.ports" incoming; wait_ports "$W/src.ports" nbd
for _ in $(seq 100); do [ -S "$W/src.sock" ] && break; sleep 0.05; done
dnbd=$(sed -n 's/^nbd=//p' "$W/dst.ports") snbd=$(sed -n 's/^nbd=//p' "$W/src.ports")
"$BLKMIG" migrate --control "$W/src.sock" --to "127.0.0.1:$(sed -n 's/^incoming=//p' "$W/dst.ports")" --forward-to "127.0.0.1:$dnbd" --wait >/dev/null
status=$("$BLKMIG" status --control "$W/src.sock")
grep -q "^forwarding: .* to 127.0.0.1:$dnbd" <<<"$status" || { echo "bench: the source does not forward:" >&2; echo "$status" >&2; exit 1; }
direct="nbd://127.0.0.1:$dnbd/d0" fwd="nbd://127.0.0.1:$snbd/d0"

# secs CMD...: wall time of one run.
secs() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; exit 1; }
	t1=$(date +%s.%N)
	python3 -c "print($t1 - $t0)"
}
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

n=20000
printf '%-34s %12s %12s %8s\n' client direct forwarded ratio
row() {
	local name=$1 unit=$2 amount=$3
	shift 3
	local d=() f=()
	for _ in $(seq "$runs"); do
		d+=("$(secs "${@//URL/$direct}")")
		f+=("$(secs "${@//URL/$fwd}")")
	done
	python3 - "$name" "$unit" "$amount" "$(median "${d[@]}")" "$(median "${f[@]}")" <<'PY'
import sys
name, unit, amount, d, f = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
if unit == "MB/s":
    a, b = amount / d / 1e6, amount / f / 1e6
else:
    a, b = amount / d, amount / f
print("%-34s %7.0f %-4s %7.0f %-4s %7.2fx" % (name, a, unit, b, unit, b / a))
PY
}
row "nbdcopy write, 1 connection" MB/s "$bytes" nbdcopy --connections=1 "$W/base.img" URL
row "nbdcopy read, 1 connection" MB/s "$bytes" nbdcopy --connections=1 URL null:
row "qemu-img bench 4K writes, depth 1" IOPS "$n" qemu-img bench -f raw -w -s 4096 -c "$n" -d 1 URL
row "qemu-img bench 4K writes, depth 16" IOPS "$n" qemu-img bench -f raw -w -s 4096 -c "$n" -d 16 URL
"$BLKMIG" status --control "$W/src.sock" | grep '^forwarding'
kill $spid $dpid 2>/dev/null; wait $spid $dpid 2>/dev/null || true
