/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the native envelope codec (src/wire/native.c): golden bytes
 * for every message, round trips, every -EAGAIN prefix of HELLO, each HELLO
 * and frame error with its message, and truncated or padded bodies.
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
#include "wire/native.h"

static void expect_error(int r, int err, const char *msg)
{
	assert_int_equal(r, -err);
	assert_string_equal(err_msg(), msg);
}

/* Copy to an exact-size heap buffer so that ASan catches an over-read. */
static uint8_t *heap_copy(const uint8_t *p, size_t len)
{
	uint8_t *b = malloc(len ? len : 1);

	assert_non_null(b);
	memcpy(b, p, len);
	return b;
}

static int hello_decode_exact(const uint8_t *p, size_t len, struct native_hello *h, size_t *used)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_hello_decode(b, len, h, used);
	free(b);
	return r;
}

static int complete_decode_exact(const uint8_t *p, size_t len, struct native_complete *c)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_complete_decode(b, len, c);
	free(b);
	return r;
}

static int error_decode_exact(const uint8_t *p, size_t len, struct native_error *e)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_error_decode(b, len, e);
	free(b);
	return r;
}

/* ------------------------------------------------------------------------ */
/* HELLO                                                                    */

/* clang-format off */
static const uint8_t golden_hello[] = {
	0x42, 0x4c, 0x4b, 0x4d, 0x49, 0x47, 0x0d, 0x0a, /* "BLKMIG\r\n" */
	0x00, 0x00, 0x00, 0x02,                         /* version 2 */
	0x00, 0x00, 0x00, 0x01,                         /* caps ZERO_BLOCKS */
	0x00, 0x10, 0x00, 0x00,                         /* chunk 1 MiB */
	0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, /* migration id */
	0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf,
	0x00, 0x02,                                     /* 2 devices */
	0x06, 'd',  'r',  'i',  'v',  'e',  '0',        /* "drive0" */
	0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, /* 64 MiB */
	0x01, 'x',                                      /* "x" */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x01, /* 4097 bytes */
};
/* clang-format on */

static void golden_hello_struct(struct native_hello *h)
{
	memset(h, 0, sizeof(*h));
	h->version = NATIVE_VERSION;
	h->caps = NATIVE_CAP_ZERO_BLOCKS;
	h->chunk_size = 1U << 20;
	for (int i = 0; i < NATIVE_ID_LEN; i++)
		h->id[i] = (uint8_t)(0xa0 + i);
	h->ndev = 2;
	strcpy(h->dev[0].name, "drive0");
	h->dev[0].size = 64 * MiB;
	strcpy(h->dev[1].name, "x");
	h->dev[1].size = 4097;
}

static void test_hello_golden(void **state)
{
	static struct native_hello h, d;
	uint8_t buf[NATIVE_HELLO_MAX];
	size_t used = 0;

	(void)state;
	golden_hello_struct(&h);
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), sizeof(golden_hello));
	assert_memory_equal(buf, golden_hello, sizeof(golden_hello));

	assert_int_equal(hello_decode_exact(golden_hello, sizeof(golden_hello), &d, &used), 0);
	assert_int_equal(used, sizeof(golden_hello));
	assert_int_equal(d.version, 2);
	assert_int_equal(d.id[0], 0xa0);
	assert_int_equal(d.id[15], 0xaf);
	assert_int_equal(d.caps, NATIVE_CAP_ZERO_BLOCKS);
	assert_int_equal(d.chunk_size, 1U << 20);
	assert_int_equal(d.ndev, 2);
	assert_string_equal(d.dev[0].name, "drive0");
	assert_int_equal(d.dev[0].size, 64 * MiB);
	assert_string_equal(d.dev[1].name, "x");
	assert_int_equal(d.dev[1].size, 4097);
}

/* Bytes after the HELLO (the first message) are not consumed. */
static void test_hello_trailing(void **state)
{
	static struct native_hello d;
	uint8_t buf[sizeof(golden_hello) + 3];
	size_t used = 0;

	(void)state;
	memcpy(buf, golden_hello, sizeof(golden_hello));
	memcpy(buf + sizeof(golden_hello), "\x01\x00\x00", 3);
	assert_int_equal(hello_decode_exact(buf, sizeof(buf), &d, &used), 0);
	assert_int_equal(used, sizeof(golden_hello));
}

