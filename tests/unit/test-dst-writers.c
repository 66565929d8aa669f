/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the destination's writer pool (src/migrate/dst-writers.c)
 * over in-memory devices: records for one chunk land in order, digests are
 * set, the barrier waits for everything queued, a read-back check catches a
 * chunk that differs, a writer's failure surfaces with its message,
 * sticky, at the next submit or barrier, a mirrored write's part lands
 * after the records before it for its chunk and not behind other chunks',
 * with its chunk's digest brought up to date, a wait for the jobs up to
 * one waits for those and for no others, and two threads may submit at
 * once, each one's jobs for a chunk landing in its order, and a mirrored
 * write that does not read back as written fails, and chunk writes have
 * their writeback started per run of chunks, a 1 MiB piece at a time,
 * once every chunk of the range is written.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/backend.h"
#include "common/error.h"
#include "migrate/digest.h"
#include "migrate/dst-writers.h"

#define CS     (64 * 1024)
#define NCHUNK 16

struct fx {
	struct blk *blk;
	struct digest_table *dig;
	struct dstw *w;
	uint8_t buf[CS];
};

static int setup_n(void **state, unsigned nwriters)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f || blk_mem_open(NCHUNK * CS, &f->blk) != 0)
		return -1;
	f->dig = digest_new(NCHUNK * CS, CS);
	if (!f->dig || dstw_new(nwriters, CS, &f->w) != 0)
		return -1;
	*state = f;
	return 0;
}

/* Three writer threads. */
static int setup(void **state)
{
	return setup_n(state, 3);
}

/* None: every job applied by dstw_submit() itself. */
static int setup_inline(void **state)
{
	return setup_n(state, 0);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	dstw_free(f->w);
	digest_free(f->dig);
	blk_close(f->blk);
	free(f);
	return 0;
}

static int submit(struct fx *f, enum dstw_op op, uint64_t idx, const void *data)
{
	struct dstw_job job = { .op = op,
				.blk = f->blk,
				.dig = f->dig,
				.shown = "d0",
				.idx = idx,
				.off = idx * CS,
				.len = CS,
				.data = data };

	return dstw_submit(f->w, &job);
}

/* Many records for every chunk, the last one wins; the caller's buffer may
 * change as soon as submit returns (the pool took a copy). */
static void test_order_and_digests(void **state)
{
	struct fx *f = *state;

	for (unsigned round = 0; round < 8; round++)
		for (uint64_t c = 0; c < NCHUNK; c++) {
			memset(f->buf, (int)(round * 16 + c + 1), CS);
			if (round == 7 && c % 4 == 0)
				assert_int_equal(submit(f, DSTW_ZERO, c, NULL), 0);
			else
				assert_int_equal(submit(f, DSTW_WRITE, c, f->buf), 0);
			memset(f->buf, 0xee, CS);
		}
	assert_int_equal(dstw_barrier(f->w), 0);
	for (uint64_t c = 0; c < NCHUNK; c++) {
		uint8_t want[CS];

		memset(want, c % 4 == 0 ? 0 : (int)(7 * 16 + c + 1), CS);
		assert_int_equal(blk_pread(f->blk, f->buf, CS, c * CS), 0);
		assert_memory_equal(f->buf, want, CS);
		assert_true(digest_get(f->dig, c) == digest_hash(want, CS));
		assert_int_equal(submit(f, DSTW_CHECK, c, NULL), 0);
	}
	assert_int_equal(dstw_barrier(f->w), 0);
}

/* A chunk changed behind the pool's back fails its read-back check. */
static void test_check_catches_difference(void **state)
{
	struct fx *f = *state;
	int r;

	memset(f->buf, 0x42, CS);
	assert_int_equal(submit(f, DSTW_WRITE, 3, f->buf), 0);
	assert_int_equal(dstw_barrier(f->w), 0);
	f->buf[100] ^= 1;
	assert_int_equal(blk_pwrite(f->blk, f->buf, CS, 3 * CS), 0);
	/* Inline, the check fails at once; threaded, at the barrier. */
	r = submit(f, DSTW_CHECK, 3, NULL);
	assert_true(r == 0 || r == -EILSEQ);
	assert_int_equal(dstw_barrier(f->w), -EILSEQ);
	assert_non_null(
	    strstr(err_msg(), "device d0: the chunk at offset 196608 does not read back"));
}

