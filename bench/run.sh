#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# blkmig send -> receive against the tools a user would pick instead, on the
# same images over loopback in the same run: socat piping the raw file (the
# practical limit; shown with and without a final fdatasync, since blkmig's
# receiver makes every pass durable before it acknowledges), and
# qemu-img convert into a qemu-nbd export.  Prints medians of N runs and
# ratios to the socat pipe.  Absolute numbers on a shared 2-core machine are
# noisy; compare the ratios.
#
#   bench/run.sh [--size 1G] [--runs 3] [--sparse]
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G runs=3 sparse=0
while [ $# -gt 0 ]; do
	case $1 in
	--size) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--sparse) sparse=1; shift ;;
	*) echo "usage: bench/run.sh [--size SIZE] [--runs N] [--sparse]" >&2; exit 2 ;;
	esac
done

BLKMIG=${BLKMIG:-build/tools/blkmig}
[ -x "$BLKMIG" ] || { echo "bench: build first (make)" >&2; exit 1; }
for c in socat qemu-img qemu-nbd python3; do
	command -v $c >/dev/null || { echo "bench: needs $c (scripts/install-deps.sh)" >&2; exit 1; }
done
# Debian's interpreter where there is one: a python3 first on PATH may be a
# version manager's shim, which runs shell scripts at every start (and
# t_socat's fdatasync runs inside its timed window).
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

