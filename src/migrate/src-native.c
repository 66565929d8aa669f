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

#include "common/error.h"
#include "digest.h"
#include "src-impl.h"
#include "transport/transport.h"

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
	if (it.kind == WIRE_ITEM_ERROR)
		return rp_peer_error(it.error);
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
	/* Always offered: the mode may change to active while running. */
	h.caps |= NATIVE_CAP_MIRROR;
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
	if (r < 0)
		return r;
	return rp_start(j);
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

static int native_complete(struct src_job *j)
{
	struct native_complete *c = calloc(1, sizeof(*c));
	uint8_t *buf = malloc(NATIVE_MSG_MAX + NATIVE_FRAME_HDR);
	uint64_t unused;
	int n, r;

	if (!c || !buf) {
		free(c);
		free(buf);
		return err_set(ENOMEM, "no memory for the digests");
	}
	c->ndev = (uint16_t)j->ndev;
	for (unsigned i = 0; i < j->ndev; i++) {
		snprintf(c->dev[i].name, sizeof(c->dev[i].name), "%s", j->dev[i].name);
		digest_final(j->dev[i].dig, c->dev[i].digest, &c->dev[i].chunks);
	}
	n = native_complete_encode(buf, NATIVE_MSG_MAX + NATIVE_FRAME_HDR, c);
	r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	free(c);
	free(buf);
	if (r == 0)
		r = xport_flush(j->x);
	if (r == 0)
		r = rp_await(j, NATIVE_MSG_ACK, "to acknowledge", &unused);
	return r;
}

static int native_commit(struct src_job *j)
{
	uint8_t buf[NATIVE_FRAME_HDR];
	int n = native_commit_encode(buf, sizeof(buf));
	int r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);

	if (r == 0)
		r = xport_flush(j->x);
	if (r < 0)
		return err_prefix(-r, "the destination acknowledged, but the commit could not be "
				      "sent (the source stays fenced; the destination stays marked "
				      "incomplete): ");
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
	.open = native_open,
	.pass_begin = native_pass_begin,
	.pass_end = native_pass_end,
	.synced = native_synced,
	.complete = native_complete,
	.commit = native_commit,
	.abort = native_abort,
};
