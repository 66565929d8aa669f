/* SPDX-License-Identifier: MIT */
/*
 * Durable state about an image; see state.h for the file format and the
 * rules.  Three parts: where a state file lives (state_path(), with a
 * block device's identity from sysfs), atomic durable file replacement, and
 * the two record codecs, which are pure functions over a buffer.
 */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxhash.h>

#include "bitmap/dirty.h"
#include "common/error.h"
#include "common/util.h"

static char dir_buf[PATH_MAX] = STATE_DEFAULT_DIR;
static bool dir_too_long;
static char sysfs_buf[PATH_MAX / 2] = "/sys";

void state_set_dir(const char *dir)
{
	if (!dir)
		dir = STATE_DEFAULT_DIR;
	dir_too_long = (size_t)snprintf(dir_buf, sizeof(dir_buf), "%s", dir) >= sizeof(dir_buf);
}

const char *state_dir(void)
{
	return dir_buf;
}

void state_set_sysfs(const char *root)
{
	snprintf(sysfs_buf, sizeof(sysfs_buf), "%s", root ? root : "/sys");
}

/* ---- block device identity ------------------------------------------------- */

#define ID_RAW_MAX 4096 /* an identity before escaping; sysfs values are short */

/*
 * Read a sysfs attribute, trimmed of surrounding white space (SCSI serials
 * come padded), or with keep_spaces of the trailing newline only (a loop
 * device's backing path may end in a space).  1 when it exists and is not
 * empty, 0 when not, negative errno on a read error.
 */
static int sysfs_read(const char *sysdir, const char *attr, bool keep_spaces, char *out, size_t cap)
{
	char path[PATH_MAX];
	size_t start = 0, len;
	ssize_t n;
	int fd, e;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", sysdir, attr) >= sizeof(path))
		return err_set(ENAMETOOLONG, "device identity: %s/%s: path too long", sysdir, attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return err_set(errno, "device identity: open %s: %s", path, strerror(errno));
	}
	n = read(fd, out, cap - 1);
	e = errno;
	close(fd);
	if (n < 0) {
		/* Some attributes refuse reads when the device has none. */
		if (e == EINVAL || e == ENODEV || e == ENXIO)
			return 0;
		return err_set(e, "device identity: read %s: %s", path, strerror(e));
	}
	len = (size_t)n;
	if (keep_spaces) {
		if (len && out[len - 1] == '\n')
			len--;
	} else {
		while (len && (out[len - 1] == '\n' || out[len - 1] == ' ' || out[len - 1] == '\t'))
			len--;
		while (start < len && (out[start] == ' ' || out[start] == '\t'))
			start++;
	}
	memmove(out, out + start, len - start);
	out[len - start] = '\0';
	return len > start;
}

/* Append src to out (at *used, cap bytes) escaping bytes outside
 * [A-Za-z0-9._-] as %XX. */
static void escape_append(char *out, size_t cap, size_t *used, const char *src)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *src; src++) {
		unsigned char c = (unsigned char)*src;
		bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';

		if (*used + (plain ? 1 : 3) >= cap)
			break; /* the caller sized out for the worst case */
		if (plain) {
			out[(*used)++] = (char)c;
		} else {
			out[(*used)++] = '%';
			out[(*used)++] = hex[c >> 4];
			out[(*used)++] = hex[c & 15];
		}
	}
	out[*used] = '\0';
}

/*
 * The identity of the device whose sysfs directory is sysdir, unescaped
 * parts escaped into out (ID_RAW_MAX * 3 + 64 bytes).  1 when stable, 0
 * when there is nothing stable (out untouched), negative errno on failure.
 */
