/* SPDX-License-Identifier: MIT */
/*
 * The "incomplete migration" marker on a destination image (DESIGN.md rule
 * 5): a receiver sets it before writing the first byte and clears it only
 * after the migration is durable and verified, so an image left by a failed
 * or cancelled migration is never mistaken for a complete one.
 *
 * For a regular file the marker is the extended attribute
 * "user.blkmig.incomplete" on the image; where the file system has no user
 * xattrs (some network file systems) it is a sidecar file
 * "PATH.blkmig-incomplete" beside it.  For a block device it is always a
 * file in the state directory, "STATEDIR/<identity>.blkmig-incomplete"
 * (state/state.h: state_path()), since a sidecar beside the node would sit
 * on devtmpfs and vanish at reboot; the xattr is never tried.  A sidecar
 * left beside a block device node by an older blkmig still counts, and
 * mark_clear() removes it.  The marker holds a one-line reason.  The
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
