#!/usr/bin/env bash
# Command-line mistakes and environment failures: exit 2 for usage, 1 for
# failures, one 'blkmig' line saying what is wrong.
. "$(dirname "$0")/lib.sh"

run() { "$BLKMIG" "$@" >"$T/out" 2>"$T/err"; echo $?; }

expect_error "$(run send --device d0=/x)" 2 "$T/err" "--to HOST:PORT is required"
expect_error "$(run send --to 127.0.0.1:1)" 2 "$T/err" "--device"
expect_error "$(run send --to 127.0.0.1:1 --device nopath)" 2 "$T/err" "expected NAME=PATH"
expect_error "$(run send --to 127.0.0.1:1 --device d0=/x --max-bandwidth 12Q)" 2 "$T/err" "unknown suffix"
expect_error "$(run send --to 127.0.0.1:1 --device d0=/x --chunk-size 3000)" 2 "$T/err" "power of two"
expect_error "$(run send --to 127.0.0.1:1 --device d0=/x --workload d0,bs=4K)" 2 "$T/err" "rate= are required"
expect_error "$(run send --to 127.0.0.1:1 --device d0=/x --device d0=/y)" 2 "$T/err" "given twice"
expect_error "$(run receive --device d0=/x)" 2 "$T/err" "--listen"
expect_error "$(run receive --listen 127.0.0.1:0 --device d0=/x,readonly)" 2 "$T/err" "read-only"
expect_error "$(run frobnicate)" 2 "$T/err" "unknown command"
truncate -s 1M "$T/one.img"
ln -s "$T/one.img" "$T/link.img"
expect_error "$(run receive --listen 127.0.0.1:0 --device a="$T/one.img" --device b="$T/link.img")" 2 "$T/err" "devices a and b are the same image"
expect_error "$(run serve --nbd 127.0.0.1:0)" 2 "$T/err" "at least one --device"
expect_error "$(run serve --device d0=/x --create)" 2 "$T/err" "go with --incoming"
expect_error "$(run receive --listen 127.0.0.1:0 --device d0=/x --max-size 1G)" 2 "$T/err" "--max-size goes with --create"
expect_error "$(run receive --listen 127.0.0.1:0 --device d0=/x --create --max-size 0)" 2 "$T/err" "--max-size: '0' is not a size above 0"
expect_error "$(run receive --listen 127.0.0.1:0 --device d0=/x --create --max-size lots)" 2 "$T/err" "--max-size: 'lots' is not a size"
expect_error "$(run receive --listen 127.0.0.1:0 --device d0=/x,size=big)" 2 "$T/err" "invalid --device 'd0=/x,size=big': size 'big' is not a size above 0"
expect_error "$(run receive --listen 127.0.0.1:0 --device $'d\033[2J0=/x')" 2 "$T/err" "invalid --device: name has control characters"
expect_error "$(run send --to 127.0.0.1:1 --device d0=/x,size=1M)" 2 "$T/err" "size= is for receiving devices"
expect_error "$(run serve --device d0=/x,size=1M)" 2 "$T/err" "device d0: size= goes with --incoming, on a writable device"
expect_error "$(run serve --device d0=/x --incoming 127.0.0.1:0 --max-size 1G)" 2 "$T/err" "--max-size goes with --create"
expect_error "$(run serve --device d0=/x --workload nope,bs=4K,rate=1M)" 2 "$T/err" "not a writable --device"
expect_error "$(run migrate --to 127.0.0.1:1)" 2 "$T/err" "--control PATH and --to"
expect_error "$(run migrate --control /x --to 127.0.0.1:1 --mode sideways)" 2 "$T/err" "unknown mode"
expect_error "$(run status)" 2 "$T/err" "--control PATH is required"
expect_error "$(run cancel)" 2 "$T/err" "--control PATH is required"
expect_error "$(run migrate --control /x --to 127.0.0.1:1 --chunk-size 3K)" 2 "$T/err" "power of two"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --mode sideways)" 2 "$T/err" "unknown mode"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --format qemu --mode active)" 2 "$T/err" "needs the native format"
# The mirrored writes' share of the rate: a percentage within 10..90, for
# the native format.
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --mirror-share 95)" 2 "$T/err" "--mirror-share: mirror share 95% is out of range \\(10 to 90 percent of the rate\\)"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --mirror-share 9%)" 2 "$T/err" "mirror share 9% is out of range"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --mirror-share ' 50')" 2 "$T/err" "--mirror-share: ' 50' is not a percentage \\(10 to 90\\)"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --mirror-share 50%%)" 2 "$T/err" "'50%%' is not a percentage"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --mirror-share 99999999999999999999)" 2 "$T/err" "is not a percentage"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --format qemu --mirror-share 60)" 2 "$T/err" "mirror-share needs the native format"
expect_error "$(run migrate --control /x --to 127.0.0.1:1 --mirror-share half)" 2 "$T/err" "--mirror-share: 'half' is not a percentage"
# Resume, delta and verify: what goes with what.
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --retry-for 5x)" 2 "$T/err" "--retry-for: duration '5x': unknown unit 'x'"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --retry-for 2d)" 2 "$T/err" "unknown unit 'd'"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --delta --format qemu)" 2 "$T/err" "delta needs the native format"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --verify-only --format qemu)" 2 "$T/err" "verify-only needs the native format"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --delta --verify-only)" 2 "$T/err" "neither verify-only nor shared-base"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --delta --shared-base)" 2 "$T/err" "neither verify-only nor shared-base"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --verify-only --shared-base)" 2 "$T/err" "neither shared-base nor active mode"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --verify-only --mode active)" 2 "$T/err" "neither shared-base nor active mode"
expect_error "$(run send --to 127.0.0.1:1 --device a=/dev/null --verify-only --workload a,bs=4K,rate=1M)" 2 "$T/err" "does not go with --workload"
expect_error "$(run receive --listen 127.0.0.1:0 --device a=/x --verify-only --create)" 2 "$T/err" "neither --create nor --delta"
expect_error "$(run receive --listen 127.0.0.1:0 --device a=/x --delta --format qemu)" 2 "$T/err" "--delta needs the native format"
expect_error "$(run receive --listen 127.0.0.1:0 --device a=/x --retry-for -1)" 2 "$T/err" "expected a number"
expect_error "$(run serve --device a=/x --verify-only)" 2 "$T/err" "go with --incoming"
expect_error "$(run serve --device a=/x --incoming 127.0.0.1:0 --verify-only --create)" 2 "$T/err" "writes nothing"
expect_error "$(run migrate --control /x --to 127.0.0.1:1 --retry-for soon)" 2 "$T/err" "expected a number"
expect_error "$(run migrate --control /x --to 127.0.0.1:1 --after drop)" 2 "$T/err" "--after takes forward or refuse, not 'drop'"
expect_error "$(run migrate --control /x --to 127.0.0.1:1 --forward-to nohost)" 2 "$T/err" "--forward-to takes HOST:PORT, not 'nohost'"
pass "usage errors exit 2"

