/* SPDX-License-Identifier: MIT */
/*
 * TLS credentials and sessions over GnuTLS; see tls.h.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"

/*
 * TLS 1.3 only.  AES-128-GCM first: it is TLS 1.3's mandatory cipher, runs
 * on AES-NI, and is the one a PSK can use at all besides ChaCha20 (GnuTLS
 * binds external PSKs to SHA-256), which would otherwise be picked and
 * costs three times as much CPU here.  PSK keeps (EC)DHE for forward
 * secrecy where the peer offers it, and plain PSK for peers that do not.
 */
#define PRIORITY_CIPHERS "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define PRIORITY_X509	 "NORMAL:-VERS-ALL:+VERS-TLS1.3:" PRIORITY_CIPHERS
#define PRIORITY_PSK	 PRIORITY_X509 ":+ECDHE-PSK:+DHE-PSK:+PSK"

#define PSK_FILE_MAX (64 * 1024) /* bytes */
#define PSK_ID_MAX   128	 /* bytes of an identity */
#define PSK_KEY_MAX  64		 /* bytes of a key (128 hex digits) */
#define PSK_KEY_MIN  16		 /* 128 bits */
#define PSK_MAX_KEYS 256
#define AUTHZ_MAX    64 /* entries in --tls-authz */
#define PEER_ID_MAX  512

struct psk_key {
	char id[PSK_ID_MAX + 1];
	uint8_t key[PSK_KEY_MAX];
	size_t keylen;
};

struct tls_creds {
	enum tls_role role;
	bool psk;
	gnutls_priority_t prio;
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_psk_client_credentials_t psk_client;
	struct psk_key *keys;
	unsigned nkeys;
	char *authz_buf; /* owned; authz[] point into it */
	const char *authz[AUTHZ_MAX];
	unsigned nauthz;
	char hostname[256]; /* --tls-hostname, "" if none */
};

struct tls_session {
	struct tls_creds *c;
	gnutls_session_t g;
	int fd;
	/* Held by whoever is receiving: GnuTLS allows one sender and one
	 * receiver at a time, and a failed send looks for the peer's alert
	 * (tls_send) while another thread may be receiving. */
	pthread_mutex_t rlock;
	bool send_again; /* the last send returned EAGAIN with a record queued */
	/* What the last receive found after the bytes it returned, for the
	 * next (under rlock): GnuTLS ends the session at the first failure
	 * or premature end, and would only say so if asked again. */
	int recv_next;	    /* 0: ask GnuTLS; 1: the end; else the GnuTLS error */
	bool refused_authz; /* a PSK identity was refused by the authz list */
	char peer_id[PEER_ID_MAX];
};

bool tls_options_enabled(const struct tls_options *o)
{
	return o && (o->psk_file || o->x509_dir);
}

/* ---- files ------------------------------------------------------------------ */

/* Open a file that must be a regular file; a key file must also be
 * private to its owner.  Returns the descriptor or a negative errno. */
static int open_checked(const char *path, bool key, struct stat *sb)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return err_set(errno, "cannot open TLS file %s: %s", path, strerror(errno));
	if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
		close(fd);
		return err_set(EINVAL, "TLS file %s is not a regular file", path);
	}
	if (key && (sb->st_mode & 077)) {
		close(fd);
		return err_set(EPERM,
			       "TLS key file %s is accessible by group or others (mode %04o): "
			       "make it private with chmod 600 %s",
			       path, (unsigned)(sb->st_mode & 07777), path);
	}
	return fd;
}

