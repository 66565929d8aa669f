/* SPDX-License-Identifier: MIT */
/*
 * The source's reader pool: threads that take chunks of the current pass
 * from a shared cursor, clear their dirty bit, read them and queue the
 * results for the engine, which sends them in completion order.  Each
 * pass drains completely before the next starts, so the last copy of a
 * chunk the destination receives is the last one read here.
 *
 * A chunk is "claimed" from the moment a reader takes it until its record
 * is on the wire (or the pass gives it back as dirty); a write to a
 * claimed chunk is mirrored only after that (src-mirror.c), so a mirrored
 * write can never reach the destination before an older copy of its
 * chunk.
 *
 * Everything here runs under j->lock except the read itself.
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

/*
 * Claim the next chunk of the current pass and clear its dirty bit (before
 * the read is issued: DESIGN.md rule 1).  false when the pass has no more.
 */
static bool next_task_locked(struct src_job *j, unsigned *dev, uint64_t *chunk)
{
	while (j->cur_dev < j->ndev) {
		struct src_dev *d = &j->dev[j->cur_dev];

		if (j->pass == PASS_BULK) {
			if (j->cur_chunk < d->nchunks) {
				*dev = j->cur_dev;
				*chunk = j->cur_chunk++;
				/* Whatever was written before this read is
				 * carried by it; do not send it twice. */
				dirty_test_and_clear(d->dirty, *chunk);
				dirty_mark(d->claimed, *chunk * j->p.chunk_size, 1);
				return true;
			}
		} else {
			int64_t next = dirty_next(d->dirty, j->cur_chunk);

			while (next >= 0) {
				j->cur_chunk = (uint64_t)next + 1;
				if (dirty_test_and_clear(d->dirty, (uint64_t)next)) {
					*dev = j->cur_dev;
					*chunk = (uint64_t)next;
					dirty_mark(d->claimed, *chunk * j->p.chunk_size, 1);
					return true;
				}
				next = dirty_next(d->dirty, j->cur_chunk);
			}
		}
		j->cur_dev++;
		j->cur_chunk = 0;
	}
	return false;
}

bool readers_copied_locked(struct src_job *j, unsigned di, uint64_t c)
{
	struct src_dev *d = &j->dev[di];

	if (!j->bulk_done) {
		if (j->pass != PASS_BULK || !j->pass_active)
			return false;
		if (di > j->cur_dev || (di == j->cur_dev && c >= j->cur_chunk))
			return false;
	}
	return !dirty_test(d->claimed, c) && !dirty_test(d->dirty, c);
}

bool readers_claimed_locked(struct src_job *j, unsigned di, uint64_t c)
{
	return dirty_test(j->dev[di].claimed, c);
}

static int read_chunk(struct src_job *j, struct result *res, enum pass_kind pass)
{
	struct src_dev *d = &j->dev[res->dev];
	uint64_t off = res->chunk * j->p.chunk_size;
	size_t len = digest_chunk_len(d->dig, res->chunk);
	int r;

	/* Holes need no read: in shared-base mode the destination already
	 * has them; otherwise they are zeros. */
	if (blk_is_hole(d->blk, off, len)) {
		res->kind = j->p.shared_base && pass == PASS_BULK ? RES_SKIP : RES_ZERO;
	} else {
		r = blk_pread(d->rblk, res->buf, len, off);
		if (r < 0)
			return err_prefix(-r, "read %s at offset %llu: ", d->name,
					  (unsigned long long)off);
		if (len < j->p.chunk_size)
			memset(res->buf + len, 0, j->p.chunk_size - len);
		res->kind = mem_is_zero(res->buf, len) ? RES_ZERO : RES_DATA;
		res->subs = (uint64_t *)(void *)(res->buf + j->subs_off);
		res->hash = digest_hash_blocks(res->buf, len, res->subs);
	}
	/* The destination offered its digest of this chunk: the bulk pass
	 * sends it only if it differs (a verify compares in every pass, as
	 * the destination's copy does not change). */
	if ((pass == PASS_BULK || j->p.verify_only) && dirty_test(d->have, res->chunk) &&
	    res->kind != RES_SKIP) {
		const uint8_t *mine = d->zero_sum[res->chunk + 1 == d->nchunks];
		uint8_t sum[NATIVE_SUM_LEN];
		bool same;

		if (res->kind == RES_DATA) {
			digest_sum(res->buf, len, sum);
			mine = sum;
		}
		same = memcmp(mine, d->sums[res->chunk], NATIVE_SUM_LEN) == 0;
		res->zero = res->kind == RES_ZERO;
		if (same)
			res->kind = RES_SAME;
		else if (j->p.verify_only)
			res->kind = RES_DIFF;
	}
	return 0;
}

