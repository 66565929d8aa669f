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
#include <zstd.h>

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
	uint64_t wire_payload; /* payload as it went: the frame's bytes if compressed */
	bool packed, ztried;
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
	st->payload_bytes += a->wire_payload;
	if (a->packed)
		st->compressed_chunks++;
	else if (a->payload)
		st->raw_chunks++;
	if (a->ztried && !a->packed)
		st->incompressible++;
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
		const uint8_t *frame = NULL; /* the chunk as a zstd frame, if so */
		uint32_t flen = 0;

		if (res->kind == RES_DATA && res->zlen) {
			frame = res->buf + j->p.chunk_size;
			flen = res->zlen;
		} else if (res->kind == RES_ZERO && as_data && j->zero_flen &&
			   atomic_load(&j->zmode) != ZMODE_OFF) {
			/* Zeros without ZERO_BLOCK: compressed once, at the start. */
			frame = j->zero_frame;
			flen = j->zero_flen;
		}
		rec.kind = frame ? WIRE_REC_ZSTD : as_data ? WIRE_REC_DATA : WIRE_REC_ZERO;
		rec.length = flen;
		rec.name_len = (uint8_t)strlen(d->name);
		memcpy(rec.name, d->name, rec.name_len + 1u);
		n = wire_rec_encode_header(hdr, &rec);
		if (n < 0)
			return n;
		if (frame) {
			r = xport_write2(j->x, hdr, (size_t)n, frame, flen);
			a.payload = j->p.chunk_size;
			a.wire_payload = flen;
			a.packed = true;
		} else if (res->kind == RES_DATA) {
			r = xport_write2(j->x, hdr, (size_t)n, res->buf, j->p.chunk_size);
			a.payload = a.wire_payload = j->p.chunk_size;
		} else if (as_data) {
			/* No ZERO_BLOCK: the zeros travel as data.  Holes
			 * were not read, so send a zero chunk of our own. */
			if (!j->zero_buf)
				j->zero_buf = calloc(1, j->p.chunk_size);
			if (!j->zero_buf)
				return -ENOMEM;
			r = xport_write2(j->x, hdr, (size_t)n, j->zero_buf, j->p.chunk_size);
			a.payload = a.wire_payload = j->p.chunk_size;
		} else {
			r = xport_write(j->x, hdr, (size_t)n);
		}
		if (r < 0)
			return r;
		j->wl_recs++; /* what a mirrored write to it will follow */
		/* Mirrored writes may come (auto may switch to them; so may
		 * migrate-set-parameters): keep the block hashes too. */
		if (atomic_load(&j->want_mode) == MIG_MODE_DIRTY)
			digest_set(d->dig, res->chunk, hash);
		else if (res->kind == RES_ZERO || res->zero)
			digest_set_blocks(d->dig, res->chunk, hash, NULL);
		else if (res->kind == RES_DATA && res->subs)
			digest_set_blocks(d->dig, res->chunk, hash, res->subs);
		else
			digest_set(d->dig, res->chunk, hash);
	}
	a.ztried = res->ztried;
	src_stats_update(j, account_fn, &a);
	return bulk ? send_progress(j, pct) : 0;
}

/* ---- compression --------------------------------------------------------------- */

static void compressing_fn(struct mig_stats *st, void *arg)
{
	struct src_job *j = arg;

	st->compressing = atomic_load(&j->zmode) == ZMODE_ON;
	if (j->p.compress == MIG_COMPRESS_AUTO && j->sess->compress_refused)
		st->compress = MIG_COMPRESS_OFF;
}

void src_compress_start(struct src_job *j, bool accepted)
{
	atomic_store(&j->zmode, accepted ? ZMODE_ON : ZMODE_OFF);
	/* A zero chunk's frame, for zeros sent without ZERO_BLOCK (without
	 * memory for it they go raw). */
	if (accepted && !j->p.zero_blocks && !j->zero_frame) {
		uint8_t *zeros = calloc(1, j->p.chunk_size);
		size_t n;

		j->zero_frame = malloc(j->p.chunk_size);
		if (zeros && j->zero_frame) {
			n = ZSTD_compress(j->zero_frame, j->p.chunk_size - 1, zeros,
					  j->p.chunk_size, MIG_COMPRESS_DEFAULT_LEVEL);
			if (!ZSTD_isError(n))
				j->zero_flen = (uint32_t)n;
		}
		free(zeros);
	}
	j->zauto_shrinks = true; /* until measured */
	src_stats_update(j, compressing_fn, j);
}

