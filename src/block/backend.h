/* SPDX-License-Identifier: MIT */
/*
 * The block layer: a device is a 'struct blk' with an ops table.  Backends
 * (file.c, mem.c) sit at the bottom; layers (track.c) stack on top of another
 * blk and forward to it.  Engines and the NBD server only ever call the
 * checked wrappers below (blk_pread() ...), which validate the range and
 * dispatch; they never call ops directly.
 *
 * Errors: every function returns 0 or a negative errno and records a message
 * with err_set() where the failure happened.
 *
 * Threads: a blk may be used from several threads at once; each backend
 * documents what it serialises.  Reads and writes use positional I/O.
 */
#ifndef BLKMIG_BLOCK_BACKEND_H
#define BLKMIG_BLOCK_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blk;

/* Flags for blk_zero(). */
#define BLK_ZERO_MAY_TRIM (1U << 0) /* a hole may be punched (reads back zero) */

struct blk_ops {
	const char *name;
	/* Whole-buffer I/O: short transfers are the op's job to finish. */
	int (*pread)(struct blk *b, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct blk *b, const void *buf, size_t len, uint64_t off);
	int (*flush)(struct blk *b);
	/* Make [off, off+len) read as zeros. */
	int (*zero)(struct blk *b, uint64_t off, uint64_t len, unsigned flags);
	/* Discard; contents afterwards are unspecified (backends give zeros). */
	int (*trim)(struct blk *b, uint64_t off, uint64_t len);
	/*
	 * Allocation status of the extent that starts at off: sets *pnum to
	 * the length (>= 1, <= len) of the run with the same status and
	 * *allocated to whether it holds data (false: a hole, reads as zero).
	 * Optional: when NULL everything is reported allocated.
	 */
	int (*block_status)(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			    bool *allocated);
	/*
	 * Optional: whether [off, off+len) (checked by the caller) is wholly
	 * a hole, as blk_is_hole(), where the backend can tell more cheaply
	 * than block_status can.  NULL: blk_is_hole() walks block_status.
	 */
	bool (*is_hole)(struct blk *b, uint64_t off, uint64_t len);
	/*
	 * Optional hint: start writing [off, off+len) back to stable storage
	 * without waiting, so a later flush has less to do.  Durability still
	 * needs flush.  NULL: nothing to start.
	 */
	int (*writeback)(struct blk *b, uint64_t off, uint64_t len);
	/* Release this layer only (blk_close() walks the stack). */
	void (*close)(struct blk *b);
};

/*
 * Base of every backend and layer: implementations embed it first and
 * container_of back.  'lower' is the next blk down the stack (NULL for a
 * backend); closing a layer closes what is below it.
 */
struct blk {
	const struct blk_ops *ops;
	struct blk *lower;
	uint64_t size;
	bool readonly;
};

/* Checked wrappers: -EINVAL/-ERANGE on a bad range, -EROFS on a write to a
 * read-only blk, else the op's result.  len 0 is a no-op returning 0. */
int blk_pread(struct blk *b, void *buf, size_t len, uint64_t off);
int blk_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off);
int blk_flush(struct blk *b);
int blk_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags);
int blk_trim(struct blk *b, uint64_t off, uint64_t len);
int blk_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, bool *allocated);
/* Whether [off, off+len) is wholly unallocated (reads as zeros).  Any
 * failure to tell answers false: the caller then just reads. */
bool blk_is_hole(struct blk *b, uint64_t off, uint64_t len);
/* Start writeback of a range (a hint; 0 when the backend has no such op). */
int blk_writeback(struct blk *b, uint64_t off, uint64_t len);
static inline uint64_t blk_size(const struct blk *b)
{
	return b->size;
}

/* Close the whole stack from b down.  Accepts NULL. */
void blk_close(struct blk *b);

/* ---- backends ---------------------------------------------------------- */

/* Flags for blk_file_open(). */
#define BLK_OPEN_RDONLY (1U << 0)
#define BLK_OPEN_CREATE (1U << 1) /* create (or extend an empty file) to create_size */
#define BLK_OPEN_EXCL	(1U << 2) /* with CREATE: only a new file, never through a symlink */
#define BLK_OPEN_DIRECT (1U << 3) /* aligned I/O bypasses the page cache (O_DIRECT) */
/* With DIRECT: an aligned read of a range the page cache holds whole is
 * served from it; only the rest reads the disk directly. */
#define BLK_OPEN_CACHED_READS (1U << 4)

