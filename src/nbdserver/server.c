/* SPDX-License-Identifier: MIT */
/*
 * NBD server lifecycle: exports, the listening socket, one thread per
 * connection (started and reaped by common/acceptor) running the
 * connection state machine (enum conn_state), refusal and switch-over
 * shutdown, and the blocking socket I/O the protocol files use.  The
 * protocol itself is in handshake.c (greeting, options) and requests.c
 * (transmission).
 *
 * Waking threads: nbds_free() stops the acceptor, which shuts every client
 * socket down (conn_kick), ending any blocked recv/send/poll on it.
 * nbds_shutdown() writes shut_pipe, which every connection polls while it
 * waits for its next request.  The pipe gets one byte, once, and is never
 * drained, so it stays readable (level-triggered) for every thread.
 *
 * A connection's descriptor is closed only after its thread was joined
 * (conn_free), so the shutdown(fd) of conn_kick can never hit a reused
 * descriptor.
 *
 * Set BLKMIG_NBDS_DEBUG=1 in the environment to have each connection's
 * state changes and the reason it closed printed on stderr.
 */
#include "nbds-impl.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/backend.h"
#include "common/acceptor.h"
#include "common/error.h"
#include "common/util.h"
#include "nbd-protocol.h"
#include "transport/transport.h"

static const char *const conn_state_name[] = {
	[CONN_GREET] = "greet", [CONN_OPTIONS] = "options", [CONN_TRANSMIT] = "transmit",
	[CONN_DRAIN] = "drain", [CONN_CLOSE] = "close",
};

static bool debug_enabled(void)
{
	const char *e = getenv("BLKMIG_NBDS_DEBUG");

	return e && *e && strcmp(e, "0") != 0;
}

/* ---- exports -------------------------------------------------------------- */

int nbds_new(struct nbds **out)
{
	struct nbds *s = calloc(1, sizeof(*s));
	int e;

	if (!s)
		return err_set(ENOMEM, "nbd server: out of memory");
	s->lfd = -1;
	s->shut_pipe[0] = s->shut_pipe[1] = -1;
	if (pipe2(s->shut_pipe, O_CLOEXEC) < 0) {
		e = errno;
		goto err_pipes;
	}
	e = pthread_mutex_init(&s->lock, NULL);
	if (e)
		goto err_pipes;
	*out = s;
	return 0;

err_pipes:
	for (int i = 0; i < 2; i++)
		if (s->shut_pipe[i] >= 0)
			close(s->shut_pipe[i]);
	free(s);
	return err_set(e, "nbd server: %s", strerror(e));
}

static bool name_equal(const struct nbds_export *x, const char *name, size_t len)
{
	return x->namelen == len && memcmp(x->name, name, len) == 0;
}

int nbds_add_export(struct nbds *s, const char *name, struct blk *blk, bool readonly)
{
	struct nbds_export *x;
	size_t len;

	assert(s && name && blk);
	len = strnlen(name, NBDS_MAX_NAME + 1);
	if (len > NBDS_MAX_NAME)
		return err_set(EINVAL, "nbd server: export name longer than %d bytes",
			       NBDS_MAX_NAME);
	x = calloc(1, sizeof(*x));
	if (!x || !(x->name = strdup(name))) {
		free(x);
		return err_set(ENOMEM, "nbd server: out of memory for export '%s'", name);
	}
	x->namelen = len;
	x->blk = blk;
	/* A read-only blk would fail writes with EROFS anyway: say so up front. */
	x->readonly = readonly || blk->readonly;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nexports; i++) {
		if (name_equal(s->exports[i], name, len)) {
			pthread_mutex_unlock(&s->lock);
			free(x->name);
			free(x);
			return err_set(EEXIST, "nbd server: export '%s' already exists", name);
		}
	}
	if (s->nexports == s->exports_cap) {
		size_t cap = s->exports_cap ? 2 * s->exports_cap : 4;
		struct nbds_export **a = realloc(s->exports, cap * sizeof(*a));

		if (!a) {
			pthread_mutex_unlock(&s->lock);
			free(x->name);
			free(x);
			return err_set(ENOMEM, "nbd server: out of memory for export '%s'", name);
		}
		s->exports = a;
		s->exports_cap = cap;
	}
	s->exports[s->nexports++] = x;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

