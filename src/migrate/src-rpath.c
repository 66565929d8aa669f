/* SPDX-License-Identifier: MIT */
/*
 * The source's return path (formats that have one): a thread that reads
 * everything the destination says (SYNCED, ACK, ERROR, WACK) and hands it
 * over under j->lock, so the destination is heard while the engine is busy
 * sending.  SYNCED and ACK wait for the engine (rp_await); a WACK releases
 * the mirrored writers it covers; an ERROR, or a failure to read, is kept
 * as the first failure and wakes everyone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "src-impl.h"
#include "transport/transport.h"

int rp_peer_error(struct src_job *j, const struct native_error *e)
{
	atomic_store(&j->peer_failed, true);
	return err_set(e->err ? (int)e->err : EIO, "destination failed: %s", e->reason);
}

void rp_fail_locked(struct src_job *j, int r)
{
	if (!j->rp_err) {
		j->rp_err = r;
		snprintf(j->rp_msg, sizeof(j->rp_msg), "%s", err_msg());
	}
	pthread_cond_broadcast(&j->done_cond);
	pthread_cond_broadcast(&j->wack_cond);
	wl_kick_locked(j);
}

static void rp_fail(struct src_job *j, int r)
{
	pthread_mutex_lock(&j->lock);
	rp_fail_locked(j, r);
	pthread_mutex_unlock(&j->lock);
}

int rp_wack_locked(struct src_job *j, uint64_t v)
{
	if (v <= j->wacked || v > j->wseq_sent)
		return err_set(EPROTO,
			       "destination acknowledged write %llu; %llu were "
			       "acknowledged and %llu sent",
			       (unsigned long long)v, (unsigned long long)j->wacked,
			       (unsigned long long)j->wseq_sent);
	j->wacked = v;
	j->mirror_suspended = false; /* the link answers again */
	pthread_cond_broadcast(&j->wack_cond);
	return 0;
}

/* Take one decoded message (j->lock held); 0, or the error that ends the
 * return path. */
static int deliver_locked(struct src_job *j, uint8_t type, uint64_t v)
{
	if (type == NATIVE_MSG_WACK)
		return rp_wack_locked(j, v);
	j->mirror_suspended = false; /* any answer: the link works again */
	if (j->rp_n == SRC_ANSWERS_MAX)
		return err_set(EPROTO, "destination sent %s before the last answer was expected",
			       native_msg_name(type));
	j->rp_q[j->rp_n].type = type;
	j->rp_q[j->rp_n].value = v;
	j->rp_n++;
	pthread_cond_broadcast(&j->done_cond);
	return 0;
}

static void *rp_main(void *arg)
{
	struct src_job *j = arg;

	thread_name("bm-src-rpath");
	wire_stream_allow(j->rs, NATIVE_ALLOW(NATIVE_MSG_SYNCED) | NATIVE_ALLOW(NATIVE_MSG_ACK) |
				     NATIVE_ALLOW(NATIVE_MSG_WACK) | NATIVE_ALLOW(NATIVE_MSG_DONE) |
				     NATIVE_ALLOW(NATIVE_MSG_EXPORT) |
				     NATIVE_ALLOW(NATIVE_MSG_ERROR));
	for (;;) {
		struct wire_item it;
		uint8_t type;
		bool quit;
		int r;

		/* The destination may say nothing for as long as a pass
		 * takes, which is no failure: wait without the idle timeout
		 * until it says something (then a message that stops halfway
		 * is one), or until rp_stop() shuts the read side. */
		r = xport_readable(j->x, -1);
		if (r == 0)
			continue; /* EINTR */
		pthread_mutex_lock(&j->lock);
		quit = j->rp_quit;
		pthread_mutex_unlock(&j->lock);
		if (quit)
			break;
		if (r > 0)
			r = wire_stream_next(j->rs, &it);
		if (r == 0 && it.kind == WIRE_ITEM_END)
			r = err_set(ECONNRESET, "connection closed");
		if (r < 0) {
			rp_fail(j, err_prefix(-r, "destination: "));
			break;
		}
		if (it.kind == WIRE_ITEM_ERROR) {
			rp_fail(j, rp_peer_error(j, it.error));
			break;
		}
		/* Let through to be named: it belongs before STATE, if at all. */
		if (it.kind == WIRE_ITEM_EXPORT) {
			rp_fail(j, err_set(EPROTO, "the destination announced its NBD export "
						   "(EXPORT) after its STATE"));
			break;
		}
		type = it.kind == WIRE_ITEM_SYNCED ? NATIVE_MSG_SYNCED
		       : it.kind == WIRE_ITEM_WACK ? NATIVE_MSG_WACK
		       : it.kind == WIRE_ITEM_DONE ? NATIVE_MSG_DONE
						   : NATIVE_MSG_ACK;
		pthread_mutex_lock(&j->lock);
		r = deliver_locked(j, type, it.value);
		if (r < 0)
			rp_fail_locked(j, r);
		pthread_mutex_unlock(&j->lock);
		if (r < 0)
			break;
	}
	return NULL;
}

