/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for src/bitmap/dirty.c: construction errors, marking with
 * clipping and word boundaries, scanning, exact counts and byte totals
 * (partial last chunk), a randomised comparison against a plain bool
 * array, and concurrent markers racing a clearing scanner.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "common/util.h"

/* Bits counted one by one, to check dirty_count() against. */
static uint64_t popcount_slow(const struct dirty *d)
{
	uint64_t c, n = 0;

	for (c = 0; c < dirty_nchunks(d); c++)
		n += dirty_test(d, c);
	return n;
}

static struct dirty *new_or_fail(uint64_t size, uint32_t gran)
{
	struct dirty *d = dirty_new(size, gran);

	assert_non_null(d);
	return d;
}

static void test_new_errors(void **state)
{
	static const struct {
		uint64_t size;
		uint32_t gran;
	} bad[] = {
		{ 0, 4096 },   { MiB, 0 },    { MiB, 256 },	 { MiB, 511 },
		{ MiB, 1000 }, { MiB, 4097 }, { MiB, 3u << 20 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		errno = 0;
		assert_null(dirty_new(bad[i].size, bad[i].gran));
		assert_int_equal(errno, EINVAL);
	}
	dirty_free(NULL);
}

static void test_geometry(void **state)
{
	struct dirty *d;

	(void)state;
	d = new_or_fail(10 * MiB + 1000, 64 * 1024);
	assert_int_equal(dirty_size(d), 10 * MiB + 1000);
	assert_int_equal(dirty_granularity(d), 64 * 1024);
	assert_int_equal(dirty_nchunks(d), 161);
	assert_int_equal(dirty_count(d), 0);
	assert_int_equal(dirty_bytes(d), 0);
	assert_int_equal(dirty_next(d, 0), -1);
	dirty_free(d);

	d = new_or_fail(1, 512); /* one partial chunk */
	assert_int_equal(dirty_nchunks(d), 1);
	dirty_mark(d, 0, 1);
	assert_int_equal(dirty_count(d), 1);
	assert_int_equal(dirty_bytes(d), 1);
	dirty_free(d);

	/* A huge sparse device: allocation is per bit, not per byte. */
	d = new_or_fail(UINT64_C(1) << 50, UINT32_C(1) << 31);
	assert_int_equal(dirty_nchunks(d), UINT64_C(1) << 19);
	dirty_mark(d, (UINT64_C(1) << 50) - 1, 1);
	assert_int_equal(dirty_next(d, 0), (int64_t)(UINT64_C(1) << 19) - 1);
	dirty_free(d);
}

static void test_mark_basic(void **state)
{
	struct dirty *d = new_or_fail(MiB, 4096);

	(void)state;
	dirty_mark(d, 0, 0); /* len 0 marks nothing */
	dirty_mark(d, 5000, 0);
	assert_int_equal(dirty_count(d), 0);

	dirty_mark(d, 0, 1);
	assert_true(dirty_test(d, 0));
	assert_false(dirty_test(d, 1));
	assert_int_equal(dirty_count(d), 1);

	/* Two bytes straddling a chunk boundary mark both chunks. */
	dirty_mark(d, 2 * 4096 - 1, 2);
	assert_true(dirty_test(d, 1));
	assert_true(dirty_test(d, 2));
	assert_false(dirty_test(d, 3));
	assert_int_equal(dirty_count(d), 3);

	/* Re-marking does not change the count. */
	dirty_mark(d, 0, 3 * 4096);
	assert_int_equal(dirty_count(d), 3);
	/* A range ending exactly on a boundary does not spill over. */
	dirty_mark(d, 4 * 4096, 4096);
	assert_false(dirty_test(d, 3));
	assert_true(dirty_test(d, 4));
	assert_false(dirty_test(d, 5));
	assert_int_equal(dirty_count(d), 4);
	assert_int_equal(dirty_bytes(d), 4 * 4096);

	/* Out-of-range chunks read as clear. */
	assert_false(dirty_test(d, dirty_nchunks(d)));
	assert_false(dirty_test_and_clear(d, dirty_nchunks(d)));
	dirty_free(d);
}

static void test_mark_clipping(void **state)
{
	uint64_t size = 10 * 4096 + 100;
	struct dirty *d = new_or_fail(size, 4096);

	(void)state;
	dirty_mark(d, size, 100); /* starts at the end */
	dirty_mark(d, size + 5000, 1);
	dirty_mark(d, UINT64_MAX, UINT64_MAX);
	assert_int_equal(dirty_count(d), 0);

	dirty_mark(d, size - 1, 1000); /* past the end: clipped */
	assert_int_equal(dirty_count(d), 1);
	assert_true(dirty_test(d, 10));
	assert_int_equal(dirty_bytes(d), 100);

	dirty_mark(d, 4096, UINT64_MAX); /* end overflows: clipped */
	assert_int_equal(dirty_count(d), 10);
	assert_false(dirty_test(d, 0));
	assert_int_equal(dirty_bytes(d), size - 4096);
	assert_int_equal(dirty_next(d, 11), -1);
	dirty_free(d);
}

static void test_word_boundaries(void **state)
{
	struct dirty *d = new_or_fail(512 * 300, 512);
	uint64_t c;

	(void)state;
	/* Chunks 60..130: the tail of word 0, all of word 1, head of word 2. */
	dirty_mark(d, 60 * 512, 71 * 512);
	assert_int_equal(dirty_count(d), 71);
	for (c = 0; c < dirty_nchunks(d); c++)
		assert_int_equal(dirty_test(d, c), c >= 60 && c <= 130);
	assert_int_equal(dirty_next(d, 0), 60);
	assert_int_equal(dirty_next(d, 63), 63);
	assert_int_equal(dirty_next(d, 64), 64);
	assert_int_equal(dirty_next(d, 130), 130);
	assert_int_equal(dirty_next(d, 131), -1);

	/* Exactly one word, aligned. */
	dirty_clear_all(d);
	dirty_mark(d, 128 * 512, 64 * 512);
	assert_int_equal(dirty_count(d), 64);
	assert_false(dirty_test(d, 127));
	assert_true(dirty_test(d, 128));
	assert_true(dirty_test(d, 191));
	assert_false(dirty_test(d, 192));

	/* Single bits at both ends of a word. */
	dirty_clear_all(d);
	dirty_mark(d, 63 * 512, 1);
	dirty_mark(d, 64 * 512, 1);
	assert_int_equal(dirty_next(d, 0), 63);
	assert_int_equal(dirty_next(d, 64), 64);
	assert_int_equal(dirty_next(d, 65), -1);
	assert_int_equal(dirty_count(d), 2);
	dirty_free(d);
}

static void test_next_and_clear(void **state)
{
	struct dirty *d = new_or_fail(1000 * 4096, 4096);
	static const uint64_t set[] = { 0, 1, 63, 64, 200, 511, 512, 999 };
	uint64_t n = 0;
	int64_t c;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(set); i++)
		dirty_mark(d, set[i] * 4096 + 7, 1);
	assert_int_equal(dirty_count(d), ARRAY_SIZE(set));
	assert_int_equal(dirty_next(d, 1000), -1);
	assert_int_equal(dirty_next(d, UINT64_MAX), -1);

	/* The engine's loop: find, test_and_clear, continue after it. */
	for (c = dirty_next(d, 0); c >= 0; c = dirty_next(d, (uint64_t)c + 1)) {
		assert_int_equal(c, set[n]);
		assert_true(dirty_test_and_clear(d, (uint64_t)c));
		assert_false(dirty_test_and_clear(d, (uint64_t)c));
		n++;
	}
	assert_int_equal(n, ARRAY_SIZE(set));
	assert_int_equal(dirty_count(d), 0);
	assert_int_equal(dirty_next(d, 0), -1);
	dirty_free(d);
}

