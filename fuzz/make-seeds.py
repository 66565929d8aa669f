#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora for the wire fuzzers.

    python3 fuzz/make-seeds.py            # writes fuzz/corpus/{record,native,savevm,stream}/

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
BLOCKS, COMPLETE, ABORT, COMMIT = 0x01, 0x02, 0x03, 0x04
READY, ACK, ERROR, SYNCED, WACK = 0x81, 0x82, 0x83, 0x84, 0x85


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


def rec_write(name, seq, offset, payload=None, length=None):
    """WRITE (0x10, native only): a mirrored client write; zeros when no payload."""
    op = 0 if payload is not None else 1
    n = len(payload) if payload is not None else length
    return (struct.pack(">Q", 0x10) + counted(name) + struct.pack(">QQIB", seq, offset, n, op)
            + (payload or b""))


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
        "write": rec_write("d0", 7, 0x10203, b"hello") + rec_write("d0", 8, 4096, length=512)
        + rec_eos(),
    }


def native_seeds():
    digest = bytes(range(16))
    blocks = bytes([BLOCKS]) + rec_zero("drive0", 0) + rec_data("drive0", CHUNK) + rec_eos()
    return {
        "hello-1": hello([("drive0", 64 << 20)]),
        "hello-2": hello([("drive0", 64 << 20), ("x", 4097)], caps=3, chunk=4096),
        "hello-mirror": hello([("drive0", 64 << 20)], caps=5, chunk=65536),
        "source-stream": (blocks + bytes([BLOCKS]) + rec_progress(100) + rec_eos()
                          + complete([("drive0", 2, digest)])),
        "complete-2": complete([("drive0", 64, digest), ("drive1", 1, bytes(16))]),
        "abort": error(ABORT, 125, "cancelled by operator"),
        "dest-ok": frame(READY, struct.pack(">I", 1)) + frame(ACK, b""),
        "dest-error": frame(READY, struct.pack(">I", 1))
        + error(ERROR, 5, "digest mismatch on drive0"),
        "error-utf8": error(ERROR, 28, "plus de place \u00e9 \u20ac"),
        "mirror-stream": (bytes([BLOCKS]) + rec_data("drive0", 0)
                          + rec_write("drive0", 1, 100, b"abc") + rec_eos()),
        "dest-wack": frame(READY, struct.pack(">I", 1)) + frame(WACK, struct.pack(">Q", 1))
        + frame(SYNCED, struct.pack(">Q", 1)),
        # The whole exchange of a migration with one dirty pass, each side
        # as its peer reads it.
        "source-commit": (blocks + bytes([BLOCKS]) + rec_data("drive0", 0, 0x3C) + rec_eos()
                          + complete([("drive0", 2, digest)]) + frame(COMMIT, b"")),
        "dest-synced": (frame(READY, struct.pack(">I", 1)) + frame(SYNCED, struct.pack(">Q", 1))
                        + frame(SYNCED, struct.pack(">Q", 2)) + frame(ACK, b"")),
        "dest-wack-many": (frame(READY, struct.pack(">I", 1))
                           + frame(WACK, struct.pack(">Q", 1))
                           + frame(WACK, struct.pack(">Q", 0xFFFFFFFFFFFFFFFF))
                           + frame(SYNCED, struct.pack(">Q", 3)) + frame(ACK, b"")),
        "commit": frame(COMMIT, b""),
        "synced-body": struct.pack(">Q", 0x0102030405060708),
    }


QEVM = 0x5145564D  # "QEVM"
SV_EOF, SV_START, SV_PART, SV_END, SV_FULL = 0x00, 0x01, 0x02, 0x03, 0x04
SV_VMDESC, SV_CONFIG, SV_FOOTER = 0x06, 0x07, 0x7E
RAM_MEM_SIZE, RAM_EOS = 0x04, 0x10


def sv_section(stype, sid, payload, idstr=None, instance=0, version=1):
    if stype in (SV_START, SV_FULL):
        head = struct.pack(">BI", stype, sid) + counted(idstr) + struct.pack(">II", instance, version)
    else:
        head = struct.pack(">BI", stype, sid)
    return head + payload + struct.pack(">BI", SV_FOOTER, sid)


