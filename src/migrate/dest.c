/* SPDX-License-Identifier: MIT */
/*
 * Destination engine: receive one migration (see migrate.h), in whichever
 * stream format dst_params names, through that format's ops
 * (dst-format.h).  The engine itself is format-independent:
 *
 *   handshake -> open each offered device, check it, mark it incomplete;
 *                accept
 *   records   -> validate each fully, then apply it (last wins), noting
 *                which chunks were carried
 *   pass end  -> where the format answers each pass: fdatasync, read back
 *                what the pass wrote, answer (active mode: on a thread of
 *                its own, while mirrored writes go on; pe_main())
 *   complete  -> make durable and read back what is not yet; every chunk
 *                carried (unless a shared base holds the rest)? digests
 *                match (where the format has them)? hand-over, clear marks
 *   anything malformed, an abort, the source gone -> fail, tell the source
 *                where the format can
 *
 * Nothing is written before a record has passed every check (DESIGN.md
 * rule 4): known device, chunk-aligned offset inside it, the part of the
 * payload past the device end dropped.  The engine thread does everything
 * but apply chunk records: it validates them and hands them to the writer
 * pool (dst-writers.h), which hashes and writes them while the engine reads
 * the next record.  The pool is drained (a barrier, its first failure
 * reported) before anything that needs every write done: a sync, a pass
 * end, completion.  A mirrored WRITE waits for no job (it is queued behind
 * those of its chunks), a checkpoint's or an active pass end's thread
 * only for the jobs submitted before it began.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitmap/dirty.h"
#include "block/backend.h"
#include "block/mark.h"
#include "state/state.h"
#include "common/error.h"
#include "common/util.h"
#include "digest.h"
#include "dst-format.h"
#include "dst-writers.h"
#include "engine.h"
#include "transport/transport.h"

_Static_assert(sizeof(((struct native_dev *)0)->name) == WIRE_NAME_MAX + 1 &&
		   sizeof(((struct mig_dev_stats *)0)->name) == WIRE_NAME_MAX + 1,
	       "device names are copied whole");

/* A thread the engine starts and later joins (a checkpoint, an active
 * pass end): err (msg) says how it failed. */
struct dst_bg {
	pthread_t thread;
	bool running;
	int err; /* positive errno, 0: none */
	char msg[1024];
};

struct dst_dev {
	char name[WIRE_NAME_MAX + 1];
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)]; /* name, str_escape()d for messages */
	char path[4096];
	struct blk *blk;
	uint64_t size;
	struct digest_table *dig;
	struct dirty *pass;    /* chunks written since the last read-back */
	struct dirty *carried; /* chunks the stream carried, in any pass */
	/* Chunks a checkpoint took and not read back yet;
	 * read_back_some() takes them a few at a time. */
	struct dirty *check;
	uint64_t check_from;   /* where read_back_some() looks next */
	struct dirty *ck_held; /* the background checkpoint's copy of carried */
	struct dirty *pe_held; /* the background pass end's copy of carried */
	bool marked;
	bool created; /* the opener made the image for this migration */
	bool written; /* something was written to it */
	/* The image as opened (0, 0 for a block device), which the record
	 * names and the hand-over checks the path still leads to. */
	uint64_t st_dev, st_ino;
	struct dirty *held;	 /* from this migration's record: chunks held durably */
	bool recorded;		 /* a record of this migration exists for it */
	struct dst_rec awaiting; /* state AWAITING: the acknowledged digest */
};

struct dst {
	const struct dst_params *p;
	struct dst_fmt *f;
	const struct dst_format_caps *caps;
	struct dst_offer offer;
	unsigned ndev;
	struct dst_dev dev[NATIVE_MAX_DEVICES];
	uint8_t *scratch;	  /* one chunk, for reading back */
	struct dstw *writers;	  /* apply chunk records */
	bool unsynced;		  /* written since the last sync */
	bool wrote;		  /* any device written, ever (st.written) */
	uint64_t wseq;		  /* the last WRITE record applied */
	uint32_t acked;		  /* the attempt acknowledged and not yet committed (0: none) */
	uint32_t awaiting;	  /* restarted after acknowledging this attempt (records) */
	uint64_t ck_bytes, ck_ns; /* written since the last checkpoint, and when it was */
	uint64_t check_credit;	  /* bytes applied that read_back_some() may match */
	/* The checkpoint running in the background (ck_sync_main): while
	 * it runs, ck_done says it has finished; the engine joins it before
	 * any sync or record of its own. */
	struct dst_bg ck;
	struct dstw *ck_pool; /* the writer threads it waits for (NULL: inline) */
	uint64_t ck_upto;     /* up to that job, before its sync */
	atomic_bool ck_done;
	/* The pass end running in the background (pe_main; active mode):
	 * while it runs it owns the checkpoint thread and every device's
	 * check set, and the engine applies only WRITE records; pe_stopped
	 * says it failed and stopped the engine's reading to say so. */
	struct dst_bg pe;
	uint64_t pe_upto; /* the writers' jobs of the pass */
	uint64_t pe_pass; /* its number, for SYNCED */
	atomic_bool pe_stopped;
	/* Held around the ops that send while a pass end may run: the
	 * engine's write_queued, the pass end's pass_end. */
	pthread_mutex_t send_lock;
	/*
	 * The write lane (active mode, native; docs/write-lane.md): its
	 * thread (wl_main) applies the WRITEs it carries.  Under wl_lock:
	 * wl_recs, the chunk records the engine has handed to the writers
	 * (a WRITE waits for its 'after'); wl_applied, the last WRITE the
	 * lane applied (a FENCE waits for it); wl_done, the thread has
	 * stopped (its failure in wl); what its writes did, which the engine
	 * takes in at each FENCE (wl_take()).
	 */
	struct xport *wlx;
	struct dst_bg wl;
	pthread_mutex_t wl_lock;
	pthread_cond_t wl_cond;
	uint64_t wl_recs, wl_applied;
	bool wl_quit, wl_done;
	atomic_bool wl_waiting; /* the lane waits for wl_recs: wake it */
	uint64_t wl_writes, wl_bytes;
	bool wl_written[NATIVE_MAX_DEVICES];
	uint64_t differing; /* verify: chunks the source found different */
	struct mig_stats st;
};

/* ---- the formats' shared part ---------------------------------------------------- */

int dst_fmt_new(size_t size, const struct dst_format_ops *ops, const struct dst_params *p,
		struct xport *x, struct dst_fmt **out)
{
	struct dst_fmt *f = calloc(1, size);
	int r;

	if (!f)
		return err_set(ENOMEM, "no memory for the %s format", ops->name);
	f->ops = ops;
	f->p = p;
	f->x = x;
	r = wire_stream_new(ops->stream, engine_xport_read, x, &f->ws);
	if (r < 0) {
		free(f);
		return r;
	}
	*out = f;
	return 0;
}

void dst_fmt_free(struct dst_fmt *f)
{
	if (!f)
		return;
	wire_stream_free(f->ws);
	free(f);
}

/* The one place a format is chosen.  When you add one, add its row. */
static const struct dst_format_ops *format_ops(enum mig_format format)
{
	static const struct dst_format_ops *const table[] = {
		[MIG_FORMAT_NATIVE] = &dst_native_ops,
		[MIG_FORMAT_QEMU] = &dst_qemu_ops,
	};

	return (unsigned)format < ARRAY_SIZE(table) ? table[format] : NULL;
}

/* ---- the durable record of this migration ------------------------------------ */

/* Remember which image the path named when it was opened. */
static int note_identity(struct dst_dev *dev)
{
	struct stat sb;

	if (stat(dev->path, &sb) < 0)
		return err_set(errno, "device %s: stat %s: %s", dev->shown, dev->path,
			       strerror(errno));
	if (!S_ISBLK(sb.st_mode)) {
		dev->st_dev = sb.st_dev;
		dev->st_ino = sb.st_ino;
	}
	return 0;
}

/* The path still names the image this migration wrote: a file replaced or
 * deleted meanwhile is never handed over as the verified copy. */