/* The largest HELLO: 64 devices with 255-byte names, extreme values. */
static void test_hello_round_trip_max(void **state)
{
	static struct native_hello h, d;
	static uint8_t buf[NATIVE_HELLO_MAX];
	size_t used = 0;

	(void)state;
	memset(&h, 0, sizeof(h));
	h.version = NATIVE_VERSION;
	h.caps = NATIVE_CAP_KNOWN;
	h.chunk_size = WIRE_MAX_CHUNK_SIZE;
	h.ndev = NATIVE_MAX_DEVICES;
	for (int i = 0; i < NATIVE_MAX_DEVICES; i++) {
		memset(h.dev[i].name, 'a' + i % 26, WIRE_NAME_MAX);
		h.dev[i].name[0] = (char)('A' + i / 26);
		h.dev[i].name[WIRE_NAME_MAX] = '\0';
		h.dev[i].size = i == 0 ? UINT64_MAX : (uint64_t)i;
	}
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), NATIVE_HELLO_MAX);
	assert_int_equal(native_hello_encode(buf, sizeof(buf) - 1, &h), -ENOSPC);
	assert_int_equal(native_hello_decode(buf, sizeof(buf), &d, &used), 0);
	assert_int_equal(used, NATIVE_HELLO_MAX);
	assert_int_equal(d.ndev, NATIVE_MAX_DEVICES);
	assert_int_equal(d.caps, NATIVE_CAP_KNOWN);
	assert_int_equal(d.chunk_size, WIRE_MAX_CHUNK_SIZE);
	for (int i = 0; i < NATIVE_MAX_DEVICES; i++) {
		assert_string_equal(d.dev[i].name, h.dev[i].name);
		assert_int_equal(d.dev[i].size, h.dev[i].size);
	}
}

static void test_hello_round_trip_small(void **state)
{
	static struct native_hello h, d;
	uint8_t buf[64];
	size_t used = 0;
	int n;

	(void)state;
	memset(&h, 0, sizeof(h));
	h.version = NATIVE_VERSION;
	h.chunk_size = WIRE_MIN_CHUNK_SIZE;
	h.ndev = 1;
	strcpy(h.dev[0].name, "d");
	h.dev[0].size = 1;
	n = native_hello_encode(buf, sizeof(buf), &h);
	assert_int_equal(n, 22 + 1 + 1 + 8);
	assert_int_equal(native_hello_encode(buf, (size_t)n - 1, &h), -ENOSPC);
	assert_int_equal(native_hello_encode(buf, (size_t)n, &h), n);
	assert_int_equal(native_hello_decode(buf, (size_t)n, &d, &used), 0);
	assert_int_equal(d.caps, 0);
	assert_int_equal(d.chunk_size, WIRE_MIN_CHUNK_SIZE);
	assert_string_equal(d.dev[0].name, "d");
}

/* Every prefix is -EAGAIN, asking for 8, then 22, then per device the
 * length byte, then name + size. */
static void test_hello_prefixes(void **state)
{
	static struct native_hello d;
	size_t prev = 0;

	(void)state;
	for (size_t plen = 0; plen < sizeof(golden_hello); plen++) {
		size_t used = 0, want;

		assert_int_equal(hello_decode_exact(golden_hello, plen, &d, &used), -EAGAIN);
		if (plen < 8)
			want = 8;
		else if (plen < 22)
			want = 22;
		else if (plen < 23)
			want = 23;
		else if (plen < 37)
			want = 37; /* 23 + "drive0" + be64 */
		else if (plen < 38)
			want = 38;
		else
			want = 47; /* 38 + "x" + be64 */
		assert_int_equal(used, want);
		assert_true(used > plen);
		assert_true(used >= prev);
		prev = used;
	}
}

static void hello_patched(size_t at, const uint8_t *bytes, size_t n, int err, const char *msg)
{
	static struct native_hello d;
	uint8_t buf[sizeof(golden_hello)];
	size_t used;

	memcpy(buf, golden_hello, sizeof(buf));
	memcpy(buf + at, bytes, n);
	expect_error(hello_decode_exact(buf, sizeof(buf), &d, &used), err, msg);
}

