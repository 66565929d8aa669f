/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the tracking layer (src/block/track.c): marking after
 * write/zero/trim (also when the lower op fails), attaching and detaching
 * the bitmap, and the writers' gate: pause, resume, drain and fence.
 *
 * Waiting is done on conditions, never on time, except for the "not yet
 * done after 50 ms" checks, which only assert that something blocked.  A
 * test-only "hold" layer below the tracker keeps a write in flight until
 * the test releases it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap/dirty.h"
#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"

#define DEV_SIZE   MiB
#define GRAN	   4096
#define NOT_YET_NS (50 * 1000 * 1000)

static void assert_msg_contains(const char *msg, const char *needle)
{
	if (!strstr(msg, needle))
		fail_msg("message '%s' does not contain '%s'", msg, needle);
}

/* ---- a layer that holds writes on request --------------------------------- */

struct hold_blk {
	struct blk blk;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool holding;	  /* writes wait while set */
	unsigned entered; /* writes that have arrived */
};

static int hold_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct hold_blk *h = (struct hold_blk *)b;

	pthread_mutex_lock(&h->lock);
	h->entered++;
	pthread_cond_broadcast(&h->cond);
	while (h->holding)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
	return blk_pwrite(b->lower, buf, len, off);
}

static int hold_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	return blk_pread(b->lower, buf, len, off);
}

static int hold_flush(struct blk *b)
{
	return blk_flush(b->lower);
}

static int hold_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	return blk_zero(b->lower, off, len, flags);
}

static int hold_trim(struct blk *b, uint64_t off, uint64_t len)
{
	return blk_trim(b->lower, off, len);
}