/* A failed write: its message at the next barrier, and every call after. */
static void test_error_surfaces(void **state)
{
	struct fx *f = *state;

	memset(f->buf, 1, CS);
	blk_mem_inject(f->blk, BLK_MEM_WRITE, 2, ENOSPC);
	for (uint64_t c = 0; c < 6; c++) {
		int r = submit(f, DSTW_WRITE, c, f->buf);

		assert_true(r == 0 || r == -ENOSPC);
	}
	err_clear();
	assert_int_equal(dstw_barrier(f->w), -ENOSPC);
	assert_non_null(strstr(err_msg(), "write d0 at offset "));
	err_clear();
	assert_int_equal(submit(f, DSTW_WRITE, 7, f->buf), -ENOSPC);
	assert_non_null(strstr(err_msg(), "write d0 at offset "));
	assert_int_equal(dstw_barrier(f->w), -ENOSPC);
}

/* The test layers' reads and zeroes: straight to the device below. */
static int lower_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	return blk_pread(b->lower, buf, len, off);
}

static int lower_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	return blk_zero(b->lower, off, len, flags);
}

/* A layer over a device that holds a write at one offset until opened. */
struct gate {
	struct blk b; /* first */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t held_off;
	bool holding, open;
	bool returned; /* a waiter's wait has returned */
};

static int gate_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct gate *g = (struct gate *)b;

	pthread_mutex_lock(&g->lock);
	if (off == g->held_off) {
		g->holding = true;
		pthread_cond_broadcast(&g->cond);
		while (!g->open)
			pthread_cond_wait(&g->cond, &g->lock);
	}
	pthread_mutex_unlock(&g->lock);
	return blk_pwrite(b->lower, buf, len, off);
}

