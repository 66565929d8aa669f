/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the stream reader (src/wire/stream.c): golden streams of
 * both formats, built byte by byte from docs/wire-format.md and
 * QEMU-STREAM.md (not with the encoders), read back item by item; every
 * truncation of each, which must end in a truncation error or, exactly at
 * a top-level boundary, in END; oversized and invalid fields refused with
 * the stream offset named; format detection and sticky failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "wire/stream.h"

#include <zstd.h>

#define CHUNK 4096 /* the golden streams' chunk size */

static void assert_contains(const char *msg, const char *needle)
{
	if (!strstr(msg, needle))
		fail_msg("message '%s' does not contain '%s'", msg, needle);
}

/* ---- a byte builder ------------------------------------------------------------ */

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void grow(struct buf *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	b->cap = (b->len + n) * 2;
	b->p = realloc(b->p, b->cap);
	assert_non_null(b->p);
}

static void u8(struct buf *b, uint8_t v)
{
	grow(b, 1);
	b->p[b->len++] = v;
}

static void be32(struct buf *b, uint32_t v)
{
	for (int i = 3; i >= 0; i--)
		u8(b, (uint8_t)(v >> (i * 8)));
}

static void be64(struct buf *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
		u8(b, (uint8_t)(v >> (i * 8)));
}

static void bytes(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return; /* p may be NULL: an empty body */
	grow(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void fill(struct buf *b, uint8_t v, size_t n)
{
	grow(b, n);
	memset(b->p + b->len, v, n);
	b->len += n;
}

static void counted(struct buf *b, const char *s)
{
	u8(b, (uint8_t)strlen(s));
	bytes(b, s, strlen(s));
}

static void rec_data(struct buf *b, const char *name, uint64_t off, uint8_t v)
{
	be64(b, off | 0x01);
	counted(b, name);
	fill(b, v, CHUNK);
}

static void rec_zero(struct buf *b, const char *name, uint64_t off)
{
	be64(b, off | 0x09);
	counted(b, name);
}

static void rec_progress(struct buf *b, uint64_t pct)
{
	be64(b, pct << 9 | 0x04);
}

static void rec_eos(struct buf *b)
{
	be64(b, 0x02);
}

/* HELLO, version 3: 38 fixed bytes (migration id 10 11 .. 1f), one device
 * "drive0" of 64 MiB: 53 bytes in all. */
#define HELLO_LEN 53

static void hello_id(struct buf *b)
{
	for (uint8_t i = 0; i < 16; i++)
		u8(b, 0x10 + i);
}

static void hello(struct buf *b, uint32_t caps, uint32_t chunk)
{
	bytes(b, "BLKMIG\r\n", 8);
	be32(b, NATIVE_VERSION);
	be32(b, caps);
	be32(b, chunk);
	hello_id(b);
	u8(b, 0); /* be16 ndev */
	u8(b, 1);
	counted(b, "drive0");
	be64(b, 64 << 20);
}

static void frame(struct buf *b, uint8_t type, const void *body, uint32_t len)
{
	u8(b, type);
	be32(b, len);
	bytes(b, body, len);
}

/* ACK (0x82) or COMMIT (0x04) of a switch-over attempt. */
static void attempt_frame(struct buf *b, uint8_t type, uint32_t attempt)
{
	u8(b, type);
	be32(b, 4);
	be32(b, attempt);
}

static void state_frame(struct buf *b, uint32_t held, uint32_t attempt, uint64_t sums)
{
	u8(b, 0x86);
	be32(b, 16);
	be32(b, held);
	be32(b, attempt);
	be64(b, sums);
}

/* SUMS for device dev: count entries at chunks first, first + step, ...,
 * each digest 16 bytes of the chunk index's low byte. */
static void sums_frame(struct buf *b, uint16_t dev, uint32_t count, uint64_t first, uint64_t step)
{
	u8(b, 0x87);
	be32(b, 6 + count * 24);
	u8(b, (uint8_t)(dev >> 8));
	u8(b, (uint8_t)dev);
	be32(b, count);
	for (uint32_t i = 0; i < count; i++) {
		be64(b, first + i * step);
		fill(b, (uint8_t)(first + i * step), 16);
	}
}

static void sv_start(struct buf *b, uint8_t type, uint32_t id, const char *idstr, uint32_t version)
{
	u8(b, type);
	be32(b, id);
	counted(b, idstr);
	be32(b, 0);
	be32(b, version);
}

static void sv_short(struct buf *b, uint8_t type, uint32_t id)
{
	u8(b, type);
	be32(b, id);
}

static void sv_footer(struct buf *b, uint32_t id)
{
	sv_short(b, 0x7e, id);
}

static void qemu_head(struct buf *b)
{
	bytes(b, "QEVM", 4);
	be32(b, 3);
	u8(b, 0x07);
	be32(b, 4);
	bytes(b, "none", 4);
}

/* ---- reading a whole stream ---------------------------------------------------- */

struct item_log {
	enum wire_item_kind kind;
	uint64_t offset;
	enum wire_rec_kind rec;
};

#define MAX_ITEMS 512

/*
 * Read every item of b[0..len) (chunk: the QEMU chunk size); the items go
 * to log[], the final result (0 after END, or the error) is returned.
 */
static int read_all(enum wire_stream_format fmt, const uint8_t *p, size_t len, struct item_log *log,
		    unsigned *n)
{
	struct wire_membuf mb = { .p = p, .len = len };
	struct wire_stream *s;
	int r;

	*n = 0;
	assert_int_equal(wire_stream_new(fmt, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_set_qemu_chunk(s, CHUNK), 0);
	for (;;) {
		struct wire_item it;

		r = wire_stream_next(s, &it);
		if (r < 0)
			break;
		assert_true(*n < MAX_ITEMS);
		log[*n].kind = it.kind;
		log[*n].offset = it.offset;
		log[*n].rec = it.rec.kind;
		(*n)++;
		if (it.kind == WIRE_ITEM_END)
			break;
	}
	/* Sticky: a failed stream fails again (keeping the first message
	 * for the caller). */
	if (r < 0) {
		struct wire_item it;
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		assert_int_equal(wire_stream_next(s, &it), r);
		err_copy_in(msg);
	}
	wire_stream_free(s);
	return r;
}

/* ---- golden streams ------------------------------------------------------------ */

/* A source's native stream: HELLO (MIRROR), BLOCKS {ZERO, DATA, WRITE,
 * PROGRESS, EOS}, COMPLETE (attempt 2), COMMIT 2; the offsets of its items
 * in off[]. */
static void native_source(struct buf *b, uint64_t *off, unsigned *n)
{
	/* clang-format off */
	static const uint8_t complete_body[] = {
		0x00, 0x00, 0x00, 0x02,                         /* attempt 2 */
		0x00, 0x01, 0x06, 'd', 'r', 'i', 'v', 'e', '0', /* 1 device, "drive0" */
		0, 0, 0, 0, 0, 0, 0, 0x02,                      /* 2 chunks */
		0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
	};
	/* clang-format on */

	*n = 0;
	off[(*n)++] = b->len;
	hello(b, 0x05, CHUNK); /* ZERO_BLOCKS | MIRROR */
	off[(*n)++] = b->len;
	u8(b, 0x01); /* BLOCKS */
	off[(*n)++] = b->len;
	rec_zero(b, "drive0", 0);
	off[(*n)++] = b->len;
	rec_data(b, "drive0", CHUNK, 0xa5);
	off[(*n)++] = b->len;
	be64(b, 0x10); /* WRITE "hi" at 100, seq 1 */
	counted(b, "drive0");
	be64(b, 1);
	be64(b, 100);
	be32(b, 2);
	u8(b, 0);
	bytes(b, "hi", 2);
	off[(*n)++] = b->len;
	rec_progress(b, 100);
	off[(*n)++] = b->len;
	rec_eos(b);
	off[(*n)++] = b->len;
	frame(b, 0x02, complete_body, sizeof(complete_body));
	off[(*n)++] = b->len;
	attempt_frame(b, 0x04, 2);
	off[(*n)++] = b->len; /* END */
}

static void test_native_golden(void **state)
{
	static const enum wire_item_kind kinds[] = {
		WIRE_ITEM_HELLO,  WIRE_ITEM_BLOCKS, WIRE_ITEM_RECORD, WIRE_ITEM_RECORD,
		WIRE_ITEM_RECORD, WIRE_ITEM_RECORD, WIRE_ITEM_RECORD, WIRE_ITEM_COMPLETE,
		WIRE_ITEM_COMMIT, WIRE_ITEM_END,
	};
	static const enum wire_rec_kind recs[] = { WIRE_REC_ZERO, WIRE_REC_DATA, WIRE_REC_WRITE,
						   WIRE_REC_PROGRESS, WIRE_REC_EOS };
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;
	uint64_t off[16];
	unsigned n;

	(void)state;
	native_source(&b, off, &n);
	assert_int_equal(n, ARRAY_SIZE(kinds));
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE, wire_membuf_read, &mb, &s), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(wire_stream_next(s, &it), 0);
		assert_int_equal(it.kind, kinds[i]);
		assert_int_equal(it.offset, off[i]);
		if (it.kind == WIRE_ITEM_RECORD)
			assert_int_equal(it.rec.kind, recs[i - 2]);
		switch (i) {
		case 0:
			assert_int_equal(it.hello->version, 3);
			assert_int_equal(it.hello->chunk_size, CHUNK);
			assert_int_equal(it.hello->caps, 0x05);
			assert_int_equal(it.hello->id[0], 0x10);
			assert_int_equal(it.hello->id[15], 0x1f);
			assert_string_equal(it.hello->dev[0].name, "drive0");
			assert_int_equal(it.hello->dev[0].size, 64 << 20);
			assert_int_equal(wire_stream_chunk_size(s), CHUNK);
			break;
		case 3:
			assert_int_equal(it.rec.offset, CHUNK);
			assert_int_equal(it.rec.data[0], 0xa5);
			assert_int_equal(it.rec.data[CHUNK - 1], 0xa5);
			break;
		case 4:
			assert_int_equal(it.rec.seq, 1);
			assert_int_equal(it.rec.offset, 100);
			assert_memory_equal(it.rec.data, "hi", 2);
			break;
		case 5:
			assert_int_equal(it.rec.percent, 100);
			break;
		case 7:
			assert_int_equal(it.complete->attempt, 2);
			assert_int_equal(it.complete->ndev, 1);
			assert_int_equal(it.complete->dev[0].chunks, 2);
			assert_int_equal(it.complete->dev[0].digest[15], 15);
			break;
		case 8:
			assert_int_equal(it.value, 2); /* COMMIT's attempt */
			break;
		}
	}
	assert_int_equal(wire_stream_offset(s), b.len);
	assert_int_equal(wire_stream_format(s), WIRE_STREAM_NATIVE);
	/* END again. */
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_END);
	wire_stream_free(s);
	free(b.p);
}