static void hold_close(struct blk *b)
{
	struct hold_blk *h = (struct hold_blk *)b;

	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

/* For wrappers that keep nothing of their own to free but themselves. */
static void hold_close_plain(struct blk *b)
{
	free(b);
}

static const struct blk_ops hold_ops = {
	.name = "hold",
	.pread = hold_pread,
	.pwrite = hold_pwrite,
	.flush = hold_flush,
	.zero = hold_zero,
	.trim = hold_trim,
	.close = hold_close,
};

static struct hold_blk *hold_open(struct blk *lower)
{
	struct hold_blk *h = calloc(1, sizeof(*h));

	assert_non_null(h);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	h->blk.ops = &hold_ops;
	h->blk.lower = lower;
	h->blk.size = lower->size;
	h->holding = true;
	return h;
}

static void hold_wait_entered(struct hold_blk *h, unsigned n)
{
	pthread_mutex_lock(&h->lock);
	while (h->entered < n)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}

static void hold_release(struct hold_blk *h)
{
	pthread_mutex_lock(&h->lock);
	h->holding = false;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

/* ---- fixtures ------------------------------------------------------------- */

struct stack {
	struct blk *mem;
	struct hold_blk *hold; /* NULL unless asked for */
	struct blk *track;
	struct dirty *d;
};

static void stack_open(struct stack *s, bool with_hold)
{
	struct blk *below;

	memset(s, 0, sizeof(*s));
	assert_int_equal(blk_mem_open(DEV_SIZE, &s->mem), 0);
	below = s->mem;
	if (with_hold) {
		s->hold = hold_open(s->mem);
		below = &s->hold->blk;
	}
	if (blk_track_open(below, &s->track) != 0)
		fail_msg("blk_track_open: %s", err_msg());
	s->d = dirty_new(DEV_SIZE, GRAN);
	assert_non_null(s->d);
}

static void stack_close(struct stack *s)
{
	track_set_dirty(s->track, NULL);
	blk_close(s->track); /* closes hold and mem too */
	dirty_free(s->d);
}

/* An op run on its own thread, to see whether it blocks. */
enum op_kind { OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_PAUSE, OP_SET_DIRTY, OP_READ };

struct async_op {
	struct blk *b;
	enum op_kind kind;
	uint64_t off;
	struct dirty *d; /* for OP_SET_DIRTY */
	int r;
	uint8_t byte; /* OP_READ: the first byte read */
	char msg[256];
	atomic_bool done;
	pthread_t th;
};

static void *async_main(void *p)
{
	struct async_op *a = p;
	uint8_t buf[100];

	memset(buf, 0xab, sizeof(buf));
	a->r = 0;
	switch (a->kind) {
	case OP_WRITE:
		a->r = blk_pwrite(a->b, buf, sizeof(buf), a->off);
		break;
	case OP_ZERO:
		a->r = blk_zero(a->b, a->off, 100, 0);
		break;
	case OP_TRIM:
		a->r = blk_trim(a->b, a->off, 100);
		break;
	case OP_FLUSH:
		a->r = blk_flush(a->b);
		break;
	case OP_PAUSE:
		track_pause(a->b);
		break;
	case OP_SET_DIRTY:
		track_set_dirty(a->b, a->d);
		break;
	case OP_READ:
		a->r = blk_pread(a->b, buf, sizeof(buf), a->off);
		a->byte = buf[0];
		break;
	}
	if (a->r < 0)
		snprintf(a->msg, sizeof(a->msg), "%s", err_msg());
	atomic_store(&a->done, true);
	return NULL;
}

static void async_start(struct async_op *a, struct blk *b, enum op_kind kind, uint64_t off)
{
	a->b = b;
	a->kind = kind;
	a->off = off;
	a->msg[0] = '\0';
	atomic_init(&a->done, false);
	assert_int_equal(pthread_create(&a->th, NULL, async_main, a), 0);
}

static int async_join(struct async_op *a)
{
	assert_int_equal(pthread_join(a->th, NULL), 0);
	assert_true(atomic_load(&a->done));
	return a->r;
}

/* The logical check "it is blocked": still not done after a while. */
static void assert_not_done_yet(struct async_op *a)
{
	sleep_ns(NOT_YET_NS);
	assert_false(atomic_load(&a->done));
}

/* ---- marking -------------------------------------------------------------- */

static void test_open_props(void **state)
{
	struct stack s;

	(void)state;
	stack_open(&s, false);
	assert_int_equal(blk_size(s.track), DEV_SIZE);
	assert_ptr_equal(s.track->lower, s.mem);
	assert_false(s.track->readonly);
	assert_int_equal(track_writes(s.track), 0);
	stack_close(&s);

	/* readonly is copied from below, and enforced by the wrappers. */
	assert_int_equal(blk_mem_open(DEV_SIZE, &s.mem), 0);
	s.mem->readonly = true;
	assert_int_equal(blk_track_open(s.mem, &s.track), 0);
	assert_true(s.track->readonly);
	assert_int_equal(blk_pwrite(s.track, "x", 1, 0), -EROFS);
	blk_close(s.track);
}

static void test_marks(void **state)
{
	struct stack s;
	uint8_t buf[GRAN];
	uint64_t pnum;
	bool alloc;

	(void)state;
	stack_open(&s, false);
	track_set_dirty(s.track, s.d);
	memset(buf, 0x5a, sizeof(buf));

	/* 100 bytes inside chunk 1. */
	assert_int_equal(blk_pwrite(s.track, buf, 100, GRAN + 5), 0);
	assert_int_equal(dirty_count(s.d), 1);
	assert_true(dirty_test(s.d, 1));
	/* Straddling chunks 2 and 3. */
	assert_int_equal(blk_pwrite(s.track, buf, 2, 3 * GRAN - 1), 0);
	assert_true(dirty_test(s.d, 2));
	assert_true(dirty_test(s.d, 3));
	/* Zero marks chunks 8..9, with and without MAY_TRIM. */
	assert_int_equal(blk_zero(s.track, 8 * GRAN, GRAN, 0), 0);
	assert_int_equal(blk_zero(s.track, 9 * GRAN, GRAN, BLK_ZERO_MAY_TRIM), 0);
	assert_true(dirty_test(s.d, 8));
	assert_true(dirty_test(s.d, 9));
	/* Trim marks chunk 20. */
	assert_int_equal(blk_trim(s.track, 20 * GRAN + 10, 10), 0);
	assert_true(dirty_test(s.d, 20));
	assert_int_equal(dirty_count(s.d), 6);
	assert_int_equal(track_writes(s.track), 5);

	/* Flush, reads and block_status mark and count nothing. */
	assert_int_equal(blk_flush(s.track), 0);
	assert_int_equal(blk_pread(s.track, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_block_status(s.track, 0, DEV_SIZE, &pnum, &alloc), 0);
	assert_true(alloc); /* page 0 of the mem device was written */
	assert_int_equal(dirty_count(s.d), 6);
	assert_int_equal(track_writes(s.track), 5);

	/* The data went through. */
	assert_int_equal(blk_pread(s.track, buf, 100, GRAN + 5), 0);
	assert_int_equal(buf[0], 0x5a);
	assert_int_equal(buf[99], 0x5a);

	/* Refused by the wrapper before reaching the layer: no mark. */
	assert_int_equal(blk_pwrite(s.track, buf, 10, DEV_SIZE - 5), -ERANGE);
	assert_false(dirty_test(s.d, DEV_SIZE / GRAN - 1));
	stack_close(&s);
}

/* ---- mirroring -------------------------------------------------------------- */

/* A mirror that records what it was offered and answers as told. */
struct fake_mirror {
	int answer;	 /* what submit returns */
	int wait_answer; /* what wait returns */
	unsigned submits, waits;
	enum track_op op;
	uint64_t off, len;
	uint8_t first;	    /* first byte of the data, as the layer passed it */
	bool data_was_down; /* the lower device had the data when submit ran */
	struct blk *lower;
};

static int fake_submit(void *opaque, enum track_op op, const void *buf, uint64_t off, uint64_t len,
		       uint64_t *ticket)
{
	struct fake_mirror *m = opaque;
	uint8_t b = 0;

	m->submits++;
	m->op = op;
	m->off = off;
	m->len = len;
	m->first = buf ? ((const uint8_t *)buf)[0] : 0;
	blk_pread(m->lower, &b, 1, off);
	m->data_was_down = buf ? b == m->first : b == 0;
	*ticket = m->submits;
	return m->answer;
}

static int fake_wait(void *opaque, uint64_t ticket)
{
	struct fake_mirror *m = opaque;

	assert_int_equal(ticket, m->submits);
	m->waits++;
	return m->wait_answer;
}

static const struct track_mirror fake_ops = { .submit = fake_submit, .wait = fake_wait };

static void test_mirror(void **state)
{
	struct fake_mirror m = { .answer = 1 };
	struct stack s;
	uint8_t buf[GRAN];

	(void)state;
	stack_open(&s, false);
	m.lower = s.mem;
	track_set_dirty(s.track, s.d);
	track_set_mirror(s.track, &fake_ops, &m);
	memset(buf, 0x77, sizeof(buf));

	/* Sent and waited for: not marked; the data was down first. */
	assert_int_equal(blk_pwrite(s.track, buf, 100, 3 * GRAN + 1), 0);
	assert_int_equal(m.submits, 1);
	assert_int_equal(m.waits, 1);
	assert_int_equal(m.op, TRACK_OP_WRITE);
	assert_int_equal(m.off, 3 * GRAN + 1);
	assert_int_equal(m.len, 100);
	assert_int_equal(m.first, 0x77);
	assert_true(m.data_was_down);
	assert_int_equal(dirty_count(s.d), 0);
	/* Write-zeroes is offered as zeroing. */
	assert_int_equal(blk_zero(s.track, 3 * GRAN, 10, 0), 0);
	assert_int_equal(m.op, TRACK_OP_ZERO);
	assert_true(m.data_was_down);
	assert_int_equal(dirty_count(s.d), 0);
	assert_int_equal(m.waits, 2);
	/* A discard is not offered (it need not zero): marked instead. */
	assert_int_equal(blk_trim(s.track, 5 * GRAN, GRAN), 0);
	assert_int_equal(m.submits, 2);
	assert_true(dirty_test(s.d, 5));
	dirty_clear_all(s.d);

	/* Not sent: marked, not waited for. */
	m.answer = 0;
	assert_int_equal(blk_pwrite(s.track, buf, 10, 7 * GRAN), 0);
	assert_int_equal(m.waits, 2);
	assert_true(dirty_test(s.d, 7));
	/* Sent, but the wait failed: marked after all. */
	m.answer = 1;
	m.wait_answer = -EIO;
	assert_int_equal(blk_pwrite(s.track, buf, 10, 9 * GRAN), 0);
	assert_int_equal(m.waits, 3);
	assert_true(dirty_test(s.d, 9));
	/* A failed lower write is not offered, and is marked. */
	m.wait_answer = 0;
	blk_mem_inject(s.mem, BLK_MEM_WRITE, 1, EIO);
	assert_int_equal(blk_pwrite(s.track, buf, 10, 11 * GRAN), -EIO);
	assert_int_equal(m.submits, 4);
	assert_true(dirty_test(s.d, 11));
	/* Flush is never offered. */
	assert_int_equal(blk_flush(s.track), 0);
	assert_int_equal(m.submits, 4);

	/* Detached: plain marking again. */
	track_set_mirror(s.track, NULL, NULL);
	assert_int_equal(blk_pwrite(s.track, buf, 10, 13 * GRAN), 0);
	assert_int_equal(m.submits, 4);
	assert_true(dirty_test(s.d, 13));
	stack_close(&s);
}

static void test_marks_on_lower_failure(void **state)
{
	struct stack s;
	uint8_t buf[100];

	(void)state;
	stack_open(&s, false);
	track_set_dirty(s.track, s.d);
	memset(buf, 1, sizeof(buf));

	blk_mem_inject(s.mem, BLK_MEM_WRITE, 1, EIO);
	err_clear();
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 5 * GRAN), -EIO);
	assert_msg_contains(err_msg(), "mem: injected write failure"); /* passed up as is */
	assert_true(dirty_test(s.d, 5));

	blk_mem_inject(s.mem, BLK_MEM_ZERO, 1, ENOSPC);
	assert_int_equal(blk_zero(s.track, 6 * GRAN, 10, 0), -ENOSPC);
	assert_true(dirty_test(s.d, 6));

	blk_mem_inject(s.mem, BLK_MEM_TRIM, 1, EIO);
	assert_int_equal(blk_trim(s.track, 7 * GRAN, 10), -EIO);
	assert_true(dirty_test(s.d, 7));

	blk_mem_inject(s.mem, BLK_MEM_FLUSH, 1, EIO);
	assert_int_equal(blk_flush(s.track), -EIO);
	assert_int_equal(dirty_count(s.d), 3);
	/* Failed ops reached the device, so they count. */
	assert_int_equal(track_writes(s.track), 3);
	stack_close(&s);
}

static void test_attach_detach(void **state)
{
	struct stack s;
	uint8_t buf[10] = { 0 };

	(void)state;
	stack_open(&s, false);
	/* No bitmap: writes go through unmarked. */
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_zero(s.track, GRAN, 10, 0), 0);
	assert_int_equal(blk_trim(s.track, 2 * GRAN, 10), 0);
	assert_int_equal(dirty_count(s.d), 0);
	assert_int_equal(track_writes(s.track), 3);

	track_set_dirty(s.track, s.d);
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 3 * GRAN), 0);
	assert_int_equal(dirty_count(s.d), 1);

	track_set_dirty(s.track, NULL);
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 4 * GRAN), 0);
	assert_int_equal(blk_zero(s.track, 4 * GRAN, 10, 0), 0);
	assert_int_equal(dirty_count(s.d), 1);
	assert_false(dirty_test(s.d, 4));
	stack_close(&s);
}