/*
 * Compression, on the reader's own thread so that it scales with the
 * readers and never holds the engine: a DATA chunk is compressed into the
 * second half of its buffer, which holds chunk - chunk/16 bytes, so a
 * chunk that does not shrink by at least 1/16 fails to fit and goes raw
 * (zstd stops as soon as it runs out of room).  The frame states the
 * chunk's size, which the destination checks.
 */
static void compress_chunk(struct src_job *j, ZSTD_CCtx *cctx, struct result *res, unsigned *seen)
{
	int mode = atomic_load(&j->zmode);
	uint32_t chunk = j->p.chunk_size;
	size_t n;

	if (!cctx || res->kind != RES_DATA || mode == ZMODE_OFF)
		return;
	if (mode == ZMODE_SAMPLE && (*seen)++ % ZMODE_SAMPLE_EVERY)
		return;
	res->ztried = true;
	n = ZSTD_compressCCtx(cctx, res->buf + chunk, chunk - chunk / 16, res->buf, chunk,
			      j->p.compress_level);
	if (!ZSTD_isError(n) && n > 0 && n < chunk)
		res->zlen = (uint32_t)n;
}

/*
 * While writes are mirrored under a rate limit, how many chunks may be
 * claimed at once (read, being read, or waiting to be sent): as many as
 * the copy's share of the limit sends in READ_AHEAD_NS, at least 2 (one
 * on the wire, one read meanwhile).  A writer to a claimed chunk waits
 * for its record (src-mirror.c), so claims should not run further ahead
 * of the wire than keeps it busy: 6 chunks at 10% of 8 MB/s are half a
 * second.  Otherwise every buffer.
 */
#define READ_AHEAD_NS (10 * 1000000ull)

static unsigned claims_max_locked(struct src_job *j)
{
	uint64_t rate = atomic_load(&j->rate), copy_rate, chunk_ns;
	unsigned n;

	if (!rate || !atomic_load(&j->mirroring) || j->pass_final || j->nbufs <= 2)
		return j->nbufs;
	copy_rate = rate / 100 * (100 - atomic_load(&j->mirror_share));
	if (!copy_rate)
		return 2;
	chunk_ns = rate_ns(copy_rate, j->p.chunk_size);
	n = chunk_ns ? (unsigned)MIN(READ_AHEAD_NS / chunk_ns, (uint64_t)j->nbufs) : j->nbufs;
	return MAX(n, 2u);
}

static void *reader_main(void *arg)
{
	struct src_job *j = arg;
	/* A reader's own context, made once: none when compression is off
	 * (or no memory: the chunks go raw). */
	ZSTD_CCtx *cctx = j->p.compress != MIG_COMPRESS_OFF ? ZSTD_createCCtx() : NULL;
	unsigned seen = 0;

	thread_name("bm-src-reader");
	thread_bulk();
	pthread_mutex_lock(&j->lock);
	for (;;) {
		struct result res = { 0 };
		enum pass_kind pass;
		int r;

		while (!j->quit && !(j->pass_active && !j->pass_exhausted && j->nfree > 0 &&
				     j->nbufs - j->nfree < claims_max_locked(j) && !j->read_err))
			pthread_cond_wait(&j->work_cond, &j->lock);
		if (j->quit)
			break;
		if (!next_task_locked(j, &res.dev, &res.chunk)) {
			j->pass_exhausted = true;
			pthread_cond_broadcast(&j->done_cond);
			continue;
		}
		res.buf = j->free[--j->nfree];
		pass = j->pass;
		j->busy++;
		pthread_mutex_unlock(&j->lock);

		r = read_chunk(j, &res, pass);
		if (r == 0)
			compress_chunk(j, cctx, &res, &seen);

		pthread_mutex_lock(&j->lock);
		j->busy--;
		if (r < 0) {
			/* Its chunk stays claimed: the pass, and the migration,
			 * fail, so no write to it is ever mirrored. */
			j->free[j->nfree++] = res.buf;
			if (!j->read_err) {
				j->read_err = r;
				snprintf(j->read_msg, sizeof(j->read_msg), "%s", err_msg());
			}
		} else {
			/* The buffer stays with the result even when unused, so
			 * the queue never holds more results than there are
			 * buffers. */
			j->q[(j->qhead + j->qlen++) % j->nbufs] = res;
		}
		pthread_cond_broadcast(&j->done_cond);
	}
	pthread_mutex_unlock(&j->lock);
	ZSTD_freeCCtx(cctx);
	return NULL;
}

