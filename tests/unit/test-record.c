/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the block record codec (src/wire/record.c): golden bytes as
 * QEMU 7.2 sends them, encode/decode round trips, every -EAGAIN prefix of a
 * valid record, and each malformed record with its exact message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "wire/record.h"

#define CHUNK_4K  4096U
#define CHUNK_1M  (1U << 20)
#define CHUNK_16M (1U << 24)

/* A record header followed by a payload of chunk_size bytes, heap-allocated
 * so that ASan sees any read past the end. */
static uint8_t *make_buf(const uint8_t *hdr, size_t hdr_len, size_t payload, uint8_t fill)
{
	uint8_t *b = malloc(hdr_len + payload);

	assert_non_null(b);
	memcpy(b, hdr, hdr_len);
	memset(b + hdr_len, fill, payload);
	return b;
}

static void expect_error(int r, int err, const char *msg)
{
	assert_int_equal(r, -err);
	assert_string_equal(err_msg(), msg);
}

/* Decode exactly len bytes copied to the heap, so an over-read is caught. */
static int decode_exact(const uint8_t *bytes, size_t len, uint32_t chunk, struct wire_record *rec,
			size_t *used)
{
	uint8_t *b = malloc(len ? len : 1);
	int r;

	assert_non_null(b);
	memcpy(b, bytes, len);
	err_clear();
	r = wire_rec_decode(b, len, chunk, rec, used);
	free(b);
	return r;
}

/* ------------------------------------------------------------------------ */
/* Golden bytes                                                             */

/* clang-format off */
static const uint8_t golden_data_hdr[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x01, /* 1 MiB | DEVICE_BLOCK */
	0x06, 'd', 'r', 'i', 'v', 'e', '0',
};

static const uint8_t golden_zero[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x00, 0x09, /* 3 MiB | DEVICE|ZERO */
	0x06, 'd', 'r', 'i', 'v', 'e', '0',
};

static const uint8_t golden_progress100[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x04, /* (100 << 9) | PROGRESS */
};

static const uint8_t golden_eos[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
};
/* clang-format on */

static void test_golden_data_encode(void **state)
{
	struct wire_record rec = { .kind = WIRE_REC_DATA, .offset = MiB };
	uint8_t buf[WIRE_REC_HDR_MAX];

	(void)state;
	strcpy(rec.name, "drive0");
	assert_int_equal(wire_rec_encode_header(buf, &rec), sizeof(golden_data_hdr));
	assert_memory_equal(buf, golden_data_hdr, sizeof(golden_data_hdr));
}

