/* SPDX-License-Identifier: MIT */
/*
 * Block records: the payload format of QEMU's "block" migration section,
 * reused unchanged inside blkmig's native envelope.  Pure encode/decode over
 * buffers; no I/O, no allocation.
 *
 * Byte layout (all integers big-endian):
 *
 *   +--------------------------------+
 *   | be64 word                      |  flags = word & 0x1ff
 *   |                                |  offset = word & ~0x1ff (byte offset)
 *   +--------------------------------+
 *   DEVICE_BLOCK (0x01), optionally | ZERO_BLOCK (0x08):
 *   +------+-------------------------+
 *   | u8 n | n bytes device name     |  1 <= n <= 255, no NUL
 *   +------+-------------------------+
 *   | chunk_size bytes of data       |  absent when ZERO_BLOCK is set
 *   +--------------------------------+
 *   PROGRESS (0x04): offset >> 9 is a percentage (informational)
 *   EOS (0x02): ends the current block payload
 *   WRITE (0x10, native format only, offset bits 0): a client write
 *   mirrored in active mode, at any byte offset and length:
 *   +------+------------+---------+---------+--------+------+------------+
 *   | u8 n | name       | be64    | be64    | be32   | u8   | length     |
 *   |      |            | seq     | offset  | length | op   | bytes      |
 *   +------+------------+---------+---------+--------+------+------------+
 *   seq counts WRITE records from 1, one more each time; length is
 *   1..chunk_size; op 0 = data (the payload follows), 1 = zeros (no
 *   payload).
 *   FENCE (0x40, native format with a write lane only, offset bits 0):
 *   +---------+  the destination applies every WRITE up to seq (they
 *   | be64 seq|  travel on the write lane) before any record after this
 *   +---------+  one; seq >= 1
 *   DEVICE_BLOCK | ZSTD (0x21, native only): a compressed chunk:
 *   +------+-----------------+---------+-------------------------+
 *   | u8 n | n bytes name    | be32 z  | z bytes: one zstd frame |
 *   +------+-----------------+---------+-------------------------+
 *   z is 1..chunk_size - 1 (a chunk that does not shrink travels as
 *   DATA); the frame decompresses to exactly chunk_size bytes, which the
 *   decoder here does not check (stream.c decompresses).
 *
 * Any other flag combination is an error.  The offset of a DEVICE_BLOCK
 * record is a multiple of the chunk size; the payload is always a whole
 * chunk, even for a device's partial last chunk (the receiver drops the
 * bytes past the device end).  QEMU's chunk size is 1 MiB.
 */
#ifndef BLKMIG_WIRE_RECORD_H
#define BLKMIG_WIRE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define WIRE_F_DEVICE_BLOCK 0x01U
#define WIRE_F_EOS	    0x02U
#define WIRE_F_PROGRESS	    0x04U
#define WIRE_F_ZERO_BLOCK   0x08U
#define WIRE_F_WRITE	    0x10U /* native only */
#define WIRE_F_ZSTD	    0x20U /* native only, with DEVICE_BLOCK */
#define WIRE_F_FENCE	    0x40U /* native only, with a write lane */
#define WIRE_FLAG_MASK	    0x1ffU

#define WIRE_QEMU_CHUNK_SIZE (1U << 20)
#define WIRE_MIN_CHUNK_SIZE  (1U << 12)
#define WIRE_MAX_CHUNK_SIZE  (1U << 24)
#define WIRE_NAME_MAX	     255

/* The largest header: word + length byte + longest name, and for WRITE
 * seq, offset, length and op. */
#define WIRE_REC_HDR_MAX (8 + 1 + WIRE_NAME_MAX + 8 + 8 + 4 + 1)

/* WRITE ops. */
#define WIRE_WRITE_DATA 0
#define WIRE_WRITE_ZERO 1

enum wire_rec_kind {
	WIRE_REC_DATA,	   /* DEVICE_BLOCK with chunk_size bytes of payload */
	WIRE_REC_ZERO,	   /* DEVICE_BLOCK | ZERO_BLOCK: the chunk reads as zeros */
	WIRE_REC_PROGRESS, /* PROGRESS: percent */
	WIRE_REC_EOS,	   /* EOS */
	WIRE_REC_WRITE,	   /* WRITE: a mirrored client write (native only) */
	/* DEVICE_BLOCK | ZSTD: a chunk as one zstd frame of 'length' bytes
	 * at data (native only; stream.c turns it into DATA). */
	WIRE_REC_ZSTD,
	WIRE_REC_FENCE, /* FENCE: every WRITE up to seq goes first (native only) */
};

