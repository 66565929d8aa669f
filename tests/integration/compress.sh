#!/usr/bin/env bash
# --compress: compressed chunks round-trip (zstd, zstd:LEVEL, auto) and the
# report says how many were compressed and what they took on the wire; a
# destination that does not take them (receive/serve --no-compress, or an
# older blkmig that does not know the capability) refuses --compress zstd
# with one clear error and nothing written, while auto migrates raw;
# incompressible chunks travel raw; a hostile source's compressed records
# are refused; bad option values are usage errors.
. "$(dirname "$0")/lib.sh"
# Each send hands its image over; the next send of it takes it back (--reclaim).
requires cmp python3 md5sum

# make_text PATH SIZE: text files from /usr/share, end to end, repeated
# until SIZE (no zero chunk); a generated text if there are too few.
make_text() {
	python3 - "$1" "$2" <<'PY'
import os, sys, random
path, size = sys.argv[1], int(sys.argv[2])
data = bytearray()
for root in ("/usr/share/common-licenses", "/usr/share/doc", "/usr/share/perl5", "/usr/share/X11"):
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                b = open(p, "rb").read(1 << 20)
            except OSError:
                continue
            if b and b"\0" not in b[:4096] and not b.startswith(b"\x1f\x8b"):
                data += b
            if len(data) >= 8 << 20:
                break
if len(data) < 1 << 20:
    r = random.Random(5)
    words = ["block", "migration", "chunk", "dirty", "bitmap", "stream", "the", "of", "and"]
    data = bytearray(" ".join(r.choice(words) for _ in range(300000)).encode())
with open(path, "wb") as out:
    left = size
    while left:
        n = min(left, len(data))
        out.write(data[:n])
        left -= n
PY
}

# send_ok LABEL SRC DST SEND-ARGS...: a send -> receive that must complete
# and leave identical images; the reports in $T/LABEL.{send.json,out}.
send_ok() {
	local label=$1 src=$2 dst=$3
	shift 3
	start_receiver "$label" --device d0="$dst" --create --json
	"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$src" --json "$@" \
		>"$T/$label.send.json" 2>"$T/$label.send.err" ||
		{ cat "$T/$label.send.err" "$T/$label.err" >&2; fail "$label: send failed"; }
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/$label.err" >&2; fail "$label: receive exited $RC"; }
	cmp "$src" "$dst" || fail "$label: the destination differs from the source"
	[ "$(json_field "$T/$label.send.json" "['status']")" = completed ] || fail "$label: not completed"
}

field() { json_field "$T/$1.send.json" "['$2']"; }

# ---- 1. a compressible image round-trips ------------------------------------------

make_text "$T/text.img" $((24 * MiB))
for spec in zstd zstd:19 zstd:-5; do
	label=text-${spec/:/-}
	send_ok "$label" "$T/text.img" "$T/$label.dst" --compress "$spec"
	[ "$(field "$label" compress)" = zstd ] || fail "$label: report says compress $(field "$label" compress)"
	[ "$(field "$label" compressed-chunks)" = 24 ] ||
		fail "$label: $(field "$label" compressed-chunks) of 24 chunks compressed"
	data=$(field "$label" data-bytes) payload=$(field "$label" payload-bytes) wire=$(field "$label" transferred)
	[ "$data" = $((24 * MiB)) ] || fail "$label: data-bytes $data"
	[ "$payload" -lt "$data" ] && [ "$wire" -lt "$data" ] ||
		fail "$label: $wire bytes on the wire ($payload of payload) for $data of data"
	pass "$label: 24 MiB of text as $wire bytes on the wire (ratio $(field "$label" compression-ratio))"
done
# Without --compress nothing is compressed, and the report says so.
send_ok text-off "$T/text.img" "$T/text-off.dst"
[ "$(field text-off compress)" = off ] && [ "$(field text-off compressed-chunks)" = 0 ] ||
	fail "off: compressed chunks without --compress"
[ "$(field text-off transferred)" -gt $((24 * MiB)) ] || fail "off: fewer bytes on the wire than data"
pass "without --compress: $(field text-off transferred) bytes on the wire, nothing compressed"

# A destination's inspect of a compressed stream is not needed: the
# receiver's own report counts the bytes it read.
[ "$(json_field "$T/text-zstd.out" "['transferred']")" -lt $((24 * MiB)) ] ||
	fail "the receiver read more bytes than the data"
pass "the receiver read $(json_field "$T/text-zstd.out" "['transferred']") bytes for 24 MiB"

# ---- 2. a destination that does not take compressed chunks ----------------------------

start_receiver nocomp --device d0="$T/nocomp.dst" --create --no-compress --json
NOCOMP_PID=$RECV_PID
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/text.img" --compress zstd 2>"$T/nocomp.send.err"
expect_error $? 1 "$T/nocomp.send.err" \
	"the destination does not accept compressed chunks \(an older blkmig, or one started with --no-compress\): run without --compress"
