/* SPDX-License-Identifier: MIT */
/*
 * Raw file or block-device backend; see blk_file_open() in backend.h.  All
 * I/O is positional, so the backend needs no lock.
 *
 * Direct I/O (BLK_OPEN_DIRECT): a second descriptor with O_DIRECT, reopened
 * from the first, carries every read and write whose buffer, offset and
 * length are aligned to f->align; anything else (an unaligned buffer, the
 * partial last block of an odd-sized device) goes through the buffered
 * descriptor.  Both name one inode, so fdatasync on either covers both, and
 * the kernel keeps them coherent (a direct read or write first writes back
 * and drops the page-cache pages of its range).  Where O_DIRECT is refused
 * (EINVAL: tmpfs before Linux 6.6, some FUSE file systems), at the open or
 * at the first direct I/O, the backend goes on buffered; blk_file_cache()
 * says which it is.  Reads stay buffered while buffered writes since the
 * last flush may have left dirty pages (buffered_dirty).
 *
 * Zeroing tries the cheapest way the kernel offers and falls back step by
 * step: punch a hole (only with BLK_ZERO_MAY_TRIM), FALLOC_FL_ZERO_RANGE,
 * BLKZEROOUT (block devices), and finally plain writes of zeros.  A step the
 * file system or driver does not support is remembered and not tried again.
 * Trim is advisory: where punching or discarding is unsupported it succeeds
 * without doing anything, and the old data may stay readable.
 */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"

/* Largest piece written at once by the zero-writing fallback. */
#define FILE_ZERO_BUF_SIZE (64 * 1024)

static const uint8_t file_zero_buf[FILE_ZERO_BUF_SIZE];

/* Alignment of direct I/O (buffer, offset, length): at least a page, or
 * the device's logical block size if larger. */
#define FILE_DIRECT_ALIGN 4096u

struct file_blk {
	struct blk blk;
	int fd;		/* buffered: everything but aligned direct I/O */
	int dfd;	/* O_DIRECT, or -1 */
	uint32_t align; /* of direct I/O */
	bool is_bdev;
	bool direct_refused; /* asked for direct I/O, and it was refused */
	/* Written through the buffered descriptor since the last flush
	 * began: reads stay buffered meanwhile (a hint; both are coherent). */
	atomic_bool buffered_dirty;
	/* Set when a direct I/O is refused after the open; the buffered
	 * descriptor is used from then on. */
	atomic_bool no_direct;
	/* BLK_OPEN_CACHED_READS: a read-only mapping of the whole image,
	 * never touched, only asked (mincore) what the page cache holds. */
	uint8_t *map;
	size_t map_len;
	char *path; /* owned copy, for messages */
	/* Kernel features found missing; set once, read without a lock. */
	atomic_bool no_punch;
	atomic_bool no_zero_range;
	atomic_bool no_zeroout;
	atomic_bool no_discard;
	atomic_bool no_seek_data;
};

static const struct blk_ops file_ops;

static struct file_blk *to_file(struct blk *b)
{
	return (struct file_blk *)b;
}

/* The errors meaning "this kernel, file system or device cannot do that". */
static bool unsupported(int e)
{
	return e == EOPNOTSUPP || e == ENOSYS || e == ENOTTY;
}

/* ---- read, write, flush --------------------------------------------------- */

static int fd_pread(struct file_blk *f, int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			return err_set(e, "pread %s at offset %" PRIu64 ": %s", f->path, off,
				       strerror(e));
		}
		if (n == 0)
			return err_set(EIO,
				       "pread %s at offset %" PRIu64 ": unexpected end of file",
				       f->path, off);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int fd_pwrite(struct file_blk *f, int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			int e = errno;

			if (e == EINTR)
				continue;
			return err_set(e, "pwrite %s at offset %" PRIu64 ": %s", f->path, off,
				       strerror(e));
		}
		if (n == 0)
			return err_set(EIO, "pwrite %s at offset %" PRIu64 ": no progress", f->path,
				       off);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/*
 * How much of [buf, buf+len) at off may go through the direct descriptor:
 * the aligned whole blocks from the start (the rest goes buffered), or 0
 * when the buffer or offset is not aligned or there is no direct path.
 */
static size_t direct_part(struct file_blk *f, const void *buf, size_t len, uint64_t off)
{
	if (f->dfd < 0 || atomic_load_explicit(&f->no_direct, memory_order_relaxed))
		return 0;
	if (((uintptr_t)buf | off) & (f->align - 1))
		return 0;
	return len & ~(size_t)(f->align - 1);
}

/* A direct I/O refused with EINVAL although aligned: this file system does
 * not do it after all; everything goes buffered from now on. */
