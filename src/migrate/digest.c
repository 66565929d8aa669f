/* SPDX-License-Identifier: MIT */
/* Per-chunk hash tables and device digests; see digest.h. */
#include "digest.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "common/util.h"

/*
 * The block hashes of recently written chunks: how many bytes of them a
 * table keeps at most (2 KiB per 1 MiB chunk: 4096 chunks).  A chunk not
 * in the cache costs one read of it at its next mirrored write.
 */
#define DIGEST_CACHE_BYTES (8u << 20)

/* One cached chunk: valid while gen matches the table's gen[idx]. */
struct sub_slot {
	uint64_t idx;
	uint32_t gen;
	bool valid;
	uint64_t *sub; /* its block hashes */
};

struct digest_table {
	uint64_t size;
	uint32_t chunk_size;
	uint64_t nchunks;
	uint64_t *hash;
	uint8_t *covered;
	uint32_t *gen; /* bumped whenever a chunk's hash is set from outside the cache */
	uint64_t zero_full, zero_last; /* hashes of a zero chunk, and of a zero last chunk */
	/* Block hashes of zeros: a whole block, and the device's last block
	 * (whole too if the device ends on a block boundary). */
	uint64_t zero_bhash, zero_thash;
	/* digest_update()'s cache and read buffer, made on first use, under
	 * cache_lock: digest_update() holds it throughout, digest_set_blocks()
	 * only tries it. */
	pthread_mutex_t cache_lock;
	struct sub_slot *slot;
	uint64_t nslots;
	uint64_t *subs;
	void *scratch;
};

static uint64_t two_level(const uint8_t *buf, size_t len);
static uint64_t block_hash(const uint8_t *buf, size_t len);

struct digest_table *digest_new(uint64_t dev_size, uint32_t chunk_size)
{
	struct digest_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	pthread_mutex_init(&t->cache_lock, NULL);
	t->size = dev_size;
	t->chunk_size = chunk_size;
	t->nchunks = div_round_up(dev_size, chunk_size);
	t->hash = calloc(t->nchunks ? t->nchunks : 1, sizeof(*t->hash));
	t->covered = calloc(t->nchunks ? t->nchunks : 1, 1);
	t->gen = calloc(t->nchunks ? t->nchunks : 1, sizeof(*t->gen));
	if (!t->hash || !t->covered || !t->gen) {
		digest_free(t);
		return NULL;
	}
	/* Now, so that digest_zero_hash() only reads (writer threads call it). */
	t->zero_full = two_level(NULL, chunk_size);
	t->zero_last = t->nchunks ? two_level(NULL, digest_chunk_len(t, t->nchunks - 1)) : 0;
	t->zero_bhash = block_hash(NULL, DIGEST_BLOCK);
	t->zero_thash =
	    dev_size % DIGEST_BLOCK ? block_hash(NULL, dev_size % DIGEST_BLOCK) : t->zero_bhash;
	return t;
}

void digest_free(struct digest_table *t)
{
	if (!t)
		return;
	free(t->hash);
	free(t->covered);
	free(t->gen);
	free(t->slot);
	free(t->subs);
	free(t->scratch);
	pthread_mutex_destroy(&t->cache_lock);
	free(t);
}

size_t digest_chunk_len(const struct digest_table *t, uint64_t idx)
{
	uint64_t off = idx * t->chunk_size;

	return (size_t)MIN((uint64_t)t->chunk_size, t->size - off);
}

static const uint8_t zero_block[DIGEST_BLOCK];

/* The hash of one block: its bytes, or (buf NULL) len zero bytes. */
static uint64_t block_hash(const uint8_t *buf, size_t len)
{
	return XXH3_64bits(buf ? buf : zero_block, len);
}

static size_t nblocks(size_t len)
{
	return (len + DIGEST_BLOCK - 1) / DIGEST_BLOCK;
}

/* The second level: XXH3-64 of the block hashes, be64 each. */
struct top {
	XXH3_state_t st;
	uint8_t buf[512];
	size_t n;
};

static void top_begin(struct top *t)
{
	XXH3_INITSTATE(&t->st);
	XXH3_64bits_reset(&t->st);
	t->n = 0;
}

static void top_add(struct top *t, uint64_t h)
{
	put_be64(t->buf + t->n, h);
	t->n += 8;
	if (t->n == sizeof(t->buf)) {
		XXH3_64bits_update(&t->st, t->buf, t->n);
		t->n = 0;
	}
}

static uint64_t top_end(struct top *t)
{
	if (t->n)
		XXH3_64bits_update(&t->st, t->buf, t->n);
	return XXH3_64bits_digest(&t->st);
}

/* The chunk hash of buf (NULL: len zero bytes). */
static uint64_t two_level(const uint8_t *buf, size_t len)
{
	struct top top;

	top_begin(&top);
	for (size_t off = 0; off < len; off += DIGEST_BLOCK)
		top_add(&top,
			block_hash(buf ? buf + off : NULL, MIN((size_t)DIGEST_BLOCK, len - off)));
	return top_end(&top);
}

uint64_t digest_hash(const void *buf, size_t len)
{
	return two_level(buf, len);
}

uint64_t digest_hash_blocks(const void *buf, size_t len, uint64_t *subs)
{
	struct top top;

	top_begin(&top);
	for (size_t b = 0; b < nblocks(len); b++) {
		size_t off = b * DIGEST_BLOCK;

		subs[b] =
		    block_hash((const uint8_t *)buf + off, MIN((size_t)DIGEST_BLOCK, len - off));
		top_add(&top, subs[b]);
	}
	return top_end(&top);
}

