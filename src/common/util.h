/* SPDX-License-Identifier: MIT */
/*
 * Small shared helpers: overflow-checked arithmetic, big-endian load/store,
 * monotonic time, SIZE/RATE parsing, human-readable sizes and escaping
 * untrusted strings for printing.
 *
 * Everything here is header-only except the parsers, which live in util.c.
 * Nothing here logs; the parsers record their failure with err_set().
 */
#ifndef BLKMIG_COMMON_UTIL_H
#define BLKMIG_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)     ((a) < (b) ? (a) : (b))
#define MAX(a, b)     ((a) > (b) ? (a) : (b))

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

/* Checked arithmetic: return true when the result overflowed. */
#define ckd_add_u64(r, a, b) __builtin_add_overflow((uint64_t)(a), (uint64_t)(b), (r))
#define ckd_mul_u64(r, a, b) __builtin_mul_overflow((uint64_t)(a), (uint64_t)(b), (r))

/* True when [off, off + len) lies inside [0, size), without overflow. */
static inline bool range_inside(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

static inline bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static inline uint64_t div_round_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* Big-endian load/store on unaligned buffers. */
static inline void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static inline uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* Monotonic clock in nanoseconds. */
static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Milliseconds from now to a now_ns() deadline (0: none), for poll(): -1
 * without a deadline, else >= 0, rounded up so a wait never ends just short
 * of it. */
int poll_ms_until(uint64_t deadline);

/*
 * Parse "64M", "1G", "512K", "4096" (binary multiples; an optional trailing
 * "B", "iB" or, for rates, "/s" is accepted).  Returns 0, or -EINVAL with
 * the reason recorded by err_set().
 */
int parse_size(const char *s, uint64_t *out);
int parse_rate(const char *s, uint64_t *bytes_per_sec);
/*
 * Parse a duration: a whole number with an optional unit, "ms", "s" (the
 * default), "m" or "h": "60", "90s", "500ms", "2m".  At most a day.
 * 0 with *ns, or -EINVAL with the reason.
 */
int parse_duration(const char *s, uint64_t *ns);

/* "1.5 GiB"-style rendering into buf; returns buf. */
const char *fmt_bytes(char *buf, size_t cap, uint64_t v);

/*
 * A string from the wire (a device name, a peer's error reason, a QEMU
 * section name), made safe to print: every byte outside printable ASCII
 * (0x20-0x7e) and every backslash becomes "\xNN", so a peer can put
 * neither a control sequence nor a line break on the operator's terminal
 * or in a log.  The result is cut to fit cap (>= 4), ending in "..." when
 * cut, never in the middle of an escape.  Returns out.
 * STR_ESCAPE_CAP(n) holds any n-byte string whole.
 */
#define STR_ESCAPE_CAP(n) ((size_t)(n)*4 + 1)
const char *str_escape(char *out, size_t cap, const char *s);

/* Whether len bytes at p are all zero. */
bool mem_is_zero(const void *p, size_t len);

/* CLOCK_MONOTONIC now + ns, as pthread_cond_timedwait() wants it for a
 * condition variable set to that clock. */
static inline struct timespec mono_deadline(uint64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ns += (uint64_t)ts.tv_nsec;
	ts.tv_sec += (time_t)(ns / 1000000000u);
	ts.tv_nsec = (long)(ns % 1000000000u);
	return ts;
}

/* Whether CLOCK_MONOTONIC has reached a mono_deadline(). */
static inline bool mono_passed(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* Sleep for ns nanoseconds, restarting after signals. */
void sleep_ns(uint64_t ns);

/* Name the calling thread (at most 15 bytes are kept), so that top -H,
 * ps -L and perf say which of the daemon's threads is which. */
void thread_name(const char *name);

/*
 * Mark the calling thread as bulk work (SCHED_BATCH): it keeps its fair
 * share of the CPU, but waking up does not preempt a thread that is
 * running, so a client's write is not cut short by a copy thread that a
 * free queue slot woke onto its CPU.  Best effort: a failure is ignored.
 */
void thread_bulk(void);

/*
 * Mark the calling thread as latency-bound: a client's write waits for it
 * each time it wakes.  On a kernel with EEVDF custom slices (Linux 6.12 and
 * later) it asks for a short slice, THREAD_LATENCY_SLICE_NS, which lets it
 * preempt a thread that has run for longer as soon as it wakes, instead of
 * waiting out that thread's slice (about a millisecond or more); its share
 * of the CPU is unchanged (policy and nice value).  Older kernels ignore
 * it; a thread under another policy than SCHED_OTHER is left alone.  Best
 * effort: callers ignore the result (0, or a negative errno).
 */
#define THREAD_LATENCY_SLICE_NS (100u * 1000)
int thread_latency(void);

#endif
