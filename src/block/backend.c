/* SPDX-License-Identifier: MIT */
/*
 * Checked wrappers around the block ops table; see backend.h.  This is the
 * only way engines reach a backend: it rejects bad ranges and writes to
 * read-only devices here, once, so the ops can assume valid arguments.
 *
 * A range whose end overflows 64 bits is -EINVAL (nonsense arguments); a
 * well-formed range that extends past the device end is -ERANGE.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>

#include "common/error.h"
#include "common/util.h"

static int check_range(const struct blk *b, const char *what, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (ckd_add_u64(&end, off, len))
		return err_set(EINVAL,
			       "%s: %s at offset %" PRIu64 " length %" PRIu64
			       ": range overflows (device size %" PRIu64 ")",
			       b->ops->name, what, off, len, b->size);
	if (!range_inside(off, len, b->size))
		return err_set(ERANGE,
			       "%s: %s at offset %" PRIu64 " length %" PRIu64
			       ": beyond end of device (size %" PRIu64 ")",
			       b->ops->name, what, off, len, b->size);
	return 0;
}

static int check_write(const struct blk *b, const char *what, uint64_t off, uint64_t len)
{
	if (b->readonly)
		return err_set(
		    EROFS, "%s: %s at offset %" PRIu64 " length %" PRIu64 ": device is read-only",
		    b->ops->name, what, off, len);
	return check_range(b, what, off, len);
}

int blk_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	int r;

	assert(b && b->ops);
	if (len == 0)
		return 0;
	r = check_range(b, "read", off, len);
	if (r < 0)
		return r;
	return b->ops->pread(b, buf, len, off);
}

int blk_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	int r;

	assert(b && b->ops);
	if (len == 0)
		return 0;
	r = check_write(b, "write", off, len);
	if (r < 0)
		return r;
	return b->ops->pwrite(b, buf, len, off);
}

/* Flushing a read-only device is harmless, so it is passed down too. */
int blk_flush(struct blk *b)
{
	assert(b && b->ops);
	if (!b->ops->flush)
		return 0;
	return b->ops->flush(b);
}

bool blk_is_hole(struct blk *b, uint64_t off, uint64_t len)
{
	assert(b && b->ops);
	if (b->ops->is_hole)
		return len == 0 ||
		       (range_inside(off, len, b->size) && b->ops->is_hole(b, off, len));
	while (len > 0) {
		uint64_t pnum = 0;
		bool alloc = true;

		if (blk_block_status(b, off, len, &pnum, &alloc) < 0 || alloc || pnum == 0)
			return false;
		off += pnum;
		len -= pnum < len ? pnum : len;
	}
	return true;
}

int blk_writeback(struct blk *b, uint64_t off, uint64_t len)
{
	assert(b && b->ops);
	if (!b->ops->writeback || len == 0)
		return 0;
	if (!range_inside(off, len, b->size))
		return err_set(ERANGE,
			       "writeback at offset %llu length %llu: beyond end of device "
			       "(size %llu)",
			       (unsigned long long)off, (unsigned long long)len,
			       (unsigned long long)b->size);
	return b->ops->writeback(b, off, len);
}

int blk_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	int r;

	assert(b && b->ops);
	if (flags & ~BLK_ZERO_MAY_TRIM)
		return err_set(EINVAL, "%s: zero: unknown flags 0x%x", b->ops->name, flags);
	if (len == 0)
		return 0;
	r = check_write(b, "zero", off, len);
	if (r < 0)
		return r;
	return b->ops->zero(b, off, len, flags);
}

int blk_trim(struct blk *b, uint64_t off, uint64_t len)
{
	int r;

	assert(b && b->ops);
	if (len == 0)
		return 0;
	r = check_write(b, "trim", off, len);
	if (r < 0)
		return r;
	if (!b->ops->trim)
		return 0;
	return b->ops->trim(b, off, len);
}

int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, bool *allocated)
{
	int r;

	assert(b && b->ops);
	if (len == 0) {
		*pnum = 0;
		*allocated = true;
		return 0;
	}
	r = check_range(b, "block status", off, len);
	if (r < 0)
		return r;
	if (!b->ops->block_status) {
		*pnum = len;
		*allocated = true;
		return 0;
	}
	r = b->ops->block_status(b, off, len, pnum, allocated);
	assert(r < 0 || (*pnum >= 1 && *pnum <= len));
	return r;
}

void blk_close(struct blk *b)
{
	while (b) {
		struct blk *lower = b->lower;

		b->ops->close(b);
		b = lower;
	}
}