/* The destination's answers: READY, STATE, SUMS, SYNCED, WACK, ACK, ERROR. */
static void test_native_replies(void **state)
{
	static const uint8_t ready[] = { 0, 0, 0, 2 };
	static const uint8_t synced[] = { 0, 0, 0, 0, 0, 0, 0, 2 };
	static const uint8_t wack[] = { 0, 0, 0, 0, 0, 1, 0, 9 };
	static const uint8_t error[] = { 0, 0, 0, 5, 'd', 'i', 's', 'k', ' ', 'f', 'u', 'l', 'l' };
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;

	(void)state;
	hello(&b, 0, CHUNK);
	frame(&b, 0x81, ready, sizeof(ready));
	state_frame(&b, 1, 0, 1);
	sums_frame(&b, 0, 1, 7, 1);
	frame(&b, 0x84, synced, sizeof(synced));
	frame(&b, 0x85, wack, sizeof(wack));
	attempt_frame(&b, 0x82, 1);
	frame(&b, 0x83, error, sizeof(error));
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_AUTO, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_HELLO);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_READY);
	assert_int_equal(it.value, 2);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_STATE);
	assert_int_equal(it.state->held, NATIVE_HELD_PARTIAL);
	assert_int_equal(it.state->attempt, 0);
	assert_int_equal(it.state->sums, 1);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_SUMS);
	assert_int_equal(it.sums->dev, 0);
	assert_int_equal(it.sums->count, 1);
	assert_int_equal(it.sums->e[0].chunk, 7);
	assert_int_equal(it.sums->e[0].sum[15], 7);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_SYNCED);
	assert_int_equal(it.value, 2);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_WACK);
	assert_int_equal(it.value, 65545);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_ACK);
	assert_int_equal(it.value, 1);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_ERROR);
	assert_int_equal(it.error->err, 5);
	assert_string_equal(it.error->reason, "disk full");
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_END);
	wire_stream_free(s);
	free(b.p);
}

/*
 * The same answers as the source reads them (NATIVE_REPLIES): no HELLO,
 * framed messages from the first byte, only what it allows; a HELLO or a
 * BLOCKS message is refused.
 */
static void test_native_replies_side(void **state)
{
	static const uint8_t ready[] = { 0, 0, 0, 2 };
	static const uint8_t synced[] = { 0, 0, 0, 0, 0, 0, 0, 2 };
	struct buf b = { 0 }, h = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;

	(void)state;
	frame(&b, 0x81, ready, sizeof(ready));
	frame(&b, 0x84, synced, sizeof(synced));
	attempt_frame(&b, 0x82, 1);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_format(s), WIRE_STREAM_NATIVE);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_READY));
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_READY);
	assert_int_equal(it.value, 2);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_SYNCED) | NATIVE_ALLOW(NATIVE_MSG_WACK));
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_SYNCED);
	assert_int_equal(it.value, 2);
	/* ACK was not allowed. */
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_contains(err_msg(), "unexpected");
	wire_stream_free(s);

	/* A HELLO is not a reply. */
	hello(&h, 0, CHUNK);
	mb = (struct wire_membuf){ .p = h.p, .len = h.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	assert_true(wire_stream_next(s, &it) < 0);
	wire_stream_free(s);
	free(h.p);
	free(b.p);
}

