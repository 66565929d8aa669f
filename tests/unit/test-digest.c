/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the per-chunk hash tables and device digests
 * (src/migrate/digest.c, definition in docs/wire-format.md "Digests"):
 * clipping of the last chunk, the cached zero hash against a real zero
 * buffer, which chunks the digest covers, independence from the order of
 * digest_set() calls, "last set wins", the documented worked example, and
 * digest_update() (a mirrored write's incremental hash) against hashing the
 * whole chunk again, with what it reads.
 *
 * Expected digests are recomputed here straight from the definition (XXH3-128
 * over { be64 index, be64 hash } in index order) with libxxhash, not through
 * the code under test.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/util.h"
#include "migrate/digest.h"

static struct digest_table *table_new(uint64_t size, uint32_t chunk)
{
	struct digest_table *t = digest_new(size, chunk);

	assert_non_null(t);
	return t;
}

static uint8_t *zeros_new(size_t len)
{
	uint8_t *p = calloc(1, len ? len : 1);

	assert_non_null(p);
	return p;
}

/* The digest of 'n' (index, hash) pairs, which must be in ascending index
 * order, computed from the definition. */
static void reference_digest(const uint64_t *idx, const uint64_t *hash, size_t n,
			     uint8_t out[DIGEST_LEN])
{
	uint8_t *in = malloc(n ? n * 16 : 1);
	XXH128_hash_t h;

	assert_non_null(in);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			assert_true(idx[i - 1] < idx[i]);
		put_be64(in + i * 16, idx[i]);
		put_be64(in + i * 16 + 8, hash[i]);
	}
	h = XXH3_128bits(in, n * 16);
	put_be64(out, h.high64);
	put_be64(out + 8, h.low64);
	free(in);
}

static void assert_digest(const uint8_t *got, const uint8_t *want)
{
	if (memcmp(got, want, DIGEST_LEN) != 0) {
		char g[2 * DIGEST_LEN + 1], w[2 * DIGEST_LEN + 1];

		for (int i = 0; i < DIGEST_LEN; i++) {
			static const char hex[] = "0123456789abcdef";

			g[2 * i] = hex[got[i] >> 4];
			g[2 * i + 1] = hex[got[i] & 15];
			w[2 * i] = hex[want[i] >> 4];
			w[2 * i + 1] = hex[want[i] & 15];
		}
		g[2 * DIGEST_LEN] = w[2 * DIGEST_LEN] = '\0';
		fail_msg("digest %s, want %s", g, w);
	}
}

static uint64_t mix(uint64_t v)
{
	v += 0x9E3779B97F4A7C15ull;
	v = (v ^ (v >> 30)) * 0xBF58476D1CE4E5B9ull;
	v = (v ^ (v >> 27)) * 0x94D049BB133111EBull;
	return v ^ (v >> 31);
}

/* ---- chunk lengths -------------------------------------------------------- */