static void gate_close(struct blk *b)
{
	struct gate *g = (struct gate *)b;

	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

static const struct blk_ops gate_ops = {
	.name = "gate",
	.pread = lower_pread,
	.pwrite = gate_pwrite,
	.zero = lower_zero,
	.close = gate_close,
};

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* Three writers, and a gate over the device holding writes to chunk 3.
 * alarm(): a wait for the wrong jobs would hang. */
static int setup_gate(void **state)
{
	struct fx *f;
	struct gate *g = calloc(1, sizeof(*g));

	if (!g || setup_n(state, 3) != 0)
		return -1;
	f = *state;
	g->b = (struct blk){ .ops = &gate_ops, .lower = f->blk, .size = blk_size(f->blk) };
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	g->held_off = 3 * CS;
	f->blk = &g->b; /* teardown closes the stack */
	alarm(30);
	return 0;
}

/* Also after a failed assertion: the held writer must be let go before
 * the pool is freed. */
static int teardown_gate(void **state)
{
	gate_open((struct gate *)((struct fx *)*state)->blk);
	alarm(0);
	return teardown(state);
}

static void gate_wait_holding(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	while (!g->holding)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
}

struct waiter {
	struct fx *f;
	struct gate *g;
	uint64_t upto; /* dstw_wait_done(upto) */
	int r;
	uint8_t seen[CS]; /* chunk 3 as it was when the wait returned */
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;

	w->r = dstw_wait_done(w->f->w, w->upto);
	pthread_mutex_lock(&w->g->lock);
	w->g->returned = true;
	pthread_mutex_unlock(&w->g->lock);
	if (blk_pread(w->f->blk, w->seen, CS, 3 * CS) != 0)
		w->r = -EIO;
	return NULL;
}

/* Start a waiter, give it the chance to return early (which must not
 * happen: chunk 3's write is held), open the gate, join it. */
static void wait_across_gate(struct waiter *wt)
{
	pthread_t t;
	bool early;

	assert_int_equal(pthread_create(&t, NULL, wait_main, wt), 0);
	usleep(20000);
	pthread_mutex_lock(&wt->g->lock);
	early = wt->g->returned;
	pthread_mutex_unlock(&wt->g->lock);
	gate_open(wt->g);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(early);
}

static int submit_mirror(struct fx *f, uint64_t off, size_t len, const void *data)
{
	struct dstw_job job = { .op = DSTW_MIRROR,
				.blk = f->blk,
				.dig = f->dig,
				.shown = "d0",
				.idx = off / CS,
				.off = off,
				.len = len,
				.data = data };

	return dstw_submit(f->w, &job);
}

/* Whether len bytes at off read as c. */
static bool reads_as(struct fx *f, uint64_t off, size_t len, int c)
{
	uint8_t want[CS];

	memset(want, c, len);
	return blk_pread(f->blk, f->buf, len, off) == 0 && memcmp(f->buf, want, len) == 0;
}

/*
 * A mirrored write's part in a chunk lands after the records queued
 * before it for that chunk, and not behind other chunks': with chunk 3's
 * record held in its writer and a write into chunk 3 queued behind it, a
 * write into chunk 4 (another writer) lands, and chunk 3 is still
 * untouched; once the gate opens, chunk 3 holds the record with the write
 * over it (reversed, it would hold the record alone).  Each chunk's
 * digest is what it now holds, zeros included; the pool copied the
 * writes' bytes (the caller's buffer is overwritten after each submit).
 */
static void test_mirror_order(void **state)
{
	struct fx *f = *state;
	struct gate *g = (struct gate *)f->blk;
	uint8_t want[CS], src[2 * 4096];
	bool landed = false;

	memset(f->buf, 0x33, CS);
	assert_int_equal(submit(f, DSTW_WRITE, 3, f->buf), 0);
	gate_wait_holding(g);
	memset(src, 0x77, 4096);
	assert_int_equal(submit_mirror(f, 3 * CS + 4096, 4096, src), 0);
	memset(src, 0x55, sizeof(src));
	assert_int_equal(submit_mirror(f, 4 * CS, sizeof(src), src), 0);
	memset(src, 0xee, sizeof(src));

	/* Chunk 4's writer is free: up to 10 s for it to get there. */
	for (int i = 0; i < 1000 && !landed; i++) {
		landed = reads_as(f, 4 * CS, 2 * 4096, 0x55);
		if (!landed)
			usleep(10000);
	}
	assert_true(landed);
	pthread_mutex_lock(&g->lock);
	assert_false(g->open);
	pthread_mutex_unlock(&g->lock);
	assert_true(reads_as(f, 3 * CS, CS, 0));

	gate_open(g);
	assert_int_equal(dstw_barrier(f->w), 0);
	memset(want, 0x33, CS);
	memset(want + 4096, 0x77, 4096);
	assert_int_equal(blk_pread(f->blk, f->buf, CS, 3 * CS), 0);
	assert_memory_equal(f->buf, want, CS);
	assert_true(digest_get(f->dig, 3) == digest_hash(want, CS));
	memset(want, 0, CS);
	memset(want, 0x55, 2 * 4096);
	assert_true(digest_get(f->dig, 4) == digest_hash(want, CS));

	/* Zeros: no data, the range reads as zeros, the digest follows. */
	assert_int_equal(submit_mirror(f, 3 * CS, 4096, NULL), 0);
	assert_int_equal(dstw_barrier(f->w), 0);
	memset(want, 0x33, CS);
	memset(want, 0, 4096);
	memset(want + 4096, 0x77, 4096);
	assert_int_equal(blk_pread(f->blk, f->buf, CS, 3 * CS), 0);
	assert_memory_equal(f->buf, want, CS);
	assert_true(digest_get(f->dig, 3) == digest_hash(want, CS));
	assert_int_equal(submit(f, DSTW_CHECK, 3, NULL), 0);
	assert_int_equal(dstw_barrier(f->w), 0);
}

struct record_submit {
	struct fx *f;
	struct gate *g;
	int r;
	bool returned;
	uint8_t data[CS];
};

static void *record_main(void *arg)
{
	struct record_submit *rs = arg;
	int r = submit(rs->f, DSTW_WRITE, 9, rs->data);

	pthread_mutex_lock(&rs->g->lock);
	rs->r = r;
	rs->returned = true;
	pthread_mutex_unlock(&rs->g->lock);
	return NULL;
}

/*
 * Once a mirrored write came, a writer's last slot is kept for them: with
 * chunk 3's record held in its writer and that writer's queue filled with
 * chunk records up to the last slot, one more record waits for room,
 * while a mirrored write (chunk 6, the same writer) takes the kept slot
 * at once (a client waits for that).  Given all the slots, the records
 * would have left the write waiting for chunk 3's.  The write lands over
 * the records queued before it for its chunk, and the waiting record
 * lands once there is room.
 */
static void test_mirror_slot_kept(void **state)
{
	struct fx *f = *state;
	struct gate *g = (struct gate *)f->blk;
	unsigned slots = dstw_slots(f->w);
	struct record_submit *rs = calloc(1, sizeof(*rs));
	uint8_t src[4096], want[CS];
	pthread_t t;
	bool early;

	assert_non_null(rs);
	assert_true(slots > 1);
	/* The first mirrored write (chunk 1, another writer) keeps the slot. */
	memset(src, 0x11, sizeof(src));
	assert_int_equal(submit_mirror(f, CS, sizeof(src), src), 0);
	memset(f->buf, 0x33, CS);
	assert_int_equal(submit(f, DSTW_WRITE, 3, f->buf), 0);
	gate_wait_holding(g);
	/* Chunks 0, 3, 6 and 9 are the first writer's (of three). */
	for (unsigned i = 1; i < slots - 1; i++)
		assert_int_equal(submit(f, DSTW_WRITE, 6, f->buf), 0);
	*rs = (struct record_submit){ .f = f, .g = g };
	memset(rs->data, 0x44, CS);
	assert_int_equal(pthread_create(&t, NULL, record_main, rs), 0);
	usleep(20000);
	pthread_mutex_lock(&g->lock);
	early = rs->returned;
	pthread_mutex_unlock(&g->lock);
	memset(src, 0x77, sizeof(src));
	if (!early)
		assert_int_equal(submit_mirror(f, 6 * CS + 4096, sizeof(src), src), 0);
	gate_open(g);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(early);
	assert_int_equal(rs->r, 0);
	assert_int_equal(dstw_barrier(f->w), 0);
	memset(want, 0x33, CS);
	memset(want + 4096, 0x77, sizeof(src));
	assert_int_equal(blk_pread(f->blk, f->buf, CS, 6 * CS), 0);
	assert_memory_equal(f->buf, want, CS);
	assert_true(reads_as(f, 9 * CS, CS, 0x44));
	free(rs);
}

/* Without mirrored writes (dirty mode, a plain send) chunk records have
 * every slot: the held record and slots - 1 more are all queued at once
 * (one kept slot would leave the last waiting, until the alarm). */
static void test_all_slots_without_mirror(void **state)
{
	struct fx *f = *state;
	struct gate *g = (struct gate *)f->blk;
	unsigned slots = dstw_slots(f->w);

	memset(f->buf, 0x33, CS);
	assert_int_equal(submit(f, DSTW_WRITE, 3, f->buf), 0);
	gate_wait_holding(g);
	for (unsigned i = 1; i < slots; i++)
		assert_int_equal(submit(f, DSTW_WRITE, 6, f->buf), 0);
	gate_open(g);
	assert_int_equal(dstw_barrier(f->w), 0);
	assert_true(reads_as(f, 6 * CS, CS, 0x33));
}

/* A layer whose writes land with their first byte flipped: a device
 * that answers a write it did not do as asked. */
static int liar_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	uint8_t first = *(const uint8_t *)buf ^ 1;
	int r = blk_pwrite(b->lower, buf, len, off);

	return r < 0 ? r : blk_pwrite(b->lower, &first, 1, off);
}

