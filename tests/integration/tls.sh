#!/usr/bin/env bash
# TLS 1.3 on the migration transport, and a receiver that outlives hostile
# peers.  PSK and X.509 migrations (send -> receive, migrate -> serve
# --incoming) end identical; every way of getting TLS wrong fails the
# sender with one 'blkmig:' line, writes nothing, and leaves the receiver
# waiting for the real source, which then completes.
. "$(dirname "$0")/lib.sh"
# Each send hands its image over; the next send of it takes it back (--reclaim).
requires certtool cmp nc python3 ss

size=$((4 * MiB + 12288))
make_random "$T/src.img" $size 101
make_psk "$T/keys.psk" src
make_psk "$T/other.psk" src       # same identity, another key
make_psk "$T/stranger.psk" nobody # an identity the receiver does not know
make_x509 "$T/pki"
make_x509 "$T/pki2" # another CA, which the receiver does not trust
mkdir -p "$T/mixed" && cp "$T/pki2"/client-*.pem "$T/pki/ca-cert.pem" "$T/mixed/"

# send_ok LABEL SEND-ARGS...: a full migration into the receiver started last.
send_ok() {
	local label=$1
	shift
	"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" "$@" \
		>"$T/$label.send.out" 2>"$T/$label.send.err" ||
		{ cat "$T/$label.send.err" "$T/$label.err" >&2; fail "$label: send failed"; }
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/$label.err" >&2; fail "$label: receive failed"; }
	cmp "$T/src.img" "$T/$label.img" || fail "$label: images differ"
	is_marked "$T/$label.img" && fail "$label: still marked incomplete"
}

# send_refused LABEL PATTERN SEND-ARGS...: the sender fails with one line
# matching PATTERN, the receiver logs the refusal and keeps waiting, and the
# image is untouched.
send_refused() {
	local label=$1 pat=$2 before
	shift 2
	before=$(sha256sum <"$DST")
	"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" "$@" \
		>/dev/null 2>"$T/$label.send.err"
	expect_error $? 1 "$T/$label.send.err" "$pat"
	[ "$(grep -c . "$T/$label.send.err")" = 1 ] || { cat "$T/$label.send.err" >&2; fail "$label: more than one line"; }
	kill -0 "$RECV_PID" 2>/dev/null || { cat "$RECV_ERR" >&2; fail "$label: the receiver gave up"; }
	[ "$(sha256sum <"$DST")" = "$before" ] || fail "$label: the image was written"
	pass "$label: $(cat "$T/$label.send.err")"
}

# ---- migrations that work ------------------------------------------------
truncate -s $size "$T/psk.img"
start_receiver psk --device d0="$T/psk.img" --tls-psk "$T/keys.psk" --json
send_ok psk --tls-psk "$T/keys.psk"
pass "PSK: send -> receive identical"

start_receiver x509 --device d0="$T/x509.img" --create --tls-creds "$T/pki" \
	--tls-authz "CN=client"
send_ok x509 --tls-creds "$T/pki"
pass "X.509 with --tls-authz on the DN: send -> receive identical"

# ---- wrong credentials: refused, nothing written, the real source then wins
make_random "$T/guarded.img" $size 7
DST="$T/guarded.img"
start_receiver guarded --device d0="$DST" --tls-creds "$T/pki" --tls-authz "CN=client"
RECV_ERR="$T/guarded.err"
send_refused untrusted-ca "certificate was refused|peer refused it" --tls-creds "$T/pki2"
send_refused client-ca "certificate|peer refused it|peer ended TLS" --tls-creds "$T/mixed"
send_refused wrong-hostname "certificate was refused.*(hostname|name)" --tls-creds "$T/pki" \
	--tls-hostname wrong.example
send_refused psk-into-x509 "other kind of credentials|peer refused it" --tls-psk "$T/keys.psk"
send_refused plain-into-tls "closed the connection without an answer \(does it expect TLS\?\)"
is_marked "$DST" && fail "refused peers marked the image"
send_ok guarded --tls-creds "$T/pki"
[ "$(grep -c 'refused a connection' "$T/guarded.err")" = 5 ] || { cat "$T/guarded.err" >&2; fail "guarded: not one line per refused peer"; }
pass "X.509 receiver: 5 bad peers refused and logged, then the real source completed"

