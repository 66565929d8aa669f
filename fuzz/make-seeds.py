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
VERSION = 3
BLOCKS, COMPLETE, ABORT, COMMIT, VERDICT = 0x01, 0x02, 0x03, 0x04, 0x05
READY, ACK, ERROR, SYNCED, WACK, STATE, SUMS = 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87
EXPORT = 0x89
CAP_ZERO_BLOCKS, CAP_SHARED_BASE, CAP_MIRROR, CAP_DELTA, CAP_VERIFY = 1, 2, 4, 8, 16
CAP_FORWARD = 32
CAP_COMPRESS = 0x80
ZSTD = 0x20  # with DEVICE_BLOCK: a compressed chunk
HELD_NONE, HELD_PARTIAL, HELD_ALL, HELD_AWAITING = 0, 1, 2, 3
MIGRATION_ID = bytes(range(0xA0, 0xB0))
SUMS_MAX = (65536 - 6) // 24


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


def zstd_frame_rle(byte, n=CHUNK):
    """A zstd frame (RFC 8878) of n copies of byte, built by hand: magic,
    a single-segment header with a 4-byte content size, one last RLE block."""
    return (struct.pack("<I", 0xFD2FB528) + bytes([0xA0]) + struct.pack("<I", n)
            + (1 | 1 << 1 | n << 3).to_bytes(3, "little") + bytes([byte]))


def rec_zstd(name, offset, frame_bytes):
    """ZSTD (0x21, native only, after COMPRESS): a chunk as one zstd frame."""
    return (struct.pack(">Q", offset | DEVICE_BLOCK | ZSTD) + counted(name)
            + struct.pack(">I", len(frame_bytes)) + frame_bytes)


def rec_write(name, seq, offset, payload=None, length=None):
    """WRITE (0x10, native only): a mirrored client write; zeros when no payload."""
    op = 0 if payload is not None else 1
    n = len(payload) if payload is not None else length
    return (struct.pack(">Q", 0x10) + counted(name) + struct.pack(">QQIB", seq, offset, n, op)
            + (payload or b""))


def hello(devs, caps=1, chunk=1 << 20, mid=MIGRATION_ID):
    assert len(mid) == 16
    out = struct.pack(">QIII", MAGIC, VERSION, caps, chunk) + mid + struct.pack(">H", len(devs))
    for name, size in devs:
        out += counted(name) + struct.pack(">Q", size)
    return out


def frame(mtype, body):
    return struct.pack(">BI", mtype, len(body)) + body


def complete(devs, attempt=1):
    assert attempt >= 1
    body = struct.pack(">IH", attempt, len(devs))
    for name, chunks, digest in devs:
        assert len(digest) == 16
        body += counted(name) + struct.pack(">Q", chunks) + digest
    return frame(COMPLETE, body)


def error(mtype, err, reason):
    return frame(mtype, struct.pack(">I", err) + reason.encode())


def ready():
    return frame(READY, struct.pack(">I", VERSION))


def attempt(mtype, n):
    """ACK or COMMIT of switch-over attempt n (>= 1)."""
    assert mtype in (ACK, COMMIT) and n >= 1
    return frame(mtype, struct.pack(">I", n))


def state(held, attempt_n=0, sums=0):
    assert (held == HELD_AWAITING) == (attempt_n > 0)
    assert held != HELD_NONE or sums == 0
    return frame(STATE, struct.pack(">IIQ", held, attempt_n, sums))


def sums(dev, entries):
    """entries: (chunk, 16-byte XXH3-128) pairs, strictly ascending."""
    assert dev < 64 and 1 <= len(entries) <= SUMS_MAX
    body = struct.pack(">HI", dev, len(entries))
    last = -1
    for chunk, digest in entries:
        assert chunk > last and len(digest) == 16
        last = chunk
        body += struct.pack(">Q", chunk) + digest
    return frame(SUMS, body)


def export(port, host=""):
    """Where the destination's NBD export is (FORWARD); port 0: none."""
    h = host.encode()
    assert len(h) <= 255 and (port or not h)
    return frame(EXPORT, struct.pack(">HH", port, len(h)) + h)


