#!/usr/bin/env bash
# --cache none|writeback: send -> receive into fresh and existing images,
# dense, sparse and odd-sized (not a multiple of 4096), each compared byte
# for byte; O_DIRECT refused (the test hook, and /dev/shm where tmpfs
# refuses it) falls back to buffered with one line saying so; bad values
# give one clear error each.
. "$(dirname "$0")/lib.sh"
# Each send hands its image over; the next send of it takes it back (--reclaim).
requires cmp python3

# label, receive cache, send cache, src, dst, [receive args...]
migrate() {
	local label=$1 rc_mode=$2 sc_mode=$3 src=$4 dst=$5
	shift 5
	start_receiver "$label" --device d0="$dst" --cache "$rc_mode" "$@"
	"$BLKMIG" send --reclaim --to "127.0.0.1:$RECV_PORT" --device d0="$src" --cache "$sc_mode" \
		>/dev/null 2>"$T/$label.send.err" ||
		{ cat "$T/$label.send.err" "$T/$label.err" >&2; fail "$label: send failed"; }
	wait_rc "$RECV_PID"
	[ "$RC" = 0 ] || { cat "$T/$label.err" >&2; fail "$label: receive exited $RC"; }
	cmp "$src" "$dst" || fail "$label: $dst differs from $src"
	[ "$(stat -c %s "$dst")" = "$(stat -c %s "$src")" ] || fail "$label: size changed"
	is_marked "$dst" && fail "$label: $dst still marked incomplete"
	pass "$label"
}

ODD=$((8 * MiB + 512 * 1024 + 1234))
make_random "$T/dense.img" $((24 * MiB)) 31
make_random "$T/odd.img" $ODD 32
make_sparse "$T/sparse.img" $((40 * MiB)) "0:4096,$((5 * MiB + 100)):300000,$((39 * MiB)):$MiB" 33

for mode in none writeback; do
	migrate "$mode: fresh dense" $mode $mode "$T/dense.img" "$T/$mode-dense.dst" --create
	migrate "$mode: fresh odd" $mode $mode "$T/odd.img" "$T/$mode-odd.dst" --create
	migrate "$mode: fresh sparse" $mode $mode "$T/sparse.img" "$T/$mode-sparse.dst" --create
	# Existing images with other contents are overwritten in place.
	make_random "$T/$mode-over.dst" $((24 * MiB)) 41
	migrate "$mode: existing dense" $mode $mode "$T/dense.img" "$T/$mode-over.dst"
	make_random "$T/$mode-overodd.dst" $ODD 42
	migrate "$mode: existing odd" $mode $mode "$T/odd.img" "$T/$mode-overodd.dst"
	make_random "$T/$mode-oversparse.dst" $((40 * MiB)) 43
	migrate "$mode: existing sparse" $mode $mode "$T/sparse.img" "$T/$mode-oversparse.dst"
done
# Mixed: each side's mode is its own.
migrate "receive none, send writeback" none writeback "$T/odd.img" "$T/mixed1.dst" --create
migrate "receive writeback, send none" writeback none "$T/odd.img" "$T/mixed2.dst" --create

# O_DIRECT refused (the hook makes every file refuse it): buffered, one line.
export BLKMIG_TEST_REFUSE_O_DIRECT=1
migrate "none refused" none none "$T/odd.img" "$T/refused.dst" --create
unset BLKMIG_TEST_REFUSE_O_DIRECT
[ "$(grep -c "refuses O_DIRECT: --cache none falls back" "$T/none refused.err")" = 1 ] ||
	{ cat "$T/none refused.err" >&2; fail "receive: no single fallback line"; }
[ "$(grep -c "refuses O_DIRECT: --cache none falls back" "$T/none refused.send.err")" = 1 ] ||
	{ cat "$T/none refused.send.err" >&2; fail "send: no single fallback line"; }
pass "refused O_DIRECT: one line each side: $(head -1 "$T/none refused.err")"
# writeback never asks for O_DIRECT, so nothing to say.
grep -q "O_DIRECT" "$T/writeback: fresh odd.err" "$T/writeback: fresh odd.send.err" &&
	fail "writeback mentions O_DIRECT"

# tmpfs: refuses O_DIRECT before Linux 6.6 (then the line), takes it since.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
	SHM=$(mktemp -d /dev/shm/blkmig-cache.XXXXXX)
	migrate "none into tmpfs: copied" none none "$T/odd.img" "$SHM/odd.dst" --create
	n=$(grep -c "refuses O_DIRECT" "$T/none into tmpfs: copied.err")
	rm -rf "$SHM"
	[ "$n" -le 1 ] || fail "tmpfs: the fallback said more than once"
	pass "none into tmpfs ($([ "$n" = 1 ] && echo "fell back" || echo "O_DIRECT taken"))"
fi

# serve --incoming --cache none with O_DIRECT refused: the daemon's log says so.
BLKMIG_TEST_REFUSE_O_DIRECT=1 start_serve srv --incoming 127.0.0.1:0 --device d0="$T/serve.dst" \
	--create --cache none
"$BLKMIG" send --reclaim --to "127.0.0.1:$INCOMING_PORT" --device d0="$T/odd.img" >/dev/null 2>"$T/srv.send.err" ||
	{ cat "$T/srv.send.err" "$T/srv.err" >&2; fail "serve: send failed"; }
wait_export "$NBD_PORT" d0
cmp "$T/odd.img" "$T/serve.dst" || fail "serve: image differs"
stop "$SERVE_PID"
grep -q "refuses O_DIRECT: --cache none falls back" "$T/srv.err" ||
	{ cat "$T/srv.err" >&2; fail "serve: no fallback line"; }
pass "serve --incoming --cache none, refused: logged"

# Bad values: exit 2, one line each.
for cmd in receive send serve; do
	"$BLKMIG" $cmd --cache sometimes >/dev/null 2>"$T/bad.err"
	expect_error $? 2 "$T/bad.err" "--cache: unknown mode 'sometimes' \(none or writeback\)"
	[ "$(grep -c "^blkmig" "$T/bad.err")" = 1 ] || { cat "$T/bad.err" >&2; fail "$cmd: more than one error"; }
	"$BLKMIG" $cmd --cache >/dev/null 2>"$T/bad.err"
	expect_error $? 2 "$T/bad.err" "cache"
done
pass "bad --cache values refused"
