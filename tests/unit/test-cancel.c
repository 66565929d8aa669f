/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the cancel token (src/common/cancel.c): the flag and the
 * descriptor agree, firing is idempotent and keeps errno, cancel_sleep()
 * returns when fired from another thread or from a signal handler (and
 * only says "fired" when it was), reset makes the token reusable, and NULL
 * is accepted where the header says so.
 *
 * No timing assertions: a wait the token fails to end runs into a generous
 * safety timeout and reports "not fired" instead.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/cancel.h"
#include "common/util.h"

#define SAFETY_NS (20 * 1000000000ll)

/* Whether fd polls readable right now. */
static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void test_fire_sets_flag_and_fd(void **state)
{
	struct cancel *c = NULL;

	(void)state;
	assert_int_equal(cancel_new(&c), 0);
	assert_non_null(c);
	assert_false(cancel_is_set(c));
	assert_true(cancel_fd(c) >= 0);
	assert_false(readable(cancel_fd(c)));

	errno = EDOM;
	cancel_fire(c);
	assert_int_equal(errno, EDOM);
	assert_true(cancel_is_set(c));
	assert_true(readable(cancel_fd(c)));
	/* Idempotent, and the fd stays readable for every later poller. */
	cancel_fire(c);
	assert_true(cancel_is_set(c));
	assert_true(readable(cancel_fd(c)));
	assert_true(readable(cancel_fd(c)));
	assert_true(cancel_sleep(c, SAFETY_NS));
	assert_true(cancel_sleep(c, -1));
	cancel_free(c);
}

static void test_sleep_times_out_unfired(void **state)
{
	struct cancel *c;

	(void)state;
	assert_int_equal(cancel_new(&c), 0);
	assert_false(cancel_sleep(c, 0));
	assert_false(cancel_sleep(c, 1000000));
	assert_false(cancel_is_set(c));
	cancel_free(c);
}

static void test_reset(void **state)
{
	struct cancel *c;

	(void)state;
	assert_int_equal(cancel_new(&c), 0);
	cancel_reset(c); /* unfired: nothing to do */
	assert_false(cancel_is_set(c));
	cancel_fire(c);
	cancel_reset(c);
	assert_false(cancel_is_set(c));
	assert_false(readable(cancel_fd(c)));
	assert_false(cancel_sleep(c, 0));
	/* And it fires again. */
	cancel_fire(c);
	assert_true(cancel_is_set(c));
	assert_true(readable(cancel_fd(c)));
	cancel_free(c);
}

static void test_null(void **state)
{
	(void)state;
	cancel_fire(NULL);
	assert_false(cancel_is_set(NULL));
	assert_int_equal(cancel_fd(NULL), -1);
	assert_false(cancel_sleep(NULL, 0));
	assert_false(cancel_sleep(NULL, 1000));
	assert_false(cancel_sleep(NULL, -1));
	cancel_free(NULL);
}

/* ---- waking waiters ---------------------------------------------------------- */

struct sleeper {
	pthread_t th;
	struct cancel *c;
	bool fired;
};

static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;

	s->fired = cancel_sleep(s->c, SAFETY_NS);
	return NULL;
}

/* Several threads asleep on one token: one fire ends every sleep. */
static void test_fire_wakes_every_sleeper(void **state)
{
	struct sleeper s[4];
	struct cancel *c;

	(void)state;
	assert_int_equal(cancel_new(&c), 0);
	for (unsigned i = 0; i < ARRAY_SIZE(s); i++) {
		s[i].c = c;
		s[i].fired = false;
		assert_int_equal(pthread_create(&s[i].th, NULL, sleeper_main, &s[i]), 0);
	}
	sleep_ns(50 * 1000000ull); /* let them sleep (not required) */
	cancel_fire(c);
	for (unsigned i = 0; i < ARRAY_SIZE(s); i++) {
		pthread_join(s[i].th, NULL);
		assert_true(s[i].fired);
	}
	cancel_free(c);
}

static struct cancel *_Atomic sig_token;

static void on_sigusr1(int sig)
{
	(void)sig;
	cancel_fire(atomic_load(&sig_token));
}

/* Fired from a signal handler on another thread: the sleeper, which blocks
 * the signal, is woken by the descriptor, not by EINTR. */
static void test_fire_from_signal_handler(void **state)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 }, old_sa;
	sigset_t usr1, old_mask;
	struct sleeper s = { 0 };

	(void)state;
	assert_int_equal(cancel_new(&s.c), 0);
	atomic_store(&sig_token, s.c);
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old_sa), 0);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr1, &old_mask), 0);
	assert_int_equal(pthread_create(&s.th, NULL, sleeper_main, &s), 0);
	assert_int_equal(pthread_sigmask(SIG_SETMASK, &old_mask, NULL), 0);
	sleep_ns(50 * 1000000ull); /* let it sleep (not required) */
	assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0);
	pthread_join(s.th, NULL);
	assert_true(s.fired);
	sigaction(SIGUSR1, &old_sa, NULL);
	atomic_store(&sig_token, NULL);
	cancel_free(s.c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fire_sets_flag_and_fd),
		cmocka_unit_test(test_sleep_times_out_unfired),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_null),
		cmocka_unit_test(test_fire_wakes_every_sleeper),
		cmocka_unit_test(test_fire_from_signal_handler),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
