/* SPDX-License-Identifier: MIT */
/*
 * The write lane, source side (docs/write-lane.md): in active mode the
 * mirrored writes travel on a connection of their own, so that a client's
 * write waits for its own bytes and a round trip, not behind the chunk
 * records ahead of it in the main stream's socket and the link's queue.
 *
 * Threads: the lane's sender (bm-src-wlane) takes the mirror queue in
 * order and sends each write as WRITE records, each behind a lane header
 * with its 'after'.  The engine sends no writes.  A writer whose write is
 * alone in the queue while the lane is idle sends it itself, from
 * mirror_wait() (wl_send_own_locked()): one wake-up fewer in each write's
 * round trip, which is most of what a small write costs on a busy
 * machine.  Not from mirror_submit(): the tracking layer holds the
 * write's order locks there, which a send on a stalled lane would hold
 * for the idle timeout.  Either way one write is sent at a time
 * (wl_busy), the head of the queue first.  The destination's WACKs are
 * read by the writers waiting for them, the receiver (bm-src-wlrx) only
 * reading those nobody waits for (below, "Reading the lane").
 *
 * Order, which one stream gave for free, now rests on two numbers:
 *  - 'after': a WRITE waits at the destination until as many chunk
 *    records (DATA, ZERO, ZSTD) of the main stream have been applied.  It
 *    is the count just after the last record of any chunk the write
 *    covers, taken when the write is queued: the chunks are copied, not
 *    claimed and not dirty then (mirror_submit()), so those records are on
 *    the wire already.  The engine remembers the last WL_RING records'
 *    (device, chunk, count); a chunk not among them was last sent before
 *    the oldest, whose count then bounds it.
 *  - FENCE: before a chunk record, and before each EOS, the engine waits
 *    until the sender has taken every write queued before it took that
 *    record's result (or, for EOS, every write queued), and if writes were
 *    sent since the last FENCE it sends one naming the last: the
 *    destination applies that WRITE before anything after the FENCE.  A
 *    record of chunk C taken after a write to C was queued (C written
 *    again, not mirrored, and so dirty) therefore lands after the write.
 * A write waits only for records taken before it was queued, a record
 * only for writes queued before it was taken: no cycle.  And every record
 * a write waits for reaches the destination: the engine flushes the main
 * stream before it waits for anything (a small record, ZERO say, may sit
 * in its buffer until then).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "src-impl.h"
#include "transport/transport.h"

void wl_note_locked(struct src_job *j, unsigned di, uint64_t c)
{
	if (!j->wl)
		return;
	j->wl_ring[j->wl_ring_next].dev = di;
	j->wl_ring[j->wl_ring_next].chunk = c;
	j->wl_ring[j->wl_ring_next].recs = j->wl_recs;
	j->wl_ring_next = (j->wl_ring_next + 1) % WL_RING;
	if (j->wl_ring_n < WL_RING)
		j->wl_ring_n++;
}

uint64_t wl_after_locked(struct src_job *j, unsigned di, uint64_t c0, uint64_t c1)
{
	uint64_t after = 0;

	for (uint64_t c = c0; c <= c1; c++) {
		bool found = false;

		/* Newest first: the last record of c is the one to follow. */
		for (unsigned k = 1; k <= j->wl_ring_n && !found; k++) {
			unsigned i = (j->wl_ring_next + WL_RING - k) % WL_RING;

			if (j->wl_ring[i].dev == di && j->wl_ring[i].chunk == c) {
				after = MAX(after, j->wl_ring[i].recs);
				found = true;
			}
		}
		/* Older than the ring: bounded by its oldest entry. */
		if (!found && j->wl_ring_n == WL_RING)
			after = MAX(after, j->wl_ring[j->wl_ring_next].recs);
	}
	return after;
}

int wl_flush_locked(struct src_job *j)
{
	int r;

	if (!j->wl || !xport_buffered(j->x))
		return 0;
	pthread_mutex_unlock(&j->lock);
	r = xport_flush(j->x);
	pthread_mutex_lock(&j->lock);
	return r < 0 ? r : 1;
}