static const struct blk_ops liar_ops = {
	.name = "liar",
	.pread = lower_pread,
	.pwrite = liar_pwrite,
};

/*
 * A mirrored write is read back by its writer as soon as it is written
 * (the pass end does not read its chunk back for it): one that does not
 * land as written fails, inline at once or threaded at the barrier, with
 * its own message; an honest one goes through.
 */
static void test_mirror_reads_back(void **state)
{
	struct fx *f = *state;
	struct blk liar = { .ops = &liar_ops, .lower = f->blk, .size = blk_size(f->blk) };
	struct dstw_job job = { .op = DSTW_MIRROR,
				.blk = f->blk,
				.dig = f->dig,
				.shown = "d0",
				.idx = 2,
				.off = 2 * CS + 8192,
				.len = 4096,
				.data = f->buf };
	int r;

	memset(f->buf, 0x21, 4096);
	assert_int_equal(dstw_submit(f->w, &job), 0);
	assert_int_equal(dstw_barrier(f->w), 0);
	job.blk = &liar;
	job.off += 4096;
	r = dstw_submit(f->w, &job);
	assert_true(r == 0 || r == -EILSEQ);
	err_clear();
	assert_int_equal(dstw_barrier(f->w), -EILSEQ);
	assert_non_null(strstr(err_msg(), "device d0: the mirrored write at offset 143360 does "
					  "not read back as it was written"));
}

