/* SPDX-License-Identifier: MIT */
/*
 * Convergence policy of the source engine: measured samples in, a decision
 * out.  The engine (source.c) times its passes and counts bytes; this module
 * turns those figures into what the engine publishes (bandwidth, dirty rate,
 * expected downtime, converging) and into what it does at each pass
 * boundary: iterate again, start mirroring writes, or switch over.
 *
 * It is pure: no threads, no clocks, no I/O, no globals, no allocation.
 * Every function is a deterministic function of its arguments and of the
 * struct policy it is handed, so a recorded pass history replays to the
 * same decisions (tests/unit/test-policy.c does exactly that).  Not
 * thread-safe: the engine thread owns the struct policy.
 *
 * The rules (as QEMU's block migration, plus what decides active mode):
 *  - bandwidth = bytes sent in all passes / time spent in all passes;
 *  - dirty rate = bytes dirty at a pass's end / that pass's duration;
 *  - expected downtime = bytes dirty / bandwidth (0 when nothing is dirty,
 *    UINT64_MAX, "infinite", when no bandwidth was measured);
 *  - switch over at a boundary when expected downtime <= max downtime;
 *  - a dirty pass that took off 5% or less of the dirty set (after * 20 >=
 *    before * 19) is a stall; one that took off more resets the count;
 *  - otherwise f = dirty rate / bandwidth and the passes still needed are
 *    need = ln(expected / max downtime) / ln(1 / f) (1e9 when f >= 1);
 *    converging = f < 1 && need <= 10 && stalls < 2; AUTO mirrors at the
 *    next boundary when !converging || need > 2;
 *  - ACTIVE asked for mirrors at the next boundary; DIRTY asked for while
 *    mirroring is ignored (mirroring stays, and so does the mode shown);
 *  - AUTO whose final pass was cut short (it would have overrun the
 *    downtime) starts mirroring at once.
 *
 * Units: bytes, bytes per second and nanoseconds, all uint64_t.  Ratios are
 * computed in double and truncated toward zero, saturating at UINT64_MAX.
 */
#ifndef BLKMIG_MIGRATE_POLICY_H
#define BLKMIG_MIGRATE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "migrate.h"

/* Room for a reason, terminator included (struct mig_stats.mode_reason). */
#define POLICY_REASON_MAX 160

/* The passes a sample can describe. */
enum policy_pass {
	POLICY_PASS_BULK,      /* every chunk once; does not count for stalls */
	POLICY_PASS_DIRTY,     /* the dirty chunks, writers running */
	POLICY_PASS_FINAL_CUT, /* a final pass cut short at its deadline, writers
				* resumed: a dirty pass after all */
};

/* One finished pass, as the engine measured it. */
struct policy_sample {
	enum policy_pass kind;
	uint64_t elapsed_ns;   /* from the pass's start until the destination confirmed
				* it (a cut final pass: from the writers' pause) */
	uint64_t wire_bytes;   /* bytes the transport sent meanwhile, mirrored writes and
				* framing included */
	uint64_t dirty_before; /* bytes dirty when the pass began (BULK: ignored) */
	uint64_t dirty_after;  /* bytes dirty when it ended */
};

/* What the engine is asked for and where it stands, at the time of a call. */
struct policy_input {
	enum mig_mode mode;	  /* as asked for now (src_set_mode), not as shown */
	bool mirroring;		  /* writes are mirrored already */
	uint64_t max_downtime_ns; /* the switch-over threshold now; > 0 */
};

/* The figures the engine publishes in struct mig_stats. */
struct policy_figures {
	uint64_t bandwidth;	       /* bytes/s */
	uint64_t dirty_rate;	       /* bytes/s */
	uint64_t expected_downtime_ns; /* UINT64_MAX: no bandwidth measured */
};

enum policy_action {
	POLICY_ITERATE,	   /* carry on: the next pass (or, from policy_pass_end,
			    * the next boundary's policy_next) */
	POLICY_MIRROR,	   /* start mirroring writes now, then carry on */
	POLICY_SWITCH_OVER /* pause the writers for the final pass */
};

struct policy_decision {
	enum policy_action action;
	enum mig_mode mode;		/* the mode to show (mig_stats.mode) */
	bool dirty_refused;		/* DIRTY asked for while mirroring: ignored; store
					 * 'mode' back as the mode asked for */
	bool converging;		/* to show once the action is carried out */
	struct policy_figures figures;	/* of the last pass accounted */
	char reason[POLICY_REASON_MAX]; /* POLICY_MIRROR: why (mig_stats.mode_reason);
					 * otherwise "" */
};

/*
 * State carried from pass to pass.  The caller owns it (embed it in the
 * job); the fields are for reading (tests, debugging) and change only
 * through the functions below.
 */
struct policy {
	uint64_t busy_ns;		 /* time spent in passes, all kinds */
	uint64_t wire;			 /* bytes sent in those passes */
	unsigned passes;		 /* samples accounted */
	unsigned stalls;		 /* dirty passes in a row that took off 5% or less */
	bool should_mirror;		 /* AUTO: the last verdict says dirty passes won't do */
	bool converging;		 /* as last shown */
	enum mig_mode mode;		 /* as last shown */
	struct policy_figures figures;	 /* of the last pass */
	char verdict[POLICY_REASON_MAX]; /* why AUTO would mirror, from the last pass
					  * that did not fit the downtime */
};

/* A policy before the first pass: converging, 'mode' shown (the mode the
 * job was created with). */
void policy_init(struct policy *p, enum mig_mode mode);

/*
 * Account a finished pass (end_of_pass): update the figures, the stall
 * count and the verdict.  *out receives the figures and converging to
 * show; its action is POLICY_MIRROR only for a POLICY_PASS_FINAL_CUT under
 * AUTO that is not mirroring yet ("the final pass would have overrun the
 * downtime"), POLICY_ITERATE otherwise (decide at the boundary with
 * policy_next).  Never POLICY_SWITCH_OVER.
 */
void policy_pass_end(struct policy *p, const struct policy_sample *s, const struct policy_input *in,
		     struct policy_decision *out);

/*
 * The decision at a pass boundary: before the bulk pass (no sample yet),
 * only whether to mirror (ACTIVE) before iterating; after a pass, switch
 * over when the last expected downtime fits in->max_downtime_ns, otherwise
 * settle the mode shown and mirror if it is asked for (ACTIVE) or judged
 * necessary (AUTO).  Never POLICY_SWITCH_OVER before the first sample.
 */
void policy_next(struct policy *p, const struct policy_input *in, struct policy_decision *out);

/*
 * Figures while a pass is under way (src_stats), 'elapsed_ns' into it,
 * having sent 'wire_bytes' so far, with 'remaining' bytes still to send
 * (the unread part of the bulk pass included) of which 'dirty' are dirty.
 * *out holds the figures shown so far and is updated in place: bandwidth
 * and expected downtime always, the dirty rate only during the bulk pass
 * ('bulk').  Returns false, leaving *out alone, while the passes have
 * lasted 50 ms or less in all.  Does not change p.
 */
bool policy_progress(const struct policy *p, uint64_t elapsed_ns, uint64_t wire_bytes,
		     uint64_t remaining, uint64_t dirty, bool bulk, struct policy_figures *out);

#endif
