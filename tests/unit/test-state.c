/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for src/state/state.c: round trips of both records (a PARTIAL
 * destination record with a small and a 1M-chunk bitmap, AWAITING, the
 * source's handover), every corrupt byte and every truncation refused with
 * -EBADMSG, well-checksummed records with bad fields refused, a symlink
 * planted at the record path not written through, no temporary left
 * behind, and where state lives: beside a file, or in the state directory
 * under a block device's identity (a fake sysfs over a mknod'ed node, and a
 * real loop device when running as root).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxhash.h>

#include "bitmap/dirty.h"
#include "common/error.h"
#include "common/util.h"
#include "state/state.h"

static char dir[PATH_MAX / 4];
static char loopdev[64];

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	(void)state;
	snprintf(dir, sizeof(dir), "%s/test-state-XXXXXX", tmp);
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* After each test: the defaults back, a loop device detached. */
static int reset(void **state)
{
	char cmd[128];

	(void)state;
	state_set_dir(NULL);
	state_set_sysfs(NULL);
	if (loopdev[0]) {
		snprintf(cmd, sizeof(cmd), "losetup -d %s", loopdev);
		if (system(cmd) != 0)
			return -1;
		loopdev[0] = '\0';
	}
	return 0;
}

static void make_file(char *path, size_t cap, const char *name, const char *content)
{
	int fd;

	snprintf(path, cap, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat sb;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	buf = malloc((size_t)sb.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)sb.st_size), sb.st_size);
	close(fd);
	*len = (size_t)sb.st_size;
	return buf;
}

static void spit(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

/* Recompute the trailing checksum, so a test can reach the field checks. */
static void reseal(uint8_t *buf, size_t len)
{
	put_be64(buf + len - 8, XXH3_64bits(buf, len - 8));
}

static void fill_id(uint8_t *id, uint8_t seed)
{
	int i;

	for (i = 0; i < STATE_ID_LEN; i++)
		id[i] = (uint8_t)(seed + i * 7);
}

static void assert_same_bits(const struct dirty *a, const struct dirty *b)
{
	uint64_t len = dirty_raw_len(a);
	uint8_t *x, *y;

	assert_int_equal(dirty_nchunks(a), dirty_nchunks(b));
	assert_int_equal(dirty_count(a), dirty_count(b));
	x = malloc(len);
	y = malloc(len);
	assert_non_null(x);
	assert_non_null(y);
	dirty_export(a, x);
	dirty_export(b, y);
	assert_memory_equal(x, y, len);
	free(x);
	free(y);
}

/* A PARTIAL record for an image: size bytes at 64 KiB, held bits given. */
static void partial_rec(struct dst_rec *r, uint64_t size)
{
	memset(r, 0, sizeof(*r));
	fill_id(r->id, 1);
	r->state = DST_REC_PARTIAL;
	r->chunk_size = 64 * 1024;
	r->size = size;
	r->st_dev = 0x0123456789abcdefULL;
	r->st_ino = 42;
	r->held = dirty_new(size, r->chunk_size);
	assert_non_null(r->held);
}

static void assert_dst_equal(const struct dst_rec *a, const struct dst_rec *b)
{
	assert_memory_equal(a->id, b->id, STATE_ID_LEN);
	assert_int_equal(a->state, b->state);
	assert_int_equal(a->attempt, b->attempt);
	assert_int_equal(a->chunk_size, b->chunk_size);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->st_dev, b->st_dev);
	assert_int_equal(a->st_ino, b->st_ino);
	assert_memory_equal(a->digest, b->digest, 16);
	assert_int_equal(a->chunks, b->chunks);
	if (a->held)
		assert_same_bits(a->held, b->held);
	else
		assert_null(b->held);
}

/* ---- round trips ----------------------------------------------------------- */

static void test_partial_small(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32];
	struct dst_rec r, back;

	(void)state;
	make_file(img, sizeof(img), "small.img", "");
	/* A partial last chunk, and bits in the first and last words. */
	partial_rec(&r, 10 * MiB + 1000);
	dirty_mark(r.held, 0, 1);
	dirty_mark(r.held, 3 * 65536, 2 * 65536);
	dirty_mark(r.held, 10 * MiB, 1000);
	assert_int_equal(dst_rec_save(img, &r), 0);
	snprintf(rec, sizeof(rec), "%s%s", img, DST_REC_SUFFIX);
	assert_int_equal(access(rec, F_OK), 0);
	memset(&back, 0xff, sizeof(back));
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_dst_equal(&r, &back);
	assert_int_equal(dirty_count(back.held), 4);
	assert_true(dirty_test(back.held, 160));
	dst_rec_release(&back);
	assert_null(back.held);
	dst_rec_release(&back); /* twice is fine */
	dst_rec_release(NULL);
	dst_rec_release(&r);
}

static void test_partial_large(void **state)
{
	char img[PATH_MAX];
	struct dst_rec r, back;
	uint64_t c, seed = 12345;

	(void)state;
	make_file(img, sizeof(img), "large.img", "");
	partial_rec(&r, (UINT64_C(1) << 20) * 65536); /* 1 Mi chunks */
	assert_int_equal(dirty_nchunks(r.held), 1u << 20);
	for (c = 0; c < (1u << 20); c += 1 + seed % 97) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		dirty_mark(r.held, c * 65536, 1);
	}
	dirty_mark(r.held, ((UINT64_C(1) << 20) - 1) * 65536, 1);
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_dst_equal(&r, &back);
	dst_rec_release(&back);
	/* All set, and none. */
	dirty_mark_all(r.held);
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_int_equal(dirty_count(back.held), 1u << 20);
	dst_rec_release(&back);
	dirty_clear_all(r.held);
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_int_equal(dirty_count(back.held), 0);
	dst_rec_release(&back);
	dst_rec_release(&r);
}

