/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the file backend (src/block/file.c) through the checked
 * wrappers (src/block/backend.c): creation, sizes, read/write round trips,
 * zero and trim, hole detection, range and read-only errors, and the
 * messages recorded on failure.  Files live under $TMPDIR (or /tmp).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"

struct fixture {
	char path[4096];
};

static void assert_msg_contains(const char *needle)
{
	if (!strstr(err_msg(), needle))
		fail_msg("message '%s' does not contain '%s'", err_msg(), needle);
}

static const char *tmp_dir(void)
{
	const char *d = getenv("TMPDIR");

	return d && *d ? d : "/tmp";
}

/* Each test gets a fresh empty file, removed afterwards. */
static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	int fd;

	if (!fx)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/blkmig-test-file-XXXXXX", tmp_dir());
	fd = mkstemp(fx->path);
	if (fd < 0) {
		free(fx);
		return -1;
	}
	close(fd);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	unlink(fx->path);
	free(fx);
	return 0;
}

static uint64_t file_size_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static struct blk *open_or_fail(const char *path, unsigned flags, uint64_t create_size)
{
	struct blk *b = NULL;

	if (blk_file_open(path, flags, create_size, &b) != 0)
		fail_msg("blk_file_open %s: %s", path, err_msg());
	assert_non_null(b);
	return b;
}

static void fill(struct blk *b, uint8_t byte)
{
	uint8_t *buf = malloc(blk_size(b));

	assert_non_null(buf);
	memset(buf, byte, blk_size(b));
	assert_int_equal(blk_pwrite(b, buf, blk_size(b), 0), 0);
	free(buf);
}

/* Every byte of [off, off + len) equals 'byte'. */
static void assert_bytes(struct blk *b, uint64_t off, size_t len, uint8_t byte)
{
	uint8_t *buf = malloc(len);
	size_t i;

	assert_non_null(buf);
	assert_int_equal(blk_pread(b, buf, len, off), 0);
	for (i = 0; i < len; i++)
		if (buf[i] != byte)
			fail_msg("byte at %" PRIu64 " is 0x%02x, want 0x%02x", off + i, buf[i],
				 byte);
	free(buf);
}

/* Holes are a file-system feature; skip where it has none. */
static void require_holes(struct blk *b)
{
	uint64_t pnum;
	bool alloc;

	assert_int_equal(blk_block_status(b, 0, blk_size(b), &pnum, &alloc), 0);
	if (alloc) {
		print_message("file system under %s reports no holes\n", tmp_dir());
		skip();
	}
}

/* ---- open and size -------------------------------------------------------- */

static void test_create_new(void **state)
{
	struct fixture *fx = *state;
	struct blk *b;

	unlink(fx->path);
	b = open_or_fail(fx->path, BLK_OPEN_CREATE, 4 * MiB);
	assert_int_equal(blk_size(b), 4 * MiB);
	assert_false(b->readonly);
	assert_null(b->lower);
	assert_int_equal(file_size_of(fx->path), 4 * MiB);
	assert_bytes(b, 0, 64 * 1024, 0);
	blk_close(b);
}

static void test_create_extends_empty(void **state)
{
	struct fixture *fx = *state;
	struct blk *b;

	/* mkstemp left an empty file: CREATE gives it the size. */
	b = open_or_fail(fx->path, BLK_OPEN_CREATE, MiB);
	assert_int_equal(blk_size(b), MiB);
	blk_close(b);
	assert_int_equal(file_size_of(fx->path), MiB);
}

static void test_create_keeps_existing(void **state)
{
	struct fixture *fx = *state;
	struct blk *b;

	assert_int_equal(truncate(fx->path, 8192), 0);
	b = open_or_fail(fx->path, BLK_OPEN_CREATE, MiB);
	assert_int_equal(blk_size(b), 8192);
	blk_close(b);
	assert_int_equal(file_size_of(fx->path), 8192);

	/* Without CREATE an empty file stays empty. */
	assert_int_equal(truncate(fx->path, 0), 0);
	b = open_or_fail(fx->path, 0, MiB);
	assert_int_equal(blk_size(b), 0);
	blk_close(b);
}

