/* SPDX-License-Identifier: MIT */
/*
 * NBD server: exports block devices (struct blk, usually a tracking layer
 * over a file) to real NBD clients -- qemu, qemu-img, qemu-io, nbdcopy,
 * nbdinfo, the kernel's nbd-client -- and lets the migration engine stop
 * them at switch-over.  Fixed newstyle negotiation only, no TLS.
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

/* Longest export name accepted (the protocol's string limit), in bytes. */
#define NBDS_MAX_NAME 4096
/* Connections served at once; more are closed right after accept. */
#define NBDS_MAX_CLIENTS 128
/* A client must reach transmission (GO/EXPORT_NAME) within this time. */
#define NBDS_HANDSHAKE_TIMEOUT_MS 60000

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