static void test_mark_all_clear_all(void **state)
{
	/* Chunk counts around word sizes, with and without a partial tail. */
	static const uint64_t nchunks[] = { 1, 63, 64, 65, 127, 128, 129, 1000 };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(nchunks); i++) {
		uint64_t n = nchunks[i];
		struct dirty *full = new_or_fail(n * 1024, 1024);
		struct dirty *part = new_or_fail(n * 1024 - 24, 1024);

		dirty_mark_all(full);
		assert_int_equal(dirty_count(full), n);
		assert_int_equal(popcount_slow(full), n);
		assert_int_equal(dirty_bytes(full), n * 1024);
		assert_int_equal(dirty_next(full, 0), 0);
		assert_int_equal(dirty_next(full, n - 1), (int64_t)n - 1);
		assert_int_equal(dirty_next(full, n), -1);
		dirty_mark_all(full); /* idempotent */
		assert_int_equal(dirty_count(full), n);
		dirty_clear_all(full);
		assert_int_equal(dirty_count(full), 0);
		assert_int_equal(dirty_next(full, 0), -1);

		dirty_mark_all(part);
		assert_int_equal(dirty_count(part), n);
		assert_int_equal(dirty_bytes(part), n * 1024 - 24);
		assert_true(dirty_test_and_clear(part, n - 1));
		assert_int_equal(dirty_bytes(part), (n - 1) * 1024);
		dirty_clear_all(part);
		assert_int_equal(dirty_bytes(part), 0);

		dirty_free(full);
		dirty_free(part);
	}
}

