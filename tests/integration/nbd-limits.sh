#!/usr/bin/env bash
# Limits that keep one NBD peer from starving the others: connections per
# address, connections still in their (TLS) handshake, idle clients.  One
# address over its limit is told why and another address is still served;
# an idle client is closed after the configured timeout; the options are
# checked.
. "$(dirname "$0")/lib.sh"
requires nbdinfo python3 certtool openssl
HERE=$(cd "$(dirname "$0")" && pwd)

# 127.0.0.2 is loopback on Linux; the raw client binds to it.
python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.2", 0))' 2>/dev/null ||
	skip "cannot bind to 127.0.0.2"

make_random "$T/a.img" $((4 * MiB)) 301
logged() { grep -qE -- "$2" "$1" || { cat "$1" >&2; fail "the server did not log /$2/"; }; }

# ---- per address --------------------------------------------------------------------
start_serve peer --device d="$T/a.img" --nbd-max-per-peer 3
PYTHONPATH="$HERE" python3 - "$NBD_PORT" <<'PY' || fail "per-address limit"
import sys
from nbdraw import *
port = int(sys.argv[1])

# Three idle clients in transmission from 127.0.0.1 use up its share.
idle = []
for _ in range(3):
    c = Conn(port); c.greet(); c.go()
    idle.append(c)
# A fourth from there is greeted and refused with the reason...
c = Conn(port); c.greet()
c.opt(OPT_GO, struct.pack(">I", 1) + b"d\0\0")
typ, msg = c.reply(OPT_GO)
assert typ == REP_ERR_POLICY, hex(typ)
assert b"too many connections from 127.0.0.1 (at most 3 per address)" in msg, msg
# ... for every option, and EXPORT_NAME closes.
c.opt(OPT_LIST)
assert c.reply(OPT_LIST)[0] == REP_ERR_POLICY
c.opt(OPT_EXPORT_NAME, b"d")
assert c.closed()
print("a 4th connection from 127.0.0.1: NBD_REP_ERR_POLICY with the reason")

# Another address is served meanwhile.
c = Conn(port, source="127.0.0.2"); c.greet(); c.go()
assert c.read(0, 4096)[0] == 0
c.close()
print("127.0.0.2 is served")

# The idle ones still work, and once one leaves, 127.0.0.1 gets in again.
assert idle[0].read(0, 512)[0] == 0
idle.pop().close()
admitted(port).close()
print("a slot given back is taken again")
PY
logged "$T/peer.err" "nbd server: refused a connection from 127\.0\.0\.1:[0-9]+: too many connections from 127\.0\.0\.1 \(at most 3 per address\)"
pass "per-address limit: the 4th connection is refused with a reason and logged, other addresses served"
# libnbd shows the reason too.
PYTHONPATH="$HERE" python3 - "$NBD_PORT" "$BLKMIG" <<'PY' || fail "nbdinfo over the limit"
import subprocess, sys
from nbdraw import *
port = int(sys.argv[1])
idle = [admitted(port) for _ in range(3)]  # the previous clients' slots may still be counted
r = subprocess.run(["nbdinfo", "nbd://127.0.0.1:%d/d" % port], capture_output=True, text=True,
                   env={"LIBNBD_DEBUG": "1", "PATH": "/usr/bin:/bin"})
assert r.returncode != 0, "nbdinfo served over the limit"
assert "too many connections from 127.0.0.1" in r.stderr, r.stderr[-2000:]
PY
pass "per-address limit: nbdinfo fails and hears the server's reason"
stop "$SERVE_PID"

# ---- unauthenticated --------------------------------------------------------------
make_x509 "$T/x509"
start_serve unauth --device d="$T/a.img" --tls-creds "$T/x509" --nbd-max-unauth 2
PYTHONPATH="$HERE" python3 - "$NBD_PORT" "$T/x509" <<'PY' || fail "unauthenticated limit"
import sys
from nbdraw import *
port, certs = int(sys.argv[1]), sys.argv[2]

# With 2 unauthenticated slots, one address holds at most 1.  A second
# connection from 127.0.0.1 waits, ungreeted, until the first has
# finished its TLS handshake, then goes on.
a = Conn(port); a.greet()
b = Conn(port)
a.starttls(certs); a.go()
b.greet(); b.starttls(certs); b.go()
assert b.read(0, 4096)[0] == 0
print("a burst from one address queues: the second is served once the first has TLS")

