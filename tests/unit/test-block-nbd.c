/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the NBD client backend (src/block/nbd.c, libnbd), against
 * blkmig's own NBD server on 127.0.0.1:0 over in-memory devices: every op
 * lands where it should (checked on the device behind the server), large
 * requests are split, ops run in parallel over a bounded pool, and each
 * failure is its own error: an export of another size, a read-only one,
 * nothing listening, a server that refuses until it is ready, one that
 * never answers (timeout), cancel, and a server gone after it served.
 *
 * Waits are bounded by the backend's own timeouts, set short here; nothing
 * asserts how long anything took.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "nbdserver/server.h"

#define DISK_SIZE (40 * MiB)
#define SMALL	  MiB

struct fix {
	struct nbds *s;
	struct blk *disk, *ro;
	char port[16];
};

static void start_server_limits(struct fix *f, unsigned idle_ms)
{
	struct nbds_limits l = NBDS_LIMITS_DEFAULT;
	char bound[128];

	assert_int_equal(nbds_new(&f->s), 0);
	assert_int_equal(nbds_add_export(f->s, "disk", f->disk, false), 0);
	assert_int_equal(nbds_add_export(f->s, "ro", f->ro, true), 0);
	if (idle_ms) {
		l.idle_timeout_ms = idle_ms;
		assert_int_equal(nbds_set_limits(f->s, &l), 0);
	}
	if (nbds_listen(f->s, "127.0.0.1:0", bound, sizeof(bound)) != 0)
		fail_msg("nbds_listen: %s", err_msg());
	snprintf(f->port, sizeof(f->port), "%s", strrchr(bound, ':') + 1);
}

