/* SPDX-License-Identifier: MIT */
/*
 * The source engine's private parts, shared by its files:
 *
 *   source.c      the public API, the figures and the state machine
 *   src-pass.c    one pass: reader results and queued writes onto the wire
 *   src-readers.c the reader pool: claims chunks, reads them, queues results
 *   src-rpath.c   the return path: the thread that hears the destination
 *   src-mirror.c  active mode: client writes queued to the engine, WACKs
 *   src-wlane.c   active mode's write lane: queued writes on a connection
 *                 of their own, and the FENCEs that keep their order
 *   src-native.c  the native stream format (struct src_format)
 *   src-qemu.c    QEMU 7.2's stream format (struct src_format)
 *
 * Threads and locks (docs/architecture.md has the whole picture):
 *  - The engine thread (src_run's caller) runs the state machine and is
 *    the only thread that writes to the main stream.
 *  - Reader threads take chunks, read them and queue the results.
 *  - The return-path thread (formats with a return path) reads what the
 *    destination says and hands it over.
 *  - Client threads (through the tracking layers) queue mirrored writes
 *    and wait for their WACK.  They never touch the main stream; with a
 *    write lane a client thread may send its own write on it and read
 *    WACKs off it, one thread at a time each way (src-wlane.c).
 *  - The write lane's sender and receiver (src-wlane.c).
 *  - The cancel thread waits for src_cancel() and wakes every waiter.
 *
 * Lock order: a tracking layer's 'order' -> j->lock -> j->stats_lock.
 * j->lock guards the pass machinery, the reader queue, the claimed sets,
 * the mirror queue and what the return path received; done_cond wakes the
 * engine (a result, the end of a pass, a queued write, an answer, an error,
 * a cancel), work_cond the readers, wack_cond the mirrored writers.
 * j->stats_lock is a leaf.  No lock of the job is held while the engine
 * calls into a tracking layer (whose own lock is a leaf too) or writes to
 * the transport.
 */
#ifndef BLKMIG_MIGRATE_SRC_IMPL_H
#define BLKMIG_MIGRATE_SRC_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/backend.h"
#include "engine.h"
#include "policy.h"
#include "wire/stream.h"

struct digest_table;
struct src_job;

enum pass_kind {
	PASS_BULK,  /* every chunk of every device */
	PASS_DIRTY, /* chunks whose dirty bit is set */
};

enum result_kind {
	RES_DATA, /* buf holds the chunk */
	RES_ZERO, /* the chunk reads as zeros: send ZERO_BLOCK */
	RES_SKIP, /* shared base: unallocated, not sent */
	RES_SAME, /* the destination holds it already (its SUMS): not sent */
	RES_DIFF, /* verify: it differs from the destination's */
};

/* A chunk read by the pool, waiting for the engine to send it. */
struct result {
	enum result_kind kind;
	unsigned dev;
	uint64_t chunk;
	uint8_t *buf; /* a pool buffer, held until the result is sent */
	uint64_t hash;
	/* A chunk read: its block hashes, at buf + j->subs_off
	 * (digest_set_blocks()); NULL otherwise. */
	uint64_t *subs;
	bool zero; /* SAME, DIFF: the chunk reads as zeros (hash not set) */
	/* DATA with compression on: the reader tried (ztried) and the chunk
	 * shrank to zlen bytes at buf + chunk_size (0: it goes raw). */
	bool ztried;
	uint32_t zlen;
};

struct src_dev {
	struct src_job *job;
	const char *name;
	struct blk *blk;
	struct blk *rblk; /* the readers' reads: src_device.read_blk, or blk */
	uint64_t size;
	uint64_t nchunks;
	struct dirty *dirty;
	struct dirty *claimed; /* chunks claimed and not yet on the wire (j->lock) */
	struct digest_table *dig;
	/* The destination's SUMS (resume, delta, verify): have marks the
	 * chunks it offered, sums[] their digests.  Read-only once the
	 * handshake is over; a bulk pass compares before sending. */
	struct dirty *have;
	uint8_t (*sums)[NATIVE_SUM_LEN];
	uint8_t zero_sum[2][NATIVE_SUM_LEN]; /* of a zero chunk: [0] full, [1] the last */
	struct dirty *differs;		     /* verify: differed when last compared (engine) */
};

/*
 * A client write handed to the engine (active mode).  mirror_submit()
 * allocates it and mirror_wait() frees it; buf is the writer's own buffer,
 * valid until then.  The engine unlinks it before it
 * sends it, and a writer that gives up while it is still queued unlinks it
 * itself, so the engine never touches one whose writer has returned.
 */
