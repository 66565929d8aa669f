/* SPDX-License-Identifier: MIT */
/*
 * Transport-independent half of the transport: address parsing, listen /
 * accept / connect, the buffered writer with its rate limiter, the buffered
 * reader, sticky errors and cancel/timeout handling.  See transport.h.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "ratelimit.h"
#include "xport-impl.h"

/* ---- addresses ----------------------------------------------------------- */

static int split_hostport(const char *hp, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon;
	size_t hlen;

	if (!hp || !*hp)
		return err_set(EINVAL, "empty address (expected HOST:PORT)");
	if (hp[0] == '[') {
		const char *end = strchr(hp, ']');

		if (!end || end[1] != ':')
			return err_set(EINVAL, "invalid address '%s' (expected [V6ADDR]:PORT)", hp);
		hlen = (size_t)(end - hp - 1);
		if (hlen >= hcap)
			return err_set(EINVAL, "invalid address '%s': host too long", hp);
		memcpy(host, hp + 1, hlen);
		host[hlen] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(hp, ':');
		if (!colon)
			return err_set(EINVAL, "invalid address '%s' (expected HOST:PORT)", hp);
		hlen = (size_t)(colon - hp);
		if (hlen >= hcap)
			return err_set(EINVAL, "invalid address '%s': host too long", hp);
		memcpy(host, hp, hlen);
		host[hlen] = '\0';
	}
	colon++;
	if (!*colon || strlen(colon) >= pcap || strspn(colon, "0123456789") != strlen(colon) ||
	    atol(colon) > 65535)
		return err_set(EINVAL, "invalid port in address '%s'", hp);
	strcpy(port, colon);
	return 0;
}

int xport_addr_split(const char *hostport, char *host, size_t host_cap, uint16_t *port)
{
	char p[8];
	int r = split_hostport(hostport, host, host_cap, p, sizeof(p));

	if (r < 0)
		return r;
	*port = (uint16_t)atol(p);
	return 0;
}

static int resolve(const char *hp, bool passive, struct addrinfo **res)
{
	char host[256], port[8];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC };
	int r = split_hostport(hp, host, sizeof(host), port, sizeof(port));

	if (r < 0)
		return r;
	if (passive)
		hints.ai_flags = AI_PASSIVE;
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
	if (r != 0)
		return err_set(EHOSTUNREACH, "cannot resolve '%s': %s", hp, gai_strerror(r));
	return 0;
}

static void sockaddr_str(const struct sockaddr *sa, char *buf, size_t cap)
{
	char h[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, h, sizeof(h));
		port = ntohs(in->sin_port);
		snprintf(buf, cap, "%s:%u", h, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
		port = ntohs(in6->sin6_port);
		snprintf(buf, cap, "[%s]:%u", h, port);
	} else {
		snprintf(buf, cap, "?");
	}
}

int xport_addr_is_loopback(const char *hostport)
{
	struct addrinfo *res, *ai;
	char host[256], port[8];
	int r = split_hostport(hostport, host, sizeof(host), port, sizeof(port)), loop = 1;

	if (r < 0)
		return r;
	if (!host[0])
		return 0;
	r = resolve(hostport, true, &res);
	if (r < 0)
		return r;
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET)
			loop &= (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >>
				 24) == 127;
		else if (ai->ai_family == AF_INET6)
			loop &=
			    IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);
		else
			loop = 0;
	}
	freeaddrinfo(res);
	return loop;
}

int xport_listen(const char *hostport, int *lfd, char *bound, size_t bound_cap)
{
	struct addrinfo *res, *ai;
	int fd = -1, r, e = 0, one = 1;

	r = resolve(hostport, true, &res);
	if (r < 0)
		return r;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 8) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return err_set(e, "listen on %s: %s", hostport, strerror(e));
	if (bound) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		getsockname(fd, (struct sockaddr *)&ss, &sl);
		sockaddr_str((struct sockaddr *)&ss, bound, bound_cap);
	}
	*lfd = fd;
	return 0;
}