static int check_identity(const struct dst_dev *dev, const char *when)
{
	struct stat sb;

	if (!dev->path[0] || !dev->st_ino)
		return 0;
	if (stat(dev->path, &sb) < 0)
		return err_set(ESTALE,
			       "device %s: %s is gone (%s) %s: the image this migration "
			       "wrote is no longer there",
			       dev->shown, dev->path, strerror(errno), when);
	if ((uint64_t)sb.st_dev != dev->st_dev || (uint64_t)sb.st_ino != dev->st_ino)
		return err_set(ESTALE,
			       "device %s: %s was replaced by another file %s: the image "
			       "this migration wrote is no longer there",
			       dev->shown, dev->path, when);
	return 0;
}

/*
 * What an earlier connection of this migration left: chunks held durably
 * (PARTIAL), or an acknowledged hand-over (AWAITING).  A record of another
 * migration, or one that does not describe this image, is discarded before
 * anything is written: two migrations are never mixed into one image.
 */
/* An all-zero id names no migration: nothing is resumed or recorded for
 * it (a source always picks a random one). */
static bool has_id(const struct dst *d)
{
	for (unsigned i = 0; i < NATIVE_ID_LEN; i++)
		if (d->offer.id[i])
			return true;
	return false;
}

static int load_record(struct dst *d, struct dst_dev *dev)
{
	struct dst_rec rec;
	int r = dst_rec_load(dev->path, &rec);

	if (r == -ENOENT)
		return 0;
	if (r == 0 && !has_id(d)) {
		/* Not this migration's to use, whoever's it is. */
		dst_rec_release(&rec);
		return dst_rec_clear(dev->path);
	}
	if (r == 0 && memcmp(rec.id, d->offer.id, NATIVE_ID_LEN) == 0 &&
	    rec.chunk_size == d->offer.chunk_size && rec.size == dev->size &&
	    rec.st_dev == dev->st_dev && rec.st_ino == dev->st_ino && !dev->created) {
		dev->recorded = true;
		if (rec.state == DST_REC_PARTIAL) {
			dev->held = rec.held;
			return 0;
		}
		dev->awaiting = rec;
		return 0;
	}
	dst_rec_release(&rec);
	/* Corrupt, or another migration's: not this one's to use. */
	return dst_rec_clear(dev->path);
}

/*
 * Record with every image what a later connection of this migration may
 * rely on: after a pass (or checkpoint) is durable, the chunks carried so
 * far (attempt 0: PARTIAL); before the ACK of attempt n, that it was
 * acknowledged and with which digest (AWAITING).
 */
/* ---- threads in the background ------------------------------------------------- */

static int bg_start(struct dst_bg *b, void *(*fn)(void *), void *arg, const char *what)
{
	int e;

	b->err = 0;
	e = pthread_create(&b->thread, NULL, fn, arg);
	if (e)
		return err_set(e, "cannot start %s: %s", what, strerror(e));
	b->running = true;
	return 0;
}

/* On the thread: it failed with r (a negative errno) and its message. */
static void bg_fail(struct dst_bg *b, int r)
{
	b->err = -r;
	snprintf(b->msg, sizeof(b->msg), "%s", err_msg());
}

/* Wait for it, if it runs: its failure, as ours (once), or 0. */
static int bg_join(struct dst_bg *b)
{
	if (!b->running)
		return 0;
	pthread_join(b->thread, NULL);
	b->running = false;
	if (!b->err)
		return 0;
	err_copy_in(b->msg);
	return -b->err;
}

/* ---- checkpoints in the background ----------------------------------------------- */

/*
 * dev's record (if it has a path): attempt 0, PARTIAL with the chunks in
 * held; otherwise AWAITING that attempt's answer, with the digest.
 */
static int save_rec(struct dst *d, struct dst_dev *dev, uint32_t attempt, struct dirty *held)
{
	struct dst_rec rec = { .state = attempt ? DST_REC_AWAITING : DST_REC_PARTIAL,
			       .attempt = attempt,
			       .chunk_size = d->offer.chunk_size,
			       .size = dev->size,
			       .st_dev = dev->st_dev,
			       .st_ino = dev->st_ino,
			       .held = held };

	if (!dev->path[0])
		return 0;
	memcpy(rec.id, d->offer.id, NATIVE_ID_LEN);
	if (attempt)
		digest_final(dev->dig, rec.digest, &rec.chunks);
	return dst_rec_save(dev->path, &rec);
}

/* fdatasync every device; a failure names it, after 'what'. */
static int flush_devices(struct dst *d, const char *what)
{
	for (unsigned i = 0; i < d->ndev; i++) {
		int r = blk_flush(d->dev[i].blk);

		if (r < 0)
			return err_prefix(-r, "%ssync %s: ", what, d->dev[i].shown);
	}
	return 0;
}

/*
 * A checkpoint's sync and record (see checkpoint()), on a thread of its
 * own while the engine goes on applying records: the engine's view of the
 * devices is not touched here, only the blocks (fdatasync is safe beside
 * the engine's writes, and covers those that returned before it started)
 * and each device's copy of carried taken when it started.  The writers'
 * jobs submitted before it started are waited for here, not by the engine,
 * which goes on queueing more (a client's mirrored write among them).
 */
static void *ck_sync_main(void *arg)
{
	struct dst *d = arg;
	/* A writer's failure is its own (the write's message). */
	int r;

	thread_name("bm-dst-ckpt");
	thread_bulk();
	r = d->ck_pool ? dstw_wait_done(d->ck_pool, d->ck_upto) : 0;
	if (r == 0)
		r = flush_devices(d, "checkpoint: ");
	for (unsigned i = 0; r == 0 && has_id(d) && i < d->ndev; i++) {
		r = save_rec(d, &d->dev[i], 0, d->dev[i].ck_held);
		if (r < 0)
			r = err_prefix(-r, "checkpoint: device %s: ", d->dev[i].shown);
	}
	if (r < 0)
		bg_fail(&d->ck, r);
	atomic_store(&d->ck_done, true);
	return NULL;
}

static int ck_join(struct dst *d)
{
	return bg_join(&d->ck);
}

/* Start one: everything submitted to the writers so far is made durable
 * once they have applied it, and the chunks carried until now recorded. */
static int ck_start(struct dst *d)
{
	/* An inline pool has applied everything submitted to it already; it
	 * is not touched from the checkpoint's thread (writers_for_mirror()
	 * may replace it meanwhile). */
	d->ck_pool = dstw_threaded(d->writers) ? d->writers : NULL;
	d->ck_upto = d->ck_pool ? dstw_submitted(d->ck_pool) : 0;
	for (unsigned i = 0; i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];

		dirty_copy(dev->ck_held, dev->carried);
		dev->recorded = dev->recorded || (has_id(d) && dev->path[0]);
	}
	atomic_store(&d->ck_done, false);
	return bg_start(&d->ck, ck_sync_main, d, "a checkpoint thread");
}

static int save_records(struct dst *d, uint32_t attempt)
{
	int e = ck_join(d);

	for (unsigned i = 0; e == 0 && has_id(d) && i < d->ndev; i++) {
		e = save_rec(d, &d->dev[i], attempt, attempt ? NULL : d->dev[i].carried);
		if (e < 0)
			e = err_prefix(-e, "device %s: ", d->dev[i].shown);
		else if (d->dev[i].path[0])
			d->dev[i].recorded = true;
	}
	return e;
}

static int clear_records(struct dst *d)
{
	int e = ck_join(d);

	if (e < 0)
		return e;
	for (unsigned i = 0; i < d->ndev; i++) {
		int r;

		if (!d->dev[i].recorded)
			continue;
		r = dst_rec_clear(d->dev[i].path);
		if (r < 0)
			return r;
		d->dev[i].recorded = false;
	}
	return 0;
}

/* ---- devices -------------------------------------------------------------------- */

static struct dst_dev *find_dev(struct dst *d, const char *name)
{
	for (unsigned i = 0; i < d->ndev; i++)
		if (strcmp(d->dev[i].name, name) == 0)
			return &d->dev[i];
	return NULL;
}

/*
 * Writer threads only where some image takes direct I/O: several writes in
 * flight are what keeps a disk busy then.  Buffered writes are copies into
 * the page cache that take the inode's lock one at a time, so threads add a
 * copy into their slots and spin on that lock (1 GiB over loopback: 0.5 s
 * more receiver CPU than applying each record where it was read).
 */
static unsigned writers_for(const struct dst *d)
{
	for (unsigned i = 0; i < d->ndev; i++)
		if (blk_file_cache(d->dev[i].blk) == BLK_CACHE_NONE)
			return DSTW_WRITERS;
	return 0;
}