static int check_file(const char *path, bool key)
{
	struct stat sb;
	int fd = open_checked(path, key, &sb);

	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* One "identity:hexkey" line (without its newline) into k. */
static int parse_psk_line(const char *path, unsigned lineno, const char *line, size_t len,
			  struct psk_key *k)
{
	const char *colon = memchr(line, ':', len);
	size_t idlen, hexlen;

	if (!colon)
		return err_set(EINVAL, "%s line %u: expected IDENTITY:HEXKEY", path, lineno);
	idlen = (size_t)(colon - line);
	hexlen = len - idlen - 1;
	if (idlen == 0 || idlen > PSK_ID_MAX)
		return err_set(EINVAL, "%s line %u: the identity must be 1 to %d bytes", path,
			       lineno, PSK_ID_MAX);
	for (size_t i = 0; i < idlen; i++)
		if ((unsigned char)line[i] < 0x21 || (unsigned char)line[i] > 0x7e)
			return err_set(EINVAL,
				       "%s line %u: the identity may hold only printable ASCII "
				       "without spaces",
				       path, lineno);
	if (hexlen % 2 || hexlen / 2 < PSK_KEY_MIN || hexlen / 2 > PSK_KEY_MAX)
		return err_set(EINVAL,
			       "%s line %u: the key must be %d to %d bytes written as an even "
			       "number of hex digits (e.g. from `psktool` or `openssl rand -hex "
			       "32`)",
			       path, lineno, PSK_KEY_MIN, PSK_KEY_MAX);
	for (size_t i = 0; i < hexlen; i += 2) {
		int hi = hexval(colon[1 + i]), lo = hexval(colon[2 + i]);

		if (hi < 0 || lo < 0)
			return err_set(EINVAL, "%s line %u: the key is not hexadecimal", path,
				       lineno);
		k->key[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(k->id, line, idlen);
	k->id[idlen] = '\0';
	k->keylen = hexlen / 2;
	return 0;
}

static int load_psk_file(struct tls_creds *c, const char *path)
{
	struct stat sb;
	char *buf;
	ssize_t n;
	size_t pos = 0, got = 0;
	unsigned lineno = 0;
	int fd = open_checked(path, true, &sb), r = 0;

	if (fd < 0)
		return fd;
	if (sb.st_size > PSK_FILE_MAX) {
		close(fd);
		return err_set(EFBIG, "PSK file %s is larger than %d bytes", path, PSK_FILE_MAX);
	}
	buf = malloc(PSK_FILE_MAX + 1);
	c->keys = calloc(PSK_MAX_KEYS, sizeof(*c->keys));
	if (!buf || !c->keys) {
		close(fd);
		free(buf);
		return err_set(ENOMEM, "no memory for the PSK file");
	}
	while (got < PSK_FILE_MAX && (n = read(fd, buf + got, PSK_FILE_MAX - got)) > 0)
		got += (size_t)n;
	close(fd);
	while (pos < got && r == 0) {
		char *nl = memchr(buf + pos, '\n', got - pos);
		size_t end = nl ? (size_t)(nl - buf) : got, len = end - pos;

		lineno++;
		if (len && buf[pos + len - 1] == '\r')
			len--;
		if (len && buf[pos] != '#') {
			if (c->nkeys == PSK_MAX_KEYS)
				r = err_set(EINVAL, "%s: more than %d keys", path, PSK_MAX_KEYS);
			else
				r = parse_psk_line(path, lineno, buf + pos, len,
						   &c->keys[c->nkeys++]);
		}
		pos = end + 1;
	}
	explicit_bzero(buf, PSK_FILE_MAX + 1);
	free(buf);
	if (r == 0 && c->nkeys == 0)
		r = err_set(EINVAL, "PSK file %s holds no IDENTITY:HEXKEY line", path);
	return r;
}

/* ---- credentials -------------------------------------------------------------- */

static int gnutls_fail(int gr, const char *what)
{
	return err_set(EINVAL, "%s: %s", what, gnutls_strerror(gr));
}

static int psk_server_key(gnutls_session_t g, const gnutls_datum_t *user, gnutls_datum_t *key)
{
	struct tls_session *s = gnutls_session_get_ptr(g);
	struct tls_creds *c = s->c;
	size_t len = user ? user->size : 0;

	snprintf(s->peer_id, sizeof(s->peer_id), "%.*s", (int)MIN(len, PSK_ID_MAX),
		 user ? (const char *)user->data : "");
	for (unsigned i = 0; i < c->nkeys; i++) {
		const struct psk_key *k = &c->keys[i];

		if (strlen(k->id) != len || memcmp(k->id, user->data, len) != 0)
			continue;
		if (c->nauthz) {
			bool ok = false;

			for (unsigned a = 0; a < c->nauthz && !ok; a++)
				ok = strcmp(c->authz[a], k->id) == 0;
			if (!ok) {
				s->refused_authz = true;
				return -1;
			}
		}
		key->data = gnutls_malloc(k->keylen);
		if (!key->data)
			return -1;
		memcpy(key->data, k->key, k->keylen);
		key->size = (unsigned)k->keylen;
		return 0;
	}
	return -1;
}

static int parse_authz(struct tls_creds *c, const char *list)
{
	char *p, *save = NULL;

	c->authz_buf = strdup(list);
	if (!c->authz_buf)
		return err_set(ENOMEM, "no memory");
	/* A DN holds commas itself: entries are separated by ";" when the
	 * list contains an "=", else by ",". */
	for (p = strtok_r(c->authz_buf, strchr(list, '=') ? ";" : ",", &save); p;
	     p = strtok_r(NULL, strchr(list, '=') ? ";" : ",", &save)) {
		while (*p == ' ')
			p++;
		if (!*p)
			continue;
		if (c->nauthz == AUTHZ_MAX)
			return err_set(EINVAL, "--tls-authz: more than %d entries", AUTHZ_MAX);
		c->authz[c->nauthz++] = p;
	}
	if (!c->nauthz)
		return err_set(EINVAL, "--tls-authz: no identity given");
	return 0;
}

static int load_x509(struct tls_creds *c, const char *dir)
{
	const char *who = c->role == TLS_SERVER ? "server" : "client";
	char ca[4096], crl[4096], cert[4096], key[4096];
	struct stat sb;
	int gr, r;

	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(crl, sizeof(crl), "%s/ca-crl.pem", dir);
	snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, who);
	snprintf(key, sizeof(key), "%s/%s-key.pem", dir, who);
	r = check_file(ca, false);
	if (r == 0)
		r = check_file(cert, false);
	if (r == 0)
		r = check_file(key, true);
	if (r < 0)
		return r;
	gr = gnutls_certificate_allocate_credentials(&c->x509);
	if (gr < 0)
		return gnutls_fail(gr, "TLS credentials");
	gr = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
	if (gr <= 0)
		return err_set(EINVAL, "%s: %s", ca,
			       gr == 0 ? "no CA certificate in it" : gnutls_strerror(gr));
	if (stat(crl, &sb) == 0) {
		gr = gnutls_certificate_set_x509_crl_file(c->x509, crl, GNUTLS_X509_FMT_PEM);
		if (gr < 0)
			return gnutls_fail(gr, crl);
	}
	gr = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (gr < 0)
		return err_set(EINVAL, "%s with %s: %s", cert, key, gnutls_strerror(gr));
	return 0;
}

int tls_creds_new(const struct tls_options *o, enum tls_role role, struct tls_creds **out)
{
	struct tls_creds *c;
	const char *err_pos = NULL;
	int gr, r = 0;

	*out = NULL;
	if (!tls_options_enabled(o)) {
		if (o && o->authz)
			return err_set(EINVAL, "--tls-authz needs --tls-psk or --tls-creds");
		return 0;
	}
	if (o->psk_file && o->x509_dir)
		return err_set(EINVAL, "--tls-psk and --tls-creds exclude each other");
	c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(ENOMEM, "no memory for TLS credentials");
	c->role = role;
	c->psk = o->psk_file != NULL;
	if (o->hostname) {
		if (strlen(o->hostname) >= sizeof(c->hostname) || !*o->hostname)
			r = err_set(EINVAL, "--tls-hostname: invalid name");
		else
			snprintf(c->hostname, sizeof(c->hostname), "%s", o->hostname);
	}
	if (r == 0 && o->authz)
		r = parse_authz(c, o->authz);
	if (r == 0 && c->psk) {
		r = load_psk_file(c, o->psk_file);
		if (r == 0 && role == TLS_SERVER) {
			gr = gnutls_psk_allocate_server_credentials(&c->psk_server);
			if (gr == 0)
				gnutls_psk_set_server_credentials_function2(c->psk_server,
									    psk_server_key);
		} else if (r == 0) {
			gnutls_datum_t k = { .data = c->keys[0].key,
					     .size = (unsigned)c->keys[0].keylen };

			gr = gnutls_psk_allocate_client_credentials(&c->psk_client);
			if (gr == 0)
				gr = gnutls_psk_set_client_credentials(c->psk_client, c->keys[0].id,
								       &k, GNUTLS_PSK_KEY_RAW);
		}
		if (r == 0 && gr < 0)
			r = gnutls_fail(gr, "PSK credentials");
	} else if (r == 0) {
		r = load_x509(c, o->x509_dir);
	}
	if (r == 0) {
		gr =
		    gnutls_priority_init(&c->prio, c->psk ? PRIORITY_PSK : PRIORITY_X509, &err_pos);
		if (gr < 0)
			r = gnutls_fail(gr, "TLS priority");
	}
	if (r < 0) {
		tls_creds_free(c);
		return r;
	}
	*out = c;
	return 0;
}

void tls_creds_free(struct tls_creds *c)
{
	if (!c)
		return;
	if (c->prio)
		gnutls_priority_deinit(c->prio);
	if (c->x509)
		gnutls_certificate_free_credentials(c->x509);
	if (c->psk_server)
		gnutls_psk_free_server_credentials(c->psk_server);
	if (c->psk_client)
		gnutls_psk_free_client_credentials(c->psk_client);
	if (c->keys) {
		explicit_bzero(c->keys, PSK_MAX_KEYS * sizeof(*c->keys));
		free(c->keys);
	}
	free(c->authz_buf);
	free(c);
}

const char *tls_creds_kind(const struct tls_creds *c)
{
	return c->psk ? "psk" : "x509";
}

const char *tls_creds_psk_identity(const struct tls_creds *c)
{
	return c && c->psk && c->role == TLS_CLIENT && c->nkeys ? c->keys[0].id : NULL;
}

/* ---- sessions ------------------------------------------------------------------ */

static bool is_ip_literal(const char *h)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, h, &a4) == 1 || inet_pton(AF_INET6, h, &a6) == 1;
}

