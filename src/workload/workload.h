/* SPDX-License-Identifier: MIT */
/*
 * The built-in writer: a thread that issues writes of a fixed size at a
 * fixed byte rate to one device, through whatever blk it is given (the
 * tracking layer, so the migration sees them like any client's writes).
 * Used by the demo, the tests and the benchmarks.
 *
 * SPEC: NAME,bs=SIZE,rate=RATE[,seed=N][,pattern=random|sequential]
 */
#ifndef BLKMIG_WORKLOAD_WORKLOAD_H
#define BLKMIG_WORKLOAD_WORKLOAD_H

#include <stdbool.h>
#include <stdint.h>

struct blk;

struct workload_spec {
	char name[256];
	uint64_t bs;   /* bytes per write */
	uint64_t rate; /* bytes per second */
	uint64_t seed;
	bool sequential;
};

/* 0, or -EINVAL with the reason recorded (err_set). */
int workload_parse(const char *spec, struct workload_spec *out);

struct workload;

struct workload_stats {
	uint64_t writes;
	uint64_t bytes;
	uint64_t p50_ns, p99_ns, p999_ns, max_ns; /* write latency */
	int stopped_by;				  /* 0, or the negative errno that stopped it */
	/* Since the start or the last reset, until now or until the writer
	 * stopped: what the counts above were made in. */
	uint64_t elapsed_ns;
};

/*
 * Start writing to b (not owned).  The writer stops at the first failed
 * write (a fenced device after switch-over fails with -ESHUTDOWN) or at
 * workload_stop().  0 or negative errno; the caller owns *out.
 */
int workload_start(const struct workload_spec *s, struct blk *b, struct workload **out);
/* Stop, join and free; stats (optional) receives the final figures. */
void workload_stop(struct workload *w, struct workload_stats *stats);
void workload_get_stats(struct workload *w, struct workload_stats *stats);
/* Start the figures afresh (for before/after comparisons). */
void workload_reset_stats(struct workload *w);

#endif