static int open_devices(struct dst *d)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];
	uint64_t chunks = 0;
	const struct dst_offer *o = &d->offer;
	int r;

	if (o->verify && !d->p->verify_only)
		return err_set(EPERM, "the source only verifies (send --verify-only): compare with "
				      "a receiver started with --verify-only");
	if (!o->verify && d->p->verify_only)
		return err_set(EPERM, "this receiver only verifies (--verify-only), but the source "
				      "migrates: run the source with --verify-only");
	if (o->delta && !d->p->allow_delta)
		return err_set(EPERM, "the source asks for a delta sync (only chunks that differ "
				      "from the image here are sent): accept it with --delta");
	if (o->shared_base && !d->p->allow_shared_base)
		return err_set(EPERM, "the source sends a shared-base migration (only allocated "
				      "data; the image must already hold the base): accept it with "
				      "receive --shared-base");
	for (unsigned i = 0; i < o->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];

		/* Same size, NUL-terminated by the decoder (snprintf here
		 * trips GCC's -Wrestrict: both live in *d). */
		memcpy(dev->name, o->dev[i].name, sizeof(dev->name));
		str_escape(dev->shown, sizeof(dev->shown), dev->name);
		dev->size = o->dev[i].size;
		r = d->p->open(d->p->user, dev->name, dev->size, &dev->blk, dev->path,
			       sizeof(dev->path), &dev->created);
		if (r < 0)
			return r;
		d->ndev++;
		if (!d->caps->sizes) /* nothing announced: the image's own */
			dev->size = blk_size(dev->blk);
		if (blk_size(dev->blk) != dev->size) {
			char a[32], b[32];

			return err_set(EINVAL,
				       "device %s: size mismatch: source %s (%llu bytes), "
				       "destination %s (%llu bytes)",
				       dev->shown, fmt_bytes(a, sizeof(a), dev->size),
				       (unsigned long long)dev->size,
				       fmt_bytes(b, sizeof(b), blk_size(dev->blk)),
				       (unsigned long long)blk_size(dev->blk));
		}
		/* The claim is checked (the opener, the size above): the
		 * tables are sized by the operator's image, and bounded. */
		chunks += div_round_up(dev->size, o->chunk_size);
		if (chunks > DST_MAX_CHUNKS)
			return err_set(EFBIG,
				       "device %s: more than %llu chunks of %u bytes in the "
				       "migration: too many to track (use a larger chunk size)",
				       dev->shown, (unsigned long long)DST_MAX_CHUNKS,
				       o->chunk_size);
		dev->dig = digest_new(dev->size, o->chunk_size);
		dev->pass = dirty_new(dev->size, o->chunk_size);
		dev->check = dirty_new(dev->size, o->chunk_size);
		dev->ck_held = dirty_new(dev->size, o->chunk_size);
		dev->pe_held = dirty_new(dev->size, o->chunk_size);
		dev->carried = dirty_new(dev->size, o->chunk_size);
		if (!dev->dig || !dev->pass || !dev->carried || !dev->check || !dev->ck_held ||
		    !dev->pe_held)
			return err_set(ENOMEM, "device %s: no memory for the tables of %llu chunks",
				       dev->shown,
				       (unsigned long long)div_round_up(dev->size, o->chunk_size));
		/* Marked as soon as it is ours, before anything else can fail:
		 * an image this run created or will write is never left
		 * looking complete. */
		if (dev->path[0] && !d->p->verify_only) {
			r = mark_incomplete(dev->path, "blkmig migration in progress");
			if (r < 0)
				return r;
			dev->marked = true;
			r = note_identity(dev);
			if (r == 0 && d->caps->digests)
				r = load_record(d, dev);
			if (r < 0)
				return r;
		}
		memcpy(d->st.dev[i].name, dev->name, sizeof(d->st.dev[i].name));
		d->st.dev[i].size = dev->size;
		d->st.total += dev->size;
	}
	d->st.ndev = d->ndev;
	for (unsigned i = 0; i < d->p->nexpect; i++)
		if (!find_dev(d, d->p->expect[i]))
			return err_set(ENOENT,
				       "device %s is not in the migration (the source "
				       "sends: %s%s)",
				       d->p->expect[i],
				       o->ndev ? str_escape(shown, sizeof(shown), o->dev[0].name)
					       : "nothing",
				       o->ndev > 1 ? ", ..." : "");
	d->scratch = aligned_alloc(4096, div_round_up(o->chunk_size, 4096) * 4096);
	if (!d->scratch)
		return err_set(ENOMEM, "no memory for a %u-byte chunk buffer", o->chunk_size);
	if (d->p->verify_only)
		return 0;
	return dstw_new(writers_for(d), o->chunk_size, &d->writers);
}

/* ---- what this side holds already ----------------------------------------------- */

/* Digest of chunk c as the image holds it: SUMS's, and the completion
 * check's (the chunk then counts as carried, as it is). */
static int hold_chunk(struct dst *d, struct dst_dev *dev, uint64_t c, uint8_t sum[NATIVE_SUM_LEN])
{
	uint64_t off = c * d->offer.chunk_size;
	size_t len = digest_chunk_len(dev->dig, c);
	int r;

	if (blk_is_hole(dev->blk, off, len)) {
		digest_zero_sum(len, sum);
		digest_set(dev->dig, c, digest_zero_hash(dev->dig, c));
	} else {
		r = blk_pread(dev->blk, d->scratch, len, off);
		if (r < 0)
			return err_prefix(-r, "read %s at offset %llu: ", dev->shown,
					  (unsigned long long)off);
		digest_sum(d->scratch, len, sum);
		digest_set(dev->dig, c, digest_hash(d->scratch, len));
	}
	dirty_mark(dev->carried, off, len);
	return 0;
}

/*
 * Tell the source what this side holds (STATE), then the digest of each
 * such chunk (SUMS), which its bulk pass compares before sending: every
 * chunk of an image that existed before, for a delta sync or a verify.
 */
static int offer_held(struct dst *d)
{
	const struct dst_format_ops *ops = d->f->ops;
	struct native_state st = { .held = NATIVE_HELD_NONE };
	bool all = d->p->verify_only || d->offer.delta;
	struct native_sums *m;
	int r = 0;

	if (!ops->state)
		return 0;
	/*
	 * Acknowledged on an earlier connection, on every device: a source
	 * that fenced itself for that attempt needs only to commit; one that
	 * abandoned it goes on, and compares every chunk.  Either way every
	 * chunk is read (and its digest taken) here, which the commit then
	 * checks against the acknowledged digests.
	 */
	d->awaiting = d->ndev && d->dev[0].awaiting.attempt ? d->dev[0].awaiting.attempt : 0;
	for (unsigned i = 0; i < d->ndev; i++)
		if (d->dev[i].awaiting.attempt != d->awaiting)
			d->awaiting = 0;
	if (d->awaiting && !d->p->verify_only) {
		all = true;
		st.attempt = d->awaiting;
		d->acked = d->awaiting;
	}
	for (unsigned i = 0; i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];

		if (all && !dev->created)
			st.sums += digest_nchunks(dev->dig);
		else if (dev->held)
			st.sums += dirty_count(dev->held);
	}
	if (st.sums)
		st.held = all ? NATIVE_HELD_ALL : NATIVE_HELD_PARTIAL;
	if (st.attempt)
		st.held = NATIVE_HELD_AWAITING;
	r = ops->state(d->f, &st);
	if (r < 0 || !st.sums)
		return r;
	m = malloc(sizeof(*m));
	if (!m)
		return err_set(ENOMEM, "no memory for a SUMS message");
	for (unsigned i = 0; r == 0 && i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];
		uint64_t n = digest_nchunks(dev->dig);

		if (all ? dev->created : !dev->held)
			continue;
		m->dev = (uint16_t)i;
		m->count = 0;
		for (uint64_t c = 0; r == 0 && c < n; c++) {
			if (!all && !dirty_test(dev->held, c))
				continue;
			m->e[m->count].chunk = c;
			r = hold_chunk(d, dev, c, m->e[m->count].sum);
			if (r == 0 && ++m->count == NATIVE_SUMS_MAX) {
				r = ops->sums(d->f, m);
				m->count = 0;
			}
		}
		if (r == 0 && m->count)
			r = ops->sums(d->f, m);
	}
	free(m);
	return r;
}

