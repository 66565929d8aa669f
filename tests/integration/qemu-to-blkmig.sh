#!/usr/bin/env bash
# A real QEMU 7.2 (-M none, -drive if=none) migrates its drives with
# `migrate blk=true` into `blkmig receive --format qemu`: random, sparse
# (zero-blocks on and off), odd-sized and two-drive images, each compared
# with cmp; and a drive the receiver does not know is refused.
. "$(dirname "$0")/lib.sh"
requires qemu-system-x86_64 python3 cmp timeout

# qemu_migrate LABEL ZERO_BLOCKS RECEIVER-ARGS -- DRIVE=IMG ...
qemu_migrate() {
	local label=$1 zero=$2
	shift 2
	local rargs=() drives=()
	while [ "$1" != -- ]; do rargs+=("$1"); shift; done
	shift
	for d in "$@"; do drives+=(-drive "file=${d#*=},format=raw,if=none,id=${d%%=*}"); done
	start_receiver "$label" --format qemu "${rargs[@]}"
	qemu-system-x86_64 -M none -nodefaults -display none "${drives[@]}" \
		-qmp "unix:$T/$label.qmp,server=on,wait=off" 2>"$T/$label.qemu.err" &
	local qpid=$!
	BG_PIDS+=("$qpid")
	timeout 20 $QMP "$T/$label.qmp" migrate-set-capabilities \
		"{\"capabilities\": [{\"capability\": \"zero-blocks\", \"state\": $zero}]}" >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" migrate-set-parameters '{"downtime-limit": 0}' >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$RECV_PORT\", \"blk\": true}" >/dev/null || fail "$label: migrate"
	timeout 130 $QMP "$T/$label.qmp" wait-migration 120 >"$T/$label.qemu.json"
	QEMU_RC=$?
	wait_rc "$RECV_PID"
	kill "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null
}

make_random "$T/r.img" $((32 * MiB)) 131
truncate -s $((32 * MiB)) "$T/r.dst"
qemu_migrate random false --device drive0="$T/r.dst" -- drive0="$T/r.img"
[ "$RC" = 0 ] || { cat "$T/random.err" >&2; fail "random: receive exited $RC"; }
cmp "$T/r.img" "$T/r.dst" || fail "random: images differ"
pass "QEMU -> blkmig, 32 MiB random"

make_sparse "$T/s.img" $((64 * MiB)) "0:4096,$((20 * MiB)):$((3 * MiB)),$((63 * MiB)):$MiB" 132
for zb in true false; do
	make_random "$T/s.dst" $((64 * MiB)) 133 # old contents everywhere
	qemu_migrate "sparse-$zb" $zb --device drive0="$T/s.dst" -- drive0="$T/s.img"
	[ "$RC" = 0 ] || { cat "$T/sparse-$zb.err" >&2; fail "sparse zero-blocks=$zb: receive exited $RC"; }
	cmp "$T/s.img" "$T/s.dst" || fail "sparse zero-blocks=$zb: images differ"
	used=$(du -k "$T/s.dst" | cut -f1)
	[ "$used" -lt $((16 * 1024)) ] || fail "sparse zero-blocks=$zb: destination not sparse (${used} KiB)"
	pass "QEMU -> blkmig, sparse 64 MiB, zero-blocks $zb: identical, ${used} KiB used"
done

# 8.5 MiB: QEMU sends a whole 1 MiB for the last chunk; the excess is dropped.
make_random "$T/o.img" $((8 * MiB + 512 * 1024)) 134
truncate -s $((8 * MiB + 512 * 1024)) "$T/o.dst"
qemu_migrate odd false --device drive0="$T/o.dst" -- drive0="$T/o.img"
[ "$RC" = 0 ] || { cat "$T/odd.err" >&2; fail "odd: receive exited $RC"; }
cmp "$T/o.img" "$T/o.dst" || fail "odd: images differ"
[ "$(stat -c %s "$T/o.dst")" = $((8 * MiB + 512 * 1024)) ] || fail "odd: destination grew"
pass "QEMU -> blkmig, 8.5 MiB (partial last chunk clipped)"

