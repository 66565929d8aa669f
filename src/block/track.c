/* SPDX-License-Identifier: MIT */
/*
 * Dirty-tracking layer and writers' gate; see blk_track_open() in
 * backend.h.  It sits directly above the device the guest (or NBD client)
 * writes to, so the engines and the server need not know it exists.
 *
 * Every write-type op (write, zero, trim, flush) passes the gate under the
 * mutex: it waits while the layer is paused or a bitmap is being swapped,
 * fails at once when fenced, and otherwise counts itself in flight and
 * takes the bitmap pointer in the same critical section.  The lower op then
 * runs unlocked; the range is marked in that bitmap after the lower op
 * returns and before the caller sees the result (DESIGN.md rule 1); only
 * then does the op leave the in-flight count.
 *
 * track_set_dirty() closes the gate, waits for in-flight ops to drain,
 * swaps the pointer and reopens it.  So once it returns: after a detach no
 * writer still holds the old bitmap (the caller may free it), and after an
 * attach every write not marked in the new bitmap has already reached the
 * backend (a copy pass started now will read it).
 *
 * Pause is not nested: one track_resume() undoes any number of pauses.
 * Fencing is terminal; the first error given is kept.  Reads and
 * block_status go straight down and are never held.
 */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "common/error.h"

struct track_blk {
	struct blk blk;
	pthread_mutex_t lock; /* protects everything below */
	pthread_cond_t gate;  /* broadcast when paused/swapping clear or fence_err set */
	pthread_cond_t idle;  /* broadcast when inflight drops to 0 */
	bool paused;
	bool swapping; /* track_set_dirty() is waiting for in-flight ops */
	int fence_err; /* 0, or the positive errno every write now fails with */
	unsigned inflight;
	struct dirty *dirty; /* not owned; NULL = not tracking */
	uint64_t writes;     /* write/zero/trim ops that reached the lower layer */
};

static const struct blk_ops track_ops;

static struct track_blk *to_track(struct blk *b)
{
	assert(b->ops == &track_ops);
	return (struct track_blk *)b;
}

/*
 * Pass the gate: 0 with *d set to the bitmap to mark (maybe NULL), or the
 * fence error.  Blocks while paused or swapping.
 */
static int gate_enter(struct track_blk *t, const char *what, uint64_t off, uint64_t len,
		      struct dirty **d)
{
	int err;

	pthread_mutex_lock(&t->lock);
	while ((t->paused || t->swapping) && !t->fence_err)
		pthread_cond_wait(&t->gate, &t->lock);
	err = t->fence_err;
	if (!err) {
		t->inflight++;
		*d = t->dirty;
	}
	pthread_mutex_unlock(&t->lock);
	if (err)
		return err_set(err,
			       "device is fenced: %s at offset %" PRIu64 " length %" PRIu64
			       " refused (%s)",
			       what, off, len, strerror(err));
	return 0;
}

static void gate_leave(struct track_blk *t, bool count)
{
	pthread_mutex_lock(&t->lock);
	assert(t->inflight > 0);
	if (count)
		t->writes++;
	if (--t->inflight == 0)
		pthread_cond_broadcast(&t->idle);
	pthread_mutex_unlock(&t->lock);
}

static void wait_idle_locked(struct track_blk *t)
{
	while (t->inflight > 0)
		pthread_cond_wait(&t->idle, &t->lock);
}

/* ---- ops ------------------------------------------------------------------ */

static int track_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	return blk_pread(b->lower, buf, len, off);
}

static int track_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct track_blk *t = to_track(b);
	struct dirty *d;
	int r;

	r = gate_enter(t, "write", off, len, &d);
	if (r < 0)
		return r;
	r = blk_pwrite(b->lower, buf, len, off);
	/* Even on failure: part of the range may have changed. */
	if (d)
		dirty_mark(d, off, len);
	gate_leave(t, true);
	return r;
}

static int track_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct track_blk *t = to_track(b);
	struct dirty *d;
	int r;

	r = gate_enter(t, "zero", off, len, &d);
	if (r < 0)
		return r;
	r = blk_zero(b->lower, off, len, flags);
	if (d)
		dirty_mark(d, off, len);
	gate_leave(t, true);
	return r;
}