int xport_accept(int lfd, int timeout_ms, struct cancel *cancel, struct xport **out)
{
	uint64_t deadline = timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000u;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char peer[80];
	int fd, r;

	r = cancel_poll(cancel, lfd, POLLIN, deadline);
	if (r == -ECANCELED)
		return err_set(ECANCELED, "cancelled while waiting for a connection");
	if (r == 0)
		return err_set(ETIMEDOUT, "no connection within %d ms", timeout_ms);
	if (r < 0)
		return err_set(-r, "poll: %s", strerror(-r));
	fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (fd < 0)
		return err_set(errno, "accept: %s", strerror(errno));
	sockaddr_str((struct sockaddr *)&ss, peer, sizeof(peer));
	r = tcp_xport_new(fd, peer, out);
	if (r < 0)
		close(fd);
	return r;
}

/*
 * Whether a connected socket is connected to itself (and if so, set to be
 * aborted when closed).  TCP lets a connect to a local port nobody listens
 * on pick that same port as its own and open simultaneously with itself:
 * the connect "succeeds", the listener that comes up later cannot bind,
 * and the peer we wait for is our own echo.  Retrying refusals against a
 * local port makes it a matter of time.
 */
static bool connected_to_self(int fd)
{
	struct sockaddr_storage me, peer;
	socklen_t ml = sizeof(me), pl = sizeof(peer);

	memset(&me, 0, sizeof(me));
	memset(&peer, 0, sizeof(peer));
	if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0 ||
	    getpeername(fd, (struct sockaddr *)&peer, &pl) < 0)
		return false;
	if (ml != pl || memcmp(&me, &peer, ml) != 0)
		return false;
	/* Closed normally, the connection would hold the port in its closing
	 * states for a minute, and the listener we are waiting for could not
	 * bind it: abort it instead. */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){ .l_onoff = 1, .l_linger = 0 },
		   sizeof(struct linger));
	return true;
}

/* A non-blocking connect, waited for: 0 or a positive errno.  A socket
 * that connected to itself counts as refused, which it is. */
static int connect_wait(int fd, const struct addrinfo *ai, uint64_t deadline, struct cancel *cancel)
{
	socklen_t sl = sizeof(int);
	int e = 0, r;

	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS)
			return errno;
		/* Polls at least once, so a refusal already answered is
		 * reported as such even with no time left. */
		r = cancel_poll(cancel, fd, POLLOUT, deadline);
		if (r == 0)
			return ETIMEDOUT;
		if (r < 0)
			return -r;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
			return errno;
		if (e)
			return e;
	}
	return connected_to_self(fd) ? ECONNREFUSED : 0;
}

int xport_connect(const char *hostport, int timeout_ms, struct cancel *cancel, struct xport **out)
{
	uint64_t now, deadline = now_ns() + (uint64_t)MAX(timeout_ms, 0) * 1000000u;
	struct addrinfo *res, *ai;
	int fd = -1, r, e = 0;

	r = resolve(hostport, false, &res);
	if (r < 0)
		return r;
	for (;;) {
		for (ai = res; ai; ai = ai->ai_next) {
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
				    ai->ai_protocol);
			if (fd < 0) {
				e = errno;
				continue;
			}
			e = connect_wait(fd, ai, deadline, cancel);
			if (e == 0)
				goto connected;
			close(fd);
			fd = -1;
			if (e == ECANCELED || e == ETIMEDOUT)
				break;
		}
		if (e != ECONNREFUSED || cancel_is_set(cancel))
			break;
		/* Refused: the listener may not be up yet.  Retry while time
		 * is left; the refusal is what gets reported. */
		now = now_ns();
		if (now >= deadline)
			break;
		if (cancel_sleep(cancel, (int64_t)MIN(50 * 1000000ull, deadline - now)) ||
		    now_ns() >= deadline)
			break;
	}
	freeaddrinfo(res);
	if (cancel_is_set(cancel))
		return err_set(ECANCELED, "cancelled while connecting to %s", hostport);
	return err_set(e, "connect to %s: %s", hostport, strerror(e));

