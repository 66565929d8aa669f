/* SPDX-License-Identifier: MIT */
/*
 * The destination's listener; see incoming.h.
 *
 * Threads: the caller's thread accepts; every connection gets a detached
 * thread that runs its handshakes and, if it claims the migration, the
 * migration itself.  'lock' guards everything below it in struct incoming;
 * the caller waits on 'cond' for the connections' threads to be gone
 * before it returns.  The 'stop' token ends every connection's waits once
 * the outcome is known (or the caller's token fired).
 */
#include "incoming.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "transport/transport.h"

struct incoming {
	const struct dst_params *p;
	const struct incoming_params *ip;
	unsigned max_pending, max_failures;
	struct cancel *stop; /* fired once done, or when the caller cancels */

	pthread_mutex_t lock;
	pthread_cond_t cond; /* a connection's thread ended */
	unsigned nconn;	     /* connections' threads alive */
	unsigned failures;
	bool claimed; /* a connection is carrying the migration */
	bool done;
	int result;
	char error[1024];
	struct mig_stats st;
};

struct conn {
	struct incoming *in;
	struct xport *x;
	char peer[80]; /* the address, kept for the log after x is closed */
	bool claimed;
};

static int claim(void *user)
{
	struct conn *c = user;
	struct incoming *in = c->in;
	int r = 0;

	pthread_mutex_lock(&in->lock);
	if (in->claimed || in->done)
		r = err_set(EBUSY, "another migration is already being received here");
	else
		in->claimed = c->claimed = true;
	pthread_mutex_unlock(&in->lock);
	return r;
}

/* The wait's outcome is known: record it (st may be NULL) and end every
 * connection; lock held. */
static void end_locked(struct incoming *in, int r, const struct mig_stats *st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void end_locked(struct incoming *in, int r, const struct mig_stats *st, const char *fmt, ...)
{
	va_list ap;

	in->done = true;
	in->result = r;
	if (st)
		in->st = *st;
	va_start(ap, fmt);
	vsnprintf(in->error, sizeof(in->error), fmt, ap);
	va_end(ap);
	cancel_fire(in->stop);
}

/* The outcome of one connection; lock held. */
static void settle_locked(struct incoming *in, struct conn *c, int r, const char *msg,
			  const struct mig_stats *st)
{
	if (c->claimed)
		in->claimed = false;
	if (in->done)
		return; /* ended by the outcome of another, or cancelled */
	if (r == 0 || (c->claimed && st->written) || (r == -ECANCELED && cancel_is_set(in->stop))) {
		/* Complete, failed after writing (this was the migration), or
		 * cancelled here.  A peer's own ABORT is a refusal like any
		 * other while nothing was written. */
		end_locked(in, r, st, "%s", msg);
		return;
	}
	in->failures++;
	/* The last one allowed is told in the final error instead. */
	if (in->ip->log && in->failures < in->max_failures) {
		char line[1400];

		snprintf(line, sizeof(line), "refused a connection from %s: %s", c->peer, msg);
		in->ip->log(in->ip->log_user, line);
	}
	if (in->failures >= in->max_failures)
		end_locked(in, r, st, "%s (gave up after %u refused connection%s)", msg,
			   in->failures, in->failures == 1 ? "" : "s");
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct incoming *in = c->in;
	struct dst_params p = *in->p;
	struct mig_stats st = { 0 };
	char msg[1024] = "";
	int r = 0;

	p.claim = claim;
	p.claim_user = c;
	xport_set_cancel(c->x, in->stop);
	xport_set_timeout(c->x, in->ip->timeout_ms);
	if (in->ip->tls)
		r = xport_start_tls(c->x, in->ip->tls, NULL, in->ip->timeout_ms);
	if (r == 0)
		r = dst_run(&p, c->x, in->stop, &st);
	if (r < 0)
		snprintf(msg, sizeof(msg), "%s", err_msg());
	xport_close(c->x);

	pthread_mutex_lock(&in->lock);
	settle_locked(in, c, r, msg, &st);
	in->nconn--;
	pthread_cond_broadcast(&in->cond);
	pthread_mutex_unlock(&in->lock);
	free(c);
	return NULL;
}

/* Start a thread for x, or refuse it when too many are being tried. */
static void admit(struct incoming *in, struct xport *x)
{
	struct conn *c = NULL;
	pthread_attr_t attr;
	pthread_t t;
	bool full;

	pthread_mutex_lock(&in->lock);
	/* The one carrying the migration does not count. */
	full = in->nconn - (in->claimed ? 1 : 0) >= in->max_pending;
	if (!full)
		in->nconn++;
	pthread_mutex_unlock(&in->lock);
	if (!full)
		c = calloc(1, sizeof(*c));
	if (c) {
		c->in = in;
		c->x = x;
		snprintf(c->peer, sizeof(c->peer), "%s", xport_peer(x));
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, conn_main, c) == 0) {
			pthread_attr_destroy(&attr);
			return;
		}
		pthread_attr_destroy(&attr);
		free(c);
	}
	/* Turned away unread: logged, but not counted against max_failures,
	 * so a flood of connections cannot make the receiver give up. */
	pthread_mutex_lock(&in->lock);
	if (!full)
		in->nconn--;
	if (in->ip->log) {
		char line[256];

		snprintf(line, sizeof(line), "refused a connection from %s: %s", xport_peer(x),
			 full ? "too many connections are being tried at once"
			      : "no memory or threads for another connection");
		in->ip->log(in->ip->log_user, line);
	}
	pthread_mutex_unlock(&in->lock);
	xport_close(x);
}

