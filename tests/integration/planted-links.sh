#!/usr/bin/env bash
# Files blkmig creates never follow a symlink planted at their path (DESIGN.md
# rule 8): --port-file of receive and serve, the control socket, an image
# that --create makes.  Each is refused with one clear line, exit 1, and
# the link's target is left untouched.
. "$(dirname "$0")/lib.sh"
requires python3 md5sum

echo "precious contents" >"$T/precious"
want=$(md5sum <"$T/precious")
untouched() { [ "$(md5sum <"$T/precious")" = "$want" ] || fail "$1: the symlink's target was changed"; }
make_random "$T/d.img" $MiB 5

# receive --port-file onto a symlink.
ln -s "$T/precious" "$T/recv.port"
"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$T/recv.port" --device d0="$T/d.img" \
	>"$T/recv.out" 2>"$T/recv.err"
expect_error $? 1 "$T/recv.err" "receive: --port-file: .*recv.port is a symbolic link: refusing to write through it"
untouched "receive --port-file"
[ -L "$T/recv.port" ] || fail "receive --port-file: the link itself was replaced"
pass "receive --port-file refuses a planted symlink"

# serve --port-file onto a symlink.
ln -s "$T/precious" "$T/serve.port"
"$BLKMIG" serve --nbd 127.0.0.1:0 --port-file "$T/serve.port" --device d0="$T/d.img" \
	>"$T/serve.out" 2>"$T/serve.err"
expect_error $? 1 "$T/serve.err" "serve: --port-file: .*serve.port is a symbolic link: refusing to write through it"
untouched "serve --port-file"
[ -L "$T/serve.port" ] || fail "serve --port-file: the link was removed at exit"
pass "serve --port-file refuses a planted symlink"

# A directory where the port file goes: refused, not replaced.
mkdir "$T/dir.port"
"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$T/dir.port" --device d0="$T/d.img" \
	>"$T/dir.out" 2>"$T/dir.err"
expect_error $? 1 "$T/dir.err" "receive: --port-file: .*dir.port exists and is not a regular file"
[ -d "$T/dir.port" ] || fail "the directory was replaced"
pass "--port-file refuses a path that is not a regular file"

# A symlink planted at the temporary name is not followed either.
ln -s "$T/precious" "$T/tp.ports.tmp"
start_serve tp --device d0="$T/d.img"
stop "$SERVE_PID"
untouched "--port-file's temporary"
[ -L "$T/tp.ports.tmp" ] && fail "the temporary link is still there"
pass "a symlink at PORTFILE.tmp is replaced, not followed"

# A symlink planted where a created image's mark goes: refused before the
# image exists, the link's target untouched, no image made.
: "${BLKMIG_CRAFT:?}"
ln -s "$T/precious" "$T/new.img.blkmig-incomplete"
start_receiver side --device d0="$T/new.img" --create --timeout 10 --max-refused 1 --retry-for 0
"$BLKMIG_CRAFT" --to "127.0.0.1:$RECV_PORT" --size $MiB --fault ok >"$T/side.craft" 2>&1
wait_rc "$RECV_PID"
expect_error "$RC" 1 "$T/side.err" "new.img.blkmig-incomplete is a symbolic link: refusing to write through it"
untouched "the mark of a created image"
[ -e "$T/new.img" ] && fail "the image was created although its mark could not be"
pass "--create refuses a symlink planted at the image's mark"
