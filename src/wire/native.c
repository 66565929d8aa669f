/* SPDX-License-Identifier: MIT */
/*
 * blkmig's native envelope: HELLO, the framed control messages (COMPLETE,
 * ABORT, READY, ACK, ERROR, ... EXPORT) and the BLOCKS message type byte.  See native.h
 * for the contract and docs/wire-format.md for the byte diagrams and the
 * conversation.
 *
 * Pure encode/decode over caller buffers; the engines do the I/O.  Decoders
 * treat every byte as hostile: lengths are checked against what remains
 * before anything is read, names are checked for emptiness, NUL bytes and
 * duplicates, and text that may end up on a terminal is sanitised.  Encoders
 * apply the same rules (with -EINVAL) so that blkmig never sends what it
 * would itself refuse.
 */
#include "native.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"

/* HELLO fixed part: magic, version, caps, chunk_size, id, ndev. */
#define HELLO_FIXED  (8 + 4 + 4 + 4 + NATIVE_ID_LEN + 2)
#define HELLO_AT_ID  20
#define HELLO_AT_DEV (HELLO_AT_ID + NATIVE_ID_LEN)
/* Per-device bytes after the name: HELLO be64 size; COMPLETE be64 chunks +
 * digest. */
#define HELLO_DEV_TAIL	  8
#define COMPLETE_DEV_TAIL (8 + NATIVE_DIGEST_LEN)

/* Largest errno value accepted in ERROR/ABORT (Linux's MAX_ERRNO). */
#define ERRNO_MAX 4095

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                           */

/*
 * Length of a NUL-terminated name held in a WIRE_NAME_MAX + 1 array, for an
 * encoder: 1..WIRE_NAME_MAX, or -EINVAL.
 */
static int name_len_for_encode(const char *what, unsigned int i, const char *name)
{
	size_t n = strnlen(name, WIRE_NAME_MAX + 1);

	if (n == 0)
		return err_set(EINVAL, "%s: device %u has an empty name", what, i);
	if (n > WIRE_NAME_MAX)
		return err_set(EINVAL, "%s: device %u name is longer than %d bytes", what, i,
			       WIRE_NAME_MAX);
	return (int)n;
}