/* ---- the gate ------------------------------------------------------------- */

static void test_pause_blocks_writers(void **state)
{
	static const enum op_kind kinds[] = { OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH };
	struct async_op ops[ARRAY_SIZE(kinds)];
	struct stack s;
	uint8_t buf[100];
	uint64_t pnum;
	bool alloc;
	size_t i;

	(void)state;
	stack_open(&s, false);
	track_set_dirty(s.track, s.d);
	track_pause(s.track);
	for (i = 0; i < ARRAY_SIZE(kinds); i++)
		async_start(&ops[i], s.track, kinds[i], (i + 1) * GRAN);
	for (i = 0; i < ARRAY_SIZE(kinds); i++)
		assert_not_done_yet(&ops[i]);
	assert_int_equal(dirty_count(s.d), 0);
	assert_int_equal(track_writes(s.track), 0);

	/* Reads and block_status are never held. */
	assert_int_equal(blk_pread(s.track, buf, sizeof(buf), 0), 0);
	assert_int_equal(blk_block_status(s.track, 0, DEV_SIZE, &pnum, &alloc), 0);

	track_resume(s.track);
	for (i = 0; i < ARRAY_SIZE(kinds); i++)
		assert_int_equal(async_join(&ops[i]), 0);
	assert_int_equal(dirty_count(s.d), 3);
	assert_true(dirty_test(s.d, 1));
	assert_true(dirty_test(s.d, 2));
	assert_true(dirty_test(s.d, 3));
	assert_int_equal(track_writes(s.track), 3);

	/* After resume writes flow freely again. */
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 0), 0);
	stack_close(&s);
}

