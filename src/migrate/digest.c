/* SPDX-License-Identifier: MIT */
/* Per-chunk hash tables and device digests; see digest.h. */
#include "digest.h"

#include <stdbool.h>
#include <stdlib.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "common/util.h"

struct digest_table {
	uint64_t size;
	uint32_t chunk_size;
	uint64_t nchunks;
	uint64_t *hash;
	uint8_t *covered;
	bool zero_full_known, zero_last_known;
	uint64_t zero_full, zero_last;
};

struct digest_table *digest_new(uint64_t dev_size, uint32_t chunk_size)
{
	struct digest_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->size = dev_size;
	t->chunk_size = chunk_size;
	t->nchunks = div_round_up(dev_size, chunk_size);
	t->hash = calloc(t->nchunks ? t->nchunks : 1, sizeof(*t->hash));
	t->covered = calloc(t->nchunks ? t->nchunks : 1, 1);
	if (!t->hash || !t->covered) {
		digest_free(t);
		return NULL;
	}
	return t;
}

void digest_free(struct digest_table *t)
{
	if (!t)
		return;
	free(t->hash);
	free(t->covered);
	free(t);
}

size_t digest_chunk_len(const struct digest_table *t, uint64_t idx)
{
	uint64_t off = idx * t->chunk_size;

	return (size_t)MIN((uint64_t)t->chunk_size, t->size - off);
}

uint64_t digest_hash(const void *buf, size_t len)
{
	return XXH3_64bits(buf, len);
}

uint64_t digest_zero_hash(struct digest_table *t, uint64_t idx)
{
	size_t len = digest_chunk_len(t, idx);
	bool full = len == t->chunk_size;
	uint64_t *slot = full ? &t->zero_full : &t->zero_last;
	bool *known = full ? &t->zero_full_known : &t->zero_last_known;

	if (!*known) {
		static const uint8_t zeros[64 * 1024];
		XXH3_state_t st;

		XXH3_INITSTATE(&st);
		XXH3_64bits_reset(&st);
		for (size_t done = 0; done < len; done += sizeof(zeros))
			XXH3_64bits_update(&st, zeros, MIN(sizeof(zeros), len - done));
		*slot = XXH3_64bits_digest(&st);
		*known = true;
	}
	return *slot;
}

static void sum_out(XXH128_hash_t h, uint8_t out[DIGEST_SUM_LEN])
{
	put_be64(out, h.high64);
	put_be64(out + 8, h.low64);
}

void digest_sum(const void *buf, size_t len, uint8_t out[DIGEST_SUM_LEN])
{
	sum_out(XXH3_128bits(buf, len), out);
}

void digest_zero_sum(size_t len, uint8_t out[DIGEST_SUM_LEN])
{
	static const uint8_t zeros[64 * 1024];
	XXH3_state_t st;

	XXH3_INITSTATE(&st);
	XXH3_128bits_reset(&st);
	for (size_t done = 0; done < len; done += sizeof(zeros))
		XXH3_128bits_update(&st, zeros, MIN(sizeof(zeros), len - done));
	sum_out(XXH3_128bits_digest(&st), out);
}

void digest_set(struct digest_table *t, uint64_t idx, uint64_t hash)
{
	t->hash[idx] = hash;
	t->covered[idx] = 1;
}

uint64_t digest_get(const struct digest_table *t, uint64_t idx)
{
	return t->hash[idx];
}

uint64_t digest_nchunks(const struct digest_table *t)
{
	return t->nchunks;
}

void digest_final(const struct digest_table *t, uint8_t out[DIGEST_LEN], uint64_t *chunks)
{
	XXH3_state_t st;
	XXH128_hash_t h;
	uint64_t n = 0;

	XXH3_INITSTATE(&st);
	XXH3_128bits_reset(&st);
	for (uint64_t i = 0; i < t->nchunks; i++) {
		uint8_t rec[16];

		if (!t->covered[i])
			continue;
		put_be64(rec, i);
		put_be64(rec + 8, t->hash[i]);
		XXH3_128bits_update(&st, rec, sizeof(rec));
		n++;
	}
	h = XXH3_128bits_digest(&st);
	put_be64(out, h.high64);
	put_be64(out + 8, h.low64);
	*chunks = n;
}