static void test_hello_errors(void **state)
{
	static struct native_hello d;
	size_t used;

	(void)state;
	hello_patched(0, (const uint8_t *)"BLKMIG\n\r", 8, EBADMSG,
		      "hello: bad magic 0x424c4b4d49470a0d (not a blkmig native stream)");
	hello_patched(0, (const uint8_t *)"QEVM\0\0\0\3", 8, EBADMSG,
		      "hello: bad magic 0x5145564d00000003 (not a blkmig native stream; it looks "
		      "like a QEMU migration stream)");
	/* Magic is refused with only 8 bytes. */
	expect_error(hello_decode_exact((const uint8_t *)"GET / HT", 8, &d, &used), EBADMSG,
		     "hello: bad magic 0x474554202f204854 (not a blkmig native stream)");

	hello_patched(8, (const uint8_t *)"\0\0\0\1", 4, EPROTONOSUPPORT,
		      "hello: unsupported version 1 (this blkmig speaks 2)");
	hello_patched(8, (const uint8_t *)"\0\0\0\0", 4, EPROTONOSUPPORT,
		      "hello: unsupported version 0 (this blkmig speaks 2)");
	hello_patched(8, (const uint8_t *)"\xff\xff\xff\xff", 4, EPROTONOSUPPORT,
		      "hello: unsupported version 4294967295 (this blkmig speaks 2)");

	hello_patched(12, (const uint8_t *)"\0\0\0\x29", 4, EBADMSG,
		      "hello: unknown capability bits 0x20 (known 0x1f)");
	hello_patched(12, (const uint8_t *)"\x80\0\0\0", 4, EBADMSG,
		      "hello: unknown capability bits 0x80000000 (known 0x1f)");

	hello_patched(16, (const uint8_t *)"\0\0\0\0", 4, EBADMSG,
		      "hello: invalid chunk size 0 (must be a power of two from 4096 to 16777216)");
	hello_patched(16, (const uint8_t *)"\0\0\x10\x01", 4, EBADMSG,
		      "hello: invalid chunk size 4097 (must be a power of two from 4096 to "
		      "16777216)");
	hello_patched(16, (const uint8_t *)"\0\0\x08\0", 4, EBADMSG,
		      "hello: invalid chunk size 2048 (must be a power of two from 4096 to "
		      "16777216)");
	hello_patched(16, (const uint8_t *)"\x02\0\0\0", 4, EBADMSG,
		      "hello: invalid chunk size 33554432 (must be a power of two from 4096 to "
		      "16777216)");

	hello_patched(36, (const uint8_t *)"\0\0", 2, EBADMSG,
		      "hello: invalid device count 0 (must be 1..64)");
	hello_patched(36, (const uint8_t *)"\0\x41", 2, EBADMSG,
		      "hello: invalid device count 65 (must be 1..64)");
	hello_patched(36, (const uint8_t *)"\xff\xff", 2, EBADMSG,
		      "hello: invalid device count 65535 (must be 1..64)");

	hello_patched(53, (const uint8_t *)"\0", 1, EBADMSG, "hello: device 1 has an empty name");
	hello_patched(38, (const uint8_t *)"\0", 1, EBADMSG, "hello: device 0 has an empty name");
	hello_patched(41, (const uint8_t *)"\0", 1, EBADMSG,
		      "hello: device 0 name contains a NUL byte");
	hello_patched(45, (const uint8_t *)"\0\0\0\0\0\0\0\0", 8, EBADMSG,
		      "hello: device 'drive0' has size 0");
}

static void test_hello_duplicate(void **state)
{
	/* clang-format off */
	static const uint8_t dup[] = {
		0x42, 0x4c, 0x4b, 0x4d, 0x49, 0x47, 0x0d, 0x0a, 0, 0, 0, 2, 0, 0, 0, 0,
		0x00, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x00, 0x02,
		0x02, 'h', 'd', 0, 0, 0, 0, 0, 0, 0, 1,
		0x02, 'h', 'd', 0, 0, 0, 0, 0, 0, 0, 2,
	};
	/* clang-format on */
	/* clang-format off */
	static const uint8_t ctl[] = {
		0x42, 0x4c, 0x4b, 0x4d, 0x49, 0x47, 0x0d, 0x0a, 0, 0, 0, 2, 0, 0, 0, 0,
		0x00, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x00, 0x01,
		0x03, 'a', 0x1b, 'b', 0, 0, 0, 0, 0, 0, 0, 0,
	};
	/* clang-format on */
	static struct native_hello d;
	size_t used;

	(void)state;
	expect_error(hello_decode_exact(dup, sizeof(dup), &d, &used), EBADMSG,
		     "hello: duplicate device name 'hd'");
	/* A control character in a name is refused, and shown escaped. */
	expect_error(hello_decode_exact(ctl, sizeof(ctl), &d, &used), EBADMSG,
		     "hello: device 0 name 'a\\x1bb' has control characters");
}

static void test_hello_encode_errors(void **state)
{
	static struct native_hello h;
	uint8_t buf[NATIVE_HELLO_MAX];

	(void)state;
	golden_hello_struct(&h);
	h.version = 0;
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: cannot encode version 0 (this blkmig speaks 1)");
	golden_hello_struct(&h);
	h.caps = 0x10;
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: unknown capability bits 0x10 (known 0x7)");
	golden_hello_struct(&h);
	h.chunk_size = 3U << 20;
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), -EINVAL);
	golden_hello_struct(&h);
	h.ndev = 0;
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: invalid device count 0 (must be 1..64)");
	h.ndev = NATIVE_MAX_DEVICES + 1;
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), -EINVAL);
	golden_hello_struct(&h);
	h.dev[1].name[0] = '\0';
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: device 1 has an empty name");
	golden_hello_struct(&h);
	memset(h.dev[1].name, 'z', sizeof(h.dev[1].name));
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: device 1 name is longer than 255 bytes");
	golden_hello_struct(&h);
	strcpy(h.dev[1].name, "drive0");
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: duplicate device name 'drive0'");
	golden_hello_struct(&h);
	h.dev[0].size = 0;
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: device 'drive0' has size 0");
	golden_hello_struct(&h);
	expect_error(native_hello_encode(buf, sizeof(golden_hello) - 1, &h), ENOSPC,
		     "encode HELLO: buffer of 46 bytes is too small (need 47)");
}

/* ------------------------------------------------------------------------ */
/* Frame header                                                             */

