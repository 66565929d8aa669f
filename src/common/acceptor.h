/* SPDX-License-Identifier: MIT */
/*
 * Acceptor: the accept thread, the thread per connection and the reaping
 * of finished ones, shared by the NBD server (nbdserver/server.c) and the
 * control socket (control/server.c).  The owner supplies what a connection
 * is (acc_ops); this module knows only descriptors, threads and limits.
 *
 * Threads: acc_start() starts one accept thread with every signal blocked
 * (so signals stay with the application's threads); each accepted socket
 * gets a thread of its own running ops->run, which inherits that mask.
 * When run returns, the connection counts as finished and the accept
 * thread joins it and calls ops->free, soon after (it is woken).
 *
 * Locking: one mutex guards the connection list.  acc_foreach() calls its
 * function with it held, so that function must not call back into the
 * acceptor; ops->open, ops->free and ops->refuse run without it.
 */
#ifndef BLKMIG_COMMON_ACCEPTOR_H
#define BLKMIG_COMMON_ACCEPTOR_H

#include <stdbool.h>

struct acc;

struct acc_ops {
	/* A socket was accepted (accept flags as given to acc_start): return
	 * the connection object, which now owns fd, or NULL to refuse it
	 * (the acceptor closes fd). */
	void *(*open)(void *user, int fd);
	/* The connection's thread body. */
	void (*run)(void *conn);
	/* After run returned and its thread was joined; frees conn. */
	void (*free)(void *conn);
	/* acc_free(): make a running connection's run return soon (shut its
	 * socket down, poke its wakeup descriptor).  Called with the list
	 * lock held; must not block. */
	void (*kick)(void *conn);
	/* Optional: max_conns are live, fd will be closed right after; the
	 * last thing the peer hears (e.g. one error line). */
	void (*refuse)(void *user, int fd);
};

/*
 * Serve the listening socket lfd (not owned: the caller closes it after
 * acc_free()) with ops: at most max_conns connections whose run has not
 * returned; more are refused.  accept_flags go to accept4() (SOCK_CLOEXEC is
 * always added).  A failed accept for lack of descriptors or memory pauses
 * accepting for 100 ms instead of spinning.  0 with *out set (caller owns
 * it, acc_free()), or a negative errno with err_set("<what>: ...").
 */
int acc_start(const char *what, int lfd, unsigned max_conns, int accept_flags,
	      const struct acc_ops *ops, void *user, struct acc **out);

/* Connections whose run has not returned yet. */
unsigned acc_live(struct acc *a);

/* fn(conn, arg) for every connection whose run has not returned, with the
 * list lock held (see above). */
void acc_foreach(struct acc *a, void (*fn)(void *conn, void *arg), void *arg);

/* Stop accepting and join the accept thread; connections carry on.
 * Idempotent. */
void acc_stop(struct acc *a);

/*
 * acc_stop(), then kick every connection,
 * join them all and free each (ops->free).  Blocks until every run has
 * returned.  Accepts NULL.
 */
void acc_free(struct acc *a);

#endif