/* Write a frame header (type, be32 len) after checking the capacity. */
static int frame_put(uint8_t *buf, size_t cap, uint8_t type, size_t body_len)
{
	if (body_len > NATIVE_MSG_MAX)
		return err_set(EINVAL, "encode %s: body of %zu bytes exceeds the maximum %u",
			       native_msg_name(type), body_len, NATIVE_MSG_MAX);
	if (cap < NATIVE_FRAME_HDR || cap - NATIVE_FRAME_HDR < body_len)
		return err_set(ENOSPC, "encode %s: buffer of %zu bytes is too small (need %zu)",
			       native_msg_name(type), cap, NATIVE_FRAME_HDR + body_len);
	buf[0] = type;
	put_be32(buf + 1, (uint32_t)body_len);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Message names                                                            */

/* When you add a message type, also update docs/wire-format.md. */
static const struct {
	uint8_t type;
	const char *name;
} msg_names[] = {
	{ NATIVE_MSG_BLOCKS, "BLOCKS" }, { NATIVE_MSG_COMPLETE, "COMPLETE" },
	{ NATIVE_MSG_ABORT, "ABORT" },	 { NATIVE_MSG_READY, "READY" },
	{ NATIVE_MSG_ACK, "ACK" },	 { NATIVE_MSG_ERROR, "ERROR" },
	{ NATIVE_MSG_SYNCED, "SYNCED" }, { NATIVE_MSG_COMMIT, "COMMIT" },
	{ NATIVE_MSG_WACK, "WACK" },	 { NATIVE_MSG_VERDICT, "VERDICT" },
	{ NATIVE_MSG_STATE, "STATE" },	 { NATIVE_MSG_SUMS, "SUMS" },
	{ NATIVE_MSG_DONE, "DONE" },	 { NATIVE_MSG_EXPORT, "EXPORT" },
	{ NATIVE_MSG_LANES, "LANES" },
};

const char *native_msg_name(uint8_t type)
{
	for (size_t i = 0; i < ARRAY_SIZE(msg_names); i++)
		if (msg_names[i].type == type)
			return msg_names[i].name;
	return "unknown";
}

static bool msg_known(uint8_t type)
{
	for (size_t i = 0; i < ARRAY_SIZE(msg_names); i++)
		if (msg_names[i].type == type)
			return true;
	return false;
}

/* ------------------------------------------------------------------------ */
/* HELLO                                                                    */

/* The fixed-field rules, shared by encoder (-EINVAL) and decoder. */
static int hello_check_fixed(int err, uint32_t caps, uint32_t chunk_size, uint32_t ndev)
{
	if (caps & ~NATIVE_CAP_KNOWN)
		return err_set(err, "hello: unknown capability bits 0x%" PRIx32 " (known 0x%x)",
			       caps & ~NATIVE_CAP_KNOWN, NATIVE_CAP_KNOWN);
	if ((caps & NATIVE_CAP_WLANE) && !(caps & NATIVE_CAP_MIRROR))
		return err_set(err, "hello: a write lane (WLANE) without mirrored writes (MIRROR)");
	if ((caps & NATIVE_CAP_WLANE) && (caps & NATIVE_CAP_VERIFY))
		return err_set(err, "hello: a write lane (WLANE) in a verify (VERIFY)");
	if (!wire_chunk_size_valid(chunk_size))
		return err_set(err,
			       "hello: invalid chunk size %" PRIu32
			       " (must be a power of two from %u to %u)",
			       chunk_size, WIRE_MIN_CHUNK_SIZE, WIRE_MAX_CHUNK_SIZE);
	if (ndev < 1 || ndev > NATIVE_MAX_DEVICES)
		return err_set(err, "hello: invalid device count %" PRIu32 " (must be 1..%d)", ndev,
			       NATIVE_MAX_DEVICES);
	return 0;
}

/* Is name already used by one of the first i devices? */
static bool hello_dup(const struct native_hello *h, unsigned int i, const char *name)
{
	for (unsigned int j = 0; j < i; j++)
		if (strcmp(h->dev[j].name, name) == 0)
			return true;
	return false;
}

int native_hello_encode(uint8_t *buf, size_t cap, const struct native_hello *h)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];
	size_t total = HELLO_FIXED, pos;
	int r;

	if (h->version != NATIVE_VERSION)
		return err_set(EINVAL,
			       "hello: cannot encode version %" PRIu32 " (this blkmig speaks %u)",
			       h->version, NATIVE_VERSION);
	r = hello_check_fixed(EINVAL, h->caps, h->chunk_size, h->ndev);
	if (r < 0)
		return r;
	for (unsigned int i = 0; i < h->ndev; i++) {
		r = name_len_for_encode("hello", i, h->dev[i].name);
		if (r < 0)
			return r;
		if (hello_dup(h, i, h->dev[i].name))
			return err_set(EINVAL, "hello: duplicate device name '%s'",
				       str_escape(shown, sizeof(shown), h->dev[i].name));
		if (h->dev[i].size == 0)
			return err_set(EINVAL, "hello: device '%s' has size 0",
				       str_escape(shown, sizeof(shown), h->dev[i].name));
		total += 1 + (size_t)r + HELLO_DEV_TAIL;
	}
	if (h->caps & NATIVE_CAP_LANES) {
		if (h->lanes < 2 || h->lanes > NATIVE_LANES_MAX)
			return err_set(EINVAL, "hello: %u connections (must be 2..%u)", h->lanes,
				       NATIVE_LANES_MAX);
		total += 2;
	}
	if (cap < total)
		return err_set(ENOSPC, "encode HELLO: buffer of %zu bytes is too small (need %zu)",
			       cap, total);

	put_be64(buf, NATIVE_MAGIC);
	put_be32(buf + 8, NATIVE_VERSION);
	put_be32(buf + 12, h->caps);
	put_be32(buf + 16, h->chunk_size);
	memcpy(buf + HELLO_AT_ID, h->id, NATIVE_ID_LEN);
	put_be16(buf + HELLO_AT_DEV, h->ndev);
	pos = HELLO_FIXED;
	for (unsigned int i = 0; i < h->ndev; i++) {
		size_t n = strlen(h->dev[i].name);

		buf[pos] = (uint8_t)n;
		memcpy(buf + pos + 1, h->dev[i].name, n);
		put_be64(buf + pos + 1 + n, h->dev[i].size);
		pos += 1 + n + HELLO_DEV_TAIL;
	}
	if (h->caps & NATIVE_CAP_LANES) {
		put_be16(buf + pos, h->lanes);
		pos += 2;
	}
	return (int)pos;
}

