/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for lanes (src/transport/stripe.c and the framing in
 * transport.c), and the native messages that negotiate them (HELLO's
 * CAP_LANES, LANES): golden bytes of every codec and their refusals; a
 * striped round trip over real TCP on 127.0.0.1 (xport_lanes_connect
 * against a destination that offers and attaches); reassembly of frames
 * that arrive on any lane in any order, and its refusals fed by hand-made
 * frames: a frame no lane can still bring, one sent twice, a length of 0
 * and one beyond the maximum, the end of the stream inside a frame or its
 * header; the join's
 * refusals (wrong token, an index beyond those agreed, a duplicate), and a
 * join that never comes (the wait's timeout).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "transport/transport.h"
#include "wire/native.h"

#define SAFETY_TIMEOUT_MS 20000

static const uint8_t token[XPORT_TOKEN_LEN] = {
	0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
};

/* ---- codecs ------------------------------------------------------------ */

static void test_frame_golden(void **state)
{
	static const uint8_t want[XPORT_FRAME_HDR] = { 1, 2, 3, 4, 5, 6, 7, 8, 0, 4, 0, 0 };
	uint8_t hdr[XPORT_FRAME_HDR];
	uint64_t seq = 0;
	uint32_t len = 0;

	(void)state;
	xport_frame_encode(hdr, UINT64_C(0x0102030405060708), XPORT_FRAME_MAX);
	assert_memory_equal(hdr, want, sizeof(want));
	assert_int_equal(xport_frame_decode(hdr, &seq, &len), 0);
	assert_true(seq == UINT64_C(0x0102030405060708));
	assert_int_equal(len, XPORT_FRAME_MAX);

	xport_frame_encode(hdr, 4, 0);
	assert_int_equal(xport_frame_decode(hdr, &seq, &len), -EPROTO);
	assert_string_equal(err_msg(), "frame 4 of 0 bytes (must be 1..262144)");
	xport_frame_encode(hdr, 4, XPORT_FRAME_MAX + 1);
	assert_int_equal(xport_frame_decode(hdr, &seq, &len), -EPROTO);
	assert_string_equal(err_msg(), "frame 4 of 262145 bytes (must be 1..262144)");
}

static void test_join_golden(void **state)
{
	static const uint8_t want[XPORT_JOIN_LEN] = { 'B', 'L', 'K', 'M', 'L', 'A', 'N', 'E', 0, 3,
						      0,   0,	0,   1,	  2,   3,   4,	 5,   6, 7,
						      8,   9,	10,  11,  12,  13,  14,	 15 };
	uint8_t buf[XPORT_JOIN_LEN], t[XPORT_TOKEN_LEN];
	unsigned lane = 0;

	(void)state;
	xport_join_encode(buf, 3, token);
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(xport_join_decode(buf, &lane, t), 0);
	assert_int_equal(lane, 3);
	assert_memory_equal(t, token, sizeof(t));

	buf[0] = 'X';
	assert_int_equal(xport_join_decode(buf, &lane, t), -EPROTO);
	assert_string_equal(err_msg(), "join: bad magic 0x584c4b4d4c414e45");
	xport_join_encode(buf, 3, token);
	buf[11] = 1;
	assert_int_equal(xport_join_decode(buf, &lane, t), -EPROTO);
	assert_string_equal(err_msg(), "join: reserved field 0x0001 is not zero");
	/* Index 0 is the write lane. */
	xport_join_encode(buf, XPORT_WLANE_INDEX, token);
	assert_int_equal(xport_join_decode(buf, &lane, t), 0);
	assert_int_equal(lane, XPORT_WLANE_INDEX);
	xport_join_encode(buf, XPORT_LANES_MAX, token);
	assert_int_equal(xport_join_decode(buf, &lane, t), -ERANGE);
	assert_string_equal(err_msg(), "join: connection index 16 out of range (0..15)");
}

static void test_lanes_msg_golden(void **state)
{
	static const uint8_t want[] = { 0x8a, 0, 0, 0, 18, 0,  4,  0,  1,  2,  3, 4,
					5,    6, 7, 8, 9,  10, 11, 12, 13, 14, 15 };
	struct native_lanes l = { .count = 4 }, d;
	uint8_t buf[64];

	(void)state;
	memcpy(l.token, token, sizeof(l.token));
	assert_int_equal(native_lanes_encode(buf, sizeof(buf), &l), sizeof(want));
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(native_lanes_decode(buf + 5, 18, &d), 0);
	assert_int_equal(d.count, 4);
	assert_memory_equal(d.token, token, sizeof(d.token));

	assert_false(d.has_flags);
	assert_int_equal(d.flags, 0);

	/* With the write lane asked for: be16 flags at the end. */
	l.has_flags = true;
	l.flags = NATIVE_LANES_WLANE;
	assert_int_equal(native_lanes_encode(buf, sizeof(buf), &l), sizeof(want) + 2);
	assert_int_equal(buf[4], 20);
	assert_int_equal(buf[23], 0);
	assert_int_equal(buf[24], 1);
	assert_int_equal(native_lanes_decode(buf + 5, 20, &d), 0);
	assert_true(d.has_flags);
	assert_int_equal(d.flags, NATIVE_LANES_WLANE);
	buf[24] = 3;
	assert_int_equal(native_lanes_decode(buf + 5, 20, &d), -EBADMSG);
	assert_string_equal(err_msg(), "lanes: unknown flags 0x2");
	l.flags = 2;
	assert_int_equal(native_lanes_encode(buf, sizeof(buf), &l), -EINVAL);
	l.has_flags = false;
	l.flags = NATIVE_LANES_WLANE;
	assert_int_equal(native_lanes_encode(buf, sizeof(buf), &l), -EINVAL);
	l.flags = 0;
	assert_int_equal(native_lanes_encode(buf, sizeof(buf), &l), sizeof(want));

	assert_int_equal(native_lanes_decode(buf + 5, 17, &d), -EBADMSG);
	assert_string_equal(err_msg(), "lanes: body of 17 bytes (must be 18 or 20)");
	buf[6] = 0;
	assert_int_equal(native_lanes_decode(buf + 5, 18, &d), -EBADMSG);
	assert_string_equal(err_msg(), "lanes: 0 connections (must be 1..16)");
	buf[6] = 17;
	assert_int_equal(native_lanes_decode(buf + 5, 18, &d), -EBADMSG);
	assert_string_equal(err_msg(), "lanes: 17 connections (must be 1..16)");
	l.count = 17;
	assert_int_equal(native_lanes_encode(buf, sizeof(buf), &l), -EINVAL);
}

/* A write lane message's header: be64 after, be32 len (1 .. max). */
static void test_lane_msg_golden(void **state)
{
	static const uint8_t want[NATIVE_LANE_HDR] = { 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 40 };
	uint8_t hdr[NATIVE_LANE_HDR];
	uint64_t after = 0;
	uint32_t len = 0;

	(void)state;
	native_lane_encode(hdr, 0x102, 40);
	assert_memory_equal(hdr, want, sizeof(want));
	assert_int_equal(native_lane_decode(hdr, 40, &after, &len), 0);
	assert_int_equal(after, 0x102);
	assert_int_equal(len, 40);
	assert_int_equal(native_lane_decode(hdr, 39, &after, &len), -EBADMSG);
	assert_string_equal(err_msg(), "write lane: a record of 40 bytes (must be 1..39)");
	native_lane_encode(hdr, 7, 0);
	assert_int_equal(native_lane_decode(hdr, 39, &after, &len), -EBADMSG);
	assert_string_equal(err_msg(), "write lane: a record of 0 bytes (must be 1..39)");
	native_lane_encode(hdr, 7, UINT32_MAX);
	assert_int_equal(native_lane_decode(hdr, 39, &after, &len), -EBADMSG);
}

static void test_hello_lanes(void **state)
{
	struct native_hello h = { .version = NATIVE_VERSION,
				  .caps = NATIVE_CAP_LANES,
				  .chunk_size = 1 << 20,
				  .ndev = 1,
				  .lanes = 4 },
			    d;
	uint8_t buf[128];
	size_t used = 0;
	int n;

	(void)state;
	snprintf(h.dev[0].name, sizeof(h.dev[0].name), "d0");
	h.dev[0].size = 4096;
	n = native_hello_encode(buf, sizeof(buf), &h);
	assert_int_equal(n, 8 + 4 + 4 + 4 + 16 + 2 + 1 + 2 + 8 + 2);
	assert_int_equal(buf[n - 2], 0);
	assert_int_equal(buf[n - 1], 4);
	/* The trailing count is waited for, then checked. */
	assert_int_equal(native_hello_decode(buf, (size_t)n - 1, &d, &used), -EAGAIN);
	assert_int_equal(used, n);
	assert_int_equal(native_hello_decode(buf, (size_t)n, &d, &used), 0);
	assert_int_equal(d.lanes, 4);
	buf[n - 1] = 1;
	assert_int_equal(native_hello_decode(buf, (size_t)n, &d, &used), -EBADMSG);
	assert_string_equal(err_msg(), "hello: asks for 1 connections (must be 2..16)");
	buf[n - 2] = 1;
	buf[n - 1] = 0;
	assert_int_equal(native_hello_decode(buf, (size_t)n, &d, &used), -EBADMSG);
	h.lanes = 1;
	assert_int_equal(native_hello_encode(buf, sizeof(buf), &h), -EINVAL);
	/* Without the capability nothing trails, and lanes reads 1. */
	h.caps = 0;
	n = native_hello_encode(buf, sizeof(buf), &h);
	assert_int_equal(native_hello_decode(buf, (size_t)n, &d, &used), 0);
	assert_int_equal(d.lanes, 1);
}

/* ---- over TCP ------------------------------------------------------------ */

struct pair {
	int lfd;
	char addr[128];
	struct xport *src;		    /* lane 0, dialled */
	struct xport *dst;		    /* lane 0, accepted */
	struct xport *raw[XPORT_LANES_MAX]; /* the source's other lanes, by hand */
};

static void pair_open(struct pair *p)
{
	memset(p, 0, sizeof(*p));
	assert_int_equal(xport_listen("127.0.0.1:0", &p->lfd, p->addr, sizeof(p->addr)), 0);
	assert_int_equal(xport_dial(p->addr, SAFETY_TIMEOUT_MS, NULL, NULL, &p->src), 0);
	assert_int_equal(xport_accept(p->lfd, SAFETY_TIMEOUT_MS, NULL, &p->dst), 0);
	xport_set_timeout(p->src, SAFETY_TIMEOUT_MS);
	xport_set_timeout(p->dst, SAFETY_TIMEOUT_MS);
}

static void pair_close(struct pair *p)
{
	for (unsigned i = 0; i < XPORT_LANES_MAX; i++)
		xport_close(p->raw[i]);
	xport_close(p->src);
	xport_close(p->dst);
	close(p->lfd);
}

/* A lane dialled by hand: its JOIN is sent, accepted and read; the
 * attach's result is returned (the joined answer checked when 0). */
static int join_by_hand(struct pair *p, unsigned index, const uint8_t *tok)
{
	uint8_t join[XPORT_JOIN_LEN], ans[XPORT_JOINED_HDR], t[XPORT_TOKEN_LEN];
	static const uint8_t ok[XPORT_JOINED_HDR] = { 0x8b, 0, 0, 0, 4, 0, 0, 0, 0 };
	struct xport *c, *a;
	unsigned got = 0;
	int r;

	assert_int_equal(xport_dial(p->addr, SAFETY_TIMEOUT_MS, NULL, NULL, &c), 0);
	assert_int_equal(xport_accept(p->lfd, SAFETY_TIMEOUT_MS, NULL, &a), 0);
	xport_set_timeout(c, SAFETY_TIMEOUT_MS);
	xport_set_timeout(a, SAFETY_TIMEOUT_MS);
	xport_join_encode(join, index, tok);
	assert_int_equal(xport_write(c, join, sizeof(join)), 0);
	assert_int_equal(xport_flush(c), 0);
	assert_int_equal(xport_read(a, join, sizeof(join), NULL), 0);
	assert_int_equal(xport_join_decode(join, &got, t), 0);
	r = xport_lanes_attach(p->dst, got, t, a);
	if (r < 0) {
		xport_close(a);
		xport_close(c);
		return r;
	}
	assert_int_equal(xport_read(c, ans, sizeof(ans), NULL), 0);
	assert_memory_equal(ans, ok, sizeof(ok));
	p->raw[index] = c;
	return 0;
}

/* The destination of p expects n lanes; all n - 1 join by hand. */
static void pair_lanes_by_hand(struct pair *p, unsigned n)
{
	assert_int_equal(xport_lanes_offer(p->dst, n, token, false), 0);
	for (unsigned i = 1; i < n; i++)
		assert_int_equal(join_by_hand(p, i, token), 0);
	assert_int_equal(xport_lanes_wait(p->dst, SAFETY_TIMEOUT_MS), 0);
	assert_int_equal(xport_lanes(p->dst), n);
}

static void send_frame(struct xport *lane, uint64_t seq, uint32_t len, const void *payload,
		       size_t plen)
{
	uint8_t hdr[XPORT_FRAME_HDR];

	xport_frame_encode(hdr, seq, len);
	assert_int_equal(xport_write2(lane, hdr, sizeof(hdr), payload, plen), 0);
	assert_int_equal(xport_flush(lane), 0);
}

/* The listener's part for xport_lanes_connect(): accept, read, attach. */
struct joiner {
	struct pair *p;
	unsigned n;
};

static void *joiner_main(void *arg)
{
	struct joiner *j = arg;

	for (unsigned i = 1; i < j->n; i++) {
		uint8_t join[XPORT_JOIN_LEN], t[XPORT_TOKEN_LEN];
		struct xport *a;
		unsigned index;

		if (xport_accept(j->p->lfd, SAFETY_TIMEOUT_MS, NULL, &a) < 0)
			return NULL;
		xport_set_timeout(a, SAFETY_TIMEOUT_MS);
		if (xport_read(a, join, sizeof(join), NULL) < 0 ||
		    xport_join_decode(join, &index, t) < 0 ||
		    xport_lanes_attach(j->p->dst, index, t, a) < 0)
			xport_close(a);
	}
	return NULL;
}

/* Small buffered writes, large direct ones and write2, mixed. */
struct writer {
	struct xport *x;
	const uint8_t *buf;
	size_t len;
	int r;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	size_t off = 0, step = 1;

	while (off < w->len && w->r == 0) {
		size_t k = MIN(step, w->len - off);

		if (k > 1000 && k % 2)
			w->r = xport_write2(w->x, w->buf + off, 7, w->buf + off + 7, k - 7);
		else
			w->r = xport_write(w->x, w->buf + off, k);
		off += k;
		step = step * 3 + 1;
		if (step > 700000)
			step = 5;
	}
	if (w->r == 0)
		w->r = xport_flush(w->x);
	return NULL;
}

static void test_round_trip(void **state)
{
	enum { N = 3, TOTAL = 3 * 1024 * 1024 + 12345 };
	uint8_t *out = malloc(TOTAL), *in = malloc(TOTAL);
	uint64_t lanes_total = 0;
	struct joiner j;
	struct writer w;
	struct pair p;
	pthread_t t;

	(void)state;
	assert_non_null(out);
	assert_non_null(in);
	for (size_t i = 0; i < TOTAL; i++)
		out[i] = (uint8_t)(i * 7 + i / 251);
	pair_open(&p);
	assert_int_equal(xport_lanes_offer(p.dst, N, token, false), 0);
	j = (struct joiner){ .p = &p, .n = N };
	assert_int_equal(pthread_create(&t, NULL, joiner_main, &j), 0);
	assert_int_equal(xport_lanes_connect(p.src, N, token, false), 0);
	pthread_join(t, NULL);
	assert_int_equal(xport_lanes_wait(p.dst, SAFETY_TIMEOUT_MS), 0);
	assert_int_equal(xport_lanes(p.src), N);
	w = (struct writer){ .x = p.src, .buf = out, .len = TOTAL };
	assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
	assert_int_equal(xport_read(p.dst, in, 10, NULL), 0);
	assert_int_equal(xport_read(p.dst, in + 10, TOTAL - 10, NULL), 0);
	pthread_join(t, NULL);
	assert_int_equal(w.r, 0);
	assert_memory_equal(in, out, TOTAL);
	assert_int_equal(xport_rx_bytes(p.dst), TOTAL);
	assert_int_equal(xport_tx_bytes(p.src), TOTAL);
	/* Each lane carried some: which one takes a frame depends on how
	 * fast each drains, not on its turn. */
	for (unsigned i = 0; i < N; i++) {
		assert_true(xport_lane_bytes(p.dst, i) > 0);
		lanes_total += xport_lane_bytes(p.dst, i);
	}
	assert_true(lanes_total > TOTAL);
	/* The other way stays unframed on lane 0. */
	assert_int_equal(xport_write(p.dst, "ok", 2), 0);
	assert_int_equal(xport_flush(p.dst), 0);
	assert_int_equal(xport_read(p.src, in, 2, NULL), 0);
	assert_memory_equal(in, "ok", 2);
	/* The source's end reaches every lane: EOF at a frame boundary. */
	assert_int_equal(xport_shutdown_write(p.src), 0);
	assert_int_equal(xport_read(p.dst, in, 1, NULL), -ECONNRESET);
	pair_close(&p);
	free(out);
	free(in);
}

/* Frames arrive on whichever lane carried them, in any order between
 * lanes: the stream comes out in sequence order. */
static void test_any_lane(void **state)
{
	struct pair p;
	char buf[16];

	(void)state;
	pair_open(&p);
	pair_lanes_by_hand(&p, 3);
	send_frame(p.raw[2], 1, 3, "def", 3);
	send_frame(p.raw[1], 2, 3, "ghi", 3);
	send_frame(p.raw[1], 3, 2, "jk", 2);
	send_frame(p.raw[2], 4, 1, "l", 1);
	/* Bytes on lanes 1 and 2, but not the next frame: nothing to read. */
	assert_int_equal(xport_readable(p.dst, 100), 0);
	send_frame(p.src, 0, 3, "abc", 3);
	assert_int_equal(xport_readable(p.dst, SAFETY_TIMEOUT_MS), 1);
	send_frame(p.src, 6, 2, "op", 2);
	send_frame(p.raw[1], 5, 2, "mn", 2);
	assert_int_equal(xport_read(p.dst, buf, 16, NULL), 0);
	assert_memory_equal(buf, "abcdefghijklmnop", 16);
	assert_int_equal(xport_lane_bytes(p.dst, 1), 3 * XPORT_FRAME_HDR + 7);
	/* Every lane ending at a frame boundary is the end of the stream. */
	xport_shutdown_write(p.raw[1]);
	xport_shutdown_write(p.raw[2]);
	xport_shutdown_write(p.src);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -ECONNRESET);
	pair_close(&p);
}