static void test_chunk_len(void **state)
{
	static const struct {
		uint64_t size;
		uint32_t chunk;
		uint64_t idx;
		size_t want;
	} cases[] = {
		/* a partial last chunk */
		{ 3 * MiB + 4097, (uint32_t)MiB, 0, MiB },
		{ 3 * MiB + 4097, (uint32_t)MiB, 2, MiB },
		{ 3 * MiB + 4097, (uint32_t)MiB, 3, 4097 },
		/* a device that ends on a chunk boundary: the last chunk is whole */
		{ 4 * MiB, (uint32_t)MiB, 3, MiB },
		/* a device smaller than one chunk */
		{ 1000, 4096, 0, 1000 },
		/* a one-byte last chunk */
		{ 64 * KiB + 1, (uint32_t)(64 * KiB), 1, 1 },
		/* the largest chunk size */
		{ 16 * MiB + 512, (uint32_t)(16 * MiB), 0, 16 * MiB },
		{ 16 * MiB + 512, (uint32_t)(16 * MiB), 1, 512 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct digest_table *t = table_new(cases[i].size, cases[i].chunk);
		size_t got = digest_chunk_len(t, cases[i].idx);

		if (got != cases[i].want)
			fail_msg("size %llu chunk %u idx %llu: length %zu, want %zu",
				 (unsigned long long)cases[i].size, cases[i].chunk,
				 (unsigned long long)cases[i].idx, got, cases[i].want);
		digest_free(t);
	}
	digest_free(NULL);
}

/* ---- zero hash ------------------------------------------------------------ */

/* digest_zero_hash() for every chunk equals digest_hash() of that many real
 * zero bytes, whichever of the full and partial lengths is asked first. */
static void check_zero_hashes(uint64_t size, uint32_t chunk, bool last_first)
{
	struct digest_table *t = table_new(size, chunk);
	uint64_t n = div_round_up(size, chunk);
	uint8_t *zeros = zeros_new(chunk);

	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = last_first ? n - 1 - k : k;
		size_t len = digest_chunk_len(t, i);
		uint64_t want = digest_hash(zeros, len);

		if (digest_zero_hash(t, i) != want)
			fail_msg("size %llu chunk %u: zero hash of chunk %llu (%zu bytes) is "
				 "%016llx, want %016llx",
				 (unsigned long long)size, chunk, (unsigned long long)i, len,
				 (unsigned long long)digest_zero_hash(t, i),
				 (unsigned long long)want);
		/* Asking again gives the cached value. */
		assert_int_equal(digest_zero_hash(t, i), want);
	}
	free(zeros);
	digest_free(t);
}

static void test_zero_hash(void **state)
{
	(void)state;
	/* Full chunks only, smaller and larger than the internal 64 KiB block. */
	check_zero_hashes(8 * 4096, 4096, false);
	check_zero_hashes(4 * MiB, (uint32_t)MiB, false);
	/* A partial last chunk, asked last and asked first. */
	check_zero_hashes(3 * MiB + 4097, (uint32_t)MiB, false);
	check_zero_hashes(3 * MiB + 4097, (uint32_t)MiB, true);
	/* Partial lengths that are, and are not, multiples of 64 KiB. */
	check_zero_hashes(2 * MiB + 128 * KiB, (uint32_t)MiB, true);
	check_zero_hashes(MiB + 64 * KiB + 1, (uint32_t)MiB, false);
	/* Only a partial chunk. */
	check_zero_hashes(1000, 4096, false);
	/* The largest chunk size, 16 MiB, with a 4 MiB tail. */
	check_zero_hashes(20 * MiB, (uint32_t)(16 * MiB), true);
}

/* The zero hash is not XXH3 of an empty buffer, nor the same for both
 * lengths: the cache keeps the full and the partial length apart. */
static void test_zero_hash_lengths_differ(void **state)
{
	struct digest_table *t = table_new(MiB + 512 * KiB, (uint32_t)MiB);

	(void)state;
	assert_int_not_equal(digest_zero_hash(t, 0), digest_zero_hash(t, 1));
	assert_int_not_equal(digest_zero_hash(t, 1), digest_hash("", 0));
	digest_free(t);
}

/* ---- digest_final ------------------------------------------------------- */

static void test_final_empty(void **state)
{
	/* docs/wire-format.md: no chunk carried -> XXH3-128 of zero bytes. */
	static const uint8_t empty[DIGEST_LEN] = { 0x99, 0xaa, 0x06, 0xd3, 0x01, 0x47, 0x98, 0xd8,
						   0x60, 0x01, 0xc3, 0x24, 0x46, 0x8d, 0x49, 0x7f };
	struct digest_table *t = table_new(16 * MiB, (uint32_t)MiB);
	uint8_t out[DIGEST_LEN], ref[DIGEST_LEN];
	uint64_t chunks = 12345;

	(void)state;
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, 0);
	assert_digest(out, empty);
	reference_digest(NULL, NULL, 0, ref);
	assert_digest(out, ref);
	digest_free(t);
}

