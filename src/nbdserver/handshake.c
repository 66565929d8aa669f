/* SPDX-License-Identifier: MIT */
/*
 * NBD handshake: the fixed newstyle greeting and option haggling, one
 * option per call of nbds_option(), up to NBD_OPT_GO or
 * NBD_OPT_EXPORT_NAME.  See nbd-protocol.h for the wire format.
 *
 * Policy, where the spec leaves a choice:
 *   - A client must set NBD_FLAG_C_FIXED_NEWSTYLE; unknown client flags, a
 *     bad option magic or more than NBD_MAX_OPTION bytes of option data
 *     end the connection (hard disconnect: we cannot resynchronise, and
 *     reading gigabytes of junk is not worth it).
 *   - NBD_OPT_INFO/GO always send NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE
 *     (1 / 4096 / 32 MiB): the 32 MiB maximum is not the protocol default,
 *     so it is announced whether or not the client asked; NBD_INFO_NAME
 *     when asked for.  Unknown information requests are ignored.
 *   - Meta contexts: only base:allocation exists.  LIST with no query or
 *     with "base:" or "base:allocation" lists it; SET selects it only with
 *     "base:allocation" and only once structured replies are on.  Queries
 *     in other namespaces match nothing; a query without a colon is
 *     NBD_REP_ERR_INVALID.  The selection counts only if GO/EXPORT_NAME
 *     then names the same export.
 *   - While refused (nbds_refuse): INFO/GO get NBD_REP_ERR_UNKNOWN with
 *     the reason; after nbds_shutdown every option but ABORT gets
 *     NBD_REP_ERR_SHUTDOWN with the reason.  EXPORT_NAME closes in both.
 *   - TLS (nbds_set_tls): FORCEDTLS mode.  Before STARTTLS every option
 *     but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD, EXPORT_NAME
 *     closes; this comes before the refusal and shutdown replies, so an
 *     unauthenticated client learns nothing about the server.  After the
 *     TLS handshake, whatever the plaintext phase negotiated is forgotten
 *     (nbdkit's CVE-2021-3716 kept structured replies across it); the
 *     client flags of the greeting stay.  Without credentials STARTTLS
 *     gets NBD_REP_ERR_POLICY.
 *   - A connection over a limit (server.h) gets NBD_REP_ERR_POLICY with
 *     the reason for every option but ABORT, STARTTLS included (no TLS
 *     handshake is spent on it); EXPORT_NAME closes.
 */
#include "nbds-impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "nbd-protocol.h"

/* Longest error message we put in an option reply. */
#define OPT_MSG_MAX 512
/* Export names quoted in messages are cut to this many bytes. */
#define NAME_QUOTE_MAX 256

/* A client's export name for a message (its reply, the debug log):
 * bounded and escaped (str_escape()), so it breaks no line. */
struct quoted {
	char s[STR_ESCAPE_CAP(NAME_QUOTE_MAX)];
};
static const char *quote_name(struct quoted *q, const void *p, size_t len)
{
	char raw[NAME_QUOTE_MAX + 1];

	len = MIN(len, NAME_QUOTE_MAX);
	memcpy(raw, p, len);
	raw[len] = '\0';
	return str_escape(q->s, sizeof(q->s), raw);
}

static const char *opt_name(uint32_t opt)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return "NBD_OPT_EXPORT_NAME";
	case NBD_OPT_ABORT:
		return "NBD_OPT_ABORT";
	case NBD_OPT_LIST:
		return "NBD_OPT_LIST";
	case NBD_OPT_STARTTLS:
		return "NBD_OPT_STARTTLS";
	case NBD_OPT_INFO:
		return "NBD_OPT_INFO";
	case NBD_OPT_GO:
		return "NBD_OPT_GO";
	case NBD_OPT_STRUCTURED_REPLY:
		return "NBD_OPT_STRUCTURED_REPLY";
	case NBD_OPT_LIST_META_CONTEXT:
		return "NBD_OPT_LIST_META_CONTEXT";
	case NBD_OPT_SET_META_CONTEXT:
		return "NBD_OPT_SET_META_CONTEXT";
	}
	return "unknown option";
}