static void test_sequence_gap(void **state)
{
	struct pair p;
	char buf[8];

	(void)state;
	/* Frame 1 never comes: lane 1 holds frame 2, lane 0 has ended. */
	pair_open(&p);
	pair_lanes_by_hand(&p, 2);
	send_frame(p.src, 0, 3, "abc", 3);
	send_frame(p.raw[1], 2, 3, "ghi", 3);
	xport_shutdown_write(p.src);
	assert_int_equal(xport_read(p.dst, buf, 3, NULL), 0);
	assert_memory_equal(buf, "abc", 3);
	assert_int_equal(xport_read(p.dst, buf, 3, NULL), -EPROTO);
	assert_string_equal(err_msg(), "connection 2 of 2: frame 2 where frame 1 was expected, and "
				       "no connection can still bring it");
	/* Sticky. */
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -EPROTO);
	pair_close(&p);

	/* Every lane holds a later frame. */
	pair_open(&p);
	pair_lanes_by_hand(&p, 3);
	send_frame(p.raw[2], 3, 1, "d", 1);
	send_frame(p.raw[1], 2, 1, "c", 1);
	send_frame(p.src, 4, 1, "e", 1);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -EPROTO);
	assert_string_equal(err_msg(), "connection 2 of 3: frame 2 where frame 0 was expected, and "
				       "no connection can still bring it");
	pair_close(&p);

	/* A frame sent twice. */
	pair_open(&p);
	pair_lanes_by_hand(&p, 2);
	send_frame(p.src, 0, 1, "a", 1);
	send_frame(p.raw[1], 0, 1, "a", 1);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), 0);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -EPROTO);
	assert_string_equal(err_msg(),
			    "connection 2 of 2: frame 0 where frame 1 or later was expected");
	pair_close(&p);

	/* A lane that ends inside a frame header. */
	pair_open(&p);
	pair_lanes_by_hand(&p, 2);
	assert_int_equal(xport_write(p.raw[1], "\0\0\0", 3), 0);
	assert_int_equal(xport_flush(p.raw[1]), 0);
	xport_shutdown_write(p.raw[1]);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -ECONNRESET);
	assert_non_null(strstr(err_msg(), "connection 2 of 2: connection closed by"));
	assert_non_null(strstr(err_msg(), "inside a frame header"));
	pair_close(&p);
}

