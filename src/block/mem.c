/* SPDX-License-Identifier: MIT */
/*
 * In-memory backend for tests; see blk_mem_open() in backend.h.
 *
 * The device is an array of pointers to 64 KiB pages, allocated on first
 * write; a NULL page reads as zeros and is reported as a hole.  One mutex
 * serialises every op, which is plenty for tests.
 *
 * Zeroing: with BLK_ZERO_MAY_TRIM (and for trim) pages wholly inside the
 * range are freed and the covered part of partial pages is cleared.  Without
 * MAY_TRIM the caller asked for the range to stay allocated, so every page
 * it touches is allocated (if needed) and cleared: block_status then reports
 * it as data, like a file after FALLOC_FL_ZERO_RANGE.
 *
 * Fault injection makes the nth next call of one op fail before it looks at
 * the data, so an injected failure never changes the contents.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"

#define MEM_PAGE_SIZE (64 * 1024)
#define MEM_NOPS      (BLK_MEM_TRIM + 1)

struct mem_fault {
	unsigned nth; /* calls until the failure (1 = next); 0 = none pending */
	int err;
};

struct mem_blk {
	struct blk blk;
	pthread_mutex_t lock; /* protects everything below */
	uint64_t npages;
	uint8_t **pages; /* NULL = never written (or freed): zeros */
	struct mem_fault faults[MEM_NOPS];
};

static const struct blk_ops mem_ops;

static const char *const mem_op_name[MEM_NOPS] = {
	[BLK_MEM_READ] = "read", [BLK_MEM_WRITE] = "write", [BLK_MEM_FLUSH] = "flush",
	[BLK_MEM_ZERO] = "zero", [BLK_MEM_TRIM] = "trim",
};

static struct mem_blk *to_mem(struct blk *b)
{
	assert(b->ops == &mem_ops);
	return (struct mem_blk *)b;
}

/* Count down a pending fault; -err when this call is the one. */
static int fault_locked(struct mem_blk *m, enum blk_mem_op op)
{
	struct mem_fault *f = &m->faults[op];

	if (f->nth == 0 || --f->nth > 0)
		return 0;
	return err_set(f->err, "mem: injected %s failure", mem_op_name[op]);
}

/* Allocate every page overlapping [off, off + len); nothing is written. */
static int alloc_pages_locked(struct mem_blk *m, uint64_t off, uint64_t len)
{
	uint64_t p, last = (off + len - 1) / MEM_PAGE_SIZE;

	for (p = off / MEM_PAGE_SIZE; p <= last; p++) {
		if (m->pages[p])
			continue;
		m->pages[p] = calloc(1, MEM_PAGE_SIZE);
		if (!m->pages[p])
			return err_set(ENOMEM, "mem: out of memory for page at offset %" PRIu64,
				       p * MEM_PAGE_SIZE);
	}
	return 0;
}

/*
 * Clear [off, off + len).  With free_whole, pages entirely inside the range
 * are released (the partial last page counts as whole when the range runs
 * to the device end); otherwise the caller has allocated every page.
 */
static void clear_locked(struct mem_blk *m, uint64_t off, uint64_t len, bool free_whole)
{
	while (len > 0) {
		uint64_t p = off / MEM_PAGE_SIZE;
		size_t in = (size_t)(off % MEM_PAGE_SIZE);
		size_t n = (size_t)MIN(len, (uint64_t)(MEM_PAGE_SIZE - in));
		bool whole = in == 0 && (n == MEM_PAGE_SIZE || off + n == m->blk.size);

		if (free_whole && whole) {
			free(m->pages[p]);
			m->pages[p] = NULL;
		} else if (m->pages[p]) {
			memset(m->pages[p] + in, 0, n);
		}
		off += n;
		len -= n;
	}
}