/* ---- replies ---------------------------------------------------------------- */

/* One option reply: header, then a and b (either may be empty). */
static int opt_reply2(struct nbds_conn *c, uint32_t opt, uint32_t type, const void *a, size_t alen,
		      const void *b, size_t blen)
{
	uint8_t h[NBD_REP_HDR_LEN];
	struct iovec iov[3] = {
		{ .iov_base = h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)a, .iov_len = alen },
		{ .iov_base = (void *)b, .iov_len = blen },
	};

	nbd_opt_reply_encode(h, opt, type, (uint32_t)(alen + blen));
	return nbds_writev(c, iov, 3, false);
}

static int opt_reply(struct nbds_conn *c, uint32_t opt, uint32_t type, const void *data, size_t len)
{
	return opt_reply2(c, opt, type, data, len, NULL, 0);
}

/* An error reply whose data is a human-readable message. */
__attribute__((format(printf, 4, 5))) static int opt_error(struct nbds_conn *c, uint32_t opt,
							   uint32_t type, const char *fmt, ...)
{
	char msg[OPT_MSG_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	return opt_reply(c, opt, type, msg, MIN((size_t)n, sizeof(msg) - 1));
}

/* ---- entering transmission ---------------------------------------------------- */

uint16_t nbds_tflags(const struct nbds_conn *c, const struct nbds_export *x)
{
	/*
	 * CAN_MULTI_CONN is safe: every connection reaches the same blk, a
	 * connection replies only after its op returned, and flush is the
	 * backend's (e.g. fdatasync of the one shared descriptor), so a
	 * flush on any connection covers writes answered on all of them.
	 */
	uint16_t f =
	    NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN;

	if (x->readonly)
		f |= NBD_FLAG_READ_ONLY;
	else
		f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
	/* DF: every READ reply is one content chunk when asked (<= 32 MiB). */
	if (c->structured)
		f |= NBD_FLAG_SEND_DF;
	return f;
}

static enum conn_state enter_transmission(struct nbds_conn *c, const struct nbds_export *x)
{
	c->exp = x;
	c->tflags = nbds_tflags(c, x);
	c->meta = c->meta_export == x;
	nbds_set_deadline(c, 0, NULL);
	nbds_authed(c); /* without TLS, reaching transmission is all there is */
	return CONN_TRANSMIT;
}

/* ---- the greeting -------------------------------------------------------------- */

enum conn_state nbds_greet(struct nbds_conn *c)
{
	uint8_t g[NBD_GREETING_LEN], f[4];
	uint32_t flags;

	put_be64(g, NBD_MAGIC);
	put_be64(g + 8, NBD_OPTS_MAGIC);
	put_be16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	if (nbds_write(c, g, sizeof(g)) < 0 || nbds_read(c, f, sizeof(f)) < 0)
		return CONN_CLOSE;
	flags = get_be32(f);
	if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		err_set(EPROTO, "client flags 0x%08x: unknown bits", flags);
		return CONN_CLOSE;
	}
	if (!(flags & NBD_FLAG_C_FIXED_NEWSTYLE)) {
		err_set(EPROTO, "client does not speak fixed newstyle (flags 0x%08x)", flags);
		return CONN_CLOSE;
	}
	c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
	return CONN_OPTIONS;
}

/* ---- options -------------------------------------------------------------------- */

static enum conn_state opt_export_name(struct nbds_conn *c, uint32_t len)
{
	static const uint8_t zeroes[NBD_EXPORT_ZEROES];
	const struct nbds_export *x;
	char msg[OPT_MSG_MAX];
	uint8_t info[10];
	struct iovec iov[2] = {
		{ .iov_base = info, .iov_len = sizeof(info) },
		{ .iov_base = (void *)zeroes, .iov_len = sizeof(zeroes) },
	};