static void start_server(struct fix *f)
{
	start_server_limits(f, 0);
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(blk_mem_open(DISK_SIZE, &f->disk), 0);
	assert_int_equal(blk_mem_open(SMALL, &f->ro), 0);
	start_server(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	nbds_free(f->s);
	blk_close(f->disk);
	blk_close(f->ro);
	free(f);
	return 0;
}

static struct blk *client(struct fix *f, const char *export, uint64_t size, uint64_t patience_ms,
			  uint64_t timeout_ms, unsigned conns)
{
	struct blk_nbd_target t = {
		.host = "127.0.0.1",
		.port = f->port,
		.export = export,
		.patience_ns = patience_ms * 1000000u,
		.op_timeout_ns = timeout_ms * 1000000u,
		.max_conns = conns,
	};
	struct blk *b;

	if (blk_nbd_open(&t, size, &b) != 0)
		fail_msg("blk_nbd_open: %s", err_msg());
	return b;
}

static void assert_msg_contains(const char *needle)
{
	if (!strstr(err_msg(), needle))
		fail_msg("message '%s' does not contain '%s'", err_msg(), needle);
}

static void test_roundtrip(void **state)
{
	struct fix *f = *state;
	struct blk *b = client(f, "disk", DISK_SIZE, 1000, 5000, 2);
	size_t big = 36 * MiB; /* more than one NBD request carries */
	uint8_t *buf = malloc(big), *back = malloc(big);
	struct blk_nbd_stats st;
	uint64_t pnum;
	bool alloc;

	assert_non_null(buf);
	assert_non_null(back);
	for (size_t i = 0; i < big; i++)
		buf[i] = (uint8_t)(i * 7 + i / 4096);
	assert_int_equal(blk_pwrite(b, buf, big, 2 * MiB), 0);
	assert_int_equal(blk_flush(b), 0);
	/* On the device behind the server, and read back through the client. */
	assert_int_equal(blk_pread(f->disk, back, big, 2 * MiB), 0);
	assert_memory_equal(buf, back, big);
	memset(back, 0, big);
	assert_int_equal(blk_pread(b, back, big, 2 * MiB), 0);
	assert_memory_equal(buf, back, big);

	/* Zero without and with may-trim, and trim: read as zeros. */
	assert_int_equal(blk_zero(b, 2 * MiB, 64 * KiB, 0), 0);
	assert_int_equal(blk_zero(b, 3 * MiB, 64 * KiB, BLK_ZERO_MAY_TRIM), 0);
	assert_int_equal(blk_pread(f->disk, back, 64 * KiB, 2 * MiB), 0);
	assert_true(back[0] == 0 && back[64 * KiB - 1] == 0);
	assert_int_equal(blk_pread(f->disk, back, 64 * KiB, 3 * MiB), 0);
	assert_true(back[0] == 0 && back[64 * KiB - 1] == 0);
	assert_int_equal(blk_trim(b, 4 * MiB, 64 * KiB), 0);

	/* Block status: the untouched end of the disk is a hole. */
	assert_int_equal(blk_block_status(b, DISK_SIZE - MiB, MiB, &pnum, &alloc), 0);
	assert_false(alloc);
	assert_true(pnum > 0 && pnum <= MiB);
	assert_int_equal(blk_block_status(b, 10 * MiB, MiB, &pnum, &alloc), 0);
	assert_true(alloc);

	blk_nbd_stats(b, &st);
	assert_int_equal(st.errors, 0);
	assert_true(st.connects >= 1 && st.connects <= 2);
	blk_close(b);
	free(buf);
	free(back);
}

struct writer {
	struct blk *b;
	unsigned k;
	int r;
	pthread_t th;
};

static void *writer_main(void *p)
{
	struct writer *w = p;
	uint8_t buf[4096];

	w->r = 0;
	for (unsigned i = 0; i < 50 && w->r == 0; i++) {
		memset(buf, (int)(w->k * 50 + i) & 0xff, sizeof(buf));
		w->r = blk_pwrite(w->b, buf, sizeof(buf), ((uint64_t)w->k * 64 + i) * 4096);
	}
	return NULL;
}

/* Eight writers over a pool of two connections: all land, two connections. */
static void test_parallel(void **state)
{
	struct fix *f = *state;
	struct blk *b = client(f, "disk", DISK_SIZE, 1000, 5000, 2);
	struct writer w[8];
	struct blk_nbd_stats st;
	uint8_t buf[4096];

	for (unsigned k = 0; k < 8; k++) {
		w[k] = (struct writer){ .b = b, .k = k };
		assert_int_equal(pthread_create(&w[k].th, NULL, writer_main, &w[k]), 0);
	}
	for (unsigned k = 0; k < 8; k++) {
		assert_int_equal(pthread_join(w[k].th, NULL), 0);
		assert_int_equal(w[k].r, 0);
	}
	for (unsigned k = 0; k < 8; k++) {
		assert_int_equal(
		    blk_pread(f->disk, buf, sizeof(buf), ((uint64_t)k * 64 + 49) * 4096), 0);
		assert_int_equal(buf[0], (k * 50 + 49) & 0xff);
	}
	blk_nbd_stats(b, &st);
	assert_int_equal(st.requests, 400);
	assert_true(st.connects <= 2);
	blk_close(b);
}

static void test_wrong_size_and_readonly(void **state)
{
	struct fix *f = *state;
	struct blk *b = client(f, "disk", DISK_SIZE - MiB, 0, 5000, 1);
	struct blk_nbd_stats st;
	uint8_t buf[16];

	err_clear();
	assert_int_equal(blk_pread(b, buf, sizeof(buf), 0), -EMEDIUMTYPE);
	assert_msg_contains("where 40894464 were expected");
	blk_nbd_stats(b, &st);
	assert_int_equal(st.errors, 1);
	blk_close(b);

	b = client(f, "ro", SMALL, 0, 5000, 1);
	assert_int_equal(blk_pread(b, buf, sizeof(buf), 0), -EROFS);
	assert_msg_contains("read-only");
	blk_close(b);

	b = client(f, "nosuch", SMALL, 0, 5000, 1);
	assert_true(blk_pread(b, buf, sizeof(buf), 0) < 0);
	assert_msg_contains("forwarding to 127.0.0.1:");
	blk_close(b);
}

/* A port nobody listens on: the op fails once its patience is over. */
static void test_nothing_listening(void **state)
{
	struct fix *f = *state;
	struct blk *b;
	uint8_t buf[16];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	/* A port that was free a moment ago. */
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(f->port, sizeof(f->port), "%u", ntohs(sa.sin_port));
	close(fd);
	b = client(f, "disk", DISK_SIZE, 300, 5000, 1);
	err_clear();
	assert_true(blk_pread(b, buf, sizeof(buf), 0) < 0);
	assert_msg_contains("forwarding to 127.0.0.1:");
	blk_close(b);
}

struct unrefuse {
	struct nbds *s;
	pthread_t th;
};

static void *unrefuse_main(void *p)
{
	struct unrefuse *u = p;

	sleep_ns(300 * 1000000ull);
	nbds_refuse(u->s, NULL);
	return NULL;
}

/* A destination that refuses clients until it has taken over: the op
 * waits (patience) and then goes through. */
static void test_refused_until_ready(void **state)
{
	struct fix *f = *state;
	struct blk *b = client(f, "disk", DISK_SIZE, 10000, 5000, 1);
	struct unrefuse u = { .s = f->s };
	struct blk_nbd_stats st;

	nbds_refuse(f->s, "an incoming migration is in progress");
	assert_int_equal(pthread_create(&u.th, NULL, unrefuse_main, &u), 0);
	assert_int_equal(blk_pwrite(b, "ready", 5, 0), 0);
	assert_int_equal(pthread_join(u.th, NULL), 0);
	blk_nbd_stats(b, &st);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.connects, 1);
	blk_close(b);
}

