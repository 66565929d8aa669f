/* SPDX-License-Identifier: MIT */
/*
 * Source engine: the sending half of a live migration over the native
 * format (see migrate.h for the state machine, docs/wire-format.md for the
 * bytes).
 *
 * Threads: the engine thread (src_run's caller) owns the state machine and
 * the transport.  A pool of reader threads takes chunks from a shared
 * cursor, clears their dirty bit, reads them and queues the results; the
 * engine thread encodes and sends them in completion order.  Each pass
 * drains completely before the next starts, so the last copy of a chunk the
 * destination receives is the last one read here.
 *
 * Native format: a return-path thread reads everything the destination
 * says (SYNCED, ACK, ERROR, WACK) and hands it over, so the destination is
 * heard while the engine is busy sending.
 *
 * Active mode: the devices' tracking layers offer every write to
 * mirror_submit().  A write whose chunks have all been copied, are not
 * being copied and are not dirty is sent as a WRITE record by the writer's
 * own thread and the writer waits for its WACK; any other write is marked
 * dirty as usual.  One ticket lock ("send lock") orders every sender on
 * the transport in arrival order, so the background copy gets its turn
 * between mirrored writes and keeps making progress.  Why the order is
 * safe: a chunk being copied is "claimed" from the moment a reader takes it
 * until its record is on the wire, and writes to a claimed chunk are not
 * mirrored but marked dirty; a write is mirrored only after it reached the
 * backend, under the device's write order, so any later read of that chunk
 * sees it.  The digest of a mirrored chunk is taken again from the backend
 * once its record is sent, still under the same order.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "digest.h"
#include "engine.h"
#include "transport/transport.h"
#include "wire/savevm.h"

#define PROGRESS_INTERVAL_NS (100 * 1000000ull)
/* How often (in records) the engine looks for a message from the destination. */
#define PEER_CHECK_EVERY 16

enum pass_kind {
	PASS_BULK,  /* every chunk of every device */
	PASS_DIRTY, /* chunks whose dirty bit is set */
};

enum result_kind {
	RES_DATA, /* buf holds the chunk */
	RES_ZERO, /* the chunk reads as zeros: send ZERO_BLOCK */
	RES_SKIP, /* shared base: unallocated, not sent */
};

struct result {
	enum result_kind kind;
	unsigned dev;
	uint64_t chunk;
	uint8_t *buf; /* a pool buffer, held until the result is sent */
	uint64_t hash;
};

struct src_job;

struct src_dev {
	struct src_job *job;
	const char *name;
	struct blk *blk;
	uint64_t size;
	uint64_t nchunks;
	struct dirty *dirty;
	struct dirty *claimed; /* chunks claimed and not yet on the wire (job lock) */
	struct digest_table *dig;
	uint8_t *scratch; /* a chunk, for mirrored writes' digests (write order) */
};

/* The pass under way, so the figures move during it too: when it began
 * (0: none), bytes sent before it, and the time and bytes of the passes
 * before it. */
struct live_pass {
	uint64_t t0, w0, busy_ns, wire;
	bool bulk;
};

struct src_job {
	struct src_params p;
	unsigned ndev;
	struct src_dev dev[NATIVE_MAX_DEVICES];
	struct cancel *cancel; /* src_cancel() fires it; the transport watches it */
	_Atomic uint64_t rate;
	_Atomic uint64_t downtime_ns; /* max downtime; may change while running */
	struct xport *x;

	mig_progress_fn progress;
	void *progress_user;
	uint64_t last_progress_ns;

	pthread_mutex_t stats_lock; /* guards stats and live */
	struct mig_stats stats;
	struct live_pass live;

	/* Pass machinery; everything below is guarded by lock. */
	pthread_mutex_t lock;
	pthread_cond_t work_cond; /* readers: a task or a buffer may be available */
	pthread_cond_t done_cond; /* engine: a result or the end of the pass */
	bool quit;
	bool pass_active;
	bool pass_exhausted;
	enum pass_kind pass;
	unsigned cur_dev;
	uint64_t cur_chunk;
	unsigned busy; /* readers holding a task */
	int read_err;  /* first reader failure, negative errno */
	char read_msg[512];

	unsigned nbufs;
	uint8_t **bufs; /* every buffer, for freeing */
	uint8_t **free; /* stack of free buffers */
	unsigned nfree;
	struct result *q; /* ring of finished reads */
	unsigned qhead, qlen;

	unsigned nthreads;
	pthread_t *threads;
	bool paused;
	bool bulk_done;		/* the bulk pass has been sent whole (lock) */
	uint64_t pass_deadline; /* now_ns() at which to cut the pass short, 0 never */
	bool truncated;		/* the last pass was cut short */

	/* Senders on the transport take turns (a ticket lock). */
	pthread_mutex_t send_mu;
	pthread_cond_t send_cond;
	uint64_t send_next, send_serving;
	uint64_t wseq; /* the last WRITE sequence number sent (send lock) */

	/* The return path (native): the thread and what it received. */
	pthread_mutex_t rp_mu;
	pthread_cond_t rp_cond; /* a reply, a WACK, an error or the end */
	pthread_t rp_thread;
	bool rp_running, rp_quit;
	bool rp_have;	   /* a SYNCED or ACK waits for the engine */
	uint8_t rp_type;   /* its type */
	uint64_t rp_value; /* SYNCED's count */
	int rp_err;	   /* the destination's ERROR or a read failure */
	char rp_msg[1024];
	uint64_t wacked;    /* WACK: writes up to here are applied there */
	uint64_t wseq_sent; /* the last WRITE put on the wire, as rp_mu sees it */
	int timeout_ms;	    /* the transport's idle timeout, for replies and WACKs */
	bool mirror_stop;   /* the migration is over: waiting writers give up */

	/* Mode (engine thread, except 'want_mode'). */
	_Atomic int want_mode; /* enum mig_mode, as asked for (src_set_mode) */
	atomic_bool mirroring; /* the tracking layers have the mirror */
	unsigned stalls;       /* dirty passes in a row that did not shrink the set */
	bool should_mirror;    /* AUTO: the last pass says dirty passes will not do */
	char stall_reason[160];
	bool in_blocks;		       /* a BLOCKS message is open on the wire (no EOS yet) */
	bool final_pass;	       /* QEMU: this pass is the END section */
	uint64_t passes_sent;	       /* BLOCKS messages completed on the wire */
	uint8_t reply[NATIVE_MSG_MAX]; /* the destination's last framed message */
	uint8_t *zero_buf;	       /* a zero chunk, for holes sent without ZERO_BLOCK */
};

/* ---- stats ---------------------------------------------------------------- */

static void stats_update(struct src_job *j, void (*fn)(struct mig_stats *, void *), void *arg)
{
	pthread_mutex_lock(&j->stats_lock);
	fn(&j->stats, arg);
	pthread_mutex_unlock(&j->stats_lock);
}

static uint64_t dirty_total(const struct src_job *j)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < j->ndev; i++)
		n += dirty_bytes(j->dev[i].dirty);
	return n;
}

void src_stats(struct src_job *j, struct mig_stats *out)
{
	uint64_t dirty = dirty_total(j);
	struct live_pass live;

	pthread_mutex_lock(&j->stats_lock);
	*out = j->stats;
	live = j->live;
	pthread_mutex_unlock(&j->stats_lock);
	if (j->x)
		out->transferred = xport_tx_bytes(j->x);
	/* The unread part of the bulk pass counts as pending, always (QEMU
	 * 7.2 leaves it out and "completes" with data missing). */
	out->remaining = out->state == MIG_COMPLETED ? 0 : out->total - out->bulk_done + dirty;
	if (live.t0 && j->x && out->transferred >= live.w0) {
		/* Mid-pass: the bandwidth so far, this pass included, and
		 * during the bulk pass the rate writes dirty chunks at. */
		uint64_t elapsed = now_ns() - live.t0;
		double secs = (double)(live.busy_ns + elapsed) / 1e9;

		if (secs > 0.05) {
			out->bandwidth =
			    (uint64_t)((double)(live.wire + out->transferred - live.w0) / secs);
			if (live.bulk && elapsed)
				out->dirty_rate = (uint64_t)((double)dirty * 1e9 / (double)elapsed);
			out->expected_downtime_ns =
			    out->bandwidth
				? (uint64_t)((double)out->remaining * 1e9 / (double)out->bandwidth)
				: UINT64_MAX;
		}
	}
}