int rp_start(struct src_job *j)
{
	int r = pthread_create(&j->rp_thread, NULL, rp_main, j);

	if (r)
		return err_set(r, "cannot start the return path thread: %s", strerror(r));
	j->rp_running = true;
	return 0;
}

void rp_stop(struct src_job *j)
{
	if (!j->rp_running)
		return;
	pthread_mutex_lock(&j->lock);
	j->rp_quit = true;
	pthread_mutex_unlock(&j->lock);
	xport_shutdown_read(j->x);
	pthread_join(j->rp_thread, NULL);
	j->rp_running = false;
}

int rp_await(struct src_job *j, uint8_t want, const char *what, uint64_t *value)
{
	int timeout = j->timeout_ms;
	struct timespec ts = mono_deadline((uint64_t)(timeout > 0 ? timeout : 0) * 1000000u);
	int r = 0;

	pthread_mutex_lock(&j->lock);
	for (;;) {
		if (j->rp_n || j->rp_err)
			break;
		if (src_cancelled(j)) {
			r = err_set(ECANCELED, "migration cancelled");
			break;
		}
		if (timeout > 0 && mono_passed(&ts)) {
			r = err_set(ETIMEDOUT, "waiting for the destination %s: no answer in %d s",
				    what, timeout / 1000);
			break;
		}
		/* Writes still go out while the destination syncs: those
		 * queued until now, then the answer is looked for again.
		 * (The write lane's sender sends its own.) */
		if (j->mq_head && !j->wl) {
			r = mirror_send_queued_locked(j, j->mq_seq);
			if (r < 0)
				break;
			continue;
		}
		if (timeout <= 0) {
			pthread_cond_wait(&j->done_cond, &j->lock);
		} else if (pthread_cond_timedwait(&j->done_cond, &j->lock, &ts) == ETIMEDOUT &&
			   !j->rp_n && !j->rp_err) {
			r = err_set(ETIMEDOUT, "waiting for the destination %s: no answer in %d s",
				    what, timeout / 1000);
			break;
		}
	}
	if (r == 0 && !j->rp_n) {
		r = j->rp_err;
		err_copy_in(j->rp_msg);
	} else if (r == 0) {
		if (j->rp_q[0].type != want)
			r = err_set(EPROTO, "waiting for the destination %s: it sent %s", what,
				    native_msg_name(j->rp_q[0].type));
		*value = j->rp_q[0].value;
		memmove(&j->rp_q[0], &j->rp_q[1], --j->rp_n * sizeof(j->rp_q[0]));
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}

int rp_explain(struct src_job *j, int r)
{
	struct timespec ts = mono_deadline(1000 * 1000000ull);

	if ((r != -EPIPE && r != -ECONNRESET) || !j->rp_running)
		return r;
	/* The destination may have closed after saying why: its ERROR then
	 * reaches the return path within a moment. */
	pthread_mutex_lock(&j->lock);
	while (!j->rp_err)
		if (pthread_cond_timedwait(&j->done_cond, &j->lock, &ts) == ETIMEDOUT)
			break;
	if (j->rp_err && atomic_load(&j->peer_failed)) {
		r = j->rp_err;
		err_copy_in(j->rp_msg);
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}