int readers_start(struct src_job *j)
{
	unsigned n = j->p.readers, nbufs = n + 2;
	/* With compression each buffer has room for the frame after the
	 * chunk (compress_chunk()). */
	size_t size = (size_t)j->p.chunk_size * (j->p.compress != MIG_COMPRESS_OFF ? 2 : 1);

	/* And after it, the chunk's block hashes (a multiple of the
	 * alignment, as aligned_alloc() wants). */
	j->subs_off = size;
	size +=
	    (div_round_up(j->p.chunk_size, DIGEST_BLOCK) * sizeof(uint64_t) + 4095) / 4096 * 4096;

	j->bufs = calloc(nbufs, sizeof(*j->bufs));
	j->free = calloc(nbufs, sizeof(*j->free));
	j->q = calloc(nbufs, sizeof(*j->q));
	j->threads = calloc(n, sizeof(*j->threads));
	if (!j->bufs || !j->free || !j->q || !j->threads)
		return err_set(ENOMEM, "no memory for %u read buffers", nbufs);
	/* nbufs counts only buffers that exist, for src_free(). */
	for (unsigned i = 0; i < nbufs; i++) {
		j->bufs[i] = aligned_alloc(4096, size);
		if (!j->bufs[i])
			return err_set(ENOMEM, "no memory for %u read buffers of %zu bytes", nbufs,
				       size);
		j->nbufs++;
		j->free[j->nfree++] = j->bufs[i];
	}
	for (unsigned i = 0; i < n; i++) {
		int r = pthread_create(&j->threads[i], NULL, reader_main, j);

		if (r)
			return err_set(r, "cannot start reader thread: %s", strerror(r));
		j->nthreads++;
	}
	return 0;
}

void readers_stop(struct src_job *j)
{
	pthread_mutex_lock(&j->lock);
	j->quit = true;
	pthread_cond_broadcast(&j->work_cond);
	pthread_mutex_unlock(&j->lock);
	for (unsigned i = 0; i < j->nthreads; i++)
		pthread_join(j->threads[i], NULL);
	j->nthreads = 0;
}

void readers_pass_begin_locked(struct src_job *j, enum pass_kind kind)
{
	j->pass = kind;
	/* The engine's own flag, copied where the readers may look. */
	j->pass_final = j->final_pass;
	j->cur_dev = 0;
	j->cur_chunk = 0;
	j->pass_exhausted = false;
	j->pass_active = true;
	pthread_cond_broadcast(&j->work_cond);
}

/* Past the pass's deadline: stop claiming chunks. */
static bool deadline_passed_locked(struct src_job *j)
{
	if (!j->pass_deadline || j->pass_exhausted || now_ns() < j->pass_deadline)
		return false;
	j->pass_exhausted = true;
	return true;
}

/* Wait on done_cond for an event, or until the pass's deadline if it may
 * stop there. */
static void wait_done_locked(struct src_job *j, bool may_stop)
{
	struct timespec ts;
	uint64_t now;

	if (!may_stop || !j->pass_deadline || j->pass_exhausted) {
		pthread_cond_wait(&j->done_cond, &j->lock);
		return;
	}
	now = now_ns();
	ts = mono_deadline(j->pass_deadline > now ? j->pass_deadline - now : 0);
	pthread_cond_timedwait(&j->done_cond, &j->lock, &ts);
}

/*
 * Before a chunk record: wait here, not in the transport, for the rate
 * limit to let it go, and meanwhile send every write that is queued.  They
 * are urgent (xport_set_urgent(): they wait for no chunk's share of the
 * link, and take at most their share of it, --mirror-share, so the copy
 * always goes on).  Writes
 * queued now are to chunks not claimed, so none of them needs to follow
 * the record.
 */