static int sysfs_identity(const char *sysdir, char *out, size_t cap, int depth)
{
	static const struct {
		const char *attr, *prefix;
	} sources[] = {
		{ "dm/uuid", "dm-" },	    { "md/uuid", "md-" },    { "wwid", "wwid-" },
		{ "device/wwid", "wwid-" }, { "serial", "serial-" }, { "device/serial", "serial-" },
	};
	char val[ID_RAW_MAX], part[32];
	size_t used = 0, i;
	int r;

	r = sysfs_read(sysdir, "partition", false, part, sizeof(part));
	if (r < 0)
		return r;
	if (r > 0 && depth == 0) {
		/* A partition's directory sits inside its disk's. */
		char real[PATH_MAX], *slash;
		char *endp;
		unsigned long n = strtoul(part, &endp, 10);

		if (*endp || !realpath(sysdir, real))
			return 0;
		slash = strrchr(real, '/');
		if (!slash || slash == real)
			return 0;
		*slash = '\0';
		r = sysfs_identity(real, out, cap, depth + 1);
		if (r <= 0)
			return r;
		used = strlen(out);
		snprintf(out + used, cap - used, "-part%lu", n);
		return 1;
	}
	for (i = 0; i < ARRAY_SIZE(sources); i++) {
		r = sysfs_read(sysdir, sources[i].attr, false, val, sizeof(val));
		if (r < 0)
			return r;
		if (r > 0) {
			snprintf(out, cap, "%s", sources[i].prefix);
			used = strlen(out);
			escape_append(out, cap, &used, val);
			return 1;
		}
	}
	r = sysfs_read(sysdir, "loop/backing_file", true, val, sizeof(val));
	if (r > 0) {
		char off[32];
		struct stat sb;

		r = sysfs_read(sysdir, "loop/offset", false, off, sizeof(off));
		if (r < 0)
			return r;
		/* A deleted backing file reads "PATH (deleted)": not stable. */
		if (stat(val, &sb) < 0)
			return 0;
		snprintf(out, cap, "loop-");
		used = strlen(out);
		escape_append(out, cap, &used, val);
		snprintf(out + used, cap - used, "-ino%" PRIu64 "-off", (uint64_t)sb.st_ino);
		used = strlen(out);
		escape_append(out, cap, &used, r > 0 ? off : "0");
		return 1;
	}
	return r;
}

int state_identity(const char *blockdev, char *out, size_t cap)
{
	char sysdir[PATH_MAX], id[ID_RAW_MAX * 3 + 64];
	struct stat sb;
	size_t len;
	int r;

	if (stat(blockdev, &sb) < 0)
		return err_set(errno, "device identity: %s: %s", blockdev, strerror(errno));
	if (!S_ISBLK(sb.st_mode))
		return err_set(ENOTBLK, "device identity: %s is not a block device", blockdev);
	snprintf(sysdir, sizeof(sysdir), "%.*s/dev/block/%u:%u", (int)sizeof(sysfs_buf), sysfs_buf,
		 major(sb.st_rdev), minor(sb.st_rdev));
	r = sysfs_identity(sysdir, id, sizeof(id), 0);
	if (r < 0)
		return err_prefix(-r, "%s: ", blockdev);
	if (r == 0)
		snprintf(id, sizeof(id), "devno-%u-%u", major(sb.st_rdev), minor(sb.st_rdev));
	len = strlen(id);
	if (len > STATE_IDENTITY_MAX) {
		/* Cut before any escape that would straddle the cut. */
		size_t keep = STATE_IDENTITY_MAX - 18;
		uint64_t h = XXH3_64bits(id, len);

		if (id[keep - 1] == '%')
			keep -= 1;
		else if (id[keep - 2] == '%')
			keep -= 2;
		snprintf(id + keep, sizeof(id) - keep, "-h%016" PRIx64, h);
		len = strlen(id);
	}
	if (len >= cap)
		return err_set(ENAMETOOLONG, "device identity of %s: %zu bytes do not fit",
			       blockdev, len);
	memcpy(out, id, len + 1);
	return 0;
}

/* ---- paths ----------------------------------------------------------------- */

