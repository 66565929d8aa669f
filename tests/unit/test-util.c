/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for src/common/util.h: SIZE/RATE parsing and its error
 * messages, fmt_bytes(), big-endian helpers, checked arithmetic and
 * range_inside() at the edges of uint64_t.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"

static void assert_msg_contains(const char *needle)
{
	if (!strstr(err_msg(), needle))
		fail_msg("message '%s' does not contain '%s'", err_msg(), needle);
}

/* ---- parse_size / parse_rate ---------------------------------------------- */

static void test_parse_size_ok(void **state)
{
	static const struct {
		const char *s;
		uint64_t v;
	} cases[] = {
		{ "0", 0 },
		{ "4096", 4096 },
		{ "10B", 10 },
		{ "512K", 512 * KiB },
		{ "512k", 512 * KiB },
		{ "1KiB", KiB },
		{ "1kb", KiB },
		{ "64M", 64 * MiB },
		{ "64MiB", 64 * MiB },
		{ "1G", GiB },
		{ "3GB", 3 * GiB },
		{ "2T", 2048 * GiB },
		{ "16777215T", UINT64_C(16777215) << 40 },
		{ "18446744073709551615", UINT64_MAX },
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t v = 12345;

		if (parse_size(cases[i].s, &v) != 0)
			fail_msg("parse_size('%s') failed: %s", cases[i].s, err_msg());
		assert_int_equal(v, cases[i].v);
	}
}

static void test_parse_size_errors(void **state)
{
	static const struct {
		const char *s;
		const char *msg; /* must appear in the message */
	} cases[] = {
		{ "", "empty size" },
		{ "12X", "'12X'" },
		{ "-1", "'-1'" },
		{ " 1", "expected a number" },
		{ "K", "expected a number" },
		{ "1.5G", "unknown suffix" },
		{ "1iB", "unknown suffix" },
		{ "1G/s", "unknown suffix" },
		{ "1MM", "unknown suffix" },
		{ "99999999999T", "too large" },
		{ "16777216T", "too large" },
		{ "18446744073709551616", "too large" },
		{ "99999999999999999999999", "too large" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t v = 12345;

		err_clear();
		if (parse_size(cases[i].s, &v) != -EINVAL)
			fail_msg("parse_size('%s') did not fail with -EINVAL", cases[i].s);
		assert_int_equal(v, 12345); /* untouched */
		assert_msg_contains(cases[i].msg);
	}
	assert_int_equal(parse_size(NULL, &(uint64_t){ 0 }), -EINVAL);
}

static void test_parse_rate(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(parse_rate("100M/s", &v), 0);
	assert_int_equal(v, 100 * MiB);
	assert_int_equal(parse_rate("10MB/s", &v), 0);
	assert_int_equal(v, 10 * MiB);
	assert_int_equal(parse_rate("1G", &v), 0);
	assert_int_equal(v, GiB);
	assert_int_equal(parse_rate("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_rate("4096/s", &v), 0);
	assert_int_equal(v, 4096);

	assert_int_equal(parse_rate("", &v), -EINVAL);
	assert_msg_contains("empty rate");
	assert_int_equal(parse_rate("12X", &v), -EINVAL);
	assert_msg_contains("invalid rate '12X'");
	assert_int_equal(parse_rate("-1", &v), -EINVAL);
	assert_int_equal(parse_rate("1M/h", &v), -EINVAL);
	assert_int_equal(parse_rate("1M/s/s", &v), -EINVAL);
	assert_int_equal(parse_rate("99999999999T", &v), -EINVAL);
	assert_msg_contains("too large");
}

static void test_parse_duration(void **state)
{
	uint64_t v = 0;

	(void)state;
	assert_int_equal(parse_duration("60", &v), 0);
	assert_int_equal(v, 60000000000ull);
	assert_int_equal(parse_duration("90s", &v), 0);
	assert_int_equal(v, 90000000000ull);
	assert_int_equal(parse_duration("500ms", &v), 0);
	assert_int_equal(v, 500000000ull);
	assert_int_equal(parse_duration("2m", &v), 0);
	assert_int_equal(v, 120000000000ull);
	assert_int_equal(parse_duration("24h", &v), 0);
	assert_int_equal(v, 86400000000000ull);
	assert_int_equal(parse_duration("0", &v), 0);
	assert_int_equal(v, 0);

	assert_int_equal(parse_duration("", &v), -EINVAL);
	assert_msg_contains("expected a number");
	assert_int_equal(parse_duration("s", &v), -EINVAL);
	assert_int_equal(parse_duration("-1s", &v), -EINVAL);
	assert_int_equal(parse_duration("10x", &v), -EINVAL);
	assert_msg_contains("unknown unit 'x'");
	assert_int_equal(parse_duration("1.5s", &v), -EINVAL);
	assert_int_equal(parse_duration("25h", &v), -EINVAL);
	assert_msg_contains("longer than a day");
	assert_int_equal(parse_duration("99999999999999999999", &v), -EINVAL);
	assert_msg_contains("longer than a day");
}

/* ---- str_escape ----------------------------------------------------------- */

static void test_str_escape(void **state)
{
	char buf[STR_ESCAPE_CAP(16)], small[12];

	(void)state;
	assert_string_equal(str_escape(buf, sizeof(buf), "drive0"), "drive0");
	assert_string_equal(str_escape(buf, sizeof(buf), ""), "");
	assert_string_equal(str_escape(buf, sizeof(buf), "a\nb"), "a\\x0ab");
	assert_string_equal(str_escape(buf, sizeof(buf), "\033[2K\r"), "\\x1b[2K\\x0d");
	assert_string_equal(str_escape(buf, sizeof(buf), "a\\b"), "a\\x5cb");
	assert_string_equal(str_escape(buf, sizeof(buf), "\x7f\xc3\xa9"), "\\x7f\\xc3\\xa9");
	/* The largest input STR_ESCAPE_CAP promises to hold whole. */
	assert_string_equal(str_escape(buf, sizeof(buf), "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n"),
			    "\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a\\x0a"
			    "\\x0a\\x0a");
	/* Cut: never inside an escape, always marked. */
	assert_string_equal(str_escape(small, sizeof(small), "abcdefghijklmnop"), "abcdefgh...");
	assert_string_equal(str_escape(small, sizeof(small), "abcdefg\nhij"), "abcdefg...");
	assert_string_equal(str_escape(small, sizeof(small), "abcdefghijk"), "abcdefghijk");
	assert_string_equal(str_escape(small, 4, "abcd"), "...");
	assert_ptr_equal(str_escape(small, sizeof(small), "x"), small);
}

/* ---- fmt_bytes ------------------------------------------------------------ */

static void test_fmt_bytes(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 0), "0 B");
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 1023), "1023 B");
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 1024), "1.0 KiB");
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 1536), "1.5 KiB");
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 64 * MiB), "64.0 MiB");
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 3 * GiB / 2), "1.5 GiB");
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 5 * 1024 * GiB), "5.0 TiB");
	/* TiB is the largest unit. */
	assert_string_equal(fmt_bytes(buf, sizeof(buf), 2048 * 1024 * GiB), "2048.0 TiB");
	/* Returns buf, and truncates to the capacity. */
	assert_ptr_equal(fmt_bytes(buf, 4, 1536), buf);
	assert_string_equal(buf, "1.5");
}

