/* SPDX-License-Identifier: MIT */
/*
 * The stream reader (see stream.h): a state machine that pulls bytes
 * through the read callback, hands them to the pure decoders in native.c,
 * record.c and savevm.c, and walks what they decode: which item may come
 * next, section ids bound to idstrs, where each payload ends.
 *
 * Every item is read the same way (pull()): ask the decoder, read as many
 * more bytes as it says it needs, and refuse a need larger than the buffer
 * meant for that item before reading it.  Buffers are sized by the limits
 * of the format (NATIVE_HELLO_MAX, NATIVE_MSG_MAX, SAVEVM_SECTION_HDR_MAX,
 * one record of the negotiated chunk size), never by a length from the
 * wire.
 */
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/error.h"
#include "common/util.h"

/* In reading order.  Each state names what the next call reads. */
enum st_state {
	ST_START,	/* the magic: HELLO or the QEMU file header */
	ST_TOP,		/* native: a message; QEMU: a section header, EOF */
	ST_RECORDS,	/* block records up to EOS (BLOCKS run or "block" payload) */
	ST_PAYLOAD,	/* QEMU: a "ram" or fixed-size payload, then the footer */
	ST_FOOTER,	/* QEMU: the footer after a "block" payload */
	ST_AFTER_EOF,	/* QEMU: VMDESCRIPTION, or the end */
	ST_VMDESC_BODY, /* QEMU: the VMDESCRIPTION JSON, skipped */
	ST_DONE,	/* END returned; it is returned again */
	ST_FAILED,	/* an error was returned; it is returned again */
};

static const char *const state_names[] = {
	[ST_START] = "the start",
	[ST_TOP] = "a message or section",
	[ST_RECORDS] = "a block record",
	[ST_PAYLOAD] = "a section payload",
	[ST_FOOTER] = "a section footer",
	[ST_AFTER_EOF] = "what follows EOF",
	[ST_VMDESC_BODY] = "the VMDESCRIPTION",
	[ST_DONE] = "the end",
	[ST_FAILED] = "a failed stream",
};

/* What a QEMU section's payload is, decided from its idstr. */
enum payload { PAY_BLOCK, PAY_RAM, PAY_SKIP };

struct binding {
	uint32_t id;
	uint32_t version;
	char name[SAVEVM_NAME_MAX + 1];
};

struct wire_stream {
	enum wire_stream_format fmt;
	enum st_state state;
	wire_read_fn read;
	void *user;
	uint64_t off;		 /* bytes consumed */
	int err;		 /* the sticky error, negative */
	uint64_t failed;	 /* where it happened */
	enum st_state failed_in; /* reading what */
	uint64_t allowed;
	uint32_t chunk;	     /* payload of a DATA record; 0 until known */
	uint32_t qemu_chunk; /* what a QEMU stream uses */

	/* QEMU walk */
	bool config;
	struct binding sec[WIRE_STREAM_MAX_SECTIONS];
	unsigned nsec;
	struct savevm_section cur; /* the section whose payload is being read */
	enum payload cur_pay;
	uint32_t cur_skip; /* PAY_SKIP: payload bytes */
	uint32_t vmdesc;   /* JSON bytes left to skip */

	/* buffers, sized by the formats' limits */
	uint8_t *rec; /* one record: header + chunk */
	size_t rec_cap;
	/* ZSTD records: the chunk they decompress to, and the context, made
	 * on the first one and reused for the connection. */
	uint8_t *unz;
	ZSTD_DCtx *dctx;
	struct wire_record cur_rec;
	struct native_hello hello;
	struct native_complete complete;
	struct native_error error;
	struct native_state st;
	struct native_sums *sums; /* allocated on the first SUMS */
	struct native_verdict verdict;
	struct native_export export;
	struct native_lanes lanes;
	uint8_t hbuf[NATIVE_HELLO_MAX]; /* HELLO, section headers, footers */
	uint8_t body[NATIVE_MSG_MAX];	/* framed bodies; scratch for skipping */
};

