/* SPDX-License-Identifier: MIT */
/*
 * Lock-free dirty bitmap; see dirty.h.  Bits live in an array of atomic
 * 64-bit words.  Every update uses one atomic read-modify-write per word and
 * compares the old value with the mask, so the dirty count is adjusted by
 * exactly the number of bits that changed, whichever thread changed them.
 *
 * The count is a separate atomic updated just after the word, so a reader
 * racing with writers may see it lag the bits by a few; it is exact whenever
 * the bitmap is quiescent, and dirty_count() clamps the transient values to
 * [0, nchunks].
 */
#include "dirty.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "common/util.h"

#define WORD_BITS 64

/* calloc()'s all-zero bytes must be a valid zero for the words. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

struct dirty {
	uint64_t size;	       /* device bytes */
	uint32_t granularity;  /* bytes per bit */
	unsigned int shift;    /* log2(granularity) */
	uint64_t nchunks;      /* bits in use */
	uint64_t nwords;       /* words allocated */
	_Atomic int64_t count; /* set bits; see the comment at the top */
	_Atomic uint64_t *words;
};

struct dirty *dirty_new(uint64_t size, uint32_t granularity)
{
	struct dirty *d;

	if (size == 0 || granularity < 512 || !is_pow2(granularity)) {
		errno = EINVAL;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->size = size;
	d->granularity = granularity;
	d->shift = (unsigned int)__builtin_ctz(granularity);
	d->nchunks = div_round_up(size, granularity);
	d->nwords = div_round_up(d->nchunks, WORD_BITS);
	if (d->nwords > SIZE_MAX / sizeof(*d->words)) {
		errno = ENOMEM;
		goto err_free_d;
	}
	d->words = calloc((size_t)d->nwords, sizeof(*d->words));
	if (!d->words)
		goto err_free_d;
	atomic_init(&d->count, 0);
	return d;

err_free_d:
	free(d);
	return NULL;
}

void dirty_free(struct dirty *d)
{
	if (!d)
		return;
	free(d->words);
	free(d);
}

uint64_t dirty_size(const struct dirty *d)
{
	return d->size;
}

uint32_t dirty_granularity(const struct dirty *d)
{
	return d->granularity;
}

uint64_t dirty_nchunks(const struct dirty *d)
{
	return d->nchunks;
}

/* ---- word-level updates --------------------------------------------------- */

static void set_mask(struct dirty *d, uint64_t w, uint64_t mask)
{
	uint64_t old = atomic_fetch_or(&d->words[w], mask);
	int flipped = __builtin_popcountll(mask & ~old);

	if (flipped)
		atomic_fetch_add(&d->count, flipped);
}

static void clear_mask(struct dirty *d, uint64_t w, uint64_t mask)
{
	uint64_t old = atomic_fetch_and(&d->words[w], ~mask);
	int flipped = __builtin_popcountll(mask & old);

	if (flipped)
		atomic_fetch_sub(&d->count, flipped);
}

/* Bits [lo, hi] (inclusive, both in word w's range) as a mask. */
static uint64_t bits_mask(uint64_t lo, uint64_t hi)
{
	unsigned int l = (unsigned int)(lo % WORD_BITS);
	unsigned int h = (unsigned int)(hi % WORD_BITS);
	uint64_t upto_h = h == WORD_BITS - 1 ? ~UINT64_C(0) : (UINT64_C(1) << (h + 1)) - 1;

	return upto_h & (~UINT64_C(0) << l);
}

/* Set chunks [first, last] inclusive; last < nchunks. */
static void set_chunks(struct dirty *d, uint64_t first, uint64_t last)
{
	uint64_t w = first / WORD_BITS, wlast = last / WORD_BITS;

	if (w == wlast) {
		set_mask(d, w, bits_mask(first, last));
		return;
	}
	set_mask(d, w, bits_mask(first, WORD_BITS - 1));
	for (w++; w < wlast; w++)
		set_mask(d, w, ~UINT64_C(0));
	set_mask(d, wlast, bits_mask(0, last));
}

/* ---- public operations ---------------------------------------------------- */

void dirty_mark(struct dirty *d, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (len == 0 || off >= d->size)
		return;
	if (ckd_add_u64(&end, off, len) || end > d->size)
		end = d->size;
	set_chunks(d, off >> d->shift, (end - 1) >> d->shift);
}

void dirty_mark_all(struct dirty *d)
{
	set_chunks(d, 0, d->nchunks - 1);
}

void dirty_clear_all(struct dirty *d)
{
	uint64_t w;

	for (w = 0; w < d->nwords; w++)
		clear_mask(d, w, ~UINT64_C(0));
}

bool dirty_test(const struct dirty *d, uint64_t chunk)
{
	if (chunk >= d->nchunks)
		return false;
	return atomic_load(&d->words[chunk / WORD_BITS]) & (UINT64_C(1) << (chunk % WORD_BITS));
}

bool dirty_test_and_clear(struct dirty *d, uint64_t chunk)
{
	uint64_t bit, old;

	if (chunk >= d->nchunks)
		return false;
	bit = UINT64_C(1) << (chunk % WORD_BITS);
	old = atomic_fetch_and(&d->words[chunk / WORD_BITS], ~bit);
	if (!(old & bit))
		return false;
	atomic_fetch_sub(&d->count, 1);
	return true;
}

int64_t dirty_next(const struct dirty *d, uint64_t from)
{
	uint64_t w, word;

	if (from >= d->nchunks)
		return -1;
	w = from / WORD_BITS;
	/* Bits past nchunks are never set, so no end mask is needed. */
	word = atomic_load(&d->words[w]) & (~UINT64_C(0) << (from % WORD_BITS));
	while (!word) {
		if (++w >= d->nwords)
			return -1;
		word = atomic_load(&d->words[w]);
	}
	return (int64_t)(w * WORD_BITS + (uint64_t)__builtin_ctzll(word));
}

uint64_t dirty_count(const struct dirty *d)
{
	int64_t c = atomic_load(&d->count);

	if (c < 0)
		return 0;
	return MIN((uint64_t)c, d->nchunks);
}

uint64_t dirty_bytes(const struct dirty *d)
{
	uint64_t n = dirty_count(d);
	uint64_t tail = d->size & (d->granularity - 1);
	/*
	 * n << shift can exceed 2^64 only when the last chunk is partial and
	 * set; the subtraction below then wraps back to the exact value.
	 */
	uint64_t bytes = n << d->shift;

	if (n && tail && dirty_test(d, d->nchunks - 1))
		bytes -= d->granularity - tail;
	return bytes;
}

/* ---- whole maps ------------------------------------------------------------ */

static bool same_geometry(const struct dirty *a, const struct dirty *b)
{
	return a->size == b->size && a->granularity == b->granularity;
}

int dirty_move(struct dirty *dst, struct dirty *src)
{
	if (!same_geometry(dst, src))
		return -EINVAL;
	for (uint64_t w = 0; w < src->nwords; w++) {
		uint64_t bits = atomic_load(&src->words[w]);

		if (!bits)
			continue;
		set_mask(dst, w, bits);
		clear_mask(src, w, bits);
	}
	return 0;
}

int dirty_copy(struct dirty *dst, const struct dirty *src)
{
	if (!same_geometry(dst, src))
		return -EINVAL;
	for (uint64_t w = 0; w < src->nwords; w++) {
		uint64_t word = atomic_load(&src->words[w]);
		uint64_t old = atomic_exchange(&dst->words[w], word);
		int64_t delta = __builtin_popcountll(word) - __builtin_popcountll(old);

		if (delta)
			atomic_fetch_add(&dst->count, delta);
	}
	return 0;
}

/* ---- raw bytes ------------------------------------------------------------- */

uint64_t dirty_raw_len(const struct dirty *d)
{
	return div_round_up(d->nchunks, 8);
}

void dirty_export(const struct dirty *d, uint8_t *out)
{
	uint64_t len = dirty_raw_len(d), w, i;

	for (w = 0; w < d->nwords; w++) {
		uint64_t word = atomic_load(&d->words[w]);

		for (i = 0; i < 8 && w * 8 + i < len; i++)
			out[w * 8 + i] = (uint8_t)(word >> (8 * i));
	}
}

/* Word w of the raw bytes at in (len of them), missing bytes zero. */
static uint64_t raw_word(const uint8_t *in, uint64_t len, uint64_t w)
{
	uint64_t word = 0, i;

	for (i = 0; i < 8 && w * 8 + i < len; i++)
		word |= (uint64_t)in[w * 8 + i] << (8 * i);
	return word;
}

int dirty_import(struct dirty *d, const uint8_t *in)
{
	uint64_t len = dirty_raw_len(d), w, tail = d->nchunks % WORD_BITS;

	if (tail && raw_word(in, len, d->nwords - 1) & (~UINT64_C(0) << tail))
		return -EINVAL;
	for (w = 0; w < d->nwords; w++) {
		uint64_t word = raw_word(in, len, w);
		uint64_t old = atomic_exchange(&d->words[w], word);
		int64_t delta = __builtin_popcountll(word) - __builtin_popcountll(old);

		if (delta)
			atomic_fetch_add(&d->count, delta);
	}
	return 0;
}