static void test_golden_data_decode(void **state)
{
	const size_t total = sizeof(golden_data_hdr) + CHUNK_1M;
	uint8_t *b = make_buf(golden_data_hdr, sizeof(golden_data_hdr), CHUNK_1M, 0xa5);
	struct wire_record rec;
	size_t used = 0;

	(void)state;
	assert_int_equal(total, 1048591); /* as QEMU 7.2 sends it */
	assert_int_equal(wire_rec_decode(b, total, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(used, total);
	assert_int_equal(rec.kind, WIRE_REC_DATA);
	assert_int_equal(rec.offset, MiB);
	assert_int_equal(rec.name_len, 6);
	assert_string_equal(rec.name, "drive0");
	assert_ptr_equal(rec.data, b + sizeof(golden_data_hdr));
	assert_int_equal(rec.data[0], 0xa5);
	assert_int_equal(rec.data[CHUNK_1M - 1], 0xa5);
	free(b);
}

static void test_golden_zero(void **state)
{
	struct wire_record rec = { .kind = WIRE_REC_ZERO, .offset = 3 * MiB };
	uint8_t buf[WIRE_REC_HDR_MAX];
	size_t used = 0;

	(void)state;
	strcpy(rec.name, "drive0");
	assert_int_equal(sizeof(golden_zero), 15);
	assert_int_equal(wire_rec_encode_header(buf, &rec), 15);
	assert_memory_equal(buf, golden_zero, 15);

	memset(&rec, 0x55, sizeof(rec));
	assert_int_equal(decode_exact(golden_zero, 15, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(used, 15);
	assert_int_equal(rec.kind, WIRE_REC_ZERO);
	assert_int_equal(rec.offset, 3 * MiB);
	assert_string_equal(rec.name, "drive0");
	assert_null(rec.data);
}

static void test_golden_progress(void **state)
{
	struct wire_record rec = { .kind = WIRE_REC_PROGRESS, .percent = 100 };
	uint8_t buf[WIRE_REC_HDR_MAX];
	size_t used = 0;

	(void)state;
	assert_int_equal(wire_rec_encode_header(buf, &rec), 8);
	assert_memory_equal(buf, golden_progress100, 8);
	assert_int_equal(get_be64(buf), (UINT64_C(100) << 9) | 0x04);

	memset(&rec, 0, sizeof(rec));
	assert_int_equal(decode_exact(golden_progress100, 8, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(used, 8);
	assert_int_equal(rec.kind, WIRE_REC_PROGRESS);
	assert_int_equal(rec.percent, 100);
}

static void test_golden_eos(void **state)
{
	struct wire_record rec = { .kind = WIRE_REC_EOS, .offset = 12345 * 512 };
	uint8_t buf[WIRE_REC_HDR_MAX];
	size_t used = 0;

	(void)state;
	/* The offset of an EOS is meaningless and not encoded. */
	assert_int_equal(wire_rec_encode_header(buf, &rec), 8);
	assert_memory_equal(buf, golden_eos, 8);

	assert_int_equal(decode_exact(golden_eos, 8, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(used, 8);
	assert_int_equal(rec.kind, WIRE_REC_EOS);
}

/* PROGRESS is informational: values above 100 are passed on, not refused. */
static void test_progress_over_100(void **state)
{
	const uint8_t p250[] = { 0, 0, 0, 0, 0, 0x01, 0xf4, 0x04 }; /* 250 << 9 | 4 */
	const uint8_t pmax[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x04 };
	struct wire_record rec;
	size_t used;

	(void)state;
	assert_int_equal(decode_exact(p250, 8, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(rec.kind, WIRE_REC_PROGRESS);
	assert_int_equal(rec.percent, 250);
	assert_int_equal(decode_exact(pmax, 8, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(rec.percent, UINT64_MAX >> 9);
}

/* A QEMU-style EOS with stray offset bits is still an EOS. */
static void test_eos_with_offset_bits(void **state)
{
	const uint8_t eos[] = { 0, 0, 0, 0, 0, 0x10, 0x00, 0x02 };
	struct wire_record rec;
	size_t used;

	(void)state;
	assert_int_equal(decode_exact(eos, 8, CHUNK_1M, &rec, &used), 0);
	assert_int_equal(rec.kind, WIRE_REC_EOS);
	assert_int_equal(used, 8);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */

static void round_trip(enum wire_rec_kind kind, uint64_t offset, const char *name, uint64_t percent,
		       uint32_t chunk)
{
	struct wire_record in = { .kind = kind, .offset = offset, .percent = percent };
	struct wire_record out;
	uint8_t hdr[WIRE_REC_HDR_MAX];
	size_t payload = kind == WIRE_REC_DATA ? chunk : 0, used = 0;
	uint8_t *b;
	int n;

	snprintf(in.name, sizeof(in.name), "%s", name);
	n = wire_rec_encode_header(hdr, &in);
	assert_true(n >= 8);
	b = make_buf(hdr, (size_t)n, payload, 0x3c);
	assert_int_equal(wire_rec_decode(b, (size_t)n + payload, chunk, &out, &used), 0);
	assert_int_equal(used, (size_t)n + payload);
	assert_int_equal(out.kind, kind);
	switch (kind) {
	case WIRE_REC_DATA:
	case WIRE_REC_ZERO:
		assert_int_equal(out.offset, offset);
		assert_int_equal(out.name_len, strlen(name));
		assert_int_equal(n, 9 + strlen(name));
		assert_string_equal(out.name, name);
		if (kind == WIRE_REC_DATA)
			assert_ptr_equal(out.data, b + n);
		else
			assert_null(out.data);
		break;
	case WIRE_REC_PROGRESS:
		assert_int_equal(out.percent, percent);
		break;
	case WIRE_REC_EOS:
	case WIRE_REC_WRITE: /* test_write */
	case WIRE_REC_ZSTD:  /* test_zstd */
	case WIRE_REC_FENCE: /* test_fence */
		break;
	}
	free(b);
}

/* WRITE (native only): golden bytes, every prefix, and each refusal. */
static void test_write(void **state)
{
	static const uint8_t golden[] = {
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, /* word: WRITE */
		0x02, 'd',  '0',				/* name */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, /* seq 7 */
		0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, /* offset 0x10203 */
		0x00, 0x00, 0x00, 0x05,				/* length 5 */
		0x00,						/* op data */
		'h',  'e',  'l',  'l',	'o',
	};
	struct wire_record in = { .kind = WIRE_REC_WRITE,
				  .name = "d0",
				  .seq = 7,
				  .offset = 0x10203,
				  .length = 5,
				  .op = WIRE_WRITE_DATA };
	struct wire_record out;
	uint8_t hdr[WIRE_REC_HDR_MAX], bad[sizeof(golden)];
	size_t used;
	int n;

	(void)state;
	n = wire_rec_encode_header(hdr, &in);
	assert_int_equal(n, sizeof(golden) - 5);
	assert_memory_equal(hdr, golden, (size_t)n);
	assert_int_equal(wire_rec_decode(golden, sizeof(golden), CHUNK_4K, &out, &used), 0);
	assert_int_equal(used, sizeof(golden));
	assert_int_equal(out.kind, WIRE_REC_WRITE);
	assert_string_equal(out.name, "d0");
	assert_int_equal(out.seq, 7);
	assert_int_equal(out.offset, 0x10203);
	assert_int_equal(out.length, 5);
	assert_int_equal(out.op, WIRE_WRITE_DATA);
	assert_memory_equal(out.data, "hello", 5);
	/* Every prefix asks for more, and never for more than the whole. */
	for (size_t p = 0; p < sizeof(golden); p++) {
		used = 0;
		assert_int_equal(wire_rec_decode(golden, p, CHUNK_4K, &out, &used), -EAGAIN);
		assert_true(used > p && used <= sizeof(golden));
	}
	/* A zero WRITE has no payload. */
	memcpy(bad, golden, sizeof(bad));
	bad[31] = WIRE_WRITE_ZERO;
	assert_int_equal(wire_rec_decode(bad, 32, CHUNK_4K, &out, &used), 0);
	assert_int_equal(used, 32);
	assert_null(out.data);
	/* Refusals. */
	memcpy(bad, golden, sizeof(bad));
	bad[6] = 0x02; /* offset bits in the word */
	assert_int_equal(wire_rec_decode(bad, sizeof(bad), CHUNK_4K, &out, &used), -EBADMSG);
	memcpy(bad, golden, sizeof(bad));
	bad[18] = 0; /* seq 0 */
	assert_int_equal(wire_rec_decode(bad, sizeof(bad), CHUNK_4K, &out, &used), -EBADMSG);
	memcpy(bad, golden, sizeof(bad));
	bad[30] = 0; /* length 0 */
	assert_int_equal(wire_rec_decode(bad, sizeof(bad), CHUNK_4K, &out, &used), -EBADMSG);
	memcpy(bad, golden, sizeof(bad));
	bad[28] = 0x01; /* length 65541 > chunk */
	assert_int_equal(wire_rec_decode(bad, sizeof(bad), CHUNK_4K, &out, &used), -EBADMSG);
	memcpy(bad, golden, sizeof(bad));
	bad[31] = 2; /* op */
	assert_int_equal(wire_rec_decode(bad, sizeof(bad), CHUNK_4K, &out, &used), -EBADMSG);
	memcpy(bad, golden, sizeof(bad));
	bad[7] = 0x11; /* WRITE | DEVICE_BLOCK */
	assert_int_equal(wire_rec_decode(bad, sizeof(bad), CHUNK_4K, &out, &used), -EBADMSG);
	/* The encoder refuses what the decoder would. */
	in.seq = 0;
	assert_int_equal(wire_rec_encode_header(hdr, &in), -EINVAL);
	in.seq = 1;
	in.length = 0;
	assert_int_equal(wire_rec_encode_header(hdr, &in), -EINVAL);
}

/* ZSTD (native only): golden bytes, every prefix, and the frame's bounds,
 * checked before the frame is asked for. */
/* FENCE: the word 0x40 and a be64 sequence number, nothing else. */
static void test_fence(void **state)
{
	static const uint8_t golden[16] = {
		0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0x01, 0x02
	};
	struct wire_record in = { .kind = WIRE_REC_FENCE, .seq = 0x102 }, out;
	uint8_t hdr[WIRE_REC_HDR_MAX], bad[16];
	size_t used = 0;

	(void)state;
	assert_int_equal(wire_rec_encode_header(hdr, &in), 16);
	assert_memory_equal(hdr, golden, 16);
	assert_int_equal(wire_rec_decode(golden, 16, 65536, &out, &used), 0);
	assert_int_equal(out.kind, WIRE_REC_FENCE);
	assert_int_equal(out.seq, 0x102);
	assert_int_equal(used, 16);
	/* Every prefix asks for the whole record. */
	for (size_t n = 8; n < 16; n++) {
		assert_int_equal(wire_rec_decode(golden, n, 65536, &out, &used), -EAGAIN);
		assert_int_equal(used, 16);
	}
	/* Sequence number 0, offset bits, combined with another flag. */
	memcpy(bad, golden, 16);
	memset(bad + 8, 0, 8);
	assert_int_equal(wire_rec_decode(bad, 16, 65536, &out, &used), -EBADMSG);
	memcpy(bad, golden, 16);
	bad[6] = 0x02; /* offset 512 */
	assert_int_equal(wire_rec_decode(bad, 16, 65536, &out, &used), -EBADMSG);
	memcpy(bad, golden, 16);
	bad[7] = 0x50; /* FENCE | WRITE */
	assert_int_equal(wire_rec_decode(bad, 16, 65536, &out, &used), -EBADMSG);
	in.seq = 0;
	assert_int_equal(wire_rec_encode_header(hdr, &in), -EINVAL);
}

static void test_zstd(void **state)
{
	static const uint8_t golden[] = {
		0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x21, /* word: 1 MiB, DEVICE_BLOCK|ZSTD */
		0x06, 'd',  'r',  'i',	'v',  'e',  '0',	/* name */
		0x00, 0x00, 0x00, 0x05,				/* frame of 5 bytes */
		0xf0, 0xf1, 0xf2, 0xf3, 0xf4,			/* (the frame: not checked here) */
	};
	struct wire_record in = {
		.kind = WIRE_REC_ZSTD, .name = "drive0", .offset = MiB, .length = 5
	};
	struct wire_record out;
	uint8_t hdr[WIRE_REC_HDR_MAX], bad[sizeof(golden)];
	size_t used;
	int n;

	(void)state;
	n = wire_rec_encode_header(hdr, &in);
	assert_int_equal(n, sizeof(golden) - 5);
	assert_memory_equal(hdr, golden, (size_t)n);
	assert_int_equal(decode_exact(golden, sizeof(golden), CHUNK_1M, &out, &used), 0);
	assert_int_equal(used, sizeof(golden));
	assert_int_equal(out.kind, WIRE_REC_ZSTD);
	assert_string_equal(out.name, "drive0");
	assert_int_equal(out.offset, MiB);
	assert_int_equal(out.length, 5);
	assert_int_equal(wire_rec_decode(golden, sizeof(golden), CHUNK_1M, &out, &used), 0);
	assert_ptr_equal(out.data, golden + 19);
	for (size_t p = 0; p < sizeof(golden); p++) {
		used = 0;
		assert_int_equal(decode_exact(golden, p, CHUNK_1M, &out, &used), -EAGAIN);
		assert_true(used > p && used <= sizeof(golden));
	}
	/* An empty frame, and one as long as the chunk: refused with the 19
	 * header bytes alone. */
	memcpy(bad, golden, sizeof(bad));
	bad[18] = 0;
	expect_error(decode_exact(bad, 19, CHUNK_1M, &out, &used), EBADMSG,
		     "record: compressed chunk of 0 bytes (must be 1..1048575: a chunk that "
		     "does not shrink travels as DATA)");
	put_be32(bad + 15, CHUNK_4K);
	expect_error(decode_exact(bad, 19, CHUNK_4K, &out, &used), EBADMSG,
		     "record: compressed chunk of 4096 bytes (must be 1..4095: a chunk that "
		     "does not shrink travels as DATA)");
	put_be32(bad + 15, UINT32_MAX);
	expect_error(decode_exact(bad, 19, CHUNK_1M, &out, &used), EBADMSG,
		     "record: compressed chunk of 4294967295 bytes (must be 1..1048575: a "
		     "chunk that does not shrink travels as DATA)");
	/* The largest allowed asks for exactly that much. */
	put_be32(bad + 15, CHUNK_4K - 1);
	assert_int_equal(decode_exact(bad, 19, CHUNK_4K, &out, &used), -EAGAIN);
	assert_int_equal(used, 19 + CHUNK_4K - 1);
	/* Misaligned, like DATA. */
	memcpy(bad, golden, sizeof(bad));
	bad[6] = 0x10;
	expect_error(decode_exact(bad, 8, CHUNK_1M, &out, &used), EBADMSG,
		     "record: offset 0x101000 not aligned to chunk size 1048576");
	/* The encoder refuses an empty frame. */
	in.length = 0;
	assert_int_equal(wire_rec_encode_header(hdr, &in), -EINVAL);
}

static void test_round_trips(void **state)
{
	char longest[WIRE_NAME_MAX + 1];
	const uint64_t top_1m = UINT64_MAX & ~(uint64_t)(MiB - 1);

	(void)state;
	memset(longest, 'n', WIRE_NAME_MAX);
	longest[WIRE_NAME_MAX] = '\0';

	round_trip(WIRE_REC_DATA, 0, "drive0", 0, CHUNK_1M);
	round_trip(WIRE_REC_DATA, 7 * MiB, "virtio-disk1", 0, CHUNK_1M);
	round_trip(WIRE_REC_DATA, top_1m, "d", 0, CHUNK_1M);
	round_trip(WIRE_REC_DATA, 5 * CHUNK_4K, longest, 0, CHUNK_4K);
	round_trip(WIRE_REC_DATA, 2 * (uint64_t)CHUNK_16M, "big", 0, CHUNK_16M);
	round_trip(WIRE_REC_ZERO, 0, "drive0", 0, CHUNK_1M);
	round_trip(WIRE_REC_ZERO, top_1m, longest, 0, CHUNK_1M);
	round_trip(WIRE_REC_ZERO, CHUNK_4K, "\xc3\xa9t\xc3\xa9", 0, CHUNK_4K); /* UTF-8 */
	for (uint64_t p = 0; p <= 100; p++)
		round_trip(WIRE_REC_PROGRESS, 0, "", p, CHUNK_1M);
	round_trip(WIRE_REC_EOS, 0, "", 0, CHUNK_1M);
}

/* Several records back to back, as inside a section: each decode consumes
 * exactly one record. */
static void test_consecutive(void **state)
{
	struct wire_record recs[4] = {
		{ .kind = WIRE_REC_DATA, .offset = 2 * CHUNK_4K, .name = "a" },
		{ .kind = WIRE_REC_ZERO, .offset = 0, .name = "bb" },
		{ .kind = WIRE_REC_PROGRESS, .percent = 42 },
		{ .kind = WIRE_REC_EOS },
	};
	uint8_t *b = malloc(4 * (WIRE_REC_HDR_MAX + CHUNK_4K));
	size_t len = 0, pos = 0;
	struct wire_record rec;

	(void)state;
	assert_non_null(b);
	for (int i = 0; i < 4; i++) {
		int n = wire_rec_encode_header(b + len, &recs[i]);
		assert_true(n > 0);
		len += (size_t)n;
		if (recs[i].kind == WIRE_REC_DATA) {
			memset(b + len, 0x77, CHUNK_4K);
			len += CHUNK_4K;
		}
	}
	for (int i = 0; i < 4; i++) {
		size_t used = 0;
		assert_int_equal(wire_rec_decode(b + pos, len - pos, CHUNK_4K, &rec, &used), 0);
		assert_int_equal(rec.kind, recs[i].kind);
		pos += used;
	}
	assert_int_equal(pos, len);
	assert_int_equal(len, (8 + 1 + 1 + CHUNK_4K) + (8 + 1 + 2) + 8 + 8);
	free(b);
}

/* ------------------------------------------------------------------------ */
/* -EAGAIN on every prefix                                                  */

/* What *used must be for a prefix of plen bytes of a record whose name is
 * n bytes long: 8, then 9, then 9 + n, then 9 + n + payload. */
static size_t expected_need(size_t plen, size_t n, size_t payload)
{
	if (plen < 8)
		return 8;
	if (plen < 9)
		return 9;
	if (plen < 9 + n)
		return 9 + n;
	return 9 + n + payload;
}

static void check_prefixes(const uint8_t *bytes, size_t len, uint32_t chunk, size_t name_len,
			   size_t payload)
{
	size_t prev = 0;

	for (size_t plen = 0; plen < len; plen++) {
		struct wire_record rec;
		size_t used = 0;
		int r = decode_exact(bytes, plen, chunk, &rec, &used);

		assert_int_equal(r, -EAGAIN);
		assert_true(used > plen);
		assert_true(used <= len);
		assert_true(used >= prev);
		if (name_len)
			assert_int_equal(used, expected_need(plen, name_len, payload));
		else
			assert_int_equal(used, 8);
		prev = used;
	}
}

static void test_prefixes(void **state)
{
	uint8_t data[8 + 1 + 6 + CHUNK_4K];
	uint8_t longname[8 + 1 + WIRE_NAME_MAX];
	struct wire_record rec;
	size_t used = 0;

	(void)state;
	/* DATA with a 4 KiB chunk: prefixes 0 .. 4110. */
	memcpy(data, golden_data_hdr, sizeof(golden_data_hdr));
	memset(data + sizeof(golden_data_hdr), 0xee, CHUNK_4K);
	check_prefixes(data, sizeof(data), CHUNK_4K, 6, CHUNK_4K);
	assert_int_equal(decode_exact(data, sizeof(data), CHUNK_4K, &rec, &used), 0);
	assert_int_equal(used, sizeof(data));

	/* ZERO: no payload. */
	check_prefixes(golden_zero, sizeof(golden_zero), CHUNK_1M, 6, 0);

	/* ZERO with the longest name. */
	put_be64(longname, 5 * MiB | WIRE_F_DEVICE_BLOCK | WIRE_F_ZERO_BLOCK);
	longname[8] = WIRE_NAME_MAX;
	memset(longname + 9, 'x', WIRE_NAME_MAX);
	check_prefixes(longname, sizeof(longname), CHUNK_1M, WIRE_NAME_MAX, 0);
	assert_int_equal(decode_exact(longname, sizeof(longname), CHUNK_1M, &rec, &used), 0);
	assert_int_equal(rec.name_len, WIRE_NAME_MAX);

	/* PROGRESS and EOS: only 8 bytes. */
	check_prefixes(golden_progress100, 8, CHUNK_1M, 0, 0);
	check_prefixes(golden_eos, 8, CHUNK_1M, 0, 0);
}

/* The 1 MiB payload case, checked at its boundaries rather than per byte. */
static void test_prefixes_1m(void **state)
{
	const size_t total = sizeof(golden_data_hdr) + CHUNK_1M;
	uint8_t *b = make_buf(golden_data_hdr, sizeof(golden_data_hdr), CHUNK_1M, 0);
	const size_t lens[] = { 0, 7, 8, 9, 14, 15, 16, total / 2, total - 1 };
	struct wire_record rec;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		size_t used = 0;
		assert_int_equal(wire_rec_decode(b, lens[i], CHUNK_1M, &rec, &used), -EAGAIN);
		assert_int_equal(used, expected_need(lens[i], 6, CHUNK_1M));
	}
	free(b);
}

/* ------------------------------------------------------------------------ */
/* Malformed records                                                        */

static void check_bad_word(uint64_t word, const char *msg)
{
	uint8_t b[8 + 1 + 6];
	struct wire_record rec;
	size_t used = 0;

	put_be64(b, word);
	b[8] = 6;
	memcpy(b + 9, "drive0", 6);
	/* The word alone is enough to refuse it. */
	expect_error(decode_exact(b, 8, CHUNK_1M, &rec, &used), EBADMSG, msg);
	expect_error(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), EBADMSG, msg);
}

static void test_bad_flags(void **state)
{
	(void)state;
	check_bad_word(MiB | 0x80, "record: unknown flags 0x80");
	check_bad_word(MiB | 0x40, "record: FENCE with offset bits 0x100000 in its word");
	check_bad_word(MiB | 0x41, "record: invalid flag combination 0x41 (DEVICE_BLOCK|FENCE)");
	check_bad_word(MiB | 0x20, "record: invalid flag combination 0x20 (ZSTD)");
	check_bad_word(MiB | 0x29,
		       "record: invalid flag combination 0x29 (DEVICE_BLOCK|ZERO_BLOCK|ZSTD)");
	check_bad_word(MiB | 0x100, "record: unknown flags 0x100");
	check_bad_word(0x1e0, "record: unknown flags 0x180 (flags 0x1e0)");
	check_bad_word(MiB | 0x81, "record: unknown flags 0x80 (flags 0x81)");
	check_bad_word(MiB | 0x1ff, "record: unknown flags 0x180 (flags 0x1ff)");
	check_bad_word(MiB | 0x11, "record: invalid flag combination 0x11 (DEVICE_BLOCK|WRITE)");
	check_bad_word(MiB | 0x10, "record: WRITE with offset bits 0x100000 in its word");
	check_bad_word(MiB | 0x03, "record: invalid flag combination 0x03 (DEVICE_BLOCK|EOS)");
	check_bad_word(MiB | 0x05, "record: invalid flag combination 0x05 (DEVICE_BLOCK|PROGRESS)");
	check_bad_word(MiB | 0x08, "record: invalid flag combination 0x08 (ZERO_BLOCK)");
	check_bad_word(0x06, "record: invalid flag combination 0x06 (EOS|PROGRESS)");
	check_bad_word(MiB, "record: invalid flag combination 0x00 (none)");
	check_bad_word(MiB | 0x0b,
		       "record: invalid flag combination 0x0b (DEVICE_BLOCK|EOS|ZERO_BLOCK)");
	check_bad_word(0x0c, "record: invalid flag combination 0x0c (PROGRESS|ZERO_BLOCK)");
	check_bad_word(MiB | 0x0f, "record: invalid flag combination 0x0f "
				   "(DEVICE_BLOCK|EOS|PROGRESS|ZERO_BLOCK)");
}

static void test_empty_name(void **state)
{
	uint8_t b[8 + 1 + CHUNK_4K] = { 0, 0, 0, 0, 0, 0x10, 0x00, 0x01, 0x00 };
	struct wire_record rec;
	size_t used;

	(void)state;
	expect_error(decode_exact(b, 9, CHUNK_4K, &rec, &used), EBADMSG,
		     "record: empty device name");
	expect_error(decode_exact(b, sizeof(b), CHUNK_4K, &rec, &used), EBADMSG,
		     "record: empty device name");
	b[7] = 0x09; /* ZERO */
	expect_error(decode_exact(b, 9, CHUNK_4K, &rec, &used), EBADMSG,
		     "record: empty device name");
}

static void test_unaligned_offset(void **state)
{
	uint8_t b[15];
	struct wire_record rec;
	size_t used;

	(void)state;
	memcpy(b, golden_zero, sizeof(b));
	put_be64(b, 0x1000 | WIRE_F_DEVICE_BLOCK | WIRE_F_ZERO_BLOCK);
	/* 4 KiB is a fine offset for 4 KiB chunks but not for 1 MiB ones. */
	assert_int_equal(decode_exact(b, sizeof(b), CHUNK_4K, &rec, &used), 0);
	expect_error(decode_exact(b, 8, CHUNK_1M, &rec, &used), EBADMSG,
		     "record: offset 0x1000 not aligned to chunk size 1048576");
	expect_error(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), EBADMSG,
		     "record: offset 0x1000 not aligned to chunk size 1048576");

	put_be64(b, 0x200 | WIRE_F_DEVICE_BLOCK);
	expect_error(decode_exact(b, sizeof(b), CHUNK_4K, &rec, &used), EBADMSG,
		     "record: offset 0x200 not aligned to chunk size 4096");
	put_be64(b, UINT64_C(0xfffffffffff00000) | WIRE_F_DEVICE_BLOCK);
	expect_error(decode_exact(b, sizeof(b), CHUNK_16M, &rec, &used), EBADMSG,
		     "record: offset 0xfffffffffff00000 not aligned to chunk size 16777216");
}

static void test_nul_in_name(void **state)
{
	uint8_t b[15];
	struct wire_record rec;
	size_t used;

	(void)state;
	memcpy(b, golden_zero, sizeof(b));
	b[11] = '\0'; /* "dr\0ve0" */
	expect_error(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), EBADMSG,
		     "record: device name contains a NUL byte (offset 0x300000)");
	memcpy(b, golden_zero, sizeof(b));
	b[14] = '\0'; /* trailing NUL */
	assert_int_equal(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), -EBADMSG);
	/* The prefix before the NUL is still just incomplete. */
	assert_int_equal(decode_exact(b, 14, CHUNK_1M, &rec, &used), -EAGAIN);
	assert_int_equal(used, 15);
}

/* Names are the operators' device names: no control characters, which
 * could reach a terminal; bytes above 0x7f (UTF-8) pass. */
static void test_control_in_name(void **state)
{
	uint8_t b[15];
	struct wire_record rec;
	size_t used;

	(void)state;
	memcpy(b, golden_zero, sizeof(b));
	b[11] = '\n';
	expect_error(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), EBADMSG,
		     "record: device name 'dr\\x0ave0' has control characters (offset 0x300000)");
	b[11] = 0x1b;
	expect_error(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), EBADMSG,
		     "record: device name 'dr\\x1bve0' has control characters (offset 0x300000)");
	b[11] = 0x7f;
	assert_int_equal(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), -EBADMSG);
	b[11] = 0xc3;
	assert_int_equal(decode_exact(b, sizeof(b), CHUNK_1M, &rec, &used), 0);
}

static void test_bad_chunk_size(void **state)
{
	const uint32_t bad[] = { 0, 1, 512, 2048, 4095, 4097, 3 * 4096, 1U << 25, UINT32_MAX };
	struct wire_record rec;
	size_t used;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(decode_exact(golden_eos, 8, bad[i], &rec, &used), -EINVAL);
	expect_error(decode_exact(golden_zero, 15, 2048, &rec, &used), EINVAL,
		     "record: invalid chunk size 2048 (must be a power of two from 4096 to "
		     "16777216)");
}

/* ------------------------------------------------------------------------ */
/* Encoder refusals                                                         */

static void test_encode_errors(void **state)
{
	struct wire_record rec = { .kind = WIRE_REC_DATA, .offset = MiB + 256 };
	uint8_t buf[WIRE_REC_HDR_MAX];

	(void)state;
	strcpy(rec.name, "drive0");
	expect_error(wire_rec_encode_header(buf, &rec), EINVAL,
		     "record: offset 0x100100 is not a multiple of 512");
	rec.kind = WIRE_REC_ZERO;
	assert_int_equal(wire_rec_encode_header(buf, &rec), -EINVAL);

	rec.offset = MiB;
	rec.name[0] = '\0';
	expect_error(wire_rec_encode_header(buf, &rec), EINVAL, "record: empty device name");

	memset(rec.name, 'x', sizeof(rec.name)); /* 256 bytes, no NUL */
	expect_error(wire_rec_encode_header(buf, &rec), EINVAL,
		     "record: device name longer than 255 bytes");

	rec.kind = WIRE_REC_PROGRESS;
	rec.percent = 101;
	expect_error(wire_rec_encode_header(buf, &rec), EINVAL,
		     "record: progress 101% out of range 0..100");

	rec.kind = (enum wire_rec_kind)42;
	expect_error(wire_rec_encode_header(buf, &rec), EINVAL, "record: invalid record kind 42");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_data_encode),
		cmocka_unit_test(test_golden_data_decode),
		cmocka_unit_test(test_golden_zero),
		cmocka_unit_test(test_golden_progress),
		cmocka_unit_test(test_golden_eos),
		cmocka_unit_test(test_progress_over_100),
		cmocka_unit_test(test_eos_with_offset_bits),
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_write),
		cmocka_unit_test(test_consecutive),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_prefixes_1m),
		cmocka_unit_test(test_bad_flags),
		cmocka_unit_test(test_empty_name),
		cmocka_unit_test(test_unaligned_offset),
		cmocka_unit_test(test_nul_in_name),
		cmocka_unit_test(test_control_in_name),
		cmocka_unit_test(test_bad_chunk_size),
		cmocka_unit_test(test_encode_errors),
		cmocka_unit_test(test_zstd),
		cmocka_unit_test(test_fence),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
