/* SPDX-License-Identifier: MIT */
/*
 * A migration run in the background of a serving daemon: the control
 * socket starts, queries, tunes and cancels it while clients keep writing
 * through the tracking layers.  One job object lives as long as the daemon;
 * each `migrate` command is one attempt, and only one runs at a time.
 *
 * Threads: every function may be called from any thread.  The state-change
 * callback runs on the job's own thread.
 */
#ifndef BLKMIG_MIGRATE_JOB_H
#define BLKMIG_MIGRATE_JOB_H

#include "migrate.h"

struct job;

/* The span the live rate is measured over. */
#define JOB_RATE_WINDOW_NS (2 * 1000000000ull)

/* Called on the job's thread on every state change of an attempt. */
typedef void (*job_event_fn)(void *user, const struct mig_stats *st, const char *error);

/*
 * devs: the devices a migration carries (tracking layers, read-only ones
 * left out), not owned; they must outlive the job.  0 or negative errno.
 */
int job_new(const struct src_device *devs, unsigned ndev, job_event_fn fn, void *user,
	    struct job **out);
/* Cancels a running attempt, waits for it, frees.  Accepts NULL. */
void job_free(struct job *j);

/*
 * Start an attempt to HOST:PORT with p (max_bandwidth may later change
 * through job_set_max_bandwidth).  -EBUSY while one runs, -ESHUTDOWN after
 * one completed (the devices are fenced), else 0: the attempt continues in
 * the background.  tls (NULL: plain TCP) are the attempt's client
 * credentials: the job owns them from this call on, whatever it returns.
 * With o->resume, the attempt continues the last one's migration (the
 * destination offers what it holds of it); -ENOENT when none was started.
 */
struct tls_creds;
struct job_options {
	uint64_t retry_ns; /* reconnect and resume after a failed link this long (src_migrate) */
	bool resume;	   /* continue the last migration (its id), which had given up */
};
int job_start(struct job *j, const char *to, const struct src_params *p, struct tls_creds *tls,
	      const struct job_options *o);
/*
 * Whether job_start() could start now as far as the job goes: 0, -EBUSY
 * (one runs) or -ESHUTDOWN (the devices were migrated), message set.  No
 * migration thread runs while it says 0, until the caller starts one.
 */
int job_startable(struct job *j);
/* Ask the running attempt to stop; a no-op when none runs. */
void job_cancel(struct job *j);
void job_set_max_bandwidth(struct job *j, uint64_t bytes_per_sec);
void job_set_max_downtime(struct job *j, uint64_t ns);
/* src_set_mirror_share() for the running attempt and the later ones. */
void job_set_mirror_share(struct job *j, unsigned pct);
/* Change the running migration's mode (src_set_mode); -ENOENT if none runs. */
int job_set_mode(struct job *j, enum mig_mode m);
/* Wait for the running attempt (if any) to end; its result. */
int job_wait(struct job *j);

/*
 * The current (or last) attempt's figures; st->state is MIG_SETUP with
 * everything zero before any attempt ("none" in query-migrate: *started
 * false).  error receives the last failure's message ("" otherwise).
 * While an attempt runs, st->total_ns is the time since it started and
 * st->rate the bytes per second put on the wire over the last
 * JOB_RATE_WINDOW_NS or so (0 until there are two samples).
 */
void job_query(struct job *j, struct mig_stats *st, bool *started, char *error, size_t cap);

#endif
