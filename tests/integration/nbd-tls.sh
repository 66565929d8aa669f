#!/usr/bin/env bash
# NBD over TLS: `blkmig serve --tls-psk` and `--tls-creds` against qemu-io,
# qemu-img, nbdinfo and nbdcopy, each writing and reading data that is then
# checked; each refused without TLS, with a wrong key or an untrusted
# certificate, and when --tls-authz does not list it.  Then the protocol
# itself, from a raw client: options before STARTTLS, STARTTLS twice,
# plaintext injected behind STARTTLS, nothing negotiated before STARTTLS
# in force after it, STARTTLS on a server without TLS.
. "$(dirname "$0")/lib.sh"
requires nbdinfo nbdcopy qemu-img qemu-io python3 cmp certtool openssl
HERE=$(cd "$(dirname "$0")" && pwd)

size=$((8 * MiB))
make_random "$T/a.img" $size 201

# ---- credentials -------------------------------------------------------------------
mkdir -m 700 "$T/psk" "$T/wrongpsk" "$T/bobpsk"
make_psk "$T/psk/keys.psk" alice # qemu wants DIR/keys.psk
make_psk "$T/wrongpsk/keys.psk" alice
make_psk "$T/bobpsk/keys.psk" bob
# The server knows alice and bob; --tls-authz below lets only alice in.
(umask 077 && cat "$T/psk/keys.psk" "$T/bobpsk/keys.psk" >"$T/server.psk")
make_x509 "$T/x509" client main
# A client whose certificate comes from another CA (it trusts ours).
make_x509 "$T/rogue" client rogue
cp "$T/x509/ca-cert.pem" "$T/rogue/ca-cert.pem"

qio_psk() { # qemu-io over TLS-PSK with the key dir $1, then qemu-io commands
	local dir=$1
	shift
	qemu-io --object "tls-creds-psk,id=tls0,endpoint=client,dir=$dir,username=alice" \
		--image-opts "driver=nbd,host=127.0.0.1,port=$NBD_PORT,export=d,tls-creds=tls0" "$@"
}
qio_x509() {
	local dir=$1
	shift
	qemu-io --object "tls-creds-x509,id=tls0,endpoint=client,dir=$dir" \
		--image-opts "driver=nbd,host=127.0.0.1,port=$NBD_PORT,export=d,tls-creds=tls0" "$@"
}
# A pattern written at 1 MiB by qemu-io must be in the image.
check_pattern() {
	python3 - "$T/a.img" "$1" <<'PY' || fail "the qemu-io pattern is not in the image"
import sys
d = open(sys.argv[1], "rb").read()
assert d[1 << 20:(1 << 20) + 65536] == bytes([int(sys.argv[2], 0)]) * 65536
PY
}
# The server logged a line matching $2 (file $1).
logged() { grep -qE -- "$2" "$1" || { cat "$1" >&2; fail "the server did not log /$2/"; }; }

# ---- PSK ------------------------------------------------------------------------------
start_serve psk --device d="$T/a.img" --tls-psk "$T/server.psk" --tls-authz alice
PSKU="nbds://alice@127.0.0.1:$NBD_PORT/d?tls-psk-file=$T/psk/keys.psk"

qio_psk "$T/psk" -c 'write -P 0x5a 1M 64k' -c 'read -P 0x5a 1M 64k' >"$T/qio" 2>&1 ||
	{ cat "$T/qio" >&2; fail "qemu-io over TLS-PSK"; }
grep -qi "verification failed" "$T/qio" && fail "qemu-io read back something else"
check_pattern 0x5a
nbdcopy "$PSKU" "$T/out.img" || fail "nbdcopy out over TLS-PSK"
cmp "$T/a.img" "$T/out.img" || fail "nbdcopy over TLS-PSK: what came out differs from the image"
pass "TLS-PSK: qemu-io writes, reads back; nbdcopy reads the same bytes as the image"