static void test_open_missing(void **state)
{
	char path[4200];
	struct blk *b = NULL;

	(void)state;
	snprintf(path, sizeof(path), "%s/blkmig-no-such-dir-%d/disk.img", tmp_dir(), (int)getpid());
	err_clear();
	assert_int_equal(blk_file_open(path, 0, 0, &b), -ENOENT);
	assert_null(b);
	assert_msg_contains(path);
	assert_msg_contains("open ");
	assert_msg_contains(strerror(ENOENT));

	/* CREATE cannot make the missing directory either. */
	err_clear();
	assert_int_equal(blk_file_open(path, BLK_OPEN_CREATE, MiB, &b), -ENOENT);
	assert_msg_contains(path);
}

static void test_open_bad_args(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = NULL;

	assert_int_equal(blk_file_open(fx->path, BLK_OPEN_RDONLY | BLK_OPEN_CREATE, MiB, &b),
			 -EINVAL);
	assert_int_equal(blk_file_open(fx->path, 1U << 7, 0, &b), -EINVAL);
	assert_int_equal(blk_file_open(fx->path, BLK_OPEN_CREATE, UINT64_MAX, &b), -EINVAL);
	assert_msg_contains(fx->path);

	/* Neither a regular file nor a block device. */
	assert_int_equal(blk_file_open(tmp_dir(), BLK_OPEN_RDONLY, 0, &b), -EINVAL);
	assert_msg_contains("not a regular file or block device");
	assert_null(b);
	blk_close(NULL);
}

/* ---- I/O ------------------------------------------------------------------ */

static void test_rw_round_trip(void **state)
{
	struct fixture *fx = *state;
	size_t len = 3 * MiB + 777;
	uint8_t *in = malloc(len), *out = malloc(len);
	struct blk *b;
	size_t i;

	assert_non_null(in);
	assert_non_null(out);
	for (i = 0; i < len; i++)
		in[i] = (uint8_t)(i * 31 + (i >> 12));
	b = open_or_fail(fx->path, BLK_OPEN_CREATE, 4 * MiB);
	assert_int_equal(blk_pwrite(b, in, len, 4096 + 3), 0);
	assert_int_equal(blk_pread(b, out, len, 4096 + 3), 0);
	assert_memory_equal(in, out, len);
	/* Last byte of the device. */
	assert_int_equal(blk_pwrite(b, "z", 1, 4 * MiB - 1), 0);
	assert_int_equal(blk_flush(b), 0);
	blk_close(b);

	/* It reached the file. */
	b = open_or_fail(fx->path, BLK_OPEN_RDONLY, 0);
	assert_true(b->readonly);
	memset(out, 0, len);
	assert_int_equal(blk_pread(b, out, len, 4096 + 3), 0);
	assert_memory_equal(in, out, len);
	assert_int_equal(blk_pread(b, out, 1, 4 * MiB - 1), 0);
	assert_int_equal(out[0], 'z');
	assert_int_equal(blk_flush(b), 0);
	blk_close(b);
	free(in);
	free(out);
}

static void test_zero(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, 2 * MiB);

	fill(b, 0xaa);
	/* Unaligned, without MAY_TRIM: must stay allocated, reads zero. */
	assert_int_equal(blk_zero(b, 4096 + 100, 200000, 0), 0);
	assert_bytes(b, 0, 4096 + 100, 0xaa);
	assert_bytes(b, 4096 + 100, 200000, 0);
	assert_bytes(b, 4096 + 100 + 200000, 1000, 0xaa);

	/* Unaligned with MAY_TRIM. */
	assert_int_equal(blk_zero(b, MiB - 10, 300000, BLK_ZERO_MAY_TRIM), 0);
	assert_bytes(b, MiB - 1000, 990, 0xaa);
	assert_bytes(b, MiB - 10, 300000, 0);
	assert_bytes(b, MiB - 10 + 300000, 4096, 0xaa);

	/* The whole device; then an unknown flag is refused. */
	assert_int_equal(blk_zero(b, 0, 2 * MiB, BLK_ZERO_MAY_TRIM), 0);
	assert_bytes(b, 0, 2 * MiB, 0);
	assert_int_equal(blk_zero(b, 0, 4096, 1U << 5), -EINVAL);
	assert_int_equal(file_size_of(fx->path), 2 * MiB); /* KEEP_SIZE */
	blk_close(b);
}