/* QEMU 7.2 -M none source, as QEMU-STREAM.md describes it. */
static void qemu_source(struct buf *b, uint64_t *off, unsigned *n)
{
	static const char json[] = "{\"page_size\": 4096, \"devices\": []}";

	*n = 0;
	off[(*n)++] = b->len;
	bytes(b, "QEVM", 4);
	be32(b, 3);
	off[(*n)++] = b->len;
	u8(b, 0x07);
	be32(b, 4);
	bytes(b, "none", 4);
	off[(*n)++] = b->len; /* 2: START block */
	sv_start(b, 0x01, 1, "block", 1);
	off[(*n)++] = b->len;
	rec_eos(b);
	off[(*n)++] = b->len;
	sv_footer(b, 1);
	off[(*n)++] = b->len; /* 5: START ram */
	sv_start(b, 0x01, 2, "ram", 4);
	be64(b, 0x04);
	be64(b, 0x10);
	off[(*n)++] = b->len; /* its footer */
	sv_footer(b, 2);
	off[(*n)++] = b->len; /* 7: PART block */
	sv_short(b, 0x02, 1);
	off[(*n)++] = b->len;
	rec_data(b, "drive0", CHUNK, 0x5a);
	off[(*n)++] = b->len;
	rec_zero(b, "drive0", 0);
	off[(*n)++] = b->len;
	rec_eos(b);
	off[(*n)++] = b->len;
	sv_footer(b, 1);
	off[(*n)++] = b->len; /* 12: PART ram */
	sv_short(b, 0x02, 2);
	be64(b, 0x10);
	off[(*n)++] = b->len;
	sv_footer(b, 2);
	off[(*n)++] = b->len; /* 14: END block */
	sv_short(b, 0x03, 1);
	off[(*n)++] = b->len;
	rec_progress(b, 100);
	off[(*n)++] = b->len;
	rec_eos(b);
	off[(*n)++] = b->len;
	sv_footer(b, 1);
	off[(*n)++] = b->len; /* 18: FULL timer */
	sv_start(b, 0x04, 3, "timer", 2);
	fill(b, 0, 24);
	off[(*n)++] = b->len;
	sv_footer(b, 3);
	off[(*n)++] = b->len; /* 20: FULL globalstate */
	sv_start(b, 0x04, 4, "globalstate", 1);
	be32(b, 8);
	bytes(b, "running", 7);
	fill(b, 0, 93);
	off[(*n)++] = b->len;
	sv_footer(b, 4);
	off[(*n)++] = b->len; /* 22: EOF */
	u8(b, 0x00);
	off[(*n)++] = b->len; /* 23: VMDESCRIPTION */
	u8(b, 0x06);
	be32(b, (uint32_t)strlen(json));
	bytes(b, json, strlen(json));
	off[(*n)++] = b->len - strlen(json); /* END: right after the header */
}

static void test_qemu_golden(void **state)
{
	static const enum wire_item_kind kinds[] = {
		WIRE_ITEM_QEMU_HEADER, WIRE_ITEM_CONFIG,  WIRE_ITEM_SECTION, WIRE_ITEM_RECORD,
		WIRE_ITEM_FOOTER,      WIRE_ITEM_SECTION, WIRE_ITEM_FOOTER,  WIRE_ITEM_SECTION,
		WIRE_ITEM_RECORD,      WIRE_ITEM_RECORD,  WIRE_ITEM_RECORD,  WIRE_ITEM_FOOTER,
		WIRE_ITEM_SECTION,     WIRE_ITEM_FOOTER,  WIRE_ITEM_SECTION, WIRE_ITEM_RECORD,
		WIRE_ITEM_RECORD,      WIRE_ITEM_FOOTER,  WIRE_ITEM_SECTION, WIRE_ITEM_FOOTER,
		WIRE_ITEM_SECTION,     WIRE_ITEM_FOOTER,  WIRE_ITEM_EOF,     WIRE_ITEM_VMDESC,
		WIRE_ITEM_END,
	};
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;
	uint64_t off[32];
	unsigned n;

	(void)state;
	qemu_source(&b, off, &n);
	assert_int_equal(n, ARRAY_SIZE(kinds));
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_QEMU, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_set_qemu_chunk(s, CHUNK), 0);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(wire_stream_next(s, &it), 0);
		if (it.kind != kinds[i] || it.offset != off[i])
			fail_msg("item %u: %s at %llu, expected %s at %llu", i,
				 wire_item_name(it.kind), (unsigned long long)it.offset,
				 wire_item_name(kinds[i]), (unsigned long long)off[i]);
		switch (i) {
		case 0:
			assert_int_equal(it.value, 3);
			break;
		case 1:
			assert_string_equal(it.section.name, "none");
			break;
		case 2:
		case 7:
		case 14:
			assert_string_equal(it.section.name, "block");
			assert_int_equal(it.section.section_id, 1);
			break;
		case 5:
			assert_string_equal(it.section.name, "ram");
			assert_int_equal(it.section.version_id, 4);
			break;
		case 8:
			assert_int_equal(it.rec.kind, WIRE_REC_DATA);
			assert_string_equal(it.rec.name, "drive0");
			assert_int_equal(it.rec.offset, CHUNK);
			assert_int_equal(it.rec.data[CHUNK - 1], 0x5a);
			break;
		case 9:
			assert_int_equal(it.rec.kind, WIRE_REC_ZERO);
			break;
		case 11:
			assert_int_equal(it.section.section_id, 1);
			assert_string_equal(it.section.name, "block");
			break;
		case 15:
			assert_int_equal(it.rec.percent, 100);
			break;
		case 18:
			assert_string_equal(it.section.name, "timer");
			break;
		case 23:
			assert_int_equal(it.value, 34);
			break;
		}
	}
	assert_int_equal(wire_stream_offset(s), b.len);
	wire_stream_free(s);
	free(b.p);
}

/* ---- every truncation point ---------------------------------------------------- */

/* Each prefix ends in END exactly at a top-level boundary (given in
 * ends[]) and otherwise in a truncation error naming where the input
 * ended; the items read are always the golden ones. */
static void truncations(enum wire_stream_format fmt, const struct buf *b, const uint64_t *ends,
			unsigned nends)
{
	struct item_log full[MAX_ITEMS], part[MAX_ITEMS];
	unsigned nfull, npart;

	assert_int_equal(read_all(fmt, b->p, b->len, full, &nfull), 0);
	for (size_t len = 0; len < b->len; len++) {
		bool boundary = false;
		char want[64];
		int r;

		for (unsigned i = 0; i < nends; i++)
			boundary |= ends[i] == len;
		err_clear();
		r = read_all(fmt, b->p, len, part, &npart);
		if (boundary) {
			if (r != 0)
				fail_msg("prefix %zu: %d '%s', expected END", len, r, err_msg());
			assert_int_equal(part[npart - 1].kind, WIRE_ITEM_END);
			npart--;
		} else {
			if (r != -ECONNRESET)
				fail_msg("prefix %zu: %d '%s', expected a truncation", len, r,
					 r ? err_msg() : "END");
			snprintf(want, sizeof(want), "truncated at offset %zu", len);
			assert_contains(err_msg(), want);
			assert_contains(err_msg(), "offset");
		}
		for (unsigned i = 0; i < npart; i++) {
			assert_int_equal(part[i].kind, full[i].kind);
			assert_int_equal(part[i].offset, full[i].offset);
		}
	}
}

static void test_native_truncated(void **state)
{
	struct buf b = { 0 };
	uint64_t off[16], ends[16];
	unsigned n, nends = 0;

	(void)state;
	native_source(&b, off, &n);
	/* Between messages: after HELLO, after the EOS, after COMPLETE. */
	ends[nends++] = off[1];
	ends[nends++] = off[7];
	ends[nends++] = off[8];
	truncations(WIRE_STREAM_NATIVE, &b, ends, nends);
	free(b.p);
}