#define ALL_NATIVE                                                                                 \
	(NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |                     \
	 NATIVE_ALLOW(NATIVE_MSG_ABORT) | NATIVE_ALLOW(NATIVE_MSG_COMMIT) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_READY) | NATIVE_ALLOW(NATIVE_MSG_ACK) |                           \
	 NATIVE_ALLOW(NATIVE_MSG_ERROR) | NATIVE_ALLOW(NATIVE_MSG_SYNCED) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_WACK) | NATIVE_ALLOW(NATIVE_MSG_VERDICT) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_STATE) | NATIVE_ALLOW(NATIVE_MSG_SUMS) |                          \
	 NATIVE_ALLOW(NATIVE_MSG_DONE) | NATIVE_ALLOW(NATIVE_MSG_EXPORT) |                         \
	 NATIVE_ALLOW(NATIVE_MSG_LANES))

int wire_stream_new(enum wire_stream_format format, wire_read_fn read, void *user,
		    struct wire_stream **out)
{
	struct wire_stream *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return err_set(ENOMEM, "no memory for a stream reader");
	s->fmt = format;
	if (format == WIRE_STREAM_NATIVE_REPLIES) {
		s->fmt = WIRE_STREAM_NATIVE;
		s->state = ST_TOP;
	}
	s->read = read;
	s->user = user;
	s->allowed = ALL_NATIVE;
	s->qemu_chunk = WIRE_QEMU_CHUNK_SIZE;
	*out = s;
	return 0;
}

void wire_stream_free(struct wire_stream *s)
{
	if (!s)
		return;
	free(s->rec);
	free(s->unz);
	ZSTD_freeDCtx(s->dctx);
	free(s->sums);
	free(s);
}

void wire_stream_allow(struct wire_stream *s, uint64_t allowed)
{
	s->allowed = allowed;
}

int wire_stream_set_qemu_chunk(struct wire_stream *s, uint32_t chunk_size)
{
	if (!wire_chunk_size_valid(chunk_size))
		return err_set(EINVAL, "stream: invalid chunk size %u", chunk_size);
	s->qemu_chunk = chunk_size;
	return 0;
}

uint64_t wire_stream_offset(const struct wire_stream *s)
{
	return s->off;
}

enum wire_stream_format wire_stream_format(const struct wire_stream *s)
{
	return s->fmt;
}

uint32_t wire_stream_chunk_size(const struct wire_stream *s)
{
	return s->chunk;
}

const char *wire_item_name(enum wire_item_kind k)
{
	static const char *const names[] = {
		[WIRE_ITEM_END] = "END",	   [WIRE_ITEM_RECORD] = "RECORD",
		[WIRE_ITEM_HELLO] = "HELLO",	   [WIRE_ITEM_BLOCKS] = "BLOCKS",
		[WIRE_ITEM_COMPLETE] = "COMPLETE", [WIRE_ITEM_ABORT] = "ABORT",
		[WIRE_ITEM_COMMIT] = "COMMIT",	   [WIRE_ITEM_READY] = "READY",
		[WIRE_ITEM_ACK] = "ACK",	   [WIRE_ITEM_ERROR] = "ERROR",
		[WIRE_ITEM_SYNCED] = "SYNCED",	   [WIRE_ITEM_WACK] = "WACK",
		[WIRE_ITEM_STATE] = "STATE",	   [WIRE_ITEM_SUMS] = "SUMS",
		[WIRE_ITEM_VERDICT] = "VERDICT",   [WIRE_ITEM_DONE] = "DONE",
		[WIRE_ITEM_EXPORT] = "EXPORT",	   [WIRE_ITEM_QEMU_HEADER] = "QEMU_HEADER",
		[WIRE_ITEM_CONFIG] = "CONFIG",	   [WIRE_ITEM_SECTION] = "SECTION",
		[WIRE_ITEM_FOOTER] = "FOOTER",	   [WIRE_ITEM_EOF] = "EOF",
		[WIRE_ITEM_VMDESC] = "VMDESC",	   [WIRE_ITEM_LANES] = "LANES",
	};

	if ((unsigned)k < ARRAY_SIZE(names) && names[k])
		return names[k];
	return "unknown";
}

int wire_membuf_read(void *user, void *buf, size_t len, size_t *got)
{
	struct wire_membuf *m = user;
	size_t n = MIN(len, m->len - m->pos);

	if (n)
		memcpy(buf, m->p + m->pos, n);
	m->pos += n;
	*got = n;
	if (n < len)
		return err_set(ECONNRESET, "truncated at offset %zu (%zu of %zu bytes missing)",
			       m->len, len - n, len);
	return 0;
}

