/* SPDX-License-Identifier: MIT */
/*
 * Source engine: the sending half of a live migration (see migrate.h for
 * the state machine, src-impl.h for how the work is split between files
 * and threads, docs/architecture.md for the whole picture).
 *
 * This file holds the public API, the figures (src_stats) and the state
 * machine: one function per state, each returning the next state.  The
 * stream format (struct src_format) is chosen once, in src_new(); the
 * machine never asks which one it has.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "bitmap/dirty.h"
#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "digest.h"
#include "src-impl.h"
#include "transport/transport.h"

#define PROGRESS_INTERVAL_NS (100 * 1000000ull)

/* ---- figures ------------------------------------------------------------ */

void src_stats_update(struct src_job *j, void (*fn)(struct mig_stats *, void *), void *arg)
{
	pthread_mutex_lock(&j->stats_lock);
	fn(&j->stats, arg);
	pthread_mutex_unlock(&j->stats_lock);
}

uint64_t src_dirty_total(const struct src_job *j)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < j->ndev; i++)
		n += dirty_bytes(j->dev[i].dirty);
	return n;
}

void src_stats(struct src_job *j, struct mig_stats *out)
{
	uint64_t dirty = src_dirty_total(j);
	struct live_pass live;
	struct xport *x;

	pthread_mutex_lock(&j->stats_lock);
	*out = j->stats;
	if (j->p.format == MIG_FORMAT_NATIVE)
		out->mirror_share = atomic_load(&j->mirror_share);
	live = j->live;
	x = j->x;
	/* The transport cannot go away while stats_lock is held. */
	if (x)
		out->transferred = j->prev_transferred + xport_tx_bytes(x);
	pthread_mutex_unlock(&j->stats_lock);
	/* The unread part of the bulk pass counts as pending, always (QEMU
	 * 7.2 leaves it out and "completes" with data missing).  A chunk
	 * written before the bulk pass reached it is in both: cap the sum. */
	out->remaining =
	    out->state == MIG_COMPLETED ? 0 : MIN(out->total, out->total - out->bulk_done + dirty);
	if (live.t0 && x && out->transferred >= j->prev_transferred + live.w0) {
		/* Mid-pass: the bandwidth so far, this pass included, and
		 * during the bulk pass the rate writes dirty chunks at. */
		struct policy_figures f = { .bandwidth = out->bandwidth,
					    .dirty_rate = out->dirty_rate,
					    .expected_downtime_ns = out->expected_downtime_ns };

		if (policy_progress(&live.pol, now_ns() - live.t0,
				    out->transferred - j->prev_transferred - live.w0,
				    out->remaining, dirty, live.bulk, &f)) {
			out->bandwidth = f.bandwidth;
			out->dirty_rate = f.dirty_rate;
			out->expected_downtime_ns = f.expected_downtime_ns;
		}
	}
}

static void set_live(struct src_job *j, const struct live_pass *a)
{
	pthread_mutex_lock(&j->stats_lock);
	j->live = *a;
	pthread_mutex_unlock(&j->stats_lock);
}

static void set_transport(struct src_job *j, struct xport *x)
{
	pthread_mutex_lock(&j->stats_lock);
	j->x = x;
	if (x)
		xport_set_urgent_share(x, atomic_load(&j->mirror_share));
	pthread_mutex_unlock(&j->stats_lock);
}

void src_report(struct src_job *j, bool force)
{
	uint64_t now = now_ns();
	struct mig_stats st;

	if (!j->progress || (!force && now - j->last_progress_ns < PROGRESS_INTERVAL_NS))
		return;
	j->last_progress_ns = now;
	src_stats(j, &st);
	j->progress(&st, j->progress_user);
}

static void set_state_fn(struct mig_stats *st, void *arg)
{
	st->state = *(enum mig_state *)arg;
}

static void set_state(struct src_job *j, enum mig_state s)
{
	src_stats_update(j, set_state_fn, &s);
	src_report(j, true);
}

/* ---- formats ------------------------------------------------------------- */

static const struct src_format *format_of(enum mig_format f)
{
	return f == MIG_FORMAT_QEMU ? &src_format_qemu : &src_format_native;
}

int mig_format_check(enum mig_format f, enum mig_mode mode, uint32_t chunk_size,
		     enum mig_compress compress)
{
	const struct src_format *fmt = format_of(f);

	if (!fmt->compress && compress != MIG_COMPRESS_OFF)
		return err_set(EINVAL,
			       "compression needs the native format: a %s destination cannot "
			       "take compressed chunks",
			       fmt->display);
	if (!fmt->mirror && mode == MIG_MODE_ACTIVE)
		return err_set(EINVAL,
			       "active mode needs the native format: a %s destination cannot "
			       "acknowledge mirrored writes",
			       fmt->display);
	if (fmt->fixed_chunk && chunk_size && chunk_size != fmt->fixed_chunk)
		return err_set(EINVAL, "the %s format has %uM chunks, not %u bytes", fmt->display,
			       fmt->fixed_chunk >> 20, chunk_size);
	if (chunk_size && !wire_chunk_size_valid(chunk_size))
		return err_set(EINVAL, "chunk size %u is not a power of two from 4K to 16M",
			       chunk_size);
	return 0;
}

