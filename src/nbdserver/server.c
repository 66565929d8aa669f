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
 * socket down (conn_kick), ending any blocked recv/send/poll on it (with
 * TLS too: the session's socket is non-blocking and every wait is a poll
 * on it, which the shutdown ends).
 * nbds_shutdown() writes shut_pipe, which every connection polls while it
 * waits for its next request.  The pipe gets one byte, once, and is never
 * drained, so it stays readable (level-triggered) for every thread.
 *
 * A connection's descriptor is closed only after its thread was joined
 * (conn_free), so the shutdown(fd) of conn_kick can never hit a reused
 * descriptor.
 *
 * TLS: after NBD_OPT_STARTTLS every byte goes through the connection's
 * session.  The socket is made non-blocking then, and a read or write that
 * would block polls the socket, within the deadline when there is one.
 * Bytes GnuTLS has already decrypted are invisible to poll(), so
 * nbds_wait() asks the session first.  Nothing is buffered on our side
 * before STARTTLS (option data is read to its exact length), so no
 * plaintext sent after the STARTTLS can leak into the TLS stream.
 *
 * Limits (server.h): the peer table, under the server's lock, counts each
 * address's connections and unauthenticated ones.  conn_open() checks the
 * per-address limit before a connection gets its thread; the thread then
 * waits on unauth_cond for an unauthenticated slot (unauth_acquire())
 * before it greets; nbds_authed() gives that slot back when it
 * authenticates, conn_release() the rest when the thread ends.  conn_kick
 * takes the server lock to set 'kicked' and broadcast, so a waiting thread
 * cannot miss it (lock order: the acceptor's list lock, then the server's).
 *
 * Set BLKMIG_NBDS_DEBUG=1 in the environment to have each connection's
 * state changes and the reason it closed printed on stderr.
 */
#include "nbds-impl.h"

#include <arpa/inet.h>
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
#include "tls/tls.h"
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

/* A condition variable whose timed waits count on CLOCK_MONOTONIC. */
static int cond_init_monotonic(pthread_cond_t *cv)
{
	pthread_condattr_t a;
	int e = pthread_condattr_init(&a);

	if (e)
		return e;
	e = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	if (!e)
		e = pthread_cond_init(cv, &a);
	pthread_condattr_destroy(&a);
	return e;
}

/* ---- exports -------------------------------------------------------------- */

