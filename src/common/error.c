/* SPDX-License-Identifier: MIT */
/* Per-thread last-error message; see error.h. */
#include "error.h"

#include <stdio.h>
#include <string.h>

#define ERR_MSG_MAX 1024

static _Thread_local char err_buf[ERR_MSG_MAX];

int err_vset(int err, const char *fmt, va_list ap)
{
	vsnprintf(err_buf, sizeof(err_buf), fmt, ap);
	return -err;
}

int err_set(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(err, fmt, ap);
	va_end(ap);
	return -err;
}

int err_prefix(int err, const char *fmt, ...)
{
	char old[ERR_MSG_MAX];
	char pre[ERR_MSG_MAX];
	va_list ap;

	memcpy(old, err_buf, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	/* Truncation is acceptable: the message stays a valid string. */
	size_t n = strlen(pre);

	if (n >= sizeof(err_buf))
		n = sizeof(err_buf) - 1;
	memcpy(err_buf, pre, n);
	snprintf(err_buf + n, sizeof(err_buf) - n, "%s", old[0] ? old : strerror(err));
	return -err;
}

const char *err_msg(void)
{
	return err_buf[0] ? err_buf : "unknown error";
}

void err_clear(void)
{
	err_buf[0] = '\0';
}

void err_copy_in(const char *msg)
{
	snprintf(err_buf, sizeof(err_buf), "%s", msg);
}
