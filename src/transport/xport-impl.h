/* SPDX-License-Identifier: MIT */
/*
 * Internal: the base struct every transport implementation embeds first.
 * Only transport.c and the implementations (tcp.c, ...) include this.
 */
#ifndef BLKMIG_TRANSPORT_XPORT_IMPL_H
#define BLKMIG_TRANSPORT_XPORT_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "transport.h"

#define XPORT_WBUF_SIZE (256 * 1024)
#define XPORT_RBUF_SIZE (256 * 1024)
/* Striped reads this large take the payload straight from the lanes. */
#define XPORT_STRIPE_DIRECT (64 * 1024)

struct xport {
	const struct xport_ops *ops;
	void *priv; /* the implementation's (tls.c: the session) */
	int fd;	    /* polled for readiness */
	char peer[80];
	int werr;	       /* sticky: first send failure, negative errno */
	int rerr;	       /* sticky: first receive failure */
	bool reof;	       /* sticky: a receive saw the end (TLS is not asked twice) */
	struct cancel *cancel; /* not owned; NULL: none */
	int timeout_ms;

	_Atomic uint64_t rate; /* bytes per second, 0 unlimited */
	/* The rate limiter, under rate_lock: a write lane's sender charges it
	 * from its own thread (rate_of). */
	pthread_mutex_t rate_lock;
	struct rate_bucket bucket;
	_Atomic unsigned urgent_pct; /* xport_set_urgent_share() */
	bool urgent;
	/* A write lane: the xport whose limiter paces its sends, as urgent
	 * ones (NULL: its own). */
	struct xport *rate_of;

	_Atomic uint64_t tx, rx;

	uint8_t *wbuf;
	size_t wlen;
	uint8_t *rbuf;
	size_t rpos, rlen;

	/* Where xport_dial() dialled (for more lanes); NULL otherwise. */
	char *dial_to;
	struct tls_creds *dial_tls; /* not owned */
	/* Lanes (stripe.c): NULL until offered or connected.  Set once by
	 * x's own thread; read by the listener's (xport_lanes_attach). */
	_Atomic(struct xport_stripe *) stripe;
};

/* What the reader knows of a lane's next frame: its header, as far as it
 * has arrived, or that the lane has ended (at a frame boundary). */
struct xport_lane_head {
	uint8_t hdr[XPORT_FRAME_HDR];
	uint8_t got; /* header bytes read; all of them: seq and len hold */
	bool ended;
	uint64_t seq;
	uint32_t len;
};

/*
 * The lanes of one striped stream.  lane[0] is the xport itself.  'lock'
 * guards lane[], joined and the lanes' cancel/timeout settings against
 * joins arriving from the listener's threads; tx/rx/seqs are the writer's
 * and the reader's alone once set.
 */
struct xport_stripe {
	pthread_mutex_t lock;
	int evfd; /* an eventfd, signalled at each join */
	unsigned n;
	uint8_t token[XPORT_TOKEN_LEN];
	struct xport *lane[XPORT_LANES_MAX];
	unsigned joined; /* lanes other than 0 attached, the write lane included */
	/* The write lane (n may be 1 with it): a connection of its own for
	 * the stream's user, joined with index 0, never striped. */
	bool wlane_wanted;
	struct xport *wlane;
	bool tx, rx; /* that direction of x is striped */
	bool spoke;  /* lane 0 had bytes (or ended) before the others joined */
	/* The writer's: the next frame's number, and the lane a tie between
	 * equally empty lanes goes to. */
	uint64_t tseq;
	unsigned tnext;
	/* The reader's: the next frame's number; the frame being read, its
	 * lane and payload bytes not yet read; each lane's head. */
	uint64_t rseq;
	unsigned rlane;
	uint32_t rleft;
	struct xport_lane_head head[XPORT_LANES_MAX];
	_Atomic uint64_t bytes[XPORT_LANES_MAX]; /* raw bytes moved per lane */
};

/* Initialise the base (buffers, defaults); 0 or -ENOMEM. */
int xport_base_init(struct xport *x, const struct xport_ops *ops, int fd, const char *peer);
void xport_base_destroy(struct xport *x);

/* transport.c, for stripe.c */
int xport_fail(struct xport *x, short dir, int r);
int xport_send_raw(struct xport *x, struct xport *rl, _Atomic uint64_t *ctr, struct iovec *iov,
		   int iovcnt);
int xport_read_raw(struct xport *x, void *buf, size_t len, _Atomic uint64_t *ctr, size_t *got);
int xport_wait_idle(struct xport *x, struct pollfd *p, unsigned n, uint64_t *idle_since);

/* stripe.c, for transport.c */
int xport_stripe_pick(struct xport *x, struct xport_stripe *s, unsigned *lane);
int xport_stripe_next(struct xport *x, struct xport_stripe *s, bool *eof);
int xport_stripe_readable(struct xport *x, struct xport_stripe *s, int timeout_ms);
void xport_stripe_free(struct xport *x);

/* tcp.c */
extern const struct xport_ops tcp_xport_ops;
int tcp_xport_new(int fd, const char *peer, struct xport **out);
/*
 * The dialling side (the source, which sends the bulk): a send buffer as
 * large as net.core.wmem_max allows, but only where that exceeds what the
 * kernel's autotuning reaches (net.ipv4.tcp_wmem's max); see
 * docs/wire-format.md, "Several connections".
 */
void tcp_size_sndbuf(int fd);
/*
 * The destination's lanes: a fixed receive buffer of net.core.rmem_max
 * (doubled by the kernel; at most TCP_LANE_RCVBUF_MAX asked for), where
 * that gives at least TCP_LANE_RCVBUF_MIN, and a window clamp to match.
 * Autotuning sizes a buffer by what the application read from it in the
 * last round trip, and the reader of lanes reads each in turn, when its
 * frame is next: their windows stayed small for seconds (docs/
 * wire-format.md, "Socket buffers").
 */
#define TCP_LANE_RCVBUF_MIN (4 << 20)
#define TCP_LANE_RCVBUF_MAX (16 << 20) /* asked for at most (the kernel doubles it) */
void tcp_fix_rcvbuf(int fd);

#endif