# c holds 127.0.0.1's slot; 127.0.0.2 is served meanwhile.
c = Conn(port); c.greet()
f = Conn(port, source="127.0.0.2"); f.greet(); f.starttls(certs); f.go()
assert f.read(0, 4096)[0] == 0
print("127.0.0.2 is served while 127.0.0.1 holds its share")

# g from 127.0.0.3 takes the last slot.  d (127.0.0.1, over its share)
# and h (127.0.0.4, over the total) wait, then are refused with the reason.
g = Conn(port, source="127.0.0.3"); g.greet()
d = Conn(port)
h = Conn(port, source="127.0.0.4")
for conn, want in [(d, b"from 127.0.0.1 are still in their handshake (at most 1 per address)"),
                   (h, b"still in their handshake (at most 2 at once)")]:
    conn.greet()
    conn.opt(OPT_STARTTLS)
    typ, msg = conn.reply(OPT_STARTTLS)
    assert typ == REP_ERR_POLICY, hex(typ)
    assert want in msg, msg
print("over the address's share and over the total: refused with the reason after the wait")
PY
logged "$T/unauth.err" "refused a connection from 127\.0\.0\.1:[0-9]+ after [0-9]+ ms: too many connections from 127\.0\.0\.1 are still in their handshake"
logged "$T/unauth.err" "refused a connection from 127\.0\.0\.4:[0-9]+ after [0-9]+ ms: too many connections are still in their handshake \(at most 2 at once\)"
pass "unauthenticated limit: a burst queues, one address cannot take every slot, the total holds"
stop "$SERVE_PID"

# ---- idle clients ---------------------------------------------------------------------
start_serve idle --device d="$T/a.img" --nbd-idle-timeout 1
PYTHONPATH="$HERE" python3 - "$NBD_PORT" <<'PY' || fail "idle timeout"
import sys
from nbdraw import *
c = Conn(int(sys.argv[1]), timeout=60); c.greet(); c.go()
assert c.read(0, 512)[0] == 0
assert c.closed(), "an idle client was not closed"
PY
logged "$T/idle.err" "closed the connection from 127\.0\.0\.1:[0-9]+: no request for 1000 ms"
pass "idle timeout: a client silent in transmission is closed, and logged"
stop "$SERVE_PID"

# A request trickling in is bounded by the same timeout.
start_serve trickle --device d="$T/a.img" --nbd-idle-timeout 1
PYTHONPATH="$HERE" python3 - "$NBD_PORT" <<'PY' || fail "trickled request"
import sys
from nbdraw import *
c = Conn(int(sys.argv[1]), timeout=60); c.greet(); c.go()
c.s.sendall(struct.pack(">IHH", REQ_MAGIC, 0, CMD_READ))  # 8 of 28 bytes
assert c.closed(), "a half-sent request held the connection"
PY
pass "idle timeout: a half-sent request does not hold the connection"
stop "$SERVE_PID"

# ---- options ------------------------------------------------------------------------
for bad in "--nbd-max-per-peer 0" "--nbd-max-unauth 0" "--nbd-max-per-peer 1000" "--nbd-idle-timeout x"; do
	"$BLKMIG" serve --device d="$T/a.img" $bad 2>"$T/bad.err"
	expect_error $? 2 "$T/bad.err" "${bad%% *}"
done
pass "limit options out of range are usage errors"
"$BLKMIG" serve --device d="$T/a.img" --nbd 0.0.0.0:0 2>"$T/open.err"
expect_error $? 2 "$T/open.err" "not a loopback address.*--tls-psk"
pass "an NBD address off loopback needs TLS or --no-tls"
"$BLKMIG" serve --device d="$T/a.img" --tls-authz alice 2>"$T/authz.err"
expect_error $? 2 "$T/authz.err" "--tls-authz needs --tls-psk or --tls-creds"
pass "--tls-authz without credentials is a usage error"
"$BLKMIG" serve --device d="$T/a.img" --tls-psk "$T/missing.psk" 2>"$T/missing.err"
expect_error $? 1 "$T/missing.err" "missing\.psk"
pass "a missing PSK file fails before listening"
