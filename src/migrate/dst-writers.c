/* SPDX-License-Identifier: MIT */
/*
 * The destination's writer pool; see dst-writers.h.  One lock guards every
 * queue and the error: a submitter takes it twice per job, a writer twice
 * per job, which is nothing next to a chunk's write.  The copy of a job's
 * data into its slot happens outside the lock: a submitter reserves the
 * slot (its place in the queue and its number) under the lock, fills it,
 * and marks it ready under the lock again; a writer takes its head slot
 * only once it is ready.  So several threads may submit, and each writer
 * still runs its jobs in the order their slots were reserved.
 */
#include "dst-writers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "digest.h"

/* Slot buffers are aligned for direct I/O: file.c takes a page, or a block
 * device's logical block size if larger (up to 64 KiB), and sends anything
 * less aligned through the page cache. */
#define DSTW_ALIGN     (64u * 1024)
#define DSTW_MAX_SLOTS 64u

struct dstw_slot {
	struct dstw_job job;
	uint64_t no;  /* its place among all jobs submitted (dstw_submitted()) */
	bool ready;   /* filled: its writer may run it (under lock) */
	uint8_t *buf; /* the job's data, chunk-sized, aligned */
};

/* A range whose writeback is to start once jobs up to 'after' are done. */
struct dstw_hint {
	struct blk *blk;
	uint64_t off, len, after;
};

struct dstw_writer {
	struct dstw *pool;
	pthread_t thread;
	bool started;
	pthread_cond_t work; /* the queue got a job, or stop */
	struct dstw_slot *slot;
	uint8_t *rbuf; /* a mirrored write read back: chunk-sized, aligned */
	/* The queue: slot[head], ... (count of them, reserved in order; a
	 * writer waits for its head to be ready). */
	unsigned head, count;
};

struct dstw {
	pthread_mutex_t lock;
	pthread_cond_t space; /* a writer finished a job */
	/* nwriters 0, no threads: dstw_submit() applies each job itself,
	 * from the caller's buffer (a read-back reads into check_buf). */
	unsigned nwriters, nslots;
	uint32_t chunk_size;
	uint64_t submitted; /* jobs submitted (slots reserved) so far */
	/* The run of chunk jobs (DSTW_WRITE, DSTW_ZERO) being submitted:
	 * one after the other on run_blk, from run_from (where its
	 * writeback has not been asked for yet) to run_end; and the ranges
	 * asked for, hint[hint_head], ... (hint_n of hint_cap: two per job
	 * that can be queued, enough for runs; scattered chunks past a
	 * writer held up may find it full).  Under lock. */
	struct blk *run_blk;
	uint64_t run_from, run_end;
	struct dstw_hint *hint;
	unsigned hint_cap, hint_head, hint_n;
	unsigned hinting; /* writers starting a range's writeback, unlocked */
	bool stop;
	bool mirrored;	   /* a DSTW_MIRROR job came: keep a slot for them */
	_Atomic bool seed; /* dstw_seed_blocks() */
	uint8_t *check_buf;
	int err; /* the first failure (positive errno), sticky */
	char msg[1024];
	struct dstw_writer wr[DSTW_WRITERS * 4];
};

/* Apply one job; 0 or a negative errno with the message recorded. */
static int check_job(const struct dstw_job *job, uint8_t *buf)
{
	uint64_t want = digest_get(job->dig, job->idx);
	int r;

	/* A zero chunk that is a hole needs no read. */
	if (want == digest_zero_hash(job->dig, job->idx) &&
	    blk_is_hole(job->blk, job->off, job->len))
		return 0;
	r = blk_pread(job->blk, buf, job->len, job->off);
	if (r < 0)
		return err_prefix(-r, "read back %s at offset %llu: ", job->shown,
				  (unsigned long long)job->off);
	if (digest_hash(buf, job->len) != want)
		return err_set(EILSEQ,
			       "device %s: the chunk at offset %llu does not read back as it was "
			       "written",
			       job->shown, (unsigned long long)job->off);
	return 0;
}

static int read_blk(void *arg, void *buf, size_t len, uint64_t off)
{
	return blk_pread(arg, buf, len, off);
}