	/* This option cannot carry an error: refusing means closing. */
	if (nbds_refused(c->srv, msg, sizeof(msg))) {
		err_set(EPERM, "NBD_OPT_EXPORT_NAME refused: %s", msg);
		return CONN_CLOSE;
	}
	x = nbds_find_export(c->srv, (const char *)c->buf, len);
	if (!x) {
		struct quoted q;

		err_set(ENOENT, "NBD_OPT_EXPORT_NAME: no export '%s'", quote_name(&q, c->buf, len));
		return CONN_CLOSE;
	}
	put_be64(info, blk_size(x->blk));
	put_be16(info + 8, nbds_tflags(c, x));
	if (nbds_writev(c, iov, c->no_zeroes ? 1 : 2, false) < 0)
		return CONN_CLOSE;
	return enter_transmission(c, x);
}

static enum conn_state opt_list(struct nbds_conn *c, uint32_t opt, uint32_t len)
{
	const struct nbds_export **xs;
	size_t n;
	int r = 0;

	if (len != 0)
		return opt_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data") < 0
			   ? CONN_CLOSE
			   : CONN_OPTIONS;
	if (nbds_list_exports(c->srv, &xs, &n) < 0)
		return CONN_CLOSE;
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t nl[4];

		put_be32(nl, (uint32_t)xs[i]->namelen);
		r = opt_reply2(c, opt, NBD_REP_SERVER, nl, sizeof(nl), xs[i]->name, xs[i]->namelen);
	}
	free(xs);
	if (r == 0)
		r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	return r < 0 ? CONN_CLOSE : CONN_OPTIONS;
}

static enum conn_state opt_info_go(struct nbds_conn *c, uint32_t opt, uint32_t len)
{
	const uint8_t *d = c->buf;
	const struct nbds_export *x;
	char msg[OPT_MSG_MAX];
	uint8_t ex[NBD_INFO_EXPORT_LEN], bs[NBD_INFO_BLOCK_SIZE_LEN], nt[2];
	uint32_t namelen, rep;
	uint16_t nreq;
	bool want_name = false;
	int r;

	if (len < 6)
		goto invalid;
	namelen = get_be32(d);
	if (namelen > len - 6)
		goto invalid;
	nreq = get_be16(d + 4 + namelen);
	if ((uint64_t)len != 4 + (uint64_t)namelen + 2 + 2 * (uint64_t)nreq)
		goto invalid;
	if (namelen > NBD_MAX_STRING)
		return opt_error(c, opt, NBD_REP_ERR_INVALID, "export name longer than %d bytes",
				 NBD_MAX_STRING) < 0
			   ? CONN_CLOSE
			   : CONN_OPTIONS;
	for (uint32_t i = 0; i < nreq; i++)
		if (get_be16(d + 4 + namelen + 2 + 2 * i) == NBD_INFO_NAME)
			want_name = true;

	rep = nbds_refused(c->srv, msg, sizeof(msg));
	if (rep)
		return opt_error(c, opt, rep, "%s", msg) < 0 ? CONN_CLOSE : CONN_OPTIONS;
	x = nbds_find_export(c->srv, (const char *)d + 4, namelen);
	if (!x) {
		struct quoted q;

		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no export named '%s'",
				 quote_name(&q, d + 4, namelen)) < 0
			   ? CONN_CLOSE
			   : CONN_OPTIONS;
	}

	put_be16(ex, NBD_INFO_EXPORT);
	put_be64(ex + 2, blk_size(x->blk));
	put_be16(ex + 10, nbds_tflags(c, x));
	put_be16(bs, NBD_INFO_BLOCK_SIZE);
	put_be32(bs + 2, NBD_MIN_BLOCK);
	put_be32(bs + 6, NBD_PREF_BLOCK);
	put_be32(bs + 10, NBD_MAX_PAYLOAD);
	put_be16(nt, NBD_INFO_NAME);
	r = opt_reply(c, opt, NBD_REP_INFO, ex, sizeof(ex));
	if (r == 0)
		r = opt_reply(c, opt, NBD_REP_INFO, bs, sizeof(bs));
	if (r == 0 && want_name)
		r = opt_reply2(c, opt, NBD_REP_INFO, nt, sizeof(nt), x->name, x->namelen);
	if (r == 0)
		r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	if (r < 0)
		return CONN_CLOSE;
	return opt == NBD_OPT_GO ? enter_transmission(c, x) : CONN_OPTIONS;