static void set_live(struct src_job *j, const struct live_pass *a)
{
	pthread_mutex_lock(&j->stats_lock);
	j->live = *a;
	pthread_mutex_unlock(&j->stats_lock);
}

static void report(struct src_job *j, bool force)
{
	uint64_t now = now_ns();
	struct mig_stats st;

	if (!j->progress || (!force && now - j->last_progress_ns < PROGRESS_INTERVAL_NS))
		return;
	j->last_progress_ns = now;
	src_stats(j, &st);
	j->progress(&st, j->progress_user);
}

static void set_state_fn(struct mig_stats *st, void *arg)
{
	st->state = *(enum mig_state *)arg;
}

static void set_state(struct src_job *j, enum mig_state s)
{
	stats_update(j, set_state_fn, &s);
	report(j, true);
}

/* ---- reader threads ---------------------------------------------------------- */

/*
 * Claim the next chunk of the current pass and clear its dirty bit (before
 * the read is issued: DESIGN.md rule 1); it is claimed until its record is on
 * the wire.  false when the pass has no more.
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

/*
 * Whether the destination has chunk c of device di as it is now, but for
 * writes still to come: copied by the bulk pass, not being copied, not
 * dirty.  Only then may a write to it be mirrored.
 */
static bool copied_locked(struct src_job *j, unsigned di, uint64_t c)
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

static int read_chunk(struct src_job *j, struct result *res)
{
	struct src_dev *d = &j->dev[res->dev];
	uint64_t off = res->chunk * j->p.chunk_size;
	size_t len = digest_chunk_len(d->dig, res->chunk);
	int r;

	/* Holes need no read: in shared-base mode the destination already
	 * has them; otherwise they are zeros. */
	if (blk_is_hole(d->blk, off, len)) {
		res->kind = j->p.shared_base && j->pass == PASS_BULK ? RES_SKIP : RES_ZERO;
		return 0;
	}
	r = blk_pread(d->blk, res->buf, len, off);
	if (r < 0)
		return err_prefix(-r, "read %s at offset %llu: ", d->name, (unsigned long long)off);
	if (len < j->p.chunk_size)
		memset(res->buf + len, 0, j->p.chunk_size - len);
	res->kind = mem_is_zero(res->buf, len) ? RES_ZERO : RES_DATA;
	res->hash = digest_hash(res->buf, len);
	return 0;
}

static void *reader_main(void *arg)
{
	struct src_job *j = arg;

	pthread_mutex_lock(&j->lock);
	for (;;) {
		struct result res = { 0 };
		int r;

		while (!j->quit &&
		       !(j->pass_active && !j->pass_exhausted && j->nfree > 0 && !j->read_err))
			pthread_cond_wait(&j->work_cond, &j->lock);
		if (j->quit)
			break;
		if (!next_task_locked(j, &res.dev, &res.chunk)) {
			j->pass_exhausted = true;
			pthread_cond_broadcast(&j->done_cond);
			continue;
		}
		res.buf = j->free[--j->nfree];
		j->busy++;
		pthread_mutex_unlock(&j->lock);

		r = read_chunk(j, &res);

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
	return NULL;
}

/* ---- setup and teardown ------------------------------------------------------- */

int src_new(const struct src_params *p, const struct src_device *devs, unsigned ndev,
	    struct src_job **out)
{
	struct src_job *j;
	int r;

	if (ndev == 0 || ndev > NATIVE_MAX_DEVICES)
		return err_set(EINVAL, "need 1 to %d devices, got %u", NATIVE_MAX_DEVICES, ndev);
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->p = *p;
	if (!j->p.chunk_size)
		j->p.chunk_size = WIRE_QEMU_CHUNK_SIZE;
	if (!j->p.max_downtime_ns)
		j->p.max_downtime_ns = SRC_DEFAULT_DOWNTIME_NS;
	if (!j->p.readers)
		j->p.readers = SRC_DEFAULT_READERS;
	if (!wire_chunk_size_valid(j->p.chunk_size)) {
		uint32_t cs = j->p.chunk_size;

		free(j);
		return err_set(EINVAL, "chunk size %u is not a power of two between %u and %u", cs,
			       WIRE_MIN_CHUNK_SIZE, WIRE_MAX_CHUNK_SIZE);
	}
	if (mig_mode_check(j->p.mode, j->p.qemu) < 0) {
		free(j);
		return -EINVAL;
	}
	if (j->p.qemu)
		j->p.mode = MIG_MODE_DIRTY; /* AUTO has nothing to switch to */
	r = cancel_new(&j->cancel);
	if (r < 0) {
		free(j);
		return r;
	}
	atomic_init(&j->rate, p->max_bandwidth);
	atomic_init(&j->downtime_ns, j->p.max_downtime_ns);
	atomic_init(&j->want_mode, (int)j->p.mode);
	atomic_init(&j->mirroring, false);
	pthread_mutex_init(&j->send_mu, NULL);
	pthread_cond_init(&j->send_cond, NULL);
	pthread_mutex_init(&j->rp_mu, NULL);
	pthread_mutex_init(&j->stats_lock, NULL);
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->work_cond, NULL);
	{
		/* The engine's timed wait must not stall on a clock step. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&j->done_cond, &ca);
		pthread_cond_init(&j->rp_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	j->ndev = ndev;
	j->stats.ndev = ndev;
	j->stats.mode = j->p.mode;
	j->stats.converging = true;
	j->stats.chunk_size = j->p.chunk_size;
	for (unsigned i = 0; i < ndev; i++) {
		struct src_dev *d = &j->dev[i];

		d->job = j;
		d->name = devs[i].name;
		d->blk = devs[i].blk;
		d->size = blk_size(d->blk);
		d->nchunks = div_round_up(d->size, j->p.chunk_size);
		/* Messages name devs[i], which outlives the job freed here. */
		if (strlen(d->name) == 0 || strlen(d->name) > WIRE_NAME_MAX || d->size == 0) {
			src_free(j);
			return err_set(EINVAL, "device '%s': name must be 1-%d bytes and size > 0",
				       devs[i].name, WIRE_NAME_MAX);
		}
		for (unsigned k = 0; k < i; k++)
			if (strcmp(j->dev[k].name, d->name) == 0) {
				src_free(j);
				return err_set(EINVAL, "device name '%s' given twice",
					       devs[i].name);
			}
		/* QEMU 7.2's destination writes a last chunk's whole 1 MiB and
		 * fails past the device end (QEMU-STREAM.md): refuse up front. */
		if (j->p.qemu && d->size % WIRE_QEMU_CHUNK_SIZE) {
			src_free(j);
			return err_set(EINVAL,
				       "device %s: %llu bytes is not a multiple of 1 MiB, which a "
				       "QEMU 7.2 destination cannot load",
				       devs[i].name, (unsigned long long)blk_size(devs[i].blk));
		}
		snprintf(j->stats.dev[i].name, sizeof(j->stats.dev[i].name), "%s", d->name);
		j->stats.dev[i].size = d->size;
		j->stats.total += d->size;
		d->dirty = dirty_new(d->size, j->p.chunk_size);
		d->claimed = dirty_new(d->size, j->p.chunk_size);
		d->dig = digest_new(d->size, j->p.chunk_size);
		d->scratch = aligned_alloc(4096, j->p.chunk_size);
		if (!d->dirty || !d->claimed || !d->dig || !d->scratch) {
			src_free(j);
			return -ENOMEM;
		}
		/* Computed once here: mirrored writes' threads read them. */
		digest_zero_hash(d->dig, 0);
		digest_zero_hash(d->dig, d->nchunks - 1);
	}
	j->stats.remaining = j->stats.total;
	*out = j;
	return 0;
}

