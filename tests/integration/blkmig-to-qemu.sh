#!/usr/bin/env bash
# `blkmig send --format qemu` into a real QEMU 7.2 destination (-M none,
# -incoming): random, sparse with --zero-blocks, two drives, and a live
# source with the workload writing.  QEMU must reach "completed" and its
# images must equal the source at the switch-over.
. "$(dirname "$0")/lib.sh"
requires qemu-system-x86_64 python3 cmp timeout

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

# start_qemu_dest LABEL DRIVE=IMG ...: a QEMU waiting for a migration, its
# drives opened writable (QEMU-STREAM.md: a -drive with no guest device is
# read-only until something asks for write permission).
start_qemu_dest() {
	local label=$1 drives=() d
	shift
	for d in "$@"; do drives+=(-drive "file=${d#*=},format=raw,if=none,id=${d%%=*}"); done
	QPORT=$(free_port)
	qemu-system-x86_64 -M none -nodefaults -display none "${drives[@]}" \
		-incoming "tcp:127.0.0.1:$QPORT" -qmp "unix:$T/$label.qmp,server=on,wait=off" \
		2>"$T/$label.qemu.err" &
	QPID=$!
	BG_PIDS+=("$QPID")
	timeout 20 $QMP "$T/$label.qmp" nbd-server-start \
		"{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"$T/$label.nbd\"}}}" >/dev/null || fail "$label: qmp"
	for d in "$@"; do
		timeout 20 $QMP "$T/$label.qmp" nbd-server-add "{\"device\": \"${d%%=*}\", \"writable\": true}" >/dev/null || fail "$label: nbd-server-add"
		timeout 20 $QMP "$T/$label.qmp" human-monitor-command \
			"{\"command-line\": \"qemu-io ${d%%=*} \\\"write 0 0\\\"\"}" >/dev/null || fail "$label: hmp"
	done
	timeout 20 $QMP "$T/$label.qmp" nbd-server-stop >/dev/null || fail "$label: nbd-server-stop"
}

finish_qemu() { # label: QEMU's own verdict
	timeout 70 $QMP "$T/$1.qmp" wait-migration 60 >"$T/$1.qemu.json" || { cat "$T/$1.qemu.json" "$T/$1.qemu.err" >&2; fail "$1: QEMU did not complete"; }
	kill "$QPID"; wait "$QPID" 2>/dev/null
}

make_random "$T/r.img" $((32 * MiB)) 141
truncate -s $((32 * MiB)) "$T/r.dst"
start_qemu_dest random drive0="$T/r.dst"
"$BLKMIG" send --format qemu --to "127.0.0.1:$QPORT" --device drive0="$T/r.img" >/dev/null 2>"$T/random.err" ||
	{ cat "$T/random.err" >&2; fail "random: send"; }
finish_qemu random
cmp "$T/r.img" "$T/r.dst" || fail "random: QEMU's image differs"
pass "blkmig -> QEMU, 32 MiB random: QEMU completed, identical"

make_sparse "$T/s.img" $((64 * MiB)) "0:4096,$((30 * MiB)):$((2 * MiB))" 142
make_random "$T/s.dst" $((64 * MiB)) 143
start_qemu_dest sparse drive0="$T/s.dst"
"$BLKMIG" send --format qemu --zero-blocks --to "127.0.0.1:$QPORT" --device drive0="$T/s.img" --json >"$T/sparse.json" 2>"$T/sparse.err" ||
	{ cat "$T/sparse.err" >&2; fail "sparse: send"; }
finish_qemu sparse
cmp "$T/s.img" "$T/s.dst" || fail "sparse: QEMU's image differs"
wire=$(json_field "$T/sparse.json" "['transferred']")
[ "$wire" -lt $((8 * MiB)) ] || fail "sparse --zero-blocks: $wire bytes on the wire"
pass "blkmig -> QEMU, sparse with --zero-blocks: identical, $wire bytes on the wire"

make_random "$T/a.img" $((5 * MiB)) 144
make_random "$T/b.img" $((3 * MiB)) 145
truncate -s $((5 * MiB)) "$T/a.dst"; truncate -s $((3 * MiB)) "$T/b.dst"
start_qemu_dest two drive0="$T/a.dst" drive1="$T/b.dst"
"$BLKMIG" send --format qemu --to "127.0.0.1:$QPORT" --device drive0="$T/a.img" --device drive1="$T/b.img" \
	>/dev/null 2>"$T/two.err" || { cat "$T/two.err" >&2; fail "two: send"; }
finish_qemu two
cmp "$T/a.img" "$T/a.dst" && cmp "$T/b.img" "$T/b.dst" || fail "two drives: differ"
pass "blkmig -> QEMU, two drives"

# QEMU 7.2 cannot load a device whose size is not a multiple of 1 MiB:
# refused before anything is sent.
make_random "$T/odd.img" $((5 * MiB + 512 * 1024)) 147
"$BLKMIG" send --format qemu --to 127.0.0.1:1 --device drive0="$T/odd.img" 2>"$T/odd.err"
expect_error $? 1 "$T/odd.err" "not a multiple of 1 MiB"
pass "odd-sized device refused for a QEMU destination: $(cat "$T/odd.err")"

