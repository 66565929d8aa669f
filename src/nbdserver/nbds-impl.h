/* SPDX-License-Identifier: MIT */
/*
 * Internal to the NBD server: the server and connection structs shared by
 * server.c (lifecycle, accept, socket I/O, the connection state machine),
 * handshake.c (greeting and option haggling) and requests.c (transmission).
 * Nothing outside src/nbdserver/ includes this.
 */
#ifndef BLKMIG_NBDSERVER_NBDS_IMPL_H
#define BLKMIG_NBDSERVER_NBDS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "server.h"

struct tls_session;

struct nbds_export {
	char *name; /* owned, NUL-terminated; never changes */
	size_t namelen;
	struct blk *blk; /* not owned */
	bool readonly;
};

/* Connections from one IP address (server.c's peer table). */
struct nbds_peer {
	char addr[64];	 /* numeric, without the port */
	unsigned conns;	 /* open, any phase (refused ones not counted) */
	unsigned unauth; /* of those, not yet authenticated */
};

struct nbds {
	pthread_mutex_t lock; /* protects everything up to 'acc' */
	struct nbds_export **exports;
	size_t nexports, exports_cap;
	struct acc *acc;	 /* the connections, once listening */
	char *refuse;		 /* owned; non-NULL while refusing */
	bool refusing;		 /* refuse may be NULL after a failed strdup */
	char *shut_reason;	 /* owned; set with shut_err */
	struct nbds_peer *peers; /* one entry per address with connections */
	size_t npeers, peers_cap;
	unsigned unauth;	    /* connections not yet authenticated, all peers */
	pthread_cond_t unauth_cond; /* an unauth slot was given back, or a kick */
	unsigned nrefusing;	    /* connections being told they are over a limit */
	pthread_mutex_t log_lock;   /* one log call at a time; guards the three below */
	uint64_t log_window_ns;	    /* start of the current minute of logging */
	unsigned log_lines, log_dropped;

	/* Set before nbds_listen(), read-only after. */
	struct tls_creds *tls; /* not owned; NULL: no TLS */
	struct nbds_limits limits;
	void (*log)(void *user, const char *line);
	void *log_user;

	_Atomic int shut_err; /* 0, or the positive errno of nbds_shutdown() */
	int lfd;	      /* listening socket, -1 before nbds_listen() */
	int shut_pipe[2];     /* readable once nbds_shutdown() was called: wakes clients */
};

/*
 * A connection's life, in transition order.  Each step function returns
 * the next state; an error ends in CONN_CLOSE.
 */
enum conn_state {
	CONN_GREET,    /* send the greeting, read the client flags */
	CONN_OPTIONS,  /* option haggling: one option per step */
	CONN_TRANSMIT, /* transmission: one request and its reply per step */
	CONN_DRAIN,    /* after nbds_shutdown(): answer what is left with an error */
	CONN_CLOSE,    /* terminal: the thread tidies up and exits */
};

struct nbds_conn {
	struct nbds *srv;
	int fd;	       /* closed only after the thread was joined (conn_free) */
	char peer[80]; /* "ADDR:PORT" for messages */
	char addr[64]; /* the peer table's key */
	char *refusal; /* owned; non-NULL: over a limit, refuse every option */

	/* Owned by the connection's thread. */
	enum conn_state state;
	struct tls_session *tls;   /* after NBD_OPT_STARTTLS; every byte goes through it */
	bool unauth;		   /* holds an unauthenticated slot (peer's and server's) */
	bool kicked;		   /* nbds_free() wants it gone; server lock */
	bool released;		   /* left the peer table (conn_release) */
	uint64_t deadline_ns;	   /* handshake or request deadline; 0 for none */
	unsigned deadline_ms;	   /* how long it was set for, for the message */
	const char *deadline_what; /* what must finish by then, for the message */
	uint64_t drain_end_ns;
	bool saw_shutdown; /* stop watching shut_pipe */
	bool no_zeroes;	   /* client set NBD_FLAG_C_NO_ZEROES */
	bool structured;   /* NBD_OPT_STRUCTURED_REPLY acknowledged */
	/* Export the last NBD_OPT_SET_META_CONTEXT selected base:allocation
	 * for; NULL for none. */
	const struct nbds_export *meta_export;
	const struct nbds_export *exp; /* in transmission */
	uint16_t tflags;	       /* transmission flags sent for exp */
	bool meta;		       /* base:allocation usable with exp */
	uint8_t *buf;		       /* option data, write payload, read data */
	size_t buf_cap;
};