static void test_qemu_truncated(void **state)
{
	struct buf b = { 0 };
	uint64_t off[32], ends[32];
	unsigned n, nends = 0;

	(void)state;
	qemu_source(&b, off, &n);
	/* Before each top-level item after the header, and after EOF. */
	ends[nends++] = off[1];
	ends[nends++] = off[2];
	ends[nends++] = off[5];
	ends[nends++] = off[7];
	ends[nends++] = off[12];
	ends[nends++] = off[14];
	ends[nends++] = off[18];
	ends[nends++] = off[20];
	ends[nends++] = off[22];
	ends[nends++] = off[23];
	truncations(WIRE_STREAM_QEMU, &b, ends, nends);
	free(b.p);
}

/* ---- refused input ---------------------------------------------------------------- */

/* Read b until an error; it must be err with the message containing
 * each of the needles. */
static void refused(enum wire_stream_format fmt, struct buf *b, int err, const char *needle,
		    const char *needle2)
{
	struct item_log log[MAX_ITEMS];
	unsigned n;
	int r;

	err_clear();
	r = read_all(fmt, b->p, b->len, log, &n);
	if (r != -err)
		fail_msg("got %d '%s', expected %d with '%s'", r, r ? err_msg() : "", -err, needle);
	assert_contains(err_msg(), needle);
	if (needle2)
		assert_contains(err_msg(), needle2);
	free(b->p);
	*b = (struct buf){ 0 };
}

/* Read b to its END without an error. */
static void refused_not(enum wire_stream_format fmt, struct buf *b)
{
	struct item_log log[MAX_ITEMS];
	unsigned n;
	int r;

	err_clear();
	r = read_all(fmt, b->p, b->len, log, &n);
	if (r != 0)
		fail_msg("got %d '%s', expected END", r, err_msg());
	assert_int_equal(log[n - 1].kind, WIRE_ITEM_END);
	free(b->p);
	*b = (struct buf){ 0 };
}

static void test_native_refused(void **state)
{
	struct buf b = { 0 };
	uint8_t body[8] = { 0 };

	(void)state;
	/* A version 1 HELLO (no migration id): refused on its version.  (It
	 * needs 38 bytes for that, v2's fixed part, hence the longer name.) */
	bytes(&b, "BLKMIG\r\n", 8);
	be32(&b, 1);
	be32(&b, 0);
	be32(&b, CHUNK);
	u8(&b, 0);
	u8(&b, 1);
	counted(&b, "virtio-disk0");
	be64(&b, 64 << 20);
	refused(WIRE_STREAM_NATIVE, &b, EPROTONOSUPPORT,
		"handshake: ", "unsupported version 1 (this blkmig speaks 3)");

	/* Chunk size not a power of two. */
	bytes(&b, "BLKMIG\r\n", 8);
	be32(&b, NATIVE_VERSION);
	be32(&b, 0);
	be32(&b, 3000);
	hello_id(&b);
	u8(&b, 0);
	u8(&b, 1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "handshake: ", "chunk");

	/* 65 devices. */
	bytes(&b, "BLKMIG\r\n", 8);
	be32(&b, NATIVE_VERSION);
	be32(&b, 0);
	be32(&b, CHUNK);
	hello_id(&b);
	u8(&b, 0);
	u8(&b, 65);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "handshake: ", "invalid device count 65");

	/* DELTA, VERIFY and FORWARD are known caps; the next bit is not. */
	hello(&b, 0x38, CHUNK);
	refused_not(WIRE_STREAM_NATIVE, &b);
	hello(&b, 0x40, CHUNK);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "handshake: ", "unknown capability bits 0x40");

	/* A framed message longer than NATIVE_MSG_MAX, refused before its
	 * body is read. */
	hello(&b, 0, CHUNK);
	u8(&b, 0x02);
	be32(&b, NATIVE_MSG_MAX + 1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "COMPLETE message at stream offset 53",
		"exceeds the maximum");

	/* An unknown type byte. */
	hello(&b, 0, CHUNK);
	u8(&b, 0x20);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "message at stream offset 53",
		"unknown message type 0x20");

	/* A record with an unknown flag, and one with an empty name. */
	hello(&b, 0, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x81);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54", "unknown flags");
	/* A FENCE where HELLO announced no write lane. */
	hello(&b, NATIVE_CAP_MIRROR, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x40);
	be64(&b, 1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"a FENCE record, which this stream did not announce");
	hello(&b, 0, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x01);
	u8(&b, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54", NULL);

	/* A WRITE record without MIRROR in HELLO. */
	hello(&b, 0, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x10);
	counted(&b, "drive0");
	be64(&b, 1);
	be64(&b, 0);
	be32(&b, 1);
	u8(&b, 1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"a WRITE record, which this stream did not announce");

	/* A WRITE longer than the chunk size. */
	hello(&b, 0x04, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x10);
	counted(&b, "drive0");
	be64(&b, 1);
	be64(&b, 0);
	be32(&b, CHUNK + 1);
	u8(&b, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54", NULL);

	/* COMMIT and ACK: a 4-byte attempt, never 0; the v1 empty body is
	 * refused, as is one byte. */
	hello(&b, 0, CHUNK);
	u8(&b, 0x04);
	be32(&b, 1);
	u8(&b, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "COMMIT message at stream offset 53",
		"commit: body of 1 bytes (expected 4)");
	hello(&b, 0, CHUNK);
	frame(&b, 0x04, NULL, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "COMMIT message at stream offset 53",
		"commit: body of 0 bytes (expected 4)");
	hello(&b, 0, CHUNK);
	attempt_frame(&b, 0x04, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "COMMIT message at stream offset 53",
		"commit: attempt 0 (attempts count from 1)");
	hello(&b, 0, CHUNK);
	frame(&b, 0x82, NULL, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "ACK message at stream offset 53",
		"ack: body of 0 bytes (expected 4)");
	hello(&b, 0, CHUNK);
	attempt_frame(&b, 0x82, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "ACK message at stream offset 53",
		"ack: attempt 0 (attempts count from 1)");

	/* A COMPLETE of attempt 0, and a v1 COMPLETE (no attempt: its ndev
	 * and name are taken for the attempt, then ndev reads 0). */
	hello(&b, 0, CHUNK);
	frame(&b, 0x02, (const uint8_t[]){ 0, 0, 0, 0, 0, 1, 1, 'd', 0, 0, 0, 0, 0, 0, 0, 0,
					   0, 0, 0, 0, 0, 0, 0, 0,   0, 0, 0, 0, 0, 0, 0, 0 },
	      32);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "COMPLETE message at stream offset 53",
		"complete: attempt 0 (attempts count from 1)");
	hello(&b, 0, CHUNK);
	frame(&b, 0x02, (const uint8_t[]){ 0, 1, 1, 'd', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
					   0, 0, 0, 0,	 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
	      28);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "COMPLETE message at stream offset 53",
		"complete: invalid device count 0 (must be 1..64)");

	/* STATE: the held rules. */
	hello(&b, 0, CHUNK);
	state_frame(&b, 4, 0, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "STATE message at stream offset 53",
		"state: unknown held state 4");
	hello(&b, 0, CHUNK);
	state_frame(&b, NATIVE_HELD_AWAITING, 0, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "STATE message at stream offset 53",
		"state: attempt 0 with held state 3");
	hello(&b, 0, CHUNK);
	state_frame(&b, NATIVE_HELD_NONE, 0, 9);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "STATE message at stream offset 53",
		"state: 9 sums offered while holding nothing");
	hello(&b, 0, CHUNK);
	frame(&b, 0x86, body, 8);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "STATE message at stream offset 53",
		"state: body of 8 bytes (expected 16)");

	/* SUMS: descending chunks, a device past 63, a count the body does
	 * not hold. */
	hello(&b, 0, CHUNK);
	sums_frame(&b, 0, 2, 9, (uint64_t)-1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "SUMS message at stream offset 53",
		"sums: chunk 8 after 9 (must ascend)");
	hello(&b, 0, CHUNK);
	sums_frame(&b, 64, 1, 0, 1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "SUMS message at stream offset 53",
		"sums: device 64 (at most 64 devices)");
	hello(&b, 0, CHUNK);
	sums_frame(&b, 0, 2, 0, 1);
	b.p[HELLO_LEN + 5 + 5] = 3; /* be32 count 3, two entries sent */
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "SUMS message at stream offset 53",
		"sums: body of 54 bytes for 3 entries");

	/* VERDICT: more chunks differing than checked. */
	hello(&b, NATIVE_CAP_VERIFY, CHUNK);
	u8(&b, 0x05);
	be32(&b, 2 + 1 + 6 + 16);
	u8(&b, 0);
	u8(&b, 1);
	counted(&b, "drive0");
	be64(&b, 4);
	be64(&b, 5);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "VERDICT message at stream offset 53",
		"verdict: device 0: 5 of 4 chunks differ");

	/* SYNCED with a short body. */
	hello(&b, 0, CHUNK);
	frame(&b, 0x84, body, 4);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "SYNCED message at stream offset 53", NULL);

	/* A QEMU stream where a native one is expected. */
	qemu_head(&b);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "handshake: ", "QEMU migration stream");
}

