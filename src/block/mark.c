/* SPDX-License-Identifier: MIT */
/* Incomplete-migration marker on destination images; see mark.h. */
#include "mark.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/error.h"
#include "state/state.h"

/* Where the sidecar goes: beside a file, in the state directory for a block
 * device (state_path()). */
static int sidecar_path(char *buf, size_t cap, const char *path, bool create_dir)
{
	return state_path(path, MARK_SUFFIX, create_dir, buf, cap);
}

/* Where versions before the state directory put a block device's sidecar:
 * beside the node, on devtmpfs. */
static int legacy_sidecar_path(char *buf, size_t cap, const char *path)
{
	if ((size_t)snprintf(buf, cap, "%s%s", path, MARK_SUFFIX) >= cap)
		return err_set(ENAMETOOLONG, "marker for %s: path too long", path);
	return 0;
}

/* A block device never gets the xattr: device nodes live on devtmpfs,
 * which refuses it or forgets it at reboot. */
static bool is_blockdev(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISBLK(sb.st_mode);
}

/* Make a marker change durable: the file's inode (its xattrs) or, for a
 * sidecar, the directory entry. */
static int sync_path(const char *path, bool dir_of)
{
	char buf[PATH_MAX];
	const char *p = path;
	int fd, r = 0;

	if (dir_of) {
		char *slash;

		snprintf(buf, sizeof(buf), "%s", path);
		slash = strrchr(buf, '/');
		if (slash == buf)
			slash[1] = '\0';
		else if (slash)
			*slash = '\0';
		else
			snprintf(buf, sizeof(buf), ".");
		p = buf;
	}
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "sync %s: %s", p, strerror(errno));
	if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
		r = err_set(errno, "sync %s: %s", p, strerror(errno));
	close(fd);
	return r;
}

static bool xattr_unsupported(int e)
{
	return e == ENOTSUP || e == EOPNOTSUPP || e == EPERM;
}

/* The sidecar form.  A symlink planted at the sidecar's path is refused
 * (O_NOFOLLOW), never written through. */
static int write_sidecar(const char *path, const char *reason)
{
	char side[PATH_MAX];
	size_t len = strlen(reason);
	int fd, r;

	r = sidecar_path(side, sizeof(side), path, true);
	if (r < 0)
		return r;
	fd = open(side, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 && errno == ELOOP)
		return err_set(ELOOP,
			       "mark %s incomplete: %s is a symbolic link: refusing to write "
			       "through it",
			       path, side);
	if (fd < 0)
		return err_set(errno, "mark %s incomplete: create %s: %s", path, side,
			       strerror(errno));
	if (write(fd, reason, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) < 0) {
		int e = errno ? errno : EIO;

		close(fd);
		return err_set(e, "mark %s incomplete: write %s: %s", path, side, strerror(e));
	}
	close(fd);
	return sync_path(side, true);
}

int mark_incomplete(const char *path, const char *reason)
{
	if (is_blockdev(path))
		return write_sidecar(path, reason);
	if (setxattr(path, MARK_XATTR, reason, strlen(reason), 0) == 0)
		return sync_path(path, false);
	if (!xattr_unsupported(errno))
		return err_set(errno, "mark %s incomplete: %s", path, strerror(errno));
	return write_sidecar(path, reason);
}

int mark_before_create(const char *path, const char *reason)
{
	return write_sidecar(path, reason);
}

/* Remove the sidecar at side, durably; a missing one is fine. */
static int unlink_sidecar(const char *side)
{
	if (unlink(side) == 0)
		return sync_path(side, true);
	if (errno != ENOENT && errno != ENOTDIR)
		return err_set(errno, "clear marker %s: %s", side, strerror(errno));
	return 0;
}

int mark_clear(const char *path)
{
	char side[PATH_MAX];
	bool blk = is_blockdev(path);
	int r;

	if (blk) {
		r = legacy_sidecar_path(side, sizeof(side), path);
		if (r == 0)
			r = unlink_sidecar(side);
		if (r < 0)
			return r;
	} else if (removexattr(path, MARK_XATTR) == 0) {
		r = sync_path(path, false);
		if (r < 0)
			return r;
	} else if (errno != ENODATA && errno != ENOENT && !xattr_unsupported(errno)) {
		return err_set(errno, "clear marker on %s: %s", path, strerror(errno));
	}
	r = sidecar_path(side, sizeof(side), path, false);
	if (r < 0)
		return r;
	return unlink_sidecar(side);
}

/* Whether anything is at side: 1, 0, or negative errno.  Anything counts,
 * a dangling symlink too: when in doubt, the image is incomplete. */
static int sidecar_present(const char *side)
{
	struct stat sb;

	if (lstat(side, &sb) == 0)
		return 1;
	if (errno != ENOENT && errno != ENOTDIR)
		return err_set(errno, "read marker %s: %s", side, strerror(errno));
	return 0;
}

int mark_check(const char *path)
{
	char side[PATH_MAX];
	int r;

	if (is_blockdev(path)) {
		r = legacy_sidecar_path(side, sizeof(side), path);
		if (r == 0)
			r = sidecar_present(side);
		if (r != 0)
			return r;
	} else if (getxattr(path, MARK_XATTR, NULL, 0) >= 0) {
		return 1;
	} else if (errno != ENODATA && errno != ENOENT && !xattr_unsupported(errno)) {
		return err_set(errno, "read marker on %s: %s", path, strerror(errno));
	}
	r = sidecar_path(side, sizeof(side), path, false);
	if (r < 0)
		return r;
	return sidecar_present(side);
}