/*
 * Raw file or block device.  Size comes from fstat (regular file) or
 * BLKGETSIZE64 (block device).  With BLK_OPEN_CREATE a missing file is
 * created with size create_size (sparse); an existing one is opened as is.
 * With BLK_OPEN_CREATE | BLK_OPEN_EXCL the file must not exist: it is
 * created with O_EXCL | O_NOFOLLOW (-EEXIST for anything at path, a
 * symlink too), and removed again if the open fails after creating it.
 * pread/pwrite/fdatasync; zero uses FALLOC_FL_PUNCH_HOLE (MAY_TRIM) or
 * FALLOC_FL_ZERO_RANGE, falling back to writing zeros; block_status uses
 * SEEK_DATA/SEEK_HOLE.  Thread-safe (positional I/O on one fd).
 */
int blk_file_open(const char *path, unsigned flags, uint64_t create_size, struct blk **out);
/*
 * With BLK_OPEN_DIRECT, reads and writes whose buffer, offset and length
 * are aligned to 4096 (or the device's logical block size if larger) use a
 * second descriptor opened with O_DIRECT; the rest (an unaligned buffer,
 * the partial last block of a device whose size is not a multiple) goes
 * through the buffered one.  fdatasync covers both.  Where the file system
 * refuses O_DIRECT (EINVAL at the open or at the probing read that follows
 * it) the device is opened buffered and blk_file_cache() says REFUSED; a
 * direct I/O refused later switches the device to buffered for good.
 * Reads go buffered too while something written through the page cache
 * since the last flush may be dirty there: a direct read of a range with
 * dirty pages would first wait for their writeback (correct either way,
 * but a receiver reading back a mirrored write would pay a disk write).
 * With BLK_OPEN_CACHED_READS as well, an aligned read whose every page the
 * page cache holds (mincore() on a read-only mapping of the image, never
 * touched) is buffered: a copy, where a direct read would read the disk
 * again.  A source whose image is already in memory reads it from there; a
 * cold one still reads the disk once, without filling the cache.
 * Test hook: with BLKMIG_TEST_REFUSE_O_DIRECT set in the environment,
 * O_DIRECT counts as refused.
 */
enum blk_cache {
	BLK_CACHE_WRITEBACK, /* buffered: through the page cache */
	BLK_CACHE_NONE,	     /* O_DIRECT for aligned I/O */
	BLK_CACHE_REFUSED,   /* O_DIRECT asked for and refused: buffered */
};
/* How the file under b (the bottom of its stack) does I/O now;
 * WRITEBACK for other backends. */
enum blk_cache blk_file_cache(struct blk *b);
/*
 * The file under a stack whose bottom is a file backend: its device and
 * inode (fstat of the open descriptor), so that a path can be checked to
 * still name it.  -ENOTSUP for other backends.
 */
int blk_file_identity(struct blk *b, uint64_t *dev, uint64_t *ino);

/*
 * In-memory device for tests.  Storage is allocated lazily in 64 KiB pages:
 * a page never written reads as zeros and is reported unallocated; zero with
 * MAY_TRIM and trim free whole pages.  Thread-safe (one mutex).
 */
int blk_mem_open(uint64_t size, struct blk **out);

enum blk_mem_op { BLK_MEM_READ, BLK_MEM_WRITE, BLK_MEM_FLUSH, BLK_MEM_ZERO, BLK_MEM_TRIM };

/*
 * Fault injection: the nth (1 = next) call of 'op' from now fails with -err
 * (e.g. EIO, ENOSPC) without touching the data; later calls succeed again.
 * nth 0 cancels a pending fault for op.
 */
void blk_mem_inject(struct blk *b, enum blk_mem_op op, unsigned nth, int err);

/* ---- NBD client (nbd.c, libnbd) ----------------------------------------- */

/* How long a forwarded command may go unanswered before it fails. */
#define BLK_NBD_OP_TIMEOUT_NS (30 * 1000000000ull)

struct blk_nbd_target {
	const char *host, *port, *export;
	/* TLS (either, or none): a PSK file and the identity to use from it,
	 * or an X.509 directory with ca-cert.pem, client-cert.pem and
	 * client-key.pem (the server's certificate is checked against host). */
	const char *psk_file, *psk_user, *x509_dir;
	/* How long one op keeps trying to connect while the export does not
	 * take connections (a destination finishing its take-over); once a
	 * connection has been made, at most a second. */
	uint64_t patience_ns;
	uint64_t op_timeout_ns; /* 0: BLK_NBD_OP_TIMEOUT_NS */
	unsigned max_conns;	/* connections at most, 0: 4 */
};