/* mkdir -p with mode 0700. */
static int make_dir(const char *dir)
{
	char buf[PATH_MAX];
	struct stat sb;
	size_t i, len = strlen(dir);

	if (len >= sizeof(buf))
		return err_set(ENAMETOOLONG, "state directory %s: path too long", dir);
	memcpy(buf, dir, len + 1);
	for (i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return err_set(errno, "create state directory %s: %s", buf,
				       strerror(errno));
		buf[i] = dir[i];
	}
	if (stat(dir, &sb) < 0)
		return err_set(errno, "state directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return err_set(ENOTDIR, "state directory %s is not a directory", dir);
	return 0;
}

int state_path(const char *image, const char *suffix, bool create_dir, char *out, size_t cap)
{
	char id[STATE_IDENTITY_MAX + 1];
	struct stat sb;
	int r;

	if (stat(image, &sb) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			return err_set(errno, "state of %s: %s", image, strerror(errno));
		sb.st_mode = 0; /* missing: beside it */
	}
	if (!S_ISBLK(sb.st_mode)) {
		if ((size_t)snprintf(out, cap, "%s%s", image, suffix) >= cap)
			return err_set(ENAMETOOLONG, "state of %s: path too long", image);
		return 0;
	}
	if (dir_too_long)
		return err_set(ENAMETOOLONG, "state of %s: state directory path too long", image);
	r = state_identity(image, id, sizeof(id));
	if (r < 0)
		return r;
	if ((size_t)snprintf(out, cap, "%s/%s%s", dir_buf, id, suffix) >= cap)
		return err_set(ENAMETOOLONG, "state of %s: path in %s too long", image, dir_buf);
	if (create_dir)
		return make_dir(dir_buf);
	return 0;
}

/* ---- durable files --------------------------------------------------------- */

/* fsync the directory holding path. */
static int sync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd, r = 0;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "sync directory %s: %s", dir, strerror(errno));
	if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
		r = err_set(errno, "sync directory %s: %s", dir, strerror(errno));
	close(fd);
	return r;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Replace path with buf durably: temporary, fsync, rename, fsync dir. */
static int replace_file(const char *path, const uint8_t *buf, size_t len)
{
	static _Atomic unsigned int seq;
	char tmp[PATH_MAX];
	int fd = -1, r, tries;

	for (tries = 0; tries < 100 && fd < 0; tries++) {
		if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%u", path, (long)getpid(),
				     seq++) >= sizeof(tmp))
			return err_set(ENAMETOOLONG, "save %s: path too long", path);
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			return err_set(errno, "save %s: create %s: %s", path, tmp, strerror(errno));
	}
	if (fd < 0)
		return err_set(EEXIST, "save %s: no free temporary name beside it", path);
	r = write_all(fd, buf, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0) {
		err_set(-r, "save %s: write %s: %s", path, tmp, strerror(-r));
		goto err_unlink;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = err_set(errno, "save %s: rename %s over it: %s", path, tmp, strerror(errno));
		goto err_unlink;
	}
	return sync_dir_of(path);

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return r;
}

#define REC_MAX (UINT64_C(1) << 30) /* 8 Gi chunks of bitmap; more is corrupt */

/* Read a whole record file.  -ENOENT without a message when missing. */
static int read_file(const char *path, uint8_t **bufp, size_t *lenp)
{
	struct stat sb;
	uint8_t *buf;
	size_t done = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		if (errno == ELOOP)
			return err_set(ELOOP, "load %s: a symbolic link: refusing to follow it",
				       path);
		return err_set(errno, "load %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &sb) < 0) {
		r = err_set(errno, "load %s: %s", path, strerror(errno));
		goto err_close;
	}
	if (!S_ISREG(sb.st_mode)) {
		r = err_set(EBADMSG, "load %s: not a regular file", path);
		goto err_close;
	}
	if ((uint64_t)sb.st_size > REC_MAX) {
		r = err_set(EBADMSG, "load %s: %" PRIu64 " bytes is too large for a record", path,
			    (uint64_t)sb.st_size);
		goto err_close;
	}
	buf = malloc((size_t)sb.st_size + 1);
	if (!buf) {
		r = err_set(ENOMEM, "load %s: out of memory", path);
		goto err_close;
	}
	while (done < (size_t)sb.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)sb.st_size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = err_set(errno, "load %s: %s", path, strerror(errno));
			free(buf);
			goto err_close;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	*bufp = buf;
	*lenp = done;
	return 0;

err_close:
	close(fd);
	return r;
}

