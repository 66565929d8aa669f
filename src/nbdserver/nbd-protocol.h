/* SPDX-License-Identifier: MIT */
/*
 * The NBD wire format (fixed newstyle handshake, simple and structured
 * replies), as written down in the NBD project's doc/proto.md.  Constants,
 * sizes and pure encode/decode helpers over byte buffers; no I/O, so the
 * server (handshake.c, requests.c) and the unit tests share one definition.
 *
 * Byte order: every integer on the wire is big-endian ("network byte
 * order"), including magic numbers and flags.  Flag bits are numbered from
 * the least significant bit of the field as sent.
 *
 * When you add a command or option, also update the flag table in
 * requests.c (cmd_flags_allowed) or the dispatcher in handshake.c.
 */
#ifndef BLKMIG_NBDSERVER_NBD_PROTOCOL_H
#define BLKMIG_NBDSERVER_NBD_PROTOCOL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* ---- handshake --------------------------------------------------------------
 *
 * Server greeting (18 bytes):
 *
 *   0               8               16      18
 *   +---------------+---------------+-------+
 *   | NBDMAGIC      | IHAVEOPT      | hflags|
 *   +---------------+---------------+-------+
 *
 * Client reply: 32-bit client flags.
 *
 * Then any number of options (16-byte header + data):
 *
 *   0               8       12      16
 *   +---------------+-------+-------+------------------+
 *   | IHAVEOPT      | option| length| data (length)    |
 *   +---------------+-------+-------+------------------+
 *
 * Every option but EXPORT_NAME is answered by one or more replies
 * (20-byte header + data); the last one is ACK or an error:
 *
 *   0               8       12      16      20
 *   +---------------+-------+-------+-------+------------------+
 *   | REPLY_MAGIC   | option| type  | length| data (length)    |
 *   +---------------+-------+-------+-------+------------------+
 *
 * EXPORT_NAME is answered with: 64-bit export size, 16-bit transmission
 * flags, then 124 zero bytes unless the client set NBD_FLAG_C_NO_ZEROES.
 */
#define NBD_MAGIC	  UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC	  UINT64_C(0x49484156454f5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC	  UINT64_C(0x0003e889045565a9) /* option reply magic (no ASCII) */
#define NBD_GREETING_LEN  18
#define NBD_OPT_HDR_LEN	  16
#define NBD_REP_HDR_LEN	  20
#define NBD_EXPORT_ZEROES 124 /* padding after an NBD_OPT_EXPORT_NAME reply */

/* Handshake flags (16 bits, server -> client). */
#define NBD_FLAG_FIXED_NEWSTYLE (1U << 0)
#define NBD_FLAG_NO_ZEROES	(1U << 1)

/* Client flags (32 bits, client -> server).  Any other bit: close. */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1U << 0)
#define NBD_FLAG_C_NO_ZEROES	  (1U << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME	  1
#define NBD_OPT_ABORT		  2
#define NBD_OPT_LIST		  3
#define NBD_OPT_STARTTLS	  5
#define NBD_OPT_INFO		  6
#define NBD_OPT_GO		  7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* Option reply types; errors have bit 31 set. */
#define NBD_REP_ACK		    1
#define NBD_REP_SERVER		    2 /* u32 name length, name[, description] */
#define NBD_REP_INFO		    3 /* u16 info type, payload */
#define NBD_REP_META_CONTEXT	    4 /* u32 context id, name */
#define NBD_REP_FLAG_ERROR	    (UINT32_C(1) << 31)
#define NBD_REP_ERR_UNSUP	    (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY	    (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID	    (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM	    (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD	    (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN	    (NBD_REP_FLAG_ERROR | 6) /* "export not available" */
#define NBD_REP_ERR_SHUTDOWN	    (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG	    (NBD_REP_FLAG_ERROR | 9)

