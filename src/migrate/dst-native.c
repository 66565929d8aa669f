/* SPDX-License-Identifier: MIT */
/*
 * The destination's native format (docs/wire-format.md), behind
 * dst-format.h: HELLO is the offer, READY accepts it (followed by EXPORT,
 * where this side's NBD export is, if the source asked), each BLOCKS message is
 * a pass answered by SYNCED, each WRITE by WACK, COMPLETE carries the
 * digests; ACK, then COMMIT hands the devices over.  Every failure is told
 * to the source (ERROR) unless the source aborted.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/error.h"
#include "dst-format.h"
#include "engine.h"
#include "transport/transport.h"

struct native_fmt {
	struct dst_fmt base;
	bool aborted;	/* the source sent ABORT: it hears nothing more */
	bool forward;	/* HELLO asked where the NBD export is (FORWARD) */
	unsigned lanes; /* connections HELLO asked for (LANES); 1: none */
	bool wlane;	/* HELLO asked for the write lane */
};

static int send_frame(struct dst_fmt *f, int n, const uint8_t *buf)
{
	int r;

	if (n < 0)
		return n;
	r = xport_write(f->x, buf, (size_t)n);
	return r == 0 ? xport_flush(f->x) : r;
}

static int native_open(const struct dst_params *p, struct xport *x, struct dst_fmt **out)
{
	return dst_fmt_new(sizeof(struct native_fmt), &dst_native_ops, p, x, out);
}

static int native_handshake(struct dst_fmt *f, struct dst_offer *o)
{
	struct wire_item it;
	const struct native_hello *h;
	int r = wire_stream_next(f->ws, &it);

	if (r < 0)
		return r;
	h = it.hello; /* a native stream starts with HELLO or fails */
	/* Refused as an older blkmig would refuse it (it fails the HELLO),
	 * but with its own errno, which the source recognises. */
	if ((h->caps & NATIVE_CAP_COMPRESS) && f->p->no_compress)
		return err_set(ENOTSUP, "handshake: %s", NATIVE_NO_COMPRESS_REASON);
	memcpy(o->id, h->id, NATIVE_ID_LEN);
	o->delta = h->caps & NATIVE_CAP_DELTA;
	o->verify = h->caps & NATIVE_CAP_VERIFY;
	o->chunk_size = h->chunk_size;
	o->shared_base = h->caps & NATIVE_CAP_SHARED_BASE;
	o->mirror = h->caps & NATIVE_CAP_MIRROR;
	o->ndev = h->ndev;
	memcpy(o->dev, h->dev, h->ndev * sizeof(h->dev[0]));
	((struct native_fmt *)f)->forward = h->caps & NATIVE_CAP_FORWARD;
	((struct native_fmt *)f)->lanes = h->caps & NATIVE_CAP_LANES ? h->lanes : 1;
	/* HELLO decoding refused it without MIRROR, or with VERIFY. */
	((struct native_fmt *)f)->wlane = h->caps & NATIVE_CAP_WLANE;
	/* The engine checks which of these may come when. */
	wire_stream_allow(f->ws,
			  NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
			      NATIVE_ALLOW(NATIVE_MSG_ABORT) | NATIVE_ALLOW(NATIVE_MSG_COMMIT) |
			      NATIVE_ALLOW(NATIVE_MSG_VERDICT));
	return 0;
}

static int native_state(struct dst_fmt *f, const struct native_state *st)
{
	uint8_t buf[NATIVE_FRAME_HDR + 16];
	int r = send_frame(f, native_state_encode(buf, sizeof(buf), st), buf);

	return r < 0 ? err_prefix(-r, "handshake: ") : 0;
}

static int native_sums(struct dst_fmt *f, const struct native_sums *s)
{
	uint8_t *buf = malloc(NATIVE_FRAME_HDR + NATIVE_MSG_MAX);
	int n, r;

	if (!buf)
		return err_set(ENOMEM, "no memory for a SUMS message");
	n = native_sums_encode(buf, NATIVE_FRAME_HDR + NATIVE_MSG_MAX, s);
	r = n < 0 ? n : xport_write(f->x, buf, (size_t)n);
	if (r == 0)
		r = xport_flush(f->x);
	free(buf);
	return r < 0 ? err_prefix(-r, "sending digests: ") : 0;
}

