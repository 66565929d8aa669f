#!/usr/bin/env bash
# --connections N: one migration striped over several TCP connections.
# send -> receive with 4 connections (plain and TLS-PSK) delivers an
# identical image; a receiver that allows fewer gets fewer; the daemon path
# (serve + migrate --connections 3 while a client writes) is identical; a
# lane cut mid-stream makes the migration resume and still end identical;
# hostile joins (wrong token, index out of range, no migration to join)
# are each refused with their log line and the migration goes on; bad
# option values are usage errors.
. "$(dirname "$0")/lib.sh"
# Each send hands its image over; the next send of it takes it back (--reclaim).
requires cmp python3 openssl qemu-io nbdinfo

size=$((48 * MiB))
make_random "$T/src.img" $size 41

# send_ok NAME RECV-ARGS -- SEND-ARGS: one migration, identical, figures kept.
send_ok() {
	local name=$1
	shift
	local rargs=()
	while [ "$1" != -- ]; do rargs+=("$1"); shift; done
	shift
	rm -f "$T/$name.img"
	start_receiver "$name" --device d0="$T/$name.img" --create "${rargs[@]}"
	"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --json "$@" \
		>"$T/$name.json" 2>"$T/$name.send.err" || { cat "$T/$name.send.err" "$T/$name.err" >&2; fail "$name: send failed"; }
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/$name.err" >&2; fail "$name: receive exited $RC"; }
	cmp "$T/src.img" "$T/$name.img" || fail "$name: the images differ"
}

# ---- four connections, plain and under TLS --------------------------------
send_ok four -- --connections 4
[ "$(json_field "$T/four.json" "['parallel-connections']")" = 4 ] || fail "four: not 4 connections in the report"
pass "send --connections 4: identical image over 4 connections"

make_psk "$T/keys.psk" src
send_ok tls4 --tls-psk "$T/keys.psk" -- --connections 4 --tls-psk "$T/keys.psk"
[ "$(json_field "$T/tls4.json" "['parallel-connections']")" = 4 ] || fail "tls4: not 4 connections"
pass "send --connections 4 with TLS-PSK: identical image, each connection its own session"

send_ok capped --max-connections 2 -- --connections 6
[ "$(json_field "$T/capped.json" "['parallel-connections']")" = 2 ] || fail "capped: the receiver's limit was not applied"
pass "receive --max-connections 2 gives a source asking for 6 two connections"

send_ok one --max-connections 1 -- --connections 3
[ "$(json_field "$T/one.json" "['parallel-connections']")" = 1 ] || fail "one: more than one connection"
pass "receive --max-connections 1: the source goes on over its one connection"

