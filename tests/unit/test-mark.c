/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the incomplete-migration marker (block/mark.h): set, check
 * and clear it in both of its forms, the xattr and the sidecar file, and
 * for block devices (a mknod'ed node, a real loop device as root) in the
 * state directory, never beside the node.
 */
#include <dirent.h>
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
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "block/mark.h"
#include "common/error.h"
#include "state/state.h"

static char dir[PATH_MAX / 2];
static char loopdev[64];

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

/* After a block-device test: the defaults back, a loop device detached. */
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

static char devno[64]; /* the identity of the node under test */

/*
 * A block device node at dir/node-MIN, made with mknod as 240:MIN (a number
 * for local use), or without CAP_MKNOD a symlink to the first block device
 * in /dev (only stat()ed, never opened or marked: its state goes to the
 * state directory); skip when neither works.  Its sysfs is empty, so its
 * identity is devno, "devno-MAJ-MIN".  The state directory is dir/state.
 */
static void make_node(char *path, size_t cap, char *sdir, size_t scap, unsigned int min)
{
	char sys[PATH_MAX];
	struct stat sb;

	snprintf(path, cap, "%s/node-%u", dir, min);
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
	snprintf(devno, sizeof(devno), "devno-%u-%u", major(sb.st_rdev), minor(sb.st_rdev));
	snprintf(sys, sizeof(sys), "%s/empty-sys", dir);
	mkdir(sys, 0700);
	state_set_sysfs(sys);
	snprintf(sdir, scap, "%s/state", dir);
	state_set_dir(sdir);
}

static void test_blockdev_in_state_dir(void **state)
{
	char node[PATH_MAX], sdir[PATH_MAX], side[PATH_MAX * 2], beside[PATH_MAX + 32];
	char buf[64];
	struct stat sb;
	int fd;

	(void)state;
	make_node(node, sizeof(node), sdir, sizeof(sdir), 90);
	snprintf(side, sizeof(side), "%s/%s%s", sdir, devno, MARK_SUFFIX);
	snprintf(beside, sizeof(beside), "%s%s", node, MARK_SUFFIX);
	assert_int_equal(mark_check(node), 0);
	assert_int_equal(mark_incomplete(node, "on a device"), 0);
	/* In the state directory, created 0700; not beside the node, and no
	 * xattr on it. */
	assert_int_equal(stat(sdir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	fd = open(side, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 12);
	close(fd);
	assert_memory_equal(buf, "on a device\n", 12);
	assert_int_equal(access(beside, F_OK), -1);
	assert_true(getxattr(node, MARK_XATTR, buf, sizeof(buf)) < 0);
	assert_int_equal(mark_check(node), 1);
	assert_int_equal(mark_clear(node), 0);
	assert_int_equal(access(side, F_OK), -1);
	assert_int_equal(mark_check(node), 0);
	assert_int_equal(mark_clear(node), 0);
}

/* A sidecar an older blkmig left beside the node still counts, and
 * clearing removes it along with the new one. */
static void test_blockdev_legacy_sidecar(void **state)
{
	char node[PATH_MAX], sdir[PATH_MAX], side[PATH_MAX * 2], beside[PATH_MAX + 32];
	int fd;

	(void)state;
	make_node(node, sizeof(node), sdir, sizeof(sdir), 91);
	snprintf(side, sizeof(side), "%s/%s%s", sdir, devno, MARK_SUFFIX);
	snprintf(beside, sizeof(beside), "%s%s", node, MARK_SUFFIX);
	fd = open(beside, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mark_check(node), 1);
	assert_int_equal(mark_incomplete(node, "x"), 0);
	assert_int_equal(mark_clear(node), 0);
	assert_int_equal(access(beside, F_OK), -1);
	assert_int_equal(access(side, F_OK), -1);
	assert_int_equal(mark_check(node), 0);
}

static void test_blockdev_errors(void **state)
{
	char node[PATH_MAX], sdir[PATH_MAX], side[PATH_MAX * 2], target[PATH_MAX / 2 + 32];
	int fd;

	(void)state;
	make_node(node, sizeof(node), sdir, sizeof(sdir), 92);
	/* A symlink planted in the state directory is not written through. */
	make_file(target, sizeof(target), "precious-dev");
	assert_true(mkdir(sdir, 0700) == 0 || errno == EEXIST);
	snprintf(side, sizeof(side), "%s/%s%s", sdir, devno, MARK_SUFFIX);
	assert_int_equal(symlink(target, side), 0);
	assert_int_equal(mark_incomplete(node, "x"), -ELOOP);
	assert_non_null(strstr(err_msg(), "is a symbolic link"));
	fd = open(target, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(lseek(fd, 0, SEEK_END), 0);
	close(fd);
	assert_int_equal(mark_check(node), 1);
	assert_int_equal(mark_clear(node), 0);
	assert_int_equal(access(target, F_OK), 0);
	/* A state directory that cannot be made. */
	snprintf(sdir, sizeof(sdir), "%s/s", target);
	state_set_dir(sdir);
	assert_int_equal(mark_incomplete(node, "x"), -ENOTDIR);
	assert_non_null(strstr(err_msg(), "create state directory"));
}

/* A real loop device: the mark lands in the state directory, not in /dev. */
static void test_loop_device(void **state)
{
	char backing[PATH_MAX], sdir[PATH_MAX], id[STATE_IDENTITY_MAX + 1];
	char side[PATH_MAX * 2], cmd[PATH_MAX + 64];
	FILE *p;
	size_t n;

	(void)state;
	if (geteuid() != 0)
		skip();
	make_file(backing, sizeof(backing), "loop.img");
	assert_int_equal(truncate(backing, 1 << 20), 0);
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
	snprintf(sdir, sizeof(sdir), "%s/var-lib-blkmig", dir);
	state_set_dir(sdir);
	assert_int_equal(state_identity(loopdev, id, sizeof(id)), 0);
	assert_non_null(strstr(id, "loop.img"));
	assert_int_equal(mark_incomplete(loopdev, "loop"), 0);
	snprintf(side, sizeof(side), "%s/%s%s", sdir, id, MARK_SUFFIX);
	assert_int_equal(access(side, F_OK), 0);
	snprintf(side, sizeof(side), "%s%s", loopdev, MARK_SUFFIX);
	assert_int_equal(access(side, F_OK), -1);
	assert_int_equal(mark_check(loopdev), 1);
	assert_int_equal(mark_clear(loopdev), 0);
	assert_int_equal(mark_check(loopdev), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_check_clear),
		cmocka_unit_test(test_sidecar_is_honoured),
		cmocka_unit_test(test_sidecar_symlink),
		cmocka_unit_test(test_mark_before_create),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test_teardown(test_blockdev_in_state_dir, reset),
		cmocka_unit_test_teardown(test_blockdev_legacy_sidecar, reset),
		cmocka_unit_test_teardown(test_blockdev_errors, reset),
		cmocka_unit_test_teardown(test_loop_device, reset),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