/*
 * DSTW_MIRROR: the write; its bytes read back into rbuf and compared, here
 * and now (the pass end does not read its chunk back for it: a few KiB
 * written would cost the whole chunk there, for every chunk the writes
 * touched, in the final pause too); then the chunk's hash from the
 * written bytes (and, for a block written in part, the device's).
 */
static int mirror_job(const struct dstw_job *job, const uint8_t *buf, uint8_t *rbuf)
{
	int r = buf ? blk_pwrite(job->blk, buf, job->len, job->off)
		    : blk_zero(job->blk, job->off, job->len, BLK_ZERO_MAY_TRIM);

	if (r < 0)
		return err_prefix(-r, "mirrored write to %s at offset %llu: ", job->shown,
				  (unsigned long long)job->off);
	r = blk_pread(job->blk, rbuf, job->len, job->off);
	if (r < 0)
		return err_prefix(-r, "read back %s after a mirrored write at offset %llu: ",
				  job->shown, (unsigned long long)job->off);
	if (buf ? memcmp(rbuf, buf, job->len) != 0 : !mem_is_zero(rbuf, job->len))
		return err_set(EILSEQ,
			       "device %s: the mirrored write at offset %llu does not read back "
			       "as it was written",
			       job->shown, (unsigned long long)job->off);
	/* DSTW_MIRROR jobs of different writers take turns in it (the
	 * table's cache has a lock of its own). */
	r = digest_update(job->dig, job->off, job->len, buf, read_blk, job->blk);
	if (r < 0)
		return err_prefix(-r, "read back %s after a mirrored write at offset %llu: ",
				  job->shown, (unsigned long long)job->off);
	return 0;
}

/* An applied chunk's hash, and once mirrored writes may come its block
 * hashes too (subs NULL: zeros). */
static void set_digest(struct dstw *w, const struct dstw_job *job, uint64_t hash,
		       const uint64_t *subs)
{
	if (atomic_load(&w->seed))
		digest_set_blocks(job->dig, job->idx, hash, subs);
	else
		digest_set(job->dig, job->idx, hash);
}

/*
 * Buffered chunk writes get their writeback started early, so that a
 * pass's fdatasync finds most of it under way.  Each sync_file_range is a
 * walk of ext4's writepages and a request to the disk (on a virtio disk,
 * an exit to the host): one per 64 KiB chunk, a served disk's default,
 * took a third of the receiver's kernel time in a copy.  So it is asked
 * for per run of chunks, one right after the other on a device (a bulk
 * pass is one long run; a later pass's scattered chunks are runs of one
 * or a few): every DSTW_WB_BYTES of a run, and where the run ends (the
 * next chunk job is elsewhere).  Chunks go round-robin to the writers, so
 * a range is started only once every job submitted up to its last is
 * done: by whichever writer finishes the last of them
 * (hints_start_locked()), or at once by an inline pool.  dstw_barrier()
 * waits for the ranges being started.  What is not started, fdatasync
 * writes: at a pass end, the last run's last part (under
 * DSTW_WB_BYTES), and any range the list had no room for.  (Direct:
 * blk_writeback() does nothing.)
 */
#define DSTW_WB_BYTES (1024u * 1024)

/* Ask for [off, off+len) of blk once jobs up to 'after' are done (lock
 * held, or the inline pool's one submitter).  A full list (one writer
 * held up while the others ran on through scattered chunks) leaves the
 * range to fdatasync. */
static void hint_push(struct dstw *w, struct blk *blk, uint64_t off, uint64_t len, uint64_t after)
{
	if (len && w->hint_n < w->hint_cap)
		w->hint[(w->hint_head + w->hint_n++) % w->hint_cap] =
		    (struct dstw_hint){ .blk = blk, .off = off, .len = len, .after = after };
}

/* A chunk job, number no, submitted (lock held, or the inline pool's one
 * submitter): the run it ends, joins or starts, and the writeback asked
 * for. */
