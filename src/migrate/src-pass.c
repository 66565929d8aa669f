/* SPDX-License-Identifier: MIT */
/*
 * One pass of the source engine: the format opens it, the reader pool
 * (src-readers.c) feeds chunks, the engine thread sends each as a record
 * (and queued mirrored writes before them), the format closes it.  On
 * return the pipeline is empty.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "common/error.h"
#include "common/util.h"
#include "digest.h"
#include "src-impl.h"
#include "transport/transport.h"

int src_open_blocks(struct src_job *j)
{
	uint8_t type = NATIVE_MSG_BLOCKS;
	int r;

	if (j->in_blocks)
		return 0;
	r = xport_write(j->x, &type, 1);
	if (r == 0)
		j->in_blocks = true;
	return r;
}

struct sent_arg {
	unsigned dev;
	enum result_kind kind;
	uint64_t bytes;
	bool bulk;
	uint64_t payload;
	bool verify;	    /* a comparison, not a send */
	uint64_t differing; /* verify: the device's differing chunks now */
};

static void account_fn(struct mig_stats *st, void *arg)
{
	struct sent_arg *a = arg;

	if (a->kind == RES_DATA)
		st->dev[a->dev].data_chunks++;
	else if (a->kind == RES_ZERO)
		st->dev[a->dev].zero_chunks++;
	else if (a->kind == RES_SAME && !a->verify)
		st->dev[a->dev].matched++;
	else if (a->kind == RES_SKIP)
		st->dev[a->dev].skipped++;
	if (a->verify)
		st->dev[a->dev].differing = a->differing;
	st->data_bytes += a->payload;
	if (a->bulk)
		st->bulk_done += a->bytes;
}

/* The bulk pass's percentage, as a PROGRESS record when it moves. */
static int send_progress(struct src_job *j, unsigned *pct)
{
	uint8_t hdr[WIRE_REC_HDR_MAX];
	struct mig_stats st;
	unsigned now;
	int n;

	src_stats(j, &st);
	now = (unsigned)(st.bulk_done * 100 / (st.total ? st.total : 1));
	if (now == *pct)
		return 0;
	*pct = now;
	n = wire_rec_encode_header(
	    hdr, &(struct wire_record){ .kind = WIRE_REC_PROGRESS, .percent = now });
	return n < 0 ? n : xport_write(j->x, hdr, (size_t)n);
}

static int send_result(struct src_job *j, const struct result *res, bool bulk, unsigned *pct)
{
	struct src_dev *d = &j->dev[res->dev];
	struct wire_record rec = { .offset = res->chunk * j->p.chunk_size };
	struct sent_arg a = { .dev = res->dev, .kind = res->kind, .bulk = bulk };
	uint8_t hdr[WIRE_REC_HDR_MAX];
	uint64_t hash = res->hash;
	int n, r = 0;

	/* The figures count records as sent: zeros without ZERO_BLOCK are
	 * data records. */
	if (res->kind == RES_ZERO && !j->p.zero_blocks)
		a.kind = RES_DATA;
	a.bytes = digest_chunk_len(d->dig, res->chunk);
	if (res->kind == RES_ZERO || res->zero)
		hash = digest_zero_hash(d->dig, res->chunk);
	if (j->p.verify_only) {
		/* Compared, never sent: note what it found. */
		if (res->kind == RES_DIFF)
			dirty_mark(d->differs, rec.offset, 1);
		else
			dirty_test_and_clear(d->differs, res->chunk);
		a.verify = true;
		a.differing = dirty_count(d->differs);
	} else if (res->kind == RES_SAME) {
		/* The destination holds it: it counts as carried, as it is. */
		digest_set(d->dig, res->chunk, hash);
	} else if (res->kind != RES_SKIP) {
		bool as_data = res->kind == RES_DATA || !j->p.zero_blocks;

		rec.kind = as_data ? WIRE_REC_DATA : WIRE_REC_ZERO;
		rec.name_len = (uint8_t)strlen(d->name);
		memcpy(rec.name, d->name, rec.name_len + 1u);
		n = wire_rec_encode_header(hdr, &rec);
		if (n < 0)
			return n;
		if (res->kind == RES_DATA) {
			r = xport_write2(j->x, hdr, (size_t)n, res->buf, j->p.chunk_size);
			a.payload = j->p.chunk_size;
		} else if (as_data) {
			/* No ZERO_BLOCK: the zeros travel as data.  Holes
			 * were not read, so send a zero chunk of our own. */
			if (!j->zero_buf)
				j->zero_buf = calloc(1, j->p.chunk_size);
			if (!j->zero_buf)
				return -ENOMEM;
			r = xport_write2(j->x, hdr, (size_t)n, j->zero_buf, j->p.chunk_size);
			a.payload = j->p.chunk_size;
		} else {
			r = xport_write(j->x, hdr, (size_t)n);
		}
		if (r < 0)
			return r;
		digest_set(d->dig, res->chunk, hash);
	}
	src_stats_update(j, account_fn, &a);
	return bulk ? send_progress(j, pct) : 0;
}

/*
 * With j->pass_deadline set, the pass stops claiming chunks when it passes
 * (at least one chunk goes first, so a pass cut short still makes
 * headway): what was read is sent, the rest stays dirty, and j->truncated
 * says so.
 */
int src_run_pass(struct src_job *j, enum pass_kind kind)
{
	unsigned pct = ~0u;
	uint64_t sent = 0;
	bool deadline_hit = false;
	int r;

	r = j->fmt->pass_begin(j, j->final_pass);
	j->truncated = false;
	if (r < 0)
		return r;
	pthread_mutex_lock(&j->lock);
	readers_pass_begin_locked(j, kind);
	while (r == 0) {
		struct result res;

		r = readers_next_locked(j, sent > 0, &res, &deadline_hit);
		if (r <= 0)
			break;
		pthread_mutex_unlock(&j->lock);
		r = send_result(j, &res, kind == PASS_BULK, &pct);
		sent++;
		src_report(j, false);
		pthread_mutex_lock(&j->lock);
		readers_done_locked(j, &res, r == 0);
	}
	readers_pass_end_locked(j);
	if (r == 0 && kind == PASS_BULK)
		j->bulk_done = true;
	pthread_mutex_unlock(&j->lock);
	/* Cut short only if something was left behind. */
	j->truncated = deadline_hit && src_dirty_total(j) > 0;
	if (r < 0)
		return r;
	return j->fmt->pass_end(j, j->final_pass);
}
