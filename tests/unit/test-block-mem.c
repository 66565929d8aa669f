/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the in-memory backend (src/block/mem.c): lazily allocated
 * pages and what block_status reports about them, zero/trim page freeing,
 * fault injection for every op (error codes, message, nth counting,
 * cancelling, data untouched), and concurrent writers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"

#define PAGE (64 * 1024)

static struct blk *mem_or_fail(uint64_t size)
{
	struct blk *b = NULL;

	if (blk_mem_open(size, &b) != 0)
		fail_msg("blk_mem_open: %s", err_msg());
	assert_non_null(b);
	return b;
}

static void fill(struct blk *b, uint8_t byte)
{
	uint8_t *buf = malloc(blk_size(b));

	assert_non_null(buf);
	memset(buf, byte, blk_size(b));
	assert_int_equal(blk_pwrite(b, buf, blk_size(b), 0), 0);
	free(buf);
}

static void assert_bytes(struct blk *b, uint64_t off, size_t len, uint8_t byte)
{
	uint8_t *buf = malloc(len);
	size_t i;

	assert_non_null(buf);
	assert_int_equal(blk_pread(b, buf, len, off), 0);
	for (i = 0; i < len; i++)
		if (buf[i] != byte)
			fail_msg("byte at %" PRIu64 " is 0x%02x, want 0x%02x", off + i, buf[i],
				 byte);
	free(buf);
}

/* block_status(off, len) returns exactly (pnum, alloc). */
static void assert_status(struct blk *b, uint64_t off, uint64_t len, uint64_t want_pnum,
			  bool want_alloc)
{
	uint64_t pnum = 0;
	bool alloc = !want_alloc;

	assert_int_equal(blk_block_status(b, off, len, &pnum, &alloc), 0);
	if (pnum != want_pnum || alloc != want_alloc)
		fail_msg("status at %" PRIu64 ": got %" PRIu64 " %s, want %" PRIu64 " %s", off,
			 pnum, alloc ? "data" : "hole", want_pnum, want_alloc ? "data" : "hole");
}

/* ---- pages ---------------------------------------------------------------- */

static void test_open(void **state)
{
	struct blk *b = mem_or_fail(300000);

	(void)state;
	assert_int_equal(blk_size(b), 300000);
	assert_false(b->readonly);
	assert_null(b->lower);
	assert_bytes(b, 0, 300000, 0);
	assert_status(b, 0, 300000, 300000, false);
	assert_int_equal(blk_flush(b), 0);
	blk_close(b);

	b = mem_or_fail(0);
	assert_int_equal(blk_size(b), 0);
	assert_int_equal(blk_pwrite(b, "x", 1, 0), -ERANGE);
	blk_close(b);
}

static void test_lazy_pages(void **state)
{
	/* Pages 0..4, the last one partial (262144..300000). */
	struct blk *b = mem_or_fail(300000);

	(void)state;
	assert_int_equal(blk_pwrite(b, "a", 1, 70000), 0);
	assert_status(b, 0, 300000, PAGE, false);
	assert_status(b, PAGE, 300000 - PAGE, PAGE, true);
	assert_status(b, 2 * PAGE, 300000 - 2 * PAGE, 300000 - 2 * PAGE, false);
	/* Starting mid-page, and cut at len. */
	assert_status(b, 70000, 300000 - 70000, 2 * PAGE - 70000, true);
	assert_status(b, 70000, 10, 10, true);
	assert_status(b, 100, 50, 50, false);
	/* The rest of the written page reads as zeros. */
	assert_bytes(b, PAGE, 70000 - PAGE, 0);
	assert_bytes(b, 70000, 1, 'a');
	assert_bytes(b, 70001, 2 * PAGE - 70001, 0);

	/* The partial last page. */
	assert_int_equal(blk_pwrite(b, "z", 1, 300000 - 1), 0);
	assert_status(b, 2 * PAGE, 300000 - 2 * PAGE, 2 * PAGE, false);
	assert_status(b, 4 * PAGE, 300000 - 4 * PAGE, 300000 - 4 * PAGE, true);

	/* A write across a page boundary allocates both. */
	assert_int_equal(blk_pwrite(b, "xy", 2, 3 * PAGE - 1), 0);
	assert_status(b, 2 * PAGE, 300000 - 2 * PAGE, 300000 - 2 * PAGE, true);
	assert_bytes(b, 3 * PAGE - 1, 1, 'x');
	assert_bytes(b, 3 * PAGE, 1, 'y');
	blk_close(b);
}