connected:
	freeaddrinfo(res);
	tcp_size_sndbuf(fd);
	r = tcp_xport_new(fd, hostport, out);
	if (r < 0)
		close(fd);
	return r;
}

int xport_dial(const char *hostport, int timeout_ms, struct cancel *cancel, struct tls_creds *c,
	       struct xport **out)
{
	char host[256], port[8];
	int r = split_hostport(hostport, host, sizeof(host), port, sizeof(port));

	if (r == 0)
		r = xport_connect(hostport, timeout_ms, cancel, out);
	if (r < 0)
		return r;
	/* Remembered for more lanes (xport_lanes_connect). */
	(*out)->dial_to = strdup(hostport);
	(*out)->dial_tls = c;
	if (!(*out)->dial_to) {
		xport_close(*out);
		*out = NULL;
		return err_set(ENOMEM, "no memory");
	}
	if (!c)
		return 0;
	xport_set_cancel(*out, cancel);
	r = xport_start_tls(*out, c, host, timeout_ms);
	if (r < 0) {
		xport_close(*out);
		*out = NULL;
	}
	return r;
}

/* ---- base object --------------------------------------------------------- */

int xport_base_init(struct xport *x, const struct xport_ops *ops, int fd, const char *peer)
{
	x->ops = ops;
	x->fd = fd;
	snprintf(x->peer, sizeof(x->peer), "%s", peer);
	x->timeout_ms = XPORT_DEFAULT_TIMEOUT_MS;
	x->wbuf = malloc(XPORT_WBUF_SIZE);
	x->rbuf = malloc(XPORT_RBUF_SIZE);
	if (!x->wbuf || !x->rbuf) {
		free(x->wbuf);
		free(x->rbuf);
		return -ENOMEM;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	pthread_mutex_init(&x->rate_lock, NULL);
	atomic_init(&x->urgent_pct, RATE_URGENT_PCT_DEFAULT);
	return 0;
}

void xport_base_destroy(struct xport *x)
{
	free(x->wbuf);
	free(x->rbuf);
	pthread_mutex_destroy(&x->rate_lock);
}

void xport_close(struct xport *x)
{
	if (!x)
		return;
	xport_stripe_free(x);
	free(x->dial_to);
	x->ops->close(x);
}

/* Lanes follow lane 0's settings. */
void xport_set_cancel(struct xport *x, struct cancel *cancel)
{
	struct xport_stripe *s = atomic_load(&x->stripe);

	x->cancel = cancel;
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 1; i < s->n; i++)
		if (s->lane[i])
			s->lane[i]->cancel = cancel;
	if (s->wlane)
		s->wlane->cancel = cancel;
	pthread_mutex_unlock(&s->lock);
}

void xport_set_timeout(struct xport *x, int idle_timeout_ms)
{
	struct xport_stripe *s = atomic_load(&x->stripe);

	x->timeout_ms = idle_timeout_ms;
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 1; i < s->n; i++)
		if (s->lane[i])
			s->lane[i]->timeout_ms = idle_timeout_ms;
	if (s->wlane)
		s->wlane->timeout_ms = idle_timeout_ms;
	pthread_mutex_unlock(&s->lock);
}

int xport_get_timeout(const struct xport *x)
{
	return x->timeout_ms;
}

void xport_set_rate(struct xport *x, uint64_t bytes_per_sec)
{
	atomic_store(&x->rate, bytes_per_sec);
}

uint64_t xport_get_rate(const struct xport *x)
{
	return atomic_load(&((struct xport *)x)->rate);
}

uint64_t xport_send_delay(struct xport *x)
{
	uint64_t now = now_ns(), ok;

	if (!atomic_load(&x->rate))
		return 0;
	pthread_mutex_lock(&x->rate_lock);
	ok = x->bucket.next_ok_ns;
	pthread_mutex_unlock(&x->rate_lock);
	return ok > now ? ok - now : 0;
}