make_random "$T/in.img" $size 202
nbdcopy "$T/in.img" "$PSKU" || fail "nbdcopy in over TLS-PSK"
cmp "$T/in.img" "$T/a.img" || fail "nbdcopy over TLS-PSK: the image differs from what was copied in"
qemu-img compare --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/psk,username=alice" \
	--image-opts "driver=file,filename=$T/in.img" "driver=nbd,host=127.0.0.1,port=$NBD_PORT,export=d,tls-creds=tls0" \
	>/dev/null || fail "qemu-img compare over TLS-PSK"
[ "$(nbdinfo --size "$PSKU")" = $size ] || fail "nbdinfo --size over TLS-PSK"
pass "TLS-PSK: nbdcopy writes, qemu-img compare and nbdinfo agree"

# Without TLS: qemu says TLS is required; libnbd fails, the server's message
# says why.
qemu-io -f raw "nbd://127.0.0.1:$NBD_PORT/d" -c 'read 0 4k' >"$T/plain.qio" 2>&1 &&
	fail "qemu-io without TLS was served"
grep -q "TLS negotiation required" "$T/plain.qio" || { cat "$T/plain.qio" >&2; fail "qemu-io: no mention of TLS"; }
grep -q "requires TLS" "$T/plain.qio" || { cat "$T/plain.qio" >&2; fail "qemu-io: not the server's message"; }
LIBNBD_DEBUG=1 nbdinfo "nbd://127.0.0.1:$NBD_PORT/d" >"$T/plain.nbd" 2>&1 && fail "nbdinfo without TLS was served"
grep -q "server error message: this server requires TLS" "$T/plain.nbd" ||
	{ tail -5 "$T/plain.nbd" >&2; fail "nbdinfo: no TLS message from the server"; }
nbdcopy "nbd://127.0.0.1:$NBD_PORT/d" "$T/x.img" 2>/dev/null && fail "nbdcopy without TLS was served"
pass "TLS-PSK: plaintext qemu-io, nbdinfo and nbdcopy refused (NBD_REP_ERR_TLS_REQD)"

qio_psk "$T/wrongpsk" -c 'read 0 4k' >"$T/wrong.qio" 2>&1 && fail "qemu-io with a wrong key was served"
nbdinfo --size "nbds://alice@127.0.0.1:$NBD_PORT/d?tls-psk-file=$T/wrongpsk/keys.psk" 2>"$T/wrong.nbd" &&
	fail "nbdinfo with a wrong key was served"
grep -qi "tls\|handshake" "$T/wrong.nbd" || { cat "$T/wrong.nbd" >&2; fail "nbdinfo: no TLS failure"; }
logged "$T/psk.err" "TLS handshake with 127\.0\.0\.1:[0-9]+: the keys do not match"
pass "TLS-PSK: a wrong key is refused, and the server says so"

qemu-io --object "tls-creds-psk,id=tls0,endpoint=client,dir=$T/bobpsk,username=bob" \
	--image-opts "driver=nbd,host=127.0.0.1,port=$NBD_PORT,export=d,tls-creds=tls0" -c 'read 0 4k' \
	>"$T/bob.qio" 2>&1 && fail "qemu-io as bob (not in --tls-authz) was served"
nbdinfo --size "nbds://bob@127.0.0.1:$NBD_PORT/d?tls-psk-file=$T/bobpsk/keys.psk" 2>/dev/null &&
	fail "nbdinfo as bob (not in --tls-authz) was served"
logged "$T/psk.err" "PSK identity 'bob' is not authorised \(--tls-authz\)"
pass "TLS-PSK: an identity the server knows but --tls-authz does not list is refused"
stop "$SERVE_PID"

# ---- X.509 ----------------------------------------------------------------------------
start_serve x509 --device d="$T/a.img" --tls-creds "$T/x509" --tls-authz "CN=client"
XU="nbds://127.0.0.1:$NBD_PORT/d?tls-certificates=$T/x509"

qio_x509 "$T/x509" -c 'write -P 0xa7 1M 64k' -c 'read -P 0xa7 1M 64k' >"$T/qio" 2>&1 ||
	{ cat "$T/qio" >&2; fail "qemu-io over TLS-X.509"; }