struct mirror_req {
	struct mirror_req *next;
	unsigned dev;
	enum track_op op;
	const void *buf;
	uint64_t off, len;
	uint64_t qseq;	/* its place in the queue (j->mq_seq when queued) */
	uint64_t after; /* write lane: chunk records that must go first */
	uint64_t seq;	/* the last WRITE sequence number it becomes (set when taken) */
	bool queued;	/* still in the queue (j->lock) */
	bool sending;	/* the engine or the lane is sending it (j->lock) */
	bool sent;	/* on the wire (j->lock) */
	bool leaving;	/* its writer gave up and waits for !sending (j->lock) */
	int err;	/* the send failed (j->lock) */
};

/*
 * A stream format, source side.  The engine calls these and never asks
 * which format it has; what a format cannot carry is declared here and
 * checked once, in src_format_check().  When you add a format, add its
 * table to src_format_of() too.
 */
struct src_format {
	const char *name;     /* as --format spells it */
	const char *display;  /* in messages: "a <display> destination" */
	uint32_t fixed_chunk; /* the only chunk size it carries, or 0 for any */
	uint64_t size_align;  /* device sizes must be multiples of this, or 0 */
	bool return_path;     /* the destination answers (SYNCED, ACK, WACK, ERROR) */
	bool mirror;	      /* WRITE records: active mode */
	bool cut_final;	      /* a final pass may stop short and become an ordinary one */
	bool auto_mode;	      /* AUTO has something to switch to */
	bool compress;	      /* compressed chunks (--compress) */

	/* Handshake or stream header, on a fresh transport. */
	int (*open)(struct src_job *j);
	/* Before the first record of a pass; final: the writers are paused. */
	int (*pass_begin)(struct src_job *j, bool final);
	/* After the last record of a pass: end it and flush. */
	int (*pass_end)(struct src_job *j, bool final);
	/* Until the destination has made every pass so far durable. */
	int (*synced)(struct src_job *j);
	/* Right after the final pass: the digests (verify only: the
	 * verdict).  They follow the pass on the wire before its SYNCED is
	 * in, so the switch-over waits one round trip, not two. */
	int (*complete)(struct src_job *j);
	/* After synced: until the destination acknowledges the digests
	 * (NULL: it says nothing). */
	int (*acked)(struct src_job *j);
	/* After the devices were fenced: the destination takes over. */
	int (*commit)(struct src_job *j);
	/* Tell the destination the migration failed (best effort). */
	void (*abort)(struct src_job *j, int err, const char *reason);
};

extern const struct src_format src_format_native;
extern const struct src_format src_format_qemu;

/* The live pass, so the figures move during it too: when it began (0:
 * none), bytes sent before it, and the policy as it stood then (for
 * src_stats(), which runs on other threads). */
struct live_pass {
	uint64_t t0, w0;
	bool bulk;
	struct policy pol;
};

/* Write lane: how many of the last chunk records the engine remembers
 * (src-wlane.c). */
#define WL_RING 256

/* The most answers the destination may have sent that the engine has
 * not taken yet (struct src_job's rp_q). */
#define SRC_ANSWERS_MAX 2

struct src_job {
	struct src_params p;
	const struct src_format *fmt;
	unsigned ndev;
	struct src_dev dev[NATIVE_MAX_DEVICES];
	struct cancel *cancel; /* src_cancel() fires it; the transport watches it */
	_Atomic uint64_t rate;
	_Atomic unsigned mirror_share; /* percent (src_params) */
	_Atomic uint64_t downtime_ns;  /* max downtime; may change while running */
	/* The transport, set and cleared by the engine under stats_lock, so
	 * src_stats() and src_set_max_bandwidth() may read it from any
	 * thread. */
	struct xport *x;
	/* The final pass runs unlimited (pause_rate()); under stats_lock. */
	bool rate_lifted;

	mig_progress_fn progress;
	void *progress_user;
	uint64_t last_progress_ns;

	pthread_mutex_t stats_lock; /* guards stats, live and x */
	struct mig_stats stats;
	struct live_pass live;

	/* Everything below up to the engine-only part is guarded by lock. */
	pthread_mutex_t lock;
	pthread_cond_t work_cond; /* readers: a task or a buffer may be available */
	pthread_cond_t done_cond; /* engine: result, pass end, write, answer, error */
	pthread_cond_t wack_cond; /* mirrored writers: a WACK, an error or the end */

