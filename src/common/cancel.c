/* SPDX-License-Identifier: MIT */
/*
 * Cancel token: an atomic flag and an eventfd that, once written, is not
 * read again (until a reset), so it stays readable and wakes every poller;
 * see cancel.h.  A poller woken by the fd may find the flag not yet set for
 * an instant (fire sets it last) and simply polls again.
 */
#include "cancel.h"
#include "error.h"
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct cancel {
	atomic_bool fired;
	int fd; /* eventfd: readable once fired */
};

/* Firing from a signal handler needs a flag that takes no lock. */
static_assert(ATOMIC_BOOL_LOCK_FREE == 2, "cancel_fire() needs a lock-free atomic_bool");

int cancel_new(struct cancel **out)
{
	struct cancel *c = malloc(sizeof(*c));
	int e;

	if (!c)
		return err_set(ENOMEM, "no memory for a cancel token");
	c->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->fd < 0) {
		e = errno;
		free(c);
		return err_set(e, "cancel token: eventfd: %s", strerror(e));
	}
	atomic_init(&c->fired, false);
	*out = c;
	return 0;
}

void cancel_free(struct cancel *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c);
}

void cancel_fire(struct cancel *c)
{
	uint64_t one = 1;
	int saved = errno;

	if (!c || atomic_load(&c->fired))
		return;
	/* The fd first, the flag last: whoever sees the flag set may free the
	 * token at once, so the flag must be the last thing fire touches.
	 * Two racing fires both write, which only adds 2 to the counter; it
	 * cannot block or fail (but for a closed fd, a caller's bug). */
	(void)!write(c->fd, &one, sizeof(one));
	atomic_store(&c->fired, true);
	errno = saved;
}

bool cancel_is_set(const struct cancel *c)
{
	return c && atomic_load(&((struct cancel *)c)->fired);
}

int cancel_fd(const struct cancel *c)
{
	return c ? c->fd : -1;
}

bool cancel_sleep(const struct cancel *c, int64_t ns)
{
	uint64_t deadline = ns < 0 ? 0 : now_ns() + (uint64_t)ns;

	if (!c) {
		if (ns > 0)
			sleep_ns((uint64_t)ns);
		return false;
	}
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		struct timespec ts, *tsp = NULL;
		uint64_t now;

		if (cancel_is_set(c))
			return true;
		if (deadline) {
			now = now_ns();
			if (now >= deadline)
				return false;
			ts.tv_sec = (time_t)((deadline - now) / 1000000000u);
			ts.tv_nsec = (long)((deadline - now) % 1000000000u);
			tsp = &ts;
		}
		/* EINTR (or, at worst, ENOMEM) just goes round again. */
		(void)ppoll(&p, 1, tsp, NULL);
	}
}

void cancel_reset(struct cancel *c)
{
	uint64_t v;

	if (!cancel_is_set(c))
		return;
	/* Drain first: a waiter that sees the flag clear must not find the
	 * fd still readable. */
	(void)!read(c->fd, &v, sizeof(v));
	atomic_store(&c->fired, false);
}

int cancel_poll_fds(const struct cancel *c, struct pollfd *fds, unsigned n, uint64_t deadline)
{
	struct pollfd p[CANCEL_POLL_MAX + 1];

	if (n > CANCEL_POLL_MAX)
		return -EINVAL;
	for (;;) {
		int r;

		memcpy(p, fds, n * sizeof(*p));
		p[n] = (struct pollfd){ .fd = cancel_fd(c), .events = POLLIN };
		if (cancel_is_set(c))
			return -ECANCELED;
		r = poll(p, n + 1, poll_ms_until(deadline));
		if (r < 0 && errno != EINTR)
			return -errno;
		if (cancel_is_set(c))
			return -ECANCELED;
		if (r > 0) {
			int ready = 0;

			for (unsigned i = 0; i < n; i++) {
				fds[i].revents = p[i].revents;
				ready += p[i].revents != 0;
			}
			if (ready)
				return ready;
		}
		if (deadline && now_ns() >= deadline)
			return 0;
	}
}

int cancel_poll(const struct cancel *c, int fd, short events, uint64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	return cancel_poll_fds(c, &p, 1, deadline);
}