#define ALLOW_ALL                                                                                  \
	(NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |                     \
	 NATIVE_ALLOW(NATIVE_MSG_ABORT) | NATIVE_ALLOW(NATIVE_MSG_READY) |                         \
	 NATIVE_ALLOW(NATIVE_MSG_ACK) | NATIVE_ALLOW(NATIVE_MSG_ERROR))

static void test_frame_ok(void **state)
{
	static const uint8_t types[] = { NATIVE_MSG_COMPLETE, NATIVE_MSG_ABORT, NATIVE_MSG_READY,
					 NATIVE_MSG_ERROR };
	uint8_t hdr[NATIVE_FRAME_HDR];
	uint8_t type = 0;
	uint32_t len = 1;

	(void)state;
	/* The six allow bits are distinct. */
	assert_int_equal(__builtin_popcountll(ALLOW_ALL), 6);

	for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
		hdr[0] = types[i];
		put_be32(hdr + 1, 33);
		assert_int_equal(native_frame_header(hdr, NATIVE_ALLOW(types[i]), &type, &len), 0);
		assert_int_equal(type, types[i]);
		assert_int_equal(len, 33);
		put_be32(hdr + 1, NATIVE_MSG_MAX);
		assert_int_equal(native_frame_header(hdr, ALLOW_ALL, &type, &len), 0);
		assert_int_equal(len, NATIVE_MSG_MAX);
	}

	/* ACK: empty body. */
	memcpy(hdr, "\x82\0\0\0\0", 5);
	assert_int_equal(native_frame_header(hdr, NATIVE_ALLOW(NATIVE_MSG_ACK), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_ACK);
	assert_int_equal(len, 0);

	/* BLOCKS is unframed: hdr[1..4] are record bytes, whatever they are. */
	memcpy(hdr, "\x01\xff\xff\xff\xff", 5);
	len = 99;
	assert_int_equal(native_frame_header(hdr, NATIVE_ALLOW(NATIVE_MSG_BLOCKS), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_BLOCKS);
	assert_int_equal(len, 0);
}

static void check_frame(const char *bytes, uint64_t allowed, const char *msg)
{
	uint8_t hdr[NATIVE_FRAME_HDR];
	uint8_t type;
	uint32_t len;

	memcpy(hdr, bytes, NATIVE_FRAME_HDR);
	err_clear();
	expect_error(native_frame_header(hdr, allowed, &type, &len), EBADMSG, msg);
}

static void test_frame_errors(void **state)
{
	(void)state;
	check_frame("\x00\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x00");
	check_frame("\x05\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x05");
	check_frame("\x80\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x80");
	check_frame("\xff\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0xff");
	/* 0x21 and 0xa1 share allow bits with BLOCKS and READY. */
	check_frame("\x21\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x21");
	check_frame("\xa1\0\0\0\x04", ALLOW_ALL, "frame: unknown message type 0xa1");

	check_frame("\x02\0\0\0\x21", NATIVE_ALLOW(NATIVE_MSG_READY),
		    "frame: unexpected COMPLETE message (type 0x02)");
	check_frame("\x81\0\0\0\x04",
		    NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
			NATIVE_ALLOW(NATIVE_MSG_ABORT),
		    "frame: unexpected READY message (type 0x81)");
	check_frame("\x01\0\0\0\0", NATIVE_ALLOW(NATIVE_MSG_ACK) | NATIVE_ALLOW(NATIVE_MSG_ERROR),
		    "frame: unexpected BLOCKS message (type 0x01)");
	check_frame("\x83\0\0\0\x04", 0, "frame: unexpected ERROR message (type 0x83)");

	check_frame("\x83\x00\x01\x00\x01", ALLOW_ALL,
		    "frame: ERROR message length 65537 exceeds the maximum 65536");
	check_frame("\x02\xff\xff\xff\xff", ALLOW_ALL,
		    "frame: COMPLETE message length 4294967295 exceeds the maximum 65536");
	check_frame("\x82\0\0\0\x01", ALLOW_ALL,
		    "frame: ACK message with a 1-byte body (must be empty)");
}

/* ------------------------------------------------------------------------ */
/* COMPLETE                                                                 */

/* clang-format off */
static const uint8_t golden_complete[] = {
	0x02, 0x00, 0x00, 0x00, 0x25,                   /* COMPLETE, 37 bytes */
	0x00, 0x00, 0x00, 0x03,                         /* attempt 3 */
	0x00, 0x01,                                     /* 1 device */
	0x06, 'd',  'r',  'i',  'v',  'e',  '0',        /* "drive0" */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, /* 64 chunks */
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, /* digest, high half */
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, /* digest, low half */
};
/* clang-format on */

static void test_complete_golden(void **state)
{
	static struct native_complete c, d;
	uint8_t buf[128];

	(void)state;
	memset(&c, 0, sizeof(c));
	c.attempt = 3;
	c.ndev = 1;
	strcpy(c.dev[0].name, "drive0");
	c.dev[0].chunks = 64;
	for (int i = 0; i < NATIVE_DIGEST_LEN; i++)
		c.dev[0].digest[i] = (uint8_t)i;
	assert_int_equal(native_complete_encode(buf, sizeof(buf), &c), sizeof(golden_complete));
	assert_memory_equal(buf, golden_complete, sizeof(golden_complete));
	expect_error(native_complete_encode(buf, sizeof(golden_complete) - 1, &c), ENOSPC,
		     "encode COMPLETE: buffer of 41 bytes is too small (need 42)");

	assert_int_equal(complete_decode_exact(golden_complete + NATIVE_FRAME_HDR,
					       sizeof(golden_complete) - NATIVE_FRAME_HDR, &d),
			 0);
	assert_int_equal(d.attempt, 3);
	assert_int_equal(d.ndev, 1);
	assert_string_equal(d.dev[0].name, "drive0");
	assert_int_equal(d.dev[0].chunks, 64);
	assert_memory_equal(d.dev[0].digest, c.dev[0].digest, NATIVE_DIGEST_LEN);
}

static void test_complete_round_trip_max(void **state)
{
	static struct native_complete c, d;
	static uint8_t buf[NATIVE_FRAME_HDR + NATIVE_MSG_MAX];
	uint8_t type;
	uint32_t len;
	int n;

	(void)state;
	memset(&c, 0, sizeof(c));
	c.attempt = UINT32_MAX;
	c.ndev = NATIVE_MAX_DEVICES;
	for (int i = 0; i < NATIVE_MAX_DEVICES; i++) {
		snprintf(c.dev[i].name, sizeof(c.dev[i].name), "dev%d", i);
		if (i == 7) {
			memset(c.dev[i].name, 'q', WIRE_NAME_MAX);
			c.dev[i].name[WIRE_NAME_MAX] = '\0';
		}
		c.dev[i].chunks = i == 3 ? UINT64_MAX : (uint64_t)i * 1000;
		memset(c.dev[i].digest, 0xf0 ^ i, NATIVE_DIGEST_LEN);
	}
	n = native_complete_encode(buf, sizeof(buf), &c);
	assert_true(n > 0);
	assert_int_equal(native_frame_header(buf, NATIVE_ALLOW(NATIVE_MSG_COMPLETE), &type, &len),
			 0);
	assert_int_equal(type, NATIVE_MSG_COMPLETE);
	assert_int_equal(len, (uint32_t)n - NATIVE_FRAME_HDR);
	assert_int_equal(complete_decode_exact(buf + NATIVE_FRAME_HDR, len, &d), 0);
	assert_int_equal(d.ndev, NATIVE_MAX_DEVICES);
	for (int i = 0; i < NATIVE_MAX_DEVICES; i++) {
		assert_string_equal(d.dev[i].name, c.dev[i].name);
		assert_int_equal(d.dev[i].chunks, c.dev[i].chunks);
		assert_memory_equal(d.dev[i].digest, c.dev[i].digest, NATIVE_DIGEST_LEN);
	}
}

static void test_complete_truncated(void **state)
{
	static struct native_complete d;
	const uint8_t *body = golden_complete + NATIVE_FRAME_HDR;
	const size_t blen = sizeof(golden_complete) - NATIVE_FRAME_HDR;
	uint8_t padded[sizeof(golden_complete)];

	(void)state;
	for (size_t plen = 0; plen < blen; plen++)
		assert_int_equal(complete_decode_exact(body, plen, &d), -EBADMSG);
	expect_error(complete_decode_exact(body, 0, &d), EBADMSG,
		     "complete: body truncated (0 bytes)");
	expect_error(complete_decode_exact(body, 6, &d), EBADMSG,
		     "complete: body truncated at device 0 of 1");
	expect_error(complete_decode_exact(body, blen - 1, &d), EBADMSG,
		     "complete: body truncated at device 0 of 1");

	memcpy(padded, body, blen);
	padded[blen] = 0;
	expect_error(complete_decode_exact(padded, blen + 1, &d), EBADMSG,
		     "complete: 1 trailing bytes after 1 devices");
}

static void complete_patched(size_t at, const char *bytes, size_t n, const char *msg)
{
	static struct native_complete d;
	uint8_t body[sizeof(golden_complete) - NATIVE_FRAME_HDR];

	memcpy(body, golden_complete + NATIVE_FRAME_HDR, sizeof(body));
	memcpy(body + at, bytes, n);
	expect_error(complete_decode_exact(body, sizeof(body), &d), EBADMSG, msg);
}

static void test_complete_errors(void **state)
{
	static const uint8_t dup[] = {
		0x00, 0x02, 0x01, 'a', 0, 0, 0, 0, 0, 0, 0,    1,   0, 0, 0, 0, 0, 0,
		0,    0,    0,	  0,   0, 0, 0, 0, 0, 0, 0x01, 'a', 0, 0, 0, 0, 0, 0,
		0,    1,    0,	  0,   0, 0, 0, 0, 0, 0, 0,    0,   0, 0, 0, 0, 0, 0,
	};
	static struct native_complete c, d;
	uint8_t buf[128];

	(void)state;
	complete_patched(0, "\0\0", 2, "complete: invalid device count 0 (must be 1..64)");
	complete_patched(0, "\0\x41", 2, "complete: invalid device count 65 (must be 1..64)");
	/* Claiming two devices where one is sent is a truncation. */
	complete_patched(0, "\0\x02", 2, "complete: body truncated at device 1 of 2");
	complete_patched(2, "\0", 1, "complete: device 0 has an empty name");
	complete_patched(3, "\0", 1, "complete: device 0 name contains a NUL byte");
	complete_patched(3, "\n", 1, "complete: device 0 name '\\x0arive0' has control characters");
	/* A shorter name leaves the body too long. */
	complete_patched(2, "\x05", 1, "complete: 1 trailing bytes after 1 devices");
	expect_error(complete_decode_exact(dup, sizeof(dup), &d), EBADMSG,
		     "complete: duplicate device name 'a'");

	memset(&c, 0, sizeof(c));
	expect_error(native_complete_encode(buf, sizeof(buf), &c), EINVAL,
		     "complete: invalid device count 0 (must be 1..64)");
	c.ndev = 2;
	strcpy(c.dev[0].name, "a");
	expect_error(native_complete_encode(buf, sizeof(buf), &c), EINVAL,
		     "complete: device 1 has an empty name");
	strcpy(c.dev[1].name, "a");
	expect_error(native_complete_encode(buf, sizeof(buf), &c), EINVAL,
		     "complete: duplicate device name 'a'");
}

/* ------------------------------------------------------------------------ */
/* ERROR / ABORT                                                            */

/* clang-format off */
static const uint8_t golden_error[] = {
	0x83, 0x00, 0x00, 0x00, 0x0d, /* ERROR, 13 bytes */
	0x00, 0x00, 0x00, 0x05,       /* EIO */
	'd',  'i',  's',  'k',  ' ',  'f', 'u', 'l', 'l',
};

static const uint8_t golden_abort_empty[] = {
	0x03, 0x00, 0x00, 0x00, 0x04, /* ABORT, 4 bytes */
	0x00, 0x00, 0x00, 0x7d,       /* ECANCELED */
};
/* clang-format on */

static void test_error_golden(void **state)
{
	static struct native_error e, d;
	uint8_t buf[64];

	(void)state;
	memset(&e, 0, sizeof(e));
	e.err = 5;
	strcpy(e.reason, "disk full");
	assert_int_equal(native_error_encode(buf, sizeof(buf), NATIVE_MSG_ERROR, &e),
			 sizeof(golden_error));
	assert_memory_equal(buf, golden_error, sizeof(golden_error));
	/* ABORT is the same body under another type byte. */
	assert_int_equal(native_error_encode(buf, sizeof(buf), NATIVE_MSG_ABORT, &e),
			 sizeof(golden_error));
	assert_int_equal(buf[0], NATIVE_MSG_ABORT);
	assert_memory_equal(buf + 1, golden_error + 1, sizeof(golden_error) - 1);

	assert_int_equal(error_decode_exact(golden_error + 5, sizeof(golden_error) - 5, &d), 0);
	assert_int_equal(d.err, 5);
	assert_string_equal(d.reason, "disk full");

	e.err = 125;
	e.reason[0] = '\0';
	assert_int_equal(native_error_encode(buf, sizeof(buf), NATIVE_MSG_ABORT, &e),
			 sizeof(golden_abort_empty));
	assert_memory_equal(buf, golden_abort_empty, sizeof(golden_abort_empty));
	assert_int_equal(error_decode_exact(golden_abort_empty + 5, 4, &d), 0);
	assert_int_equal(d.err, 125);
	assert_string_equal(d.reason, "");
}

static void test_error_long_reason(void **state)
{
	static struct native_error e, d;
	static uint8_t buf[NATIVE_FRAME_HDR + 4 + NATIVE_REASON_MAX + 100];
	uint8_t type;
	uint32_t len;

	(void)state;
	e.err = 28;
	memset(e.reason, 'r', NATIVE_REASON_MAX);
	e.reason[NATIVE_REASON_MAX] = '\0';
	assert_int_equal(native_error_encode(buf, sizeof(buf), NATIVE_MSG_ERROR, &e),
			 NATIVE_FRAME_HDR + 4 + NATIVE_REASON_MAX);
	assert_int_equal(native_frame_header(buf, ALLOW_ALL, &type, &len), 0);
	assert_int_equal(len, 4 + NATIVE_REASON_MAX);
	assert_int_equal(error_decode_exact(buf + NATIVE_FRAME_HDR, len, &d), 0);
	assert_int_equal(strlen(d.reason), NATIVE_REASON_MAX);

	/* A peer may send a longer reason: it is cut, not refused. */
	memset(buf + NATIVE_FRAME_HDR + 4, 's', NATIVE_REASON_MAX + 100);
	assert_int_equal(
	    error_decode_exact(buf + NATIVE_FRAME_HDR, 4 + NATIVE_REASON_MAX + 100, &d), 0);
	assert_int_equal(strlen(d.reason), NATIVE_REASON_MAX);
	assert_int_equal(d.reason[NATIVE_REASON_MAX - 1], 's');
}

static void check_reason(const char *wire, size_t n, const char *want)
{
	static struct native_error d;
	uint8_t body[64];

	assert_true(n + 4 <= sizeof(body));
	put_be32(body, 5);
	memcpy(body + 4, wire, n);
	assert_int_equal(error_decode_exact(body, n + 4, &d), 0);
	assert_string_equal(d.reason, want);
}

static void test_error_sanitise(void **state)
{
	(void)state;
	check_reason("plain text", 10, "plain text");
	check_reason("a\nb\tc\x1b[2J", 9, "a?b?c?[2J");
	check_reason("del\x7f", 4, "del?");
	check_reason("nul\0x", 5, "nul?x");
	check_reason("caf\xc3\xa9", 5, "caf\xc3\xa9");		 /* é kept */
	check_reason("\xe2\x82\xac 5", 5, "\xe2\x82\xac 5");	 /* € kept */
	check_reason("\xf0\x9f\x92\xbe", 4, "\xf0\x9f\x92\xbe"); /* U+1F4BE kept */
	check_reason("\xc2\x9b"
		     "31m",
		     5, "??31m");		     /* C1 CSI */
	check_reason("\xc0\xaf", 2, "??");	     /* overlong '/' */
	check_reason("\xe0\x80\xaf", 3, "???");	     /* overlong '/' */
	check_reason("\xed\xa0\x80", 3, "???");	     /* surrogate */
	check_reason("\xf4\x90\x80\x80", 4, "????"); /* > U+10FFFF */
	check_reason("\xff\xfe", 2, "??");
	check_reason("x\xc3", 2, "x?"); /* cut sequence */
	check_reason("\x80y", 2, "?y"); /* stray continuation */
}

static void test_error_errors(void **state)
{
	static struct native_error e, d;
	uint8_t body[16];
	uint8_t buf[64];

	(void)state;
	for (size_t plen = 0; plen < 4; plen++)
		assert_int_equal(error_decode_exact(golden_error + 5, plen, &d), -EBADMSG);
	expect_error(error_decode_exact(golden_error + 5, 3, &d), EBADMSG,
		     "error/abort: body truncated (3 bytes, need at least 4)");

	memcpy(body, "\0\0\0\0oops", 8);
	expect_error(error_decode_exact(body, 8, &d), EBADMSG,
		     "error/abort: errno 0 out of range 1..4095 (reason: oops)");
	memcpy(body, "\0\0\x10\0\x1b", 5);
	expect_error(error_decode_exact(body, 5, &d), EBADMSG,
		     "error/abort: errno 4096 out of range 1..4095 (reason: ?)");

	memset(&e, 0, sizeof(e));
	e.err = 5;
	expect_error(native_error_encode(buf, sizeof(buf), NATIVE_MSG_READY, &e), EINVAL,
		     "encode ERROR/ABORT: wrong message type 0x81 (READY)");
	e.err = 0;
	expect_error(native_error_encode(buf, sizeof(buf), NATIVE_MSG_ERROR, &e), EINVAL,
		     "encode ERROR: errno 0 out of range 1..4095");
	e.err = 5;
	strcpy(e.reason, "abc");
	expect_error(native_error_encode(buf, 11, NATIVE_MSG_ABORT, &e), ENOSPC,
		     "encode ABORT: buffer of 11 bytes is too small (need 12)");
	assert_int_equal(native_error_encode(buf, 12, NATIVE_MSG_ABORT, &e), 12);
}

/* ------------------------------------------------------------------------ */
/* READY / ACK / names                                                      */

static void test_ready_ack(void **state)
{
	static const uint8_t golden_ready[] = { 0x81, 0, 0, 0, 4, 0, 0, 0, 1 };
	static const uint8_t golden_ack[] = { 0x82, 0, 0, 0, 4, 0, 0, 0, 7 };
	uint8_t buf[16];
	uint32_t version = 0;
	uint8_t *b;

	(void)state;
	assert_int_equal(native_ready_encode(buf, sizeof(buf), NATIVE_VERSION), 9);
	assert_memory_equal(buf, golden_ready, 9);
	expect_error(native_ready_encode(buf, 8, NATIVE_VERSION), ENOSPC,
		     "encode READY: buffer of 8 bytes is too small (need 9)");
	assert_int_equal(native_ack_encode(buf, sizeof(buf), 7), 9);
	assert_memory_equal(buf, golden_ack, 9);
	expect_error(native_ack_encode(buf, 8, 7), ENOSPC,
		     "encode ACK: buffer of 8 bytes is too small (need 9)");
	expect_error(native_ack_encode(buf, sizeof(buf), 0), EINVAL,
		     "encode ACK: attempt 0 (attempts count from 1)");

	b = heap_copy(golden_ready + 5, 4);
	assert_int_equal(native_ready_decode(b, 4, &version), 0);
	assert_int_equal(version, 1);
	expect_error(native_ready_decode(b, 3, &version), EBADMSG,
		     "ready: body of 3 bytes (expected 4)");
	free(b);
	b = heap_copy(golden_ready + 4, 5);
	expect_error(native_ready_decode(b, 5, &version), EBADMSG,
		     "ready: body of 5 bytes (expected 4)");
	free(b);
	expect_error(native_ready_decode(NULL, 0, &version), EBADMSG,
		     "ready: body of 0 bytes (expected 4)");
}

static void test_synced(void **state)
{
	static const uint8_t golden[] = { 0x84, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2 };
	uint8_t buf[16], type = 0;
	uint32_t len = 0;
	uint64_t n = 0;
	uint8_t *b;

	(void)state;
	assert_int_equal(native_synced_encode(buf, sizeof(buf), 0x102), 13);
	assert_memory_equal(buf, golden, 13);
	expect_error(native_synced_encode(buf, 12, 1), ENOSPC,
		     "encode SYNCED: buffer of 12 bytes is too small (need 13)");
	assert_int_equal(native_frame_header(golden, NATIVE_ALLOW(NATIVE_MSG_SYNCED), &type, &len),
			 0);
	assert_int_equal(type, NATIVE_MSG_SYNCED);
	assert_int_equal(len, 8);
	expect_error(native_frame_header(golden, NATIVE_ALLOW(NATIVE_MSG_ACK), &type, &len),
		     EBADMSG, "frame: unexpected SYNCED message (type 0x84)");
	b = heap_copy(golden + 5, 8);
	assert_int_equal(native_synced_decode(b, 8, &n), 0);
	assert_int_equal(n, 0x102);
	expect_error(native_synced_decode(b, 7, &n), EBADMSG,
		     "synced: body of 7 bytes (expected 8)");
	free(b);
}

static void test_wack(void **state)
{
	static const uint8_t golden[] = { 0x85, 0, 0, 0, 8, 0, 0, 0, 0, 0, 1, 0, 9 };
	uint8_t buf[16], type = 0;
	uint32_t len = 0;
	uint64_t n = 0;
	uint8_t *b;

	(void)state;
	assert_int_equal(native_wack_encode(buf, sizeof(buf), 0x10009), 13);
	assert_memory_equal(buf, golden, 13);
	assert_int_equal(native_frame_header(golden, NATIVE_ALLOW(NATIVE_MSG_WACK), &type, &len),
			 0);
	assert_int_equal(type, NATIVE_MSG_WACK);
	assert_int_equal(len, 8);
	expect_error(native_frame_header(golden, NATIVE_ALLOW(NATIVE_MSG_SYNCED), &type, &len),
		     EBADMSG, "frame: unexpected WACK message (type 0x85)");
	b = heap_copy(golden + 5, 8);
	assert_int_equal(native_wack_decode(b, 8, &n), 0);
	assert_int_equal(n, 0x10009);
	expect_error(native_wack_decode(b, 9, &n), EBADMSG, "wack: body of 9 bytes (expected 8)");
	free(b);
}

static void test_msg_names(void **state)
{
	(void)state;
	assert_string_equal(native_msg_name(NATIVE_MSG_BLOCKS), "BLOCKS");
	assert_string_equal(native_msg_name(NATIVE_MSG_COMPLETE), "COMPLETE");
	assert_string_equal(native_msg_name(NATIVE_MSG_ABORT), "ABORT");
	assert_string_equal(native_msg_name(NATIVE_MSG_READY), "READY");
	assert_string_equal(native_msg_name(NATIVE_MSG_ACK), "ACK");
	assert_string_equal(native_msg_name(NATIVE_MSG_ERROR), "ERROR");
	assert_string_equal(native_msg_name(NATIVE_MSG_SYNCED), "SYNCED");
	assert_string_equal(native_msg_name(NATIVE_MSG_WACK), "WACK");
	assert_string_equal(native_msg_name(0), "unknown");
	assert_string_equal(native_msg_name(0x21), "unknown");
	assert_string_equal(native_msg_name(0xff), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_golden),
		cmocka_unit_test(test_hello_trailing),
		cmocka_unit_test(test_hello_round_trip_max),
		cmocka_unit_test(test_hello_round_trip_small),
		cmocka_unit_test(test_hello_prefixes),
		cmocka_unit_test(test_hello_errors),
		cmocka_unit_test(test_hello_duplicate),
		cmocka_unit_test(test_hello_encode_errors),
		cmocka_unit_test(test_frame_ok),
		cmocka_unit_test(test_frame_errors),
		cmocka_unit_test(test_complete_golden),
		cmocka_unit_test(test_complete_round_trip_max),
		cmocka_unit_test(test_complete_truncated),
		cmocka_unit_test(test_complete_errors),
		cmocka_unit_test(test_error_golden),
		cmocka_unit_test(test_error_long_reason),
		cmocka_unit_test(test_error_sanitise),
		cmocka_unit_test(test_error_errors),
		cmocka_unit_test(test_ready_ack),
		cmocka_unit_test(test_synced),
		cmocka_unit_test(test_wack),
		cmocka_unit_test(test_msg_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
