/* SPDX-License-Identifier: MIT */
/*
 * One migration over as many connections as it takes (see migrate.h):
 * every connection is a new engine job on the same session, so the
 * destination recognises the migration (its id), offers the digests of
 * what it already holds, and the bulk pass sends only what differs.
 * Between connections the writers run freely; the next bulk pass reads
 * every chunk again, so no write made meanwhile can be missed.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "migrate.h"
#include "transport/transport.h"

#define RETRY_FIRST_NS (200 * 1000000ull)
#define RETRY_MAX_NS   (5 * 1000000000ull)

bool mig_error_retryable(int err)
{
	switch (err < 0 ? -err : err) {
	case ECONNRESET:
	case ECONNREFUSED:
	case ECONNABORTED:
	case EPIPE:
	case ETIMEDOUT:
	case ENOTCONN:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case EHOSTDOWN:
	case ENETRESET:
		return true;
	default:
		return false;
	}
}

bool mig_error_corruption(int err)
{
	switch (err < 0 ? -err : err) {
	case EBADMSG:
	case EILSEQ:
	case EPROTO:
	case ERANGE:
	case ENOENT:
		return true;
	default:
		return false;
	}
}

/*
 * Whether the failure of one connection is worth another: the link (as
 * this side or the destination saw it), not the peer's judgement ("another migration is already
 * being received" included: the same migration reconnecting replaces its own connection there).  A
 * corrupted stream is cured by the next connection (its bulk pass compares every chunk and resends
 * what differs), but not for ever: the third time it is the peer's, or the path's, fault.
 */
#define MAX_CORRUPTIONS 3

static bool worth_retry(int r, const struct mig_stats *st, unsigned *corruptions)
{
	if (st->verify && r == -EILSEQ)
		return false; /* the verify's answer */
	if (mig_error_corruption(r))
		return ++*corruptions < MAX_CORRUPTIONS;
	/* The destination's own failure is its judgement, unless it is the
	 * link's: with several connections (--connections) one of them can
	 * fail while the first still carries the destination's ERROR. */
	return mig_error_retryable(r);
}

int src_migrate(const struct src_params *params, const struct src_device *devs, unsigned ndev,
		const struct src_retry *rt, struct mig_stats *st)
{
	struct src_params p = *params;
	struct src_session own;
	uint64_t backoff = RETRY_FIRST_NS, give_up = 0;
	unsigned corruptions = 0, tries = 0;
	bool refused = false, wl_refused = false;
	int r;

	if (!p.session) {
		r = src_session_init(&own);
		if (r < 0)
			return r;
		p.session = &own;
	}
	for (;;) {
		struct src_job *j = NULL;
		struct xport *x = NULL;
		uint32_t accepted = p.session->accepted;
		uint64_t now, wait;
		char msg[1024];

		r = src_new(&p, devs, ndev, &j);
		if (r < 0)
			return r;
		if (rt->on_job)
			rt->on_job(rt->user, j);
		tries++;
		r = rt->dial(rt->user, &x);
		if (r == 0 && cancel_is_set(rt->cancel))
			r = err_set(ECANCELED, "migration cancelled");
		if (r == 0)
			r = src_run(j, x);
		src_stats(j, st);
		if (r < 0 && st->state != MIG_FAILED && st->state != MIG_CANCELLED)
			st->state = r == -ECANCELED ? MIG_CANCELLED : MIG_FAILED;
		snprintf(msg, sizeof(msg), "%s", r < 0 ? err_msg() : "");
		if (rt->on_end)
			rt->on_end(rt->user, j, r);
		if (rt->on_job)
			rt->on_job(rt->user, NULL);
		src_free(j);
		xport_close(x);
		err_copy_in(msg);
		/* --compress auto offered compression to a destination that
		 * does not take it: at once again, without (once). */
		if (r < 0 && !refused && p.session->compress_refused) {
			refused = true;
			if (rt->log)
				rt->log(rt->user, "the destination does not accept compressed "
						  "chunks: sending them as they are");
			continue;
		}
		/* An older destination refused the write lane: the same. */
		if (r < 0 && !wl_refused && p.session->wlane_refused) {
			wl_refused = true;
			if (rt->log)
				rt->log(rt->user, "the destination does not take a write lane: "
						  "mirrored writes share the one connection");
			continue;
		}
		/* Only a migration that has begun is resumed: a first
		 * connection that fails in its connect or its handshake (a
		 * wrong address, no receiver there, other credentials) is the
		 * operator's to fix, and says so at once. */
		if (r == 0 || r == -ECANCELED || !rt->retry_ns || !p.session->accepted ||
		    !worth_retry(r, st, &corruptions))
			return r;
		now = now_ns();
		/* Each outage gets its own --retry-for and back-off: a failure
		 * after the destination accepted this connection starts a new
		 * one; failures in a row double the wait. */
		if (!give_up || p.session->accepted > accepted) {
			give_up = now + rt->retry_ns;
			backoff = RETRY_FIRST_NS;
		}
		if (now >= give_up)
			return err_prefix(-r, "gave up after %u attempt%s to connect in %llu s: ",
					  tries, tries == 1 ? "" : "s",
					  (unsigned long long)(rt->retry_ns / 1000000000ull));
		wait = MIN(backoff, give_up - now);
		if (rt->log) {
			char line[1400];

			snprintf(line, sizeof(line),
				 "connection %u failed: %s; %s in %.1f s (giving up in %.0f s)",
				 tries, msg,
				 p.session->committing ? "delivering the commit" : "resuming",
				 (double)wait / 1e9, (double)(give_up - now) / 1e9);
			rt->log(rt->user, line);
		}
		if (cancel_sleep(rt->cancel, (int64_t)wait)) {
			st->state = MIG_CANCELLED;
			return err_set(ECANCELED, "migration cancelled");
		}
		backoff = MIN(backoff * 2, RETRY_MAX_NS);
	}
}
