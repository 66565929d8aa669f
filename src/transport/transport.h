/* SPDX-License-Identifier: MIT */
/*
 * Transport: a byte stream between source and destination engines.  An ops
 * table (tcp.c now, tls.c later) under one buffered, rate-limited writer and
 * buffered reader with byte counters.
 *
 * Every call blocks, polling the socket together with the cancel token's
 * descriptor (xport_set_cancel), so cancel_fire() ends every wait at once
 * with -ECANCELED; with no progress for the idle timeout a wait ends with
 * -ETIMEDOUT.  Failure is sticky: after the first error every later call
 * returns the same negative errno.
 *
 * One thread writes and one thread reads at a time; the byte counters may
 * be read from any thread.
 */
#ifndef BLKMIG_TRANSPORT_TRANSPORT_H
#define BLKMIG_TRANSPORT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/cancel.h"

struct xport;
struct tls_creds;

struct xport_ops {
	const char *name;
	/* One non-blocking attempt: bytes moved, or -EAGAIN, or -errno with
	 * the message set (err_set).  recv returns 0 at end of stream. */
	ssize_t (*sendv)(struct xport *x, const struct iovec *iov, int iovcnt);
	ssize_t (*recv)(struct xport *x, void *buf, size_t len);
	/* Bytes received and decoded but not yet returned by recv, which
	 * poll cannot see; NULL: none ever. */
	size_t (*pending)(struct xport *x);
	void (*close)(struct xport *x);
};

#define XPORT_DEFAULT_TIMEOUT_MS 120000

/*
 * Parse "HOST:PORT" (or "[v6]:PORT"); HOST may be empty for "any".  Listen
 * on it (port 0 picks a free one).  *lfd is the listening socket; 'bound'
 * receives "HOST:PORT" with the real port.  0 or negative errno.
 */
int xport_listen(const char *hostport, int *lfd, char *bound, size_t bound_cap);

/* Split "HOST:PORT" (or "[v6]:PORT") into host, without brackets, and a
 * port 0..65535: 0, or -EINVAL with the message set.  Nothing resolved. */
int xport_addr_split(const char *hostport, char *host, size_t host_cap, uint16_t *port);

/* Whether every address HOST:PORT resolves to is a loopback one: 1 yes, 0
 * no (an empty HOST, "any", is not), negative errno if it cannot be
 * resolved. */
int xport_addr_is_loopback(const char *hostport);

/* Wait up to timeout_ms (-1: forever) for one connection on lfd; -ECANCELED
 * as soon as cancel (may be NULL; not owned) fires.  The caller owns *out. */
int xport_accept(int lfd, int timeout_ms, struct cancel *cancel, struct xport **out);

/* Connect, retrying refused connections until timeout_ms has passed;
 * -ECANCELED as soon as cancel (may be NULL; not owned) fires. */
int xport_connect(const char *hostport, int timeout_ms, struct cancel *cancel, struct xport **out);

/*
 * xport_connect(), then TLS with c (NULL: none) checking the server's
 * certificate against the host part of hostport, unless the credentials
 * name another (--tls-hostname).  The handshake has timeout_ms.
 */
int xport_dial(const char *hostport, int timeout_ms, struct cancel *cancel, struct tls_creds *c,
	       struct xport **out);

void xport_close(struct xport *x); /* accepts NULL */

/*
 * Turn a fresh connection (nothing sent or received on it yet) into a TLS
 * 1.3 one with c (src/tls/tls.h): handshake, certificate and host name
 * checks, the authorisation list; at most timeout_ms for the handshake,
 * and the cancel token set on x ends it.  On failure x is still the plain
 * connection (the caller closes it) and the message says why.
 */
int xport_start_tls(struct xport *x, struct tls_creds *c, const char *hostname, int timeout_ms);
bool xport_is_tls(const struct xport *x);
/* The TLS peer's PSK identity or certificate DN ("" without TLS); raw
 * bytes from the peer: escape before printing. */
const char *xport_peer_id(const struct xport *x);

/* Behaviour. */
/* Reads, writes and the rate limiter's waits end with -ECANCELED (sticky)
 * once cancel fires.  Not owned: it must outlive its use here (NULL: none).
 * Set it while no other thread uses x. */
void xport_set_cancel(struct xport *x, struct cancel *cancel);
void xport_set_timeout(struct xport *x, int idle_timeout_ms);
int xport_get_timeout(const struct xport *x);
/* Bytes per second, 0 for unlimited.  May be changed at any time. */
void xport_set_rate(struct xport *x, uint64_t bytes_per_sec);
/*
 * How long the rate limiter would hold the next send back (0: it may go
 * now), so that the writer can wait for it elsewhere and send something
 * urgent meanwhile.  The writer's thread only.
 */
uint64_t xport_send_delay(struct xport *x);
/*
 * Urgent sends (on) never wait behind other sends for the rate limit: they
 * wait only while urgent sends alone would exceed half of it.  Everything
 * sent is charged to the limit, so other sends wait longer, and the rate
 * is kept.  The writer's thread only.
 */
void xport_set_urgent(struct xport *x, bool on);

/* Buffered write: small items are coalesced until xport_flush() or a
 * large write.  Returns 0 or negative errno. */
int xport_write(struct xport *x, const void *buf, size_t len);
/* Flush buffered bytes, then send hdr and payload without copying. */
int xport_write2(struct xport *x, const void *hdr, size_t hlen, const void *payload, size_t plen);
int xport_flush(struct xport *x);
/* Half-close the write side after flushing. */
int xport_shutdown_write(struct xport *x);
/* Stop reading: a read blocked in another thread, and every later one,
 * sees the end of the stream at once.  Writing goes on.  Thread-safe. */
void xport_shutdown_read(struct xport *x);

/* Read exactly len bytes.  At end of stream: -ECONNRESET with a message
 * saying how many bytes were missing.  *got (optional) receives the bytes
 * read even on failure, so a caller can tell "clean EOF at a boundary". */
int xport_read(struct xport *x, void *buf, size_t len, size_t *got);
/* 1 if a read would not block (buffered bytes, data or EOF), 0 if not
 * within timeout_ms, negative errno on failure.  A bounded probe: it does
 * not watch the cancel token. */
int xport_readable(struct xport *x, int timeout_ms);

uint64_t xport_tx_bytes(const struct xport *x);
uint64_t xport_rx_bytes(const struct xport *x);
const char *xport_peer(const struct xport *x);

#endif
