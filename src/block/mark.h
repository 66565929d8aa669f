/* SPDX-License-Identifier: MIT */
/*
 * The "incomplete migration" marker on a destination image (DESIGN.md rule
 * 5): a receiver sets it before writing the first byte and clears it only
 * after the migration is durable and verified, so an image left by a failed
 * or cancelled migration is never mistaken for a complete one.
 *
 * The marker is the extended attribute "user.blkmig.incomplete" on the
 * image; where the file system has no user xattrs (block device nodes on
 * devtmpfs, some network file systems) it is a sidecar file
 * "PATH.blkmig-incomplete" beside it.  Both hold a one-line reason.  The
 * sidecar is never written through a symlink planted at its path (-ELOOP),
 * and anything at that path, a dangling symlink too, counts as a mark.
 */
#ifndef BLKMIG_BLOCK_MARK_H
#define BLKMIG_BLOCK_MARK_H

#include <stdbool.h>

#define MARK_XATTR  "user.blkmig.incomplete"
#define MARK_SUFFIX ".blkmig-incomplete"

/* Set the marker with a short reason.  0 or negative errno (err_set). */
int mark_incomplete(const char *path, const char *reason);
/*
 * Mark an image that does not exist yet, before creating it, so that it is
 * marked from the moment it exists: the sidecar form, whatever the file
 * system.  mark_clear() removes it (also once the image is gone again).
 */
int mark_before_create(const char *path, const char *reason);
/* Remove the marker (both forms); a missing marker, or a missing image, is
 * not an error. */
int mark_clear(const char *path);
/* Whether the marker is present: 1 yes, 0 no, negative errno on failure. */
int mark_check(const char *path);

#endif
