#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora for the wire fuzzers.

    python3 fuzz/make-seeds.py            # writes fuzz/corpus/{record,native}/

Every seed is a small valid input built from the byte layout in
docs/wire-format.md, independently of the C encoders, so the fuzzers start
from well-formed messages and mutate outward.  Record seeds use 4 KiB
chunks (the fuzz-record target tries 4 KiB first); the first byte of a seed
also picks the chunk size of its third pass.  Output is deterministic.
"""
import os
import struct
import sys

DEVICE_BLOCK, EOS, PROGRESS, ZERO_BLOCK = 0x01, 0x02, 0x04, 0x08
CHUNK = 4096

MAGIC = 0x424C4B4D49470D0A  # "BLKMIG\r\n"
BLOCKS, COMPLETE, ABORT = 0x01, 0x02, 0x03
READY, ACK, ERROR = 0x81, 0x82, 0x83


def counted(name):
    b = name.encode()
    assert 1 <= len(b) <= 255
    return bytes([len(b)]) + b


def rec_data(name, offset, fill=0xA5, chunk=CHUNK):
    return struct.pack(">Q", offset | DEVICE_BLOCK) + counted(name) + bytes([fill]) * chunk


def rec_zero(name, offset):
    return struct.pack(">Q", offset | DEVICE_BLOCK | ZERO_BLOCK) + counted(name)


def rec_progress(pct):
    return struct.pack(">Q", pct << 9 | PROGRESS)


def rec_eos():
    return struct.pack(">Q", EOS)


def hello(devs, caps=1, chunk=1 << 20):
    out = struct.pack(">QIIIH", MAGIC, 1, caps, chunk, len(devs))
    for name, size in devs:
        out += counted(name) + struct.pack(">Q", size)
    return out


def frame(mtype, body):
    return struct.pack(">BI", mtype, len(body)) + body


def complete(devs):
    body = struct.pack(">H", len(devs))
    for name, chunks, digest in devs:
        assert len(digest) == 16
        body += counted(name) + struct.pack(">Q", chunks) + digest
    return frame(COMPLETE, body)


def error(mtype, err, reason):
    return frame(mtype, struct.pack(">I", err) + reason.encode())


def record_seeds():
    return {
        "eos": rec_eos(),
        "progress-100": rec_progress(100),
        "zero": rec_zero("drive0", 3 * CHUNK),
        "data": rec_data("drive0", CHUNK),
        "section": (rec_zero("drive0", 0) + rec_data("drive0", 2 * CHUNK, 0x11)
                    + rec_zero("virtio-disk1", 5 * CHUNK) + rec_progress(57) + rec_eos()),
        "end-section": rec_data("d", 1 << 20, 0x00) + rec_progress(100) + rec_eos(),
        "long-name": rec_zero("n" * 255, 0) + rec_eos(),
    }


def native_seeds():
    digest = bytes(range(16))
    blocks = bytes([BLOCKS]) + rec_zero("drive0", 0) + rec_data("drive0", CHUNK) + rec_eos()
    return {
        "hello-1": hello([("drive0", 64 << 20)]),
        "hello-2": hello([("drive0", 64 << 20), ("x", 4097)], caps=3, chunk=4096),
        "source-stream": (blocks + bytes([BLOCKS]) + rec_progress(100) + rec_eos()
                          + complete([("drive0", 2, digest)])),
        "complete-2": complete([("drive0", 64, digest), ("drive1", 1, bytes(16))]),
        "abort": error(ABORT, 125, "cancelled by operator"),
        "dest-ok": frame(READY, struct.pack(">I", 1)) + frame(ACK, b""),
        "dest-error": frame(READY, struct.pack(">I", 1))
        + error(ERROR, 5, "digest mismatch on drive0"),
        "error-utf8": error(ERROR, 28, "plus de place \u00e9 \u20ac"),
    }


def write(directory, seeds):
    os.makedirs(directory, exist_ok=True)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    write(os.path.join(root, "record"), record_seeds())
    write(os.path.join(root, "native"), native_seeds())


if __name__ == "__main__":
    main()
