/* SPDX-License-Identifier: MIT */
/*
 * The destination's stream formats: one ops table that dest.c's engine
 * talks to, one implementation per file (dst-native.c, dst-qemu.c).  The
 * engine validates and applies records, tracks which chunks were carried,
 * syncs, reads back and checks completeness; a format turns its stream into
 * the engine's events and says what its peer hears back.  The engine never
 * asks which format it has, only what the format can carry (its caps).
 *
 * Internal to src/migrate.  When you add a format, add its ops to
 * dst_format_ops() in dest.c and a value to enum mig_format (migrate.h).
 */
#ifndef BLKMIG_MIGRATE_DST_FORMAT_H
#define BLKMIG_MIGRATE_DST_FORMAT_H

#include <stdbool.h>
#include <stdint.h>

#include "migrate.h"
#include "wire/stream.h"

struct xport;

/* What a format can carry. */
struct dst_format_caps {
	bool return_path;    /* errors and acknowledgements reach the source */
	bool sizes;	     /* the handshake announces device sizes (else the images' own) */
	bool digests;	     /* the end carries per-device digests to compare */
	bool mirror;	     /* mirrored client writes (WRITE records) can be announced */
	bool pass_replies;   /* every pass end is answered: it is made durable and
			      * read back first, per pass (else once, at the end) */
	bool announces_base; /* the handshake says whether unsent chunks are a
			      * shared base's (else the operator says so) */
};

/* What the source offers, from the handshake (or from dst_params when the
 * format has none). */
struct dst_offer {
	uint8_t id[NATIVE_ID_LEN]; /* the migration (all zeros: the format has none) */
	bool delta;		   /* the source asks for a delta sync */
	bool verify;		   /* the source only compares */
	uint32_t chunk_size;
	bool shared_base; /* chunks may be left out: the image holds the base */
	bool mirror;	  /* WRITE records may come */
	unsigned ndev;
	struct native_dev dev[NATIVE_MAX_DEVICES]; /* size 0: not announced */
};

enum dst_event_kind {
	DST_EV_RECORD,	 /* .rec: DATA, ZERO or WRITE, decoded, not yet validated */
	DST_EV_PASS_END, /* the source finished a pass */
	DST_EV_COMPLETE, /* the source has sent everything (.digests if caps.digests) */
	DST_EV_CLOSED,	 /* the input ended between two items, before COMPLETE */
	DST_EV_COMMIT,	 /* the source fenced itself after ACK of .attempt */
	DST_EV_VERDICT,	 /* a verify's outcome (.verdict) */
};

struct dst_event {
	enum dst_event_kind kind;
	uint64_t offset;		       /* stream offset, for messages */
	const struct wire_record *rec;	       /* RECORD: valid until the next event */
	const struct native_complete *digests; /* COMPLETE */
	const struct native_verdict *verdict;  /* VERDICT */
	uint32_t attempt;		       /* COMMIT */
};

/* The part every format shares; an implementation's struct starts with it. */
struct dst_fmt {
	const struct dst_format_ops *ops;
	const struct dst_params *p;
	struct xport *x;
	struct wire_stream *ws; /* reads x */
	struct wire_record rec; /* the current RECORD event's */
};

/*
 * Every op returns 0 or a negative errno with the message set where the
 * failure happened.  Called in this order: open, handshake, accept, state
 * and sums, then next until COMPLETE (pass_end after each PASS_END once
 * the engine has made the pass durable, write_queued after each WRITE
 * queued), then acknowledge and next until COMMIT (or more passes: the
 * attempt was abandoned), or finish;
 * fail instead of whatever remains when anything failed; close always.
 */
struct dst_format_ops {
	const char *name;
	enum wire_stream_format stream;
	struct dst_format_caps caps;
	/* Allocate the format's state over x (a reader is made for it). */
	int (*open)(const struct dst_params *p, struct xport *x, struct dst_fmt **out);
	/* What the source offers; nothing is opened yet. */
	int (*handshake)(struct dst_fmt *f, struct dst_offer *o);
	/* The devices are open and marked: tell the source to go on. */
	int (*accept)(struct dst_fmt *f);
	int (*next)(struct dst_fmt *f, struct dst_event *ev);
	/* Pass 'passes' is applied (and, with caps.pass_replies, durable and
	 * read back).  May be NULL.  With caps.mirror it may be called from
	 * another thread than the engine's, while the engine is in next()
	 * or write_queued() (never two sending ops at once: the engine
	 * holds a lock around both); it must only send. */
	int (*pass_end)(struct dst_fmt *f, uint64_t passes);
	/* Every WRITE up to seq is checked and queued in order (applied, and
	 * durable, before the pass_end of a pass that ends after it, and
	 * before acknowledge).  NULL when !caps.mirror. */
	int (*write_queued)(struct dst_fmt *f, uint64_t seq);
	/* After the accept, formats with a return path: what this side holds
	 * of the migration, then its chunks' digests (as many SUMS as STATE
	 * announced).  NULL otherwise. */
	int (*state)(struct dst_fmt *f, const struct native_state *st);
	int (*sums)(struct dst_fmt *f, const struct native_sums *s);
	/* Everything is durable and checked.  Formats with acknowledge: tell
	 * the source (ACK of the attempt); the hand-over is a later COMMIT
	 * event.  Otherwise finish: 0 = the devices are ours now. */
	int (*acknowledge)(struct dst_fmt *f, uint32_t attempt);
	/* With acknowledge: the COMMIT of attempt is taken, the images are
	 * this side's (best effort: the source retries until it hears it). */
	void (*committed)(struct dst_fmt *f, uint32_t attempt);
	int (*finish)(struct dst_fmt *f);
	/* The migration failed with -err and msg: tell the source.  Called
	 * only with caps.return_path (then required).  Best effort. */
	void (*fail)(struct dst_fmt *f, int err, const char *msg);
	void (*close)(struct dst_fmt *f); /* accepts NULL */
};

extern const struct dst_format_ops dst_native_ops;
extern const struct dst_format_ops dst_qemu_ops;

/* Shared by the implementations: allocate 'size' bytes (the
 * implementation's struct, which starts with struct dst_fmt), zeroed, with
 * ops, p, x and a reader over x set; and free it with its reader. */
int dst_fmt_new(size_t size, const struct dst_format_ops *ops, const struct dst_params *p,
		struct xport *x, struct dst_fmt **out);
void dst_fmt_free(struct dst_fmt *f); /* accepts NULL */

#endif