int native_hello_decode(const uint8_t *buf, size_t len, struct native_hello *h, size_t *used)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)], why[WIRE_NAME_WHY_CAP];
	uint64_t magic;
	uint32_t version;
	size_t pos;
	int r;

	if (len < 8) {
		*used = 8;
		return -EAGAIN;
	}
	magic = get_be64(buf);
	if (magic != NATIVE_MAGIC) {
		if (magic >> 32 == 0x5145564DU) /* "QEVM" */
			return err_set(EBADMSG,
				       "hello: bad magic 0x%016" PRIx64
				       " (not a blkmig native stream; it looks like a QEMU "
				       "migration stream)",
				       magic);
		return err_set(EBADMSG,
			       "hello: bad magic 0x%016" PRIx64 " (not a blkmig native stream)",
			       magic);
	}
	/* The version before the rest: an older HELLO may be shorter than
	 * this one's fixed part, and would wait for bytes that never come. */
	if (len < 12) {
		*used = 12;
		return -EAGAIN;
	}
	version = get_be32(buf + 8);
	if (version != NATIVE_VERSION)
		return err_set(EPROTONOSUPPORT,
			       "hello: unsupported version %" PRIu32 " (this blkmig speaks %u)",
			       version, NATIVE_VERSION);
	if (len < HELLO_FIXED) {
		*used = HELLO_FIXED;
		return -EAGAIN;
	}
	h->version = version;
	h->caps = get_be32(buf + 12);
	h->chunk_size = get_be32(buf + 16);
	memcpy(h->id, buf + HELLO_AT_ID, NATIVE_ID_LEN);
	h->ndev = get_be16(buf + HELLO_AT_DEV);
	r = hello_check_fixed(EBADMSG, h->caps, h->chunk_size, h->ndev);
	if (r < 0)
		return r;

	/*
	 * pos never exceeds NATIVE_HELLO_MAX and is always <= len, so the
	 * "len - pos" comparisons cannot wrap and the sums below cannot
	 * overflow.
	 */
	pos = HELLO_FIXED;
	for (unsigned int i = 0; i < h->ndev; i++) {
		struct native_dev *d = &h->dev[i];
		size_t n;

		if (len - pos < 1) {
			*used = pos + 1;
			return -EAGAIN;
		}
		n = buf[pos];
		if (n == 0)
			return err_set(EBADMSG, "hello: device %u has an empty name", i);
		if (len - pos - 1 < n + HELLO_DEV_TAIL) {
			*used = pos + 1 + n + HELLO_DEV_TAIL;
			return -EAGAIN;
		}
		if (wire_name_check(buf + pos + 1, n) < 0)
			return err_set(EBADMSG, "hello: device %u name %s", i,
				       wire_name_why(buf + pos + 1, n, why, sizeof(why)));
		memcpy(d->name, buf + pos + 1, n);
		d->name[n] = '\0';
		if (hello_dup(h, i, d->name))
			return err_set(EBADMSG, "hello: duplicate device name '%s'",
				       str_escape(shown, sizeof(shown), d->name));
		d->size = get_be64(buf + pos + 1 + n);
		if (d->size == 0)
			return err_set(EBADMSG, "hello: device '%s' has size 0",
				       str_escape(shown, sizeof(shown), d->name));
		pos += 1 + n + HELLO_DEV_TAIL;
	}
	h->lanes = 1;
	if (h->caps & NATIVE_CAP_LANES) {
		if (len - pos < 2) {
			*used = pos + 2;
			return -EAGAIN;
		}
		h->lanes = get_be16(buf + pos);
		if (h->lanes < 2 || h->lanes > NATIVE_LANES_MAX)
			return err_set(EBADMSG, "hello: asks for %u connections (must be 2..%u)",
				       h->lanes, NATIVE_LANES_MAX);
		pos += 2;
	}
	*used = pos;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Frame header                                                             */

int native_frame_header(const uint8_t hdr[NATIVE_FRAME_HDR], uint64_t allowed, uint8_t *type,
			uint32_t *len)
{
	uint8_t t = hdr[0];
	uint32_t l;

	/* Check the type is known before using NATIVE_ALLOW(): the mask folds
	 * unknown types onto known bits (0x21 and 0x01 share one). */
	if (!msg_known(t))
		return err_set(EBADMSG, "frame: unknown message type 0x%02x", t);
	if (!(allowed & NATIVE_ALLOW(t)))
		return err_set(EBADMSG, "frame: unexpected %s message (type 0x%02x)",
			       native_msg_name(t), t);
	*type = t;
	if (t == NATIVE_MSG_BLOCKS) {
		/* Unframed: the records start at hdr[1]. */
		*len = 0;
		return 0;
	}
	l = get_be32(hdr + 1);
	if (l > NATIVE_MSG_MAX)
		return err_set(EBADMSG,
			       "frame: %s message length %" PRIu32 " exceeds the maximum %u",
			       native_msg_name(t), l, NATIVE_MSG_MAX);
	*len = l;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* COMPLETE                                                                 */

static bool complete_dup(const struct native_complete *c, unsigned int i, const char *name)
{
	for (unsigned int j = 0; j < i; j++)
		if (strcmp(c->dev[j].name, name) == 0)
			return true;
	return false;
}

int native_complete_encode(uint8_t *buf, size_t cap, const struct native_complete *c)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];
	size_t body = 4 + 2, pos;
	int r;

	if (c->attempt < 1)
		return err_set(EINVAL, "complete: attempt 0 (attempts count from 1)");
	if (c->ndev < 1 || c->ndev > NATIVE_MAX_DEVICES)
		return err_set(EINVAL, "complete: invalid device count %u (must be 1..%d)",
			       (unsigned int)c->ndev, NATIVE_MAX_DEVICES);
	for (unsigned int i = 0; i < c->ndev; i++) {
		r = name_len_for_encode("complete", i, c->dev[i].name);
		if (r < 0)
			return r;
		if (complete_dup(c, i, c->dev[i].name))
			return err_set(EINVAL, "complete: duplicate device name '%s'",
				       str_escape(shown, sizeof(shown), c->dev[i].name));
		body += 1 + (size_t)r + COMPLETE_DEV_TAIL;
	}
	r = frame_put(buf, cap, NATIVE_MSG_COMPLETE, body);
	if (r < 0)
		return r;

	pos = NATIVE_FRAME_HDR;
	put_be32(buf + pos, c->attempt);
	put_be16(buf + pos + 4, c->ndev);
	pos += 4 + 2;
	for (unsigned int i = 0; i < c->ndev; i++) {
		const struct native_dev_digest *d = &c->dev[i];
		size_t n = strlen(d->name);

		buf[pos] = (uint8_t)n;
		memcpy(buf + pos + 1, d->name, n);
		put_be64(buf + pos + 1 + n, d->chunks);
		memcpy(buf + pos + 1 + n + 8, d->digest, NATIVE_DIGEST_LEN);
		pos += 1 + n + COMPLETE_DEV_TAIL;
	}
	return (int)pos;
}

