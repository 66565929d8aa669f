/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the destination's writer pool (src/migrate/dst-writers.c)
 * over in-memory devices: records for one chunk land in order, digests are
 * set, the barrier waits for everything queued, a read-back check catches a
 * chunk that differs, and a writer's failure surfaces with its message,
 * sticky, at the next submit or barrier.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

static void test_bad_args(void **state)
{
	struct fx *f = *state;
	struct dstw *w = NULL;
	struct dstw_job big = { .op = DSTW_ZERO, .blk = f->blk, .dig = f->dig, .len = CS + 1 };

	assert_int_equal(dstw_new(1000, CS, &w), -EINVAL);
	assert_int_equal(dstw_submit(f->w, &big), -EINVAL);
	dstw_free(NULL);
}

#define FT(t)  cmocka_unit_test_setup_teardown(t, setup, teardown)
#define FT0(t) cmocka_unit_test_setup_teardown(t, setup_inline, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FT(test_order_and_digests),  FT(test_check_catches_difference),
		FT(test_error_surfaces),     FT(test_bad_args),
		FT0(test_order_and_digests), FT0(test_check_catches_difference),
		FT0(test_error_surfaces),    FT0(test_bad_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