static void test_pause_waits_for_inflight(void **state)
{
	struct async_op writer, pauser;
	struct stack s;

	(void)state;
	stack_open(&s, true);
	track_set_dirty(s.track, s.d);
	async_start(&writer, s.track, OP_WRITE, 7 * GRAN);
	hold_wait_entered(s.hold, 1); /* now in flight below the gate */

	async_start(&pauser, s.track, OP_PAUSE, 0);
	assert_not_done_yet(&pauser);
	assert_false(atomic_load(&writer.done));

	hold_release(s.hold);
	async_join(&pauser);
	/* Pause returned only after the write completed and was marked. */
	assert_true(dirty_test(s.d, 7));
	assert_int_equal(track_writes(s.track), 1);
	assert_int_equal(async_join(&writer), 0);

	track_resume(s.track);
	stack_close(&s);
}

static void test_fence(void **state)
{
	struct async_op held;
	struct stack s;
	uint8_t buf[100];

	(void)state;
	stack_open(&s, false);
	track_set_dirty(s.track, s.d);
	track_pause(s.track);
	async_start(&held, s.track, OP_WRITE, 3 * GRAN);
	assert_not_done_yet(&held);

	track_fence(s.track, EPERM);
	assert_int_equal(async_join(&held), -EPERM);
	assert_msg_contains(held.msg, "device is fenced");

	/* New writes of every kind fail at once, with the same error. */
	memset(buf, 0xff, sizeof(buf));
	err_clear();
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 0), -EPERM);
	assert_msg_contains(err_msg(), "device is fenced");
	assert_int_equal(blk_zero(s.track, 0, 10, 0), -EPERM);
	assert_int_equal(blk_trim(s.track, 0, 10), -EPERM);
	assert_int_equal(blk_flush(s.track), -EPERM);

	/* Resume does not lift a fence; the first error stays. */
	track_resume(s.track);
	track_fence(s.track, EIO);
	assert_int_equal(blk_pwrite(s.track, buf, sizeof(buf), 0), -EPERM);

	/* Nothing reached the device or the bitmap; reads still work. */
	assert_int_equal(dirty_count(s.d), 0);
	assert_int_equal(track_writes(s.track), 0);
	assert_int_equal(blk_pread(s.track, buf, sizeof(buf), 0), 0);
	assert_int_equal(buf[0], 0);
	assert_int_equal(buf[99], 0);
	stack_close(&s);
}

