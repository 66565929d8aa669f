/* SPDX-License-Identifier: MIT */
/*
 * Migration engines over the native format.
 *
 * Source (source.c): a state machine
 *   SETUP -> BULK -> DIRTY (repeat) -> FINAL -> COMPLETED
 * with FAILED and CANCELLED as terminal states reachable from any other.
 * The devices are tracking-layer blks (block/backend.h); the engine attaches
 * a dirty bitmap to each at SETUP, reads chunks with several reads in
 * flight, and in FINAL pauses the writers, sends what is left, sends the
 * digests and waits for the destination's ACK.  After the ACK the devices
 * are fenced (further writes fail with -ESHUTDOWN); on failure or cancel the
 * writers are resumed and the devices are left untouched.
 *
 * Destination (dest.c, over a stream format: dst-native.c, dst-qemu.c):
 * accept HELLO, open devices through a callback, mark them incomplete,
 * validate and apply every record; after each pass fdatasync, read back
 * what the pass wrote and confirm (SYNCED); on COMPLETE check that every
 * chunk was carried and the digests match, ACK, and clear the marks only
 * when the source COMMITs (after fencing itself).
 *
 * Both run in the calling thread and block until done; src_cancel() may be
 * called from any thread or a signal handler (it only stores an atomic).
 */
#ifndef BLKMIG_MIGRATE_MIGRATE_H
#define BLKMIG_MIGRATE_MIGRATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "transport/ratelimit.h"
#include "wire/native.h"

struct blk;
struct xport;
struct cancel;

enum mig_state {
	MIG_SETUP,     /* attaching bitmaps, handshake */
	MIG_BULK,      /* first pass over every device */
	MIG_DIRTY,     /* resending chunks written meanwhile */
	MIG_FINAL,     /* writers paused: last chunks, digests, waiting for ACK */
	MIG_COMPLETED, /* destination acknowledged; source fenced */
	MIG_FAILED,    /* an error; the source carries on untouched */
	MIG_CANCELLED, /* cancelled; the source carries on untouched */
};

const char *mig_state_name(enum mig_state s);

/*
 * How the source keeps up with writes made during the migration.
 *  DIRTY:  passes over the dirty bitmap until what is left fits in the
 *          downtime (QEMU's block migration).  Under writes faster than
 *          the link it never gets there; it says so (converging false)
 *          and keeps trying rather than pausing the writers for longer.
 *  ACTIVE: once a chunk has been copied, every write to it is sent to the
 *          destination as part of the write and acknowledged to the writer
 *          only when the destination has applied it (write-blocking
 *          mirror), so the dirty set cannot grow.  Native format only.
 *  AUTO:   DIRTY until passes stop shrinking the dirty set, then ACTIVE.
 */
enum mig_mode { MIG_MODE_AUTO, MIG_MODE_DIRTY, MIG_MODE_ACTIVE };

const char *mig_mode_name(enum mig_mode m);
/* "auto", "dirty", "active" -> 0 and *out; -EINVAL otherwise. */
int mig_mode_parse(const char *s, enum mig_mode *out);

/*
 * In active mode with a rate limit, the share of it (percent) that
 * mirrored writes may take; the passes keep the rest, so that the copy
 * ends however fast the writers write (src_params' mirror_share).  A
 * larger share: writers wait less, the copy takes longer.
 */
#define MIG_MIRROR_SHARE_MIN	 RATE_URGENT_PCT_MIN
#define MIG_MIRROR_SHARE_MAX	 RATE_URGENT_PCT_MAX
#define MIG_MIRROR_SHARE_DEFAULT RATE_URGENT_PCT_DEFAULT

/* 0 for MIG_MIRROR_SHARE_MIN..MAX; -EINVAL with the reason otherwise. */
int mig_mirror_share_check(unsigned long pct);
/* "PCT" or "PCT%" within the bounds -> 0 and *out; -EINVAL with the
 * reason otherwise. */
int mig_mirror_share_parse(const char *s, unsigned *out);