	/* The reader pool and the pass (src-readers.c). */
	bool quit;
	bool pass_active;
	bool pass_exhausted;
	enum pass_kind pass;
	bool pass_final; /* final_pass, for the readers: writers paused, rate lifted */
	unsigned cur_dev;
	uint64_t cur_chunk;
	unsigned busy; /* readers holding a task */
	int read_err;  /* first reader failure, negative errno */
	char read_msg[512];
	unsigned nbufs;
	uint8_t **bufs; /* every buffer, for freeing */
	/* Where a buffer keeps its chunk's block hashes, which the digest
	 * table gets once mirrored writes may come (a mode but dirty), so a
	 * chunk's first mirrored write need not read it. */
	size_t subs_off;
	uint8_t **free; /* stack of free buffers */
	unsigned nfree;
	struct result *q; /* ring of finished reads */
	unsigned qhead, qlen;
	unsigned nthreads;
	pthread_t *threads;
	bool bulk_done; /* the bulk pass has been sent whole */
	/* Compression: what the readers do with DATA chunks (enum zmode),
	 * set by the engine (negotiated in the handshake; AUTO's decision). */
	_Atomic int zmode;
	uint64_t pass_deadline; /* now_ns() at which to cut the pass short, 0 never */

	/* Mirrored writes waiting for the engine (src-mirror.c). */
	struct mirror_req *mq_head, **mq_tail;
	uint64_t mq_seq;  /* writes queued so far */
	bool mirror_stop; /* the migration is over: writers give up */
	/* A mirrored write went unacknowledged past its patience: writes are
	 * marked dirty instead of mirrored until the next WACK. */
	bool mirror_suspended;
	/* Writers waiting in mirror_submit() for a chunk being copied to go
	 * on the wire (readers_done_locked() wakes them on wack_cond). */
	unsigned claim_waiters;

	/* What the return path received (src-rpath.c). */
	bool rp_running, rp_quit;
	/* Answers (SYNCED, ACK, DONE) that wait for the engine, oldest
	 * first: at most two, the final pass's SYNCED and the ACK of the
	 * digests sent behind it. */
	struct {
		uint8_t type;
		uint64_t value; /* SYNCED's count, ACK's and DONE's attempt */
	} rp_q[SRC_ANSWERS_MAX];
	unsigned rp_n;
	int rp_err; /* the destination's ERROR or a read failure */
	char rp_msg[1024];
	uint64_t wacked;    /* WACK: writes up to here are applied there */
	uint64_t wseq_sent; /* the last WRITE on the wire */
	pthread_t rp_thread;
	struct wire_stream *rs; /* what the destination says (native): read by
				 * the engine until READY, then by the return path */

	/*
	 * The write lane (src-wlane.c), under lock but for wl itself, set in
	 * the handshake: the sender (or a writer, wl_send_own_locked()) takes
	 * the mirror queue, wl_busy is the queue number of the write being
	 * sent (0: none), wl_handed the last WRITE whose sending finished,
	 * wl_fenced the last a FENCE named.  wl_ring holds the last chunk
	 * records' (device, chunk, wl_recs after it); wl_recs counts chunk
	 * records sent (engine only).  wl_closed: the destination closed the
	 * lane (or reading it failed); writes are no longer mirrored.
	 * wl_reading: somebody reads the lane (a waiting writer, or the
	 * receiver); wl_waiters: writers in mirror_wait().  wl_kick, set
	 * once in wl_start(), wakes a writer reading it.
	 */
	struct xport *wl;
	bool wl_asked; /* HELLO offered the lane (decided once, in the handshake) */
	bool wl_hold;  /* the final pass is fenced: the sender waits (its digests) */
	struct wire_stream *wl_rs;
	pthread_cond_t wl_cond;	   /* the sender: a queued write, an idle lane, quit */
	pthread_cond_t wl_rx_cond; /* the receiver: a WACK nobody waits for, quit */
	pthread_t wl_send_thread, wl_recv_thread;
	bool wl_send_running, wl_recv_running, wl_quit, wl_closed;
	bool wl_reading;
	unsigned wl_waiters;
	int wl_kick; /* eventfd: ends a writer's read of the lane (-1: none yet) */
	uint64_t wl_busy, wl_handed, wl_fenced;
	uint64_t wl_recs;
	struct {
		unsigned dev;
		uint64_t chunk, recs;
	} wl_ring[WL_RING];
	unsigned wl_ring_next, wl_ring_n;