static void test_bad_lengths(void **state)
{
	struct pair p;
	char buf[8];

	(void)state;
	pair_open(&p);
	pair_lanes_by_hand(&p, 2);
	send_frame(p.src, 0, 0, "", 0);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -EPROTO);
	assert_string_equal(err_msg(), "connection 1 of 2: frame 0 of 0 bytes (must be 1..262144)");
	pair_close(&p);

	pair_open(&p);
	pair_lanes_by_hand(&p, 2);
	send_frame(p.src, 0, 2, "xy", 2);
	send_frame(p.raw[1], 1, XPORT_FRAME_MAX + 1, "", 0);
	assert_int_equal(xport_read(p.dst, buf, 2, NULL), 0);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -EPROTO);
	assert_string_equal(err_msg(),
			    "connection 2 of 2: frame 1 of 262145 bytes (must be 1..262144)");
	pair_close(&p);

	/* The stream ends inside a frame. */
	pair_open(&p);
	pair_lanes_by_hand(&p, 2);
	send_frame(p.src, 0, 10, "abc", 3);
	assert_int_equal(xport_shutdown_write(p.src), 0);
	assert_int_equal(xport_read(p.dst, buf, 1, NULL), -ECONNRESET);
	assert_non_null(strstr(err_msg(), "connection 1 of 2: connection closed by"));
	assert_non_null(strstr(err_msg(), "with 7 of 10 bytes missing"));
	pair_close(&p);
}

