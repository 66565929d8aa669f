/* SPDX-License-Identifier: MIT */
/*
 * Active mode: client writes mirrored to the destination.
 *
 * The devices' tracking layers offer every write to mirror_submit() on the
 * writer's thread, under the device's write order, after the write reached
 * the backend.  A write whose chunks have all been copied, are not being
 * copied and are not dirty is queued for the engine; one to a chunk being
 * copied waits for the chunk's record to go on the wire first
 * (claims_wait_locked()); any other write is marked dirty by the layer as
 * usual.  The writer then waits in
 * mirror_wait() for the destination's WACK.  Without a write lane,
 * writer threads never touch the transport: the engine sends queued
 * writes (mirror_send_queued_locked) in queue order, which is the order
 * they reached the backend: before each chunk record, the writes queued
 * until that chunk's result was taken, and whatever is queued while it
 * has nothing else to send.  Writes queued later wait for the next
 * record, so writers that keep the queue busy cannot starve the copy
 * (they share the link about one write per writer per chunk record).
 *
 * Why the order is safe: a chunk being copied is "claimed" from the moment
 * a reader takes it until its record is on the wire, and no write to a
 * claimed chunk is queued until then; a write queued before a chunk was
 * claimed is sent before that chunk's record, because before it sends a
 * result the engine sends every write queued until it took that result.
 *
 * With a write lane (src-wlane.c) the lane's sender takes the queue
 * instead, in the same order, and the engine only fences: the order
 * argument becomes the lane's 'after' and FENCE, described there.
 *
 * Once a write is on the wire the engine updates its chunks' hashes from
 * the write's bytes (digest_update(): the block hashes of the chunk, read
 * once and cached); a later write to the chunk is either queued behind it
 * (and hashed later) or marked dirty (and resent later), so the last hash
 * set is the destination's.  (With a lane its sender does, and the
 * engine's FENCE waits for that before a record of the chunk.)
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

/*
 * A write over more chunks than this is marked dirty instead: mirroring it
 * would make its writer wait for as long as its chunks take to send, and it
 * costs the same bytes in a later pass.
 */
#define MIRROR_MAX_CHUNKS 16

/*
 * How long a writer waits for its mirrored write's WACK before the write
 * is marked dirty instead (it reached the source's backend; a later pass
 * carries it): twice the downtime, at least MIRROR_PATIENCE_NS.  Mirroring
 * is then suspended until the destination answers again, so a stalled link
 * holds each writer that long at most, not for the idle timeout.
 */
#define MIRROR_PATIENCE_NS (2 * 1000000000ull)

static uint64_t mirror_patience(struct src_job *j)
{
	return MAX(2 * atomic_load(&j->downtime_ns), MIRROR_PATIENCE_NS);
}
static void mirror_fn(struct mig_stats *st, void *arg)
{
	st->mirror_writes++;
	st->mirror_bytes += *(uint64_t *)arg;
}

static int read_dev(void *arg, void *buf, size_t len, uint64_t off)
{
	return blk_pread(arg, buf, len, off);
}

/* One WRITE record's header (and, on the write lane, the lane's header
 * before it) for the part of m at done: its length in *len. */
static int write_header(struct src_job *j, struct mirror_req *m, uint64_t done, uint8_t *hdr,
			uint32_t *len)
{
	struct src_dev *d = &j->dev[m->dev];
	size_t at = j->wl ? NATIVE_LANE_HDR : 0;
	struct wire_record rec = {
		.kind = WIRE_REC_WRITE,
		.offset = m->off + done,
		.length = (uint32_t)MIN(m->len - done, (uint64_t)j->p.chunk_size),
		.op = m->op == TRACK_OP_WRITE ? WIRE_WRITE_DATA : WIRE_WRITE_ZERO,
		.seq = j->wseq + 1,
	};
	int n;

	snprintf(rec.name, sizeof(rec.name), "%s", d->name);
	n = wire_rec_encode_header(hdr + at, &rec);
	if (n < 0)
		return n;
	if (j->wl)
		native_lane_encode(hdr, m->after,
				   (uint32_t)n + (rec.op == WIRE_WRITE_DATA ? rec.length : 0));
	*len = rec.length;
	return (int)at + n;
}