int native_complete_decode(const uint8_t *body, size_t len, struct native_complete *c)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)], why[WIRE_NAME_WHY_CAP];
	size_t pos;

	if (len < 4 + 2)
		return err_set(EBADMSG, "complete: body truncated (%zu bytes)", len);
	c->attempt = get_be32(body);
	if (c->attempt < 1)
		return err_set(EBADMSG, "complete: attempt 0 (attempts count from 1)");
	c->ndev = get_be16(body + 4);
	if (c->ndev < 1 || c->ndev > NATIVE_MAX_DEVICES)
		return err_set(EBADMSG, "complete: invalid device count %u (must be 1..%d)",
			       (unsigned int)c->ndev, NATIVE_MAX_DEVICES);

	/* pos <= len throughout, so len - pos never wraps. */
	pos = 4 + 2;
	for (unsigned int i = 0; i < c->ndev; i++) {
		struct native_dev_digest *d = &c->dev[i];
		size_t n;

		if (len - pos < 1)
			return err_set(EBADMSG, "complete: body truncated at device %u of %u", i,
				       (unsigned int)c->ndev);
		n = body[pos];
		if (n == 0)
			return err_set(EBADMSG, "complete: device %u has an empty name", i);
		if (len - pos - 1 < n + COMPLETE_DEV_TAIL)
			return err_set(EBADMSG, "complete: body truncated at device %u of %u", i,
				       (unsigned int)c->ndev);
		if (wire_name_check(body + pos + 1, n) < 0)
			return err_set(EBADMSG, "complete: device %u name %s", i,
				       wire_name_why(body + pos + 1, n, why, sizeof(why)));
		memcpy(d->name, body + pos + 1, n);
		d->name[n] = '\0';
		if (complete_dup(c, i, d->name))
			return err_set(EBADMSG, "complete: duplicate device name '%s'",
				       str_escape(shown, sizeof(shown), d->name));
		d->chunks = get_be64(body + pos + 1 + n);
		memcpy(d->digest, body + pos + 1 + n + 8, NATIVE_DIGEST_LEN);
		pos += 1 + n + COMPLETE_DEV_TAIL;
	}
	if (pos != len)
		return err_set(EBADMSG, "complete: %zu trailing bytes after %u devices", len - pos,
			       (unsigned int)c->ndev);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* ERROR / ABORT                                                            */

/*
 * Length of the well-formed, printable UTF-8 sequence at p[0..n), or 0 when
 * p[0] starts anything else: ASCII controls and DEL, stray continuation
 * bytes, overlong forms, surrogates, code points above U+10FFFF and the C1
 * controls U+0080..U+009F (which some terminals obey).
 */
static size_t utf8_printable(const uint8_t *p, size_t n)
{
	static const uint32_t min_cp[] = { 0, 0, 0x80, 0x800, 0x10000 };
	uint8_t c = p[0];
	size_t seq;
	uint32_t cp;

	if (c >= 0x20 && c < 0x7f)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	seq = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
	if (n < seq)
		return 0;
	cp = c & (0x7fU >> seq);
	for (size_t i = 1; i < seq; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fU);
	}
	if (cp < min_cp[seq] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || cp < 0xa0)
		return 0;
	return seq;
}

/*
 * Copy the wire reason into out (NATIVE_REASON_MAX + 1 bytes), keeping
 * printable UTF-8, replacing every other byte by '?', stopping at
 * NATIVE_REASON_MAX bytes without splitting a sequence.
 */
static void reason_sanitise(char *out, const uint8_t *p, size_t n)
{
	size_t in = 0, o = 0;

	while (in < n && o < NATIVE_REASON_MAX) {
		size_t seq = utf8_printable(p + in, n - in);

		if (seq == 0) {
			out[o++] = '?';
			in++;
			continue;
		}
		if (seq > NATIVE_REASON_MAX - o)
			break;
		memcpy(out + o, p + in, seq);
		o += seq;
		in += seq;
	}
	out[o] = '\0';
}