make_random "$T/pskg.img" $size 8
DST="$T/pskg.img"
start_receiver pskg --device d0="$DST" --tls-psk "$T/keys.psk" --tls-authz src
RECV_ERR="$T/pskg.err"
send_refused wrong-key "keys|key" --tls-psk "$T/other.psk"
send_refused unknown-identity "peer refused it" --tls-psk "$T/stranger.psk"
send_refused x509-into-psk "other kind of credentials|peer refused it" --tls-creds "$T/pki"
send_ok pskg --tls-psk "$T/keys.psk"
grep -q "unknown PSK identity 'nobody'" "$T/pskg.err" || { cat "$T/pskg.err" >&2; fail "pskg: the unknown identity is not named"; }
pass "PSK receiver: wrong key, unknown identity, X.509 refused; then the real source completed"

# An identity the key file knows but --tls-authz does not allow.
make_psk "$T/two.psk" admin
cat "$T/keys.psk" >>"$T/two.psk"
make_random "$T/authz.img" $size 9
DST="$T/authz.img"
start_receiver authz --device d0="$DST" --tls-psk "$T/two.psk" --tls-authz src
RECV_ERR="$T/authz.err"
head -1 "$T/two.psk" >"$T/admin.psk" && chmod 600 "$T/admin.psk"
send_refused unauthorised "Access was denied|not authorised" --tls-psk "$T/admin.psk"
grep -q "PSK identity 'admin' is not authorised" "$T/authz.err" || { cat "$T/authz.err" >&2; fail "authz: not logged"; }
send_ok authz --tls-psk "$T/keys.psk"
pass "PSK identity outside --tls-authz refused"

# TLS into a plaintext receiver: the sender says so, the receiver waits on.
make_random "$T/plain.img" $size 10
DST="$T/plain.img"
start_receiver plain --device d0="$DST"
RECV_ERR="$T/plain.err"
send_refused tls-into-plain "TLS handshake.*(does not speak TLS|closed)" --tls-psk "$T/keys.psk"
send_ok plain
pass "TLS into a plaintext receiver refused; plain migration after it completed"

# ---- hostile peers first: garbage, a forged valid hello, a wrong key -------
make_random "$T/hostile.img" $size 11
DST="$T/hostile.img"
start_receiver hostile --device d0="$DST" --tls-psk "$T/keys.psk"
RECV_ERR="$T/hostile.err"
head -c 5000 /dev/urandom | nc -q1 127.0.0.1 "$RECV_PORT" >/dev/null 2>&1
nc -z 127.0.0.1 "$RECV_PORT" # a port scan
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault ok >"$T/forged.craft" 2>&1 &&
	fail "a plaintext forged migration was accepted by a TLS receiver"
send_refused hostile-key "keys|key" --tls-psk "$T/other.psk"
send_ok hostile --tls-psk "$T/keys.psk"
[ "$(grep -c 'refused a connection' "$T/hostile.err")" = 4 ] || { cat "$T/hostile.err" >&2; fail "hostile: refusals not logged one per line"; }
pass "garbage, a port scan, a forged hello and a wrong key came first; the real source completed"

# Four silent peers fill the handshake slots: a fifth connection is turned
# away at once, and once their handshakes time out the real source gets in.
make_random "$T/slots.img" $size 14
DST="$T/slots.img"
start_receiver slots --device d0="$DST" --tls-psk "$T/keys.psk" --timeout 2
RECV_ERR="$T/slots.err"
python3 - "$RECV_PORT" <<'PY' &
import socket, sys, time
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(4)]
time.sleep(30)
PY
holder=$!
BG_PIDS+=("$holder")
for _ in $(seq 200); do [ "$(ss -tn state established "( dport = :$RECV_PORT )" | grep -c .)" -ge 5 ] && break; sleep 0.05; done
send_refused slots-full "closed the connection without an answer|closed" --tls-psk "$T/keys.psk" --retry-for 0
grep -q "too many connections are being tried at once" "$T/slots.err" || { cat "$T/slots.err" >&2; fail "slots: the fifth was not turned away"; }
for _ in $(seq 200); do [ "$(grep -c 'no answer within' "$T/slots.err")" = 4 ] && break; sleep 0.05; done
[ "$(grep -c 'no answer within' "$T/slots.err")" = 4 ] || { cat "$T/slots.err" >&2; fail "slots: silent peers not timed out"; }
send_ok slots --tls-psk "$T/keys.psk"
kill "$holder" 2>/dev/null
pass "four silent peers hold every handshake slot; a fifth is turned away; after their timeout the source completes"