const struct nbds_export *nbds_find_export(struct nbds *s, const char *name, size_t len)
{
	const struct nbds_export *x = NULL;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nexports && !x; i++)
		if (name_equal(s->exports[i], name, len))
			x = s->exports[i];
	if (!x && len == 0 && s->nexports > 0)
		x = s->exports[0];
	pthread_mutex_unlock(&s->lock);
	return x;
}

int nbds_list_exports(struct nbds *s, const struct nbds_export ***out, size_t *n)
{
	const struct nbds_export **a;

	pthread_mutex_lock(&s->lock);
	a = malloc((s->nexports ? s->nexports : 1) * sizeof(*a));
	if (a) {
		for (size_t i = 0; i < s->nexports; i++)
			a[i] = s->exports[i];
		*n = s->nexports;
	}
	pthread_mutex_unlock(&s->lock);
	if (!a)
		return err_set(ENOMEM, "nbd server: out of memory listing exports");
	*out = a;
	return 0;
}

/* ---- refusal and shutdown ------------------------------------------------- */

static void copy_msg(char *msg, size_t cap, const char *src, const char *fallback)
{
	snprintf(msg, cap, "%s", src ? src : fallback);
}

uint32_t nbds_refused(struct nbds *s, char *msg, size_t cap)
{
	uint32_t rep = 0;

	pthread_mutex_lock(&s->lock);
	if (atomic_load(&s->shut_err)) {
		rep = NBD_REP_ERR_SHUTDOWN;
		copy_msg(msg, cap, s->shut_reason, "server is shutting down");
	} else if (s->refusing) {
		rep = NBD_REP_ERR_UNKNOWN;
		copy_msg(msg, cap, s->refuse, "exports are not available now");
	}
	pthread_mutex_unlock(&s->lock);
	return rep;
}

int nbds_shut_err(struct nbds *s, char *msg, size_t cap)
{
	int err;

	pthread_mutex_lock(&s->lock);
	err = atomic_load(&s->shut_err);
	if (err && msg)
		copy_msg(msg, cap, s->shut_reason, strerror(err));
	pthread_mutex_unlock(&s->lock);
	return err;
}

void nbds_refuse(struct nbds *s, const char *reason)
{
	char *copy = reason ? strdup(reason) : NULL;

	pthread_mutex_lock(&s->lock);
	free(s->refuse);
	s->refuse = copy; /* NULL after a failed strdup: a generic message */
	s->refusing = reason != NULL;
	pthread_mutex_unlock(&s->lock);
}

static void poke(int fd)
{
	const char b = 1;
	ssize_t n;

	do
		n = write(fd, &b, 1);
	while (n < 0 && errno == EINTR);
}

void nbds_shutdown(struct nbds *s, int err, const char *reason)
{
	bool first;

	if (err < 0)
		err = -err;
	if (err == 0)
		err = ESHUTDOWN;
	pthread_mutex_lock(&s->lock);
	first = atomic_load(&s->shut_err) == 0;
	if (first) {
		s->shut_reason = reason ? strdup(reason) : NULL;
		atomic_store(&s->shut_err, err);
	}
	pthread_mutex_unlock(&s->lock);
	if (first)
		poke(s->shut_pipe[1]);
}

unsigned nbds_clients(struct nbds *s)
{
	struct acc *a;

	pthread_mutex_lock(&s->lock);
	a = s->acc;
	pthread_mutex_unlock(&s->lock);
	return a ? acc_live(a) : 0;
}

/* ---- socket I/O ----------------------------------------------------------- */

