#!/usr/bin/env bash
# Every receiver error path, driven by `craft` (a deliberately broken
# source): exit status 1, one clear message, nothing written outside the
# device, and the image marked incomplete when the handshake had passed.
. "$(dirname "$0")/lib.sh"
: "${BLKMIG_CRAFT:?}"
requires python3 md5sum

size=$((5 * MiB))
neighbour="$T/neighbour.img"
make_random "$neighbour" $MiB 61
nsum=$(md5sum <"$neighbour")

check() { # fault, expected pattern, whether the image is marked afterwards [receive options]
	local fault=$1 pat=$2 marked=$3
	shift 3
	rm -f "$T/d.img"
	make_random "$T/d.img" $size 62
	start_receiver "$fault" --device d0="$T/d.img" --timeout 10 --max-refused 1 --retry-for 0 "$@"
	"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault "$fault" >"$T/$fault.craft" 2>&1 ||
		{ cat "$T/$fault.craft" >&2; fail "$fault: craft saw an unexpected answer"; }
	wait_rc "$RECV_PID"; rc=$RC
	expect_error "$rc" 1 "$T/$fault.err" "$pat"
	[ "$(wc -l <"$T/$fault.err")" = 1 ] || { cat "$T/$fault.err" >&2; fail "$fault: more than one line on stderr"; }
	[ "$(stat -c %s "$T/d.img")" = $size ] || fail "$fault: the image changed size"
	[ "$(md5sum <"$neighbour")" = "$nsum" ] || fail "$fault: a neighbouring file changed"
	if [ "$marked" = yes ]; then
		is_marked "$T/d.img" || fail "$fault: image not marked incomplete"
	else
		is_marked "$T/d.img" && fail "$fault: image marked although nothing was written"
		make_random "$T/same.img" $size 62
		cmp -s "$T/d.img" "$T/same.img" || fail "$fault: image written before the handshake passed"
	fi
	pass "$fault: $(cat "$T/$fault.err")"
}

check truncated "connection closed" yes
check truncated-hello "handshake: .*connection closed" no
check beyond "offset 0x[0-9a-f]+ beyond device d0" yes
check unknown-device "unknown device 'nosuchdev'" yes
check hello-device "unknown device 'stranger'" no
check unknown-flag "unknown flags 0x80" yes
check size-mismatch "size mismatch" no
check digest-mismatch "digest mismatch" yes
check bad-magic "bad magic" no
check bad-version "unsupported version 99" no
check abort "source aborted: craft aborts on purpose" yes
check no-complete "closed the connection at stream offset [0-9]+, before completing" yes
check no-commit "after the acknowledgement, before the source.s commit" yes
check missing-chunk "carried 4 of 5 chunks: the migration is incomplete" yes
check shared-base "accept it with receive --shared-base" no
check write-unannounced "a WRITE record, which this stream did not announce" yes
check write-sequence "write 2 out of sequence .expected 1." yes
check write-beyond "write of 5 bytes at offset [0-9]+ beyond device d0" yes
check fence-unannounced "a FENCE record, which this stream did not announce" yes
# The write lane (craft joins one): what its writes and the main stream's
# FENCEs wait for never comes, or comes on the wrong connection.  The
# waits are bounded by the idle timeout (2 s here).
check lane-after-never "write lane: .*write 1 follows chunk record 6, which did not come in 2 s .[0-9] came." yes --timeout 2
check lane-fence-beyond "FENCE after write 2, which did not come in 2 s .1 came." yes --timeout 2
check lane-closed-fence "FENCE after write 2, but the write lane closed after write 1" yes
check lane-write-main "a WRITE on the main stream, while the write lane carries them" yes

# accepted LABEL SEED FAULT [receive options]: a crafted stream the
# receiver must take, into a fresh d.img of random data (SEED).
accepted() {
	local label=$1 seed=$2 fault=$3
	shift 3
	rm -f "$T/d.img"
	make_random "$T/d.img" $size "$seed"
	start_receiver "$label" --device d0="$T/d.img" "$@"
	"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault "$fault" >"$T/$label.craft" 2>&1 ||
		{ cat "$T/$label.craft" >&2; fail "$fault: craft"; }
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/$label.err" >&2; fail "$fault: refused"; }
}

# The same stream, well formed, is accepted: the faults above are the cause.
accepted ok 62 ok
python3 - "$T/d.img" <<'PY' || fail "ok: contents"
import sys
d = open(sys.argv[1], "rb").read()
for i in range(5):
    assert d[i << 20:(i + 1) << 20] == bytes([i + 1]) * (1 << 20), i
PY
is_marked "$T/d.img" && fail "ok: still marked"
pass "well-formed crafted stream accepted"

# A shared-base stream is accepted when the receiver opts in; the chunk it
# leaves out keeps the image's own data.
make_random "$T/base.img" $size 62
accepted sb 62 shared-base --shared-base
cmp -n $MiB "$T/d.img" "$T/base.img" || fail "shared-base: the chunk not sent was changed"
is_marked "$T/d.img" && fail "shared-base: still marked"
pass "shared-base stream accepted with receive --shared-base"

# A mirrored WRITE (active mode) is applied over the chunk it lands in,
# acknowledged, and the digests agree.
accepted mo 62 mirror-ok
[ "$(dd if="$T/d.img" bs=1 skip=1000 count=5 status=none)" = hello ] || fail "mirror-ok: the WRITE is not in the image"
pass "a mirrored WRITE is applied and acknowledged"

# The same on the write lane: the WRITE follows every chunk record, a
# FENCE names it before EOS; it is applied, acknowledged, and counted in
# the digests.
accepted lo 62 lane-ok
[ "$(dd if="$T/d.img" bs=1 skip=1000 count=5 status=none)" = hello ] || fail "lane-ok: the WRITE is not in the image"
pass "a WRITE on a crafted write lane is applied and acknowledged"

# In active mode the receiver syncs a pass beside what follows its EOS:
# a WRITE sent then lands and is acknowledged; a chunk record sent then
# (a source that does not wait for SYNCED) waits for that pass end and
# lands over it.  craft's digests must match the image either way.
accepted ma 63 mirror-after-eos
[ "$(dd if="$T/d.img" bs=1 skip=1000 count=5 status=none)" = hello ] || fail "mirror-after-eos: the WRITE is not in the image"
pass "a mirrored WRITE sent while the receiver syncs the pass is applied and acknowledged"
accepted da 64 data-after-eos
grep -q "receiver acknowledged" "$T/da.craft" || fail "data-after-eos: not acknowledged"
pass "a chunk record sent before the pass's SYNCED waits for that pass end and lands"