int src_params_check(const struct src_params *p)
{
	int r = mig_format_check(p->format, p->mode, p->chunk_size, p->compress);

	if (r < 0)
		return r;
	if ((p->delta || p->verify_only) && p->format != MIG_FORMAT_NATIVE)
		return err_set(EINVAL, "%s needs the native format",
			       p->delta ? "delta" : "verify-only");
	if (p->delta && (p->verify_only || p->shared_base))
		return err_set(EINVAL, "delta compares every chunk: it goes with neither "
				       "verify-only nor shared-base");
	if (p->mirror_share && mig_mirror_share_check(p->mirror_share) < 0)
		return -EINVAL;
	if (p->mirror_share && p->format != MIG_FORMAT_NATIVE)
		return err_set(EINVAL, "mirror-share needs the native format: QEMU's stream "
				       "mirrors no writes");
	if (p->connections > MIG_CONNECTIONS_MAX)
		return err_set(EINVAL, "%u connections (must be 1..%u)", p->connections,
			       MIG_CONNECTIONS_MAX);
	if (p->connections > 1 && p->format != MIG_FORMAT_NATIVE)
		return err_set(EINVAL, "more than one connection needs the native format: QEMU's "
				       "stream is one connection");
	if (p->verify_only && (p->shared_base || p->mode == MIG_MODE_ACTIVE))
		return err_set(EINVAL, "verify-only compares every chunk and writes nothing: it "
				       "goes with neither shared-base nor active mode");
	return 0;
}

/* ---- setup and teardown ------------------------------------------------------- */

int src_session_init(struct src_session *s)
{
	*s = (struct src_session){ 0 };
	if (getrandom(s->id, sizeof(s->id), 0) != (ssize_t)sizeof(s->id))
		return err_set(EIO, "cannot pick a migration id: %s", strerror(errno));
	return 0;
}

static int check_device(struct src_job *j, unsigned i, const struct src_device *dv)
{
	struct src_dev *d = &j->dev[i];

	if (strlen(dv->name) == 0 || strlen(dv->name) > WIRE_NAME_MAX || d->size == 0)
		return err_set(EINVAL, "device '%s': name must be 1-%d bytes and size > 0",
			       dv->name, WIRE_NAME_MAX);
	for (unsigned k = 0; k < i; k++)
		if (strcmp(j->dev[k].name, dv->name) == 0)
			return err_set(EINVAL, "device name '%s' given twice", dv->name);
	if (j->fmt->size_align && d->size % j->fmt->size_align)
		return err_set(EINVAL,
			       "device %s: %llu bytes is not a multiple of %llu MiB, which a %s "
			       "destination cannot load",
			       dv->name, (unsigned long long)d->size,
			       (unsigned long long)j->fmt->size_align >> 20, j->fmt->display);
	return 0;
}

