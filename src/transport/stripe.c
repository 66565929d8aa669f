/* SPDX-License-Identifier: MIT */
/*
 * Lanes: one byte stream over several connections (see transport.h).  The
 * framing itself lives in transport.c's writer and reader; this file
 * holds the codecs, the source's dialling of the lanes, and the
 * destination's side of the join.
 */
#include <assert.h>
#include <errno.h>
#include <linux/sockios.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "xport-impl.h"

/* ---- codecs --------------------------------------------------------------- */

void xport_frame_encode(uint8_t hdr[XPORT_FRAME_HDR], uint64_t seq, uint32_t len)
{
	put_be64(hdr, seq);
	put_be32(hdr + 8, len);
}

int xport_frame_decode(const uint8_t hdr[XPORT_FRAME_HDR], uint64_t *seq, uint32_t *len)
{
	uint64_t q = get_be64(hdr);
	uint32_t l = get_be32(hdr + 8);

	if (l == 0 || l > XPORT_FRAME_MAX)
		return err_set(EPROTO, "frame %" PRIu64 " of %" PRIu32 " bytes (must be 1..%u)", q,
			       l, XPORT_FRAME_MAX);
	*seq = q;
	*len = l;
	return 0;
}

void xport_join_encode(uint8_t buf[XPORT_JOIN_LEN], unsigned lane,
		       const uint8_t token[XPORT_TOKEN_LEN])
{
	put_be64(buf, XPORT_JOIN_MAGIC);
	put_be16(buf + 8, (uint16_t)lane);
	put_be16(buf + 10, 0);
	memcpy(buf + 12, token, XPORT_TOKEN_LEN);
}

int xport_join_decode(const uint8_t buf[XPORT_JOIN_LEN], unsigned *lane,
		      uint8_t token[XPORT_TOKEN_LEN])
{
	unsigned l = get_be16(buf + 8);

	if (get_be64(buf) != XPORT_JOIN_MAGIC)
		return err_set(EPROTO, "join: bad magic 0x%016" PRIx64, get_be64(buf));
	if (get_be16(buf + 10) != 0)
		return err_set(EPROTO, "join: reserved field 0x%04x is not zero",
			       get_be16(buf + 10));
	if (l >= XPORT_LANES_MAX)
		return err_set(ERANGE, "join: connection index %u out of range (0..%u)", l,
			       XPORT_LANES_MAX - 1);
	*lane = l;
	memcpy(token, buf + 12, XPORT_TOKEN_LEN);
	return 0;
}

/* Peer text for the log: printable ASCII only. */
static void printable(char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e)
			*s = '?';
}

static void lane_name(struct xport *lane, const char *peer, unsigned index, unsigned n)
{
	char buf[sizeof(lane->peer) + 40];

	if (index == XPORT_WLANE_INDEX)
		snprintf(buf, sizeof(buf), "%s (write lane)", peer);
	else
		snprintf(buf, sizeof(buf), "%s (connection %u of %u)", peer, index + 1, n);
	buf[sizeof(lane->peer) - 1] = '\0';
	memcpy(lane->peer, buf, sizeof(lane->peer));
}

static int stripe_new(struct xport *x, unsigned n, const uint8_t token[XPORT_TOKEN_LEN], bool wlane,
		      struct xport_stripe **out)
{
	struct xport_stripe *s;

	if (n < (wlane ? 1u : 2u) || n > XPORT_LANES_MAX)
		return err_set(EINVAL, "%u connections (must be %u..%u)", n, wlane ? 1 : 2,
			       XPORT_LANES_MAX);
	if (atomic_load(&x->stripe))
		return err_set(EINVAL, "this connection already has lanes");
	s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(ENOMEM, "no memory for %u connections", n);
	s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->evfd < 0) {
		int e = errno;

		free(s);
		return err_set(e, "eventfd: %s", strerror(e));
	}
	pthread_mutex_init(&s->lock, NULL);
	s->n = n;
	s->wlane_wanted = wlane;
	memcpy(s->token, token, XPORT_TOKEN_LEN);
	s->lane[0] = x;
	*out = s;
	return 0;
}