/* ---- reading ------------------------------------------------------------------ */

static int rd(struct wire_stream *s, void *buf, size_t len, size_t *got)
{
	size_t n = 0;
	int r = len ? s->read(s->user, buf, len, &n) : 0;

	s->off += n;
	if (got)
		*got = n;
	return r;
}

/* Read and drop len bytes. */
static int skip(struct wire_stream *s, uint64_t len)
{
	while (len > 0) {
		size_t n = (size_t)MIN(len, (uint64_t)sizeof(s->body));
		int r = rd(s, s->body, n, NULL);

		if (r < 0)
			return r;
		len -= n;
	}
	return 0;
}

typedef int (*dec_fn)(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used);

#define PULL_END 1 /* pull(): the input ended before the item's first byte */

/*
 * Read one item into buf (capacity cap), of which 'have' bytes are there
 * already: ask dec, read what it says it needs, repeat.  0 when decoded;
 * PULL_END when 'boundary' and the input ended before the first byte; the
 * decoder's or the callback's error otherwise (unprefixed).
 */
static int pull(struct wire_stream *s, uint8_t *buf, size_t cap, size_t have, size_t need,
		dec_fn dec, bool boundary)
{
	for (;;) {
		size_t got = 0;
		int r;

		if (need > cap)
			return err_set(EBADMSG, "an item of %zu bytes, more than the %zu allowed",
				       need, cap);
		r = rd(s, buf + have, need - have, &got);
		if (r == -ECONNRESET && boundary && have == 0 && got == 0)
			return PULL_END;
		if (r < 0)
			return r;
		have = need;
		r = dec(s, buf, have, &need);
		if (r != -EAGAIN)
			return r;
	}
}

static int dec_hello(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used)
{
	return native_hello_decode(buf, len, &s->hello, used);
}

static int dec_header(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used)
{
	(void)s;
	return savevm_header_decode(buf, len, used);
}

static int dec_section(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used)
{
	return savevm_section_decode(buf, len, &s->cur, used);
}

static int dec_footer(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used)
{
	return savevm_footer_decode(buf, len, s->cur.section_id, s->cur.name, used);
}

static int dec_ram(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used)
{
	return savevm_ram_decode(buf, len, s->cur.type == SAVEVM_START, used);
}

static int dec_record(struct wire_stream *s, const uint8_t *buf, size_t len, size_t *used)
{
	return wire_rec_decode(buf, len, s->chunk, &s->cur_rec, used);
}

/* ---- the start: which format, HELLO or the QEMU header ----------------------------- */

static int read_start(struct wire_stream *s, struct wire_item *it)
{
	size_t have = 0;
	int r;

	if (s->fmt == WIRE_STREAM_AUTO) {
		/* Both formats are at least 8 bytes long before anything
		 * variable: the QEMU header is, HELLO's magic is. */
		r = rd(s, s->hbuf, 8, NULL);
		if (r < 0)
			return err_prefix(-r, "stream start: ");
		have = 8;
		if (get_be32(s->hbuf) == SAVEVM_MAGIC)
			s->fmt = WIRE_STREAM_QEMU;
		else if (get_be64(s->hbuf) == NATIVE_MAGIC)
			s->fmt = WIRE_STREAM_NATIVE;
		else
			return err_set(EBADMSG,
				       "stream start: neither a blkmig native stream nor a "
				       "QEMU migration stream");
	}
	if (s->fmt == WIRE_STREAM_NATIVE) {
		r = pull(s, s->hbuf, sizeof(s->hbuf), have, MAX(have, (size_t)8), dec_hello, false);
		if (r < 0)
			return err_prefix(-r, "handshake: ");
		s->chunk = s->hello.chunk_size;
		it->kind = WIRE_ITEM_HELLO;
		it->hello = &s->hello;
	} else {
		r = pull(s, s->hbuf, sizeof(s->hbuf), have, SAVEVM_HDR_LEN, dec_header, false);
		if (r < 0)
			return err_prefix(-r, "qemu stream: ");
		s->chunk = s->qemu_chunk;
		it->kind = WIRE_ITEM_QEMU_HEADER;
		it->value = SAVEVM_VERSION;
	}
	s->state = ST_TOP;
	return 0;
}

