/* SPDX-License-Identifier: MIT */
/*
 * The native stream format, source side (docs/wire-format.md): HELLO and
 * READY, one BLOCKS message per pass ended by EOS and confirmed by SYNCED,
 * COMPLETE with the digests, ACK, and COMMIT once the source is fenced.
 * The destination answers on the return path (src-rpath.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "common/error.h"
#include "digest.h"
#include "src-impl.h"
#include "transport/transport.h"

_Static_assert(NATIVE_TOKEN_LEN == XPORT_TOKEN_LEN && NATIVE_LANES_MAX == XPORT_LANES_MAX &&
		   MIG_CONNECTIONS_MAX == XPORT_LANES_MAX,
	       "one token and one bound for the lanes");

/* ---- compression ---- */

/* The capability bits an older destination named unknown when it refused
 * HELLO ("unknown capability bits 0x...", native.c's own words), or 0. */
static uint32_t unknown_bits(const char *reason)
{
	static const char words[] = "unknown capability bits 0x";
	const char *p = strstr(reason, words);

	return p ? (uint32_t)strtoul(p + sizeof(words) - 1, NULL, 16) : 0;
}

/* Whether HELLO offered the write lane: where writes will or may be
 * mirrored (active, auto) and the connection can be dialled again, unless
 * this destination refused it on an earlier connection.  A dirty
 * migration keeps to one connection; one switched to active later
 * mirrors on it. */
static bool wlane_wanted(const struct src_job *j)
{
	return !j->p.verify_only && !j->sess->wlane_refused && xport_dialled(j->x) &&
	       atomic_load(&((struct src_job *)j)->want_mode) != MIG_MODE_DIRTY;
}

/* Whether HELLO offered compressed chunks. */
static bool compress_offered(const struct src_job *j)
{
	return j->p.compress != MIG_COMPRESS_OFF && !j->sess->compress_refused;
}

/*
 * Whether the destination's answer to HELLO refuses compression: one told
 * not to take it says ENOTSUP; an older one refuses the capability bit it
 * does not know ("unknown capability bits", native.c's own words).
 */
static bool compress_refused(const struct src_job *j, const struct native_error *e)
{
	return compress_offered(j) &&
	       (e->err == ENOTSUP || (unknown_bits(e->reason) & NATIVE_CAP_COMPRESS));
}

/* AUTO: the next connection (src_migrate) offers none.  ZSTD: an error. */
static int refused_compression(struct src_job *j)
{
	if (j->p.compress == MIG_COMPRESS_AUTO) {
		j->sess->compress_refused = true;
		return err_set(EPROTONOSUPPORT, "the destination does not accept compressed "
						"chunks: connecting again without compression");
	}
	return err_set(EPROTONOSUPPORT,
		       "the destination does not accept compressed chunks (an older blkmig, or "
		       "one started with --no-compress): run without --compress, or with "
		       "--compress auto");
}

/* Read READY directly: the return path starts only after the handshake. */
static int await_ready(struct src_job *j, uint64_t *version)
{
	struct wire_item it;
	int r = wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, engine_xport_read, j->x, &j->rs);

	if (r < 0)
		return r;
	wire_stream_allow(j->rs, NATIVE_ALLOW(NATIVE_MSG_READY) | NATIVE_ALLOW(NATIVE_MSG_ERROR));
	r = wire_stream_next(j->rs, &it);
	if (r < 0)
		return err_prefix(-r, "waiting for the destination to accept the handshake: ");
	/* An older destination: the next connection offers no write lane
	 * (retry.c), and mirrored writes share the one stream. */
	if (it.kind == WIRE_ITEM_ERROR && j->wl_asked &&
	    (unknown_bits(it.error->reason) & NATIVE_CAP_WLANE)) {
		j->sess->wlane_refused = true;
		if (!compress_refused(j, it.error))
			return err_set(EPROTONOSUPPORT,
				       "the destination does not take a write lane (an older "
				       "blkmig): connecting again with mirrored writes on one "
				       "connection");
	}
	if (it.kind == WIRE_ITEM_ERROR && compress_refused(j, it.error))
		return refused_compression(j);
	if (it.kind == WIRE_ITEM_ERROR)
		return rp_peer_error(j, it.error);
	/* A refusal, or a receiver restarting behind a proxy: the first
	 * connection is not retried (src_migrate), a later one is. */
	if (it.kind == WIRE_ITEM_END)
		return err_set(ECONNRESET,
			       "handshake: the destination closed the connection without an "
			       "answer (does it expect TLS%s?)",
			       xport_is_tls(j->x) ? " with other credentials, or none" : "");
	if (it.kind != WIRE_ITEM_READY)
		return err_set(EPROTO, "handshake: the destination answered with %s",
			       wire_item_name(it.kind));
	*version = it.value;
	return 0;
}