static void test_bytes_partial_last(void **state)
{
	uint64_t size = 3 * 4096 + 100;
	struct dirty *d = new_or_fail(size, 4096);

	(void)state;
	assert_int_equal(dirty_nchunks(d), 4);
	dirty_mark(d, size - 1, 1);
	assert_int_equal(dirty_bytes(d), 100);
	dirty_mark(d, 0, 1);
	assert_int_equal(dirty_bytes(d), 4096 + 100);
	dirty_mark(d, 0, size);
	assert_int_equal(dirty_bytes(d), size);
	assert_true(dirty_test_and_clear(d, 3));
	assert_int_equal(dirty_bytes(d), 3 * 4096);
	dirty_free(d);
}

/* Random ranges against a plain bool array. */
static void test_against_model(void **state)
{
	uint64_t size = 777 * 512 + 13;
	struct dirty *d = new_or_fail(size, 512);
	uint64_t nchunks = dirty_nchunks(d);
	bool *model = calloc(nchunks, sizeof(*model));
	unsigned seed = 12345;
	int iter;

	(void)state;
	assert_non_null(model);
	for (iter = 0; iter < 5000; iter++) {
		unsigned op = (unsigned)rand_r(&seed) % 4;
		uint64_t off = (uint64_t)rand_r(&seed) % (size + 2000);
		uint64_t len = (uint64_t)rand_r(&seed) % (70 * 512);
		uint64_t c, n = 0, bytes = 0;
		int64_t next;

		if (op == 0) {
			c = (uint64_t)rand_r(&seed) % (nchunks + 3);
			assert_int_equal(dirty_test_and_clear(d, c), c < nchunks && model[c]);
			if (c < nchunks)
				model[c] = false;
		} else {
			dirty_mark(d, off, len);
			if (len > 0 && off < size) {
				uint64_t end = MIN(off + len, size);

				for (c = off / 512; c <= (end - 1) / 512; c++)
					model[c] = true;
			}
		}
		if (iter % 97 == 0) {
			dirty_clear_all(d);
			memset(model, 0, nchunks * sizeof(*model));
		}

		for (c = 0; c < nchunks; c++) {
			n += model[c];
			if (model[c])
				bytes += c == nchunks - 1 ? size - c * 512 : 512;
		}
		assert_int_equal(dirty_count(d), n);
		assert_int_equal(dirty_bytes(d), bytes);
		c = (uint64_t)rand_r(&seed) % (nchunks + 1);
		next = dirty_next(d, c);
		while (c < nchunks && !model[c])
			c++;
		assert_int_equal(next, c < nchunks ? (int64_t)c : -1);
	}
	free(model);
	dirty_free(d);
}

/* ---- concurrency ---------------------------------------------------------- */

#define MT_MARKERS 4
#define MT_ITERS   50000