int tls_session_new(struct tls_creds *c, int fd, const char *hostname, struct tls_session **out)
{
	struct tls_session *s = calloc(1, sizeof(*s));
	/* NO_SIGNAL: a peer gone mid-send is an error, not a SIGPIPE (not every
	 * program using this library ignores it). */
	unsigned flags = GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS | GNUTLS_NO_SIGNAL;
	int gr;

	if (!s)
		return err_set(ENOMEM, "no memory for a TLS session");
	s->c = c;
	s->fd = fd;
	pthread_mutex_init(&s->rlock, NULL);
	if (c->hostname[0])
		hostname = c->hostname;
	gr = gnutls_init(&s->g, flags | (c->role == TLS_SERVER ? GNUTLS_SERVER : GNUTLS_CLIENT));
	if (gr < 0) {
		pthread_mutex_destroy(&s->rlock);
		free(s);
		return gnutls_fail(gr, "TLS session");
	}
	gnutls_session_set_ptr(s->g, s);
	gr = gnutls_priority_set(s->g, c->prio);
	if (gr == 0 && c->psk)
		gr = gnutls_credentials_set(s->g, GNUTLS_CRD_PSK,
					    c->role == TLS_SERVER ? (void *)c->psk_server
								  : (void *)c->psk_client);
	else if (gr == 0)
		gr = gnutls_credentials_set(s->g, GNUTLS_CRD_CERTIFICATE, c->x509);
	if (gr == 0 && !c->psk) {
		if (c->role == TLS_SERVER) {
			gnutls_certificate_server_set_request(s->g, GNUTLS_CERT_REQUIRE);
			gnutls_session_set_verify_cert(s->g, NULL, 0);
		} else {
			if (!hostname || !*hostname) {
				tls_session_free(s);
				return err_set(EINVAL, "X.509 needs the server's host name "
						       "(--tls-hostname)");
			}
			if (!is_ip_literal(hostname))
				gr = gnutls_server_name_set(s->g, GNUTLS_NAME_DNS, hostname,
							    strlen(hostname));
			gnutls_session_set_verify_cert(s->g, hostname, 0);
		}
	}
	if (gr < 0) {
		tls_session_free(s);
		return gnutls_fail(gr, "TLS session");
	}
	gnutls_transport_set_int(s->g, fd);
	*out = s;
	return 0;
}