static int track_trim(struct blk *b, uint64_t off, uint64_t len)
{
	struct track_blk *t = to_track(b);
	struct dirty *d;
	int r;

	r = gate_enter(t, "trim", off, len, &d);
	if (r < 0)
		return r;
	r = blk_trim(b->lower, off, len);
	if (d)
		dirty_mark(d, off, len);
	gate_leave(t, true);
	return r;
}

/* Held and fenced like a write (it orders writes), but marks nothing. */
static int track_flush(struct blk *b)
{
	struct track_blk *t = to_track(b);
	struct dirty *d;
	int r;

	r = gate_enter(t, "flush", 0, 0, &d);
	if (r < 0)
		return r;
	r = blk_flush(b->lower);
	gate_leave(t, false);
	return r;
}

static int track_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			      bool *allocated)
{
	return blk_block_status(b->lower, off, len, pnum, allocated);
}

/* This layer only; blk_close() goes on to close the lower one. */
static void track_close(struct blk *b)
{
	struct track_blk *t = to_track(b);

	assert(t->inflight == 0);
	pthread_cond_destroy(&t->idle);
	pthread_cond_destroy(&t->gate);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* ---- open and control ----------------------------------------------------- */

/* On failure 'lower' is left alone: the caller still owns it. */
int blk_track_open(struct blk *lower, struct blk **out)
{
	struct track_blk *t;
	int r;

	assert(lower);
	t = calloc(1, sizeof(*t));
	if (!t)
		return err_set(ENOMEM, "track: out of memory");
	r = pthread_mutex_init(&t->lock, NULL);
	if (r) {
		r = err_set(r, "track: pthread_mutex_init: %s", strerror(r));
		goto err_free_t;
	}
	r = pthread_cond_init(&t->gate, NULL);
	if (r) {
		r = err_set(r, "track: pthread_cond_init: %s", strerror(r));
		goto err_destroy_lock;
	}
	r = pthread_cond_init(&t->idle, NULL);
	if (r) {
		r = err_set(r, "track: pthread_cond_init: %s", strerror(r));
		goto err_destroy_gate;
	}
	t->blk.ops = &track_ops;
	t->blk.lower = lower;
	t->blk.size = lower->size;
	t->blk.readonly = lower->readonly;
	*out = &t->blk;
	return 0;

err_destroy_gate:
	pthread_cond_destroy(&t->gate);
err_destroy_lock:
	pthread_mutex_destroy(&t->lock);
err_free_t:
	free(t);
	return r;
}

/* Blocks until in-flight writes drain; new writes wait meanwhile. */
void track_set_dirty(struct blk *track, struct dirty *d)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	/* One swap at a time: another caller may be draining already. */
	while (t->swapping)
		pthread_cond_wait(&t->gate, &t->lock);
	t->swapping = true;
	wait_idle_locked(t);
	t->dirty = d;
	t->swapping = false;
	pthread_cond_broadcast(&t->gate);
	pthread_mutex_unlock(&t->lock);
}

void track_pause(struct blk *track)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	t->paused = true;
	wait_idle_locked(t);
	pthread_mutex_unlock(&t->lock);
}

void track_resume(struct blk *track)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	t->paused = false;
	pthread_cond_broadcast(&t->gate);
	pthread_mutex_unlock(&t->lock);
}

void track_fence(struct blk *track, int err)
{
	struct track_blk *t = to_track(track);

	assert(err > 0);
	pthread_mutex_lock(&t->lock);
	if (!t->fence_err)
		t->fence_err = err;
	pthread_cond_broadcast(&t->gate);
	pthread_mutex_unlock(&t->lock);
}

uint64_t track_writes(struct blk *track)
{
	struct track_blk *t = to_track(track);
	uint64_t n;

	pthread_mutex_lock(&t->lock);
	n = t->writes;
	pthread_mutex_unlock(&t->lock);
	return n;
}

static const struct blk_ops track_ops = {
	.name = "track",
	.pread = track_pread,
	.pwrite = track_pwrite,
	.flush = track_flush,
	.zero = track_zero,
	.trim = track_trim,
	.block_status = track_block_status,
	.close = track_close,
};
