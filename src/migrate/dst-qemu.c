/* SPDX-License-Identifier: MIT */
/*
 * The destination's QEMU 7.2 format (QEMU-STREAM.md), behind
 * dst-format.h.  QEMU announces nothing and hears nothing: the offer is
 * what the operator configured (the --device names, the images' own sizes,
 * --shared-base for a source migrating with inc: true), the block records
 * of every "block" section are the engine's, each EOS ends a pass nobody
 * answers, and EOF ends the migration.  After EOF the VMDESCRIPTION that
 * QEMU sends before it closes is read and dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "dst-format.h"
#include "transport/transport.h"

/* How long to wait for the VMDESCRIPTION after EOF. */
#define QEMU_VMDESC_TIMEOUT_MS 5000

static int qemu_open(const struct dst_params *p, struct xport *x, struct dst_fmt **out)
{
	return dst_fmt_new(sizeof(struct dst_fmt), &dst_qemu_ops, p, x, out);
}

/* The stream says nothing before the data: the offer is the operator's. */
static int qemu_handshake(struct dst_fmt *f, struct dst_offer *o)
{
	const struct dst_params *p = f->p;

	if (p->nexpect > NATIVE_MAX_DEVICES)
		return err_set(EINVAL, "at most %d devices, got %u", NATIVE_MAX_DEVICES,
			       p->nexpect);
	o->chunk_size = WIRE_QEMU_CHUNK_SIZE;
	o->shared_base = p->allow_shared_base;
	o->mirror = false;
	o->ndev = p->nexpect;
	for (unsigned i = 0; i < p->nexpect; i++) {
		snprintf(o->dev[i].name, sizeof(o->dev[i].name), "%s", p->expect[i]);
		o->dev[i].size = 0;
	}
	return 0;
}

static int qemu_accept(struct dst_fmt *f)
{
	(void)f;
	return 0;
}

static int qemu_next(struct dst_fmt *f, struct dst_event *ev)
{
	for (;;) {
		struct wire_item it;
		int r = wire_stream_next(f->ws, &it);

		if (r < 0)
			return r;
		ev->offset = it.offset;
		switch (it.kind) {
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
		case WIRE_ITEM_EOF:
			ev->kind = DST_EV_COMPLETE;
			ev->digests = NULL;
			return 0;
		case WIRE_ITEM_END:
			ev->kind = DST_EV_CLOSED;
			return 0;
		default:
			/* Header, configuration, section headers and footers:
			 * the reader has checked them. */
			continue;
		}
	}
}

/* QEMU has sent everything and cannot hear us; take the VMDESCRIPTION (or
 * the close), whose contents do not matter. */
static int qemu_finish(struct dst_fmt *f)
{
	struct wire_item it;

	xport_set_timeout(f->x, QEMU_VMDESC_TIMEOUT_MS);
	if (wire_stream_next(f->ws, &it) == 0 && it.kind == WIRE_ITEM_VMDESC)
		wire_stream_next(f->ws, &it);
	return 0;
}

const struct dst_format_ops dst_qemu_ops = {
	.name = "qemu",
	.stream = WIRE_STREAM_QEMU,
	.caps = { .return_path = false,
		  .sizes = false,
		  .digests = false,
		  .mirror = false,
		  .pass_replies = false,
		  .announces_base = false },
	.open = qemu_open,
	.handshake = qemu_handshake,
	.accept = qemu_accept,
	.next = qemu_next,
	.finish = qemu_finish,
	.close = dst_fmt_free,
};
