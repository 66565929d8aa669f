/* SPDX-License-Identifier: MIT */
/*
 * Internal: the base struct every transport implementation embeds first.
 * Only transport.c and the implementations (tcp.c, ...) include this.
 */
#ifndef BLKMIG_TRANSPORT_XPORT_IMPL_H
#define BLKMIG_TRANSPORT_XPORT_IMPL_H

#include <stdatomic.h>

#include "transport.h"

#define XPORT_WBUF_SIZE (256 * 1024)
#define XPORT_RBUF_SIZE (256 * 1024)

struct xport {
	const struct xport_ops *ops;
	void *priv; /* the implementation's (tls.c: the session) */
	int fd;	    /* polled for readiness */
	char peer[80];
	int werr;	       /* sticky: first send failure, negative errno */
	int rerr;	       /* sticky: first receive failure */
	struct cancel *cancel; /* not owned; NULL: none */
	int timeout_ms;

	_Atomic uint64_t rate; /* bytes per second, 0 unlimited */
	uint64_t next_ok_ns;   /* rate limiter: earliest time of the next send */
	uint64_t urgent_ok_ns; /* urgent sends' own bucket (xport_set_urgent) */
	bool urgent;

	_Atomic uint64_t tx, rx;

	uint8_t *wbuf;
	size_t wlen;
	uint8_t *rbuf;
	size_t rpos, rlen;
};

/* Initialise the base (buffers, defaults); 0 or -ENOMEM. */
int xport_base_init(struct xport *x, const struct xport_ops *ops, int fd, const char *peer);
void xport_base_destroy(struct xport *x);

/* tcp.c */
extern const struct xport_ops tcp_xport_ops;
int tcp_xport_new(int fd, const char *peer, struct xport **out);

#endif
