/* SPDX-License-Identifier: MIT */
/*
 * blkmig's native migration envelope.  Messages are pure encode/decode over
 * buffers; the engines do the I/O.  docs/wire-format.md has the byte
 * diagrams; this header is the contract.  All integers big-endian.
 *
 * Source -> destination:
 *   HELLO    magic "BLKMIG\r\n" (0x424C4B4D49470D0A), be32 version (3),
 *            be32 caps, be32 chunk_size, 16 bytes migration id, be16 ndev,
 *            ndev x { u8 n, n bytes name, be64 size }
 *   then messages, each starting with a u8 type:
 *   0x01 BLOCKS    block records (record.h) up to and including an EOS
 *   0x02 COMPLETE  be32 len, body: be32 attempt, be16 ndev,
 *                  ndev x { u8 n, name, be64 chunks, 16 bytes digest }
 *   0x03 ABORT     be32 len, body: be32 errno, UTF-8 reason (no NUL)
 *   0x04 COMMIT    be32 len (4), be32 attempt: the source has fenced its
 *                  devices; the destination now owns them (after ACK)
 *   0x05 VERDICT   (VERIFY) body: be16 ndev, ndev x { u8 n, name,
 *                  be64 chunks checked, be64 chunks differing }
 *
 * Destination -> source (each: u8 type, be32 len, body):
 *   0x81 READY     body: be32 version          (HELLO accepted)
 *   0x82 ACK       body: be32 attempt          (data durable, digests match)
 *   0x83 ERROR     body: be32 errno, reason    (the destination failed)
 *   0x84 SYNCED    body: be64 n                (the first n BLOCKS messages
 *                                               are applied and durable)
 *   0x85 WACK      body: be64 seq              (every WRITE record up to seq
 *                                               is applied; MIRROR only)
 *   0x86 STATE     body: be32 held, be32 attempt, be64 sums  (after READY)
 *   0x87 SUMS      body: be16 dev, be32 count, count x { be64 chunk,
 *                  16 bytes XXH3-128 }         (after STATE)
 *   0x88 DONE      body: be32 attempt          (COMMIT taken: the marks are
 *                                               cleared, the images are its)
 *   0x89 EXPORT    body: be16 port, be16 hostlen, hostlen bytes host
 *                  (FORWARD only: exactly one, right after READY, before
 *                  STATE: where its NBD export is; port 0: none)
 *   0x8B JOINED    (reserved: the transport's answer to a joining
 *                  connection's JOIN, on that connection; transport.h)
 *   0x8A LANES     body: be16 count, 16 bytes token  (LANES only: exactly
 *                  one, after READY and EXPORT, before STATE: how many
 *                  connections it accepts, and the token the others join
 *                  with; see transport.h)
 *
 * With LANES, HELLO ends with a be16: the connections the source asks for.
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
#define NATIVE_VERSION 3U
#define NATIVE_ID_LEN  16 /* a migration's id, chosen by its source */

/* HELLO capability bits. */
#define NATIVE_CAP_ZERO_BLOCKS (1U << 0) /* ZERO_BLOCK records may appear */
#define NATIVE_CAP_SHARED_BASE (1U << 1) /* unallocated chunks are not sent */
/* WRITE records (mirrored client writes, record.h) may appear inside BLOCKS
 * messages; the destination answers each with WACK as soon as it is applied. */
#define NATIVE_CAP_MIRROR (1U << 2)
/* The destination already holds an older copy: it sends the digest of
 * every chunk (SUMS) and the source sends only chunks that differ. */
#define NATIVE_CAP_DELTA (1U << 3)
/* Compare only: the destination sends every chunk's digest, writes
 * nothing, and the source ends with VERDICT instead of COMPLETE. */
#define NATIVE_CAP_VERIFY (1U << 4)
/* The source will forward its NBD clients to the destination after the
 * switch-over: the destination says where its NBD export is (EXPORT). */
#define NATIVE_CAP_FORWARD (1U << 5)
/* ---- compression (its own block; bit 7, leaving bit 6 free) ---- */
/* ZSTD records (record.h: a chunk as one zstd frame) may appear in BLOCKS
 * messages, never as mirrored writes.  A destination that does not take
 * them refuses the HELLO (an older one: "unknown capability bits"; one
 * told not to: ENOTSUP, NATIVE_NO_COMPRESS_REASON). */
#define NATIVE_CAP_COMPRESS (1U << 7)
#define NATIVE_NO_COMPRESS_REASON                                                                  \
	"this destination does not accept compressed chunks (--no-compress)"
/* ---- end of compression ---- */
/* ---- lanes (--connections) ---- */
/* The source asks for more connections (HELLO's trailing be16, 2 ..
 * NATIVE_LANES_MAX); the destination says how many it takes (LANES). */