/* EXPORT: dst_params.nbd_addr as the wire has it (no brackets), or port 0
 * when there is none. */
static int send_export(struct dst_fmt *f)
{
	uint8_t buf[NATIVE_FRAME_HDR + 4 + NATIVE_HOST_MAX];
	struct native_export e = { .port = 0 };
	const char *addr = f->p->nbd_addr;
	int r;

	if (addr && addr[0]) {
		r = xport_addr_split(addr, e.host, sizeof(e.host), &e.port);
		if (r < 0)
			return err_prefix(-r, "announcing the NBD export: ");
	}
	r = native_export_encode(buf, sizeof(buf), &e);
	if (r < 0)
		return err_prefix(-r, "announcing the NBD export: ");
	return send_frame(f, r, buf);
}

/*
 * LANES: as many of the connections asked for as this side allows, and a
 * fresh token for them; STATE waits until they have all joined (the
 * listener hands them to x), and from then on the source's bytes come
 * striped over them.
 */
static int offer_lanes(struct dst_fmt *f, unsigned asked, bool wlane)
{
	uint8_t buf[NATIVE_FRAME_HDR + 2 + NATIVE_TOKEN_LEN + 2];
	unsigned max = f->p->max_connections ? f->p->max_connections : MIG_DEFAULT_MAX_CONNECTIONS;
	struct native_lanes l = { .count = (uint16_t)MIN(asked, max), .has_flags = wlane };
	bool joins;
	int r;

	/* Without a listener to route joins here (dst_run() called on its
	 * own), none could arrive: one connection, no write lane. */
	if (!f->p->claim)
		l.count = 1;
	else if (wlane && !f->p->verify_only)
		l.flags = NATIVE_LANES_WLANE;
	joins = l.count > 1 || l.flags;

	if (getrandom(l.token, sizeof(l.token), 0) != (ssize_t)sizeof(l.token))
		return err_set(EIO, "cannot pick a join token: %s", strerror(errno));
	if (joins) {
		r = xport_lanes_offer(f->x, l.count, l.token, l.flags & NATIVE_LANES_WLANE);
		if (r < 0)
			return r;
	}
	r = send_frame(f, native_lanes_encode(buf, sizeof(buf), &l), buf);
	if (r == 0 && joins)
		r = xport_lanes_wait(f->x, xport_get_timeout(f->x));
	/* 1: the source spoke on this connection first (an ABORT, say, after
	 * a join of its failed): the stream reads it, unstriped. */
	return r < 0 ? r : 0;
}

static int native_accept(struct dst_fmt *f)
{
	uint8_t buf[NATIVE_FRAME_HDR + 8];
	unsigned lanes = ((struct native_fmt *)f)->lanes;
	bool wlane = ((struct native_fmt *)f)->wlane;
	int r = send_frame(f, native_ready_encode(buf, sizeof(buf), NATIVE_VERSION), buf);

	/* Right after READY, before STATE: the source reads it first. */
	if (r == 0 && ((struct native_fmt *)f)->forward)
		r = send_export(f);
	if (r == 0 && (lanes > 1 || wlane))
		r = offer_lanes(f, lanes, wlane);
	return r < 0 ? err_prefix(-r, "handshake: ") : 0;
}

static int aborted(struct dst_fmt *f, const struct native_error *e, const char *when)
{
	((struct native_fmt *)f)->aborted = true;
	return err_set(e->err ? (int)e->err : ECANCELED, "source aborted%s: %s", when, e->reason);
}

