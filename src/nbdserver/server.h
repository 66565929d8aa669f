/* SPDX-License-Identifier: MIT */
/*
 * NBD server: exports block devices (struct blk, usually a tracking layer
 * over a file) to real NBD clients -- qemu, qemu-img, qemu-io, nbdcopy,
 * nbdinfo, the kernel's nbd-client -- and lets the migration engine stop
 * them at switch-over.  Fixed newstyle negotiation; with credentials
 * (nbds_set_tls()) TLS is forced: NBD_OPT_STARTTLS first, everything else
 * after it, over TLS 1.3 (src/tls).
 *
 * Threads: one accept thread plus one thread per client.  A client's
 * requests are executed one at a time, in order, so all I/O of a
 * connection is sequential; different connections run in parallel and
 * reach the blk concurrently (backends are thread-safe).  Every read,
 * write, flush, zero, trim and block-status goes through the checked
 * blk_*() wrappers on the blk given, so a tracking layer below sees every
 * write; a write it holds (track_pause()) just waits, with no timeout.
 *
 * Errors: functions returning int give 0 or a negative errno and record a
 * message with err_set().  Failures of one client (protocol violations,
 * disconnects) end that client's connection only and are not reported.
 */
#ifndef BLKMIG_NBDSERVER_SERVER_H
#define BLKMIG_NBDSERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct blk;
struct nbds;
struct tls_creds;

/* Longest export name accepted (the protocol's string limit), in bytes. */
#define NBDS_MAX_NAME 4096
/* Connections served at once; more are closed right after accept. */
#define NBDS_MAX_CLIENTS 128
/* A client must reach transmission (GO/EXPORT_NAME) within this time,
 * TLS handshake included. */
#define NBDS_HANDSHAKE_TIMEOUT_MS 60000

/*
 * Limits that keep one peer from starving the others (nbds_set_limits()):
 *   - per_peer: connections open at once from one IP address (whatever
 *     their phase);
 *   - unauth: connections, from all peers together, that are not yet
 *     authenticated: with TLS, those that have not finished the TLS
 *     handshake; without, those not yet in transmission.  One address may
 *     hold at most half of them (at least 1), so that a second peer still
 *     gets in while the first stalls its handshakes.  A connection that
 *     finds no slot free waits for one, ungreeted, for up to
 *     NBDS_UNAUTH_WAIT_MS (so a burst of clients from one host queues
 *     rather than fails), then is refused;
 *   - idle_timeout_ms: a connection in transmission that sends no request
 *     for this long is closed (0, the default: never, so a VM's quiet disk
 *     is not cut off); a request whose header or payload takes longer
 *     than this (NBDS_REQUEST_TIMEOUT_MS when 0) to arrive closes it too.
 * A connection over a limit is told why where the protocol allows: it is
 * greeted and every option gets NBD_REP_ERR_POLICY with the reason as its
 * message (NBD_OPT_EXPORT_NAME, which cannot carry an error, gets the
 * connection closed), for at most NBDS_REFUSE_TIMEOUT_MS; beyond
 * NBDS_MAX_REFUSING such conversations at once, it is closed at once.
 * Either way the server logs one line (nbds_set_log()), at most
 * NBDS_LOG_BURST lines a minute.
 */
#define NBDS_DEFAULT_MAX_PER_PEER    16
#define NBDS_DEFAULT_MAX_UNAUTH	     8
#define NBDS_DEFAULT_IDLE_TIMEOUT_MS 0
#define NBDS_REQUEST_TIMEOUT_MS	     120000
#define NBDS_REFUSE_TIMEOUT_MS	     5000
#define NBDS_UNAUTH_WAIT_MS	     5000
#define NBDS_MAX_REFUSING	     4
#define NBDS_LOG_BURST		     20

struct nbds_limits {
	unsigned per_peer;	  /* >= 1 */
	unsigned unauth;	  /* >= 1 */
	unsigned idle_timeout_ms; /* 0: never */
};
#define NBDS_LIMITS_DEFAULT                                                                        \
	((struct nbds_limits){ .per_peer = NBDS_DEFAULT_MAX_PER_PEER,                              \
			       .unauth = NBDS_DEFAULT_MAX_UNAUTH,                                  \
			       .idle_timeout_ms = NBDS_DEFAULT_IDLE_TIMEOUT_MS })

/* 0 or negative errno (err_set).  The caller owns *out (nbds_free()). */
int nbds_new(struct nbds **out);

