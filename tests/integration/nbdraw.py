# SPDX-License-Identifier: MIT
"""A raw NBD client for the integration tests: fixed newstyle option
haggling byte by byte, STARTTLS with Python's ssl module (X.509 only: it
has no TLS-PSK), and simple requests.  Written from doc/proto.md; it
checks what the server sends and raises on anything unexpected."""
import socket
import ssl
import struct

OPTS_MAGIC = 0x49484156454F5054  # "IHAVEOPT"
REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
CHUNK_MAGIC = 0x668E33EF

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10

REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
ERR = 0x80000000
REP_ERR_UNSUP, REP_ERR_POLICY, REP_ERR_INVALID = ERR | 1, ERR | 2, ERR | 3
REP_ERR_TLS_REQD, REP_ERR_UNKNOWN, REP_ERR_SHUTDOWN = ERR | 5, ERR | 6, ERR | 7

FLAG_SEND_DF = 1 << 7
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2


class Closed(Exception):
    pass


class Conn:
    def __init__(self, port, source=None, timeout=30):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        if source:
            self.s.bind((source, 0))
        self.s.connect(("127.0.0.1", port))

    def recvn(self, n):
        b = b""
        while len(b) < n:
            try:
                c = self.s.recv(n - len(b))
            except ConnectionResetError:
                c = b""
            if not c:
                raise Closed("closed after %d of %d bytes" % (len(b), n))
            b += c
        return b

    def greet(self, flags=3):
        assert self.recvn(8) == b"NBDMAGIC"
        assert struct.unpack(">Q", self.recvn(8))[0] == OPTS_MAGIC
        self.recvn(2)
        self.s.sendall(struct.pack(">I", flags))

    def opt(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", OPTS_MAGIC, opt, len(data)) + data)

    def reply(self, want_opt):
        magic, opt, typ, ln = struct.unpack(">QIII", self.recvn(20))
        assert magic == REPLY_MAGIC, hex(magic)
        assert opt == want_opt, (opt, want_opt)
        return typ, self.recvn(ln)

    def final_reply(self, opt):
        """Replies to opt until ACK or an error: (type, data of the last)."""
        while True:
            typ, data = self.reply(opt)
            if typ == REP_ACK or typ & ERR:
                return typ, data

    def starttls(self, certdir):
        self.opt(OPT_STARTTLS)
        typ, data = self.reply(OPT_STARTTLS)
        assert typ == REP_ACK, (hex(typ), data)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(certdir + "/ca-cert.pem")
        ctx.load_cert_chain(certdir + "/client-cert.pem", certdir + "/client-key.pem")
        self.s = ctx.wrap_socket(self.s, server_hostname="localhost")
        # TLS 1.3 reports a refused client certificate only on the first
        # read; every caller reads next.

    def go(self, name=b"d"):
        """NBD_OPT_GO: the transmission flags, or raise with the error."""
        self.opt(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        flags = None
        while True:
            typ, data = self.reply(OPT_GO)
            if typ == REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                flags = struct.unpack(">H", data[10:12])[0]
            elif typ == REP_ACK:
                return flags
            elif typ & ERR:
                raise AssertionError("GO refused: 0x%x %r" % (typ, data))

    def read(self, off, ln):
        """A READ answered with a simple reply: (error, data)."""
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, 7, off, ln))
        magic, err, handle = struct.unpack(">IIQ", self.recvn(16))
        assert magic == SIMPLE_MAGIC, "not a simple reply: 0x%x" % magic
        assert handle == 7
        return err, self.recvn(ln) if err == 0 else b""

    def closed(self):
        """True once the server has closed (within the socket timeout)."""
        try:
            while self.s.recv(65536):
                pass
            return True
        except (ConnectionResetError, ssl.SSLError, OSError) as e:
            return not isinstance(e, socket.timeout)

    def close(self):
        self.s.close()


def admitted(port, source=None, tries=200):
    """A connection in transmission on export d, retried while the server
    still counts connections that were just closed (it notices a close a
    moment later)."""
    import time
    for _ in range(tries):
        c = Conn(port, source)
        c.greet()
        try:
            c.go()
            return c
        except AssertionError:
            c.close()
            time.sleep(0.05)
    raise AssertionError("never admitted")