/* Take one SUMS message: every entry names a chunk of ours, once. */
static int take_sums(struct src_job *j, const struct native_sums *m, uint64_t *left)
{
	struct src_dev *d;

	if (m->dev >= j->ndev)
		return err_set(EPROTO, "the destination offered digests for device %u of %u",
			       (unsigned)m->dev + 1, j->ndev);
	if (m->count > *left)
		return err_set(EPROTO, "the destination offered more digests than it announced");
	d = &j->dev[m->dev];
	if (!d->sums) {
		d->sums = calloc(d->nchunks, NATIVE_SUM_LEN);
		if (!d->sums)
			return err_set(ENOMEM, "no memory for the digests of %llu chunks of %s",
				       (unsigned long long)d->nchunks, d->name);
	}
	for (uint32_t i = 0; i < m->count; i++) {
		uint64_t c = m->e[i].chunk;

		if (c >= d->nchunks || dirty_test(d->have, c))
			return err_set(EPROTO,
				       "the destination offered a digest for chunk %llu of %s "
				       "(%llu chunks), %s",
				       (unsigned long long)c, d->name,
				       (unsigned long long)d->nchunks,
				       c >= d->nchunks ? "which does not exist" : "twice");
		memcpy(d->sums[c], m->e[i].sum, NATIVE_SUM_LEN);
		dirty_mark(d->have, c * j->p.chunk_size, 1);
	}
	*left -= m->count;
	return 0;
}

/*
 * FORWARD: the destination's EXPORT, once, before STATE, and only when
 * asked.  The session keeps it across connections: the latest wins.
 */
static int take_export(struct src_job *j, const struct native_export *e, bool *seen)
{
	struct src_session *s = j->sess;

	if (!j->p.forward)
		return err_set(EPROTO, "the destination announced its NBD export (EXPORT), which "
				       "this source did not ask for");
	if (*seen)
		return err_set(EPROTO, "the destination announced its NBD export (EXPORT) twice");
	*seen = true;
	/* The decoder bounded and checked it. */
	snprintf(s->dest_nbd_host, sizeof(s->dest_nbd_host), "%s", e->host);
	s->dest_nbd_port = e->port;
	s->dest_nbd_known = true;
	return 0;
}

/*
 * LANES: how many connections the destination takes of those HELLO asked
 * for, and the token the others join with.  They are dialled here, before
 * STATE, which the destination sends once they have all joined.
 */
static int take_lanes(struct src_job *j, const struct native_lanes *l, bool *seen)
{
	unsigned asked = MAX(j->p.connections, 1u);
	bool wl = j->wl_asked;
	int r;

	if (asked < 2 && !wl)
		return err_set(EPROTO, "the destination offered connections (LANES), which this "
				       "source did not ask for");
	if (*seen)
		return err_set(EPROTO, "the destination offered connections (LANES) twice");
	*seen = true;
	if (l->count > asked)
		return err_set(EPROTO,
			       "the destination accepts %u connections where %u were asked for",
			       l->count, asked);
	if (l->has_flags != wl)
		return err_set(EPROTO,
			       "the destination's LANES %s whether the write lane may join, which "
			       "this source %s",
			       l->has_flags ? "says" : "does not say",
			       wl ? "asked" : "did not ask");
	r = xport_lanes_connect(j->x, l->count, l->token, l->flags & NATIVE_LANES_WLANE);
	if (r < 0)
		return r;
	j->wl = xport_write_lane(j->x);
	pthread_mutex_lock(&j->stats_lock);
	j->stats.lanes = l->count;
	pthread_mutex_unlock(&j->stats_lock);
	return 0;
}

/*
 * After READY (and EXPORT): what the destination holds of this migration (STATE), and
 * the digests of those chunks (SUMS), which the bulk pass compares before
 * sending.  A destination that has acknowledged the attempt this source
 * fenced itself for needs only the COMMIT.
 */