static bool direct_refused_now(struct file_blk *f, int r)
{
	if (r != -EINVAL)
		return false;
	atomic_store(&f->no_direct, true);
	err_clear();
	return true;
}

/*
 * Whether the page cache holds every page of [off, off+len): then a
 * buffered read costs a copy, while a direct one would read the disk again
 * (and wait for the writeback of any dirty page in the range first).  A
 * kernel that hides residency from this process (mincore reports every
 * page of a file it may not write) makes every read buffered: the old way.
 */
static bool cached_whole(struct file_blk *f, size_t len, uint64_t off)
{
	unsigned char vec[256];
	size_t pg = 4096;

	if (!f->map || off % pg || off >= f->map_len || len > f->map_len - off)
		return false;
	while (len > 0) {
		size_t n = MIN(len, sizeof(vec) * pg);
		size_t pages = (n + pg - 1) / pg;

		if (mincore(f->map + off, n, vec) < 0)
			return false;
		for (size_t i = 0; i < pages; i++)
			if (!(vec[i] & 1))
				return false;
		off += n;
		len -= n;
	}
	return true;
}

static int file_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	struct file_blk *f = to_file(b);
	size_t n = atomic_load_explicit(&f->buffered_dirty, memory_order_relaxed)
		       ? 0
		       : direct_part(f, buf, len, off);
	int r;

	if (n && cached_whole(f, n, off))
		n = 0;
	if (n) {
		r = fd_pread(f, f->dfd, buf, n, off);
		if (r < 0 && !direct_refused_now(f, r))
			return r;
		if (r < 0)
			n = 0;
	}
	return fd_pread(f, f->fd, (uint8_t *)buf + n, len - n, off + n);
}

static int file_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct file_blk *f = to_file(b);
	size_t n = direct_part(f, buf, len, off);
	int r;

	if (n) {
		r = fd_pwrite(f, f->dfd, buf, n, off);
		if (r < 0 && !direct_refused_now(f, r))
			return r;
		if (r < 0)
			n = 0;
	}
	if (n < len && f->dfd >= 0)
		atomic_store_explicit(&f->buffered_dirty, true, memory_order_relaxed);
	return fd_pwrite(f, f->fd, (const uint8_t *)buf + n, len - n, off + n);
}

static int file_flush(struct blk *b)
{
	struct file_blk *f = to_file(b);

	/* Cleared before: a buffered write racing with the flush sets it
	 * again. */
	atomic_store(&f->buffered_dirty, false);
	if (fdatasync(f->fd) < 0) {
		int e = errno;

		return err_set(e, "fdatasync %s: %s", f->path, strerror(e));
	}
	return 0;
}

/* Kick writeback without waiting (sync_file_range's WRITE alone never
 * blocks on I/O already under way), so the final fdatasync finds most pages
 * clean.  Failure only means the hint was not taken. */
static int file_writeback(struct blk *b, uint64_t off, uint64_t len)
{
	struct file_blk *f = to_file(b);

	/* Direct writes leave nothing to write back. */
	if (f->dfd >= 0 && !atomic_load_explicit(&f->no_direct, memory_order_relaxed))
		return 0;
	(void)sync_file_range(f->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
	return 0;
}

/* ---- zero and trim -------------------------------------------------------- */

/*
 * One fallocate() attempt: 0 done, 1 not done (try the next way), or a
 * negative errno with the message recorded.  "Unsupported" is remembered in
 * *no; EINVAL (e.g. a range a block device cannot handle at this alignment)
 * only skips this attempt.
 */
static int try_fallocate(struct file_blk *f, atomic_bool *no, int mode, const char *what,
			 uint64_t off, uint64_t len)
{
	int e;

	if (atomic_load(no))
		return 1;
	do {
		if (fallocate(f->fd, mode, (off_t)off, (off_t)len) == 0)
			return 0;
		e = errno;
	} while (e == EINTR);
	if (unsupported(e))
		atomic_store(no, true);
	if (unsupported(e) || e == EINVAL)
		return 1;
	return err_set(e, "%s %s at offset %" PRIu64 " length %" PRIu64 ": %s", what, f->path, off,
		       len, strerror(e));
}

/* One ioctl on a block device over [off, off + len); same returns as above. */
static int try_range_ioctl(struct file_blk *f, atomic_bool *no, unsigned long req, const char *what,
			   uint64_t off, uint64_t len)
{
	uint64_t range[2] = { off, len };
	int e;

	if (atomic_load(no))
		return 1;
	if (ioctl(f->fd, req, range) == 0)
		return 0;
	e = errno;
	if (unsupported(e))
		atomic_store(no, true);
	if (unsupported(e) || e == EINVAL)
		return 1;
	return err_set(e, "%s %s at offset %" PRIu64 " length %" PRIu64 ": %s", what, f->path, off,
		       len, strerror(e));
}

static int write_zeros(struct file_blk *f, uint64_t off, uint64_t len)
{
	while (len > 0) {
		size_t n = (size_t)MIN(len, (uint64_t)FILE_ZERO_BUF_SIZE);
		int r;

		if (f->dfd >= 0)
			atomic_store_explicit(&f->buffered_dirty, true, memory_order_relaxed);
		r = fd_pwrite(f, f->fd, file_zero_buf, n, off);
		if (r < 0)
			return r;
		off += n;
		len -= n;
	}
	return 0;
}

static int file_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct file_blk *f = to_file(b);
	int r;

	if (flags & BLK_ZERO_MAY_TRIM) {
		r = try_fallocate(f, &f->no_punch, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  "punch hole in", off, len);
		if (r <= 0)
			return r;
	}
	r = try_fallocate(f, &f->no_zero_range, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
			  "zero range of", off, len);
	if (r <= 0)
		return r;
	if (f->is_bdev) {
		r = try_range_ioctl(f, &f->no_zeroout, BLKZEROOUT, "BLKZEROOUT on", off, len);
		if (r <= 0)
			return r;
	}
	return write_zeros(f, off, len);
}