grep -qi "verification failed" "$T/qio" && fail "qemu-io read back something else"
check_pattern 0xa7
nbdcopy "$XU" "$T/out.img" || fail "nbdcopy out over X.509"
cmp "$T/a.img" "$T/out.img" || fail "nbdcopy over X.509: what came out differs from the image"
make_random "$T/in.img" $size 203
nbdcopy "$T/in.img" "$XU" || fail "nbdcopy in over X.509"
cmp "$T/in.img" "$T/a.img" || fail "nbdcopy over X.509: the image differs from what was copied in"
qemu-img compare --object "tls-creds-x509,id=tls0,endpoint=client,dir=$T/x509" \
	--image-opts "driver=file,filename=$T/in.img" "driver=nbd,host=127.0.0.1,port=$NBD_PORT,export=d,tls-creds=tls0" \
	>/dev/null || fail "qemu-img compare over X.509"
pass "TLS-X.509: qemu-io, nbdcopy in and out, qemu-img compare: all the same bytes"

qemu-io -f raw "nbd://127.0.0.1:$NBD_PORT/d" -c 'read 0 4k' >"$T/plain.qio" 2>&1 &&
	fail "qemu-io without TLS was served"
grep -q "TLS negotiation required" "$T/plain.qio" || { cat "$T/plain.qio" >&2; fail "qemu-io: no mention of TLS"; }
nbdinfo "nbd://127.0.0.1:$NBD_PORT/d" >/dev/null 2>&1 && fail "nbdinfo without TLS was served"
pass "TLS-X.509: plaintext clients refused"

qio_x509 "$T/rogue" -c 'read 0 4k' >"$T/rogue.qio" 2>&1 && fail "qemu-io with a certificate from another CA was served"
nbdinfo --size "nbds://127.0.0.1:$NBD_PORT/d?tls-certificates=$T/rogue" 2>/dev/null &&
	fail "nbdinfo with a certificate from another CA was served"
logged "$T/x509.err" "TLS handshake with 127\.0\.0\.1:[0-9]+: .*(certificate|Certificate)"
pass "TLS-X.509: a client certificate from another CA is refused"
stop "$SERVE_PID"

start_serve authz --device d="$T/a.img" --tls-creds "$T/x509" --tls-authz "CN=someone-else"
qio_x509 "$T/x509" -c 'read 0 4k' >"$T/authz.qio" 2>&1 && fail "qemu-io with an unlisted certificate was served"
nbdinfo --size "nbds://127.0.0.1:$NBD_PORT/d?tls-certificates=$T/x509" 2>/dev/null &&
	fail "nbdinfo with an unlisted certificate was served"
logged "$T/authz.err" "\('CN=client'\) is not authorised \(--tls-authz\)"
pass "TLS-X.509: a valid certificate whose DN --tls-authz does not list is refused"
stop "$SERVE_PID"

# ---- the protocol, from a raw client ---------------------------------------------
start_serve raw --device d="$T/a.img" --tls-creds "$T/x509"
PYTHONPATH="$HERE" python3 - "$NBD_PORT" "$T/x509" <<'PY' || fail "raw protocol checks"
import struct, sys
from nbdraw import *
port, certs = int(sys.argv[1]), sys.argv[2]
name = struct.pack(">I", 1) + b"d"

# Every option but STARTTLS and ABORT before TLS: TLS_REQD, haggling goes on.
c = Conn(port); c.greet()
for opt, data in [(OPT_LIST, b""), (OPT_INFO, name + b"\0\0"), (OPT_GO, name + b"\0\0"),
                  (OPT_STRUCTURED_REPLY, b""),
                  (OPT_LIST_META_CONTEXT, name + struct.pack(">I", 0)),
                  (OPT_SET_META_CONTEXT, name + struct.pack(">I", 0)), (99, b"xyz")]:
    c.opt(opt, data)
    typ, msg = c.reply(opt)
    assert typ == REP_ERR_TLS_REQD, (opt, hex(typ))
    assert b"requires TLS" in msg, msg
print("options before STARTTLS: NBD_REP_ERR_TLS_REQD with a message")

# STARTTLS with data: INVALID, and still no TLS.
c.opt(OPT_STARTTLS, b"x")
assert c.reply(OPT_STARTTLS)[0] == REP_ERR_INVALID
c.opt(OPT_GO, name + b"\0\0")
assert c.reply(OPT_GO)[0] == REP_ERR_TLS_REQD