static int await_state(struct src_job *j)
{
	struct src_session *s = j->sess;
	uint64_t total = 0, left;
	struct wire_item it;
	bool exported = false, laned = false;
	int r;

	/* EXPORT and LANES are let through whether asked for or not, so
	 * that an unasked one is refused as such, not as a stray message. */
	wire_stream_allow(j->rs, NATIVE_ALLOW(NATIVE_MSG_STATE) | NATIVE_ALLOW(NATIVE_MSG_EXPORT) |
				     NATIVE_ALLOW(NATIVE_MSG_LANES) |
				     NATIVE_ALLOW(NATIVE_MSG_ERROR));
	while ((r = wire_stream_next(j->rs, &it)) == 0 &&
	       (it.kind == WIRE_ITEM_EXPORT || it.kind == WIRE_ITEM_LANES)) {
		if (it.kind == WIRE_ITEM_LANES && exported == false && j->p.forward)
			return err_set(EPROTO, "the destination offered connections (LANES) before "
					       "its EXPORT");
		r = it.kind == WIRE_ITEM_EXPORT ? take_export(j, it.export, &exported)
						: take_lanes(j, it.lanes, &laned);
		if (r < 0)
			return r;
	}
	if (r == 0 && it.kind == WIRE_ITEM_ERROR)
		return rp_peer_error(j, it.error);
	if (r == 0 && it.kind != WIRE_ITEM_STATE)
		r = err_set(ECONNRESET, "handshake: the destination closed the connection");
	if (r < 0)
		return err_prefix(-r, "waiting for the destination's state: ");
	if (j->p.forward && !exported)
		return err_set(EPROTO, "the destination did not say where its NBD export is (no "
				       "EXPORT before STATE)");
	if (j->p.connections > 1 && !laned)
		return err_set(EPROTO,
			       "the destination did not answer the request for %u "
			       "connections (no LANES before STATE)",
			       j->p.connections);
	j->held = *it.state;
	for (unsigned i = 0; i < j->ndev; i++)
		total += j->dev[i].nchunks;
	if (j->held.sums > total)
		return err_set(EPROTO, "the destination offers %llu digests for %llu chunks",
			       (unsigned long long)j->held.sums, (unsigned long long)total);
	if ((j->p.verify_only || j->p.delta) && j->held.held != NATIVE_HELD_ALL &&
	    j->held.held != NATIVE_HELD_NONE)
		return err_set(EPROTO, "the destination answered a %s with a partial state",
			       j->p.verify_only ? "verify" : "delta sync");
	if (j->p.verify_only && j->held.sums != total)
		return err_set(EPROTO,
			       "the destination offers %llu digests of %llu chunks to verify",
			       (unsigned long long)j->held.sums, (unsigned long long)total);
	if (s->committing) {
		if (j->held.held != NATIVE_HELD_AWAITING || j->held.attempt != s->committing)
			return err_set(ESTALE,
				       "this source handed its devices over (attempt %u) and is "
				       "fenced, but the destination no longer holds that copy: it "
				       "needs an operator (serve --reclaim on the source)",
				       s->committing);
		j->commit_only = true;
	}
	if (j->held.held == NATIVE_HELD_AWAITING && j->held.attempt > s->attempts)
		s->attempts = j->held.attempt; /* later attempts are numbered past it */
	wire_stream_allow(j->rs, NATIVE_ALLOW(NATIVE_MSG_SUMS) | NATIVE_ALLOW(NATIVE_MSG_EXPORT) |
				     NATIVE_ALLOW(NATIVE_MSG_ERROR));
	for (left = j->held.sums; left > 0;) {
		r = wire_stream_next(j->rs, &it);
		if (r == 0 && it.kind == WIRE_ITEM_ERROR)
			return rp_peer_error(j, it.error);
		if (r == 0 && it.kind == WIRE_ITEM_EXPORT)
			return err_set(EPROTO, "the destination announced its NBD export (EXPORT) "
					       "after its STATE");
		if (r == 0 && it.kind != WIRE_ITEM_SUMS)
			r = err_set(ECONNRESET, "the destination closed the connection");
		if (r == 0)
			r = take_sums(j, it.sums, &left);
		if (r < 0)
			return err_prefix(-r, "reading the destination's digests: ");
	}
	return 0;
}