static int clear_file(const char *image, const char *suffix)
{
	char path[PATH_MAX];
	int r = state_path(image, suffix, false, path, sizeof(path));

	if (r < 0)
		return r;
	if (unlink(path) == 0)
		return sync_dir_of(path);
	if (errno == ENOENT || errno == ENOTDIR)
		return 0;
	return err_set(errno, "clear %s: %s", path, strerror(errno));
}

/* ---- record codec ---------------------------------------------------------- */

#define REC_MAGIC   "BLKMIGST"
#define REC_VERSION 1
#define REC_HDR	    16
#define REC_SUM	    8
#define KIND_DST    1
#define KIND_SRC    2
#define DST_FIXED   88
#define SRC_FIXED   50

static const char *const kind_names[] = {
	[KIND_DST] = "destination record",
	[KIND_SRC] = "source handover record",
};

/* Header into buf (REC_HDR bytes) for a body of blen. */
static void rec_header(uint8_t *buf, int kind, uint32_t blen)
{
	memcpy(buf, REC_MAGIC, 8);
	put_be16(buf + 8, REC_VERSION);
	buf[10] = (uint8_t)kind;
	buf[11] = 0;
	put_be32(buf + 12, blen);
}

static void rec_seal(uint8_t *buf, uint32_t blen)
{
	put_be64(buf + REC_HDR + blen, XXH3_64bits(buf, REC_HDR + (size_t)blen));
}

/*
 * Check the envelope of a record of len bytes at buf, read from path: 0 with
 * the body and its length, or -EBADMSG.
 */
static int rec_open(const char *path, const uint8_t *buf, size_t len, int kind,
		    const uint8_t **body, uint32_t *blen)
{
	uint16_t version;
	uint32_t n;

	if (len < REC_HDR + REC_SUM)
		return err_set(EBADMSG, "load %s: truncated: %zu bytes, a record has at least %d",
			       path, len, REC_HDR + REC_SUM);
	if (memcmp(buf, REC_MAGIC, 8) != 0)
		return err_set(EBADMSG, "load %s: not a blkmig state record (bad magic)", path);
	version = get_be16(buf + 8);
	if (version != REC_VERSION)
		return err_set(EBADMSG, "load %s: record version %u, this blkmig reads version %d",
			       path, version, REC_VERSION);
	n = get_be32(buf + 12);
	if (len != REC_HDR + (uint64_t)n + REC_SUM)
		return err_set(EBADMSG, "load %s: %s: header says %" PRIu64 " bytes, file has %zu",
			       path,
			       len < REC_HDR + (uint64_t)n + REC_SUM ? "truncated" : "corrupt",
			       REC_HDR + (uint64_t)n + REC_SUM, len);
	if (get_be64(buf + REC_HDR + n) != XXH3_64bits(buf, REC_HDR + (size_t)n))
		return err_set(EBADMSG, "load %s: checksum mismatch: the record is corrupt", path);
	if (buf[10] != kind)
		return err_set(EBADMSG, "load %s: kind %u, expected %u (%s)", path, buf[10], kind,
			       kind_names[kind]);
	if (buf[11] != 0)
		return err_set(EBADMSG, "load %s: reserved header byte is %u, not 0", path,
			       buf[11]);
	*body = buf + REC_HDR;
	*blen = n;
	return 0;
}

/* Bitmap bytes a PARTIAL record of size and chunk_size carries. */
static uint64_t held_len(uint64_t size, uint32_t chunk_size)
{
	return div_round_up(div_round_up(size, chunk_size), 8);
}