static void test_zero_may_trim_makes_hole(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, 2 * MiB);
	uint64_t pnum;
	bool alloc;

	require_holes(b);
	fill(b, 0x11);
	assert_int_equal(blk_zero(b, MiB, 512 * 1024, BLK_ZERO_MAY_TRIM), 0);
	assert_int_equal(blk_block_status(b, MiB, MiB, &pnum, &alloc), 0);
	assert_false(alloc);
	assert_int_equal(pnum, 512 * 1024);
	assert_bytes(b, MiB, 512 * 1024, 0);
	assert_bytes(b, MiB + 512 * 1024, 4096, 0x11);
	blk_close(b);
}

static void test_trim(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, 2 * MiB);
	uint64_t pnum;
	bool alloc;

	fill(b, 0x77);
	assert_int_equal(blk_trim(b, 256 * 1024, 256 * 1024), 0);
	assert_int_equal(blk_trim(b, 0, 0), 0);
	assert_bytes(b, 0, 256 * 1024, 0x77);
	assert_bytes(b, 512 * 1024, MiB, 0x77);
	assert_int_equal(blk_block_status(b, 256 * 1024, 256 * 1024, &pnum, &alloc), 0);
	if (!alloc) {
		/* Punched: the contract says backends give zeros. */
		assert_int_equal(pnum, 256 * 1024);
		assert_bytes(b, 256 * 1024, 256 * 1024, 0);
	}
	assert_int_equal(file_size_of(fx->path), 2 * MiB);
	blk_close(b);
}

static void test_block_status(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, 4 * MiB);
	uint8_t buf[64 * 1024];
	uint64_t off, pnum, data = 0;
	bool alloc;

	require_holes(b);
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(blk_pwrite(b, buf, sizeof(buf), MiB), 0);

	assert_int_equal(blk_block_status(b, 0, 4 * MiB, &pnum, &alloc), 0);
	assert_false(alloc);
	assert_int_equal(pnum, MiB);
	/* A run longer than len is cut at len. */
	assert_int_equal(blk_block_status(b, 0, 4096, &pnum, &alloc), 0);
	assert_false(alloc);
	assert_int_equal(pnum, 4096);

	assert_int_equal(blk_block_status(b, MiB, 3 * MiB, &pnum, &alloc), 0);
	assert_true(alloc);
	assert_true(pnum >= sizeof(buf) && pnum < 3 * MiB);
	assert_int_equal(blk_block_status(b, MiB + 100, 10, &pnum, &alloc), 0);
	assert_true(alloc);
	assert_int_equal(pnum, 10);

	/* No data after the write: a hole to the end (SEEK_DATA gives ENXIO). */
	assert_int_equal(blk_block_status(b, 3 * MiB, MiB, &pnum, &alloc), 0);
	assert_false(alloc);
	assert_int_equal(pnum, MiB);

	/* Walking the device covers it exactly. */
	for (off = 0; off < 4 * MiB; off += pnum) {
		assert_int_equal(blk_block_status(b, off, 4 * MiB - off, &pnum, &alloc), 0);
		assert_true(pnum >= 1 && pnum <= 4 * MiB - off);
		if (alloc)
			data += pnum;
	}
	assert_int_equal(off, 4 * MiB);
	assert_true(data >= sizeof(buf) && data < 4 * MiB);
	blk_close(b);
}

