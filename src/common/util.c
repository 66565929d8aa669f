/* SPDX-License-Identifier: MIT */
/* SIZE/RATE parsing and formatting; see util.h. */
#include "util.h"
#include "error.h"

#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int parse_scaled(const char *what, const char *s, uint64_t *out, bool rate)
{
	const char *p = s;
	uint64_t v = 0, mult = 1;

	if (!s || !*s)
		return err_set(EINVAL, "empty %s", what);
	if (!isdigit((unsigned char)*p))
		return err_set(EINVAL, "invalid %s '%s': expected a number", what, s);
	while (isdigit((unsigned char)*p)) {
		if (ckd_mul_u64(&v, v, 10) || ckd_add_u64(&v, v, (uint64_t)(*p - '0')))
			return err_set(EINVAL, "invalid %s '%s': too large", what, s);
		p++;
	}
	switch (toupper((unsigned char)*p)) {
	case 'K':
		mult = KiB;
		p++;
		break;
	case 'M':
		mult = MiB;
		p++;
		break;
	case 'G':
		mult = GiB;
		p++;
		break;
	case 'T':
		mult = GiB * 1024;
		p++;
		break;
	default:
		break;
	}
	if (mult > 1 && (*p == 'i' || *p == 'I'))
		p++;
	if (*p == 'B' || *p == 'b')
		p++;
	if (rate && strcmp(p, "/s") == 0)
		p += 2;
	if (*p)
		return err_set(EINVAL, "invalid %s '%s': unknown suffix '%s' (use K, M, G or T)",
			       what, s, p);
	if (ckd_mul_u64(&v, v, mult))
		return err_set(EINVAL, "invalid %s '%s': too large", what, s);
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	return parse_scaled("size", s, out, false);
}

int parse_rate(const char *s, uint64_t *bytes_per_sec)
{
	return parse_scaled("rate", s, bytes_per_sec, true);
}

int parse_duration(const char *s, uint64_t *ns)
{
	static const struct {
		const char *unit;
		uint64_t ns;
	} units[] = { { "", 1000000000ull },
		      { "s", 1000000000ull },
		      { "ms", 1000000ull },
		      { "m", 60 * 1000000000ull },
		      { "h", 3600 * 1000000000ull } };
	uint64_t v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return err_set(EINVAL, "duration '%s': expected a number, e.g. 60s or 500ms", s);
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > 86400000)
			return err_set(EINVAL, "duration '%s' is longer than a day", s);
	}
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (strcmp(p, units[i].unit) == 0) {
			if (v * units[i].ns > 86400 * 1000000000ull)
				return err_set(EINVAL, "duration '%s' is longer than a day", s);
			*ns = v * units[i].ns;
			return 0;
		}
	}
	return err_set(EINVAL, "duration '%s': unknown unit '%s' (ms, s, m or h)", s, p);
}

const char *fmt_bytes(char *buf, size_t cap, uint64_t v)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double d = (double)v;
	size_t i = 0;

	while (d >= 1024 && i + 1 < ARRAY_SIZE(unit)) {
		d /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, cap, "%llu B", (unsigned long long)v);
	else
		snprintf(buf, cap, "%.1f %s", d, unit[i]);
	return buf;
}

static size_t escaped_len(unsigned char c)
{
	return c >= 0x20 && c < 0x7f && c != '\\' ? 1 : 4;
}

const char *str_escape(char *out, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t total = 0, room, pos = 0;

	for (const char *p = s; *p; p++)
		total += escaped_len((unsigned char)*p);
	/* All of it, or as much as leaves room for "..." and the NUL. */
	room = total < cap ? total : cap - 4;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (pos + escaped_len(c) > room)
			break;
		if (escaped_len(c) == 1) {
			out[pos++] = (char)c;
		} else {
			out[pos++] = '\\';
			out[pos++] = 'x';
			out[pos++] = hex[c >> 4];
			out[pos++] = hex[c & 15];
		}
	}
	if (*s) {
		memcpy(out + pos, "...", 3);
		pos += 3;
	}
	out[pos] = '\0';
	return out;
}

bool mem_is_zero(const void *p, size_t len)
{
	static const uint8_t zeros[4096];
	const uint8_t *b = p;

	while (len >= sizeof(zeros)) {
		if (memcmp(b, zeros, sizeof(zeros)) != 0)
			return false;
		b += sizeof(zeros);
		len -= sizeof(zeros);
	}
	return memcmp(b, zeros, len) == 0;
}

int poll_ms_until(uint64_t deadline)
{
	uint64_t now;

	if (!deadline)
		return -1;
	now = now_ns();
	if (now >= deadline)
		return 0;
	return (int)MIN(div_round_up(deadline - now, 1000000u), (uint64_t)INT_MAX);
}

void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* sched_setattr(2)'s argument, its first published layout (48 bytes);
 * <linux/sched/types.h> cannot be included beside <sched.h>. */
struct sched_attr_v0 {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
};

int thread_latency(void)
{
	struct sched_attr_v0 a = {
		.size = sizeof(a),
		.sched_policy = SCHED_OTHER,
		.sched_runtime = THREAD_LATENCY_SLICE_NS,
	};
	int nice;

	/* Another policy (the operator's chrt, say) is left alone. */
	if (sched_getscheduler(0) != SCHED_OTHER)
		return -EPERM;
	errno = 0;
	nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
	if (nice == -1 && errno)
		return -errno;
	a.sched_nice = nice;
	return syscall(SYS_sched_setattr, 0, &a, 0u) == 0 ? 0 : -errno;
}

void thread_bulk(void)
{
	struct sched_param sp = { .sched_priority = 0 };

	(void)sched_setscheduler(0, SCHED_BATCH, &sp);
}

void thread_name(const char *name)
{
	char n[16];

	snprintf(n, sizeof(n), "%s", name);
	pthread_setname_np(pthread_self(), n);
}