/* ---- big-endian helpers --------------------------------------------------- */

static void test_be_layout(void **state)
{
	uint8_t b[8];

	(void)state;
	put_be16(b, 0x1234);
	assert_int_equal(b[0], 0x12);
	assert_int_equal(b[1], 0x34);
	put_be32(b, 0x01020304);
	assert_memory_equal(b, "\x01\x02\x03\x04", 4);
	put_be64(b, UINT64_C(0x0102030405060708));
	assert_memory_equal(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
}

static void test_be_round_trip(void **state)
{
	static const uint64_t vals[] = {
		0,
		1,
		0x7f,
		0x80,
		0xff,
		0x100,
		0x7fff,
		0x8000,
		0xffff,
		0x12345678,
		0x80000000,
		0xffffffff,
		UINT64_C(0x100000000),
		UINT64_C(0x8000000000000000),
		UINT64_C(0xfedcba9876543210),
		UINT64_MAX,
	};
	uint8_t buf[9];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(vals); i++) {
		/* Odd address: the helpers must work unaligned. */
		uint8_t *p = buf + 1;

		put_be16(p, (uint16_t)vals[i]);
		assert_int_equal(get_be16(p), (uint16_t)vals[i]);
		put_be32(p, (uint32_t)vals[i]);
		assert_int_equal(get_be32(p), (uint32_t)vals[i]);
		put_be64(p, vals[i]);
		assert_int_equal(get_be64(p), vals[i]);
	}
}

/* ---- arithmetic and ranges ------------------------------------------------ */

static void test_range_inside(void **state)
{
	(void)state;
	assert_true(range_inside(0, 0, 0));
	assert_false(range_inside(0, 1, 0));
	assert_false(range_inside(1, 0, 0));
	assert_true(range_inside(0, 10, 10));
	assert_true(range_inside(5, 5, 10));
	assert_false(range_inside(5, 6, 10));
	assert_true(range_inside(10, 0, 10)); /* empty range at the end */
	assert_false(range_inside(11, 0, 10));
	assert_true(range_inside(0, UINT64_MAX, UINT64_MAX));
	assert_true(range_inside(UINT64_MAX, 0, UINT64_MAX));
	assert_false(range_inside(UINT64_MAX, 1, UINT64_MAX));
	/* off + len wraps around to a small number: still outside. */
	assert_false(range_inside(1, UINT64_MAX, UINT64_MAX));
	assert_false(range_inside(8, UINT64_MAX - 3, 100));
	assert_false(range_inside(UINT64_MAX, UINT64_MAX, 100));
}

