/* SPDX-License-Identifier: MIT */
/*
 * Block records: encode and decode one record of QEMU's "block" section
 * payload (see record.h for the layout).  Both the QEMU-format stream and the
 * native envelope's BLOCKS message carry these records, so this file is the
 * single place that turns untrusted record bytes into a struct wire_record.
 *
 * Pure functions over caller buffers: no I/O, no allocation, no state.  The
 * decoder is incremental in the simplest way: given a prefix it says how many
 * bytes it needs in total, and the caller calls again with at least that many.
 */
#include "record.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"

#define REC_WORD_LEN 8 /* be64 word */
#define REC_NAME_POS 9 /* word + u8 name length */

#define REC_F_KNOWN                                                                                \
	(WIRE_F_DEVICE_BLOCK | WIRE_F_EOS | WIRE_F_PROGRESS | WIRE_F_ZERO_BLOCK | WIRE_F_WRITE |   \
	 WIRE_F_ZSTD | WIRE_F_FENCE)
/* FENCE's field after the word: seq. */
#define REC_FENCE_FIELDS 8
/* WRITE's fields after the name: seq, offset, length, op. */
#define REC_WRITE_FIELDS (8 + 8 + 4 + 1)
/* ZSTD's field after the name: the frame's length. */
#define REC_ZSTD_FIELDS 4

/* A PROGRESS percentage must fit in the word after the 9 flag bits. */
#define REC_PERCENT_MAX 100

/* ------------------------------------------------------------------------ */
/* Flag validation                                                          */

/*
 * Render the known flags of f as "DEVICE_BLOCK|PROGRESS" into buf (or
 * "none").  Used only for error messages.
 */
static const char *flag_names(char *buf, size_t cap, unsigned int f)
{
	static const struct {
		unsigned int bit;
		const char *name;
	} names[] = {
		{ WIRE_F_DEVICE_BLOCK, "DEVICE_BLOCK" },
		{ WIRE_F_EOS, "EOS" },
		{ WIRE_F_PROGRESS, "PROGRESS" },
		{ WIRE_F_ZERO_BLOCK, "ZERO_BLOCK" },
		{ WIRE_F_WRITE, "WRITE" },
		{ WIRE_F_ZSTD, "ZSTD" },
		{ WIRE_F_FENCE, "FENCE" },
	};
	size_t pos = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (!(f & names[i].bit))
			continue;
		int n = snprintf(buf + pos, cap - pos, "%s%s", pos ? "|" : "", names[i].name);
		if (n < 0 || (size_t)n >= cap - pos)
			break;
		pos += (size_t)n;
	}
	if (pos == 0)
		snprintf(buf, cap, "none");
	return buf;
}

/*
 * Map the flag bits of a word to a record kind.  Exactly seven combinations
 * are valid; anything else is -EBADMSG with the flags named in the message.
 */
static int flags_to_kind(unsigned int flags, enum wire_rec_kind *kind)
{
	char names[64];

	if (flags & ~REC_F_KNOWN) {
		if (flags & REC_F_KNOWN)
			return err_set(EBADMSG, "record: unknown flags 0x%02x (flags 0x%02x)",
				       flags & ~REC_F_KNOWN, flags);
		return err_set(EBADMSG, "record: unknown flags 0x%02x", flags);
	}
	switch (flags) {
	case WIRE_F_DEVICE_BLOCK:
		*kind = WIRE_REC_DATA;
		return 0;
	case WIRE_F_DEVICE_BLOCK | WIRE_F_ZERO_BLOCK:
		*kind = WIRE_REC_ZERO;
		return 0;
	case WIRE_F_PROGRESS:
		*kind = WIRE_REC_PROGRESS;
		return 0;
	case WIRE_F_EOS:
		*kind = WIRE_REC_EOS;
		return 0;
	case WIRE_F_WRITE:
		*kind = WIRE_REC_WRITE;
		return 0;
	case WIRE_F_DEVICE_BLOCK | WIRE_F_ZSTD:
		*kind = WIRE_REC_ZSTD;
		return 0;
	case WIRE_F_FENCE:
		*kind = WIRE_REC_FENCE;
		return 0;
	default:
		return err_set(EBADMSG, "record: invalid flag combination 0x%02x (%s)", flags,
			       flag_names(names, sizeof(names), flags));
	}
}

bool wire_chunk_size_valid(uint64_t chunk_size)
{
	return is_pow2(chunk_size) && chunk_size >= WIRE_MIN_CHUNK_SIZE &&
	       chunk_size <= WIRE_MAX_CHUNK_SIZE;
}

/* ------------------------------------------------------------------------ */
/* Encode                                                                   */