int incoming_run(const struct dst_params *p, const struct incoming_params *ip,
		 struct cancel *cancel, struct mig_stats *st)
{
	struct incoming in = {
		.p = p,
		.ip = ip,
		.max_pending = ip->max_pending ? ip->max_pending : INCOMING_MAX_PENDING,
		.max_failures = ip->max_failures ? ip->max_failures : INCOMING_MAX_FAILURES,
	};
	int r;

	r = cancel_new(&in.stop);
	if (r < 0)
		return r;
	pthread_mutex_init(&in.lock, NULL);
	pthread_cond_init(&in.cond, NULL);
	for (;;) {
		struct pollfd pf[3] = {
			{ .fd = ip->lfd, .events = POLLIN },
			{ .fd = cancel_fd(cancel), .events = POLLIN },
			{ .fd = cancel_fd(in.stop), .events = POLLIN },
		};
		struct xport *x;

		if (cancel_is_set(cancel) || cancel_is_set(in.stop))
			break;
		if (poll(pf, 3, -1) < 0 && errno != EINTR) {
			r = err_set(errno, "poll: %s", strerror(errno));
			pthread_mutex_lock(&in.lock);
			if (!in.done)
				end_locked(&in, r, NULL, "%s", err_msg());
			pthread_mutex_unlock(&in.lock);
			break;
		}
		if (!(pf[0].revents & POLLIN))
			continue;
		/* Ready: a connection, or one that already went away. */
		if (xport_accept(ip->lfd, 0, NULL, &x) == 0)
			admit(&in, x);
	}
	/* Cancelled, or the outcome is known: end every connection. */
	cancel_fire(in.stop);
	pthread_mutex_lock(&in.lock);
	while (in.nconn)
		pthread_cond_wait(&in.cond, &in.lock);
	if (!in.done)
		end_locked(&in, -ECANCELED, NULL, "cancelled while waiting for the source");
	pthread_mutex_unlock(&in.lock);
	pthread_cond_destroy(&in.cond);
	pthread_mutex_destroy(&in.lock);
	cancel_free(in.stop);
	if (st)
		*st = in.st;
	if (in.result < 0)
		err_copy_in(in.error);
	return in.result;
}
