/* SPDX-License-Identifier: MIT */
/*
 * Durable state about an image, kept across crashes and restarts: where it
 * lives (beside a regular file, or in a state directory keyed by a block
 * device's stable identity, since a sidecar beside /dev/sdX would land on
 * devtmpfs and vanish at reboot), and two records written atomically:
 *
 *   - the destination's record of a migration in progress (which chunks it
 *     holds durably, or that it acknowledged a switch-over and awaits the
 *     source's commit), suffix ".blkmig-state";
 *   - the source's handover record (the image went to a destination, so a
 *     restarted source must refuse to serve it), suffix ".blkmig-handover".
 *
 * block/mark.c keeps the "incomplete" mark through state_path() too.  This
 * module sits above common/ and bitmap/ and below block/.
 *
 * Record file format, version 1 (all integers big-endian):
 *
 *   offset  size  field
 *   0       8     magic "BLKMIGST" (42 4c 4b 4d 49 47 53 54)
 *   8       2     version, 1
 *   10      1     kind: 1 destination record, 2 source handover record
 *   11      1     reserved, 0
 *   12      4     body length B
 *   16      B     body, by kind (below)
 *   16+B    8     XXH3-64 (seed 0) of bytes [0, 16+B)
 *
 *   kind 1, destination record (B = 88 + N):
 *   0   16 migration id        40  8  st_dev
 *   16  4  state (1, 2)        48  8  st_ino
 *   20  4  attempt             56  16 digest
 *   24  4  chunk_size          72  8  chunks
 *   28  4  reserved, 0         80  8  N, bitmap bytes
 *   32  8  size                88  N  bitmap: chunk i is bit (i % 8) of
 *                                     byte i / 8; N is 0 for AWAITING and
 *                                     ceil(ceil(size / chunk_size) / 8) for
 *                                     PARTIAL, bits past the last chunk 0
 *
 *   kind 2, source handover record (B = 50 + L):
 *   0   16 migration id        32  8  st_dev
 *   16  4  attempt             40  8  st_ino
 *   20  4  reserved, 0         48  2  L, destination length (0-255)
 *   24  8  when (epoch s)      50  L  destination, printable ASCII
 *
 * A loader accepts exactly this: any other length, magic, version, kind,
 * reserved value or checksum is -EBADMSG, so the caller discards the record.
 *
 * Files are written to a temporary beside the target (O_CREAT | O_EXCL |
 * O_NOFOLLOW, mode 0600), fsynced, renamed over the target, and the
 * directory fsynced: a crash leaves the old record or the new one, never a
 * mix.  rename() replaces a symlink planted at the target rather than
 * following it, and loaders open with O_NOFOLLOW (-ELOOP).  A crash between
 * creating and renaming leaves a "TARGET.tmp.PID.N" file behind; nothing
 * reads those.
 *
 * Every function records a message with err_set() on failure, except where
 * it says -ENOENT needs none.  None is thread-safe against state_set_dir().
 */
#ifndef BLKMIG_STATE_STATE_H
#define BLKMIG_STATE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirty;

#define STATE_DEFAULT_DIR "/var/lib/blkmig"
/* Longest identity state_identity() returns, without the NUL. */
#define STATE_IDENTITY_MAX 200

/* ---- where state lives ----------------------------------------------------- */

/*
 * The directory for block devices' state (copied).  NULL: back to the
 * default, STATE_DEFAULT_DIR.  Call at start-up, before other threads use
 * this module; a directory too long for a path makes state_path() fail with
 * -ENAMETOOLONG for block devices.
 */
void state_set_dir(const char *dir);
const char *state_dir(void);

/*
 * The path of the state file named by SUFFIX (e.g. ".blkmig-incomplete")
 * for IMAGE: for anything that is not a block device (a missing IMAGE
 * included), "IMAGE" "SUFFIX" beside it; for a block device (symlinks to it
 * followed), "STATEDIR/<identity>SUFFIX".  With create_dir, the state
 * directory is created (mode 0700, parents too) when a block device needs
 * it.  0, or a negative errno: -ENAMETOOLONG when out (cap bytes) is too
 * small, -EACCES and the like when IMAGE cannot be examined.
 */
int state_path(const char *image, const char *suffix, bool create_dir, char *out, size_t cap);