static void test_native_allow(void **state)
{
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;

	(void)state;
	hello(&b, 0, CHUNK);
	frame(&b, 0x84, (const uint8_t[8]){ 0 }, 8);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE, wire_membuf_read, &mb, &s), 0);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE));
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_contains(err_msg(), "message at stream offset 53");
	assert_contains(err_msg(), "unexpected SYNCED message");
	/* Sticky. */
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_contains(err_msg(), "failed earlier, at offset 53 (reading a message or section)");
	wire_stream_free(s);
	free(b.p);
}

static void test_qemu_refused(void **state)
{
	struct buf b = { 0 };

	(void)state;
	/* Version 2. */
	bytes(&b, "QEVM", 4);
	be32(&b, 2);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream: ", "version 2");

	/* A section before the configuration. */
	bytes(&b, "QEVM", 4);
	be32(&b, 3);
	sv_start(&b, 0x01, 1, "block", 1);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 8",
		"configuration section missing");

	/* EOF without a configuration. */
	bytes(&b, "QEVM", 4);
	be32(&b, 3);
	u8(&b, 0x00);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 8",
		"configuration section missing");

	/* A machine name longer than 255 bytes. */
	bytes(&b, "QEVM", 4);
	be32(&b, 3);
	u8(&b, 0x07);
	be32(&b, 256);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 8", "exceeds");

	/* A section QEMU -M none with block only does not send. */
	qemu_head(&b);
	sv_start(&b, 0x04, 9, "mouse", 1);
	refused(WIRE_STREAM_QEMU, &b, ENOTSUP, "qemu stream at offset 17",
		"section 'mouse' is not supported");

	/* timer with another version. */
	qemu_head(&b);
	sv_start(&b, 0x04, 3, "timer", 7);
	refused(WIRE_STREAM_QEMU, &b, ENOTSUP, "qemu stream at offset 17", "timer");

	/* PART of a section never started. */
	qemu_head(&b);
	sv_short(&b, 0x02, 5);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 17",
		"section id 5 was never started");

	/* A section id started twice. */
	qemu_head(&b);
	sv_start(&b, 0x01, 1, "block", 1);
	rec_eos(&b);
	sv_footer(&b, 1);
	sv_start(&b, 0x01, 1, "block", 1);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 49",
		"section id 1 started twice");

	/* More than WIRE_STREAM_MAX_SECTIONS sections. */
	qemu_head(&b);
	for (unsigned i = 0; i <= WIRE_STREAM_MAX_SECTIONS; i++) {
		sv_start(&b, 0x01, i + 1, "block", 1);
		rec_eos(&b);
		sv_footer(&b, i + 1);
	}
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset", "more than 64 sections");

	/* RAM being migrated. */
	qemu_head(&b);
	sv_start(&b, 0x01, 2, "ram", 4);
	be64(&b, (1ULL << 30) | 0x04);
	refused(WIRE_STREAM_QEMU, &b, ENOTSUP, "section 'ram' at offset 34", "RAM");

	/* A missing footer, and a footer for another section. */
	qemu_head(&b);
	sv_start(&b, 0x01, 1, "block", 1);
	rec_eos(&b);
	u8(&b, 0x01);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 44", "footer");
	qemu_head(&b);
	sv_start(&b, 0x01, 1, "block", 1);
	rec_eos(&b);
	sv_footer(&b, 7);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 44", "footer");

	/* A WRITE record: never in a QEMU stream. */
	qemu_head(&b);
	sv_start(&b, 0x01, 1, "block", 1);
	be64(&b, 0x10);
	counted(&b, "drive0");
	be64(&b, 1);
	be64(&b, 0);
	be32(&b, 1);
	u8(&b, 1);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "record at stream offset 36",
		"a WRITE record, which this stream did not announce");

	/* A misaligned DATA record. */
	qemu_head(&b);
	sv_start(&b, 0x01, 1, "block", 1);
	be64(&b, 0x200 | 0x01);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "record at stream offset 36", "not aligned");

	/* VMDESCRIPTION before EOF, and one too large after it. */
	qemu_head(&b);
	u8(&b, 0x06);
	be32(&b, 2);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 17",
		"unexpected VMDESCRIPTION");
	qemu_head(&b);
	u8(&b, 0x00);
	u8(&b, 0x06);
	be32(&b, SAVEVM_VMDESC_MAX + 1);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 18", "VMDESCRIPTION");

	/* Something else after EOF. */
	qemu_head(&b);
	u8(&b, 0x00);
	sv_short(&b, 0x02, 1);
	refused(WIRE_STREAM_QEMU, &b, EBADMSG, "qemu stream at offset 18", "after EOF");
}

static void test_auto(void **state)
{
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;

	(void)state;
	bytes(&b, "GARBAGE!", 8);
	refused(WIRE_STREAM_AUTO, &b, EBADMSG, "neither a blkmig native stream nor a QEMU", NULL);

	qemu_head(&b);
	u8(&b, 0x00);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_AUTO, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_format(s), WIRE_STREAM_AUTO);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_QEMU_HEADER);
	assert_int_equal(wire_stream_format(s), WIRE_STREAM_QEMU);
	assert_int_equal(wire_stream_chunk_size(s), WIRE_QEMU_CHUNK_SIZE);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_CONFIG);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_EOF);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_END);
	assert_int_equal(wire_stream_set_qemu_chunk(s, 3000), -EINVAL);
	wire_stream_free(s);
	wire_stream_free(NULL);
	free(b.p);

	assert_string_equal(wire_item_name(WIRE_ITEM_VMDESC), "VMDESC");
	assert_string_equal(wire_item_name((enum wire_item_kind)99), "unknown");
}

/* A read callback's own error passes through with the offset named. */
static int failing_read(void *user, void *buf, size_t len, size_t *got)
{
	(void)user;
	(void)buf;
	(void)len;
	*got = 0;
	return err_set(EIO, "disk on fire");
}