int wire_rec_encode_header(uint8_t *buf, const struct wire_record *rec)
{
	size_t n;

	switch (rec->kind) {
	case WIRE_REC_DATA:
	case WIRE_REC_ZERO:
	case WIRE_REC_WRITE:
	case WIRE_REC_ZSTD:
		if (rec->kind != WIRE_REC_WRITE && (rec->offset & WIRE_FLAG_MASK))
			return err_set(EINVAL,
				       "record: offset 0x%" PRIx64 " is not a multiple of 512",
				       rec->offset);
		/* The NUL-terminated name is authoritative; name_len is
		 * an output of the decoder. */
		n = strnlen(rec->name, sizeof(rec->name));
		if (n == 0)
			return err_set(EINVAL, "record: empty device name");
		if (n > WIRE_NAME_MAX)
			return err_set(EINVAL, "record: device name longer than %d bytes",
				       WIRE_NAME_MAX);
		if (rec->kind == WIRE_REC_WRITE) {
			uint8_t *f = buf + REC_NAME_POS + n;

			if (rec->seq == 0 || rec->length == 0 || rec->op > WIRE_WRITE_ZERO)
				return err_set(EINVAL,
					       "record: WRITE needs seq >= 1, length >= 1 and a "
					       "known op");
			put_be64(buf, WIRE_F_WRITE);
			put_be64(f, rec->seq);
			put_be64(f + 8, rec->offset);
			put_be32(f + 16, rec->length);
			f[20] = rec->op;
		} else if (rec->kind == WIRE_REC_ZSTD) {
			if (rec->length == 0)
				return err_set(EINVAL, "record: ZSTD with an empty frame");
			put_be64(buf, rec->offset | WIRE_F_DEVICE_BLOCK | WIRE_F_ZSTD);
			put_be32(buf + REC_NAME_POS + n, rec->length);
		} else {
			put_be64(buf, rec->offset | (rec->kind == WIRE_REC_ZERO
							 ? WIRE_F_DEVICE_BLOCK | WIRE_F_ZERO_BLOCK
							 : WIRE_F_DEVICE_BLOCK));
		}
		buf[REC_WORD_LEN] = (uint8_t)n;
		memcpy(buf + REC_NAME_POS, rec->name, n);
		return (int)(REC_NAME_POS + n +
			     (rec->kind == WIRE_REC_WRITE  ? REC_WRITE_FIELDS
			      : rec->kind == WIRE_REC_ZSTD ? REC_ZSTD_FIELDS
							   : 0));
	case WIRE_REC_PROGRESS:
		if (rec->percent > REC_PERCENT_MAX)
			return err_set(EINVAL, "record: progress %" PRIu64 "%% out of range 0..%d",
				       rec->percent, REC_PERCENT_MAX);
		put_be64(buf, rec->percent << 9 | WIRE_F_PROGRESS);
		return REC_WORD_LEN;
	case WIRE_REC_EOS:
		put_be64(buf, WIRE_F_EOS);
		return REC_WORD_LEN;
	case WIRE_REC_FENCE:
		if (rec->seq == 0)
			return err_set(EINVAL, "record: FENCE needs seq >= 1");
		put_be64(buf, WIRE_F_FENCE);
		put_be64(buf + REC_WORD_LEN, rec->seq);
		return REC_WORD_LEN + REC_FENCE_FIELDS;
	}
	return err_set(EINVAL, "record: invalid record kind %d", (int)rec->kind);
}

/* ------------------------------------------------------------------------ */
/* Decode                                                                   */