static void test_zero_may_trim(void **state)
{
	struct blk *b = mem_or_fail(6 * PAGE);

	(void)state;
	fill(b, 0xcc);
	assert_status(b, 0, 6 * PAGE, 6 * PAGE, true);
	/* Page 2 wholly covered (freed); pages 1 and 3 partly (cleared). */
	assert_int_equal(blk_zero(b, PAGE + 100, 2 * PAGE, BLK_ZERO_MAY_TRIM), 0);
	assert_status(b, 0, 6 * PAGE, 2 * PAGE, true);
	assert_status(b, 2 * PAGE, 4 * PAGE, PAGE, false);
	assert_status(b, 3 * PAGE, 3 * PAGE, 3 * PAGE, true);
	assert_bytes(b, 0, PAGE + 100, 0xcc);
	assert_bytes(b, PAGE + 100, 2 * PAGE, 0);
	assert_bytes(b, 3 * PAGE + 100, 3 * PAGE - 100, 0xcc);

	/* An unallocated partial page stays unallocated. */
	assert_int_equal(blk_zero(b, 2 * PAGE + 5, 10, BLK_ZERO_MAY_TRIM), 0);
	assert_status(b, 2 * PAGE, PAGE, PAGE, false);
	blk_close(b);
}

static void test_zero_no_trim_allocates(void **state)
{
	struct blk *b = mem_or_fail(4 * PAGE);

	(void)state;
	fill(b, 0xcc);
	assert_int_equal(blk_zero(b, PAGE, PAGE, 0), 0);
	/* Documented choice: without MAY_TRIM the range stays data. */
	assert_status(b, 0, 4 * PAGE, 4 * PAGE, true);
	assert_bytes(b, PAGE, PAGE, 0);
	assert_bytes(b, 2 * PAGE, PAGE, 0xcc);
	blk_close(b);

	b = mem_or_fail(4 * PAGE);
	assert_int_equal(blk_zero(b, PAGE + 1, 10, 0), 0);
	assert_status(b, 0, 4 * PAGE, PAGE, false);
	assert_status(b, PAGE, 3 * PAGE, PAGE, true);
	assert_bytes(b, 0, 4 * PAGE, 0);
	blk_close(b);
}

static void test_trim(void **state)
{
	struct blk *b = mem_or_fail(4 * PAGE + 1000);

	(void)state;
	fill(b, 0x3c);
	assert_int_equal(blk_trim(b, PAGE, 4 * PAGE + 1000 - PAGE), 0);
	/* Pages 1..3 freed, and the partial last page wholly covered too. */
	assert_status(b, 0, 4 * PAGE + 1000, PAGE, true);
	assert_status(b, PAGE, 3 * PAGE + 1000, 3 * PAGE + 1000, false);
	assert_bytes(b, 0, PAGE, 0x3c);
	assert_bytes(b, PAGE, 3 * PAGE + 1000, 0);

	/* A partial trim clears only its range. */
	assert_int_equal(blk_trim(b, 10, 20), 0);
	assert_bytes(b, 0, 10, 0x3c);
	assert_bytes(b, 10, 20, 0);
	assert_bytes(b, 30, PAGE - 30, 0x3c);
	assert_status(b, 0, PAGE, PAGE, true);
	blk_close(b);
}

/* ---- fault injection ------------------------------------------------------ */

static const char *const op_name[] = { "read", "write", "flush", "zero", "trim" };

/* Issue one call of op over [PAGE, 2 * PAGE) (flush: the whole device). */
static int do_op(struct blk *b, enum blk_mem_op op, uint8_t *buf)
{
	switch (op) {
	case BLK_MEM_READ:
		return blk_pread(b, buf, PAGE, PAGE);
	case BLK_MEM_WRITE:
		return blk_pwrite(b, buf, PAGE, PAGE);
	case BLK_MEM_FLUSH:
		return blk_flush(b);
	case BLK_MEM_ZERO:
		return blk_zero(b, PAGE, PAGE, BLK_ZERO_MAY_TRIM);
	case BLK_MEM_TRIM:
		return blk_trim(b, PAGE, PAGE);
	}
	return -1;
}

static void test_inject_each_op(void **state)
{
	static const int errs[] = { EIO, ENOSPC };
	uint8_t buf[PAGE];
	unsigned op;
	size_t e, i;

	(void)state;
	for (op = BLK_MEM_READ; op <= BLK_MEM_TRIM; op++) {
		for (e = 0; e < ARRAY_SIZE(errs); e++) {
			struct blk *b = mem_or_fail(3 * PAGE);
			char want[64];

			fill(b, 0x99);
			blk_mem_inject(b, (enum blk_mem_op)op, 1, errs[e]);
			memset(buf, 0x11, sizeof(buf));
			err_clear();
			assert_int_equal(do_op(b, (enum blk_mem_op)op, buf), -errs[e]);
			snprintf(want, sizeof(want), "mem: injected %s failure", op_name[op]);
			assert_string_equal(err_msg(), want);

			/* Nothing changed: not the device, not the read buffer. */
			assert_bytes(b, 0, 3 * PAGE, 0x99);
			assert_status(b, 0, 3 * PAGE, 3 * PAGE, true);
			for (i = 0; i < sizeof(buf); i++)
				if (buf[i] != 0x11)
					fail_msg("%s failure touched the buffer", op_name[op]);

			/* One-shot: the next call succeeds. */
			assert_int_equal(do_op(b, (enum blk_mem_op)op, buf), 0);
			blk_close(b);
		}
	}
}