static void test_fence_unpaused(void **state)
{
	struct stack s;

	(void)state;
	stack_open(&s, false);
	assert_int_equal(blk_pwrite(s.track, "a", 1, 0), 0);
	track_fence(s.track, ESHUTDOWN);
	assert_int_equal(blk_pwrite(s.track, "a", 1, 0), -ESHUTDOWN);
	/* Pausing a fenced device does not hang. */
	track_pause(s.track);
	assert_int_equal(blk_pwrite(s.track, "a", 1, 0), -ESHUTDOWN);
	assert_int_equal(track_writes(s.track), 1);
	stack_close(&s);
}

/*
 * Hand-over with forwarding: held writes (and reads) wait, also across a
 * resume, until redirected; then they, and every later op, go to the
 * other device, and neither the device below nor the bitmap sees them.
 */
static void test_hold_redirect(void **state)
{
	static const enum op_kind kinds[] = { OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_READ };
	struct async_op ops[ARRAY_SIZE(kinds)];
	struct blk *other;
	struct stack s;
	uint8_t buf[100];
	uint64_t pnum;
	bool alloc;
	size_t i;

	(void)state;
	stack_open(&s, false);
	assert_int_equal(blk_mem_open(DEV_SIZE, &other), 0);
	assert_int_equal(blk_pwrite(other, "\x5a", 1, 9 * GRAN), 0);
	track_set_dirty(s.track, s.d);
	track_pause(s.track);
	track_hold(s.track);
	for (i = 0; i < ARRAY_SIZE(kinds); i++)
		async_start(&ops[i], s.track, kinds[i], (i + 1) * GRAN);
	track_resume(s.track); /* the hand-over outlasts the pause */
	for (i = 0; i < ARRAY_SIZE(kinds); i++)
		assert_not_done_yet(&ops[i]);

	track_redirect(s.track, other);
	for (i = 0; i < ARRAY_SIZE(kinds); i++)
		assert_int_equal(async_join(&ops[i]), 0);
	/* The held write landed on the other device, nothing below. */
	assert_int_equal(blk_pread(other, buf, sizeof(buf), GRAN), 0);
	assert_int_equal(buf[0], 0xab);
	assert_int_equal(blk_pread(s.mem, buf, sizeof(buf), GRAN), 0);
	assert_int_equal(buf[0], 0);
	assert_int_equal(dirty_count(s.d), 0);
	assert_int_equal(track_writes(s.track), 0);

	/* Later ops go there too, reads and block status included. */
	assert_int_equal(blk_pwrite(s.track, "\x11", 1, 6 * GRAN), 0);
	assert_int_equal(blk_pread(other, buf, 1, 6 * GRAN), 0);
	assert_int_equal(buf[0], 0x11);
	assert_int_equal(blk_pread(s.track, buf, 1, 9 * GRAN), 0);
	assert_int_equal(buf[0], 0x5a);
	assert_int_equal(blk_block_status(s.track, 9 * GRAN, GRAN, &pnum, &alloc), 0);
	assert_true(alloc);
	assert_int_equal(blk_pread(s.mem, buf, 1, 6 * GRAN), 0);
	assert_int_equal(buf[0], 0);

	/* A fence still wins: writes fail, reads go below again. */
	track_fence(s.track, ESHUTDOWN);
	assert_int_equal(blk_pwrite(s.track, "a", 1, 0), -ESHUTDOWN);
	assert_int_equal(blk_pread(s.track, buf, 1, 9 * GRAN), 0);
	assert_int_equal(buf[0], 0);
	stack_close(&s);
	blk_close(other);
}

/*
 * A redirected op is not in flight for the engine: detaching the bitmap
 * (or pausing) returns while a forwarded write waits on the destination.
 */
static void test_redirected_not_in_flight(void **state)
{
	struct async_op w, detach;
	struct blk *mem;
	struct hold_blk *slow;
	struct stack s;

	(void)state;
	stack_open(&s, false);
	assert_int_equal(blk_mem_open(DEV_SIZE, &mem), 0);
	slow = hold_open(mem);
	track_set_dirty(s.track, s.d);
	track_hold(s.track);
	track_redirect(s.track, &slow->blk);
	async_start(&w, s.track, OP_WRITE, 5 * GRAN);
	hold_wait_entered(slow, 1);

	detach.d = NULL;
	async_start(&detach, s.track, OP_SET_DIRTY, 0);
	assert_int_equal(async_join(&detach), 0);
	track_pause(s.track);
	track_resume(s.track);
	assert_false(atomic_load(&w.done));

	hold_release(slow);
	assert_int_equal(async_join(&w), 0);
	assert_int_equal(dirty_count(s.d), 0);
	stack_close(&s);
	blk_close(&slow->blk);
}

/* Held and then fenced (forwarding could not start): the held ops end,
 * writes with the fence's error, reads from below. */