static void run_note(struct dstw *w, const struct dstw_job *job, uint64_t no)
{
	if (job->op != DSTW_WRITE && job->op != DSTW_ZERO)
		return;
	if (job->blk != w->run_blk || job->off != w->run_end) {
		hint_push(w, w->run_blk, w->run_from, w->run_end - w->run_from, no - 1);
		w->run_blk = job->blk;
		w->run_from = job->off;
	}
	w->run_end = job->off + job->len;
	if (w->run_end - w->run_from >= DSTW_WB_BYTES) {
		hint_push(w, w->run_blk, w->run_from, w->run_end - w->run_from, no);
		w->run_from = w->run_end;
	}
}

/* Whether every job up to 'after' is done (lock held).  Each queue is in
 * submission order, and its head stays counted until it is done. */
static bool done_upto_locked(const struct dstw *w, uint64_t after)
{
	for (unsigned i = 0; i < w->nwriters; i++) {
		const struct dstw_writer *wr = &w->wr[i];

		if (wr->count && wr->slot[wr->head].no <= after)
			return false;
	}
	return true;
}

/* Start the writeback of every range whose jobs are all done (a
 * writer: lock held, dropped while it starts one, counted in 'hinting'
 * meanwhile; the inline pool: its submitter). */
static void hints_start_locked(struct dstw *w)
{
	while (w->hint_n && !w->err && !w->stop &&
	       done_upto_locked(w, w->hint[w->hint_head].after)) {
		struct dstw_hint h = w->hint[w->hint_head];

		w->hint_head = (w->hint_head + 1) % w->hint_cap;
		w->hint_n--;
		if (!w->nwriters) {
			blk_writeback(h.blk, h.off, h.len);
			continue;
		}
		w->hinting++;
		pthread_mutex_unlock(&w->lock);
		blk_writeback(h.blk, h.off, h.len);
		pthread_mutex_lock(&w->lock);
		if (--w->hinting == 0)
			pthread_cond_broadcast(&w->space);
	}
}

/* Apply one job from buf (its data, or room for a chunk); rbuf: room for
 * another chunk. */
static int apply_job(struct dstw *w, const struct dstw_job *job, uint8_t *buf, uint8_t *rbuf)
{
	int r;

	if (job->op == DSTW_CHECK)
		return check_job(job, buf);
	if (job->op == DSTW_MIRROR)
		return mirror_job(job, job->data ? buf : NULL, rbuf);
	if (job->op == DSTW_ZERO) {
		r = blk_zero(job->blk, job->off, job->len, BLK_ZERO_MAY_TRIM);
		if (r == 0)
			set_digest(w, job, digest_zero_hash(job->dig, job->idx), NULL);
	} else {
		r = blk_pwrite(job->blk, buf, job->len, job->off);
		if (r == 0) {
			/* rbuf (a chunk) has room for the chunk's block hashes. */
			uint64_t *subs = (uint64_t *)(void *)rbuf;

			set_digest(w, job, digest_hash_blocks(buf, job->len, subs), subs);
		}
	}
	if (r < 0)
		return err_prefix(-r, "write %s at offset %llu: ", job->shown,
				  (unsigned long long)job->off);
	return 0;
}

