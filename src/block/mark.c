/* SPDX-License-Identifier: MIT */
/* Incomplete-migration marker on destination images; see mark.h. */
#include "mark.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/error.h"

static int sidecar_path(char *buf, size_t cap, const char *path)
{
	if ((size_t)snprintf(buf, cap, "%s%s", path, MARK_SUFFIX) >= cap)
		return err_set(ENAMETOOLONG, "marker for %s: path too long", path);
	return 0;
}

static bool xattr_unsupported(int e)
{
	return e == ENOTSUP || e == EOPNOTSUPP || e == EPERM;
}

int mark_incomplete(const char *path, const char *reason)
{
	char side[PATH_MAX];
	size_t len = strlen(reason);
	int fd, r;

	if (setxattr(path, MARK_XATTR, reason, len, 0) == 0)
		return 0;
	if (!xattr_unsupported(errno))
		return err_set(errno, "mark %s incomplete: %s", path, strerror(errno));
	r = sidecar_path(side, sizeof(side), path);
	if (r < 0)
		return r;
	fd = open(side, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_set(errno, "mark %s incomplete: create %s: %s", path, side,
			       strerror(errno));
	if (write(fd, reason, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
		int e = errno ? errno : EIO;

		close(fd);
		return err_set(e, "mark %s incomplete: write %s: %s", path, side, strerror(e));
	}
	close(fd);
	return 0;
}

int mark_clear(const char *path)
{
	char side[PATH_MAX];
	int r;

	if (removexattr(path, MARK_XATTR) < 0 && errno != ENODATA && !xattr_unsupported(errno))
		return err_set(errno, "clear marker on %s: %s", path, strerror(errno));
	r = sidecar_path(side, sizeof(side), path);
	if (r < 0)
		return r;
	if (unlink(side) < 0 && errno != ENOENT)
		return err_set(errno, "clear marker %s: %s", side, strerror(errno));
	return 0;
}

int mark_check(const char *path)
{
	char side[PATH_MAX];
	int r;

	if (getxattr(path, MARK_XATTR, NULL, 0) >= 0)
		return 1;
	if (errno != ENODATA && !xattr_unsupported(errno))
		return err_set(errno, "read marker on %s: %s", path, strerror(errno));
	r = sidecar_path(side, sizeof(side), path);
	if (r < 0)
		return r;
	if (access(side, F_OK) == 0)
		return 1;
	return 0;
}