int native_error_encode(uint8_t *buf, size_t cap, enum native_msg type,
			const struct native_error *e)
{
	size_t n;
	int r;

	if (type != NATIVE_MSG_ABORT && type != NATIVE_MSG_ERROR)
		return err_set(EINVAL, "encode ERROR/ABORT: wrong message type 0x%02x (%s)",
			       (unsigned int)type, native_msg_name((uint8_t)type));
	if (e->err < 1 || e->err > ERRNO_MAX)
		return err_set(EINVAL, "encode %s: errno %" PRIu32 " out of range 1..%d",
			       native_msg_name((uint8_t)type), e->err, ERRNO_MAX);
	n = strnlen(e->reason, NATIVE_REASON_MAX);
	r = frame_put(buf, cap, (uint8_t)type, 4 + n);
	if (r < 0)
		return r;
	put_be32(buf + NATIVE_FRAME_HDR, e->err);
	memcpy(buf + NATIVE_FRAME_HDR + 4, e->reason, n);
	return (int)(NATIVE_FRAME_HDR + 4 + n);
}

int native_error_decode(const uint8_t *body, size_t len, struct native_error *e)
{
	uint32_t err;

	if (len < 4)
		return err_set(EBADMSG, "error/abort: body truncated (%zu bytes, need at least 4)",
			       len);
	err = get_be32(body);
	/* The reason is decoded first so that a bad errno still shows it:
	 * it is the only clue the peer gave. */
	reason_sanitise(e->reason, body + 4, len - 4);
	if (err < 1 || err > ERRNO_MAX)
		return err_set(EBADMSG,
			       "error/abort: errno %" PRIu32 " out of range 1..%d (reason: %s)",
			       err, ERRNO_MAX, e->reason);
	e->err = err;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* READY / ACK                                                              */

int native_ready_encode(uint8_t *buf, size_t cap, uint32_t version)
{
	int r = frame_put(buf, cap, NATIVE_MSG_READY, 4);

	if (r < 0)
		return r;
	put_be32(buf + NATIVE_FRAME_HDR, version);
	return NATIVE_FRAME_HDR + 4;
}

int native_ready_decode(const uint8_t *body, size_t len, uint32_t *version)
{
	if (len != 4)
		return err_set(EBADMSG, "ready: body of %zu bytes (expected 4)", len);
	*version = get_be32(body);
	return 0;
}

/* SYNCED and WACK: a framed be64. */
static int u64_encode(uint8_t *buf, size_t cap, enum native_msg type, uint64_t v)
{
	int r = frame_put(buf, cap, type, 8);

	if (r < 0)
		return r;
	put_be64(buf + NATIVE_FRAME_HDR, v);
	return NATIVE_FRAME_HDR + 8;
}

static int u64_decode(const char *what, const uint8_t *body, size_t len, uint64_t *v)
{
	if (len != 8)
		return err_set(EBADMSG, "%s: body of %zu bytes (expected 8)", what, len);
	*v = get_be64(body);
	return 0;
}

int native_synced_encode(uint8_t *buf, size_t cap, uint64_t passes)
{
	return u64_encode(buf, cap, NATIVE_MSG_SYNCED, passes);
}

int native_synced_decode(const uint8_t *body, size_t len, uint64_t *passes)
{
	return u64_decode("synced", body, len, passes);
}

int native_wack_encode(uint8_t *buf, size_t cap, uint64_t seq)
{
	return u64_encode(buf, cap, NATIVE_MSG_WACK, seq);
}

int native_wack_decode(const uint8_t *body, size_t len, uint64_t *seq)
{
	return u64_decode("wack", body, len, seq);
}

/* ACK and COMMIT: a framed be32 attempt. */
static int attempt_encode(uint8_t *buf, size_t cap, enum native_msg type, uint32_t attempt)
{
	int r;

	if (attempt < 1)
		return err_set(EINVAL, "encode %s: attempt 0 (attempts count from 1)",
			       native_msg_name((uint8_t)type));
	r = frame_put(buf, cap, type, 4);
	if (r < 0)
		return r;
	put_be32(buf + NATIVE_FRAME_HDR, attempt);
	return NATIVE_FRAME_HDR + 4;
}

int native_commit_encode(uint8_t *buf, size_t cap, uint32_t attempt)
{
	return attempt_encode(buf, cap, NATIVE_MSG_COMMIT, attempt);
}

int native_done_encode(uint8_t *buf, size_t cap, uint32_t attempt)
{
	return attempt_encode(buf, cap, NATIVE_MSG_DONE, attempt);
}

int native_ack_encode(uint8_t *buf, size_t cap, uint32_t attempt)
{
	return attempt_encode(buf, cap, NATIVE_MSG_ACK, attempt);
}

int native_attempt_decode(const char *what, const uint8_t *body, size_t len, uint32_t *attempt)
{
	if (len != 4)
		return err_set(EBADMSG, "%s: body of %zu bytes (expected 4)", what, len);
	*attempt = get_be32(body);
	if (*attempt < 1)
		return err_set(EBADMSG, "%s: attempt 0 (attempts count from 1)", what);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* STATE / SUMS                                                             */

int native_state_encode(uint8_t *buf, size_t cap, const struct native_state *st)
{
	int r;

	if (st->held > NATIVE_HELD_AWAITING)
		return err_set(EINVAL, "encode STATE: unknown held state %" PRIu32, st->held);
	if ((st->held == NATIVE_HELD_AWAITING) != (st->attempt > 0))
		return err_set(EINVAL,
			       "encode STATE: an attempt goes with AWAITING, and only there");
	if (st->held == NATIVE_HELD_NONE && st->sums)
		return err_set(EINVAL,
			       "encode STATE: %" PRIu64 " sums offered while holding nothing",
			       st->sums);
	r = frame_put(buf, cap, NATIVE_MSG_STATE, 16);
	if (r < 0)
		return r;
	put_be32(buf + NATIVE_FRAME_HDR, st->held);
	put_be32(buf + NATIVE_FRAME_HDR + 4, st->attempt);
	put_be64(buf + NATIVE_FRAME_HDR + 8, st->sums);
	return NATIVE_FRAME_HDR + 16;
}

int native_state_decode(const uint8_t *body, size_t len, struct native_state *st)
{
	if (len != 16)
		return err_set(EBADMSG, "state: body of %zu bytes (expected 16)", len);
	st->held = get_be32(body);
	st->attempt = get_be32(body + 4);
	st->sums = get_be64(body + 8);
	if (st->held > NATIVE_HELD_AWAITING)
		return err_set(EBADMSG, "state: unknown held state %" PRIu32, st->held);
	if ((st->held == NATIVE_HELD_AWAITING) != (st->attempt > 0))
		return err_set(EBADMSG,
			       "state: attempt %" PRIu32 " with held state %" PRIu32
			       " (an attempt goes with AWAITING, and only there)",
			       st->attempt, st->held);
	if (st->held == NATIVE_HELD_NONE && st->sums)
		return err_set(EBADMSG, "state: %" PRIu64 " sums offered while holding nothing",
			       st->sums);
	return 0;
}

/* The rules both ends apply to one SUMS message. */
static int sums_check(int err, const struct native_sums *s)
{
	if (s->count < 1 || s->count > NATIVE_SUMS_MAX)
		return err_set(err, "sums: %" PRIu32 " entries (must be 1..%u)", s->count,
			       (unsigned int)NATIVE_SUMS_MAX);
	if (s->dev >= NATIVE_MAX_DEVICES)
		return err_set(err, "sums: device %u (at most %d devices)", (unsigned int)s->dev,
			       NATIVE_MAX_DEVICES);
	for (uint32_t i = 1; i < s->count; i++)
		if (s->e[i].chunk <= s->e[i - 1].chunk)
			return err_set(err,
				       "sums: chunk %" PRIu64 " after %" PRIu64 " (must ascend)",
				       s->e[i].chunk, s->e[i - 1].chunk);
	return 0;
}

int native_sums_encode(uint8_t *buf, size_t cap, const struct native_sums *s)
{
	int r = sums_check(EINVAL, s);
	size_t pos;

	if (r < 0)
		return r;
	r = frame_put(buf, cap, NATIVE_MSG_SUMS, 6 + (size_t)s->count * NATIVE_SUM_ITEM);
	if (r < 0)
		return r;
	pos = NATIVE_FRAME_HDR;
	put_be16(buf + pos, s->dev);
	put_be32(buf + pos + 2, s->count);
	pos += 6;
	for (uint32_t i = 0; i < s->count; i++) {
		put_be64(buf + pos, s->e[i].chunk);
		memcpy(buf + pos + 8, s->e[i].sum, NATIVE_SUM_LEN);
		pos += NATIVE_SUM_ITEM;
	}
	return (int)pos;
}

int native_sums_decode(const uint8_t *body, size_t len, struct native_sums *s)
{
	if (len < 6)
		return err_set(EBADMSG, "sums: body truncated (%zu bytes)", len);
	s->dev = get_be16(body);
	s->count = get_be32(body + 2);
	if (s->count < 1 || s->count > NATIVE_SUMS_MAX)
		return err_set(EBADMSG, "sums: %" PRIu32 " entries (must be 1..%u)", s->count,
			       (unsigned int)NATIVE_SUMS_MAX);
	if (len != 6 + (size_t)s->count * NATIVE_SUM_ITEM)
		return err_set(EBADMSG, "sums: body of %zu bytes for %" PRIu32 " entries", len,
			       s->count);
	for (uint32_t i = 0; i < s->count; i++) {
		const uint8_t *p = body + 6 + (size_t)i * NATIVE_SUM_ITEM;

		s->e[i].chunk = get_be64(p);
		memcpy(s->e[i].sum, p + 8, NATIVE_SUM_LEN);
	}
	return sums_check(EBADMSG, s);
}

/* ------------------------------------------------------------------------ */
/* VERDICT                                                                  */

static bool verdict_dup(const struct native_verdict *v, unsigned int i, const char *name)
{
	for (unsigned int j = 0; j < i; j++)
		if (strcmp(v->dev[j].name, name) == 0)
			return true;
	return false;
}

int native_verdict_encode(uint8_t *buf, size_t cap, const struct native_verdict *v)
{
	size_t body = 2, pos;
	int r;

	if (v->ndev < 1 || v->ndev > NATIVE_MAX_DEVICES)
		return err_set(EINVAL, "verdict: invalid device count %u (must be 1..%d)",
			       (unsigned int)v->ndev, NATIVE_MAX_DEVICES);
	for (unsigned int i = 0; i < v->ndev; i++) {
		r = name_len_for_encode("verdict", i, v->dev[i].name);
		if (r < 0)
			return r;
		if (verdict_dup(v, i, v->dev[i].name))
			return err_set(EINVAL, "verdict: duplicate device name '%s'",
				       v->dev[i].name);
		if (v->dev[i].differing > v->dev[i].checked)
			return err_set(
			    EINVAL, "verdict: device %u: %" PRIu64 " of %" PRIu64 " chunks differ",
			    i, v->dev[i].differing, v->dev[i].checked);
		body += 1 + (size_t)r + 16;
	}
	r = frame_put(buf, cap, NATIVE_MSG_VERDICT, body);
	if (r < 0)
		return r;
	pos = NATIVE_FRAME_HDR;
	put_be16(buf + pos, v->ndev);
	pos += 2;
	for (unsigned int i = 0; i < v->ndev; i++) {
		size_t n = strlen(v->dev[i].name);

		buf[pos] = (uint8_t)n;
		memcpy(buf + pos + 1, v->dev[i].name, n);
		put_be64(buf + pos + 1 + n, v->dev[i].checked);
		put_be64(buf + pos + 1 + n + 8, v->dev[i].differing);
		pos += 1 + n + 16;
	}
	return (int)pos;
}

int native_verdict_decode(const uint8_t *body, size_t len, struct native_verdict *v)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)], why[WIRE_NAME_WHY_CAP];
	size_t pos = 2;

	if (len < 2)
		return err_set(EBADMSG, "verdict: body truncated (%zu bytes)", len);
	v->ndev = get_be16(body);
	if (v->ndev < 1 || v->ndev > NATIVE_MAX_DEVICES)
		return err_set(EBADMSG, "verdict: invalid device count %u (must be 1..%d)",
			       (unsigned int)v->ndev, NATIVE_MAX_DEVICES);
	for (unsigned int i = 0; i < v->ndev; i++) {
		struct native_dev_verdict *d = &v->dev[i];
		size_t n;

		if (len - pos < 1 || (n = body[pos]) == 0 || len - pos - 1 < n + 16)
			return err_set(EBADMSG, "verdict: device %u of %u truncated or unnamed", i,
				       (unsigned int)v->ndev);
		if (wire_name_check(body + pos + 1, n) < 0)
			return err_set(EBADMSG, "verdict: device %u name %s", i,
				       wire_name_why(body + pos + 1, n, why, sizeof(why)));
		memcpy(d->name, body + pos + 1, n);
		d->name[n] = '\0';
		if (verdict_dup(v, i, d->name))
			return err_set(EBADMSG, "verdict: duplicate device name '%s'",
				       str_escape(shown, sizeof(shown), d->name));
		d->checked = get_be64(body + pos + 1 + n);
		d->differing = get_be64(body + pos + 1 + n + 8);
		if (d->differing > d->checked)
			return err_set(
			    EBADMSG, "verdict: device %u: %" PRIu64 " of %" PRIu64 " chunks differ",
			    i, d->differing, d->checked);
		pos += 1 + n + 16;
	}
	if (pos != len)
		return err_set(EBADMSG, "verdict: %zu trailing bytes", len - pos);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* EXPORT                                                                   */