static int native_open(struct src_job *j)
{
	struct native_hello h = {
		.version = NATIVE_VERSION,
		.chunk_size = j->p.chunk_size,
		.ndev = (uint16_t)j->ndev,
	};
	uint8_t *buf = malloc(NATIVE_HELLO_MAX);
	uint64_t version;
	int n, r;

	if (!buf)
		return err_set(ENOMEM, "no memory for the handshake");
	if (j->p.zero_blocks)
		h.caps |= NATIVE_CAP_ZERO_BLOCKS;
	if (j->p.shared_base)
		h.caps |= NATIVE_CAP_SHARED_BASE;
	if (j->p.delta)
		h.caps |= NATIVE_CAP_DELTA;
	if (j->p.forward)
		h.caps |= NATIVE_CAP_FORWARD;
	if (j->p.connections > 1) {
		h.caps |= NATIVE_CAP_LANES;
		h.lanes = (uint16_t)j->p.connections;
	}
	if (j->p.verify_only)
		h.caps |= NATIVE_CAP_VERIFY;
	else /* offered: the mode may change to active while running */
		h.caps |= NATIVE_CAP_MIRROR;
	j->wl_asked = wlane_wanted(j);
	if (j->wl_asked)
		h.caps |= NATIVE_CAP_WLANE;
	/* Nothing to compress in a verify. */
	if (compress_offered(j) && !j->p.verify_only)
		h.caps |= NATIVE_CAP_COMPRESS;
	memcpy(h.id, j->sess->id, NATIVE_ID_LEN);
	for (unsigned i = 0; i < j->ndev; i++) {
		snprintf(h.dev[i].name, sizeof(h.dev[i].name), "%s", j->dev[i].name);
		h.dev[i].size = j->dev[i].size;
	}
	n = native_hello_encode(buf, NATIVE_HELLO_MAX, &h);
	r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	free(buf);
	if (r == 0)
		r = xport_flush(j->x);
	if (r < 0)
		return err_prefix(-r, "handshake: ");
	r = await_ready(j, &version);
	/* An older destination refuses the capability bit it does not know. */
	if (r < 0 && j->p.connections > 1 && (unknown_bits(err_msg()) & NATIVE_CAP_LANES))
		r = err_prefix(-r, "the destination does not take --connections (an older blkmig? "
				   "run with --connections 1): ");
	if (r == 0)
		r = await_state(j);
	if (r < 0)
		return r;
	j->sess->accepted++;
	src_compress_start(j, h.caps & NATIVE_CAP_COMPRESS);
	r = rp_start(j);
	return r == 0 && j->wl ? wl_start(j) : r;
}

static int native_pass_begin(struct src_job *j, bool final)
{
	(void) final;
	/* A mirrored write may have opened it already. */
	return src_open_blocks(j);
}

static int native_pass_end(struct src_job *j, bool final)
{
	uint8_t hdr[WIRE_REC_HDR_MAX];
	int r = wire_rec_encode_header(hdr, &(struct wire_record){ .kind = WIRE_REC_EOS });

	(void) final;
	/* Every write queued in the pass (in the final one: every write)
	 * precedes its end at the destination. */
	if (r >= 0 && j->wl) {
		int n = r;

		pthread_mutex_lock(&j->lock);
		r = wl_fence_locked(j, j->mq_seq);
		/* After the final pass come the digests: writes let go by an
		 * abandoned switch-over wait for the next pass, as on one
		 * stream they would wait behind COMPLETE. */
		if (r == 0 && final)
			j->wl_hold = true;
		pthread_mutex_unlock(&j->lock);
		r = r < 0 ? r : n;
	}
	r = r < 0 ? r : xport_write(j->x, hdr, (size_t)r);
	if (r == 0) {
		j->in_blocks = false;
		j->passes_sent++;
		r = xport_flush(j->x);
	}
	return r;
}

static int native_synced(struct src_job *j)
{
	uint64_t n;
	int r = rp_await(j, NATIVE_MSG_SYNCED, "to sync", &n);

	if (r < 0)
		return r;
	if (n != j->passes_sent)
		return err_set(EPROTO, "destination synced %llu passes, %llu were sent",
			       (unsigned long long)n, (unsigned long long)j->passes_sent);
	return 0;
}

