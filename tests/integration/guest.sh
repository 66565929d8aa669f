#!/usr/bin/env bash
# A real QEMU 7.2 guest writes to its disk, a `blkmig serve` export, while
# the disk migrates live to another daemon; after the switch-over the
# source forwards the guest's requests to the destination, QEMU is then
# re-pointed at the destination's export over QMP without a restart, and
# the source daemon is stopped while the guest still writes.
#
# The guest is Debian's kernel (the kit that scripts/install-deps.sh
# unpacks into BLKMIG_GUEST_DIR, default /var/cache/blkmig/guest) with an
# initramfs built here: busybox-static, the virtio modules and
# tests/guest/writer.c, compiled with `gcc -static`.  The writer puts a
# self-checking sequence of 4 KiB blocks on /dev/vda and logs each batch on
# the serial console ($T/console.log); the same program verifies the
# destination's image against that log at the end.
#
# Checks: no I/O error in the guest (console and dmesg), no failed write,
# the guest powers off by itself, every block written verifies on the
# destination, the source image does not change after the switch-over, and
# the source daemon has no client left after the re-pointing and exits 0.
. "$(dirname "$0")/lib.sh"
requires qemu-system-x86_64 gcc python3 md5sum ss readelf
HERE=$(cd "$(dirname "$0")" && pwd)
GUEST_SRC=$HERE/../guest

# On failure show the guest's console and the daemons' logs; the cleanup of
# lib.sh then kills QEMU and the daemons.
fail() {
	if [ -s "$T/console.log" ]; then
		echo "--- guest console (last 40 lines of $(grep -c . "$T/console.log"))" >&2
		tail -n 40 "$T/console.log" | tr -d '\r' >&2
	fi
	for f in src.err dst.err qemu.err mig.err; do
		[ -s "$T/$f" ] && { echo "--- $f" >&2; tail -n 20 "$T/$f" >&2; }
	done
	echo "FAIL: $*" >&2
	exit 1
}
# A missing kit is a skip on a developer's machine, a failure in CI, where
# install-deps.sh has run.
kit_missing() { if [ -n "${CI:-}" ]; then fail "$*"; else skip "$*"; fi; }