static int await_rate_locked(struct src_job *j)
{
	uint64_t delay;

	while ((delay = xport_send_delay(j->x)) > 0) {
		struct timespec ts;
		int r;

		if (src_cancelled(j) || j->rp_err)
			return 0; /* the caller's next look reports it */
		if (j->mq_head && !j->wl) {
			r = mirror_send_queued_locked(j, j->mq_seq);
			if (r < 0)
				return r;
			continue;
		}
		r = wl_flush_locked(j);
		if (r < 0)
			return r;
		if (r > 0)
			continue;
		ts = mono_deadline(delay);
		pthread_cond_timedwait(&j->done_cond, &j->lock, &ts);
	}
	return 0;
}

int readers_next_locked(struct src_job *j, bool may_stop, struct result *res, bool *deadline_hit)
{
	for (;;) {
		int r;

		if (j->read_err)
			return err_set(-j->read_err, "%s", j->read_msg);
		if (src_cancelled(j))
			return err_set(ECANCELED, "migration cancelled");
		if (j->rp_err) {
			err_copy_in(j->rp_msg);
			return j->rp_err;
		}
		if (j->rp_n)
			return err_set(EPROTO, "destination sent %s, which nothing asked for",
				       native_msg_name(j->rp_q[0].type));
		/* Out of time: stop claiming, send what was read.  Reads may
		 * keep the queue full, so the clock is read here every time. */
		if (may_stop && deadline_passed_locked(j))
			*deadline_hit = true;
		if (j->qlen > 0) {
			/* Every write queued until now goes first: one queued
			 * before this chunk was claimed must reach the wire
			 * before its record.  Later ones wait for the next,
			 * or go while the record waits for the rate limit. */
			uint64_t upto = j->mq_seq;

			*res = j->q[j->qhead];
			j->qhead = (j->qhead + 1) % j->nbufs;
			j->qlen--;
			r = j->wl ? wl_fence_locked(j, upto) : mirror_send_queued_locked(j, upto);
			if (r == 0)
				r = await_rate_locked(j);
			if (r < 0) {
				readers_done_locked(j, res, false);
				return r;
			}
			return 1;
		}
		/* The pass is over.  Writes still queued go out after it,
		 * except in the final pass: the writers are paused, so the
		 * queue is finite, and all of it must precede the digests.
		 * (With a write lane, the FENCE before EOS sees to that.) */
		if (j->pass_exhausted && j->busy == 0 && (!j->final_pass || !j->mq_head || j->wl))
			return 0;
		/* Nothing else to send: the writes queued until now go, then
		 * everything above is looked at again (a writer that queues
		 * as fast as its WACKs come back cannot hold the engine). */
		if (j->mq_head && !j->wl) {
			r = mirror_send_queued_locked(j, j->mq_seq);
			if (r < 0)
				return r;
			continue;
		}
		r = wl_flush_locked(j);
		if (r < 0)
			return r;
		if (r == 0)
			wait_done_locked(j, may_stop);
	}
}

void readers_done_locked(struct src_job *j, const struct result *res, bool sent)
{
	struct src_dev *d = &j->dev[res->dev];

	/* On the wire now: a write to it may be mirrored from here on, and
	 * follows this record. */
	dirty_test_and_clear(d->claimed, res->chunk);
	if (j->claim_waiters)
		pthread_cond_broadcast(&j->wack_cond);
	if (!sent)
		dirty_mark(d->dirty, res->chunk * j->p.chunk_size, 1);
	else
		wl_note_locked(j, res->dev, res->chunk);
	j->free[j->nfree++] = res->buf;
	/* One buffer is free again: one reader can go on. */
	pthread_cond_signal(&j->work_cond);
}

void readers_pass_end_locked(struct src_job *j)
{
	j->pass_active = false;
	while (j->busy > 0)
		pthread_cond_wait(&j->done_cond, &j->lock);
	while (j->qlen > 0) {
		/* Never sent: it must go in a later pass. */
		readers_done_locked(j, &j->q[j->qhead], false);
		j->qhead = (j->qhead + 1) % j->nbufs;
		j->qlen--;
	}
}