/* Only chunks given to digest_set() are covered, in index order. */
static void test_final_covers_set_chunks(void **state)
{
	static const uint64_t idx[] = { 0, 3, 7, 9 };
	struct digest_table *t = table_new(9 * MiB + 100, (uint32_t)MiB); /* 10 chunks */
	uint8_t out[DIGEST_LEN], ref[DIGEST_LEN];
	uint64_t hash[ARRAY_SIZE(idx)], chunks;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(idx); i++) {
		hash[i] = mix(idx[i]);
		digest_set(t, idx[i], hash[i]);
	}
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, ARRAY_SIZE(idx));
	reference_digest(idx, hash, ARRAY_SIZE(idx), ref);
	assert_digest(out, ref);

	/* Covering one more chunk changes the digest and the count. */
	digest_set(t, 5, 0);
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, ARRAY_SIZE(idx) + 1);
	if (memcmp(out, ref, DIGEST_LEN) == 0)
		fail_msg("covering chunk 5 did not change the digest");
	digest_free(t);
}

/* Every chunk covered, the zero ones with the zero hash: what a migration
 * without SHARED_BASE produces. */
static void test_final_all_chunks(void **state)
{
	const uint64_t size = 5 * 4096 + 100;
	struct digest_table *t = table_new(size, 4096);
	uint8_t *data = zeros_new(size);
	uint64_t idx[6], hash[6], chunks;
	uint8_t out[DIGEST_LEN], ref[DIGEST_LEN];

	(void)state;
	for (uint64_t i = 0; i < 6; i++) {
		size_t len = digest_chunk_len(t, i);

		idx[i] = i;
		if (i % 2) {
			memset(data + i * 4096, (int)(0x10 + i), len);
			hash[i] = digest_hash(data + i * 4096, len);
		} else {
			hash[i] = digest_zero_hash(t, i);
		}
		digest_set(t, i, hash[i]);
	}
	/* The zero hashes agree with hashing the real (zero) bytes. */
	for (uint64_t i = 0; i < 6; i += 2)
		assert_int_equal(hash[i], digest_hash(data + i * 4096, digest_chunk_len(t, i)));
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, 6);
	reference_digest(idx, hash, 6, ref);
	assert_digest(out, ref);
	free(data);
	digest_free(t);
}

/* The same (index, hash) pairs set in any order give the same digest. */
static void test_order_independent(void **state)
{
	enum { N = 64 };
	struct digest_table *asc = table_new(N * 4096, 4096);
	struct digest_table *desc = table_new(N * 4096, 4096);
	struct digest_table *shuf = table_new(N * 4096, 4096);
	uint8_t a[DIGEST_LEN], d[DIGEST_LEN], s[DIGEST_LEN], ref[DIGEST_LEN];
	uint64_t perm[N], idx[N], hash[N], ca, cd, cs, rng = 7;

	(void)state;
	for (uint64_t i = 0; i < N; i++) {
		idx[i] = perm[i] = i;
		hash[i] = mix(i * 31 + 5);
	}
	for (uint64_t i = N - 1; i > 0; i--) {
		uint64_t k = (rng = mix(rng)) % (i + 1), tmp = perm[i];

		perm[i] = perm[k];
		perm[k] = tmp;
	}
	for (uint64_t i = 0; i < N; i++) {
		digest_set(asc, i, hash[i]);
		digest_set(desc, N - 1 - i, hash[N - 1 - i]);
		digest_set(shuf, perm[i], hash[perm[i]]);
	}
	digest_final(asc, a, &ca);
	digest_final(desc, d, &cd);
	digest_final(shuf, s, &cs);
	assert_int_equal(ca, N);
	assert_int_equal(cd, N);
	assert_int_equal(cs, N);
	assert_digest(d, a);
	assert_digest(s, a);
	reference_digest(idx, hash, N, ref);
	assert_digest(a, ref);
	digest_free(asc);
	digest_free(desc);
	digest_free(shuf);
}

