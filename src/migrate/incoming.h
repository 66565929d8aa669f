/* SPDX-License-Identifier: MIT */
/*
 * The destination's listener: wait on a listening socket for the real
 * source, outliving every other peer that reaches the port first.
 *
 * Each connection is tried in its own thread: the TLS handshake and the
 * authorisation list (when TLS is on), then the source's handshake (HELLO,
 * or QEMU's header).  The first connection whose handshake is valid claims
 * the migration (dst_params.claim) and runs it; a connection that fails
 * before any byte reached a device is logged in one line and forgotten,
 * and the wait goes on.  A migration that failed after writing ends the
 * wait with its error.  While one runs, other connections are refused.
 *
 * Bounded: at most max_pending connections are tried at once (more are
 * closed at once), each has timeout_ms to complete its handshakes, and
 * after max_failures failed connections the wait ends with an error.
 */
#ifndef BLKMIG_MIGRATE_INCOMING_H
#define BLKMIG_MIGRATE_INCOMING_H

#include "common/cancel.h"
#include "migrate.h"

struct tls_creds;

#define INCOMING_MAX_PENDING  4
#define INCOMING_MAX_FAILURES 64

struct incoming_params {
	int lfd;	       /* listening socket; not owned */
	struct tls_creds *tls; /* NULL: plain TCP; not owned */
	int timeout_ms;	       /* the transport's idle timeout, and each handshake's limit */
	unsigned max_pending;  /* 0: INCOMING_MAX_PENDING */
	unsigned max_failures; /* 0: INCOMING_MAX_FAILURES */
	/* When the migration's connection fails (the link, not a refusal),
	 * wait this long for its source to reconnect and resume it (0: the
	 * wait ends with the failure). */
	uint64_t retry_ns;
	/* One line per refused connection (without "blkmig: " or newline);
	 * may be NULL.  Called with the listener's lock held: one at a time. */
	void (*log)(void *user, const char *line);
	void *log_user;
};

/*
 * Run one incoming migration as dst_run() does (p->claim must be NULL: it
 * is this listener's), over the first connection that proves to be the
 * source.  0 when it completed; a negative errno when it failed, when
 * cancel fired, or when max_failures connections failed.  st (optional)
 * receives the migration's figures.
 */
int incoming_run(const struct dst_params *p, const struct incoming_params *ip,
		 struct cancel *cancel, struct mig_stats *st);

#endif
