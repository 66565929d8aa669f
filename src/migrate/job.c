/* SPDX-License-Identifier: MIT */
/*
 * Background migration attempts for a serving daemon; see job.h.
 *
 * An attempt: connect (cancellable), src_new, src_run, keep the final
 * figures.  The engine's progress callback doubles as the state-change
 * detector, so events fire exactly when the engine changes state.  It also
 * feeds the live rate: a ring of (time, bytes on the wire) samples taken
 * at least JOB_RATE_WINDOW_NS / RATE_SAMPLES apart, so the rate covers the
 * last window whether the engine reports often or seldom.
 */
#include "job.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "tls/tls.h"
#include "transport/transport.h"

#define RATE_SAMPLES 8

struct rate_sample {
	uint64_t t_ns, bytes;
};

struct job {
	const struct src_device *devs;
	unsigned ndev;
	job_event_fn fn;
	void *user;

	pthread_mutex_t lock; /* guards everything below */
	bool running;	      /* an attempt's thread exists and is not joined */
	bool started;	      /* at least one attempt was made */
	bool completed;	      /* an attempt completed: the devices are fenced */
	pthread_t thread;
	struct src_job *src;   /* the running attempt's engine, or NULL */
	struct cancel *cancel; /* for the connect phase */
	char to[256];
	struct src_params p;
	struct src_session sess; /* the migration (job_start(), kept for a resume) */
	bool retrying;		 /* a connection failed; another follows */
	char retry_msg[1024];
	bool have_sess;
	uint64_t retry_ns;
	struct tls_creds *tls; /* the attempt's, owned by it; NULL: plain TCP */
	struct mig_stats last; /* figures of the last state change / the end */
	enum mig_state last_state;
	char error[1024];
	int result;
	uint64_t start_ns;			  /* now_ns() when the running attempt began */
	struct rate_sample samples[RATE_SAMPLES]; /* ring, oldest at 'sample_head' */
	unsigned sample_head, nsamples;
};

/* Remember how much was on the wire at now; lock held. */
static void sample_locked(struct job *j, uint64_t now, uint64_t bytes)
{
	const uint64_t gap = JOB_RATE_WINDOW_NS / RATE_SAMPLES;
	unsigned newest = (j->sample_head + j->nsamples + RATE_SAMPLES - 1) % RATE_SAMPLES;

	if (j->nsamples && now - j->samples[newest].t_ns < gap)
		return;
	if (j->nsamples == RATE_SAMPLES) {
		j->sample_head = (j->sample_head + 1) % RATE_SAMPLES;
		j->nsamples--;
	}
	j->samples[(j->sample_head + j->nsamples) % RATE_SAMPLES] =
	    (struct rate_sample){ .t_ns = now, .bytes = bytes };
	j->nsamples++;
}

/* The rate from the oldest sample to (now, bytes); lock held. */
static uint64_t rate_locked(const struct job *j, uint64_t now, uint64_t bytes)
{
	const struct rate_sample *o = &j->samples[j->sample_head];

	if (!j->nsamples || now <= o->t_ns || bytes < o->bytes)
		return 0;
	return (uint64_t)((double)(bytes - o->bytes) * 1e9 / (double)(now - o->t_ns));
}

int job_new(const struct src_device *devs, unsigned ndev, job_event_fn fn, void *user,
	    struct job **out)
{
	struct job *j = calloc(1, sizeof(*j));
	int r;

	if (!j)
		return err_set(ENOMEM, "no memory for a migration job");
	r = cancel_new(&j->cancel);
	if (r < 0) {
		free(j);
		return r;
	}
	j->devs = devs;
	j->ndev = ndev;
	j->fn = fn;
	j->user = user;
	pthread_mutex_init(&j->lock, NULL);
	*out = j;
	return 0;
}

/* Engine thread: remember the figures; announce state changes. */
static void on_progress(const struct mig_stats *st, void *user)
{
	struct job *j = user;
	bool changed;

	/* A connection that failed may be followed by another: the attempt's
	 * outcome is job_main()'s to report, not one connection's. */
	if (st->state == MIG_FAILED || st->state == MIG_CANCELLED)
		return;
	pthread_mutex_lock(&j->lock);
	/* Mirroring beginning is news too. */
	changed = st->state != j->last_state || st->active != j->last.active;
	sample_locked(j, now_ns(), st->transferred);
	j->last = *st;
	j->last_state = st->state;
	pthread_mutex_unlock(&j->lock);
	if (changed && j->fn && st->state != MIG_COMPLETED && st->state != MIG_FAILED &&
	    st->state != MIG_CANCELLED)
		j->fn(j->user, st, "");
}