#define NATIVE_CAP_LANES (1U << 8)
#define NATIVE_LANES_MAX 16
#define NATIVE_TOKEN_LEN 16
/* ---- end lanes ---- */
/* ---- the write lane (docs/write-lane.md) ---- */
/* With MIRROR: the source would carry mirrored writes on a connection of
 * their own.  A destination that takes it answers with LANES (whatever
 * HELLO asked of CAP_LANES), whose flags say whether the lane may join;
 * the main stream then carries FENCE records (record.h) and no WRITE. */
#define NATIVE_CAP_WLANE   (1U << 9)
#define NATIVE_LANES_WLANE (1U << 0) /* LANES flags: the write lane may join */
/*
 * On the write lane, source to destination, one message per WRITE record:
 *   be64 after  the chunk records (DATA, ZERO, ZSTD) of the main stream the
 *               destination applies before this write
 *   be32 len    bytes of the record that follows (a WRITE, record.h)
 * and destination to source: WACK messages (framed as on the main stream).
 */
#define NATIVE_LANE_HDR 12
/* ---- end of the write lane ---- */
#define NATIVE_CAP_KNOWN                                                                           \
	(NATIVE_CAP_ZERO_BLOCKS | NATIVE_CAP_SHARED_BASE | NATIVE_CAP_MIRROR | NATIVE_CAP_DELTA |  \
	 NATIVE_CAP_VERIFY | NATIVE_CAP_FORWARD | NATIVE_CAP_COMPRESS | NATIVE_CAP_LANES |         \
	 NATIVE_CAP_WLANE)

enum native_msg {
	NATIVE_MSG_BLOCKS = 0x01,
	NATIVE_MSG_COMPLETE = 0x02,
	NATIVE_MSG_ABORT = 0x03,
	NATIVE_MSG_COMMIT = 0x04,
	NATIVE_MSG_VERDICT = 0x05,
	NATIVE_MSG_READY = 0x81,
	NATIVE_MSG_ACK = 0x82,
	NATIVE_MSG_ERROR = 0x83,
	NATIVE_MSG_SYNCED = 0x84,
	NATIVE_MSG_WACK = 0x85,
	NATIVE_MSG_STATE = 0x86,
	NATIVE_MSG_SUMS = 0x87,
	NATIVE_MSG_DONE = 0x88,
	NATIVE_MSG_EXPORT = 0x89,
	NATIVE_MSG_LANES = 0x8A,
};

#define NATIVE_MAX_DEVICES 64
#define NATIVE_MSG_MAX	   65536U /* largest framed body */
#define NATIVE_DIGEST_LEN  16
#define NATIVE_HELLO_MAX                                                                           \
	(8 + 4 + 4 + 4 + NATIVE_ID_LEN + 2 + NATIVE_MAX_DEVICES * (1 + WIRE_NAME_MAX + 8) + 2)
#define NATIVE_REASON_MAX 1024

struct native_dev {
	char name[WIRE_NAME_MAX + 1];
	uint64_t size;
};

struct native_hello {
	uint32_t version;
	uint32_t caps;
	uint32_t chunk_size;
	/* The migration: the same id across reconnections and restarts of
	 * one migration, a new one for another. */
	uint8_t id[NATIVE_ID_LEN];
	uint16_t ndev;
	struct native_dev dev[NATIVE_MAX_DEVICES];
	uint16_t lanes; /* CAP_LANES: connections asked for, 2 .. NATIVE_LANES_MAX */
};

struct native_dev_digest {
	char name[WIRE_NAME_MAX + 1];
	uint64_t chunks; /* chunks covered by the digest */
	uint8_t digest[NATIVE_DIGEST_LEN];
};

struct native_complete {
	uint32_t attempt; /* the switch-over attempt, 1, 2, ... */
	uint16_t ndev;
	struct native_dev_digest dev[NATIVE_MAX_DEVICES];
};

/*
 * STATE: what the destination holds of this migration, right after READY.
 * 'sums' SUMS entries follow (over as many SUMS messages as it takes).
 */
enum native_held {
	NATIVE_HELD_NONE = 0,	  /* nothing usable: every chunk is sent */
	NATIVE_HELD_PARTIAL = 1,  /* chunks made durable by an earlier connection */
	NATIVE_HELD_ALL = 2,	  /* an older copy (DELTA) or the image to check (VERIFY) */
	NATIVE_HELD_AWAITING = 3, /* everything: it acknowledged attempt 'attempt' */
};

struct native_state {
	uint32_t held;	  /* enum native_held */
	uint32_t attempt; /* AWAITING: the attempt it acknowledged; else 0 */
	uint64_t sums;	  /* SUMS entries that follow */
};