void tls_session_free(struct tls_session *s)
{
	if (!s)
		return;
	gnutls_deinit(s->g);
	pthread_mutex_destroy(&s->rlock);
	free(s);
}

static int peer_dn(struct tls_session *s)
{
	unsigned n = 0;
	const gnutls_datum_t *certs = gnutls_certificate_get_peers(s->g, &n);
	gnutls_x509_crt_t crt;
	gnutls_datum_t dn = { 0 };
	int gr;

	if (!certs || !n)
		return err_set(EACCES, "the peer sent no certificate");
	gr = gnutls_x509_crt_init(&crt);
	if (gr == 0)
		gr = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (gr == 0)
		gr = gnutls_x509_crt_get_dn3(crt, &dn, 0);
	if (gr == 0)
		snprintf(s->peer_id, sizeof(s->peer_id), "%.*s", (int)dn.size, (char *)dn.data);
	gnutls_free(dn.data);
	gnutls_x509_crt_deinit(crt);
	return gr < 0 ? gnutls_fail(gr, "the peer's certificate") : 0;
}

static int handshake_error(struct tls_session *s, int gr, const char *peer)
{
	char esc[STR_ESCAPE_CAP(PEER_ID_MAX)];

	if (!peer)
		peer = "the peer";
	if (s->refused_authz) {
		(void)gnutls_alert_send(s->g, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
		str_escape(esc, sizeof(esc), s->peer_id);
		return err_set(EACCES,
			       "TLS peer %s with PSK identity '%s' is not authorised "
			       "(--tls-authz)",
			       peer, esc);
	}
	/* Tell a TLS peer why, best effort (the socket is non-blocking); one
	 * that does not speak TLS just sees the connection close. */
	switch (gr) {
	case GNUTLS_E_FATAL_ALERT_RECEIVED:
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PUSH_ERROR:
	case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
	case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
	case GNUTLS_E_UNEXPECTED_PACKET:
		break;
	case GNUTLS_E_KEYFILE_ERROR: /* our PSK callback said no */
		(void)gnutls_alert_send(s->g, GNUTLS_AL_FATAL, GNUTLS_A_UNKNOWN_PSK_IDENTITY);
		break;
	default:
		(void)gnutls_alert_send_appropriate(s->g, gr);
	}
	switch (gr) {
	case GNUTLS_E_FATAL_ALERT_RECEIVED: {
		gnutls_alert_description_t a = gnutls_alert_get(s->g);
		const char *hint = "";

		if (a == GNUTLS_A_ILLEGAL_PARAMETER || a == GNUTLS_A_DECRYPT_ERROR)
			hint = s->c->psk ? " (is the key the same on both sides?)" : "";
		else if (a == GNUTLS_A_UNKNOWN_PSK_IDENTITY || a == GNUTLS_A_ACCESS_DENIED)
			hint = " (an identity it does not know or allow?)";
		else if (a == GNUTLS_A_BAD_CERTIFICATE || a == GNUTLS_A_UNKNOWN_CA ||
			 a == GNUTLS_A_CERTIFICATE_UNKNOWN)
			hint = " (our certificate: signed by a CA it trusts?)";
		return err_set(EACCES, "TLS handshake with %s: the peer refused it: %s%s", peer,
			       gnutls_alert_get_name(a), hint);
	}
	case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
	case GNUTLS_E_NO_CIPHER_SUITES:
		return err_set(EACCES,
			       "TLS handshake with %s: the peer uses the other kind of credentials "
			       "(X.509 against a pre-shared key)",
			       peer);
	case GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER:
		if (s->c->psk)
			return err_set(EACCES,
				       "TLS handshake with %s: the keys do not match (a wrong "
				       "pre-shared key)",
				       peer);
		return err_set(EPROTO, "TLS handshake with %s: %s", peer, gnutls_strerror(gr));
	case GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
	case GNUTLS_E_CERTIFICATE_ERROR: {
		gnutls_datum_t why = { 0 };
		unsigned st = gnutls_session_get_verify_cert_status(s->g);
		int e;

		e = gnutls_certificate_verification_status_print(st, GNUTLS_CRT_X509, &why, 0);
		e = err_set(EACCES, "TLS handshake with %s: the certificate was refused: %s", peer,
			    e == 0 ? (char *)why.data : gnutls_strerror(gr));
		gnutls_free(why.data);
		return e;
	}
	case GNUTLS_E_PREMATURE_TERMINATION:
	case GNUTLS_E_PULL_ERROR:
	case GNUTLS_E_PUSH_ERROR:
		return err_set(ECONNRESET,
			       "TLS handshake with %s: the connection was closed (does the peer "
			       "use TLS, with the same kind of credentials and the same key?)",
			       peer);
	case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
	case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
	case GNUTLS_E_UNEXPECTED_PACKET:
		return err_set(EPROTO,
			       "TLS handshake with %s: the peer does not speak TLS 1.3 "
			       "(%s)",
			       peer, gnutls_strerror(gr));
	case GNUTLS_E_KEYFILE_ERROR:
		str_escape(esc, sizeof(esc), s->peer_id);
		return err_set(EACCES, "TLS handshake with %s: unknown PSK identity '%s'", peer,
			       esc);
	case GNUTLS_E_DECRYPTION_FAILED:
		return err_set(EACCES, "TLS handshake with %s: the keys do not match (%s)", peer,
			       gnutls_strerror(gr));
	default:
		return err_set(EPROTO, "TLS handshake with %s: %s", peer, gnutls_strerror(gr));
	}
}

static int check_authz(struct tls_session *s, const char *peer)
{
	struct tls_creds *c = s->c;
	char esc[STR_ESCAPE_CAP(PEER_ID_MAX)];

	if (!c->psk) {
		int r = peer_dn(s);

		if (r < 0)
			return r;
	} else if (c->role == TLS_CLIENT) {
		snprintf(s->peer_id, sizeof(s->peer_id), "psk:%s", c->keys[0].id);
		return 0; /* the server proved it holds our key */
	}
	if (!c->nauthz)
		return 0;
	for (unsigned i = 0; i < c->nauthz; i++)
		if (strcmp(c->authz[i], s->peer_id) == 0)
			return 0;
	str_escape(esc, sizeof(esc), s->peer_id);
	return err_set(EACCES, "TLS peer %s ('%s') is not authorised (--tls-authz)",
		       peer ? peer : "", esc);
}

int tls_handshake(struct tls_session *s, int timeout_ms, struct cancel *cancel, const char *peer)
{
	uint64_t deadline = timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		int gr = gnutls_handshake(s->g), r;

		if (gr == 0)
			break;
		if (gr != GNUTLS_E_AGAIN && gr != GNUTLS_E_INTERRUPTED) {
			if (!gnutls_error_is_fatal(gr))
				continue;
			return handshake_error(s, gr, peer);
		}
		r = cancel_poll(cancel, s->fd, gnutls_record_get_direction(s->g) ? POLLOUT : POLLIN,
				deadline);
		if (r == -ECANCELED)
			return err_set(ECANCELED, "cancelled during the TLS handshake");
		if (r == 0)
			return err_set(ETIMEDOUT, "TLS handshake with %s: no answer within %.1f s",
				       peer ? peer : "the peer", timeout_ms / 1000.0);
		if (r < 0)
			return err_set(-r, "poll: %s", strerror(-r));
	}
	if (gnutls_protocol_get_version(s->g) != GNUTLS_TLS1_3)
		return err_set(EPROTO, "TLS handshake with %s: not TLS 1.3", peer ? peer : "");
	return check_authz(s, peer);
}

