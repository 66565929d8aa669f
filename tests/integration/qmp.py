#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# A minimal QMP client for the tests: qmp.py SOCK COMMAND [JSON-ARGS]
# prints the "return" value as JSON, or exits 1 printing the error.
# "wait-migration" polls query-migrate until completed or failed and
# prints the final object.
import json, socket, sys, time

def connect(path):
    for _ in range(200):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            f = s.makefile("rw")
            json.loads(f.readline())  # greeting
            return s, f
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.05)
    sys.exit("qmp: cannot connect to " + path)

def call(f, cmd, args=None):
    msg = {"execute": cmd}
    if args is not None:
        msg["arguments"] = args
    f.write(json.dumps(msg) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "event" in r:
            continue
        if "error" in r:
            sys.exit("qmp: %s: %s" % (cmd, r["error"].get("desc")))
        return r["return"]

s, f = connect(sys.argv[1])
call(f, "qmp_capabilities")
cmd = sys.argv[2]
args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
if cmd == "wait-migration":
    deadline = time.time() + float(args or 120)
    while time.time() < deadline:
        r = call(f, "query-migrate")
        if r.get("status") in ("completed", "failed", "cancelled"):
            print(json.dumps(r)); sys.exit(0 if r["status"] == "completed" else 1)
        time.sleep(0.1)
    sys.exit("qmp: migration did not finish")
print(json.dumps(call(f, cmd, args)))
