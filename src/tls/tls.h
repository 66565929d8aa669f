/* SPDX-License-Identifier: MIT */
/*
 * TLS 1.3 with GnuTLS: credentials loaded once from the operator's files,
 * and sessions over non-blocking sockets for the migration transport
 * (src/transport/tls.c) and the NBD server's STARTTLS.
 *
 * Credentials are either a pre-shared key file of "identity:hexkey" lines
 * (the format qemu's tls-creds-psk and nbdkit's --tls-psk read), or an
 * X.509 directory laid out as qemu's tls-creds-x509 expects: ca-cert.pem,
 * server-cert.pem and server-key.pem (a server), client-cert.pem and
 * client-key.pem (a client), ca-crl.pem if present.  Both ends prove who
 * they are: a server requires a client certificate, a client checks the
 * server's certificate against the CA and its host name.  Only TLS 1.3 is
 * negotiated.  Key files readable by group or others are refused.
 *
 * An authorisation list (tls_options.authz) names the peers allowed: PSK
 * identities, or certificate distinguished names in RFC 4514 form
 * ("CN=src.example,O=Example").  A handshake with any other peer fails.
 *
 * Every function returns 0 or a negative errno with the message set
 * (common/error.h).  A session is used by at most one sending and one
 * receiving thread at a time (GnuTLS allows exactly that).
 */
#ifndef BLKMIG_TLS_TLS_H
#define BLKMIG_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cancel.h"

/* What the operator gave; every field may be NULL. */
struct tls_options {
	const char *psk_file; /* --tls-psk FILE */
	const char *x509_dir; /* --tls-creds DIR */
	const char *authz;    /* --tls-authz ID[,ID...] */
	/* A client's name for the server, checked against its certificate
	 * (--tls-hostname); NULL: the host part of the address dialled. */
	const char *hostname;
};

enum tls_role { TLS_CLIENT, TLS_SERVER };

struct tls_creds;
struct tls_session;

/* Whether any credentials were given (then TLS is on). */
bool tls_options_enabled(const struct tls_options *o);

/*
 * Check and load the credentials for one role: files exist, parse, key
 * files are private to their owner; a PSK client uses the file's first
 * identity.  *out is NULL (and 0 returned) when o has no credentials.
 */
int tls_creds_new(const struct tls_options *o, enum tls_role role, struct tls_creds **out);
void tls_creds_free(struct tls_creds *c); /* accepts NULL */
/* "psk" or "x509". */
const char *tls_creds_kind(const struct tls_creds *c);
/* The identity a PSK client presents (the file's first); NULL otherwise. */
const char *tls_creds_psk_identity(const struct tls_creds *c);

/*
 * A session over fd (non-blocking, not owned).  A client checks the
 * server's certificate against 'hostname' (may be NULL with PSK; the
 * credentials' own hostname option wins).
 */
int tls_session_new(struct tls_creds *c, int fd, const char *hostname, struct tls_session **out);
void tls_session_free(struct tls_session *s); /* accepts NULL */

/*
 * Run the handshake to its end, waiting on fd for at most timeout_ms in all
 * (-1: no limit) and ending with -ECANCELED once cancel (may be NULL)
 * fires; then check the peer against the authorisation list.  The error
 * message names the peer's address (peer, may be NULL) and the reason.
 */
int tls_handshake(struct tls_session *s, int timeout_ms, struct cancel *cancel, const char *peer);

/* The authenticated peer: PSK identity or certificate DN ("" before the
 * handshake).  Raw bytes from the peer: escape before printing. */
const char *tls_session_peer_id(const struct tls_session *s);

/* One non-blocking attempt: bytes moved, -EAGAIN, 0 at the end of the
 * stream (recv), or a negative errno with the message set.  After send
 * returned -EAGAIN, the next send must offer the same bytes first (the
 * transport's writer always does). */
ssize_t tls_send(struct tls_session *s, const void *buf, size_t len);
ssize_t tls_recv(struct tls_session *s, void *buf, size_t len);
/* Decrypted bytes waiting inside the session (poll does not see them). */
size_t tls_pending(struct tls_session *s);
/* Send close_notify, best effort, without waiting. */
void tls_bye(struct tls_session *s);

#endif