const char *tls_session_peer_id(const struct tls_session *s)
{
	return s->peer_id;
}

static ssize_t io_error(struct tls_session *s, ssize_t gr, const char *what)
{
	if (gr == GNUTLS_E_AGAIN || gr == GNUTLS_E_INTERRUPTED)
		return -EAGAIN;
	if (gr == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		gnutls_alert_description_t a = gnutls_alert_get(s->g);

		return err_set(EACCES, "the peer ended TLS: %s%s", gnutls_alert_get_name(a),
			       a == GNUTLS_A_BAD_CERTIFICATE || a == GNUTLS_A_UNKNOWN_CA ||
				       a == GNUTLS_A_CERTIFICATE_UNKNOWN
				   ? " (our certificate: signed by a CA it trusts?)"
			       : a == GNUTLS_A_ACCESS_DENIED ? " (not authorised there)"
							     : "");
	}
	return err_set(EPROTO, "TLS %s: %s", what, gnutls_strerror((int)gr));
}

ssize_t tls_send(struct tls_session *s, const void *buf, size_t len)
{
	size_t done = 0;
	ssize_t gr;

	if (s->send_again) {
		/* A record was queued: flush it.  GnuTLS answers with its
		 * plaintext size, which the caller offers again first. */
		gr = gnutls_record_send(s->g, NULL, 0);
		if (gr < 0)
			return io_error(s, gr, "send");
		s->send_again = false;
		done = (size_t)gr;
	}
	while (done < len) {
		gr = gnutls_record_send(s->g, (const uint8_t *)buf + done, len - done);
		if (gr == GNUTLS_E_AGAIN || gr == GNUTLS_E_INTERRUPTED) {
			s->send_again = true;
			break;
		}
		if (gr < 0 && done)
			return (ssize_t)done; /* the error comes again next time */
		if (gr < 0) {
			/* The peer may have said why before closing: a refused
			 * certificate is only known once the handshake is over
			 * for this side. */
			uint8_t sink[256];
			ssize_t rr = 0;

			/* Unless another thread is receiving: it will see the
			 * alert itself. */
			if (pthread_mutex_trylock(&s->rlock) == 0) {
				rr = gnutls_record_recv(s->g, sink, sizeof(sink));
				pthread_mutex_unlock(&s->rlock);
			}
			return io_error(s, rr == GNUTLS_E_FATAL_ALERT_RECEIVED ? rr : gr, "send");
		}
		done += (size_t)gr;
	}
	return done ? (ssize_t)done : -EAGAIN;
}

