# SPDX-License-Identifier: MIT
# Shared helpers for the integration tests: requirements, a scratch
# directory removed on exit, background processes killed on exit, image
# makers and failure checks.  Each test sources this file.
set -uo pipefail

: "${BLKMIG:?BLKMIG must point at the blkmig binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/blkmig-test.XXXXXX")
BG_PIDS=()

cleanup() {
	for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }
pass() { echo "PASS: $*"; }

# The shared QMP client (scripts/qmp.py), for QEMU's monitor and blkmig's
# control socket: $QMP SOCK COMMAND [JSON-ARGS] | $QMP SOCK wait-migration [SECS]
QMP="python3 $(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/qmp.py"

requires() { for c in "$@"; do command -v "$c" >/dev/null || skip "needs $c"; done; }

# make_random PATH SIZE [SEED]: deterministic pseudo-random contents.
make_random() {
	python3 - "$1" "$2" "${3:-1}" <<'PY'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
with open(path, "wb") as f:
    left = size
    while left:
        n = min(left, 1 << 20)
        f.write(r.randbytes(n))
        left -= n
PY
}

# make_sparse PATH SIZE "OFF:LEN[,OFF:LEN...]" [SEED]: holes but for the
# listed random extents (sizes in bytes).
make_sparse() {
	python3 - "$1" "$2" "$3" "${4:-2}" <<'PY'
import random, sys
path, size, extents, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
r = random.Random(seed)
with open(path, "wb") as f:
    f.truncate(size)
    for e in filter(None, extents.split(",")):
        off, ln = (int(x) for x in e.split(":"))
        f.seek(off)
        f.write(r.randbytes(ln))
PY
}

MiB=$((1024 * 1024))

# start_receiver LOGNAME ARGS...: runs `blkmig receive --listen 127.0.0.1:0`
# in the background; sets RECV_PID and RECV_PORT.
start_receiver() {
	local name=$1
	shift
	rm -f "$T/$name.port"
	"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$T/$name.port" "$@" \
		>"$T/$name.out" 2>"$T/$name.err" &
	RECV_PID=$!
	BG_PIDS+=("$RECV_PID")
	for _ in $(seq 1 400); do
		[ -s "$T/$name.port" ] && break
		kill -0 "$RECV_PID" 2>/dev/null || { cat "$T/$name.err" >&2; fail "receiver $name died at start"; }
		sleep 0.025
	done
	[ -s "$T/$name.port" ] || fail "receiver $name did not start listening"
	RECV_PORT=$(cat "$T/$name.port")
}

# wait_rc PID: sets RC to the exit status of a background process (it must
# run in this shell, not in $(...), to be able to wait for its child).
wait_rc() { RC=0; wait "$1" || RC=$?; }

# expect_error RC WANT_RC ERRFILE PATTERN: the status and the one stderr line.
expect_error() {
	local rc=$1 want=$2 errf=$3 pat=$4
	[ "$rc" = "$want" ] || { cat "$errf" >&2; fail "exit status $rc, expected $want ($pat)"; }
	[ "$(grep -c . "$errf")" -ge 1 ] || fail "no message on stderr (expected /$pat/)"
	grep -q "^blkmig" "$errf" || { cat "$errf" >&2; fail "message does not start with 'blkmig'"; }
	grep -qE -- "$pat" "$errf" || { cat "$errf" >&2; fail "message does not match /$pat/"; }
}

is_marked() { python3 -c "import os,sys; os.getxattr(sys.argv[1], 'user.blkmig.incomplete')" "$1" 2>/dev/null || [ -e "$1.blkmig-incomplete" ]; }

json_field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval('d'+sys.argv[2]))" "$1" "$2"; }

# start_serve NAME ARGS...: runs `blkmig serve --nbd 127.0.0.1:0 --port-file`
# in the background; sets SERVE_PID and, once listening, NBD_PORT (and
# INCOMING_PORT when --incoming was given).
start_serve() {
	local name=$1 want_incoming=0
	shift
	case " $* " in *" --incoming "*) want_incoming=1 ;; esac
	rm -f "$T/$name.ports"
	"$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$T/$name.ports" "$@" \
		>"$T/$name.out" 2>"$T/$name.err" &
	SERVE_PID=$!
	BG_PIDS+=("$SERVE_PID")
	for _ in $(seq 1 400); do
		if [ -s "$T/$name.ports" ] && grep -q '^nbd=' "$T/$name.ports" &&
			{ [ $want_incoming = 0 ] || grep -q '^incoming=' "$T/$name.ports"; }; then
			break
		fi
		kill -0 "$SERVE_PID" 2>/dev/null || { cat "$T/$name.err" >&2; fail "serve $name died at start"; }
		sleep 0.025
	done
	NBD_PORT=$(sed -n 's/^nbd=//p' "$T/$name.ports")
	INCOMING_PORT=$(sed -n 's/^incoming=//p' "$T/$name.ports")
	[ -n "$NBD_PORT" ] || fail "serve $name did not start listening"
}