/*
 * A ZSTD record becomes the DATA record it stands for: its frame must
 * decompress to exactly one chunk (the frame says so in its header, and
 * no byte may follow it), into a buffer sized by the chunk, never by the
 * peer.  it->packed keeps the frame's length.
 */
static int unpack_record(struct wire_stream *s, struct wire_item *it)
{
	unsigned long long at = (unsigned long long)it->offset;
	const struct wire_record *rec = &s->cur_rec;
	unsigned long long content;
	size_t n;

	if (s->fmt != WIRE_STREAM_NATIVE || !(s->hello.caps & NATIVE_CAP_COMPRESS))
		return err_set(EBADMSG,
			       "record at stream offset %llu: a compressed chunk, which this "
			       "stream did not announce",
			       at);
	if (!s->unz && !(s->unz = aligned_alloc(4096, div_round_up(s->chunk, 4096) * 4096)))
		return err_set(ENOMEM, "no memory for a %u-byte chunk buffer", s->chunk);
	if (!s->dctx && !(s->dctx = ZSTD_createDCtx()))
		return err_set(ENOMEM, "no memory for a decompression context");
	content = ZSTD_getFrameContentSize(rec->data, rec->length);
	if (content == ZSTD_CONTENTSIZE_ERROR)
		return err_set(EBADMSG,
			       "record at stream offset %llu: the compressed chunk is not a zstd "
			       "frame",
			       at);
	if (content != s->chunk)
		return err_set(EBADMSG,
			       "record at stream offset %llu: the compressed chunk %s (a chunk is "
			       "%u bytes)",
			       at,
			       content == ZSTD_CONTENTSIZE_UNKNOWN ? "does not state its size"
			       : content > s->chunk		   ? "is larger than a chunk"
								   : "is smaller than a chunk",
			       s->chunk);
	n = ZSTD_findFrameCompressedSize(rec->data, rec->length);
	if (!ZSTD_isError(n) && n != rec->length)
		return err_set(EBADMSG,
			       "record at stream offset %llu: %zu bytes follow the compressed "
			       "chunk's frame",
			       at, (size_t)rec->length - n);
	n = ZSTD_decompressDCtx(s->dctx, s->unz, s->chunk, rec->data, rec->length);
	if (ZSTD_isError(n))
		return err_set(EBADMSG,
			       "record at stream offset %llu: corrupt compressed chunk: %s", at,
			       ZSTD_getErrorName(n));
	if (n != s->chunk)
		return err_set(EBADMSG,
			       "record at stream offset %llu: the compressed chunk gave %zu bytes, "
			       "not %u",
			       at, n, s->chunk);
	it->packed = rec->length;
	it->rec.kind = WIRE_REC_DATA;
	it->rec.data = s->unz;
	it->rec.length = 0;
	return 0;
}

/* ---- block records -------------------------------------------------------------- */

static int read_record(struct wire_stream *s, struct wire_item *it)
{
	int r;

	if (!s->rec) {
		s->rec_cap = WIRE_REC_HDR_MAX + (size_t)s->chunk;
		s->rec = aligned_alloc(4096, div_round_up(s->rec_cap, 4096) * 4096);
		if (!s->rec)
			return err_set(ENOMEM, "no memory for a %u-byte chunk buffer", s->chunk);
	}
	r = pull(s, s->rec, s->rec_cap, 0, 8, dec_record, false);
	if (r < 0)
		return err_prefix(-r,
				  "record at stream offset %llu: ", (unsigned long long)it->offset);
	/* Mirrored writes exist only where a HELLO announced them. */
	if (s->cur_rec.kind == WIRE_REC_WRITE &&
	    (s->fmt != WIRE_STREAM_NATIVE || !(s->hello.caps & NATIVE_CAP_MIRROR)))
		return err_set(EBADMSG,
			       "record at stream offset %llu: a WRITE record, which this stream "
			       "did not announce",
			       (unsigned long long)it->offset);
	/* And fences only where it announced a write lane. */
	if (s->cur_rec.kind == WIRE_REC_FENCE &&
	    (s->fmt != WIRE_STREAM_NATIVE || !(s->hello.caps & NATIVE_CAP_WLANE)))
		return err_set(EBADMSG,
			       "record at stream offset %llu: a FENCE record, which this stream "
			       "did not announce",
			       (unsigned long long)it->offset);
	it->kind = WIRE_ITEM_RECORD;
	it->rec = s->cur_rec;
	if (s->cur_rec.kind == WIRE_REC_ZSTD)
		return unpack_record(s, it);
	if (s->cur_rec.kind == WIRE_REC_EOS)
		s->state = s->fmt == WIRE_STREAM_NATIVE ? ST_TOP : ST_FOOTER;
	return 0;
}