static int file_trim(struct blk *b, uint64_t off, uint64_t len)
{
	struct file_blk *f = to_file(b);
	int r;

	if (f->is_bdev)
		r = try_range_ioctl(f, &f->no_discard, BLKDISCARD, "BLKDISCARD on", off, len);
	else
		r = try_fallocate(f, &f->no_punch, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				  "punch hole in", off, len);
	return r < 0 ? r : 0;
}

/* ---- block status --------------------------------------------------------- */

/*
 * Where the first data at or after off is (lseek SEEK_DATA): 0 with *data
 * set, or with *data -1 when there is none up to the end of the file; 1
 * when the file system cannot tell (everything then counts as data, and it
 * is not asked again); or a negative errno (err_set).  lseek() moves the
 * shared file offset, but only pread()/pwrite() use this descriptor, and
 * they ignore it.
 */
static int seek_data(struct file_blk *f, uint64_t off, off_t *data)
{
	int e;

	if (atomic_load(&f->no_seek_data))
		return 1;
	*data = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (*data >= 0)
		return 0;
	e = errno;
	if (e == ENXIO) {
		*data = -1;
		return 0;
	}
	if (unsupported(e) || e == EINVAL) {
		atomic_store(&f->no_seek_data, true);
		return 1;
	}
	return err_set(e, "lseek SEEK_DATA %s at offset %" PRIu64 ": %s", f->path, off,
		       strerror(e));
}

static int file_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			     bool *allocated)
{
	struct file_blk *f = to_file(b);
	off_t data, hole;
	int r = seek_data(f, off, &data);

	if (r < 0)
		return r;
	if (r == 0 && (data < 0 || (uint64_t)data > off)) {
		/* A hole up to the data, or to the end of the file. */
		*pnum = data < 0 ? len : MIN((uint64_t)data - off, len);
		*allocated = false;
		return 0;
	}
	*pnum = len;
	*allocated = true;
	if (r > 0)
		return 0;
	hole = lseek(f->fd, (off_t)off, SEEK_HOLE);
	if (hole < 0) {
		r = errno;
		return err_set(r, "lseek SEEK_HOLE %s at offset %" PRIu64 ": %s", f->path, off,
			       strerror(r));
	}
	/*
	 * hole == off only if a hole was punched between the two calls;
	 * reporting data is always safe, so say the whole range is data.
	 */
	if ((uint64_t)hole > off)
		*pnum = MIN((uint64_t)hole - off, len);
	return 0;
}

/*
 * blk_is_hole() for a file, with as little of the file system's attention
 * as it can: the source asks it of every chunk it copies, while clients
 * write.  lseek(SEEK_DATA) and SEEK_HOLE take the inode's lock (ext4,
 * xfs, tmpfs), which a buffered write needs exclusively: a client's 4 KiB
 * write that met a copy's lseek slept until it was woken, the tail of its
 * latency during a migration (README, "Benchmarks").
 *
 * - A file with at least as many bytes of blocks as of data has no hole
 *   worth finding, and fstat takes no lock.  (Blocks of metadata can hide
 *   a small hole: that costs a read of zeros, which are then sent as
 *   zeros; "not a hole" is never wrong, only slower.)
 * - Otherwise one SEEK_DATA says it: data at or past the range's end, or
 *   none up to the end of the file, is a hole.  block_status would also
 *   ask SEEK_HOLE, to say how far data goes, which this does not need.
 */