uint64_t digest_zero_hash(struct digest_table *t, uint64_t idx)
{
	return digest_chunk_len(t, idx) == t->chunk_size ? t->zero_full : t->zero_last;
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
	t->gen[idx]++; /* whatever the cache holds for idx is stale now */
}

uint64_t digest_get(const struct digest_table *t, uint64_t idx)
{
	return t->hash[idx];
}

uint64_t digest_nchunks(const struct digest_table *t)
{
	return t->nchunks;
}

/* ---- digest_update ----------------------------------------------------------- */

static int cache_init(struct digest_table *t)
{
	size_t per = nblocks(t->chunk_size);

	if (t->slot)
		return 0;
	t->nslots = MAX(1, MIN(t->nchunks, DIGEST_CACHE_BYTES / (per * sizeof(uint64_t))));
	t->slot = calloc(t->nslots, sizeof(*t->slot));
	t->subs = calloc(t->nslots * per, sizeof(uint64_t));
	if (posix_memalign(&t->scratch, DIGEST_BLOCK, t->chunk_size) != 0)
		t->scratch = NULL;
	if (!t->slot || !t->subs || !t->scratch) {
		free(t->slot);
		free(t->subs);
		free(t->scratch);
		t->slot = NULL;
		t->subs = NULL;
		t->scratch = NULL;
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < t->nslots; i++)
		t->slot[i].sub = t->subs + i * per;
	return 0;
}

void digest_set_blocks(struct digest_table *t, uint64_t idx, uint64_t hash, const uint64_t *subs)
{
	size_t clen = digest_chunk_len(t, idx);
	struct sub_slot *s;

	digest_set(t, idx, hash);
	/* An update of another chunk holds the cache: this chunk is then
	 * read at its first mirrored write, as without a seed. */
	if (pthread_mutex_trylock(&t->cache_lock) != 0)
		return;
	if (cache_init(t) == 0) {
		s = &t->slot[idx % t->nslots];
		size_t n = nblocks(clen);

		if (subs) {
			memcpy(s->sub, subs, n * sizeof(*subs));
		} else {
			/* Only the device's last block can be short. */
			for (size_t b = 0; b < n; b++)
				s->sub[b] = t->zero_bhash;
			if (idx == t->nchunks - 1)
				s->sub[n - 1] = t->zero_thash;
		}
		s->idx = idx;
		s->gen = t->gen[idx];
		s->valid = true;
	}
	pthread_mutex_unlock(&t->cache_lock);
}

/*
 * Chunk c (clen bytes at cstart) changed in [lo, hi) of it, to src (NULL:
 * zeros) if src covers that range: bring its block hashes up to date and
 * set its hash from them.
 */
static int update_chunk(struct digest_table *t, uint64_t c, size_t lo, size_t hi,
			const uint8_t *src, digest_read_fn read, void *arg)
{
	struct sub_slot *s = &t->slot[c % t->nslots];
	uint64_t cstart = c * t->chunk_size;
	size_t clen = digest_chunk_len(t, c);
	struct top top;
	int r;

	if (!s->valid || s->idx != c || s->gen != t->gen[c]) {
		/* Not cached: the whole chunk as the device holds it now,
		 * which includes this write. */
		s->valid = false;
		r = read(arg, t->scratch, clen, cstart);
		if (r < 0)
			return r;
		for (size_t b = 0; b < nblocks(clen); b++)
			s->sub[b] = block_hash((uint8_t *)t->scratch + b * DIGEST_BLOCK,
					       MIN((size_t)DIGEST_BLOCK, clen - b * DIGEST_BLOCK));
	} else {
		for (size_t b = lo / DIGEST_BLOCK; b <= (hi - 1) / DIGEST_BLOCK; b++) {
			size_t blo = b * DIGEST_BLOCK, bhi = MIN(blo + DIGEST_BLOCK, clen);

			if (lo <= blo && hi >= bhi) {
				s->sub[b] = block_hash(src ? src + (blo - lo) : NULL, bhi - blo);
				continue;
			}
			/* Written in part: the block as it is now. */
			r = read(arg, t->scratch, bhi - blo, cstart + blo);
			if (r < 0) {
				s->valid = false;
				return r;
			}
			s->sub[b] = block_hash(t->scratch, bhi - blo);
		}
	}
	top_begin(&top);
	for (size_t b = 0; b < nblocks(clen); b++)
		top_add(&top, s->sub[b]);
	t->hash[c] = top_end(&top);
	t->covered[c] = 1;
	s->idx = c;
	s->gen = ++t->gen[c];
	s->valid = true;
	return 0;
}

int digest_update(struct digest_table *t, uint64_t off, uint64_t len, const void *data,
		  digest_read_fn read, void *arg)
{
	uint64_t cs = t->chunk_size, end = off + len;
	int r;

	if (!len)
		return 0;
	pthread_mutex_lock(&t->cache_lock);
	r = cache_init(t);
	for (uint64_t c = off / cs; r == 0 && c <= (end - 1) / cs; c++) {
		uint64_t cstart = c * cs;
		size_t lo = (size_t)(MAX(off, cstart) - cstart);
		size_t hi = (size_t)(MIN(end, cstart + digest_chunk_len(t, c)) - cstart);
		const uint8_t *src = data ? (const uint8_t *)data + (cstart + lo - off) : NULL;

		r = update_chunk(t, c, lo, hi, src, read, arg);
	}
	pthread_mutex_unlock(&t->cache_lock);
	return r;
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