/* Free what stripe_new() made and the lanes in it (x does not point to it). */
static void stripe_destroy(struct xport_stripe *s)
{
	for (unsigned i = 1; i < s->n; i++)
		xport_close(s->lane[i]);
	xport_close(s->wlane);
	close(s->evfd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void xport_stripe_free(struct xport *x)
{
	struct xport_stripe *s = atomic_load(&x->stripe);

	if (!s)
		return;
	atomic_store(&x->stripe, NULL);
	stripe_destroy(s);
}

struct xport *xport_write_lane(const struct xport *x)
{
	struct xport_stripe *s = atomic_load(&((struct xport *)x)->stripe);
	struct xport *w;

	if (!s)
		return NULL;
	pthread_mutex_lock(&s->lock);
	w = s->wlane;
	pthread_mutex_unlock(&s->lock);
	return w;
}

unsigned xport_lanes(const struct xport *x)
{
	struct xport_stripe *s = atomic_load(&((struct xport *)x)->stripe);

	return s ? s->n : 1;
}

uint64_t xport_lane_bytes(const struct xport *x, unsigned index)
{
	struct xport_stripe *s = atomic_load(&((struct xport *)x)->stripe);

	if (!s)
		return index == 0 ? xport_tx_bytes(x) + xport_rx_bytes(x) : 0;
	return index < s->n ? atomic_load(&s->bytes[index]) : 0;
}

/* ---- the writer: which lane takes the next frame ------------------------------ */

/* Bytes queued on fd that TCP has not sent yet; 0 if it cannot say. */
static uint64_t unsent(int fd)
{
	int n = 0;

	if (ioctl(fd, SIOCOUTQNSD, &n) < 0 || n < 0)
		return 0;
	return (uint64_t)n;
}

/*
 * The lane for the next frame: of those with room in their send buffer,
 * the one with the fewest bytes TCP has not sent yet, which is the one
 * whose connection moves fastest now (a lane slowed by a loss queues, and
 * is passed over until it drains); among equals, the next in turn.  A lane
 * whose connection failed counts as ready: the send on it reports why.
 * Waits (the idle timeout, the cancel token) while every lane is full.
 */
int xport_stripe_pick(struct xport *x, struct xport_stripe *s, unsigned *lane)
{
	struct pollfd p[XPORT_LANES_MAX];
	uint64_t idle_since = now_ns();
	unsigned best = s->n;
	uint64_t least = UINT64_MAX;
	int r;

	for (unsigned i = 0; i < s->n; i++)
		p[i] = (struct pollfd){ .fd = s->lane[i]->fd, .events = POLLOUT };
	r = poll(p, s->n, 0);
	if (r < 0 && errno != EINTR)
		return xport_fail(x, POLLOUT, err_set(errno, "poll: %s", strerror(errno)));
	if (r <= 0) {
		r = xport_wait_idle(x, p, s->n, &idle_since);
		if (r < 0)
			return r;
	}
	for (unsigned k = 0; k < s->n; k++) {
		unsigned i = (s->tnext + k) % s->n;
		uint64_t q;

		if (!p[i].revents)
			continue;
		if (p[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			best = i;
			break;
		}
		q = unsent(p[i].fd);
		if (q < least) {
			least = q;
			best = i;
		}
	}
	assert(best < s->n);
	s->tnext = (best + 1) % s->n;
	*lane = best;
	return 0;
}

/* ---- the reader: which lane holds the next frame ------------------------------ */

static int lane_fail(struct xport *x, struct xport_stripe *s, unsigned i, int r)
{
	return xport_fail(x, POLLIN, err_prefix(-r, "connection %u of %u: ", i + 1, s->n));
}

/*
 * Read what has arrived of lane i's next header, without waiting: 1 if
 * bytes came (or it ended), 0 if none, or the stream's failure.
 */
static int read_head(struct xport *x, struct xport_stripe *s, unsigned i)
{
	struct xport_lane_head *h = &s->head[i];
	struct xport *l = s->lane[i];
	ssize_t k = l->ops->recv(l, h->hdr + h->got, XPORT_FRAME_HDR - h->got);
	int r;

	if (k == -EAGAIN || k == -EINTR)
		return 0;
	if (k < 0)
		return lane_fail(x, s, i, err_prefix((int)-k, "receive from %s: ", l->peer));
	if (k == 0) {
		if (h->got)
			return lane_fail(x, s, i,
					 err_set(ECONNRESET,
						 "connection closed by %s inside a frame header",
						 l->peer));
		h->ended = true;
		return 1;
	}
	atomic_fetch_add(&s->bytes[i], (uint64_t)k);
	h->got += (uint8_t)k;
	if (h->got < XPORT_FRAME_HDR)
		return 1;
	r = xport_frame_decode(h->hdr, &h->seq, &h->len);
	if (r < 0)
		return lane_fail(x, s, i, r);
	return 1;
}

/*
 * If lane i's head is the next frame, make it the frame being read (1);
 * 0 if not.  A head already passed (a number sent twice, or going back)
 * fails the stream.
 */
static int take_if_next(struct xport *x, struct xport_stripe *s, unsigned i)
{
	struct xport_lane_head *h = &s->head[i];

	if (h->got < XPORT_FRAME_HDR)
		return 0;
	if (h->seq < s->rseq)
		return lane_fail(x, s, i,
				 err_set(EPROTO,
					 "frame %" PRIu64 " where frame %" PRIu64
					 " or later was expected",
					 h->seq, s->rseq));
	if (h->seq != s->rseq)
		return 0;
	s->rlane = i;
	s->rleft = h->len;
	s->rseq++;
	h->got = 0;
	return 1;
}

/*
 * One look at every lane, without waiting: heads already read first (no
 * system call), then whatever has arrived of the others.  1 once the next
 * frame is taken, 0 if not, or the stream's failure.  Otherwise *moved says
 * whether any bytes came, *later is the lane holding the lowest later frame
 * (s->n: none), and p holds the *open lanes still worth polling.
 */
static int sweep(struct xport *x, struct xport_stripe *s, struct pollfd *p, unsigned *open,
		 unsigned *later, bool *moved)
{
	int r;

	*open = 0;
	*later = s->n;
	*moved = false;
	for (unsigned i = 0; i < s->n; i++) {
		r = take_if_next(x, s, i);
		if (r)
			return r;
	}
	for (unsigned i = 0; i < s->n; i++) {
		struct xport_lane_head *h = &s->head[i];

		if (!h->ended && h->got < XPORT_FRAME_HDR) {
			r = read_head(x, s, i);
			if (r < 0)
				return r;
			*moved = *moved || r;
			r = take_if_next(x, s, i);
			if (r)
				return r;
		}
		if (h->got == XPORT_FRAME_HDR) {
			if (*later == s->n || h->seq < s->head[*later].seq)
				*later = i;
		} else if (!h->ended) {
			p[(*open)++] = (struct pollfd){ .fd = s->lane[i]->fd, .events = POLLIN };
		}
	}
	return 0;
}

/*
 * Find the lane whose head is frame rseq (each lane carries its frames in
 * increasing order, so the next frame is at the head of one of them) and
 * make it the frame being read.  Nothing is buffered beyond a header per
 * lane: frames behind a lane's head wait in its socket.  *eof once every
 * lane has ended at a frame boundary; a frame that no lane can still bring
 * (every lane ended or holding a later one) fails the stream.
 */
int xport_stripe_next(struct xport *x, struct xport_stripe *s, bool *eof)
{
	uint64_t idle_since = now_ns();

	for (;;) {
		struct pollfd p[XPORT_LANES_MAX];
		unsigned open, later;
		bool moved;
		int r = sweep(x, s, p, &open, &later, &moved);

		if (r)
			return r < 0 ? r : 0;
		if (moved) {
			idle_since = now_ns();
			continue;
		}
		if (!open && later == s->n) {
			*eof = true;
			return 0;
		}
		if (!open)
			return lane_fail(x, s, later,
					 err_set(EPROTO,
						 "frame %" PRIu64 " where frame %" PRIu64
						 " was expected, and no connection can still "
						 "bring it",
						 s->head[later].seq, s->rseq));
		r = xport_wait_idle(x, p, open, &idle_since);
		if (r < 0)
			return r;
	}
}

/*
 * Without waiting: 1 if the next frame can be read (the frame being read
 * has bytes, or the next one's header has arrived and is taken), also at
 * the end or on a failure (the next read says which); 0 if not, with the
 * lanes worth polling in p (*n).
 */
static int next_ready(struct xport *x, struct xport_stripe *s, struct pollfd *p, unsigned *n)
{
	unsigned later;
	bool moved;

	if (s->rleft) {
		struct xport *l = s->lane[s->rlane];

		*n = 0;
		if (l->ops->pending && l->ops->pending(l))
			return 1;
		p[(*n)++] = (struct pollfd){ .fd = l->fd, .events = POLLIN };
		return 0;
	}
	/* Every lane ended or ahead: the next read says. */
	return sweep(x, s, p, n, &later, &moved) != 0 || *n == 0;
}

/* xport_readable() of a striped stream: whether the next read finds bytes
 * of the stream (not just of some lane), waiting up to timeout_ms.  On the
 * reader's thread: it may read a header and take the next frame. */
int xport_stripe_readable(struct xport *x, struct xport_stripe *s, int timeout_ms)
{
	struct pollfd p[XPORT_LANES_MAX];
	unsigned n;
	int r;

	if (next_ready(x, s, p, &n))
		return 1;
	if (timeout_ms == 0)
		return 0;
	r = poll(p, n, timeout_ms);
	if (r < 0)
		return errno == EINTR
			   ? 0
			   : xport_fail(x, POLLIN, err_set(errno, "poll: %s", strerror(errno)));
	return r > 0 && next_ready(x, s, p, &n);
}

/* ---- source --------------------------------------------------------------- */

struct dialer {
	struct xport *x;
	unsigned index, n;
	const uint8_t *token;
	struct xport *lane;
	int r;
	char msg[1024];
};

/* Read the answer to a JOIN: 0 when joined. */
static int read_joined(struct xport *lane)
{
	uint8_t hdr[XPORT_JOINED_HDR];
	char reason[XPORT_JOIN_REASON_MAX + 1];
	uint32_t e, len;
	int r = xport_read(lane, hdr, sizeof(hdr), NULL);

	if (r < 0)
		return err_prefix(-r, "waiting for the answer to its join: ");
	len = get_be32(hdr + 1);
	e = get_be32(hdr + 5);
	if (hdr[0] != XPORT_JOINED_TYPE || len < 4)
		return err_set(EPROTO,
			       "the answer to its join is malformed (type 0x%02x, length %u)",
			       hdr[0], len);
	len -= 4;
	if (len > XPORT_JOIN_REASON_MAX)
		return err_set(EPROTO,
			       "the answer to its join has a reason of %u bytes (at most %u)", len,
			       XPORT_JOIN_REASON_MAX);
	r = xport_read(lane, reason, len, NULL);
	if (r < 0)
		return err_prefix(-r, "reading the answer to its join: ");
	reason[len] = '\0';
	printable(reason);
	if (e == 0 && len == 0)
		return 0;
	if (e == 0 || e > 4095)
		return err_set(EPROTO, "the answer to its join is malformed (errno %" PRIu32 ")",
			       e);
	return err_set((int)e, "the destination refused it: %s", reason);
}

static void *dial_main(void *arg)
{
	struct dialer *d = arg;
	struct xport *x = d->x;
	int timeout = x->timeout_ms > 0 ? x->timeout_ms : XPORT_DEFAULT_TIMEOUT_MS;
	uint8_t join[XPORT_JOIN_LEN];

	thread_name("bm-dial");
	d->r = xport_dial(x->dial_to, timeout, x->cancel, x->dial_tls, &d->lane);
	if (d->r == 0) {
		xport_set_cancel(d->lane, x->cancel);
		xport_set_timeout(d->lane, x->timeout_ms);
		xport_join_encode(join, d->index, d->token);
		d->r = xport_write(d->lane, join, sizeof(join));
		if (d->r == 0)
			d->r = xport_flush(d->lane);
		if (d->r == 0)
			d->r = read_joined(d->lane);
	}
	if (d->r < 0) {
		snprintf(d->msg, sizeof(d->msg), "%s", err_msg());
		xport_close(d->lane);
		d->lane = NULL;
	}
	return NULL;
}

int xport_lanes_connect(struct xport *x, unsigned n, const uint8_t token[XPORT_TOKEN_LEN],
			bool wlane)
{
	/* d[0] dials the write lane (JOIN index 0), d[1..n-1] the others. */
	struct dialer d[XPORT_LANES_MAX] = { { 0 } };
	pthread_t t[XPORT_LANES_MAX];
	bool started[XPORT_LANES_MAX] = { false };
	struct xport_stripe *s = NULL;
	unsigned first = wlane ? 0 : 1;
	int r = 0;

	if (n == 1 && !wlane)
		return 0;
	if (!x->dial_to)
		return err_set(EINVAL, "cannot open more connections: this one was not dialled");
	r = stripe_new(x, n, token, wlane, &s);
	if (r < 0)
		return r;
	for (unsigned i = first; i < n; i++) {
		d[i] = (struct dialer){ .x = x, .index = i, .n = n, .token = token };
		if (pthread_create(&t[i], NULL, dial_main, &d[i]) == 0) {
			started[i] = true;
		} else {
			d[i].r = -EAGAIN;
			snprintf(d[i].msg, sizeof(d[i].msg), "no thread to dial it");
		}
	}
	for (unsigned i = first; i < n; i++)
		if (started[i])
			pthread_join(t[i], NULL);
	for (unsigned i = first; i < n; i++) {
		if (d[i].r < 0 && r == 0 && i == XPORT_WLANE_INDEX)
			r = err_set(-d[i].r, "opening the write lane: %s", d[i].msg);
		else if (d[i].r < 0 && r == 0)
			r = err_set(-d[i].r, "opening connection %u of %u: %s", i + 1, n, d[i].msg);
		if (i == XPORT_WLANE_INDEX)
			s->wlane = d[i].lane;
		else
			s->lane[i] = d[i].lane;
	}
	if (r == 0) {
		char peer[sizeof(x->peer)];

		snprintf(peer, sizeof(peer), "%s", x->peer);
		for (unsigned i = n > 1 ? 0 : 1; i < n; i++)
			lane_name(s->lane[i], peer, i, n);
		if (s->wlane) {
			lane_name(s->wlane, peer, XPORT_WLANE_INDEX, n);
			s->wlane->rate_of = x; /* --max-bandwidth caps the whole */
		}
		s->joined = n - 1 + (s->wlane != NULL);
		s->tx = n > 1;
		atomic_store(&x->stripe, s);
		return 0;
	}
	stripe_destroy(s);
	return r;
}

/* ---- destination ---------------------------------------------------------- */

int xport_lanes_offer(struct xport *x, unsigned n, const uint8_t token[XPORT_TOKEN_LEN], bool wlane)
{
	struct xport_stripe *s = NULL;
	int r = stripe_new(x, n, token, wlane, &s);

	if (r < 0)
		return r;
	if (n > 1)
		tcp_fix_rcvbuf(x->fd);
	atomic_store(&x->stripe, s);
	return 0;
}

static int send_joined(struct xport *lane, int err, const char *reason)
{
	uint8_t buf[XPORT_JOINED_HDR + XPORT_JOIN_REASON_MAX];
	size_t len = err ? MIN(strlen(reason), (size_t)XPORT_JOIN_REASON_MAX) : 0;
	int r;

	buf[0] = XPORT_JOINED_TYPE;
	put_be32(buf + 1, (uint32_t)(4 + len));
	put_be32(buf + 5, (uint32_t)err);
	memcpy(buf + XPORT_JOINED_HDR, reason, len);
	r = xport_write(lane, buf, XPORT_JOINED_HDR + len);
	return r == 0 ? xport_flush(lane) : r;
}

void xport_join_refuse(struct xport *lane, int err, const char *reason)
{
	xport_set_timeout(lane, 2000);
	send_joined(lane, err < 0 ? -err : err, reason);
}

/* Constant time: the token is the lanes' only credential. */
static bool token_eq(const uint8_t *a, const uint8_t *b)
{
	uint8_t d = 0;

	for (unsigned i = 0; i < XPORT_TOKEN_LEN; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

int xport_lanes_attach(struct xport *x, unsigned index, const uint8_t token[XPORT_TOKEN_LEN],
		       struct xport *lane)
{
	struct xport_stripe *s = atomic_load(&x->stripe);
	bool wl = index == XPORT_WLANE_INDEX;
	char what[48];
	uint64_t one = 1;
	int r = 0;

	if (!s)
		return err_set(EPROTO, "the migration it names asked for no more connections");
	if (wl)
		snprintf(what, sizeof(what), "the write lane");
	else
		snprintf(what, sizeof(what), "connection %u", index + 1);
	pthread_mutex_lock(&s->lock);
	if (!token_eq(token, s->token))
		r = err_set(EACCES, "wrong join token for %s", what);
	else if (wl && !s->wlane_wanted)
		r = err_set(EPROTO, "the migration it names asked for no write lane");
	else if (!wl && index >= s->n)
		r = err_set(ERANGE, "connection %u is beyond the %u agreed", index + 1, s->n);
	else if (wl && s->wlane)
		r = err_set(EEXIST, "the write lane has already joined");
	else if (!wl && s->lane[index])
		r = err_set(EEXIST, "connection %u of %u has already joined", index + 1, s->n);
	else if (s->rx || s->spoke)
		r = err_set(EPROTO, "the stream is already under way");
	else if (lane->rpos != lane->rlen)
		r = err_set(EPROTO, "%s sent bytes after its join", what);
	if (r == 0) {
		r = send_joined(lane, 0, "");
		if (r < 0)
			r = err_prefix(-r, "answering the join of %s: ", what);
	}
	if (r == 0) {
		char peer[sizeof(lane->peer)];

		snprintf(peer, sizeof(peer), "%s", lane->peer);
		lane_name(lane, peer, index, s->n);
		lane->cancel = x->cancel;
		lane->timeout_ms = x->timeout_ms;
		if (wl) {
			lane->rate_of = x;
			s->wlane = lane;
		} else {
			tcp_fix_rcvbuf(lane->fd);
			s->lane[index] = lane;
		}
		s->joined++;
		if (write(s->evfd, &one, sizeof(one)) < 0) {
			/* Cannot fail: the counter is far from its limit. */
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/*
 * Until a lane joins (1), x's own connection has something to read (2:
 * bytes, its end or an error), the cancel token fires (-ECANCELED) or the
 * deadline passes (0).
 */
static int wait_join(struct xport *x, struct xport_stripe *s, uint64_t deadline)
{
	struct pollfd p[2] = {
		{ .fd = s->evfd, .events = POLLIN },
		{ .fd = x->fd, .events = POLLIN },
	};
	int r;

	if (x->rpos != x->rlen)
		return 2;
	r = cancel_poll_fds(x->cancel, p, 2, deadline);
	if (r <= 0)
		return r;
	return p[0].revents ? 1 : 2;
}

int xport_lanes_wait(struct xport *x, int timeout_ms)
{
	struct xport_stripe *s = atomic_load(&x->stripe);
	uint64_t deadline = timeout_ms > 0 ? now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
	uint64_t v;

	if (!s)
		return 0;
	for (;;) {
		unsigned joined;
		int r;

		pthread_mutex_lock(&s->lock);
		joined = s->joined;
		pthread_mutex_unlock(&s->lock);
		if (joined == s->n - 1 + s->wlane_wanted)
			break;
		r = wait_join(x, s, deadline);
		if (r == 2) {
			pthread_mutex_lock(&s->lock);
			s->spoke = true;
			pthread_mutex_unlock(&s->lock);
			return 1;
		}
		if (r == -ECANCELED)
			return xport_fail(x, POLLIN,
					  err_set(ECANCELED, "cancelled while waiting for the "
							     "connections to join"));
		if (r == 0)
			return xport_fail(
			    x, POLLIN,
			    err_set(ETIMEDOUT, "only %u of %u connections joined within %.1f s",
				    joined + 1, s->n + s->wlane_wanted, timeout_ms / 1000.0));
		if (r < 0)
			return xport_fail(x, POLLIN, err_set(-r, "poll: %s", strerror(-r)));
		if (read(s->evfd, &v, sizeof(v)) < 0) {
			/* EAGAIN: another look at the count decides. */
		}
	}
	if (x->rpos != x->rlen)
		return xport_fail(x, POLLIN,
				  err_set(EPROTO, "the source sent data before its connections "
						  "joined"));
	pthread_mutex_lock(&s->lock);
	s->rx = s->n > 1;
	s->spoke = s->spoke || s->n == 1; /* no lane may join from here on */
	pthread_mutex_unlock(&s->lock);
	return 0;
}