/* A chunk set several times counts once, with its last hash. */
static void test_last_set_wins(void **state)
{
	static const uint64_t idx[] = { 1, 2 };
	struct digest_table *t = table_new(4 * MiB, (uint32_t)MiB);
	struct digest_table *once = table_new(4 * MiB, (uint32_t)MiB);
	uint8_t out[DIGEST_LEN], want[DIGEST_LEN], ref[DIGEST_LEN];
	uint64_t hash[] = { 0x1111, 0x3333 }, chunks, chunks_once;

	(void)state;
	digest_set(t, 2, 0xdead);
	digest_set(t, 1, 0x1111);
	digest_set(t, 2, 0xbeef);
	digest_set(t, 2, 0x3333);
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, 2);

	digest_set(once, 1, 0x1111);
	digest_set(once, 2, 0x3333);
	digest_final(once, want, &chunks_once);
	assert_int_equal(chunks_once, 2);
	assert_digest(out, want);
	reference_digest(idx, hash, 2, ref);
	assert_digest(out, ref);

	/* Setting a chunk back to its zero hash after data also just replaces. */
	digest_set(t, 2, digest_zero_hash(t, 2));
	hash[1] = digest_zero_hash(t, 2);
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, 2);
	reference_digest(idx, hash, 2, ref);
	assert_digest(out, ref);
	digest_free(t);
	digest_free(once);
}

/* ---- the worked example in docs/wire-format.md ---------------------------- */

static void test_worked_example(void **state)
{
	static const uint8_t doc_input[32] = {
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xcf, 0xf8, 0x4b,
		0x13, 0x62, 0x99, 0x85, 0x5c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x01, 0xef, 0xea, 0xd7, 0xeb, 0x4c, 0xa5, 0x96, 0x0b,
	};
	static const uint8_t doc_digest[DIGEST_LEN] = { 0xe0, 0xf5, 0x34, 0x96, 0xf4, 0x08,
							0x8e, 0x76, 0x22, 0xd5, 0xea, 0x72,
							0x26, 0x77, 0x6b, 0x2c };
	struct digest_table *t = table_new(MiB + 512 * KiB, (uint32_t)MiB);
	uint8_t *a5 = malloc(MiB), *zeros = zeros_new(512 * KiB);
	uint8_t out[DIGEST_LEN], direct[DIGEST_LEN];
	uint64_t h0, h1, chunks;
	XXH128_hash_t x;

	(void)state;
	assert_non_null(a5);
	memset(a5, 0xa5, MiB);
	assert_int_equal(digest_chunk_len(t, 0), MiB);
	assert_int_equal(digest_chunk_len(t, 1), 512 * KiB);

	h0 = digest_hash(a5, digest_chunk_len(t, 0));
	h1 = digest_zero_hash(t, 1);
	assert_int_equal(h0, 0xcff84b136299855cull);
	assert_int_equal(h1, 0xefead7eb4ca5960bull);
	assert_int_equal(h1, digest_hash(zeros, 512 * KiB));

	/* The documented input bytes hash to the documented digest ... */
	x = XXH3_128bits(doc_input, sizeof(doc_input));
	put_be64(direct, x.high64);
	put_be64(direct + 8, x.low64);
	assert_digest(direct, doc_digest);

	/* ... and so does the table, whichever chunk is set first. */
	digest_set(t, 1, h1);
	digest_set(t, 0, h0);
	digest_final(t, out, &chunks);
	assert_int_equal(chunks, 2);
	assert_digest(out, doc_digest);

	free(a5);
	free(zeros);
	digest_free(t);
}

/* ---- digest_update -------------------------------------------------------- */

/* A device in memory that counts what digest_update() reads of it. */
struct memdev {
	uint8_t *p;
	uint64_t size;
	unsigned reads;
	uint64_t bytes;
	int fail; /* a negative errno: every read fails */
};