# ABORT before TLS: acknowledged, closed.
c.opt(OPT_ABORT)
assert c.reply(OPT_ABORT)[0] == REP_ACK
assert c.closed()
print("STARTTLS with data: INVALID; ABORT before TLS: acknowledged")

# EXPORT_NAME before TLS cannot carry an error: the connection closes.
c = Conn(port); c.greet()
c.opt(OPT_EXPORT_NAME, b"d")
assert c.closed(), "EXPORT_NAME before TLS: not closed"
print("EXPORT_NAME before STARTTLS: connection closed")

# Plaintext behind the STARTTLS, in the same segment, is never executed.
c = Conn(port); c.greet()
c.s.sendall(struct.pack(">QII", OPTS_MAGIC, OPT_STARTTLS, 0) +
            struct.pack(">QII", OPTS_MAGIC, OPT_STRUCTURED_REPLY, 0))
assert c.reply(OPT_STARTTLS)[0] == REP_ACK
served = False
try:
    c.starttls(certs)
    c.opt(OPT_GO, name + b"\0\0")
    c.reply(OPT_GO)
    served = True
except (ssl.SSLError, OSError, Closed):
    pass
assert not served, "a TLS session after injected plaintext"
print("plaintext injected after STARTTLS: the handshake fails, nothing runs")