int wl_fence_locked(struct src_job *j, uint64_t upto)
{
	uint8_t hdr[WIRE_REC_HDR_MAX];
	uint64_t seq;
	int n, r;

	for (;;) {
		if (j->rp_err) {
			err_copy_in(j->rp_msg);
			return j->rp_err;
		}
		if (src_cancelled(j))
			return err_set(ECANCELED, "migration cancelled");
		if ((!j->mq_head || j->mq_head->qseq > upto) && (!j->wl_busy || j->wl_busy > upto))
			break;
		/* The sender makes headway or fails (its transport's idle
		 * timeout); a writer that gives up takes its write out.  The
		 * writes it sends may wait for records still buffered here. */
		r = wl_flush_locked(j);
		if (r < 0)
			return r;
		if (r == 0)
			pthread_cond_wait(&j->done_cond, &j->lock);
	}
	if (j->wl_handed <= j->wl_fenced)
		return 0;
	seq = j->wl_handed;
	pthread_mutex_unlock(&j->lock);
	r = src_open_blocks(j);
	n = wire_rec_encode_header(hdr,
				   &(struct wire_record){ .kind = WIRE_REC_FENCE, .seq = seq });
	if (r == 0)
		r = n < 0 ? n : xport_write(j->x, hdr, (size_t)n);
	pthread_mutex_lock(&j->lock);
	if (r == 0)
		j->wl_fenced = seq;
	return r;
}

/* Send the mirror queue's head on the lane (lock held, dropped while it
 * sends): by whoever found the lane idle, the lane's sender or the writer
 * who queued it.  wl_busy makes the sends one at a time, in queue order. */
static int send_head_locked(struct src_job *j)
{
	int r;

	j->wl_busy = j->mq_head->qseq;
	r = mirror_send_head_locked(j);
	j->wl_busy = 0;
	if (r == 0)
		j->wl_handed = j->wseq;
	else if (!j->wl_quit)
		rp_fail_locked(j, err_prefix(-r, "write lane: "));
	/* The engine may wait for this write to be taken (a FENCE). */
	pthread_cond_broadcast(&j->done_cond);
	return r;
}

static bool lane_idle_locked(struct src_job *j)
{
	return !j->wl_busy && !j->wl_hold && !j->wl_quit && !j->rp_err;
}

void wl_queued_locked(struct src_job *j, struct mirror_req *m)
{
	/* Nothing ahead of it and nobody sending: its writer sends it, from
	 * mirror_wait(), once the tracking layer's order locks are released
	 * (wl_send_own_locked()).  The sender may still take it first, woken
	 * by a write queued behind it: whoever finds it at the head sends. */
	if (j->mq_head != m || !lane_idle_locked(j))
		pthread_cond_signal(&j->wl_cond);
}

void wl_send_own_locked(struct src_job *j, struct mirror_req *m)
{
	/* Whatever happens to the send, the writer learns it from m->err, as
	 * it would from the sender. */
	if (m->queued && j->mq_head == m && lane_idle_locked(j))
		send_head_locked(j);
	if (j->mq_head && lane_idle_locked(j))
		pthread_cond_signal(&j->wl_cond);
}

