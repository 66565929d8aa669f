#!/usr/bin/env bash
# The operator, not the source, bounds what --create makes (DESIGN.md rule
# 8): --max-size and --device NAME=PATH,size=SIZE are checked before any
# file exists; a created image is marked incomplete from its first moment,
# removed when the migration fails before anything was written to it, kept
# (marked) when data had arrived; the tables are bounded whatever the
# claim; a dangling symlink is never created through.
. "$(dirname "$0")/lib.sh"
: "${BLKMIG_CRAFT:?}"
requires python3 truncate

MiB=$((1024 * 1024))
nothing_at() { # PATH WHAT: neither the image nor its sidecar mark exists
	[ -e "$1" ] || [ -L "$1" ] && fail "$2: $1 was left behind"
	[ -e "$1.blkmig-incomplete" ] && fail "$2: its mark was left behind"
	return 0
}

# craft_to NAME FAULT SIZE [craft options]: a crafted source against the
# receiver started as NAME; then waits for the receiver (RC).
craft_to() {
	local name=$1 fault=$2 size=$3
	shift 3
	"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size "$size" --fault "$fault" "$@" \
		>"$T/$name.craft" 2>&1
	CRAFT_RC=$?
	wait_rc "$RECV_PID"
}

# A 16 TiB claim against the default --max-size (1 TiB): refused, nothing made.
start_receiver huge --device d0="$T/huge.img" --create --timeout 10 --max-refused 1 --retry-for 0
craft_to huge ok 16T
expect_error "$RC" 1 "$T/huge.err" "device d0: the source claims 16.0 TiB \(17592186044416 bytes\), more than --max-size 1.0 TiB \(1099511627776 bytes\): not creating .*huge.img"
nothing_at "$T/huge.img" "16 TiB claim"
pass "a 16 TiB claim is refused by the default --max-size"

# --max-size: one byte over is refused, the limit itself is created exactly.
start_receiver over --device d0="$T/over.img" --create --max-size 4M --timeout 10 --max-refused 1 --retry-for 0
craft_to over ok $((4 * MiB + 4096)) --chunk-size 4K
expect_error "$RC" 1 "$T/over.err" "claims 4.0 MiB \(4198400 bytes\), more than --max-size 4.0 MiB"
nothing_at "$T/over.img" "--max-size"
start_receiver at --device d0="$T/at.img" --create --max-size 4M --timeout 10 --max-refused 1 --retry-for 0
craft_to at ok $((4 * MiB))
[ "$RC" = 0 ] || { cat "$T/at.err" >&2; fail "a claim of exactly --max-size was refused"; }
[ "$(stat -c %s "$T/at.img")" = $((4 * MiB)) ] || fail "--max-size: wrong size"
is_marked "$T/at.img" && fail "--max-size: still marked after success"
[ -e "$T/at.img.blkmig-incomplete" ] && fail "--max-size: sidecar left after success"
pass "--max-size bounds the claim; a claim at the bound is created"

# An existing empty file is grown under the same bound: over it, refused
# and left as it was; within it, grown and completed.
: >"$T/empty.img"
start_receiver empty --device d0="$T/empty.img" --create --max-size 1M --timeout 10 --max-refused 1 --retry-for 0
craft_to empty ok $((2 * MiB))
expect_error "$RC" 1 "$T/empty.err" "device d0: the source claims 2.0 MiB .*more than --max-size 1.0 MiB .*: not creating .*empty.img"
[ -f "$T/empty.img" ] && [ ! -s "$T/empty.img" ] || fail "empty: the empty file was changed or removed"
is_marked "$T/empty.img" && fail "empty: marked although refused"
start_receiver empty2 --device d0="$T/empty.img" --create --timeout 10 --max-refused 1 --retry-for 0
craft_to empty2 ok $((2 * MiB))
[ "$RC" = 0 ] || { cat "$T/empty2.err" >&2; fail "empty: a claim within the bound was refused"; }
[ "$(stat -c %s "$T/empty.img")" = $((2 * MiB)) ] || fail "empty: not grown"
is_marked "$T/empty.img" && fail "empty: still marked after success"
pass "an empty image is grown only within --max-size"

# Created, then the resize fails (the file size limit): neither the image
# nor its mark is left.
rm -f "$T/fsz.port"
(trap '' XFSZ; ulimit -f 1024; exec "$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$T/fsz.port" \
	--device d0="$T/fsz.img" --create --timeout 10 --max-refused 1 --retry-for 0 >"$T/fsz.out" 2>"$T/fsz.err") &
RECV_PID=$!
BG_PIDS+=("$RECV_PID")
for _ in $(seq 1 400); do [ -s "$T/fsz.port" ] && break; sleep 0.025; done
RECV_PORT=$(cat "$T/fsz.port")
craft_to fsz ok $((4 * MiB))
expect_error "$RC" 1 "$T/fsz.err" "resize .*fsz.img to 4194304 bytes: File too large"
nothing_at "$T/fsz.img" "failed resize"
pass "an image whose creation fails half way is removed with its mark"