/*
 * The stream format a migration speaks.
 *  NATIVE: blkmig's own (docs/wire-format.md): a handshake, a return path
 *          (per-pass sync, digests, acknowledgement), mirrored writes, any
 *          chunk size from 4 KiB to 16 MiB.
 *  QEMU:   QEMU 7.2's migration stream carrying a "block" section only, as
 *          for a -M none QEMU: 1 MiB chunks, device sizes in whole MiB, no
 *          return path, so no digests, no mirroring and no acknowledgement
 *          ("completed" means everything was sent and the stream closed).
 */
enum mig_format { MIG_FORMAT_NATIVE, MIG_FORMAT_QEMU };

/*
 * Compression of the native stream's chunks (--compress, docs/architecture.md):
 *  OFF:  every chunk travels as it is (the default).
 *  ZSTD: each chunk is compressed on the reader threads and travels as a
 *        zstd frame when that makes it at least 1/16 smaller, raw otherwise;
 *        a destination that does not accept compressed chunks is an error.
 *  AUTO: as ZSTD or raw, whichever carries the chunks faster as measured
 *        (every MIG_COMPRESS_AUTO_MS: a slow link favours compression,
 *        busy CPUs raw); raw when the chunks do not shrink; a destination
 *        that does not accept compressed chunks gets raw ones.
 */
enum mig_compress { MIG_COMPRESS_OFF, MIG_COMPRESS_ZSTD, MIG_COMPRESS_AUTO };

#define MIG_COMPRESS_DEFAULT_LEVEL 1 /* zstd's fastest positive level */
#define MIG_COMPRESS_AUTO_MS	   500

const char *mig_compress_name(enum mig_compress c);
/* "off", "zstd", "zstd:LEVEL" (LEVEL within libzstd's ZSTD_minCLevel() ..
 * ZSTD_maxCLevel()), "auto" -> 0 with *out and *level
 * (MIG_COMPRESS_DEFAULT_LEVEL unless given); -EINVAL with the reason. */
int mig_compress_parse(const char *s, enum mig_compress *out, int *level);

/*
 * What a format cannot carry, checked in one place: -EINVAL with the
 * reason for a mode (ACTIVE needs mirroring), a chunk size (0: the
 * default) or compression the format cannot carry, or an invalid chunk
 * size.
 */
int mig_format_check(enum mig_format f, enum mig_mode mode, uint32_t chunk_size,
		     enum mig_compress compress);

struct src_params;
/*
 * Everything src_new() refuses in the parameters themselves, for callers
 * that want to say so first (a usage error, an InvalidParameter):
 * mig_format_check(), and delta and verify-only (native only; delta with
 * neither verify-only nor shared-base; verify-only with neither
 * shared-base nor active mode).  0 or -EINVAL with the reason.
 */
int src_params_check(const struct src_params *p);

struct mig_dev_stats {
	char name[WIRE_NAME_MAX + 1];
	uint64_t size;
	uint64_t data_chunks; /* DATA records sent/applied */
	uint64_t zero_chunks; /* ZERO records sent/applied */
	uint64_t skipped;     /* chunks not sent in the bulk pass (shared base) */
	uint64_t matched;     /* chunks the destination held already (resume, delta) */
	uint64_t differing;   /* verify: chunks that differ (as last compared) */
	uint64_t unsettled;   /* verify: chunks written since they were last compared */
};