static void test_hold_then_fence(void **state)
{
	struct async_op w, r;
	struct stack s;

	(void)state;
	stack_open(&s, false);
	track_set_dirty(s.track, s.d);
	track_hold(s.track);
	async_start(&w, s.track, OP_WRITE, 2 * GRAN);
	async_start(&r, s.track, OP_READ, 2 * GRAN);
	assert_not_done_yet(&w);
	assert_not_done_yet(&r);
	track_fence(s.track, ESHUTDOWN);
	assert_int_equal(async_join(&w), -ESHUTDOWN);
	assert_int_equal(async_join(&r), 0);
	assert_int_equal(r.byte, 0);
	assert_int_equal(dirty_count(s.d), 0);
	stack_close(&s);
}

/*
 * set_dirty waits for writes in flight: after an attach returns, every
 * unmarked write has landed; after a detach returns, nobody still marks the
 * old bitmap.
 */
static void test_set_dirty_drains(void **state)
{
	struct async_op writer, setter;
	struct stack s;

	(void)state;
	/* Attach while a write is in flight. */
	stack_open(&s, true);
	async_start(&writer, s.track, OP_WRITE, 2 * GRAN);
	hold_wait_entered(s.hold, 1);
	setter.d = s.d;
	async_start(&setter, s.track, OP_SET_DIRTY, 0);
	assert_not_done_yet(&setter);
	hold_release(s.hold);
	async_join(&setter);
	assert_int_equal(async_join(&writer), 0);
	assert_false(dirty_test(s.d, 2)); /* entered before the attach */
	stack_close(&s);

	/* Detach while a write is in flight: it marks before detach returns. */
	stack_open(&s, true);
	track_set_dirty(s.track, s.d);
	async_start(&writer, s.track, OP_WRITE, 4 * GRAN);
	hold_wait_entered(s.hold, 1);
	setter.d = NULL;
	async_start(&setter, s.track, OP_SET_DIRTY, 0);
	assert_not_done_yet(&setter);
	hold_release(s.hold);
	async_join(&setter);
	assert_true(dirty_test(s.d, 4));
	assert_int_equal(async_join(&writer), 0);
	stack_close(&s);
}

/* Writers race attach/detach; run under ASan/TSan to catch a stale bitmap. */
#define RACE_WRITERS 4
#define RACE_WRITES  2000

struct race_arg {
	struct blk *track;
	unsigned seed;
	int err;
};

static void *race_writer(void *p)
{
	struct race_arg *a = p;
	uint8_t buf[512];
	int i;

	memset(buf, 0x44, sizeof(buf));
	for (i = 0; i < RACE_WRITES && !a->err; i++) {
		uint64_t off = (uint64_t)rand_r(&a->seed) % (DEV_SIZE - sizeof(buf));

		a->err = blk_pwrite(a->track, buf, sizeof(buf), off);
	}
	return NULL;
}

static void test_attach_detach_race(void **state)
{
	struct race_arg args[RACE_WRITERS];
	pthread_t th[RACE_WRITERS];
	struct dirty *spare;
	struct stack s;
	unsigned i;

	(void)state;
	stack_open(&s, false);
	for (i = 0; i < RACE_WRITERS; i++) {
		args[i] = (struct race_arg){ .track = s.track, .seed = i + 1 };
		assert_int_equal(pthread_create(&th[i], NULL, race_writer, &args[i]), 0);
	}
	for (i = 0; i < 200; i++) {
		/* A fresh bitmap each time, freed right after detaching it. */
		spare = dirty_new(DEV_SIZE, GRAN);
		assert_non_null(spare);
		track_set_dirty(s.track, spare);
		track_set_dirty(s.track, NULL);
		dirty_free(spare);
	}
	for (i = 0; i < RACE_WRITERS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].err, 0);
	}
	assert_int_equal(track_writes(s.track), RACE_WRITERS * RACE_WRITES);
	stack_close(&s);
}

/* ---- pause against writers on the lock-free way ------------------------------- */

/*
 * Writers go through the gate without a lock while nothing is set; a pause
 * must still stop every one of them: a device below counts writes that
 * reach it while the test holds the layer paused (after track_pause()
 * returned, before track_resume()), and there must be none.
 */
struct pause_probe {
	struct blk blk;
	atomic_bool paused;
	atomic_uint leaks, writes, inside;
};

/* A slow device: a write stays in it for a while, so a pause that does
 * not wait for it is seen. */
static int probe_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct pause_probe *p = (struct pause_probe *)b;
	int r;

	atomic_fetch_add(&p->inside, 1);
	if (atomic_load(&p->paused))
		atomic_fetch_add(&p->leaks, 1);
	usleep(5);
	r = blk_pwrite(b->lower, buf, len, off);
	if (atomic_load(&p->paused))
		atomic_fetch_add(&p->leaks, 1);
	atomic_fetch_add(&p->writes, 1);
	atomic_fetch_sub(&p->inside, 1);
	return r;
}

static const struct blk_ops probe_ops = {
	.name = "pause-probe",
	.pread = hold_pread,
	.pwrite = probe_pwrite,
	.flush = hold_flush,
	.zero = hold_zero,
	.trim = hold_trim,
	.close = hold_close_plain,
};