/* ---- records -------------------------------------------------------------------- */

static int unknown_device(const struct wire_record *rec, uint64_t rec_off)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];

	return err_set(ENOENT, "record at stream offset %llu: unknown device '%s'",
		       (unsigned long long)rec_off, str_escape(shown, sizeof(shown), rec->name));
}

static int apply(struct dst *d, const struct wire_record *rec, uint64_t rec_off)
{
	uint32_t cs = d->offer.chunk_size;
	struct dst_dev *dev = find_dev(d, rec->name);
	struct dstw_job job;
	uint64_t idx;
	size_t len;
	int r;

	if (!dev)
		return unknown_device(rec, rec_off);
	if (rec->offset >= dev->size)
		return err_set(ERANGE,
			       "record at stream offset %llu: offset 0x%llx beyond device %s "
			       "(size %llu bytes)",
			       (unsigned long long)rec_off, (unsigned long long)rec->offset,
			       dev->shown, (unsigned long long)dev->size);
	/* ZERO_BLOCK is accepted whether or not the source announced the
	 * capability, as QEMU does. */
	idx = rec->offset / cs;
	len = digest_chunk_len(dev->dig, idx); /* clips the device's last chunk */

	d->unsynced = d->wrote = true;
	dev->written = true;
	job = (struct dstw_job){ .op = DSTW_ZERO,
				 .blk = dev->blk,
				 .dig = dev->dig,
				 .shown = dev->shown,
				 .idx = idx,
				 .off = rec->offset,
				 .len = len };
	if (rec->kind != WIRE_REC_ZERO && !mem_is_zero(rec->data, len)) {
		job.op = DSTW_WRITE;
		job.data = rec->data;
	}
	/* Hashed and written by the chunk's writer (in order with any
	 * earlier record for it); its failure surfaces at a later submit or
	 * the next barrier, with this message. */
	r = dstw_submit(d->writers, &job);
	if (r < 0)
		return r;
	dirty_mark(dev->pass, rec->offset, len);
	dirty_mark(dev->carried, rec->offset, len);
	if (rec->kind == WIRE_REC_ZERO)
		d->st.dev[dev - d->dev].zero_chunks++;
	else
		d->st.dev[dev - d->dev].data_chunks++;
	return 0;
}

/*
 * Buffered images have their chunk records applied on the engine's thread
 * (writers_for()), which is cheapest while nobody waits.  Once clients'
 * writes are mirrored, a client waits for its WACK behind every record
 * ahead of its write: from the first WRITE record on, writer threads apply
 * the chunk records and the writes, and the engine only copies each into
 * a slot (a 64 KiB buffered write into fresh page cache costs it 100-250 us
 * on a busy 2-core VM; the copy ~10 us).  As many as with --cache none, for
 * their queues more than for parallel writes: a buffered write into a
 * fresh image can stall for tens of milliseconds (ext4 allocating blocks
 * for writeback holds the inode's lock), and the engine reads on, and
 * acknowledges writes, only while a queue has room; one writer's 4 MiB
 * is 40 ms at 100 MB/s.
 */
static int writers_for_mirror(struct dst *d)
{
	struct dstw *w;
	int r;

	if (!d->writers || dstw_threaded(d->writers))
		return 0;
	/* An inline pool holds nothing that is not applied, and a running
	 * checkpoint does not use it (ck_start()). */
	r = dstw_new(DSTW_WRITERS, d->offer.chunk_size, &w);
	if (r < 0)
		return r;
	dstw_free(d->writers);
	d->writers = w;
	return 0;
}

/*
 * A client write the source mirrored (active mode): validated like a
 * chunk, checked to be next in sequence, queued to the writers and
 * acknowledged at once: the writer on the source waits for the WACK, and
 * the disk may stall a write for tens of milliseconds (ext4 allocating
 * what a checkpoint flushes, or a direct write's device).  Each chunk's
 * part goes to that chunk's writer, behind every record before it for the
 * chunk and ahead of every one after, which writes it and then updates
 * the chunk's hash from the written bytes.  A failure there fails the
 * migration at the next submit or barrier, before any SYNCED, as a chunk
 * record's would; the source still holds the write.  The writer reads
 * the written bytes back right after writing them (DSTW_MIRROR), so the
 * chunks do not join the pass's read-back: a whole chunk read at the pass
 * end for each chunk a few KiB were written to (every chunk of the device,
 * under 4 KiB random writes) made the final pause's read-back as large as
 * the device.
 */
static int queue_write(struct dst *d, struct dst_dev *dev, const struct wire_record *rec,
		       uint64_t rec_off, uint64_t expect)
{
	uint32_t cs = d->offer.chunk_size;
	uint64_t end, off;
	int r;

	if (ckd_add_u64(&end, rec->offset, rec->length) || end > dev->size)
		return err_set(ERANGE,
			       "record at stream offset %llu: write of %u bytes at offset %llu "
			       "beyond device %s (size %llu bytes)",
			       (unsigned long long)rec_off, rec->length,
			       (unsigned long long)rec->offset, dev->shown,
			       (unsigned long long)dev->size);
	if (rec->seq != expect)
		return err_set(EBADMSG,
			       "record at stream offset %llu: write %llu out of sequence "
			       "(expected %llu)",
			       (unsigned long long)rec_off, (unsigned long long)rec->seq,
			       (unsigned long long)expect);
	for (off = rec->offset; off < end;) {
		uint64_t next = MIN(end, (off / cs + 1) * cs);
		struct dstw_job job = {
			.op = DSTW_MIRROR,
			.blk = dev->blk,
			.dig = dev->dig,
			.shown = dev->shown,
			.idx = off / cs,
			.off = off,
			.len = (size_t)(next - off),
			.data = rec->op == WIRE_WRITE_ZERO ? NULL : rec->data + (off - rec->offset),
		};

		r = dstw_submit(d->writers, &job);
		if (r < 0)
			return r;
		off = next;
	}
	dirty_mark(dev->carried, rec->offset, rec->length);
	return 0;
}

static int apply_write(struct dst *d, const struct wire_record *rec, uint64_t rec_off)
{
	struct dst_dev *dev = find_dev(d, rec->name);
	int r = writers_for_mirror(d);

	if (r < 0)
		return r;
	dstw_seed_blocks(d->writers);
	/* The reader refuses WRITE records a handshake did not announce. */
	assert(d->offer.mirror && d->f->ops->write_queued);
	if (d->wlx)
		return err_set(EPROTO,
			       "record at stream offset %llu: a WRITE on the main stream, while "
			       "the write lane carries them",
			       (unsigned long long)rec_off);
	if (!dev)
		return unknown_device(rec, rec_off);
	r = queue_write(d, dev, rec, rec_off, d->wseq + 1);
	if (r < 0)
		return r;
	d->unsynced = d->wrote = true;
	dev->written = true;
	d->wseq = rec->seq;
	pthread_mutex_lock(&d->send_lock);
	r = d->f->ops->write_queued(d->f, rec->seq);
	pthread_mutex_unlock(&d->send_lock);
	if (r < 0)
		return r;
	d->st.mirror_writes++;
	d->st.mirror_bytes += rec->length;
	return 0;
}

/* ---- the write lane ------------------------------------------------------------- */

/* The engine handed one more chunk record to the writers. */
static void wl_record_done(struct dst *d)
{
	if (!d->wlx)
		return;
	pthread_mutex_lock(&d->wl_lock);
	d->wl_recs++;
	if (atomic_load(&d->wl_waiting))
		pthread_cond_broadcast(&d->wl_cond);
	pthread_mutex_unlock(&d->wl_lock);
}

/* Engine: take in what the lane's writes did (at a FENCE, which they all
 * precede). */
static void wl_take(struct dst *d)
{
	pthread_mutex_lock(&d->wl_lock);
	if (d->wl_writes) {
		d->unsynced = d->wrote = true;
		d->st.mirror_writes += d->wl_writes;
		d->st.mirror_bytes += d->wl_bytes;
		d->wl_writes = d->wl_bytes = 0;
	}
	for (unsigned i = 0; i < d->ndev; i++)
		if (d->wl_written[i])
			d->dev[i].written = true;
	pthread_mutex_unlock(&d->wl_lock);
}

/* The lane thread, until the engine's chunk records reach 'after' (lock
 * held): 0, or -ETIMEDOUT after the idle timeout, or -ECANCELED to stop. */
