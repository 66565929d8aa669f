/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the native envelope codec (src/wire/native.c): golden bytes
 * for every message, round trips (at the largest sizes where a message has
 * a variable part), every -EAGAIN prefix of HELLO, each decoder and encoder
 * error with its message, and truncated or padded bodies.
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

static int state_decode_exact(const uint8_t *p, size_t len, struct native_state *st)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_state_decode(b, len, st);
	free(b);
	return r;
}

static int sums_decode_exact(const uint8_t *p, size_t len, struct native_sums *sm)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_sums_decode(b, len, sm);
	free(b);
	return r;
}

static int verdict_decode_exact(const uint8_t *p, size_t len, struct native_verdict *v)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_verdict_decode(b, len, v);
	free(b);
	return r;
}

static int attempt_decode_exact(const char *what, const uint8_t *p, size_t len, uint32_t *attempt)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_attempt_decode(what, b, len, attempt);
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
	0x00, 0x00, 0x00, 0x03,                         /* version 3 */
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
	assert_int_equal(d.version, 3);
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
	/* Every bit a HELLO may carry at once (a verify has no write lane). */
	h.caps = NATIVE_CAP_KNOWN & ~NATIVE_CAP_VERIFY;
	h.chunk_size = WIRE_MAX_CHUNK_SIZE;
	h.ndev = NATIVE_MAX_DEVICES;
	h.lanes = NATIVE_LANES_MAX;
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
	assert_int_equal(d.caps, h.caps);
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
	assert_int_equal(n, 38 + 1 + 1 + 8);
	assert_int_equal(native_hello_encode(buf, (size_t)n - 1, &h), -ENOSPC);
	assert_int_equal(native_hello_encode(buf, (size_t)n, &h), n);
	assert_int_equal(native_hello_decode(buf, (size_t)n, &d, &used), 0);
	assert_int_equal(d.caps, 0);
	assert_int_equal(d.chunk_size, WIRE_MIN_CHUNK_SIZE);
	for (int i = 0; i < NATIVE_ID_LEN; i++)
		assert_int_equal(d.id[i], 0);
	assert_string_equal(d.dev[0].name, "d");
}

/* Every prefix is -EAGAIN, asking for 8, then 38 (the fixed part, migration
 * id included), then per device the length byte, then name + size. */
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
		else if (plen < 12)
			want = 12; /* the version first */
		else if (plen < 38)
			want = 38;
		else if (plen < 39)
			want = 39;
		else if (plen < 53)
			want = 53; /* 39 + "drive0" + be64 */
		else if (plen < 54)
			want = 54;
		else
			want = 63; /* 54 + "x" + be64 */
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
	/* A version 1 HELLO for one short-named device is 37 bytes, less than
	 * version 2's fixed part: refused, not waited on. */
	static const uint8_t v1[37] = {
		0x42, 0x4c, 0x4b, 0x4d, 0x49, 0x47, 0x0d, 0x0a, 0, 0, 0, 1
	};
	static struct native_hello d;
	size_t used;

	(void)state;
	expect_error(hello_decode_exact(v1, sizeof(v1), &d, &used), EPROTONOSUPPORT,
		     "hello: unsupported version 1 (this blkmig speaks 3)");
	hello_patched(0, (const uint8_t *)"BLKMIG\n\r", 8, EBADMSG,
		      "hello: bad magic 0x424c4b4d49470a0d (not a blkmig native stream)");
	hello_patched(0, (const uint8_t *)"QEVM\0\0\0\3", 8, EBADMSG,
		      "hello: bad magic 0x5145564d00000003 (not a blkmig native stream; it looks "
		      "like a QEMU migration stream)");
	/* Magic is refused with only 8 bytes. */
	expect_error(hello_decode_exact((const uint8_t *)"GET / HT", 8, &d, &used), EBADMSG,
		     "hello: bad magic 0x474554202f204854 (not a blkmig native stream)");

	hello_patched(8, (const uint8_t *)"\0\0\0\1", 4, EPROTONOSUPPORT,
		      "hello: unsupported version 1 (this blkmig speaks 3)");
	hello_patched(8, (const uint8_t *)"\0\0\0\0", 4, EPROTONOSUPPORT,
		      "hello: unsupported version 0 (this blkmig speaks 3)");
	hello_patched(8, (const uint8_t *)"\xff\xff\xff\xff", 4, EPROTONOSUPPORT,
		      "hello: unsupported version 4294967295 (this blkmig speaks 3)");

	hello_patched(12, (const uint8_t *)"\0\0\0\x49", 4, EBADMSG,
		      "hello: unknown capability bits 0x40 (known 0x3bf)");
	hello_patched(12, (const uint8_t *)"\x80\0\0\0", 4, EBADMSG,
		      "hello: unknown capability bits 0x80000000 (known 0x3bf)");
	/* The write lane only with mirrored writes, and never in a verify. */
	hello_patched(12, (const uint8_t *)"\0\0\x02\x00", 4, EBADMSG,
		      "hello: a write lane (WLANE) without mirrored writes (MIRROR)");
	hello_patched(12, (const uint8_t *)"\0\0\x02\x14", 4, EBADMSG,
		      "hello: a write lane (WLANE) in a verify (VERIFY)");

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
		0x42, 0x4c, 0x4b, 0x4d, 0x49, 0x47, 0x0d, 0x0a, 0, 0, 0, 3, 0, 0, 0, 0,
		0x00, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x00, 0x02,
		0x02, 'h', 'd', 0, 0, 0, 0, 0, 0, 0, 1,
		0x02, 'h', 'd', 0, 0, 0, 0, 0, 0, 0, 2,
	};
	/* clang-format on */
	/* clang-format off */
	static const uint8_t ctl[] = {
		0x42, 0x4c, 0x4b, 0x4d, 0x49, 0x47, 0x0d, 0x0a, 0, 0, 0, 3, 0, 0, 0, 0,
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
		     "hello: cannot encode version 0 (this blkmig speaks 3)");
	golden_hello_struct(&h);
	h.version = 1;
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: cannot encode version 1 (this blkmig speaks 3)");
	golden_hello_struct(&h);
	h.caps = 0x70;
	expect_error(native_hello_encode(buf, sizeof(buf), &h), EINVAL,
		     "hello: unknown capability bits 0x40 (known 0x3bf)");
	/* FORWARD is a known bit now. */
	h.caps = NATIVE_CAP_FORWARD;
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), sizeof(golden_hello));
	/* DELTA and VERIFY are known bits now. */
	h.caps = NATIVE_CAP_DELTA | NATIVE_CAP_VERIFY;
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), sizeof(golden_hello));
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
		     "encode HELLO: buffer of 62 bytes is too small (need 63)");
}