static void test_checked_arith(void **state)
{
	uint64_t r;

	(void)state;
	assert_false(ckd_add_u64(&r, UINT64_MAX - 1, 1));
	assert_int_equal(r, UINT64_MAX);
	assert_true(ckd_add_u64(&r, UINT64_MAX, 1));
	assert_false(ckd_mul_u64(&r, UINT64_C(1) << 32, (UINT64_C(1) << 32) - 1));
	assert_true(ckd_mul_u64(&r, UINT64_C(1) << 32, UINT64_C(1) << 32));

	assert_false(is_pow2(0));
	assert_true(is_pow2(1));
	assert_true(is_pow2(512));
	assert_false(is_pow2(513));
	assert_true(is_pow2(UINT64_C(1) << 63));

	assert_int_equal(div_round_up(0, 512), 0);
	assert_int_equal(div_round_up(1, 512), 1);
	assert_int_equal(div_round_up(512, 512), 1);
	assert_int_equal(div_round_up(513, 512), 2);
	assert_int_equal(div_round_up(UINT64_MAX, 2), UINT64_C(1) << 63);
}

/* A thread's name is what ps and perf show, cut to 15 bytes; a bulk
 * thread is SCHED_BATCH, and only it. */
static void *named_bulk_main(void *arg)
{
	char *got = arg;

	thread_name("bm-a-name-longer-than-fifteen");
	thread_bulk();
	if (pthread_getname_np(pthread_self(), got, 32) != 0)
		got[0] = 0;
	if (sched_getscheduler(0) != SCHED_BATCH)
		got[0] = 0;
	return NULL;
}

static void test_thread_name_and_bulk(void **state)
{
	char got[32] = "";
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, named_bulk_main, got), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_string_equal(got, "bm-a-name-longe");
	/* Only the thread that asked. */
	assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
}

static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

/* The kernel's slice for this thread, from /proc (0: not shown, as
 * before EEVDF). */
static unsigned long long own_slice(void)
{
	char path[64], line[256];
	unsigned long long ns = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%ld/sched", (long)syscall(SYS_gettid));
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "se.slice", 8) == 0)
			sscanf(strchr(line, ':') + 1, "%llu", &ns);
	fclose(f);
	return ns;
}

struct latency_seen {
	int policy_before, policy_after, nice_want, nice_after, r;
	unsigned long long slice_before, slice_after;
};

static void *latency_main(void *arg)
{
	struct latency_seen *s = arg;
	pid_t tid = (pid_t)syscall(SYS_gettid);

	/* A nice value of its own, which the call must keep (raising it is
	 * always allowed). */
	s->nice_want = MIN(getpriority(PRIO_PROCESS, (id_t)tid) + 3, 19);
	if (setpriority(PRIO_PROCESS, (id_t)tid, s->nice_want) != 0)
		s->nice_want = -100;
	s->policy_before = sched_getscheduler(0);
	s->slice_before = own_slice();
	s->r = thread_latency();
	s->policy_after = sched_getscheduler(0);
	s->nice_after = getpriority(PRIO_PROCESS, (id_t)tid);
	s->slice_after = own_slice();
	return NULL;
}

static void test_thread_latency(void **state)
{
	struct latency_seen s = { 0 };
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, latency_main, &s), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	/* Its share of the CPU is what it was: same policy, same nice. */
	assert_int_equal(s.policy_before, SCHED_OTHER);
	assert_int_equal(s.policy_after, SCHED_OTHER);
	assert_int_not_equal(s.nice_want, -100);
	assert_int_equal(s.nice_after, s.nice_want);
	/* A kernel with custom slices (6.12 on) gave it the short one. */
	if (kernel_at_least(6, 12) && s.slice_before && s.r == 0)
		assert_int_equal(s.slice_after, THREAD_LATENCY_SLICE_NS);
	else
		print_message("no custom slice here (%d): only the share is checked\n", s.r);
}

static void *batch_main(void *arg)
{
	struct sched_param sp = { .sched_priority = 0 };
	int *policy = arg;

	if (sched_setscheduler(0, SCHED_BATCH, &sp) != 0) {
		*policy = -1;
		return NULL;
	}
	(void)thread_latency();
	*policy = sched_getscheduler(0);
	return NULL;
}

/* A thread under another policy (SCHED_BATCH here) keeps it. */
static void test_thread_latency_keeps_policy(void **state)
{
	int policy = 0;
	pthread_t th;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, batch_main, &policy), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(policy, SCHED_BATCH);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thread_latency),
		cmocka_unit_test(test_thread_latency_keeps_policy),
		cmocka_unit_test(test_parse_size_ok),
		cmocka_unit_test(test_parse_size_errors),
		cmocka_unit_test(test_parse_rate),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_fmt_bytes),
		cmocka_unit_test(test_str_escape),
		cmocka_unit_test(test_be_layout),
		cmocka_unit_test(test_be_round_trip),
		cmocka_unit_test(test_range_inside),
		cmocka_unit_test(test_checked_arith),
		cmocka_unit_test(test_thread_name_and_bulk),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
