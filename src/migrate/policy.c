/* SPDX-License-Identifier: MIT */
/*
 * Convergence policy of the source engine (see policy.h): the arithmetic
 * and the rules that source.c's end_of_pass(), choose_mode(), src_stats()
 * and the MIG_DIRTY / MIG_FINAL states apply, as pure functions over a
 * struct policy.  The expressions are kept as source.c writes them (same
 * order of operations, same truncation), so the figures are identical.
 */
#include "policy.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

/* x truncated toward zero; UINT64_MAX when it does not fit (or is +inf). */
static uint64_t to_u64(double x)
{
	if (!(x < 18446744073709551616.0))
		return UINT64_MAX;
	return x > 0 ? (uint64_t)x : 0;
}

/* bytes * 1e9 / ns: a rate in bytes/s, or a time in ns from bytes and bytes/s. */
static uint64_t per_second(uint64_t bytes, uint64_t ns)
{
	return to_u64((double)bytes * 1e9 / (double)ns);
}

static void decision_init(const struct policy *p, struct policy_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->action = POLICY_ITERATE;
	out->mode = p->mode;
	out->converging = p->converging;
	out->figures = p->figures;
}

/* Mirroring begins: it keeps the dirty set from growing, so it converges. */
static void mirror(struct policy *p, struct policy_decision *out, const char *why)
{
	out->action = POLICY_MIRROR;
	p->converging = true;
	out->converging = true;
	snprintf(out->reason, sizeof(out->reason), "%s", why);
}

void policy_init(struct policy *p, enum mig_mode mode)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	p->converging = true;
}

/* ---- a pass ends -------------------------------------------------------------- */

/*
 * Each pass leaves about dirty_rate / bandwidth of what it sent: the passes
 * still needed until the rest fits the downtime follow.  More than 10 (or a
 * ratio of 1 or more, or two passes that took off next to nothing) is "not
 * converging"; AUTO does not wait for more than 2.
 */
static bool judge(struct policy *p, uint64_t remaining, uint64_t max_downtime_ns)
{
	const struct policy_figures *fg = &p->figures;
	double f = fg->bandwidth ? (double)fg->dirty_rate / (double)fg->bandwidth : 1.0;
	double need = f >= 1.0 ? 1e9
			       : log((double)fg->expected_downtime_ns / (double)max_downtime_ns) /
				     log(1.0 / f);
	char a[32], b[32];
	bool converging = f < 1.0 && need <= 10.0 && p->stalls < 2;

	p->should_mirror = !converging || need > 2.0;
	if (f >= 0.95)
		snprintf(p->verdict, sizeof(p->verdict),
			 "writes dirty %s/s, about as much as the %s/s the link carries",
			 fmt_bytes(a, sizeof(a), fg->dirty_rate),
			 fmt_bytes(b, sizeof(b), fg->bandwidth));
	else if (p->stalls >= 2)
		snprintf(p->verdict, sizeof(p->verdict),
			 "%u passes in a row did not shrink the dirty set (%s left)", p->stalls,
			 fmt_bytes(a, sizeof(a), remaining));
	else
		snprintf(p->verdict, sizeof(p->verdict),
			 "about %.0f more passes would be needed (writes dirty %s/s of the "
			 "%s/s the link carries)",
			 ceil(need), fmt_bytes(a, sizeof(a), fg->dirty_rate),
			 fmt_bytes(b, sizeof(b), fg->bandwidth));
	return converging;
}

void policy_pass_end(struct policy *p, const struct policy_sample *s, const struct policy_input *in,
		     struct policy_decision *out)
{
	struct policy_figures *fg = &p->figures;
	uint64_t remaining = s->dirty_after;
	bool dirty_pass = s->kind != POLICY_PASS_BULK, converging;

	assert(in->max_downtime_ns > 0);
	p->passes++;
	p->busy_ns += s->elapsed_ns;
	p->wire += s->wire_bytes;
	fg->bandwidth = p->busy_ns ? per_second(p->wire, p->busy_ns) : 0;
	fg->dirty_rate = s->elapsed_ns ? per_second(remaining, s->elapsed_ns) : 0;
	fg->expected_downtime_ns =
	    fg->bandwidth ? per_second(remaining, fg->bandwidth) : UINT64_MAX;
	if (remaining == 0)
		fg->expected_downtime_ns = 0;

	/* A dirty pass that took off 5% or less made no headway. */
	if (dirty_pass && remaining * 20 >= s->dirty_before * 19)
		p->stalls++;
	else if (dirty_pass)
		p->stalls = 0;

	if (fg->expected_downtime_ns <= in->max_downtime_ns) {
		converging = true;
		p->should_mirror = false;
	} else {
		converging = judge(p, remaining, in->max_downtime_ns);
	}
	p->converging = converging || in->mirroring;
	decision_init(p, out);

	/* The final pass would have overrun: AUTO stops hoping for dirty passes. */
	if (s->kind == POLICY_PASS_FINAL_CUT && !in->mirroring && in->mode == MIG_MODE_AUTO)
		mirror(p, out, "the final pass would have overrun the downtime");
}

/* ---- at a pass boundary ------------------------------------------------------- */

void policy_next(struct policy *p, const struct policy_input *in, struct policy_decision *out)
{
	enum mig_mode want = in->mode;

	assert(in->max_downtime_ns > 0);
	decision_init(p, out);
	if (p->passes == 0) {
		/* Before the bulk pass: only ACTIVE has anything to do. */
		if (want == MIG_MODE_ACTIVE && !in->mirroring)
			mirror(p, out, "active mode asked for");
		return;
	}
	if (p->figures.expected_downtime_ns <= in->max_downtime_ns) {
		out->action = POLICY_SWITCH_OVER;
		return;
	}
	/* Asked for once mirroring had begun: mirroring stays, so does the mode. */
	if (want == MIG_MODE_DIRTY && in->mirroring) {
		want = p->mode;
		out->dirty_refused = true;
	}
	p->mode = want;
	out->mode = want;
	if (in->mirroring)
		return;
	if (want == MIG_MODE_ACTIVE)
		mirror(p, out, "active mode asked for");
	else if (want == MIG_MODE_AUTO && p->should_mirror)
		mirror(p, out, p->verdict);
}

/* ---- while a pass is under way ------------------------------------------------ */

bool policy_progress(const struct policy *p, uint64_t elapsed_ns, uint64_t wire_bytes,
		     uint64_t remaining, uint64_t dirty, bool bulk, struct policy_figures *out)
{
	double secs = (double)(p->busy_ns + elapsed_ns) / 1e9;

	if (!(secs > 0.05))
		return false;
	out->bandwidth = to_u64((double)(p->wire + wire_bytes) / secs);
	if (bulk && elapsed_ns)
		out->dirty_rate = per_second(dirty, elapsed_ns);
	out->expected_downtime_ns =
	    out->bandwidth ? per_second(remaining, out->bandwidth) : UINT64_MAX;
	return true;
}