[ "$(wc -l <"$T/nocomp.send.err")" = 1 ] || { cat "$T/nocomp.send.err" >&2; fail "more than one line"; }
[ -e "$T/nocomp.dst" ] && fail "a refused migration created the image"
pass "--no-compress destination: $(cat "$T/nocomp.send.err")"
# auto: the same receiver (still waiting) gets the chunks raw.
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/text.img" --compress auto --json \
	>"$T/nocomp-auto.send.json" 2>"$T/nocomp-auto.send.err" ||
	{ cat "$T/nocomp-auto.send.err" "$T/nocomp.err" >&2; fail "auto to a --no-compress destination failed"; }
wait_rc "$NOCOMP_PID"
[ "$RC" = 0 ] || { cat "$T/nocomp.err" >&2; fail "--no-compress receive exited $RC"; }
cmp "$T/text.img" "$T/nocomp.dst" || fail "auto to --no-compress: differs"
[ "$(field nocomp-auto compressed-chunks)" = 0 ] && [ "$(field nocomp-auto compress)" = off ] ||
	fail "auto to --no-compress: compressed chunks went out"
grep -q "does not accept compressed chunks" "$T/nocomp.err" || fail "the receiver did not log the refusal"
pass "auto to a --no-compress destination migrates raw ($(head -1 "$T/nocomp-auto.send.err"))"

# An older blkmig refuses the capability bit it does not know; the source
# says the same sentence.  (A stand-in that answers HELLO as version 2
# blkmig without compression did.)
python3 - "$T/old.port" >"$T/old.log" 2>&1 <<'PY' &
import socket, struct, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
c, _ = s.accept()
c.settimeout(10)
c.recv(65536)
reason = b"handshake: hello: unknown capability bits 0x80 (known 0x3f)"
c.sendall(struct.pack(">BII", 0x83, 4 + len(reason), 74) + reason)  # ERROR, EBADMSG
c.close()
PY
OLD_PID=$!
BG_PIDS+=("$OLD_PID")
for _ in $(seq 1 200); do [ -s "$T/old.port" ] && break; sleep 0.025; done
"$BLKMIG" send --reclaim --to "127.0.0.1:$(cat "$T/old.port")" --device d0="$T/text.img" --compress zstd 2>"$T/old.send.err"
expect_error $? 1 "$T/old.send.err" "the destination does not accept compressed chunks \(an older blkmig"
wait_rc "$OLD_PID"
pass "older destination: $(cat "$T/old.send.err")"

# ---- 3. chunks that do not shrink travel raw -------------------------------------------

make_random "$T/random.img" $((16 * MiB)) 31
send_ok random "$T/random.img" "$T/random.dst" --compress zstd
[ "$(field random compressed-chunks)" = 0 ] && [ "$(field random raw-chunks)" = 16 ] &&
	[ "$(field random incompressible-chunks)" = 16 ] ||
	fail "random: $(field random compressed-chunks) compressed, $(field random raw-chunks) raw"
[ "$(field random payload-bytes)" = $((16 * MiB)) ] || fail "random: payload $(field random payload-bytes)"
pass "random data: all 16 chunks tried, none shrank, all sent raw"

# Mixed: text, random and zero chunks interleaved, 1 MiB each.
python3 - "$T/text.img" "$T/random.img" "$T/mixed.img" <<'PY'
import sys
text, rnd = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
with open(sys.argv[3], "wb") as out:
    for i in range(12):
        kind = i % 3
        out.write(text.read(1 << 20) if kind == 0 else rnd.read(1 << 20) if kind == 1 else bytes(1 << 20))
PY
send_ok mixed "$T/mixed.img" "$T/mixed.dst" --compress zstd
[ "$(field mixed compressed-chunks)" = 8 ] && [ "$(field mixed raw-chunks)" = 4 ] &&
	[ "$(field mixed incompressible-chunks)" = 4 ] ||
	fail "mixed: $(field mixed compressed-chunks) compressed, $(field mixed raw-chunks) raw"
pass "mixed image: 8 chunks compressed (4 text, 4 zero), 4 random ones raw"
# With --zero-blocks the zero chunks stay ZERO records.
send_ok mixed-zb "$T/mixed.img" "$T/mixed-zb.dst" --compress zstd --zero-blocks
[ "$(field mixed-zb compressed-chunks)" = 4 ] && [ "$(json_field "$T/mixed-zb.send.json" "['devices'][0]['zero-chunks']")" = 4 ] ||
	fail "mixed --zero-blocks: $(field mixed-zb compressed-chunks) compressed"
pass "mixed image with --zero-blocks: zeros as ZERO records, 4 text chunks compressed"
# auto, uncapped on loopback: whatever it decides, the image arrives whole.
send_ok mixed-auto "$T/mixed.img" "$T/mixed-auto.dst" --compress auto --chunk-size 64K
[ "$(field mixed-auto compress)" = auto ] || fail "mixed auto: compress $(field mixed-auto compress)"
pass "auto: $(field mixed-auto compressed-chunks) compressed, $(field mixed-auto raw-chunks) raw"

# ---- 4. the daemon's migration ----------------------------------------------------------