/* ------------------------------------------------------------------------ */
/* Frame header                                                             */

#define ALLOW_ALL                                                                                  \
	(NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |                     \
	 NATIVE_ALLOW(NATIVE_MSG_ABORT) | NATIVE_ALLOW(NATIVE_MSG_COMMIT) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_VERDICT) | NATIVE_ALLOW(NATIVE_MSG_READY) |                       \
	 NATIVE_ALLOW(NATIVE_MSG_ACK) | NATIVE_ALLOW(NATIVE_MSG_ERROR) |                           \
	 NATIVE_ALLOW(NATIVE_MSG_SYNCED) | NATIVE_ALLOW(NATIVE_MSG_WACK) |                         \
	 NATIVE_ALLOW(NATIVE_MSG_STATE) | NATIVE_ALLOW(NATIVE_MSG_SUMS) |                          \
	 NATIVE_ALLOW(NATIVE_MSG_DONE) | NATIVE_ALLOW(NATIVE_MSG_EXPORT))

static void test_frame_ok(void **state)
{
	static const uint8_t types[] = { NATIVE_MSG_COMPLETE, NATIVE_MSG_ABORT,	 NATIVE_MSG_COMMIT,
					 NATIVE_MSG_VERDICT,  NATIVE_MSG_READY,	 NATIVE_MSG_ACK,
					 NATIVE_MSG_ERROR,    NATIVE_MSG_SYNCED, NATIVE_MSG_WACK,
					 NATIVE_MSG_STATE,    NATIVE_MSG_SUMS,	 NATIVE_MSG_DONE,
					 NATIVE_MSG_EXPORT };
	uint8_t hdr[NATIVE_FRAME_HDR];
	uint8_t type = 0;
	uint32_t len = 1;

	(void)state;
	/* The fourteen allow bits are distinct. */
	assert_int_equal(__builtin_popcountll(ALLOW_ALL), 14);

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

	/* ACK and COMMIT: a 4-byte body (the attempt).  The header does not
	 * judge their length any more; native_attempt_decode() does. */
	memcpy(hdr, "\x82\0\0\0\x04", 5);
	assert_int_equal(native_frame_header(hdr, NATIVE_ALLOW(NATIVE_MSG_ACK), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_ACK);
	assert_int_equal(len, 4);
	memcpy(hdr, "\x04\0\0\0\0", 5);
	assert_int_equal(native_frame_header(hdr, NATIVE_ALLOW(NATIVE_MSG_COMMIT), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_COMMIT);
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
	check_frame("\x06\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x06");
	check_frame("\x8c\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x8c");
	/* 0xa9 shares EXPORT's allow bit. */
	check_frame("\xa9\0\0\0\x04", ALLOW_ALL, "frame: unknown message type 0xa9");
	check_frame("\x80\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x80");
	check_frame("\xff\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0xff");
	/* 0x21 and 0xa1 share allow bits with BLOCKS and READY. */
	check_frame("\x21\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x21");
	check_frame("\xa1\0\0\0\x04", ALLOW_ALL, "frame: unknown message type 0xa1");
	/* Likewise 0x25 with VERDICT, 0xa6 and 0xc7 with STATE and SUMS. */
	check_frame("\x25\0\0\0\0", ALLOW_ALL, "frame: unknown message type 0x25");
	check_frame("\xa6\0\0\0\x10", ALLOW_ALL, "frame: unknown message type 0xa6");
	check_frame("\xc7\0\0\0\x10", ALLOW_ALL, "frame: unknown message type 0xc7");

	check_frame("\x02\0\0\0\x21", NATIVE_ALLOW(NATIVE_MSG_READY),
		    "frame: unexpected COMPLETE message (type 0x02)");
	check_frame("\x81\0\0\0\x04",
		    NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
			NATIVE_ALLOW(NATIVE_MSG_ABORT),
		    "frame: unexpected READY message (type 0x81)");
	check_frame("\x01\0\0\0\0", NATIVE_ALLOW(NATIVE_MSG_ACK) | NATIVE_ALLOW(NATIVE_MSG_ERROR),
		    "frame: unexpected BLOCKS message (type 0x01)");
	check_frame("\x83\0\0\0\x04", 0, "frame: unexpected ERROR message (type 0x83)");
	/* The new types are refused where they are not expected, like any. */
	check_frame("\x86\0\0\0\x10",
		    NATIVE_ALLOW(NATIVE_MSG_READY) | NATIVE_ALLOW(NATIVE_MSG_ERROR),
		    "frame: unexpected STATE message (type 0x86)");
	check_frame("\x87\0\0\0\x1e", NATIVE_ALLOW(NATIVE_MSG_STATE),
		    "frame: unexpected SUMS message (type 0x87)");
	check_frame("\x05\0\0\0\x13",
		    NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
			NATIVE_ALLOW(NATIVE_MSG_ABORT),
		    "frame: unexpected VERDICT message (type 0x05)");
	/* EXPORT from a source, or to a source that did not ask (the
	 * engines' masks leave it out). */
	check_frame("\x89\0\0\0\x04",
		    NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
			NATIVE_ALLOW(NATIVE_MSG_ABORT),
		    "frame: unexpected EXPORT message (type 0x89)");
	check_frame("\x89\0\0\0\x04",
		    NATIVE_ALLOW(NATIVE_MSG_STATE) | NATIVE_ALLOW(NATIVE_MSG_ERROR),
		    "frame: unexpected EXPORT message (type 0x89)");

	check_frame("\x83\x00\x01\x00\x01", ALLOW_ALL,
		    "frame: ERROR message length 65537 exceeds the maximum 65536");
	check_frame("\x02\xff\xff\xff\xff", ALLOW_ALL,
		    "frame: COMPLETE message length 4294967295 exceeds the maximum 65536");
	check_frame("\x87\x00\x01\x00\x01", ALLOW_ALL,
		    "frame: SUMS message length 65537 exceeds the maximum 65536");
	/* ACK and COMMIT are no longer special here: a wrong length passes the
	 * header and is refused by native_attempt_decode() (test_attempt). */
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
	/* clang-format off */
	static const uint8_t dup[] = {
		0x00, 0x00, 0x00, 0x01, 0x00, 0x02,		/* attempt 1, 2 devices */
		0x01, 'a', 0, 0, 0, 0, 0, 0, 0, 1,		/* "a", 1 chunk */
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x01, 'a', 0, 0, 0, 0, 0, 0, 0, 1,		/* "a" again */
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	/* clang-format on */
	static struct native_complete c, d;
	uint8_t buf[128];

	(void)state;
	/* Attempts count from 1; 0 is refused before anything else. */
	complete_patched(0, "\0\0\0\0", 4, "complete: attempt 0 (attempts count from 1)");
	complete_patched(0, "\0\0\0\0\0\0", 6, "complete: attempt 0 (attempts count from 1)");
	complete_patched(4, "\0\0", 2, "complete: invalid device count 0 (must be 1..64)");
	complete_patched(4, "\0\x41", 2, "complete: invalid device count 65 (must be 1..64)");
	/* Claiming two devices where one is sent is a truncation. */
	complete_patched(4, "\0\x02", 2, "complete: body truncated at device 1 of 2");
	complete_patched(6, "\0", 1, "complete: device 0 has an empty name");
	complete_patched(7, "\0", 1, "complete: device 0 name contains a NUL byte");
	complete_patched(7, "\n", 1, "complete: device 0 name '\\x0arive0' has control characters");
	/* A shorter name leaves the body too long. */
	complete_patched(6, "\x05", 1, "complete: 1 trailing bytes after 1 devices");
	expect_error(complete_decode_exact(dup, sizeof(dup), &d), EBADMSG,
		     "complete: duplicate device name 'a'");

	memset(&c, 0, sizeof(c));
	expect_error(native_complete_encode(buf, sizeof(buf), &c), EINVAL,
		     "complete: attempt 0 (attempts count from 1)");
	c.attempt = 1;
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
/* READY / ACK / COMMIT / names                                             */

static void test_ready_ack(void **state)
{
	static const uint8_t golden_ready[] = { 0x81, 0, 0, 0, 4, 0, 0, 0, 3 };
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
	{
		static const uint8_t golden_done[] = { 0x88, 0, 0, 0, 4, 0, 0, 1, 2 };
		uint32_t attempt = 0;

		assert_int_equal(native_done_encode(buf, sizeof(buf), 258), 9);
		assert_memory_equal(buf, golden_done, 9);
		expect_error(native_done_encode(buf, sizeof(buf), 0), EINVAL,
			     "encode DONE: attempt 0 (attempts count from 1)");
		assert_int_equal(native_attempt_decode("done", golden_done + 5, 4, &attempt), 0);
		assert_int_equal(attempt, 258);
		expect_error(native_attempt_decode("done", golden_done + 5, 3, &attempt), EBADMSG,
			     "done: body of 3 bytes (expected 4)");
	}

	b = heap_copy(golden_ready + 5, 4);
	assert_int_equal(native_ready_decode(b, 4, &version), 0);
	assert_int_equal(version, 3);
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

/* ACK and COMMIT: a be32 attempt, >= 1, exactly 4 bytes. */
static void test_attempt(void **state)
{
	static const uint8_t golden_commit[] = { 0x04, 0, 0, 0, 4, 0, 0, 0, 1 };
	static const uint8_t golden_ack_max[] = { 0x82, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t five[] = { 0, 0, 0, 1, 0 };
	uint8_t buf[16], type = 0;
	uint32_t len = 0, attempt = 0;

	(void)state;
	assert_int_equal(native_commit_encode(buf, sizeof(buf), 1), 9);
	assert_memory_equal(buf, golden_commit, 9);
	expect_error(native_commit_encode(buf, 8, 1), ENOSPC,
		     "encode COMMIT: buffer of 8 bytes is too small (need 9)");
	expect_error(native_commit_encode(buf, sizeof(buf), 0), EINVAL,
		     "encode COMMIT: attempt 0 (attempts count from 1)");
	assert_int_equal(native_ack_encode(buf, sizeof(buf), UINT32_MAX), 9);
	assert_memory_equal(buf, golden_ack_max, 9);

	assert_int_equal(
	    native_frame_header(golden_commit, NATIVE_ALLOW(NATIVE_MSG_COMMIT), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_COMMIT);
	assert_int_equal(len, 4);
	assert_int_equal(attempt_decode_exact("commit", golden_commit + 5, 4, &attempt), 0);
	assert_int_equal(attempt, 1);
	assert_int_equal(attempt_decode_exact("ack", golden_ack_max + 5, 4, &attempt), 0);
	assert_int_equal(attempt, UINT32_MAX);

	/* The v1 empty body, a short one, a long one, and attempt 0. */
	expect_error(attempt_decode_exact("commit", golden_commit + 5, 0, &attempt), EBADMSG,
		     "commit: body of 0 bytes (expected 4)");
	expect_error(attempt_decode_exact("ack", golden_commit + 5, 0, &attempt), EBADMSG,
		     "ack: body of 0 bytes (expected 4)");
	expect_error(attempt_decode_exact("ack", golden_commit + 5, 3, &attempt), EBADMSG,
		     "ack: body of 3 bytes (expected 4)");
	expect_error(attempt_decode_exact("commit", five, 5, &attempt), EBADMSG,
		     "commit: body of 5 bytes (expected 4)");
	expect_error(attempt_decode_exact("ack", (const uint8_t *)"\0\0\0\0", 4, &attempt), EBADMSG,
		     "ack: attempt 0 (attempts count from 1)");
	expect_error(attempt_decode_exact("commit", (const uint8_t *)"\0\0\0\0", 4, &attempt),
		     EBADMSG, "commit: attempt 0 (attempts count from 1)");
}

/* ------------------------------------------------------------------------ */
/* STATE                                                                    */

/* clang-format off */
static const uint8_t golden_state[] = {
	0x86, 0x00, 0x00, 0x00, 0x10,                   /* STATE, 16 bytes */
	0x00, 0x00, 0x00, 0x01,                         /* held PARTIAL */
	0x00, 0x00, 0x00, 0x00,                         /* no attempt */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, /* 4660 sums follow */
};

static const uint8_t golden_state_awaiting[] = {
	0x86, 0x00, 0x00, 0x00, 0x10,                   /* STATE, 16 bytes */
	0x00, 0x00, 0x00, 0x03,                         /* held AWAITING */
	0x00, 0x00, 0x00, 0x02,                         /* acknowledged attempt 2 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* no sums */
};
/* clang-format on */

static void test_state_golden(void **state)
{
	struct native_state st = { .held = NATIVE_HELD_PARTIAL, .sums = 0x1234 }, d;
	uint8_t buf[32], type = 0;
	uint32_t len = 0;

	(void)state;
	assert_int_equal(native_state_encode(buf, sizeof(buf), &st), sizeof(golden_state));
	assert_memory_equal(buf, golden_state, sizeof(golden_state));
	expect_error(native_state_encode(buf, sizeof(golden_state) - 1, &st), ENOSPC,
		     "encode STATE: buffer of 20 bytes is too small (need 21)");
	assert_int_equal(
	    native_frame_header(golden_state, NATIVE_ALLOW(NATIVE_MSG_STATE), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_STATE);
	assert_int_equal(len, 16);
	memset(&d, 0xff, sizeof(d));
	assert_int_equal(state_decode_exact(golden_state + 5, 16, &d), 0);
	assert_int_equal(d.held, NATIVE_HELD_PARTIAL);
	assert_int_equal(d.attempt, 0);
	assert_int_equal(d.sums, 0x1234);

	st = (struct native_state){ .held = NATIVE_HELD_AWAITING, .attempt = 2 };
	assert_int_equal(native_state_encode(buf, sizeof(buf), &st), sizeof(golden_state_awaiting));
	assert_memory_equal(buf, golden_state_awaiting, sizeof(golden_state_awaiting));
	assert_int_equal(state_decode_exact(golden_state_awaiting + 5, 16, &d), 0);
	assert_int_equal(d.held, NATIVE_HELD_AWAITING);
	assert_int_equal(d.attempt, 2);
	assert_int_equal(d.sums, 0);

	/* Every held state round-trips, with the extremes of its fields. */
	for (uint32_t held = NATIVE_HELD_NONE; held <= NATIVE_HELD_AWAITING; held++) {
		st.held = held;
		st.attempt = held == NATIVE_HELD_AWAITING ? UINT32_MAX : 0;
		st.sums = held == NATIVE_HELD_NONE ? 0 : UINT64_MAX;
		assert_int_equal(native_state_encode(buf, sizeof(buf), &st), 21);
		assert_int_equal(state_decode_exact(buf + 5, 16, &d), 0);
		assert_int_equal(d.held, st.held);
		assert_int_equal(d.attempt, st.attempt);
		assert_int_equal(d.sums, st.sums);
	}
}

static void state_patched(size_t at, const char *bytes, size_t n, const char *msg)
{
	struct native_state d;
	uint8_t body[16];

	memcpy(body, golden_state + 5, sizeof(body));
	memcpy(body + at, bytes, n);
	expect_error(state_decode_exact(body, sizeof(body), &d), EBADMSG, msg);
}

static void test_state_errors(void **state)
{
	struct native_state st, d;
	uint8_t body[17] = { 0 };
	uint8_t buf[32];

	(void)state;
	for (size_t plen = 0; plen < 16; plen++)
		assert_int_equal(state_decode_exact(golden_state + 5, plen, &d), -EBADMSG);
	expect_error(state_decode_exact(golden_state + 5, 15, &d), EBADMSG,
		     "state: body of 15 bytes (expected 16)");
	expect_error(state_decode_exact(golden_state + 5, 0, &d), EBADMSG,
		     "state: body of 0 bytes (expected 16)");
	memcpy(body, golden_state + 5, 16);
	expect_error(state_decode_exact(body, 17, &d), EBADMSG,
		     "state: body of 17 bytes (expected 16)");

	state_patched(0, "\0\0\0\x04", 4, "state: unknown held state 4");
	state_patched(0, "\xff\xff\xff\xff", 4, "state: unknown held state 4294967295");
	/* An attempt goes with AWAITING, and AWAITING needs one. */
	state_patched(4, "\0\0\0\x05", 4,
		      "state: attempt 5 with held state 1 (an attempt goes with AWAITING, and only "
		      "there)");
	state_patched(0, "\0\0\0\x02\0\0\0\x01", 8,
		      "state: attempt 1 with held state 2 (an attempt goes with AWAITING, and only "
		      "there)");
	state_patched(0, "\0\0\0\0\0\0\0\x01", 8,
		      "state: attempt 1 with held state 0 (an attempt goes with AWAITING, and only "
		      "there)");
	state_patched(0, "\0\0\0\x03", 4,
		      "state: attempt 0 with held state 3 (an attempt goes with AWAITING, and only "
		      "there)");
	/* Holding nothing, it has no digests to offer. */
	state_patched(0, "\0\0\0\0", 4, "state: 4660 sums offered while holding nothing");
	state_patched(0, "\0\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff", 16,
		      "state: 18446744073709551615 sums offered while holding nothing");

	st = (struct native_state){ .held = 4 };
	expect_error(native_state_encode(buf, sizeof(buf), &st), EINVAL,
		     "encode STATE: unknown held state 4");
	st = (struct native_state){ .held = NATIVE_HELD_ALL, .attempt = 1 };
	expect_error(native_state_encode(buf, sizeof(buf), &st), EINVAL,
		     "encode STATE: an attempt goes with AWAITING, and only there");
	st = (struct native_state){ .held = NATIVE_HELD_AWAITING };
	expect_error(native_state_encode(buf, sizeof(buf), &st), EINVAL,
		     "encode STATE: an attempt goes with AWAITING, and only there");
	/* What the decoder refuses, the encoder refuses too. */
	st = (struct native_state){ .held = NATIVE_HELD_NONE, .sums = 1 };
	expect_error(native_state_encode(buf, sizeof(buf), &st), EINVAL,
		     "encode STATE: 1 sums offered while holding nothing");
}

/* ------------------------------------------------------------------------ */
/* SUMS                                                                     */

/* clang-format off */
static const uint8_t golden_sums[] = {
	0x87, 0x00, 0x00, 0x00, 0x36,                   /* SUMS, 54 bytes */
	0x00, 0x01,                                     /* device 1 */
	0x00, 0x00, 0x00, 0x02,                         /* 2 entries */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* chunk 0 */
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, /* XXH3-128, high half */
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, /* XXH3-128, low half */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, /* chunk 5 */
	0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
	0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff,
};
/* clang-format on */

static void golden_sums_struct(struct native_sums *sm)
{
	sm->dev = 1;
	sm->count = 2;
	sm->e[0].chunk = 0;
	sm->e[1].chunk = 5;
	for (int i = 0; i < NATIVE_SUM_LEN; i++) {
		sm->e[0].sum[i] = (uint8_t)i;
		sm->e[1].sum[i] = (uint8_t)(0xf0 + i);
	}
}

static void test_sums_golden(void **state)
{
	static struct native_sums sm, d;
	uint8_t buf[64], type = 0;
	uint32_t len = 0;

	(void)state;
	assert_int_equal(NATIVE_SUMS_MAX, 2730);
	golden_sums_struct(&sm);
	assert_int_equal(native_sums_encode(buf, sizeof(buf), &sm), sizeof(golden_sums));
	assert_memory_equal(buf, golden_sums, sizeof(golden_sums));
	expect_error(native_sums_encode(buf, sizeof(golden_sums) - 1, &sm), ENOSPC,
		     "encode SUMS: buffer of 58 bytes is too small (need 59)");
	assert_int_equal(
	    native_frame_header(golden_sums, NATIVE_ALLOW(NATIVE_MSG_SUMS), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_SUMS);
	assert_int_equal(len, 54);
	assert_int_equal(sums_decode_exact(golden_sums + 5, len, &d), 0);
	assert_int_equal(d.dev, 1);
	assert_int_equal(d.count, 2);
	assert_int_equal(d.e[0].chunk, 0);
	assert_int_equal(d.e[1].chunk, 5);
	assert_memory_equal(d.e[0].sum, sm.e[0].sum, NATIVE_SUM_LEN);
	assert_memory_equal(d.e[1].sum, sm.e[1].sum, NATIVE_SUM_LEN);
}

/* The largest SUMS: NATIVE_SUMS_MAX entries, the last at chunk 2^64 - 1,
 * on the last device; one entry more does not fit a frame. */
static void test_sums_round_trip_max(void **state)
{
	static struct native_sums sm, d;
	static uint8_t buf[NATIVE_FRAME_HDR + NATIVE_MSG_MAX];
	uint8_t type = 0;
	uint32_t len = 0;
	int n;

	(void)state;
	memset(&sm, 0, sizeof(sm));
	sm.dev = NATIVE_MAX_DEVICES - 1;
	sm.count = NATIVE_SUMS_MAX;
	for (uint32_t i = 0; i < NATIVE_SUMS_MAX; i++) {
		sm.e[i].chunk = i == NATIVE_SUMS_MAX - 1 ? UINT64_MAX : (uint64_t)i * 3 + 1;
		for (int k = 0; k < NATIVE_SUM_LEN; k++)
			sm.e[i].sum[k] = (uint8_t)(i * 7 + k);
	}
	n = native_sums_encode(buf, sizeof(buf), &sm);
	assert_int_equal(n, NATIVE_FRAME_HDR + 6 + NATIVE_SUMS_MAX * NATIVE_SUM_ITEM);
	assert_true((size_t)n - NATIVE_FRAME_HDR <= NATIVE_MSG_MAX);
	assert_true((size_t)n - NATIVE_FRAME_HDR + NATIVE_SUM_ITEM > NATIVE_MSG_MAX);
	assert_int_equal(native_sums_encode(buf, (size_t)n - 1, &sm), -ENOSPC);
	assert_int_equal(native_frame_header(buf, NATIVE_ALLOW(NATIVE_MSG_SUMS), &type, &len), 0);
	assert_int_equal(len, (uint32_t)n - NATIVE_FRAME_HDR);
	assert_int_equal(sums_decode_exact(buf + NATIVE_FRAME_HDR, len, &d), 0);
	assert_int_equal(d.dev, NATIVE_MAX_DEVICES - 1);
	assert_int_equal(d.count, NATIVE_SUMS_MAX);
	for (uint32_t i = 0; i < NATIVE_SUMS_MAX; i++) {
		assert_int_equal(d.e[i].chunk, sm.e[i].chunk);
		assert_memory_equal(d.e[i].sum, sm.e[i].sum, NATIVE_SUM_LEN);
	}

	/* NATIVE_SUMS_MAX + 1 entries: refused by count, whatever the length. */
	put_be32(buf + NATIVE_FRAME_HDR + 2, NATIVE_SUMS_MAX + 1);
	expect_error(sums_decode_exact(buf + NATIVE_FRAME_HDR, len, &d), EBADMSG,
		     "sums: 2731 entries (must be 1..2730)");
	sm.count = NATIVE_SUMS_MAX + 1;
	expect_error(native_sums_encode(buf, sizeof(buf), &sm), EINVAL,
		     "sums: 2731 entries (must be 1..2730)");
}

static void sums_patched(size_t at, const char *bytes, size_t n, const char *msg)
{
	static struct native_sums d;
	uint8_t body[sizeof(golden_sums) - NATIVE_FRAME_HDR];

	memcpy(body, golden_sums + NATIVE_FRAME_HDR, sizeof(body));
	memcpy(body + at, bytes, n);
	expect_error(sums_decode_exact(body, sizeof(body), &d), EBADMSG, msg);
}

static void test_sums_errors(void **state)
{
	static struct native_sums sm, d;
	const uint8_t *body = golden_sums + NATIVE_FRAME_HDR;
	const size_t blen = sizeof(golden_sums) - NATIVE_FRAME_HDR;
	uint8_t padded[sizeof(golden_sums)];
	uint8_t buf[64];

	(void)state;
	for (size_t plen = 0; plen < blen; plen++)
		assert_int_equal(sums_decode_exact(body, plen, &d), -EBADMSG);
	expect_error(sums_decode_exact(body, 0, &d), EBADMSG, "sums: body truncated (0 bytes)");
	expect_error(sums_decode_exact(body, 5, &d), EBADMSG, "sums: body truncated (5 bytes)");
	expect_error(sums_decode_exact(body, 6, &d), EBADMSG,
		     "sums: body of 6 bytes for 2 entries");
	expect_error(sums_decode_exact(body, blen - 1, &d), EBADMSG,
		     "sums: body of 53 bytes for 2 entries");
	memcpy(padded, body, blen);
	padded[blen] = 0;
	expect_error(sums_decode_exact(padded, blen + 1, &d), EBADMSG,
		     "sums: body of 55 bytes for 2 entries");

	sums_patched(2, "\0\0\0\0", 4, "sums: 0 entries (must be 1..2730)");
	sums_patched(2, "\xff\xff\xff\xff", 4, "sums: 4294967295 entries (must be 1..2730)");
	/* Claiming one entry where two are sent leaves bytes over. */
	sums_patched(2, "\0\0\0\x01", 4, "sums: body of 54 bytes for 1 entries");
	sums_patched(0, "\0\x40", 2, "sums: device 64 (at most 64 devices)");
	sums_patched(0, "\xff\xff", 2, "sums: device 65535 (at most 64 devices)");
	/* Chunks strictly ascend: neither a repeat nor a step back. */
	sums_patched(30, "\0\0\0\0\0\0\0\0", 8, "sums: chunk 0 after 0 (must ascend)");
	sums_patched(6, "\0\0\0\0\0\0\0\x09", 8, "sums: chunk 5 after 9 (must ascend)");

	golden_sums_struct(&sm);
	sm.count = 0;
	expect_error(native_sums_encode(buf, sizeof(buf), &sm), EINVAL,
		     "sums: 0 entries (must be 1..2730)");
	golden_sums_struct(&sm);
	sm.dev = NATIVE_MAX_DEVICES;
	expect_error(native_sums_encode(buf, sizeof(buf), &sm), EINVAL,
		     "sums: device 64 (at most 64 devices)");
	golden_sums_struct(&sm);
	sm.e[1].chunk = 0;
	expect_error(native_sums_encode(buf, sizeof(buf), &sm), EINVAL,
		     "sums: chunk 0 after 0 (must ascend)");
}

/* ------------------------------------------------------------------------ */
/* VERDICT                                                                  */

/* clang-format off */
static const uint8_t golden_verdict[] = {
	0x05, 0x00, 0x00, 0x00, 0x2b,                   /* VERDICT, 43 bytes */
	0x00, 0x02,                                     /* 2 devices */
	0x06, 'd',  'r',  'i',  'v',  'e',  '0',        /* "drive0" */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, /* 64 chunks checked */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, /* 3 differ */
	0x01, 'x',                                      /* "x" */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, /* 1 checked */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* none differs */
};
/* clang-format on */

static void golden_verdict_struct(struct native_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->ndev = 2;
	strcpy(v->dev[0].name, "drive0");
	v->dev[0].checked = 64;
	v->dev[0].differing = 3;
	strcpy(v->dev[1].name, "x");
	v->dev[1].checked = 1;
}

static void test_verdict_golden(void **state)
{
	static struct native_verdict v, d;
	uint8_t buf[64], type = 0;
	uint32_t len = 0;

	(void)state;
	golden_verdict_struct(&v);
	assert_int_equal(native_verdict_encode(buf, sizeof(buf), &v), sizeof(golden_verdict));
	assert_memory_equal(buf, golden_verdict, sizeof(golden_verdict));
	expect_error(native_verdict_encode(buf, sizeof(golden_verdict) - 1, &v), ENOSPC,
		     "encode VERDICT: buffer of 47 bytes is too small (need 48)");
	assert_int_equal(
	    native_frame_header(golden_verdict, NATIVE_ALLOW(NATIVE_MSG_VERDICT), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_VERDICT);
	assert_int_equal(len, 43);
	assert_int_equal(verdict_decode_exact(golden_verdict + 5, len, &d), 0);
	assert_int_equal(d.ndev, 2);
	assert_string_equal(d.dev[0].name, "drive0");
	assert_int_equal(d.dev[0].checked, 64);
	assert_int_equal(d.dev[0].differing, 3);
	assert_string_equal(d.dev[1].name, "x");
	assert_int_equal(d.dev[1].checked, 1);
	assert_int_equal(d.dev[1].differing, 0);
}

/* The largest VERDICT: 64 devices with 255-byte names, extreme counts. */
static void test_verdict_round_trip_max(void **state)
{
	static struct native_verdict v, d;
	static uint8_t buf[NATIVE_FRAME_HDR + NATIVE_MSG_MAX];
	uint8_t type = 0;
	uint32_t len = 0;
	int n;

	(void)state;
	memset(&v, 0, sizeof(v));
	v.ndev = NATIVE_MAX_DEVICES;
	for (int i = 0; i < NATIVE_MAX_DEVICES; i++) {
		memset(v.dev[i].name, 'a' + i % 26, WIRE_NAME_MAX);
		v.dev[i].name[0] = (char)('A' + i / 26);
		v.dev[i].name[WIRE_NAME_MAX] = '\0';
		v.dev[i].checked = i == 0 ? UINT64_MAX : (uint64_t)i * 1000;
		v.dev[i].differing = i == 0 ? UINT64_MAX : (uint64_t)i;
	}
	n = native_verdict_encode(buf, sizeof(buf), &v);
	assert_int_equal(n, NATIVE_FRAME_HDR + 2 + NATIVE_MAX_DEVICES * (1 + WIRE_NAME_MAX + 16));
	assert_int_equal(native_verdict_encode(buf, (size_t)n - 1, &v), -ENOSPC);
	assert_int_equal(native_frame_header(buf, NATIVE_ALLOW(NATIVE_MSG_VERDICT), &type, &len),
			 0);
	assert_int_equal(len, (uint32_t)n - NATIVE_FRAME_HDR);
	assert_int_equal(verdict_decode_exact(buf + NATIVE_FRAME_HDR, len, &d), 0);
	assert_int_equal(d.ndev, NATIVE_MAX_DEVICES);
	for (int i = 0; i < NATIVE_MAX_DEVICES; i++) {
		assert_string_equal(d.dev[i].name, v.dev[i].name);
		assert_int_equal(d.dev[i].checked, v.dev[i].checked);
		assert_int_equal(d.dev[i].differing, v.dev[i].differing);
	}
}

static void verdict_patched(size_t at, const char *bytes, size_t n, const char *msg)
{
	static struct native_verdict d;
	uint8_t body[sizeof(golden_verdict) - NATIVE_FRAME_HDR];

	memcpy(body, golden_verdict + NATIVE_FRAME_HDR, sizeof(body));
	memcpy(body + at, bytes, n);
	expect_error(verdict_decode_exact(body, sizeof(body), &d), EBADMSG, msg);
}

static void test_verdict_errors(void **state)
{
	static struct native_verdict v, d;
	const uint8_t *body = golden_verdict + NATIVE_FRAME_HDR;
	const size_t blen = sizeof(golden_verdict) - NATIVE_FRAME_HDR;
	uint8_t padded[sizeof(golden_verdict)];
	uint8_t buf[128];

	static const uint8_t dup[] = { 0x00, 0x02, 0x06, 'd', 'r', 'i', 'v', 'e', '0', 0, 0, 0,
				       0,    0,	   0,	 0,   4,   0,	0,   0,	  0,   0, 0, 0,
				       1,    0x06, 'd',	 'r', 'i', 'v', 'e', '0', 0,   0, 0, 0,
				       0,    0,	   0,	 4,   0,   0,	0,   0,	  0,   0, 0, 1 };

	(void)state;
	/* One device counted twice would hide the other's differences. */
	expect_error(verdict_decode_exact(dup, sizeof(dup), &d), EBADMSG,
		     "verdict: duplicate device name 'drive0'");
	memset(&v, 0, sizeof(v));
	v.ndev = 2;
	strcpy(v.dev[0].name, "drive0");
	strcpy(v.dev[1].name, "drive0");
	expect_error(native_verdict_encode(buf, sizeof(buf), &v), EINVAL,
		     "verdict: duplicate device name 'drive0'");
	for (size_t plen = 0; plen < blen; plen++)
		assert_int_equal(verdict_decode_exact(body, plen, &d), -EBADMSG);
	expect_error(verdict_decode_exact(body, 0, &d), EBADMSG,
		     "verdict: body truncated (0 bytes)");
	expect_error(verdict_decode_exact(body, 1, &d), EBADMSG,
		     "verdict: body truncated (1 bytes)");
	expect_error(verdict_decode_exact(body, 2, &d), EBADMSG,
		     "verdict: device 0 of 2 truncated or unnamed");
	expect_error(verdict_decode_exact(body, 24, &d), EBADMSG,
		     "verdict: device 0 of 2 truncated or unnamed");
	expect_error(verdict_decode_exact(body, 25, &d), EBADMSG,
		     "verdict: device 1 of 2 truncated or unnamed");
	expect_error(verdict_decode_exact(body, blen - 1, &d), EBADMSG,
		     "verdict: device 1 of 2 truncated or unnamed");
	memcpy(padded, body, blen);
	padded[blen] = 0;
	expect_error(verdict_decode_exact(padded, blen + 1, &d), EBADMSG,
		     "verdict: 1 trailing bytes");

	verdict_patched(0, "\0\0", 2, "verdict: invalid device count 0 (must be 1..64)");
	verdict_patched(0, "\0\x41", 2, "verdict: invalid device count 65 (must be 1..64)");
	verdict_patched(0, "\xff\xff", 2, "verdict: invalid device count 65535 (must be 1..64)");
	/* Claiming three devices where two are sent is a truncation; one,
	 * leaves the second's bytes over. */
	verdict_patched(0, "\0\x03", 2, "verdict: device 2 of 3 truncated or unnamed");
	verdict_patched(0, "\0\x01", 2, "verdict: 18 trailing bytes");
	verdict_patched(2, "\0", 1, "verdict: device 0 of 2 truncated or unnamed");
	verdict_patched(25, "\0", 1, "verdict: device 1 of 2 truncated or unnamed");
	verdict_patched(3, "\0", 1, "verdict: device 0 name contains a NUL byte");
	verdict_patched(3, "\n", 1, "verdict: device 0 name '\\x0arive0' has control characters");
	verdict_patched(26, "\x7f", 1, "verdict: device 1 name '\\x7f' has control characters");
	/* More chunks differing than checked. */
	verdict_patched(17, "\0\0\0\0\0\0\0\x41", 8, "verdict: device 0: 65 of 64 chunks differ");
	verdict_patched(35, "\0\0\0\0\0\0\0\x02", 8, "verdict: device 1: 2 of 1 chunks differ");

	golden_verdict_struct(&v);
	v.ndev = 0;
	expect_error(native_verdict_encode(buf, sizeof(buf), &v), EINVAL,
		     "verdict: invalid device count 0 (must be 1..64)");
	v.ndev = NATIVE_MAX_DEVICES + 1;
	expect_error(native_verdict_encode(buf, sizeof(buf), &v), EINVAL,
		     "verdict: invalid device count 65 (must be 1..64)");
	golden_verdict_struct(&v);
	v.dev[1].name[0] = '\0';
	expect_error(native_verdict_encode(buf, sizeof(buf), &v), EINVAL,
		     "verdict: device 1 has an empty name");
	golden_verdict_struct(&v);
	memset(v.dev[0].name, 'z', sizeof(v.dev[0].name));
	expect_error(native_verdict_encode(buf, sizeof(buf), &v), EINVAL,
		     "verdict: device 0 name is longer than 255 bytes");
	/* What the decoder refuses, the encoder refuses too. */
	golden_verdict_struct(&v);
	v.dev[1].differing = 2;
	expect_error(native_verdict_encode(buf, sizeof(buf), &v), EINVAL,
		     "verdict: device 1: 2 of 1 chunks differ");
}

/* ------------------------------------------------------------------------ */
/* EXPORT                                                                   */

/* clang-format off */
static const uint8_t golden_export[] = {
	0x89, 0x00, 0x00, 0x00, 0x0d,                   /* EXPORT, 13 bytes */
	0x2a, 0x39,                                     /* port 10809 */
	0x00, 0x09,                                     /* host of 9 bytes */
	'1', '2', '7', '.', '0', '.', '0', '.', '1',     /* "127.0.0.1" */
};
static const uint8_t golden_export_none[] = {
	0x89, 0x00, 0x00, 0x00, 0x04,                   /* EXPORT, 4 bytes */
	0x00, 0x00, 0x00, 0x00,                         /* port 0, no host: no export */
};
/* clang-format on */

static int export_decode_exact(const uint8_t *p, size_t len, struct native_export *e)
{
	uint8_t *b = heap_copy(p, len);
	int r;

	err_clear();
	r = native_export_decode(b, len, e);
	free(b);
	return r;
}

static void test_export_golden(void **state)
{
	struct native_export e = { .port = 10809 }, d;
	uint8_t buf[NATIVE_FRAME_HDR + 4 + NATIVE_HOST_MAX], type = 0;
	uint32_t len = 0;

	(void)state;
	strcpy(e.host, "127.0.0.1");
	assert_int_equal(native_export_encode(buf, sizeof(buf), &e), sizeof(golden_export));
	assert_memory_equal(buf, golden_export, sizeof(golden_export));
	expect_error(native_export_encode(buf, sizeof(golden_export) - 1, &e), ENOSPC,
		     "encode EXPORT: buffer of 17 bytes is too small (need 18)");
	assert_int_equal(
	    native_frame_header(golden_export, NATIVE_ALLOW(NATIVE_MSG_EXPORT), &type, &len), 0);
	assert_int_equal(type, NATIVE_MSG_EXPORT);
	assert_int_equal(len, 13);
	memset(&d, 0xff, sizeof(d));
	assert_int_equal(export_decode_exact(golden_export + 5, 13, &d), 0);
	assert_int_equal(d.port, 10809);
	assert_string_equal(d.host, "127.0.0.1");

	e = (struct native_export){ 0 };
	assert_int_equal(native_export_encode(buf, sizeof(buf), &e), sizeof(golden_export_none));
	assert_memory_equal(buf, golden_export_none, sizeof(golden_export_none));
	memset(&d, 0xff, sizeof(d));
	assert_int_equal(export_decode_exact(golden_export_none + 5, 4, &d), 0);
	assert_int_equal(d.port, 0);
	assert_string_equal(d.host, "");

	/* The extremes: every allowed character, the longest host, an IPv6
	 * literal, a wildcard, an empty host with a port. */
	static const char *const hosts[] = {
		"fe80::1:2", "::", "0.0.0.0", "", "A-Za_z.0-9:", "dst.example",
	};
	for (size_t i = 0; i <= ARRAY_SIZE(hosts); i++) {
		e.port = i == 0 ? 65535 : (uint16_t)i;
		if (i < ARRAY_SIZE(hosts)) {
			strcpy(e.host, hosts[i]);
		} else {
			memset(e.host, 'h', NATIVE_HOST_MAX);
			e.host[NATIVE_HOST_MAX] = '\0';
		}
		assert_int_equal(native_export_encode(buf, sizeof(buf), &e),
				 NATIVE_FRAME_HDR + 4 + (int)strlen(e.host));
		assert_int_equal(export_decode_exact(buf + 5, 4 + strlen(e.host), &d), 0);
		assert_int_equal(d.port, e.port);
		assert_string_equal(d.host, e.host);
	}
}

static void export_bad(const char *body, size_t len, const char *msg)
{
	struct native_export d;

	expect_error(export_decode_exact((const uint8_t *)body, len, &d), EBADMSG, msg);
}

static void test_export_errors(void **state)
{
	struct native_export e = { .port = 1 };
	uint8_t body[4 + 300], buf[NATIVE_FRAME_HDR + 4 + 300];

	(void)state;
	for (size_t plen = 0; plen < 4; plen++) {
		char msg[64];

		snprintf(msg, sizeof(msg), "export: body truncated (%zu bytes)", plen);
		export_bad("\x2a\x39\0\0", plen, msg);
	}
	/* hostlen beyond the body, short of it, and beyond the bound. */
	export_bad("\x2a\x39\0\x0a"
		   "127.0.0.1",
		   13, "export: body of 13 bytes for a host of 10 bytes");
	export_bad("\x2a\x39\0\x08"
		   "127.0.0.1",
		   13, "export: body of 13 bytes for a host of 8 bytes");
	export_bad("\x2a\x39\0\0"
		   "x",
		   5, "export: body of 5 bytes for a host of 0 bytes");
	export_bad("\x2a\x39\xff\xff", 4, "export: host of 65535 bytes (at most 255)");
	memset(body, 'a', sizeof(body));
	memcpy(body, "\x2a\x39\x01\x00", 4);
	export_bad((const char *)body, 4 + 256, "export: host of 256 bytes (at most 255)");
	/* The character set: controls, NUL, brackets, a slash, a space,
	 * bytes above 0x7f; every bad byte is shown escaped, the first named. */
	export_bad("\x2a\x39\0\x05"
		   "a\nb\x1b]",
		   9,
		   "export: host 'a\\x0ab\\x1b\\x5d' has byte 0x0a at 1 (only [A-Za-z0-9.:_-] are "
		   "allowed)");
	export_bad("\x2a\x39\0\x03"
		   "a\0b",
		   7,
		   "export: host 'a\\x00b' has byte 0x00 at 1 (only [A-Za-z0-9.:_-] are allowed)");
	export_bad("\x2a\x39\0\x05"
		   "[::1]",
		   9,
		   "export: host '\\x5b::1\\x5d' has byte 0x5b at 0 (only [A-Za-z0-9.:_-] are "
		   "allowed)");
	export_bad("\x2a\x39\0\x03"
		   "a/b",
		   7,
		   "export: host 'a\\x2fb' has byte 0x2f at 1 (only [A-Za-z0-9.:_-] are allowed)");
	export_bad("\x2a\x39\0\x03"
		   "a b",
		   7,
		   "export: host 'a\\x20b' has byte 0x20 at 1 (only [A-Za-z0-9.:_-] are allowed)");
	export_bad("\x2a\x39\0\x02"
		   "\xc3\xa9",
		   6,
		   "export: host '\\xc3\\xa9' has byte 0xc3 at 0 (only [A-Za-z0-9.:_-] are "
		   "allowed)");
	/* Port 0 is "no export": a host with it is a contradiction. */
	export_bad("\0\0\0\x01"
		   "h",
		   5, "export: host 'h' with port 0 (port 0 means no export)");

	/* The encoder refuses the same. */
	strcpy(e.host, "a b");
	expect_error(native_export_encode(buf, sizeof(buf), &e), EINVAL,
		     "export: host 'a\\x20b' has byte 0x20 at 1 (only [A-Za-z0-9.:_-] are "
		     "allowed)");
	e = (struct native_export){ .port = 0 };
	strcpy(e.host, "localhost");
	expect_error(native_export_encode(buf, sizeof(buf), &e), EINVAL,
		     "export: host 'localhost' with port 0 (port 0 means no export)");
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
	assert_string_equal(native_msg_name(NATIVE_MSG_COMMIT), "COMMIT");
	assert_string_equal(native_msg_name(NATIVE_MSG_VERDICT), "VERDICT");
	assert_string_equal(native_msg_name(NATIVE_MSG_STATE), "STATE");
	assert_string_equal(native_msg_name(NATIVE_MSG_SUMS), "SUMS");
	assert_string_equal(native_msg_name(0x06), "unknown");
	assert_string_equal(native_msg_name(NATIVE_MSG_DONE), "DONE");
	assert_string_equal(native_msg_name(NATIVE_MSG_EXPORT), "EXPORT");
	assert_string_equal(native_msg_name(0x8a), "LANES");
	assert_string_equal(native_msg_name(0x8c), "unknown");
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
		cmocka_unit_test(test_attempt),
		cmocka_unit_test(test_state_golden),
		cmocka_unit_test(test_state_errors),
		cmocka_unit_test(test_sums_golden),
		cmocka_unit_test(test_sums_round_trip_max),
		cmocka_unit_test(test_sums_errors),
		cmocka_unit_test(test_verdict_golden),
		cmocka_unit_test(test_verdict_round_trip_max),
		cmocka_unit_test(test_verdict_errors),
		cmocka_unit_test(test_export_golden),
		cmocka_unit_test(test_export_errors),
		cmocka_unit_test(test_msg_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