static int native_next(struct dst_fmt *f, struct dst_event *ev)
{
	for (;;) {
		struct wire_item it;
		int r = wire_stream_next(f->ws, &it);

		if (r < 0)
			return r;
		ev->offset = it.offset;
		switch (it.kind) {
		case WIRE_ITEM_BLOCKS:
			continue;
		case WIRE_ITEM_RECORD:
			if (it.rec.kind == WIRE_REC_PROGRESS)
				continue;
			if (it.rec.kind == WIRE_REC_EOS) {
				ev->kind = DST_EV_PASS_END;
				return 0;
			}
			f->rec = it.rec;
			ev->kind = DST_EV_RECORD;
			ev->rec = &f->rec;
			return 0;
		case WIRE_ITEM_COMPLETE:
			ev->kind = DST_EV_COMPLETE;
			ev->digests = it.complete;
			return 0;
		case WIRE_ITEM_COMMIT:
			ev->kind = DST_EV_COMMIT;
			ev->attempt = (uint32_t)it.value;
			return 0;
		case WIRE_ITEM_VERDICT:
			ev->kind = DST_EV_VERDICT;
			ev->verdict = it.verdict;
			return 0;
		case WIRE_ITEM_ABORT:
			return aborted(f, it.error, "");
		case WIRE_ITEM_END:
			ev->kind = DST_EV_CLOSED;
			return 0;
		default:
			/* wire_stream_allow() lets nothing else through. */
			return err_set(EBADMSG, "at stream offset %llu: unexpected %s",
				       (unsigned long long)it.offset, wire_item_name(it.kind));
		}
	}
}

/* Each pass is made durable and confirmed before the next: the source's
 * bandwidth estimate then covers the destination's disk, and the final
 * pause never has to wait for an earlier pass to reach it. */
static int native_pass_end(struct dst_fmt *f, uint64_t passes)
{
	uint8_t buf[NATIVE_FRAME_HDR + 8];

	return send_frame(f, native_synced_encode(buf, sizeof(buf), passes), buf);
}

/* The writer on the source is waiting for this. */
static int native_write_queued(struct dst_fmt *f, uint64_t seq)
{
	uint8_t buf[NATIVE_FRAME_HDR + 8];
	int r = send_frame(f, native_wack_encode(buf, sizeof(buf), seq), buf);

	return r < 0 ? err_prefix(-r, "acknowledging a write: ") : 0;
}

/* The source still owns the devices until it has fenced itself and says
 * so (COMMIT of this attempt). */
static int native_acknowledge(struct dst_fmt *f, uint32_t attempt)
{
	uint8_t buf[NATIVE_FRAME_HDR + 4];
	int r = send_frame(f, native_ack_encode(buf, sizeof(buf), attempt), buf);

	return r < 0 ? err_prefix(-r, "acknowledgement: ") : 0;
}

static void native_committed(struct dst_fmt *f, uint32_t attempt)
{
	uint8_t buf[NATIVE_FRAME_HDR + 4];

	send_frame(f, native_done_encode(buf, sizeof(buf), attempt), buf);
}

static void native_fail(struct dst_fmt *f, int err, const char *msg)
{
	/* A source that aborted is not listening. */
	if (((struct native_fmt *)f)->aborted && err == ECANCELED)
		return;
	/* Best effort: the source may already be gone. */
	xport_set_cancel(f->x, NULL);
	xport_set_timeout(f->x, 2000);
	engine_send_error(f->x, NATIVE_MSG_ERROR, err, msg);
}

const struct dst_format_ops dst_native_ops = {
	.name = "native",
	.stream = WIRE_STREAM_NATIVE,
	.caps = { .return_path = true,
		  .sizes = true,
		  .digests = true,
		  .mirror = true,
		  .pass_replies = true,
		  .announces_base = true },
	.open = native_open,
	.handshake = native_handshake,
	.accept = native_accept,
	.next = native_next,
	.pass_end = native_pass_end,
	.write_queued = native_write_queued,
	.state = native_state,
	.sums = native_sums,
	.acknowledge = native_acknowledge,
	.committed = native_committed,
	.fail = native_fail,
	.close = dst_fmt_free,
};