static bool file_is_hole(struct blk *b, uint64_t off, uint64_t len)
{
	struct file_blk *f = to_file(b);
	struct stat st;
	off_t data;

	if (fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_blocks >= 0 &&
	    (uint64_t)st.st_blocks >= ((uint64_t)st.st_size + 511) / 512)
		return false;
	return seek_data(f, off, &data) == 0 && (data < 0 || (uint64_t)data >= off + len);
}

/* ---- open and close ------------------------------------------------------- */

static void file_close(struct blk *b)
{
	struct file_blk *f = to_file(b);

	if (f->map)
		munmap(f->map, f->map_len);
	if (f->dfd >= 0)
		close(f->dfd);
	close(f->fd);
	free(f->path);
	free(f);
}

/* Size of the open regular file or block device; creates/extends on request. */
static int file_get_size(struct file_blk *f, unsigned flags, uint64_t create_size, uint64_t *size)
{
	struct stat st;
	int e;

	if (fstat(f->fd, &st) < 0) {
		e = errno;
		return err_set(e, "stat %s: %s", f->path, strerror(e));
	}
	if (S_ISBLK(st.st_mode)) {
		f->is_bdev = true;
		if (ioctl(f->fd, BLKGETSIZE64, size) < 0) {
			e = errno;
			return err_set(e, "BLKGETSIZE64 %s: %s", f->path, strerror(e));
		}
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return err_set(EINVAL, "open %s: not a regular file or block device", f->path);
	if ((flags & BLK_OPEN_CREATE) && st.st_size == 0 && create_size > 0) {
		if (ftruncate(f->fd, (off_t)create_size) < 0) {
			e = errno;
			return err_set(e, "resize %s to %" PRIu64 " bytes: %s", f->path,
				       create_size, strerror(e));
		}
		*size = create_size;
		return 0;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

/*
 * The direct descriptor: the open file reopened with O_DIRECT (through
 * /proc/self/fd, so that it is the same inode whatever happened to the
 * path), then one aligned read to see that the file system takes it.  A
 * refusal (EINVAL) leaves the backend buffered; other errors fail the open.
 */
static int open_direct(struct file_blk *f, unsigned flags)
{
	char proc[64];
	int oflags = O_CLOEXEC | O_DIRECT | ((flags & BLK_OPEN_RDONLY) ? O_RDONLY : O_RDWR);
	unsigned lbs = 0;
	void *probe;
	int e;

	f->align = FILE_DIRECT_ALIGN;
	if (f->is_bdev && ioctl(f->fd, BLKSSZGET, &lbs) == 0 && lbs > f->align &&
	    (lbs & (lbs - 1)) == 0)
		f->align = lbs;
	if (getenv("BLKMIG_TEST_REFUSE_O_DIRECT")) {
		f->direct_refused = true;
		return 0;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", f->fd);
	f->dfd = open(proc, oflags);
	if (f->dfd < 0 && errno == ENOENT) /* no /proc */
		f->dfd = open(f->path, oflags | O_NOFOLLOW);
	if (f->dfd < 0) {
		e = errno;
		if (e == EINVAL) {
			f->direct_refused = true;
			return 0;
		}
		return err_set(e, "open %s with O_DIRECT: %s", f->path, strerror(e));
	}
	if (f->blk.size < f->align)
		return 0;
	if (posix_memalign(&probe, f->align, f->align) != 0)
		return err_set(ENOMEM, "open %s: out of memory", f->path);
	e = pread(f->dfd, probe, f->align, 0) < 0 ? errno : 0;
	free(probe);
	if (e == EINVAL) {
		close(f->dfd);
		f->dfd = -1;
		f->direct_refused = true;
		return 0;
	}
	if (e)
		return err_set(e, "pread %s with O_DIRECT at offset 0: %s", f->path, strerror(e));
	return 0;
}

/* BLK_OPEN_CACHED_READS: the mapping cached_whole() asks.  Without one
 * (too large for the address space, or mmap refused) reads are direct. */
static void map_for_residency(struct file_blk *f, unsigned flags)
{
	void *p;

	if (!(flags & BLK_OPEN_CACHED_READS) || f->dfd < 0 || !f->blk.size ||
	    f->blk.size > SIZE_MAX)
		return;
	p = mmap(NULL, (size_t)f->blk.size, PROT_READ, MAP_SHARED, f->fd, 0);
	if (p == MAP_FAILED)
		return;
	f->map = p;
	f->map_len = (size_t)f->blk.size;
}

int blk_file_open(const char *path, unsigned flags, uint64_t create_size, struct blk **out)
{
	struct file_blk *f;
	int oflags = O_CLOEXEC;
	uint64_t size;
	int r;

	if (flags & ~(BLK_OPEN_RDONLY | BLK_OPEN_CREATE | BLK_OPEN_EXCL | BLK_OPEN_DIRECT |
		      BLK_OPEN_CACHED_READS))
		return err_set(EINVAL, "open %s: unknown flags 0x%x", path, flags);
	if ((flags & BLK_OPEN_EXCL) && !(flags & BLK_OPEN_CREATE))
		return err_set(EINVAL, "open %s: EXCL without CREATE", path);
	if ((flags & BLK_OPEN_RDONLY) && (flags & BLK_OPEN_CREATE))
		return err_set(EINVAL, "open %s: cannot create a read-only device", path);
	if (create_size > INT64_MAX)
		return err_set(EINVAL, "open %s: size %" PRIu64 " too large", path, create_size);

	f = calloc(1, sizeof(*f));
	if (!f)
		return err_set(ENOMEM, "open %s: out of memory", path);
	f->dfd = -1;
	f->path = strdup(path);
	if (!f->path) {
		r = err_set(ENOMEM, "open %s: out of memory", path);
		goto err_free_f;
	}
	oflags |= (flags & BLK_OPEN_RDONLY) ? O_RDONLY : O_RDWR;
	if (flags & BLK_OPEN_CREATE)
		oflags |= O_CREAT;
	if ((flags & BLK_OPEN_CREATE) && (flags & BLK_OPEN_EXCL))
		oflags |= O_EXCL | O_NOFOLLOW;
	f->fd = open(path, oflags, 0644);
	if (f->fd < 0) {
		int e = errno;

		if (e == EEXIST && (oflags & O_EXCL))
			r = err_set(e, "create %s: it exists already (a symlink counts)", path);
		else
			r = err_set(e, "open %s: %s", path, strerror(e));
		goto err_free_path;
	}
	r = file_get_size(f, flags, create_size, &size);
	if (r < 0)
		goto err_unlink;
	f->blk.size = size;
	if (flags & BLK_OPEN_DIRECT) {
		r = open_direct(f, flags);
		if (r < 0)
			goto err_close_direct;
		map_for_residency(f, flags);
	}

	atomic_init(&f->no_punch, false);
	atomic_init(&f->no_zero_range, false);
	atomic_init(&f->no_zeroout, false);
	atomic_init(&f->no_discard, false);
	atomic_init(&f->no_seek_data, false);
	atomic_init(&f->no_direct, false);
	atomic_init(&f->buffered_dirty, false);
	f->blk.ops = &file_ops;
	f->blk.lower = NULL;
	f->blk.readonly = flags & BLK_OPEN_RDONLY;
	*out = &f->blk;
	return 0;

err_close_direct:
	if (f->dfd >= 0)
		close(f->dfd);
err_unlink:
	/* Ours alone since O_EXCL: leave nothing half made behind. */
	if (oflags & O_EXCL)
		unlink(path);
	close(f->fd);
err_free_path:
	free(f->path);
err_free_f:
	free(f);
	return r;
}

static const struct blk_ops file_ops = {
	.name = "file",
	.pread = file_pread,
	.pwrite = file_pwrite,
	.flush = file_flush,
	.zero = file_zero,
	.trim = file_trim,
	.block_status = file_block_status,
	.is_hole = file_is_hole,
	.writeback = file_writeback,
	.close = file_close,
};

enum blk_cache blk_file_cache(struct blk *b)
{
	struct file_blk *f;

	while (b && b->lower)
		b = b->lower;
	if (!b || b->ops != &file_ops)
		return BLK_CACHE_WRITEBACK;
	f = to_file(b);
	if (f->direct_refused)
		return BLK_CACHE_REFUSED;
	if (f->dfd < 0 || atomic_load(&f->no_direct))
		return BLK_CACHE_WRITEBACK;
	return BLK_CACHE_NONE;
}

int blk_file_identity(struct blk *b, uint64_t *dev, uint64_t *ino)
{
	struct stat sb;

	while (b && b->lower)
		b = b->lower;
	if (!b || b->ops != &file_ops)
		return err_set(ENOTSUP, "not a file or block device");
	if (fstat(to_file(b)->fd, &sb) < 0)
		return err_set(errno, "fstat %s: %s", to_file(b)->path, strerror(errno));
	*dev = (uint64_t)sb.st_dev;
	*ino = (uint64_t)sb.st_ino;
	return 0;
}