static void stop_readers(struct src_job *j)
{
	pthread_mutex_lock(&j->lock);
	j->quit = true;
	pthread_cond_broadcast(&j->work_cond);
	pthread_mutex_unlock(&j->lock);
	for (unsigned i = 0; i < j->nthreads; i++)
		pthread_join(j->threads[i], NULL);
	j->nthreads = 0;
}

void src_free(struct src_job *j)
{
	if (!j)
		return;
	stop_readers(j);
	for (unsigned i = 0; i < j->ndev; i++) {
		dirty_free(j->dev[i].dirty);
		dirty_free(j->dev[i].claimed);
		digest_free(j->dev[i].dig);
		free(j->dev[i].scratch);
	}
	for (unsigned i = 0; i < j->nbufs; i++)
		free(j->bufs[i]);
	free(j->bufs);
	free(j->free);
	free(j->q);
	free(j->threads);
	free(j->zero_buf);
	cancel_free(j->cancel);
	pthread_cond_destroy(&j->work_cond);
	pthread_cond_destroy(&j->done_cond);
	pthread_cond_destroy(&j->rp_cond);
	pthread_cond_destroy(&j->send_cond);
	pthread_mutex_destroy(&j->lock);
	pthread_mutex_destroy(&j->rp_mu);
	pthread_mutex_destroy(&j->send_mu);
	pthread_mutex_destroy(&j->stats_lock);
	free(j);
}

void src_set_progress(struct src_job *j, mig_progress_fn fn, void *user)
{
	j->progress = fn;
	j->progress_user = user;
}

void src_cancel(struct src_job *j)
{
	cancel_fire(j->cancel);
}

void src_set_max_bandwidth(struct src_job *j, uint64_t bytes_per_sec)
{
	atomic_store(&j->rate, bytes_per_sec);
	if (j->x)
		xport_set_rate(j->x, bytes_per_sec);
}