static int dst_check(const char *image, const struct dst_rec *r)
{
	if (r->state != DST_REC_PARTIAL && r->state != DST_REC_AWAITING)
		return err_set(EINVAL, "save state of %s: bad state %d", image, (int)r->state);
	if (r->chunk_size < 512 || !is_pow2(r->chunk_size) || r->size == 0)
		return err_set(
		    EINVAL, "save state of %s: bad geometry: size %" PRIu64 ", chunk size %" PRIu32,
		    image, r->size, r->chunk_size);
	if (r->state != DST_REC_PARTIAL)
		return 0;
	if (!r->held)
		return err_set(EINVAL, "save state of %s: a partial record without a bitmap",
			       image);
	if (dirty_size(r->held) != r->size || dirty_granularity(r->held) != r->chunk_size)
		return err_set(EINVAL,
			       "save state of %s: bitmap covers %" PRIu64 " bytes at %" PRIu32
			       ", record says %" PRIu64 " at %" PRIu32,
			       image, dirty_size(r->held), dirty_granularity(r->held), r->size,
			       r->chunk_size);
	if (held_len(r->size, r->chunk_size) > REC_MAX - DST_FIXED - REC_HDR - REC_SUM)
		return err_set(EINVAL, "save state of %s: bitmap too large", image);
	return 0;
}

int dst_rec_save(const char *image, const struct dst_rec *r)
{
	char path[PATH_MAX];
	uint64_t n;
	uint32_t blen;
	uint8_t *buf, *b;
	int ret;

	ret = dst_check(image, r);
	if (ret < 0)
		return ret;
	ret = state_path(image, DST_REC_SUFFIX, true, path, sizeof(path));
	if (ret < 0)
		return ret;
	n = r->state == DST_REC_PARTIAL ? dirty_raw_len(r->held) : 0;
	blen = (uint32_t)(DST_FIXED + n);
	buf = calloc(1, REC_HDR + (size_t)blen + REC_SUM);
	if (!buf)
		return err_set(ENOMEM, "save %s: out of memory", path);
	rec_header(buf, KIND_DST, blen);
	b = buf + REC_HDR;
	memcpy(b, r->id, STATE_ID_LEN);
	put_be32(b + 16, (uint32_t)r->state);
	put_be32(b + 20, r->attempt);
	put_be32(b + 24, r->chunk_size);
	put_be64(b + 32, r->size);
	put_be64(b + 40, r->st_dev);
	put_be64(b + 48, r->st_ino);
	memcpy(b + 56, r->digest, 16);
	put_be64(b + 72, r->chunks);
	put_be64(b + 80, n);
	if (n)
		dirty_export(r->held, b + DST_FIXED);
	rec_seal(buf, blen);
	ret = replace_file(path, buf, REC_HDR + (size_t)blen + REC_SUM);
	free(buf);
	return ret;
}