static void test_read_error(void **state)
{
	struct wire_stream *s;
	struct wire_item it;

	(void)state;
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE, failing_read, NULL, &s), 0);
	assert_int_equal(wire_stream_next(s, &it), -EIO);
	assert_contains(err_msg(), "handshake: disk on fire");
	wire_stream_free(s);
}

/* ---- protocol v2: STATE, SUMS, VERDICT, attempts ----------------------------------- */

/* Read the next item, which must be of kind k. */
static void next_is(struct wire_stream *s, struct wire_item *it, enum wire_item_kind k)
{
	int r = wire_stream_next(s, it);

	if (r < 0)
		fail_msg("expected %s, got %d '%s'", wire_item_name(k), r, err_msg());
	if (it->kind != k)
		fail_msg("expected %s, got %s", wire_item_name(k), wire_item_name(it->kind));
}

/*
 * The destination's side of a delta sync as the source reads it
 * (NATIVE_REPLIES), masked as the source masks it: READY, STATE (ALL, 2731
 * sums), SUMS of NATIVE_SUMS_MAX entries for device 0 and one more for
 * device 1, SYNCED, ACK 1.  A SUMS where the STATE belongs is refused.
 */
static void delta_replies(struct buf *b, uint64_t *off, unsigned *n)
{
	static const uint8_t ready[] = { 0, 0, 0, 2 };
	static const uint8_t synced[] = { 0, 0, 0, 0, 0, 0, 0, 1 };

	*n = 0;
	off[(*n)++] = b->len;
	frame(b, 0x81, ready, sizeof(ready));
	off[(*n)++] = b->len;
	state_frame(b, NATIVE_HELD_ALL, 0, NATIVE_SUMS_MAX + 1);
	off[(*n)++] = b->len;
	sums_frame(b, 0, NATIVE_SUMS_MAX, 0, 1);
	off[(*n)++] = b->len;
	sums_frame(b, 1, 1, 41, 1);
	off[(*n)++] = b->len;
	frame(b, 0x84, synced, sizeof(synced));
	off[(*n)++] = b->len;
	attempt_frame(b, 0x82, 1);
	off[(*n)++] = b->len; /* END */
}

static void test_native_state_sums(void **state)
{
	const uint64_t err = NATIVE_ALLOW(NATIVE_MSG_ERROR);
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;
	uint64_t off[8];
	unsigned n;

	(void)state;
	delta_replies(&b, off, &n);
	assert_int_equal(off[3] - off[2], NATIVE_FRAME_HDR + 6 + NATIVE_SUMS_MAX * 24);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_READY) | err);
	next_is(s, &it, WIRE_ITEM_READY);
	assert_int_equal(it.value, 2);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_STATE) | err);
	next_is(s, &it, WIRE_ITEM_STATE);
	assert_int_equal(it.offset, off[1]);
	assert_int_equal(it.state->held, NATIVE_HELD_ALL);
	assert_int_equal(it.state->attempt, 0);
	assert_int_equal(it.state->sums, NATIVE_SUMS_MAX + 1);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_SUMS) | err);
	next_is(s, &it, WIRE_ITEM_SUMS);
	assert_int_equal(it.offset, off[2]);
	assert_int_equal(it.sums->dev, 0);
	assert_int_equal(it.sums->count, NATIVE_SUMS_MAX);
	for (uint32_t i = 0; i < NATIVE_SUMS_MAX; i++) {
		assert_int_equal(it.sums->e[i].chunk, i);
		assert_int_equal(it.sums->e[i].sum[0], (uint8_t)i);
		assert_int_equal(it.sums->e[i].sum[15], (uint8_t)i);
	}
	next_is(s, &it, WIRE_ITEM_SUMS);
	assert_int_equal(it.offset, off[3]);
	assert_int_equal(it.sums->dev, 1);
	assert_int_equal(it.sums->count, 1);
	assert_int_equal(it.sums->e[0].chunk, 41);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_SYNCED) | NATIVE_ALLOW(NATIVE_MSG_WACK) | err);
	next_is(s, &it, WIRE_ITEM_SYNCED);
	assert_int_equal(it.value, 1);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_ACK) | err);
	next_is(s, &it, WIRE_ITEM_ACK);
	assert_int_equal(it.value, 1);
	next_is(s, &it, WIRE_ITEM_END);
	assert_int_equal(wire_stream_offset(s), b.len);
	wire_stream_free(s);

	/* SUMS before STATE: not what the source allows. */
	mb = (struct wire_membuf){ .p = b.p + off[2], .len = b.len - off[2] };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_STATE) | err);
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_contains(err_msg(), "message at stream offset 0: frame: unexpected SUMS message");
	wire_stream_free(s);
	free(b.p);
	b = (struct buf){ 0 };

	/* A destination restarted after its ACK of attempt 3: AWAITING, no
	 * sums, then the COMMIT it waits for is the source's business. */
	state_frame(&b, NATIVE_HELD_AWAITING, 3, 0);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	next_is(s, &it, WIRE_ITEM_STATE);
	assert_int_equal(it.state->held, NATIVE_HELD_AWAITING);
	assert_int_equal(it.state->attempt, 3);
	assert_int_equal(it.state->sums, 0);
	next_is(s, &it, WIRE_ITEM_END);
	wire_stream_free(s);
	free(b.p);
}

/* Every prefix of the delta replies, including a SUMS cut anywhere in its
 * 65,531 bytes: END between messages, a truncation error elsewhere. */
static void test_native_sums_truncated(void **state)
{
	struct buf b = { 0 };
	uint64_t off[8];
	unsigned n;
	struct item_log log[MAX_ITEMS];
	unsigned nlog;

	(void)state;
	/* The small one, every byte: READY, STATE, SUMS (3 entries), ACK. */
	frame(&b, 0x81, (const uint8_t[]){ 0, 0, 0, 2 }, 4);
	off[0] = b.len;
	state_frame(&b, NATIVE_HELD_PARTIAL, 0, 3);
	off[1] = b.len;
	sums_frame(&b, 2, 3, 10, 5);
	off[2] = b.len;
	attempt_frame(&b, 0x82, 4);
	off[3] = b.len;
	{
		const uint64_t ends[] = { 0, 9, off[0], off[1], off[2] };

		truncations(WIRE_STREAM_NATIVE_REPLIES, &b, ends, ARRAY_SIZE(ends));
	}
	/* The SUMS, cut in its header and in its last entry, named. */
	err_clear();
	assert_int_equal(read_all(WIRE_STREAM_NATIVE_REPLIES, b.p, off[1] + 3, log, &nlog),
			 -ECONNRESET);
	assert_contains(err_msg(), "message at stream offset 30");
	assert_contains(err_msg(), "truncated at offset 33");
	assert_int_equal(nlog, 2);
	assert_int_equal(log[1].kind, WIRE_ITEM_STATE);
	err_clear();
	assert_int_equal(read_all(WIRE_STREAM_NATIVE_REPLIES, b.p, off[2] - 1, log, &nlog),
			 -ECONNRESET);
	assert_contains(err_msg(), "SUMS message at stream offset 30");
	assert_contains(err_msg(), "truncated at offset 112");
	free(b.p);
	b = (struct buf){ 0 };

	/* The largest SUMS, cut at a few places inside it. */
	delta_replies(&b, off, &n);
	for (uint64_t cut = off[2] + 1; cut < off[3]; cut += 4093) {
		char want[64];

		err_clear();
		assert_int_equal(read_all(WIRE_STREAM_NATIVE_REPLIES, b.p, cut, log, &nlog),
				 -ECONNRESET);
		snprintf(want, sizeof(want), "truncated at offset %llu", (unsigned long long)cut);
		assert_contains(err_msg(), want);
		assert_int_equal(nlog, 2);
	}
	free(b.p);
}