expect_error "$(run send --to 127.0.0.1:1 --device d0="$T/missing.img")" 1 "$T/err" "missing.img"
truncate -s 1M "$T/a.img"
expect_error "$(run send --to 127.0.0.1:1 --device d0="$T/a.img" --timeout 1)" 1 "$T/err" "connect to 127.0.0.1:1"
expect_error "$(run receive --listen 256.1.1.1:0 --device d0=/x)" 1 "$T/err" "cannot resolve|listen"
expect_error "$(run send --to 127.0.0.1:1 --device d0="$T/a.img" --format qemu --chunk-size 64K)" 2 "$T/err" "QEMU format has 1M chunks"
expect_error "$(run status --control "$T/no.sock")" 1 "$T/err" "no.sock"
expect_error "$(run cancel --control "$T/no.sock")" 1 "$T/err" "no.sock"
expect_error "$(run serve --nbd 127.0.0.1:0 --device d0="$T/missing.img")" 1 "$T/err" "missing.img"
pass "failures exit 1"

# A destination of another size: both ends fail, nothing is written.
make_random "$T/src.img" $((4 * MiB)) 71
make_random "$T/small.img" $((2 * MiB)) 72
cp "$T/small.img" "$T/small.orig"
start_receiver sm --device d0="$T/small.img" --create --max-refused 1 --retry-for 0
src_rc=$(run send --to "127.0.0.1:$RECV_PORT" --device d0="$T/src.img")
expect_error "$src_rc" 1 "$T/err" "destination failed: device d0: size mismatch"
wait_rc "$RECV_PID"; expect_error "$RC" 1 "$T/sm.err" "size mismatch"
cmp "$T/small.img" "$T/small.orig" || fail "size mismatch: destination written"
pass "size mismatch refused at both ends"

# --help for each command.
for c in send receive demo serve migrate status cancel inspect; do
	"$BLKMIG" "$c" --help >"$T/help.$c" && grep -q "Usage: blkmig $c" "$T/help.$c" || fail "$c --help"
done
pass "--help"

# The QEMU format works in every direction: no help text (nor the manual
# next to this test) may say it is missing.
stale='(qemu|QEMU)[^.]*(not available|not supported|unsupported|not (implemented|yet))'
for c in send receive serve migrate; do
	"$BLKMIG" "$c" --help >"$T/help" || fail "$c --help"
	grep -qE 'native\|qemu' "$T/help" || fail "$c --help does not list --format native|qemu"
	! grep -iE "$stale" "$T/help" || fail "$c --help says the QEMU format is not available"
done
man=$(dirname "$0")/../../docs/blkmig.1
[ -f "$man" ] || fail "no $man"
! grep -iE "$stale" "$man" || fail "docs/blkmig.1 says the QEMU format is not available"
pass "--help and the manual offer the QEMU format"