static int dst_decode(const char *path, const uint8_t *b, uint32_t blen, struct dst_rec *r)
{
	uint32_t state;
	uint64_t n, want;

	if (blen < DST_FIXED)
		return err_set(EBADMSG,
			       "load %s: destination record of %" PRIu32
			       " bytes, at least %d expected",
			       path, blen, DST_FIXED);
	memcpy(r->id, b, STATE_ID_LEN);
	state = get_be32(b + 16);
	r->attempt = get_be32(b + 20);
	r->chunk_size = get_be32(b + 24);
	r->size = get_be64(b + 32);
	r->st_dev = get_be64(b + 40);
	r->st_ino = get_be64(b + 48);
	memcpy(r->digest, b + 56, 16);
	r->chunks = get_be64(b + 72);
	n = get_be64(b + 80);
	if (state != DST_REC_PARTIAL && state != DST_REC_AWAITING)
		return err_set(EBADMSG, "load %s: unknown state %" PRIu32, path, state);
	r->state = (enum dst_rec_state)state;
	if (get_be32(b + 28) != 0)
		return err_set(EBADMSG, "load %s: reserved field is not 0", path);
	if (r->chunk_size < 512 || !is_pow2(r->chunk_size) || r->size == 0)
		return err_set(EBADMSG,
			       "load %s: bad geometry: size %" PRIu64 ", chunk size %" PRIu32, path,
			       r->size, r->chunk_size);
	want = r->state == DST_REC_PARTIAL ? held_len(r->size, r->chunk_size) : 0;
	if (n != want || n != blen - (uint64_t)DST_FIXED)
		return err_set(EBADMSG,
			       "load %s: bitmap of %" PRIu64 " bytes (record has %" PRIu64
			       "), size %" PRIu64 " at chunk size %" PRIu32 " needs %" PRIu64,
			       path, n, blen - (uint64_t)DST_FIXED, r->size, r->chunk_size, want);
	if (r->state != DST_REC_PARTIAL)
		return 0;
	r->held = dirty_new(r->size, r->chunk_size);
	if (!r->held)
		return err_set(ENOMEM, "load %s: bitmap for %" PRIu64 " bytes: out of memory", path,
			       r->size);
	if (dirty_import(r->held, b + DST_FIXED) < 0)
		return err_set(EBADMSG, "load %s: bitmap has bits past the last chunk", path);
	return 0;
}

/* Read IMAGE's record file named by SUFFIX, check its envelope for KIND
 * and decode its body into r. */
static int load_rec(const char *image, const char *suffix, int kind,
		    int (*decode)(const char *path, const uint8_t *b, uint32_t blen, void *r),
		    void *r)
{
	char path[PATH_MAX];
	const uint8_t *body = NULL;
	uint8_t *buf = NULL;
	uint32_t blen = 0;
	size_t len = 0;
	int ret = state_path(image, suffix, false, path, sizeof(path));

	if (ret < 0)
		return ret;
	ret = read_file(path, &buf, &len);
	if (ret < 0)
		return ret;
	ret = rec_open(path, buf, len, kind, &body, &blen);
	if (ret == 0)
		ret = decode(path, body, blen, r);
	free(buf);
	return ret;
}

static int dst_decode_any(const char *path, const uint8_t *b, uint32_t blen, void *r)
{
	return dst_decode(path, b, blen, r);
}

int dst_rec_load(const char *image, struct dst_rec *r)
{
	int ret;

	memset(r, 0, sizeof(*r));
	ret = load_rec(image, DST_REC_SUFFIX, KIND_DST, dst_decode_any, r);
	if (ret < 0) {
		dst_rec_release(r);
		memset(r, 0, sizeof(*r));
	}
	return ret;
}

int dst_rec_clear(const char *image)
{
	return clear_file(image, DST_REC_SUFFIX);
}

void dst_rec_release(struct dst_rec *r)
{
	if (!r)
		return;
	dirty_free(r->held);
	r->held = NULL;
}