/* Put one write on the wire as WRITE records (no lock held): on the write
 * lane (its sender), or on the main stream (the engine). */
static int send_write(struct src_job *j, struct mirror_req *m, uint64_t *last_seq)
{
	struct xport *x = j->wl ? j->wl : j->x;
	uint64_t done = 0;
	int r = j->wl ? 0 : src_open_blocks(j);

	/* A writer waits for it: on the main stream it goes before chunk
	 * records, within its share of the rate limit (xport_set_urgent(),
	 * --mirror-share). */
	if (!j->wl)
		xport_set_urgent(x, true);
	while (r == 0 && done < m->len) {
		uint8_t hdr[NATIVE_LANE_HDR + WIRE_REC_HDR_MAX];
		uint32_t len = 0;
		int n = write_header(j, m, done, hdr, &len);

		if (n < 0) {
			r = n;
			break;
		}
		j->wseq++;
		if (m->op == TRACK_OP_WRITE)
			r = xport_write2(x, hdr, (size_t)n, (const uint8_t *)m->buf + done, len);
		else
			r = xport_write(x, hdr, (size_t)n);
		done += len;
	}
	if (r == 0)
		r = xport_flush(x);
	if (!j->wl)
		xport_set_urgent(x, false);
	*last_seq = j->wseq;
	return r;
}

int mirror_send_head_locked(struct src_job *j)
{
	struct mirror_req *m = j->mq_head;
	struct src_dev *d = &j->dev[m->dev];
	uint64_t seq = 0, len = m->len;
	int r;

	j->mq_head = m->next;
	if (!j->mq_head)
		j->mq_tail = &j->mq_head;
	m->queued = false;
	m->sending = true;
	/* Known to the return path, and to its writer, before the
	 * destination can answer: a writer reading the lane itself may read
	 * its WACK while this thread still hashes (src-wlane.c). */
	j->wseq_sent = j->wseq + div_round_up(m->len, j->p.chunk_size);
	m->seq = j->wseq_sent;
	pthread_mutex_unlock(&j->lock);

	r = send_write(j, m, &seq);
	/* The chunks' hashes, from the write's own bytes while its writer
	 * still waits (m->sending): the destination does the same once it
	 * applied it.  A chunk whose hash cannot be taken is marked dirty:
	 * resent, and hashed then. */
	if (r == 0 && digest_update(d->dig, m->off, m->len, m->op == TRACK_OP_WRITE ? m->buf : NULL,
				    read_dev, d->blk) < 0)
		dirty_mark(d->dirty, m->off, m->len);

	pthread_mutex_lock(&j->lock);
	m->sending = false;
	m->sent = r == 0;
	m->seq = seq;
	m->err = r;
	/* Its writer waits for the WACK, which wakes it (or which it reads
	 * itself), unless that came already, or the send failed, or the
	 * writer gave up: waking it for nothing costs a busy machine two
	 * context switches per write. */
	if (r < 0 || m->leaving || j->wacked >= seq)
		pthread_cond_broadcast(&j->wack_cond);
	if (r < 0)
		return r; /* the transport's error is sticky */
	pthread_mutex_unlock(&j->lock);
	/* m may be gone now (its writer may have given up): only the copies
	 * taken above are used. */
	src_stats_update(j, mirror_fn, &len);
	pthread_mutex_lock(&j->lock);
	return 0;
}

int mirror_send_queued_locked(struct src_job *j, uint64_t upto)
{
	while (j->mq_head && j->mq_head->qseq <= upto) {
		int r = mirror_send_head_locked(j);

		if (r < 0)
			return r;
	}
	return 0;
}

/* Whether the migration takes mirrored writes now: not failing, cancelled
 * or over, and the destination answering (lock held). */