static void test_join_refusals(void **state)
{
	uint8_t wrong[XPORT_TOKEN_LEN];
	struct pair p;

	(void)state;
	memcpy(wrong, token, sizeof(wrong));
	wrong[15] ^= 1;
	pair_open(&p);
	/* Nothing offered yet. */
	assert_int_equal(join_by_hand(&p, 1, token), -EPROTO);
	assert_string_equal(err_msg(), "the migration it names asked for no more connections");
	assert_int_equal(xport_lanes_offer(p.dst, 3, token, false), 0);
	assert_int_equal(join_by_hand(&p, 1, wrong), -EACCES);
	assert_string_equal(err_msg(), "wrong join token for connection 2");
	assert_int_equal(join_by_hand(&p, 3, token), -ERANGE);
	assert_string_equal(err_msg(), "connection 4 is beyond the 3 agreed");
	assert_int_equal(join_by_hand(&p, 1, token), 0);
	assert_int_equal(join_by_hand(&p, 1, token), -EEXIST);
	assert_string_equal(err_msg(), "connection 2 of 3 has already joined");
	/* Lane 2 never comes. */
	assert_int_equal(xport_lanes_wait(p.dst, 200), -ETIMEDOUT);
	assert_string_equal(err_msg(), "only 2 of 3 connections joined within 0.2 s");
	pair_close(&p);
}