/* A consistent snapshot of progress, safe to take from another thread. */
struct mig_stats {
	enum mig_state state;
	uint64_t total;	      /* bytes of all devices */
	uint64_t bulk_done;   /* bytes of the bulk pass done */
	uint64_t remaining;   /* bulk bytes not yet read + dirty bytes */
	uint64_t transferred; /* bytes on the wire */
	uint64_t data_bytes;  /* chunk payload bytes sent */
	uint64_t iterations;  /* passes finished (bulk = 1) */
	uint64_t bandwidth;   /* measured bytes/s */
	uint64_t dirty_rate;  /* bytes/s dirtied during the last pass */
	uint64_t expected_downtime_ns;
	uint64_t downtime_ns; /* writers paused, FINAL until ACK handled */
	uint64_t setup_ns;
	uint64_t total_ns;	/* the whole run; the time so far while running (job.h) */
	uint64_t rate;		/* bytes/s on the wire over the last seconds (job.h); 0: unknown */
	enum mig_mode mode;	/* as asked for */
	unsigned mirror_share;	/* percent of the rate mirrored writes may take */
	bool active;		/* writes are mirrored now */
	bool converging;	/* the dirty set is expected to fit the downtime */
	uint64_t active_since;	/* iterations finished when mirroring began */
	uint64_t mirror_writes; /* client writes sent as WRITE records */
	uint64_t mirror_bytes;	/* their bytes */
	uint64_t mirror_suspensions; /* a mirrored write went unacknowledged too long:
				      * marked dirty, mirroring suspended until a WACK */
	uint64_t switchovers;	     /* final passes begun (more than 1: some gave up) */
	uint64_t max_pause_ns;	     /* the longest pause of the writers, any attempt */
	uint64_t abandoned;	     /* switch-over attempts given up unacknowledged */
	uint32_t connections;	     /* connections this migration used (1 + reconnections) */
	/* Compression (source): as asked for (OFF too when the destination
	 * refused it and AUTO fell back), whether chunks are compressed now,
	 * DATA chunks sent as zstd frames and as they are (of which
	 * 'incompressible' were tried and did not shrink enough), and the
	 * payload bytes on the wire (frames + raw chunks; data_bytes is what
	 * they carry). */
	enum mig_compress compress;
	bool compressing;
	uint64_t compressed_chunks, raw_chunks, incompressible;
	uint64_t payload_bytes;
	bool verify;	       /* a verify-only run: nothing was written */
	bool peer_error;       /* the failure is the destination's own (its ERROR) */
	bool retrying;	       /* job.h: between connections, after a failure worth another */
	char mode_reason[160]; /* why mirroring began */
	uint32_t chunk_size;
	/* TCP connections the stream is striped over (--connections); the
	 * source's (0 in the destination's figures). */
	uint32_t lanes;
	/* Destination: whether any byte reached a device (a failed run that
	 * wrote nothing left the images as they were). */
	bool written;
	unsigned ndev;
	struct mig_dev_stats dev[NATIVE_MAX_DEVICES];
};

/* ---- source ------------------------------------------------------------- */

/*
 * What one migration carries from connection to connection (a dropped
 * link, a restarted destination): its id, the switch-over attempts used,
 * and whether the source has fenced itself after an acknowledgement whose
 * COMMIT has yet to reach the destination.  The engine updates it; the
 * caller keeps it between src_run() calls of new jobs.
 */
struct src_session {
	uint8_t id[NATIVE_ID_LEN];
	uint32_t attempts;    /* switch-over attempts begun so far */
	uint32_t committing;  /* fenced after ACK of this attempt; COMMIT pending (0: none) */
	uint64_t transferred; /* bytes on the wire of the connections before this one */
	uint32_t connections; /* connections begun so far */
	uint32_t accepted;    /* connections that got past the handshake (at least
			       * one: there is a migration to resume) */
	/* The destination refused compressed chunks (src_params.compress
	 * AUTO): the next connection offers none.  Set by the engine. */
	bool compress_refused;
	/* The destination refused the write lane (an older one): the next
	 * connection offers none.  Set by the engine. */
	bool wlane_refused;
	/* Figures over every connection so far (the job's start from them). */
	uint64_t switchovers, abandoned, max_pause_ns;
	/*
	 * src_params.forward: where the destination's NBD export is, as its
	 * EXPORT announced it on the latest connection that sent one (each
	 * connection announces it again; a resume keeps the last).  The host
	 * is as announced: [A-Za-z0-9.:_-], an IPv6 literal without brackets;
	 * empty, "0.0.0.0" or "::" mean the host this source dialled.  Port 0:
	 * the destination serves no NBD export.  dest_nbd_known is false until
	 * an EXPORT arrived.  Written by the engine's thread in the handshake.
	 */
	char dest_nbd_host[NATIVE_HOST_MAX + 1];
	uint16_t dest_nbd_port;
	bool dest_nbd_known;
};