/*
 * --compress auto, every MIG_COMPRESS_AUTO_MS of a pass: keep whichever
 * of the two ways carries the chunks faster, as measured.  The engine
 * counts the bytes of DATA chunks it sent in the interval (their size
 * before compression; zero chunks are cheap either way and would only
 * blur it) and averages that rate into the one for the way it was in:
 * compressed (ZMODE_ON) or raw (ZMODE_SAMPLE, where the readers still
 * compress one chunk in ZMODE_SAMPLE_EVERY, so that the ratio stays
 * known).  Then:
 *  - if fewer than half of the chunks tried shrank, raw: nothing to gain;
 *  - else if the other way has no rate yet, or one older than
 *    ZAUTO_PROBE_EVERY intervals (4 times that when it was less than half
 *    as fast), try it for one interval;
 *  - else compressed if it is at least 1/8 faster, raw otherwise.
 * A link that is slower than the compressors (or a rate limit) makes the
 * compressed way faster; readers starved of CPU make the raw one faster.
 * The price is at most one interval in ZAUTO_PROBE_EVERY + 1 spent the
 * slower way.
 * Comparing rates rather than asking "is the engine waiting on the socket
 * or on the readers?" matters on loopback: there the socket is slow only
 * because the receiver, on the same CPUs, is.
 */
#define ZAUTO_PROBE_EVERY 8

/* A way more than twice as slow as the other is tried 4 times less often:
 * a slow link with compressible data should not pay for probes. */
static unsigned probe_every(const struct src_job *j)
{
	uint64_t lo = MIN(j->zauto_rate[0], j->zauto_rate[1]);
	uint64_t hi = MAX(j->zauto_rate[0], j->zauto_rate[1]);

	return hi > 2 * lo ? 4 * ZAUTO_PROBE_EVERY : ZAUTO_PROBE_EVERY;
}

static void compress_auto(struct src_job *j, const struct result *res, uint64_t bytes)
{
	uint64_t now = now_ns(), ns = now - j->zauto_t0, rate;
	int mode = atomic_load(&j->zmode), next;
	unsigned cur = mode == ZMODE_ON, other = !cur;

	j->zauto_bytes += bytes;
	j->zauto_tried += res->ztried;
	j->zauto_shrunk += res->ztried && res->zlen;
	if (ns < MIG_COMPRESS_AUTO_MS * 1000000ull)
		return;
	rate = (uint64_t)((double)j->zauto_bytes * 1e9 / (double)ns);
	/* Smoothed: the chunks differ along the disk, and so does the rate. */
	j->zauto_rate[cur] = j->zauto_rate[cur] ? (j->zauto_rate[cur] + rate) / 2 : rate;
	j->zauto_age[cur] = 0;
	j->zauto_age[other]++;
	/* Nothing tried (all zeros, say): the last verdict stands. */
	if (j->zauto_tried)
		j->zauto_shrinks = j->zauto_shrunk * 2 >= j->zauto_tried;
	if (!j->zauto_shrinks)
		next = ZMODE_SAMPLE;
	else if (!j->zauto_rate[other] || j->zauto_age[other] >= probe_every(j))
		next = other ? ZMODE_ON : ZMODE_SAMPLE;
	else
		next = j->zauto_rate[1] > j->zauto_rate[0] + j->zauto_rate[0] / 8 ? ZMODE_ON
										  : ZMODE_SAMPLE;
	atomic_store(&j->zmode, next);
	j->zauto_t0 = now;
	j->zauto_bytes = j->zauto_tried = j->zauto_shrunk = 0;
	src_stats_update(j, compressing_fn, j);
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
	bool deadline_hit = false, zauto;
	int r;

	r = j->fmt->pass_begin(j, j->final_pass);
	j->truncated = false;
	if (r < 0)
		return r;
	pthread_mutex_lock(&j->lock);
	if (j->wl_hold) { /* a switch-over was abandoned: writes go on */
		j->wl_hold = false;
		pthread_cond_signal(&j->wl_cond);
	}
	readers_pass_begin_locked(j, kind);
	/* Auto's intervals are within passes: the waits between them (for
	 * SYNCED) say nothing about either way. */
	zauto = j->p.compress == MIG_COMPRESS_AUTO && atomic_load(&j->zmode) != ZMODE_OFF;
	if (zauto) {
		j->zauto_t0 = now_ns();
		j->zauto_bytes = j->zauto_tried = j->zauto_shrunk = 0;
	}
	while (r == 0) {
		struct result res;

		r = readers_next_locked(j, sent > 0, &res, &deadline_hit);
		if (r <= 0)
			break;
		pthread_mutex_unlock(&j->lock);
		r = send_result(j, &res, kind == PASS_BULK, &pct);
		if (zauto)
			compress_auto(j, &res, res.kind == RES_DATA ? j->p.chunk_size : 0);
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