static int init_sync(struct src_job *j)
{
	pthread_condattr_t ca;
	int r = cancel_new(&j->cancel);

	if (r < 0)
		return r;
	j->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (j->stop_fd < 0)
		return err_set(errno, "eventfd: %s", strerror(errno));
	pthread_mutex_init(&j->stats_lock, NULL);
	pthread_mutex_init(&j->lock, NULL);
	pthread_mutex_init(&j->pause_lock, NULL);
	pthread_cond_init(&j->work_cond, NULL);
	/* Timed waits must not stall on a clock step. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->done_cond, &ca);
	pthread_cond_init(&j->wack_cond, &ca);
	pthread_cond_init(&j->wl_cond, NULL);
	pthread_cond_init(&j->wl_rx_cond, NULL);
	pthread_cond_init(&j->pause_cond, &ca);
	pthread_condattr_destroy(&ca);
	j->mq_tail = &j->mq_head;
	return 0;
}

int src_new(const struct src_params *p, const struct src_device *devs, unsigned ndev,
	    struct src_job **out)
{
	struct src_job *j;
	int r;

	if (ndev == 0 || ndev > NATIVE_MAX_DEVICES)
		return err_set(EINVAL, "need 1 to %d devices, got %u", NATIVE_MAX_DEVICES, ndev);
	r = src_params_check(p);
	if (r < 0)
		return r;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->stop_fd = -1;
	j->wl_kick = -1;
	j->p = *p;
	j->fmt = format_of(p->format);
	if (!j->p.chunk_size)
		j->p.chunk_size = j->fmt->fixed_chunk ? j->fmt->fixed_chunk : WIRE_QEMU_CHUNK_SIZE;
	if (!j->p.max_downtime_ns)
		j->p.max_downtime_ns = SRC_DEFAULT_DOWNTIME_NS;
	if (!j->p.readers)
		j->p.readers = SRC_DEFAULT_READERS;
	if (!j->fmt->auto_mode || j->p.verify_only)
		j->p.mode = MIG_MODE_DIRTY; /* AUTO has nothing to switch to */
	j->sess = p->session ? p->session : &j->own_session;
	j->prev_transferred = j->sess->transferred;
	j->stats.connections = j->sess->connections + 1;
	j->stats.lanes = 1;
	j->stats.switchovers = j->sess->switchovers;
	j->stats.abandoned = j->sess->abandoned;
	j->stats.max_pause_ns = j->sess->max_pause_ns;
	j->stats.verify = j->p.verify_only;
	j->stats.compress = j->p.compress;
	if (!j->p.compress_level)
		j->p.compress_level = MIG_COMPRESS_DEFAULT_LEVEL;
	r = p->session ? 0 : src_session_init(&j->own_session);
	if (r < 0) {
		free(j);
		return r;
	}
	atomic_init(&j->rate, p->max_bandwidth);
	atomic_init(&j->mirror_share, p->mirror_share ? p->mirror_share : MIG_MIRROR_SHARE_DEFAULT);
	atomic_init(&j->downtime_ns, j->p.max_downtime_ns);
	atomic_init(&j->want_mode, (int)j->p.mode);
	atomic_init(&j->mirroring, false);
	atomic_init(&j->peer_failed, false);
	r = init_sync(j);
	if (r < 0) {
		src_free(j);
		return r;
	}
	j->ndev = ndev;
	j->stats.ndev = ndev;
	j->stats.mode = j->p.mode;
	j->stats.converging = true;
	policy_init(&j->pol, j->p.mode);
	j->stats.chunk_size = j->p.chunk_size;
	for (unsigned i = 0; i < ndev; i++) {
		struct src_dev *d = &j->dev[i];

		d->job = j;
		d->name = devs[i].name;
		d->blk = devs[i].blk;
		d->rblk = devs[i].read_blk ? devs[i].read_blk : devs[i].blk;
		d->size = blk_size(d->blk);
		d->nchunks = div_round_up(d->size, j->p.chunk_size);
		/* Messages name devs[i], which outlives the job freed here. */
		r = check_device(j, i, &devs[i]);
		if (r < 0) {
			src_free(j);
			return r;
		}
		snprintf(j->stats.dev[i].name, sizeof(j->stats.dev[i].name), "%s", d->name);
		j->stats.dev[i].size = d->size;
		j->stats.total += d->size;
		d->dirty = dirty_new(d->size, j->p.chunk_size);
		d->claimed = dirty_new(d->size, j->p.chunk_size);
		d->dig = digest_new(d->size, j->p.chunk_size);
		d->have = dirty_new(d->size, j->p.chunk_size);
		if (j->p.verify_only)
			d->differs = dirty_new(d->size, j->p.chunk_size);
		digest_zero_sum(j->p.chunk_size, d->zero_sum[0]);
		digest_zero_sum(digest_chunk_len(d->dig, d->nchunks - 1), d->zero_sum[1]);
		if (!d->dirty || !d->claimed || !d->dig || !d->have ||
		    (j->p.verify_only && !d->differs)) {
			src_free(j);
			return -ENOMEM;
		}
	}
	j->stats.remaining = j->stats.total;
	*out = j;
	return 0;
}

void src_free(struct src_job *j)
{
	if (!j)
		return;
	if (j->stop_fd >= 0) {
		readers_stop(j);
		pthread_cond_destroy(&j->work_cond);
		pthread_cond_destroy(&j->done_cond);
		pthread_cond_destroy(&j->wack_cond);
		pthread_cond_destroy(&j->wl_cond);
		pthread_cond_destroy(&j->wl_rx_cond);
		pthread_cond_destroy(&j->pause_cond);
		pthread_mutex_destroy(&j->pause_lock);
		pthread_mutex_destroy(&j->lock);
		pthread_mutex_destroy(&j->stats_lock);
	}
	for (unsigned i = 0; i < j->ndev; i++) {
		dirty_free(j->dev[i].dirty);
		dirty_free(j->dev[i].claimed);
		digest_free(j->dev[i].dig);
		dirty_free(j->dev[i].have);
		dirty_free(j->dev[i].differs);
		free(j->dev[i].sums);
	}
	for (unsigned i = 0; i < j->nbufs; i++)
		free(j->bufs[i]);
	free(j->bufs);
	free(j->free);
	free(j->q);
	free(j->threads);
	free(j->zero_buf);
	free(j->zero_frame);
	cancel_free(j->cancel);
	if (j->stop_fd >= 0)
		close(j->stop_fd);
	if (j->wl_kick >= 0)
		close(j->wl_kick);
	free(j);
}

void src_set_progress(struct src_job *j, mig_progress_fn fn, void *user)
{
	j->progress = fn;
	j->progress_user = user;
}

