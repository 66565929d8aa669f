#!/usr/bin/env bash
# `blkmig serve` against real NBD clients: nbdinfo (list, map), nbdcopy in
# and out, qemu-img compare, qemu-io patterns (write, zero, discard, read),
# a read-only export, and several clients at once.
. "$(dirname "$0")/lib.sh"
requires nbdinfo nbdcopy qemu-img qemu-io python3 cmp

make_random "$T/a.img" $((16 * MiB)) 91
make_sparse "$T/s.img" $((64 * MiB)) "0:$MiB,$((40 * MiB)):$((2 * MiB))" 92
make_random "$T/ro.img" $((4 * MiB)) 93
start_serve srv --device a="$T/a.img" --device sparse="$T/s.img" --device ro="$T/ro.img,readonly"
U="nbd://127.0.0.1:$NBD_PORT"

nbdinfo --list "$U" >"$T/list" 2>&1 || { cat "$T/list" >&2; fail "nbdinfo --list"; }
for e in "a $((16 * MiB))" "sparse $((64 * MiB))" "ro $((4 * MiB))"; do
	set -- $e
	[ "$(nbdinfo --size "$U/$1")" = "$2" ] || fail "export $1: size $(nbdinfo --size "$U/$1"), expected $2"
	grep -q "export=\"$1\"\|export: $1\|$1" "$T/list" || fail "nbdinfo --list does not show $1"
done
pass "nbdinfo --list shows 3 exports with the right sizes"

nbdinfo --map "$U/sparse" >"$T/map" || fail "nbdinfo --map"
grep -q "hole" "$T/map" || { cat "$T/map" >&2; fail "map shows no hole"; }
python3 - "$T/map" <<'PY' || fail "map extents wrong"
import sys
ext = []
for line in open(sys.argv[1]):
    f = line.split()
    off, ln, typ = int(f[0]), int(f[1]), int(f[2])
    ext.append((off, ln, typ))
MiB = 1 << 20
def kind(at):
    for off, ln, typ in ext:
        if off <= at < off + ln:
            return typ
assert kind(0) == 0, ext
assert kind(10 * MiB) == 3, ext
assert kind(41 * MiB) == 0, ext
PY
pass "nbdinfo --map shows data and holes where they are"

make_random "$T/in.img" $((16 * MiB)) 94
nbdcopy "$T/in.img" "$U/a" || fail "nbdcopy into the export"
cmp "$T/in.img" "$T/a.img" || fail "nbdcopy: the image differs from what was copied in"
nbdcopy "$U/a" "$T/out.img" || fail "nbdcopy out of the export"
cmp "$T/in.img" "$T/out.img" || fail "nbdcopy: what came out differs"
pass "nbdcopy in and out, byte-identical"

qemu-img compare -f raw -F raw "$T/s.img" "$U/sparse" >/dev/null || fail "qemu-img compare: differ"
pass "qemu-img compare: identical"

qemu-io -f raw "$U/a" -c 'write -P 0x5a 0 64k' -c 'write -z 64k 64k' -c 'discard 128k 64k' \
	-c 'write -P 0x33 1M 4k' -c 'write -f -P 0x44 2M 4k' \
	-c 'read -P 0x5a 0 64k' -c 'read -P 0 64k 128k' -c 'read -P 0x33 1M 4k' -c 'flush' >"$T/qio" 2>&1 ||
	{ cat "$T/qio" >&2; fail "qemu-io"; }
grep -qi "pattern verification failed\|error" "$T/qio" && { cat "$T/qio" >&2; fail "qemu-io reported an error"; }
python3 - "$T/a.img" <<'PY' || fail "qemu-io writes not in the image"
import sys
d = open(sys.argv[1], "rb").read()
K = 1024
assert d[:64 * K] == b"\x5a" * (64 * K)
assert d[64 * K:192 * K] == bytes(128 * K)
assert d[1 << 20:(1 << 20) + 4 * K] == b"\x33" * (4 * K)
assert d[2 << 20:(2 << 20) + 4 * K] == b"\x44" * (4 * K)
PY
pass "qemu-io write, write -z, discard, FUA write and read -P"

qemu-io -f raw "$U/ro" -c 'write -P 1 0 4k' >"$T/ro.out" 2>&1
grep -qi "permission\|read-only\|EPERM\|failed" "$T/ro.out" || { cat "$T/ro.out" >&2; fail "write to a read-only export succeeded"; }
qemu-io -f raw -r "$U/ro" -c 'read 0 4k' >/dev/null || fail "read from the read-only export"
pass "read-only export refuses writes, serves reads"

# Several clients at once, each on its own region.
pids=()
for i in 0 1 2 3; do
	qemu-io -f raw "$U/a" -c "write -P $((0x10 + i)) $((4 + i))M 512k" -c "read -P $((0x10 + i)) $((4 + i))M 512k" \
		>"$T/par$i" 2>&1 &
	pids+=($!)
done
for i in 0 1 2 3; do
	wait "${pids[$i]}" || { cat "$T/par$i" >&2; fail "parallel client $i"; }
	grep -qi "failed" "$T/par$i" && fail "parallel client $i: pattern"
done
pass "4 clients at once"

stop "$SERVE_PID"
[ "$RC" = 0 ] || { cat "$T/srv.err" >&2; fail "serve exited $RC on SIGTERM"; }
pass "serve stops cleanly on SIGTERM"