static int job_dial(void *user, struct xport **x)
{
	struct job *j = user;

	return xport_dial(j->to, 10000, j->cancel, j->tls, x);
}

/* Each connection's engine, for status, tuning and cancel. */
static void job_on_src(void *user, struct src_job *src)
{
	struct job *j = user;

	if (src)
		src_set_progress(src, on_progress, j);
	pthread_mutex_lock(&j->lock);
	j->src = src;
	if (src)
		j->retrying = false;
	/* A cancel that came between two connections reaches the next. */
	if (src && cancel_is_set(j->cancel))
		src_cancel(src);
	pthread_mutex_unlock(&j->lock);
}

/* A connection failed and another will follow (src_migrate's log). */
static void job_on_retry(void *user, const char *line)
{
	struct job *j = user;

	pthread_mutex_lock(&j->lock);
	j->retrying = true;
	snprintf(j->retry_msg, sizeof(j->retry_msg), "%s", line);
	pthread_mutex_unlock(&j->lock);
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	struct mig_stats st = { 0 };
	struct src_retry rt = { .retry_ns = j->retry_ns,
				.dial = job_dial,
				.on_job = job_on_src,
				.log = job_on_retry,
				.user = j,
				.cancel = j->cancel };
	int r;

	thread_name("bm-job");
	j->p.session = &j->sess;
	r = src_migrate(&j->p, j->devs, j->ndev, &rt, &st);
	if (r < 0 && st.state != MIG_FAILED && st.state != MIG_CANCELLED)
		st.state = r == -ECANCELED ? MIG_CANCELLED : MIG_FAILED;

	pthread_mutex_lock(&j->lock);
	if (!st.total_ns)
		st.total_ns = now_ns() - j->start_ns; /* it ended before the engine ran */
	j->last = st;
	j->last_state = st.state;
	j->result = r;
	snprintf(j->error, sizeof(j->error), "%s", r < 0 ? err_msg() : "");
	j->completed = r == 0 && !j->p.verify_only; /* a verify hands nothing over */
	j->retrying = false;
	j->src = NULL;
	pthread_mutex_unlock(&j->lock);
	if (j->fn)
		j->fn(j->user, &st, r < 0 ? j->error : "");
	tls_creds_free(j->tls);
	j->tls = NULL;
	return NULL;
}

/* Join a finished attempt's thread; lock held. */
static void reap_locked(struct job *j)
{
	if (j->running && !j->src && j->last_state >= MIG_COMPLETED) {
		pthread_t t = j->thread;

		j->running = false;
		pthread_mutex_unlock(&j->lock);
		pthread_join(t, NULL);
		pthread_mutex_lock(&j->lock);
	}
}

/* Whether a migration may start (j->lock held): 0, or why not. */
static int startable_locked(struct job *j)
{
	reap_locked(j);
	if (j->running)
		return err_set(EBUSY, "a migration is already running");
	if (j->completed)
		return err_set(ESHUTDOWN, "the devices were already migrated: this daemon no "
					  "longer owns them");
	return 0;
}

int job_startable(struct job *j)
{
	int r;

	pthread_mutex_lock(&j->lock);
	r = startable_locked(j);
	pthread_mutex_unlock(&j->lock);
	return r;
}