int src_differing(struct src_job *j, unsigned dev, uint64_t from, uint64_t *off, uint64_t *len)
{
	struct src_dev *d;
	uint64_t cs = j->p.chunk_size, c, end;
	int64_t next;

	if (dev >= j->ndev || !j->dev[dev].differs)
		return 0;
	d = &j->dev[dev];
	next = dirty_next(d->differs, from / cs);
	if (next < 0)
		return 0;
	for (c = (uint64_t)next; c < d->nchunks && dirty_test(d->differs, c); c++)
		;
	end = MIN(c * cs, d->size);
	*off = (uint64_t)next * cs;
	*len = end - *off;
	return 1;
}

/* ---- cancel --------------------------------------------------------------- */

bool src_cancelled(struct src_job *j)
{
	return cancel_is_set(j->cancel);
}

void src_cancel(struct src_job *j)
{
	cancel_fire(j->cancel); /* async-signal-safe */
}

/* Waits for src_cancel() (or the end of src_run) and wakes every waiter of
 * the job at once; the transport notices on its own. */
static void *cancel_main(void *arg)
{
	struct src_job *j = arg;
	struct pollfd fds[2] = { { .fd = cancel_fd(j->cancel), .events = POLLIN },
				 { .fd = j->stop_fd, .events = POLLIN } };

	thread_name("bm-src-cancel");
	for (;;) {
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			return NULL;
		if (fds[1].revents)
			return NULL; /* src_run is ending */
		if (src_cancelled(j))
			break;
		/* cancel_fire() wakes first and sets the flag last: it is
		 * on its way. */
		if (fds[0].revents)
			sched_yield();
	}
	pthread_mutex_lock(&j->lock);
	pthread_cond_broadcast(&j->done_cond);
	pthread_cond_broadcast(&j->wack_cond);
	pthread_cond_broadcast(&j->work_cond);
	wl_kick_locked(j);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

static int cancel_start(struct src_job *j)
{
	int r = pthread_create(&j->cancel_thread, NULL, cancel_main, j);

	if (r)
		return err_set(r, "cannot start the cancel thread: %s", strerror(r));
	j->cancel_running = true;
	return 0;
}

static void cancel_stop(struct src_job *j)
{
	uint64_t one = 1;
	ssize_t n;

	if (!j->cancel_running)
		return;
	n = write(j->stop_fd, &one, sizeof(one));
	(void)n;
	pthread_join(j->cancel_thread, NULL);
	j->cancel_running = false;
}

/* ---- tuning while running -------------------------------------------------- */

void src_set_max_bandwidth(struct src_job *j, uint64_t bytes_per_sec)
{
	atomic_store(&j->rate, bytes_per_sec);
	pthread_mutex_lock(&j->stats_lock);
	if (j->x && !j->rate_lifted)
		xport_set_rate(j->x, bytes_per_sec);
	pthread_mutex_unlock(&j->stats_lock);
}

void src_set_mirror_share(struct src_job *j, unsigned pct)
{
	atomic_store(&j->mirror_share, pct);
	pthread_mutex_lock(&j->stats_lock);
	if (j->x)
		xport_set_urgent_share(j->x, pct);
	pthread_mutex_unlock(&j->stats_lock);
}

/*
 * The rate limit is for the migration's background traffic; while the
 * writers are paused it only stretches the pause (a final pass of 8 MiB
 * took 88 ms at 100 MB/s on loopback).  As QEMU does for its completion,
 * the final pass runs unlimited; the limit is back once the writers go
 * again (a final pass cut short, an abandoned attempt, a failure).  The
 * policy still judges the pause at the limited rate, so it errs long.
 */
static void pause_rate(struct src_job *j, bool lifted)
{
	pthread_mutex_lock(&j->stats_lock);
	j->rate_lifted = lifted;
	if (j->x)
		xport_set_rate(j->x, lifted ? 0 : atomic_load(&j->rate));
	pthread_mutex_unlock(&j->stats_lock);
}

static uint64_t max_downtime(struct src_job *j)
{
	return atomic_load(&j->downtime_ns);
}

void src_set_max_downtime(struct src_job *j, uint64_t ns)
{
	atomic_store(&j->downtime_ns, ns ? ns : SRC_DEFAULT_DOWNTIME_NS);
}

int src_set_mode(struct src_job *j, enum mig_mode m)
{
	if (!j->fmt->auto_mode && m != MIG_MODE_DIRTY)
		return err_set(EINVAL, "mode %s needs the native format", mig_mode_name(m));
	if (m == MIG_MODE_DIRTY && atomic_load(&j->mirroring))
		return err_set(EBUSY, "writes are mirrored already; the migration stays active");
	atomic_store(&j->want_mode, (int)m);
	return 0;
}

/* ---- convergence ------------------------------------------------------------ */

static struct policy_input policy_in(struct src_job *j)
{
	return (struct policy_input){ .mode = (enum mig_mode)atomic_load(&j->want_mode),
				      .mirroring = atomic_load(&j->mirroring),
				      .max_downtime_ns = max_downtime(j) };
}

static void count_pass_fn(struct mig_stats *st, void *arg)
{
	(void)arg;
	st->iterations++;
}

struct figures_arg {
	const struct policy_decision *d;
	uint64_t remaining;
	bool pass_ended;
};

static void figures_fn(struct mig_stats *st, void *arg)
{
	struct figures_arg *a = arg;

	if (a->pass_ended) {
		st->remaining = a->remaining;
		st->bandwidth = a->d->figures.bandwidth;
		st->dirty_rate = a->d->figures.dirty_rate;
		st->expected_downtime_ns = a->d->figures.expected_downtime_ns;
		st->iterations++;
	}
	st->mode = a->d->mode;
	st->converging = a->d->converging;
}

/* Carry out what the policy decided (but switching over, which is the
 * state machine's). */
static void follow(struct src_job *j, const struct policy_decision *d, uint64_t remaining,
		   bool pass_ended)
{
	struct figures_arg a = { .d = d, .remaining = remaining, .pass_ended = pass_ended };

	if (d->dirty_refused)
		atomic_store(&j->want_mode, (int)d->mode);
	src_stats_update(j, figures_fn, &a);
	if (d->action == POLICY_MIRROR)
		mirror_start(j, d->reason);
}

/* Account a pass that began at t0 with w0 bytes sent and 'before' bytes
 * dirty. */
static void end_of_pass(struct src_job *j, enum policy_pass kind, uint64_t t0, uint64_t w0,
			uint64_t before)
{
	struct policy_sample s = { .kind = kind,
				   .elapsed_ns = now_ns() - t0,
				   .wire_bytes = xport_tx_bytes(j->x) - w0,
				   .dirty_before = before,
				   .dirty_after = src_dirty_total(j) };
	struct policy_input in = policy_in(j);
	struct policy_decision d;

	policy_pass_end(&j->pol, &s, &in, &d);
	follow(j, &d, s.dirty_after, true);
}

/* ---- the state machine -------------------------------------------------------- */

/* What the machine carries from state to state (engine thread only). */
struct run {
	uint64_t t_start, t_pause;
	uint64_t setup_ns, downtime_ns;
	bool committing; /* COMMIT may be out: the destination is not told of a failure */
	int err;
};

/*
 * How long a switch-over may hold the writers: the downtime asked for, and
 * the time to notice it is over (half as much again, at least 200 ms).
 * Past that the attempt is abandoned and the writers go on.
 */
static uint64_t pause_limit(struct src_job *j)
{
	return max_downtime(j) + MAX(max_downtime(j) / 2, SRC_PAUSE_NOTICE_NS);
}

static void pause_writers(struct src_job *j)
{
	pthread_mutex_lock(&j->pause_lock);
	for (unsigned i = 0; i < j->ndev; i++)
		track_pause(j->dev[i].blk);
	j->paused = true;
	j->abandoned = false;
	j->pause_t0 = now_ns();
	j->pause_deadline = j->pause_t0 + pause_limit(j);
	pthread_cond_signal(&j->pause_cond);
	pthread_mutex_unlock(&j->pause_lock);
}

static void resume_locked(struct src_job *j)
{
	if (j->paused)
		for (unsigned i = 0; i < j->ndev; i++)
			track_resume(j->dev[i].blk);
	j->paused = false;
	j->pause_deadline = 0;
}

static void resume_writers(struct src_job *j)
{
	pthread_mutex_lock(&j->pause_lock);
	resume_locked(j);
	pthread_mutex_unlock(&j->pause_lock);
}

static void abandoned_fn(struct mig_stats *st, void *arg)
{
	uint64_t ns = *(uint64_t *)arg;

	st->abandoned++;
	if (ns > st->max_pause_ns)
		st->max_pause_ns = ns;
}

/* Lets the writers go when a switch-over overruns its pause (a stalled
 * link, a destination that does not answer). */
static void *watchdog_main(void *arg)
{
	struct src_job *j = arg;

	thread_name("bm-src-watchdog");
	pthread_mutex_lock(&j->pause_lock);
	while (!j->watchdog_quit) {
		uint64_t now = now_ns(), held;
		struct timespec ts;

		if (!j->pause_deadline) {
			pthread_cond_wait(&j->pause_cond, &j->pause_lock);
			continue;
		}
		if (now < j->pause_deadline) {
			ts = mono_deadline(j->pause_deadline - now);
			pthread_cond_timedwait(&j->pause_cond, &j->pause_lock, &ts);
			continue;
		}
		if (j->paused && !j->handing_over) {
			held = now - j->pause_t0;
			resume_locked(j);
			/* The writers go: so does whatever the engine still
			 * sends of this attempt, at the limit again. */
			pause_rate(j, false);
			j->abandoned = true;
			src_stats_update(j, abandoned_fn, &held);
		}
		j->pause_deadline = 0;
	}
	pthread_mutex_unlock(&j->pause_lock);
	return NULL;
}

static int watchdog_start(struct src_job *j)
{
	int r = pthread_create(&j->watchdog, NULL, watchdog_main, j);

	if (r)
		return err_set(r, "cannot start the pause watchdog: %s", strerror(r));
	j->watchdog_running = true;
	return 0;
}

static void watchdog_stop(struct src_job *j)
{
	if (!j->watchdog_running)
		return;
	pthread_mutex_lock(&j->pause_lock);
	j->watchdog_quit = true;
	pthread_cond_signal(&j->pause_cond);
	pthread_mutex_unlock(&j->pause_lock);
	pthread_join(j->watchdog, NULL);
	j->watchdog_running = false;
}

/* The split-brain guard: from now on no write reaches the devices.  With
 * forwarding (and 'hold') the writes wait to be sent on (p.handover
 * redirects them); otherwise, and with no hook to do that, they fail. */
static void fence_all(struct src_job *j, bool hold)
{
	for (unsigned i = 0; i < j->ndev; i++) {
		if (hold && j->p.forward && j->p.handover)
			track_hold(j->dev[i].blk);
		else
			track_fence(j->dev[i].blk, ESHUTDOWN);
	}
}

/* After the ACK: hand over (fence) unless the watchdog has let the writers
 * go already.  false: the attempt was abandoned. */
static bool begin_hand_over(struct src_job *j)
{
	bool go;

	pthread_mutex_lock(&j->pause_lock);
	go = !j->abandoned;
	if (go) {
		j->handing_over = true;
		j->pause_deadline = 0;
		fence_all(j, true);
	}
	pthread_mutex_unlock(&j->pause_lock);
	return go;
}

static bool attempt_abandoned(struct src_job *j)
{
	bool a;

	pthread_mutex_lock(&j->pause_lock);
	a = j->abandoned;
	pthread_mutex_unlock(&j->pause_lock);
	return a;
}

struct pause_arg {
	uint64_t ns;
	bool begin;
};

static void pause_fn(struct mig_stats *st, void *arg)
{
	struct pause_arg *p = arg;

	if (p->begin)
		st->switchovers++;
	else if (p->ns > st->max_pause_ns)
		st->max_pause_ns = p->ns;
}

static void note_pause(struct src_job *j, bool begin, uint64_t ns)
{
	src_stats_update(j, pause_fn, &(struct pause_arg){ .ns = ns, .begin = begin });
}

/* A timed pass: run it, wait for the destination's sync, account it. */
static int timed_pass(struct src_job *j, enum pass_kind kind)
{
	uint64_t t0 = now_ns(), w0 = xport_tx_bytes(j->x), before = src_dirty_total(j);
	int r;

	set_live(
	    j, &(struct live_pass){ .t0 = t0, .w0 = w0, .bulk = kind == PASS_BULK, .pol = j->pol });
	r = src_run_pass(j, kind);
	if (r == 0)
		r = j->fmt->synced(j);
	set_live(j, &(struct live_pass){ 0 });
	if (r == 0)
		end_of_pass(j, kind == PASS_BULK ? POLICY_PASS_BULK : POLICY_PASS_DIRTY, t0, w0,
			    before);
	return r;
}

/* At a pass boundary: switch over, or follow the mode asked for and
 * AUTO's judgement. */
static bool boundary(struct src_job *j)
{
	struct policy_input in = policy_in(j);
	struct policy_decision d;

	policy_next(&j->pol, &in, &d);
	if (d.action == POLICY_SWITCH_OVER)
		return true;
	follow(j, &d, 0, false);
	return false;
}

/*
 * The devices are fenced after the destination's ACK of j->attempt: record
 * the hand-over durably (the caller's hook), then COMMIT.  Until the
 * destination confirms it, the session keeps the commit pending, and a
 * later connection delivers it (commit_pending()).
 */
static enum mig_state hand_over(struct src_job *j, struct run *run)
{
	run->committing = true;
	j->sess->committing = j->attempt;
	if (j->p.handover)
		run->err = j->p.handover(j->p.handover_user, j->sess, j->attempt);
	if (run->err < 0)
		fence_all(j, false); /* nobody will redirect held writes: they fail */
	if (run->err == 0)
		run->err = j->fmt->commit(j);
	if (run->err == 0)
		j->sess->committing = 0;
	return MIG_COMPLETED;
}

/* The devices were handed over on an earlier connection, whose COMMIT was
 * lost: the destination has said it still awaits it.  Deliver it. */
static enum mig_state commit_pending(struct src_job *j, struct run *run)
{
	fence_all(j, true);
	j->attempt = j->sess->committing;
	return hand_over(j, run);
}

/* SETUP: tracking starts before the first read, so every write from here
 * on is either read by the bulk pass or left dirty. */
static enum mig_state state_setup(struct src_job *j, struct run *run)
{
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_dirty(j->dev[i].blk, j->dev[i].dirty);
	run->err = readers_start(j);
	if (run->err == 0)
		run->err = j->fmt->open(j);
	run->setup_ns = now_ns() - run->t_start;
	if (run->err == 0 && j->commit_only)
		return commit_pending(j, run);
	if (run->err == 0)
		boundary(j); /* mirrors from the start if ACTIVE was asked */
	return MIG_BULK;
}

static enum mig_state state_bulk(struct src_job *j, struct run *run)
{
	run->err = timed_pass(j, PASS_BULK);
	return MIG_DIRTY;
}

/* The most passes a verify makes over chunks written while it compares. */
#define VERIFY_MAX_PASSES 8

/* Verify only: tell the destination what differs (src_run() tells the
 * caller). */
static enum mig_state verify_end(struct src_job *j, struct run *run)
{
	run->err = j->fmt->complete(j);
	return run->err < 0 ? MIG_FINAL : MIG_COMPLETED;
}

/* Verify only: the run's result, once it is over. */
static int verify_result(struct src_job *j)
{
	uint64_t differing = 0, unsettled = 0;
	struct mig_stats st;

	src_stats(j, &st);
	for (unsigned i = 0; i < j->ndev; i++) {
		differing += st.dev[i].differing;
		unsettled += st.dev[i].unsettled;
	}
	if (!differing)
		return 0;
	return err_set(EILSEQ, "%llu chunk%s differ%s%s", (unsigned long long)differing,
		       differing == 1 ? "" : "s", differing == 1 ? "s" : "",
		       unsettled ? " (some were still being written)" : "");
}

static void unsettled_fn(struct mig_stats *st, void *arg)
{
	struct src_job *j = arg;

	for (unsigned i = 0; i < j->ndev; i++)
		st->dev[i].unsettled = dirty_count(j->dev[i].dirty);
}

static enum mig_state state_dirty(struct src_job *j, struct run *run)
{
	if (j->p.verify_only) {
		struct mig_stats st;

		src_stats(j, &st);
		if (src_dirty_total(j) == 0 || st.iterations >= VERIFY_MAX_PASSES) {
			src_stats_update(j, unsettled_fn, j);
			return verify_end(j, run);
		}
		set_state(j, MIG_DIRTY);
		run->err = timed_pass(j, PASS_DIRTY);
		return MIG_DIRTY;
	}
	if (boundary(j))
		return MIG_FINAL;
	set_state(j, MIG_DIRTY);
	run->err = timed_pass(j, PASS_DIRTY);
	return MIG_DIRTY;
}

/* The final pass would overrun the downtime: let the writers go again;
 * this was an ordinary pass after all. */
static enum mig_state final_cut_short(struct src_job *j, struct run *run, uint64_t w0,
				      uint64_t before)
{
	uint64_t t0 = run->t_pause;

	pause_rate(j, false);
	resume_writers(j);
	if (!attempt_abandoned(j))
		note_pause(j, false, now_ns() - run->t_pause);
	run->t_pause = 0;
	j->final_pass = false;
	run->err = j->fmt->synced(j);
	if (run->err == 0)
		end_of_pass(j, POLICY_PASS_FINAL_CUT, t0, w0, before);
	return MIG_DIRTY;
}

/*
 * FINAL: pause the writers, send what is left, hand over.  Past the
 * destination's acknowledgement is the point of no return: from there the
 * source never accepts a write again (held ones fail), and only then is the
 * destination told (COMMIT) that it owns the devices.  If COMMIT is lost,
 * both sides refuse: no split brain.
 */
static enum mig_state state_final(struct src_job *j, struct run *run)
{
	uint64_t w0, before;

	j->attempt = ++j->sess->attempts;
	note_pause(j, true, 0);
	run->t_pause = now_ns();
	/* Writes in flight reach the backend first; mirrored ones waiting for
	 * their WACK are in the queue, and go out before the last chunks. */
	pause_writers(j);
	pause_rate(j, true);
	j->final_pass = true;
	/* Most of the pause is for the data; the rest covers the destination's
	 * sync and the digests. */
	if (j->fmt->cut_final)
		j->pass_deadline = run->t_pause + max_downtime(j) * 2 / 3;
	w0 = xport_tx_bytes(j->x);
	before = src_dirty_total(j);
	run->err = src_run_pass(j, PASS_DIRTY);
	j->pass_deadline = 0;
	if (run->err == 0 && j->truncated)
		return final_cut_short(j, run, w0, before);
	/* The digests go right behind the pass: the destination checks them
	 * once it has synced it, so its SYNCED and ACK come back together. */
	if (run->err == 0)
		run->err = j->fmt->complete(j);
	if (run->err == 0)
		run->err = j->fmt->synced(j);
	if (run->err == 0) {
		src_stats_update(j, count_pass_fn, NULL);
		if (j->fmt->acked)
			run->err = j->fmt->acked(j);
	}
	if (attempt_abandoned(j) || (run->err == 0 && !begin_hand_over(j))) {
		/* Too late: the watchdog let the writers go on.  An ACK is for
		 * an attempt that is over; the migration goes on, and a
		 * failure is an ordinary one (the pause was counted). */
		pause_rate(j, false);
		run->t_pause = 0;
		j->final_pass = false;
		return run->err < 0 ? MIG_FINAL : MIG_DIRTY;
	}
	if (run->err < 0) {
		pause_rate(j, false);
		return MIG_FINAL;
	}
	resume_writers(j);
	run->downtime_ns = now_ns() - run->t_pause;
	return hand_over(j, run);
}

static enum mig_state step(struct src_job *j, enum mig_state s, struct run *run)
{
	if (s != MIG_SETUP && s != MIG_DIRTY)
		set_state(j, s);
	switch (s) {
	case MIG_SETUP:
		return state_setup(j, run);
	case MIG_BULK:
		return state_bulk(j, run);
	case MIG_DIRTY:
		return state_dirty(j, run);
	case MIG_FINAL:
		return state_final(j, run);
	default:
		return s;
	}
}

struct finish_arg {
	uint64_t downtime, total, setup, transferred;
	bool peer_error;
};

static void finish_fn(struct mig_stats *st, void *arg)
{
	struct finish_arg *f = arg;

	st->downtime_ns = f->downtime;
	st->transferred = f->transferred;
	st->total_ns = f->total;
	if (f->setup)
		st->setup_ns = f->setup;
	if (st->state == MIG_COMPLETED)
		st->remaining = 0;
	st->peer_error = f->peer_error;
}

/* The migration did not complete: tell the destination why (unless COMMIT
 * may be out), and let the writers go. */
static void fail(struct src_job *j, struct run *run)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", err_msg());
	xport_set_cancel(j->x, NULL);
	xport_set_timeout(j->x, 2000);
	if (!run->committing)
		j->fmt->abort(j, -run->err,
			      run->err == -ECANCELED ? "migration cancelled by the source" : msg);
	if (run->t_pause && !run->committing && !attempt_abandoned(j))
		run->downtime_ns = now_ns() - run->t_pause;
	resume_writers(j);
	err_copy_in(msg);
}

