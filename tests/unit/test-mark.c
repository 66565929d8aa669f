/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the incomplete-migration marker (block/mark.h): set, check
 * and clear it in both of its forms, the xattr and the sidecar file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "block/mark.h"
#include "common/error.h"

static char dir[PATH_MAX / 2];

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	(void)state;
	snprintf(dir, sizeof(dir), "%s/test-mark-XXXXXX", tmp);
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void make_file(char *path, size_t cap, const char *name)
{
	int fd;

	snprintf(path, cap, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	close(fd);
}

static bool xattrs_work(const char *path)
{
	if (setxattr(path, "user.test", "x", 1, 0) < 0)
		return false;
	removexattr(path, "user.test");
	return true;
}

static void test_set_check_clear(void **state)
{
	char path[PATH_MAX], side[PATH_MAX + 32];

	(void)state;
	make_file(path, sizeof(path), "img");
	assert_int_equal(mark_check(path), 0);
	assert_int_equal(mark_incomplete(path, "testing"), 0);
	assert_int_equal(mark_check(path), 1);
	snprintf(side, sizeof(side), "%s%s", path, MARK_SUFFIX);
	if (xattrs_work(path)) {
		char buf[32];
		ssize_t n = getxattr(path, MARK_XATTR, buf, sizeof(buf));

		assert_int_equal(n, 7);
		assert_memory_equal(buf, "testing", 7);
		assert_int_equal(access(side, F_OK), -1); /* no sidecar when xattrs work */
	} else {
		assert_int_equal(access(side, F_OK), 0);
	}
	assert_int_equal(mark_clear(path), 0);
	assert_int_equal(mark_check(path), 0);
	/* Clearing twice is fine. */
	assert_int_equal(mark_clear(path), 0);
}

static void test_sidecar_is_honoured(void **state)
{
	char path[PATH_MAX], side[PATH_MAX + 32];
	int fd;

	(void)state;
	/* A sidecar left by a run on a file system without xattrs still
	 * counts, and clearing removes it. */
	make_file(path, sizeof(path), "img2");
	snprintf(side, sizeof(side), "%s%s", path, MARK_SUFFIX);
	fd = open(side, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mark_check(path), 1);
	assert_int_equal(mark_clear(path), 0);
	assert_int_equal(access(side, F_OK), -1);
	assert_int_equal(mark_check(path), 0);
}

/* A symlink planted where the sidecar goes is refused, its target left
 * alone; it still counts as a mark (when in doubt, incomplete). */
static void test_sidecar_symlink(void **state)
{
	char path[PATH_MAX], side[PATH_MAX + 32], target[PATH_MAX];
	char buf[16];
	int fd;

	(void)state;
	make_file(target, sizeof(target), "precious");
	fd = open(target, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep", 4), 4);
	close(fd);
	snprintf(path, sizeof(path), "%s/new.img", dir);
	snprintf(side, sizeof(side), "%s%s", path, MARK_SUFFIX);
	assert_int_equal(symlink(target, side), 0);
	assert_int_equal(mark_before_create(path, "x"), -ELOOP);
	assert_non_null(strstr(err_msg(), "is a symbolic link: refusing to write through it"));
	fd = open(target, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	close(fd);
	assert_memory_equal(buf, "keep", 4);
	assert_int_equal(mark_check(path), 1);
	/* Dangling, too. */
	unlink(side);
	assert_int_equal(symlink("/nonexistent/blkmig", side), 0);
	assert_int_equal(mark_check(path), 1);
	assert_int_equal(mark_clear(path), 0); /* removes the link, not its target */
	assert_int_equal(mark_check(path), 0);
}

/* An image about to be created is marked before it exists, and the mark
 * can be cleared once it is gone again. */
static void test_mark_before_create(void **state)
{
	char path[PATH_MAX], side[PATH_MAX + 32];

	(void)state;
	snprintf(path, sizeof(path), "%s/created.img", dir);
	snprintf(side, sizeof(side), "%s%s", path, MARK_SUFFIX);
	assert_int_equal(mark_before_create(path, "creating"), 0);
	assert_int_equal(access(side, F_OK), 0);
	assert_int_equal(mark_check(path), 1);
	make_file(path, sizeof(path), "created.img");
	assert_int_equal(mark_check(path), 1);
	unlink(path);
	assert_int_equal(mark_clear(path), 0);
	assert_int_equal(access(side, F_OK), -1);
}

static void test_missing_file(void **state)
{
	char path[PATH_MAX];

	(void)state;
	snprintf(path, sizeof(path), "%s/does-not-exist/img", dir);
	assert_true(mark_incomplete(path, "x") < 0);
	assert_non_null(strstr(err_msg(), "does-not-exist"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_check_clear), cmocka_unit_test(test_sidecar_is_honoured),
		cmocka_unit_test(test_sidecar_symlink), cmocka_unit_test(test_mark_before_create),
		cmocka_unit_test(test_missing_file),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
