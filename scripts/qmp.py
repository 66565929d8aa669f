#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The one QMP client of the tests and benchmarks: for QEMU's monitor and
for blkmig's control socket, which speaks the same JSON lines
(docs/control.md).  Standard library only; runs on Debian's python3.

As a module (put scripts/ on sys.path):

    q = QMP(path)            connect, retrying for up to 10 s while the
                             socket appears; read the greeting and send
                             qmp_capabilities
    q.call(cmd, args, **kw)  the "return" value; events are skipped; an
                             error reply raises QMPError
    q.wait_migration(secs)   poll query-migrate until completed, failed or
                             cancelled; the last answer (TimeoutError if
                             none within secs)

As a command (what the shell tests and benchmarks use):

    qmp.py SOCK COMMAND [JSON-ARGS]     print the return value as JSON;
                                        exit 1 with the error on stderr
    qmp.py SOCK wait-migration [SECS]   wait_migration (default 120 s);
                                        print the final object; exit 0
                                        only when it completed
"""
import json
import socket
import sys
import time

FINAL_STATUSES = ("completed", "failed", "cancelled")


class QMPError(RuntimeError):
    """An error reply: .cmd, and .error as the peer sent it."""

    def __init__(self, cmd, error):
        super().__init__(f"{cmd}: {error.get('desc', error)}")
        self.cmd, self.error = cmd, error


class QMP:
    def __init__(self, path, tries=200, delay=0.05):
        for _ in range(tries):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                time.sleep(delay)
        else:
            raise ConnectionError(f"qmp: cannot connect to {path}")
        self.sock = s
        self.f = s.makefile("rw")
        self.greeting = self._read()
        self.call("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("qmp: the peer closed the connection")
        return json.loads(line)

    def call(self, cmd, args=None, **kw):
        args = dict(args or {}, **kw)
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = self._read()
            if "event" in r:
                continue
            if "error" in r:
                raise QMPError(cmd, r["error"])
            return r["return"]

    def wait_migration(self, timeout=120, poll=0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.call("query-migrate")
            if r.get("status") in FINAL_STATUSES:
                return r
            time.sleep(poll)
        raise TimeoutError(f"qmp: migration did not finish in {timeout} s")

    def close(self):
        self.f.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: qmp.py SOCK COMMAND [JSON-ARGS] | qmp.py SOCK wait-migration [SECS]")
    arg = json.loads(argv[3]) if len(argv) > 3 else None
    try:
        with QMP(argv[1]) as q:
            if argv[2] == "wait-migration":
                r = q.wait_migration(float(arg or 120))
                print(json.dumps(r))
                return 0 if r["status"] == "completed" else 1
            print(json.dumps(q.call(argv[2], arg)))
            return 0
    except (QMPError, OSError, TimeoutError, ValueError) as e:
        msg = str(e)
        sys.exit(msg if msg.startswith("qmp: ") else "qmp: " + msg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
