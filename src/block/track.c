/* SPDX-License-Identifier: MIT */
/*
 * Dirty-tracking layer and writers' gate; see blk_track_open() in
 * backend.h.  It sits directly above the device the guest (or NBD client)
 * writes to, so the engines and the server need not know it exists.
 *
 * Every write-type op (write, zero, trim, flush) passes the gate: it waits
 * while the layer is paused or a bitmap is being swapped, fails at once
 * when fenced, and otherwise counts itself in flight and takes the bitmap
 * pointer.  The lower op then runs unlocked; the range is marked in that
 * bitmap after the lower op returns and before the caller sees the result
 * (DESIGN.md rule 1); only then does the op leave the in-flight count.
 *
 * While nothing is set that an op must heed (no pause, swap, fence, hold
 * or mirror: a plain dirty-tracking pass, or no migration at all) the gate
 * takes no lock: an op counts itself in 'fast' and then checks 'open'; the
 * side that closes the gate clears 'open' and then waits for 'fast' to
 * drain.  Both are sequentially consistent atomics, so either the op sees
 * the gate closed (and takes the locked way) or the closer sees the op and
 * waits for it.  Otherwise ops take the mutex, as below.
 *
 * track_set_dirty() closes the gate, waits for in-flight ops to drain,
 * swaps the pointer and reopens it.  So once it returns: after a detach no
 * writer still holds the old bitmap (the caller may free it), and after an
 * attach every write not marked in the new bitmap has already reached the
 * backend (a copy pass started now will read it).
 *
 * While a mirror is set (active migration), write and zero ops that touch
 * the same 1 MiB granule of the device are serialised across the lower op
 * and the mirror's submit() by that granule's stripe of 'order', so the
 * destination receives overlapping writes in the order they reached the
 * backend, while writes to other granules go on in parallel; the writer
 * then waits for the destination outside those locks.  An op takes the
 * stripes of every granule it touches, in ascending stripe order.
 * Discards are never offered to the mirror, only marked.  A write waiting
 * for the mirror has reached the backend and is in the mirror's hands, so
 * it no longer counts as in flight for a pause (the engine that pauses is
 * the one that sends it: waiting for it would deadlock); it still holds
 * the bitmap pointer, so a swap waits for it.
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
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "common/error.h"

/*
 * The write order stripes: granule g of the device (ORDER_GRANULE bytes)
 * belongs to stripe g % ORDER_STRIPES.  Overlapping writes share a granule,
 * so they share a stripe.
 */
#define ORDER_STRIPES	    64
#define ORDER_GRANULE_SHIFT 20

struct track_blk {
	struct blk blk;
	pthread_mutex_t lock; /* protects everything below but the atomics */
	pthread_cond_t gate;  /* broadcast when paused/swapping clear or fence_err set */
	pthread_cond_t idle;  /* broadcast when inflight drops to 0 */
	bool paused;
	bool swapping; /* track_set_dirty() is waiting for in-flight ops */
	int fence_err; /* 0, or the positive errno every write now fails with */
	unsigned inflight;
	unsigned waiting;		   /* handed to the mirror, waiting for its answer */
	struct dirty *dirty;		   /* not owned; NULL = not tracking */
	const struct track_mirror *mirror; /* NULL = not mirroring */
	void *mirror_opaque;
	/* Handed over (track_hold): nothing reaches 'lower' again; writes
	 * wait at the gate until they are redirected or fenced. */
	atomic_bool held;		      /* set under the lock; reads look without it */
	struct blk *redirect;		      /* not owned; where ops go once handed over */
	pthread_mutex_t order[ORDER_STRIPES]; /* see ORDER_STRIPES; while mirroring */
	/* The lock-free way through the gate (see the top of this file). */
	atomic_bool open;	 /* nothing set that an op must heed */
	atomic_uint fast;	 /* ops in flight that came the lock-free way */
	_Atomic uint64_t writes; /* write/zero/trim ops that reached the lower layer */
};

static const struct blk_ops track_ops;

static struct track_blk *to_track(struct blk *b)
{
	assert(b->ops == &track_ops);
	return (struct track_blk *)b;
}

/* What a write-type op took from the gate. */
struct gate_pass {
	struct blk *redirect; /* set: the op goes there, nothing else happens */
	struct dirty *dirty;
	const struct track_mirror *mirror;
	void *mirror_opaque;
	bool fast; /* came the lock-free way: counted in 'fast' */
};

