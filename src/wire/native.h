/* SPDX-License-Identifier: MIT */
/*
 * blkmig's native migration envelope.  Messages are pure encode/decode over
 * buffers; the engines do the I/O.  docs/wire-format.md has the byte
 * diagrams; this header is the contract.  All integers big-endian.
 *
 * Source -> destination:
 *   HELLO    magic "BLKMIG\r\n" (0x424C4B4D49470D0A), be32 version (1),
 *            be32 caps, be32 chunk_size, be16 ndev,
 *            ndev x { u8 n, n bytes name, be64 size }
 *   then messages, each starting with a u8 type:
 *   0x01 BLOCKS    block records (record.h) up to and including an EOS
 *   0x02 COMPLETE  be32 len, body: be16 ndev,
 *                  ndev x { u8 n, name, be64 chunks, 16 bytes digest }
 *   0x03 ABORT     be32 len, body: be32 errno, UTF-8 reason (no NUL)
 *   0x04 COMMIT    be32 len (0): the source has fenced its devices; the
 *                  destination now owns them (sent only after ACK)
 *
 * Destination -> source (each: u8 type, be32 len, body):
 *   0x81 READY     body: be32 version          (HELLO accepted)
 *   0x82 ACK       body: empty                 (data durable, digests match)
 *   0x83 ERROR     body: be32 errno, reason    (the destination failed)
 *   0x84 SYNCED    body: be64 n                (the first n BLOCKS messages
 *                                               are applied and durable)
 *   0x85 WACK      body: be64 seq              (every WRITE record up to seq
 *                                               is applied; MIRROR only)
 *
 * Lengths of framed messages are capped at NATIVE_MSG_MAX.
 */
#ifndef BLKMIG_WIRE_NATIVE_H
#define BLKMIG_WIRE_NATIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "record.h"

#define NATIVE_MAGIC   UINT64_C(0x424C4B4D49470D0A) /* "BLKMIG\r\n" */
#define NATIVE_VERSION 1U

/* HELLO capability bits. */
#define NATIVE_CAP_ZERO_BLOCKS (1U << 0) /* ZERO_BLOCK records may appear */
#define NATIVE_CAP_SHARED_BASE (1U << 1) /* unallocated chunks are not sent */
/* WRITE records (mirrored client writes, record.h) may appear inside BLOCKS
 * messages; the destination answers each with WACK as soon as it is applied. */
#define NATIVE_CAP_MIRROR (1U << 2)
#define NATIVE_CAP_KNOWN  (NATIVE_CAP_ZERO_BLOCKS | NATIVE_CAP_SHARED_BASE | NATIVE_CAP_MIRROR)

enum native_msg {
	NATIVE_MSG_BLOCKS = 0x01,
	NATIVE_MSG_COMPLETE = 0x02,
	NATIVE_MSG_ABORT = 0x03,
	NATIVE_MSG_COMMIT = 0x04,
	NATIVE_MSG_READY = 0x81,
	NATIVE_MSG_ACK = 0x82,
	NATIVE_MSG_ERROR = 0x83,
	NATIVE_MSG_SYNCED = 0x84,
	NATIVE_MSG_WACK = 0x85,
};

#define NATIVE_MAX_DEVICES 64
#define NATIVE_MSG_MAX	   65536U /* largest framed body */
#define NATIVE_DIGEST_LEN  16
#define NATIVE_HELLO_MAX   (8 + 4 + 4 + 4 + 2 + NATIVE_MAX_DEVICES * (1 + WIRE_NAME_MAX + 8))
#define NATIVE_REASON_MAX  1024

struct native_dev {
	char name[WIRE_NAME_MAX + 1];
	uint64_t size;
};

struct native_hello {
	uint32_t version;
	uint32_t caps;
	uint32_t chunk_size;
	uint16_t ndev;
	struct native_dev dev[NATIVE_MAX_DEVICES];
};

struct native_dev_digest {
	char name[WIRE_NAME_MAX + 1];
	uint64_t chunks; /* chunks covered by the digest */
	uint8_t digest[NATIVE_DIGEST_LEN];
};

