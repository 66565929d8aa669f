#!/usr/bin/env bash
# The control socket (DESIGN.md rule 8): serve refuses to replace anything
# at its path that is not a socket -- a planted file or symlink stays as it
# was, serve exits 1 with one line -- and, whatever the socket's mode, a
# client of another user (not root) is closed on with nothing processed.
. "$(dirname "$0")/lib.sh"
requires python3 md5sum

make_random "$T/d.img" $MiB 9
echo "precious contents" >"$T/precious"
want=$(md5sum <"$T/precious")

# A regular file planted at the socket's path.
cp "$T/precious" "$T/file.sock"
"$BLKMIG" serve --nbd 127.0.0.1:0 --control "$T/file.sock" --device d0="$T/d.img" \
	>"$T/file.out" 2>"$T/file.err"
expect_error $? 1 "$T/file.err" "control socket .*file.sock: file exists and is not a socket"
[ "$(md5sum <"$T/file.sock")" = "$want" ] || fail "the planted file was changed"
pass "serve --control refuses a planted regular file"

# A symlink planted at the socket's path, to a file that must stay.
ln -s "$T/precious" "$T/link.sock"
"$BLKMIG" serve --nbd 127.0.0.1:0 --control "$T/link.sock" --device d0="$T/d.img" \
	>"$T/link.out" 2>"$T/link.err"
expect_error $? 1 "$T/link.err" "control socket .*link.sock: a symbolic link is there: refusing to replace it"
[ -L "$T/link.sock" ] || fail "the planted symlink was replaced"
[ "$(md5sum <"$T/precious")" = "$want" ] || fail "the symlink's target was changed"
pass "serve --control refuses a planted symlink"

# Another user, with the socket opened up to everyone: refused.
[ "$(id -u)" = 0 ] || skip "the peer-credentials check needs root to connect as another user"
requires setpriv
other() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
# A python3 that user may run (a per-user shim under /root is not one).
py=
for p in /usr/bin/python3 /usr/local/bin/python3 "$(command -v python3)"; do
	[ -x "$p" ] && other "$p" -c pass 2>/dev/null && { py=$p; break; }
done
[ -n "$py" ] || skip "no python3 that uid 65534 may run"
chmod 0755 "$T"
start_serve peer --control "$T/ctl.sock" --device d0="$T/d.img"
for _ in $(seq 1 400); do [ -S "$T/ctl.sock" ] && break; sleep 0.025; done
chmod 0666 "$T/ctl.sock"
other "$py" - "$T/ctl.sock" >"$T/peer.client" 2>&1 <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"execute":"migrate_cancel"}\n{"execute":"query-migrate"}\n')
except OSError:
    pass
# Refused: the connection ends with nothing said.  Served: the greeting.
try:
    data = s.recv(4096)
except ConnectionResetError:
    data = b""
print("got", repr(data))
sys.exit(0 if data == b"" else 1)
PY
rc=$?
[ $rc = 0 ] || { cat "$T/peer.client" >&2; fail "a client of uid 65534 was answered"; }
grep -q "^blkmig: control socket .*ctl.sock: refused a client with uid 65534 (pid [0-9]*): only uid 0 or root may control this daemon$" "$T/peer.err" ||
	{ cat "$T/peer.err" >&2; fail "no log line for the refused client"; }
# The daemon's own user is still served.
"$BLKMIG" status --control "$T/ctl.sock" >"$T/status.out" 2>"$T/status.err" ||
	{ cat "$T/status.err" >&2; fail "the daemon's own user was refused"; }
stop "$SERVE_PID"
pass "a client of another user is refused, even with the socket at 0666"