cp "$T/mixed.img" "$T/live.img"
start_serve dst --incoming 127.0.0.1:0 --device d0="$T/live.dst" --create
DST_PID=$SERVE_PID DST_IN=$INCOMING_PORT
start_serve src --device d0="$T/live.img" --control "$T/src.sock"
SRC_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" --compress zstd --after refuse --wait --json \
	>"$T/live.json" 2>"$T/live.err" || { cat "$T/live.err" "$T/src.err" "$T/dst.err" >&2; fail "migrate --compress zstd"; }
[ "$(json_field "$T/live.json" "['status']")" = completed ] || fail "daemon: not completed"
[ "$(json_field "$T/live.json" "['compressed-chunks']")" -gt 0 ] || fail "daemon: nothing compressed"
cmp "$T/live.img" "$T/live.dst" || fail "daemon: the destination differs"
pass "serve + migrate --compress zstd: $(json_field "$T/live.json" "['compressed-chunks']") chunks compressed, $(json_field "$T/live.json" "['transferred']") bytes on the wire"
stop "$SRC_PID"
stop "$DST_PID"

# A serve --incoming --no-compress destination refuses migrate --compress zstd.
start_serve dst2 --incoming 127.0.0.1:0 --device d0="$T/live2.dst" --create --no-compress
DST_PID=$SERVE_PID DST_IN=$INCOMING_PORT
make_random "$T/live2.img" $((4 * MiB)) 41
start_serve src2 --device d0="$T/live2.img" --control "$T/src2.sock"
SRC_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/src2.sock" --to "127.0.0.1:$DST_IN" --compress zstd --wait 2>"$T/live2.err"
expect_error $? 1 "$T/live2.err" "does not accept compressed chunks"
[ -e "$T/live2.dst" ] && fail "daemon: a refused migration created the image"
pass "serve --no-compress refuses migrate --compress zstd: $(cat "$T/live2.err")"
stop "$SRC_PID"
stop "$DST_PID"

# ---- 5. bad option values -------------------------------------------------------------

bad() { # command args..., then the pattern
	local pat=${*: -1}
	"$BLKMIG" "${@:1:$#-1}" 2>"$T/bad.err"
	expect_error $? 2 "$T/bad.err" "$pat"
	pass "usage error: $(head -1 "$T/bad.err")"
}
bad send --to 127.0.0.1:1 --device d0="$T/text.img" --compress zstd:999 "--compress: 'zstd:999': the zstd level must be"
bad send --to 127.0.0.1:1 --device d0="$T/text.img" --compress lz4 "--compress: unknown compression 'lz4'"
bad send --to 127.0.0.1:1 --device d0="$T/text.img" --compress zstd: "--compress: 'zstd:': a level must follow"
bad send --to 127.0.0.1:1 --device d0="$T/text.img" --compress zstd --format qemu "compression needs the native format"
bad migrate --control "$T/none.sock" --to 127.0.0.1:1 --compress lz4 "--compress: unknown compression 'lz4'"
bad receive --listen 127.0.0.1:0 --device d0="$T/x.img" --no-compress=yes "doesn't allow an argument|invalid option"

# ---- 6. a hostile source's compressed records ------------------------------------------

if [ -n "${BLKMIG_CRAFT:-}" ]; then
	size=$((8 * MiB))
	hostile() { # fault, expected pattern
		local fault=$1 pat=$2
		rm -f "$T/h.img" "$T/h.img.blkmig-incomplete"
		start_receiver "$fault" --device d0="$T/h.img,size=$size" --create --timeout 10 --max-refused 1 --retry-for 0
		"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault "$fault" >"$T/$fault.craft" 2>&1 ||
			{ cat "$T/$fault.craft" "$T/$fault.err" >&2; fail "$fault: craft saw an unexpected answer"; }
		wait_rc "$RECV_PID"
		expect_error "$RC" 1 "$T/$fault.err" "$pat"
		[ "$(wc -l <"$T/$fault.err")" = 1 ] || { cat "$T/$fault.err" >&2; fail "$fault: more than one line"; }
		pass "$fault: $(cat "$T/$fault.err")"
	}
	hostile zstd-unannounced "a compressed chunk, which this stream did not announce"
	hostile zstd-corrupt "record at stream offset [0-9]+: corrupt compressed chunk"
	hostile zstd-size "record at stream offset [0-9]+: the compressed chunk is smaller than a chunk"
	hostile zstd-long "compressed chunk of 1048576 bytes \(must be 1..1048575"
	# The same records, well formed, are accepted.
	rm -f "$T/h.img"
	start_receiver zstd-ok --device d0="$T/h.img" --create --timeout 10
	"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault zstd-ok >"$T/zok.craft" 2>&1 ||
		{ cat "$T/zok.craft" "$T/zstd-ok.err" >&2; fail "zstd-ok: craft"; }
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/zstd-ok.err" >&2; fail "zstd-ok: receive exited $RC"; }
	python3 -c "
import sys
d = open(sys.argv[1], 'rb').read()
assert all(d[i << 20:(i + 1) << 20] == bytes([(i + 1) & 0xff]) * (1 << 20) for i in range(8))
" "$T/h.img" || fail "zstd-ok: the chunks did not arrive"
	pass "zstd-ok: a crafted stream of compressed chunks is applied"
fi
