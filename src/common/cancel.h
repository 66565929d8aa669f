/* SPDX-License-Identifier: MIT */
/*
 * Cancel token: "stop waiting" for any number of threads at once, without
 * polling.  A token is an atomic flag plus an eventfd.  cancel_fire() sets
 * the flag and makes the eventfd readable, and it stays readable: every
 * thread blocked in poll(2) on cancel_fd() (beside its own socket) wakes at
 * once, and so does every later one.  A fired token stays fired until
 * cancel_reset().
 *
 * The transport (xport_accept, xport_connect, xport_set_cancel) takes a
 * token; the CLI's SIGINT/SIGTERM handler fires one, which is why firing is
 * async-signal-safe.
 *
 * Threads: cancel_fire(), cancel_is_set(), cancel_fd() and cancel_sleep()
 * may be called from any thread (cancel_fire() also from a signal handler)
 * while the token exists.  cancel_new(), cancel_free() and cancel_reset()
 * need the token to be otherwise unused.  Setting the flag is the last
 * thing cancel_fire() does to the token, so a thread that has seen it set
 * (cancel_is_set(), or -ECANCELED from a wait on it) may free the token
 * once no other cancel_fire() can still be starting.
 */
#ifndef BLKMIG_COMMON_CANCEL_H
#define BLKMIG_COMMON_CANCEL_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>

struct cancel;

/* A new, unfired token (the caller owns it: cancel_free()).  0, or a
 * negative errno with err_set() (-ENOMEM, -EMFILE...). */
int cancel_new(struct cancel **out);
void cancel_free(struct cancel *c); /* accepts NULL */

/* Fire: wake every waiter, then set the flag.  Idempotent, never blocks,
 * async-signal-safe (atomics and at most one write(2); errno is
 * preserved).  Accepts NULL (does nothing). */
void cancel_fire(struct cancel *c);

/* Whether the token has fired.  NULL: never. */
bool cancel_is_set(const struct cancel *c);

/* A descriptor that polls readable (POLLIN) once the token has fired, and
 * stays so; never read from it.  NULL: -1, which poll(2) ignores, so a
 * caller can put cancel_fd(maybe_null) in its pollfd array as it is. */
int cancel_fd(const struct cancel *c);

/* Sleep for ns nanoseconds (ns < 0: until fired), waking at once if the
 * token fires.  True if it has fired.  NULL: a plain sleep (none at all
 * for ns < 0), false. */
bool cancel_sleep(const struct cancel *c, int64_t ns);

/*
 * Wait until fd is ready for 'events', the token fires, or deadline (a
 * now_ns() value; 0: none) passes: 1 ready, 0 deadline, -ECANCELED, or a
 * negative errno from poll(2) (no message).  Firing wins over readiness.
 * c may be NULL.
 */
int cancel_poll(const struct cancel *c, int fd, short events, uint64_t deadline);

/* The same for n (at most CANCEL_POLL_MAX) descriptors: how many are
 * ready, their revents set as poll(2) sets them, or 0 at the deadline,
 * -ECANCELED, -EINVAL (n too large), or a negative errno from poll(2). */
#define CANCEL_POLL_MAX 32
int cancel_poll_fds(const struct cancel *c, struct pollfd *fds, unsigned n, uint64_t deadline);

/* Unfire, so the token can serve another attempt.  Only while no thread
 * waits on it or may fire it. */
void cancel_reset(struct cancel *c);

#endif