struct mt_ctx {
	struct dirty *d;
	unsigned seed;
	_Atomic int *markers_left;
	atomic_bool *clearer_started;
	uint64_t cleared;
	bool count_out_of_range; /* cmocka asserts only in the main thread */
};

static void *mt_marker(void *arg)
{
	struct mt_ctx *c = arg;
	uint64_t size = dirty_size(c->d);
	int i;

	/* Race the clearer, not an idle bitmap. */
	while (!atomic_load(c->clearer_started))
		;
	for (i = 0; i < MT_ITERS; i++) {
		uint64_t off = (uint64_t)rand_r(&c->seed) % size;
		uint64_t len = (uint64_t)rand_r(&c->seed) % (200 * 512);

		dirty_mark(c->d, off, len);
	}
	(*c->markers_left)--;
	return NULL;
}

static void *mt_clearer(void *arg)
{
	struct mt_ctx *c = arg;
	bool last = false;

	atomic_store(c->clearer_started, true);
	/* Scan while markers run, then once more after they are done, so
	 * there is always something to clear however the threads were
	 * scheduled. */
	while (!last) {
		int64_t i;

		last = *c->markers_left == 0;
		for (i = dirty_next(c->d, 0); i >= 0; i = dirty_next(c->d, (uint64_t)i + 1))
			c->cleared += dirty_test_and_clear(c->d, (uint64_t)i);
		/* Readers may run at any time; the value must stay in range. */
		if (dirty_count(c->d) > dirty_nchunks(c->d))
			c->count_out_of_range = true;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct dirty *d = new_or_fail(4096 * 512 + 300, 512);
	_Atomic int left = MT_MARKERS;
	atomic_bool started = false;
	struct mt_ctx ctx[MT_MARKERS + 1];
	pthread_t th[MT_MARKERS + 1];
	int i;

	(void)state;
	for (i = 0; i <= MT_MARKERS; i++)
		ctx[i] = (struct mt_ctx){ .d = d,
					  .seed = 1000u + (unsigned)i,
					  .markers_left = &left,
					  .clearer_started = &started };
	assert_int_equal(pthread_create(&th[MT_MARKERS], NULL, mt_clearer, &ctx[MT_MARKERS]), 0);
	for (i = 0; i < MT_MARKERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, mt_marker, &ctx[i]), 0);
	for (i = 0; i <= MT_MARKERS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);

	assert_true(ctx[MT_MARKERS].cleared > 0);
	assert_false(ctx[MT_MARKERS].count_out_of_range);
	assert_int_equal(dirty_count(d), popcount_slow(d));
	/* And the count still tracks single transitions exactly. */
	dirty_mark_all(d);
	assert_int_equal(dirty_count(d), dirty_nchunks(d));
	assert_int_equal(dirty_bytes(d), dirty_size(d));
	dirty_clear_all(d);
	assert_int_equal(dirty_count(d), 0);
	dirty_free(d);
}

/*
 * Raw bytes: the layout (chunk i is bit i % 8 of byte i / 8), a round trip
 * over many geometries, import replacing old bits with an exact count, and
 * a set bit past the last chunk refused without changing anything.
 */