/* ---- native messages -------------------------------------------------------------- */

static int read_message(struct wire_stream *s, struct wire_item *it)
{
	unsigned long long at = (unsigned long long)it->offset;
	uint8_t hdr[NATIVE_FRAME_HDR] = { 0 };
	size_t got = 0;
	uint8_t type;
	uint32_t len, v32;
	int r = rd(s, hdr, 1, &got);

	if (r == -ECONNRESET && got == 0) {
		it->kind = WIRE_ITEM_END;
		s->state = ST_DONE;
		return 0;
	}
	if (r < 0)
		return err_prefix(-r, "message at stream offset %llu: ", at);
	/* The type first, so that BLOCKS's records are not taken for a
	 * length and an unknown type fails on its own byte. */
	r = native_frame_header(hdr, s->allowed, &type, &len);
	if (r < 0)
		return err_prefix(-r, "message at stream offset %llu: ", at);
	if (type == NATIVE_MSG_BLOCKS) {
		it->kind = WIRE_ITEM_BLOCKS;
		s->state = ST_RECORDS;
		return 0;
	}
	r = rd(s, hdr + 1, NATIVE_FRAME_HDR - 1, NULL);
	if (r == 0)
		r = native_frame_header(hdr, s->allowed, &type, &len);
	if (r == 0)
		r = rd(s, s->body, len, NULL);
	if (r < 0)
		return err_prefix(-r, "%s message at stream offset %llu: ", native_msg_name(type),
				  at);
	switch (type) {
	case NATIVE_MSG_COMPLETE:
		it->kind = WIRE_ITEM_COMPLETE;
		it->complete = &s->complete;
		r = native_complete_decode(s->body, len, &s->complete);
		break;
	case NATIVE_MSG_ABORT:
	case NATIVE_MSG_ERROR:
		it->kind = type == NATIVE_MSG_ABORT ? WIRE_ITEM_ABORT : WIRE_ITEM_ERROR;
		it->error = &s->error;
		r = native_error_decode(s->body, len, &s->error);
		break;
	case NATIVE_MSG_COMMIT:
	case NATIVE_MSG_ACK:
		it->kind = type == NATIVE_MSG_ACK ? WIRE_ITEM_ACK : WIRE_ITEM_COMMIT;
		r = native_attempt_decode(type == NATIVE_MSG_ACK ? "ack" : "commit", s->body, len,
					  &v32);
		it->value = v32;
		break;
	case NATIVE_MSG_DONE:
		it->kind = WIRE_ITEM_DONE;
		r = native_attempt_decode("done", s->body, len, &v32);
		it->value = v32;
		break;
	case NATIVE_MSG_STATE:
		it->kind = WIRE_ITEM_STATE;
		it->state = &s->st;
		r = native_state_decode(s->body, len, &s->st);
		break;
	case NATIVE_MSG_SUMS:
		if (!s->sums && !(s->sums = malloc(sizeof(*s->sums))))
			return err_set(ENOMEM, "no memory for a SUMS message");
		it->kind = WIRE_ITEM_SUMS;
		it->sums = s->sums;
		r = native_sums_decode(s->body, len, s->sums);
		break;
	case NATIVE_MSG_VERDICT:
		it->kind = WIRE_ITEM_VERDICT;
		it->verdict = &s->verdict;
		r = native_verdict_decode(s->body, len, &s->verdict);
		break;
	case NATIVE_MSG_EXPORT:
		it->kind = WIRE_ITEM_EXPORT;
		it->export = &s->export;
		r = native_export_decode(s->body, len, &s->export);
		break;
	case NATIVE_MSG_LANES:
		it->kind = WIRE_ITEM_LANES;
		it->lanes = &s->lanes;
		r = native_lanes_decode(s->body, len, &s->lanes);
		break;
	case NATIVE_MSG_READY:
		it->kind = WIRE_ITEM_READY;
		r = native_ready_decode(s->body, len, &v32);
		it->value = v32;
		break;
	case NATIVE_MSG_SYNCED:
		it->kind = WIRE_ITEM_SYNCED;
		r = native_synced_decode(s->body, len, &it->value);
		break;
	case NATIVE_MSG_WACK:
		it->kind = WIRE_ITEM_WACK;
		r = native_wack_decode(s->body, len, &it->value);
		break;
	default:
		/* native_frame_header() lets no other type through. */
		return err_set(EBADMSG, "message at stream offset %llu: type 0x%02x", at, type);
	}
	if (r < 0)
		return err_prefix(-r, "%s message at stream offset %llu: ", native_msg_name(type),
				  at);
	return 0;
}