/*
 * A device that is an NBD export, reached with libnbd: every op is a
 * command to it.  Nothing connects until the first op; each connection
 * checks that the export has 'size' bytes and is writable.  Errors of the
 * export or the link are the op's error, except that a command whose
 * reused idle connection turns out dead is tried once more on a fresh one;
 * a command unanswered for op_timeout fails with -ETIMEDOUT.
 * Thread-safe: ops run in parallel over up to max_conns connections.
 */
int blk_nbd_open(const struct blk_nbd_target *t, uint64_t size, struct blk **out);
/* End every wait of the device's ops now (-ECANCELED) and from now on;
 * for a daemon going away.  Thread-safe. */
void blk_nbd_cancel(struct blk *b);

struct blk_nbd_stats {
	uint64_t requests; /* commands issued */
	uint64_t errors;   /* of which failed (the client got an error) */
	uint64_t connects; /* connections opened */
};
void blk_nbd_stats(struct blk *b, struct blk_nbd_stats *st);

/* ---- tracking layer (track.c) ------------------------------------------ */

struct dirty;

/*
 * Stack a tracking layer on 'lower' (taking ownership of it).  While a
 * bitmap is attached, every write, zero and trim marks the chunks it touched
 * after the lower layer returns (whether it succeeded or not: a failed write
 * may have changed part of the range) and before returning to the caller.
 *
 * The layer is also the writers' gate: track_pause() makes new writes
 * (write/zero/trim/flush) wait and returns once in-flight ones have drained
 * (a mirrored write waiting for its mirror's answer has drained: its data
 * reached the backend and the mirror has it);
 * track_resume() lets them go; track_fence() makes every held and future
 * write fail with -err (the split-brain guard after switch-over).  Reads are
 * never held or fenced.
 */
int blk_track_open(struct blk *lower, struct blk **out);

/* Attach (or with NULL detach) the bitmap to mark.  The caller keeps
 * ownership and must detach before freeing it. */
void track_set_dirty(struct blk *track, struct dirty *d);
void track_pause(struct blk *track);
void track_resume(struct blk *track);
void track_fence(struct blk *track, int err);
/*
 * Hand-over with forwarding.  track_hold() makes the hand-over terminal
 * without failing anyone: nothing reaches the lower layer again; writes
 * (and reads, which must not see a copy that is no longer the device)
 * wait at the gate, as in a pause that track_resume() does not end.
 * track_redirect() then sends every op, held or new, to 'to' (a device of
 * the same size, not owned; it must outlive every op, so close it only
 * after the layer's users are gone): writes there are neither marked nor
 * mirrored, and they are not in flight for track_pause() or a swap, which
 * neither hold nor wait for them (the destination may keep them waiting
 * while the engine still detaches its bitmap).  A fence still wins:
 * fenced writes fail, and reads go below again.  track_redirect() needs
 * track_hold() first and is called once.
 */
void track_hold(struct blk *track);
void track_redirect(struct blk *track, struct blk *to);
/* Writes completed through this layer since it was opened. */
uint64_t track_writes(struct blk *track);

/*
 * Write mirroring (active migration).  While a mirror is set, the layer
 * serialises its write-type ops per 1 MiB granule of the device (the lower
 * op and submit() run under the locks of the granules the op touches, so
 * the destination sees overlapping writes in the order they reached the
 * backend, and writes to other granules run in parallel) and, after the
 * lower op succeeded, offers each to submit():
 *   1: taken; *ticket identifies it.  The layer then calls wait(ticket)
 *      outside the lock, exactly once, before answering the writer; if that
 *      fails the range is marked dirty instead (the migration is failing
 *      anyway).  submit() must not block on the network: track_pause()
 *      does not wait for writes in wait(), so the mirror's owner may pause
 *      the writers and still send what it was given.
 *   0: not sent (the range has not been copied yet, or is being copied):
 *      the layer marks the range dirty, as without a mirror.
 * op is TRACK_OP_WRITE (buf holds len bytes) or TRACK_OP_ZERO (write
 * zeroes: the range reads as zeros).  Discards are never offered (a backend
 * need not zero what it discards); they are marked dirty.
 */
enum track_op { TRACK_OP_WRITE, TRACK_OP_ZERO };

struct track_mirror {
	int (*submit)(void *opaque, enum track_op op, const void *buf, uint64_t off, uint64_t len,
		      uint64_t *ticket);
	int (*wait)(void *opaque, uint64_t ticket);
};

/* Set (or with NULL clear) the mirror; like track_set_dirty() it waits for
 * in-flight writes to drain first. */
void track_set_mirror(struct blk *track, const struct track_mirror *m, void *opaque);

#endif