/* Whether [off, off + len) is a hole, the long way: walking block_status. */
static bool walked_hole(struct blk *b, uint64_t off, uint64_t len)
{
	uint64_t pnum;
	bool alloc;

	while (len > 0) {
		assert_int_equal(blk_block_status(b, off, len, &pnum, &alloc), 0);
		if (alloc)
			return false;
		off += pnum;
		len -= pnum;
	}
	return true;
}

/*
 * blk_is_hole() asks the file directly (one SEEK_DATA, or none for a file
 * with no room for holes): the same answers as walking block_status, on
 * the file and through the tracking layer, and never a stale one.
 */
static void test_is_hole(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, 4 * MiB), *t;
	static const uint64_t offs[] = { 0,	  4096,	   MiB - 4096,	  MiB, MiB + 64 * 1024,
					 2 * MiB, 3 * MiB, 4 * MiB - 4096 };
	static const uint64_t lens[] = { 4096, 64 * 1024, MiB - 4096, MiB, MiB + 4096, 2 * MiB };
	uint8_t *buf = malloc(4 * MiB);

	assert_non_null(buf);
	require_holes(b);
	memset(buf, 0x5a, 4 * MiB);
	assert_int_equal(blk_pwrite(b, buf, 64 * 1024, MiB), 0);
	assert_int_equal(blk_track_open(b, &t), 0);

	assert_true(blk_is_hole(t, 0, MiB));
	assert_false(blk_is_hole(t, 0, MiB + 1));
	assert_false(blk_is_hole(t, MiB + 100, 10));
	assert_true(blk_is_hole(t, 2 * MiB, 2 * MiB)); /* no data to the end */
	assert_true(blk_is_hole(t, 4 * MiB - 1, 1));
	assert_true(blk_is_hole(t, MiB, 0));
	assert_false(blk_is_hole(t, 4 * MiB - 1, 2)); /* past the end: "read it" */
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
		for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
			uint64_t len = MIN(lens[k], 4 * MiB - offs[i]);

			if (blk_is_hole(t, offs[i], len) != walked_hole(b, offs[i], len))
				fail_msg("is_hole(%" PRIu64 ", %" PRIu64 ") differs from "
					 "block_status",
					 offs[i], len);
		}

	/* A write through the layer is seen at once. */
	assert_int_equal(blk_pwrite(t, buf, 4096, 3 * MiB), 0);
	assert_false(blk_is_hole(t, 2 * MiB, 2 * MiB));
	assert_true(blk_is_hole(t, 2 * MiB, MiB));

	/* Every block written: no lseek needed, nothing is a hole. */
	assert_int_equal(blk_pwrite(t, buf, 4 * MiB, 0), 0);
	assert_int_equal(blk_flush(t), 0);
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++)
		assert_false(blk_is_hole(t, offs[i], 4096));
	/* A hole punched in it is found again. */
	assert_int_equal(blk_zero(t, MiB, MiB, BLK_ZERO_MAY_TRIM), 0);
	assert_true(blk_is_hole(t, MiB, MiB));
	assert_true(blk_is_hole(t, MiB + 4096, 4096));
	assert_false(blk_is_hole(t, MiB - 4096, 8192));
	assert_false(blk_is_hole(t, MiB, MiB + 4096));
	blk_close(t);
	free(buf);
}

/* ---- errors --------------------------------------------------------------- */