/*
 * A verify-only source: HELLO (VERIFY), an empty bulk pass and an empty
 * re-compare pass (EOS only each), VERDICT.  And a source whose attempt 1
 * was abandoned after ACK: more BLOCKS, COMPLETE 2, COMMIT 2.
 */
static void test_native_verify_and_attempts(void **state)
{
	/* clang-format off */
	static const uint8_t verdict[] = {
		0x00, 0x01, 0x06, 'd', 'r', 'i', 'v', 'e', '0',
		0, 0, 0, 0, 0, 0, 0x40, 0x00,                   /* 16384 checked */
		0, 0, 0, 0, 0, 0, 0x00, 0x02,                   /* 2 differ */
	};
	static const uint8_t complete1[] = {
		0, 0, 0, 1, 0, 1, 6, 'd', 'r', 'i', 'v', 'e', '0',
		0, 0, 0, 0, 0, 0, 0x40, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	/* clang-format on */
	uint8_t complete2[sizeof(complete1)];
	struct buf b = { 0 };
	struct wire_membuf mb;
	struct wire_stream *s;
	struct wire_item it;
	uint64_t at;

	(void)state;
	hello(&b, NATIVE_CAP_VERIFY, CHUNK);
	u8(&b, 0x01);
	rec_eos(&b);
	u8(&b, 0x01);
	rec_eos(&b);
	at = b.len;
	frame(&b, 0x05, verdict, sizeof(verdict));
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE, wire_membuf_read, &mb, &s), 0);
	next_is(s, &it, WIRE_ITEM_HELLO);
	assert_int_equal(it.hello->caps, NATIVE_CAP_VERIFY);
	for (int pass = 0; pass < 2; pass++) {
		next_is(s, &it, WIRE_ITEM_BLOCKS);
		next_is(s, &it, WIRE_ITEM_RECORD);
		assert_int_equal(it.rec.kind, WIRE_REC_EOS);
	}
	next_is(s, &it, WIRE_ITEM_VERDICT);
	assert_int_equal(it.offset, at);
	assert_int_equal(it.verdict->ndev, 1);
	assert_string_equal(it.verdict->dev[0].name, "drive0");
	assert_int_equal(it.verdict->dev[0].checked, 16384);
	assert_int_equal(it.verdict->dev[0].differing, 2);
	next_is(s, &it, WIRE_ITEM_END);
	wire_stream_free(s);
	free(b.p);
	b = (struct buf){ 0 };

	memcpy(complete2, complete1, sizeof(complete1));
	complete2[3] = 2;
	hello(&b, 0, CHUNK);
	u8(&b, 0x01);
	rec_eos(&b);
	frame(&b, 0x02, complete1, sizeof(complete1));
	u8(&b, 0x01);
	rec_data(&b, "drive0", 0, 0x77);
	rec_eos(&b);
	frame(&b, 0x02, complete2, sizeof(complete2));
	attempt_frame(&b, 0x04, 2);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE, wire_membuf_read, &mb, &s), 0);
	next_is(s, &it, WIRE_ITEM_HELLO);
	next_is(s, &it, WIRE_ITEM_BLOCKS);
	next_is(s, &it, WIRE_ITEM_RECORD);
	next_is(s, &it, WIRE_ITEM_COMPLETE);
	assert_int_equal(it.complete->attempt, 1);
	assert_int_equal(it.complete->dev[0].chunks, 0x4000);
	next_is(s, &it, WIRE_ITEM_BLOCKS);
	next_is(s, &it, WIRE_ITEM_RECORD);
	assert_int_equal(it.rec.kind, WIRE_REC_DATA);
	next_is(s, &it, WIRE_ITEM_RECORD);
	assert_int_equal(it.rec.kind, WIRE_REC_EOS);
	next_is(s, &it, WIRE_ITEM_COMPLETE);
	assert_int_equal(it.complete->attempt, 2);
	next_is(s, &it, WIRE_ITEM_COMMIT);
	assert_int_equal(it.value, 2);
	next_is(s, &it, WIRE_ITEM_END);
	wire_stream_free(s);
	free(b.p);

	assert_string_equal(wire_item_name(WIRE_ITEM_STATE), "STATE");
	assert_string_equal(wire_item_name(WIRE_ITEM_SUMS), "SUMS");
	assert_string_equal(wire_item_name(WIRE_ITEM_VERDICT), "VERDICT");
}

/*
 * FORWARD: the destination's EXPORT right after READY, as the source reads
 * and masks it (golden bytes: port 10809, "dst-1.example"); truncated
 * anywhere; a lying body refused with its offset; an EXPORT where the
 * source expects STATE (not asked for, or a second one) refused by the
 * mask.
 */
static void test_native_export(void **state)
{
	/* clang-format off */
	static const uint8_t golden[] = {
		0x81, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x03,   /* READY 3 */
		0x89, 0x00, 0x00, 0x00, 0x11,                           /* EXPORT, 17 bytes */
		0x2a, 0x39, 0x00, 0x0d,                                 /* 10809, 13 bytes */
		'd', 's', 't', '-', '1', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e',
		0x86, 0x00, 0x00, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	/* clang-format on */
	const uint64_t err = NATIVE_ALLOW(NATIVE_MSG_ERROR);
	const uint64_t ends[] = { 0, 9, 31, sizeof(golden) };
	struct wire_membuf mb = { .p = golden, .len = sizeof(golden) };
	struct buf b = { 0 };
	struct wire_stream *s;
	struct wire_item it;

	(void)state;
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_READY) | err);
	next_is(s, &it, WIRE_ITEM_READY);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_EXPORT) | err);
	next_is(s, &it, WIRE_ITEM_EXPORT);
	assert_int_equal(it.offset, 9);
	assert_int_equal(it.export->port, 10809);
	assert_string_equal(it.export->host, "dst-1.example");
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_STATE) | err);
	next_is(s, &it, WIRE_ITEM_STATE);
	assert_int_equal(it.offset, 31);
	next_is(s, &it, WIRE_ITEM_END);
	wire_stream_free(s);
	b.p = (uint8_t *)golden;
	b.len = sizeof(golden);
	truncations(WIRE_STREAM_NATIVE_REPLIES, &b, ends, ARRAY_SIZE(ends));
	b = (struct buf){ 0 };

	/* Where the source expects STATE: an EXPORT it did not ask for, or a
	 * second one. */
	mb = (struct wire_membuf){ .p = golden + 9, .len = sizeof(golden) - 9 };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	wire_stream_allow(s, NATIVE_ALLOW(NATIVE_MSG_STATE) | err);
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_contains(err_msg(), "message at stream offset 0: frame: unexpected EXPORT message");
	wire_stream_free(s);

	/* A host longer than the body says, and a bad byte: the decoder's
	 * message, behind the message's offset. */
	frame(&b, 0x81, "\0\0\0\x02", 4);
	frame(&b, 0x89,
	      "\x2a\x39\0\x20"
	      "h",
	      5);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	next_is(s, &it, WIRE_ITEM_READY);
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_string_equal(err_msg(), "EXPORT message at stream offset 9: export: body of 5 bytes "
				       "for a host of 32 bytes");
	wire_stream_free(s);
	b.len = 0;
	frame(&b, 0x89,
	      "\x2a\x39\0\x03"
	      "a\nb",
	      7);
	mb = (struct wire_membuf){ .p = b.p, .len = b.len };
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_next(s, &it), -EBADMSG);
	assert_string_equal(err_msg(), "EXPORT message at stream offset 0: export: host "
				       "'a\\x0ab' has byte 0x0a at 1 (only [A-Za-z0-9.:_-] "
				       "are allowed)");
	wire_stream_free(s);
	free(b.p);
	assert_string_equal(wire_item_name(WIRE_ITEM_EXPORT), "EXPORT");
}