static void *send_main(void *arg)
{
	struct src_job *j = arg;

	thread_name("bm-src-wlane");
	thread_latency(); /* each write it takes has a writer waiting */
	pthread_mutex_lock(&j->lock);
	for (;;) {
		while ((!j->mq_head || j->wl_hold || j->wl_busy) && !j->wl_quit && !j->rp_err)
			pthread_cond_wait(&j->wl_cond, &j->lock);
		if (j->wl_quit || j->rp_err)
			break;
		if (send_head_locked(j) < 0)
			break;
	}
	pthread_cond_broadcast(&j->done_cond);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/*
 * Reading the lane: whoever waits for a WACK reads it.  A writer in
 * mirror_wait() reads the lane itself while nobody else does (wl_reading),
 * so it wakes straight from the socket when its WACK comes: one wake-up
 * where the receiver's hand-over made two.  Each WACK it reads wakes the
 * other waiting writers (rp_wack_locked()), and one of them reads on once
 * it has gone.  The receiver (bm-src-wlrx) reads only what no writer waits
 * for: writes sent and not acknowledged while no writer is in
 * mirror_wait() (one gave up, say), whose WACK must still be heard (it
 * ends a suspension).  Between writes nobody reads: an END or an ERROR
 * that comes then is read with the next write's WACK, and the main
 * stream's return path hears a failing destination meanwhile.
 */

#define LANE_REPLIES (NATIVE_ALLOW(NATIVE_MSG_WACK) | NATIVE_ALLOW(NATIVE_MSG_ERROR))

/* Whether a whole message is here, or the end, or bytes that are none
 * (wire_stream_next() then reports either without waiting): 1, 0 if not
 * yet, or the transport's error. */
static int rx_whole(struct src_job *j)
{
	uint8_t hdr[NATIVE_FRAME_HDR], type;
	uint32_t len;
	bool eof;
	int n = xport_peek_now(j->wl, hdr, sizeof(hdr), &eof);

	if (n < 0 || eof)
		return n < 0 ? n : 1;
	if (n < (int)sizeof(hdr))
		return 0;
	if (native_frame_header(hdr, LANE_REPLIES, &type, &len) < 0) {
		err_clear();
		return 1;
	}
	n = xport_peek_now(j->wl, NULL, NATIVE_FRAME_HDR + (size_t)len, &eof);
	if (n < 0 || eof)
		return n < 0 ? n : 1;
	return n == NATIVE_FRAME_HDR + (int)len;
}

/* A writer's wait for a whole message (no lock held): 1 once it is here,
 * 0 at the deadline or a kick, or the transport's error.  Never inside a
 * message: one that stops halfway on a stalled link holds the writer no
 * longer than its patience. */
static int rx_wait_whole(struct src_job *j, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = xport_fd(j->wl), .events = POLLIN },
				       { .fd = j->wl_kick, .events = POLLIN } };
		int r = rx_whole(j);

		if (r != 0)
			return r;
		r = poll(p, 2, poll_ms_until(deadline));
		if (r < 0 && errno != EINTR)
			return err_set(errno, "poll: %s", strerror(errno));
		if (r == 0)
			return 0;
		if (r > 0 && p[1].revents) {
			uint64_t v;

			if (read(j->wl_kick, &v, sizeof(v)) < 0) {
				/* Drained already (EAGAIN): a kick all the same. */
			}
			return 0;
		}
	}
}

/* Take one message off the lane (lock held, dropped while it waits and
 * reads; the caller holds wl_reading): the receiver waits for as long as
 * it takes, a writer (deadline != 0) until deadline or a kick.  1 if one
 * was taken, 0 if none, or the failure, after which the lane is closed to
 * everyone. */
static int rx_one_locked(struct src_job *j, uint64_t deadline)
{
	struct wire_item it;
	int r;

	pthread_mutex_unlock(&j->lock);
	r = deadline ? rx_wait_whole(j, deadline) : xport_readable(j->wl, -1);
	if (r > 0) {
		r = wire_stream_next(j->wl_rs, &it);
		r = r < 0 ? r : 1;
	}
	pthread_mutex_lock(&j->lock);
	if (r == 0)
		return 0;
	if (r > 0 && it.kind == WIRE_ITEM_END) {
		/* The destination is done with it (or gone, which the main
		 * stream tells): writes are marked dirty again. */
		j->wl_closed = true;
		pthread_cond_broadcast(&j->wack_cond);
		return 1;
	}
	if (r > 0 && it.kind == WIRE_ITEM_ERROR)
		r = rp_peer_error(j, it.error);
	else if (r > 0)
		r = rp_wack_locked(j, it.value);
	if (r == 0)
		return 1;
	if (!j->wl_quit)
		rp_fail_locked(j, err_prefix(-r, "write lane: "));
	j->wl_closed = true;
	pthread_cond_broadcast(&j->wack_cond);
	return r;
}

void wl_kick_locked(struct src_job *j)
{
	static const uint64_t one = 1;

	if (!j->wl_reading || j->wl_kick < 0)
		return;
	if (write(j->wl_kick, &one, sizeof(one)) < 0) {
		/* Full (it never is): a kick is pending anyway. */
	}
}

