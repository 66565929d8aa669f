/* SPDX-License-Identifier: MIT */
/* The send rate limiter's arithmetic: see ratelimit.h. */
#include "ratelimit.h"

uint64_t rate_ns(uint64_t rate, size_t n)
{
	return (uint64_t)((double)n * 1e9 / (double)rate);
}

static unsigned clamp_pct(unsigned pct)
{
	return pct < RATE_URGENT_PCT_MIN   ? RATE_URGENT_PCT_MIN
	       : pct > RATE_URGENT_PCT_MAX ? RATE_URGENT_PCT_MAX
					   : pct;
}

/* What n bytes cost the urgent bucket: their time at urgent_pct of the
 * rate. */
static uint64_t urgent_ns(uint64_t rate, size_t n, unsigned urgent_pct)
{
	return (uint64_t)((double)n * 1e9 * 100.0 / ((double)rate * clamp_pct(urgent_pct)));
}

uint64_t rate_charge(struct rate_bucket *b, uint64_t now, uint64_t rate, size_t n, bool urgent,
		     unsigned urgent_pct)
{
	uint64_t until;

	if (b->next_ok_ns + RATE_BURST_NS < now)
		b->next_ok_ns = now;
	if (b->urgent_ok_ns + RATE_BURST_NS < now)
		b->urgent_ok_ns = now;
	until = urgent ? b->urgent_ok_ns : b->next_ok_ns;
	b->next_ok_ns += rate_ns(rate, n);
	if (urgent)
		b->urgent_ok_ns += urgent_ns(rate, n, urgent_pct);
	return until;
}

void rate_refund_charge(struct rate_bucket *b, uint64_t rate, size_t n, bool urgent,
			unsigned urgent_pct)
{
	b->next_ok_ns -= rate_ns(rate, n);
	if (urgent)
		b->urgent_ok_ns -= urgent_ns(rate, n, urgent_pct);
}
