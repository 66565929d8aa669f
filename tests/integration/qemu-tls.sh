#!/usr/bin/env bash
# QEMU 7.2 as a TLS peer of the migration stream, both ways, with the two
# kinds of credentials QEMU's migration takes (tls-creds-x509 and
# tls-creds-psk, set with migrate-set-parameters tls-creds): QEMU ->
# `receive --format qemu --tls-*`, and `send --format qemu --tls-*` -> a
# QEMU started with -incoming defer.  A QEMU with the wrong key is refused
# before anything is written.
. "$(dirname "$0")/lib.sh"
requires qemu-system-x86_64 python3 cmp timeout certtool

# QEMU 7.2 as a TLS migration source now and then ends its stream before
# its last chunks and reports "completed" anyway -- into another QEMU 7.2
# too, which then holds a different image.  glibc's MALLOC_PERTURB_ (which
# meson sets) makes it happen nearly every time, a slow receiver (ASan)
# sometimes.  blkmig's receiver refuses such a stream ("the source carried
# 15 of 16 chunks"), which from_qemu_ok checks, then tries again (3 times at
# most); QEMU runs without MALLOC_PERTURB_.
# It is started as `env -u MALLOC_PERTURB_ qemu-system-x86_64 ... &`: env
# execs QEMU, so $! is QEMU itself and the cleanup's kill reaches it (a
# shell function wrapping it left every QEMU running after the test).

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

make_x509 "$T/pki"
mkdir -p "$T/psk" "$T/badpsk"
make_psk "$T/psk/keys.psk" qemu # QEMU reads DIR/keys.psk
make_psk "$T/badpsk/keys.psk" qemu
make_random "$T/src.img" $((16 * MiB)) 151

# QEMU's -object for credentials KIND (x509|psk|badpsk) as ENDPOINT.
qemu_creds() {
	case $1 in
	x509) echo "tls-creds-x509,id=tls0,dir=$T/pki,endpoint=$2" ;;
	psk | badpsk) # a server takes no username
		echo "tls-creds-psk,id=tls0,dir=$T/${1%psk}psk,endpoint=$2$([ "$2" = client ] && echo ,username=qemu)" ;;
	esac
}

# from_qemu LABEL KIND RECEIVE-TLS-ARGS...: QEMU -> blkmig receive.
from_qemu() {
	local label=$1 kind=$2 qpid
	shift 2
	truncate -s $((16 * MiB)) "$T/$label.dst"
	start_receiver "$label" --format qemu --device drive0="$T/$label.dst" --max-refused 1 --retry-for 0 "$@"
	env -u MALLOC_PERTURB_ qemu-system-x86_64 -M none -nodefaults -display none \
		-drive "file=$T/src.img,format=raw,if=none,id=drive0" \
		-object "$(qemu_creds "$kind" client)" \
		-qmp "unix:$T/$label.qmp,server=on,wait=off" >"$T/$label.qemu.out" 2>"$T/$label.qemu.err" &
	qpid=$!
	BG_PIDS+=("$qpid")
	timeout 20 $QMP "$T/$label.qmp" migrate-set-parameters \
		'{"tls-creds": "tls0", "tls-hostname": "localhost"}' >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$RECV_PORT\", \"blk\": true}" >/dev/null ||
		fail "$label: migrate"
	timeout 70 $QMP "$T/$label.qmp" wait-migration 60 >"$T/$label.qemu.json"
	QEMU_RC=$?
	wait_rc "$RECV_PID"
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
}

# from_qemu_ok LABEL KIND RECEIVE-TLS-ARGS...: from_qemu until it completes
# (see above: a short stream from QEMU must be refused, and is retried).
from_qemu_ok() {
	local label=$1
	for try in 1 2 3; do
		from_qemu "$@"
		[ "$RC" = 0 ] && break
		grep -q "the source carried [0-9]* of 16 chunks: the migration is incomplete" "$T/$label.err" ||
			{ cat "$T/$label.err" "$T/$label.qemu.err" >&2; fail "$label: receive exited $RC"; }
		echo "note: $label try $try: QEMU's TLS stream was short and was refused: $(cat "$T/$label.err")"
		is_marked "$T/$label.dst" || fail "$label: a refused short stream left the image unmarked"
	done
	[ "$RC" = 0 ] || fail "$label: QEMU's TLS stream was short 3 times"
	cmp "$T/src.img" "$T/$label.dst" || fail "$label: images differ"
}