def sv_stream(body, machine="none"):
    m = machine.encode()
    return struct.pack(">II", QEVM, 3) + struct.pack(">BI", SV_CONFIG, len(m)) + m + body


def savevm_seeds():
    json = b'{"page_size": 4096, "devices": []}'
    vmdesc = struct.pack(">BI", SV_VMDESC, len(json)) + json
    minimal = (sv_section(SV_START, 1, rec_eos(), "block")
               + sv_section(SV_PART, 1, rec_zero("drive0", 0) + rec_eos())
               + sv_section(SV_END, 1, rec_progress(100) + rec_eos())
               + bytes([SV_EOF]))
    ram_start = struct.pack(">QQ", RAM_MEM_SIZE, RAM_EOS)
    ram_eos = struct.pack(">Q", RAM_EOS)
    globalstate = struct.pack(">I", 8) + b"running".ljust(100, b"\0")
    qemu_source = (sv_section(SV_START, 1, rec_eos(), "block")
                   + sv_section(SV_START, 2, ram_start, "ram", version=4)
                   + sv_section(SV_PART, 1, rec_data("drive0", CHUNK) + rec_eos())
                   + sv_section(SV_PART, 2, ram_eos)
                   + sv_section(SV_END, 1, rec_progress(100) + rec_eos())
                   + sv_section(SV_END, 2, ram_eos)
                   + sv_section(SV_FULL, 3, bytes(24), "timer", version=2)
                   + sv_section(SV_FULL, 4, globalstate, "globalstate")
                   + bytes([SV_EOF]) + vmdesc)
    return {
        "minimal": sv_stream(minimal),
        "minimal-vmdesc": sv_stream(minimal + vmdesc),
        "full-block": sv_stream(sv_section(SV_FULL, 7, rec_zero("drive0", 0) + rec_eos(),
                                           "block") + bytes([SV_EOF])),
        "qemu-source": sv_stream(qemu_source),
        "ram-1g": sv_stream(sv_section(SV_START, 2, struct.pack(">QQ", (1 << 30) | RAM_MEM_SIZE,
                                                                   RAM_EOS), "ram", version=4)),
    }


def stream_seeds():
    """Whole streams for fuzz-stream: both directions of a native conversation
    (4 KiB chunks, MIRROR) and QEMU streams (fuzz-stream reads their block
    records with 4 KiB chunks too)."""
    digest = bytes(range(16))
    source = (hello([("drive0", 3 * CHUNK), ("d1", CHUNK + 1)], caps=5, chunk=CHUNK)
              + bytes([BLOCKS]) + rec_zero("drive0", 0) + rec_data("drive0", CHUNK)
              + rec_write("drive0", 1, 100, b"abc") + rec_progress(50) + rec_eos()
              + bytes([BLOCKS]) + rec_data("d1", CHUNK, 0x11) + rec_write("d1", 2, 0, length=9)
              + rec_progress(100) + rec_eos()
              + complete([("drive0", 2, digest), ("d1", 1, bytes(16))]) + frame(0x04, b""))
    dest = (hello([("drive0", 64 << 20)]) + frame(READY, struct.pack(">I", 1))
            + frame(0x84, struct.pack(">Q", 1)) + frame(0x85, struct.pack(">Q", 7))
            + frame(ACK, b"") + error(ERROR, 5, "digest mismatch on drive0"))
    two = (sv_section(SV_START, 1, rec_eos(), "block")
           + sv_section(SV_PART, 1, rec_data("drive0", 0) + rec_zero("drive1", CHUNK)
                        + rec_data("drive1", 0, 0x22) + rec_eos())
           + sv_section(SV_END, 1, rec_progress(100) + rec_eos()) + bytes([SV_EOF]))
    seeds = {
        "native-source": source,
        "native-dest": dest,
        "native-abort": hello([("drive0", CHUNK)], chunk=CHUNK) + error(ABORT, 125, "cancelled"),
        "qemu-two-devices": sv_stream(two),
        "qemu-mouse": sv_stream(sv_section(SV_FULL, 9, b"", "mouse") + bytes([SV_EOF])),
    }
    for name, data in savevm_seeds().items():
        seeds["qemu-" + name] = data
    return seeds


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
    write(os.path.join(root, "savevm"), savevm_seeds())
    write(os.path.join(root, "stream"), stream_seeds())


if __name__ == "__main__":
    main()