# Pre-TLS negotiation is not in force after STARTTLS; STARTTLS twice is INVALID.
c = Conn(port); c.greet()
c.opt(OPT_STRUCTURED_REPLY)
assert c.reply(OPT_STRUCTURED_REPLY)[0] == REP_ERR_TLS_REQD
c.starttls(certs)
c.opt(OPT_STARTTLS)
typ, msg = c.reply(OPT_STARTTLS)
assert typ == REP_ERR_INVALID, hex(typ)
# SET_META_CONTEXT needs structured replies: still off.
c.opt(OPT_SET_META_CONTEXT, name + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation")
typ, msg = c.final_reply(OPT_SET_META_CONTEXT)
assert typ == REP_ERR_INVALID and b"structured" in msg, (hex(typ), msg)
flags = c.go()
assert not flags & FLAG_SEND_DF, "structured replies on after STARTTLS"
err, data = c.read(1 << 20, 4096)  # asserts a simple reply
assert err == 0 and len(data) == 4096
print("after STARTTLS: STARTTLS again INVALID; no structured replies, no meta context")

# Over TLS, negotiating works as usual.
c = Conn(port); c.greet()
c.starttls(certs)
c.opt(OPT_STRUCTURED_REPLY)
assert c.reply(OPT_STRUCTURED_REPLY)[0] == REP_ACK
c.opt(OPT_LIST)
assert c.final_reply(OPT_LIST)[0] == REP_ACK
assert c.go() & FLAG_SEND_DF
print("options negotiated over TLS are in force")
PY
pass "raw protocol: FORCEDTLS mode by the spec, nothing from before STARTTLS survives it"
stop "$SERVE_PID"

# STARTTLS on a server without TLS: POLICY, and it serves in plaintext.
start_serve notls --device d="$T/a.img"
PYTHONPATH="$HERE" python3 - "$NBD_PORT" <<'PY' || fail "STARTTLS without TLS"
import sys
from nbdraw import *
c = Conn(int(sys.argv[1])); c.greet()
c.opt(OPT_STARTTLS)
typ, msg = c.reply(OPT_STARTTLS)
assert typ == REP_ERR_POLICY and b"not enabled" in msg, (hex(typ), msg)
c.go()
assert c.read(0, 512)[0] == 0
PY
pass "server without TLS: STARTTLS gets NBD_REP_ERR_POLICY, plaintext goes on"
stop "$SERVE_PID"

# ---- both ends of a migration ------------------------------------------------------
# The destination's export requires TLS while it waits (TLS first, then the
# refusal) and once it serves; the source's answers over TLS until it hands
# over, then tells TLS clients it has.
make_random "$T/src.img" $size 204
start_serve dst --incoming 127.0.0.1:0 --device d="$T/dst.img" --create --tls-psk "$T/psk/keys.psk"
DST_NBD=$NBD_PORT DST_IN=$INCOMING_PORT
NBD_PORT=$DST_NBD
qemu-io -f raw "nbd://127.0.0.1:$DST_NBD/d" -c 'read 0 4k' >"$T/early.plain" 2>&1 && fail "destination served in plaintext"
grep -q "TLS negotiation required" "$T/early.plain" || { cat "$T/early.plain" >&2; fail "destination: no TLS required before the refusal"; }
qio_psk "$T/psk" -c 'read 0 4k' >"$T/early.tls" 2>&1 && fail "destination served before the migration"
grep -q "incoming migration is in progress" "$T/early.tls" || { cat "$T/early.tls" >&2; fail "destination over TLS: no reason"; }
pass "destination waiting for its migration: TLS first, then the refusal with its reason"

start_serve src --device d="$T/src.img" --control "$T/src.sock" --tls-psk "$T/psk/keys.psk"
SRC_NBD=$NBD_PORT
qio_psk "$T/psk" -c 'write -P 0x3c 1M 64k' >/dev/null 2>&1 || fail "qemu-io over TLS to the source"
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" --forward-to "127.0.0.1:$DST_NBD" --wait --json \
	>"$T/mig.json" 2>"$T/mig.err" || { cat "$T/mig.err" "$T/src.err" "$T/dst.err" >&2; fail "migrate --wait failed"; }
# The source forwards its TLS clients to the destination's TLS export, with
# the PSK identity it migrated with.
src_sum=$(md5sum <"$T/src.img")
qio_psk "$T/psk" -c 'read -P 0x3c 1M 64k' -c 'write -P 0x3d 2M 64k' >"$T/after.src" 2>&1 ||
	{ cat "$T/after.src" "$T/src.err" >&2; fail "the source did not forward a TLS client"; }
grep -qi "verification failed\|error" "$T/after.src" && { cat "$T/after.src" >&2; fail "forwarded over TLS: wrong data"; }
[ "$(md5sum <"$T/src.img")" = "$src_sum" ] || fail "the source wrote its own copy after the handover"
"$BLKMIG" status --control "$T/src.sock" | grep -q "^forwarding: .* to 127.0.0.1:$DST_NBD (.*, 0 failed)" ||
	{ "$BLKMIG" status --control "$T/src.sock" >&2; fail "status does not show forwarding"; }
pass "after the handover the source forwards its TLS clients over TLS-PSK"
NBD_PORT=$DST_NBD
qio_psk "$T/psk" -c 'read -P 0x3d 2M 64k' >"$T/fwd.dst" 2>&1 || { cat "$T/fwd.dst" >&2; fail "destination over TLS"; }
grep -qi "verification failed" "$T/fwd.dst" && fail "destination: the forwarded write is not there"
qemu-io -f raw "nbd://127.0.0.1:$DST_NBD/d" -c 'write -P 0x3c 2M 64k' >/dev/null 2>&1 && fail "destination took a plaintext write"

for _ in $(seq 1 200); do
	nbdinfo --size "nbds://alice@127.0.0.1:$DST_NBD/d?tls-psk-file=$T/psk/keys.psk" >/dev/null 2>&1 && break
	sleep 0.05
done
qio_psk "$T/psk" -c 'read -P 0x3c 1M 64k' >"$T/after.dst" 2>&1 || { cat "$T/after.dst" >&2; fail "destination over TLS"; }
grep -qi "verification failed" "$T/after.dst" && fail "destination: the source's write is not there"
nbdcopy "nbds://alice@127.0.0.1:$DST_NBD/d?tls-psk-file=$T/psk/keys.psk" "$T/dst.out" || fail "nbdcopy from the destination"
python3 - "$T/src.img" "$T/dst.out" <<'PY' || fail "destination over TLS differs from the source image and the forwarded write"
import sys
a, b = bytearray(open(sys.argv[1], "rb").read()), open(sys.argv[2], "rb").read()
a[2 << 20:(2 << 20) + 65536] = bytes([0x3d]) * 65536
sys.exit(0 if bytes(a) == b else 1)
PY
qemu-io -f raw "nbd://127.0.0.1:$DST_NBD/d" -c 'read 0 4k' >/dev/null 2>&1 && fail "destination served in plaintext after the migration"
pass "after the migration: the destination serves the source's data and the forwarded write over TLS only"

# A TLS client waiting in transmission when the source hands over is woken
# and closed (not left until its idle timeout); one still connected when
# the daemon stops does not hold it up.
make_random "$T/src2.img" $((4 * MiB)) 205
start_serve dst2 --incoming 127.0.0.1:0 --device d="$T/dst2.img" --create --tls-creds "$T/x509"
DST_IN=$INCOMING_PORT DST_PID=$SERVE_PID
start_serve src2 --device d="$T/src2.img" --control "$T/src2.sock" --tls-creds "$T/x509"
SRC_PID=$SERVE_PID
PYTHONPATH="$HERE" python3 - "$NBD_PORT" "$T/x509" "$BLKMIG" "$T/src2.sock" "127.0.0.1:$DST_IN" <<'PY' ||
import subprocess, sys
from nbdraw import *
port, certs, blkmig, sock, to = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
c = Conn(port, timeout=60); c.greet(); c.starttls(certs); c.go()
assert c.read(0, 4096)[0] == 0
subprocess.run([blkmig, "migrate", "--control", sock, "--to", to, "--after", "refuse", "--wait"],
               check=True, stdout=subprocess.DEVNULL)
assert c.closed(), "a TLS client in transmission was not woken by the handover"
PY
	fail "TLS client at the switch-over"
pass "with --after refuse a TLS client waiting in transmission is closed at the handover"
PYTHONPATH="$HERE" python3 - "$(sed -n 's/^nbd=//p' "$T/dst2.ports")" "$T/x509" "$DST_PID" <<'PY' || fail "stopping with a TLS client"
import os, signal, sys, time
from nbdraw import *
port, certs, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for _ in range(200):
    try:
        c = Conn(port, timeout=60); c.greet(); c.starttls(certs); c.go()
        break
    except AssertionError:
        time.sleep(0.05)  # still receiving
os.kill(pid, signal.SIGTERM)
assert c.closed(), "the daemon did not close a TLS client when stopping"
PY
stop "$DST_PID"
[ "$RC" = 0 ] || fail "the destination exited with $RC after SIGTERM"
pass "a daemon stopping with a TLS client in transmission closes it and exits"
stop "$SRC_PID"

# Forwarding with X.509: the source presents its client certificate to the
# destination's export and checks the destination's.
make_random "$T/src3.img" $((4 * MiB)) 206
start_serve dst3 --incoming 127.0.0.1:0 --device d="$T/dst3.img" --create --tls-creds "$T/x509"
DST_IN=$INCOMING_PORT DST_NBD=$NBD_PORT DST_PID=$SERVE_PID
start_serve src3 --device d="$T/src3.img" --control "$T/src3.sock" --tls-creds "$T/x509"
SRC_PID=$SERVE_PID
"$BLKMIG" migrate --control "$T/src3.sock" --to "127.0.0.1:$DST_IN" --forward-to "127.0.0.1:$DST_NBD" --wait \
	>/dev/null 2>"$T/mig3.err" || { cat "$T/mig3.err" "$T/src3.err" >&2; fail "migrate with X.509"; }
qio_x509 "$T/x509" -c 'write -P 0x5e 0 64k' -c 'read -P 0x5e 0 64k' >"$T/fwd3.out" 2>&1 ||
	{ cat "$T/fwd3.out" "$T/src3.err" >&2; fail "the source did not forward an X.509 client"; }
grep -qi "verification failed\|error" "$T/fwd3.out" && { cat "$T/fwd3.out" >&2; fail "forwarded over X.509: wrong data"; }
cmp -n 65536 "$T/dst3.img" <(head -c 65536 /dev/zero | tr '\0' '\136') || fail "the forwarded write is not in the destination's image"
pass "the source forwards its clients over X.509 too"
stop "$SRC_PID"
stop "$DST_PID"
