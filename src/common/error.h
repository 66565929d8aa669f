/* SPDX-License-Identifier: MIT */
/*
 * Last-error recording, in the manner of libnbd's set_error(): the function
 * that detects a failure records one human-readable message, with context,
 * and returns a negative errno; callers pass the code up without logging it
 * again.  The message is per thread.
 */
#ifndef BLKMIG_COMMON_ERROR_H
#define BLKMIG_COMMON_ERROR_H

#include <stdarg.h>

/*
 * Record a message for this thread and return -err (err is a positive errno,
 * so "return err_set(EIO, ...)" reads naturally).  The previous message is
 * replaced.
 */
int err_set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int err_vset(int err, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/*
 * Prepend context to this thread's message ("receive: " + old) and return
 * -err.  Used where a caller adds where-information the callee lacked.
 */
int err_prefix(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* This thread's last message, or a generic string for err if none is set. */
const char *err_msg(void);

/* Forget this thread's message. */
void err_clear(void);

/* Copy another thread's message in (used when a worker's error surfaces). */
void err_copy_in(const char *msg);

#endif