/*
 * A block device's identity, stable across reboots, as a file-name-safe
 * string, from sysfs (/sys/dev/block/MAJ:MIN), the first that exists of:
 *
 *   dm/uuid        "dm-<uuid>"            device-mapper (LVM, crypt, ...)
 *   md/uuid        "md-<uuid>"            software RAID
 *   wwid           "wwid-<wwid>"          NVMe namespace
 *   device/wwid    "wwid-<wwid>"          SCSI, SATA
 *   serial         "serial-<serial>"      virtio-blk
 *   device/serial  "serial-<serial>"      other disks
 *   loop/backing_file
 *                  "loop-<path>-ino<inode>-off<offset>" (the inode, since a
 *                  backing path can be reused for another file)
 *
 * A partition is its parent's identity + "-part<N>".  When none exists (or
 * a loop device's backing file is gone) the fallback is "devno-MAJ-MIN",
 * which is NOT stable: device numbers are handed out at boot.
 *
 * Bytes outside [A-Za-z0-9._-] are escaped as %XX; an identity longer than
 * STATE_IDENTITY_MAX is cut and ends in "-h" + 16 hex digits of the XXH3-64
 * of the whole.  0; -ENOTBLK when BLOCKDEV is not a block device; other
 * negative errnos when it cannot be examined, or -ENAMETOOLONG when out is
 * too small (STATE_IDENTITY_MAX + 1 always suffices).
 */
int state_identity(const char *blockdev, char *out, size_t cap);

/* For tests: read sysfs under ROOT instead of "/sys" (NULL: back to it). */
void state_set_sysfs(const char *root);

/* ---- records --------------------------------------------------------------- */

#define STATE_ID_LEN 16

/* When you add a state, also update the format comment above, dst_check()
 * and dst_decode() in state.c. */
enum dst_rec_state {
	DST_REC_PARTIAL = 1,  /* receiving; held says which chunks are durable */
	DST_REC_AWAITING = 2, /* acknowledged a switch-over, awaits the commit */
};

struct dst_rec {
	uint8_t id[STATE_ID_LEN]; /* the migration */
	enum dst_rec_state state;
	uint32_t attempt;	 /* AWAITING: the switch-over attempt acknowledged */
	uint32_t chunk_size;	 /* a power of two, >= 512 */
	uint64_t size;		 /* device size in bytes, > 0 */
	uint64_t st_dev, st_ino; /* the image file the record describes (0: a block device) */
	uint8_t digest[16];	 /* AWAITING: the acknowledged device digest */
	uint64_t chunks;	 /* AWAITING: chunks the digest covers */
	struct dirty *held;	 /* PARTIAL: chunks held durably, granularity chunk_size,
				  * size size; owned by the record (dst_rec_release) */
};

/* Suffixes of the record files, for state_path(). */
#define DST_REC_SUFFIX ".blkmig-state"
#define SRC_REC_SUFFIX ".blkmig-handover"

/*
 * Write the record for IMAGE durably, replacing any old one.  -EINVAL for an
 * inconsistent record (a bad state or chunk size; PARTIAL without held or
 * with held of another size or granularity), else I/O errors.  held is only
 * read; concurrent dirty_mark()s may or may not be included.  Blocks on
 * fsync.
 */
int dst_rec_save(const char *image, const struct dst_rec *r);
/*
 * Read IMAGE's record into *r.  -ENOENT (no message) when there is none;
 * -EBADMSG when it is truncated or corrupt; -ELOOP when the record path is
 * a symlink.  On success r->held is a new bitmap for PARTIAL (NULL for
 * AWAITING) that the caller releases with dst_rec_release(); on failure *r
 * is zeroed and holds nothing.
 */
int dst_rec_load(const char *image, struct dst_rec *r);
/* Remove IMAGE's record durably; a missing one is not an error. */
int dst_rec_clear(const char *image);
/* Free r->held and set it to NULL; NULL r is fine. */
void dst_rec_release(struct dst_rec *r);

struct src_rec {
	uint8_t id[STATE_ID_LEN]; /* the migration */
	uint32_t attempt;
	char dest[256]; /* where it went, e.g. "10.0.0.2:7000": NUL-terminated,
			 * printable ASCII (0x20-0x7e) only */
	uint64_t when;	/* seconds since the epoch */
	uint64_t st_dev, st_ino;
};

/* As the dst_rec_* functions; save refuses (-EINVAL) a dest that is not
 * NUL-terminated printable ASCII. */
int src_rec_save(const char *image, const struct src_rec *r);
/* A record of migration id, attempt (0: in progress), dated now, to dest
 * (which may come from the peer's side: bytes outside printable ASCII are
 * stored as '?', and it is cut to fit). */
void src_rec_init(struct src_rec *r, const uint8_t id[STATE_ID_LEN], uint32_t attempt,
		  const char *dest);
int src_rec_load(const char *image, struct src_rec *r);
int src_rec_clear(const char *image);
/*
 * Whether IMAGE is this host's to migrate or serve: 0 when it has no
 * record, or one of a migration not handed over yet (attempt 0).  An image
 * handed over to another host belongs to it; EUCLEAN then (an unreadable
 * record too), naming where it went and cmd's --reclaim ("serve", "send").
 * With reclaim set the record is removed instead and *reclaimed set.
 */
int src_rec_check_ours(const char *image, const char *cmd, bool reclaim, bool *reclaimed);

#endif