static int start_readers(struct src_job *j)
{
	unsigned n = j->p.readers, nbufs = n + 2;

	j->bufs = calloc(nbufs, sizeof(*j->bufs));
	j->free = calloc(nbufs, sizeof(*j->free));
	j->q = calloc(nbufs, sizeof(*j->q));
	j->threads = calloc(n, sizeof(*j->threads));
	if (!j->bufs || !j->free || !j->q || !j->threads)
		return err_set(ENOMEM, "no memory for %u read buffers", nbufs);
	/* nbufs counts only buffers that exist, for src_free(). */
	for (unsigned i = 0; i < nbufs; i++) {
		j->bufs[i] = aligned_alloc(4096, j->p.chunk_size);
		if (!j->bufs[i])
			return err_set(ENOMEM, "no memory for %u read buffers of %u bytes", nbufs,
				       j->p.chunk_size);
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

/* ---- talking to the destination ---------------------------------------------- */

static bool cancelled(struct src_job *j)
{
	return cancel_is_set(j->cancel);
}

/* Turn an ERROR message from the destination into this thread's error. */
static int peer_error(const uint8_t *body, uint32_t len)
{
	struct native_error e;
	int r = native_error_decode(body, len, &e);

	if (r < 0)
		return r;
	return err_set(e.err ? (int)e.err : EIO, "destination failed: %s", e.reason);
}

/* Read READY directly: the return path starts only after the handshake. */
static int await_ready(struct src_job *j, uint32_t *len)
{
	uint8_t type;
	int r =
	    engine_read_frame(j->x, NATIVE_ALLOW(NATIVE_MSG_READY) | NATIVE_ALLOW(NATIVE_MSG_ERROR),
			      &type, j->reply, len);

	if (r < 0)
		return err_prefix(-r, "waiting for the destination to accept the handshake: ");
	if (type == NATIVE_MSG_ERROR)
		return peer_error(j->reply, *len);
	return 0;
}

/* ---- the return path ------------------------------------------------------------ */

/* Record the first failure heard (or of hearing) and wake every waiter. */
static void rp_fail(struct src_job *j, int r)
{
	pthread_mutex_lock(&j->rp_mu);
	if (!j->rp_err) {
		j->rp_err = r;
		snprintf(j->rp_msg, sizeof(j->rp_msg), "%s", err_msg());
	}
	pthread_cond_broadcast(&j->rp_cond);
	pthread_mutex_unlock(&j->rp_mu);
}

static void *rp_main(void *arg)
{
	static const uint64_t allowed =
	    NATIVE_ALLOW(NATIVE_MSG_SYNCED) | NATIVE_ALLOW(NATIVE_MSG_ACK) |
	    NATIVE_ALLOW(NATIVE_MSG_WACK) | NATIVE_ALLOW(NATIVE_MSG_ERROR);
	struct src_job *j = arg;
	uint8_t *body = malloc(NATIVE_MSG_MAX);

	if (!body) {
		rp_fail(j, err_set(ENOMEM, "no memory for the return path"));
		return NULL;
	}
	for (;;) {
		uint8_t type;
		uint32_t len;
		uint64_t v = 0;
		bool quit;
		int r;

		pthread_mutex_lock(&j->rp_mu);
		quit = j->rp_quit;
		pthread_mutex_unlock(&j->rp_mu);
		if (quit)
			break;
		/* Waiting in slices: the destination may say nothing for as
		 * long as a pass takes, which is no failure. */
		r = xport_readable(j->x, 100);
		if (r == 0)
			continue;
		if (r > 0)
			r = engine_read_frame(j->x, allowed, &type, body, &len);
		if (r < 0) {
			rp_fail(j, err_prefix(-r, "destination: "));
			break;
		}
		if (type == NATIVE_MSG_ERROR) {
			rp_fail(j, peer_error(body, len));
			break;
		}
		if (type == NATIVE_MSG_SYNCED)
			r = native_synced_decode(body, len, &v);
		else if (type == NATIVE_MSG_WACK)
			r = native_wack_decode(body, len, &v);
		if (r < 0) {
			rp_fail(j, err_prefix(-r, "destination: "));
			break;
		}
		pthread_mutex_lock(&j->rp_mu);
		if (type == NATIVE_MSG_WACK) {
			if (v <= j->wacked || v > j->wseq_sent) {
				r = err_set(EPROTO,
					    "destination acknowledged write %llu; %llu were "
					    "acknowledged and %llu sent",
					    (unsigned long long)v, (unsigned long long)j->wacked,
					    (unsigned long long)j->wseq_sent);
				pthread_mutex_unlock(&j->rp_mu);
				rp_fail(j, r);
				break;
			}
			j->wacked = v;
		} else if (j->rp_have) {
			pthread_mutex_unlock(&j->rp_mu);
			rp_fail(j, err_set(EPROTO,
					   "destination sent %s before the last answer "
					   "was expected",
					   native_msg_name(type)));
			break;
		} else {
			j->rp_have = true;
			j->rp_type = type;
			j->rp_value = v;
		}
		pthread_cond_broadcast(&j->rp_cond);
		pthread_mutex_unlock(&j->rp_mu);
	}
	free(body);
	return NULL;
}

static int rp_start(struct src_job *j)
{
	int r = pthread_create(&j->rp_thread, NULL, rp_main, j);

	if (r)
		return err_set(r, "cannot start the return path thread: %s", strerror(r));
	j->rp_running = true;
	return 0;
}

static void rp_stop(struct src_job *j)
{
	if (!j->rp_running)
		return;
	pthread_mutex_lock(&j->rp_mu);
	j->rp_quit = true;
	pthread_mutex_unlock(&j->rp_mu);
	pthread_join(j->rp_thread, NULL);
	j->rp_running = false;
}

/* Wait up to ms for rp_cond (rp_mu held). */
static void rp_wait_ms(struct src_job *j, unsigned ms)
{
	struct timespec ts = mono_deadline((uint64_t)ms * 1000000u);

	pthread_cond_timedwait(&j->rp_cond, &j->rp_mu, &ts);
}

/*
 * Wait for the destination's answer of type 'want' (SYNCED or ACK; its
 * ERROR becomes our error); *value receives SYNCED's count.
 */
static int await_reply(struct src_job *j, uint8_t want, const char *what, uint64_t *value)
{
	int timeout = j->timeout_ms;
	uint64_t deadline = now_ns() + (uint64_t)(timeout > 0 ? timeout : 0) * 1000000u;
	int r = 0;

	pthread_mutex_lock(&j->rp_mu);
	while (!j->rp_have && !j->rp_err) {
		if (cancelled(j)) {
			r = err_set(ECANCELED, "migration cancelled");
			break;
		}
		if (timeout > 0 && now_ns() > deadline) {
			r = err_set(ETIMEDOUT, "waiting for the destination %s: no answer in %d s",
				    what, timeout / 1000);
			break;
		}
		rp_wait_ms(j, 100);
	}
	if (r == 0 && !j->rp_have) {
		r = j->rp_err;
		err_copy_in(j->rp_msg);
	} else if (r == 0) {
		if (j->rp_type != want)
			r = err_set(EPROTO, "waiting for the destination %s: it sent %s", what,
				    native_msg_name(j->rp_type));
		*value = j->rp_value;
		j->rp_have = false;
	}
	pthread_mutex_unlock(&j->rp_mu);
	return r;
}

/* The destination only speaks unprompted to fail: has it? */
static int check_peer(struct src_job *j)
{
	int r = 0;

	if (!j->rp_running)
		return 0;
	pthread_mutex_lock(&j->rp_mu);
	if (j->rp_err) {
		r = j->rp_err;
		err_copy_in(j->rp_msg);
	} else if (j->rp_have) {
		r = err_set(EPROTO, "destination sent %s, which nothing asked for",
			    native_msg_name(j->rp_type));
	}
	pthread_mutex_unlock(&j->rp_mu);
	return r;
}

/*
 * A send failed: the destination may have closed after saying why (its
 * ERROR then reaches the return path within a moment).  Prefer its reason.
 */
static int explain_send_failure(struct src_job *j, int r)
{
	if ((r != -EPIPE && r != -ECONNRESET) || !j->rp_running)
		return r;
	pthread_mutex_lock(&j->rp_mu);
	for (int i = 0; i < 10 && !j->rp_err; i++)
		rp_wait_ms(j, 100);
	if (j->rp_err && strncmp(j->rp_msg, "destination failed:", 19) == 0) {
		r = j->rp_err;
		err_copy_in(j->rp_msg);
	}
	pthread_mutex_unlock(&j->rp_mu);
	return r;
}

/* ---- the send side -------------------------------------------------------------- */

/* Senders (the engine, mirrored writes) take the transport in turn. */
static void send_lock(struct src_job *j)
{
	uint64_t me;

	pthread_mutex_lock(&j->send_mu);
	me = j->send_next++;
	while (j->send_serving != me)
		pthread_cond_wait(&j->send_cond, &j->send_mu);
	pthread_mutex_unlock(&j->send_mu);
}

static void send_unlock(struct src_job *j)
{
	pthread_mutex_lock(&j->send_mu);
	j->send_serving++;
	pthread_cond_broadcast(&j->send_cond);
	pthread_mutex_unlock(&j->send_mu);
}

/* Open a BLOCKS message unless one is open (send lock held). */
static int open_blocks_locked(struct src_job *j)
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

/* ---- mirrored writes (active mode) ---------------------------------------------- */

static void mirror_fn(struct mig_stats *st, void *arg)
{
	st->mirror_writes++;
	st->mirror_bytes += *(uint64_t *)arg;
}

/* Take chunk c's digest again from the backend (the device's writes are
 * serialised by the caller). */
static int rehash_chunk(struct src_dev *d, uint64_t c)
{
	uint32_t cs = d->job->p.chunk_size;
	size_t len = digest_chunk_len(d->dig, c);
	int r;

	if (blk_is_hole(d->blk, c * cs, len)) {
		digest_set(d->dig, c, digest_zero_hash(d->dig, c));
		return 0;
	}
	r = blk_pread(d->blk, d->scratch, len, c * cs);
	if (r < 0)
		return r;
	digest_set(d->dig, c, digest_hash(d->scratch, len));
	return 0;
}

/*
 * A write over more chunks than this is marked dirty instead: mirroring it
 * would hold the device's writes for as long as its chunks take to hash and
 * send, and it costs the same bytes in a later pass.
 */
#define MIRROR_MAX_CHUNKS 16

/* track_mirror.submit: see backend.h and the top of this file. */
static int mirror_submit(void *opaque, enum track_op op, const void *buf, uint64_t off,
			 uint64_t len, uint64_t *ticket)
{
	struct src_dev *d = opaque;
	struct src_job *j = d->job;
	uint32_t cs = j->p.chunk_size;
	uint64_t c0 = off / cs, c1 = (off + len - 1) / cs, done = 0;
	unsigned di = (unsigned)(d - j->dev);
	bool ok = len > 0 && c1 - c0 < MIRROR_MAX_CHUNKS;
	int r = 0;

	pthread_mutex_lock(&j->lock);
	for (uint64_t c = c0; ok && c <= c1; c++)
		ok = copied_locked(j, di, c);
	pthread_mutex_unlock(&j->lock);
	if (!ok)
		return 0;

	send_lock(j);
	while (r == 0 && done < len) {
		uint8_t hdr[WIRE_REC_HDR_MAX];
		struct wire_record rec = {
			.kind = WIRE_REC_WRITE,
			.offset = off + done,
			.length = (uint32_t)MIN(len - done, (uint64_t)cs),
			.op = op == TRACK_OP_WRITE ? WIRE_WRITE_DATA : WIRE_WRITE_ZERO,
			.seq = j->wseq + 1,
		};
		int n;

		snprintf(rec.name, sizeof(rec.name), "%s", d->name);
		n = wire_rec_encode_header(hdr, &rec);
		r = n < 0 ? n : open_blocks_locked(j);
		if (r < 0)
			break;
		/* Known to the return path before the destination can answer. */
		pthread_mutex_lock(&j->rp_mu);
		j->wseq_sent = ++j->wseq;
		pthread_mutex_unlock(&j->rp_mu);
		if (rec.op == WIRE_WRITE_DATA)
			r = xport_write2(j->x, hdr, (size_t)n, (const uint8_t *)buf + done,
					 rec.length);
		else
			r = xport_write(j->x, hdr, (size_t)n);
		done += rec.length;
	}
	if (r == 0)
		r = xport_flush(j->x);
	*ticket = j->wseq;
	send_unlock(j);
	if (r < 0)
		return 0; /* the transport's error is sticky: the migration fails */
	stats_update(j, mirror_fn, &len);
	/* The digests, while the record travels (the device's writes are
	 * still held, so the chunks are as the destination will have them).
	 * If that fails, the range is marked dirty: resent, hashed then. */
	for (uint64_t c = c0; c <= c1; c++)
		if (rehash_chunk(d, c) < 0)
			return 0;
	return 1;
}

/* track_mirror.wait: until the destination applied it, or the end. */
static int mirror_wait(void *opaque, uint64_t ticket)
{
	struct src_job *j = ((struct src_dev *)opaque)->job;
	uint64_t deadline = now_ns() + (uint64_t)j->timeout_ms * 1000000u;
	int r = 0;

	pthread_mutex_lock(&j->rp_mu);
	while (j->wacked < ticket && !j->rp_err && !j->mirror_stop) {
		/* The engine may be waiting for this write to drain (the
		 * final pause): a cancel or a silent destination must not
		 * hold it, or the writers, for ever. */
		if (cancelled(j)) {
			r = -ECANCELED;
			break;
		}
		if (j->timeout_ms > 0 && now_ns() > deadline) {
			pthread_mutex_unlock(&j->rp_mu);
			rp_fail(j, err_set(ETIMEDOUT,
					   "the destination did not acknowledge a mirrored write "
					   "in %d s",
					   j->timeout_ms / 1000));
			return -ETIMEDOUT;
		}
		rp_wait_ms(j, 100);
	}
	if (r == 0)
		r = j->wacked >= ticket ? 0 : -EIO;
	pthread_mutex_unlock(&j->rp_mu);
	return r;
}

static const struct track_mirror src_mirror = {
	.submit = mirror_submit,
	.wait = mirror_wait,
};

struct mode_arg {
	bool active, converging;
	uint64_t since;
	const char *reason; /* why mirroring began, or NULL */
};

static void mode_fn(struct mig_stats *st, void *arg)
{
	struct mode_arg *m = arg;

	st->active = m->active;
	st->converging = m->converging;
	st->active_since = m->since;
	if (m->reason)
		snprintf(st->mode_reason, sizeof(st->mode_reason), "%s", m->reason);
}

static void set_mirroring(struct src_job *j, bool on, const char *why)
{
	struct mode_arg m = { .active = on, .converging = true };
	struct mig_stats st;

	if (on == j->mirroring)
		return;
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_mirror(j->dev[i].blk, on ? &src_mirror : NULL, on ? &j->dev[i] : NULL);
	j->mirroring = on;
	m.reason = why;
	src_stats(j, &st);
	m.since = st.iterations;
	m.converging = on || st.converging;
	stats_update(j, mode_fn, &m);
	report(j, true);
}

/* The migration is over: wake mirrored writes still waiting, then detach. */
static void stop_mirroring(struct src_job *j)
{
	pthread_mutex_lock(&j->rp_mu);
	j->mirror_stop = true;
	pthread_cond_broadcast(&j->rp_cond);
	pthread_mutex_unlock(&j->rp_mu);
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_mirror(j->dev[i].blk, NULL, NULL);
	j->mirroring = false;
}

static uint64_t max_downtime(struct src_job *j)
{
	return atomic_load(&j->downtime_ns);
}

void src_set_max_downtime(struct src_job *j, uint64_t ns)
{
	atomic_store(&j->downtime_ns, ns ? ns : SRC_DEFAULT_DOWNTIME_NS);
}

int src_set_mode(struct src_job *j, enum mig_mode m)
{
	if (j->p.qemu && m != MIG_MODE_DIRTY)
		return err_set(EINVAL, "mode %s needs the native format", mig_mode_name(m));
	if (m == MIG_MODE_DIRTY && j->mirroring)
		return err_set(EBUSY, "writes are mirrored already; the migration stays active");
	atomic_store(&j->want_mode, (int)m);
	return 0;
}

/* ---- the QEMU stream's envelope ------------------------------------------------ */

#define QEMU_BLOCK_SECTION 1 /* the section id blkmig gives "block" */

static int qemu_put_section(struct src_job *j, enum savevm_type type)
{
	uint8_t buf[SAVEVM_SECTION_HDR_MAX];
	struct savevm_section sec = { .type = type,
				      .section_id = QEMU_BLOCK_SECTION,
				      .version_id = 1 };
	int n;

	snprintf(sec.name, sizeof(sec.name), "block");
	n = savevm_section_encode(buf, sizeof(buf), &sec);
	return n < 0 ? n : xport_write(j->x, buf, (size_t)n);
}

static int qemu_put_footer(struct src_job *j)
{
	uint8_t buf[16];
	int n = savevm_footer_encode(buf, sizeof(buf), QEMU_BLOCK_SECTION);

	return n < 0 ? n : xport_write(j->x, buf, (size_t)n);
}

/* Header, configuration "none", and a START block section holding EOS. */
static int qemu_open_stream(struct src_job *j)
{
	static const uint8_t eos[8] = { 0, 0, 0, 0, 0, 0, 0, WIRE_F_EOS };
	uint8_t buf[SAVEVM_SECTION_HDR_MAX];
	struct savevm_section cfg = { .type = SAVEVM_CONFIGURATION };
	int n, r;

	if (j->p.chunk_size != WIRE_QEMU_CHUNK_SIZE)
		return err_set(EINVAL, "the QEMU format has 1 MiB chunks, not %u bytes",
			       j->p.chunk_size);
	n = savevm_header_encode(buf, sizeof(buf));
	r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	snprintf(cfg.name, sizeof(cfg.name), "none");
	if (r == 0) {
		n = savevm_section_encode(buf, sizeof(buf), &cfg);
		r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	}
	if (r == 0)
		r = qemu_put_section(j, SAVEVM_START);
	if (r == 0)
		r = xport_write(j->x, eos, sizeof(eos));
	if (r == 0)
		r = qemu_put_footer(j);
	if (r == 0)
		r = xport_flush(j->x);
	return r < 0 ? err_prefix(-r, "qemu stream: ") : 0;
}

/* EOF, the VMDESCRIPTION a 7.2 destination waits for, then close. */
static int qemu_close_stream(struct src_job *j)
{
	static const char json[] = "{\"page_size\": 4096, \"devices\": []}";
	uint8_t buf[64];
	uint8_t eof = SAVEVM_EOF;
	int n = savevm_vmdesc_encode(buf, sizeof(buf), json, sizeof(json) - 1);
	int r = n < 0 ? n : xport_write(j->x, &eof, 1);

	if (r == 0)
		r = xport_write(j->x, buf, (size_t)n);
	if (r == 0)
		r = xport_shutdown_write(j->x);
	return r < 0 ? err_prefix(-r, "qemu stream: ") : 0;
}

static int send_hello(struct src_job *j)
{
	static _Thread_local uint8_t buf[NATIVE_HELLO_MAX];
	struct native_hello h = {
		.version = NATIVE_VERSION,
		.chunk_size = j->p.chunk_size,
		.ndev = (uint16_t)j->ndev,
	};
	uint32_t len, version;
	int n, r;

	if (j->p.qemu)
		return qemu_open_stream(j);
	if (j->p.zero_blocks)
		h.caps |= NATIVE_CAP_ZERO_BLOCKS;
	if (j->p.shared_base)
		h.caps |= NATIVE_CAP_SHARED_BASE;
	/* Always offered: the mode may change to active while running. */
	h.caps |= NATIVE_CAP_MIRROR;
	for (unsigned i = 0; i < j->ndev; i++) {
		snprintf(h.dev[i].name, sizeof(h.dev[i].name), "%s", j->dev[i].name);
		h.dev[i].size = j->dev[i].size;
	}
	n = native_hello_encode(buf, sizeof(buf), &h);
	if (n < 0)
		return n;
	r = xport_write(j->x, buf, (size_t)n);
	if (r == 0)
		r = xport_flush(j->x);
	if (r < 0)
		return err_prefix(-r, "handshake: ");
	r = await_ready(j, &len);
	if (r < 0)
		return r;
	r = native_ready_decode(j->reply, len, &version);
	if (r < 0)
		return err_prefix(-r, "handshake: ");
	return 0;
}

/* ---- passes ------------------------------------------------------------------- */

struct sent_arg {
	unsigned dev;
	enum result_kind kind;
	uint64_t bytes;
	bool bulk;
	uint64_t payload;
};

static void account_fn(struct mig_stats *st, void *arg)
{
	struct sent_arg *a = arg;

	if (a->kind == RES_DATA)
		st->dev[a->dev].data_chunks++;
	else if (a->kind == RES_ZERO)
		st->dev[a->dev].zero_chunks++;
	else
		st->dev[a->dev].skipped++;
	st->data_bytes += a->payload;
	if (a->bulk)
		st->bulk_done += a->bytes;
}

static int send_result(struct src_job *j, const struct result *res, uint8_t *hdr, unsigned *pct)
{
	struct src_dev *d = &j->dev[res->dev];
	struct wire_record rec = { .offset = res->chunk * j->p.chunk_size };
	struct sent_arg a = { .dev = res->dev, .kind = res->kind, .bulk = j->pass == PASS_BULK };
	/* The figures count records as sent: zeros without ZERO_BLOCK are
	 * data records. */
	if (res->kind == RES_ZERO && !j->p.zero_blocks)
		a.kind = RES_DATA;
	uint64_t hash = res->hash;
	int n, r = 0;

	a.bytes = digest_chunk_len(d->dig, res->chunk);
	if (res->kind == RES_ZERO)
		hash = digest_zero_hash(d->dig, res->chunk);
	if (res->kind != RES_SKIP) {
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
	stats_update(j, account_fn, &a);

	if (j->pass == PASS_BULK) {
		struct mig_stats st;
		unsigned now;

		src_stats(j, &st);
		now = (unsigned)(st.bulk_done * 100 / (st.total ? st.total : 1));
		if (now != *pct) {
			*pct = now;
			rec = (struct wire_record){ .kind = WIRE_REC_PROGRESS, .percent = now };
			n = wire_rec_encode_header(hdr, &rec);
			if (n < 0)
				return n;
			r = xport_write(j->x, hdr, (size_t)n);
		}
	}
	return r;
}

struct pass_end {
	uint64_t remaining, bandwidth, dirty_rate, expected_ns;
	bool count_iteration;
};

static void count_pass_fn(struct mig_stats *st, void *arg)
{
	(void)arg;
	st->iterations++;
}

static void pass_end_fn(struct mig_stats *st, void *arg)
{
	struct pass_end *e = arg;

	st->remaining = e->remaining;
	st->bandwidth = e->bandwidth;
	st->dirty_rate = e->dirty_rate;
	st->expected_downtime_ns = e->expected_ns;
	if (e->count_iteration)
		st->iterations++;
}

/* Wait on done_cond until an event or at most 100 ms (or the deadline). */
static void wait_done_locked(struct src_job *j)
{
	uint64_t now = now_ns(), wait = 100 * 1000000ull;
	struct timespec ts;

	/* Wake at the deadline, but not in a loop once it has passed. */
	if (j->pass_deadline && !j->pass_exhausted && j->pass_deadline < now + wait)
		wait = j->pass_deadline > now ? j->pass_deadline - now : 0;
	ts = mono_deadline(wait);
	pthread_cond_timedwait(&j->done_cond, &j->lock, &ts);
}

/* Past the pass's deadline: stop claiming chunks (lock held). */
static bool deadline_passed_locked(struct src_job *j)
{
	if (!j->pass_deadline || j->pass_exhausted || now_ns() < j->pass_deadline)
		return false;
	j->pass_exhausted = true;
	return true;
}

/*
 * Run one pass as one BLOCKS message: readers feed chunks, this thread
 * sends them, then EOS.  On return the pipeline is empty.  With a
 * pass_deadline, the pass stops claiming chunks when it passes: what was
 * read is sent, the rest stays dirty, and j->truncated says so.
 */
static int run_pass(struct src_job *j, enum pass_kind kind)
{
	uint8_t hdr[WIRE_REC_HDR_MAX];
	unsigned pct = ~0u, since_check = 0;
	uint64_t sent = 0;
	bool deadline_hit = false;
	int r;

	send_lock(j);
	if (j->p.qemu) {
		r = qemu_put_section(j, j->final_pass ? SAVEVM_END : SAVEVM_PART);
		j->in_blocks = r == 0;
	} else {
		/* A mirrored write may have opened it already. */
		r = open_blocks_locked(j);
	}
	send_unlock(j);
	j->truncated = false;
	pthread_mutex_lock(&j->lock);
	j->pass = kind;
	j->cur_dev = 0;
	j->cur_chunk = 0;
	j->pass_exhausted = false;
	j->pass_active = true;
	pthread_cond_broadcast(&j->work_cond);

	while (r == 0) {
		struct result res;

		while (j->qlen == 0 && !(j->pass_exhausted && j->busy == 0) && !j->read_err &&
		       !cancelled(j)) {
			/* Out of time: stop claiming, send what was read.
			 * At least one chunk goes first, so a pass that is
			 * cut short still makes headway. */
			if (sent > 0 && deadline_passed_locked(j)) {
				deadline_hit = true;
				continue;
			}
			wait_done_locked(j);
		}
		if (j->read_err) {
			r = err_set(-j->read_err, "%s", j->read_msg);
			break;
		}
		if (cancelled(j)) {
			r = err_set(ECANCELED, "migration cancelled");
			break;
		}
		if (j->qlen == 0)
			break; /* exhausted and drained */
		res = j->q[j->qhead];
		j->qhead = (j->qhead + 1) % j->nbufs;
		j->qlen--;
		pthread_mutex_unlock(&j->lock);

		send_lock(j);
		r = send_result(j, &res, hdr, &pct);
		send_unlock(j);
		sent++;
		if (r == 0 && ++since_check >= PEER_CHECK_EVERY) {
			since_check = 0;
			r = check_peer(j);
		}
		report(j, false);

		pthread_mutex_lock(&j->lock);
		/* On the wire now (or the migration is failing): a write to it
		 * may be mirrored from here on. */
		dirty_test_and_clear(j->dev[res.dev].claimed, res.chunk);
		j->free[j->nfree++] = res.buf;
		/* Reads may keep the queue full: look at the clock here too. */
		if (deadline_passed_locked(j))
			deadline_hit = true;
		/* One buffer is free again: one reader can go on. */
		pthread_cond_signal(&j->work_cond);
	}
	/* Stop handing out work and wait for readers still busy. */
	j->pass_active = false;
	while (j->busy > 0)
		pthread_cond_wait(&j->done_cond, &j->lock);
	while (j->qlen > 0) {
		struct result *q = &j->q[j->qhead];

		/* Never sent: it must go in a later pass. */
		dirty_test_and_clear(j->dev[q->dev].claimed, q->chunk);
		dirty_mark(j->dev[q->dev].dirty, q->chunk * j->p.chunk_size, 1);
		j->free[j->nfree++] = q->buf;
		j->qhead = (j->qhead + 1) % j->nbufs;
		j->qlen--;
	}
	if (r == 0 && kind == PASS_BULK)
		j->bulk_done = true;
	pthread_mutex_unlock(&j->lock);
	/* Cut short only if something was left behind. */
	j->truncated = deadline_hit && dirty_total(j) > 0;
	if (r < 0)
		return r;

	send_lock(j);
	if (j->p.qemu && j->final_pass) {
		/* QEMU's own source ends its END section this way. */
		r = wire_rec_encode_header(
		    hdr, &(struct wire_record){ .kind = WIRE_REC_PROGRESS, .percent = 100 });
		r = r < 0 ? r : xport_write(j->x, hdr, (size_t)r);
	}
	if (r >= 0)
		r = wire_rec_encode_header(hdr, &(struct wire_record){ .kind = WIRE_REC_EOS });
	if (r >= 0)
		r = xport_write(j->x, hdr, (size_t)r);
	if (r == 0 && j->p.qemu)
		r = qemu_put_footer(j);
	if (r == 0) {
		j->in_blocks = false;
		j->passes_sent++;
		r = xport_flush(j->x);
	}
	send_unlock(j);
	return r;
}

/* Wait until the destination has made every pass sent so far durable. */
static int wait_synced(struct src_job *j)
{
	uint64_t n;
	int r;

	if (j->p.qemu) /* no return path: nothing to wait for */
		return 0;
	r = await_reply(j, NATIVE_MSG_SYNCED, "to sync", &n);
	if (r < 0)
		return r;
	if (n != j->passes_sent)
		return err_set(EPROTO, "destination synced %llu passes, %llu were sent",
			       (unsigned long long)n, (unsigned long long)j->passes_sent);
	return 0;
}

/* ---- the state machine -------------------------------------------------------- */

static void pause_writers(struct src_job *j)
{
	for (unsigned i = 0; i < j->ndev; i++)
		track_pause(j->dev[i].blk);
	j->paused = true;
}

static void resume_writers(struct src_job *j)
{
	if (!j->paused)
		return;
	for (unsigned i = 0; i < j->ndev; i++)
		track_resume(j->dev[i].blk);
	j->paused = false;
}

static void detach(struct src_job *j)
{
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_dirty(j->dev[i].blk, NULL);
}

static int send_complete(struct src_job *j)
{
	static _Thread_local struct native_complete c;
	static _Thread_local uint8_t buf[NATIVE_MSG_MAX + NATIVE_FRAME_HDR];
	int n, r;

	memset(&c, 0, sizeof(c));
	c.ndev = (uint16_t)j->ndev;
	for (unsigned i = 0; i < j->ndev; i++) {
		snprintf(c.dev[i].name, sizeof(c.dev[i].name), "%s", j->dev[i].name);
		digest_final(j->dev[i].dig, c.dev[i].digest, &c.dev[i].chunks);
	}
	n = native_complete_encode(buf, sizeof(buf), &c);
	if (n < 0)
		return n;
	r = xport_write(j->x, buf, (size_t)n);
	return r == 0 ? xport_flush(j->x) : r;
}

static int wait_ack(struct src_job *j)
{
	uint64_t unused;

	return await_reply(j, NATIVE_MSG_ACK, "to acknowledge", &unused);
}

/* Tell the destination it owns the devices now (after fencing them). */
static int send_commit(struct src_job *j)
{
	uint8_t buf[NATIVE_FRAME_HDR];
	int n = native_commit_encode(buf, sizeof(buf));
	int r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);

	if (r == 0)
		r = xport_flush(j->x);
	if (r < 0)
		return err_prefix(-r, "the destination acknowledged, but the commit could not be "
				      "sent (the source stays fenced; the destination stays marked "
				      "incomplete): ");
	return 0;
}

struct pass_timer {
	uint64_t busy_ns; /* time spent in passes */
	uint64_t wire;	  /* bytes sent in passes */
};

static uint64_t measured_bandwidth(const struct pass_timer *t)
{
	if (t->busy_ns == 0)
		return 0;
	return (uint64_t)((double)t->wire * 1e9 / (double)t->busy_ns);
}

/*
 * Account a pass that began at t0 with w0 bytes sent and 'before' bytes
 * dirty: bandwidth, what is left, how fast it was dirtied, the expected
 * pause, and whether the dirty passes are getting anywhere.
 */
static void end_of_pass(struct src_job *j, struct pass_timer *t, enum pass_kind kind, uint64_t t0,
			uint64_t w0, uint64_t before)
{
	struct pass_end e = { .count_iteration = true };
	uint64_t elapsed = now_ns() - t0;
	struct mode_arg m;
	struct mig_stats st;

	t->busy_ns += elapsed;
	t->wire += xport_tx_bytes(j->x) - w0;
	e.bandwidth = measured_bandwidth(t);
	e.remaining = dirty_total(j);
	e.dirty_rate = elapsed ? (uint64_t)((double)e.remaining * 1e9 / (double)elapsed) : 0;
	e.expected_ns =
	    e.bandwidth ? (uint64_t)((double)e.remaining * 1e9 / (double)e.bandwidth) : UINT64_MAX;
	if (e.remaining == 0)
		e.expected_ns = 0;
	stats_update(j, pass_end_fn, &e);

	/* A dirty pass that took off less than 5% made no headway. */
	if (kind == PASS_DIRTY && e.remaining * 20 >= before * 19)
		j->stalls++;
	else if (kind == PASS_DIRTY)
		j->stalls = 0;
	src_stats(j, &st);
	m = (struct mode_arg){ .active = j->mirroring, .since = st.active_since };
	/*
	 * Each pass leaves about dirty_rate / bandwidth of what it sent: the
	 * passes still needed until the rest fits the downtime follow.  More
	 * than 10 (or a ratio of 1 or more, or two passes that took off next
	 * to nothing) is "not converging"; AUTO does not wait for more than 2.
	 */
	if (e.expected_ns <= max_downtime(j)) {
		m.converging = true;
		j->should_mirror = false;
	} else {
		double f = e.bandwidth ? (double)e.dirty_rate / (double)e.bandwidth : 1.0;
		double need =
		    f >= 1.0 ? 1e9
			     : log((double)e.expected_ns / (double)max_downtime(j)) / log(1.0 / f);
		char a[32], b[32];

		m.converging = f < 1.0 && need <= 10.0 && j->stalls < 2;
		j->should_mirror = !m.converging || need > 2.0;
		if (f >= 0.95)
			snprintf(j->stall_reason, sizeof(j->stall_reason),
				 "writes dirty %s/s, about as much as the %s/s the link carries",
				 fmt_bytes(a, sizeof(a), e.dirty_rate),
				 fmt_bytes(b, sizeof(b), e.bandwidth));
		else if (j->stalls >= 2)
			snprintf(j->stall_reason, sizeof(j->stall_reason),
				 "%u passes in a row did not shrink the dirty set (%s left)",
				 j->stalls, fmt_bytes(a, sizeof(a), e.remaining));
		else
			snprintf(j->stall_reason, sizeof(j->stall_reason),
				 "about %.0f more passes would be needed (writes dirty %s/s of the "
				 "%s/s the link carries)",
				 ceil(need), fmt_bytes(a, sizeof(a), e.dirty_rate),
				 fmt_bytes(b, sizeof(b), e.bandwidth));
	}
	m.converging = m.converging || j->mirroring;
	stats_update(j, mode_fn, &m);
}

static int timed_pass(struct src_job *j, enum pass_kind kind, struct pass_timer *t)
{
	uint64_t t0 = now_ns(), w0 = xport_tx_bytes(j->x), before = dirty_total(j);
	int r;

	set_live(j, &(struct live_pass){ .t0 = t0,
					 .w0 = w0,
					 .busy_ns = t->busy_ns,
					 .wire = t->wire,
					 .bulk = kind == PASS_BULK });
	r = run_pass(j, kind);
	if (r == 0)
		r = wait_synced(j);
	set_live(j, &(struct live_pass){ 0 });
	if (r == 0)
		end_of_pass(j, t, kind, t0, w0, before);
	return r;
}

struct pause_arg {
	uint64_t ns;
	bool begin;
};

static void pause_fn(struct mig_stats *st, void *arg)
{
	struct pause_arg *p = arg;

	if (p->begin)
		st->switchovers++;
	else if (p->ns > st->max_pause_ns)
		st->max_pause_ns = p->ns;
}

static void note_pause(struct src_job *j, bool begin, uint64_t ns)
{
	stats_update(j, pause_fn, &(struct pause_arg){ .ns = ns, .begin = begin });
}

static void want_mode_fn(struct mig_stats *st, void *arg)
{
	st->mode = *(enum mig_mode *)arg;
}

/* At a pass boundary: follow the mode asked for, and AUTO's judgement. */
static void choose_mode(struct src_job *j, const struct mig_stats *st)
{
	enum mig_mode want = (enum mig_mode)atomic_load(&j->want_mode);

	if (want == MIG_MODE_DIRTY && j->mirroring) {
		/* Asked for while mirroring began: mirroring stays. */
		want = st->mode;
		atomic_store(&j->want_mode, (int)want);
	}
	if (want != st->mode)
		stats_update(j, want_mode_fn, &want);
	if (j->mirroring)
		return;
	if (want == MIG_MODE_ACTIVE)
		set_mirroring(j, true, "active mode asked for");
	else if (want == MIG_MODE_AUTO && j->should_mirror)
		set_mirroring(j, true, j->stall_reason);
}

struct finish_arg {
	uint64_t downtime, total, setup, transferred;
};

static void finish_fn(struct mig_stats *st, void *arg)
{
	struct finish_arg *f = arg;

	st->downtime_ns = f->downtime;
	st->transferred = f->transferred;
	st->total_ns = f->total;
	if (f->setup)
		st->setup_ns = f->setup;
	if (st->state == MIG_COMPLETED)
		st->remaining = 0;
}

int src_run(struct src_job *j, struct xport *x)
{
	enum mig_state state = MIG_SETUP;
	struct pass_timer timer = { 0 };
	struct finish_arg fin = { 0 };
	uint64_t t_start = now_ns(), t_pause = 0;
	bool committing = false;
	int r = 0;

	j->x = x;
	j->timeout_ms = xport_get_timeout(x);
	xport_set_rate(x, atomic_load(&j->rate));
	xport_set_cancel(x, j->cancel);
	set_state(j, MIG_SETUP);

	while (state != MIG_COMPLETED && state != MIG_FAILED && state != MIG_CANCELLED) {
		if (r == 0 && cancelled(j))
			r = err_set(ECANCELED, "migration cancelled");
		if (r < 0) {
			state = r == -ECANCELED ? MIG_CANCELLED : MIG_FAILED;
			break;
		}
		switch (state) {
		case MIG_SETUP:
			/* Tracking starts before the first read, so every
			 * write from here on is either read by the bulk pass
			 * or left dirty. */
			for (unsigned i = 0; i < j->ndev; i++)
				track_set_dirty(j->dev[i].blk, j->dev[i].dirty);
			r = start_readers(j);
			if (r == 0)
				r = send_hello(j);
			if (r == 0 && !j->p.qemu)
				r = rp_start(j);
			if (r == 0 && atomic_load(&j->want_mode) == MIG_MODE_ACTIVE)
				set_mirroring(j, true, "active mode asked for");
			fin.setup = now_ns() - t_start;
			state = MIG_BULK;
			break;
		case MIG_BULK:
			set_state(j, MIG_BULK);
			r = timed_pass(j, PASS_BULK, &timer);
			state = MIG_DIRTY;
			break;
		case MIG_DIRTY: {
			struct mig_stats st;

			src_stats(j, &st);
			if (st.expected_downtime_ns <= max_downtime(j)) {
				state = MIG_FINAL;
				break;
			}
			choose_mode(j, &st);
			set_state(j, MIG_DIRTY);
			r = timed_pass(j, PASS_DIRTY, &timer);
			break;
		}
		case MIG_FINAL: {
			uint64_t w0, before;

			set_state(j, MIG_FINAL);
			note_pause(j, true, 0);
			t_pause = now_ns();
			/* In active mode this also waits for mirrored writes in
			 * flight: they are acknowledged before it returns. */
			pause_writers(j);
			j->final_pass = true;
			/* Most of the pause is for the data; the rest covers the
			 * destination's sync and the digests.  QEMU's END section
			 * cannot be cut short. */
			if (!j->p.qemu)
				j->pass_deadline = t_pause + max_downtime(j) * 2 / 3;
			w0 = xport_tx_bytes(x);
			before = dirty_total(j);
			r = run_pass(j, PASS_DIRTY);
			j->pass_deadline = 0;
			if (r == 0 && j->truncated) {
				/* It would overrun the downtime: let the writers
				 * go again; this was an ordinary pass after all. */
				uint64_t t0 = t_pause;

				resume_writers(j);
				note_pause(j, false, now_ns() - t_pause);
				t_pause = 0;
				j->final_pass = false;
				r = wait_synced(j);
				if (r == 0) {
					end_of_pass(j, &timer, PASS_DIRTY, t0, w0, before);
					if (!j->mirroring &&
					    atomic_load(&j->want_mode) == MIG_MODE_AUTO)
						set_mirroring(j, true,
							      "the final pass would have overrun "
							      "the downtime");
				}
				state = MIG_DIRTY;
				break;
			}
			if (r == 0 && j->p.qemu) {
				/* Nothing will confirm it: fence, then close. */
				stats_update(j, count_pass_fn, NULL);
				send_lock(j);
				r = qemu_close_stream(j);
				send_unlock(j);
				for (unsigned i = 0; r == 0 && i < j->ndev; i++)
					track_fence(j->dev[i].blk, ESHUTDOWN);
				if (r == 0) {
					resume_writers(j);
					fin.downtime = now_ns() - t_pause;
					state = MIG_COMPLETED;
				}
				break;
			}
			if (r == 0)
				r = wait_synced(j);
			if (r == 0) {
				stats_update(j, count_pass_fn, NULL);
				r = send_complete(j);
			}
			if (r == 0)
				r = wait_ack(j);
			if (r == 0) {
				/* The point of no return: from here the source
				 * never accepts a write again (held ones fail),
				 * and only then does the destination, told by
				 * COMMIT, take the devices over.  If COMMIT is
				 * lost, both sides refuse: no split brain. */
				for (unsigned i = 0; i < j->ndev; i++)
					track_fence(j->dev[i].blk, ESHUTDOWN);
				resume_writers(j);
				fin.downtime = now_ns() - t_pause;
				committing = true;
				r = send_commit(j);
			}
			if (r == 0)
				state = MIG_COMPLETED;
			break;
		}
		default:
			break;
		}
	}

	/* The return path may still explain a failed send... */
	if (state != MIG_COMPLETED && r != -ECANCELED && !committing && !j->p.qemu)
		r = explain_send_failure(j, r);
	/* ...and from here on no thread but this one uses the transport. */
	stop_mirroring(j);
	rp_stop(j);
	if (state != MIG_COMPLETED) {
		static const uint8_t eos[8] = { 0, 0, 0, 0, 0, 0, 0, WIRE_F_EOS };
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		xport_set_cancel(x, NULL);
		xport_set_timeout(x, 2000);
		/* Tell the destination why, unless COMMIT may be out.  The
		 * stream is at a record boundary unless a send failed midway,
		 * and then the transport refuses to send anything more. */
		if (!committing && !j->p.qemu &&
		    (!j->in_blocks || xport_write(x, eos, sizeof(eos)) == 0))
			engine_send_error(x, NATIVE_MSG_ABORT, -r,
					  r == -ECANCELED ? "migration cancelled by the source"
							  : msg);
		if (t_pause && !committing)
			fin.downtime = now_ns() - t_pause;
		resume_writers(j);
		err_copy_in(msg);
	}
	if (fin.downtime)
		note_pause(j, false, fin.downtime);
	detach(j);
	stop_readers(j);
	fin.total = now_ns() - t_start;
	fin.transferred = xport_tx_bytes(x);
	j->x = NULL;
	stats_update(j, finish_fn, &fin);
	set_state(j, state);
	return state == MIG_COMPLETED ? 0 : (r < 0 ? r : -EIO);
}