struct wire_record {
	enum wire_rec_kind kind;
	uint64_t offset;	      /* DATA/ZERO: byte offset of the chunk */
	uint64_t percent;	      /* PROGRESS */
	uint8_t name_len;	      /* DATA/ZERO */
	char name[WIRE_NAME_MAX + 1]; /* NUL-terminated copy of the name */
	const uint8_t *data;	      /* DATA, WRITE data: points into the decoded buffer */
	/* WRITE only (offset above is its byte offset), and FENCE's seq: */
	uint64_t seq;
	uint32_t length; /* WRITE: bytes written; ZSTD: bytes of the frame */
	uint8_t op;	 /* WIRE_WRITE_DATA or WIRE_WRITE_ZERO */
};

/* Whether chunk_size is a power of two from WIRE_MIN_CHUNK_SIZE to
 * WIRE_MAX_CHUNK_SIZE: the one rule for a chunk size, wherever it comes from. */
bool wire_chunk_size_valid(uint64_t chunk_size);

/*
 * Encode the header of a record (word, and the name for DATA/ZERO/WRITE,
 * and WRITE's fields) into buf, which must hold WIRE_REC_HDR_MAX bytes.  For
 * DATA the caller sends chunk_size payload bytes right after, for a WRITE
 * with op DATA 'length' bytes, for a ZSTD record the 'length' bytes of its
 * frame (1..chunk_size - 1, the decoder's to check above 0).  A WRITE needs seq >= 1 and length >=
 * 1 (its upper bound, the chunk size, is the decoder's to check).  Returns the header length, or
 * -EINVAL (with err_set) for an unencodable record: offset not a multiple of
 * 512, empty or over-long name, percent out of range.
 *
 * The name is taken from rec->name up to its NUL; rec->name_len is ignored
 * (it is an output of the decoder).  rec->offset is ignored for PROGRESS and
 * EOS, which are encoded with no offset bits.
 */
int wire_rec_encode_header(uint8_t *buf, const struct wire_record *rec);

/*
 * Decode one record from buf[0..len).  chunk_size is the payload size of a
 * DATA record (a power of two within WIRE_MIN/MAX_CHUNK_SIZE).
 *
 *  - 0: *rec is filled and *used is the whole record's length (for DATA,
 *    rec->data points at the payload inside buf).
 *  - -EAGAIN: buf holds a valid prefix; *used is the total number of bytes
 *    needed before calling again (always more than len).
 *  - -EBADMSG: malformed (unknown flag, bad combination, empty name, offset
 *    not a multiple of chunk_size for DATA/ZERO; a WRITE with offset bits
 *    in its word, seq 0, length 0 or above chunk_size, or an unknown op;
 *    a ZSTD record whose frame is 0 bytes or not smaller than a chunk);
 *    message via err_set.  Whether a WRITE or a ZSTD record may appear at
 *    all is the caller's decision (never in a QEMU stream).
 *  - -EINVAL: chunk_size itself is invalid (a caller bug, not bad input).
 *
 * Errors are reported as early as the bytes allow: a bad word fails with 8
 * bytes, a misaligned offset before the name is needed, and so on.  A NUL
 * byte or a control character inside the name is -EBADMSG
 * (wire_name_check()).  PROGRESS percentages above 100 are
 * passed on unchanged (they are informational).  On failure *rec is
 * unspecified.
 *
 * Device, offset and length checks against real devices are the caller's:
 * this function knows nothing of devices.
 */
int wire_rec_decode(const uint8_t *buf, size_t len, uint32_t chunk_size, struct wire_record *rec,
		    size_t *used);

/*
 * Device names from the wire (n bytes at p, 1..WIRE_NAME_MAX) are the
 * operators' device names: a NUL or a control character (below 0x20, or
 * 0x7f) in one is malformed, -EBADMSG from wire_name_check(), so no name
 * that reaches a message or a log can move the cursor or break a line.
 * (Bytes above 0x7f pass, as UTF-8; str_escape() shows them escaped.)
 * wire_name_why() says why, into buf (WIRE_NAME_WHY_CAP), with the name
 * escaped: "contains a NUL byte", "'a\x1bb' has control characters".
 * Every decoder of a name calls them.
 */
#define WIRE_NAME_WHY_CAP (STR_ESCAPE_CAP(WIRE_NAME_MAX) + 32)
int wire_name_check(const uint8_t *p, size_t n);
const char *wire_name_why(const uint8_t *p, size_t n, char *buf, size_t cap);

#endif