static void test_raw_export_import(void **state)
{
	static const uint64_t nchunks[] = { 1, 7, 8, 9, 63, 64, 65, 127, 128, 129, 1000 };
	struct dirty *d, *e;
	uint8_t buf[256], back[256];
	uint64_t c;
	size_t i;

	(void)state;
	d = new_or_fail(17 * 4096, 4096);
	assert_int_equal(dirty_raw_len(d), 3);
	dirty_mark(d, 0, 1);
	dirty_mark(d, 9 * 4096, 1);
	dirty_mark(d, 16 * 4096, 1);
	dirty_export(d, buf);
	assert_int_equal(buf[0], 0x01);
	assert_int_equal(buf[1], 0x02);
	assert_int_equal(buf[2], 0x01);
	dirty_free(d);

	for (i = 0; i < ARRAY_SIZE(nchunks); i++) {
		uint64_t len;

		d = new_or_fail(nchunks[i] * 512 - 100, 512);
		e = new_or_fail(nchunks[i] * 512 - 100, 512);
		len = dirty_raw_len(d);
		assert_int_equal(len, (nchunks[i] + 7) / 8);
		for (c = 0; c < nchunks[i]; c++)
			if ((c * 2654435761u) % 5 < 2 || c == nchunks[i] - 1)
				dirty_mark(d, c * 512, 1);
		dirty_mark_all(e); /* import replaces, not ORs */
		memset(buf, 0xee, sizeof(buf));
		dirty_export(d, buf);
		assert_int_equal(buf[len], 0xee); /* no byte past the length */
		assert_int_equal(dirty_import(e, buf), 0);
		assert_int_equal(dirty_count(e), dirty_count(d));
		assert_int_equal(dirty_count(e), popcount_slow(e));
		for (c = 0; c < nchunks[i]; c++)
			assert_int_equal(dirty_test(e, c), dirty_test(d, c));
		dirty_export(e, back);
		assert_memory_equal(buf, back, len);

		/* A bit past the last chunk, where the last byte has room. */
		if (nchunks[i] % 8) {
			buf[len - 1] |= (uint8_t)(0x80);
			dirty_clear_all(e);
			assert_int_equal(dirty_import(e, buf), -EINVAL);
			assert_int_equal(dirty_count(e), 0);
			assert_int_equal(dirty_next(e, 0), -1);
		}
		dirty_free(d);
		dirty_free(e);
	}
}

/* dirty_move() and dirty_copy() against per-bit expectations, across word
 * boundaries and a partial last word; mismatched geometry is refused. */
static void test_move_copy(void **state)
{
	static const uint64_t nchunks[] = { 1, 63, 64, 65, 200 };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(nchunks); i++) {
		uint64_t n = nchunks[i], size = n * 4096 - 1, c;
		struct dirty *a = new_or_fail(size, 4096), *b = new_or_fail(size, 4096);
		struct dirty *copy = new_or_fail(size, 4096);

		for (c = 0; c < n; c++) {
			if (c % 3 == 0)
				dirty_mark(a, c * 4096, 1);
			if (c % 5 == 0)
				dirty_mark(b, c * 4096, 1);
		}
		dirty_mark_all(copy); /* a copy replaces, not ORs */
		assert_int_equal(dirty_copy(copy, b), 0);
		for (c = 0; c < n; c++)
			assert_int_equal(dirty_test(copy, c), c % 5 == 0);
		assert_int_equal(dirty_count(copy), popcount_slow(copy));
		assert_int_equal(dirty_count(b), popcount_slow(b)); /* untouched */

		assert_int_equal(dirty_move(a, b), 0);
		for (c = 0; c < n; c++) {
			assert_int_equal(dirty_test(a, c), c % 3 == 0 || c % 5 == 0);
			assert_false(dirty_test(b, c));
		}
		assert_int_equal(dirty_count(a), popcount_slow(a));
		assert_int_equal(dirty_count(b), 0);
		assert_int_equal(dirty_next(b, 0), -1);
		dirty_free(a);
		dirty_free(b);
		dirty_free(copy);
	}

	{
		struct dirty *a = new_or_fail(8192, 4096), *b = new_or_fail(8192, 512);
		struct dirty *c = new_or_fail(4096, 4096);

		dirty_mark_all(b);
		assert_int_equal(dirty_move(a, b), -EINVAL);
		assert_int_equal(dirty_copy(a, b), -EINVAL);
		assert_int_equal(dirty_move(a, c), -EINVAL);
		assert_int_equal(dirty_count(a), 0);
		assert_int_equal(dirty_count(b), 16);
		dirty_free(a);
		dirty_free(b);
		dirty_free(c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_errors),
		cmocka_unit_test(test_geometry),
		cmocka_unit_test(test_raw_export_import),
		cmocka_unit_test(test_move_copy),
		cmocka_unit_test(test_mark_basic),
		cmocka_unit_test(test_mark_clipping),
		cmocka_unit_test(test_word_boundaries),
		cmocka_unit_test(test_next_and_clear),
		cmocka_unit_test(test_mark_all_clear_all),
		cmocka_unit_test(test_bytes_partial_last),
		cmocka_unit_test(test_against_model),
		cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