/*
 * NBD_OPT_INFO / NBD_OPT_GO data:
 *
 *   +--------+-----------------+--------+------------------+
 *   | u32 nl | name (nl bytes) | u16 n  | n x u16 info req |
 *   +--------+-----------------+--------+------------------+
 *
 * NBD_REP_INFO payloads (the u16 type is part of the reply length):
 *   NBD_INFO_EXPORT      u16 type, u64 size, u16 transmission flags  (12)
 *   NBD_INFO_NAME        u16 type, name                               (2+)
 *   NBD_INFO_BLOCK_SIZE  u16 type, u32 min, u32 preferred, u32 max   (14)
 */
#define NBD_INFO_EXPORT		0
#define NBD_INFO_NAME		1
#define NBD_INFO_DESCRIPTION	2
#define NBD_INFO_BLOCK_SIZE	3
#define NBD_INFO_EXPORT_LEN	12
#define NBD_INFO_BLOCK_SIZE_LEN 14

/*
 * NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data:
 *
 *   +--------+-----------------+--------+----------------------------+
 *   | u32 nl | name (nl bytes) | u32 nq | nq x (u32 ql, query bytes) |
 *   +--------+-----------------+--------+----------------------------+
 */
#define NBD_META_BASE_ALLOCATION "base:allocation"

/* Transmission flags (16 bits, per export). */
#define NBD_FLAG_HAS_FLAGS	   (1U << 0)
#define NBD_FLAG_READ_ONLY	   (1U << 1)
#define NBD_FLAG_SEND_FLUSH	   (1U << 2)
#define NBD_FLAG_SEND_FUA	   (1U << 3)
#define NBD_FLAG_ROTATIONAL	   (1U << 4)
#define NBD_FLAG_SEND_TRIM	   (1U << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1U << 6)
#define NBD_FLAG_SEND_DF	   (1U << 7)
#define NBD_FLAG_CAN_MULTI_CONN	   (1U << 8)
#define NBD_FLAG_SEND_CACHE	   (1U << 10)
#define NBD_FLAG_SEND_FAST_ZERO	   (1U << 11)

/* Limits from the spec's "strings" and "block size constraints". */
#define NBD_MAX_STRING	4096		   /* export names, messages, queries */
#define NBD_MAX_OPTION	(64 * 1024)	   /* larger option data: hard disconnect */
#define NBD_MAX_PAYLOAD (32 * 1024 * 1024) /* READ/WRITE length; advertised max */
#define NBD_MIN_BLOCK	1
#define NBD_PREF_BLOCK	4096

/* ---- transmission -----------------------------------------------------------
 *
 * Request (28 bytes, then length bytes of data for NBD_CMD_WRITE only):
 *
 *   0       4   6   8               16              24      28
 *   +-------+---+---+---------------+---------------+-------+
 *   | magic |flg|typ| handle        | offset        | length|
 *   +-------+---+---+---------------+---------------+-------+
 *
 * Simple reply (16 bytes, then the data for a successful NBD_CMD_READ):
 *
 *   0       4       8               16
 *   +-------+-------+---------------+
 *   | magic | error | handle        |
 *   +-------+-------+---------------+
 *
 * Structured reply chunk (20 bytes + length bytes of payload):
 *
 *   0       4   6   8               16      20
 *   +-------+---+---+---------------+-------+------------------+
 *   | magic |flg|typ| handle        | length| payload (length) |
 *   +-------+---+---+---------------+-------+------------------+
 *
 * Chunk payloads:
 *   OFFSET_DATA   u64 offset, data                 (length >= 9)
 *   OFFSET_HOLE   u64 offset, u32 hole size        (length == 12)
 *   BLOCK_STATUS  u32 context id, n x (u32 length, u32 status flags)
 *   ERROR         u32 error, u16 message length, message
 */
#define NBD_REQUEST_MAGIC	   UINT32_C(0x25609513) /* no ASCII */
#define NBD_SIMPLE_REPLY_MAGIC	   UINT32_C(0x67446698) /* "gDf\x98" */
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef) /* no ASCII */
#define NBD_REQUEST_LEN		   28
#define NBD_SIMPLE_REPLY_LEN	   16
#define NBD_CHUNK_HDR_LEN	   20