/* Milliseconds left before the handshake deadline (>= 0), or -1 for none. */
static int time_left_ms(const struct nbds_conn *c)
{
	uint64_t now;

	if (!c->deadline_ns)
		return -1;
	now = now_ns();
	if (now >= c->deadline_ns)
		return 0;
	return (int)MIN((c->deadline_ns - now + 999999) / 1000000, (uint64_t)INT32_MAX);
}

/* Poll one descriptor, restarting after signals: 1 ready, 0 timeout, -errno. */
static int poll_one(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r;
}

/* Before blocking on the socket during the handshake: wait with the deadline. */
static int wait_deadline(struct nbds_conn *c, short events)
{
	int left = time_left_ms(c), r;

	if (left < 0)
		return 0;
	r = left ? poll_one(c->fd, events, left) : 0;
	if (r == 0)
		return err_set(ETIMEDOUT, "handshake not finished within %d ms",
			       NBDS_HANDSHAKE_TIMEOUT_MS);
	return r < 0 ? err_set(-r, "poll: %s", strerror(-r)) : 0;
}

int nbds_wait(struct nbds_conn *c, int timeout_ms)
{
	struct nbds *s = c->srv;
	struct pollfd p[2] = {
		{ .fd = c->fd, .events = POLLIN },
		{ .fd = s->shut_pipe[0], .events = POLLIN },
	};
	int r;

	if (!c->saw_shutdown && atomic_load(&s->shut_err)) {
		c->saw_shutdown = true;
		return -ESHUTDOWN;
	}
	do
		r = poll(p, c->saw_shutdown ? 1 : 2, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return err_set(errno, "poll: %s", strerror(errno));
	if (!c->saw_shutdown && (p[1].revents & POLLIN)) {
		c->saw_shutdown = true;
		return -ESHUTDOWN;
	}
	return p[0].revents ? 1 : 0;
}

int nbds_read(struct nbds_conn *c, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n;
		int r = wait_deadline(c, POLLIN);

		if (r < 0)
			return r;
		n = recv(c->fd, p + got, len - got, 0);
		if (n == 0)
			return err_set(ECONNRESET,
				       "client closed the connection (%zu of %zu bytes read)", got,
				       len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return err_set(errno, "recv: %s", strerror(errno));
		}
		got += (size_t)n;
	}
	return 0;
}

int nbds_discard(struct nbds_conn *c, uint64_t len)
{
	uint8_t sink[16384];

	while (len > 0) {
		size_t n = (size_t)MIN(len, (uint64_t)sizeof(sink));
		int r = nbds_read(c, sink, n);

		if (r < 0)
			return r;
		len -= n;
	}
	return 0;
}

#define NBDS_MAX_IOV 8

int nbds_writev(struct nbds_conn *c, const struct iovec *iov_in, int n, bool more)
{
	struct iovec iov[NBDS_MAX_IOV];
	struct msghdr m = { .msg_iov = iov };
	int flags = MSG_NOSIGNAL;

	assert(n > 0 && n <= NBDS_MAX_IOV);
	memcpy(iov, iov_in, (size_t)n * sizeof(*iov));
	m.msg_iovlen = (size_t)n;
	if (c->deadline_ns)
		flags |= MSG_DONTWAIT;
#ifdef MSG_MORE
	if (more)
		flags |= MSG_MORE;
#else
	(void)more;
#endif
	while (m.msg_iovlen > 0) {
		ssize_t w;
		int r = wait_deadline(c, POLLOUT);

		if (r < 0)
			return r;
		w = sendmsg(c->fd, &m, flags);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return err_set(errno, "send: %s", strerror(errno));
		}
		while (w > 0 && m.msg_iovlen > 0) {
			size_t k = MIN((size_t)w, m.msg_iov->iov_len);

			m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + k;
			m.msg_iov->iov_len -= k;
			w -= (ssize_t)k;
			if (m.msg_iov->iov_len == 0) {
				m.msg_iov++;
				m.msg_iovlen--;
			}
		}
		/* Skip empty entries so the loop ends. */
		while (m.msg_iovlen > 0 && m.msg_iov->iov_len == 0) {
			m.msg_iov++;
			m.msg_iovlen--;
		}
	}
	return 0;
}