/* The length of a valid destination string, or -1. */
static int dest_len(const char *s, size_t cap)
{
	size_t i;

	for (i = 0; i < cap && s[i]; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return -1;
	return i < cap ? (int)i : -1;
}

void src_rec_init(struct src_rec *r, const uint8_t id[STATE_ID_LEN], uint32_t attempt,
		  const char *dest)
{
	*r = (struct src_rec){ .attempt = attempt, .when = (uint64_t)time(NULL) };
	memcpy(r->id, id, STATE_ID_LEN);
	for (size_t i = 0; dest[i] && i + 1 < sizeof(r->dest); i++)
		r->dest[i] = dest[i] >= 0x20 && dest[i] < 0x7f ? dest[i] : '?';
}

int src_rec_save(const char *image, const struct src_rec *r)
{
	uint8_t buf[REC_HDR + SRC_FIXED + sizeof(r->dest) + REC_SUM];
	char path[PATH_MAX];
	int n = dest_len(r->dest, sizeof(r->dest)), ret;
	uint8_t *b = buf + REC_HDR;

	if (n < 0)
		return err_set(EINVAL, "save handover of %s: destination is not printable ASCII",
			       image);
	ret = state_path(image, SRC_REC_SUFFIX, true, path, sizeof(path));
	if (ret < 0)
		return ret;
	memset(buf, 0, sizeof(buf));
	rec_header(buf, KIND_SRC, SRC_FIXED + (uint32_t)n);
	memcpy(b, r->id, STATE_ID_LEN);
	put_be32(b + 16, r->attempt);
	put_be64(b + 24, r->when);
	put_be64(b + 32, r->st_dev);
	put_be64(b + 40, r->st_ino);
	put_be16(b + 48, (uint16_t)n);
	memcpy(b + SRC_FIXED, r->dest, (size_t)n);
	rec_seal(buf, SRC_FIXED + (uint32_t)n);
	return replace_file(path, buf, REC_HDR + SRC_FIXED + (size_t)n + REC_SUM);
}

static int src_decode(const char *path, const uint8_t *b, uint32_t blen, struct src_rec *r)
{
	uint16_t n;

	if (blen < SRC_FIXED)
		return err_set(
		    EBADMSG, "load %s: handover record of %" PRIu32 " bytes, at least %d expected",
		    path, blen, SRC_FIXED);
	memcpy(r->id, b, STATE_ID_LEN);
	r->attempt = get_be32(b + 16);
	r->when = get_be64(b + 24);
	r->st_dev = get_be64(b + 32);
	r->st_ino = get_be64(b + 40);
	n = get_be16(b + 48);
	if (get_be32(b + 20) != 0)
		return err_set(EBADMSG, "load %s: reserved field is not 0", path);
	if (n >= sizeof(r->dest) || blen != SRC_FIXED + (uint32_t)n)
		return err_set(EBADMSG, "load %s: destination of %u bytes in a body of %" PRIu32,
			       path, n, blen);
	memcpy(r->dest, b + SRC_FIXED, n);
	r->dest[n] = '\0';
	if (dest_len(r->dest, sizeof(r->dest)) != n)
		return err_set(EBADMSG, "load %s: destination is not printable ASCII", path);
	return 0;
}

static int src_decode_any(const char *path, const uint8_t *b, uint32_t blen, void *r)
{
	return src_decode(path, b, blen, r);
}

int src_rec_load(const char *image, struct src_rec *r)
{
	int ret;

	memset(r, 0, sizeof(*r));
	ret = load_rec(image, SRC_REC_SUFFIX, KIND_SRC, src_decode_any, r);
	if (ret < 0)
		memset(r, 0, sizeof(*r));
	return ret;
}

int src_rec_clear(const char *image)
{
	return clear_file(image, SRC_REC_SUFFIX);
}

int src_rec_check_ours(const char *image, const char *cmd, bool reclaim, bool *reclaimed)
{
	struct src_rec rec;
	char when[64];
	time_t t;
	int r = src_rec_load(image, &rec);

	*reclaimed = false;
	if (r == -ENOENT || (r == 0 && rec.attempt == 0))
		return 0;
	if (r < 0 && r != -EBADMSG)
		return r;
	if (reclaim) {
		r = src_rec_clear(image);
		*reclaimed = r == 0;
		return r;
	}
	if (r == -EBADMSG)
		return err_set(EUCLEAN,
			       "%s has an unreadable hand-over record: refusing to %s it (%s "
			       "--reclaim takes it back)",
			       image, cmd, cmd);
	t = (time_t)rec.when;
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
	return err_set(EUCLEAN,
		       "%s was handed over to %s at %s (switch-over attempt %u): it belongs to "
		       "that host now; refusing to %s it (%s --reclaim takes it back, once the "
		       "destination is known to be gone)",
		       image, rec.dest[0] ? rec.dest : "another host", when, rec.attempt, cmd, cmd);
}