/* ---- QEMU sections ---------------------------------------------------------------- */

/* Decide what the payload of s->cur (idstr in s->cur.name) is. */
static int classify(struct wire_stream *s, unsigned long long at)
{
	int r;

	if (strcmp(s->cur.name, "block") == 0) {
		s->cur_pay = PAY_BLOCK;
		return 0;
	}
	if (strcmp(s->cur.name, "ram") == 0) {
		s->cur_pay = PAY_RAM;
		return 0;
	}
	r = savevm_skip_size(&s->cur, &s->cur_skip);
	if (r == -ENOENT) {
		char shown[STR_ESCAPE_CAP(sizeof(s->cur.name))];

		return err_set(ENOTSUP,
			       "qemu stream at offset %llu: section '%s' is not supported: blkmig "
			       "receives block devices only (start QEMU with -M none)",
			       at, str_escape(shown, sizeof(shown), s->cur.name));
	}
	if (r < 0)
		return err_prefix(-r, "qemu stream at offset %llu: ", at);
	s->cur_pay = PAY_SKIP;
	return 0;
}

static int bind_section(struct wire_stream *s, unsigned long long at)
{
	struct binding *b;

	for (unsigned i = 0; i < s->nsec; i++)
		if (s->sec[i].id == s->cur.section_id)
			return err_set(EBADMSG,
				       "qemu stream at offset %llu: section id %u started twice",
				       at, s->cur.section_id);
	if (s->nsec == WIRE_STREAM_MAX_SECTIONS)
		return err_set(EBADMSG, "qemu stream at offset %llu: more than %d sections", at,
			       WIRE_STREAM_MAX_SECTIONS);
	b = &s->sec[s->nsec++];
	b->id = s->cur.section_id;
	b->version = s->cur.version_id;
	memcpy(b->name, s->cur.name, sizeof(b->name));
	return 0;
}

static int lookup_section(struct wire_stream *s, unsigned long long at)
{
	for (unsigned i = 0; i < s->nsec; i++) {
		if (s->sec[i].id != s->cur.section_id)
			continue;
		/* PART and END carry only the id: the rest is the START's. */
		memcpy(s->cur.name, s->sec[i].name, sizeof(s->cur.name));
		s->cur.version_id = s->sec[i].version;
		return 0;
	}
	return err_set(EBADMSG, "qemu stream at offset %llu: section id %u was never started", at,
		       s->cur.section_id);
}

static int read_section(struct wire_stream *s, struct wire_item *it)
{
	unsigned long long at = (unsigned long long)it->offset;
	int r = pull(s, s->hbuf, SAVEVM_SECTION_HDR_MAX, 0, 1, dec_section, true);

	if (r == PULL_END) {
		it->kind = WIRE_ITEM_END;
		s->state = ST_DONE;
		return 0;
	}
	if (r < 0)
		return err_prefix(-r, "qemu stream at offset %llu: ", at);
	if (s->cur.type == SAVEVM_CONFIGURATION) {
		s->config = true;
		it->kind = WIRE_ITEM_CONFIG;
		it->section = s->cur;
		return 0;
	}
	/* QEMU refuses a stream without one, whatever follows. */
	if (!s->config)
		return err_set(EBADMSG, "qemu stream at offset %llu: configuration section missing",
			       at);
	switch (s->cur.type) {
	case SAVEVM_EOF:
		it->kind = WIRE_ITEM_EOF;
		s->state = ST_AFTER_EOF;
		return 0;
	case SAVEVM_START:
	case SAVEVM_FULL:
		r = bind_section(s, at);
		break;
	case SAVEVM_PART:
	case SAVEVM_END:
		r = lookup_section(s, at);
		break;
	default:
		return err_set(EBADMSG, "qemu stream at offset %llu: unexpected %s section", at,
			       savevm_type_name((uint8_t)s->cur.type));
	}
	if (r == 0)
		r = classify(s, at);
	if (r < 0)
		return r;
	it->kind = WIRE_ITEM_SECTION;
	it->section = s->cur;
	s->state = s->cur_pay == PAY_BLOCK ? ST_RECORDS : ST_PAYLOAD;
	return 0;
}