from_qemu_ok x509-in x509 --tls-creds "$T/pki" --tls-authz "CN=client"
pass "QEMU 7.2 (tls-creds-x509) -> receive --format qemu --tls-creds: identical"

from_qemu_ok psk-in psk --tls-psk "$T/psk/keys.psk"
pass "QEMU 7.2 (tls-creds-psk) -> receive --format qemu --tls-psk: identical"

from_qemu badkey badpsk --tls-psk "$T/psk/keys.psk"
expect_error "$RC" 1 "$T/badkey.err" "TLS handshake with .*(key|refused)"
[ "$QEMU_RC" = 0 ] && fail "QEMU with the wrong key completed"
cmp -s "$T/badkey.dst" <(head -c $((16 * MiB)) /dev/zero) || fail "wrong key: the image was written"
pass "QEMU with the wrong key: $(cat "$T/badkey.err")"

# to_qemu LABEL KIND SEND-TLS-ARGS...: blkmig send -> QEMU -incoming defer.
to_qemu() {
	local label=$1 kind=$2 port qpid
	shift 2
	truncate -s $((16 * MiB)) "$T/$label.dst"
	port=$(free_port)
	env -u MALLOC_PERTURB_ qemu-system-x86_64 -M none -nodefaults -display none \
		-drive "file=$T/$label.dst,format=raw,if=none,id=drive0" \
		-object "$(qemu_creds "$kind" server)" -incoming defer \
		-qmp "unix:$T/$label.qmp,server=on,wait=off" >"$T/$label.qemu.out" 2>"$T/$label.qemu.err" &
	qpid=$!
	BG_PIDS+=("$qpid")
	# A drive with no guest device is read-only until asked for write
	# permission (QEMU-STREAM.md): an NBD export that writes once asks.
	timeout 20 $QMP "$T/$label.qmp" nbd-server-start \
		"{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"$T/$label.nbd\"}}}" >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" nbd-server-add '{"device": "drive0", "writable": true}' >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" human-monitor-command \
		'{"command-line": "qemu-io drive0 \"write 0 0\""}' >/dev/null || fail "$label: hmp"
	timeout 20 $QMP "$T/$label.qmp" nbd-server-stop >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" migrate-set-parameters '{"tls-creds": "tls0"}' >/dev/null || fail "$label: qmp"
	timeout 20 $QMP "$T/$label.qmp" migrate-incoming "{\"uri\": \"tcp:127.0.0.1:$port\"}" >/dev/null || fail "$label: qmp"
	"$BLKMIG" send --format qemu --to "127.0.0.1:$port" --device drive0="$T/src.img" "$@" \
		>"$T/$label.out" 2>"$T/$label.err"
	SEND_RC=$?
	if [ "$SEND_RC" = 0 ]; then
		timeout 70 $QMP "$T/$label.qmp" wait-migration 60 >"$T/$label.qemu.json" ||
			{ cat "$T/$label.qemu.json" "$T/$label.qemu.err" >&2; fail "$label: QEMU did not complete"; }
	fi
	kill "$qpid" 2>/dev/null
	wait "$qpid" 2>/dev/null
}

to_qemu x509-out x509 --tls-creds "$T/pki" --tls-hostname localhost
[ "$SEND_RC" = 0 ] || { cat "$T/x509-out.err" >&2; fail "send x509 -> QEMU: exit $SEND_RC"; }
cmp "$T/src.img" "$T/x509-out.dst" || fail "send x509 -> QEMU: images differ"
pass "send --format qemu --tls-creds -> QEMU 7.2 (tls-creds-x509, verify-peer): QEMU completed, identical"

to_qemu psk-out psk --tls-psk "$T/psk/keys.psk"
[ "$SEND_RC" = 0 ] || { cat "$T/psk-out.err" >&2; fail "send psk -> QEMU: exit $SEND_RC"; }
cmp "$T/src.img" "$T/psk-out.dst" || fail "send psk -> QEMU: images differ"
pass "send --format qemu --tls-psk -> QEMU 7.2 (tls-creds-psk): QEMU completed, identical"

to_qemu badkey-out psk --tls-psk "$T/badpsk/keys.psk"
expect_error "$SEND_RC" 1 "$T/badkey-out.err" "TLS handshake"
[ "$(grep -c . "$T/badkey-out.err")" = 1 ] || fail "send with the wrong key: more than one line"
pass "send with the wrong key to QEMU: $(cat "$T/badkey-out.err")"