static void test_awaiting(void **state)
{
	char img[PATH_MAX];
	struct dst_rec r, back;
	int i;

	(void)state;
	make_file(img, sizeof(img), "await.img", "");
	memset(&r, 0, sizeof(r));
	fill_id(r.id, 9);
	r.state = DST_REC_AWAITING;
	r.attempt = 3;
	r.chunk_size = 1 << 20;
	r.size = 5 * GiB + 512;
	r.st_ino = 7;
	for (i = 0; i < 16; i++)
		r.digest[i] = (uint8_t)(0xa0 + i);
	r.chunks = 5 * 1024 + 1;
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_dst_equal(&r, &back);
	assert_null(back.held);
	dst_rec_release(&back);
	/* A held bitmap on an AWAITING record is ignored. */
	r.held = dirty_new(MiB, 4096);
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_null(back.held);
	dst_rec_release(&r);
}

static void test_src_roundtrip(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32];
	struct src_rec r, back;

	(void)state;
	make_file(img, sizeof(img), "src.img", "");
	memset(&r, 0, sizeof(r));
	fill_id(r.id, 77);
	r.attempt = 2;
	snprintf(r.dest, sizeof(r.dest), "10.0.0.2:7000");
	r.when = 1800000000;
	r.st_dev = 5;
	r.st_ino = 6;
	assert_int_equal(src_rec_save(img, &r), 0);
	snprintf(rec, sizeof(rec), "%s%s", img, SRC_REC_SUFFIX);
	assert_int_equal(access(rec, F_OK), 0);
	assert_int_equal(src_rec_load(img, &back), 0);
	assert_memory_equal(&r, &back, sizeof(r));
	/* The longest destination, and an empty one. */
	memset(r.dest, 'x', sizeof(r.dest) - 1);
	r.dest[sizeof(r.dest) - 1] = '\0';
	assert_int_equal(src_rec_save(img, &r), 0);
	assert_int_equal(src_rec_load(img, &back), 0);
	assert_string_equal(back.dest, r.dest);
	r.dest[0] = '\0';
	assert_int_equal(src_rec_save(img, &r), 0);
	assert_int_equal(src_rec_load(img, &back), 0);
	assert_string_equal(back.dest, "");
	assert_int_equal(src_rec_clear(img), 0);
	assert_int_equal(src_rec_load(img, &back), -ENOENT);
}

/* src_rec_init(): a destination from anywhere is stored printable, and cut
 * to fit, so that saving it never fails on it. */
static void test_src_init(void **state)
{
	char img[PATH_MAX], longest[400];
	uint8_t id[STATE_ID_LEN];
	struct src_rec r, back;

	(void)state;
	make_file(img, sizeof(img), "init.img", "");
	fill_id(id, 5);
	src_rec_init(&r, id, 3, "host\x1b[2J:70\x7f\xc3\xa9");
	assert_memory_equal(r.id, id, STATE_ID_LEN);
	assert_int_equal(r.attempt, 3);
	assert_true(r.when > 0);
	assert_string_equal(r.dest, "host?[2J:70???");
	assert_int_equal(src_rec_save(img, &r), 0);
	assert_int_equal(src_rec_load(img, &back), 0);
	assert_string_equal(back.dest, r.dest);
	memset(longest, 'h', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0';
	src_rec_init(&r, id, 0, longest);
	assert_int_equal(strlen(r.dest), sizeof(r.dest) - 1);
	assert_int_equal(src_rec_save(img, &r), 0);
	assert_int_equal(src_rec_clear(img), 0);
}

/*
 * src_rec_check_ours(): no record, or a migration not handed over yet, is
 * ours; a hand-over (or an unreadable record) is refused, naming where it
 * went and the command's --reclaim, and the record stays; reclaim removes
 * it, once.
 */
static void msg_has(const char *what)
{
	if (!strstr(err_msg(), what))
		fail_msg("message \"%s\" lacks \"%s\"", err_msg(), what);
}

static void test_src_check_ours(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32];
	uint8_t id[STATE_ID_LEN];
	struct src_rec r;
	bool reclaimed = true;
	FILE *f;

	(void)state;
	make_file(img, sizeof(img), "ours.img", "");
	assert_int_equal(src_rec_check_ours(img, "send", false, &reclaimed), 0);
	assert_false(reclaimed);
	fill_id(id, 9);
	src_rec_init(&r, id, 0, "10.0.0.2:7000");
	assert_int_equal(src_rec_save(img, &r), 0);
	assert_int_equal(src_rec_check_ours(img, "send", false, &reclaimed), 0);
	assert_int_equal(src_rec_load(img, &r), 0); /* in progress: kept */

	src_rec_init(&r, id, 2, "10.0.0.2:7000");
	assert_int_equal(src_rec_save(img, &r), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(src_rec_check_ours(img, "serve", false, &reclaimed), -EUCLEAN);
		assert_false(reclaimed);
		msg_has("ours.img was handed over to 10.0.0.2:7000 at ");
		msg_has("(switch-over attempt 2)");
		msg_has("refusing to serve it (serve --reclaim takes it back, once");
	}
	assert_int_equal(src_rec_check_ours(img, "send", true, &reclaimed), 0);
	assert_true(reclaimed);
	assert_int_equal(src_rec_load(img, &r), -ENOENT);
	assert_int_equal(src_rec_check_ours(img, "send", true, &reclaimed), 0);
	assert_false(reclaimed);

	snprintf(rec, sizeof(rec), "%s%s", img, SRC_REC_SUFFIX);
	f = fopen(rec, "w");
	assert_non_null(f);
	fputs("not a record", f);
	fclose(f);
	assert_int_equal(src_rec_check_ours(img, "send", false, &reclaimed), -EUCLEAN);
	msg_has("ours.img has an unreadable hand-over record: refusing to send it (send "
		"--reclaim takes it back)");
	assert_int_equal(access(rec, F_OK), 0);
	assert_int_equal(src_rec_check_ours(img, "send", true, &reclaimed), 0);
	assert_true(reclaimed);
	assert_int_equal(access(rec, F_OK), -1);
}