static int wl_await_recs(struct dst *d, uint64_t after, uint64_t seq)
{
	int timeout = xport_get_timeout(d->wlx);
	struct timespec ts = mono_deadline((uint64_t)(timeout > 0 ? timeout : 0) * 1000000u);

	while (d->wl_recs < after && !d->wl_quit) {
		atomic_store(&d->wl_waiting, true);
		if (timeout <= 0)
			pthread_cond_wait(&d->wl_cond, &d->wl_lock);
		else if (pthread_cond_timedwait(&d->wl_cond, &d->wl_lock, &ts) == ETIMEDOUT &&
			 d->wl_recs < after)
			return err_set(ETIMEDOUT,
				       "write %llu follows chunk record %llu, which did not come "
				       "in %d s (%llu came)",
				       (unsigned long long)seq, (unsigned long long)after,
				       timeout / 1000, (unsigned long long)d->wl_recs);
	}
	atomic_store(&d->wl_waiting, false);
	return d->wl_quit ? -ECANCELED : 0;
}

/* One message off the lane: its WRITE record decoded into *rec (pointing
 * into buf), its 'after' and the record's length in *len.  1 at the lane's
 * clean end, 0, or an error. */
static int wl_read(struct dst *d, uint8_t *buf, struct wire_record *rec, uint64_t *after,
		   uint32_t *len)
{
	uint32_t cs = d->offer.chunk_size;
	uint8_t hdr[NATIVE_LANE_HDR];
	size_t got = 0, used = 0;
	int r;

	/* The lane may carry nothing for as long as nothing is mirrored,
	 * which is no failure: wait without the idle timeout until it says
	 * something (a message that stops halfway is one), or until
	 * wl_stop() shuts it. */
	do
		r = xport_readable(d->wlx, -1);
	while (r == 0);
	if (r > 0)
		r = xport_read(d->wlx, hdr, sizeof(hdr), &got);
	if (r == -ECONNRESET && got == 0)
		return 1;
	if (r == 0)
		r = native_lane_decode(hdr, WIRE_REC_HDR_MAX + cs, after, len);
	if (r == 0)
		r = xport_read(d->wlx, buf, *len, NULL);
	if (r == 0) {
		r = wire_rec_decode(buf, *len, cs, rec, &used);
		if (r == -EAGAIN || (r == 0 && used != *len))
			r = err_set(EBADMSG, "a message of %u bytes holds a record of %zu", *len,
				    used);
		else if (r == 0 && rec->kind != WIRE_REC_WRITE)
			r = err_set(EBADMSG, "a record other than WRITE");
	}
	return r;
}

/*
 * The lane's thread: each WRITE, once the chunk records it follows are
 * with the writers, is queued to its chunks' writers as on the main
 * stream (apply_write()) and acknowledged on the lane.  A failure ends the
 * engine's reading too (as a pass end's does), and is the one reported.
 */
static void *wl_main(void *arg)
{
	struct dst *d = arg;
	uint8_t *buf = malloc(WIRE_REC_HDR_MAX + (size_t)d->offer.chunk_size);
	int r = buf ? 0 : err_set(ENOMEM, "no memory for the write lane");
	uint64_t at = 0; /* the lane's offset, for messages */

	thread_name("bm-dst-wlane");
	thread_latency(); /* each mirrored write waits for it to wake */
	while (r == 0) {
		uint8_t ack[NATIVE_FRAME_HDR + 8];
		struct wire_record rec;
		struct dst_dev *dev;
		uint64_t after = 0, rec_off = at + NATIVE_LANE_HDR;
		uint32_t len = 0;

		r = wl_read(d, buf, &rec, &after, &len);
		if (r == 1) {
			r = 0;
			break;
		}
		if (r < 0)
			break;
		at = rec_off + len;
		dev = find_dev(d, rec.name);
		if (!dev) {
			r = unknown_device(&rec, rec_off);
			break;
		}
		pthread_mutex_lock(&d->wl_lock);
		r = wl_await_recs(d, after, rec.seq);
		pthread_mutex_unlock(&d->wl_lock);
		if (r == 0)
			r = queue_write(d, dev, &rec, rec_off, d->wl_applied + 1);
		if (r == 0)
			r = native_wack_encode(ack, sizeof(ack), rec.seq);
		if (r > 0)
			r = xport_write(d->wlx, ack, (size_t)r);
		if (r == 0)
			r = xport_flush(d->wlx);
		if (r < 0)
			break;
		pthread_mutex_lock(&d->wl_lock);
		d->wl_applied = rec.seq;
		d->wl_writes++;
		d->wl_bytes += rec.length;
		d->wl_written[dev - d->dev] = true;
		pthread_cond_broadcast(&d->wl_cond);
		pthread_mutex_unlock(&d->wl_lock);
	}
	free(buf);
	pthread_mutex_lock(&d->wl_lock);
	if (r < 0 && r != -ECANCELED && !d->wl_quit) {
		bg_fail(&d->wl, err_prefix(-r, "write lane: "));
		/* The engine sees it at its next record, or its wait for one
		 * ends (as a failed pass end's does). */
		xport_shutdown_read(d->f->x);
	}
	d->wl_done = true;
	pthread_cond_broadcast(&d->wl_cond);
	pthread_mutex_unlock(&d->wl_lock);
	return NULL;
}

/* Engine, at a FENCE: until the lane has applied write seq. */
static int wl_fence(struct dst *d, uint64_t seq, uint64_t rec_off)
{
	int timeout = xport_get_timeout(d->f->x);
	struct timespec ts = mono_deadline((uint64_t)(timeout > 0 ? timeout : 0) * 1000000u);
	int r = 0;

	if (!d->wlx)
		return err_set(EPROTO,
			       "record at stream offset %llu: a FENCE, but no write lane "
			       "joined",
			       (unsigned long long)rec_off);
	pthread_mutex_lock(&d->wl_lock);
	while (d->wl_applied < seq && !d->wl_done) {
		if (timeout <= 0) {
			pthread_cond_wait(&d->wl_cond, &d->wl_lock);
		} else if (pthread_cond_timedwait(&d->wl_cond, &d->wl_lock, &ts) == ETIMEDOUT &&
			   d->wl_applied < seq) {
			r = err_set(ETIMEDOUT,
				    "record at stream offset %llu: FENCE after write %llu, which "
				    "did not come in %d s (%llu came)",
				    (unsigned long long)rec_off, (unsigned long long)seq,
				    timeout / 1000, (unsigned long long)d->wl_applied);
			break;
		}
	}
	if (r == 0 && d->wl_applied < seq)
		r = d->wl.err ? -d->wl.err
			      : err_set(EPROTO,
					"record at stream offset %llu: FENCE after write %llu, but "
					"the write lane closed after write %llu",
					(unsigned long long)rec_off, (unsigned long long)seq,
					(unsigned long long)d->wl_applied);
	if (r < 0 && d->wl.err)
		err_copy_in(d->wl.msg);
	pthread_mutex_unlock(&d->wl_lock);
	if (r == 0)
		wl_take(d);
	return r;
}

static int wl_start(struct dst *d)
{
	int r;

	d->wlx = xport_write_lane(d->f->x);
	if (!d->wlx)
		return 0;
	/* Offered only with mirrored writes, which a verify never takes. */
	if (!d->offer.mirror || d->p->verify_only || !d->writers)
		return err_set(EPROTO, "a write lane joined a migration that takes no writes");
	/* Its writes go to writer threads, beside the engine's records,
	 * which leave their block hashes for them in the digest table. */
	r = writers_for_mirror(d);
	if (r < 0)
		return r;
	dstw_seed_blocks(d->writers);
	return bg_start(&d->wl, wl_main, d, "the write lane's thread");
}

/* Stop the lane's thread: its failure, if it failed, or 0. */
static int wl_stop(struct dst *d)
{
	if (!d->wl.running)
		return 0;
	pthread_mutex_lock(&d->wl_lock);
	d->wl_quit = true;
	pthread_cond_broadcast(&d->wl_cond);
	pthread_mutex_unlock(&d->wl_lock);
	/* Ends its read, or a WACK stuck on a stalled link. */
	shutdown(xport_fd(d->wlx), SHUT_RDWR);
	return bg_join(&d->wl);
}