invalid:
	return opt_error(c, opt, NBD_REP_ERR_INVALID, "%s: malformed data (%u bytes)",
			 opt_name(opt), len) < 0
		   ? CONN_CLOSE
		   : CONN_OPTIONS;
}

static bool query_is(const uint8_t *q, uint32_t ql, const char *s)
{
	return ql == strlen(s) && memcmp(q, s, ql) == 0;
}

/*
 * LIST_META_CONTEXT and SET_META_CONTEXT share one layout; SET also
 * replaces the selection, even when it fails.
 */
static enum conn_state opt_meta(struct nbds_conn *c, uint32_t opt, uint32_t len)
{
	const bool set = opt == NBD_OPT_SET_META_CONTEXT;
	const uint8_t *d = c->buf;
	const struct nbds_export *x;
	uint32_t namelen, nq, p;
	bool match;
	int r;

	if (set)
		c->meta_export = NULL;
	if (set && !c->structured)
		return opt_error(c, opt, NBD_REP_ERR_INVALID,
				 "NBD_OPT_SET_META_CONTEXT needs structured replies first") < 0
			   ? CONN_CLOSE
			   : CONN_OPTIONS;
	if (len < 8)
		goto invalid;
	namelen = get_be32(d);
	if (namelen > len - 8)
		goto invalid;
	p = 4 + namelen;
	nq = get_be32(d + p);
	p += 4;
	match = nq == 0 && !set; /* LIST with no query: everything */
	for (uint32_t i = 0; i < nq; i++) {
		const uint8_t *q;
		uint32_t ql;

		if (len - p < 4)
			goto invalid;
		ql = get_be32(d + p);
		p += 4;
		if (ql > len - p)
			goto invalid;
		q = d + p;
		p += ql;
		if (!memchr(q, ':', ql))
			return opt_error(c, opt, NBD_REP_ERR_INVALID,
					 "%s: query %u has no namespace", opt_name(opt), i) < 0
				   ? CONN_CLOSE
				   : CONN_OPTIONS;
		if (query_is(q, ql, NBD_META_BASE_ALLOCATION) || (!set && query_is(q, ql, "base:")))
			match = true;
	}
	if (p != len)
		goto invalid;
	x = nbds_find_export(c->srv, (const char *)d + 4, namelen);
	if (!x) {
		struct quoted q;

		return opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no export named '%s'",
				 quote_name(&q, d + 4, namelen)) < 0
			   ? CONN_CLOSE
			   : CONN_OPTIONS;
	}
	r = 0;
	if (match) {
		uint8_t id[4];

		/* LIST replies carry id 0 ("reserved"); SET the real one. */
		put_be32(id, set ? NBDS_META_ALLOCATION_ID : 0);
		r = opt_reply2(c, opt, NBD_REP_META_CONTEXT, id, sizeof(id),
			       NBD_META_BASE_ALLOCATION, strlen(NBD_META_BASE_ALLOCATION));
		if (set)
			c->meta_export = x;
	}
	if (r == 0)
		r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
	return r < 0 ? CONN_CLOSE : CONN_OPTIONS;

invalid:
	return opt_error(c, opt, NBD_REP_ERR_INVALID, "%s: malformed data (%u bytes)",
			 opt_name(opt), len) < 0
		   ? CONN_CLOSE
		   : CONN_OPTIONS;
}

static enum conn_state opt_starttls(struct nbds_conn *c, uint32_t len)
{
	const uint32_t opt = NBD_OPT_STARTTLS;
	int r;