/* One of two threads submitting at once: round after round, its own 4 KiB
 * of every chunk (part k), with the round's byte. */
struct submitter {
	struct fx *f;
	unsigned k;
	int r;
};

#define ROUNDS 200

static void *submitter_main(void *arg)
{
	struct submitter *sb = arg;
	uint8_t buf[4096];

	for (unsigned round = 0; round < ROUNDS && sb->r == 0; round++)
		for (uint64_t c = 0; c < NCHUNK && sb->r == 0; c++) {
			memset(buf, (int)(2 * round + sb->k + 1), sizeof(buf));
			sb->r = submit_mirror(sb->f, c * CS + sb->k * 4096, sizeof(buf), buf);
			memset(buf, 0xee, sizeof(buf));
		}
	return NULL;
}

/*
 * Two threads submit to one pool at once (the engine and a pass end do):
 * each one's writes to a chunk land in the order it submitted them, so
 * every chunk ends with each thread's last round, and its digest (which
 * the read-back checks, queued after both) describes what it holds.  A
 * slot taken by one thread and run before it was filled, or filled by
 * both, shows up here as the wrong bytes (and under TSan as a race).
 */
static void test_two_submitters(void **state)
{
	struct fx *f = *state;
	struct submitter sb[2] = { { .f = f, .k = 0 }, { .f = f, .k = 1 } };
	pthread_t th;
	uint8_t want[CS];

	assert_int_equal(pthread_create(&th, NULL, submitter_main, &sb[1]), 0);
	submitter_main(&sb[0]);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(sb[0].r, 0);
	assert_int_equal(sb[1].r, 0);
	assert_int_equal(dstw_barrier(f->w), 0);
	assert_true(dstw_submitted(f->w) == 2 * ROUNDS * NCHUNK);
	memset(want, 0, CS);
	memset(want, 2 * (ROUNDS - 1) + 1, 4096);
	memset(want + 4096, 2 * (ROUNDS - 1) + 2, 4096);
	for (uint64_t c = 0; c < NCHUNK; c++) {
		assert_int_equal(blk_pread(f->blk, f->buf, CS, c * CS), 0);
		assert_memory_equal(f->buf, want, CS);
		assert_true(digest_get(f->dig, c) == digest_hash(want, CS));
		assert_int_equal(submit(f, DSTW_CHECK, c, NULL), 0);
	}
	assert_int_equal(dstw_barrier(f->w), 0);
}