static void test_pause_race(void **state)
{
	struct race_arg args[RACE_WRITERS];
	pthread_t th[RACE_WRITERS];
	struct pause_probe *p = calloc(1, sizeof(*p));
	struct blk *mem, *track;
	struct dirty *d = dirty_new(DEV_SIZE, GRAN);

	(void)state;
	assert_non_null(p);
	assert_non_null(d);
	assert_int_equal(blk_mem_open(DEV_SIZE, &mem), 0);
	p->blk = (struct blk){ .ops = &probe_ops, .lower = mem, .size = DEV_SIZE };
	assert_int_equal(blk_track_open(&p->blk, &track), 0);
	track_set_dirty(track, d);
	for (unsigned i = 0; i < RACE_WRITERS; i++) {
		args[i] = (struct race_arg){ .track = track, .seed = i + 1 };
		assert_int_equal(pthread_create(&th[i], NULL, race_writer, &args[i]), 0);
	}
	for (unsigned i = 0; i < 300; i++) {
		unsigned before;

		track_pause(track);
		atomic_store(&p->paused, true);
		assert_int_equal(atomic_load(&p->inside), 0);
		before = atomic_load(&p->writes);
		usleep(50);
		/* Nothing got through while paused. */
		assert_int_equal(atomic_load(&p->writes), before);
		atomic_store(&p->paused, false);
		track_resume(track);
		usleep(20);
	}
	for (unsigned i = 0; i < RACE_WRITERS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].err, 0);
	}
	assert_int_equal(atomic_load(&p->leaks), 0);
	assert_int_equal(track_writes(track), RACE_WRITERS * RACE_WRITES);
	/* Every write was marked. */
	assert_true(dirty_count(d) > 0);
	track_set_dirty(track, NULL);
	blk_close(track);
	dirty_free(d);
}

/* ---- write order while mirroring, several writers ------------------------------ */

/*
 * Several writers hammer a few hot spots that straddle the layer's 1 MiB
 * order granules.  Below the layer a recorder notes the order in which the
 * writes land; the mirror logs the order in which it is offered them (and
 * sleeps now and then first, to give a wrong lock every chance to let
 * another write overtake).  For every two writes that overlap, the two
 * orders must agree: checked exactly, by replaying the mirror's log over a
 * map of which write last landed on each byte.
 */
#define ORDER_DEV     (8 * MiB)
#define ORDER_WRITERS 8
#define ORDER_WRITES  1500
#define ORDER_TOTAL   (ORDER_WRITERS * ORDER_WRITES)
#define ORDER_MAXLEN  (12 * 1024)

static _Thread_local uint32_t order_cur; /* the write this thread is doing, from 1 */

struct order_rec {
	struct blk blk;
	pthread_mutex_t lock;
	uint32_t landed;
	uint32_t *landing; /* [write id] = its place in the landing order, from 1 */
};

static int order_rec_land(struct blk *b, int r)
{
	struct order_rec *o = (struct order_rec *)b;

	o->landing[order_cur] = ++o->landed;
	return r;
}

/* The lower op and its note under one lock: the notes are the data's order. */
static int order_rec_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct order_rec *o = (struct order_rec *)b;
	int r;

	pthread_mutex_lock(&o->lock);
	r = order_rec_land(b, blk_pwrite(b->lower, buf, len, off));
	pthread_mutex_unlock(&o->lock);
	return r;
}

static int order_rec_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct order_rec *o = (struct order_rec *)b;
	int r;

	pthread_mutex_lock(&o->lock);
	r = order_rec_land(b, blk_zero(b->lower, off, len, flags));
	pthread_mutex_unlock(&o->lock);
	return r;
}

static void order_rec_close(struct blk *b)
{
	struct order_rec *o = (struct order_rec *)b;

	pthread_mutex_destroy(&o->lock);
	free(o->landing);
	free(o);
}

static const struct blk_ops order_rec_ops = {
	.name = "order-recorder",
	.pread = hold_pread,
	.pwrite = order_rec_pwrite,
	.flush = hold_flush,
	.zero = order_rec_zero,
	.trim = hold_trim,
	.close = order_rec_close,
};

struct order_log {
	pthread_mutex_t lock;
	uint32_t *id; /* the writes in the order the mirror was offered them */
	uint64_t *off, *len;
	size_t n;
	atomic_uint seed;
};

static int order_submit(void *opaque, enum track_op op, const void *buf, uint64_t off, uint64_t len,
			uint64_t *ticket)
{
	struct order_log *l = opaque;
	unsigned seed = atomic_fetch_add(&l->seed, 1);

	(void)op;
	(void)buf;
	if (rand_r(&seed) % 2 == 0)
		usleep(1 + (unsigned)rand_r(&seed) % 30);
	pthread_mutex_lock(&l->lock);
	assert_true(l->n < ORDER_TOTAL);
	l->id[l->n] = order_cur;
	l->off[l->n] = off;
	l->len[l->n] = len;
	l->n++;
	pthread_mutex_unlock(&l->lock);
	*ticket = 1;
	return 1;
}