static int read_footer(struct wire_stream *s, struct wire_item *it)
{
	int r = pull(s, s->hbuf, SAVEVM_FOOTER_LEN, 0, 1, dec_footer, false);

	if (r < 0)
		return err_prefix(-r,
				  "qemu stream at offset %llu: ", (unsigned long long)it->offset);
	it->kind = WIRE_ITEM_FOOTER;
	it->section = s->cur;
	s->state = ST_TOP;
	return 0;
}

/* A "ram" or fixed-size payload, then its footer (one FOOTER item). */
static int read_payload(struct wire_stream *s, struct wire_item *it)
{
	int r;

	if (s->cur_pay == PAY_RAM)
		r = pull(s, s->hbuf, SAVEVM_RAM_START_LEN, 0, 8, dec_ram, false);
	else
		r = skip(s, s->cur_skip);
	if (r < 0)
		return err_prefix(-r, "qemu stream, section '%s' at offset %llu: ", s->cur.name,
				  (unsigned long long)it->offset);
	it->offset = s->off;
	return read_footer(s, it);
}

static int read_after_eof(struct wire_stream *s, struct wire_item *it)
{
	unsigned long long at = (unsigned long long)it->offset;
	int r = pull(s, s->hbuf, SAVEVM_SECTION_HDR_MAX, 0, 1, dec_section, true);

	if (r == PULL_END) {
		it->kind = WIRE_ITEM_END;
		s->state = ST_DONE;
		return 0;
	}
	if (r < 0)
		return err_prefix(-r, "qemu stream at offset %llu (after EOF): ", at);
	if (s->cur.type != SAVEVM_VMDESCRIPTION)
		return err_set(EBADMSG, "qemu stream at offset %llu: %s section after EOF", at,
			       savevm_type_name((uint8_t)s->cur.type));
	it->kind = WIRE_ITEM_VMDESC;
	it->value = s->cur.len;
	s->vmdesc = s->cur.len;
	s->state = ST_VMDESC_BODY;
	return 0;
}

/* Nothing follows the JSON: the sender closes. */
static int read_vmdesc_body(struct wire_stream *s, struct wire_item *it)
{
	int r = skip(s, s->vmdesc);

	if (r < 0)
		return err_prefix(-r, "qemu stream, VMDESCRIPTION at offset %llu: ",
				  (unsigned long long)it->offset);
	it->kind = WIRE_ITEM_END;
	s->state = ST_DONE;
	return 0;
}

/* ---- the step ----------------------------------------------------------------------- */

int wire_stream_next(struct wire_stream *s, struct wire_item *it)
{
	bool native = s->fmt == WIRE_STREAM_NATIVE;
	int r = 0;

	memset(it, 0, sizeof(*it));
	it->offset = s->off;
	switch (s->state) {
	case ST_START:
		r = read_start(s, it);
		break;
	case ST_TOP:
		r = native ? read_message(s, it) : read_section(s, it);
		break;
	case ST_RECORDS:
		r = read_record(s, it);
		break;
	case ST_PAYLOAD:
		r = read_payload(s, it);
		break;
	case ST_FOOTER:
		r = read_footer(s, it);
		break;
	case ST_AFTER_EOF:
		r = read_after_eof(s, it);
		break;
	case ST_VMDESC_BODY:
		r = read_vmdesc_body(s, it);
		break;
	case ST_DONE:
		it->kind = WIRE_ITEM_END;
		break;
	case ST_FAILED:
		return err_set(-s->err, "the stream failed earlier, at offset %llu (reading %s)",
			       (unsigned long long)s->failed, state_names[s->failed_in]);
	}
	if (r < 0) {
		s->err = r;
		s->failed = it->offset;
		s->failed_in = s->state;
		s->state = ST_FAILED;
	}
	return r;
}