def verdict(devs):
    """devs: (name, checked, differing) triples."""
    body = struct.pack(">H", len(devs))
    for name, checked, differing in devs:
        assert differing <= checked
        body += counted(name) + struct.pack(">QQ", checked, differing)
    return frame(VERDICT, body)


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
        "zstd": rec_zstd("drive0", CHUNK, zstd_frame_rle(0xA5)) + rec_eos(),
    }


def native_seeds():
    digest = bytes(range(16))
    blocks = bytes([BLOCKS]) + rec_zero("drive0", 0) + rec_data("drive0", CHUNK) + rec_eos()
    return {
        "hello-1": hello([("drive0", 64 << 20)]),
        "hello-2": hello([("drive0", 64 << 20), ("x", 4097)], caps=3, chunk=4096),
        "hello-mirror": hello([("drive0", 64 << 20)], caps=5, chunk=65536),
        "hello-delta": hello([("drive0", 64 << 20)], caps=CAP_ZERO_BLOCKS | CAP_DELTA,
                             mid=bytes(16)),
        "hello-verify": hello([("drive0", 64 << 20), ("d1", 4096)], caps=CAP_VERIFY,
                              chunk=4096),
        "source-stream": (blocks + bytes([BLOCKS]) + rec_progress(100) + rec_eos()
                          + complete([("drive0", 2, digest)])),
        "complete-2": complete([("drive0", 64, digest), ("drive1", 1, bytes(16))], attempt=2),
        "abort": error(ABORT, 125, "cancelled by operator"),
        "dest-ok": ready() + state(HELD_NONE) + attempt(ACK, 1),
        "dest-error": ready() + state(HELD_NONE) + error(ERROR, 5, "digest mismatch on drive0"),
        "error-utf8": error(ERROR, 28, "plus de place \u00e9 \u20ac"),
        "mirror-stream": (bytes([BLOCKS]) + rec_data("drive0", 0)
                          + rec_write("drive0", 1, 100, b"abc") + rec_eos()),
        "dest-wack": ready() + state(HELD_NONE) + frame(WACK, struct.pack(">Q", 1))
        + frame(SYNCED, struct.pack(">Q", 1)),
        # The whole exchange of a migration with one dirty pass, each side
        # as its peer reads it.
        "source-commit": (blocks + bytes([BLOCKS]) + rec_data("drive0", 0, 0x3C) + rec_eos()
                          + complete([("drive0", 2, digest)]) + attempt(COMMIT, 1)),
        "dest-synced": (ready() + state(HELD_NONE) + frame(SYNCED, struct.pack(">Q", 1))
                        + frame(SYNCED, struct.pack(">Q", 2)) + attempt(ACK, 1)),
        "dest-wack-many": (ready() + state(HELD_NONE)
                           + frame(WACK, struct.pack(">Q", 1))
                           + frame(WACK, struct.pack(">Q", 0xFFFFFFFFFFFFFFFF))
                           + frame(SYNCED, struct.pack(">Q", 3)) + attempt(ACK, 1)),
        "commit": attempt(COMMIT, 1),
        "synced-body": struct.pack(">Q", 0x0102030405060708),
        # Protocol v2: what the destination holds, its digests, verify-only
        # verdicts, numbered switch-over attempts.
        "dest-delta": (ready() + state(HELD_ALL, sums=3)
                       + sums(0, [(0, digest), (1, bytes(16)), (7, b"\xff" * 16)])
                       + frame(SYNCED, struct.pack(">Q", 1)) + attempt(ACK, 1)),
        "dest-resume": (ready() + state(HELD_PARTIAL, sums=2) + sums(0, [(3, digest)])
                        + sums(1, [(0xFFFFFFFFFFFFFFFF, digest)])
                        + frame(SYNCED, struct.pack(">Q", 1)) + attempt(ACK, 3)),
        "dest-awaiting": ready() + state(HELD_AWAITING, attempt_n=2),
        "sums-max": sums(63, [(i, bytes([i & 0xFF]) * 16) for i in range(SUMS_MAX)]),
        "verdict": verdict([("drive0", 64, 3), ("x", 1, 0)]),
        "source-verify": (bytes([BLOCKS]) + rec_eos() + bytes([BLOCKS]) + rec_eos()
                          + verdict([("drive0", 16384, 2)])),
        # The source abandoned attempt 1 after its ACK: more BLOCKS, then
        # COMPLETE and COMMIT of attempt 2.
        "source-abandoned": (blocks + complete([("drive0", 2, digest)], attempt=1)
                             + bytes([BLOCKS]) + rec_data("drive0", 0, 0x5A) + rec_eos()
                             + complete([("drive0", 2, bytes(16))], attempt=2)
                             + attempt(COMMIT, 2)),
        "state-body": struct.pack(">IIQ", HELD_AWAITING, 7, 0),
        "sums-body": struct.pack(">HI", 1, 1) + struct.pack(">Q", 9) + digest,
        "attempt-body": struct.pack(">I", 1),
        # FORWARD: the destination says where its NBD export is, right
        # after READY.
        "hello-forward": hello([("drive0", 64 << 20)], caps=CAP_MIRROR | CAP_FORWARD,
                               chunk=65536),
        "dest-forward": (ready() + export(10809, "127.0.0.1") + state(HELD_NONE)
                         + frame(SYNCED, struct.pack(">Q", 1)) + attempt(ACK, 1)),
        "dest-forward-none": ready() + export(0) + state(HELD_NONE),
        "export-v6": export(65535, "fe80::1:2"),
        "export-body": struct.pack(">HH", 10809, 9) + b"host-a_b.",
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
              + complete([("drive0", 2, digest), ("d1", 1, bytes(16))]) + attempt(COMMIT, 1))
    dest = (hello([("drive0", 64 << 20)]) + ready() + state(HELD_NONE)
            + frame(0x84, struct.pack(">Q", 1)) + frame(0x85, struct.pack(">Q", 7))
            + attempt(ACK, 1) + error(ERROR, 5, "digest mismatch on drive0"))
    delta = (hello([("drive0", 3 * CHUNK)], caps=CAP_ZERO_BLOCKS | CAP_DELTA, chunk=CHUNK)
             + ready() + state(HELD_ALL, sums=3)
             + sums(0, [(0, digest), (1, bytes(16)), (2, digest)])
             + frame(0x84, struct.pack(">Q", 1)) + attempt(ACK, 1))
    forward = (hello([("drive0", 64 << 20)], caps=CAP_FORWARD) + ready()
               + export(10809, "dst.example") + state(HELD_NONE) + attempt(ACK, 1))
    verify = (hello([("drive0", 3 * CHUNK)], caps=CAP_VERIFY, chunk=CHUNK)
              + bytes([BLOCKS]) + rec_eos() + bytes([BLOCKS]) + rec_eos()
              + verdict([("drive0", 3, 1)]))
    abandoned = (hello([("drive0", 2 * CHUNK)], chunk=CHUNK)
                 + bytes([BLOCKS]) + rec_data("drive0", 0) + rec_zero("drive0", CHUNK) + rec_eos()
                 + complete([("drive0", 2, digest)], attempt=1)
                 + bytes([BLOCKS]) + rec_data("drive0", 0, 0x33) + rec_eos()
                 + complete([("drive0", 2, bytes(16))], attempt=2) + attempt(COMMIT, 2))
    two = (sv_section(SV_START, 1, rec_eos(), "block")
           + sv_section(SV_PART, 1, rec_data("drive0", 0) + rec_zero("drive1", CHUNK)
                        + rec_data("drive1", 0, 0x22) + rec_eos())
           + sv_section(SV_END, 1, rec_progress(100) + rec_eos()) + bytes([SV_EOF]))
    compressed = (hello([("drive0", 3 * CHUNK)], caps=CAP_ZERO_BLOCKS | CAP_COMPRESS, chunk=CHUNK)
                  + bytes([BLOCKS]) + rec_zstd("drive0", 0, zstd_frame_rle(0x5A))
                  + rec_data("drive0", CHUNK) + rec_zstd("drive0", 2 * CHUNK, zstd_frame_rle(0))
                  + rec_eos() + complete([("drive0", 3, digest)]) + attempt(COMMIT, 1))
    seeds = {
        "native-compressed": compressed,
        "native-source": source,
        "native-dest": dest,
        "native-delta": delta,
        "native-verify": verify,
        "native-forward": forward,
        "native-abandoned": abandoned,
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