static int memdev_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct memdev *m = arg;

	assert_true(off + len <= m->size);
	if (m->fail)
		return m->fail;
	memcpy(buf, m->p + off, len);
	m->reads++;
	m->bytes += len;
	return 0;
}

/* Write to the device, then update the table as the engines do. */
static void dev_write(struct digest_table *t, struct memdev *m, uint64_t off, uint64_t len,
		      const uint8_t *data)
{
	if (data)
		memcpy(m->p + off, data, len);
	else
		memset(m->p + off, 0, len);
	assert_int_equal(digest_update(t, off, len, data, memdev_read, m), 0);
}

/* Every chunk's hash in t is the hash of the device's bytes. */
static void assert_table_matches(struct digest_table *t, struct memdev *m, uint32_t chunk)
{
	for (uint64_t c = 0; c < digest_nchunks(t); c++)
		assert_int_equal(digest_get(t, c),
				 digest_hash(m->p + c * chunk, digest_chunk_len(t, c)));
}

static void test_update(void **state)
{
	/* 3 chunks of 64 KiB and a last one of 5000 bytes (a partial block). */
	const uint32_t chunk = 64 * KiB;
	struct memdev m = { .size = 3 * 64 * KiB + 5000 };
	struct digest_table *t = table_new(m.size, chunk);
	uint8_t data[3 * DIGEST_BLOCK + 100];
	uint64_t seed = 7;

	(void)state;
	m.p = malloc(m.size);
	assert_non_null(m.p);
	for (uint64_t i = 0; i < m.size; i++)
		m.p[i] = (uint8_t)mix(i);
	for (uint64_t c = 0; c < digest_nchunks(t); c++)
		digest_set(t, c, digest_hash(m.p + c * chunk, digest_chunk_len(t, c)));
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)mix(1000 + i);

	/* The first write to a chunk reads it whole, once. */
	dev_write(t, &m, 8192, DIGEST_BLOCK, data);
	assert_int_equal(m.reads, 1);
	assert_int_equal(m.bytes, chunk);
	assert_table_matches(t, &m, chunk);

	/* Aligned whole blocks after that: no read at all. */
	m.reads = 0;
	dev_write(t, &m, 16384, 2 * DIGEST_BLOCK, data + 1);
	dev_write(t, &m, 8192, DIGEST_BLOCK, NULL); /* zeros */
	assert_int_equal(m.reads, 0);
	assert_table_matches(t, &m, chunk);

	/* A write that covers blocks in part reads those blocks only. */
	dev_write(t, &m, 4096 + 100, 50, data + 2);
	assert_int_equal(m.reads, 1);
	assert_int_equal(m.bytes, chunk + DIGEST_BLOCK);
	assert_table_matches(t, &m, chunk);

	/* Across a chunk boundary: chunk 1 is read whole (its first time). */
	m.reads = 0;
	dev_write(t, &m, chunk - 4096, sizeof(data), data);
	assert_table_matches(t, &m, chunk);
	assert_int_equal(m.reads, 1); /* chunk 1 whole; chunk 0 is cached, block 15 covered */

	/* Into the short last chunk, up to the device's end. */
	dev_write(t, &m, m.size - 5000, 5000, data);
	dev_write(t, &m, m.size - 700, 700, data + 3);
	dev_write(t, &m, m.size - 904 - 4096, 4096, NULL);
	assert_table_matches(t, &m, chunk);

	/* A digest_set() from outside (a chunk record) drops the cache: the
	 * next write reads the chunk again, so a stale cache never wins. */
	memset(m.p, 0x5a, chunk);
	digest_set(t, 0, digest_hash(m.p, chunk));
	m.reads = 0;
	m.bytes = 0;
	dev_write(t, &m, 0, DIGEST_BLOCK, data);
	assert_int_equal(m.bytes, chunk);
	assert_table_matches(t, &m, chunk);

	/* Random writes, aligned or not, data or zeros. */
	for (int i = 0; i < 2000; i++) {
		uint64_t len, off;

		seed = mix(seed);
		len = 1 + seed % sizeof(data);
		off = mix(seed + 1) % (m.size - len + 1);
		if (seed % 3 == 0)
			off &= ~(uint64_t)(DIGEST_BLOCK - 1);
		dev_write(t, &m, off, len, seed % 5 == 0 ? NULL : data);
	}
	assert_table_matches(t, &m, chunk);

	/* A failed read: the error, and the chunk's hash is left for the
	 * caller to deal with (it marks the chunk dirty); the cache entry is
	 * dropped, so the next update reads the chunk whole again. */
	m.fail = -EIO;
	assert_int_equal(digest_update(t, 100, 10, data, memdev_read, &m), -EIO);
	m.fail = 0;
	memcpy(m.p + 100, data, 10);
	m.bytes = 0;
	assert_int_equal(digest_update(t, 100, 10, data, memdev_read, &m), 0);
	assert_int_equal(m.bytes, chunk);
	assert_table_matches(t, &m, chunk);

	free(m.p);
	digest_free(t);
}

