/* SPDX-License-Identifier: MIT */
/* Names shared by both engines, and the frame reader both use. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/error.h"
#include "engine.h"
#include "transport/transport.h"

const char *mig_state_name(enum mig_state s)
{
	/* When you add a state, also update enum mig_state in migrate.h. */
	static const char *const names[] = {
		[MIG_SETUP] = "setup",	       [MIG_BULK] = "active",
		[MIG_DIRTY] = "active",	       [MIG_FINAL] = "device",
		[MIG_COMPLETED] = "completed", [MIG_FAILED] = "failed",
		[MIG_CANCELLED] = "cancelled",
	};

	if ((unsigned)s >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[s];
}

const char *mig_mode_name(enum mig_mode m)
{
	switch (m) {
	case MIG_MODE_AUTO:
		return "auto";
	case MIG_MODE_DIRTY:
		return "dirty";
	case MIG_MODE_ACTIVE:
		return "active";
	}
	return "unknown";
}

int mig_mode_parse(const char *s, enum mig_mode *out)
{
	static const enum mig_mode all[] = { MIG_MODE_AUTO, MIG_MODE_DIRTY, MIG_MODE_ACTIVE };

	for (unsigned i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(s, mig_mode_name(all[i])) == 0) {
			*out = all[i];
			return 0;
		}
	return err_set(EINVAL, "unknown mode '%s' (auto, dirty or active)", s);
}

int mig_mirror_share_check(unsigned long pct)
{
	if (pct < MIG_MIRROR_SHARE_MIN || pct > MIG_MIRROR_SHARE_MAX)
		return err_set(EINVAL,
			       "mirror share %lu%% is out of range (%d to %d percent of the rate)",
			       pct, MIG_MIRROR_SHARE_MIN, MIG_MIRROR_SHARE_MAX);
	return 0;
}

int mig_mirror_share_parse(const char *s, unsigned *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	/* strtoul() would take a sign or leading blanks too. */
	if (!isdigit((unsigned char)s[0]) || (*end && strcmp(end, "%") != 0) || errno)
		return err_set(EINVAL, "'%s' is not a percentage (%d to %d)", s,
			       MIG_MIRROR_SHARE_MIN, MIG_MIRROR_SHARE_MAX);
	if (mig_mirror_share_check(v) < 0)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

const char *mig_compress_name(enum mig_compress c)
{
	switch (c) {
	case MIG_COMPRESS_OFF:
		return "off";
	case MIG_COMPRESS_ZSTD:
		return "zstd";
	case MIG_COMPRESS_AUTO:
		return "auto";
	}
	return "unknown";
}

int mig_compress_parse(const char *s, enum mig_compress *out, int *level)
{
	const char *colon = strchr(s, ':');
	char *end;
	long v;

	*level = MIG_COMPRESS_DEFAULT_LEVEL;
	if (strcmp(s, "off") == 0 || strcmp(s, "auto") == 0 || strcmp(s, "zstd") == 0) {
		*out = s[0] == 'o'   ? MIG_COMPRESS_OFF
		       : s[0] == 'a' ? MIG_COMPRESS_AUTO
				     : MIG_COMPRESS_ZSTD;
		return 0;
	}
	if (!colon || (size_t)(colon - s) != 4 || strncmp(s, "zstd", 4) != 0)
		return err_set(EINVAL, "unknown compression '%s' (off, zstd, zstd:LEVEL or auto)",
			       s);
	if (!colon[1])
		return err_set(EINVAL, "'%s': a level must follow 'zstd:' (%d to %d)", s,
			       ZSTD_minCLevel(), ZSTD_maxCLevel());
	errno = 0;
	v = strtol(colon + 1, &end, 10);
	if (*end || errno || v < ZSTD_minCLevel() || v > ZSTD_maxCLevel() || v == 0)
		return err_set(EINVAL,
			       "'%s': the zstd level must be a non-zero integer from %d to %d", s,
			       ZSTD_minCLevel(), ZSTD_maxCLevel());
	*out = MIG_COMPRESS_ZSTD;
	*level = (int)v;
	return 0;
}

int engine_xport_read(void *user, void *buf, size_t len, size_t *got)
{
	return xport_read(user, buf, len, got);
}

int engine_send_error(struct xport *x, enum native_msg type, int err, const char *reason)
{
	uint8_t buf[NATIVE_FRAME_HDR + 4 + NATIVE_REASON_MAX];
	struct native_error e = { .err = (uint32_t)err };
	int n;

	snprintf(e.reason, sizeof(e.reason), "%s", reason);
	n = native_error_encode(buf, sizeof(buf), type, &e);
	if (n < 0)
		return n;
	n = xport_write(x, buf, (size_t)n);
	if (n < 0)
		return n;
	return xport_flush(x);
}