static void test_range_errors(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, MiB);
	uint8_t buf[20];
	uint64_t pnum = 123;
	bool alloc;

	fill(b, 0x55);
	memset(buf, 0xee, sizeof(buf));

	err_clear();
	assert_int_equal(blk_pwrite(b, buf, 20, MiB - 10), -ERANGE);
	assert_msg_contains("offset 1048566");
	assert_msg_contains("length 20");
	assert_msg_contains("size 1048576");
	assert_int_equal(blk_pwrite(b, buf, 1, MiB), -ERANGE);
	assert_int_equal(blk_pwrite(b, buf, 20, UINT64_MAX - 5), -EINVAL);
	assert_msg_contains("18446744073709551610");
	assert_int_equal(blk_zero(b, MiB - 10, 20, 0), -ERANGE);
	assert_int_equal(blk_zero(b, 2 * MiB, 1, BLK_ZERO_MAY_TRIM), -ERANGE);
	assert_int_equal(blk_zero(b, 10, UINT64_MAX, 0), -EINVAL);
	assert_int_equal(blk_trim(b, 0, MiB + 1), -ERANGE);
	assert_int_equal(blk_trim(b, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(blk_pread(b, buf, 20, MiB - 10), -ERANGE);
	assert_int_equal(blk_pread(b, buf, 20, UINT64_MAX), -EINVAL);
	assert_int_equal(blk_block_status(b, MiB, 1, &pnum, &alloc), -ERANGE);
	assert_int_equal(pnum, 123);

	/* Nothing was written and the file did not grow. */
	assert_int_equal(file_size_of(fx->path), MiB);
	assert_bytes(b, MiB - 4096, 4096, 0x55);

	/* len 0 is a no-op, wherever it points. */
	assert_int_equal(blk_pwrite(b, buf, 0, 5 * MiB), 0);
	assert_int_equal(blk_pread(b, buf, 0, UINT64_MAX), 0);
	assert_int_equal(blk_zero(b, 5 * MiB, 0, 0), 0);
	assert_int_equal(blk_trim(b, 5 * MiB, 0), 0);
	assert_int_equal(blk_block_status(b, 5 * MiB, 0, &pnum, &alloc), 0);
	assert_int_equal(pnum, 0);
	assert_int_equal(file_size_of(fx->path), MiB);
	blk_close(b);
}

static void test_readonly(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, MiB);
	uint8_t buf[4096];

	fill(b, 0x33);
	blk_close(b);

	b = open_or_fail(fx->path, BLK_OPEN_RDONLY, 0);
	assert_true(b->readonly);
	assert_int_equal(blk_size(b), MiB);
	memset(buf, 0, sizeof(buf));
	err_clear();
	assert_int_equal(blk_pwrite(b, buf, sizeof(buf), 0), -EROFS);
	assert_msg_contains("read-only");
	assert_int_equal(blk_zero(b, 0, 4096, 0), -EROFS);
	assert_int_equal(blk_zero(b, 0, 4096, BLK_ZERO_MAY_TRIM), -EROFS);
	assert_int_equal(blk_trim(b, 0, 4096), -EROFS);
	/* Reads still work and nothing changed. */
	assert_bytes(b, 0, MiB, 0x33);
	blk_close(b);
}

/*
 * A real I/O error with its message: RLIMIT_FSIZE makes writes past 64 KiB
 * fail with EFBIG.  The write starting 4 KiB below the limit is first cut
 * short by the kernel, so this also drives the short-write loop.
 */
static void test_write_error_message(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, MiB);
	struct rlimit old, lim;
	uint8_t buf[8192];
	char want[4200];
	int r;

	memset(buf, 0x42, sizeof(buf));
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 64 * 1024;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	err_clear();
	r = blk_pwrite(b, buf, sizeof(buf), 60 * 1024);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);

	assert_int_equal(r, -EFBIG);
	snprintf(want, sizeof(want), "pwrite %s at offset 65536: %s", fx->path, strerror(EFBIG));
	assert_string_equal(err_msg(), want);
	/* The part below the limit did land. */
	assert_bytes(b, 60 * 1024, 4096, 0x42);
	assert_bytes(b, 64 * 1024, 4096, 0);
	blk_close(b);
}

/* CREATE | EXCL: a new file only, never through a symlink, nothing left
 * behind when the open fails after creating it. */