int nbds_write(struct nbds_conn *c, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return nbds_writev(c, &iov, 1, false);
}

int nbds_buf_reserve(struct nbds_conn *c, size_t len)
{
	uint8_t *p;

	if (len <= c->buf_cap)
		return 0;
	p = realloc(c->buf, len);
	if (!p)
		return err_set(ENOMEM, "out of memory for a %zu-byte buffer", len);
	c->buf = p;
	c->buf_cap = len;
	return 0;
}

/* ---- connections ---------------------------------------------------------- */

static enum conn_state conn_step(struct nbds_conn *c)
{
	switch (c->state) {
	case CONN_GREET:
		return nbds_greet(c);
	case CONN_OPTIONS:
		return nbds_option(c);
	case CONN_TRANSMIT:
		return nbds_request(c);
	case CONN_DRAIN:
		return nbds_drain(c);
	case CONN_CLOSE:
		break;
	}
	return CONN_CLOSE;
}

static void conn_main(void *arg)
{
	struct nbds_conn *c = arg;
	bool debug = debug_enabled();

	err_clear();
	c->state = CONN_GREET;
	c->deadline_ns = now_ns() + (uint64_t)NBDS_HANDSHAKE_TIMEOUT_MS * 1000000u;
	while (c->state != CONN_CLOSE) {
		enum conn_state next = conn_step(c);

		if (debug && next != c->state)
			fprintf(stderr, "nbds: fd %d: %s -> %s%s%s\n", c->fd,
				conn_state_name[c->state], conn_state_name[next],
				next == CONN_CLOSE ? ": " : "",
				next == CONN_CLOSE ? err_msg() : "");
		c->state = next;
	}
	/* Tell the client now; the descriptor is closed by whoever joins us. */
	shutdown(c->fd, SHUT_RDWR);
	free(c->buf);
	c->buf = NULL;
	c->buf_cap = 0;
}

static void conn_free(void *arg)
{
	struct nbds_conn *c = arg;

	close(c->fd);
	free(c);
}

/* nbds_free(): end a blocked recv/send/poll. */
static void conn_kick(void *arg)
{
	struct nbds_conn *c = arg;

	shutdown(c->fd, SHUT_RDWR);
}

/* Take ownership of an accepted socket; NULL refuses it. */
static void *conn_open(void *user, int fd)
{
	struct nbds_conn *c;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->srv = user;
	c->fd = fd;
	return c;
}

static const struct acc_ops conn_ops = {
	.open = conn_open,
	.run = conn_main,
	.free = conn_free,
	.kick = conn_kick,
};

int nbds_listen(struct nbds *s, const char *hostport, char *bound, size_t bound_cap)
{
	int lfd, r;

	struct acc *a;

	pthread_mutex_lock(&s->lock);
	if (s->lfd >= 0) {
		pthread_mutex_unlock(&s->lock);
		return err_set(EBUSY, "nbd server: already listening");
	}
	pthread_mutex_unlock(&s->lock);

	r = xport_listen(hostport, &lfd, bound, bound_cap);
	if (r < 0)
		return err_prefix(-r, "nbd server: ");
	r = acc_start("nbd server", lfd, NBDS_MAX_CLIENTS, 0, &conn_ops, s, &a);
	if (r < 0) {
		close(lfd);
		return r;
	}
	pthread_mutex_lock(&s->lock);
	s->lfd = lfd;
	s->acc = a;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void nbds_free(struct nbds *s)
{
	if (!s)
		return;
	/* Stops accepting, then wakes every connection and joins them all. */
	acc_free(s->acc);
	if (s->lfd >= 0)
		close(s->lfd);
	for (int i = 0; i < 2; i++)
		close(s->shut_pipe[i]);
	for (size_t i = 0; i < s->nexports; i++) {
		free(s->exports[i]->name);
		free(s->exports[i]);
	}
	free(s->exports);
	free(s->refuse);
	free(s->shut_reason);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
