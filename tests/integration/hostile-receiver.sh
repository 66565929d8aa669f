#!/usr/bin/env bash
# A receiver that lies about what it holds: after READY, a fake destination
# sends a STATE or SUMS the source must refuse (more digests than chunks, a
# chunk that does not exist, one offered twice, a device it does not have,
# more than it announced, a partial state for a delta sync).  Each send fails with one clear line,
# before anything is sent, and writes no hand-over record.
. "$(dirname "$0")/lib.sh"
requires python3

make_random "$T/src.img" $((4 * MiB)) 31

# fake NAME CASE: a one-connection destination; sets FAKE_PORT, FAKE_PID.
fake() {
	rm -f "$T/$1.port"
	/usr/bin/python3 - "$T/$1.port" "$2" <<'PY' &
import socket, struct, sys
port_file, case = sys.argv[1], sys.argv[2]
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
with open(port_file + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
import os
os.rename(port_file + ".tmp", port_file)
c, _ = ls.accept()
def rd(n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise SystemExit(0)
        b += x
    return b
fixed = rd(38)
for _ in range(struct.unpack(">H", fixed[36:38])[0]):
    n = rd(1)[0]
    rd(n + 8)
def msg(t, body):
    c.sendall(struct.pack(">BI", t, len(body)) + body)
msg(0x81, struct.pack(">I", 2))                      # READY
def state(held, sums):
    msg(0x86, struct.pack(">IIQ", held, 0, sums))
def sums(dev, chunks):
    msg(0x87, struct.pack(">HI", dev, len(chunks)) +
        b"".join(struct.pack(">Q", ch) + bytes(16) for ch in chunks))
if case == "too-many":      # 4 chunks of 1 MiB: 5 digests cannot be
    state(1, 5)
elif case == "no-such-chunk":
    state(1, 1); sums(0, [4])
elif case == "twice":
    state(1, 2); sums(0, [1]); sums(0, [1])
elif case == "no-such-device":
    state(1, 1); sums(3, [0])
elif case == "over":        # one announced, two sent
    state(1, 1); sums(0, [0, 1])
elif case == "partial-for-delta":
    state(1, 1); sums(0, [0])
try:
    while c.recv(65536):
        pass
except OSError:
    pass
PY
	FAKE_PID=$!
	BG_PIDS+=("$FAKE_PID")
	for _ in $(seq 200); do [ -s "$T/$1.port" ] && break; sleep 0.025; done
	FAKE_PORT=$(cat "$T/$1.port")
}

check() { # CASE PATTERN [send options]
	local c=$1 pat=$2
	shift 2
	rm -f "$T/src.img.blkmig-handover"
	fake "$c" "$c"
	"$BLKMIG" send --to "127.0.0.1:$FAKE_PORT" --device d0="$T/src.img" "$@" >/dev/null 2>"$T/$c.err"
	expect_error $? 1 "$T/$c.err" "$pat"
	[ "$(grep -c . "$T/$c.err")" = 1 ] || { cat "$T/$c.err" >&2; fail "$c: more than one line"; }
	pass "$c: $(cat "$T/$c.err")"
}

check too-many "offers 5 digests for 4 chunks"
check no-such-chunk "digest for chunk 4 of d0 \(4 chunks\), which does not exist"
check twice "digest for chunk 1 of d0 \(4 chunks\), twice"
check no-such-device "digests for device 4 of 1"
check over "offered more digests than it announced"
check partial-for-delta "answered a delta sync with a partial state" --delta