kit=${BLKMIG_GUEST_DIR:-/var/cache/blkmig/guest}/current
kernel=$(ls "$kit"/boot/vmlinuz-* 2>/dev/null | head -n 1)
moddir=$(ls -d "$kit"/lib/modules/* 2>/dev/null | head -n 1)
[ -n "$kernel" ] && [ -s "$moddir/modules.dep" ] ||
	kit_missing "no guest kernel kit in $kit (scripts/install-deps.sh unpacks it)"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && ! readelf -l "$busybox" | grep -q INTERP ||
	kit_missing "needs a static busybox (busybox-static)"

# ------------------------------------------------------------ guest kit
gcc -static -std=c11 -O2 -Wall -Wextra -Wshadow -Wvla -o "$T/writer" "$GUEST_SRC/writer.c" 2>"$T/gcc.err" ||
	{ cat "$T/gcc.err" >&2; kit_missing "gcc -static cannot build the guest writer (libc6-dev)"; }
mods=$(python3 "$GUEST_SRC/mkinitramfs.py" "$T/initrd" "$busybox" "$T/writer" "$GUEST_SRC/init" \
	"$moddir" virtio_pci virtio_blk) || fail "mkinitramfs"
pass "initramfs of $(($(stat -c %s "$T/initrd") / 1024)) KiB: busybox, writer, $mods"

# ------------------------------------------------------------ daemons
size=$((64 * MiB))
make_random "$T/src.img" $size 7
start_serve dst --incoming 127.0.0.1:0 --device d0="$T/dst.img" --create
DST_NBD=$NBD_PORT DST_IN=$INCOMING_PORT DST_PID=$SERVE_PID
start_serve src --device d0="$T/src.img" --control "$T/src.sock"
SRC_NBD=$NBD_PORT SRC_PID=$SERVE_PID

# ------------------------------------------------------------ the guest
# The serial port is a socket (so the host can send the writer its 'q') that
# QEMU also logs to console.log, connected or not.  writer.secs bounds the
# run should the 'q' never come.  Small batches with a pause between them
# keep the writer from going round the 64 MiB disk in the time the test
# takes, so that blocks written before the migration are still there to
# be checked on the destination at the end.
qemu-system-x86_64 -machine q35 -accel tcg -m 256 -nodefaults -nographic -no-reboot \
	-kernel "$kernel" -initrd "$T/initrd" \
	-append "console=ttyS0 quiet panic=-1 writer.secs=90 writer.batch=4 writer.pause-ms=5" \
	-chardev socket,id=ser0,path="$T/serial.sock",server=on,wait=off,logfile="$T/console.log" \
	-serial chardev:ser0 \
	-blockdev driver=nbd,node-name=nbd0,server.type=inet,server.host=127.0.0.1,server.port="$SRC_NBD",export=d0 \
	-blockdev driver=raw,node-name=disk0,file=nbd0 \
	-device virtio-blk-pci,drive=disk0 \
	-qmp unix:"$T/qmp.sock",server=on,wait=off \
	>"$T/qemu.out" 2>"$T/qemu.err" </dev/null &
QEMU_PID=$!
BG_PIDS+=("$QEMU_PID")

# (-a: the console log holds the firmware's escape sequences and may hold
# bytes that are not text.)
batches() {
	local n
	n=$(grep -ac '^B [0-9]' "$T/console.log" 2>/dev/null)
	echo "${n:-0}"
}
# wait_batches N SECS WHAT: until the console shows N batch lines.
wait_batches() {
	local want=$1 secs=$2 i
	for ((i = 0; i < secs * 10; i++)); do
		[ "$(batches)" -ge "$want" ] && return 0
		kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited while waiting for $3"
		sleep 0.1
	done
	fail "no $want batches within $secs s ($3; $(batches) so far)"
}
src_nbd_conns() {
	local n
	n=$(ss -Htn state established "( dport = :$SRC_NBD )" | grep -c .)
	echo "${n:-0}"
}

wait_batches 20 60 "the guest to boot and write"
t_boot=$(grep -m1 -o 'guest: up after [0-9.]* s' "$T/console.log" | tr -d '\r')
[ "$(src_nbd_conns)" -ge 1 ] || fail "QEMU is not connected to the source's export"
pass "the guest writes through the source's export ($t_boot)"

# ------------------------------------------------------------ migration
n0=$(batches)
# The defaults: forward after the switch-over, to the export the
# destination announces.
timeout 120 "$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" \
	--wait --json >"$T/mig.json" 2>"$T/mig.err" || fail "migrate --wait failed"
src_sum=$(md5sum <"$T/src.img")
n1=$(batches)
# The newest block on the source is the guest's last write before the
# switch-over; the writes after it went to the destination.
src_newest=$("$T/writer" --newest "$T/src.img") || fail "writer --newest"
[ "$src_newest" -ge 0 ] || fail "no block of the guest's on the source"
[ "$(json_field "$T/mig.json" "['status']")" = completed ] || fail "migration status not completed"
pass "migrated while the guest wrote (batches $n0..$n1 logged while migrate ran), downtime $(json_field "$T/mig.json" "['downtime']") ms"

# The guest goes on through the source, which forwards to the destination.
wait_batches $((n1 + 50)) 30 "writes after the switch-over"
# Without forwarding the source answers ESHUTDOWN: the guest sees I/O
# errors, and the re-pointing below could not even flush the old node.
nfail=$(grep -ac '^B .* FAIL ' "$T/console.log")
[ "$nfail" = 0 ] || { grep -a -m3 '^B .* FAIL ' "$T/console.log" >&2
	fail "I/O errors in the guest after the switch-over: $nfail failed batches (does the source forward?)"; }
"$BLKMIG" status --control "$T/src.sock" --json >"$T/status1.json" 2>&1 || fail "status"
fwd_clients=$(json_field "$T/status1.json" "['forwarding']['clients']") || fail "status --json has no forwarding.clients"
[ "$fwd_clients" -ge 1 ] || fail "the source forwards for $fwd_clients clients while QEMU is connected"
[ "$(json_field "$T/status1.json" "['forwarding']['errors']")" = 0 ] || fail "forwarding errors: $(cat "$T/status1.json")"
[ "$(json_field "$T/status1.json" "['forwarding']['to']")" = "127.0.0.1:$DST_NBD" ] ||
	fail "the source forwards elsewhere than the destination's export: $(cat "$T/status1.json")"
pass "the source forwards the guest's requests: $(json_field "$T/status1.json" "['forwarding']")"

# ------------------------------------------------------------ re-pointing
# A new nbd node on the destination's export; the raw node under the
# virtio-blk device reopened with that node as its file; the old node
# deleted, which closes QEMU's connection to the source.
nr=$(batches)
$QMP "$T/qmp.sock" blockdev-add "{\"driver\": \"nbd\", \"node-name\": \"nbd1\",
	\"server\": {\"type\": \"inet\", \"host\": \"127.0.0.1\", \"port\": \"$DST_NBD\"}, \"export\": \"d0\"}" \
	>"$T/qmp1.out" 2>&1 || { cat "$T/qmp1.out" >&2; fail "blockdev-add of the destination's export"; }
$QMP "$T/qmp.sock" blockdev-reopen '{"options": [{"driver": "raw", "node-name": "disk0", "file": "nbd1"}]}' \
	>"$T/qmp2.out" 2>&1 || { cat "$T/qmp2.out" >&2; fail "blockdev-reopen of disk0 onto nbd1"; }
$QMP "$T/qmp.sock" blockdev-del '{"node-name": "nbd0"}' \
	>"$T/qmp3.out" 2>&1 || { cat "$T/qmp3.out" >&2; fail "blockdev-del of the source's node"; }
$QMP "$T/qmp.sock" query-named-block-nodes '{"flat": true}' >"$T/nodes.json" 2>&1 || fail "query-named-block-nodes"
python3 - "$T/nodes.json" "nbd://127.0.0.1:$DST_NBD/d0" <<'PY' || fail "QEMU's node graph after the re-pointing: $(cat "$T/nodes.json")"
import json, sys
nodes = {n["node-name"]: n for n in json.load(open(sys.argv[1]))}
sys.exit("nbd0" in nodes or nodes["disk0"]["file"] != sys.argv[2])
PY
n2=$(batches)
for _ in $(seq 1 50); do [ "$(src_nbd_conns)" = 0 ] && break; sleep 0.1; done
[ "$(src_nbd_conns)" = 0 ] || fail "QEMU is still connected to the source's export after blockdev-del"
"$BLKMIG" status --control "$T/src.sock" --json >"$T/status2.json" 2>&1 || fail "status"
[ "$(json_field "$T/status2.json" "['forwarding']['clients']")" = 0 ] ||
	fail "the source still forwards for a client after the re-pointing: $(cat "$T/status2.json")"
pass "QEMU re-pointed at the destination over QMP (blockdev-add, blockdev-reopen, blockdev-del): no connection to the source left"

wait_batches $((n2 + 50)) 30 "writes after the re-pointing"
"$BLKMIG" status --control "$T/src.sock" --json >"$T/status3.json" 2>&1 || fail "status"
fwd2=$(json_field "$T/status2.json" "['forwarding']['requests']")
fwd3=$(json_field "$T/status3.json" "['forwarding']['requests']")
[ "$fwd2" = "$fwd3" ] || fail "the source forwarded $((fwd3 - fwd2)) more requests after the re-pointing"
pass "the guest's writes after the re-pointing bypass the source ($fwd3 requests forwarded in all)"
stop "$SRC_PID"
[ "$RC" = 0 ] || fail "the source daemon exited $RC on SIGTERM"
n3=$(batches)
wait_batches $((n3 + 50)) 30 "writes after the source daemon stopped"
pass "the guest writes on after the source daemon stopped"

# ------------------------------------------------------------ the end
# 'q' on the serial port ends the writer; the guest then powers off.
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'q'); s.close()" \
	"$T/serial.sock" || fail "cannot reach the guest's serial port"
for _ in $(seq 1 300); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$QEMU_PID" 2>/dev/null && fail "the guest did not power off within 30 s of its 'q'"
wait_rc "$QEMU_PID"
[ "$RC" = 0 ] || fail "QEMU exited $RC"
tr -d '\r\0' <"$T/console.log" >"$T/console.txt"
grep -q '^guest: done' "$T/console.txt" || fail "the guest did not finish its /init"
summary=$(grep -m1 '^SUMMARY ' "$T/console.txt") || fail "the writer printed no summary"
pass "the guest powered off by itself: $summary"

errs=$(grep -iE 'I/O error|blk_update_request|Buffer I/O|guest-dmesg:|print_req_error' "$T/console.txt")
[ -z "$errs" ] || { echo "$errs" | head -n 10 >&2; fail "I/O errors in the guest"; }
failed=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$summary")
[ "$failed" = 0 ] || { grep -m5 ' FAIL ' "$T/console.txt" >&2; fail "the writer had $failed failed batches"; }
nb=$(sed -n 's/.* batches=\([0-9]*\).*/\1/p' <<<"$summary")
rb=$(sed -n 's/.* read-back=\([0-9]*\).*/\1/p' <<<"$summary")
[ "$rb" = "$nb" ] || fail "the writer read back $rb of its $nb batches intact"
pass "no I/O error in the guest's console or dmesg, no failed write; all $nb batches read back intact in the guest"

stop "$DST_PID"
[ "$RC" = 0 ] || fail "the destination daemon exited $RC"
"$T/writer" --verify "$T/dst.img" <"$T/console.txt" >"$T/verify.out" 2>&1 ||
	{ cat "$T/verify.out" >&2; fail "the destination's image lacks what the guest wrote"; }
pass "destination image: $(cat "$T/verify.out")"
[ "$(md5sum <"$T/src.img")" = "$src_sum" ] || fail "the source image changed after the switch-over"
pass "the source image has not changed since the switch-over"

# ------------------------------------------------------------ figures
python3 - "$T/console.txt" "$n0" "$src_newest" "$(json_field "$T/mig.json" "['downtime']")" "$nr" "$n2" <<'PY'
import re, sys
lines = [l.split() for l in open(sys.argv[1]) if re.match(r"B \d+ ", l)]
n0, newest, downtime = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
nr, n2 = int(sys.argv[5]), int(sys.argv[6])
# k: the batch that holds the first write after the switch-over (the one
# held during the final pause, then forwarded).
k = next((i for i, l in enumerate(lines) if int(l[2]) <= newest + 1 <= int(l[3])), len(lines))
def blocks(sel):
    return sum(int(l[3]) - int(l[2]) + 1 for l in sel if l[6] == "ok")
def ms(l):
    return int(l[4]) / 1000
worst = max(lines, key=lambda l: int(l[4]))
at = max(lines[max(k - 1, 0):k + 2], key=lambda l: int(l[4]))
lat = sorted(int(l[4]) for l in lines)
print(f"PASS: blocks written before the migration {blocks(lines[:n0])}, during it {blocks(lines[n0:k])}, "
      f"after the switch-over {blocks(lines[k:])} (switch-over at batch {k}, seq {newest + 1})")
print(f"PASS: longest write+fsync {ms(worst):.1f} ms (batch {worst[1]}, {int(worst[5]) / 1000:.1f} s into the run); "
      f"at the switch-over {ms(at):.1f} ms (batch {at[1]}; migrate reports a downtime of {downtime} ms); "
      f"median {lat[len(lat) // 2] / 1000:.1f} ms")
# The re-pointing as the host saw it, and the 10 batches logged after (the
# console lags the guest a little).
rp = max(lines[nr:n2 + 10], key=lambda l: int(l[4]))
print(f"PASS: longest write+fsync while QMP re-pointed the disk {ms(rp):.1f} ms (batch {rp[1]}, of {nr}..{n2 + 9})")
PY