/* ---- refusals -------------------------------------------------------------- */

static void test_missing_and_clear(void **state)
{
	char img[PATH_MAX];
	struct dst_rec r;
	struct src_rec s;

	(void)state;
	make_file(img, sizeof(img), "none.img", "");
	assert_int_equal(dst_rec_load(img, &r), -ENOENT);
	assert_null(r.held);
	assert_int_equal(src_rec_load(img, &s), -ENOENT);
	assert_int_equal(dst_rec_clear(img), 0);
	assert_int_equal(src_rec_clear(img), 0);
	/* A missing image has no records either. */
	snprintf(img, sizeof(img), "%s/gone/none.img", dir);
	assert_int_equal(dst_rec_load(img, &r), -ENOENT);
	assert_int_equal(dst_rec_clear(img), 0);
	/* Saved, then cleared. */
	make_file(img, sizeof(img), "cleared.img", "");
	partial_rec(&r, MiB);
	assert_int_equal(dst_rec_save(img, &r), 0);
	dst_rec_release(&r);
	assert_int_equal(dst_rec_clear(img), 0);
	assert_int_equal(dst_rec_load(img, &r), -ENOENT);
}

/* Save a small PARTIAL record for img and return the file's bytes. */
static uint8_t *saved_partial(const char *img, char *rec, size_t cap, size_t *len)
{
	struct dst_rec r;

	partial_rec(&r, 1 * MiB + 4096); /* 17 chunks: a 3-byte bitmap */
	dirty_mark(r.held, 0, 1);
	dirty_mark(r.held, MiB, 1);
	assert_int_equal(dst_rec_save(img, &r), 0);
	dst_rec_release(&r);
	snprintf(rec, cap, "%s%s", img, DST_REC_SUFFIX);
	return slurp(rec, len);
}

static void expect_dst_bad(const char *img, const char *what)
{
	struct dst_rec r;

	assert_int_equal(dst_rec_load(img, &r), -EBADMSG);
	assert_null(r.held);
	if (!strstr(err_msg(), what))
		fail_msg("message \"%s\" lacks \"%s\"", err_msg(), what);
}

static void test_corrupt_every_byte(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32];
	size_t len, i;
	uint8_t *good, *bad;
	struct src_rec s;

	(void)state;
	make_file(img, sizeof(img), "corrupt.img", "");
	good = saved_partial(img, rec, sizeof(rec), &len);
	assert_int_equal(len, 16 + 88 + 3 + 8);
	bad = malloc(len);
	assert_non_null(bad);
	for (i = 0; i < len; i++) {
		memcpy(bad, good, len);
		bad[i] ^= (uint8_t)(1u << (i % 8));
		spit(rec, bad, len);
		expect_dst_bad(img, rec);
	}
	free(bad);
	free(good);

	/* The handover record too. */
	memset(&s, 0, sizeof(s));
	snprintf(s.dest, sizeof(s.dest), "host:1");
	assert_int_equal(src_rec_save(img, &s), 0);
	snprintf(rec, sizeof(rec), "%s%s", img, SRC_REC_SUFFIX);
	good = slurp(rec, &len);
	assert_int_equal(len, 16 + 50 + 6 + 8);
	bad = malloc(len);
	assert_non_null(bad);
	for (i = 0; i < len; i++) {
		memcpy(bad, good, len);
		bad[i] ^= 0x80;
		spit(rec, bad, len);
		assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	}
	free(bad);
	free(good);
}

static void test_truncated(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32];
	size_t len, i;
	uint8_t *good;

	(void)state;
	make_file(img, sizeof(img), "trunc.img", "");
	good = saved_partial(img, rec, sizeof(rec), &len);
	for (i = 0; i < len; i++) {
		spit(rec, good, i);
		expect_dst_bad(img, "truncated");
	}
	/* A byte too many. */
	good = realloc(good, len + 1);
	assert_non_null(good);
	good[len] = 0;
	spit(rec, good, len + 1);
	expect_dst_bad(img, "corrupt");
	free(good);
}

/* Fields changed with the checksum fixed up: each check on its own. */
static void test_bad_fields(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32], hrec[PATH_MAX + 32];
	size_t len;
	uint8_t *good, *bad;
	struct src_rec s;

	(void)state;
	make_file(img, sizeof(img), "fields.img", "");
	good = saved_partial(img, rec, sizeof(rec), &len);
	bad = malloc(len + 64);
	assert_non_null(bad);

