#!/usr/bin/env bash
# Malformed NBD traffic against `blkmig serve`: garbage instead of a
# handshake, a bad request magic, an unknown command, out-of-range and
# oversized requests, a truncated request, a client vanishing in the middle
# of a write.  Each gets the protocol's error or a closed connection, the
# image is untouched, and the daemon keeps serving other clients.
. "$(dirname "$0")/lib.sh"
requires nbdinfo python3 md5sum

size=$((8 * MiB))
make_random "$T/a.img" $size 121
sum=$(md5sum <"$T/a.img")
start_serve srv --device d0="$T/a.img"

python3 - "$NBD_PORT" $size <<'PY' || fail "malformed traffic"
import os, socket, struct, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
REQ, SIMPLE, OPT, OPTREPLY = 0x25609513, 0x67446698, 0x49484156454F5054, 0x3e889045565a9
READ, WRITE = 0, 1

def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed")
        b += c
    return b

def handshake(s, name=b"d0"):
    assert recvn(s, 8) == b"NBDMAGIC"
    assert struct.unpack(">Q", recvn(s, 8))[0] == OPT
    recvn(s, 2)
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", OPT, 7, len(data)) + data)  # NBD_OPT_GO
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        assert magic == OPTREPLY, hex(magic)
        recvn(s, ln)
        if typ == 1:
            return
        assert typ < 0x80000000, "GO refused: 0x%x" % typ

def request(s, typ, off, ln, flags=0, magic=REQ, payload=b""):
    s.sendall(struct.pack(">IHHQQI", magic, flags, typ, 0x1234, off, ln) + payload)

def reply(s):
    magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE and handle == 0x1234, (hex(magic), handle)
    return err

def closed(s):
    try:
        s.settimeout(10)
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, EOFError):
        return True
    except socket.timeout:
        return False

def works(s):
    request(s, READ, 0, 4096)
    assert reply(s) == 0
    recvn(s, 4096)

# 1. Garbage instead of the client's handshake.
s = conn(); recvn(s, 18); s.sendall(os.urandom(200))
assert closed(s), "garbage handshake: not closed"
print("garbage handshake: connection closed")

# 2. Bad request magic.
s = conn(); handshake(s); request(s, READ, 0, 4096, magic=0xdeadbeef)
assert closed(s), "bad magic: not closed"
print("bad request magic: connection closed")

# 3. Unknown command: EINVAL, connection still usable.
s = conn(); handshake(s); request(s, 99, 0, 0)
e = reply(s); assert e == 22, e
works(s); print("unknown command: EINVAL, connection still usable")

# 4. Read past the end: EINVAL, usable.
request(s, READ, size - 4096, 8192)
e = reply(s); assert e in (22, 28), e
works(s); print("read past the end: error %d, connection still usable" % e)

# 5. Write past the end with its payload: ENOSPC/EINVAL, payload consumed.
request(s, WRITE, size, 4096, payload=b"\xee" * 4096)
e = reply(s); assert e in (22, 28), e
works(s); print("write past the end: error %d, payload consumed" % e)

# 6. Oversized read: an error or a closed connection, never 1 GiB of data.
request(s, READ, 0, 1 << 30)
try:
    e = reply(s); assert e != 0, "1 GiB read accepted"
    print("oversized read: error %d" % e)
except EOFError:
    print("oversized read: connection closed")
s.close()

# 7. Truncated request.
s = conn(); handshake(s); s.sendall(struct.pack(">IHH", REQ, 0, READ)); s.close()
print("truncated request: sent and closed")

# 8. Vanishing in the middle of a write payload: nothing of it is written.
s = conn(); handshake(s)
s.sendall(struct.pack(">IHHQQI", REQ, 0, WRITE, 1, 65536, 65536) + b"\xab" * 1000)
s.close()
print("client vanished mid-write")

# 7. An export name with a newline and terminal escapes: the refusal's
# message names it escaped, with no raw control byte.
s = conn()
assert recvn(s, 8) == b"NBDMAGIC"; recvn(s, 10)
s.sendall(struct.pack(">I", 3))
name = b"x\n\x1b[2Jblkmig: \\ok"
data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
s.sendall(struct.pack(">QII", OPT, 7, len(data)) + data)
magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
msg = recvn(s, ln)
assert typ >= 0x80000000, hex(typ)
assert msg == b"no export named 'x\\x0a\\x1b[2Jblkmig: \\x5cok'", msg
print("unknown export name: refused, escaped:", msg.decode())


# Another client is served normally throughout.
s = conn(); handshake(s); works(s); s.close()
PY
pass "malformed requests answered with errors or a closed connection"
nbdinfo --size "nbd://127.0.0.1:$NBD_PORT/d0" >/dev/null || fail "the daemon stopped serving"
kill -0 "$SERVE_PID" || fail "the daemon died"
sleep 0.3
[ "$(md5sum <"$T/a.img")" = "$sum" ] || fail "the image changed"
pass "daemon still serving, image untouched"
stop "$SERVE_PID"