/* Inline or threaded, a mirrored write that fails: its own message, at
 * once or at the next barrier, and sticky. */
static void test_mirror_failure(void **state)
{
	struct fx *f = *state;
	int r;

	memset(f->buf, 9, 4096);
	blk_mem_inject(f->blk, BLK_MEM_WRITE, 1, EIO);
	r = submit_mirror(f, 5 * CS + 8192, 4096, f->buf);
	assert_true(r == 0 || r == -EIO);
	err_clear();
	assert_int_equal(dstw_barrier(f->w), -EIO);
	assert_non_null(strstr(err_msg(), "mirrored write to d0 at offset 335872"));
	assert_int_equal(submit_mirror(f, 0, 4096, f->buf), -EIO);
}

/*
 * A checkpoint waits for the jobs submitted before it, not for later ones:
 * job 1 (chunk 4) and job 2 (chunk 3, held) are queued, then job 3 (chunk
 * 5); a wait for job 1 returns while job 2 is held, one for job 2 only
 * once chunk 3 is written, from another thread.
 */
static void test_wait_done(void **state)
{
	struct fx *f = *state;
	struct gate *g = (struct gate *)f->blk;
	struct waiter wt = { .f = f, .g = g, .upto = 2 };
	uint8_t want[CS];

	memset(f->buf, 0x5a, CS);
	memcpy(want, f->buf, CS);
	assert_true(dstw_submitted(f->w) == 0);
	assert_int_equal(submit(f, DSTW_WRITE, 4, f->buf), 0);
	assert_int_equal(submit(f, DSTW_WRITE, 3, f->buf), 0);
	gate_wait_holding(g);
	assert_int_equal(submit(f, DSTW_WRITE, 5, f->buf), 0);
	assert_true(dstw_submitted(f->w) == 3);
	assert_true(dstw_backlog(f->w) == 1);

	assert_int_equal(dstw_wait_done(f->w, 1), 0);
	assert_int_equal(blk_pread(f->blk, f->buf, CS, 4 * CS), 0);
	assert_memory_equal(f->buf, want, CS);

	wait_across_gate(&wt);
	assert_int_equal(wt.r, 0);
	assert_memory_equal(wt.seen, want, CS);
	assert_int_equal(dstw_barrier(f->w), 0);
	assert_true(dstw_backlog(f->w) == 0);
}

/* Another writer's failure ends both waits at once, with its message,
 * while the job they wait for is still held. */
static void test_wait_ends_on_failure(void **state)
{
	struct fx *f = *state;
	struct gate *g = (struct gate *)f->blk;

	memset(f->buf, 7, CS);
	assert_int_equal(submit(f, DSTW_WRITE, 3, f->buf), 0);
	gate_wait_holding(g);
	blk_mem_inject(g->b.lower, BLK_MEM_WRITE, 1, ENOSPC);
	assert_int_equal(submit(f, DSTW_WRITE, 4, f->buf), 0);
	err_clear();
	assert_int_equal(dstw_wait_done(f->w, 1), -ENOSPC);
	assert_non_null(strstr(err_msg(), "write d0 at offset 262144"));
	pthread_mutex_lock(&g->lock);
	assert_false(g->open);
	pthread_mutex_unlock(&g->lock);
}

/* Inline, nothing is ever queued: a wait returns at once (a barrier:
 * or the kept failure). */
static void test_wait_inline(void **state)
{
	struct fx *f = *state;

	memset(f->buf, 1, CS);
	assert_int_equal(submit(f, DSTW_WRITE, 1, f->buf), 0);
	assert_int_equal(dstw_wait_done(f->w, 1), 0);
	assert_true(dstw_backlog(f->w) == 0);
	blk_mem_inject(f->blk, BLK_MEM_WRITE, 1, ENOSPC);
	assert_int_equal(submit(f, DSTW_WRITE, 2, f->buf), -ENOSPC);
	assert_true(dstw_submitted(f->w) == 1); /* a failed job is not counted */
	err_clear();
	assert_int_equal(dstw_barrier(f->w), -ENOSPC);
	assert_non_null(strstr(err_msg(), "write d0 at offset "));
}