/* base:allocation's context id in SET_META_CONTEXT replies. */
#define NBDS_META_ALLOCATION_ID 1

/* ---- server.c ------------------------------------------------------------- */

/* The connection is authenticated (TLS handshake done, or, without TLS,
 * in transmission): it gives its unauthenticated slot back.  Idempotent. */
void nbds_authed(struct nbds_conn *c);
/* One line for the operator (nbds_set_log()), rate-limited. */
void nbds_log(struct nbds *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* From now on, reads and writes must finish within ms (0: no deadline);
 * what names the phase in the timeout's message (a string literal). */
void nbds_set_deadline(struct nbds_conn *c, unsigned ms, const char *what);
/* Set the socket non-blocking and run the TLS handshake within the
 * handshake deadline; 0, or a negative errno (the connection must close). */
int nbds_start_tls(struct nbds_conn *c);

/*
 * Read exactly len bytes: 0, -ECONNRESET at end of stream, -ETIMEDOUT past
 * the handshake deadline, or another negative errno.  Blocks (nbds_free()
 * wakes it by shutting the socket down).
 */
int nbds_read(struct nbds_conn *c, void *buf, size_t len);
/*
 * Wait for the next message: 1 when the socket is readable (data or end of
 * stream), 0 after timeout_ms (-1: none), -ESHUTDOWN when nbds_shutdown()
 * was called and this connection had not seen it yet (it is marked seen),
 * or a negative errno.
 */
int nbds_wait(struct nbds_conn *c, int timeout_ms);
/* Read and drop len bytes. */
int nbds_discard(struct nbds_conn *c, uint64_t len);
/* Write every byte of iov[0..n); more = further data follows at once. */
int nbds_writev(struct nbds_conn *c, const struct iovec *iov, int n, bool more);
int nbds_write(struct nbds_conn *c, const void *buf, size_t len);
/* Make c->buf at least len bytes; 0 or -ENOMEM. */
int nbds_buf_reserve(struct nbds_conn *c, size_t len);

/*
 * Look an export up by name (len bytes, not NUL-terminated); the empty
 * name falls back to the default export.  NULL if none.
 */
const struct nbds_export *nbds_find_export(struct nbds *s, const char *name, size_t len);
/*
 * Snapshot of the export list: *out is a malloc'd array the caller frees;
 * the exports themselves stay valid until nbds_free().
 */
int nbds_list_exports(struct nbds *s, const struct nbds_export ***out, size_t *n);

/*
 * Whether new clients are refused right now: 0 if not, else the option
 * reply error (NBD_REP_ERR_SHUTDOWN or NBD_REP_ERR_UNKNOWN) with the
 * reason copied into msg.
 */
uint32_t nbds_refused(struct nbds *s, char *msg, size_t cap);
/* The shutdown error (positive errno, 0 if none) and its reason. */
int nbds_shut_err(struct nbds *s, char *msg, size_t cap);

/* ---- handshake.c ---------------------------------------------------------- */

enum conn_state nbds_greet(struct nbds_conn *c);
enum conn_state nbds_option(struct nbds_conn *c);
/* Transmission flags for exp on this connection (depends on structured). */
uint16_t nbds_tflags(const struct nbds_conn *c, const struct nbds_export *exp);

/* ---- requests.c ----------------------------------------------------------- */

enum conn_state nbds_request(struct nbds_conn *c);
enum conn_state nbds_drain(struct nbds_conn *c);

#endif