/*
 * A source that gives up on its lanes says so on its first connection
 * (ABORT): the wait ends there, not at its timeout, the connection is read
 * unstriped, and a lane arriving late is refused.
 */
static void test_source_speaks_first(void **state)
{
	uint8_t got[5];
	struct pair p;

	(void)state;
	pair_open(&p);
	assert_int_equal(xport_lanes_offer(p.dst, 3, token, false), 0);
	assert_int_equal(join_by_hand(&p, 1, token), 0);
	assert_int_equal(xport_write(p.src, "abort", 5), 0);
	assert_int_equal(xport_flush(p.src), 0);
	assert_int_equal(xport_lanes_wait(p.dst, SAFETY_TIMEOUT_MS), 1);
	assert_int_equal(join_by_hand(&p, 2, token), -EPROTO);
	assert_string_equal(err_msg(), "the stream is already under way");
	assert_int_equal(xport_read(p.dst, got, sizeof(got), NULL), 0);
	assert_memory_equal(got, "abort", 5);
	pair_close(&p);

	/* Or it just goes away. */
	pair_open(&p);
	assert_int_equal(xport_lanes_offer(p.dst, 2, token, false), 0);
	xport_close(p.src);
	p.src = NULL;
	assert_int_equal(xport_lanes_wait(p.dst, SAFETY_TIMEOUT_MS), 1);
	assert_true(xport_read(p.dst, got, 1, NULL) < 0);
	pair_close(&p);
}