/* SUMS: digests of chunks the destination holds, ascending per message. */
#define NATIVE_SUM_LEN	16 /* XXH3-128 of the chunk, high 64 bits first */
#define NATIVE_SUM_ITEM (8 + NATIVE_SUM_LEN)
#define NATIVE_SUMS_MAX ((NATIVE_MSG_MAX - 6) / NATIVE_SUM_ITEM)

struct native_sum {
	uint64_t chunk;
	uint8_t sum[NATIVE_SUM_LEN];
};

struct native_sums {
	uint16_t dev;	/* index into HELLO's devices */
	uint32_t count; /* 1 .. NATIVE_SUMS_MAX */
	struct native_sum e[NATIVE_SUMS_MAX];
};

/* VERDICT (verify only): per device, chunks compared and found different. */
struct native_dev_verdict {
	char name[WIRE_NAME_MAX + 1];
	uint64_t checked;
	uint64_t differing;
};

struct native_verdict {
	uint16_t ndev;
	struct native_dev_verdict dev[NATIVE_MAX_DEVICES];
};

/*
 * EXPORT: where the destination's NBD server listens, for a source that
 * asked (CAP_FORWARD).  host is an IPv4 or IPv6 literal (no brackets) or a
 * host name, only [A-Za-z0-9.:_-]; empty, "0.0.0.0" or "::" mean the host
 * the source reached the destination at.  port 0: no NBD export (and then
 * host is empty).
 */
#define NATIVE_HOST_MAX 255

struct native_export {
	uint16_t port;
	char host[NATIVE_HOST_MAX + 1]; /* NUL-terminated */
};

/* LANES: the connections the destination accepts (1 .. what HELLO asked
 * for), and the token the other connections present when they join.  When
 * HELLO asked for the write lane (CAP_WLANE) the body ends with be16 flags
 * (has_flags): NATIVE_LANES_WLANE says it may join. */
struct native_lanes {
	uint16_t count;
	uint8_t token[NATIVE_TOKEN_LEN];
	bool has_flags;
	uint16_t flags;
};

int native_lanes_encode(uint8_t *buf, size_t cap, const struct native_lanes *l);
/* Whether count is within what HELLO asked for is the engine's check. */
int native_lanes_decode(const uint8_t *body, size_t len, struct native_lanes *l);

/* A write lane message's header (NATIVE_LANE_HDR bytes). */
void native_lane_encode(uint8_t hdr[NATIVE_LANE_HDR], uint64_t after, uint32_t len);
/* len must be 1..max: 0, or -EBADMSG with the message set. */
int native_lane_decode(const uint8_t hdr[NATIVE_LANE_HDR], uint32_t max, uint64_t *after,
		       uint32_t *len);

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
/* ACK and COMMIT carry the switch-over attempt (>= 1) they answer. */
int native_ack_encode(uint8_t *buf, size_t cap, uint32_t attempt);
int native_commit_encode(uint8_t *buf, size_t cap, uint32_t attempt);
int native_done_encode(uint8_t *buf, size_t cap, uint32_t attempt);
int native_state_encode(uint8_t *buf, size_t cap, const struct native_state *st);
int native_sums_encode(uint8_t *buf, size_t cap, const struct native_sums *s);
int native_verdict_encode(uint8_t *buf, size_t cap, const struct native_verdict *v);
/* WACK carries the highest WRITE sequence number applied. */
int native_wack_encode(uint8_t *buf, size_t cap, uint64_t seq);
/* EXPORT: host up to its NUL, under the decoder's rules (-EINVAL). */
int native_export_encode(uint8_t *buf, size_t cap, const struct native_export *e);

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
 * and COMMIT bodies are a be32 attempt (native_attempt_decode).  Error
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
int native_attempt_decode(const char *what, const uint8_t *body, size_t len, uint32_t *attempt);
int native_state_decode(const uint8_t *body, size_t len, struct native_state *st);
/* Entries strictly ascending, count 1 .. NATIVE_SUMS_MAX; the chunk
 * indices and the device are checked against HELLO by the engine. */
int native_sums_decode(const uint8_t *body, size_t len, struct native_sums *s);
int native_verdict_decode(const uint8_t *body, size_t len, struct native_verdict *v);
/* hostlen at most NATIVE_HOST_MAX and exactly the rest of the body, host in
 * [A-Za-z0-9.:_-], no host with port 0.  Whether the source asked for it,
 * and whether it comes once and before STATE, is the source engine's
 * check. */
int native_export_decode(const uint8_t *body, size_t len, struct native_export *e);

/* Name for a message type ("BLOCKS", ...), or "unknown". */
const char *native_msg_name(uint8_t type);

#endif