int nbds_new(struct nbds **out)
{
	struct nbds *s = calloc(1, sizeof(*s));
	int e;

	if (!s)
		return err_set(ENOMEM, "nbd server: out of memory");
	s->lfd = -1;
	s->limits = NBDS_LIMITS_DEFAULT;
	s->shut_pipe[0] = s->shut_pipe[1] = -1;
	if (pipe2(s->shut_pipe, O_CLOEXEC) < 0) {
		e = errno;
		goto err_pipes;
	}
	e = pthread_mutex_init(&s->lock, NULL);
	if (e)
		goto err_pipes;
	e = pthread_mutex_init(&s->log_lock, NULL);
	if (e)
		goto err_lock;
	e = cond_init_monotonic(&s->unauth_cond);
	if (e)
		goto err_log_lock;
	*out = s;
	return 0;

err_log_lock:
	pthread_mutex_destroy(&s->log_lock);
err_lock:
	pthread_mutex_destroy(&s->lock);
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

/* ---- settings ------------------------------------------------------------- */

/* Whether nbds_listen() has run; settings are refused after it. */
static bool listening(struct nbds *s)
{
	bool r;

	pthread_mutex_lock(&s->lock);
	r = s->lfd >= 0;
	pthread_mutex_unlock(&s->lock);
	return r;
}

int nbds_set_tls(struct nbds *s, struct tls_creds *c)
{
	if (listening(s))
		return err_set(EBUSY, "nbd server: TLS must be set before listening");
	s->tls = c;
	return 0;
}

int nbds_set_limits(struct nbds *s, const struct nbds_limits *l)
{
	if (listening(s))
		return err_set(EBUSY, "nbd server: limits must be set before listening");
	if (!l->per_peer || !l->unauth)
		return err_set(EINVAL, "nbd server: the connection limits must be at least 1");
	s->limits = *l;
	return 0;
}

void nbds_set_log(struct nbds *s, void (*log)(void *user, const char *line), void *user)
{
	assert(!listening(s));
	s->log = log;
	s->log_user = user;
}

void nbds_log(struct nbds *s, const char *fmt, ...)
{
	char line[1024], note[128];
	unsigned dropped = 0;
	uint64_t now = now_ns();
	va_list ap;

	if (!s->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->log_lock);
	if (!s->log_window_ns || now - s->log_window_ns >= 60ull * 1000000000u) {
		dropped = s->log_dropped;
		s->log_window_ns = now;
		s->log_lines = 0;
		s->log_dropped = 0;
	}
	if (dropped) {
		snprintf(note, sizeof(note), "nbd server: %u more such lines were dropped",
			 dropped);
		s->log(s->log_user, note);
	}
	if (s->log_lines < NBDS_LOG_BURST) {
		s->log_lines++;
		s->log(s->log_user, line);
	} else {
		s->log_dropped++;
	}
	pthread_mutex_unlock(&s->log_lock);
}

/* ---- the peer table ------------------------------------------------------- */

/* The entry for addr, created (zeroed) if missing and create; NULL if
 * missing, or out of memory.  Server lock held. */
static struct nbds_peer *peer_find_locked(struct nbds *s, const char *addr, bool create)
{
	struct nbds_peer *e;

	for (size_t i = 0; i < s->npeers; i++)
		if (strcmp(s->peers[i].addr, addr) == 0)
			return &s->peers[i];
	if (!create)
		return NULL;
	if (s->npeers == s->peers_cap) {
		size_t cap = s->peers_cap ? 2 * s->peers_cap : 8;
		struct nbds_peer *a = realloc(s->peers, cap * sizeof(*a));

		if (!a)
			return NULL;
		s->peers = a;
		s->peers_cap = cap;
	}
	e = &s->peers[s->npeers++];
	memset(e, 0, sizeof(*e));
	snprintf(e->addr, sizeof(e->addr), "%s", addr);
	return e;
}

/* Drop an entry without connections.  Server lock held. */
static void peer_forget_locked(struct nbds *s, struct nbds_peer *e)
{
	if (e->conns)
		return;
	*e = s->peers[--s->npeers];
}

/* The most unauthenticated connections one address may hold. */
static unsigned unauth_per_peer(const struct nbds_limits *l)
{
	return l->unauth / 2 ? l->unauth / 2 : 1;
}

/*
 * Count a new connection from c->addr, or say in why (cap bytes) that its
 * address is over the limit.  Server lock held.
 */
static bool peer_admit_locked(struct nbds *s, struct nbds_conn *c, char *why, size_t cap)
{
	const struct nbds_limits *l = &s->limits;
	struct nbds_peer *e = peer_find_locked(s, c->addr, true);

	if (!e) {
		snprintf(why, cap, "the server is out of memory");
		return false;
	}
	if (e->conns >= l->per_peer) {
		snprintf(why, cap, "too many connections from %s (at most %u per address)", c->addr,
			 l->per_peer);
		peer_forget_locked(s, e);
		return false;
	}
	e->conns++;
	return true;
}

/* Why no unauthenticated slot is free for e (in why), or NULL.  Server
 * lock held. */
static const char *unauth_full_locked(struct nbds *s, const struct nbds_peer *e, char *why,
				      size_t cap)
{
	const struct nbds_limits *l = &s->limits;

	/* The address's own share first: that is the limit it can act on. */
	if (e->unauth >= unauth_per_peer(l))
		snprintf(why, cap,
			 "too many connections from %s are still in their handshake (at most %u "
			 "per address)",
			 e->addr, unauth_per_peer(l));
	else if (s->unauth >= l->unauth)
		snprintf(why, cap,
			 "too many connections are still in their handshake (at most %u at once)",
			 l->unauth);
	else
		return NULL;
	return why;
}

/*
 * Take an unauthenticated slot, waiting up to NBDS_UNAUTH_WAIT_MS for one.
 * True with it taken.  When none came, the connection becomes a refusal
 * (c->refusal set, while the budget allows) and the reason is logged;
 * false without c->refusal: close at once.
 */
static bool unauth_acquire(struct nbds_conn *c)
{
	struct nbds *s = c->srv;
	uint64_t end = now_ns() + (uint64_t)NBDS_UNAUTH_WAIT_MS * 1000000u;
	struct timespec ts = { .tv_sec = (time_t)(end / 1000000000u),
			       .tv_nsec = (long)(end % 1000000000u) };
	struct nbds_peer *e;
	const char *full;
	char why[256];
	bool told = false;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		e = peer_find_locked(s, c->addr, false);
		assert(e && e->conns > 0);
		full = unauth_full_locked(s, e, why, sizeof(why));
		if (!full || c->kicked ||
		    pthread_cond_timedwait(&s->unauth_cond, &s->lock, &ts) == ETIMEDOUT)
			break;
	}
	if (!full && !c->kicked) {
		e->unauth++;
		s->unauth++;
		c->unauth = true;
		pthread_mutex_unlock(&s->lock);
		return true;
	}
	/* From its address's connections to the refusals, or gone. */
	if (full && !c->kicked && s->nrefusing < NBDS_MAX_REFUSING && (c->refusal = strdup(why))) {
		e->conns--;
		peer_forget_locked(s, e);
		s->nrefusing++;
		told = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (full && !c->kicked)
		nbds_log(s, "nbd server: refused a connection from %s after %d ms: %s%s", c->peer,
			 NBDS_UNAUTH_WAIT_MS, why, told ? "" : " (closed at once)");
	else
		err_set(ESHUTDOWN, "the server is stopping");
	return false;
}

void nbds_authed(struct nbds_conn *c)
{
	struct nbds *s = c->srv;
	struct nbds_peer *e;

	if (!c->unauth)
		return;
	c->unauth = false;
	pthread_mutex_lock(&s->lock);
	e = peer_find_locked(s, c->addr, false);
	assert(e && e->unauth > 0 && s->unauth > 0);
	e->unauth--;
	s->unauth--;
	pthread_cond_broadcast(&s->unauth_cond);
	pthread_mutex_unlock(&s->lock);
}

/* Give the connection's slots back.  Idempotent. */
static void conn_release(struct nbds_conn *c)
{
	struct nbds *s = c->srv;
	struct nbds_peer *e;

	if (c->released)
		return;
	c->released = true;
	nbds_authed(c);
	pthread_mutex_lock(&s->lock);
	if (c->refusal) {
		s->nrefusing--;
	} else {
		e = peer_find_locked(s, c->addr, false);
		assert(e && e->conns > 0);
		e->conns--;
		peer_forget_locked(s, e);
	}
	pthread_mutex_unlock(&s->lock);
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

/* Milliseconds left before the deadline (>= 0), or -1 for none. */
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

/*
 * Wait until the socket is ready for events: within the deadline if there
 * is one (-ETIMEDOUT after it), else for as long as it takes (nbds_free()
 * ends the wait by shutting the socket down).
 */
static int wait_io(struct nbds_conn *c, short events)
{
	int left = time_left_ms(c), r;

	r = left ? poll_one(c->fd, events, left) : 0;
	if (r == 0)
		return err_set(ETIMEDOUT, "%s not finished within %u ms", c->deadline_what,
			       c->deadline_ms);
	return r < 0 ? err_set(-r, "poll: %s", strerror(-r)) : 0;
}

/* Before blocking on a plain socket: wait with the deadline, if any. */
static int wait_deadline(struct nbds_conn *c, short events)
{
	return c->deadline_ns ? wait_io(c, events) : 0;
}

void nbds_set_deadline(struct nbds_conn *c, unsigned ms, const char *what)
{
	c->deadline_ns = ms ? now_ns() + (uint64_t)ms * 1000000u : 0;
	c->deadline_ms = ms;
	c->deadline_what = what;
}

int nbds_start_tls(struct nbds_conn *c)
{
	int fl = fcntl(c->fd, F_GETFL), r;

	assert(c->srv->tls && !c->tls);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return err_set(errno, "fcntl: %s", strerror(errno));
	r = tls_session_new(c->srv->tls, c->fd, NULL, &c->tls);
	if (r < 0)
		return r;
	r = tls_handshake(c->tls, time_left_ms(c), NULL, c->peer);
	if (r < 0) {
		nbds_log(c->srv, "nbd server: %s", err_msg());
		tls_session_free(c->tls);
		c->tls = NULL;
		return r;
	}
	nbds_authed(c);
	return 0;
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
	/* Decrypted already: the socket may never become readable again. */
	if (c->tls && tls_pending(c->tls))
		return 1;
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
		int r;

		if (c->tls) {
			n = tls_recv(c->tls, p + got, len - got);
			if (n == -EAGAIN) {
				r = wait_io(c, POLLIN);
				if (r < 0)
					return r;
				continue;
			}
			if (n < 0)
				return (int)n;
		} else {
			r = wait_deadline(c, POLLIN);
			if (r < 0)
				return r;
			n = recv(c->fd, p + got, len - got, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return err_set(errno, "recv: %s", strerror(errno));
			}
		}
		if (n == 0)
			return err_set(ECONNRESET,
				       "client closed the connection (%zu of %zu bytes read)", got,
				       len);
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
/* The largest TLS record's payload: writes are gathered into pieces of it. */
#define TLS_PIECE 16384

/* Send one piece through the session, waiting while it would block; the
 * same bytes are offered again after -EAGAIN, as tls_send() wants. */
static int tls_write_piece(struct nbds_conn *c, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t w = tls_send(c->tls, p, len);

		if (w == -EAGAIN) {
			int r = wait_io(c, POLLOUT);

			if (r < 0)
				return r;
			continue;
		}
		if (w < 0)
			return (int)w;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Gather headers and data into full records rather than one per iovec. */
static int tls_writev(struct nbds_conn *c, const struct iovec *iov, int n)
{
	uint8_t piece[TLS_PIECE];
	size_t fill = 0;

	for (int i = 0; i < n; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left > 0) {
			size_t k = MIN(left, sizeof(piece) - fill);
			int r;

			memcpy(piece + fill, p, k);
			fill += k;
			p += k;
			left -= k;
			if (fill < sizeof(piece))
				continue;
			r = tls_write_piece(c, piece, fill);
			if (r < 0)
				return r;
			fill = 0;
		}
	}
	return fill ? tls_write_piece(c, piece, fill) : 0;
}

int nbds_writev(struct nbds_conn *c, const struct iovec *iov_in, int n, bool more)
{
	struct iovec iov[NBDS_MAX_IOV];
	struct msghdr m = { .msg_iov = iov };
	int flags = MSG_NOSIGNAL;

	assert(n > 0 && n <= NBDS_MAX_IOV);
	if (c->tls)
		return tls_writev(c, iov_in, n);
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
	/* A client's writes wait for this thread each time it wakes. */
	thread_latency();
	c->state = CONN_GREET;
	if (!c->refusal && !unauth_acquire(c) && !c->refusal)
		c->state = CONN_CLOSE;
	if (c->refusal)
		nbds_set_deadline(c, NBDS_REFUSE_TIMEOUT_MS, "refusal");
	else
		nbds_set_deadline(c, NBDS_HANDSHAKE_TIMEOUT_MS, "handshake");
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
	if (c->tls)
		tls_bye(c->tls);
	/* Slots first, so a client that sees the close may connect again. */
	conn_release(c);
	shutdown(c->fd, SHUT_RDWR);
	tls_session_free(c->tls);
	c->tls = NULL;
	free(c->buf);
	c->buf = NULL;
	c->buf_cap = 0;
}

static void conn_free(void *arg)
{
	struct nbds_conn *c = arg;

	conn_release(c); /* when its thread never started */
	close(c->fd);
	free(c->refusal);
	free(c);
}

/* nbds_free(): end a blocked recv/send/poll, or the wait for a slot. */
static void conn_kick(void *arg)
{
	struct nbds_conn *c = arg;
	struct nbds *s = c->srv;

	pthread_mutex_lock(&s->lock);
	c->kicked = true;
	pthread_cond_broadcast(&s->unauth_cond);
	pthread_mutex_unlock(&s->lock);
	shutdown(c->fd, SHUT_RDWR);
}

/* The peer's address, numeric ("::ffff:a.b.c.d" as "a.b.c.d"), alone (the
 * peer table's key) and with its port (for messages). */
static void peer_name(int fd, char *addr, size_t acap, char *peer, size_t pcap)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "unknown";
	unsigned port = 0;
	bool v6 = false;

	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;

			if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
				inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], host, sizeof(host));
			} else {
				inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
				v6 = true;
			}
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(addr, acap, "%s", host);
	snprintf(peer, pcap, v6 ? "[%s]:%u" : "%s:%u", host, port);
}

/*
 * Take ownership of an accepted socket; NULL refuses it.  A connection
 * over a limit is still taken, to be told why, while few such are open.
 */
static void *conn_open(void *user, int fd)
{
	struct nbds *s = user;
	struct nbds_conn *c;
	char why[256];
	bool admitted, told = false;
	int one = 1;

	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->srv = s;
	c->fd = fd;
	peer_name(fd, c->addr, sizeof(c->addr), c->peer, sizeof(c->peer));
	pthread_mutex_lock(&s->lock);
	admitted = peer_admit_locked(s, c, why, sizeof(why));
	if (!admitted && s->nrefusing < NBDS_MAX_REFUSING && (c->refusal = strdup(why))) {
		s->nrefusing++;
		told = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (!admitted) {
		nbds_log(s, "nbd server: refused a connection from %s: %s%s", c->peer, why,
			 told ? "" : " (closed at once)");
		if (!told) {
			free(c);
			return NULL;
		}
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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
	free(s->peers);
	pthread_cond_destroy(&s->unauth_cond);
	pthread_mutex_destroy(&s->log_lock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