/* digest_hash_blocks() is digest_hash(), with the block hashes on the side;
 * digest_set_blocks() keeps them, so the chunk's next update reads
 * nothing whole (a chunk of zeros with subs NULL too), and the hashes it
 * then sets are the device's. */
static void test_set_blocks(void **state)
{
	const uint32_t chunk = 64 * KiB;
	struct memdev m = { .size = 2 * 64 * KiB + 5000 };
	struct digest_table *t = table_new(m.size, chunk);
	uint64_t subs[64 * KiB / DIGEST_BLOCK];
	uint8_t data[DIGEST_BLOCK];

	(void)state;
	m.p = calloc(1, m.size);
	assert_non_null(m.p);
	for (uint64_t i = 0; i < chunk; i++)
		m.p[i] = (uint8_t)mix(i);
	for (uint64_t i = 2 * chunk; i < m.size; i++)
		m.p[i] = (uint8_t)mix(i);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)mix(5000 + i);

	/* Chunk 0 as data, chunk 1 as zeros, chunk 2 short (a partial block). */
	assert_int_equal(digest_hash_blocks(m.p, chunk, subs), digest_hash(m.p, chunk));
	digest_set_blocks(t, 0, digest_hash(m.p, chunk), subs);
	digest_set_blocks(t, 1, digest_zero_hash(t, 1), NULL);
	assert_int_equal(digest_hash_blocks(m.p + 2 * chunk, 5000, subs),
			 digest_hash(m.p + 2 * chunk, 5000));
	digest_set_blocks(t, 2, digest_hash(m.p + 2 * chunk, 5000), subs);
	assert_table_matches(t, &m, chunk);

	/* Whole blocks of each: nothing read. */
	dev_write(t, &m, 4 * DIGEST_BLOCK, DIGEST_BLOCK, data);
	dev_write(t, &m, chunk + 2 * DIGEST_BLOCK, DIGEST_BLOCK, data);
	dev_write(t, &m, 2 * chunk, DIGEST_BLOCK, data);
	assert_int_equal(m.reads, 0);
	assert_table_matches(t, &m, chunk);

	/* Zeros seeded without block hashes, the short last chunk too (its
	 * last block is 904 bytes). */
	memset(m.p + chunk, 0, m.size - chunk);
	digest_set_blocks(t, 1, digest_zero_hash(t, 1), NULL);
	digest_set_blocks(t, 2, digest_zero_hash(t, 2), NULL);
	m.reads = 0;
	dev_write(t, &m, 2 * chunk, DIGEST_BLOCK, data);
	dev_write(t, &m, chunk + chunk - DIGEST_BLOCK, DIGEST_BLOCK, data);
	assert_int_equal(m.reads, 0);
	assert_table_matches(t, &m, chunk);

	/* Set again without the blocks: the seed is stale, the chunk read. */
	digest_set(t, 0, digest_hash(m.p, chunk));
	m.reads = 0;
	m.bytes = 0;
	dev_write(t, &m, 0, DIGEST_BLOCK, data);
	assert_int_equal(m.reads, 1);
	assert_int_equal(m.bytes, chunk);
	assert_table_matches(t, &m, chunk);
	free(m.p);
	digest_free(t);
}

