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
#                           ($spid, $dpid; $W/src.sock, $W/dst.ports);
#                           $DST_OPTS: more options for the destination;
#                           $DST_DIR: where its image goes (default $W)
#   warm_memory FILE        touch, and free, 1.5x FILE's allocated size
#                           of page cache (see below)

BLKMIG=${BLKMIG:-build/tools/blkmig}
# Debian's interpreter where there is one: a python3 first on PATH may be
# a version manager's shim, which runs shell scripts at every start.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }

bench_setup() {
	local bytes
	W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-$1.XXXXXX")
	trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
	bytes=$(size_bytes "$2")
	head -c "$bytes" /dev/urandom >"$W/base.img"
}

ctl() { "$PY" scripts/qmp.py "$@"; }

wait_ports() {
	for _ in $(seq 400); do grep -q "^$2=" "$1" 2>/dev/null && return; sleep 0.025; done
	echo "bench: no $2 port in $1" >&2
	cat "$W"/*.log >&2 2>/dev/null
	exit 1
}
field() { "$PY" -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# DST_WRAP is put before the destination daemon's command (e.g. "nice -n
# 19"). With SRC_NS and DST_NS set (network namespaces, e.g. bench/wan.sh's two
# hosts), each daemon runs in its own and the destination listens for the
# migration on DST_IP, without TLS; the control socket is a file, so it is
# reached from here all the same.  dst_addr is where `migrate --to` goes.
start() {
	local sns=() dns=() dip=127.0.0.1 notls=()
	[ -z "${SRC_NS:-}" ] || sns=(ip netns exec "$SRC_NS")
	[ -z "${DST_NS:-}" ] || { dns=(ip netns exec "$DST_NS"); dip=$DST_IP; notls=(--no-tls); }
	# The records a completed migration leaves (the source's hand-over
	# fence, the destination's state) belong to the previous run.
	local dimg=${DST_DIR:-$W}/dst.img
	cp "$W/base.img" "$W/src.img"; rm -f "$dimg" "$dimg".blkmig-* "$W"/*.ports "$W"/*.blkmig-*
	# shellcheck disable=SC2086 # DST_WRAP is words (e.g. "nice -n 19")
	"${dns[@]}" ${DST_WRAP:-} "$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$W/dst.ports" --incoming "$dip:0" "${notls[@]}" \
		--device d0="$dimg" --create ${DST_OPTS:-} 2>"$W/dst.log" &
	dpid=$!
	"${sns[@]}" "$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$W/src.ports" --control "$W/src.sock" --device d0="$W/src.img" \
		--workload "d0,$1,seed=3" 2>"$W/src.log" &
	spid=$!
	wait_ports "$W/dst.ports" incoming; wait_ports "$W/src.ports" nbd
	for _ in $(seq 100); do [ -S "$W/src.sock" ] && break; sleep 0.05; done
	dst_addr=$dip:$(sed -n 's/^incoming=//p' "$W/dst.ports")
}
stop() { kill $spid $dpid 2>/dev/null; wait $spid $dpid 2>/dev/null || true; }


# Also used by bench_setup, and by qemu.sh and compare (which do not call it):
#
#   size_bytes SIZE      "1G", "128M", "4096" as a number of bytes
#   now                  seconds since the epoch, to the nanosecond
#   QEMU 7.2 block migration, as ../shared/QEMU-STREAM.md describes; the
#   optional PREFIX (e.g. `ip netns exec NS /usr/bin/time -o FILE`) is put
#   before qemu-system-x86_64; each sets $qemu_pid (PREFIX's process):
#   qemu_dst IMG HOST:PORT QMP [PREFIX...]   a -M none destination waiting
#                           on -incoming, its drive given write permission
#                           (the fix-up: a writable NBD export, opened once)
#   qemu_src IMG QMP [PREFIX...]   a -M none source holding IMG
#   qemu_migrate QMP HOST:PORT     start the block migration: uncapped (a
#                           very large cap; 0 would mean none), downtime-limit 0
#   qemu_wait QMP [SECS]    until the migration completes (fails otherwise);
#                           polls every 10 ms

size_bytes() { "$PY" -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30,'T':1<<40}; s=sys.argv[1].upper(); print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$1"; }
now() { date +%s.%N; }

qemu_dst() {
	local img=$1 addr=$2 qmp=$3; shift 3
	"$@" qemu-system-x86_64 -M none -nodefaults -display none \
		-drive "file=$img,format=raw,if=none,id=drive0" -incoming "tcp:$addr" \
		-qmp "unix:$qmp,server=on,wait=off" </dev/null >/dev/null 2>&1 &
	qemu_pid=$!
	"$PY" scripts/qmp.py "$qmp" nbd-server-start "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"$qmp.nbd\"}}}" >/dev/null &&
		"$PY" scripts/qmp.py "$qmp" nbd-server-add '{"device": "drive0", "writable": true}' >/dev/null &&
		"$PY" scripts/qmp.py "$qmp" human-monitor-command '{"command-line": "qemu-io drive0 \"write 0 0\""}' >/dev/null &&
		"$PY" scripts/qmp.py "$qmp" nbd-server-stop >/dev/null
}

qemu_src() {
	local img=$1 qmp=$2; shift 2
	"$@" qemu-system-x86_64 -M none -nodefaults -display none \
		-drive "file=$img,format=raw,if=none,id=drive0" \
		-qmp "unix:$qmp,server=on,wait=off" </dev/null >/dev/null 2>&1 &
	qemu_pid=$!
}

qemu_migrate() {
	"$PY" scripts/qmp.py "$1" migrate-set-parameters '{"downtime-limit": 0, "max-bandwidth": 107374182400}' >/dev/null &&
		"$PY" scripts/qmp.py "$1" migrate "{\"uri\": \"tcp:$2\", \"blk\": true}" >/dev/null
}

qemu_wait() {
	"$PY" - "$1" "${2:-600}" <<'PY'
import sys
sys.path.insert(0, "scripts")
from qmp import QMP
with QMP(sys.argv[1]) as q:
    r = q.wait_migration(float(sys.argv[2]), poll=0.01)
sys.exit(0 if r["status"] == "completed" else "qemu: migration " + r["status"])
PY
}

# A virtual machine whose balloon reports free memory to its host (virtio
# free page reporting, as this development VM's does) gets that memory
# back only through a fault in the host at its first touch: a run that
# fills the page cache with pages the host took back pays ~4 s of system
# time per GiB for it (dd bs=1M of 1 GiB into a new file: 3.7-4.8 s, or
# 0.5 s right after another such write), and which run pays depends on the
# time since the last one.  Before each clock starts, the memory a run may
# fill is touched the way the writers touch it (1 MiB writes into a file,
# then freed), so every row starts from the same state (bench/compare
# --no-warm skips it).
warm_memory() { # SRC
	local mib
	mib=$(( $(stat -c '%b * %B' "$1") * 3 / 2 / 1048576 + 256 ))
	dd if=/dev/zero of="$W/warm" bs=1M count="$mib" status=none
	rm -f "$W/warm"
}