/* After any change to what 'open' summarises (lock held). */
static void reopen_locked(struct track_blk *t)
{
	atomic_store(&t->open, !t->paused && !t->swapping && !atomic_load(&t->held) &&
				   !t->fence_err && !t->redirect && !t->mirror);
}

static void fast_leave(struct track_blk *t)
{
	/* The last one out while a closer may be waiting wakes it, under
	 * the lock so that the wake-up cannot fall between its check and
	 * its wait. */
	if (atomic_fetch_sub(&t->fast, 1) == 1 && !atomic_load(&t->open)) {
		pthread_mutex_lock(&t->lock);
		pthread_cond_broadcast(&t->idle);
		pthread_mutex_unlock(&t->lock);
	}
}

static bool fast_enter(struct track_blk *t, struct gate_pass *g)
{
	atomic_fetch_add(&t->fast, 1);
	if (!atomic_load(&t->open)) {
		fast_leave(t);
		return false;
	}
	*g = (struct gate_pass){ .dirty = t->dirty, .fast = true };
	return true;
}

/*
 * Pass the gate: 0 with *g set to the bitmap to mark and the mirror to
 * offer the op to (each maybe NULL), or the fence error.  Blocks while
 * paused or swapping.  Once redirected: 0 with g->redirect set, the op is
 * not in flight here (no gate_leave()), and nothing blocks it.
 */
static int gate_enter(struct track_blk *t, const char *what, uint64_t off, uint64_t len,
		      struct gate_pass *g)
{
	int err;

	if (fast_enter(t, g))
		return 0;
	pthread_mutex_lock(&t->lock);
	/* Once redirected an op touches neither the device below nor the
	 * bitmap or the mirror: a pause or a swap has nothing to wait for
	 * in it, and it waits for neither (the engine may swap while the
	 * destination, not yet serving, keeps forwarded ops waiting). */
	while ((t->paused || t->swapping || atomic_load(&t->held)) && !t->redirect && !t->fence_err)
		pthread_cond_wait(&t->gate, &t->lock);
	err = t->fence_err;
	g->redirect = NULL;
	g->fast = false;
	if (!err && t->redirect) {
		g->redirect = t->redirect;
	} else if (!err) {
		t->inflight++;
		g->dirty = t->dirty;
		g->mirror = t->mirror;
		g->mirror_opaque = t->mirror_opaque;
	}
	pthread_mutex_unlock(&t->lock);
	if (err)
		return err_set(err,
			       "device is fenced: %s at offset %" PRIu64 " length %" PRIu64
			       " refused (%s)",
			       what, off, len, strerror(err));
	return 0;
}

static void gate_leave(struct track_blk *t, const struct gate_pass *g, bool count)
{
	if (count)
		atomic_fetch_add(&t->writes, 1);
	if (g->fast) {
		fast_leave(t);
		return;
	}
	pthread_mutex_lock(&t->lock);
	assert(t->inflight > 0);
	if (--t->inflight == 0)
		pthread_cond_broadcast(&t->idle);
	pthread_mutex_unlock(&t->lock);
}

/* The op is in the mirror's hands now: out of the in-flight count. */
static void gate_hand_over(struct track_blk *t)
{
	/* Only with a mirror set, which keeps ops off the lock-free way. */
	pthread_mutex_lock(&t->lock);
	assert(t->inflight > 0);
	t->waiting++;
	if (--t->inflight == 0)
		pthread_cond_broadcast(&t->idle);
	pthread_mutex_unlock(&t->lock);
}

static void gate_leave_waiting(struct track_blk *t)
{
	pthread_mutex_lock(&t->lock);
	assert(t->waiting > 0);
	atomic_fetch_add(&t->writes, 1);
	if (--t->waiting == 0)
		pthread_cond_broadcast(&t->idle);
	pthread_mutex_unlock(&t->lock);
}

/* Until no op has the lower layer or, with 'all', the mirror. */
static void wait_idle_locked(struct track_blk *t, bool all)
{
	while (t->inflight > 0 || atomic_load(&t->fast) > 0 || (all && t->waiting > 0))
		pthread_cond_wait(&t->idle, &t->lock);
}

/* ---- ops ------------------------------------------------------------------ */

/*
 * Where a read goes: below, or once handed over where writes go (waiting
 * like them until that is known; after a fence, below: the server refuses
 * its clients then anyway).
 */