static void test_inject_nth(void **state)
{
	struct blk *b = mem_or_fail(3 * PAGE);
	uint8_t buf[PAGE];

	(void)state;
	memset(buf, 0x22, sizeof(buf));
	blk_mem_inject(b, BLK_MEM_WRITE, 3, EIO);
	assert_int_equal(do_op(b, BLK_MEM_WRITE, buf), 0);
	/* Other ops do not count against the write fault. */
	assert_int_equal(do_op(b, BLK_MEM_READ, buf), 0);
	assert_int_equal(do_op(b, BLK_MEM_ZERO, buf), 0);
	assert_int_equal(do_op(b, BLK_MEM_FLUSH, buf), 0);
	memset(buf, 0x22, sizeof(buf));
	assert_int_equal(do_op(b, BLK_MEM_WRITE, buf), 0);
	/* Nor do calls the checked wrapper refuses before the backend. */
	assert_int_equal(blk_pwrite(b, buf, 10, 3 * PAGE), -ERANGE);
	memset(buf, 0x33, sizeof(buf));
	assert_int_equal(do_op(b, BLK_MEM_WRITE, buf), -EIO);
	assert_bytes(b, PAGE, PAGE, 0x22);
	assert_int_equal(do_op(b, BLK_MEM_WRITE, buf), 0);
	assert_int_equal(do_op(b, BLK_MEM_WRITE, buf), 0);
	assert_bytes(b, PAGE, PAGE, 0x33);

	/* nth 0 cancels a pending fault. */
	blk_mem_inject(b, BLK_MEM_FLUSH, 2, ENOSPC);
	assert_int_equal(blk_flush(b), 0);
	blk_mem_inject(b, BLK_MEM_FLUSH, 0, 0);
	assert_int_equal(blk_flush(b), 0);
	assert_int_equal(blk_flush(b), 0);

	/* A new injection replaces the pending one. */
	blk_mem_inject(b, BLK_MEM_TRIM, 5, EIO);
	blk_mem_inject(b, BLK_MEM_TRIM, 1, ENOSPC);
	assert_int_equal(blk_trim(b, 0, PAGE), -ENOSPC);
	assert_int_equal(blk_trim(b, 0, PAGE), 0);
	assert_int_equal(blk_trim(b, 0, PAGE), 0);
	assert_int_equal(blk_trim(b, 0, PAGE), 0);
	assert_int_equal(blk_trim(b, 0, PAGE), 0);
	assert_int_equal(blk_trim(b, 0, PAGE), 0);
	blk_close(b);
}

/* ---- threads -------------------------------------------------------------- */

#define MT_THREADS 4
#define MT_REGION  (3 * PAGE + 123) /* straddles pages shared with neighbours */

struct mt_arg {
	struct blk *b;
	unsigned idx;
	int err; /* first failure, reported by the main thread */
};

static void *mt_writer(void *p)
{
	struct mt_arg *a = p;
	uint8_t buf[1000];
	uint64_t base = (uint64_t)a->idx * MT_REGION;
	uint64_t off;

	memset(buf, (int)(a->idx + 1), sizeof(buf));
	for (off = 0; off < MT_REGION && !a->err; off += sizeof(buf)) {
		size_t n = (size_t)MIN(sizeof(buf), MT_REGION - off);

		a->err = blk_pwrite(a->b, buf, n, base + off);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct blk *b = mem_or_fail((uint64_t)MT_THREADS * MT_REGION);
	struct mt_arg args[MT_THREADS];
	pthread_t th[MT_THREADS];
	unsigned i;

	(void)state;
	for (i = 0; i < MT_THREADS; i++) {
		args[i] = (struct mt_arg){ .b = b, .idx = i };
		assert_int_equal(pthread_create(&th[i], NULL, mt_writer, &args[i]), 0);
	}
	for (i = 0; i < MT_THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].err, 0);
	}
	for (i = 0; i < MT_THREADS; i++)
		assert_bytes(b, (uint64_t)i * MT_REGION, MT_REGION, (uint8_t)(i + 1));
	blk_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open),	      cmocka_unit_test(test_lazy_pages),
		cmocka_unit_test(test_zero_may_trim), cmocka_unit_test(test_zero_no_trim_allocates),
		cmocka_unit_test(test_trim),	      cmocka_unit_test(test_inject_each_op),
		cmocka_unit_test(test_inject_nth),    cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