	/*
	 * The switch-over's pause, under pause_lock (taken before a tracking
	 * layer's own lock, never with j->lock or stats_lock held): the
	 * watchdog lets paused writers go at pause_deadline unless the engine
	 * is already handing over, so a stall can hold them no longer.
	 */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond; /* the watchdog: a deadline was set, or quit */
	pthread_t watchdog;
	bool watchdog_running, watchdog_quit;
	bool paused;
	bool abandoned;		 /* the watchdog let the writers go: no hand-over this attempt */
	bool handing_over;	 /* the engine is fencing: too late to abandon */
	uint64_t pause_t0;	 /* when the writers were paused */
	uint64_t pause_deadline; /* now_ns() to let them go at; 0: none */

	/* Engine thread only. */
	struct src_session *sess; /* p.session, or own_session */
	struct src_session own_session;
	uint64_t prev_transferred; /* bytes sent by earlier connections (immutable) */
	uint32_t attempt;	   /* the switch-over attempt under way */
	struct native_state held;  /* what the destination said it holds */
	bool commit_only;	   /* only COMMIT is left to deliver */
	int timeout_ms;		   /* the transport's idle timeout, for answers and WACKs */
	_Atomic int want_mode;	   /* enum mig_mode, as asked for (any thread) */
	atomic_bool peer_failed;   /* the destination sent ERROR (rp_peer_error) */
	atomic_bool mirroring;	   /* the tracking layers have the mirror */
	bool truncated;		   /* the last pass was cut short */
	bool in_blocks;		   /* a pass or a write's message is open on the wire */
	bool final_pass;	   /* this pass runs with the writers paused */
	uint64_t passes_sent;
	uint64_t wseq; /* the last WRITE sequence number used */
	/* --compress auto (src-pass.c): what the engine sent since zauto_t0,
	 * the chunk bytes per second last measured raw [0] and compressed
	 * [1], intervals since each was, and whether the chunks shrink. */
	uint64_t zauto_t0, zauto_bytes, zauto_tried, zauto_shrunk;
	uint64_t zauto_rate[2];
	unsigned zauto_age[2];
	bool zauto_shrinks;
	struct policy pol;   /* convergence: see policy.h */
	uint8_t *zero_buf;   /* a zero chunk, for holes sent without ZERO_BLOCK */
	uint8_t *zero_frame; /* with compression: a zero chunk as a zstd frame */
	uint32_t zero_flen;  /* its bytes (0: none) */
	pthread_t cancel_thread;
	bool cancel_running;
	int stop_fd; /* an eventfd that ends the cancel thread at the end of src_run */
};

/* ---- source.c ---------------------------------------------------------- */

bool src_cancelled(struct src_job *j);
void src_stats_update(struct src_job *j, void (*fn)(struct mig_stats *, void *), void *arg);
uint64_t src_dirty_total(const struct src_job *j);
void src_report(struct src_job *j, bool force);

/* ---- src-readers.c ------------------------------------------------------ */

/* What readers do with a DATA chunk (j->zmode). */
enum zmode {
	ZMODE_OFF,    /* nothing: compression is off or was not accepted */
	ZMODE_ON,     /* compress every chunk */
	ZMODE_SAMPLE, /* AUTO while raw: compress one chunk in ZMODE_SAMPLE_EVERY */
};
#define ZMODE_SAMPLE_EVERY 16

int readers_start(struct src_job *j);
void readers_stop(struct src_job *j);
/* Begin a pass over 'kind' (j->lock held). */
void readers_pass_begin_locked(struct src_job *j, enum pass_kind kind);
/*
 * The next result in *res: 1, or 0 when the pass has no more, or a
 * negative errno (a read failed, the destination failed, cancel).  Sends
 * queued mirrored writes (j->lock held; dropped while sending): those queued
 * before the result was taken go before it.
 * With may_stop, a pass past j->pass_deadline stops claiming chunks and
 * *deadline_hit says so; what was read is still returned.
 */
int readers_next_locked(struct src_job *j, bool may_stop, struct result *res, bool *deadline_hit);
/* The result is on the wire (or never will be: sent false): release its
 * buffer and claim (j->lock held). */
void readers_done_locked(struct src_job *j, const struct result *res, bool sent);
/* End the pass: wait for busy readers, re-mark what was read and not sent
 * (j->lock held). */
void readers_pass_end_locked(struct src_job *j);
/* Whether a write to chunk c of device di may be mirrored (j->lock held). */
bool readers_copied_locked(struct src_job *j, unsigned di, uint64_t c);
/* Whether chunk c of device di is being copied: read, or waiting to be
 * sent (j->lock held). */