static struct blk *read_target(struct blk *b)
{
	struct track_blk *t = to_track(b);
	struct blk *to;

	if (!atomic_load(&t->held))
		return b->lower;
	pthread_mutex_lock(&t->lock);
	while (!t->redirect && !t->fence_err)
		pthread_cond_wait(&t->gate, &t->lock);
	to = t->fence_err ? b->lower : t->redirect;
	pthread_mutex_unlock(&t->lock);
	return to;
}

static int track_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	return blk_pread(read_target(b), buf, len, off);
}

enum wop { WOP_WRITE, WOP_ZERO, WOP_TRIM };

static int lower_op(struct blk *lower, enum wop w, const void *buf, uint64_t off, uint64_t len,
		    unsigned flags)
{
	switch (w) {
	case WOP_WRITE:
		return blk_pwrite(lower, buf, (size_t)len, off);
	case WOP_ZERO:
		return blk_zero(lower, off, len, flags);
	case WOP_TRIM:
		return blk_trim(lower, off, len);
	}
	return -EINVAL;
}

/* The stripes of 'order' that [off, off + len) takes, as a bit set. */
static uint64_t order_stripes(uint64_t off, uint64_t len)
{
	uint64_t g0 = off >> ORDER_GRANULE_SHIFT;
	uint64_t g1 = (off + (len ? len - 1 : 0)) >> ORDER_GRANULE_SHIFT;
	uint64_t set = 0;

	_Static_assert(ORDER_STRIPES == 64, "a stripe set is one uint64_t");
	if (g1 - g0 >= ORDER_STRIPES - 1)
		return ~UINT64_C(0);
	for (uint64_t g = g0; g <= g1; g++)
		set |= UINT64_C(1) << (g % ORDER_STRIPES);
	return set;
}

/* Ascending stripe order, so two ops that share stripes cannot deadlock. */
static void order_lock(struct track_blk *t, uint64_t set)
{
	for (unsigned i = 0; i < ORDER_STRIPES; i++)
		if (set & (UINT64_C(1) << i))
			pthread_mutex_lock(&t->order[i]);
}

static void order_unlock(struct track_blk *t, uint64_t set)
{
	for (unsigned i = 0; i < ORDER_STRIPES; i++)
		if (set & (UINT64_C(1) << i))
			pthread_mutex_unlock(&t->order[i]);
}

/*
 * Every write-type op that changes data: through the gate, down, then
 * either mirrored (and waited for) or marked dirty.  The range is marked
 * even when the lower op failed: part of it may have changed.
 */
static int tracked_op(struct blk *b, enum wop w, const void *buf, uint64_t off, uint64_t len,
		      unsigned flags)
{
	static const char *const what[] = { "write", "zero", "trim" };
	struct track_blk *t = to_track(b);
	struct gate_pass g;
	uint64_t ticket = 0, stripes = 0;
	int r, sent = 0;

	r = gate_enter(t, what[w], off, len, &g);
	if (r < 0)
		return r;
	if (g.redirect)
		return lower_op(g.redirect, w, buf, off, len, flags);
	if (g.mirror) {
		stripes = order_stripes(off, len);
		order_lock(t, stripes);
	}
	r = lower_op(b->lower, w, buf, off, len, flags);
	/* A discard is not offered: the backend need not zero what it
	 * discards, so only a read can tell what the range holds now. */
	if (g.mirror && r == 0 && w != WOP_TRIM)
		sent = g.mirror->submit(g.mirror_opaque,
					w == WOP_WRITE ? TRACK_OP_WRITE : TRACK_OP_ZERO, buf, off,
					len, &ticket);
	if (sent <= 0 && g.dirty)
		dirty_mark(g.dirty, off, len);
	if (g.mirror)
		order_unlock(t, stripes);
	if (sent <= 0) {
		gate_leave(t, &g, true);
		return r;
	}
	/* The writer hears back only once the destination has the data. */
	gate_hand_over(t);
	if (g.mirror->wait(g.mirror_opaque, ticket) < 0 && g.dirty)
		dirty_mark(g.dirty, off, len);
	gate_leave_waiting(t);
	return r;
}

static int track_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	return tracked_op(b, WOP_WRITE, buf, off, len, 0);
}

static int track_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	return tracked_op(b, WOP_ZERO, NULL, off, len, flags);
}