/* Every chunk handed to the writers is applied (or the first failure). */
static int drain(struct dst *d)
{
	return d->writers ? dstw_barrier(d->writers) : 0;
}

static int sync_all(struct dst *d)
{
	int r = drain(d);

	if (r == 0)
		r = ck_join(d);
	if (r == 0)
		r = flush_devices(d, "");
	if (r < 0)
		return r;
	d->unsynced = false;
	return 0;
}

/*
 * After a pass is durable, read back every chunk it wrote and compare with
 * what was applied.  This is what makes the final digests describe the
 * images rather than the stream: a write that landed elsewhere (two
 * --device names on one file, a zeroing fallback that did not zero) shows
 * up here.  Later passes' writes replace earlier hashes, so each chunk is
 * checked in its final state by the pass that last wrote it.
 *
 * The writers read back, several chunks at once (with direct I/O the reads
 * come from the disk, not the page cache); each chunk's check is queued on
 * the writer that applied it, behind its writes and ahead of any later
 * record for it (a mirrored write waits for it too), so it sees the digest
 * of what that writer last applied.
 * This only queues the checks: a failure surfaces at the next submit or
 * barrier (make_durable() waits for them).
 */
static int check_chunk(struct dst *d, struct dst_dev *dev, uint64_t idx)
{
	struct dstw_job job = { .op = DSTW_CHECK,
				.blk = dev->blk,
				.dig = dev->dig,
				.shown = dev->shown,
				.idx = idx,
				.off = idx * d->offer.chunk_size,
				.len = digest_chunk_len(dev->dig, idx) };

	return dstw_submit(d->writers, &job);
}

/* The next chunk a checkpoint left to read back, taken out of its set;
 * false when there is none. */
static bool next_check(struct dst *d, struct dst_dev **devp, uint64_t *idxp)
{
	for (unsigned i = 0; i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];
		int64_t idx;

		if (!dirty_count(dev->check))
			continue;
		idx = dirty_next(dev->check, dev->check_from);
		if (idx < 0 && dev->check_from)
			idx = dirty_next(dev->check, 0);
		if (idx < 0)
			continue;
		dirty_test_and_clear(dev->check, (uint64_t)idx);
		dev->check_from = (uint64_t)idx + 1;
		*devp = dev;
		*idxp = (uint64_t)idx;
		return true;
	}
	return false;
}

static bool checks_left(const struct dst *d)
{
	for (unsigned i = 0; i < d->ndev; i++)
		if (dirty_count(d->dev[i].check))
			return true;
	return false;
}

/* Every chunk in the check sets, to the writers. */
static int submit_checks(struct dst *d)
{
	struct dst_dev *dev;
	uint64_t idx;

	while (next_check(d, &dev, &idx)) {
		int r = check_chunk(d, dev, idx);

		if (r < 0)
			return r;
	}
	return 0;
}

/* Every chunk written since the last read-back (pass), and what
 * checkpoints left to read_back_some() (check), to the writers. */
static int queue_read_back(struct dst *d)
{
	for (unsigned i = 0; i < d->ndev; i++) {
		/* Verify only: nothing is written, so nothing is queued. */
		assert(d->writers ||
		       (!dirty_count(d->dev[i].pass) && !dirty_count(d->dev[i].check)));
		dirty_move(d->dev[i].check, d->dev[i].pass);
	}
	return submit_checks(d);
}

/*
 * The read-back of the chunks checkpoints took, between records, so that
 * no record (a client's write waiting for its WACK) waits behind a
 * checkpoint's whole read-back: a chunk for every chunk's worth of records
 * applied since, and more while nothing waits to be read.  So little is
 * left for the pass end, whose read-back the source waits for (in the
 * final pass, with its writers paused).  Inline writers read on the
 * engine's thread, like the writes; threads get each check queued behind
 * the chunk's writes.  Either way a chunk is read back in the state its
 * digest describes.
 */
static int read_back_some(struct dst *d, uint64_t bytes)
{
	uint32_t cs = d->offer.chunk_size;
	struct dst_dev *dev;
	uint64_t idx;

	/* A pass end in the background owns the check sets. */
	if (!d->writers || d->pe.running || !checks_left(d))
		return 0;
	d->check_credit += bytes;
	for (;;) {
		bool due = d->check_credit >= cs;
		int r;

		/* Nothing due: only while the connection has nothing for us
		 * (an error there is the next read's to report) and the
		 * writers are nearly idle, so that the next record (a client's
		 * write) finds at most one job ahead of it on a writer. */
		if (!due && (xport_readable(d->f->x, 0) != 0 || dstw_backlog(d->writers) > 1))
			break;
		if (!next_check(d, &dev, &idx))
			break;
		if (due)
			d->check_credit -= cs;
		r = check_chunk(d, dev, idx);
		if (r < 0)
			return r;
	}
	/* Nothing left to check: no credit is banked for later. */
	if (d->check_credit >= cs)
		d->check_credit = 0;
	return 0;
}

/* Durable and read back: what every pass end promises where the format
 * answers it, and what the end of the migration needs in any case. */
static int make_durable(struct dst *d)
{
	int r = sync_all(d);

	if (r == 0)
		r = queue_read_back(d);
	return r < 0 ? r : drain(d);
}

/*
 * A pass can be gigabytes long: within one, what has arrived is made
 * durable and recorded every DST_CHECKPOINT_BYTES or DST_CHECKPOINT_NS, so
 * a connection that drops midway loses at most that much.  Only where the
 * format answers passes (and so has records).
 *
 * The engine does not wait for a checkpoint: its fdatasync and record run
 * on a thread of their own (ck_start()) while records go on being applied,
 * so a client's mirrored write is not held behind them (they took 8-65 ms
 * each on the development VM).  A checkpoint due while the last one still
 * runs waits for a later record; any other sync or record waits for it
 * first (ck_join()), and its failure fails the migration there.  The record
 * claims what was carried when it started; a resumed connection compares
 * every chunk it claims with the source's digest (SUMS) anyway.
 *
 * The engine does not wait for the writers either: the checkpoint's thread
 * waits for the jobs submitted before it started (dstw_wait_done()).
 *
 * The read-back of a checkpoint's chunks trails it, a chunk at a time
 * between records (read_back_some()): queued to the writer threads (direct
 * I/O, where it reads the disk), or read inline.  Pass end and completion
 * finish it before they answer.
 */
#define DST_CHECKPOINT_BYTES (32ull << 20)
#define DST_CHECKPOINT_NS    (1000000000ull)

static int checkpoint(struct dst *d, uint64_t bytes)
{
	uint64_t now;
	int r;

	/* A pass end in the background makes everything durable anyway (and
	 * owns the checkpoint thread meanwhile). */
	if (!d->caps->pass_replies || d->pe.running)
		return 0;
	d->ck_bytes += bytes;
	if (d->ck_bytes < DST_CHECKPOINT_BYTES && (now = now_ns()) - d->ck_ns < DST_CHECKPOINT_NS)
		return 0;
	/* The last one still syncing: look again after the next record. */
	if (d->ck.running && !atomic_load(&d->ck_done))
		return 0;
	r = ck_join(d);
	if (r == 0)
		r = ck_start(d);
	/* Read back a few at a time from now on (read_back_some()). */
	for (unsigned i = 0; r == 0 && i < d->ndev; i++)
		dirty_move(d->dev[i].check, d->dev[i].pass);
	d->ck_bytes = 0;
	d->ck_ns = now_ns();
	return r;
}

/*
 * Active mode: the pass end runs on a thread of its own, so that the client
 * writes the source mirrors meanwhile (WRITE records are all it sends
 * until SYNCED) are applied and acknowledged while the pass is made
 * durable, not after it: a pass end's sync took tens of milliseconds on
 * buffered images and up to half a second with --cache none on the
 * development VM, and a client's write waited for all of it.
 *
 * It waits for the writers' jobs of the pass (not for later ones), syncs,
 * queues the read-back of every chunk the pass (and the checkpoints before
 * it) wrote, each on its chunk's writer behind whatever mirrored writes
 * reached that chunk meanwhile (so a chunk is checked in the state its
 * digest describes, which may be newer than the pass's), waits for those
 * checks, records the chunks carried when the pass ended, and answers
 * (SYNCED).  A WRITE taken meanwhile is not in that answer's promise: it
 * is durable by the next one, or by the ACK.
 *
 * The engine joins it before anything but a WRITE record.  A failure here
 * ends the engine's reading (it may be waiting for the source, which waits
 * for SYNCED), and the engine then fails with this failure's message.
 */