int wire_rec_decode(const uint8_t *buf, size_t len, uint32_t chunk_size, struct wire_record *rec,
		    size_t *used)
{
	enum wire_rec_kind kind = WIRE_REC_EOS;
	char why[WIRE_NAME_WHY_CAP];
	uint64_t word, offset, need;
	unsigned int flags;
	uint8_t n;
	int r;

	if (!wire_chunk_size_valid(chunk_size))
		return err_set(EINVAL,
			       "record: invalid chunk size %" PRIu32
			       " (must be a power of two from %u to %u)",
			       chunk_size, WIRE_MIN_CHUNK_SIZE, WIRE_MAX_CHUNK_SIZE);
	if (len < REC_WORD_LEN) {
		*used = REC_WORD_LEN;
		return -EAGAIN;
	}

	word = get_be64(buf);
	flags = (unsigned int)(word & WIRE_FLAG_MASK);
	offset = word & ~(uint64_t)WIRE_FLAG_MASK;
	r = flags_to_kind(flags, &kind);
	if (r < 0)
		return r;

	rec->kind = kind;
	rec->offset = 0;
	rec->percent = 0;
	rec->name_len = 0;
	rec->name[0] = '\0';
	rec->data = NULL;
	rec->seq = 0;
	rec->length = 0;
	rec->op = 0;

	switch (kind) {
	case WIRE_REC_PROGRESS:
		/* Informational; QEMU never sends more than 100, but a value
		 * above it harms nothing, so it is passed on as is. */
		rec->percent = word >> 9;
		*used = REC_WORD_LEN;
		return 0;
	case WIRE_REC_EOS:
		*used = REC_WORD_LEN;
		return 0;
	case WIRE_REC_FENCE:
		if (offset)
			return err_set(EBADMSG,
				       "record: FENCE with offset bits 0x%" PRIx64 " in its word",
				       offset);
		if (len < REC_WORD_LEN + REC_FENCE_FIELDS) {
			*used = REC_WORD_LEN + REC_FENCE_FIELDS;
			return -EAGAIN;
		}
		rec->seq = get_be64(buf + REC_WORD_LEN);
		if (rec->seq == 0)
			return err_set(EBADMSG, "record: FENCE with sequence number 0");
		*used = REC_WORD_LEN + REC_FENCE_FIELDS;
		return 0;
	case WIRE_REC_DATA:
	case WIRE_REC_ZERO:
	case WIRE_REC_WRITE:
	case WIRE_REC_ZSTD:
		break;
	}

	/* Reject a misaligned offset as soon as the word is known, before
	 * asking the caller for a whole chunk of payload.  A WRITE carries
	 * its offset after the name; its word has none. */
	if (kind == WIRE_REC_WRITE && offset)
		return err_set(EBADMSG, "record: WRITE with offset bits 0x%" PRIx64 " in its word",
			       offset);
	if (offset & (chunk_size - 1))
		return err_set(EBADMSG,
			       "record: offset 0x%" PRIx64 " not aligned to chunk size %" PRIu32,
			       offset, chunk_size);
	if (len < REC_NAME_POS) {
		*used = REC_NAME_POS;
		return -EAGAIN;
	}
	n = buf[REC_WORD_LEN];
	if (n == 0)
		return err_set(EBADMSG, "record: empty device name");
	if (len < REC_NAME_POS + (size_t)n) {
		*used = REC_NAME_POS + (size_t)n;
		return -EAGAIN;
	}
	if (wire_name_check(buf + REC_NAME_POS, n) < 0)
		return err_set(EBADMSG, "record: device name %s (offset 0x%" PRIx64 ")",
			       wire_name_why(buf + REC_NAME_POS, n, why, sizeof(why)), offset);

	need = REC_NAME_POS + (uint64_t)n;
	if (kind == WIRE_REC_DATA) {
		if (ckd_add_u64(&need, need, chunk_size) || need > SIZE_MAX)
			return err_set(EBADMSG, "record: record length overflows");
		if (len < need) {
			*used = (size_t)need;
			return -EAGAIN;
		}
		rec->data = buf + REC_NAME_POS + n;
	} else if (kind == WIRE_REC_ZSTD) {
		const uint8_t *f = buf + need;

		need += REC_ZSTD_FIELDS;
		if (len < need) {
			*used = (size_t)need;
			return -EAGAIN;
		}
		/* Bounded before the frame is asked for: never more than a
		 * chunk's worth, whatever the peer says. */
		rec->length = get_be32(f);
		if (rec->length == 0 || rec->length >= chunk_size)
			return err_set(EBADMSG,
				       "record: compressed chunk of %" PRIu32
				       " bytes (must be 1..%" PRIu32
				       ": a chunk that does not shrink travels as DATA)",
				       rec->length, chunk_size - 1);
		rec->data = buf + need;
		need += rec->length;
		if (len < need) {
			*used = (size_t)need;
			return -EAGAIN;
		}
	} else if (kind == WIRE_REC_WRITE) {
		const uint8_t *f = buf + need;

		need += REC_WRITE_FIELDS;
		if (len < need) {
			*used = (size_t)need;
			return -EAGAIN;
		}
		rec->seq = get_be64(f);
		offset = get_be64(f + 8);
		rec->length = get_be32(f + 16);
		rec->op = f[20];
		if (rec->seq == 0)
			return err_set(EBADMSG, "record: WRITE with sequence number 0");
		if (rec->length == 0 || rec->length > chunk_size)
			return err_set(
			    EBADMSG, "record: WRITE of %" PRIu32 " bytes (must be 1..%" PRIu32 ")",
			    rec->length, chunk_size);
		if (rec->op > WIRE_WRITE_ZERO)
			return err_set(EBADMSG, "record: WRITE with unknown op %u", rec->op);
		if (rec->op == WIRE_WRITE_DATA) {
			rec->data = buf + need;
			need += rec->length;
			if (len < need) {
				*used = (size_t)need;
				return -EAGAIN;
			}
		}
	}

	rec->offset = offset;
	rec->name_len = n;
	memcpy(rec->name, buf + REC_NAME_POS, n);
	rec->name[n] = '\0';
	*used = (size_t)need;
	return 0;
}

int wire_name_check(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return -EBADMSG;
	return 0;
}

const char *wire_name_why(const uint8_t *p, size_t n, char *buf, size_t cap)
{
	char name[WIRE_NAME_MAX + 1], shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];

	if (memchr(p, '\0', n))
		return "contains a NUL byte";
	n = MIN(n, WIRE_NAME_MAX);
	memcpy(name, p, n);
	name[n] = '\0';
	snprintf(buf, cap, "'%s' has control characters", str_escape(shown, sizeof(shown), name));
	return buf;
}