int src_run(struct src_job *j, struct xport *x)
{
	struct run run = { .t_start = now_ns() };
	enum mig_state state = MIG_SETUP;
	struct finish_arg fin;

	set_transport(j, x);
	j->sess->connections++;
	j->timeout_ms = xport_get_timeout(x);
	pause_rate(j, false);
	xport_set_cancel(x, j->cancel);
	set_state(j, MIG_SETUP);
	run.err = cancel_start(j);
	if (run.err == 0)
		run.err = watchdog_start(j);

	while (run.err == 0 && state != MIG_COMPLETED) {
		if (src_cancelled(j)) {
			run.err = err_set(ECANCELED, "migration cancelled");
			break;
		}
		state = step(j, state, &run);
	}
	if (run.err < 0 && state == MIG_COMPLETED && run.committing) {
		/* COMMIT could not be sent: the source stays fenced. */
		state = MIG_FAILED;
	} else if (run.err < 0) {
		state = run.err == -ECANCELED ? MIG_CANCELLED : MIG_FAILED;
		/* The return path may still explain a failed send. */
		if (run.err != -ECANCELED)
			run.err = rp_explain(j, run.err);
	}
	/* From here on no thread but this one uses the transport. */
	/* The lane first: a writer waits in mirror_stop() for a write the
	 * lane's sender may be stuck sending on a stalled link. */
	wl_stop(j);
	mirror_stop(j);
	rp_stop(j);
	wire_stream_free(j->rs);
	j->rs = NULL;
	if (state != MIG_COMPLETED)
		fail(j, &run);
	if (run.downtime_ns)
		note_pause(j, false, run.downtime_ns);
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_dirty(j->dev[i].blk, NULL);
	readers_stop(j);
	watchdog_stop(j);
	cancel_stop(j);
	fin = (struct finish_arg){ .downtime = run.downtime_ns,
				   .total = now_ns() - run.t_start,
				   .setup = run.setup_ns,
				   .transferred = j->prev_transferred + xport_tx_bytes(x) };
	j->sess->transferred = fin.transferred;
	fin.peer_error = run.err < 0 && atomic_load(&j->peer_failed);
	set_transport(j, NULL);
	src_stats_update(j, finish_fn, &fin);
	pthread_mutex_lock(&j->stats_lock);
	j->sess->switchovers = j->stats.switchovers;
	j->sess->abandoned = j->stats.abandoned;
	j->sess->max_pause_ns = j->stats.max_pause_ns;
	pthread_mutex_unlock(&j->stats_lock);
	set_state(j, state);
	if (state == MIG_COMPLETED && j->p.verify_only)
		return verify_result(j);
	return state == MIG_COMPLETED ? 0 : (run.err < 0 ? run.err : -EIO);
}