# ---- a lane cut mid-stream: resumed, identical ---------------------------------
# The relay's third connection is one of the lanes (the first is the
# handshake's); it is cut after 4 MiB; the reconnection goes through.
# Dirty mode: in auto mode the write lane is dialled alongside the
# stripes, in no set order, and may be the third connection (it carries
# nothing here, so the cut would never come).
rm -f "$T/cut.img"
start_receiver cut --device d0="$T/cut.img" --create --retry-for 60s
start_relay cut "$RECV_PORT" --conn 3 --cut-at $((4 * MiB))
"$BLKMIG" send --reclaim --to "127.0.0.1:$RELAY_PORT" --device d0="$T/src.img" --connections 4 \
	--mode dirty --max-bandwidth 32M --retry-for 60s --json >"$T/cut.json" 2>"$T/cut.send.err" ||
	{ cat "$T/cut.send.err" "$T/cut.err" "$T/cut.relay.log" >&2; fail "cut: send failed"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || { cat "$T/cut.err" >&2; fail "cut: receive exited $RC"; }
cmp "$T/src.img" "$T/cut.img" || fail "cut: the images differ"
grep -q "fault cut-at" "$T/cut.relay.log" || { cat "$T/cut.relay.log" >&2; fail "cut: the relay cut nothing"; }
[ "$(json_field "$T/cut.json" "['connections']")" -ge 2 ] || fail "cut: no reconnection"
grep -q "connection 1 failed" "$T/cut.send.err" || { cat "$T/cut.send.err" >&2; fail "cut: the failure is not logged"; }
pass "a lane cut mid-stream: resumed ($(json_field "$T/cut.json" "['connections']") connections), identical image"

# ---- hostile joins ------------------------------------------------------------
# join PORT LANE TOKEN-HEX: sends a JOIN, prints the answer's errno and reason
# (u8 type 0x8B, be32 len, be32 errno, reason).
join() {
	python3 - "$@" <<'PY'
import socket, struct, sys
port, lane, token = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(struct.pack(">QHH", 0x424C4B4D4C414E45, lane, 0) + token)
buf = b""
while len(buf) < 9:
    d = s.recv(9 - len(buf))
    if not d:
        print("closed")
        sys.exit(0)
    buf += d
typ, n, err = struct.unpack(">BII", buf)
assert typ == 0x8B and 4 <= n <= 516, (typ, n)
n -= 4
reason = b""
while len(reason) < n:
    d = s.recv(n - len(reason))
    if not d:
        break
    reason += d
print(err, reason.decode("ascii", "replace"))
PY
}
tok=00112233445566778899aabbccddeeff
rm -f "$T/hostile.img"
start_receiver hostile --device d0="$T/hostile.img" --create
join "$RECV_PORT" 1 $tok >"$T/j-none.out" || fail "join script"
grep -q "none is running here" "$T/j-none.out" || { cat "$T/j-none.out" >&2; fail "a join with no migration was not refused as such"; }
"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img" --connections 3 --max-bandwidth 16M \
	--json >"$T/hostile.json" 2>"$T/hostile.send.err" &
SEND_PID=$!
BG_PIDS+=("$SEND_PID")
# Once the stream runs (bytes written), the hostile joins.
for _ in $(seq 1 200); do
	[ "$(stat -c %s "$T/hostile.img" 2>/dev/null || echo 0)" -gt 0 ] && break
	sleep 0.05
done
join "$RECV_PORT" 1 $tok >"$T/j-token.out" || fail "join script"
join "$RECV_PORT" 99 $tok >"$T/j-range.out" || fail "join script"
wait_rc "$SEND_PID"
[ "$RC" = 0 ] || { cat "$T/hostile.send.err" "$T/hostile.err" >&2; fail "hostile: send exited $RC"; }
wait_rc "$RECV_PID"
[ "$RC" = 0 ] || { cat "$T/hostile.err" >&2; fail "hostile: receive exited $RC"; }
cmp "$T/src.img" "$T/hostile.img" || fail "hostile: the images differ"
[ "$(json_field "$T/hostile.json" "['connections']")" = 1 ] || fail "hostile: the migration had to reconnect"
for what in "j-token:wrong join token for connection 2" "j-range:connection index 99 out of range" \
	"j-none:asks to join a migration, but none is running here"; do
	f=${what%%:*} msg=${what#*:}
	grep -q "$msg" "$T/$f.out" || { cat "$T/$f.out" >&2; fail "$f: the joiner was not told '$msg'"; }
	grep -q "refused a connection from .*: join: .*$msg" "$T/hostile.err" ||
		{ cat "$T/hostile.err" >&2; fail "$f: no log line '$msg'"; }
done
pass "hostile joins refused with their reasons logged, the migration unaffected: $(grep -c 'join:' "$T/hostile.err") refusals"

# ---- the daemons: migrate --connections 3 while a client writes -----------------
cp "$T/src.img" "$T/dsrc.img"
start_serve dst --incoming 127.0.0.1:0 --device d0="$T/ddst.img" --create
DST_IN=$INCOMING_PORT DST_PID=$SERVE_PID DST_NBD=$NBD_PORT
start_serve src --device d0="$T/dsrc.img" --control "$T/src.sock"
SRC_NBD=$NBD_PORT SRC_PID=$SERVE_PID
(
	i=0
	while [ ! -e "$T/stop" ]; do
		qemu-io -f raw "nbd://127.0.0.1:$SRC_NBD/d0" -c "write -P $((i % 250 + 1)) $((i * 65536 % (size - 65536))) 64k" \
			>/dev/null 2>&1 && echo "$i ok" || echo "$i fail"
		i=$((i + 1))
	done >"$T/writer.log"
) &
W=$!
sleep 0.3
"$BLKMIG" migrate --control "$T/src.sock" --to "127.0.0.1:$DST_IN" --connections 3 --after refuse \
	--max-bandwidth 24M --wait --json >"$T/mig.json" 2>"$T/mig.err" ||
	{ cat "$T/mig.err" "$T/src.err" "$T/dst.err" >&2; fail "migrate --connections 3 failed"; }
touch "$T/stop"
wait $W
[ "$(json_field "$T/mig.json" "['status']")" = completed ] || fail "daemon: status not completed"
[ "$(json_field "$T/mig.json" "['parallel-connections']")" = 3 ] || { cat "$T/mig.json" >&2; fail "daemon: not 3 connections"; }
oks=$(grep -c " ok$" "$T/writer.log")
[ "$oks" -gt 0 ] || fail "daemon: no client write was acknowledged during the migration"
wait_export "$DST_NBD" d0
cmp "$T/dsrc.img" "$T/ddst.img" || fail "daemon: the images differ"
stop "$SRC_PID"
stop "$DST_PID"
pass "serve + migrate --connections 3 with $oks client writes: identical image"

# ---- bad option values ---------------------------------------------------------
for v in 0 17 abc; do
	"$BLKMIG" send --reclaim --to 127.0.0.1:1 --device d0="$T/src.img" --connections $v 2>"$T/bad.err"
	expect_error $? 2 "$T/bad.err" "connections"
done
"$BLKMIG" send --reclaim --to 127.0.0.1:1 --device d0="$T/src.img" --connections 2 --format qemu 2>"$T/bad.err"
expect_error $? 2 "$T/bad.err" "needs the native format"
"$BLKMIG" receive --listen 127.0.0.1:0 --device d0="$T/x.img" --max-connections 0 2>"$T/bad.err"
expect_error $? 2 "$T/bad.err" "max-connections"
"$BLKMIG" migrate --control "$T/none.sock" --to 127.0.0.1:1 --connections 99 2>"$T/bad.err"
expect_error $? 2 "$T/bad.err" "connections"
pass "bad --connections / --max-connections values are usage errors"