/* Sent writes nobody waits for, and nobody reading: the receiver's turn. */
static bool rx_orphans_locked(struct src_job *j)
{
	return !j->wl_reading && !j->wl_waiters && j->wacked < j->wseq_sent;
}

void wl_wait_begin_locked(struct src_job *j)
{
	j->wl_waiters++;
}

void wl_wait_end_locked(struct src_job *j)
{
	assert(j->wl_waiters > 0);
	j->wl_waiters--;
	if (j->wl_reading)
		return;
	/* The reading is free: to a writer still waiting (which may have
	 * gone to sleep while this one read), else to the receiver if a
	 * WACK is still due. */
	if (j->wl_waiters)
		pthread_cond_broadcast(&j->wack_cond);
	else if (rx_orphans_locked(j))
		pthread_cond_signal(&j->wl_rx_cond);
}

bool wl_read_locked(struct src_job *j, uint64_t deadline)
{
	if (j->wl_reading || j->wl_closed || j->wl_quit)
		return false;
	j->wl_reading = true;
	(void)rx_one_locked(j, MAX(deadline, 1));
	j->wl_reading = false;
	/* wl_stop() waits for the last read to end before it frees it. */
	if (j->wl_quit)
		pthread_cond_broadcast(&j->wl_rx_cond);
	return true;
}

static void *recv_main(void *arg)
{
	struct src_job *j = arg;

	thread_name("bm-src-wlrx");
	thread_latency(); /* a WACK it reads may have a writer waiting yet */
	pthread_mutex_lock(&j->lock);
	for (;;) {
		while (!j->wl_quit && !j->wl_closed && !rx_orphans_locked(j))
			pthread_cond_wait(&j->wl_rx_cond, &j->lock);
		if (j->wl_quit || j->wl_closed)
			break;
		j->wl_reading = true;
		int r = rx_one_locked(j, 0);
		j->wl_reading = false;
		if (r < 0)
			break;
		/* A writer that came meanwhile reads on (a WACK woke it;
		 * EINTR did not). */
		if (j->wl_waiters)
			pthread_cond_broadcast(&j->wack_cond);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

int wl_start(struct src_job *j)
{
	int r;

	r = wire_stream_new(WIRE_STREAM_NATIVE_REPLIES, engine_xport_read, j->wl, &j->wl_rs);
	if (r < 0)
		return r;
	wire_stream_allow(j->wl_rs, LANE_REPLIES);
	j->wl_kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (j->wl_kick < 0)
		return err_set(errno, "eventfd: %s", strerror(errno));
	r = pthread_create(&j->wl_recv_thread, NULL, recv_main, j);
	if (r)
		return err_set(r, "cannot start the write lane's receiver: %s", strerror(r));
	j->wl_recv_running = true;
	r = pthread_create(&j->wl_send_thread, NULL, send_main, j);
	if (r)
		return err_set(r, "cannot start the write lane's sender: %s", strerror(r));
	j->wl_send_running = true;
	return 0;
}

void wl_stop(struct src_job *j)
{
	if (!j->wl)
		return;
	pthread_mutex_lock(&j->lock);
	j->wl_quit = true;
	pthread_cond_broadcast(&j->wl_cond);
	pthread_cond_broadcast(&j->wl_rx_cond);
	pthread_mutex_unlock(&j->lock);
	/* Ends a send stuck on a stalled link, and any read of the lane
	 * (the receiver's, or a writer's). */
	shutdown(xport_fd(j->wl), SHUT_RDWR);
	if (j->wl_send_running)
		pthread_join(j->wl_send_thread, NULL);
	if (j->wl_recv_running)
		pthread_join(j->wl_recv_thread, NULL);
	j->wl_send_running = j->wl_recv_running = false;
	/* A writer woken from its read by the shutdown may still be in
	 * wire_stream_next(); no new read starts once wl_quit is set. */
	pthread_mutex_lock(&j->lock);
	while (j->wl_reading)
		pthread_cond_wait(&j->wl_rx_cond, &j->lock);
	pthread_mutex_unlock(&j->lock);
	wire_stream_free(j->wl_rs);
	j->wl_rs = NULL;
}
