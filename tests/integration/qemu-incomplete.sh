#!/usr/bin/env bash
# Incomplete QEMU streams (crafted after QEMU-STREAM.md): without a shared
# base QEMU sends every chunk of every device, so a stream that leaves out a
# chunk, a whole configured device, or all block data is refused by
# `receive --format qemu` and `serve --incoming --format qemu`: exit 1, one
# line naming the device and its first missing range, the image still
# marked incomplete.  With --shared-base (QEMU's inc: true) the unsent
# chunks are the base's and the same stream is accepted.
. "$(dirname "$0")/lib.sh"
requires python3

# craft OUT SPEC: a QEMU 7.2 stream with one "block" section whose PART
# carries the records of SPEC ("dev:chunk:d" data, "dev:chunk:z" zero,
# comma-separated; chunk i of the data holds the byte i + 1).
craft() {
	python3 - "$1" "$2" <<'PY'
import struct, sys
out, spec = sys.argv[1], sys.argv[2]
MiB = 1 << 20
def counted(s): return bytes([len(s)]) + s.encode()
def start(sid, name): return struct.pack(">BI", 1, sid) + counted(name) + struct.pack(">II", 0, 1)
def short(t, sid): return struct.pack(">BI", t, sid)
eos = struct.pack(">Q", 2)
s = struct.pack(">II", 0x5145564D, 3) + struct.pack(">BI", 7, 4) + b"none"
s += start(1, "block") + eos + short(0x7E, 1) + short(2, 1)
for r in filter(None, spec.split(",")):
    dev, idx, kind = r.split(":")
    idx = int(idx)
    if kind == "d":
        s += struct.pack(">Q", idx * MiB | 1) + counted(dev) + bytes([idx + 1]) * MiB
    else:
        s += struct.pack(">Q", idx * MiB | 9) + counted(dev)
s += eos + short(0x7E, 1) + short(3, 1) + struct.pack(">Q", 100 << 9 | 4) + eos + short(0x7E, 1)
json = b'{"page_size": 4096, "devices": []}'
s += b"\x00" + struct.pack(">BI", 6, len(json)) + json
open(out, "wb").write(s)
PY
}

# feed PORT FILE: send the stream and close, as QEMU does.
feed() {
	python3 - "$1" "$2" <<'PY' || fail "could not send the stream"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
try:
    s.sendall(open(sys.argv[2], "rb").read())
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
except OSError:
    pass
PY
}

fresh() { rm -f "$T"/a.img* "$T"/b.img*; make_random "$T/a.img" $((3 * MiB)) 171; truncate -s $((2 * MiB + 512 * 1024)) "$T/b.img"; }

# receive_case LABEL SPEC WANT_RC PATTERN [RECEIVE-ARGS...]
receive_case() {
	local label=$1 spec=$2 want=$3 pat=$4
	shift 4
	fresh
	craft "$T/$label.bin" "$spec"
	start_receiver "$label" --format qemu --device d0="$T/a.img" --device d1="$T/b.img" --timeout 10 --max-refused 1 --retry-for 0 "$@"
	feed "$RECV_PORT" "$T/$label.bin"
	wait_rc "$RECV_PID"
	if [ "$want" = 0 ]; then
		[ "$RC" = 0 ] || { cat "$T/$label.err" >&2; fail "$label: refused"; }
		is_marked "$T/a.img" || is_marked "$T/b.img" && fail "$label: still marked incomplete"
		pass "$label: accepted, marks cleared"
		return
	fi
	expect_error "$RC" 1 "$T/$label.err" "$pat"
	[ "$(wc -l <"$T/$label.err")" = 1 ] || { cat "$T/$label.err" >&2; fail "$label: more than one line"; }
	is_marked "$T/a.img" && is_marked "$T/b.img" || fail "$label: the mark was cleared"
	pass "$label: $(cat "$T/$label.err")"
}

all="d0:0:d,d0:1:z,d0:2:d,d1:0:d,d1:1:d,d1:2:z"
receive_case complete "$all" 0 ""
receive_case missing-chunk "d0:0:d,d0:2:d,d1:0:d,d1:1:d,d1:2:z" 1 \
	"device d0: the source carried 2 of 3 chunks: the migration is incomplete \(first missing: 1\.0 MiB at offset 1048576\)"
receive_case missing-device "d0:0:d,d0:1:z,d0:2:d" 1 \
	"device d1: the source carried 0 of 3 chunks: the migration is incomplete \(first missing: 2\.5 MiB at offset 0\)"
receive_case no-block-data "" 1 \
	"device d0: the source carried 0 of 3 chunks: the migration is incomplete \(first missing: 3\.0 MiB at offset 0\).*--shared-base"
receive_case shared-base "d0:1:d" 0 "" --shared-base
python3 - "$T/a.img" <<'PY' || fail "shared-base: contents"
import random, sys
d = open(sys.argv[1], "rb").read()
r = random.Random(171)
base = r.randbytes(1 << 20) + r.randbytes(1 << 20) + r.randbytes(1 << 20)
assert d[:1 << 20] == base[:1 << 20], "chunk 0 is not the base's"
assert d[1 << 20:2 << 20] == bytes([2]) * (1 << 20), "chunk 1 is not the stream's"
assert d[2 << 20:] == base[2 << 20:], "chunk 2 is not the base's"
PY
pass "shared-base: the unsent chunks keep the base's contents"

# The same defect through a daemon: serve --incoming refuses to serve.
fresh
craft "$T/serve.bin" "d0:0:d,d0:2:d,d1:0:d,d1:1:d,d1:2:z"
start_serve srv --incoming 127.0.0.1:0 --format qemu --device d0="$T/a.img" --device d1="$T/b.img"
feed "$INCOMING_PORT" "$T/serve.bin"
wait_rc "$SERVE_PID"
expect_error "$RC" 1 "$T/srv.err" \
	"incoming migration failed: device d0: the source carried 2 of 3 chunks: the migration is incomplete \(first missing: 1\.0 MiB at offset 1048576\)"
is_marked "$T/a.img" && is_marked "$T/b.img" || fail "serve: the mark was cleared"
pass "serve --incoming: $(grep -m1 incomplete "$T/srv.err")"