void xport_set_urgent(struct xport *x, bool on)
{
	x->urgent = on;
}

void xport_set_urgent_share(struct xport *x, unsigned pct)
{
	atomic_store(&x->urgent_pct, pct);
}

bool xport_dialled(const struct xport *x)
{
	return x->dial_to != NULL;
}

size_t xport_buffered(const struct xport *x)
{
	return x->wlen;
}

/* The write lane's bytes count with x's: they share the link. */
uint64_t xport_tx_bytes(const struct xport *x)
{
	struct xport *w = xport_write_lane(x);

	return atomic_load(&((struct xport *)x)->tx) + (w ? atomic_load(&w->tx) : 0);
}

uint64_t xport_rx_bytes(const struct xport *x)
{
	struct xport *w = xport_write_lane(x);

	return atomic_load(&((struct xport *)x)->rx) + (w ? atomic_load(&w->rx) : 0);
}

const char *xport_peer(const struct xport *x)
{
	return x->peer;
}

int xport_fd(const struct xport *x)
{
	return x->fd;
}

/* Failure is sticky per direction: a peer that closed after sending its
 * reason can still be read after our sends start failing. */
static int fail(struct xport *x, short dir, int r)
{
	int *slot = dir == POLLOUT ? &x->werr : &x->rerr;

	if (!*slot)
		*slot = r;
	return r;
}

int xport_fail(struct xport *x, short dir, int r)
{
	return fail(x, dir, r);
}

/*
 * Wait until one of the n descriptors in p is ready for its events (their
 * revents say which), the cancel token fires, or x's idle timeout (counted
 * from *idle_since) runs out: 0 when ready, else x fails in the direction
 * of p[0]'s events.
 */
int xport_wait_idle(struct xport *x, struct pollfd *p, unsigned n, uint64_t *idle_since)
{
	uint64_t deadline =
	    x->timeout_ms > 0 ? *idle_since + (uint64_t)x->timeout_ms * 1000000u : 0;
	short events = p[0].events;
	int r = cancel_poll_fds(x->cancel, p, n, deadline);

	if (r == -ECANCELED)
		return fail(x, events, err_set(ECANCELED, "cancelled"));
	if (r == 0)
		return fail(x, events,
			    err_set(ETIMEDOUT, "connection to %s idle for %.1f s", x->peer,
				    x->timeout_ms / 1000.0));
	if (r < 0)
		return fail(x, events, err_set(-r, "poll: %s", strerror(-r)));
	return 0;
}

static int wait_ready(struct xport *x, short events, uint64_t *idle_since)
{
	struct pollfd p = { .fd = x->fd, .events = events };

	return xport_wait_idle(x, &p, 1, idle_since);
}

/*
 * Hold the sender back to the configured rate before sending n bytes
 * (ratelimit.h: urgent sends wait only for their own share of the rate).
 */
static int rate_limit(struct xport *x, uint64_t rate, size_t n, bool urgent)
{
	uint64_t now = now_ns(), until;

	if (!rate)
		return 0;
	/* Charged before the wait: a sender on another thread (a write
	 * lane's) queues behind this one's charge. */
	pthread_mutex_lock(&x->rate_lock);
	until = rate_charge(&x->bucket, now, rate, n, urgent, atomic_load(&x->urgent_pct));
	pthread_mutex_unlock(&x->rate_lock);
	if (until > now && cancel_sleep(x->cancel, (int64_t)(until - now)))
		return err_set(ECANCELED, "cancelled");
	return 0;
}

/* Bytes charged by rate_limit() that the kernel did not take. */
static void rate_refund(struct xport *x, uint64_t rate, size_t n, bool urgent)
{
	pthread_mutex_lock(&x->rate_lock);
	rate_refund_charge(&x->bucket, rate, n, urgent, atomic_load(&x->urgent_pct));
	pthread_mutex_unlock(&x->rate_lock);
}

