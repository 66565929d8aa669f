#!/usr/bin/env bash
# Disk faults under a migration, on both ends: ENOSPC at the destination (a
# small tmpfs), EIO at the destination and read errors at the source (a
# device-mapper device with an `error` segment; where the kernel has no
# device-mapper, a qemu-storage-daemon FUSE export with blkdebug error rules
# stands in).  Every case must fail cleanly: exit 1 on both sides, no hang
# (each blkmig runs under `timeout 60`), exactly one 'blkmig:' line per
# process naming the cause, the destination image still marked incomplete,
# and the source image holding exactly what it held plus what the built-in
# writer wrote during the run, without a write error.
. "$(dirname "$0")/lib.sh"
requires md5sum timeout /usr/bin/python3
[ "$(id -u)" = 0 ] || skip "needs root for tmpfs mounts, loop devices and device-mapper"

REAL_BLKMIG=$BLKMIG
BLKMIG="$T/blkmig"
# Marks and records of block devices go to a state directory of the test's
# own, not to /var/lib/blkmig.
mkdir -p "$T/state"
printf '#!/bin/sh\ncmd=$1; shift\nexec timeout 60 "%s" "$cmd" --state-dir "%s" "$@"\n' "$REAL_BLKMIG" "$T/state" >"$BLKMIG"
chmod +x "$BLKMIG"

size=$((32 * MiB))
errat=$((16 * MiB)) # the faulty 1 MiB of the error devices starts here

# ---- set-up and teardown of mounts and devices ---------------------------
MOUNTS=()
LOOPS=()
DMS=()
QSDS=()
teardown() {
	local d p m l
	# In the reverse of set-up: the blkmig processes, the dm devices, the
	# loop devices (some over FUSE exports), the FUSE exports' daemons
	# (which unmount on SIGTERM), the mounts left.  blkmig's sidecar marks
	# beside device nodes in /dev go too.
	for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	for d in "${DMS[@]}"; do
		dmsetup remove --noudevsync --retry "$d" >/dev/null 2>&1 || echo "disk-faults: could not remove dm device $d" >&2
		rm -f "/dev/mapper/$d.blkmig-incomplete"
	done
	for l in "${LOOPS[@]}"; do
		losetup -d "$l" 2>/dev/null
		rm -f "$l.blkmig-incomplete"
	done
	for p in "${QSDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${QSDS[@]}"; do wait "$p" 2>/dev/null; done
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" && { umount "$m" || umount -l "$m"; }
	done
	cleanup
}
trap teardown EXIT

# How to make a device that fails I/O in [errat, errat + 1 MiB): dm, else
# qemu-storage-daemon's FUSE export of a blkdebug node, else nothing.
if command -v dmsetup >/dev/null && command -v losetup >/dev/null &&
	dmsetup targets 2>/dev/null | grep -q '^error '; then
	ERRDEV=dm
elif command -v qemu-storage-daemon >/dev/null && [ -c /dev/fuse ]; then
	ERRDEV=fuse
else
	ERRDEV=
fi

# error_device NAME BACKING: sets DEV to a device of BACKING's size whose
# I/O fails with EIO in [errat, errat + 1 MiB) and passes elsewhere to
# BACKING.
error_device() {
	local name=$1 backing=$2 sectors=$(($(stat -c %s "$2") / 512))
	local e0=$((errat / 512)) elen=$((MiB / 512))
	if [ "$ERRDEV" = dm ]; then
		local loop
		loop=$(losetup -f --show "$backing") || fail "$name: losetup"
		LOOPS+=("$loop")
		local dm="blkmig-test-$$-$name"
		printf '0 %d linear %s 0\n%d %d error\n%d %d linear %s %d\n' \
			$e0 "$loop" $e0 $elen $((e0 + elen)) $((sectors - e0 - elen)) "$loop" $((e0 + elen)) |
			dmsetup create --noudevsync "$dm" || fail "$name: dmsetup create"
		DMS+=("$dm")
		dmsetup mknodes "$dm" >/dev/null 2>&1
		DEV="/dev/mapper/$dm"
		for _ in $(seq 1 200); do [ -b "$DEV" ] && break; sleep 0.025; done
		[ -b "$DEV" ] || fail "$name: $DEV did not appear"
	else
		# blkdebug fails every request that covers its sector: one rule
		# per 64 KiB (FUSE splits requests no finer than that) over the
		# faulty MiB, for reads and writes.
		local rules="" i=0 s
		for s in $(seq $e0 128 $((e0 + elen - 1))); do
			for ev in read_aio write_aio; do
				rules="$rules,inject-error.$i.event=$ev,inject-error.$i.errno=5,inject-error.$i.sector=$s"
				i=$((i + 1))
			done
		done
		DEV="$T/$name.fuse"
		: >"$DEV"
		qemu-storage-daemon --blockdev driver=file,node-name=f0,filename="$backing" \
			--blockdev "driver=blkdebug,node-name=dbg,image=f0$rules" \
			--blockdev driver=raw,node-name=r0,file=dbg \
			--export type=fuse,id=e0,node-name=r0,mountpoint="$DEV",writable=on \
			>"$T/$name.qsd" 2>&1 &
		QSDS+=("$!")
		MOUNTS+=("$DEV")
		for _ in $(seq 1 200); do mountpoint -q "$DEV" && break; sleep 0.025; done
		mountpoint -q "$DEV" || { cat "$T/$name.qsd" >&2; fail "$name: the FUSE export did not come up"; }
	fi
}