/* A listener that accepts and never says a word. */
struct silent {
	int lfd;
	char port[16];
};

static void silent_open(struct silent *s)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &len), 0);
	snprintf(s->port, sizeof(s->port), "%u", ntohs(sa.sin_port));
}

static void test_timeout(void **state)
{
	struct fix *f = *state;
	struct silent s;
	struct blk *b;
	uint8_t buf[16];

	silent_open(&s);
	snprintf(f->port, sizeof(f->port), "%s", s.port);
	b = client(f, "disk", DISK_SIZE, 0, 300, 1);
	err_clear();
	assert_int_equal(blk_pread(b, buf, sizeof(buf), 0), -ETIMEDOUT);
	assert_msg_contains("no answer");
	blk_close(b);
	close(s.lfd);
}

struct canceller {
	struct blk *b;
	pthread_t th;
};

static void *cancel_main(void *p)
{
	struct canceller *c = p;

	sleep_ns(200 * 1000000ull);
	blk_nbd_cancel(c->b);
	return NULL;
}

static void test_cancel(void **state)
{
	struct fix *f = *state;
	struct canceller c;
	struct silent s;
	uint8_t buf[16];

	silent_open(&s);
	snprintf(f->port, sizeof(f->port), "%s", s.port);
	c.b = client(f, "disk", DISK_SIZE, 60000, 60000, 1);
	assert_int_equal(pthread_create(&c.th, NULL, cancel_main, &c), 0);
	assert_int_equal(blk_pread(c.b, buf, sizeof(buf), 0), -ECANCELED);
	assert_int_equal(pthread_join(c.th, NULL), 0);
	/* And from then on. */
	assert_int_equal(blk_pread(c.b, buf, sizeof(buf), 0), -ECANCELED);
	blk_close(c.b);
	close(s.lfd);
}

/* The server goes away after serving: the next op fails (and does not
 * wait the whole patience: a server that was there is gone). */
static void test_server_gone(void **state)
{
	struct fix *f = *state;
	struct blk *b = client(f, "disk", DISK_SIZE, 60000, 5000, 1);
	struct blk_nbd_stats st;
	uint8_t buf[16];

	assert_int_equal(blk_pwrite(b, "x", 1, 0), 0);
	nbds_free(f->s);
	f->s = NULL;
	err_clear();
	assert_true(blk_pread(b, buf, sizeof(buf), 0) < 0);
	assert_true(blk_pread(b, buf, sizeof(buf), 0) < 0);
	blk_nbd_stats(b, &st);
	assert_int_equal(st.errors, 2);
	blk_close(b);
	start_server(f); /* for the teardown */
}

/* The server closes an idle connection (its idle timeout, a restart):
 * the next op does not fail, it takes a fresh connection. */
static void test_idle_closed_by_server(void **state)
{
	struct fix *f = *state;
	struct blk_nbd_stats st;
	struct blk *b;
	uint8_t buf[4];

	nbds_free(f->s);
	start_server_limits(f, 200);
	b = client(f, "disk", DISK_SIZE, 1000, 5000, 1);
	assert_int_equal(blk_pwrite(b, "one", 3, 0), 0);
	sleep_ns(600 * 1000000ull);
	assert_int_equal(blk_pwrite(b, "two", 3, 4096), 0);
	assert_int_equal(blk_pread(b, buf, 3, 0), 0);
	assert_memory_equal(buf, "one", 3);
	blk_nbd_stats(b, &st);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.connects, 2);
	blk_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parallel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_size_and_readonly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_listening, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_until_ready, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_closed_by_server, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
