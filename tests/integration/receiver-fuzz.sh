#!/usr/bin/env bash
# Hostile input at scale: capture a real send -> receive stream through a
# recording proxy, then replay mutated copies (bit flips, byte runs,
# truncations, splices; fixed seed) into fresh receivers.  Every receiver
# must end by itself with status 0 or 1 and one 'blkmig' line when it
# fails; never crash, hang, or change the image's size.  Under the ASan
# build this also checks every parse for memory errors.
. "$(dirname "$0")/lib.sh"
requires python3 timeout

size=$((3 * MiB + 4096))
make_sparse "$T/src.img" $size "0:300000,$((2 * MiB)):$((MiB + 4096))" 81

# Record what the sender sends, passing the receiver's answers back.
python3 - "$T" <<'PY' &
import os, socket, sys, threading
T = sys.argv[1]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
open(T + "/proxy.port", "w").write(str(ls.getsockname()[1]))
c, _ = ls.accept()
port = None
while not port:
    try: port = int(open(T + "/up.port").read())
    except Exception: pass
u = socket.create_connection(("127.0.0.1", port))
rec = open(T + "/stream.bin", "wb")
def back():
    while (b := u.recv(65536)):
        c.sendall(b)
    c.close()
threading.Thread(target=back, daemon=True).start()
while (b := c.recv(65536)):
    rec.write(b); u.sendall(b)
rec.close(); u.shutdown(socket.SHUT_WR)
PY
BG_PIDS+=($!)
for _ in $(seq 200); do [ -s "$T/proxy.port" ] && break; sleep 0.02; done
"$BLKMIG" receive --listen 127.0.0.1:0 --port-file "$T/up.port.tmp" --device d0="$T/good.img" --create >/dev/null 2>"$T/good.err" &
rpid=$!
for _ in $(seq 200); do [ -s "$T/up.port.tmp" ] && break; sleep 0.02; done
mv "$T/up.port.tmp" "$T/up.port"
# --mode dirty: one connection (auto and active open a write lane too,
# which this proxy does not relay).
"$BLKMIG" send --to "127.0.0.1:$(cat "$T/proxy.port")" --device d0="$T/src.img" --chunk-size 64K --zero-blocks --mode dirty \
	>/dev/null 2>"$T/good.send.err" || { cat "$T/good.send.err" "$T/good.err" >&2; fail "capture: send failed"; }
wait_rc $rpid; [ "$RC" = 0 ] || fail "capture: receive failed"
cmp "$T/src.img" "$T/good.img" || fail "capture: the proxied migration differs"
[ -s "$T/stream.bin" ] || fail "capture: nothing recorded"
pass "captured $(stat -c %s "$T/stream.bin") bytes of a real stream"
"$BLKMIG" inspect "$T/stream.bin" >"$T/inspect.txt" 2>"$T/inspect.err" || { cat "$T/inspect.err" >&2; fail "inspect of a native capture"; }
grep -q "native stream, version 3, chunk size 65536, caps zero-blocks mirror" "$T/inspect.txt" || { head -3 "$T/inspect.txt" >&2; fail "inspect: HELLO"; }
grep -q "COMPLETE" "$T/inspect.txt" && grep -q "d0: .* data records, .* zero records" "$T/inspect.txt" || fail "inspect: messages or totals"
pass "blkmig inspect decodes the native capture"

python3 - "$T" "$BLKMIG" $size <<'PY' || fail "mutated streams"
import os, random, socket, subprocess, sys, time
T, blkmig, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
good = open(T + "/stream.bin", "rb").read()
rng = random.Random(1234)

def mutate(b):
    b = bytearray(b)
    k = rng.randrange(5)
    if k == 0:    # flip a few bits, weighted to the headers
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(len(b), 256)) if rng.random() < 0.5 else rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif k == 1:  # overwrite a run with one byte value
        i = rng.randrange(len(b)); n = rng.randint(1, 64)
        b[i:i + n] = bytes([rng.choice((0, 0xff, 0x01, 0x7f))]) * len(b[i:i + n])
    elif k == 2:  # truncate
        del b[rng.randrange(len(b)):]
    elif k == 3:  # splice a piece of the stream somewhere else
        i, j = rng.randrange(len(b)), rng.randrange(len(b))
        b[i:i] = b[j:j + rng.randint(1, 600)]
    else:         # random garbage record word after the handshake
        i = rng.randrange(30, len(b))
        b[i:i + 8] = rng.randbytes(8)
    return bytes(b)

crashes = []
for n in range(60):
    img = f"{T}/m.img"
    with open(img, "wb") as f:
        f.truncate(size)
    pf = f"{T}/m.port"
    if os.path.exists(pf): os.unlink(pf)
    p = subprocess.Popen([blkmig, "receive", "--listen", "127.0.0.1:0", "--port-file", pf,
                          "--device", "d0=" + img, "--timeout", "3", "--max-refused", "1", "--retry-for", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(pf) and open(pf).read().strip(): break
        time.sleep(0.01)
    data = mutate(good)
    try:
        s = socket.create_connection(("127.0.0.1", int(open(pf).read())))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        while s.recv(65536): pass
    except OSError:
        pass
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill(); crashes.append((n, "hang")); continue
    err = p.stderr.read().decode(errors="replace").strip()
    if rc not in (0, 1):
        crashes.append((n, f"exit {rc}: {err[-300:]}"))
    elif rc == 1 and (not err.startswith("blkmig:") or "\n" in err):
        crashes.append((n, f"message not one 'blkmig:' line: {err[-300:]}"))
    elif os.path.getsize(img) != size:
        crashes.append((n, "image size changed"))
    elif rc == 0 and data != good and open(img, "rb").read() != open(T + "/src.img", "rb").read():
        crashes.append((n, "accepted a mutated stream and wrote something else"))
for c in crashes:
    print("mutant %d: %s" % c, file=sys.stderr)
sys.exit(1 if crashes else 0)
PY
pass "60 mutated streams: every receiver exited 0 or 1 on its own with one clear line"