# wait_export PORT NAME: until the export answers (an incoming daemon
# starts serving only after its migration).
wait_export() {
	for _ in $(seq 1 400); do
		nbdinfo --size "nbd://127.0.0.1:$1/$2" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "export $2 on port $1 never became available"
}

# stop PID: SIGTERM and wait; prints nothing, sets RC.
stop() { kill -TERM "$1" 2>/dev/null; wait_rc "$1"; }

# make_psk FILE NAME: a PSK file with one NAME:HEXKEY line, mode 0600 (the
# format of psktool, qemu's keys.psk and blkmig's --tls-psk).
make_psk() {
	(umask 077 && echo "$2:$(openssl rand -hex 32)" >"$1")
}

# make_x509 DIR [CLIENT_CN] [CA_NAME]: a CA and server and client
# certificates in qemu's tls-creds-x509 layout (ca-cert.pem, server-*.pem,
# client-*.pem; keys mode 0600).  The server's is for localhost and
# 127.0.0.1.  With CA_NAME, the CA's files are kept as
# $T/CA_NAME-ca-{cert,key}.pem and reused, so several dirs share one CA.
make_x509() {
	local d=$1 cn=${2:-client} ca=${3:-}
	mkdir -p "$d"
	chmod 700 "$d"
	(
		set -e
		umask 077
		cd "$d"
		if [ -n "$ca" ] && [ -s "$T/$ca-ca-cert.pem" ]; then
			cp "$T/$ca-ca-key.pem" ca-key.pem
			cp "$T/$ca-ca-cert.pem" ca-cert.pem
		else
			certtool --generate-privkey --key-type=ecdsa --outfile ca-key.pem 2>/dev/null
			printf 'cn = blkmig test CA %s\nca\ncert_signing_key\nexpiration_days = 2\n' "$ca" >ca.info
			certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info \
				--outfile ca-cert.pem 2>/dev/null
			if [ -n "$ca" ]; then
				cp ca-key.pem "$T/$ca-ca-key.pem"
				cp ca-cert.pem "$T/$ca-ca-cert.pem"
			fi
		fi
		printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nsigning_key\nencryption_key\nexpiration_days = 2\n' >server.info
		printf 'cn = %s\ntls_www_client\nsigning_key\nencryption_key\nexpiration_days = 2\n' "$cn" >client.info
		for who in server client; do
			certtool --generate-privkey --key-type=ecdsa --outfile $who-key.pem 2>/dev/null
			certtool --generate-certificate --load-privkey $who-key.pem \
				--load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
				--template $who.info --outfile $who-cert.pem 2>/dev/null
		done
		chmod 644 ca-cert.pem server-cert.pem client-cert.pem
	) || fail "make_x509 $d: certtool failed"
}

# The fault-injecting relay (tests/tools/faultrelay.py; run it with Debian's
# python3).  start_relay NAME TO-PORT [OPTIONS...]: relays a free port to
# 127.0.0.1:TO-PORT with the faults in OPTIONS, logging to $T/NAME.relay.log;
# sets RELAY_PID and RELAY_PORT.  `kill -USR1 $RELAY_PID` cuts its open
# connections, -USR2 stalls them, -HUP resumes them.
FAULTRELAY="/usr/bin/python3 $(cd "$(dirname "${BASH_SOURCE[0]}")/../tools" && pwd)/faultrelay.py"
start_relay() {
	local name=$1 to=$2
	shift 2
	rm -f "$T/$name.relay.port"
	$FAULTRELAY --listen 0 --port-file "$T/$name.relay.port" --to "127.0.0.1:$to" \
		--log "$T/$name.relay.log" "$@" 2>"$T/$name.relay.err" &
	RELAY_PID=$!
	BG_PIDS+=("$RELAY_PID")
	for _ in $(seq 1 400); do
		[ -s "$T/$name.relay.port" ] && break
		kill -0 "$RELAY_PID" 2>/dev/null || { cat "$T/$name.relay.err" >&2; fail "relay $name died at start"; }
		sleep 0.025
	done
	[ -s "$T/$name.relay.port" ] || fail "relay $name did not start listening"
	RELAY_PORT=$(cat "$T/$name.relay.port")
}