/* ---- compressed chunks ---------------------------------------------------------- */

#define CAP_COMPRESS 0x80

/* A zstd frame of n bytes of a text-like pattern, with or without its
 * content size, in *frame (caller frees); its length. */
static size_t make_frame(size_t n, bool with_size, uint8_t **frame)
{
	uint8_t *src = malloc(n);
	size_t cap = ZSTD_compressBound(n), len;
	ZSTD_CCtx *c = ZSTD_createCCtx();

	assert_non_null(src);
	assert_non_null(c);
	for (size_t i = 0; i < n; i++)
		src[i] = (uint8_t)("the quick brown fox "[i % 20] + (i / 512) % 3);
	*frame = malloc(cap + 1);
	assert_non_null(*frame);
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, with_size)));
	len = ZSTD_compress2(c, *frame, cap, src, n);
	assert_false(ZSTD_isError(len));
	ZSTD_freeCCtx(c);
	free(src);
	return len;
}

static void rec_zstd(struct buf *b, uint64_t off, const uint8_t *frame, uint32_t len)
{
	be64(b, off | 0x21);
	counted(b, "drive0");
	be32(b, len);
	bytes(b, frame, len);
}

/* A compressed chunk is yielded as the DATA record it stands for. */
static void test_native_zstd(void **state)
{
	struct wire_membuf mb = { 0 };
	struct wire_stream *s;
	struct wire_item it;
	struct buf b = { 0 };
	uint8_t *frame, *want;
	size_t flen = make_frame(CHUNK, true, &frame), wlen;

	(void)state;
	wlen = make_frame(CHUNK, true, &want); /* the same bytes, to compare */
	assert_int_equal(wlen, flen);
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	rec_zstd(&b, CHUNK, frame, (uint32_t)flen);
	rec_zstd(&b, 0, frame, (uint32_t)flen); /* the context is reused */
	rec_eos(&b);
	mb.p = b.p;
	mb.len = b.len;
	assert_int_equal(wire_stream_new(WIRE_STREAM_NATIVE, wire_membuf_read, &mb, &s), 0);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_HELLO);
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.kind, WIRE_ITEM_BLOCKS);
	for (unsigned i = 0; i < 2; i++) {
		uint8_t *src = malloc(CHUNK);

		assert_int_equal(wire_stream_next(s, &it), 0);
		assert_int_equal(it.kind, WIRE_ITEM_RECORD);
		assert_int_equal(it.rec.kind, WIRE_REC_DATA);
		assert_int_equal(it.rec.offset, i ? 0 : CHUNK);
		assert_string_equal(it.rec.name, "drive0");
		assert_int_equal(it.packed, flen);
		for (size_t k = 0; k < CHUNK; k++)
			src[k] = (uint8_t)("the quick brown fox "[k % 20] + (k / 512) % 3);
		assert_memory_equal(it.rec.data, src, CHUNK);
		free(src);
	}
	assert_int_equal(wire_stream_next(s, &it), 0);
	assert_int_equal(it.rec.kind, WIRE_REC_EOS);
	assert_int_equal(it.packed, 0);
	wire_stream_free(s);
	free(b.p);
	free(want);
	free(frame);
}

/* Each way a compressed chunk can be wrong: one error naming its offset. */
static void test_native_zstd_refused(void **state)
{
	uint8_t *frame, *small, *nosize;
	size_t flen = make_frame(CHUNK, true, &frame);
	size_t slen = make_frame(CHUNK / 2, true, &small);
	size_t nlen = make_frame(CHUNK, false, &nosize);
	struct buf b = { 0 };

	(void)state;
	/* Not announced in HELLO. */
	hello(&b, 0, CHUNK);
	u8(&b, 0x01);
	rec_zstd(&b, 0, frame, (uint32_t)flen);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"a compressed chunk, which this stream did not announce");
	/* In a QEMU stream: never (it announces nothing). */

	/* Bounds, before the frame is read: 0 bytes, a whole chunk. */
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x21);
	counted(&b, "drive0");
	be32(&b, 0);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"compressed chunk of 0 bytes (must be 1..4095");
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x21);
	counted(&b, "drive0");
	be32(&b, CHUNK);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"compressed chunk of 4096 bytes (must be 1..4095");

	/* Not a zstd frame. */
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	frame[0] ^= 0xff;
	rec_zstd(&b, 0, frame, (uint32_t)flen);
	frame[0] ^= 0xff;
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"the compressed chunk is not a zstd frame");

	/* A frame of half a chunk, and one that does not state its size. */
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	rec_zstd(&b, 0, small, (uint32_t)slen);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"the compressed chunk is smaller than a chunk (a chunk is 4096 bytes)");
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	rec_zstd(&b, 0, nosize, (uint32_t)nlen);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"the compressed chunk does not state its size");

	/* Bytes after the frame. */
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x21);
	counted(&b, "drive0");
	be32(&b, (uint32_t)flen + 3);
	bytes(&b, frame, flen);
	bytes(&b, "xyz", 3);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"3 bytes follow the compressed chunk's frame");

	/* A frame cut short, and one with its blocks damaged. */
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	rec_zstd(&b, 0, frame, (uint32_t)flen - 1);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54",
		"corrupt compressed chunk");
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	memset(frame + 6, 0xff, 4); /* the first block's header */
	rec_zstd(&b, 0, frame, (uint32_t)flen);
	refused(WIRE_STREAM_NATIVE, &b, EBADMSG, "record at stream offset 54", "compressed chunk");

	/* Truncated inside the frame: a truncation, not a decompression. */
	hello(&b, CAP_COMPRESS, CHUNK);
	u8(&b, 0x01);
	be64(&b, 0x21);
	counted(&b, "drive0");
	be32(&b, (uint32_t)flen);
	bytes(&b, frame, flen / 2);
	refused(WIRE_STREAM_NATIVE, &b, ECONNRESET, "record at stream offset 54", "truncated");
	free(frame);
	free(small);
	free(nosize);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_native_golden),
		cmocka_unit_test(test_native_replies),
		cmocka_unit_test(test_native_replies_side),
		cmocka_unit_test(test_qemu_golden),
		cmocka_unit_test(test_native_truncated),
		cmocka_unit_test(test_qemu_truncated),
		cmocka_unit_test(test_native_refused),
		cmocka_unit_test(test_native_allow),
		cmocka_unit_test(test_qemu_refused),
		cmocka_unit_test(test_auto),
		cmocka_unit_test(test_read_error),
		cmocka_unit_test(test_native_state_sums),
		cmocka_unit_test(test_native_sums_truncated),
		cmocka_unit_test(test_native_verify_and_attempts),
		cmocka_unit_test(test_native_export),
		cmocka_unit_test(test_native_zstd),
		cmocka_unit_test(test_native_zstd_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