static void *writer_main(void *arg)
{
	struct dstw_writer *wr = arg;
	struct dstw *w = wr->pool;

	thread_name("bm-dst-writer");
	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct dstw_slot *s;
		int r = 0;

		while ((!wr->count || !wr->slot[wr->head].ready) && !w->stop)
			pthread_cond_wait(&wr->work, &w->lock);
		if (!wr->count)
			break;
		s = &wr->slot[wr->head];
		/* After a failure, or when the pool is freed with jobs still
		 * queued, the rest is dropped: the migration fails. */
		if (!w->err && !w->stop) {
			pthread_mutex_unlock(&w->lock);
			r = apply_job(w, &s->job, s->buf, wr->rbuf);
			pthread_mutex_lock(&w->lock);
		}
		if (r < 0 && !w->err) {
			w->err = -r;
			snprintf(w->msg, sizeof(w->msg), "%s", err_msg());
		}
		wr->head = (wr->head + 1) % w->nslots;
		wr->count--;
		pthread_cond_broadcast(&w->space);
		hints_start_locked(w);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* The failure, as the caller's own error: 0 if none.  Lock held. */
static int failed_locked(struct dstw *w)
{
	if (!w->err)
		return 0;
	err_copy_in(w->msg);
	return -w->err;
}

int dstw_new(unsigned nwriters, uint32_t chunk_size, struct dstw **out)
{
	size_t bufsize = ((size_t)chunk_size + DSTW_ALIGN - 1) / DSTW_ALIGN * DSTW_ALIGN;
	struct dstw *w;
	int e;

	if (nwriters > ARRAY_SIZE(w->wr) || !chunk_size)
		return err_set(EINVAL, "writer pool: %u writers for %u-byte chunks", nwriters,
			       chunk_size);
	w = calloc(1, sizeof(*w));
	if (!w)
		return err_set(ENOMEM, "no memory for the writer pool");
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->space, NULL);
	w->nwriters = nwriters;
	w->chunk_size = chunk_size;
	w->nslots = (unsigned)MIN(MAX(DSTW_QUEUE_BYTES / chunk_size, 1u), DSTW_MAX_SLOTS);
	w->hint_cap = 2 * (nwriters * w->nslots + 1);
	w->hint = calloc(w->hint_cap, sizeof(*w->hint));
	/* Every condition before anything can fail: dstw_free() destroys
	 * all of them. */
	for (unsigned i = 0; i < nwriters; i++) {
		w->wr[i].pool = w;
		pthread_cond_init(&w->wr[i].work, NULL);
	}
	if (!w->hint) {
		dstw_free(w);
		return err_set(ENOMEM, "no memory for the writer pool");
	}
	if (!nwriters) {
		if (posix_memalign((void **)&w->check_buf, DSTW_ALIGN, bufsize) != 0) {
			dstw_free(w);
			return err_set(ENOMEM, "no memory for a %u-byte chunk buffer", chunk_size);
		}
		*out = w;
		return 0;
	}
	for (unsigned i = 0; i < nwriters; i++) {
		struct dstw_writer *wr = &w->wr[i];

		wr->slot = calloc(w->nslots, sizeof(*wr->slot));
		if (!wr->slot || posix_memalign((void **)&wr->rbuf, DSTW_ALIGN, bufsize) != 0)
			goto err_nomem;
		for (unsigned k = 0; k < w->nslots; k++) {
			void *p;

			if (posix_memalign(&p, DSTW_ALIGN, bufsize) != 0)
				goto err_nomem;
			wr->slot[k].buf = p;
		}
	}
	for (unsigned i = 0; i < nwriters; i++) {
		e = pthread_create(&w->wr[i].thread, NULL, writer_main, &w->wr[i]);
		if (e) {
			dstw_free(w);
			return err_set(e, "cannot start a writer thread: %s", strerror(e));
		}
		w->wr[i].started = true;
	}
	*out = w;
	return 0;

err_nomem:
	dstw_free(w);
	return err_set(ENOMEM, "no memory for the writer pool's %u buffers of %u bytes",
		       nwriters *
			   (unsigned)MIN(MAX(DSTW_QUEUE_BYTES / chunk_size, 1u), DSTW_MAX_SLOTS),
		       chunk_size);
}

/* Inline: the job at once, from the caller's buffer; a failure is kept
 * as a pool's is (every later call returns it). */
static int submit_inline(struct dstw *w, const struct dstw_job *job)
{
	int r;

	if (w->err)
		return failed_locked(w);
	r = apply_job(w, job, job->op == DSTW_CHECK ? w->check_buf : (uint8_t *)job->data,
		      w->check_buf);
	if (r < 0) {
		w->err = -r;
		snprintf(w->msg, sizeof(w->msg), "%s", err_msg());
	} else {
		/* Every job before is done: what it asks for starts now. */
		run_note(w, job, w->submitted + 1);
		hints_start_locked(w);
	}
	return r;
}

