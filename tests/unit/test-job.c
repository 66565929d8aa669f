/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the background migration job (migrate/job.h): an attempt
 * runs to a real destination engine on 127.0.0.1, events arrive for each
 * state change, a second start is refused while one runs and after one
 * completed, cancel ends an attempt and leaves the devices writable.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "migrate/job.h"
#include "transport/transport.h"

#define SIZE (8 * MiB)

struct dst {
	pthread_t th;
	int lfd;
	char bound[128];
	struct cancel *cancel;
	int r;
};

static int open_mem(void *user, const char *name, uint64_t size, struct blk **out, char *path,
		    size_t path_cap, bool *created)
{
	*created = false;
	(void)user;
	(void)name;
	(void)path_cap;
	path[0] = '\0';
	return blk_mem_open(size, out);
}

static void *dst_main(void *arg)
{
	struct dst *d = arg;
	struct dst_params p = { .open = open_mem };
	struct xport *x = NULL;

	d->r = xport_accept(d->lfd, 20000, d->cancel, &x);
	if (d->r == 0)
		d->r = dst_run(&p, x, d->cancel, NULL);
	xport_close(x);
	return NULL;
}

static void dst_start(struct dst *d)
{
	memset(d, 0, sizeof(*d));
	assert_int_equal(cancel_new(&d->cancel), 0);
	assert_int_equal(xport_listen("127.0.0.1:0", &d->lfd, d->bound, sizeof(d->bound)), 0);
	assert_int_equal(pthread_create(&d->th, NULL, dst_main, d), 0);
}

static void dst_join(struct dst *d)
{
	pthread_join(d->th, NULL);
	cancel_free(d->cancel);
	close(d->lfd);
}

struct events {
	pthread_mutex_t lock;
	unsigned n;
	enum mig_state seen[64];
	char last_error[256];
};

static void on_event(void *user, const struct mig_stats *st, const char *error)
{
	struct events *e = user;

	pthread_mutex_lock(&e->lock);
	if (e->n < 64)
		e->seen[e->n++] = st->state;
	snprintf(e->last_error, sizeof(e->last_error), "%s", error);
	pthread_mutex_unlock(&e->lock);
}

static struct blk *tracked_mem(void)
{
	struct blk *m, *t;
	uint8_t buf[4096];

	assert_int_equal(blk_mem_open(SIZE, &m), 0);
	memset(buf, 0x42, sizeof(buf));
	assert_int_equal(blk_pwrite(m, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_track_open(m, &t), 0);
	return t;
}

static void test_complete_then_refuse(void **state)
{
	struct blk *t = tracked_mem();
	struct src_device dev = { .name = "d0", .blk = t };
	struct src_params p = { 0 };
	struct events ev = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct mig_stats st;
	struct job *j;
	struct dst d;
	bool started = true;
	char err[256];
	uint8_t buf[512] = { 0 };

	(void)state;
	assert_int_equal(job_new(&dev, 1, on_event, &ev, &j), 0);
	job_query(j, &st, &started, err, sizeof(err));
	assert_false(started);

	dst_start(&d);
	assert_int_equal(job_start(j, d.bound, &p, NULL, &(struct job_options){ 0 }), 0);
	assert_int_equal(job_wait(j), 0);
	dst_join(&d);
	assert_int_equal(d.r, 0);

	job_query(j, &st, &started, err, sizeof(err));
	assert_true(started);
	assert_int_equal(st.state, MIG_COMPLETED);
	assert_int_equal(st.remaining, 0);
	assert_string_equal(err, "");
	/* Events: at least setup/bulk on the way, and completed last. */
	assert_true(ev.n >= 2);
	assert_int_equal(ev.seen[ev.n - 1], MIG_COMPLETED);

	/* The devices are fenced: writes fail, and no second attempt. */
	assert_int_equal(blk_pwrite(t, buf, sizeof(buf), 0), -ESHUTDOWN);
	assert_int_equal(job_start(j, d.bound, &p, NULL, &(struct job_options){ 0 }), -ESHUTDOWN);
	assert_non_null(strstr(err_msg(), "already migrated"));
	job_free(j);
	blk_close(t);
}

static void test_busy_and_cancel(void **state)
{
	struct blk *t = tracked_mem();
	struct src_device dev = { .name = "d0", .blk = t };
	struct src_params p = { .max_bandwidth = 1 * MiB }; /* slow: 8 s for 8 MiB */
	struct events ev = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct mig_stats st;
	struct job *j;
	struct dst d;
	bool started;
	char err[256];
	uint8_t buf[512];

	(void)state;
	assert_int_equal(job_new(&dev, 1, on_event, &ev, &j), 0);
	dst_start(&d);
	assert_int_equal(job_start(j, d.bound, &p, NULL, &(struct job_options){ 0 }), 0);
	assert_int_equal(job_start(j, d.bound, &p, NULL, &(struct job_options){ 0 }), -EBUSY);
	sleep_ns(300 * 1000000ull);
	job_set_max_bandwidth(j, 2 * MiB);
	job_cancel(j);
	assert_int_equal(job_wait(j), -ECANCELED);
	dst_join(&d);
	assert_true(d.r < 0);

	job_query(j, &st, &started, err, sizeof(err));
	assert_int_equal(st.state, MIG_CANCELLED);
	assert_true(st.remaining > 0);
	assert_non_null(strstr(err, "cancel"));
	assert_int_equal(ev.seen[ev.n - 1], MIG_CANCELLED);

	/* Nothing fenced or paused: the device takes writes again. */
	memset(buf, 7, sizeof(buf));
	assert_int_equal(blk_pwrite(t, buf, sizeof(buf), 4096), 0);
	job_free(j);
	blk_close(t);
}

static void test_cancel_while_connecting(void **state)
{
	struct blk *t = tracked_mem();
	struct src_device dev = { .name = "d0", .blk = t };
	struct src_params p = { 0 };
	struct mig_stats st;
	struct job *j;
	bool started;
	char err[256];

	(void)state;
	assert_int_equal(job_new(&dev, 1, NULL, NULL, &j), 0);
	/* Port 1 on loopback refuses; the job keeps retrying (a destination
	 * may still be starting) until cancelled. */
	assert_int_equal(job_start(j, "127.0.0.1:1", &p, NULL, &(struct job_options){ 0 }), 0);
	sleep_ns(200 * 1000000ull);
	job_cancel(j);
	assert_int_equal(job_wait(j), -ECANCELED);
	job_query(j, &st, &started, err, sizeof(err));
	assert_int_equal(st.state, MIG_CANCELLED);
	assert_non_null(strstr(err, "127.0.0.1:1"));
	/* A failed attempt may be retried. */
	assert_int_equal(job_start(j, "127.0.0.1:1", &p, NULL, &(struct job_options){ 0 }), 0);
	job_cancel(j);
	assert_true(job_wait(j) < 0);
	job_free(j);
	blk_close(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_complete_then_refuse),
		cmocka_unit_test(test_busy_and_cancel),
		cmocka_unit_test(test_cancel_while_connecting),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
