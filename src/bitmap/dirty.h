/* SPDX-License-Identifier: MIT */
/*
 * Dirty bitmap: one bit per chunk of a device (chunk = a power-of-two
 * granularity).  The block layer's tracking filter marks bits from I/O
 * threads while the migration engine scans and clears them, so every
 * operation is lock-free on atomic 64-bit words and safe to call from any
 * thread.  The dirty count is kept exact: a bit's 0->1 and 1->0 transitions
 * each adjust it once.
 *
 * Ordering contract (DESIGN.md rule 1): the writer marks after its write has
 * reached the backend; the engine clears a bit (dirty_test_and_clear) before
 * issuing the read that will send the chunk.  Both use sequentially
 * consistent atomics, so a write that lands after the clear is seen as dirty
 * again.
 */
#ifndef BLKMIG_BITMAP_DIRTY_H
#define BLKMIG_BITMAP_DIRTY_H

#include <stdbool.h>
#include <stdint.h>

struct dirty;

/*
 * A bitmap covering a device of 'size' bytes at 'granularity' bytes per bit
 * (a power of two, >= 512).  The last chunk may be partial.  All bits start
 * clear.  Returns NULL with errno EINVAL or ENOMEM.  Caller owns the result.
 */
struct dirty *dirty_new(uint64_t size, uint32_t granularity);
void dirty_free(struct dirty *d);

uint64_t dirty_size(const struct dirty *d);	   /* device size in bytes */
uint32_t dirty_granularity(const struct dirty *d); /* bytes per bit */
uint64_t dirty_nchunks(const struct dirty *d);	   /* bits in the map */

/* Mark every chunk overlapping [off, off + len); len 0 marks nothing.
 * The range is clipped to the device size. */
void dirty_mark(struct dirty *d, uint64_t off, uint64_t len);
void dirty_mark_all(struct dirty *d);
void dirty_clear_all(struct dirty *d);

bool dirty_test(const struct dirty *d, uint64_t chunk);
/* Atomically clear the bit; true if it was set. */
bool dirty_test_and_clear(struct dirty *d, uint64_t chunk);

/* Index of the first set bit at or after 'from', or -1 when none. */
int64_t dirty_next(const struct dirty *d, uint64_t from);

/* Number of set bits, and the bytes they cover (the partial last chunk
 * counts only its real length). */
uint64_t dirty_count(const struct dirty *d);
uint64_t dirty_bytes(const struct dirty *d);

/*
 * Whole-map operations between two maps of the same geometry (size and
 * granularity; -EINVAL, changing nothing, otherwise).  dirty_move() sets
 * in dst every bit set in src and clears it in src, a word at a time (a
 * bit set in src meanwhile stays for the next move); dirty_copy() makes
 * dst's bits src's, reading each of src's words once.  Both keep the
 * counts exact.
 */
int dirty_move(struct dirty *dst, struct dirty *src);
int dirty_copy(struct dirty *dst, const struct dirty *src);

/*
 * The bits as bytes, for saving (state/state.c): chunk i is bit (i % 8) of
 * byte i / 8, dirty_raw_len() bytes, bits past the last chunk zero.
 * dirty_export() reads each word once atomically, so bits that change
 * meanwhile may or may not be included.  dirty_import() replaces every bit
 * and adjusts the count; it returns -EINVAL, changing nothing, when a bit
 * past the last chunk is set.
 */
uint64_t dirty_raw_len(const struct dirty *d);
void dirty_export(const struct dirty *d, uint8_t *out);
int dirty_import(struct dirty *d, const uint8_t *in);

#endif