#define EXPORT_FIXED 4 /* be16 port, be16 hostlen */

static bool host_byte_ok(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == ':' || c == '_' || c == '-';
}

/*
 * The host rules, for encoder (-EINVAL, err) and decoder (-EBADMSG): the
 * character set (which also keeps NUL, controls and brackets out), and no
 * host without a port.  The host is shown with every other byte as \xNN.
 */
static int export_check(int err, uint16_t port, const uint8_t *host, size_t n)
{
	char shown[STR_ESCAPE_CAP(NATIVE_HOST_MAX)];
	size_t o = 0, bad = n;

	for (size_t i = 0; i < n; i++) {
		if (host_byte_ok(host[i])) {
			shown[o++] = (char)host[i];
			continue;
		}
		if (bad == n)
			bad = i;
		o += (size_t)snprintf(shown + o, sizeof(shown) - o, "\\x%02x", host[i]);
	}
	shown[o] = '\0';
	if (bad < n)
		return err_set(err,
			       "export: host '%s' has byte 0x%02x at %zu (only [A-Za-z0-9.:_-] "
			       "are allowed)",
			       shown, host[bad], bad);
	if (port == 0 && n > 0)
		return err_set(err, "export: host '%s' with port 0 (port 0 means no export)",
			       shown);
	return 0;
}

