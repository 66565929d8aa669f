/* SPDX-License-Identifier: MIT */
/*
 * TLS transport: the same non-blocking socket as tcp.c, with every byte
 * going through a GnuTLS session (src/tls).  xport_start_tls() turns a
 * connected TCP transport into this one after the handshake, so listening,
 * accepting, connecting, buffering, rate limiting, cancel and timeouts stay
 * in transport.c for both.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "tls/tls.h"
#include "xport-impl.h"

static ssize_t tls_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	ssize_t total = 0;

	/* One iovec at a time: GnuTLS cuts records itself.  A partial
	 * send ends the call, so the caller offers the rest first. */
	for (int i = 0; i < iovcnt; i++) {
		ssize_t n;

		if (!iov[i].iov_len)
			continue;
		n = tls_send(x->priv, iov[i].iov_base, iov[i].iov_len);
		if (n < 0)
			return total ? total : n;
		total += n;
		if ((size_t)n < iov[i].iov_len)
			break;
	}
	return total;
}

static ssize_t tls_xrecv(struct xport *x, void *buf, size_t len)
{
	return tls_recv(x->priv, buf, len);
}

static size_t tls_xpending(struct xport *x)
{
	return tls_pending(x->priv);
}

static void tls_xclose(struct xport *x)
{
	tls_bye(x->priv);
	tls_session_free(x->priv);
	close(x->fd);
	xport_base_destroy(x);
	free(x); /* allocated by tcp_xport_new(): the base comes first */
}

static const struct xport_ops tls_ops = {
	.name = "tls",
	.sendv = tls_sendv,
	.recv = tls_xrecv,
	.pending = tls_xpending,
	.close = tls_xclose,
};

int xport_start_tls(struct xport *x, struct tls_creds *c, const char *hostname, int timeout_ms)
{
	struct tls_session *s = NULL;
	int r;

	if (x->ops != &tcp_xport_ops || x->wlen || x->rpos < x->rlen)
		return err_set(EINVAL, "TLS must start on a fresh connection");
	r = tls_session_new(c, x->fd, hostname, &s);
	if (r == 0)
		r = tls_handshake(s, timeout_ms, x->cancel, x->peer);
	if (r < 0) {
		tls_session_free(s);
		return r;
	}
	x->priv = s;
	x->ops = &tls_ops;
	return 0;
}

bool xport_is_tls(const struct xport *x)
{
	return x->ops == &tls_ops;
}

const char *xport_peer_id(const struct xport *x)
{
	return x->ops == &tls_ops ? tls_session_peer_id(x->priv) : "";
}