/*
 * Export blk (not owned; it must outlive the server) under name: 0..4096
 * bytes, unique (-EEXIST), no NUL.  readonly refuses writes, trims and
 * zeroing with NBD_EPERM and advertises NBD_FLAG_READ_ONLY.  May be called
 * before or after nbds_listen(); exports are never removed.
 *
 * A client asking for the empty name ("nbd://host:port" with no path)
 * gets the export named "" if there is one, else the first export added.
 */
int nbds_add_export(struct nbds *s, const char *name, struct blk *blk, bool readonly);

/*
 * Force TLS with these server credentials (tls_creds_new(..., TLS_SERVER,
 * ...); not owned, they must outlive the server; NULL: no TLS).  Before
 * nbds_listen() only: -EBUSY after.
 *
 * With TLS, a client must send NBD_OPT_STARTTLS before anything else:
 * every other option but NBD_OPT_ABORT gets NBD_REP_ERR_TLS_REQD, and
 * NBD_OPT_EXPORT_NAME closes the connection.  STARTTLS is acknowledged,
 * then the TLS handshake runs within what is left of the handshake
 * deadline (the credentials' authorisation list applies); a failed
 * handshake closes the connection.  Nothing negotiated before it survives
 * it (structured replies, meta contexts), and a second STARTTLS gets
 * NBD_REP_ERR_INVALID.  Without TLS, STARTTLS gets NBD_REP_ERR_POLICY.
 */
int nbds_set_tls(struct nbds *s, struct tls_creds *c);

/* Set the limits above (checked: -EINVAL for a zero per_peer or unauth).
 * Before nbds_listen() only: -EBUSY after.  The defaults apply otherwise. */
int nbds_set_limits(struct nbds *s, const struct nbds_limits *l);

/*
 * Where the server reports what the operator should hear of: connections
 * refused by a limit, closed for idleness, or failing the TLS handshake.
 * One line each, without "blkmig: " or a newline, anything from the peer
 * escaped.  Called from the server's threads, one call at a time.  NULL
 * (the default): nothing is reported.  Before nbds_listen() only.
 */
void nbds_set_log(struct nbds *s, void (*log)(void *user, const char *line), void *user);

/*
 * Start listening on HOST:PORT ("[v6]:PORT"; port 0 picks a free port;
 * bound, if not NULL, receives "HOST:PORT" with the real port) and start
 * serving in background threads.  Once per server (-EBUSY after).
 */
int nbds_listen(struct nbds *s, const char *hostport, char *bound, size_t bound_cap);

/*
 * While reason != NULL, clients in option haggling are refused entry:
 * NBD_OPT_GO and NBD_OPT_INFO get NBD_REP_ERR_UNKNOWN ("the requested
 * export is not available") with reason as the error message, which
 * nbdinfo and qemu print; NBD_OPT_EXPORT_NAME, which cannot carry an
 * error, gets the connection closed.  Other options and clients already
 * in transmission are unaffected.  NULL lets clients in again.  The string
 * is copied.  Thread-safe; never blocks on clients.
 */
void nbds_refuse(struct nbds *s, const char *reason);

/*
 * Switch-over: from now on every request not yet answered, on every
 * connection, and every later one is answered with the error err (a
 * positive errno; 0 means ESHUTDOWN; mapped by nbd_errno(), ESHUTDOWN ->
 * NBD_ESHUTDOWN) carrying reason as its message where structured replies
 * allow one; a WRITE's payload is read and dropped, never written.  Once a
 * connection has been quiet for a moment (NBDS_DRAIN_QUIET_MS) or sends
 * NBD_CMD_DISC, it is closed.  Clients still in option haggling get
 * NBD_REP_ERR_SHUTDOWN (with reason) for every option but NBD_OPT_ABORT,
 * and NBD_OPT_EXPORT_NAME closes: nobody enters transmission again.
 * Terminal: nbds_refuse(NULL) does not undo it; later calls change
 * nothing (the first err and reason stay).
 *
 * A request already inside the block layer is answered (with err) when
 * that call returns: to end writes held by a paused tracking layer at
 * once, fence it (track_fence()) as well.  Thread-safe; does not block on
 * clients.
 */
void nbds_shutdown(struct nbds *s, int err, const char *reason);

/* Time a connection in shutdown waits for further requests before closing. */
#define NBDS_DRAIN_QUIET_MS 200

/* Connections open right now (in handshake or transmission). */
unsigned nbds_clients(struct nbds *s);

/*
 * Stop listening, disconnect every client, join all threads and free.
 * Blocks until every connection thread has returned, which includes one
 * waiting inside the block layer: resume or fence a paused tracking layer
 * first.  The exported blks are not touched.  Accepts NULL.
 */
void nbds_free(struct nbds *s);

#endif