int native_export_encode(uint8_t *buf, size_t cap, const struct native_export *e)
{
	size_t n = strnlen(e->host, NATIVE_HOST_MAX + 1);
	int r;

	if (n > NATIVE_HOST_MAX)
		return err_set(EINVAL, "export: host longer than %d bytes", NATIVE_HOST_MAX);
	r = export_check(EINVAL, e->port, (const uint8_t *)e->host, n);
	if (r == 0)
		r = frame_put(buf, cap, NATIVE_MSG_EXPORT, EXPORT_FIXED + n);
	if (r < 0)
		return r;
	put_be16(buf + NATIVE_FRAME_HDR, e->port);
	put_be16(buf + NATIVE_FRAME_HDR + 2, (uint16_t)n);
	memcpy(buf + NATIVE_FRAME_HDR + EXPORT_FIXED, e->host, n);
	return (int)(NATIVE_FRAME_HDR + EXPORT_FIXED + n);
}

int native_export_decode(const uint8_t *body, size_t len, struct native_export *e)
{
	size_t n;
	int r;

	if (len < EXPORT_FIXED)
		return err_set(EBADMSG, "export: body truncated (%zu bytes)", len);
	n = get_be16(body + 2);
	if (n > NATIVE_HOST_MAX)
		return err_set(EBADMSG, "export: host of %zu bytes (at most %d)", n,
			       NATIVE_HOST_MAX);
	if (len - EXPORT_FIXED != n)
		return err_set(EBADMSG, "export: body of %zu bytes for a host of %zu bytes", len,
			       n);
	e->port = get_be16(body);
	r = export_check(EBADMSG, e->port, body + EXPORT_FIXED, n);
	if (r < 0)
		return r;
	memcpy(e->host, body + EXPORT_FIXED, n);
	e->host[n] = '\0';
	return 0;
}

