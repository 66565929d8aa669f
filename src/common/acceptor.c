/* SPDX-License-Identifier: MIT */
/*
 * The accept/reap loop shared by the NBD and control servers; see
 * acceptor.h.
 *
 * The connection list changes only in the accept thread (adding accepted
 * connections, reaping finished ones) and in acc_free() after that thread
 * is joined, so a connection's memory lives until it is reaped even after
 * its thread has ended.  A finishing connection thread only sets its done
 * flag and pokes wake_fd; the accept thread does the joining.
 */
#include "acceptor.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "util.h"

/* Pause after accept() fails for lack of resources, so it does not spin. */
#define ACCEPT_RETRY_MS 100

struct acc_conn {
	struct acc_conn *next; /* acc->conns */
	struct acc *acc;
	void *conn; /* the owner's object */
	pthread_t thread;
	atomic_bool done; /* run has returned; the accept thread reaps it */
};

struct acc {
	const struct acc_ops *ops;
	void *user;
	int lfd;
	int flags;
	unsigned max_conns;
	int wake_fd; /* eventfd: stop, or a connection finished */
	atomic_bool stopping;
	bool accepting; /* the accept thread exists and is not joined */
	pthread_t thread;

	pthread_mutex_t lock; /* protects conns, nlive */
	struct acc_conn *conns;
	unsigned nlive; /* connections whose run has not returned */
};

static void wake(int efd)
{
	/* Only fails when the counter would overflow, and then a wakeup is
	 * pending anyway. */
	(void)eventfd_write(efd, 1);
}

static void *conn_thread(void *arg)
{
	struct acc_conn *c = arg;
	struct acc *a = c->acc;

	thread_name("bm-conn");
	a->ops->run(c->conn);
	pthread_mutex_lock(&a->lock);
	a->nlive--;
	atomic_store(&c->done, true);
	pthread_mutex_unlock(&a->lock);
	wake(a->wake_fd);
	return NULL;
}

/* Join and free the connections whose run has returned.  Accept thread
 * (or acc_free() after it), without the lock. */
static void reap(struct acc *a)
{
	struct acc_conn *dead = NULL, **pp, *c;

	pthread_mutex_lock(&a->lock);
	for (pp = &a->conns; (c = *pp);) {
		if (atomic_load(&c->done)) {
			*pp = c->next;
			c->next = dead;
			dead = c;
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&a->lock);
	while ((c = dead)) {
		dead = c->next;
		pthread_join(c->thread, NULL);
		a->ops->free(c->conn);
		free(c);
	}
}

/* Take over an accepted socket: start its thread, or refuse and close it. */
static void conn_start(struct acc *a, int fd)
{
	struct acc_conn *c;
	bool full;

	pthread_mutex_lock(&a->lock);
	full = a->nlive >= a->max_conns;
	pthread_mutex_unlock(&a->lock);
	if (full) {
		if (a->ops->refuse)
			a->ops->refuse(a->user, fd);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->acc = a;
	c->conn = a->ops->open(a->user, fd);
	if (!c->conn) {
		free(c);
		close(fd);
		return;
	}
	/* Listed before its thread starts, so acc_foreach() sees it from
	 * its first moment on. */
	pthread_mutex_lock(&a->lock);
	c->next = a->conns;
	a->conns = c;
	a->nlive++;
	if (pthread_create(&c->thread, NULL, conn_thread, c) != 0) {
		a->conns = c->next;
		a->nlive--;
		pthread_mutex_unlock(&a->lock);
		a->ops->free(c->conn);
		free(c);
		return;
	}
	pthread_mutex_unlock(&a->lock);
}

static void *accept_main(void *arg)
{
	struct acc *a = arg;
	bool backoff = false;

	thread_name("bm-accept");
	while (!atomic_load(&a->stopping)) {
		struct pollfd p[2] = {
			{ .fd = a->wake_fd, .events = POLLIN },
			{ .fd = a->lfd, .events = backoff ? 0 : POLLIN },
		};
		int fd;

		/* poll() fails only with ENOMEM (or EINTR): wait and retry. */
		if (poll(p, 2, backoff ? ACCEPT_RETRY_MS : -1) < 0 && errno != EINTR)
			backoff = true;
		else
			backoff = false;
		if (p[0].revents & POLLIN) {
			eventfd_t v;

			(void)eventfd_read(a->wake_fd, &v);
		}
		reap(a);
		if (atomic_load(&a->stopping) || !(p[1].revents & POLLIN))
			continue;
		fd = accept4(a->lfd, NULL, NULL, a->flags | SOCK_CLOEXEC);
		if (fd >= 0)
			conn_start(a, fd);
		else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			backoff = true;
	}
	return NULL;
}

int acc_start(const char *what, int lfd, unsigned max_conns, int accept_flags,
	      const struct acc_ops *ops, void *user, struct acc **out)
{
	sigset_t all, old;
	struct acc *a;
	int e;

	a = calloc(1, sizeof(*a));
	if (!a)
		return err_set(ENOMEM, "%s: out of memory", what);
	a->ops = ops;
	a->user = user;
	a->lfd = lfd;
	a->flags = accept_flags;
	a->max_conns = max_conns;
	a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->wake_fd < 0) {
		e = errno;
		free(a);
		return err_set(e, "%s: eventfd: %s", what, strerror(e));
	}
	pthread_mutex_init(&a->lock, NULL);

	/* Signals stay with the application's threads, not ours. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = pthread_create(&a->thread, NULL, accept_main, a);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		pthread_mutex_destroy(&a->lock);
		close(a->wake_fd);
		free(a);
		return err_set(e, "%s: cannot start the accept thread: %s", what, strerror(e));
	}
	a->accepting = true;
	*out = a;
	return 0;
}

unsigned acc_live(struct acc *a)
{
	unsigned n;

	pthread_mutex_lock(&a->lock);
	n = a->nlive;
	pthread_mutex_unlock(&a->lock);
	return n;
}

void acc_foreach(struct acc *a, void (*fn)(void *conn, void *arg), void *arg)
{
	pthread_mutex_lock(&a->lock);
	for (struct acc_conn *c = a->conns; c; c = c->next)
		if (!atomic_load(&c->done))
			fn(c->conn, arg);
	pthread_mutex_unlock(&a->lock);
}

void acc_stop(struct acc *a)
{
	if (!a || !a->accepting)
		return;
	atomic_store(&a->stopping, true);
	wake(a->wake_fd);
	pthread_join(a->thread, NULL);
	a->accepting = false;
}

void acc_free(struct acc *a)
{
	struct acc_conn *c;

	if (!a)
		return;
	acc_stop(a);
	/* No new connections now: wake every existing one, then join all. */
	pthread_mutex_lock(&a->lock);
	for (c = a->conns; c; c = c->next)
		if (!atomic_load(&c->done))
			a->ops->kick(c->conn);
	pthread_mutex_unlock(&a->lock);
	while ((c = a->conns)) {
		a->conns = c->next;
		pthread_join(c->thread, NULL);
		a->ops->free(c->conn);
		free(c);
	}
	close(a->wake_fd);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