# Plaintext receiver (loopback): a forged valid HELLO whose device the
# receiver lacks is refused before anything is written.
make_random "$T/forged.img" $size 12
DST="$T/forged.img"
start_receiver forged --device d0="$DST"
RECV_ERR="$T/forged.err"
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault hello-device >"$T/hd.craft" 2>&1 ||
	{ cat "$T/hd.craft" >&2; fail "hello-device: craft"; }
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault bad-magic >"$T/bm.craft" 2>&1 ||
	{ cat "$T/bm.craft" >&2; fail "bad-magic: craft"; }
# A peer that says HELLO and then ABORT (which reads as ECANCELED, like a
# cancel of our own) is refused like any other: the wait goes on.
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $size --fault hello-abort >"$T/ha.craft" 2>&1 ||
	{ cat "$T/ha.craft" >&2; fail "hello-abort: craft"; }
kill -0 "$RECV_PID" || fail "forged: the receiver gave up"
grep -q "refused a connection from .*craft aborts before any record" "$T/forged.err" ||
	{ cat "$T/forged.err" >&2; fail "hello-abort: not logged as refused"; }
send_ok forged
pass "plaintext receiver: a forged hello, garbage and a HELLO+ABORT refused; the real source completed"

# While one migration runs, a second sender is refused and the first wins.
DST="$T/busy.img"
start_receiver busy --device d0="$DST" --create --tls-psk "$T/keys.psk"
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --tls-psk "$T/keys.psk" \
	--max-bandwidth 2M >"$T/busy.send.out" 2>"$T/busy.send.err" &
first=$!
for _ in $(seq 200); do [ -s "$DST" ] && break; sleep 0.05; done
make_random "$T/intruder.img" $size 13
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/intruder.img" --tls-psk "$T/keys.psk" \
	>/dev/null 2>"$T/busy2.err"