int dstw_submit(struct dstw *w, const struct dstw_job *job)
{
	struct dstw_writer *wr;
	struct dstw_slot *s;
	unsigned cap;
	int r;

	if (job->len > w->chunk_size)
		return err_set(EINVAL, "writer pool: a %zu-byte job for %u-byte chunks", job->len,
			       w->chunk_size);
	if (!w->nwriters) {
		r = submit_inline(w, job);
		w->submitted += r == 0;
		return r;
	}
	wr = &w->wr[job->idx % w->nwriters];
	pthread_mutex_lock(&w->lock);
	/* From the first mirrored write on, the last slot is theirs (see
	 * dst-writers.h). */
	if (job->op == DSTW_MIRROR)
		w->mirrored = true;
	cap = job->op == DSTW_MIRROR || !w->mirrored || w->nslots == 1 ? w->nslots : w->nslots - 1;
	while (wr->count >= cap && !w->err)
		pthread_cond_wait(&w->space, &w->lock);
	r = failed_locked(w);
	if (r < 0) {
		pthread_mutex_unlock(&w->lock);
		return r;
	}
	/* Reserved: its place in the queue, which its writer does not take
	 * until it is ready. */
	s = &wr->slot[(wr->head + wr->count) % w->nslots];
	s->ready = false;
	s->no = ++w->submitted;
	run_note(w, job, s->no);
	wr->count++;
	pthread_mutex_unlock(&w->lock);
	s->job = *job;
	if (job->data && (job->op == DSTW_WRITE || job->op == DSTW_MIRROR)) {
		memcpy(s->buf, job->data, job->len);
		s->job.data = s->buf;
	}
	pthread_mutex_lock(&w->lock);
	s->ready = true;
	pthread_cond_signal(&wr->work);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

int dstw_barrier(struct dstw *w)
{
	int r;

	pthread_mutex_lock(&w->lock);
	for (unsigned i = 0; i < w->nwriters; i++)
		while (w->wr[i].count)
			pthread_cond_wait(&w->space, &w->lock);
	/* The last job's writer starts what it made ready before it looks
	 * for work again (hints_start_locked()). */
	while (w->hinting)
		pthread_cond_wait(&w->space, &w->lock);
	r = failed_locked(w);
	pthread_mutex_unlock(&w->lock);
	return r;
}

unsigned dstw_slots(const struct dstw *w)
{
	return w->nslots;
}

unsigned dstw_backlog(struct dstw *w)
{
	unsigned n = 0;

	if (!w->nwriters)
		return 0;
	pthread_mutex_lock(&w->lock);
	for (unsigned i = 0; i < w->nwriters; i++)
		n = MAX(n, w->wr[i].count);
	pthread_mutex_unlock(&w->lock);
	return n;
}

uint64_t dstw_submitted(struct dstw *w)
{
	uint64_t n;

	pthread_mutex_lock(&w->lock);
	n = w->submitted;
	pthread_mutex_unlock(&w->lock);
	return n;
}

int dstw_wait_done(struct dstw *w, uint64_t upto)
{
	int r;

	if (!w->nwriters)
		return 0; /* inline: done when submitted, failures the engine's */
	pthread_mutex_lock(&w->lock);
	while (!w->err && !done_upto_locked(w, upto))
		pthread_cond_wait(&w->space, &w->lock);
	r = failed_locked(w);
	pthread_mutex_unlock(&w->lock);
	return r;
}

void dstw_seed_blocks(struct dstw *w)
{
	atomic_store(&w->seed, true);
}

bool dstw_threaded(const struct dstw *w)
{
	return w && w->nwriters > 0;
}

void dstw_free(struct dstw *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	for (unsigned i = 0; i < w->nwriters; i++)
		pthread_cond_signal(&w->wr[i].work);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->nwriters; i++) {
		struct dstw_writer *wr = &w->wr[i];

		if (wr->started)
			pthread_join(wr->thread, NULL);
		for (unsigned k = 0; wr->slot && k < w->nslots; k++)
			free(wr->slot[k].buf);
		free(wr->slot);
		free(wr->rbuf);
		pthread_cond_destroy(&wr->work);
	}
	free(w->check_buf);
	free(w->hint);
	pthread_cond_destroy(&w->space);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