static ssize_t recv_locked(struct tls_session *s, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t gr;

		if (s->recv_next)
			gr = s->recv_next == 1 ? 0 : s->recv_next;
		else
			gr = gnutls_record_recv(s->g, (uint8_t *)buf + done, len - done);
		if (gr > 0) {
			done += (size_t)gr;
			continue;
		}
		/* A peer that closes without close_notify (QEMU 7.2 does)
		 * ends the stream: the formats carry their own end marks. */
		if (gr == 0 || gr == GNUTLS_E_PREMATURE_TERMINATION)
			s->recv_next = 1;
		else if (gr != GNUTLS_E_AGAIN && gr != GNUTLS_E_INTERRUPTED)
			s->recv_next = (int)gr;
		if (done)
			break; /* report the end or the error on the next call */
		if (s->recv_next == 1)
			return 0;
		return io_error(s, gr, "receive");
	}
	return (ssize_t)done;
}

ssize_t tls_recv(struct tls_session *s, void *buf, size_t len)
{
	ssize_t n;

	pthread_mutex_lock(&s->rlock);
	n = recv_locked(s, buf, len);
	pthread_mutex_unlock(&s->rlock);
	return n;
}

size_t tls_pending(struct tls_session *s)
{
	return gnutls_record_check_pending(s->g);
}

void tls_bye(struct tls_session *s)
{
	(void)gnutls_bye(s->g, GNUTLS_SHUT_WR);
}