static int track_trim(struct blk *b, uint64_t off, uint64_t len)
{
	return tracked_op(b, WOP_TRIM, NULL, off, len, 0);
}

/* Held and fenced like a write (it orders writes), but marks nothing. */
static int track_flush(struct blk *b)
{
	struct track_blk *t = to_track(b);
	struct gate_pass g;
	int r;

	r = gate_enter(t, "flush", 0, 0, &g);
	if (r < 0)
		return r;
	if (g.redirect)
		return blk_flush(g.redirect);
	r = blk_flush(b->lower);
	gate_leave(t, &g, false);
	return r;
}

static bool track_is_hole(struct blk *b, uint64_t off, uint64_t len)
{
	return blk_is_hole(read_target(b), off, len);
}

static int track_block_status(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum,
			      bool *allocated)
{
	return blk_block_status(read_target(b), off, len, pnum, allocated);
}

/* This layer only; blk_close() goes on to close the lower one. */
static void track_close(struct blk *b)
{
	struct track_blk *t = to_track(b);

	assert(t->inflight == 0 && t->waiting == 0 && atomic_load(&t->fast) == 0);
	pthread_cond_destroy(&t->idle);
	pthread_cond_destroy(&t->gate);
	for (unsigned i = 0; i < ORDER_STRIPES; i++)
		pthread_mutex_destroy(&t->order[i]);
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
	for (unsigned i = 0; i < ORDER_STRIPES; i++) {
		r = pthread_mutex_init(&t->order[i], NULL);
		if (r) {
			while (i-- > 0)
				pthread_mutex_destroy(&t->order[i]);
			pthread_cond_destroy(&t->idle);
			r = err_set(r, "track: pthread_mutex_init: %s", strerror(r));
			goto err_destroy_gate;
		}
	}
	atomic_store(&t->open, true);
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

/*
 * Close the gate and wait for in-flight writes to drain (lock held), so the
 * caller can swap what writers use; swap_end() reopens the gate.
 */
static void swap_begin(struct track_blk *t)
{
	/* One swap at a time: another caller may be draining already. */
	while (t->swapping)
		pthread_cond_wait(&t->gate, &t->lock);
	t->swapping = true;
	reopen_locked(t);
	wait_idle_locked(t, true);
}

static void swap_end(struct track_blk *t)
{
	t->swapping = false;
	reopen_locked(t);
	pthread_cond_broadcast(&t->gate);
}

void track_set_dirty(struct blk *track, struct dirty *d)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	swap_begin(t);
	t->dirty = d;
	swap_end(t);
	pthread_mutex_unlock(&t->lock);
}

void track_set_mirror(struct blk *track, const struct track_mirror *m, void *opaque)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	swap_begin(t);
	t->mirror = m;
	t->mirror_opaque = opaque;
	swap_end(t);
	pthread_mutex_unlock(&t->lock);
}

void track_pause(struct blk *track)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	t->paused = true;
	reopen_locked(t);
	wait_idle_locked(t, false);
	pthread_mutex_unlock(&t->lock);
}

void track_resume(struct blk *track)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	t->paused = false;
	reopen_locked(t);
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
	reopen_locked(t);
	pthread_cond_broadcast(&t->gate);
	pthread_mutex_unlock(&t->lock);
}

void track_hold(struct blk *track)
{
	struct track_blk *t = to_track(track);

	pthread_mutex_lock(&t->lock);
	atomic_store(&t->held, true);
	reopen_locked(t);
	pthread_mutex_unlock(&t->lock);
}

void track_redirect(struct blk *track, struct blk *to)
{
	struct track_blk *t = to_track(track);

	assert(to && to->size == track->size);
	pthread_mutex_lock(&t->lock);
	assert(atomic_load(&t->held) && !t->redirect);
	t->redirect = to;
	reopen_locked(t);
	pthread_cond_broadcast(&t->gate);
	pthread_mutex_unlock(&t->lock);
}

uint64_t track_writes(struct blk *track)
{
	struct track_blk *t = to_track(track);
	return atomic_load(&t->writes);
}

static const struct blk_ops track_ops = {
	.name = "track",
	.pread = track_pread,
	.pwrite = track_pwrite,
	.flush = track_flush,
	.zero = track_zero,
	.trim = track_trim,
	.block_status = track_block_status,
	.is_hole = track_is_hole,
	.close = track_close,
};