	if (!c->srv->tls)
		r = opt_error(c, opt, NBD_REP_ERR_POLICY,
			      "TLS is not enabled on this server (blkmig serve --tls-psk or "
			      "--tls-creds)");
	else if (c->tls)
		r = opt_error(c, opt, NBD_REP_ERR_INVALID, "TLS is already on");
	else if (len != 0)
		r = opt_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
	else {
		if (opt_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0 || nbds_start_tls(c) < 0)
			return CONN_CLOSE;
		/* Nothing from before the handshake is trusted after it. */
		c->structured = false;
		c->meta_export = NULL;
		return CONN_OPTIONS;
	}
	return r < 0 ? CONN_CLOSE : CONN_OPTIONS;
}

enum conn_state nbds_option(struct nbds_conn *c)
{
	uint8_t h[NBD_OPT_HDR_LEN];
	char msg[OPT_MSG_MAX];
	uint32_t opt, len;
	int r;

	if (nbds_read(c, h, sizeof(h)) < 0)
		return CONN_CLOSE;
	if (!nbd_opt_decode(h, &opt, &len)) {
		err_set(EPROTO, "option header with bad magic 0x%016llx",
			(unsigned long long)get_be64(h));
		return CONN_CLOSE;
	}
	if (len > NBD_MAX_OPTION || (opt == NBD_OPT_EXPORT_NAME && len > NBD_MAX_STRING)) {
		err_set(EPROTO, "%s (%u) with %u bytes of data: too long", opt_name(opt), opt, len);
		return CONN_CLOSE;
	}
	if (nbds_buf_reserve(c, (size_t)len + 1) < 0 || nbds_read(c, c->buf, len) < 0)
		return CONN_CLOSE;

	if (opt == NBD_OPT_ABORT) {
		/* The spec asks for an ACK; the client may already be gone. */
		opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		err_set(ECONNABORTED, "client sent NBD_OPT_ABORT");
		return CONN_CLOSE;
	}
	if (c->refusal) {
		if (opt == NBD_OPT_EXPORT_NAME) {
			err_set(EPERM, "NBD_OPT_EXPORT_NAME refused: %s", c->refusal);
			return CONN_CLOSE;
		}
		return opt_error(c, opt, NBD_REP_ERR_POLICY, "%s", c->refusal) < 0 ? CONN_CLOSE
										   : CONN_OPTIONS;
	}
	if (opt == NBD_OPT_STARTTLS)
		return opt_starttls(c, len);
	if (c->srv->tls && !c->tls) {
		/* This option cannot carry an error: refusing means closing. */
		if (opt == NBD_OPT_EXPORT_NAME) {
			err_set(EACCES, "NBD_OPT_EXPORT_NAME without TLS, which is required");
			return CONN_CLOSE;
		}
		return opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
				 "this server requires TLS: send NBD_OPT_STARTTLS first") < 0
			   ? CONN_CLOSE
			   : CONN_OPTIONS;
	}
	if (opt != NBD_OPT_EXPORT_NAME && nbds_shut_err(c->srv, msg, sizeof(msg)))
		return opt_error(c, opt, NBD_REP_ERR_SHUTDOWN, "%s", msg) < 0 ? CONN_CLOSE
									      : CONN_OPTIONS;

	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(c, len);
	case NBD_OPT_LIST:
		return opt_list(c, opt, len);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(c, opt, len);
	case NBD_OPT_STRUCTURED_REPLY:
		if (len != 0)
			r = opt_error(c, opt, NBD_REP_ERR_INVALID,
				      "NBD_OPT_STRUCTURED_REPLY takes no data");
		else {
			c->structured = true;
			r = opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
		}
		return r < 0 ? CONN_CLOSE : CONN_OPTIONS;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return opt_meta(c, opt, len);
	default:
		r = opt_error(c, opt, NBD_REP_ERR_UNSUP, "option %u (%s) is not supported", opt,
			      opt_name(opt));
		return r < 0 ? CONN_CLOSE : CONN_OPTIONS;
	}
}