static void test_bad_args(void **state)
{
	struct fx *f = *state;
	struct dstw *w = NULL;
	struct dstw_job big = { .op = DSTW_ZERO, .blk = f->blk, .dig = f->dig, .len = CS + 1 };

	assert_int_equal(dstw_new(1000, CS, &w), -EINVAL);
	assert_int_equal(dstw_submit(f->w, &big), -EINVAL);
	dstw_free(NULL);
}

/* A layer that logs the writeback hints it is given, and checks that
 * each comes after the writes of every chunk in its range.  Chunks whose
 * index is a multiple of 3 are slow to write, so that threaded writers
 * finish out of order; with 1 MiB chunks, chunk 1 is slower still, so
 * that its writer's finishing makes two ranges ready at once; and a hint
 * takes a while, so that a barrier that returned while a writer was
 * still starting them would be seen. */
#define WB_SIZE (3 * 1024 * 1024)
#define WB_MIN	(64 * 1024)

struct wblog {
	struct blk b;	      /* first */
	pthread_mutex_t lock; /* writers write and hint at once */
	uint32_t cs;
	bool written[WB_SIZE / WB_MIN];
	unsigned n, early; /* hints; hints over a chunk not written yet */
	uint64_t off[64], len[64];
};

static void wb_wrote(struct blk *b, uint64_t off)
{
	struct wblog *l = (struct wblog *)b;

	if (off / l->cs % 3 == 0)
		usleep(300);
	if (l->cs == 1024 * 1024 && off / l->cs == 1)
		usleep(5000);
	pthread_mutex_lock(&l->lock);
	l->written[off / l->cs] = true;
	pthread_mutex_unlock(&l->lock);
}

static int wb_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	int r = blk_pwrite(b->lower, buf, len, off);

	wb_wrote(b, off);
	return r;
}

static int wb_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	int r = blk_zero(b->lower, off, len, flags);

	wb_wrote(b, off);
	return r;
}

static int wb_writeback(struct blk *b, uint64_t off, uint64_t len)
{
	struct wblog *l = (struct wblog *)b;

	usleep(1000);
	pthread_mutex_lock(&l->lock);
	for (uint64_t c = off / l->cs; c < (off + len) / l->cs; c++)
		l->early += !l->written[c];
	if (l->n < 64) {
		l->off[l->n] = off;
		l->len[l->n] = len;
	}
	l->n++;
	pthread_mutex_unlock(&l->lock);
	return 0;
}

static void wb_close(struct blk *b)
{
	pthread_mutex_destroy(&((struct wblog *)b)->lock);
	free(b);
}

static const struct blk_ops wb_ops = {
	.name = "wblog",
	.pread = lower_pread,
	.pwrite = wb_pwrite,
	.zero = wb_zero,
	.writeback = wb_writeback,
	.close = wb_close,
};

/* Chunks of a 3 MiB device in order (or those in 'only', ended by
 * UINT64_MAX), chunk 'zero' as zeros, by a pool of nwriters; the log. */
static struct wblog *write_chunks(unsigned nwriters, uint32_t cs, const uint64_t *only,
				  uint64_t zero)
{
	struct wblog *l = calloc(1, sizeof(*l));
	struct digest_table *dig = digest_new(WB_SIZE, cs);
	uint8_t *buf = malloc(cs);
	struct dstw *w = NULL;
	struct blk *mem = NULL;

	assert_non_null(l);
	assert_non_null(dig);
	assert_non_null(buf);
	assert_int_equal(blk_mem_open(WB_SIZE, &mem), 0);
	l->b = (struct blk){ .ops = &wb_ops, .lower = mem, .size = WB_SIZE };
	l->cs = cs;
	pthread_mutex_init(&l->lock, NULL);
	assert_int_equal(dstw_new(nwriters, cs, &w), 0);
	memset(buf, 0x5a, cs);
	for (uint64_t k = 0; only ? only[k] != UINT64_MAX : k < WB_SIZE / cs; k++) {
		uint64_t i = only ? only[k] : k;
		struct dstw_job job = { .op = i == zero ? DSTW_ZERO : DSTW_WRITE,
					.blk = &l->b,
					.dig = dig,
					.shown = "d0",
					.idx = i,
					.off = i * cs,
					.len = cs,
					.data = i == zero ? NULL : buf };

		assert_int_equal(dstw_submit(w, &job), 0);
	}
	assert_int_equal(dstw_barrier(w), 0);
	dstw_free(w);
	digest_free(dig);
	free(buf);
	assert_int_equal(l->early, 0);
	return l;
}