int job_start(struct job *j, const char *to, const struct src_params *p, struct tls_creds *tls,
	      const struct job_options *o)
{
	int r;

	if (strlen(to) >= sizeof(j->to)) {
		tls_creds_free(tls);
		return err_set(EINVAL, "address too long: %s", to);
	}
	pthread_mutex_lock(&j->lock);
	r = startable_locked(j);
	if (r < 0) {
		pthread_mutex_unlock(&j->lock);
		tls_creds_free(tls);
		return r;
	}
	if (o->resume && !j->have_sess) {
		pthread_mutex_unlock(&j->lock);
		tls_creds_free(tls);
		return err_set(ENOENT, "no migration to resume: none was started");
	}
	if (!o->resume) {
		r = src_session_init(&j->sess);
		if (r < 0) {
			pthread_mutex_unlock(&j->lock);
			tls_creds_free(tls);
			return r;
		}
		j->have_sess = true;
	}
	j->retry_ns = o->retry_ns;
	snprintf(j->to, sizeof(j->to), "%s", to);
	j->tls = tls;
	j->p = *p;
	j->started = true;
	j->error[0] = '\0';
	memset(&j->last, 0, sizeof(j->last));
	j->last_state = MIG_SETUP;
	j->start_ns = now_ns();
	j->sample_head = j->nsamples = 0;
	cancel_reset(j->cancel); /* no attempt's thread is left to use it */
	r = pthread_create(&j->thread, NULL, job_main, j);
	if (r == 0) {
		j->running = true;
	} else {
		tls_creds_free(j->tls);
		j->tls = NULL;
	}
	pthread_mutex_unlock(&j->lock);
	if (r)
		return err_set(r, "cannot start the migration thread: %s", strerror(r));
	return 0;
}

void job_cancel(struct job *j)
{
	pthread_mutex_lock(&j->lock);
	cancel_fire(j->cancel);
	if (j->src)
		src_cancel(j->src);
	pthread_mutex_unlock(&j->lock);
}

void job_set_max_bandwidth(struct job *j, uint64_t bytes_per_sec)
{
	pthread_mutex_lock(&j->lock);
	j->p.max_bandwidth = bytes_per_sec;
	if (j->src)
		src_set_max_bandwidth(j->src, bytes_per_sec);
	pthread_mutex_unlock(&j->lock);
}

void job_set_mirror_share(struct job *j, unsigned pct)
{
	pthread_mutex_lock(&j->lock);
	/* QEMU's stream mirrors nothing (and src_params_check() refuses a
	 * share with it). */
	if (j->p.format == MIG_FORMAT_NATIVE) {
		j->p.mirror_share = pct;
		if (j->src)
			src_set_mirror_share(j->src, pct);
	}
	pthread_mutex_unlock(&j->lock);
}

void job_set_max_downtime(struct job *j, uint64_t ns)
{
	pthread_mutex_lock(&j->lock);
	j->p.max_downtime_ns = ns;
	if (j->src)
		src_set_max_downtime(j->src, ns);
	pthread_mutex_unlock(&j->lock);
}

int job_set_mode(struct job *j, enum mig_mode m)
{
	int r = 0;

	pthread_mutex_lock(&j->lock);
	if (j->src)
		r = src_set_mode(j->src, m);
	else
		r = err_set(ENOENT, "no migration is running");
	if (r == 0)
		j->p.mode = m;
	pthread_mutex_unlock(&j->lock);
	return r;
}

int job_wait(struct job *j)
{
	pthread_t t;
	bool running;
	int r;

	pthread_mutex_lock(&j->lock);
	running = j->running;
	t = j->thread;
	j->running = false;
	pthread_mutex_unlock(&j->lock);
	if (running)
		pthread_join(t, NULL);
	pthread_mutex_lock(&j->lock);
	r = j->result;
	pthread_mutex_unlock(&j->lock);
	return r;
}

void job_query(struct job *j, struct mig_stats *st, bool *started, char *error, size_t cap)
{
	pthread_mutex_lock(&j->lock);
	if (j->src) {
		uint64_t now = now_ns();

		src_stats(j->src, st);
		if (st->state < MIG_COMPLETED) {
			st->total_ns = now - j->start_ns;
			sample_locked(j, now, st->transferred);
			st->rate = rate_locked(j, now, st->transferred);
		}
	} else {
		*st = j->last;
		if (j->running && j->last_state < MIG_COMPLETED)
			st->total_ns = now_ns() - j->start_ns; /* still connecting */
	}
	*started = j->started;
	snprintf(error, cap, "%s", j->error);
	if (j->retrying && !j->src) {
		st->retrying = true;
		snprintf(error, cap, "%s", j->retry_msg);
	}
	pthread_mutex_unlock(&j->lock);
}

void job_free(struct job *j)
{
	if (!j)
		return;
	job_cancel(j);
	job_wait(j);
	pthread_mutex_destroy(&j->lock);
	cancel_free(j->cancel);
	free(j);
}