static bool mirror_open_locked(struct src_job *j)
{
	return !j->mirror_stop && !j->rp_err && !j->mirror_suspended && !src_cancelled(j) &&
	       !j->wl_closed;
}

/* Whether chunks c0..c1 of device di are all copied, all but some being
 * copied now (*claimed), or not (lock held). */
static bool copied_locked(struct src_job *j, unsigned di, uint64_t c0, uint64_t c1, bool *claimed)
{
	*claimed = false;
	for (uint64_t c = c0; c <= c1; c++) {
		if (readers_copied_locked(j, di, c))
			continue;
		if (!readers_claimed_locked(j, di, c))
			return false;
		*claimed = true;
	}
	return !*claimed;
}

/*
 * Whether a write to chunks c0..c1 may be mirrored (lock held).  A write
 * to a chunk being copied waits for the chunk's record to go on the wire,
 * then is mirrored behind it, as QEMU's write-blocking mirror waits for
 * the copy in flight; marking it dirty instead would spare the writer the
 * wait but resend the chunk, and a chunk written more often than it takes
 * to copy would be dirty again after every pass: with a slow copy (a low
 * rate, or a large --mirror-share) and a hot chunk, the dirty set stops
 * shrinking and the migration never converges.  The copy is in flight:
 * the wait is for nbufs chunk records at most, bounded by the writer's
 * patience, after which the write is marked dirty as before.
 */
static bool claims_wait_locked(struct src_job *j, unsigned di, uint64_t c0, uint64_t c1)
{
	uint64_t patience = mirror_patience(j), deadline = now_ns() + patience;
	struct timespec ts = mono_deadline(patience);
	bool claimed;

	while (!copied_locked(j, di, c0, c1, &claimed)) {
		if (!claimed || !mirror_open_locked(j) || now_ns() >= deadline)
			return false;
		j->claim_waiters++;
		pthread_cond_timedwait(&j->wack_cond, &j->lock, &ts);
		j->claim_waiters--;
	}
	return true;
}

/* track_mirror.submit: see backend.h and the top of this file. */
static int mirror_submit(void *opaque, enum track_op op, const void *buf, uint64_t off,
			 uint64_t len, uint64_t *ticket)
{
	struct src_dev *d = opaque;
	struct src_job *j = d->job;
	uint32_t cs = j->p.chunk_size;
	uint64_t c0 = off / cs, c1 = (off + len - 1) / cs;
	unsigned di = (unsigned)(d - j->dev);
	bool ok = len > 0 && c1 - c0 < MIRROR_MAX_CHUNKS;
	struct mirror_req *m;

	m = ok ? calloc(1, sizeof(*m)) : NULL;
	if (!m)
		return 0;
	*m = (struct mirror_req){ .dev = di, .op = op, .buf = buf, .off = off, .len = len };
	pthread_mutex_lock(&j->lock);
	ok = ok && claims_wait_locked(j, di, c0, c1);
	/* A failing or cancelled migration takes no more: the range is
	 * marked dirty, and the writer does not come back for a WACK. */
	ok = ok && mirror_open_locked(j);
	if (ok) {
		m->queued = true;
		m->qseq = ++j->mq_seq;
		*j->mq_tail = m;
		j->mq_tail = &m->next;
		/* The lane takes it (its sender, or this writer); otherwise
		 * the engine. */
		if (j->wl) {
			m->after = wl_after_locked(j, di, c0, c1);
			wl_queued_locked(j, m);
		} else {
			pthread_cond_broadcast(&j->done_cond);
		}
	}
	pthread_mutex_unlock(&j->lock);
	if (!ok) {
		free(m);
		return 0;
	}
	*ticket = (uint64_t)(uintptr_t)m;
	return 1;
}

static void suspend_fn(struct mig_stats *st, void *arg)
{
	(void)arg;
	st->mirror_suspensions++;
}

