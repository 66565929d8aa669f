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
BLKMIG=${BLKMIG:-build/tools/blkmig}
QMP="python3 scripts/qmp.py"
W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-qbench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
bytes=$(python3 -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")
head -c "$bytes" /dev/urandom >"$W/src.img"
cat "$W/src.img" >/dev/null
port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
now() { date +%s.%N; }

qemu_src() { # PORT: migrate src.img from a QEMU source to 127.0.0.1:PORT
	qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$W/src.img,format=raw,if=none,id=drive0" \
		-qmp "unix:$W/s.qmp,server=on,wait=off" >/dev/null 2>&1 &
	SPID=$!
	$QMP "$W/s.qmp" migrate-set-parameters '{"downtime-limit": 0, "max-bandwidth": 107374182400}' >/dev/null
	$QMP "$W/s.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$1\", \"blk\": true}" >/dev/null
	$QMP "$W/s.qmp" wait-migration 600 >/dev/null
	kill $SPID; wait $SPID 2>/dev/null || true
}

qemu_dst() { # PORT: a QEMU destination on dst.img with write permission
	qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$W/dst.img,format=raw,if=none,id=drive0" \
		-incoming "tcp:127.0.0.1:$1" -qmp "unix:$W/d.qmp,server=on,wait=off" >/dev/null 2>&1 &
	DPID=$!
	$QMP "$W/d.qmp" nbd-server-start "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"$W/n.sock\"}}}" >/dev/null
	$QMP "$W/d.qmp" nbd-server-add '{"device": "drive0", "writable": true}' >/dev/null
	$QMP "$W/d.qmp" human-monitor-command '{"command-line": "qemu-io drive0 \"write 0 0\""}' >/dev/null
	$QMP "$W/d.qmp" nbd-server-stop >/dev/null
}

run() { # label
	rm -f "$W/dst.img" "$W"/*.qmp "$W/port"; truncate -s "$bytes" "$W/dst.img"
	local p t0; p=$(port)
	case $1 in
	qemu-qemu) qemu_dst $p; t0=$(now); qemu_src $p; $QMP "$W/d.qmp" wait-migration 600 >/dev/null; kill $DPID ;;
	qemu-blkmig)
		"$BLKMIG" receive --format qemu --listen 127.0.0.1:$p --device drive0="$W/dst.img" >/dev/null & local r=$!
		sleep 0.2; t0=$(now); qemu_src $p; wait $r ;;
	blkmig-qemu) qemu_dst $p; t0=$(now)
		"$BLKMIG" send --format qemu --to 127.0.0.1:$p --device drive0="$W/src.img" >/dev/null
		$QMP "$W/d.qmp" wait-migration 600 >/dev/null; kill $DPID ;;
	blkmig-blkmig)
		"$BLKMIG" receive --listen 127.0.0.1:$p --device drive0="$W/dst.img" >/dev/null & local r=$!
		sleep 0.2; t0=$(now); "$BLKMIG" send --to 127.0.0.1:$p --device drive0="$W/src.img" >/dev/null; wait $r ;;
	esac
	local t; t=$(python3 -c "print($(now) - $t0)")
	wait 2>/dev/null || true
	cmp -s "$W/src.img" "$W/dst.img" || { echo "bench: $1 produced a different image" >&2; exit 1; }
	printf '%-16s %8.2f s %9.0f MiB/s\n' "$1" "$t" "$(python3 -c "print($bytes / $t / 2**20)")"
}
echo "blkmig bench: $size random image, QEMU 7.2 block migration and blkmig, 127.0.0.1"
for c in qemu-qemu qemu-blkmig blkmig-qemu blkmig-blkmig; do run $c; done