static int mem_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	struct mem_blk *m = to_mem(b);
	uint8_t *dst = buf;
	int r;

	pthread_mutex_lock(&m->lock);
	r = fault_locked(m, BLK_MEM_READ);
	while (r == 0 && len > 0) {
		uint64_t p = off / MEM_PAGE_SIZE;
		size_t in = (size_t)(off % MEM_PAGE_SIZE);
		size_t n = MIN(len, (size_t)(MEM_PAGE_SIZE - in));

		if (m->pages[p])
			memcpy(dst, m->pages[p] + in, n);
		else
			memset(dst, 0, n);
		dst += n;
		off += n;
		len -= n;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct mem_blk *m = to_mem(b);
	const uint8_t *src = buf;
	int r;

	pthread_mutex_lock(&m->lock);
	r = fault_locked(m, BLK_MEM_WRITE);
	if (r == 0)
		/* All pages first, so running out of memory writes nothing. */
		r = alloc_pages_locked(m, off, len);
	while (r == 0 && len > 0) {
		uint64_t p = off / MEM_PAGE_SIZE;
		size_t in = (size_t)(off % MEM_PAGE_SIZE);
		size_t n = MIN(len, (size_t)(MEM_PAGE_SIZE - in));

		memcpy(m->pages[p] + in, src, n);
		src += n;
		off += n;
		len -= n;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_flush(struct blk *b)
{
	struct mem_blk *m = to_mem(b);
	int r;

	pthread_mutex_lock(&m->lock);
	r = fault_locked(m, BLK_MEM_FLUSH);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct mem_blk *m = to_mem(b);
	bool may_trim = flags & BLK_ZERO_MAY_TRIM;
	int r;

	pthread_mutex_lock(&m->lock);
	r = fault_locked(m, BLK_MEM_ZERO);
	if (r == 0 && !may_trim)
		r = alloc_pages_locked(m, off, len);
	if (r == 0)
		clear_locked(m, off, len, may_trim);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_trim(struct blk *b, uint64_t off, uint64_t len)
{
	struct mem_blk *m = to_mem(b);
	int r;

	pthread_mutex_lock(&m->lock);
	r = fault_locked(m, BLK_MEM_TRIM);
	if (r == 0)
		clear_locked(m, off, len, true);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int mem_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			    bool *allocated)
{
	struct mem_blk *m = to_mem(b);
	uint64_t end = off + len;
	uint64_t p = off / MEM_PAGE_SIZE;
	uint64_t run_end;
	bool alloc;

	pthread_mutex_lock(&m->lock);
	alloc = m->pages[p] != NULL;
	for (p++; p < m->npages && p * MEM_PAGE_SIZE < end; p++)
		if ((m->pages[p] != NULL) != alloc)
			break;
	pthread_mutex_unlock(&m->lock);
	run_end = MIN(p * MEM_PAGE_SIZE, end);
	*pnum = run_end - off;
	*allocated = alloc;
	return 0;
}

static void mem_close(struct blk *b)
{
	struct mem_blk *m = to_mem(b);
	uint64_t p;

	for (p = 0; p < m->npages; p++)
		free(m->pages[p]);
	free(m->pages);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int blk_mem_open(uint64_t size, struct blk **out)
{
	struct mem_blk *m;
	uint64_t npages = div_round_up(size, MEM_PAGE_SIZE);
	int r;

	if (npages > SIZE_MAX / sizeof(*m->pages))
		return err_set(ENOMEM, "mem: device size %" PRIu64 " too large", size);
	m = calloc(1, sizeof(*m));
	if (!m)
		return err_set(ENOMEM, "mem: out of memory");
	m->npages = npages;
	/* At least one slot, so a 0-byte device still has a valid array. */
	m->pages = calloc(npages ? (size_t)npages : 1, sizeof(*m->pages));
	if (!m->pages) {
		r = err_set(ENOMEM, "mem: out of memory for %" PRIu64 " page pointers", npages);
		goto err_free_m;
	}
	r = pthread_mutex_init(&m->lock, NULL);
	if (r) {
		r = err_set(r, "mem: pthread_mutex_init failed");
		goto err_free_pages;
	}
	m->blk.ops = &mem_ops;
	m->blk.lower = NULL;
	m->blk.size = size;
	m->blk.readonly = false;
	*out = &m->blk;
	return 0;

err_free_pages:
	free(m->pages);
err_free_m:
	free(m);
	return r;
}

void blk_mem_inject(struct blk *b, enum blk_mem_op op, unsigned nth, int err)
{
	struct mem_blk *m = to_mem(b);

	assert((unsigned)op < MEM_NOPS);
	assert(nth == 0 || err > 0);
	pthread_mutex_lock(&m->lock);
	m->faults[op].nth = nth;
	m->faults[op].err = err;
	pthread_mutex_unlock(&m->lock);
}

static const struct blk_ops mem_ops = {
	.name = "mem",
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.flush = mem_flush,
	.zero = mem_zero,
	.trim = mem_trim,
	.block_status = mem_block_status,
	.close = mem_close,
};