make_random "$T/l.img" $((64 * MiB)) 146
truncate -s $((64 * MiB)) "$T/l.dst"
start_qemu_dest live drive0="$T/l.dst"
"$BLKMIG" send --format qemu --to "127.0.0.1:$QPORT" --device drive0="$T/l.img" --max-bandwidth 32M \
	--workload drive0,bs=64K,rate=2M,seed=5 --json >"$T/live.json" 2>"$T/live.err" ||
	{ cat "$T/live.err" >&2; fail "live: send"; }
finish_qemu live
cmp "$T/l.img" "$T/l.dst" || fail "live: QEMU's image differs from the source at switch-over"
writes=$(json_field "$T/live.json" "['workload']['writes']")
[ "$writes" -gt 10 ] || fail "live: only $writes writes"
pass "blkmig -> QEMU live: $writes writes during the migration; QEMU's image equals the source"

# From a serving daemon: qemu-io writes through its NBD export, then
# `blkmig migrate --format qemu` moves the image into QEMU.
requires qemu-io
make_random "$T/d.img" $((32 * MiB)) 148
truncate -s $((32 * MiB)) "$T/d.dst"
start_serve srv --device drive0="$T/d.img" --control "$T/srv.sock"
qemu-io -f raw "nbd://127.0.0.1:$NBD_PORT/drive0" -c "write -P 0x3c 5M 64k" >/dev/null || fail "daemon: qemu-io"
start_qemu_dest daemon drive0="$T/d.dst"
"$BLKMIG" migrate --control "$T/srv.sock" --to "127.0.0.1:$QPORT" --format qemu --wait >/dev/null 2>"$T/daemon.err" ||
	{ cat "$T/daemon.err" "$T/srv.err" >&2; fail "daemon: migrate --format qemu"; }
finish_qemu daemon
cmp "$T/d.img" "$T/d.dst" || fail "daemon: QEMU's image differs"
qemu-io -f raw "nbd://127.0.0.1:$NBD_PORT/drive0" -c "write 0 4k" >/dev/null 2>&1 && fail "daemon: source still takes writes"
stop "$SERVE_PID"
pass "serve + migrate --format qemu: QEMU completed with the client's writes; the source refuses writes"

# --shared-base to QEMU: only the allocated extents travel; QEMU's image
# keeps its own base everywhere else.
make_random "$T/base.img" $((16 * MiB)) 149
cp "$T/base.img" "$T/sb.dst"
make_sparse "$T/sb.img" $((16 * MiB)) "$((2 * MiB)):$MiB,$((9 * MiB)):4096" 150
start_qemu_dest sb drive0="$T/sb.dst"
"$BLKMIG" send --format qemu --shared-base --to "127.0.0.1:$QPORT" --device drive0="$T/sb.img" --json >"$T/sb.json" 2>"$T/sb.err" ||
	{ cat "$T/sb.err" >&2; fail "shared-base: send"; }
finish_qemu sb
python3 - "$T/sb.img" "$T/base.img" "$T/sb.dst" <<'PY' || fail "shared-base: QEMU's image"
import sys
src, base, dst = (open(p, "rb").read() for p in sys.argv[1:])
M = 1 << 20
for c in range(16):
    want = src if c in (2, 9) else base
    assert dst[c * M:(c + 1) * M] == want[c * M:(c + 1) * M], c
PY
pass "blkmig -> QEMU --shared-base: 2 chunks sent, the rest of QEMU's image untouched"

# serve --incoming --format qemu: a real QEMU source into a daemon, which
# then serves the result over NBD.
make_random "$T/in.img" $((8 * MiB)) 151
truncate -s $((8 * MiB)) "$T/in.dst"
start_serve indaemon --incoming 127.0.0.1:0 --format qemu --device drive0="$T/in.dst"
qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$T/in.img,format=raw,if=none,id=drive0" \
	-qmp "unix:$T/insrc.qmp,server=on,wait=off" >/dev/null 2>&1 &
qpid=$!
BG_PIDS+=("$qpid")
timeout 20 $QMP "$T/insrc.qmp" migrate-set-parameters '{"downtime-limit": 0}' >/dev/null || fail "incoming: qmp"
timeout 20 $QMP "$T/insrc.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$INCOMING_PORT\", \"blk\": true}" >/dev/null || fail "incoming: migrate"
timeout 70 $QMP "$T/insrc.qmp" wait-migration 60 >/dev/null || fail "incoming: QEMU did not complete"
kill "$qpid"; wait "$qpid" 2>/dev/null
requires nbdcopy
wait_export "$NBD_PORT" drive0
nbdcopy "nbd://127.0.0.1:$NBD_PORT/drive0" "$T/in.out" || fail "incoming: nbdcopy out"
cmp "$T/in.img" "$T/in.out" || fail "incoming: the daemon serves other data"
stop "$SERVE_PID"
pass "QEMU -> serve --incoming --format qemu, then served over NBD: identical"