# size=: any other claim is refused, naming the device and both sizes.
start_receiver sz --device d0="$T/sz.img,size=3M" --create --timeout 10 --max-refused 1 --retry-for 0
craft_to sz ok $((5 * MiB))
expect_error "$RC" 1 "$T/sz.err" "device d0: the source sends 5.0 MiB \(5242880 bytes\), but --device d0,size= allows exactly 3.0 MiB \(3145728 bytes\)"
nothing_at "$T/sz.img" "size="
start_receiver sz2 --device d0="$T/sz2.img,size=5M" --create --max-size 1M --timeout 10 --max-refused 1 --retry-for 0
craft_to sz2 ok $((5 * MiB))
[ "$RC" = 0 ] || { cat "$T/sz2.err" >&2; fail "size= equal to the claim was refused"; }
[ "$(stat -c %s "$T/sz2.img")" = $((5 * MiB)) ] || fail "size=: wrong size"
pass "size= is the only size a source may send, and overrides --max-size"

# size= against an existing image of another size: refused, image untouched.
make_random "$T/ex.img" $((2 * MiB)) 7
cp "$T/ex.img" "$T/ex.orig"
start_receiver ex --device d0="$T/ex.img,size=3M" --timeout 10 --max-refused 1 --retry-for 0
craft_to ex ok $((3 * MiB))
expect_error "$RC" 1 "$T/ex.err" "device d0: .*ex.img is 2.0 MiB \(2097152 bytes\), but --device d0,size= says 3.0 MiB"
cmp -s "$T/ex.img" "$T/ex.orig" || fail "size= mismatch: the existing image changed"
is_marked "$T/ex.img" && fail "size= mismatch: existing image marked"
pass "size= is checked against an existing image too"

# A created image, then a refusal before anything was written: removed.
start_receiver gone --device d0="$T/gone0.img" --device d1="$T/gone1.img" --create --timeout 10 --max-refused 1 --retry-for 0
craft_to gone ok $((2 * MiB))
expect_error "$RC" 1 "$T/gone.err" "device d1 is not in the migration"
nothing_at "$T/gone0.img" "refused after creating"
nothing_at "$T/gone1.img" "refused after creating"
pass "an image created for a refused migration is removed"

# Data written, then the source vanishes: kept, marked; serve refuses it.
start_receiver kept --device d0="$T/kept.img" --create --timeout 10 --max-refused 1 --retry-for 0
craft_to kept truncated $((4 * MiB))
expect_error "$RC" 1 "$T/kept.err" "connection closed"
[ -e "$T/kept.img" ] || fail "kept: the partly written image was removed"
is_marked "$T/kept.img" || fail "kept: the partly written image is not marked incomplete"
"$BLKMIG" serve --nbd 127.0.0.1:0 --device d0="$T/kept.img" >"$T/kserve.out" 2>"$T/kserve.err"
expect_error $? 1 "$T/kserve.err" "kept.img is marked incomplete .*refusing to serve it"
pass "a created image that received data stays, marked, and is not served"

# serve --incoming --create: the same bound, the same cleanup.
start_serve sv --incoming 127.0.0.1:0 --max-refused 1 --retry-for 0 --create --max-size 1M --device d0="$T/sv.img" --device d1="$T/sv1.img,size=1M"
RECV_PID=$SERVE_PID RECV_PORT=$INCOMING_PORT
craft_to sv ok $((2 * MiB))
expect_error "$RC" 1 "$T/sv.err" "incoming migration failed: device d0: the source claims 2.0 MiB .*more than --max-size 1.0 MiB"
nothing_at "$T/sv.img" "serve --max-size"
start_serve sv2 --incoming 127.0.0.1:0 --max-refused 1 --retry-for 0 --create --device d0="$T/sv2a.img" --device d1="$T/sv2b.img"
RECV_PID=$SERVE_PID RECV_PORT=$INCOMING_PORT
craft_to sv2 ok $((2 * MiB))
expect_error "$RC" 1 "$T/sv2.err" "device d1 is not in the migration"
nothing_at "$T/sv2a.img" "serve: refused after creating"
pass "serve --incoming --create: bounded, and a refused migration leaves no image"

# A dangling symlink where the image would be created: never created through.
ln -s "$T/target.img" "$T/link.img"
start_receiver link --device d0="$T/link.img" --create --timeout 10 --max-refused 1 --retry-for 0
craft_to link ok $MiB
expect_error "$RC" 1 "$T/link.err" "open .*link.img: No such file"
[ -e "$T/target.img" ] && fail "created through a dangling symlink"
pass "--create never follows a dangling symlink"

# Tables are bounded whatever the claim: 4 KiB chunks over a 256 GiB image.
truncate -s 256G "$T/big.img" || skip "no 256 GiB sparse file here"
start_receiver tab --device d0="$T/big.img" --timeout 10 --max-refused 1 --retry-for 0
craft_to tab ok 256G --chunk-size 4K
expect_error "$RC" 1 "$T/tab.err" "device d0: more than 33554432 chunks of 4096 bytes in the migration: too many to track"
is_marked "$T/big.img" && fail "tables: image marked although refused at the handshake"
pass "per-chunk tables are bounded"