/* ------------------------------------------------------------------------ */
/* LANES                                                                    */

#define LANES_BODY	  (2 + NATIVE_TOKEN_LEN)
#define LANES_FLAGS_KNOWN NATIVE_LANES_WLANE

int native_lanes_encode(uint8_t *buf, size_t cap, const struct native_lanes *l)
{
	int r;

	if (l->count < 1 || l->count > NATIVE_LANES_MAX)
		return err_set(EINVAL, "lanes: %u connections (must be 1..%u)", l->count,
			       NATIVE_LANES_MAX);
	if (l->flags & ~LANES_FLAGS_KNOWN || (l->flags && !l->has_flags))
		return err_set(EINVAL, "lanes: flags 0x%x", l->flags);
	r = frame_put(buf, cap, NATIVE_MSG_LANES, LANES_BODY + (l->has_flags ? 2u : 0u));
	if (r < 0)
		return r;
	put_be16(buf + NATIVE_FRAME_HDR, l->count);
	memcpy(buf + NATIVE_FRAME_HDR + 2, l->token, NATIVE_TOKEN_LEN);
	if (l->has_flags)
		put_be16(buf + NATIVE_FRAME_HDR + LANES_BODY, l->flags);
	return NATIVE_FRAME_HDR + LANES_BODY + (l->has_flags ? 2 : 0);
}

int native_lanes_decode(const uint8_t *body, size_t len, struct native_lanes *l)
{
	if (len != LANES_BODY && len != LANES_BODY + 2)
		return err_set(EBADMSG, "lanes: body of %zu bytes (must be %u or %u)", len,
			       LANES_BODY, LANES_BODY + 2);
	l->count = get_be16(body);
	if (l->count < 1 || l->count > NATIVE_LANES_MAX)
		return err_set(EBADMSG, "lanes: %u connections (must be 1..%u)", l->count,
			       NATIVE_LANES_MAX);
	memcpy(l->token, body + 2, NATIVE_TOKEN_LEN);
	l->has_flags = len == LANES_BODY + 2;
	l->flags = l->has_flags ? get_be16(body + LANES_BODY) : 0;
	if (l->flags & ~LANES_FLAGS_KNOWN)
		return err_set(EBADMSG, "lanes: unknown flags 0x%x", l->flags & ~LANES_FLAGS_KNOWN);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* The write lane's messages                                                */

void native_lane_encode(uint8_t hdr[NATIVE_LANE_HDR], uint64_t after, uint32_t len)
{
	put_be64(hdr, after);
	put_be32(hdr + 8, len);
}

int native_lane_decode(const uint8_t hdr[NATIVE_LANE_HDR], uint32_t max, uint64_t *after,
		       uint32_t *len)
{
	uint32_t l = get_be32(hdr + 8);

	if (l == 0 || l > max)
		return err_set(EBADMSG,
			       "write lane: a record of %" PRIu32 " bytes (must be 1..%" PRIu32 ")",
			       l, max);
	*after = get_be64(hdr);
	*len = l;
	return 0;
}