bool readers_claimed_locked(struct src_job *j, unsigned di, uint64_t c);

/* ---- src-pass.c --------------------------------------------------------- */

/* Open a BLOCKS message unless one is open (engine). */
int src_open_blocks(struct src_job *j);
/* One pass, sent whole or cut short at j->pass_deadline (j->truncated). */
int src_run_pass(struct src_job *j, enum pass_kind kind);
/* The handshake accepted compression (or not): set the readers going. */
void src_compress_start(struct src_job *j, bool accepted);

/* ---- src-mirror.c ------------------------------------------------------- */

/* Send the queued mirrored writes up to the upto'th queued (UINT64_MAX:
 * all), in order (engine; j->lock held, dropped while sending).  0 or the
 * transport's error. */
int mirror_send_queued_locked(struct src_job *j, uint64_t upto);
void mirror_start(struct src_job *j, const char *why);
/* The migration is over: wake and release every writer, detach. */
void mirror_stop(struct src_job *j);

/* Take the write at the head of the queue (there is one) and send it
 * (lock held, dropped while sending): WRITE records on the write lane if
 * there is one, else on the main stream; then its chunks' hashes.  0 or
 * the transport's error. */
int mirror_send_head_locked(struct src_job *j);

/* ---- src-wlane.c -------------------------------------------------------- */

/* Start the lane's threads (after the handshake dialled j->wl). */
int wl_start(struct src_job *j);
void wl_stop(struct src_job *j);
/* A chunk record for chunk c of device di is done (lock held). */
void wl_note_locked(struct src_job *j, unsigned di, uint64_t c);
/* The chunk records a write to chunks c0..c1 of di must follow (lock held). */
uint64_t wl_after_locked(struct src_job *j, unsigned di, uint64_t c0, uint64_t c1);
/* With a write lane: flush the main stream, whose buffered records a
 * write on the lane may wait for (lock held, dropped meanwhile: 1, and the
 * caller looks again at what it waits for; 0: nothing was buffered, the
 * lock was held throughout), or the transport's error. */
int wl_flush_locked(struct src_job *j);
/* Before a chunk record or EOS: wait until the sender has taken every write
 * queued up to the upto'th, then FENCE the last one sent (lock held,
 * dropped while sending).  0 or a negative errno. */
int wl_fence_locked(struct src_job *j, uint64_t upto);
/* m was just queued (lock held): the lane's sender is woken unless m's
 * writer will send it itself (nothing ahead of it, the lane idle). */
void wl_queued_locked(struct src_job *j, struct mirror_req *m);
/* In m's writer, its order locks released (lock held, dropped while
 * sending): send m if it is still the head and the lane idle; wake the
 * sender if writes are left for it. */
void wl_send_own_locked(struct src_job *j, struct mirror_req *m);
/* A writer starts or stops waiting for its WACK on the lane (lock held). */
void wl_wait_begin_locked(struct src_job *j);
void wl_wait_end_locked(struct src_job *j);
/* In a writer waiting for its WACK (lock held, dropped while reading):
 * if nobody reads the lane, read one message, waiting until deadline
 * (now_ns()) at most, and return true; false if somebody else reads it,
 * or the lane is closed: the caller waits on wack_cond. */
bool wl_read_locked(struct src_job *j, uint64_t deadline);
/* A failure or a cancel: a writer reading the lane stops (lock held). */
void wl_kick_locked(struct src_job *j);

/* ---- src-rpath.c -------------------------------------------------------- */

int rp_start(struct src_job *j);
void rp_stop(struct src_job *j);
/* Wait for the destination's answer 'want' (SYNCED or ACK), sending
 * queued writes meanwhile; *value receives SYNCED's count. */
int rp_await(struct src_job *j, uint8_t want, const char *what, uint64_t *value);
/* Record the first failure heard (or of hearing) and wake every waiter
 * (j->lock held). */
void rp_fail_locked(struct src_job *j, int r);
/* A WACK of write v arrived (j->lock held): 0, or -EPROTO for one that
 * acknowledges nothing sent. */
int rp_wack_locked(struct src_job *j, uint64_t v);
/* A send failed: prefer the destination's own reason if it gave one. */
int rp_explain(struct src_job *j, int r);
/* Turn the destination's ERROR into this thread's error. */
int rp_peer_error(struct src_job *j, const struct native_error *e);

#endif