/* Whether the log holds the hint [off, off+len), in any order. */
static bool hinted(const struct wblog *l, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < l->n && i < 64; i++)
		if (l->off[i] == off && l->len[i] == len)
			return true;
	return false;
}

/*
 * A run of 64 KiB chunks, one after the other (a bulk pass): its
 * writeback is started a 1 MiB piece at a time, three hints for 48
 * chunks, each once every chunk of its piece is written (with threaded
 * writers finishing out of order too); a zero chunk counts as any other.
 */
static void test_writeback_in_pieces(void **state)
{
	const uint64_t mib = 1024 * 1024, cs = 64 * 1024;

	(void)state;
	for (unsigned nw = 0; nw <= 4; nw += 2) {
		struct wblog *l = write_chunks(nw, cs, NULL, 31);

		assert_int_equal(l->n, 3);
		for (unsigned i = 0; i < 3; i++)
			assert_true(hinted(l, i * mib, mib));
		blk_close(&l->b);
	}
}

/*
 * Scattered chunks (a later pass's): each run's writeback is started
 * where it ends, once its chunks are written; a chunk that follows the one
 * before joins its run.  The last run is left to the pass's fdatasync.
 * Chunks of 1 MiB: one hint each.
 */
static void test_writeback_scattered(void **state)
{
	const uint64_t mib = 1024 * 1024, cs = 64 * 1024;
	const uint64_t only[] = { 5, 9, 20, 21, 40, 41, 2, UINT64_MAX };

	(void)state;
	for (unsigned nw = 0; nw <= 4; nw += 2) {
		struct wblog *l = write_chunks(nw, cs, only, UINT64_MAX);

		assert_int_equal(l->n, 4);
		assert_true(hinted(l, 5 * cs, cs));
		assert_true(hinted(l, 9 * cs, cs));
		assert_true(hinted(l, 20 * cs, 2 * cs));
		assert_true(hinted(l, 40 * cs, 2 * cs));
		blk_close(&l->b);
	}

	struct wblog *l = write_chunks(2, mib, NULL, UINT64_MAX);

	assert_int_equal(l->n, 3);
	for (unsigned i = 0; i < 3; i++)
		assert_true(hinted(l, i * mib, mib));
	blk_close(&l->b);
}

#define FT(t)  cmocka_unit_test_setup_teardown(t, setup, teardown)
#define FT0(t) cmocka_unit_test_setup_teardown(t, setup_inline, teardown)
#define GT(t)  cmocka_unit_test_setup_teardown(t, setup_gate, teardown_gate)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FT(test_order_and_digests),
		FT(test_check_catches_difference),
		FT(test_error_surfaces),
		FT(test_bad_args),
		GT(test_mirror_order),
		GT(test_mirror_slot_kept),
		GT(test_all_slots_without_mirror),
		GT(test_wait_done),
		GT(test_wait_ends_on_failure),
		FT0(test_wait_inline),
		FT(test_mirror_failure),
		FT(test_two_submitters),
		FT(test_mirror_reads_back),
		FT0(test_mirror_reads_back),
		FT0(test_mirror_failure),
		FT0(test_order_and_digests),
		FT0(test_check_catches_difference),
		FT0(test_error_surfaces),
		FT0(test_bad_args),
		cmocka_unit_test(test_writeback_in_pieces),
		cmocka_unit_test(test_writeback_scattered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