W=$(mktemp -d "${TMPDIR:-/var/tmp}/blkmig-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
bytes=$("$PY" -c "import sys; m={'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")

if [ $sparse = 1 ]; then
	kind="sparse (1/16 data)"
	truncate -s "$bytes" "$W/src.img"
	"$PY" - "$W/src.img" "$bytes" <<'PY'
import os, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    step = 16 << 20
    for off in range(0, size, step):
        f.seek(off)
        f.write(os.urandom(1 << 20))
PY
else
	kind="random"
	head -c "$bytes" /dev/urandom >"$W/src.img"
fi
cat "$W/src.img" >/dev/null # warm the page cache for every contender alike

port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
now() { date +%s.%N; }

t_socat() {
	local p; p=$(port); rm -f "$W/dst.img"
	socat -u TCP-LISTEN:$p,bind=127.0.0.1,reuseaddr OPEN:"$W/dst.img",creat,trunc & local l=$!
	sleep 0.2
	local t0; t0=$(now)
	socat -u OPEN:"$W/src.img" TCP:127.0.0.1:$p
	wait $l
	[ "${1:-}" = sync ] && "$PY" -c "import os,sys; fd=os.open(sys.argv[1],os.O_RDWR); os.fdatasync(fd)" "$W/dst.img"
	"$PY" -c "print($(now) - $t0)"
}

t_blkmig() {
	# The previous run handed src.img over: this one starts afresh.
	local extra=$1; rm -f "$W/dst.img" "$W/port" "$W/src.img.blkmig-handover"
	"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$W/port" --device d0="$W/dst.img" --create >/dev/null & local l=$!
	while [ ! -s "$W/port" ]; do sleep 0.02; done
	local t0; t0=$(now)
	"$BLKMIG" send --to 127.0.0.1:"$(cat "$W/port")" --device d0="$W/src.img" $extra >/dev/null
	wait $l
	"$PY" -c "print($(now) - $t0)"
}

# The same migration over TLS 1.3: the cost of encryption on this machine.
(umask 077 && echo "bench:$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$W/keys.psk")
tls_x509=0
if command -v certtool >/dev/null; then
	(
		umask 077 && mkdir -p "$W/pki" && cd "$W/pki"
		certtool --generate-privkey --key-type=ecdsa --outfile ca-key.pem 2>/dev/null
		printf 'cn = "bench CA"\nca\ncert_signing_key\n' >ca.tmpl
		certtool --generate-self-signed --load-privkey ca-key.pem --template ca.tmpl --outfile ca-cert.pem 2>/dev/null
		printf 'cn = "s"\nip_address = "127.0.0.1"\ntls_www_server\ntls_www_client\nsigning_key\n' >ee.tmpl
		for who in server client; do
			certtool --generate-privkey --key-type=ecdsa --outfile $who-key.pem 2>/dev/null
			certtool --generate-certificate --load-privkey $who-key.pem --load-ca-certificate ca-cert.pem \
				--load-ca-privkey ca-key.pem --template ee.tmpl --outfile $who-cert.pem 2>/dev/null
		done
	) && tls_x509=1
fi

t_blkmig_tls() {
	local opt=$1 arg=$2; rm -f "$W/dst.img" "$W/port" "$W/src.img.blkmig-handover"
	"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$W/port" --device d0="$W/dst.img" --create \
		"$opt" "$arg" >/dev/null & local l=$!
	while [ ! -s "$W/port" ]; do sleep 0.02; done
	local t0; t0=$(now)
	"$BLKMIG" send --to 127.0.0.1:"$(cat "$W/port")" --device d0="$W/src.img" "$opt" "$arg" >/dev/null
	wait $l
	"$PY" -c "print($(now) - $t0)"
}

t_qemu_img() {
	local p; p=$(port); rm -f "$W/dst.img"; truncate -s "$bytes" "$W/dst.img"
	qemu-nbd -f raw -t -b 127.0.0.1 -p $p --cache=writeback "$W/dst.img" & local l=$!
	sleep 0.3
	local t0; t0=$(now)
	qemu-img convert -n -f raw "$W/src.img" -O raw "nbd://127.0.0.1:$p"
	"$PY" -c "print($(now) - $t0)"
	kill $l; wait $l 2>/dev/null || true
}

median() { "$PY" -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

declare -A res
run() { # label, function, args
	local label=$1 f=$2; shift 2
	local ts=()
	for _ in $(seq "$runs"); do ts+=("$($f "$@")"); done
	res[$label]=$(median "${ts[@]}")
	if [ "$label" != "socat pipe" ]; then
		cmp -s "$W/src.img" "$W/dst.img" || { echo "bench: $label produced a different image" >&2; exit 1; }
	fi
}

run "socat pipe" t_socat
run "socat pipe + fdatasync" t_socat sync
run "blkmig send/receive" t_blkmig ""
run "blkmig --zero-blocks" t_blkmig --zero-blocks
run "blkmig --tls-psk" t_blkmig_tls --tls-psk "$W/keys.psk"
labels=("socat pipe" "socat pipe + fdatasync" "blkmig send/receive" "blkmig --zero-blocks" "blkmig --tls-psk")
if [ $tls_x509 = 1 ]; then
	run "blkmig --tls-creds (X.509)" t_blkmig_tls --tls-creds "$W/pki"
	labels+=("blkmig --tls-creds (X.509)")
fi
labels+=("qemu-img convert to qemu-nbd")
run "qemu-img convert to qemu-nbd" t_qemu_img

echo "blkmig bench: $size $kind image over 127.0.0.1, median of $runs runs"
printf '%-32s %9s %11s %10s\n' contender seconds "MiB/s" "vs socat"
base=${res["socat pipe"]}
for label in "${labels[@]}"; do
	"$PY" -c "
import sys
t, b, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print('%-32s %9.2f %11.0f %9.2fx' % (sys.argv[4], t, n / t / 2**20, b / t))" "${res[$label]}" "$base" "$bytes" "$label"
done
"$PY" -c "
import sys
plain, tls = float(sys.argv[1]), float(sys.argv[2])
print('TLS (PSK) costs %.0f%% of blkmig\'s throughput' % (100 * (1 - plain / tls)))" \
	"${res["blkmig send/receive"]}" "${res["blkmig --tls-psk"]}"
echo "kTLS: GnuTLS hands the record layer to the kernel only with the kernel's tls module and"
echo "      'ktls = true' under [global] in /etc/gnutls/config; this kernel: $(
	"$PY" -c "
import socket
l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)
c = socket.create_connection(l.getsockname())
try:
    c.setsockopt(socket.IPPROTO_TCP, 31, b'tls'); print('has it')
except OSError as e:
    print('has no tls module (%s)' % e.strerror)")"