# ---- checks ---------------------------------------------------------------
# one_line LABEL ERRFILE PATTERN: stderr is exactly one 'blkmig:' line (so
# no sanitizer report either), matching PATTERN.
one_line() {
	local n
	n=$(grep -c '^blkmig:' "$2")
	[ "$n" = 1 ] || { cat "$2" >&2; fail "$1: $n 'blkmig:' lines on stderr, expected exactly one"; }
	[ "$(grep -c . "$2")" = 1 ] || { cat "$2" >&2; fail "$1: more than the one 'blkmig:' line on stderr"; }
	grep -qE -- "$3" "$2" || { cat "$2" >&2; fail "$1: the message does not match /$3/"; }
}

# check_failed LABEL SEND-RC RECV-RC DST-IMAGE SEND-PATTERN RECV-PATTERN
check_failed() {
	local label=$1 src=$2 rrc=$3 img=$4
	[ "$src" != 124 ] || fail "$label: send hung (killed by timeout 60)"
	[ "$rrc" != 124 ] || fail "$label: receive hung (killed by timeout 60)"
	[ "$src" = 1 ] || { cat "$T/$label.send.err" >&2; fail "$label: send exited $src, expected 1"; }
	[ "$rrc" = 1 ] || { cat "$T/$label.err" >&2; fail "$label: receive exited $rrc, expected 1"; }
	one_line "$label: send" "$T/$label.send.err" "$5"
	one_line "$label: receive" "$T/$label.err" "$6"
	if [ -b "$img" ]; then
		ls "$T"/state/*.blkmig-incomplete >/dev/null 2>&1 ||
			fail "$label: $img is not marked incomplete (in the state directory)"
	else
		is_marked "$img" || fail "$label: $img is not marked incomplete"
	fi
	[ "$(json_field "$T/$label.send.json" "['status']")" = failed ] || fail "$label: send --json status is not failed"
}

# check_source LABEL ORIG SRC: SRC is ORIG plus the built-in writer's writes
# (replayed from its seed and the count in the report), which all succeeded.
check_source() {
	local label=$1 writes stopped
	writes=$(json_field "$T/$label.send.json" "['workload']['writes']")
	stopped=$(json_field "$T/$label.send.json" "['workload']['stopped-by']")
	[ -z "$stopped" ] || fail "$label: the writer stopped with '$stopped'"
	[ "$writes" -ge 1 ] || fail "$label: the writer wrote nothing during the run"
	/usr/bin/python3 - "$2" "$3" "$writes" 4096 1 <<'PY' || fail "$label: the source image is not its old contents plus the writer's $writes writes"
import struct, sys
orig, src, writes, bs, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
M = (1 << 64) - 1
rng = seed
def splitmix():
    global rng
    rng = (rng + 0x9E3779B97F4A7C15) & M
    z = rng
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
img = bytearray(open(orig, "rb").read())
nslots = len(img) // bs
for _ in range(writes):
    off = splitmix() % nslots * bs
    img[off:off + bs] = b"".join(struct.pack("<Q", splitmix()) for _ in range(bs // 8))
sys.exit(0 if bytes(img) == open(src, "rb").read() else 1)
PY
}

# send_with_writer LABEL SRC-IMAGE: a send of SRC-IMAGE (device d0) under
# the built-in writer, to the receiver started last; sets SEND_RC, RECV_RC.
# The stream is capped at 16 MiB/s so the run lasts long enough for writes.
send_with_writer() {
	local label=$1
	"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$2" \
		--workload d0,bs=4K,rate=2M --max-bandwidth 16M --timeout 30 --json \
		>"$T/$label.send.json" 2>"$T/$label.send.err"
	SEND_RC=$?
	wait_rc "$RECV_PID"
	RECV_RC=$RC
}

# ---- ENOSPC at the destination --------------------------------------------
mkdir -p "$T/small"
mount -t tmpfs -o size=8M blkmig-test "$T/small" || skip "cannot mount a tmpfs here"
MOUNTS+=("$T/small")
make_random "$T/enospc.src" $size 31
cp "$T/enospc.src" "$T/enospc.orig"
start_receiver enospc --device d0="$T/small/d.img" --create --max-refused 1 --timeout 30
send_with_writer enospc "$T/enospc.src"
check_failed enospc "$SEND_RC" "$RECV_RC" "$T/small/d.img" \
	"^blkmig: send: destination failed: .*No space left on device" \
	"^blkmig: receive: .*d0.*No space left on device"
check_source enospc "$T/enospc.orig" "$T/enospc.src"
pass "ENOSPC at the destination (the writer wrote $(json_field "$T/enospc.send.json" "['workload']['writes']") times meanwhile): $(cat "$T/enospc.err")"
umount "$T/small"

if [ -z "$ERRDEV" ]; then
	# The ENOSPC case ran: not a skip of the whole test, but say so.
	echo "SKIP: EIO at the destination, read errors at the source: no device-mapper (dmsetup version failed) and no qemu-storage-daemon with /dev/fuse"
	exit 0
fi
echo "disk-faults: error devices through $ERRDEV"

# ---- EIO at the destination -----------------------------------------------
# eio_dest LABEL DEVICE RECEIVE-PATTERN: a migration into DEVICE, whose
# faulty MiB fails it.
eio_dest() {
	local label=$1 dev=$2
	make_random "$T/$label.src" $size 32
	cp "$T/$label.src" "$T/$label.orig"
	start_receiver "$label" --device d0="$dev" --max-refused 1 --timeout 30
	send_with_writer "$label" "$T/$label.src"
	check_failed "$label" "$SEND_RC" "$RECV_RC" "$dev" \
		"^blkmig: send: destination failed: .*Input/output error" "$3"
	check_source "$label" "$T/$label.orig" "$T/$label.src"
}
truncate -s $size "$T/eio.back"
error_device eio "$T/eio.back"
if [ "$ERRDEV" = dm ]; then
	# A block device is written through the page cache: the error comes
	# with the writeback, at the pass's fdatasync at the latest.
	eio_dest eio "$DEV" "^blkmig: receive: .*d0.*Input/output error"
else
	# The FUSE export writes through: pwrite itself fails.
	eio_dest eio "$DEV" "^blkmig: receive: .*d0 at offset $errat.*Input/output error"
fi
pass "EIO at the destination ($ERRDEV): $(cat "$T/eio.err")"
if [ "$ERRDEV" = fuse ]; then
	# What dm gives, a block device whose writeback fails: a loop device
	# over the FUSE export.
	loop=$(losetup -f --show "$DEV") || fail "eio-wb: losetup"
	LOOPS+=("$loop")
	eio_dest eio-wb "$loop" "^blkmig: receive: .*d0.*$loop.*Input/output error"
	pass "EIO at the destination's writeback (loop over fuse): $(cat "$T/eio-wb.err")"
fi

# ---- read errors at the source --------------------------------------------
make_random "$T/rd.back" $size 33
error_device rd "$T/rd.back"
start_receiver rd --device d0="$T/rd.dst" --create --max-refused 1 --timeout 30
"$BLKMIG" send --to "127.0.0.1:$RECV_PORT" --device d0="$DEV" --timeout 30 --json \
	>"$T/rd.send.json" 2>"$T/rd.send.err"
SEND_RC=$?
wait_rc "$RECV_PID"
check_failed rd "$SEND_RC" "$RC" "$T/rd.dst" \
	"^blkmig: send: read d0 at offset $errat: .*$DEV.*Input/output error" \
	"^blkmig: receive: source aborted: read d0 at offset $errat"
cmp -s "$T/rd.back" "$DEV" 2>/dev/null || {
	# the faulty range cannot be read back: compare around it
	cmp -s -n $errat "$T/rd.back" "$DEV" || fail "rd: the source device changed"
}
pass "read error at the source ($ERRDEV): $(cat "$T/rd.send.err")"