make_random "$T/a.img" $((4 * MiB)) 135
make_random "$T/b.img" $((6 * MiB)) 136
truncate -s $((4 * MiB)) "$T/a.dst"; truncate -s $((6 * MiB)) "$T/b.dst"
qemu_migrate two true --device drive0="$T/a.dst" --device drive1="$T/b.dst" -- drive0="$T/a.img" drive1="$T/b.img"
[ "$RC" = 0 ] || { cat "$T/two.err" >&2; fail "two drives: receive exited $RC"; }
cmp "$T/a.img" "$T/a.dst" && cmp "$T/b.img" "$T/b.dst" || fail "two drives: images differ"
pass "QEMU -> blkmig, two drives"

truncate -s $((4 * MiB)) "$T/u.dst"
qemu_migrate unknown false --device other="$T/u.dst" --max-refused 1 --retry-for 0 -- drive0="$T/a.img"
expect_error "$RC" 1 "$T/unknown.err" "unknown device 'drive0'"
is_marked "$T/u.dst" || fail "unknown: destination not marked incomplete"
pass "a drive the receiver does not know: $(cat "$T/unknown.err")"

# A QEMU source that writes while it migrates (rate-limited so the writes
# land mid-way): the dirty chunks are resent and the images end equal.
make_random "$T/w.img" $((128 * MiB)) 138
truncate -s $((128 * MiB)) "$T/w.dst"
start_receiver writing --format qemu --device drive0="$T/w.dst"
qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$T/w.img,format=raw,if=none,id=drive0" \
	-qmp "unix:$T/w.qmp,server=on,wait=off" >/dev/null 2>"$T/w.qemu.err" &
qpid=$!
BG_PIDS+=("$qpid")
timeout 20 $QMP "$T/w.qmp" migrate-set-parameters '{"downtime-limit": 0, "max-bandwidth": 4194304}' >/dev/null || fail "writing: qmp"
timeout 20 $QMP "$T/w.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$RECV_PORT\", \"blk\": true}" >/dev/null || fail "writing: migrate"
for i in 1 2 3 4 5 6; do
	sleep 0.4
	timeout 20 $QMP "$T/w.qmp" human-monitor-command \
		"{\"command-line\": \"qemu-io drive0 \\\"write -P $((0x40 + i)) $((i * 3))M 64k\\\"\"}" >>"$T/w.hmp" || fail "writing: hmp"
done
timeout 130 $QMP "$T/w.qmp" wait-migration 120 >"$T/w.qemu.json" || fail "writing: QEMU did not complete"
wait_rc "$RECV_PID"
kill "$qpid"; wait "$qpid" 2>/dev/null
[ "$RC" = 0 ] || { cat "$T/writing.err" >&2; fail "writing: receive exited $RC"; }
python3 - "$T/w.img" <<'PY' || fail "writing: the HMP writes did not reach the source image"
import sys
d = open(sys.argv[1], "rb").read()
for i in range(1, 7):
    assert d[i * 3 << 20:(i * 3 << 20) + 65536] == bytes([0x40 + i]) * 65536, i
PY
cmp "$T/w.img" "$T/w.dst" || fail "writing: the destination misses writes made during the migration"
pass "QEMU -> blkmig while QEMU writes (6 writes during a 4 MB/s migration): identical"