static void test_create_excl(void **state)
{
	struct fixture *fx = *state;
	char path[4200], link[4200];
	struct blk *b = NULL;
	struct stat st;

	/* The fixture's file exists: refused, and left as it was. */
	assert_int_equal(blk_file_open(fx->path, BLK_OPEN_CREATE | BLK_OPEN_EXCL, MiB, &b),
			 -EEXIST);
	assert_msg_contains("it exists already");
	assert_int_equal(file_size_of(fx->path), 0);

	snprintf(path, sizeof(path), "%s.new", fx->path);
	b = NULL;
	assert_int_equal(blk_file_open(path, BLK_OPEN_CREATE | BLK_OPEN_EXCL, 2 * MiB, &b), 0);
	assert_int_equal(blk_size(b), 2 * MiB);
	blk_close(b);
	assert_int_equal(file_size_of(path), 2 * MiB);
	unlink(path);

	/* A symlink, to a file or dangling, is not followed. */
	snprintf(link, sizeof(link), "%s.link", fx->path);
	assert_int_equal(symlink(fx->path, link), 0);
	assert_int_equal(blk_file_open(link, BLK_OPEN_CREATE | BLK_OPEN_EXCL, MiB, &b), -EEXIST);
	assert_int_equal(file_size_of(fx->path), 0);
	unlink(link);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(blk_file_open(link, BLK_OPEN_CREATE | BLK_OPEN_EXCL, MiB, &b), -EEXIST);
	assert_int_equal(lstat(path, &st), -1);
	unlink(link);

	/* Created, then the resize fails (beyond the file size limit): gone. */
	{
		struct rlimit old, lim = { .rlim_cur = MiB, .rlim_max = RLIM_INFINITY };

		getrlimit(RLIMIT_FSIZE, &old);
		lim.rlim_max = old.rlim_max;
		signal(SIGXFSZ, SIG_IGN);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		assert_true(blk_file_open(path, BLK_OPEN_CREATE | BLK_OPEN_EXCL, 4 * MiB, &b) < 0);
		setrlimit(RLIMIT_FSIZE, &old);
		assert_int_equal(lstat(path, &st), -1);
	}
	assert_int_equal(blk_file_open(path, BLK_OPEN_EXCL, MiB, &b), -EINVAL);
}

#define FT(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

/* ---- direct I/O (BLK_OPEN_DIRECT) ----------------------------------------- */

/* A size that is not a multiple of the direct-I/O alignment. */
#define ODD_SIZE (3 * 4096 + 1000)
/* The image of test_cached_reads(). */
#define CACHED_SIZE (256 * 1024)

/* The file's bytes as a plain buffered read sees them. */
static void read_plain(const char *path, uint8_t *buf, size_t len)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
	close(fd);
}

/*
 * Writes and reads of every shape through a device opened for direct I/O
 * (whichever way the file system took it): aligned ones, an unaligned
 * buffer, offset and length, and the partial last block; the file holds
 * exactly what was written, and keeps its size.
 */
static void check_direct_io(const char *path, unsigned flag, enum blk_cache want1,
			    enum blk_cache want2)
{
	struct blk *b;
	uint8_t *abuf, *want, *got;
	enum blk_cache c;

	unlink(path);
	b = open_or_fail(path, BLK_OPEN_CREATE | BLK_OPEN_EXCL | flag, ODD_SIZE);
	c = blk_file_cache(b);
	if (c != want1 && c != want2)
		fail_msg("cache mode %d, want %d or %d", (int)c, (int)want1, (int)want2);
	assert_int_equal(posix_memalign((void **)&abuf, 4096, 4 * 4096), 0);
	want = malloc(ODD_SIZE);
	got = malloc(ODD_SIZE + 1);
	assert_non_null(want);
	assert_non_null(got);
	for (size_t i = 0; i < ODD_SIZE; i++)
		want[i] = (uint8_t)(i * 7 + 3);
	/* The whole device from an aligned buffer: three blocks direct, the
	 * 1000-byte tail buffered. */
	memcpy(abuf, want, ODD_SIZE);
	assert_int_equal(blk_pwrite(b, abuf, ODD_SIZE, 0), 0);
	/* Aligned block in the middle. */
	memset(want + 4096, 0x5a, 4096);
	memset(abuf, 0x5a, 4096);
	assert_int_equal(blk_pwrite(b, abuf, 4096, 4096), 0);
	/* Unaligned buffer (goes buffered). */
	memset(want + 8192, 0xa5, 4096);
	memset(got + 1, 0xa5, 4096);
	assert_int_equal(blk_pwrite(b, got + 1, 4096, 8192), 0);
	/* Unaligned offset and length. */
	memset(want + 100, 0x11, 5000);
	memset(abuf, 0x11, 5000);
	assert_int_equal(blk_pwrite(b, abuf, 5000, 100), 0);
	/* Aligned offset, length ending in the tail. */
	memset(want + 8192, 0x22, ODD_SIZE - 8192);
	memset(abuf, 0x22, ODD_SIZE - 8192);
	assert_int_equal(blk_pwrite(b, abuf, ODD_SIZE - 8192, 8192), 0);
	assert_int_equal(blk_flush(b), 0);