/* Take a write that was never sent out of the queue (lock held). */
static void unqueue_locked(struct src_job *j, struct mirror_req *m)
{
	struct mirror_req **pp = &j->mq_head;

	while (*pp != m)
		pp = &(*pp)->next;
	*pp = m->next;
	if (!m->next)
		j->mq_tail = pp;
	m->queued = false;
	/* The engine may wait at a FENCE for the queue to move past it. */
	if (j->wl)
		pthread_cond_broadcast(&j->done_cond);
}

/* track_mirror.wait: until the destination applied it, or the end. */
static int mirror_wait(void *opaque, uint64_t ticket)
{
	struct src_job *j = ((struct src_dev *)opaque)->job;
	struct mirror_req *m = (struct mirror_req *)(uintptr_t)ticket;
	uint64_t patience = mirror_patience(j), deadline = now_ns() + patience;
	struct timespec ts = mono_deadline(patience);
	bool timed_out = false;
	int r = -EIO;

	pthread_mutex_lock(&j->lock);
	if (j->wl) {
		wl_wait_begin_locked(j);
		wl_send_own_locked(j, m);
	}
	for (;;) {
		/* Acknowledged, perhaps while its sender still hashes: the
		 * end of this function waits for that. */
		if ((m->sent || m->sending) && m->seq && j->wacked >= m->seq) {
			r = 0;
			break;
		}
		/* The engine may be waiting for this write to drain: a cancel,
		 * a failure or a silent destination must not hold it, or the
		 * writer, for ever. */
		if (m->err || j->rp_err || j->mirror_stop || src_cancelled(j) || timed_out ||
		    j->wl_closed)
			break;
		/* On a lane nobody else reads, the WACK is this writer's to
		 * read (src-wlane.c). */
		if (j->wl && wl_read_locked(j, deadline))
			timed_out = now_ns() >= deadline;
		else
			timed_out =
			    pthread_cond_timedwait(&j->wack_cond, &j->lock, &ts) == ETIMEDOUT;
	}
	if (j->wl)
		wl_wait_end_locked(j);
	/* Not acknowledged in time: the write is marked dirty (by the tracking
	 * layer, as r < 0 says), and later writes are not mirrored until the
	 * destination answers again (a WACK, src-rpath.c).  A silent link is
	 * the idle timeout's to end. */
	if (timed_out && r < 0 && !j->mirror_suspended) {
		j->mirror_suspended = true;
		src_stats_update(j, suspend_fn, NULL);
	}
	/* Giving up: the engine must be done with the buffer first. */
	if (m->queued)
		unqueue_locked(j, m);
	m->leaving = true;
	while (m->sending)
		pthread_cond_wait(&j->wack_cond, &j->lock);
	pthread_mutex_unlock(&j->lock);
	free(m);
	return r;
}

static const struct track_mirror src_mirror = {
	.submit = mirror_submit,
	.wait = mirror_wait,
};

struct mode_arg {
	uint64_t since;
	const char *reason;
};

static void mode_fn(struct mig_stats *st, void *arg)
{
	struct mode_arg *m = arg;

	st->active = true;
	st->converging = true;
	st->active_since = m->since;
	snprintf(st->mode_reason, sizeof(st->mode_reason), "%s", m->reason);
}

void mirror_start(struct src_job *j, const char *why)
{
	struct mode_arg m = { .reason = why };
	struct mig_stats st;

	if (atomic_load(&j->mirroring))
		return;
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_mirror(j->dev[i].blk, &src_mirror, &j->dev[i]);
	atomic_store(&j->mirroring, true);
	src_stats(j, &st);
	m.since = st.iterations;
	src_stats_update(j, mode_fn, &m);
	src_report(j, true);
}

void mirror_stop(struct src_job *j)
{
	pthread_mutex_lock(&j->lock);
	j->mirror_stop = true;
	pthread_cond_broadcast(&j->wack_cond);
	pthread_mutex_unlock(&j->lock);
	/* Waits for every writer still in mirror_wait() to leave it. */
	for (unsigned i = 0; i < j->ndev; i++)
		track_set_mirror(j->dev[i].blk, NULL, NULL);
	atomic_store(&j->mirroring, false);
}