/*
 * Send everything in iov on x, paced by rl's rate limiter (rl is x, or the
 * striped stream x is a lane of), counting the bytes in *ctr.  With a rate
 * limit, each send is clipped to what the limiter allows in one slice (so
 * one large payload is paced too, not pushed at line rate after being
 * charged), and charged for what the kernel actually took.
 */
int xport_send_raw(struct xport *x, struct xport *rl, _Atomic uint64_t *ctr, struct iovec *iov,
		   int iovcnt)
{
	uint64_t idle_since = now_ns();
	bool urgent = x->rate_of ? true : rl->urgent;

	assert(iovcnt <= 8);
	while (iovcnt > 0) {
		uint64_t rate = atomic_load(&rl->rate);
		struct iovec clip[8];
		size_t total = 0, budget, left;
		ssize_t n;
		int r, nclip = 0;

		for (int i = 0; i < iovcnt; i++)
			total += iov[i].iov_len;
		budget = rate ? (size_t)MIN(total, MAX(rate * RATE_BURST_NS / 1000000000u,
						       (uint64_t)64 * 1024))
			      : total;
		for (left = budget; left > 0 && nclip < iovcnt; nclip++) {
			clip[nclip] = iov[nclip];
			clip[nclip].iov_len = MIN(clip[nclip].iov_len, left);
			left -= clip[nclip].iov_len;
		}
		r = rate_limit(rl, rate, budget, urgent);
		if (r < 0)
			return fail(x, POLLOUT, r); /* x's own state: rl's is its thread's */
		n = x->ops->sendv(x, clip, nclip);
		if (n == -EAGAIN || n == -EINTR)
			n = 0;
		if (n < 0)
			return fail(x, POLLOUT, err_prefix((int)-n, "send to %s: ", x->peer));
		/* Unsent bytes were charged to the limiter; refund them at
		 * the rate they were charged at. */
		if (rate && (size_t)n < budget)
			rate_refund(rl, rate, budget - (size_t)n, urgent);
		if (n == 0) {
			r = wait_ready(x, POLLOUT, &idle_since);
			if (r < 0)
				return r;
			continue;
		}
		atomic_fetch_add(ctr, (uint64_t)n);
		idle_since = now_ns();
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

/*
 * Striped: cut the bytes of iov into frames, each sent whole on the lane
 * that can take it soonest (xport_stripe_pick()).  The stream's counter
 * counts the payload; each lane's, what it carried.
 */
static int stripe_send(struct xport *x, struct xport_stripe *s, struct iovec *iov, int iovcnt)
{
	while (iovcnt > 0) {
		uint8_t hdr[XPORT_FRAME_HDR];
		struct iovec f[8];
		unsigned li;
		size_t len = 0;
		int nf = 1, r;

		while (iovcnt > 0 && nf < 8 && len < XPORT_FRAME_MAX) {
			size_t k = MIN(iov->iov_len, (size_t)XPORT_FRAME_MAX - len);

			if (k) {
				f[nf++] = (struct iovec){ .iov_base = iov->iov_base, .iov_len = k };
				len += k;
			}
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= k;
			if (!iov->iov_len) {
				iov++;
				iovcnt--;
			}
		}
		if (!len)
			break;
		r = xport_stripe_pick(x, s, &li);
		if (r < 0)
			return r;
		xport_frame_encode(hdr, s->tseq, (uint32_t)len);
		f[0] = (struct iovec){ .iov_base = hdr, .iov_len = sizeof(hdr) };
		r = xport_send_raw(s->lane[li], x, &s->bytes[li], f, nf);
		if (r < 0)
			return fail(x, POLLOUT, r);
		s->tseq++;
		atomic_fetch_add(&x->tx, (uint64_t)len);
	}
	return 0;
}

static int send_all(struct xport *x, struct iovec *iov, int iovcnt)
{
	struct xport_stripe *s = atomic_load(&x->stripe);

	if (s && s->tx)
		return stripe_send(x, s, iov, iovcnt);
	return xport_send_raw(x, x->rate_of ? x->rate_of : x, &x->tx, iov, iovcnt);
}

int xport_flush(struct xport *x)
{
	struct iovec iov;
	int r;

	if (x->werr)
		return x->werr;
	if (!x->wlen)
		return 0;
	iov.iov_base = x->wbuf;
	iov.iov_len = x->wlen;
	r = send_all(x, &iov, 1);
	x->wlen = 0;
	return r;
}

int xport_write(struct xport *x, const void *buf, size_t len)
{
	if (x->werr)
		return x->werr;
	if (x->wlen + len > XPORT_WBUF_SIZE) {
		int r = xport_flush(x);

		if (r < 0)
			return r;
	}
	if (len > XPORT_WBUF_SIZE) {
		struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

		return send_all(x, &iov, 1);
	}
	memcpy(x->wbuf + x->wlen, buf, len);
	x->wlen += len;
	return 0;
}

int xport_write2(struct xport *x, const void *hdr, size_t hlen, const void *payload, size_t plen)
{
	struct iovec iov[3];
	int n = 0;

	if (x->werr)
		return x->werr;
	/* The header rides along with whatever is buffered in one sendmsg. */
	if (x->wlen + hlen <= XPORT_WBUF_SIZE) {
		memcpy(x->wbuf + x->wlen, hdr, hlen);
		x->wlen += hlen;
	} else {
		iov[n++] = (struct iovec){ .iov_base = x->wbuf, .iov_len = x->wlen };
		x->wlen = 0;
		iov[n++] = (struct iovec){ .iov_base = (void *)hdr, .iov_len = hlen };
	}
	if (n == 0) {
		iov[n++] = (struct iovec){ .iov_base = x->wbuf, .iov_len = x->wlen };
		x->wlen = 0;
	}
	iov[n++] = (struct iovec){ .iov_base = (void *)payload, .iov_len = plen };
	return send_all(x, iov, n);
}

int xport_shutdown_write(struct xport *x)
{
	struct xport_stripe *s = atomic_load(&x->stripe);
	int r = xport_flush(x);

	if (r < 0)
		return r;
	shutdown(x->fd, SHUT_WR);
	for (unsigned i = 1; s && s->tx && i < s->n; i++)
		shutdown(s->lane[i]->fd, SHUT_WR);
	return 0;
}

void xport_shutdown_read(struct xport *x)
{
	struct xport_stripe *s = atomic_load(&x->stripe);

	shutdown(x->fd, SHUT_RD);
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 1; i < s->n; i++)
		if (s->lane[i])
			shutdown(s->lane[i]->fd, SHUT_RD);
	pthread_mutex_unlock(&s->lock);
}

/* ---- reading ------------------------------------------------------------- */

/*
 * Read exactly len bytes from x's connection itself (not its buffer),
 * counting them in *ctr.  *got: how many came, even on failure; the end
 * of the stream before len is -ECONNRESET (the caller tells one at a
 * boundary, *got == 0, from a cut).
 */
int xport_read_raw(struct xport *x, void *buf, size_t len, _Atomic uint64_t *ctr, size_t *got)
{
	uint64_t idle_since = now_ns();
	uint8_t *p = buf;
	int r;

	*got = 0;
	if (x->rerr)
		return x->rerr;
	while (*got < len) {
		ssize_t n = x->ops->recv(x, p + *got, len - *got);

		if (n > 0) {
			atomic_fetch_add(ctr, (uint64_t)n);
			*got += (size_t)n;
			idle_since = now_ns();
			continue;
		}
		if (n == 0)
			return fail(x, POLLIN,
				    err_set(ECONNRESET,
					    "connection closed by %s with %zu of %zu bytes missing",
					    x->peer, len - *got, len));
		if (n != -EAGAIN && n != -EINTR)
			return fail(x, POLLIN, err_prefix((int)-n, "receive from %s: ", x->peer));
		r = wait_ready(x, POLLIN, &idle_since);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * Striped: up to max bytes of the stream into buf (*n of them), from the
 * current frame, whose lane is found first when the last one is used up.
 * The end of the stream counts only once every lane has ended at a frame
 * boundary (*eof).
 */
static int stripe_read(struct xport *x, struct xport_stripe *s, uint8_t *buf, size_t max, size_t *n,
		       bool *eof)
{
	size_t got, k;
	int r = 0;

	*n = 0;
	if (!s->rleft) {
		r = xport_stripe_next(x, s, eof);
		if (r < 0 || *eof)
			return r;
	}
	k = MIN(max, (size_t)s->rleft);
	r = xport_read_raw(s->lane[s->rlane], buf, k, &s->bytes[s->rlane], &got);
	if (r < 0)
		return fail(x, POLLIN, err_prefix(-r, "connection %u of %u: ", s->rlane + 1, s->n));
	s->rleft -= (uint32_t)k;
	*n = k;
	atomic_fetch_add(&x->rx, (uint64_t)k);
	return 0;
}

static int stripe_fill(struct xport *x, struct xport_stripe *s, bool *eof)
{
	size_t n;
	int r = stripe_read(x, s, x->rbuf, XPORT_RBUF_SIZE, &n, eof);

	x->rpos = 0;
	x->rlen = n;
	return r;
}

/* The implementation's recv, once more after the end only as the end: a
 * TLS session that saw its peer close without close_notify fails the next
 * call, where a reader that looked ahead (xport_peek_now()) must still
 * see the end. */
static ssize_t recv_some(struct xport *x, void *buf, size_t len)
{
	ssize_t n;

	if (x->reof)
		return 0;
	n = x->ops->recv(x, buf, len);
	if (n == 0)
		x->reof = true;
	return n;
}

/* Refill the read buffer with what is available; 0 at EOF sets *eof. */
static int fill(struct xport *x, bool *eof)
{
	uint64_t idle_since = now_ns();
	struct xport_stripe *s = atomic_load(&x->stripe);

	if (s && s->rx)
		return stripe_fill(x, s, eof);
	for (;;) {
		ssize_t n = recv_some(x, x->rbuf, XPORT_RBUF_SIZE);

		if (n > 0) {
			x->rpos = 0;
			x->rlen = (size_t)n;
			atomic_fetch_add(&x->rx, (uint64_t)n);
			return 0;
		}
		if (n == 0) {
			*eof = true;
			return 0;
		}
		if (n != -EAGAIN && n != -EINTR)
			return fail(x, POLLIN, err_prefix((int)-n, "receive from %s: ", x->peer));
		n = wait_ready(x, POLLIN, &idle_since);
		if (n < 0)
			return (int)n;
	}
}

int xport_read(struct xport *x, void *buf, size_t len, size_t *got)
{
	uint8_t *p = buf;
	size_t done = 0;
	uint64_t idle_since = now_ns();
	struct xport_stripe *s;
	int r;

	if (got)
		*got = 0;
	if (x->rerr)
		return x->rerr;
	while (done < len) {
		size_t avail = x->rlen - x->rpos;
		bool eof = false;

		if (avail) {
			size_t k = MIN(avail, len - done);

			memcpy(p + done, x->rbuf + x->rpos, k);
			x->rpos += k;
			done += k;
			continue;
		}
		/* Large reads bypass the buffer; striped, they take the
		 * frames' payload straight from their lanes. */
		s = atomic_load(&x->stripe);
		if (s && s->rx && len - done >= XPORT_STRIPE_DIRECT) {
			size_t n;

			r = stripe_read(x, s, p + done, len - done, &n, &eof);
			if (r < 0)
				goto out_fail;
			done += n;
			if (!eof)
				continue;
		} else if (len - done >= XPORT_RBUF_SIZE && (!s || !s->rx)) {
			ssize_t n = recv_some(x, p + done, len - done);

			if (n > 0) {
				atomic_fetch_add(&x->rx, (uint64_t)n);
				done += (size_t)n;
				idle_since = now_ns();
				continue;
			}
			if (n == 0) {
				eof = true;
			} else if (n == -EAGAIN || n == -EINTR) {
				r = wait_ready(x, POLLIN, &idle_since);
				if (r < 0)
					goto out_fail;
				continue;
			} else {
				r = fail(x, POLLIN,
					 err_prefix((int)-n, "receive from %s: ", x->peer));
				goto out_fail;
			}
		} else {
			r = fill(x, &eof);
			if (r < 0)
				goto out_fail;
		}
		if (eof) {
			r = fail(x, POLLIN,
				 err_set(ECONNRESET,
					 "connection closed by %s with %zu of %zu bytes missing",
					 x->peer, len - done, len));
			goto out_fail;
		}
	}
	if (got)
		*got = done;
	return 0;

out_fail:
	if (got)
		*got = done;
	return r;
}

int xport_readable(struct xport *x, int timeout_ms)
{
	struct pollfd p = { .fd = x->fd, .events = POLLIN };
	struct xport_stripe *s;
	int r;

	if (x->rerr)
		return x->rerr;
	if (x->rpos < x->rlen || x->reof)
		return 1;
	s = atomic_load(&x->stripe);
	if (s && s->rx)
		return xport_stripe_readable(x, s, timeout_ms);
	if (x->ops->pending && x->ops->pending(x))
		return 1;
	r = poll(&p, 1, timeout_ms);
	if (r < 0)
		return errno == EINTR
			   ? 0
			   : fail(x, POLLIN, err_set(errno, "poll: %s", strerror(errno)));
	return r > 0;
}

/* Move bytes into the read buffer until len are there (at most its size),
 * waiting for them (idle timeout) or, with !wait, only taking what has
 * come: how many are there, or negative errno.  *eof: the stream ended. */
static int peek_fill(struct xport *x, size_t len, bool wait, bool *eof)
{
	uint64_t idle_since = now_ns();

	assert(len <= XPORT_RBUF_SIZE);
	*eof = false;
	if (x->rerr)
		return x->rerr;
	while (x->rlen - x->rpos < len) {
		ssize_t n;
		int r;

		if (x->rpos) {
			memmove(x->rbuf, x->rbuf + x->rpos, x->rlen - x->rpos);
			x->rlen -= x->rpos;
			x->rpos = 0;
		}
		n = recv_some(x, x->rbuf + x->rlen, XPORT_RBUF_SIZE - x->rlen);
		if (n > 0) {
			atomic_fetch_add(&x->rx, (uint64_t)n);
			x->rlen += (size_t)n;
			idle_since = now_ns();
			continue;
		}
		if (n == 0) {
			*eof = true;
			break;
		}
		if (n != -EAGAIN && n != -EINTR)
			return fail(x, POLLIN, err_prefix((int)-n, "receive from %s: ", x->peer));
		if (!wait && n == -EAGAIN)
			break;
		if (!wait)
			continue;
		r = wait_ready(x, POLLIN, &idle_since);
		if (r < 0)
			return r;
	}
	return (int)MIN(len, x->rlen - x->rpos);
}

int xport_peek(struct xport *x, void *buf, size_t len)
{
	bool eof;
	int n;

	assert(len <= 64);
	n = peek_fill(x, len, true, &eof);
	if (n > 0)
		memcpy(buf, x->rbuf + x->rpos, (size_t)n);
	return n;
}

int xport_peek_now(struct xport *x, void *buf, size_t len, bool *eof)
{
	int n;

	if (atomic_load(&x->stripe))
		return err_set(EINVAL, "peek on a striped connection");
	n = peek_fill(x, len, false, eof);

	if (n > 0 && buf)
		memcpy(buf, x->rbuf + x->rpos, (size_t)n);
	return n;
}