#define BAD_FIELD(edit, what)                                                                      \
	do {                                                                                       \
		memcpy(bad, good, len);                                                            \
		edit;                                                                              \
		reseal(bad, len);                                                                  \
		spit(rec, bad, len);                                                               \
		expect_dst_bad(img, what);                                                         \
	} while (0)

	BAD_FIELD(memcpy(bad, "BLKMIGXX", 8), "bad magic");
	BAD_FIELD(put_be16(bad + 8, 2), "version 2");
	BAD_FIELD(bad[10] = 2, "kind 2, expected 1");
	BAD_FIELD(bad[10] = 0, "kind 0");
	BAD_FIELD(bad[11] = 1, "reserved");
	BAD_FIELD(put_be32(bad + 16 + 16, 3), "unknown state 3");
	BAD_FIELD(put_be32(bad + 16 + 28, 1), "reserved");
	BAD_FIELD(put_be32(bad + 16 + 24, 4096 + 512), "bad geometry");
	BAD_FIELD(put_be32(bad + 16 + 24, 256), "bad geometry");
	BAD_FIELD(put_be64(bad + 16 + 32, 0), "bad geometry");
	/* A size whose bitmap is longer or shorter than the one stored. */
	BAD_FIELD(put_be64(bad + 16 + 32, 2 * MiB), "bitmap");
	BAD_FIELD(put_be64(bad + 16 + 32, 512 * 1024), "bitmap");
	/* The stored length disagrees with the body. */
	BAD_FIELD(put_be64(bad + 16 + 80, 4), "bitmap");
	/* AWAITING with a bitmap. */
	BAD_FIELD(put_be32(bad + 16 + 16, DST_REC_AWAITING), "bitmap");
	/* A bit past the 17th chunk. */
	BAD_FIELD(bad[16 + 88 + 2] |= 0x04, "past the last chunk");
	/* A body too short for the fixed fields. */
	memcpy(bad, good, 16);
	put_be32(bad + 12, 10);
	memset(bad + 16, 0, 10);
	reseal(bad, 16 + 10 + 8);
	spit(rec, bad, 16 + 10 + 8);
	expect_dst_bad(img, "at least 88");

	/* A destination record is not a handover record. */
	snprintf(hrec, sizeof(hrec), "%s%s", img, SRC_REC_SUFFIX);
	spit(hrec, good, len);
	assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	assert_non_null(strstr(err_msg(), "expected 2 (source handover record)"));

	/* Handover: a destination that is not printable, one longer than the
	 * body, a short body, a reserved field. */
	memset(&s, 0, sizeof(s));
	snprintf(s.dest, sizeof(s.dest), "ab");
	assert_int_equal(src_rec_save(img, &s), 0);
	free(good);
	good = slurp(hrec, &len);
	memcpy(bad, good, len);
	bad[16 + 50] = '\n';
	reseal(bad, len);
	spit(hrec, bad, len);
	assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	assert_non_null(strstr(err_msg(), "not printable"));
	memcpy(bad, good, len);
	put_be16(bad + 16 + 48, 3);
	reseal(bad, len);
	spit(hrec, bad, len);
	assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	assert_non_null(strstr(err_msg(), "destination of 3 bytes"));
	memcpy(bad, good, len);
	put_be32(bad + 16 + 20, 1);
	reseal(bad, len);
	spit(hrec, bad, len);
	assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	assert_non_null(strstr(err_msg(), "reserved"));
	memcpy(bad, good, 16);
	put_be32(bad + 12, 4);
	memset(bad + 16, 0, 4);
	reseal(bad, 16 + 4 + 8);
	spit(hrec, bad, 16 + 4 + 8);
	assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	assert_non_null(strstr(err_msg(), "at least 50"));

	/* Not a regular file. */
	unlink(hrec);
	assert_int_equal(mkdir(hrec, 0700), 0);
	assert_int_equal(src_rec_load(img, &s), -EBADMSG);
	assert_non_null(strstr(err_msg(), "not a regular file"));
	rmdir(hrec);
	free(bad);
	free(good);
#undef BAD_FIELD
}

static void test_save_refusals(void **state)
{
	char img[PATH_MAX];
	struct dst_rec r;
	struct src_rec s;

	(void)state;
	make_file(img, sizeof(img), "refuse.img", "");
	partial_rec(&r, MiB);
	r.state = 0;
	assert_int_equal(dst_rec_save(img, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "bad state"));
	r.state = DST_REC_PARTIAL;
	r.chunk_size = 3000;
	assert_int_equal(dst_rec_save(img, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "bad geometry"));
	r.chunk_size = 65536;
	r.size = 2 * MiB;
	assert_int_equal(dst_rec_save(img, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "bitmap covers"));
	r.size = MiB;
	dst_rec_release(&r);
	assert_int_equal(dst_rec_save(img, &r), -EINVAL);
	assert_non_null(strstr(err_msg(), "without a bitmap"));

	memset(&s, 0, sizeof(s));
	snprintf(s.dest, sizeof(s.dest), "a\033[2Jb");
	assert_int_equal(src_rec_save(img, &s), -EINVAL);
	assert_non_null(strstr(err_msg(), "not printable"));
	memset(s.dest, 'a', sizeof(s.dest)); /* no NUL */
	assert_int_equal(src_rec_save(img, &s), -EINVAL);
	s.dest[0] = (char)0xc3;
	s.dest[1] = '\0';
	assert_int_equal(src_rec_save(img, &s), -EINVAL);
	assert_int_equal(src_rec_load(img, &s), -ENOENT); /* nothing written */

	/* A directory that is not there. */
	snprintf(img, sizeof(img), "%s/no-such-dir/x.img", dir);
	partial_rec(&r, MiB);
	assert_int_equal(dst_rec_save(img, &r), -ENOENT);
	assert_non_null(strstr(err_msg(), "no-such-dir"));
	dst_rec_release(&r);
}

