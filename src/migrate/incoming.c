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
 *
 * A connection that starts with a JOIN (transport.h) is not a source but
 * one more lane of the migration running: it is handed to that
 * migration's transport (join_x) if its token and index are right, and
 * refused with one logged line otherwise.
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
	struct conn *conns; /* every connection's thread alive */
	struct conn *owner; /* the one carrying the migration */
	/* Its transport, which lanes join; cleared before it is closed. */
	struct xport *join_x;
	uint8_t id[NATIVE_ID_LEN];
	/* The migration's connection failed and the source may resume it
	 * until then (now_ns(); 0: not waiting for that). */
	uint64_t resume_until;
	int resume_err;
	char resume_msg[1024];
};

struct conn {
	struct incoming *in;
	struct conn *next;
	struct xport *x;
	struct cancel *stop; /* fired when the wait ends, or a resumed connection replaces this */
	char peer[80];	     /* the address, kept for the log after x is closed */
	bool claimed;
	bool replaced; /* the source reconnected: this one gave way */
};

static bool id_set(const uint8_t id[NATIVE_ID_LEN])
{
	for (unsigned i = 0; i < NATIVE_ID_LEN; i++)
		if (id[i])
			return true;
	return false;
}

/*
 * A connection whose handshake is valid asks to carry the migration.  The
 * same migration (its id) arriving while its old connection still runs
 * means the source reconnected over a link that went silent: the old one
 * gives way.  Another migration waits its turn: refused.
 */
static int claim(void *user, const uint8_t id[NATIVE_ID_LEN])
{
	struct conn *c = user;
	struct incoming *in = c->in;
	int r = 0;

	pthread_mutex_lock(&in->lock);
	if (in->claimed && !in->done && id_set(id) && memcmp(id, in->id, NATIVE_ID_LEN) == 0 &&
	    in->owner) {
		struct timespec ts = mono_deadline((uint64_t)in->ip->timeout_ms * 1000000u);

		in->owner->replaced = true;
		cancel_fire(in->owner->stop);
		while (in->claimed && !in->done)
			if (pthread_cond_timedwait(&in->cond, &in->lock, &ts) == ETIMEDOUT)
				break;
	}
	if (in->claimed || in->done) {
		r = err_set(EBUSY, "another migration is already being received here");
	} else {
		in->claimed = c->claimed = true;
		in->owner = c;
		in->join_x = c->x;
		memcpy(in->id, id, NATIVE_ID_LEN);
		in->resume_until = 0;
	}
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
	for (struct conn *c = in->conns; c; c = c->next)
		cancel_fire(c->stop);
}

/* Whether the destination waits for the source to resume after its
 * connection failed with r: the link failed or carried garbage, or the
 * source gave up on it for such a reason (its ABORT's errno). */
static bool resumable(int r)
{
	return mig_error_retryable(r) || mig_error_corruption(r);
}