static int order_wait(void *opaque, uint64_t ticket)
{
	(void)opaque;
	(void)ticket;
	return 0;
}

static const struct track_mirror order_ops = { .submit = order_submit, .wait = order_wait };

struct order_writer {
	struct blk *track;
	unsigned id, seed;
	int err;
};

static void *order_writer_main(void *p)
{
	struct order_writer *w = p;
	uint8_t buf[ORDER_MAXLEN];

	memset(buf, (int)w->id, sizeof(buf));
	for (unsigned i = 0; i < ORDER_WRITES && !w->err; i++) {
		/* Hot spots: the boundaries between granules 0|1 and 5|6, and
		 * the middle of granule 3. */
		static const uint64_t spots[] = { MiB, 6 * MiB, 3 * MiB + MiB / 2 };
		uint64_t spot = spots[rand_r(&w->seed) % 3];
		uint64_t len = 1 + (uint64_t)rand_r(&w->seed) % ORDER_MAXLEN;
		uint64_t off =
		    spot - ORDER_MAXLEN + (uint64_t)rand_r(&w->seed) % (2 * ORDER_MAXLEN);

		order_cur = 1 + w->id * ORDER_WRITES + i;
		if (rand_r(&w->seed) % 8 == 0)
			w->err = blk_zero(w->track, off, len, 0);
		else
			w->err = blk_pwrite(w->track, buf, len, off);
	}
	return NULL;
}

static void test_mirror_order_concurrent(void **state)
{
	struct order_log l = { 0 };
	struct order_writer w[ORDER_WRITERS];
	pthread_t th[ORDER_WRITERS];
	struct order_rec *rec = calloc(1, sizeof(*rec));
	uint32_t *last =
	    calloc(ORDER_DEV, sizeof(*last)); /* landing place of the last write replayed */
	struct blk *mem, *track;

	(void)state;
	assert_non_null(rec);
	assert_non_null(last);
	l.id = calloc(ORDER_TOTAL, sizeof(*l.id));
	l.off = calloc(ORDER_TOTAL, sizeof(*l.off));
	l.len = calloc(ORDER_TOTAL, sizeof(*l.len));
	rec->landing = calloc(ORDER_TOTAL + 1, sizeof(*rec->landing));
	assert_true(l.id && l.off && l.len && rec->landing);
	assert_int_equal(pthread_mutex_init(&l.lock, NULL), 0);
	assert_int_equal(pthread_mutex_init(&rec->lock, NULL), 0);
	assert_int_equal(blk_mem_open(ORDER_DEV, &mem), 0);
	rec->blk = (struct blk){ .ops = &order_rec_ops, .lower = mem, .size = ORDER_DEV };
	assert_int_equal(blk_track_open(&rec->blk, &track), 0);
	track_set_mirror(track, &order_ops, &l);
	for (unsigned i = 0; i < ORDER_WRITERS; i++) {
		w[i] = (struct order_writer){ .track = track, .id = i, .seed = 11 * i + 1 };
		assert_int_equal(pthread_create(&th[i], NULL, order_writer_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < ORDER_WRITERS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(w[i].err, 0);
	}
	track_set_mirror(track, NULL, NULL);
	assert_int_equal(l.n, ORDER_TOTAL);
	/* In the mirror's order, each write must have landed after every
	 * earlier-offered write it overlaps. */
	for (size_t i = 0; i < l.n; i++) {
		uint32_t landed = rec->landing[l.id[i]];

		assert_int_not_equal(landed, 0);
		for (uint64_t b = l.off[i]; b < l.off[i] + l.len[i]; b++) {
			if (last[b] > landed)
				fail_msg("byte %llu: the mirror was offered write %u after one "
					 "that landed later (landing places %u < %u)",
					 (unsigned long long)b, l.id[i], landed, last[b]);
			last[b] = landed;
		}
	}
	blk_close(track);
	pthread_mutex_destroy(&l.lock);
	free(l.id);
	free(l.off);
	free(l.len);
	free(last);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_props),
		cmocka_unit_test(test_marks),
		cmocka_unit_test(test_marks_on_lower_failure),
		cmocka_unit_test(test_mirror),
		cmocka_unit_test(test_attach_detach),
		cmocka_unit_test(test_pause_blocks_writers),
		cmocka_unit_test(test_pause_waits_for_inflight),
		cmocka_unit_test(test_fence),
		cmocka_unit_test(test_fence_unpaused),
		cmocka_unit_test(test_hold_redirect),
		cmocka_unit_test(test_hold_then_fence),
		cmocka_unit_test(test_redirected_not_in_flight),
		cmocka_unit_test(test_set_dirty_drains),
		cmocka_unit_test(test_attach_detach_race),
		cmocka_unit_test(test_pause_race),
		cmocka_unit_test(test_mirror_order_concurrent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
