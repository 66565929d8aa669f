/* SPDX-License-Identifier: MIT */
/*
 * Device digests for the native format's completion check (definition in
 * docs/wire-format.md): each chunk a migration carries gets a hash of its
 * bytes clipped to the device end, in two levels: XXH3-64 of each 4 KiB
 * block, then XXH3-64 of those block hashes (be64 each); the device digest
 * is XXH3-128 over { be64 index, be64 hash } of every carried chunk in
 * index order.
 *
 * The two levels are what let a small mirrored write update its chunk's
 * hash without reading the chunk (digest_update()): the table keeps the
 * block hashes of recently written chunks in a bounded cache.
 *
 * Both ends keep a table of the last hash per chunk: the source records what
 * it last sent, the destination what it last applied.  Since every write
 * after a chunk's last send leaves it dirty, and the final phase sends every
 * dirty chunk, the source's table describes the device at switch-over.
 *
 * Not thread-safe: one engine thread owns a table, except that
 * digest_set(), digest_set_blocks(), digest_get() and digest_zero_hash()
 * of different chunks may run on several threads at once, and beside
 * digest_update() of yet other chunks (the cache they share has a lock of
 * its own, which digest_update() holds: its calls are taken in turn).
 */
#ifndef BLKMIG_MIGRATE_DIGEST_H
#define BLKMIG_MIGRATE_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_LEN 16

struct digest_table;

/* NULL on ENOMEM. */
struct digest_table *digest_new(uint64_t dev_size, uint32_t chunk_size);
void digest_free(struct digest_table *t);

/* Bytes of chunk 'idx' inside the device (the last one may be short). */
size_t digest_chunk_len(const struct digest_table *t, uint64_t idx);

#define DIGEST_BLOCK 4096u

/* The chunk hash of len bytes (two levels, above).  Thread-safe. */
uint64_t digest_hash(const void *buf, size_t len);
/* Hash of chunk idx when all zeros (computed when the table is made). */
uint64_t digest_zero_hash(struct digest_table *t, uint64_t idx);

/* The chunk hash, as digest_hash(), and the block hashes it is made of
 * in subs[] (one per DIGEST_BLOCK of len, the last one short).  Thread-safe. */
uint64_t digest_hash_blocks(const void *buf, size_t len, uint64_t *subs);

void digest_set(struct digest_table *t, uint64_t idx, uint64_t hash);
/*
 * digest_set(), and the chunk's block hashes (subs, from
 * digest_hash_blocks(); NULL: a chunk of zeros) kept in the cache, so that
 * the chunk's first mirrored write after this reads nothing of it.  The
 * cache is only tried: while a digest_update() holds it, the hash is set
 * all the same and the block hashes are not kept.
 */
void digest_set_blocks(struct digest_table *t, uint64_t idx, uint64_t hash, const uint64_t *subs);
/* The hash last set for idx (0 if never set). */
uint64_t digest_get(const struct digest_table *t, uint64_t idx);
uint64_t digest_nchunks(const struct digest_table *t);

/*
 * Reads len bytes at byte offset off of the device into buf (the chunk
 * or a block of it, as it is now): 0 or a negative errno.
 */
typedef int (*digest_read_fn)(void *arg, void *buf, size_t len, uint64_t off);

/*
 * A write of len bytes at device offset off has reached the device (data
 * NULL: it wrote zeros): set the hash of every chunk it touched to what
 * the device now holds, from the written bytes and the cached block hashes
 * of the chunk.  Reads only what it cannot know: a block the write covers
 * in part, or the whole chunk the first time (or when its cached hashes
 * were dropped by a digest_set() or to make room).  0, or the read's error
 * (the chunk's hash is then unchanged and its cache entry dropped).
 */
int digest_update(struct digest_table *t, uint64_t off, uint64_t len, const void *data,
		  digest_read_fn read, void *arg);

/*
 * A chunk's strong digest, as SUMS carries it (delta, resume, verify):
 * XXH3-128 of its bytes clipped to the device end, high 64 bits first.
 * Thread-safe.  digest_zero_sum() is the same for len zero bytes.
 */
#define DIGEST_SUM_LEN 16
void digest_sum(const void *buf, size_t len, uint8_t out[DIGEST_SUM_LEN]);
void digest_zero_sum(size_t len, uint8_t out[DIGEST_SUM_LEN]);

/* The device digest and the number of chunks it covers. */
void digest_final(const struct digest_table *t, uint8_t out[DIGEST_LEN], uint64_t *chunks);

#endif