/* A fresh session with a random id.  0 or negative errno. */
int src_session_init(struct src_session *s);

struct src_params {
	uint64_t max_bandwidth;	  /* bytes/s, 0 = unlimited */
	uint64_t max_downtime_ns; /* switch-over threshold, default 300 ms */
	uint32_t chunk_size;	  /* default 1 MiB */
	unsigned readers;	  /* reads in flight, default 4 */
	enum mig_mode mode;	  /* default AUTO (DIRTY with the QEMU format) */
	/* Native only: the share of max_bandwidth, in percent, that mirrored
	 * writes may take in active mode (MIG_MIRROR_SHARE_MIN..MAX); the bulk
	 * and dirty passes keep the rest.  0: MIG_MIRROR_SHARE_DEFAULT. */
	unsigned mirror_share;
	bool shared_base;
	bool zero_blocks;
	/* With QEMU, the devices are fenced all the same once the stream is
	 * closed. */
	enum mig_format format;
	/*
	 * Native only.  delta: the destination holds an older copy; only
	 * chunks whose digests differ are sent.  verify_only: compare every
	 * chunk with the destination's by digest, re-compare chunks written
	 * meanwhile, write nothing; src_run() returns 0 when identical and
	 * -EILSEQ when not (the figures say how many differ).
	 */
	bool delta;
	bool verify_only;
	/* Native only: compress chunks (enum mig_compress) at zstd level
	 * compress_level (0: MIG_COMPRESS_DEFAULT_LEVEL). */
	enum mig_compress compress;
	int compress_level;
	/*
	 * Forward the NBD clients to the destination after the switch-over:
	 * at the hand-over writes wait (track_hold()) instead of failing, for
	 * the handover hook to redirect them (without a hook they fail).  Native: the source also
	 * asks (HELLO's FORWARD) where the destination's NBD export is; the answer goes to the
	 * session (dest_nbd_*).  QEMU's stream has no such question: the address comes from the
	 * operator, or there is none.
	 */
	bool forward;
	/*
	 * Native only: TCP connections to stripe the stream over (1 ..
	 * MIG_CONNECTIONS_MAX; 0 means 1), for a long fat link that one
	 * connection cannot fill.  The destination may accept fewer.  The x
	 * given to src_run() must come from xport_dial(), which the other
	 * connections repeat.
	 */
	unsigned connections;
	/* The migration this job continues (NULL: a one-off with its own). */
	struct src_session *session;
	/*
	 * After the destination's ACK, once the devices are fenced and before
	 * COMMIT: record the hand-over durably with the images (so that a
	 * restarted source refuses them).  0, or a negative errno with the
	 * message set: then no COMMIT goes out and the devices stay fenced.
	 * NULL: nothing to record.  With 'forward' the hook also redirects
	 * the held writes (track_redirect()), or fences the devices itself.
	 */
	int (*handover)(void *user, const struct src_session *s, uint32_t attempt);
	void *handover_user;
};

#define SRC_DEFAULT_DOWNTIME_NS (300 * 1000000ull)
#define SRC_DEFAULT_READERS	4
/* A switch-over that holds the writers longer than the downtime plus this
 * (or half the downtime, if more) is abandoned: the writers go on. */
#define SRC_PAUSE_NOTICE_NS (200 * 1000000ull)

/* --connections: at most this many (XPORT_LANES_MAX, NATIVE_LANES_MAX);
 * a destination allows this many unless told otherwise. */
#define MIG_CONNECTIONS_MAX	    16
#define MIG_DEFAULT_MAX_CONNECTIONS 8

struct src_device {
	const char *name;
	struct blk *blk; /* a tracking layer (blk_track_open) */
	/* Optional: what the readers read the chunks through (the same image
	 * opened with O_DIRECT: send --cache none); NULL: blk.  Writes and
	 * the tracking stay on blk. */
	struct blk *read_blk;
};

struct src_job;

/* Progress callback, called from the engine thread at most every ~100 ms
 * and on every state change. */
typedef void (*mig_progress_fn)(const struct mig_stats *st, void *user);