/*
 * The write lane: joined with index 0 where it was offered, once; not
 * striped (x's bytes still come on x alone, in order); refused where it
 * was not offered; and no lane joins once the stream is under way.
 */
static void test_write_lane(void **state)
{
	uint8_t wrong[XPORT_TOKEN_LEN], got[6];
	struct xport *wl;
	struct pair p;

	(void)state;
	memcpy(wrong, token, sizeof(wrong));
	wrong[0] ^= 1;
	pair_open(&p);
	/* Offered lanes, but no write lane. */
	assert_int_equal(xport_lanes_offer(p.dst, 2, token, false), 0);
	assert_int_equal(join_by_hand(&p, XPORT_WLANE_INDEX, token), -EPROTO);
	assert_string_equal(err_msg(), "the migration it names asked for no write lane");
	pair_close(&p);

	pair_open(&p);
	assert_int_equal(xport_lanes_offer(p.dst, 1, token, true), 0);
	assert_null(xport_write_lane(p.dst));
	assert_int_equal(join_by_hand(&p, 1, token), -ERANGE);
	assert_int_equal(join_by_hand(&p, XPORT_WLANE_INDEX, wrong), -EACCES);
	assert_string_equal(err_msg(), "wrong join token for the write lane");
	assert_int_equal(join_by_hand(&p, XPORT_WLANE_INDEX, token), 0);
	assert_int_equal(join_by_hand(&p, XPORT_WLANE_INDEX, token), -EEXIST);
	assert_string_equal(err_msg(), "the write lane has already joined");
	assert_int_equal(xport_lanes_wait(p.dst, SAFETY_TIMEOUT_MS), 0);
	assert_int_equal(xport_lanes(p.dst), 1);
	wl = xport_write_lane(p.dst);
	assert_non_null(wl);
	/* x is read as it is written: not striped. */
	assert_int_equal(xport_write(p.src, "stream", 6), 0);
	assert_int_equal(xport_flush(p.src), 0);
	assert_int_equal(xport_read(p.dst, got, sizeof(got), NULL), 0);
	assert_memory_equal(got, "stream", 6);
	/* The lane is a transport of its own, both ways. */
	assert_int_equal(xport_write(wl, "lane", 4), 0);
	assert_int_equal(xport_flush(wl), 0);
	pair_close(&p);

	/* Offered, never joined: the wait says so. */
	pair_open(&p);
	assert_int_equal(xport_lanes_offer(p.dst, 1, token, true), 0);
	assert_int_equal(xport_lanes_wait(p.dst, 200), -ETIMEDOUT);
	assert_string_equal(err_msg(), "only 1 of 2 connections joined within 0.2 s");
	pair_close(&p);
}

