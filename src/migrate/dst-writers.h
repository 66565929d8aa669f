/* SPDX-License-Identifier: MIT */
/*
 * The destination's writer pool: threads that apply chunk records (hash,
 * then write or zero) while the engine thread reads the next record off the
 * connection, so that several writes are in flight at once (which direct
 * I/O needs to keep a disk busy) and the hashing leaves the engine thread.
 * They also read chunks back after a sync (DSTW_CHECK), several at once.
 *
 * Order: a chunk always goes to the same writer (chunk index modulo the
 * number of writers) and each writer applies its queue in order, so two
 * records for one chunk (chunk records, or a mirrored client write's part
 * in it) land in the order they arrived.  Threads: any number may submit
 * to a pool with writer threads at once (the engine its records, a pass
 * end running beside it its read-back checks); two jobs for one chunk run
 * in the order their dstw_submit() calls took their places, which is the
 * order of the calls whenever one returned before the other began.  An
 * inline pool (no threads) has one submitter.  Memory: each
 * writer holds at most a few chunk buffers (about DSTW_QUEUE_BYTES); the
 * engine waits when the chunk's writer is full.  From the first mirrored
 * write (DSTW_MIRROR) on, the last of a writer's slots is kept for them
 * when it has more than one: a client waits for its write to be queued
 * (the WACK follows), and a copy that fills the queues would make it wait
 * for a chunk's write.
 *
 * Errors: the first failure is kept (its message too) and returned by the
 * next dstw_submit(), dstw_barrier() or dstw_wait_done(), and every one after; writers skip the
 * rest of their queues after it.
 */
#ifndef BLKMIG_MIGRATE_DST_WRITERS_H
#define BLKMIG_MIGRATE_DST_WRITERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct blk;
struct digest_table;

#define DSTW_WRITERS	 4
#define DSTW_QUEUE_BYTES (4u << 20) /* per writer, at least one chunk */

struct dstw;

enum dstw_op {
	DSTW_WRITE, /* write data (a copy of len bytes is taken), set the digest */
	DSTW_ZERO,  /* make the chunk read as zeros, set the digest */
	/* Read the chunk back from the device and compare it with its digest
	 * (a zero chunk that is a hole needs no read): EILSEQ if it differs. */
	DSTW_CHECK,
	/* A mirrored client write's part in one chunk: len bytes at off
	 * (data NULL: zeros; otherwise a copy is taken), read back at once
	 * and compared (EILSEQ if it differs), then the chunk's digest
	 * brought up to date from the written bytes (digest_update(), one
	 * thread at a time in a pool). */
	DSTW_MIRROR,
};

/* One chunk to apply or check. */
struct dstw_job {
	enum dstw_op op;
	struct blk *blk;
	struct digest_table *dig; /* the chunk's digest is set here once applied */
	const char *shown;	  /* the device's name, for messages (outlives the pool) */
	uint64_t idx, off;
	size_t len;
	const void *data; /* DSTW_WRITE; DSTW_MIRROR (NULL: zeros) */
};

/* A pool of nwriters threads for chunks of chunk_size; with 0, no threads:
 * dstw_submit() applies each job itself, from the caller's buffer (for
 * buffered images, where threads only add a copy). */
int dstw_new(unsigned nwriters, uint32_t chunk_size, struct dstw **out);
/* Queue a job (waits while its writer's queue is full).  A failure of an
 * earlier job is returned here (once) instead. */
int dstw_submit(struct dstw *w, const struct dstw_job *job);
/* Wait until every queued job is applied; the first failure, once. */
int dstw_barrier(struct dstw *w);
/* The most jobs queued or running on any one writer (0 inline): how long
 * a new job could wait. */
unsigned dstw_backlog(struct dstw *w);
/* Each writer's queue slots (the last of them kept for DSTW_MIRROR jobs
 * once one came, when there are several). */
unsigned dstw_slots(const struct dstw *w);
/*
 * Jobs are numbered from 1 as they are submitted: the number of the last
 * one (0: none yet), and a wait until every job up to 'upto' is applied,
 * while later ones may still be queued, or until any job failed.  Any
 * thread may wait; inline, a job is done once submitted and its failure is
 * the submitter's, so this returns 0 at once.
 */
uint64_t dstw_submitted(struct dstw *w);
int dstw_wait_done(struct dstw *w, uint64_t upto);
/* Whether jobs run on threads of their own (not inline; false for NULL). */
bool dstw_threaded(const struct dstw *w);
/* Mirrored writes may come: from now on a DSTW_WRITE or DSTW_ZERO also
 * keeps its chunk's block hashes in the digest table
 * (digest_set_blocks()), so the chunk's first DSTW_MIRROR reads nothing
 * of it for its hash. */
void dstw_seed_blocks(struct dstw *w);
/* Stop and free (after a barrier, or abandoning what is queued).  NULL ok. */
void dstw_free(struct dstw *w);

#endif