/* A device read that waits, inside digest_update(), until told to go on. */
struct gated {
	struct memdev m;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool inside, go;
};

static int gated_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct gated *g = arg;

	pthread_mutex_lock(&g->lock);
	g->inside = true;
	pthread_cond_broadcast(&g->cond);
	while (!g->go)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	return memdev_read(&g->m, buf, len, off);
}

struct upd {
	struct digest_table *t;
	struct gated *g;
	uint8_t data[DIGEST_BLOCK];
	int r;
};

static void *update_main(void *arg)
{
	struct upd *u = arg;

	u->r = digest_update(u->t, 64 * KiB, DIGEST_BLOCK, u->data, gated_read, u->g);
	return NULL;
}

/* While an update of another chunk holds the cache (here: waits in its
 * read), digest_set_blocks() does not wait for it: the hash is set, the
 * blocks are not kept, and that chunk's next update reads it. */
static void test_set_blocks_while_updating(void **state)
{
	const uint32_t chunk = 64 * KiB;
	struct gated g = { .m = { .size = 2 * 64 * KiB } };
	struct digest_table *t = table_new(g.m.size, chunk);
	uint64_t subs[64 * KiB / DIGEST_BLOCK];
	struct upd u = { .t = t, .g = &g };
	pthread_t th;

	(void)state;
	g.m.p = calloc(1, g.m.size);
	assert_non_null(g.m.p);
	pthread_mutex_init(&g.lock, NULL);
	pthread_cond_init(&g.cond, NULL);
	for (uint64_t i = 0; i < g.m.size; i++)
		g.m.p[i] = (uint8_t)mix(i);
	for (size_t i = 0; i < sizeof(u.data); i++)
		u.data[i] = (uint8_t)mix(9000 + i);
	digest_set(t, 1, digest_hash(g.m.p + chunk, chunk));
	memcpy(g.m.p + chunk, u.data, sizeof(u.data));
	assert_int_equal(pthread_create(&th, NULL, update_main, &u), 0);
	pthread_mutex_lock(&g.lock);
	while (!g.inside)
		pthread_cond_wait(&g.cond, &g.lock);
	pthread_mutex_unlock(&g.lock);

	digest_set_blocks(t, 0, digest_hash_blocks(g.m.p, chunk, subs), subs);
	assert_int_equal(digest_get(t, 0), digest_hash(g.m.p, chunk));

	pthread_mutex_lock(&g.lock);
	g.go = true;
	pthread_cond_broadcast(&g.cond);
	pthread_mutex_unlock(&g.lock);
	pthread_join(th, NULL);
	assert_int_equal(u.r, 0);
	g.m.reads = 0;
	g.m.bytes = 0;
	dev_write(t, &g.m, 0, DIGEST_BLOCK, u.data);
	assert_int_equal(g.m.bytes, chunk); /* not seeded: read whole */
	assert_table_matches(t, &g.m, chunk);
	pthread_mutex_destroy(&g.lock);
	pthread_cond_destroy(&g.cond);
	free(g.m.p);
	digest_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunk_len),
		cmocka_unit_test(test_zero_hash),
		cmocka_unit_test(test_zero_hash_lengths_differ),
		cmocka_unit_test(test_final_empty),
		cmocka_unit_test(test_final_covers_set_chunks),
		cmocka_unit_test(test_final_all_chunks),
		cmocka_unit_test(test_order_independent),
		cmocka_unit_test(test_last_set_wins),
		cmocka_unit_test(test_worked_example),
		cmocka_unit_test(test_update),
		cmocka_unit_test(test_set_blocks),
		cmocka_unit_test(test_set_blocks_while_updating),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