/* The outcome of one connection; lock held. */
static void settle_locked(struct incoming *in, struct conn *c, int r, const char *msg,
			  const struct mig_stats *st)
{
	if (c->claimed) {
		in->claimed = false;
		in->owner = NULL;
	}
	if (in->done || c->replaced)
		return; /* ended by the outcome of another, cancelled, or replaced */
	if (c->claimed && r < 0 && in->ip->retry_ns && resumable(r) && !cancel_is_set(in->stop) &&
	    !(st->verify && st->state == MIG_COMPLETED)) {
		in->resume_until = now_ns() + in->ip->retry_ns;
		in->resume_err = r;
		snprintf(in->resume_msg, sizeof(in->resume_msg), "%s", msg);
		in->st = *st;
		if (in->ip->log) {
			char line[1400];

			snprintf(line, sizeof(line),
				 "the migration's connection failed: %s; waiting up to %llu s for "
				 "the source to resume it",
				 msg, (unsigned long long)(in->ip->retry_ns / 1000000000ull));
			in->ip->log(in->ip->log_user, line);
		}
		return;
	}
	if (r == 0 || (c->claimed && (st->written || st->verify)) ||
	    (r == -ECANCELED && cancel_is_set(in->stop))) {
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

/*
 * A connection that began with a JOIN: hand it to the migration it names
 * (*joined: it is that transport's now), or tell it why not.
 */
static int join(struct conn *c, bool *joined)
{
	struct incoming *in = c->in;
	uint8_t buf[XPORT_JOIN_LEN], token[XPORT_TOKEN_LEN];
	unsigned index = 0;
	int r = xport_read(c->x, buf, sizeof(buf), NULL);

	if (r < 0)
		return err_prefix(-r, "join: ");
	r = xport_join_decode(buf, &index, token);
	if (r == 0) {
		pthread_mutex_lock(&in->lock);
		if (!in->join_x || in->done)
			r = err_set(ENOENT,
				    "join: connection %u asks to join a migration, but none "
				    "is running here",
				    index + 1);
		else
			r = xport_lanes_attach(in->join_x, index, token, c->x);
		pthread_mutex_unlock(&in->lock);
		if (r < 0)
			r = err_prefix(-r, "join: ");
	}
	if (r == 0)
		*joined = true;
	else
		xport_join_refuse(c->x, r, err_msg());
	return r;
}

/* Whether x starts with a JOIN rather than a source's handshake. */
static bool starts_with_join(struct xport *x)
{
	uint8_t magic[8];

	return xport_peek(x, magic, sizeof(magic)) == (int)sizeof(magic) &&
	       get_be64(magic) == XPORT_JOIN_MAGIC;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct incoming *in = c->in;
	struct dst_params p = *in->p;
	struct mig_stats st = { 0 };
	char msg[1024] = "";
	bool joined = false;
	int r = 0;

	thread_name("bm-incoming");
	p.claim = claim;
	p.claim_user = c;
	xport_set_cancel(c->x, c->stop);
	xport_set_timeout(c->x, in->ip->timeout_ms);
	if (in->ip->tls)
		r = xport_start_tls(c->x, in->ip->tls, NULL, in->ip->timeout_ms);
	if (r == 0 && p.format == MIG_FORMAT_NATIVE && starts_with_join(c->x))
		r = join(c, &joined);
	else if (r == 0)
		r = dst_run(&p, c->x, c->stop, &st);
	if (r < 0)
		snprintf(msg, sizeof(msg), "%s", err_msg());
	pthread_mutex_lock(&in->lock);
	if (in->join_x == c->x)
		in->join_x = NULL;
	pthread_mutex_unlock(&in->lock);
	if (!joined)
		xport_close(c->x);

	pthread_mutex_lock(&in->lock);
	if (!joined)
		settle_locked(in, c, r, msg, &st);
	for (struct conn **pp = &in->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	in->nconn--;
	pthread_cond_broadcast(&in->cond);
	pthread_mutex_unlock(&in->lock);
	cancel_free(c->stop);
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
	/* The one carrying the migration does not count, and its lanes may
	 * join on top. */
	full = in->nconn - (in->claimed ? 1 : 0) >=
	       in->max_pending + (in->join_x ? XPORT_LANES_MAX - 1 : 0);
	if (!full)
		in->nconn++;
	pthread_mutex_unlock(&in->lock);
	if (!full)
		c = calloc(1, sizeof(*c));
	if (c && cancel_new(&c->stop) < 0) {
		free(c);
		c = NULL;
	}
	if (c) {
		c->in = in;
		c->x = x;
		snprintf(c->peer, sizeof(c->peer), "%s", xport_peer(x));
		pthread_mutex_lock(&in->lock);
		c->next = in->conns;
		in->conns = c;
		if (in->done)
			cancel_fire(c->stop);
		pthread_mutex_unlock(&in->lock);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, conn_main, c) == 0) {
			pthread_attr_destroy(&attr);
			return;
		}
		pthread_attr_destroy(&attr);
		pthread_mutex_lock(&in->lock);
		in->conns = c->next;
		pthread_mutex_unlock(&in->lock);
		cancel_free(c->stop);
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
	pthread_condattr_t ca;
	int r;

	r = cancel_new(&in.stop);
	if (r < 0)
		return r;
	pthread_mutex_init(&in.lock, NULL);
	/* claim() waits with a monotonic deadline. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&in.cond, &ca);
	pthread_condattr_destroy(&ca);
	for (;;) {
		struct pollfd pf[3] = {
			{ .fd = ip->lfd, .events = POLLIN },
			{ .fd = cancel_fd(cancel), .events = POLLIN },
			{ .fd = cancel_fd(in.stop), .events = POLLIN },
		};
		struct xport *x;
		uint64_t until;

		if (cancel_is_set(cancel) || cancel_is_set(in.stop))
			break;
		pthread_mutex_lock(&in.lock);
		until = in.resume_until;
		if (until && now_ns() >= until && !in.claimed && !in.done)
			end_locked(&in, in.resume_err, NULL,
				   "%s (the source did not resume the migration within %llu s)",
				   in.resume_msg,
				   (unsigned long long)(ip->retry_ns / 1000000000ull));
		pthread_mutex_unlock(&in.lock);
		if (cancel_is_set(in.stop))
			break;
		/* A failure may start the resume wait at any time: look again
		 * every second while that can happen. */
		if (poll(pf, 3,
			 until		? MIN(poll_ms_until(until), 1000)
			 : ip->retry_ns ? 1000
					: -1) < 0 &&
		    errno != EINTR) {
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
