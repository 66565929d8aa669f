#!/usr/bin/env bash
# Malformed QEMU streams into `blkmig receive --format qemu`: each envelope
# error of QEMU-STREAM.md, a real RAM payload, an unknown section, a bad
# footer, and a real capture truncated at every structural boundary.  Each
# gives exit 1 with one clear line, and the image keeps its size and is
# left marked incomplete.
. "$(dirname "$0")/lib.sh"
requires qemu-system-x86_64 python3 timeout

make_random "$T/src.img" $((3 * MiB)) 151
qemu-system-x86_64 -M none -nodefaults -display none -drive "file=$T/src.img,format=raw,if=none,id=drive0" \
	-qmp "unix:$T/q.qmp,server=on,wait=off" 2>"$T/q.err" &
qpid=$!
BG_PIDS+=("$qpid")
timeout 20 $QMP "$T/q.qmp" migrate-set-parameters '{"downtime-limit": 0}' >/dev/null || fail "qmp"
timeout 20 $QMP "$T/q.qmp" migrate "{\"uri\": \"exec:cat > $T/good.bin\", \"blk\": true}" >/dev/null || fail "migrate"
timeout 70 $QMP "$T/q.qmp" wait-migration 60 >/dev/null || fail "capture did not complete"
kill "$qpid"; wait "$qpid" 2>/dev/null

# Structural boundaries of the capture, from inspect's own offsets.
"$BLKMIG" inspect "$T/good.bin" >"$T/good.txt" || fail "inspect"

python3 - "$T" "$BLKMIG" <<'PY' || fail "malformed QEMU streams"
import os, re, socket, struct, subprocess, sys, time
T, blkmig = sys.argv[1], sys.argv[2]
good = open(T + "/good.bin", "rb").read()
size = 3 << 20

def feed(data):
    img = T + "/d.img"
    for suffix in ("", ".blkmig-incomplete"):
        if os.path.exists(img + suffix): os.unlink(img + suffix)
    with open(img, "wb") as f: f.truncate(size)
    pf = T + "/p"
    if os.path.exists(pf): os.unlink(pf)
    p = subprocess.Popen([blkmig, "receive", "--format", "qemu", "--listen", "127.0.0.1:0",
                          "--port-file", pf, "--device", "drive0=" + img, "--timeout", "3",
                          "--max-refused", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if os.path.exists(pf) and open(pf).read().strip(): break
        time.sleep(0.01)
    s = socket.create_connection(("127.0.0.1", int(open(pf).read())))
    try:
        s.sendall(data); s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    rc = p.wait(timeout=20)
    s.close()
    err = p.stderr.read().decode().strip()
    marked = True
    try: os.getxattr(img, "user.blkmig.incomplete")
    except OSError: marked = os.path.exists(img + ".blkmig-incomplete")
    return rc, err, os.path.getsize(img), marked

def expect(label, data, pattern):
    rc, err, sz, marked = feed(data)
    ok = rc == 1 and err.startswith("blkmig:") and "\n" not in err and re.search(pattern, err) \
        and sz == size and marked
    print(("ok   " if ok else "FAIL ") + label + ": " + err)
    return ok

rc, err, sz, marked = feed(good)
assert rc == 0 and not marked, ("the good capture was refused", err)
print("ok   the unmodified capture is accepted")

cfg_end = 8 + 1 + 4 + 4          # header, 0x07, be32 len, "none"
all_ok = True
all_ok &= expect("bad magic", b"XEVM" + good[4:], "not a QEMU|magic")
all_ok &= expect("version 2", good[:4] + struct.pack(">I", 2) + good[8:], "version 2")
all_ok &= expect("no configuration", good[:8] + good[cfg_end:], "onfiguration")
all_ok &= expect("unknown section", good[:cfg_end] +
                 b"\x04" + struct.pack(">I", 9) + b"\x05mouse" + struct.pack(">II", 0, 1) + good[cfg_end:],
                 "section 'mouse' is not supported")
# The ram START payload with a real RAM size.
i = good.index(b"\x03ram")
ram = i + 4 + 8  # after idstr, instance, version
all_ok &= expect("real RAM", good[:ram] + struct.pack(">Q", (1 << 30) | 0x04) + good[ram + 8:], "RAM")
# The first footer (after block START's EOS) made wrong.
f = good.index(b"\x7e", cfg_end)
all_ok &= expect("bad footer", good[:f] + b"\x7f" + good[f + 1:], "footer|section type")
all_ok &= expect("footer for another section", good[:f + 1] + struct.pack(">I", 77) + good[f + 5:], "footer")
all_ok &= expect("no EOF", good[:good.rindex(b"\x00\x06") ] , "closed|truncated|connection")
# Truncation at structural boundaries inspect reported.
offs = sorted({int(l.split()[0]) for l in open(T + "/good.txt") if re.match(r"\s+\d+\s+[A-Z]", l)})
offs = [o for o in offs if 0 < o < len(good) - 500]
# QEMU sends thousands of tiny sections: every kind of boundary appears in
# the first 40 and at the data records; test those and 20 spread over the rest.
offs = sorted(set(offs[:40] + offs[40::max(1, len(offs) // 20)]
                  + [o for o in offs if good[o:o + 8].endswith(b"\x01") and o > 0][:10]))
cut = 0
for o in offs:
    if 0 < o < len(good) - 500:
        all_ok &= expect("truncated at %d" % o, good[:o], "closed|truncated|missing")
        cut += 1
print("%d truncation points" % cut)
sys.exit(0 if all_ok and cut > 5 else 1)
PY
pass "malformed and truncated QEMU streams: exit 1, one line, image size kept, marked incomplete"