/* Allocate a job over ndev devices (read-only ones must already be left
 * out).  0 or negative errno; the caller owns *out. */
int src_new(const struct src_params *p, const struct src_device *devs, unsigned ndev,
	    struct src_job **out);
void src_free(struct src_job *j);
void src_set_progress(struct src_job *j, mig_progress_fn fn, void *user);

/*
 * Run the migration over x (connected to the destination) until a terminal
 * state.  0 when COMPLETED; negative errno otherwise (-ECANCELED when
 * cancelled), with the message in err_msg().  Does not close x.
 */
int src_run(struct src_job *j, struct xport *x);

/* Async-signal-safe. */
void src_cancel(struct src_job *j);
/* May be called from any thread. */
void src_set_max_bandwidth(struct src_job *j, uint64_t bytes_per_sec);
/* src_params' mirror_share, checked by mig_mirror_share_check(); applies
 * at once.  May be called from any thread. */
void src_set_mirror_share(struct src_job *j, unsigned pct);
/* The switch-over threshold (0: the default); used from the next decision. */
void src_set_max_downtime(struct src_job *j, uint64_t ns);
/*
 * Change the mode while running: ACTIVE begins mirroring at the next pass
 * boundary, AUTO lets the engine decide; a job that mirrors already keeps
 * mirroring (its dirty set is what it is because of it).  -EINVAL for
 * ACTIVE or AUTO with the QEMU format.
 */
int src_set_mode(struct src_job *j, enum mig_mode m);
void src_stats(struct src_job *j, struct mig_stats *out);
/*
 * Verify only, after src_run(): the differing chunks of device dev as byte
 * ranges, from byte 'from' on: 1 with *off and *len of the next range, 0
 * when there are no more.
 */
int src_differing(struct src_job *j, unsigned dev, uint64_t from, uint64_t *off, uint64_t *len);

/* ---- one migration over several connections ------------------------------ */

/* Whether a failure with this errno may be cured by connecting again (the
 * link failed, not the peer's judgement). */
bool mig_error_retryable(int err);
/* Whether it is what a corrupted stream looks like to either side (a
 * malformed item, a record that cannot be placed, a digest mismatch):
 * cured by another connection, but not for ever. */
bool mig_error_corruption(int err);

struct src_retry {
	/* After a failure a new connection may cure, keep trying this long
	 * (0: one connection only), with back-off from 0.2 s to 5 s. */
	uint64_t retry_ns;
	/* Connect to the destination (TLS included): 0 with *x, or a negative
	 * errno with the message set. */
	int (*dial)(void *user, struct xport **x);
	/* Each connection's job before it runs, and NULL once it is freed:
	 * for progress, cancel and tuning.  May be NULL. */
	void (*on_job)(void *user, struct src_job *j);
	/* Each connection's job once it has run (r: src_run's result), before
	 * it is freed: e.g. for src_differing().  May be NULL. */
	void (*on_end)(void *user, struct src_job *j, int r);
	/* One line per failed connection that will be retried; may be NULL. */
	void (*log)(void *user, const char *line);
	void *user;
	struct cancel *cancel; /* ends the waits between connections; may be NULL */
};

/*
 * Migrate as src_new() + src_run() do, over a new connection and a new job
 * after every failure worth another try once one connection got past its
 * handshake (a first one that fails is returned at once), on one session (p->session, or
 * one of its own), so that each connection resumes the migration: the
 * destination offers what it holds durably, and only the rest and what
 * was written since is sent.  Authentication, a refused device or size,
 * any error the destination reports (but a corrupted stream, up to twice),
 * and cancel end it at once.  st receives the last connection's figures, with
 * 'transferred' and 'connections' over all of them.
 */
int src_migrate(const struct src_params *p, const struct src_device *devs, unsigned ndev,
		const struct src_retry *rt, struct mig_stats *st);

/* ---- destination -------------------------------------------------------- */