/* The source's side: xport_lanes_connect() dials the write lane too. */
static void test_write_lane_connect(void **state)
{
	struct joiner jn;
	pthread_t t;
	uint8_t got[4];
	struct pair p;

	(void)state;
	pair_open(&p);
	assert_int_equal(xport_lanes_offer(p.dst, 2, token, true), 0);
	/* It accepts n - 1 connections: lane 1 and the write lane. */
	jn = (struct joiner){ .p = &p, .n = 3 };
	assert_int_equal(pthread_create(&t, NULL, joiner_main, &jn), 0);
	assert_int_equal(xport_lanes_connect(p.src, 2, token, true), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(xport_lanes_wait(p.dst, SAFETY_TIMEOUT_MS), 0);
	assert_non_null(xport_write_lane(p.src));
	assert_non_null(xport_write_lane(p.dst));
	assert_int_equal(xport_write(xport_write_lane(p.src), "wack", 4), 0);
	assert_int_equal(xport_flush(xport_write_lane(p.src)), 0);
	assert_int_equal(xport_read(xport_write_lane(p.dst), got, 4, NULL), 0);
	assert_memory_equal(got, "wack", 4);
	pair_close(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_golden),	 cmocka_unit_test(test_join_golden),
		cmocka_unit_test(test_lanes_msg_golden), cmocka_unit_test(test_hello_lanes),
		cmocka_unit_test(test_round_trip),	 cmocka_unit_test(test_any_lane),
		cmocka_unit_test(test_sequence_gap),	 cmocka_unit_test(test_bad_lengths),
		cmocka_unit_test(test_join_refusals),	 cmocka_unit_test(test_source_speaks_first),
		cmocka_unit_test(test_write_lane),	 cmocka_unit_test(test_write_lane_connect),
		cmocka_unit_test(test_lane_msg_golden),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