	/* Read back through the device: aligned, unaligned buffer, tail. */
	memset(abuf, 0, 4 * 4096);
	assert_int_equal(blk_pread(b, abuf, ODD_SIZE, 0), 0);
	assert_memory_equal(abuf, want, ODD_SIZE);
	assert_int_equal(blk_pread(b, got + 1, ODD_SIZE - 4096, 4096), 0);
	assert_memory_equal(got + 1, want + 4096, ODD_SIZE - 4096);
	assert_int_equal(blk_pread(b, abuf, 1000, 3 * 4096), 0);
	assert_memory_equal(abuf, want + 3 * 4096, 1000);
	/* Past the end: refused, nothing written. */
	assert_int_equal(blk_pwrite(b, abuf, 4096, 3 * 4096), -ERANGE);
	blk_close(b);

	assert_int_equal(file_size_of(path), ODD_SIZE);
	read_plain(path, got, ODD_SIZE);
	assert_memory_equal(got, want, ODD_SIZE);
	free(abuf);
	free(want);
	free(got);
	unlink(path);
}

static void test_direct_io(void **state)
{
	struct fixture *fx = *state;

	/* A file system that refuses O_DIRECT falls back; either way the
	 * data must be right. */
	check_direct_io(fx->path, BLK_OPEN_DIRECT, BLK_CACHE_NONE, BLK_CACHE_REFUSED);
}

static void test_direct_refused(void **state)
{
	struct fixture *fx = *state;

	setenv("BLKMIG_TEST_REFUSE_O_DIRECT", "1", 1);
	check_direct_io(fx->path, BLK_OPEN_DIRECT, BLK_CACHE_REFUSED, BLK_CACHE_REFUSED);
	unsetenv("BLKMIG_TEST_REFUSE_O_DIRECT");
}

/* tmpfs refuses O_DIRECT before Linux 6.6 and takes it since. */
static void test_direct_tmpfs(void **state)
{
	char path[64];
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/dev/shm/blkmig-test-direct-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0) {
		print_message("no /dev/shm\n");
		skip();
	}
	close(fd);
	check_direct_io(path, BLK_OPEN_DIRECT, BLK_CACHE_NONE, BLK_CACHE_REFUSED);
}

/* This process's read_bytes in /proc/self/io: what it made the block
 * layer read (a direct read counts; a copy from the page cache does not). */
static uint64_t io_read_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	uint64_t v = UINT64_MAX;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "read_bytes: %" SCNu64, &v) == 1)
			break;
	fclose(f);
	assert_true(v != UINT64_MAX);
	return v;
}

/* How many of the pages of [0, len) of fd the page cache holds. */
static size_t resident_pages(int fd, size_t len)
{
	unsigned char vec[CACHED_SIZE / 4096];
	size_t n = 0;
	void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);

	assert_true(m != MAP_FAILED);
	assert_int_equal(mincore(m, len, vec), 0);
	for (size_t i = 0; i < len / 4096; i++)
		n += vec[i] & 1;
	munmap(m, len);
	return n;
}