expect_error $? 1 "$T/busy2.err" "another migration is already being received"
wait_rc $first
[ "$RC" = 0 ] || { cat "$T/busy.send.err" >&2; fail "busy: the first migration failed"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || fail "busy: receive failed"
cmp "$T/src.img" "$DST" || fail "busy: the image is not the first sender's"
pass "a second sender during a migration is refused; the first completes"

# --max-refused bounds the wait.
start_receiver bounded --device d0="$T/bounded.img" --create --tls-psk "$T/keys.psk" --max-refused 2
echo junk | nc -q1 127.0.0.1 "$RECV_PORT" >/dev/null 2>&1
echo junk | nc -q1 127.0.0.1 "$RECV_PORT" >/dev/null 2>&1
wait_rc "$RECV_PID"
expect_error "$RC" 1 "$T/bounded.err" "gave up after 2 refused connections"
[ -e "$T/bounded.img" ] && fail "bounded: an image was created"
pass "receive --max-refused 2 gives up after two bad peers, creating nothing"

# wait_serving NAME: until daemon NAME says its incoming migration is done.
wait_serving() {
	for _ in $(seq 400); do
		grep -q "incoming migration complete; serving" "$T/$1.err" && return 0
		sleep 0.05
	done
	cat "$T/$1.err" >&2
	fail "$1 never finished its incoming migration"
}

# ---- daemons: serve --incoming and migrate, with both kinds ---------------
cp "$T/src.img" "$T/served.img"
start_serve srcd --device d0="$T/served.img" --control "$T/srcd.sock" --tls-psk "$T/keys.psk"
start_serve dstd --device d0="$T/dstd.img" --incoming 127.0.0.1:0 --create --tls-psk "$T/keys.psk"
dstd_pid=$SERVE_PID
echo junk | nc -q1 127.0.0.1 "$INCOMING_PORT" >/dev/null 2>&1
nc -z 127.0.0.1 "$INCOMING_PORT"
"$BLKMIG" migrate --control "$T/srcd.sock" --to "127.0.0.1:$INCOMING_PORT" --wait >"$T/mig.out" 2>"$T/mig.err" ||
	{ cat "$T/mig.err" "$T/dstd.err" >&2; fail "migrate with the daemon's PSK"; }
wait_serving dstd
cmp "$T/src.img" "$T/dstd.img" || fail "serve: images differ"
grep -q "incoming: refused a connection" "$T/dstd.err" || fail "serve: the bad peer was not logged"
stop "$dstd_pid"
pass "migrate -> serve --incoming over the daemons' PSK, after garbage and a port scan"

cp "$T/src.img" "$T/served2.img"
start_serve srce --device d0="$T/served2.img" --control "$T/srce.sock"
start_serve dste --device d0="$T/dste.img" --incoming 127.0.0.1:0 --create --tls-creds "$T/pki"
"$BLKMIG" migrate --control "$T/srce.sock" --to "127.0.0.1:$INCOMING_PORT" --wait \
	--tls-creds "$T/pki" --tls-hostname localhost >"$T/mig2.out" 2>"$T/mig2.err" ||
	{ cat "$T/mig2.err" "$T/dste.err" >&2; fail "migrate with X.509 named in the command"; }
wait_serving dste
cmp "$T/src.img" "$T/dste.img" || fail "serve x509: images differ"
pass "migrate --tls-creds (hostname localhost) -> serve --incoming --tls-creds identical"

# ---- usage and configuration errors ---------------------------------------
"$BLKMIG" receive --listen 0.0.0.0:0 --device d0="$T/u.img" >/dev/null 2>"$T/u1.err"
expect_error $? 2 "$T/u1.err" "not a loopback address.*--tls-psk FILE or --tls-creds DIR"
"$BLKMIG" serve --device d0="$T/src.img" --incoming 0.0.0.0:0 >/dev/null 2>"$T/u2.err"
expect_error $? 2 "$T/u2.err" "not a loopback address"
"$BLKMIG" serve --device d0="$T/src.img" --nbd 0.0.0.0:0 >/dev/null 2>"$T/u3.err"
expect_error $? 2 "$T/u3.err" "not a loopback address"
pass "a listener off loopback without TLS is a usage error"

timeout 5 "$BLKMIG" receive --listen 0.0.0.0:0 --port-file "$T/nt.port" --no-tls \
	--device d0="$T/nt.img" --create >/dev/null 2>"$T/nt.err" &
nt=$!
for _ in $(seq 200); do [ -s "$T/nt.port" ] && break; sleep 0.025; done
[ -s "$T/nt.port" ] || { cat "$T/nt.err" >&2; fail "--no-tls: did not listen"; }
kill $nt
wait $nt 2>/dev/null
pass "--no-tls listens off loopback"

chmod 644 "$T/other.psk"
"$BLKMIG" send --reclaim --to 127.0.0.1:1 --device d0="$T/src.img" --tls-psk "$T/other.psk" >/dev/null 2>"$T/k1.err"
expect_error $? 1 "$T/k1.err" "accessible by group or others \(mode 0644\).*chmod 600"
chmod 640 "$T/pki/server-key.pem"
"$BLKMIG" receive --listen 127.0.0.1:0 --device d0="$T/k.img" --tls-creds "$T/pki" >/dev/null 2>"$T/k2.err"
expect_error $? 1 "$T/k2.err" "server-key.pem is accessible by group or others"
chmod 600 "$T/pki/server-key.pem"
pass "key files readable by others are refused"

echo "src:nothex" >"$T/bad.psk" && chmod 600 "$T/bad.psk"
"$BLKMIG" send --reclaim --to 127.0.0.1:1 --device d0="$T/src.img" --tls-psk "$T/bad.psk" >/dev/null 2>"$T/k3.err"
expect_error $? 1 "$T/k3.err" "bad.psk line 1"
"$BLKMIG" send --reclaim --to 127.0.0.1:1 --device d0="$T/src.img" --tls-creds "$T/nowhere" >/dev/null 2>"$T/k4.err"
expect_error $? 1 "$T/k4.err" "nowhere/ca-cert.pem"
"$BLKMIG" send --reclaim --to 127.0.0.1:1 --device d0="$T/src.img" --tls-psk "$T/keys.psk" --tls-creds "$T/pki" >/dev/null 2>"$T/k5.err"
expect_error $? 2 "$T/k5.err" "exclude each other"
"$BLKMIG" receive --listen 127.0.0.1:0 --device d0="$T/k.img" --tls-authz src >/dev/null 2>"$T/k6.err"
expect_error $? 2 "$T/k6.err" "--tls-authz needs"
pass "malformed key file, missing certificate directory, conflicting options: clear errors"