/*
 * Open the destination device 'name' that the source advertises with 'size'
 * bytes (0: not announced): return a writable blk of exactly that size in
 * *out, or a negative errno with err_set (unknown device, a size the
 * operator does not allow, size mismatch, open failure).  The opener, not
 * the source, bounds what may be created: a claim is checked before any
 * file is made.  'path' receives the image path for the incomplete marker
 * (may stay empty).  *created is set when this call created the image (it
 * is then already marked incomplete): if the migration fails before
 * anything was written to it, dst_run() removes it again (unlink, and
 * mark_clear()); once written, it stays, marked incomplete.
 */
typedef int (*dst_open_fn)(void *user, const char *name, uint64_t size, struct blk **out,
			   char *path, size_t path_cap, bool *created);

/*
 * Most chunks one destination tracks, over all its devices (a digest and
 * two bitmap bits each, about 300 MiB at the limit): the tables are sized
 * by the operator's images, never by a claim, and a source cannot make
 * them larger by choosing small chunks.  2 TiB at 64 KiB, 32 TiB at 1 MiB.
 */
#define DST_MAX_CHUNKS (UINT64_C(1) << 25)

struct dst_params {
	dst_open_fn open;
	void *user;
	/* Names the caller expects; a missing one is an error after HELLO. */
	const char *const *expect;
	unsigned nexpect;
	/* Accept a shared-base migration (only allocated data is sent; the
	 * images must already hold the base).  Refused otherwise. */
	bool allow_shared_base;
	/*
	 * MIG_FORMAT_QEMU: the stream is QEMU 7.2's migration stream (savevm
	 * envelope, block section only).  The devices are opened by the names
	 * in 'expect' with size 0 (their own size is used), nothing is sent
	 * back (QEMU has no return path), there are no digests, and success
	 * means: EOF reached, every chunk of every device carried (unless
	 * allow_shared_base: QEMU's inc mode leaves the base's chunks out),
	 * every device synced and read back.
	 */
	enum mig_format format;
	/*
	 * Called once the source's handshake is valid, before any device is
	 * opened, with the migration's id (all zeros for a format without):
	 * 0 lets this connection carry the migration, a negative
	 * errno (with the message set) refuses it.  NULL: always allowed.
	 */
	int (*claim)(void *claim_user, const uint8_t id[NATIVE_ID_LEN]);
	void *claim_user;
	/* Accept a delta sync: the images exist and hold an older copy;
	 * only chunks whose digests differ are sent. */
	bool allow_delta;
	/* Compare only (send --verify-only): nothing is written or marked;
	 * dst_run() returns 0 when identical, -EILSEQ when not. */
	bool verify_only;
	/*
	 * "HOST:PORT" (or "[v6]:PORT") this side's NBD server is bound to, as
	 * xport_listen() gives it, announced (EXPORT) to a native source that
	 * asks because it will forward its NBD clients here after the
	 * switch-over.  NULL or "": no NBD export (EXPORT port 0).  Not owned;
	 * valid for the whole dst_run().
	 */
	const char *nbd_addr;
	/* Refuse a native source that offers compressed chunks (receive
	 * --no-compress): its HELLO is answered with ERROR (ENOTSUP,
	 * NATIVE_NO_COMPRESS_REASON), as an older blkmig would; a source
	 * with --compress auto then sends raw chunks. */
	bool no_compress;
	/* Native: the most TCP connections one migration may use (a source
	 * asking for more gets this many); 0: MIG_DEFAULT_MAX_CONNECTIONS. */
	unsigned max_connections;
};

/*
 * Receive one migration from x in p->format.  0 once it is complete and the
 * marks are cleared: native, after COMMIT (images durable, read back, every
 * chunk carried unless shared base, digests matched); QEMU, after EOF
 * (durable, read back, every chunk carried unless allow_shared_base).
 * Negative errno otherwise, after telling the source (native ERROR) when
 * the connection still works.  Devices opened through
 * the callback are closed before returning.  st (optional) receives the
 * final figures.  cancel (may be NULL; not owned) ends the migration with
 * -ECANCELED once it fires: it wakes the transport's waits at once.
 */
int dst_run(const struct dst_params *p, struct xport *x, struct cancel *cancel,
	    struct mig_stats *st);

#endif
