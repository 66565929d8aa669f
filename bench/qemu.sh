#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Throughput of QEMU 7.2 block migration against blkmig, both directions,
# on the same image in the same run over 127.0.0.1: QEMU->QEMU,
# QEMU->blkmig, blkmig->QEMU and blkmig->blkmig (native).  QEMU uncapped
# (max-bandwidth 0 would mean no transfer, so a very large cap) with
# downtime-limit 0, as QEMU-STREAM.md advises.
#
#   bench/qemu.sh [--size 1G]
set -euo pipefail
cd "$(dirname "$0")/.."
size=1G
[ "${1:-}" = --size ] && size=$2
QMP="python3 scripts/qmp.py"
. bench/lib.sh
W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-qbench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
bytes=$(size_bytes "$size")
head -c "$bytes" /dev/urandom >"$W/src.img"
cat "$W/src.img" >/dev/null
port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

qemu_send() { # PORT: migrate src.img from a QEMU source to 127.0.0.1:PORT
	qemu_src "$W/src.img" "$W/s.qmp"
	SPID=$qemu_pid
	qemu_migrate "$W/s.qmp" 127.0.0.1:$1
	qemu_wait "$W/s.qmp"
	kill $SPID; wait $SPID 2>/dev/null || true
}

qemu_recv() { # PORT: a QEMU destination on dst.img with write permission
	qemu_dst "$W/dst.img" 127.0.0.1:$1 "$W/d.qmp"
	DPID=$qemu_pid
}

run() { # label
	rm -f "$W/dst.img" "$W"/*.qmp* "$W/port"; truncate -s "$bytes" "$W/dst.img"
	local p t0; p=$(port)
	case $1 in
	qemu-qemu) qemu_recv $p; t0=$(now); qemu_send $p; $QMP "$W/d.qmp" wait-migration 600 >/dev/null; kill $DPID ;;
	qemu-blkmig)
		"$BLKMIG" receive --format qemu --listen 127.0.0.1:$p --device drive0="$W/dst.img" >/dev/null & local r=$!
		sleep 0.2; t0=$(now); qemu_send $p; wait $r ;;
	blkmig-qemu) qemu_recv $p; rm -f "$W/src.img.blkmig-handover"; t0=$(now)
		"$BLKMIG" send --format qemu --to 127.0.0.1:$p --device drive0="$W/src.img" >/dev/null
		$QMP "$W/d.qmp" wait-migration 600 >/dev/null; kill $DPID ;;
	blkmig-blkmig)
		"$BLKMIG" receive --listen 127.0.0.1:$p --device drive0="$W/dst.img" >/dev/null & local r=$!
		rm -f "$W/src.img.blkmig-handover" # the previous run handed it over
		sleep 0.2; t0=$(now); "$BLKMIG" send --to 127.0.0.1:$p --device drive0="$W/src.img" >/dev/null; wait $r ;;
	esac
	local t; t=$(python3 -c "print($(now) - $t0)")
	wait 2>/dev/null || true
	cmp -s "$W/src.img" "$W/dst.img" || { echo "bench: $1 produced a different image" >&2; exit 1; }
	printf '%-16s %8.2f s %9.0f MiB/s\n' "$1" "$t" "$(python3 -c "print($bytes / $t / 2**20)")"
}
echo "blkmig bench: $size random image, QEMU 7.2 block migration and blkmig, 127.0.0.1"
for c in qemu-qemu qemu-blkmig blkmig-qemu blkmig-blkmig; do run $c; done