/* Verify only: instead of COMPLETE, what the comparison found. */
static int native_verdict(struct src_job *j)
{
	struct native_verdict *v = calloc(1, sizeof(*v));
	uint8_t *buf = malloc(NATIVE_MSG_MAX + NATIVE_FRAME_HDR);
	struct mig_stats st;
	int n, r;

	if (!v || !buf) {
		free(v);
		free(buf);
		return err_set(ENOMEM, "no memory for the verdict");
	}
	src_stats(j, &st);
	v->ndev = (uint16_t)j->ndev;
	for (unsigned i = 0; i < j->ndev; i++) {
		snprintf(v->dev[i].name, sizeof(v->dev[i].name), "%s", j->dev[i].name);
		v->dev[i].checked = j->dev[i].nchunks;
		v->dev[i].differing = st.dev[i].differing;
	}
	n = native_verdict_encode(buf, NATIVE_MSG_MAX + NATIVE_FRAME_HDR, v);
	r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	free(v);
	free(buf);
	return r == 0 ? xport_flush(j->x) : r;
}

static int native_complete(struct src_job *j)
{
	struct native_complete *c = calloc(1, sizeof(*c));
	uint8_t *buf = malloc(NATIVE_MSG_MAX + NATIVE_FRAME_HDR);
	int n, r;

	if (j->p.verify_only) {
		free(c);
		free(buf);
		return native_verdict(j);
	}
	if (!c || !buf) {
		free(c);
		free(buf);
		return err_set(ENOMEM, "no memory for the digests");
	}
	c->attempt = j->attempt;
	c->ndev = (uint16_t)j->ndev;
	for (unsigned i = 0; i < j->ndev; i++) {
		snprintf(c->dev[i].name, sizeof(c->dev[i].name), "%s", j->dev[i].name);
		digest_final(j->dev[i].dig, c->dev[i].digest, &c->dev[i].chunks);
	}
	n = native_complete_encode(buf, NATIVE_MSG_MAX + NATIVE_FRAME_HDR, c);
	r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	free(c);
	free(buf);
	return r == 0 ? xport_flush(j->x) : r;
}

static int native_acked(struct src_job *j)
{
	uint64_t acked;
	int r = 0;

	/* An ACK of an earlier, abandoned attempt is no answer to this one. */
	while (r == 0 && (r = rp_await(j, NATIVE_MSG_ACK, "to acknowledge", &acked)) == 0 &&
	       acked != j->attempt) {
		if (acked > j->attempt)
			r = err_set(EPROTO, "the destination acknowledged attempt %llu of %u",
				    (unsigned long long)acked, j->attempt);
	}
	return r;
}

static int native_commit(struct src_job *j)
{
	uint8_t buf[NATIVE_FRAME_HDR + 4];
	int n = native_commit_encode(buf, sizeof(buf), j->attempt);
	int r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);

	uint64_t done;

	if (r == 0)
		r = xport_flush(j->x);
	/* Until the destination says it took over, the commit may be lost:
	 * the session keeps it pending, and a new connection delivers it. */
	if (r == 0)
		r = rp_await(j, NATIVE_MSG_DONE, "to take over", &done);
	if (r == 0 && done != j->attempt)
		r = err_set(EPROTO, "the destination took over attempt %llu, not %u",
			    (unsigned long long)done, j->attempt);
	if (r < 0)
		return err_prefix(-r,
				  "the destination acknowledged, but did not confirm the "
				  "commit (the source stays fenced; the destination stays marked "
				  "incomplete until the commit reaches it): ");
	return 0;
}

static void native_abort(struct src_job *j, int err, const char *reason)
{
	static const uint8_t eos[8] = { 0, 0, 0, 0, 0, 0, 0, WIRE_F_EOS };

	/* The stream is at a record boundary unless a send failed midway,
	 * and then the transport refuses to send anything more. */
	if (!j->in_blocks || xport_write(j->x, eos, sizeof(eos)) == 0)
		engine_send_error(j->x, NATIVE_MSG_ABORT, err, reason);
}

const struct src_format src_format_native = {
	.name = "native",
	.display = "native",
	.return_path = true,
	.mirror = true,
	.cut_final = true,
	.auto_mode = true,
	.compress = true,
	.open = native_open,
	.pass_begin = native_pass_begin,
	.pass_end = native_pass_end,
	.synced = native_synced,
	.complete = native_complete,
	.acked = native_acked,
	.commit = native_commit,
	.abort = native_abort,
};
