/* SPDX-License-Identifier: MIT */
/*
 * The send rate limiter's arithmetic, apart from clocks, locks and sleeps
 * (transport.c holds the lock and sleeps), so that what it promises can be
 * checked exactly: every send is charged to the common bucket, at the rate;
 * an urgent send (a mirrored write) waits only for a bucket of its own,
 * which runs at urgent_pct percent of the rate.  Urgent sends therefore
 * never wait behind the others, and the others keep at least
 * 100 - urgent_pct percent of the rate.
 */
#ifndef BLKMIG_TRANSPORT_RATELIMIT_H
#define BLKMIG_TRANSPORT_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The limiter forgives at most this much idle time, so a pause in sending
 * does not turn into an unlimited burst afterwards. */
#define RATE_BURST_NS (50 * 1000000ull)

/* The share of the rate urgent sends may take, in percent: bounds and
 * default (xport_set_urgent_share()). */
#define RATE_URGENT_PCT_MIN	10
#define RATE_URGENT_PCT_MAX	90
#define RATE_URGENT_PCT_DEFAULT 50

struct rate_bucket {
	uint64_t next_ok_ns;   /* earliest time of the next send */
	uint64_t urgent_ok_ns; /* urgent sends' own bucket */
};

/* The time n bytes take at rate (bytes per second, not 0). */
uint64_t rate_ns(uint64_t rate, size_t n);

/*
 * Charge a send of n bytes at time now: the time it may go (now or later).
 * urgent_pct is clamped to RATE_URGENT_PCT_MIN..MAX.
 */
uint64_t rate_charge(struct rate_bucket *b, uint64_t now, uint64_t rate, size_t n, bool urgent,
		     unsigned urgent_pct);

/* Give back n bytes of a charge that were not sent, as they were charged. */
void rate_refund_charge(struct rate_bucket *b, uint64_t rate, size_t n, bool urgent,
			unsigned urgent_pct);

#endif