static void *pe_main(void *arg)
{
	struct dst *d = arg;
	int r;

	thread_name("bm-dst-passend");
	r = dstw_wait_done(d->writers, d->pe_upto);
	if (r == 0)
		r = ck_join(d);
	if (r == 0)
		r = flush_devices(d, "");
	if (r == 0)
		r = submit_checks(d);
	if (r == 0)
		r = dstw_wait_done(d->writers, dstw_submitted(d->writers));
	for (unsigned i = 0; r == 0 && has_id(d) && i < d->ndev; i++) {
		r = save_rec(d, &d->dev[i], 0, d->dev[i].pe_held);
		if (r < 0)
			r = err_prefix(-r, "device %s: ", d->dev[i].shown);
	}
	if (r == 0) {
		pthread_mutex_lock(&d->send_lock);
		r = d->f->ops->pass_end(d->f, d->pe_pass);
		pthread_mutex_unlock(&d->send_lock);
	}
	if (r < 0) {
		bg_fail(&d->pe, r);
		/* The engine sees the flag after its next record, and a wait
		 * for one (the source may be waiting for SYNCED) ends. */
		atomic_store(&d->pe_stopped, true);
		xport_shutdown_read(d->f->x);
	}
	return NULL;
}

/* Whether pass ends run in the background (pe_main). */
static bool pe_wanted(const struct dst *d)
{
	return d->offer.mirror && d->caps->pass_replies && d->f->ops->pass_end &&
	       !d->p->verify_only;
}

static int pe_start(struct dst *d)
{
	/* Writer threads: the pass end's read-back and the engine's writes
	 * are both queued to them. */
	int r = writers_for_mirror(d);

	if (r < 0)
		return r;
	d->st.iterations++;
	d->ck_bytes = 0;
	d->ck_ns = now_ns();
	d->pe_pass = d->st.iterations;
	d->pe_upto = dstw_submitted(d->writers);
	for (unsigned i = 0; i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];

		dirty_move(dev->check, dev->pass);
		dirty_copy(dev->pe_held, dev->carried);
		dev->recorded = dev->recorded || (has_id(d) && dev->path[0]);
	}
	d->unsynced = false; /* set again by the next write */
	atomic_store(&d->pe_stopped, false);
	return bg_start(&d->pe, pe_main, d, "a pass end's thread");
}

static int pass_end(struct dst *d)
{
	int r;

	if (pe_wanted(d))
		return pe_start(d);
	r = drain(d);
	if (r < 0)
		return r;
	d->st.iterations++;
	d->ck_bytes = 0;
	d->ck_ns = now_ns();
	if (d->caps->pass_replies)
		r = make_durable(d);
	/* What a later connection of this migration need not be sent again. */
	if (r == 0 && d->caps->pass_replies && !d->p->verify_only)
		r = save_records(d, 0);
	if (r == 0 && d->f->ops->pass_end)
		r = d->f->ops->pass_end(d->f, d->st.iterations);
	return r;
}

/* ---- completion ----------------------------------------------------------------- */

/*
 * Without a shared base every chunk must have been carried at least once,
 * or part of the image is simply old data.  The message names the device
 * and its first missing range.
 */
static int check_carried(struct dst *d)
{
	uint32_t cs = d->offer.chunk_size;

	if (d->offer.shared_base)
		return 0;
	for (unsigned i = 0; i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];
		uint64_t n = dirty_nchunks(dev->carried), first = 0, end, len;
		int64_t next;
		char lb[32];

		if (dirty_count(dev->carried) == n)
			continue;
		while (dirty_test(dev->carried, first))
			first++;
		next = dirty_next(dev->carried, first);
		end = next < 0 ? dev->size : MIN((uint64_t)next * cs, dev->size);
		len = end - first * cs;
		return err_set(EBADMSG,
			       "device %s: the source carried %llu of %llu chunks: the migration "
			       "is incomplete (first missing: %s at offset %llu)%s",
			       dev->shown, (unsigned long long)dirty_count(dev->carried),
			       (unsigned long long)n, fmt_bytes(lb, sizeof(lb), len),
			       (unsigned long long)(first * cs),
			       d->caps->announces_base
				   ? ""
				   : "; if the source sends only allocated data (QEMU migrate "
				     "with inc: true), the image must hold the base: accept it "
				     "with --shared-base");
	}
	return 0;
}

static int check_digests(struct dst *d, const struct native_complete *c)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];

	if (c->ndev != d->ndev)
		return err_set(EBADMSG, "completion: %u digests for %u devices", c->ndev, d->ndev);
	for (unsigned i = 0; i < c->ndev; i++) {
		struct dst_dev *dev = find_dev(d, c->dev[i].name);
		uint8_t ours[DIGEST_LEN];
		uint64_t chunks;

		if (!dev)
			return err_set(EBADMSG, "completion: digest for unknown device '%s'",
				       str_escape(shown, sizeof(shown), c->dev[i].name));
		digest_final(dev->dig, ours, &chunks);
		if (chunks != c->dev[i].chunks || memcmp(ours, c->dev[i].digest, DIGEST_LEN) != 0)
			return err_set(EILSEQ,
				       "device %s: digest mismatch (source %llu chunks, "
				       "destination %llu chunks): the image is not what was sent",
				       dev->shown, (unsigned long long)c->dev[i].chunks,
				       (unsigned long long)chunks);
	}
	return 0;
}

/* The migration is complete: the images may be served as such now. */
static int clear_marks(struct dst *d)
{
	for (unsigned i = 0; i < d->ndev; i++) {
		int r;

		if (!d->dev[i].marked)
			continue;
		r = mark_clear(d->dev[i].path);
		if (r < 0)
			return r;
		d->dev[i].marked = false;
	}
	return 0;
}

static int complete(struct dst *d, const struct native_complete *digests)
{
	int r = 0;

	d->st.state = MIG_FINAL;
	r = drain(d);
	if (r == 0 && d->unsynced)
		r = make_durable(d);
	if (r == 0)
		r = check_carried(d);
	if (r == 0 && digests)
		r = check_digests(d, digests);
	if (r < 0)
		return r;
	/* Everything is durable and verified.  With an acknowledgement, the
	 * source hands over by a COMMIT of this attempt; without, the format
	 * does now. */
	if (d->f->ops->acknowledge) {
		for (unsigned i = 0; r == 0 && i < d->ndev; i++)
			r = check_identity(&d->dev[i], "before the acknowledgement");
		if (r == 0)
			r = save_records(d, digests->attempt);
		if (r == 0)
			r = d->f->ops->acknowledge(d->f, digests->attempt);
		if (r == 0)
			d->acked = digests->attempt;
		return r;
	}
	r = d->f->ops->finish(d->f);
	return r < 0 ? r : clear_marks(d);
}

/* The source fenced itself after the acknowledgement: the images are ours. */
static int commit(struct dst *d, uint32_t attempt)
{
	int r = 0;

	if (!d->acked || attempt != d->acked)
		return err_set(EPROTO, "the source committed attempt %u, but %s", attempt,
			       d->acked ? "another was acknowledged" : "none was acknowledged");
	/* Acknowledged on an earlier connection: the images must still be
	 * what was acknowledged, chunk for chunk (offer_held() read them). */
	for (unsigned i = 0; r == 0 && d->awaiting && i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];
		uint8_t digest[DIGEST_LEN];
		uint64_t chunks;

		digest_final(dev->dig, digest, &chunks);
		if (r == 0 && (chunks != dev->awaiting.chunks ||
			       memcmp(digest, dev->awaiting.digest, DIGEST_LEN) != 0))
			r = err_set(EILSEQ,
				    "device %s: the image no longer matches the digest it "
				    "acknowledged before the restart",
				    dev->shown);
	}
	for (unsigned i = 0; r == 0 && i < d->ndev; i++)
		r = check_identity(&d->dev[i], "before the hand-over");
	if (r == 0)
		r = clear_marks(d);
	return r < 0 ? r : clear_records(d);
}