struct native_complete {
	uint16_t ndev;
	struct native_dev_digest dev[NATIVE_MAX_DEVICES];
};

/* ABORT and ERROR share one body. */
struct native_error {
	uint32_t err; /* positive errno */
	char reason[NATIVE_REASON_MAX + 1];
};

/*
 * Encoders write a whole message (HELLO including magic; framed messages
 * including type and length) into buf of capacity cap and return its
 * length, or -ENOSPC / -EINVAL (with err_set).  They refuse (-EINVAL) what
 * the decoders would refuse: HELLO needs version == NATIVE_VERSION; device
 * names are taken up to their NUL, 1..WIRE_NAME_MAX bytes, no duplicates;
 * an ERROR/ABORT errno must be within 1..4095.
 */
int native_hello_encode(uint8_t *buf, size_t cap, const struct native_hello *h);
int native_complete_encode(uint8_t *buf, size_t cap, const struct native_complete *c);
/* type is NATIVE_MSG_ABORT or NATIVE_MSG_ERROR; the reason is truncated to
 * NATIVE_REASON_MAX bytes. */
int native_error_encode(uint8_t *buf, size_t cap, enum native_msg type,
			const struct native_error *e);
/* READY carries the version; ACK is empty; SYNCED carries a count. */
int native_ready_encode(uint8_t *buf, size_t cap, uint32_t version);
int native_synced_encode(uint8_t *buf, size_t cap, uint64_t passes);
int native_ack_encode(uint8_t *buf, size_t cap);
int native_commit_encode(uint8_t *buf, size_t cap);
/* WACK carries the highest WRITE sequence number applied. */
int native_wack_encode(uint8_t *buf, size_t cap, uint64_t seq);

/*
 * HELLO decode over buf[0..len): 0 with *used set; -EAGAIN with *used = the
 * total bytes needed; -EBADMSG for a bad magic, unsupported version, unknown
 * caps, chunk size not a power of two in range, zero or too many devices,
 * empty or duplicate names, zero size.  -EPROTONOSUPPORT for a version
 * other than NATIVE_VERSION.
 */
int native_hello_decode(const uint8_t *buf, size_t len, struct native_hello *h, size_t *used);

/*
 * Framed messages: native_frame_header() reads the 5-byte header (type,
 * be32 len) and checks the type is one of 'allowed' (a bitmask built with
 * NATIVE_ALLOW(type)) and len <= NATIVE_MSG_MAX: 0, or -EBADMSG.  The body
 * decoders take exactly the body bytes.
 *
 * BLOCKS is not framed: for it only hdr[0] is the message header, *len is
 * set to 0, and hdr[1..4] are already the first bytes of the first record.
 * An unknown type byte is always -EBADMSG, whatever 'allowed' holds.  ACK
 * has no body decoder, so a non-zero ACK length is rejected here.  Error
 * bodies: an errno outside 1..4095 is -EBADMSG (the message still quotes the
 * reason); a reason longer than NATIVE_REASON_MAX is truncated, and bytes
 * that are not printable UTF-8 decode as '?'.
 */
#define NATIVE_FRAME_HDR 5
#define NATIVE_ALLOW(t)	 (UINT64_C(1) << ((((t) >> 7) & 1) * 32 + ((t)&0x1f)))
int native_frame_header(const uint8_t hdr[NATIVE_FRAME_HDR], uint64_t allowed, uint8_t *type,
			uint32_t *len);
int native_complete_decode(const uint8_t *body, size_t len, struct native_complete *c);
int native_error_decode(const uint8_t *body, size_t len, struct native_error *e);
int native_ready_decode(const uint8_t *body, size_t len, uint32_t *version);
int native_synced_decode(const uint8_t *body, size_t len, uint64_t *passes);
int native_wack_decode(const uint8_t *body, size_t len, uint64_t *seq);

/* Name for a message type ("BLOCKS", ...), or "unknown". */
const char *native_msg_name(uint8_t type);

#endif
