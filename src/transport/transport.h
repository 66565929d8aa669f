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
#include "ratelimit.h"

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

/* The connection's socket (the first one's, with lanes): for the kernel's
 * view of it (its queues, say), never to read or write. */
int xport_fd(const struct xport *x);

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
uint64_t xport_get_rate(const struct xport *x);
/*
 * How long the rate limiter would hold the next send back (0: it may go
 * now), so that the writer can wait for it elsewhere and send something
 * urgent meanwhile.  The writer's thread only.
 */
uint64_t xport_send_delay(struct xport *x);
/*
 * Urgent sends (on) never wait behind other sends for the rate limit: they
 * wait only while urgent sends alone would exceed their share of it
 * (xport_set_urgent_share()).  Everything sent is charged to the limit, so
 * other sends wait longer, and the rate is kept.  The writer's thread only.
 */
void xport_set_urgent(struct xport *x, bool on);
/*
 * The share of the rate urgent sends may take, in percent
 * (RATE_URGENT_PCT_MIN..MAX, clamped; default RATE_URGENT_PCT_DEFAULT);
 * the others keep the rest.  On the xport whose limiter counts (a striped
 * stream's, not a lane's).  May be changed at any time.
 */
void xport_set_urgent_share(struct xport *x, unsigned pct);

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

/* Whether x was dialled (xport_dial): more connections (lanes, the write
 * lane) can be opened to where it leads. */
bool xport_dialled(const struct xport *x);
/* Bytes written and not yet handed to the socket (xport_flush() sends
 * them); the writer's thread only. */
size_t xport_buffered(const struct xport *x);
/* Bytes moved, the write lane's included. */
uint64_t xport_tx_bytes(const struct xport *x);
uint64_t xport_rx_bytes(const struct xport *x);
const char *xport_peer(const struct xport *x);

/* ---- lanes: one stream striped over several connections (stripe.c) -------
 *
 * With N lanes, everything the source writes after the handshake is cut
 * into frames (be64 sequence number, be32 length, payload of 1 ..
 * XPORT_FRAME_MAX bytes), each sent on the lane that can take it soonest
 * (numbers increase on each lane); the destination reads them back in
 * sequence order, taking the next frame from whichever lane has it at its
 * head, and its engine sees one ordered byte stream again.  The other
 * direction (the destination's replies) stays unframed on lane 0, the
 * connection the handshake used: it carries small messages whose latency
 * matters more than their rate.  Lane 0 is x itself; the others join it
 * with a JOIN message (the token x's peer was given, and their index) on
 * fresh connections, each with its own TLS session when TLS is on.  Rate
 * limiting, cancel and the idle timeout apply to the whole; any lane
 * failing fails the whole stream (sticky).  docs/wire-format.md has the
 * bytes.
 */
#define XPORT_LANES_MAX	 16
#define XPORT_TOKEN_LEN	 16
#define XPORT_FRAME_HDR	 12
#define XPORT_FRAME_MAX	 (256 * 1024)
#define XPORT_JOIN_LEN	 28
#define XPORT_JOIN_MAGIC UINT64_C(0x424C4B4D4C414E45) /* "BLKMLANE" */
/* The answer to a JOIN, framed like the destination's messages: u8 type
 * XPORT_JOINED_TYPE, be32 len (4 + reason length), be32 errno (0: joined),
 * reason (none when joined). */
#define XPORT_JOINED_TYPE     0x8B
#define XPORT_JOINED_HDR      9
#define XPORT_JOIN_REASON_MAX 512

/* Pure codecs (unit-tested): a frame header; a JOIN; its answer's header.
 * Decoders: 0, or -EPROTO with the message set. */
void xport_frame_encode(uint8_t hdr[XPORT_FRAME_HDR], uint64_t seq, uint32_t len);
/* Length checked (1 .. XPORT_FRAME_MAX, else -EPROTO); the sequence number
 * is the reader's to judge. */
int xport_frame_decode(const uint8_t hdr[XPORT_FRAME_HDR], uint64_t *seq, uint32_t *len);
void xport_join_encode(uint8_t buf[XPORT_JOIN_LEN], unsigned lane,
		       const uint8_t token[XPORT_TOKEN_LEN]);
int xport_join_decode(const uint8_t buf[XPORT_JOIN_LEN], unsigned *lane,
		      uint8_t token[XPORT_TOKEN_LEN]);

/*
 * The write lane: with wlane, one more connection joins (JOIN index
 * XPORT_WLANE_INDEX), which is not striped: x's user reads and writes it
 * as a transport of its own (xport_write_lane()), say for messages that
 * must not wait behind x's bytes.  x owns it (closed with x); it follows
 * x's cancel token and idle timeout.  n may be 1 with it.
 */
#define XPORT_WLANE_INDEX 0
struct xport *xport_write_lane(const struct xport *x); /* NULL: none */

/* Source: dial n - 1 more lanes to where x was dialled (xport_dial), and
 * the write lane if wlane, in parallel, each presenting token; once every
 * one has joined, writes on x are striped over all n.  0, or negative
 * errno with the message set (no lane is kept then).  n == 1 without
 * wlane: nothing to do. */
int xport_lanes_connect(struct xport *x, unsigned n, const uint8_t token[XPORT_TOKEN_LEN],
			bool wlane);

/* Destination: expect n - 1 lanes to join x with token (n 2 ..
 * XPORT_LANES_MAX), and the write lane if wlane (n 1 .. with it). */
int xport_lanes_offer(struct xport *x, unsigned n, const uint8_t token[XPORT_TOKEN_LEN],
		      bool wlane);
/* Destination, the listener's thread: lane (TLS done, its JOIN read) asks
 * to be lane 'index' of x.  On success the JOINED answer is sent and x owns
 * lane; on failure (wrong token, an index beyond those agreed, a lane that
 * already joined, x expecting none) the message says why and the caller
 * still owns lane (and tells it: xport_join_refuse).  Thread-safe against
 * x's own thread; x must stay open meanwhile. */
int xport_lanes_attach(struct xport *x, unsigned index, const uint8_t token[XPORT_TOKEN_LEN],
		       struct xport *lane);
/* Tell a refused lane why (best effort). */
void xport_join_refuse(struct xport *lane, int err, const char *reason);
/* Destination: wait (timeout_ms, the cancel token) until every lane
 * offered has joined, then read x striped: 0.  1 when x's own connection
 * has bytes (or its end) first: a source that gave up on its lanes says so
 * there (ABORT), so x stays unstriped for the caller to read it, and no
 * lane may join any more.  Or a negative errno. */
int xport_lanes_wait(struct xport *x, int timeout_ms);
/* Lanes of x (1 without striping), and the bytes each moved (index <
 * xport_lanes()). */
unsigned xport_lanes(const struct xport *x);
uint64_t xport_lane_bytes(const struct xport *x, unsigned index);

/* Look at the first len (<= 64) bytes without consuming them: how many are
 * there (fewer only at the end of the stream), or negative errno. */
int xport_peek(struct xport *x, void *buf, size_t len);
/* The same without waiting (len up to 256 KiB, buf NULL to copy nothing):
 * how many of the first len bytes have come, or negative errno; *eof says
 * the stream ended (fewer will ever come).  For a reader that must not
 * wait for a message that came only in part: it reads the message once
 * the whole is here.  Not on a striped connection. */
int xport_peek_now(struct xport *x, void *buf, size_t len, bool *eof);

#endif