/* Verify only: what the source found. */
static int verdict(struct dst *d, const struct native_verdict *v)
{
	char shown[STR_ESCAPE_CAP(WIRE_NAME_MAX)];

	if (v->ndev != d->ndev)
		return err_set(EPROTO, "verdict: %u devices of %u", v->ndev, d->ndev);
	for (unsigned i = 0; i < v->ndev; i++) {
		struct dst_dev *dev = find_dev(d, v->dev[i].name);

		if (!dev)
			return err_set(EPROTO, "verdict: unknown device '%s'",
				       str_escape(shown, sizeof(shown), v->dev[i].name));
		d->st.dev[dev - d->dev].differing = v->dev[i].differing;
		d->differing += v->dev[i].differing;
	}
	return 0;
}

/*
 * The migration failed: an image this run created and never wrote is
 * removed, so a refused or failed migration leaves the directory as it
 * was.  One that was written keeps its data, marked incomplete: a later
 * run with the same size completes it, and nothing serves it meanwhile.
 * Best effort, after the blk is closed; the failure's message stands.
 */
static void discard_created(struct dst_dev *dev)
{
	char msg[1024];

	if (!dev->created || dev->written || !dev->path[0])
		return;
	snprintf(msg, sizeof(msg), "%s", err_msg());
	if (unlink(dev->path) == 0)
		mark_clear(dev->path);
	err_copy_in(msg);
}

/* ---- the engine loop -------------------------------------------------------------- */

static int run(struct dst *d)
{
	const struct dst_format_ops *ops = d->f->ops;
	int r = ops->handshake(d->f, &d->offer);

	if (r == 0 && d->p->claim)
		r = d->p->claim(d->p->claim_user, d->offer.id);
	if (r == 0)
		r = open_devices(d);
	if (r == 0)
		r = ops->accept(d->f);
	if (r == 0)
		r = offer_held(d);
	if (r == 0)
		r = wl_start(d);
	if (r < 0)
		return r;
	d->st.state = MIG_BULK;
	d->ck_ns = now_ns();
	for (;;) {
		struct dst_event ev = { 0 };
		uint64_t bytes;

		r = ops->next(d->f, &ev);
		/* The write lane failed: its failure stopped our reading. */
		if (r < 0 && d->wl.running) {
			pthread_mutex_lock(&d->wl_lock);
			if (d->wl.err) {
				err_copy_in(d->wl.msg);
				r = -d->wl.err;
			}
			pthread_mutex_unlock(&d->wl_lock);
		}
		/* A pass end in the background is joined before anything but
		 * a WRITE record, and once it has failed: then it also ended
		 * our reading (a wait for a source that waits for SYNCED), and
		 * its failure is the one to report. */
		if (d->pe.running && (r < 0 || atomic_load(&d->pe_stopped) ||
				      ev.kind != DST_EV_RECORD || ev.rec->kind != WIRE_REC_WRITE)) {
			int e = bg_join(&d->pe);

			if (e < 0)
				return e;
		}
		if (r < 0)
			return r;
		/* Anything but COMMIT after an ACK: that attempt was abandoned
		 * (the source resumed its writers), and the migration goes on. */
		if (ev.kind != DST_EV_COMMIT && ev.kind != DST_EV_CLOSED && d->acked) {
			d->acked = 0;
			d->awaiting = 0;
			d->st.state = MIG_DIRTY;
		}
		switch (ev.kind) {
		case DST_EV_RECORD:
			if (d->p->verify_only)
				return err_set(EPROTO,
					       "record at stream offset %llu: a verify-only "
					       "source sent data",
					       (unsigned long long)ev.offset);
			if (ev.rec->kind == WIRE_REC_FENCE) {
				r = wl_fence(d, ev.rec->seq, ev.offset);
				break;
			}
			if (ev.rec->kind == WIRE_REC_WRITE) {
				r = apply_write(d, ev.rec, ev.offset);
			} else {
				r = apply(d, ev.rec, ev.offset);
				if (r == 0)
					wl_record_done(d);
			}
			/* A checkpoint bounds what a dropped connection costs
			 * again: a ZERO record costs next to nothing to resend
			 * (only the clock triggers checkpoints for them). */
			bytes =
			    ev.rec->kind == WIRE_REC_WRITE ? ev.rec->length : d->offer.chunk_size;
			if (r == 0)
				r = checkpoint(d, ev.rec->kind == WIRE_REC_ZERO ? 0 : bytes);
			if (r == 0)
				r = read_back_some(d, bytes);
			break;
		case DST_EV_PASS_END:
			r = pass_end(d);
			break;
		case DST_EV_COMPLETE:
			assert(!d->caps->digests || ev.digests);
			if (d->p->verify_only)
				return err_set(EPROTO, "a verify-only source asked to hand over");
			r = complete(d, ev.digests);
			if (r < 0 || !d->f->ops->acknowledge)
				return r;
			break;
		case DST_EV_COMMIT:
			r = commit(d, ev.attempt);
			if (r == 0 && d->f->ops->committed)
				d->f->ops->committed(d->f, ev.attempt);
			return r;
		case DST_EV_VERDICT:
			if (!d->p->verify_only)
				return err_set(EPROTO, "the source sent a verdict, but migrates");
			return verdict(d, ev.verdict);
		case DST_EV_CLOSED:
			if (d->acked)
				return err_set(ECONNRESET,
					       "the connection closed after the acknowledgement, "
					       "before the source's commit: the image stays marked "
					       "until the source says whether it handed over");
			return err_set(ECONNRESET,
				       "the source closed the connection at stream offset "
				       "%llu, before completing the migration",
				       (unsigned long long)ev.offset);
		}
		if (r < 0)
			return r;
	}
}

int dst_run(const struct dst_params *p, struct xport *x, struct cancel *cancel,
	    struct mig_stats *st)
{
	const struct dst_format_ops *ops = format_ops(p->format);
	struct dst *d;
	uint64_t t0 = now_ns();
	int r;

	if (!ops)
		return err_set(EINVAL, "unknown stream format %d", (int)p->format);
	d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(ENOMEM, "no memory for the destination engine");
	d->p = p;
	d->caps = &ops->caps;
	d->st.state = MIG_SETUP;
	pthread_mutex_init(&d->send_lock, NULL);
	pthread_mutex_init(&d->wl_lock, NULL);
	{
		/* Its waits have mono_deadline()s. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&d->wl_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	xport_set_cancel(x, cancel);
	r = ops->open(p, x, &d->f);
	if (r == 0)
		r = run(d);
	if (d->wl.running) {
		/* The engine's outcome stands; the lane's failure was taken
		 * in already if it caused it. */
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		(void)wl_stop(d);
		err_copy_in(msg);
	}
	if (d->pe.running) {
		/* The engine failed first (the pass end would have been
		 * joined otherwise): its message stands. */
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		(void)bg_join(&d->pe);
		err_copy_in(msg);
	}
	if (r < 0) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		if (d->f && d->caps->return_path)
			ops->fail(d->f, -r, msg);
		err_copy_in(msg);
		d->st.state = r == -ECANCELED ? MIG_CANCELLED : MIG_FAILED;
	} else {
		d->st.state = MIG_COMPLETED;
	}
	d->st.verify = p->verify_only;
	if (r == 0 && d->differing)
		r = err_set(EILSEQ, "%llu chunk%s differ%s from the source's",
			    (unsigned long long)d->differing, d->differing == 1 ? "" : "s",
			    d->differing == 1 ? "s" : "");
	d->st.transferred = xport_rx_bytes(x);
	d->st.written = d->wrote;
	d->st.total_ns = now_ns() - t0;
	/* Before the devices close: writes still queued after a failure
	 * are dropped. */
	(void)ck_join(d);
	dstw_free(d->writers);
	for (unsigned i = 0; i < d->ndev; i++) {
		blk_close(d->dev[i].blk);
		if (r < 0)
			discard_created(&d->dev[i]);
		digest_free(d->dev[i].dig);
		dirty_free(d->dev[i].pass);
		dirty_free(d->dev[i].carried);
		dirty_free(d->dev[i].check);
		dirty_free(d->dev[i].ck_held);
		dirty_free(d->dev[i].pe_held);
		dirty_free(d->dev[i].held);
	}
	if (st)
		*st = d->st;
	ops->close(d->f);
	pthread_mutex_destroy(&d->send_lock);
	pthread_mutex_destroy(&d->wl_lock);
	pthread_cond_destroy(&d->wl_cond);
	free(d->scratch);
	free(d);
	return r;
}