# inc: true — qcow2 overlays on a shared base: only the overlay's data
# travels, and the raw base on our side becomes the overlay's full view.
# The receiver is told so (--shared-base): the stream itself cannot say.
requires qemu-img
make_random "$T/base.raw" $((16 * MiB)) 139
qemu-img create -q -f qcow2 -F raw -b "$T/base.raw" "$T/top.qcow2"
qemu-io -f qcow2 "$T/top.qcow2" -c "write -P 0x5e 1M 2M" -c "write -P 0x6f 9M 64k" >/dev/null || fail "inc: overlay writes"
cp "$T/base.raw" "$T/inc.dst"
start_receiver inc --format qemu --shared-base --device drive0="$T/inc.dst"
qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$T/top.qcow2,format=qcow2,if=none,id=drive0" \
	-qmp "unix:$T/inc.qmp,server=on,wait=off" 2>"$T/inc.qemu.err" &
qpid=$!
BG_PIDS+=("$qpid")
timeout 20 $QMP "$T/inc.qmp" migrate-set-parameters '{"downtime-limit": 0}' >/dev/null || fail "inc: qmp"
timeout 20 $QMP "$T/inc.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$RECV_PORT\", \"blk\": true, \"inc\": true}" >/dev/null || fail "inc: migrate"
timeout 70 $QMP "$T/inc.qmp" wait-migration 60 >/dev/null || fail "inc: QEMU did not complete"
wait_rc "$RECV_PID"
kill "$qpid"; wait "$qpid" 2>/dev/null
[ "$RC" = 0 ] || { cat "$T/inc.err" >&2; fail "inc: receive exited $RC"; }
qemu-img convert -f qcow2 -O raw "$T/top.qcow2" "$T/top.raw" || fail "inc: convert"
cmp "$T/top.raw" "$T/inc.dst" || fail "inc: the destination is not the overlay's view"
pass "QEMU -> blkmig with inc: true over a shared base: equals qemu-img convert of the overlay"

# A capture made with migrate to exec:cat decodes with blkmig inspect, and
# a truncated one is reported as such.
make_sparse "$T/c.img" $((8 * MiB)) "0:$MiB,$((5 * MiB)):4096" 137
qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$T/c.img,format=raw,if=none,id=drive0" \
	-qmp "unix:$T/cap.qmp,server=on,wait=off" 2>"$T/cap.qemu.err" &
qpid=$!
BG_PIDS+=("$qpid")
timeout 20 $QMP "$T/cap.qmp" migrate-set-capabilities '{"capabilities": [{"capability": "zero-blocks", "state": true}]}' >/dev/null || fail "capture: qmp"
timeout 20 $QMP "$T/cap.qmp" migrate-set-parameters '{"downtime-limit": 0}' >/dev/null || fail "capture: qmp"
timeout 20 $QMP "$T/cap.qmp" migrate "{\"uri\": \"exec:cat > $T/cap.bin\", \"blk\": true}" >/dev/null || fail "capture: migrate"
timeout 70 $QMP "$T/cap.qmp" wait-migration 60 >/dev/null || fail "capture: QEMU did not complete"
kill "$qpid"; wait "$qpid" 2>/dev/null
"$BLKMIG" inspect "$T/cap.bin" >"$T/cap.txt" 2>"$T/cap.err" || { cat "$T/cap.err" >&2; fail "inspect of a QEMU capture failed"; }
grep -q "CONFIGURATION machine 'none'" "$T/cap.txt" || fail "inspect: no configuration"
grep -q "START 'block'" "$T/cap.txt" && grep -q "VMDESCRIPTION" "$T/cap.txt" || fail "inspect: sections missing"
grep -q "drive0: 2 data records, 6 zero records" "$T/cap.txt" || { tail -3 "$T/cap.txt" >&2; fail "inspect: wrong totals"; }
grep -q "last progress 100%" "$T/cap.txt" || fail "inspect: progress"
head -c 1500000 "$T/cap.bin" >"$T/cap-trunc.bin"
"$BLKMIG" inspect --quiet "$T/cap-trunc.bin" >/dev/null 2>"$T/trunc.err"
expect_error $? 1 "$T/trunc.err" "truncated at offset 1500000"
pass "blkmig inspect decodes a QEMU capture (2 data, 6 zero records) and reports truncation"
