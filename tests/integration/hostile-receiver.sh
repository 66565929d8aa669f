#!/usr/bin/env bash
# A receiver that lies about what it holds: after READY, a fake destination
# sends a STATE or SUMS the source must refuse (more digests than chunks, a
# chunk that does not exist, one offered twice, a device it does not have,
# more than it announced, a partial state for a delta sync), or an EXPORT
# (where its NBD export is) that lies: a host longer than the body, a bad
# byte in the host, one the source did not ask for, two, none where asked,
# one after STATE.  Each send or migrate fails with one clear line, before
# anything is sent, and writes no hand-over record.
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
forward = bool(struct.unpack(">I", fixed[12:16])[0] & 0x20)    # CAP_FORWARD
for _ in range(struct.unpack(">H", fixed[36:38])[0]):
    n = rd(1)[0]
    rd(n + 8)
def msg(t, body):
    c.sendall(struct.pack(">BI", t, len(body)) + body)
msg(0x81, struct.pack(">I", 2))                      # READY
def export(port, host, hostlen=None):
    h = host.encode()
    msg(0x89, struct.pack(">HH", port, len(h) if hostlen is None else hostlen) + h)
if case.startswith("fwd-") and not forward:
    # A test of a source that asks: it must have asked.
    msg(0x83, struct.pack(">I", 22) + b"fake: HELLO has no FORWARD")
    raise SystemExit(0)
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
elif case == "export-unasked":
    export(10809, "127.0.0.1"); state(0, 0)
elif case == "fwd-hostlen":    # 200 bytes announced, 9 sent
    export(10809, "127.0.0.1", hostlen=200); state(0, 0)
elif case == "fwd-badchar":
    export(10809, "evil\nhost"); state(0, 0)
elif case == "fwd-twice":
    export(10809, "127.0.0.1"); export(10810, "127.0.0.2"); state(0, 0)
elif case == "fwd-missing":
    state(0, 0)
elif case == "fwd-after-state":   # in place, then again among the SUMS
    export(10809, "127.0.0.1"); state(1, 1); export(10809, "127.0.0.1")
elif case == "fwd-late":          # again once the passes run (the return path)
    export(10809, "127.0.0.1"); state(0, 0); export(10809, "127.0.0.1")
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
check export-unasked "announced its NBD export \(EXPORT\), which this source did not ask for"

# Only a source that will forward its NBD clients after the switch-over
# asks where the destination's export is: serve's migrate.
start_serve src --device d0="$T/src.img" --control "$T/src.sock"
SRC_PID=$SERVE_PID
check_fwd() { # CASE PATTERN [migrate options]
	local c=$1 pat=$2
	shift 2
	rm -f "$T/src.img.blkmig-handover"
	fake "$c" "$c"
	timeout 60 "$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$FAKE_PORT" --wait "$@" \
		>/dev/null 2>"$T/$c.err"
	expect_error $? 1 "$T/$c.err" "$pat"
	[ "$(grep -c . "$T/$c.err")" = 1 ] || { cat "$T/$c.err" >&2; fail "$c: more than one line"; }
	[ -e "$T/src.img.blkmig-handover" ] && fail "$c: a hand-over was recorded"
	kill -0 "$SRC_PID" 2>/dev/null || fail "$c: the source daemon died"
	pass "$c: $(cat "$T/$c.err")"
}
check_fwd fwd-hostlen "export: body of 13 bytes for a host of 200 bytes"
check_fwd fwd-badchar "export: host 'evil\\\\x0ahost' has byte 0x0a at 4"
check_fwd fwd-twice "announced its NBD export \(EXPORT\) twice"
check_fwd fwd-missing "did not say where its NBD export is \(no EXPORT before STATE\)"
check_fwd fwd-after-state "announced its NBD export \(EXPORT\) after its STATE"
# Past the handshake a protocol error may be a corrupted stream, which
# migrate retries; this fake takes one connection, so do not wait for more.
check_fwd fwd-late "announced its NBD export \(EXPORT\) after its STATE" --retry-for 0
stop "$SRC_PID"; [ "$RC" = 0 ] || { cat "$T/src.err" >&2; fail "source serve exited $RC"; }