/*
 * BLK_OPEN_CACHED_READS: what the page cache holds whole is read from it
 * (the disk is not read again; a page dirty there is seen at once), and
 * what it does not hold is read directly (and not left in the cache).
 */
static void test_cached_reads(void **state)
{
	struct fixture *fx = *state;
	struct blk *b;
	uint8_t *want, *got;
	uint64_t before;
	int fd;

	want = malloc(CACHED_SIZE);
	assert_non_null(want);
	assert_int_equal(posix_memalign((void **)&got, 4096, CACHED_SIZE), 0);
	for (size_t i = 0; i < CACHED_SIZE; i++)
		want[i] = (uint8_t)(i * 13 + 1);
	fd = open(fx->path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, want, CACHED_SIZE, 0), CACHED_SIZE);
	assert_int_equal(fdatasync(fd), 0);
	b = open_or_fail(fx->path, BLK_OPEN_RDONLY | BLK_OPEN_DIRECT | BLK_OPEN_CACHED_READS, 0);
	if (blk_file_cache(b) != BLK_CACHE_NONE) {
		print_message("no O_DIRECT under %s\n", tmp_dir());
		blk_close(b);
		close(fd);
		free(want);
		free(got);
		skip();
	}

	/* All in the cache, one page dirty: read from the cache. */
	want[4096 * 3] ^= 0xff;
	assert_int_equal(pwrite(fd, want + 4096 * 3, 1, 4096 * 3), 1);
	before = io_read_bytes();
	assert_int_equal(blk_pread(b, got, CACHED_SIZE, 0), 0);
	assert_memory_equal(got, want, CACHED_SIZE);
	assert_int_equal(io_read_bytes() - before, 0);

	/* Out of the cache (where the file system lets it go): read from the
	 * disk, and still not in the cache afterwards. */
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, CACHED_SIZE, POSIX_FADV_DONTNEED), 0);
	if (resident_pages(fd, CACHED_SIZE) == 0) {
		before = io_read_bytes();
		memset(got, 0, CACHED_SIZE);
		assert_int_equal(blk_pread(b, got, CACHED_SIZE, 0), 0);
		assert_memory_equal(got, want, CACHED_SIZE);
		assert_true(io_read_bytes() - before >= CACHED_SIZE);
		assert_int_equal(resident_pages(fd, CACHED_SIZE), 0);

		/* Half of it back in the cache (no read-ahead beyond it): not
		 * whole, so read directly. */
		assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
		assert_int_equal(pread(fd, want, CACHED_SIZE / 2, 0), CACHED_SIZE / 2);
		memset(got, 0, CACHED_SIZE);
		assert_int_equal(blk_pread(b, got, CACHED_SIZE, 0), 0);
		assert_memory_equal(got, want, CACHED_SIZE);
		assert_int_equal(resident_pages(fd, CACHED_SIZE), CACHED_SIZE / 2 / 4096);
	} else {
		print_message("the file system under %s keeps pages in the cache\n", tmp_dir());
	}
	blk_close(b);
	close(fd);
	free(want);
	free(got);
}

static void test_cache_mode_buffered(void **state)
{
	struct fixture *fx = *state;
	struct blk *b = open_or_fail(fx->path, BLK_OPEN_CREATE, 8192);

	assert_int_equal(blk_file_cache(b), BLK_CACHE_WRITEBACK);
	blk_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		FT(test_create_new),
		FT(test_create_extends_empty),
		FT(test_create_keeps_existing),
		FT(test_create_excl),
		FT(test_open_missing),
		FT(test_open_bad_args),
		FT(test_rw_round_trip),
		FT(test_zero),
		FT(test_zero_may_trim_makes_hole),
		FT(test_trim),
		FT(test_block_status),
		FT(test_is_hole),
		FT(test_range_errors),
		FT(test_readonly),
		FT(test_write_error_message),
		FT(test_direct_io),
		FT(test_direct_refused),
		FT(test_direct_tmpfs),
		FT(test_cached_reads),
		FT(test_cache_mode_buffered),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