/* ---- atomic replacement ---------------------------------------------------- */

static int count_temps(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strstr(e->d_name, ".tmp.") != NULL;
	closedir(d);
	return n;
}

static void test_symlink_not_followed(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32], target[PATH_MAX], buf[16];
	struct dst_rec r, back;
	struct stat sb;
	int fd;

	(void)state;
	make_file(img, sizeof(img), "link.img", "");
	make_file(target, sizeof(target), "precious", "keep");
	snprintf(rec, sizeof(rec), "%s%s", img, DST_REC_SUFFIX);
	assert_int_equal(symlink(target, rec), 0);
	/* Loading does not follow it. */
	assert_int_equal(dst_rec_load(img, &back), -ELOOP);
	assert_non_null(strstr(err_msg(), "symbolic link"));
	/* Saving replaces the link, never writes through it. */
	partial_rec(&r, MiB);
	dirty_mark(r.held, 0, MiB);
	assert_int_equal(dst_rec_save(img, &r), 0);
	fd = open(target, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	close(fd);
	assert_memory_equal(buf, "keep", 4);
	assert_int_equal(lstat(rec, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_same_bits(r.held, back.held);
	dst_rec_release(&back);
	dst_rec_release(&r);
	/* Clearing a link removes the link only. */
	unlink(rec);
	assert_int_equal(symlink(target, rec), 0);
	assert_int_equal(dst_rec_clear(img), 0);
	assert_int_equal(access(target, F_OK), 0);
	assert_int_equal(lstat(rec, &sb), -1);
}

/* Where the record cannot be replaced or removed: an error naming it,
 * and no temporary left behind. */
static void test_replace_fails(void **state)
{
	char img[PATH_MAX], rec[PATH_MAX + 32], sub[PATH_MAX + 64];
	struct src_rec s;

	(void)state;
	make_file(img, sizeof(img), "blocked.img", "");
	snprintf(rec, sizeof(rec), "%s%s", img, SRC_REC_SUFFIX);
	snprintf(sub, sizeof(sub), "%s/x", rec);
	assert_int_equal(mkdir(rec, 0700), 0);
	assert_int_equal(mkdir(sub, 0700), 0);
	memset(&s, 0, sizeof(s));
	assert_true(src_rec_save(img, &s) < 0);
	assert_non_null(strstr(err_msg(), "rename"));
	assert_int_equal(count_temps(), 0);
	assert_true(src_rec_clear(img) < 0);
	assert_non_null(strstr(err_msg(), "clear"));
	assert_int_equal(rmdir(sub), 0);
	assert_int_equal(rmdir(rec), 0);
}

static void test_replace_no_temp(void **state)
{
	char img[PATH_MAX];
	struct dst_rec r, back;
	struct src_rec s, sback;

	(void)state;
	make_file(img, sizeof(img), "replace.img", "");
	partial_rec(&r, 4 * MiB);
	dirty_mark(r.held, 0, 65536);
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(count_temps(), 0);
	dirty_mark(r.held, 2 * MiB, 65536);
	r.attempt = 9;
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(count_temps(), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_int_equal(back.attempt, 9);
	assert_int_equal(dirty_count(back.held), 2);
	dst_rec_release(&back);
	/* PARTIAL, then AWAITING over it. */
	dst_rec_release(&r);
	r.state = DST_REC_AWAITING;
	assert_int_equal(dst_rec_save(img, &r), 0);
	assert_int_equal(dst_rec_load(img, &back), 0);
	assert_int_equal(back.state, DST_REC_AWAITING);
	assert_null(back.held);

	memset(&s, 0, sizeof(s));
	snprintf(s.dest, sizeof(s.dest), "first");
	assert_int_equal(src_rec_save(img, &s), 0);
	snprintf(s.dest, sizeof(s.dest), "second");
	assert_int_equal(src_rec_save(img, &s), 0);
	assert_int_equal(src_rec_load(img, &sback), 0);
	assert_string_equal(sback.dest, "second");
	assert_int_equal(count_temps(), 0);
}

/* ---- where state lives ----------------------------------------------------- */

static void test_state_dir(void **state)
{
	char big[PATH_MAX + 10];

	(void)state;
	assert_string_equal(state_dir(), "/var/lib/blkmig");
	state_set_dir("/x/y");
	assert_string_equal(state_dir(), "/x/y");
	state_set_dir(NULL);
	assert_string_equal(state_dir(), STATE_DEFAULT_DIR);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	state_set_dir(big); /* reported by state_path() for block devices */
	state_set_dir(NULL);
}

static void test_path_regular(void **state)
{
	char img[PATH_MAX], out[PATH_MAX], want[PATH_MAX + 32];

	(void)state;
	state_set_dir("/nonexistent/never-used");
	make_file(img, sizeof(img), "reg.img", "");
	assert_int_equal(state_path(img, ".sfx", true, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "%s.sfx", img);
	assert_string_equal(out, want);
	/* Missing: beside it too (an image about to be created). */
	snprintf(img, sizeof(img), "%s/missing/new.img", dir);
	assert_int_equal(state_path(img, ".sfx", false, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "%s.sfx", img);
	assert_string_equal(out, want);
	/* Too small a buffer. */
	assert_int_equal(state_path(img, ".sfx", false, out, 8), -ENAMETOOLONG);
	assert_non_null(strstr(err_msg(), "too long"));
	/* Neither a file nor a block device: the state dir is not used. */
	assert_int_equal(state_identity(dir, out, sizeof(out)), -ENOTBLK);
	assert_non_null(strstr(err_msg(), "not a block device"));
	assert_int_equal(state_identity(img, out, sizeof(out)), -ENOENT);
	assert_non_null(strstr(err_msg(), "new.img"));
}

static void test_path_unreadable(void **state)
{
	char sub[PATH_MAX], img[PATH_MAX + 16], out[PATH_MAX];

	(void)state;
	if (geteuid() == 0)
		skip(); /* root reads anything */
	snprintf(sub, sizeof(sub), "%s/locked", dir);
	assert_int_equal(mkdir(sub, 0000), 0);
	snprintf(img, sizeof(img), "%s/x.img", sub);
	assert_int_equal(state_path(img, ".sfx", false, out, sizeof(out)), -EACCES);
	rmdir(sub);
}

/* ---- block devices: a fake sysfs over a mknod'ed node ---------------------- */

static char sys[PATH_MAX / 4 + 8];

static char devdir[64]; /* "dev/block/MAJ:MIN" of the node under test */
static char devno[64];	/* and its fallback identity */

/*
 * A block device node at dir/node-MIN: made with mknod as 240:MIN (a number
 * for local use), or without CAP_MKNOD a symlink to the first block device
 * in /dev (only stat()ed, never opened); skip when neither works.  Sets
 * devdir and devno for it.
 */
static void make_node(char *path, size_t cap, unsigned int min)
{
	struct stat sb;

	snprintf(path, cap, "%s/node-%u", dir, min);
	unlink(path);
	if (mknod(path, S_IFBLK | 0600, makedev(240, min)) < 0) {
		DIR *d = opendir("/dev");
		struct dirent *e;
		char dev[PATH_MAX];
		bool found = false;

		while (d && !found && (e = readdir(d))) {
			snprintf(dev, sizeof(dev), "/dev/%s", e->d_name);
			found = stat(dev, &sb) == 0 && S_ISBLK(sb.st_mode);
		}
		if (d)
			closedir(d);
		if (!found || symlink(dev, path) < 0)
			skip();
	}
	assert_int_equal(stat(path, &sb), 0);
	snprintf(devdir, sizeof(devdir), "dev/block/%u:%u", major(sb.st_rdev), minor(sb.st_rdev));
	snprintf(devno, sizeof(devno), "devno-%u-%u", major(sb.st_rdev), minor(sb.st_rdev));
}

static void sys_write(const char *rel, const char *content)
{
	char path[PATH_MAX], cmd[PATH_MAX + 32], *slash;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", sys, rel);
	slash = strrchr(path, '/');
	*slash = '\0';
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
	assert_int_equal(system(cmd), 0);
	*slash = '/';
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

/* Write attribute attr of the node under test. */
static void dev_write(const char *attr, const char *content)
{
	char rel[PATH_MAX];

	snprintf(rel, sizeof(rel), "%s/%s", devdir, attr);
	sys_write(rel, content);
}

static void fresh_sysfs(void)
{
	char cmd[PATH_MAX + 32];

	snprintf(sys, sizeof(sys), "%s/sys", dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'; mkdir -p '%s/dev/block'", sys, sys);
	assert_int_equal(system(cmd), 0);
	state_set_sysfs(sys);
}

static void expect_identity(const char *node, const char *want)
{
	char id[STATE_IDENTITY_MAX + 1];

	assert_int_equal(state_identity(node, id, sizeof(id)), 0);
	assert_string_equal(id, want);
}

static void test_identity_sources(void **state)
{
	char node[PATH_MAX], back[PATH_MAX], want[PATH_MAX * 2], id[STATE_IDENTITY_MAX + 1];
	struct stat sb;

	(void)state;
	make_node(node, sizeof(node), 77);
	fresh_sysfs();
	/* Nothing known: the device number. */
	expect_identity(node, devno);
	/* Each source, the later ones shadowed by the earlier. */
	dev_write("device/serial", "  XYZ 1/2 \n");
	expect_identity(node, "serial-XYZ%201%2F2");
	dev_write("serial", "virt-7\n");
	expect_identity(node, "serial-virt-7");
	dev_write("device/wwid", "t10.ATA  disk\n");
	expect_identity(node, "wwid-t10.ATA%20%20disk");
	dev_write("wwid", "eui.0025\n");
	expect_identity(node, "wwid-eui.0025");
	dev_write("md/uuid", "a1b2:c3d4\n");
	expect_identity(node, "md-a1b2%3Ac3d4");
	dev_write("dm/uuid", "LVM-abc%def_\n");
	expect_identity(node, "dm-LVM-abc%25def_");
	/* An empty or blank attribute does not count. */
	dev_write("dm/uuid", "\n");
	dev_write("md/uuid", "   \n");
	expect_identity(node, "wwid-eui.0025");
	/* An attribute that cannot be read is an error, not a fallback. */
	snprintf(want, sizeof(want), "%s/%s/dm/uuid", sys, devdir);
	assert_int_equal(unlink(want), 0);
	assert_int_equal(mkdir(want, 0700), 0);
	assert_int_equal(state_identity(node, id, sizeof(id)), -EISDIR);
	assert_non_null(strstr(err_msg(), "dm/uuid"));
	assert_non_null(strstr(err_msg(), node));

	/* A loop device: path, inode, offset. */
	fresh_sysfs();
	make_file(back, sizeof(back), "back ing.img", "x");
	assert_int_equal(stat(back, &sb), 0);
	dev_write("loop/offset", "4096\n");
	snprintf(want, sizeof(want), "%s\n", back);
	dev_write("loop/backing_file", want);
	assert_int_equal(state_identity(node, id, sizeof(id)), 0);
	assert_non_null(strstr(id, "loop-%2F"));
	assert_non_null(strstr(id, "%2Fback%20ing.img-ino"));
	snprintf(want, sizeof(want), "-ino%llu-off4096", (unsigned long long)sb.st_ino);
	assert_non_null(strstr(id, want));
	/* Its backing file deleted: nothing stable. */
	snprintf(want, sizeof(want), "%s (deleted)\n", back);
	dev_write("loop/backing_file", want);
	expect_identity(node, devno);
	unlink(back);
}

static void test_identity_partition(void **state)
{
	char node[PATH_MAX], link[PATH_MAX];

	(void)state;
	make_node(node, sizeof(node), 78);
	fresh_sysfs();
	sys_write("devices/disk/disk3/partition", "3\n");
	snprintf(link, sizeof(link), "%s/%s", sys, devdir);
	assert_int_equal(symlink("../../devices/disk/disk3", link), 0);
	/* The parent has nothing stable: the partition's own number. */
	expect_identity(node, devno);
	sys_write("devices/disk/device/wwid", "naa.5000c5\n");
	expect_identity(node, "wwid-naa.5000c5-part3");
	/* A partition number that is not one. */
	sys_write("devices/disk/disk3/partition", "3x\n");
	expect_identity(node, devno);
}

static void test_identity_long(void **state)
{
	char node[PATH_MAX], val[1000], id1[STATE_IDENTITY_MAX + 1], id2[STATE_IDENTITY_MAX + 1];
	size_t len;

	(void)state;
	make_node(node, sizeof(node), 79);
	fresh_sysfs();
	memset(val, 'w', 400);
	strcpy(val + 400, "-one\n");
	dev_write("wwid", val);
	assert_int_equal(state_identity(node, id1, sizeof(id1)), 0);
	len = strlen(id1);
	assert_true(len <= STATE_IDENTITY_MAX);
	assert_memory_equal(id1, "wwid-www", 8);
	assert_int_equal(id1[len - 18], '-');
	assert_int_equal(id1[len - 17], 'h');
	assert_int_equal(state_identity(node, id2, sizeof(id2)), 0);
	assert_string_equal(id1, id2);
	/* Same prefix, another tail: another identity. */
	strcpy(val + 400, "-two\n");
	dev_write("wwid", val);
	assert_int_equal(state_identity(node, id2, sizeof(id2)), 0);
	assert_string_not_equal(id1, id2);
	/* Escapes are not cut in half. */
	memset(val, ' ', 400);
	val[0] = 'a';
	strcpy(val + 400, "z\n");
	dev_write("wwid", val);
	assert_int_equal(state_identity(node, id1, sizeof(id1)), 0);
	len = strlen(id1);
	assert_true(len <= STATE_IDENTITY_MAX);
	assert_memory_equal(id1 + len - 21, "%20-h", 5);
	/* Too small a buffer. */
	assert_int_equal(state_identity(node, id1, 20), -ENAMETOOLONG);
}

static void test_path_blockdev(void **state)
{
	char node[PATH_MAX], sdir[PATH_MAX], out[PATH_MAX], want[PATH_MAX * 2];
	struct dst_rec r, back;
	struct stat sb;
	char big[PATH_MAX + 10];

	(void)state;
	make_node(node, sizeof(node), 80);
	fresh_sysfs();
	dev_write("dm/uuid", "CRYPT-1\n");
	snprintf(sdir, sizeof(sdir), "%s/state/a/b", dir);
	state_set_dir(sdir);
	/* Without create_dir, only the name. */
	assert_int_equal(state_path(node, ".sfx", false, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "%s/dm-CRYPT-1.sfx", sdir);
	assert_string_equal(out, want);
	assert_int_equal(stat(sdir, &sb), -1);
	assert_int_equal(state_path(node, ".sfx", true, out, sizeof(out)), 0);
	assert_int_equal(stat(sdir, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	/* A record for the device lands there, not beside the node. */
	partial_rec(&r, 8 * MiB);
	dirty_mark(r.held, MiB, 1);
	assert_int_equal(dst_rec_save(node, &r), 0);
	snprintf(want, sizeof(want), "%s/dm-CRYPT-1%s", sdir, DST_REC_SUFFIX);
	assert_int_equal(access(want, F_OK), 0);
	snprintf(want, sizeof(want), "%s%s", node, DST_REC_SUFFIX);
	assert_int_equal(access(want, F_OK), -1);
	assert_int_equal(dst_rec_load(node, &back), 0);
	assert_same_bits(r.held, back.held);
	dst_rec_release(&back);
	assert_int_equal(dst_rec_clear(node), 0);
	assert_int_equal(dst_rec_load(node, &back), -ENOENT);

	/* The state directory path is a file. */
	snprintf(sdir, sizeof(sdir), "%s/state-file", dir);
	make_file(sdir, sizeof(sdir), "state-file", "");
	state_set_dir(sdir);
	assert_int_equal(dst_rec_save(node, &r), -ENOTDIR);
	assert_non_null(strstr(err_msg(), "not a directory"));
	snprintf(sdir, sizeof(sdir), "%s/state-file/sub", dir);
	state_set_dir(sdir);
	assert_int_equal(dst_rec_save(node, &r), -ENOTDIR);
	assert_non_null(strstr(err_msg(), "create state directory"));
	/* Too long a state directory. */
	memset(big, 'a', sizeof(big) - 1);
	big[0] = '/';
	big[sizeof(big) - 1] = '\0';
	state_set_dir(big);
	assert_int_equal(state_path(node, ".sfx", false, out, sizeof(out)), -ENAMETOOLONG);
	assert_non_null(strstr(err_msg(), "state directory"));
	state_set_dir(dir);
	assert_int_equal(state_path(node, ".sfx", false, out, 16), -ENAMETOOLONG);
	dst_rec_release(&r);
}

/* ---- block devices: a real loop device ------------------------------------- */

/* Attach a loop device over a small file in dir, or skip. */
static void attach_loop(char *backing, size_t cap)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	size_t n;

	if (geteuid() != 0)
		skip();
	make_file(backing, cap, "loop-backing.img", "");
	assert_int_equal(truncate(backing, MiB), 0);
	snprintf(cmd, sizeof(cmd), "losetup -f --show '%s' 2>/dev/null", backing);
	p = popen(cmd, "r");
	if (!p)
		skip();
	if (!fgets(loopdev, sizeof(loopdev), p))
		loopdev[0] = '\0';
	if (pclose(p) != 0 || !loopdev[0]) {
		loopdev[0] = '\0';
		skip();
	}
	n = strlen(loopdev);
	if (n && loopdev[n - 1] == '\n')
		loopdev[n - 1] = '\0';
}

static void test_loop_device(void **state)
{
	char backing[PATH_MAX], id1[STATE_IDENTITY_MAX + 1], id2[STATE_IDENTITY_MAX + 1];
	char sdir[PATH_MAX], out[PATH_MAX], want[PATH_MAX * 2];
	struct src_rec s, back;

	(void)state;
	attach_loop(backing, sizeof(backing));
	assert_int_equal(state_identity(loopdev, id1, sizeof(id1)), 0);
	assert_int_equal(state_identity(loopdev, id2, sizeof(id2)), 0);
	assert_string_equal(id1, id2);
	assert_memory_equal(id1, "loop-", 5);
	assert_non_null(strstr(id1, "loop-backing.img-ino"));
	assert_non_null(strstr(id1, "-off0"));
	snprintf(sdir, sizeof(sdir), "%s/var-lib", dir);
	state_set_dir(sdir);
	assert_int_equal(state_path(loopdev, ".x", true, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "%s/%s.x", sdir, id1);
	assert_string_equal(out, want);
	memset(&s, 0, sizeof(s));
	snprintf(s.dest, sizeof(s.dest), "10.0.0.2:7000");
	assert_int_equal(src_rec_save(loopdev, &s), 0);
	snprintf(want, sizeof(want), "%s/%s%s", sdir, id1, SRC_REC_SUFFIX);
	assert_int_equal(access(want, F_OK), 0);
	snprintf(want, sizeof(want), "%s%s", loopdev, SRC_REC_SUFFIX);
	assert_int_equal(access(want, F_OK), -1);
	assert_int_equal(src_rec_load(loopdev, &back), 0);
	assert_string_equal(back.dest, "10.0.0.2:7000");
	assert_int_equal(src_rec_clear(loopdev), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_partial_small, reset),
		cmocka_unit_test_teardown(test_partial_large, reset),
		cmocka_unit_test_teardown(test_awaiting, reset),
		cmocka_unit_test_teardown(test_src_roundtrip, reset),
		cmocka_unit_test_teardown(test_src_init, reset),
		cmocka_unit_test_teardown(test_src_check_ours, reset),
		cmocka_unit_test_teardown(test_missing_and_clear, reset),
		cmocka_unit_test_teardown(test_corrupt_every_byte, reset),
		cmocka_unit_test_teardown(test_truncated, reset),
		cmocka_unit_test_teardown(test_bad_fields, reset),
		cmocka_unit_test_teardown(test_save_refusals, reset),
		cmocka_unit_test_teardown(test_symlink_not_followed, reset),
		cmocka_unit_test_teardown(test_replace_no_temp, reset),
		cmocka_unit_test_teardown(test_replace_fails, reset),
		cmocka_unit_test_teardown(test_state_dir, reset),
		cmocka_unit_test_teardown(test_path_regular, reset),
		cmocka_unit_test_teardown(test_path_unreadable, reset),
		cmocka_unit_test_teardown(test_identity_sources, reset),
		cmocka_unit_test_teardown(test_identity_partition, reset),
		cmocka_unit_test_teardown(test_identity_long, reset),
		cmocka_unit_test_teardown(test_path_blockdev, reset),
		cmocka_unit_test_teardown(test_loop_device, reset),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