/* Commands. */
#define NBD_CMD_READ	     0
#define NBD_CMD_WRITE	     1
#define NBD_CMD_DISC	     2
#define NBD_CMD_FLUSH	     3
#define NBD_CMD_TRIM	     4
#define NBD_CMD_CACHE	     5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

/* Command flags (16 bits). */
#define NBD_CMD_FLAG_FUA       (1U << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1U << 1) /* WRITE_ZEROES */
#define NBD_CMD_FLAG_DF	       (1U << 2) /* READ, when NBD_FLAG_SEND_DF */
#define NBD_CMD_FLAG_REQ_ONE   (1U << 3) /* BLOCK_STATUS */
#define NBD_CMD_FLAG_FAST_ZERO (1U << 4) /* WRITE_ZEROES, when NBD_FLAG_SEND_FAST_ZERO */

/* Structured reply flags and chunk types; error types have bit 15 set. */
#define NBD_REPLY_FLAG_DONE	    (1U << 0)
#define NBD_REPLY_TYPE_NONE	    0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR	    ((1U << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1U << 15) | 2)

/* base:allocation status flags. */
#define NBD_STATE_HOLE (1U << 0)
#define NBD_STATE_ZERO (1U << 1)

/* Error values (the error field of replies).  Only these may be sent. */
#define NBD_EPERM     1
#define NBD_EIO	      5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* ---- encode / decode --------------------------------------------------------- */

struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t handle; /* opaque: echoed in every reply */
	uint64_t offset;
	uint32_t length;
};

/* Decode a request header; false when the magic is wrong. */
static inline bool nbd_request_decode(const uint8_t p[NBD_REQUEST_LEN], struct nbd_request *r)
{
	r->flags = get_be16(p + 4);
	r->type = get_be16(p + 6);
	r->handle = get_be64(p + 8);
	r->offset = get_be64(p + 16);
	r->length = get_be32(p + 24);
	return get_be32(p) == NBD_REQUEST_MAGIC;
}

static inline void nbd_request_encode(uint8_t p[NBD_REQUEST_LEN], const struct nbd_request *r)
{
	put_be32(p, NBD_REQUEST_MAGIC);
	put_be16(p + 4, r->flags);
	put_be16(p + 6, r->type);
	put_be64(p + 8, r->handle);
	put_be64(p + 16, r->offset);
	put_be32(p + 24, r->length);
}

static inline void nbd_simple_reply_encode(uint8_t p[NBD_SIMPLE_REPLY_LEN], uint32_t error,
					   uint64_t handle)
{
	put_be32(p, NBD_SIMPLE_REPLY_MAGIC);
	put_be32(p + 4, error);
	put_be64(p + 8, handle);
}

static inline void nbd_chunk_encode(uint8_t p[NBD_CHUNK_HDR_LEN], uint16_t flags, uint16_t type,
				    uint64_t handle, uint32_t length)
{
	put_be32(p, NBD_STRUCTURED_REPLY_MAGIC);
	put_be16(p + 4, flags);
	put_be16(p + 6, type);
	put_be64(p + 8, handle);
	put_be32(p + 16, length);
}

/* Decode an option header; false when the magic is wrong. */
static inline bool nbd_opt_decode(const uint8_t p[NBD_OPT_HDR_LEN], uint32_t *opt, uint32_t *len)
{
	*opt = get_be32(p + 8);
	*len = get_be32(p + 12);
	return get_be64(p) == NBD_OPTS_MAGIC;
}

static inline void nbd_opt_reply_encode(uint8_t p[NBD_REP_HDR_LEN], uint32_t opt, uint32_t type,
					uint32_t len)
{
	put_be64(p, NBD_REP_MAGIC);
	put_be32(p + 8, opt);
	put_be32(p + 12, type);
	put_be32(p + 16, len);
}

/*
 * The one mapping from an errno (positive or negative) to the error value
 * an NBD client sees.  Anything without a protocol value is NBD_EIO.
 */
static inline uint32_t nbd_errno(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
	case ERANGE:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	case EIO:
	default:
		return NBD_EIO;
	}
}

#endif
