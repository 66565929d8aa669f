/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the migration engines (src/migrate/source.c, dest.c), run
 * in-process over real TCP on 127.0.0.1: a destination thread runs
 * dst_run() on the accepted connection and opens its devices through a
 * callback (files created here, or in-memory devices with injected
 * faults); this thread runs src_run() over tracking layers on file or
 * in-memory devices.  Afterwards the destination images are compared with
 * the sources byte for byte.
 *
 * Cases: one device with data, holes and zeros; two devices; a dirty pass
 * forced from the progress callback; a live writer during a rate-limited
 * migration, in dirty and in active mode; a source read error in the bulk
 * and in the final pass; a destination write error; cancel from another
 * thread, at a record boundary and while the destination is silent; shared
 * base; zero blocks; handshake failures; src_new() argument checks; crafted
 * QEMU-format streams into the destination, complete, incomplete (a chunk,
 * a device, all block data missing) and with a shared base.
 *
 * Engines record their messages per thread, so the destination thread
 * copies its err_msg() before it ends.  Sizes stay at 16 MiB or less (the
 * suite also runs under ASan/UBSan) and nothing asserts on timing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "block/backend.h"
#include "block/mark.h"
#include "state/state.h"
#include "common/error.h"
#include "common/util.h"
#include "migrate/migrate.h"
#include "transport/transport.h"
#include "wire/native.h"
#include "wire/savevm.h"
#include "workload/workload.h"

#define SAFETY_TIMEOUT_MS 30000
#define PATH_CAP	  512
#define MSG_CAP		  1024

static void assert_contains(const char *what, const char *msg, const char *needle)
{
	if (!strstr(msg, needle))
		fail_msg("%s message '%s' does not contain '%s'", what, msg, needle);
}

/* ---- temporary files, removed after every test ------------------------------ */

static char tmp_paths[16][PATH_CAP];
static unsigned ntmp;

static const char *tmp_dir(void)
{
	const char *d = getenv("TMPDIR");

	return d && *d ? d : "/tmp";
}

static void tmp_new(char *path, size_t cap, const char *tag)
{
	int fd;

	assert_true(ntmp < ARRAY_SIZE(tmp_paths));
	snprintf(path, cap, "%s/blkmig-test-migrate-%s-XXXXXX", tmp_dir(), tag);
	fd = mkstemp(path);
	if (fd < 0)
		fail_msg("mkstemp %s failed", path);
	close(fd);
	snprintf(tmp_paths[ntmp++], PATH_CAP, "%s", path);
}

static int tmp_cleanup(void **state)
{
	(void)state;
	/* And what a failed migration leaves beside an image: its mark and
	 * the destination's record. */
	for (unsigned i = 0; i < ntmp; i++) {
		mark_clear(tmp_paths[i]);
		dst_rec_clear(tmp_paths[i]);
		unlink(tmp_paths[i]);
	}
	ntmp = 0;
	return 0;
}

/* ---- contents ---------------------------------------------------------------- */

enum fill { FILL_RANDOM, FILL_ZEROS, FILL_BYTE };

struct extent {
	uint64_t off, len;
	enum fill fill;
};

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void fill_buf(uint8_t *p, size_t len, enum fill f, uint64_t *seed)
{
	if (f == FILL_ZEROS) {
		memset(p, 0, len);
	} else if (f == FILL_BYTE) {
		memset(p, 0xee, len);
	} else {
		for (size_t i = 0; i < len; i += 8) {
			uint64_t v = rng_next(seed);

			memcpy(p + i, &v, MIN((size_t)8, len - i));
		}
	}
}

static void write_extents(struct blk *b, const struct extent *e, size_t n, uint64_t seed)
{
	uint8_t *buf = malloc(MiB);

	assert_non_null(buf);
	for (size_t i = 0; i < n; i++) {
		for (uint64_t done = 0; done < e[i].len; done += MiB) {
			size_t len = (size_t)MIN(MiB, e[i].len - done);

			fill_buf(buf, len, e[i].fill, &seed);
			if (blk_pwrite(b, buf, len, e[i].off + done) != 0)
				fail_msg("writing test data: %s", err_msg());
		}
	}
	free(buf);
}

/* First differing offset of [off, off + len) of a and b, or -1. */
static int64_t first_difference(struct blk *a, struct blk *b, uint64_t off, uint64_t len)
{
	uint8_t *x = malloc(MiB), *y = malloc(MiB);
	int64_t at = -1;

	assert_non_null(x);
	assert_non_null(y);
	for (uint64_t done = 0; done < len && at < 0; done += MiB) {
		size_t n = (size_t)MIN(MiB, len - done);

		assert_int_equal(blk_pread(a, x, n, off + done), 0);
		assert_int_equal(blk_pread(b, y, n, off + done), 0);
		if (memcmp(x, y, n) != 0)
			for (size_t i = 0; i < n && at < 0; i++)
				if (x[i] != y[i])
					at = (int64_t)(off + done + i);
	}
	free(x);
	free(y);
	return at;
}

static struct blk *open_file_ro(const char *path)
{
	struct blk *b;

	if (blk_file_open(path, BLK_OPEN_RDONLY, 0, &b) != 0)
		fail_msg("open %s: %s", path, err_msg());
	return b;
}

/* A file of 'size' bytes, every byte 0xee or random: what was on the
 * destination before. */
static void prefill_file(const char *path, uint64_t size, enum fill f, uint64_t seed)
{
	struct extent e = { 0, size, f };
	struct blk *b;

	if (blk_file_open(path, BLK_OPEN_CREATE, size, &b) != 0)
		fail_msg("create %s: %s", path, err_msg());
	assert_int_equal(blk_size(b), size);
	write_extents(b, &e, 1, seed);
	blk_close(b);
}

/* ---- source devices ---------------------------------------------------------- */

struct sdev {
	const char *name;
	char path[PATH_CAP]; /* empty for a mem device */
	struct blk *base;    /* file or mem, below the tracker */
	struct blk *track;
};

static void sdev_open_mem(struct sdev *d, const char *name, uint64_t size)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	assert_int_equal(blk_mem_open(size, &d->base), 0);
	assert_int_equal(blk_track_open(d->base, &d->track), 0);
}

/* A sparse file: everything not written later is a hole. */
static void sdev_open_file(struct sdev *d, const char *name, uint64_t size)
{
	memset(d, 0, sizeof(*d));
	d->name = name;
	tmp_new(d->path, sizeof(d->path), "src");
	assert_int_equal(truncate(d->path, (off_t)size), 0);
	if (blk_file_open(d->path, 0, 0, &d->base) != 0)
		fail_msg("open %s: %s", d->path, err_msg());
	assert_int_equal(blk_track_open(d->base, &d->track), 0);
}

static void sdev_close(struct sdev *d)
{
	blk_close(d->track);
	d->track = d->base = NULL;
}

/* The destination file holds exactly the source's bytes. */
static void assert_same(struct sdev *s, const char *dst_path)
{
	struct blk *d = open_file_ro(dst_path);
	int64_t at;

	assert_int_equal(blk_size(d), blk_size(s->track));
	at = first_difference(s->track, d, 0, blk_size(d));
	if (at >= 0)
		fail_msg("device %s: destination differs from the source at offset %" PRId64,
			 s->name, at);
	blk_close(d);
}

/* ---- a destination thread ---------------------------------------------------- */

struct ddev {
	const char *name;
	char path[PATH_CAP];	 /* a file device; unused with mem */
	bool mem;		 /* an in-memory device (contents not kept) */
	size_t hold_below;	 /* writes shorter than this wait until src_run returned */
	size_t fail_below;	 /* writes shorter than this fail with EIO */
	bool hold_flush;	 /* flushes wait until the source's src_run returned */
	unsigned write_fail_nth; /* mem: the nth write fails with write_fail_err */
	int write_fail_err;
	unsigned flush_fail_nth; /* mem: the nth flush fails with EIO */
};

struct dcfg {
	unsigned n;
	struct ddev dev[2];
	const char *const *expect;
	unsigned nexpect;
	bool allow_shared_base;
	enum mig_format format;
	const char *nbd_addr;
};

/* Set while a test holds its destination's short writes (hold_below). */
static atomic_bool writes_held;

/* A layer that makes short writes (mirrored WRITEs), or flushes, wait
 * while the test holds them: a destination whose disk has stopped
 * answering. */
struct stall_blk {
	struct blk blk;
	size_t below;
	size_t fail_below;
	bool hold_flush;
};

static int stall_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct stall_blk *s = (struct stall_blk *)b;

	while (len < s->below && atomic_load(&writes_held))
		sleep_ns(1000000);
	if (len < s->fail_below)
		return err_set(EIO, "injected failure of a short write");
	return blk_pwrite(b->lower, buf, len, off);
}

static int stall_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	return blk_pread(b->lower, buf, len, off);
}

/* Set while a test holds its destination's flushes (hold_flush); how many
 * wait meanwhile; set when the held flushes are to fail once let go. */
static atomic_bool flush_held;
static atomic_uint flushes_waiting;
static atomic_bool flush_failing;

static int stall_flush(struct blk *b)
{
	struct stall_blk *s = (struct stall_blk *)b;

	if (!s->hold_flush)
		return blk_flush(b->lower);
	if (atomic_load(&flush_held)) {
		atomic_fetch_add(&flushes_waiting, 1);
		while (atomic_load(&flush_held))
			sleep_ns(1000000);
		atomic_fetch_sub(&flushes_waiting, 1);
	}
	if (atomic_load(&flush_failing))
		return err_set(EIO, "injected failure of a flush");
	return blk_flush(b->lower);
}

static int stall_zero(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	return blk_zero(b->lower, off, len, flags);
}

static void stall_close(struct blk *b)
{
	free(b);
}

static const struct blk_ops stall_ops = {
	.name = "stall",
	.pread = stall_pread,
	.pwrite = stall_pwrite,
	.flush = stall_flush,
	.zero = stall_zero,
	.close = stall_close,
};

static int stall_wrap(struct blk *lower, size_t below, struct blk **out)
{
	struct stall_blk *s = calloc(1, sizeof(*s));

	if (!s) {
		blk_close(lower);
		return -ENOMEM;
	}
	s->blk = (struct blk){ .ops = &stall_ops, .lower = lower, .size = lower->size };
	s->below = below;
	*out = &s->blk;
	return 0;
}

static int open_cb(void *user, const char *name, uint64_t size, struct blk **out, char *path,
		   size_t path_cap, bool *created)
{
	struct dcfg *c = user;

	*created = false;

	for (unsigned i = 0; i < c->n; i++) {
		struct ddev *d = &c->dev[i];
		int r;

		if (strcmp(d->name, name) != 0)
			continue;
		if (d->mem) {
			r = blk_mem_open(size, out);
			if (r == 0 && d->write_fail_nth)
				blk_mem_inject(*out, BLK_MEM_WRITE, d->write_fail_nth,
					       d->write_fail_err);
			if (r == 0 && d->flush_fail_nth)
				blk_mem_inject(*out, BLK_MEM_FLUSH, d->flush_fail_nth, EIO);
			return r;
		}
		snprintf(path, path_cap, "%s", d->path);
		r = blk_file_open(d->path, BLK_OPEN_CREATE, size, out);
		if (r == 0 && (d->hold_below || d->fail_below || d->hold_flush))
			r = stall_wrap(*out, d->hold_below, out);
		if (r == 0 && d->fail_below)
			((struct stall_blk *)*out)->fail_below = d->fail_below;
		if (r == 0 && d->hold_flush)
			((struct stall_blk *)*out)->hold_flush = true;
		return r;
	}
	return err_set(ENOENT, "test: no destination device '%s'", name);
}

struct mig {
	/* set up by the test */
	struct src_params sp;
	struct sdev *src[2];
	unsigned nsrc;
	struct dcfg dst;
	mig_progress_fn progress;
	void *progress_user;
	/* A thread that uses the job (src_cancel, src_stats): joined after
	 * src_run returns and before the job is freed. */
	pthread_t *user_thread;

	/* running */
	int lfd;
	struct xport *_Atomic dx; /* the destination's connection, once accepted */
	char bound[128];
	pthread_t dth;
	struct cancel *dcancel; /* the destination's */
	struct src_job *job;
	struct xport *x;

	/* results */
	int src_r, dst_r;
	uint64_t rate_after; /* the source's rate limit when src_run returned */
	uint64_t src_tx;     /* bytes the source sent */
	char src_msg[MSG_CAP], dst_msg[MSG_CAP];
	struct mig_stats src_st, dst_st;
};

static void *dst_main(void *arg)
{
	struct mig *m = arg;
	struct dst_params p = {
		.open = open_cb,
		.user = &m->dst,
		.expect = m->dst.expect,
		.nexpect = m->dst.nexpect,
		.allow_shared_base = m->dst.allow_shared_base,
		.format = m->dst.format,
		.nbd_addr = m->dst.nbd_addr,
	};
	struct xport *x = NULL;

	m->dst_r = xport_accept(m->lfd, SAFETY_TIMEOUT_MS, m->dcancel, &x);
	if (m->dst_r == 0) {
		atomic_store(&m->dx, x);
		xport_set_timeout(x, SAFETY_TIMEOUT_MS);
		m->dst_r = dst_run(&p, x, m->dcancel, &m->dst_st);
	}
	snprintf(m->dst_msg, sizeof(m->dst_msg), "%s", m->dst_r ? err_msg() : "");
	xport_close(x);
	return NULL;
}

static void mig_init(struct mig *m)
{
	memset(m, 0, sizeof(*m));
	m->lfd = -1;
	atomic_init(&m->dx, NULL);
}

/* A setup step failed with the destination thread already waiting:
 * stop it before failing, so it does not outlive the test's state. */
static void mig_start_failed(struct mig *m, const char *what)
{
	char msg[MSG_CAP];

	snprintf(msg, sizeof(msg), "%s", err_msg());
	cancel_fire(m->dcancel);
	pthread_join(m->dth, NULL);
	cancel_free(m->dcancel);
	close(m->lfd);
	src_free(m->job);
	m->job = NULL;
	fail_msg("%s: %s", what, msg);
}

/* Listen, start the destination, create the job and connect. */
static void mig_start(struct mig *m)
{
	struct src_device devs[2];

	if (xport_listen("127.0.0.1:0", &m->lfd, m->bound, sizeof(m->bound)) != 0)
		fail_msg("listen: %s", err_msg());
	assert_int_equal(cancel_new(&m->dcancel), 0);
	assert_int_equal(pthread_create(&m->dth, NULL, dst_main, m), 0);
	for (unsigned i = 0; i < m->nsrc; i++) {
		devs[i] = (struct src_device){ .name = m->src[i]->name, .blk = m->src[i]->track };
	}
	if (src_new(&m->sp, devs, m->nsrc, &m->job) != 0)
		mig_start_failed(m, "src_new");
	if (m->progress)
		src_set_progress(m->job, m->progress, m->progress_user);
	if (xport_connect(m->bound, SAFETY_TIMEOUT_MS, NULL, &m->x) != 0)
		mig_start_failed(m, "connect");
	xport_set_timeout(m->x, SAFETY_TIMEOUT_MS);
}

/* Run the source, close its end (as the CLI does), wait for the
 * destination, collect both results.  Each side's message is copied in
 * its own thread: err_msg() is per thread. */
static void mig_finish(struct mig *m)
{
	m->src_r = src_run(m->job, m->x);
	snprintf(m->src_msg, sizeof(m->src_msg), "%s", m->src_r ? err_msg() : "");
	m->rate_after = xport_get_rate(m->x);
	m->src_tx = xport_tx_bytes(m->x);
	atomic_store(&flush_held, false);
	atomic_store(&writes_held, false);
	xport_close(m->x);
	m->x = NULL;
	pthread_join(m->dth, NULL);
	cancel_free(m->dcancel);
	m->dcancel = NULL;
	atomic_store(&flush_failing, false);
	close(m->lfd);
	if (m->user_thread)
		pthread_join(*m->user_thread, NULL);
	src_stats(m->job, &m->src_st);
	src_free(m->job);
	m->job = NULL;
}

static void mig_run(struct mig *m)
{
	mig_start(m);
	mig_finish(m);
}

static void assert_success(const struct mig *m)
{
	if (m->src_r != 0 || m->dst_r != 0)
		fail_msg("migration failed: source %d '%s', destination %d '%s'", m->src_r,
			 m->src_msg, m->dst_r, m->dst_msg);
	assert_int_equal(m->src_st.state, MIG_COMPLETED);
	assert_int_equal(m->dst_st.state, MIG_COMPLETED);
	assert_int_equal(m->src_st.remaining, 0);
	/* Every pass, the final one included, ended with SYNCED. */
	assert_true(m->src_st.iterations >= 2);
	assert_int_equal(m->dst_st.iterations, m->src_st.iterations);
	assert_int_equal(m->src_st.bulk_done, m->src_st.total);
	assert_int_equal(m->src_st.ndev, m->nsrc);
	assert_int_equal(m->dst_st.ndev, m->nsrc);
	assert_int_equal(m->dst_st.total, m->src_st.total);
	/* Everything the source put on the wire was received. */
	assert_true(m->src_st.transferred > 0);
	assert_int_equal(m->dst_st.transferred, m->src_st.transferred);
	for (unsigned i = 0; i < m->nsrc; i++) {
		assert_string_equal(m->src_st.dev[i].name, m->src[i]->name);
		assert_string_equal(m->dst_st.dev[i].name, m->src[i]->name);
		assert_int_equal(m->src_st.dev[i].size, blk_size(m->src[i]->track));
		assert_int_equal(m->dst_st.dev[i].size, blk_size(m->src[i]->track));
	}
}

/* After switch-over the source is fenced: writes fail, reads work. */
static void assert_fenced(struct sdev *s)
{
	uint8_t buf[512] = { 0 };

	assert_int_equal(blk_pwrite(s->track, buf, sizeof(buf), 0), -ESHUTDOWN);
	assert_int_equal(blk_zero(s->track, 0, 512, 0), -ESHUTDOWN);
	assert_int_equal(blk_pread(s->track, buf, sizeof(buf), 0), 0);
}

/* A write through the tracker completes: the source is neither paused nor
 * fenced.  Done from a thread so that a writer left paused fails the test
 * instead of hanging it. */
struct probe {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int r;
	struct blk *track;
};

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	uint8_t buf[4096];
	int r;

	memset(buf, 0x5a, sizeof(buf));
	r = blk_pwrite(p->track, buf, sizeof(buf), 0);
	pthread_mutex_lock(&p->lock);
	p->r = r;
	p->done = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void assert_writable(struct sdev *s)
{
	static struct probe p; /* outlives a failed test whose thread is stuck */
	struct timespec ts;
	pthread_t th;
	bool done;

	memset(&p, 0, sizeof(p));
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.cond, NULL);
	p.track = s->track;
	assert_int_equal(pthread_create(&th, NULL, probe_main, &p), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&p.lock);
	while (!p.done)
		if (pthread_cond_timedwait(&p.cond, &p.lock, &ts) == ETIMEDOUT)
			break;
	done = p.done;
	pthread_mutex_unlock(&p.lock);
	if (!done)
		fail_msg("device %s: a write is still held 10 s after the migration ended "
			 "(writers left paused)",
			 s->name);
	pthread_join(th, NULL);
	pthread_cond_destroy(&p.cond);
	pthread_mutex_destroy(&p.lock);
	if (p.r != 0)
		fail_msg("device %s: write after the migration: %d", s->name, p.r);
}

/* ---- progress callbacks ------------------------------------------------------- */

struct prog {
	struct blk *track; /* write_in_bulk writes here */
	struct blk *mem;   /* fault_in_final injects here */
	struct src_job **job;
	bool write_in_bulk, wrote;
	int write_r;
	uint64_t write_off;
	bool fault_in_final, faulted;
	bool hold_in_final; /* the destination's flushes wait from MIG_FINAL on */
	bool cancel_in_bulk, cancelled;
	unsigned states; /* bit per state seen */
	enum mig_state last;
};

/*
 * Acts once the bulk pass has sent something, so chunk 0, the first one
 * claimed, has had its dirty bit cleared: a write to it now stays dirty for
 * a later pass.  Writers are not held in BULK, so writing from the engine
 * thread cannot deadlock.
 */
static void prog_cb(const struct mig_stats *st, void *user)
{
	struct prog *p = user;

	p->states |= 1U << st->state;
	p->last = st->state;
	if (st->state == MIG_BULK && st->bulk_done > 0) {
		if (p->write_in_bulk && !p->wrote) {
			uint8_t buf[4096];

			memset(buf, 0xc3, sizeof(buf));
			p->write_r = blk_pwrite(p->track, buf, sizeof(buf), p->write_off);
			p->wrote = true;
		}
		if (p->cancel_in_bulk && !p->cancelled) {
			src_cancel(*p->job);
			p->cancelled = true;
		}
	}
	if (st->state == MIG_FINAL && p->hold_in_final)
		atomic_store(&flush_held, true);
	if (st->state == MIG_FINAL && p->fault_in_final && !p->faulted) {
		blk_mem_inject(p->mem, BLK_MEM_READ, 1, EIO);
		p->faulted = true;
	}
}

/* ---- (a) one device ------------------------------------------------------------ */

static void test_one_device(void **state)
{
	static const struct extent layout[] = {
		{ 0, 4 * MiB, FILL_RANDOM },		      /* chunks 0-3 */
		{ 5 * MiB, 512 * KiB, FILL_RANDOM },	      /* half of chunk 5 */
		{ 6 * MiB, MiB, FILL_ZEROS },		      /* chunk 6: written zeros */
		{ 7 * MiB, 3 * MiB, FILL_RANDOM },	      /* chunks 7-9 */
		{ 13 * MiB + 8 * KiB, 4 * KiB, FILL_RANDOM }, /* a little of chunk 13 */
		{ 16 * MiB - 100, 100, FILL_RANDOM },	      /* the tail of chunk 15 */
	};
	struct sdev s;
	struct mig m;
	struct prog p = { 0 };

	(void)state;
	sdev_open_file(&s, "disk0", 16 * MiB);
	write_extents(s.base, layout, ARRAY_SIZE(layout), 1);
	mig_init(&m);
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(m.dst.dev[0].path, 16 * MiB, FILL_BYTE, 0); /* old contents */
	m.progress = prog_cb;
	m.progress_user = &p;
	mig_run(&m);

	assert_success(&m);
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	/* No writes: every chunk went exactly once. */
	assert_int_equal(m.src_st.total, 16 * MiB);
	assert_int_equal(m.src_st.dev[0].data_chunks + m.src_st.dev[0].zero_chunks, 16);
	assert_int_equal(m.src_st.dev[0].skipped, 0);
	assert_int_equal(m.dst_st.dev[0].data_chunks + m.dst_st.dev[0].zero_chunks, 16);
	/* Without ZERO_BLOCKS every chunk travels as a whole chunk of data. */
	assert_int_equal(m.src_st.data_bytes, 16 * MiB);
	assert_int_equal(m.dst_st.dev[0].zero_chunks, 0);
	assert_true(m.src_st.transferred > 16 * MiB);
	/* Progress: every state up to completion, ending there. */
	assert_true(p.states & (1U << MIG_SETUP));
	assert_true(p.states & (1U << MIG_BULK));
	assert_true(p.states & (1U << MIG_FINAL));
	assert_int_equal(p.last, MIG_COMPLETED);
	assert_false(p.states & ((1U << MIG_FAILED) | (1U << MIG_CANCELLED)));
	assert_fenced(&s);
	sdev_close(&s);
}

/*
 * A source asking for lanes from a destination run on its own (dst_run()
 * without a listener, so no join could reach it): the destination takes
 * one connection at once rather than waiting out its timeout.
 */
static void test_lanes_without_listener(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	sdev_open_mem(&s, "disk0", 2 * MiB);
	mig_init(&m);
	m.sp.connections = 4;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	mig_run(&m);

	assert_success(&m);
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(m.src_st.lanes, 1);
	sdev_close(&s);
}

/* ---- FORWARD: the destination says where its NBD export is ----------------------- */

/* One small migration on session sess, with or without forward, to a
 * destination whose NBD server is bound to nbd_addr (NULL: none). */
static void run_forward(struct src_session *sess, bool forward, const char *nbd_addr)
{
	struct sdev s;
	struct mig m;

	sdev_open_mem(&s, "disk0", 2 * MiB);
	mig_init(&m);
	m.sp.session = sess;
	m.sp.forward = forward;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	m.dst.nbd_addr = nbd_addr;
	tmp_new(m.dst.dev[0].path, PATH_CAP, "fwd");
	mig_run(&m);
	/* Not assert_success(): the session's byte count spans the runs. */
	if (m.src_r != 0 || m.dst_r != 0)
		fail_msg("migration failed: source %d '%s', destination %d '%s'", m.src_r,
			 m.src_msg, m.dst_r, m.dst_msg);
	assert_int_equal(m.src_st.state, MIG_COMPLETED);
	assert_same(&s, m.dst.dev[0].path);
	sdev_close(&s);
}

static void test_forward_export(void **state)
{
	struct src_session sess;

	(void)state;
	/* Not asked: nothing announced. */
	assert_int_equal(src_session_init(&sess), 0);
	run_forward(&sess, false, "127.0.0.1:10809");
	assert_false(sess.dest_nbd_known);

	/* Asked: the bound address as the wire has it, without brackets. */
	run_forward(&sess, true, "[::1]:10809");
	assert_true(sess.dest_nbd_known);
	assert_string_equal(sess.dest_nbd_host, "::1");
	assert_int_equal(sess.dest_nbd_port, 10809);

	/* Each connection announces again; the latest wins.  A wildcard is
	 * passed on as announced (the caller knows what it dialled). */
	run_forward(&sess, true, "0.0.0.0:65535");
	assert_string_equal(sess.dest_nbd_host, "0.0.0.0");
	assert_int_equal(sess.dest_nbd_port, 65535);

	/* A destination without an NBD export says so: port 0. */
	run_forward(&sess, true, NULL);
	assert_true(sess.dest_nbd_known);
	assert_string_equal(sess.dest_nbd_host, "");
	assert_int_equal(sess.dest_nbd_port, 0);
}

/* ---- (b) two devices ----------------------------------------------------------- */

static void test_two_devices(void **state)
{
	static const struct extent la[] = {
		{ 0, 3 * MiB, FILL_RANDOM },
		{ 5 * MiB, 3 * MiB, FILL_RANDOM },
	};
	/* 5 MiB + 12345 bytes: the last 256 KiB chunk is partial. */
	static const struct extent lb[] = {
		{ MiB, 2 * MiB, FILL_RANDOM },
		{ 5 * MiB, 12345, FILL_RANDOM },
	};
	struct sdev a, b;
	struct mig m;

	(void)state;
	sdev_open_mem(&a, "alpha", 8 * MiB);
	sdev_open_file(&b, "beta", 5 * MiB + 12345);
	write_extents(a.base, la, ARRAY_SIZE(la), 2);
	write_extents(b.base, lb, ARRAY_SIZE(lb), 3);
	mig_init(&m);
	m.sp.chunk_size = 256 * KiB;
	m.src[0] = &a;
	m.src[1] = &b;
	m.nsrc = 2;
	m.dst.n = 2;
	/* The callback is asked by name; list them the other way round. */
	m.dst.dev[0].name = "beta";
	m.dst.dev[1].name = "alpha";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dstb");
	tmp_new(m.dst.dev[1].path, PATH_CAP, "dsta");
	mig_run(&m);

	assert_success(&m);
	assert_same(&a, m.dst.dev[1].path);
	assert_same(&b, m.dst.dev[0].path);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_int_equal(mark_check(m.dst.dev[1].path), 0);
	assert_int_equal(m.src_st.total, 13 * MiB + 12345);
	assert_int_equal(m.src_st.dev[0].data_chunks + m.src_st.dev[0].zero_chunks, 32);
	assert_int_equal(m.src_st.dev[1].data_chunks + m.src_st.dev[1].zero_chunks, 21);
	assert_int_equal(m.dst_st.dev[0].data_chunks + m.dst_st.dev[0].zero_chunks, 32);
	assert_int_equal(m.dst_st.dev[1].data_chunks + m.dst_st.dev[1].zero_chunks, 21);
	assert_fenced(&a);
	assert_fenced(&b);
	sdev_close(&a);
	sdev_close(&b);
}

/* ---- (c) writes during the migration ---------------------------------------------- */

/*
 * A write to an already-sent chunk during the bulk pass, with a downtime
 * limit nothing but an empty bitmap meets: exactly one dirty pass resends
 * that chunk, then the final pass finds nothing.
 */
static void test_dirty_pass(void **state)
{
	static const struct extent layout[] = { { 0, 16 * MiB, FILL_RANDOM } };
	struct sdev s;
	struct mig m;
	struct prog p = { 0 };
	uint8_t buf[4096];

	(void)state;
	sdev_open_mem(&s, "disk0", 16 * MiB);
	write_extents(s.base, layout, 1, 4);
	mig_init(&m);
	m.sp.chunk_size = 64 * KiB;
	m.sp.max_bandwidth = 32 * MiB; /* a bulk pass long enough for progress calls */
	m.sp.max_downtime_ns = 1;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	p.track = s.track;
	p.write_in_bulk = true;
	p.write_off = 100;
	m.progress = prog_cb;
	m.progress_user = &p;
	mig_run(&m);

	assert_true(p.wrote);
	assert_int_equal(p.write_r, 0);
	assert_success(&m);
	assert_same(&s, m.dst.dev[0].path);
	/* The written bytes are at the destination. */
	{
		struct blk *d = open_file_ro(m.dst.dev[0].path);

		assert_int_equal(blk_pread(d, buf, sizeof(buf), 100), 0);
		for (size_t i = 0; i < sizeof(buf); i++)
			assert_int_equal(buf[i], 0xc3);
		blk_close(d);
	}
	assert_true(p.states & (1U << MIG_DIRTY));
	/* Bulk, one dirty pass, and the (empty) final pass. */
	assert_int_equal(m.src_st.iterations, 3);
	assert_int_equal(m.dst_st.iterations, 3);
	/* The final pass, writers paused, ran without the rate limit. */
	assert_int_equal(m.rate_after, 0);
	assert_int_equal(m.src_st.dev[0].data_chunks, 256 + 1);
	assert_int_equal(m.dst_st.dev[0].data_chunks, 256 + 1);
	assert_fenced(&s);
	sdev_close(&s);
}

/* ---- what a writer was told ---------------------------------------------------- */

/*
 * A layer between the writer and the tracker that keeps its own account of
 * what the device must hold: the contents before the writer started plus
 * every write acknowledged to it, applied in the order acknowledged (the
 * workload is one thread, so that is the order issued).  The destination
 * is compared with this, not with the source, so a write the source lost
 * or a write acknowledged and never carried both show.  It also counts
 * writes acknowledged and refused, and lets the test wait for writes that
 * land below a given offset.  Only the writer writes through it; it is not
 * closed with blk_close() (that would close the tracker the test owns):
 * ack_free() releases this layer alone.
 */
struct ack_blk {
	struct blk blk;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint8_t *expect;	      /* blk.size bytes */
	uint64_t acked;		      /* writes that returned 0 */
	uint64_t refused;	      /* writes that failed */
	int first_err;		      /* the first failure's negative errno */
	uint64_t acked_after_refused; /* writes that succeeded after one failed */
	uint64_t watch_end;	      /* count acknowledged writes wholly below this */
	uint64_t watched;
};

static int ack_pread(struct blk *b, void *buf, size_t len, uint64_t off)
{
	return blk_pread(b->lower, buf, len, off);
}

static int ack_pwrite(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct ack_blk *a = (struct ack_blk *)b;
	int r = blk_pwrite(b->lower, buf, len, off);

	pthread_mutex_lock(&a->lock);
	if (r == 0) {
		memcpy(a->expect + off, buf, len);
		a->acked++;
		if (a->refused)
			a->acked_after_refused++;
		if (off + len <= a->watch_end)
			a->watched++;
		pthread_cond_broadcast(&a->cond);
	} else if (a->refused++ == 0) {
		a->first_err = r;
	}
	pthread_mutex_unlock(&a->lock);
	return r;
}

static int ack_flush(struct blk *b)
{
	return blk_flush(b->lower);
}

static const struct blk_ops ack_ops = {
	.name = "ack",
	.pread = ack_pread,
	.pwrite = ack_pwrite,
	.flush = ack_flush,
};

static struct ack_blk *ack_new(struct blk *lower)
{
	struct ack_blk *a = calloc(1, sizeof(*a));

	assert_non_null(a);
	a->blk = (struct blk){ .ops = &ack_ops, .lower = lower, .size = blk_size(lower) };
	a->expect = malloc(blk_size(lower));
	assert_non_null(a->expect);
	assert_int_equal(blk_pread(lower, a->expect, blk_size(lower), 0), 0);
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	return a;
}

static void ack_free(struct ack_blk *a)
{
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->lock);
	free(a->expect);
	free(a);
}

static uint64_t ack_count(struct ack_blk *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->acked;
	pthread_mutex_unlock(&a->lock);
	return n;
}

/* Wait up to 10 s for n acknowledged writes wholly below 'end', counted
 * from now.  Whether they came. */
static bool ack_wait_below(struct ack_blk *a, uint64_t end, uint64_t n)
{
	struct timespec ts;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&a->lock);
	a->watch_end = end;
	a->watched = 0;
	while (a->watched < n)
		if (pthread_cond_timedwait(&a->cond, &a->lock, &ts) == ETIMEDOUT)
			break;
	ok = a->watched >= n;
	a->watch_end = 0;
	pthread_mutex_unlock(&a->lock);
	return ok;
}

/* The first offset where b differs from what a writer was told, or -1. */
static int64_t first_difference_from(struct blk *b, const struct ack_blk *a)
{
	uint8_t *x = malloc(MiB);
	int64_t at = -1;

	assert_non_null(x);
	assert_int_equal(blk_size(b), a->blk.size);
	for (uint64_t done = 0; done < a->blk.size && at < 0; done += MiB) {
		size_t n = (size_t)MIN(MiB, a->blk.size - done);

		assert_int_equal(blk_pread(b, x, n, done), 0);
		if (memcmp(x, a->expect + done, n) != 0)
			for (size_t i = 0; i < n && at < 0; i++)
				if (x[i] != a->expect[done + i])
					at = (int64_t)(done + i);
	}
	free(x);
	return at;
}

/*
 * Called from the engine thread.  Once a quarter of the bulk pass is on
 * the wire, it holds the engine (the writer is not held in BULK) until
 * the writer has written where the pass has been: below the chunks sent,
 * all of them claimed (bulk claims run in order from chunk 0) and so
 * cleared in the bitmap before their read.  In dirty mode those writes
 * must be resent; in active mode it waits for mirrored writes instead.
 * Deterministic however slow the machine: nothing depends on the writer
 * winning a race against the bulk pass.
 */
struct live_prog {
	struct ack_blk *ack;
	struct src_job **job;
	uint64_t chunk_size;
	bool active;
	bool waited, wait_ok;
	uint64_t acked_in_bulk; /* writes acknowledged before the wait ended */
};

static void live_prog_cb(const struct mig_stats *st, void *user)
{
	struct live_prog *p = user;

	if (st->state != MIG_BULK || st->bulk_done * 4 < st->total)
		return;
	/* Active: this runs on the engine's thread, which is the one that
	 * sends mirrored writes, so it must not wait for them: it looks at
	 * every report from a quarter of the bulk pass to its end. */
	if (p->active) {
		p->waited = true;
		p->wait_ok = p->wait_ok || st->mirror_writes >= 2;
		p->acked_in_bulk = ack_count(p->ack);
		return;
	}
	if (p->waited)
		return;
	p->waited = true;
	p->wait_ok = ack_wait_below(p->ack, st->bulk_done / p->chunk_size * p->chunk_size, 2);
	p->acked_in_bulk = ack_count(p->ack);
}

/*
 * A writer running through the whole migration, rate-limited so that there
 * is time for several passes.  What it must see: its writes land while the
 * migration runs and are carried (resent after a dirty pass, or mirrored in
 * active mode); every write acknowledged to it is on the destination;
 * once src_run() has returned 0 the source is frozen at the switch-over
 * (equal to the destination) and the writer's next write fails with
 * -ESHUTDOWN, after which nothing it writes is acknowledged.
 */
static void run_live_writer(enum mig_mode mode)
{
	static const struct extent layout[] = {
		{ 0, 6 * MiB, FILL_RANDOM },
		{ 10 * MiB, 6 * MiB, FILL_RANDOM },
	};
	const uint64_t nchunks = 16 * MiB / (64 * KiB);
	struct workload_spec ws;
	struct workload_stats wst;
	struct workload *w = NULL;
	struct live_prog p = { 0 };
	struct ack_blk *a;
	uint64_t t0, before, at_switchover, sent;
	int64_t at;
	struct sdev s;
	struct mig m;
	struct blk *d;

	sdev_open_mem(&s, "disk0", 16 * MiB);
	write_extents(s.base, layout, ARRAY_SIZE(layout), 5);
	a = ack_new(s.track);
	mig_init(&m);
	m.sp.chunk_size = 64 * KiB;
	/* Active: a bulk pass of 2 s, for the writer to write behind it
	 * while the progress reports look (they cannot wait). */
	m.sp.max_bandwidth = mode == MIG_MODE_ACTIVE ? 8 * MiB : 32 * MiB;
	/* Low enough that the writes of one pass usually call for another;
	 * each pass is shorter than the last, so it converges. */
	m.sp.max_downtime_ns = 20 * 1000000ull;
	m.sp.mode = mode;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(m.dst.dev[0].path, 16 * MiB, FILL_BYTE, 0);
	p.ack = a;
	p.job = &m.job;
	p.chunk_size = m.sp.chunk_size;
	p.active = mode == MIG_MODE_ACTIVE;
	m.progress = live_prog_cb;
	m.progress_user = &p;

	if (workload_parse("disk0,bs=4K,rate=256K,seed=11", &ws) != 0)
		fail_msg("workload: %s", err_msg());
	assert_int_equal(workload_start(&ws, &a->blk, &w), 0);
	/* The writer is going before the migration starts. */
	t0 = now_ns();
	while (ack_count(a) == 0) {
		if (now_ns() - t0 > 10 * 1000000000ull)
			fail_msg("the writer made no write in 10 s");
		sleep_ns(1000000);
	}
	before = ack_count(a);
	mig_run(&m);
	at_switchover = ack_count(a);
	assert_success(&m);
	sent = m.src_st.dev[0].data_chunks + m.src_st.dev[0].zero_chunks;
	print_message("live writer (%s): %" PRIu64 " passes, %" PRIu64 " writes during the "
		      "migration, %" PRIu64 " chunks resent, %" PRIu64 " mirrored writes\n",
		      mig_mode_name(mode), m.src_st.iterations, at_switchover - before,
		      sent - nchunks, m.src_st.mirror_writes);

	/* The writer wrote during the bulk pass, where the pass had been. */
	assert_true(p.waited);
	if (!p.wait_ok)
		fail_msg("fewer than 2 %s writes behind the bulk pass%s",
			 p.active ? "mirrored" : "acknowledged", p.active ? "" : " within 10 s");
	assert_true(p.acked_in_bulk > before);
	/* Every chunk went once, and what was written behind the bulk pass
	 * went again (dirty) or as the write itself (active). */
	assert_int_equal(m.dst_st.dev[0].data_chunks + m.dst_st.dev[0].zero_chunks, sent);
	assert_int_equal(m.dst_st.mirror_writes, m.src_st.mirror_writes);
	if (p.active) {
		assert_true(m.src_st.active);
		assert_true(m.src_st.mirror_writes >= 2);
		/* 4 KiB writes at 4 KiB offsets never span two chunks. */
		assert_int_equal(m.src_st.mirror_bytes, m.src_st.mirror_writes * 4 * KiB);
		assert_true(m.src_st.mirror_writes <= at_switchover);
	} else {
		assert_false(m.src_st.active);
		assert_int_equal(m.src_st.mirror_writes, 0);
		assert_true(sent > nchunks);
	}

	/* Switch-over: the source is fenced, and the writer's next write
	 * fails with -ESHUTDOWN; it stops there by itself. */
	assert_fenced(&s);
	t0 = now_ns();
	do {
		workload_get_stats(w, &wst);
		if (wst.stopped_by != 0)
			break;
		sleep_ns(1000000);
	} while (now_ns() - t0 < 10 * 1000000000ull);
	workload_stop(w, &wst);
	assert_int_equal(wst.stopped_by, -ESHUTDOWN);
	assert_int_equal(a->first_err, -ESHUTDOWN);
	assert_int_equal(a->refused, 1);
	assert_int_equal(a->acked_after_refused, 0);
	/* Nothing acknowledged once src_run() had returned. */
	assert_int_equal(a->acked, at_switchover);
	assert_int_equal(wst.writes, a->acked);

	/* Every acknowledged write is on the destination, which equals the
	 * source as the switch-over left it. */
	d = open_file_ro(m.dst.dev[0].path);
	at = first_difference_from(d, a);
	if (at >= 0)
		fail_msg("destination differs from the acknowledged writes at offset %" PRId64, at);
	blk_close(d);
	at = first_difference_from(s.track, a);
	if (at >= 0)
		fail_msg("source differs from the acknowledged writes at offset %" PRId64, at);
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	ack_free(a);
	sdev_close(&s);
}

static void test_live_writer(void **state)
{
	(void)state;
	run_live_writer(MIG_MODE_DIRTY);
}

static void test_live_writer_active(void **state)
{
	(void)state;
	run_live_writer(MIG_MODE_ACTIVE);
}

/* ---- (c2) writes faster than the link ---------------------------------------------- */

static void setup_fault_run(struct mig *m, struct sdev *s, const char *name);
/*
 * A thread that cancels the job once when() says so (r = -1 if the
 * migration ended, or 20 s passed, first), after 'delay_ns' more.  Start it
 * with start_canceller(); mig_finish() joins it.
 */
struct cancel_thread {
	pthread_t th;
	struct src_job *job;
	bool (*when)(const struct mig_stats *st);
	uint64_t delay_ns;
	int r;
	struct xport *x;    /* if set: its rate limit when the cancel fires */
	uint64_t rate_seen; /* that limit */
};

/* Poll the job's figures until when() says so (true), or until the
 * migration ends or limit_ns has passed (false). */
static bool await_stats(struct src_job *job, bool (*when)(const struct mig_stats *st),
			uint64_t limit_ns)
{
	uint64_t t0 = now_ns();

	for (;;) {
		struct mig_stats st;

		src_stats(job, &st);
		if (when(&st))
			return true;
		if (st.state >= MIG_COMPLETED || now_ns() - t0 > limit_ns)
			return false;
		sleep_ns(1000000);
	}
}

/* The bulk pass is on the wire (the job's total is known from the
 * start): the source then waits for the destination's SYNCED. */
static bool bulk_sent(const struct mig_stats *st)
{
	return st->bulk_done == st->total;
}

static void *canceller_main(void *arg)
{
	struct cancel_thread *c = arg;

	if (!await_stats(c->job, c->when, 20 * 1000000000ull)) {
		c->r = -1;
		return NULL;
	}
	sleep_ns(c->delay_ns);
	if (c->x)
		c->rate_seen = xport_get_rate(c->x);
	src_cancel(c->job);
	return NULL;
}

static void start_canceller(struct mig *m, struct cancel_thread *c,
			    bool (*when)(const struct mig_stats *st), uint64_t delay_ns)
{
	*c = (struct cancel_thread){ .job = m->job, .when = when, .delay_ns = delay_ns, .x = c->x };
	assert_int_equal(pthread_create(&c->th, NULL, canceller_main, c), 0);
	m->user_thread = &c->th;
}

/*
 * Two writers dirty 4 KiB random blocks at 16 MB/s together, over a link of
 * 8 MB/s: dirty passes cannot converge.  In active and auto mode the
 * migration completes anyway, writes were mirrored, and the destination
 * equals the frozen source.
 */
static void run_outpaced(enum mig_mode mode, struct mig_stats *out)
{
	static const struct extent layout[] = { { 0, 8 * MiB, FILL_RANDOM } };
	struct workload_spec ws[2];
	struct workload_stats wst;
	struct workload *w[2] = { NULL, NULL };
	struct sdev s;
	struct mig m;

	sdev_open_mem(&s, "disk0", 8 * MiB);
	write_extents(s.base, layout, ARRAY_SIZE(layout), 9);
	mig_init(&m);
	m.sp.chunk_size = 64 * KiB;
	m.sp.max_bandwidth = 8 * MiB;
	m.sp.mode = mode;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(m.dst.dev[0].path, 8 * MiB, FILL_BYTE, 0);
	if (workload_parse("disk0,bs=4K,rate=8M,seed=21", &ws[0]) != 0 ||
	    workload_parse("disk0,bs=4K,rate=8M,seed=22", &ws[1]) != 0)
		fail_msg("workload: %s", err_msg());
	for (int i = 0; i < 2; i++)
		assert_int_equal(workload_start(&ws[i], s.track, &w[i]), 0);
	mig_run(&m);
	assert_success(&m);
	assert_fenced(&s);
	for (int i = 0; i < 2; i++) {
		workload_stop(w[i], &wst);
		assert_true(wst.stopped_by == 0 || wst.stopped_by == -ESHUTDOWN);
		assert_true(wst.writes > 0);
	}
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_true(m.src_st.active);
	assert_true(m.src_st.mirror_writes > 0);
	/* What the destination applied is what the source mirrored. */
	assert_int_equal(m.dst_st.mirror_writes, m.src_st.mirror_writes);
	*out = m.src_st;
	sdev_close(&s);
}

static void test_active_outpaced(void **state)
{
	struct mig_stats st;

	(void)state;
	run_outpaced(MIG_MODE_ACTIVE, &st);
	assert_int_equal(st.mode, MIG_MODE_ACTIVE);
	assert_string_equal(st.mode_reason, "active mode asked for");
	print_message("active: %" PRIu64 " passes, %" PRIu64 " switch-over attempts, %" PRIu64
		      " mirrored writes, %.1f s\n",
		      st.iterations, st.switchovers, st.mirror_writes, (double)st.total_ns / 1e9);
}

static void test_auto_outpaced(void **state)
{
	struct mig_stats st;

	(void)state;
	run_outpaced(MIG_MODE_AUTO, &st);
	assert_int_equal(st.mode, MIG_MODE_AUTO);
	assert_true(st.active_since >= 1); /* after the bulk pass at the earliest */
	assert_true(strlen(st.mode_reason) > 0);
	print_message("auto: mirroring since pass %" PRIu64 " (%s); %" PRIu64 " passes, %" PRIu64
		      " switch-over attempts, %" PRIu64 " mirrored writes, %.1f s\n",
		      st.active_since, st.mode_reason, st.iterations, st.switchovers,
		      st.mirror_writes, (double)st.total_ns / 1e9);
}

/* Cancel once writes are being mirrored: the writers carry on, the source
 * keeps every write, nothing hangs. */
static bool mirroring_20(const struct mig_stats *st)
{
	return st->mirror_writes >= 20;
}

static void test_active_cancel(void **state)
{
	struct cancel_thread c = { 0 };
	struct workload_spec ws;
	struct workload_stats wst;
	struct workload *w = NULL;
	uint64_t before;
	struct sdev s;
	struct mig m;

	(void)state;
	setup_fault_run(&m, &s, "disk0");
	m.sp.chunk_size = 64 * KiB;
	m.sp.max_bandwidth = 4 * MiB;
	m.sp.mode = MIG_MODE_ACTIVE;
	if (workload_parse("disk0,bs=4K,rate=8M,seed=23", &ws) != 0)
		fail_msg("workload: %s", err_msg());
	assert_int_equal(workload_start(&ws, s.track, &w), 0);
	mig_start(&m);
	start_canceller(&m, &c, mirroring_20, 0);
	mig_finish(&m);
	assert_int_equal(c.r, 0);
	assert_int_equal(m.src_r, -ECANCELED);
	assert_int_equal(m.src_st.state, MIG_CANCELLED);
	assert_int_equal(mark_check(m.dst.dev[0].path), 1);
	/* The writer goes on, unmirrored, at full speed. */
	before = track_writes(s.track);
	while (track_writes(s.track) < before + 100)
		sleep_ns(1000000);
	workload_stop(w, &wst);
	assert_int_equal(wst.stopped_by, 0);
	assert_writable(&s);
	sdev_close(&s);
}

/* An active migration of a 16 MiB device capped at 8 MB/s, with a 4 KiB
 * writer at 4 MB/s running on it (seed: its offsets). */
static struct workload *active_fault_run(struct mig *m, struct sdev *s, const char *spec)
{
	struct workload_spec ws;
	struct workload *w = NULL;

	setup_fault_run(m, s, "disk0");
	m->sp.chunk_size = 64 * KiB;
	m->sp.max_bandwidth = 8 * MiB;
	m->sp.mode = MIG_MODE_ACTIVE;
	if (workload_parse(spec, &ws) != 0)
		fail_msg("workload: %s", err_msg());
	assert_int_equal(workload_start(&ws, s->track, &w), 0);
	return w;
}

/* After a failed active migration: the destination is still marked
 * incomplete, and the writer's writes all succeeded on the source, which
 * serves on. */
static void assert_writer_unharmed(struct mig *m, struct sdev *s, struct workload *w)
{
	struct workload_stats wst;

	assert_int_equal(m->src_st.state, MIG_FAILED);
	assert_int_equal(mark_check(m->dst.dev[0].path), 1);
	workload_stop(w, &wst);
	assert_int_equal(wst.stopped_by, 0);
	assert_writable(s);
	sdev_close(s);
}

/*
 * The destination's disk stops answering mirrored writes (they hang until
 * the source has given up).  The destination acknowledges them as long as
 * its writers' queues have room, then stops reading: the source gives up
 * after its timeout instead of holding the writer (or the final pause)
 * for ever; the writer's writes all succeed locally.
 */
static void test_active_silent_destination(void **state)
{
	struct workload *w;
	uint64_t t0;
	struct sdev s;
	struct mig m;

	(void)state;
	w = active_fault_run(&m, &s, "disk0,bs=4K,rate=4M,seed=24");
	m.dst.dev[0].hold_below = 64 * KiB;
	atomic_store(&writes_held, true);
	mig_start(&m);
	xport_set_timeout(m.x, 1500);
	t0 = now_ns();
	mig_finish(&m);
	assert_int_equal(m.src_r, -ETIMEDOUT);
	print_message("silent destination: %s (after %.1f s; mirroring suspended %" PRIu64
		      " times)\n",
		      m.src_msg, (double)(now_ns() - t0) / 1e9, m.src_st.mirror_suspensions);
	/* The writer waited for a WACK at most its patience: the write was
	 * marked dirty, and mirroring suspended, long before the idle
	 * timeout's verdict on the link. */
	assert_true(m.src_st.mirror_suspensions > 0);
	assert_writer_unharmed(&m, &s, w);
}

/*
 * The destination acknowledges a mirrored write before its disk has it;
 * when the disk then refuses it, the migration fails with that message on
 * both sides, before any switch-over: the destination stays marked
 * incomplete, the source serves on, and the writer's writes all succeed
 * there.
 */
static void test_active_destination_write_error(void **state)
{
	struct workload *w;
	struct sdev s;
	struct mig m;

	(void)state;
	w = active_fault_run(&m, &s, "disk0,bs=4K,rate=4M,seed=25");
	m.dst.dev[0].fail_below = 64 * KiB;
	mig_run(&m);
	print_message("mirrored write refused: %s\n", m.src_msg);
	assert_int_equal(m.dst_r, -EIO);
	assert_contains("destination", m.dst_msg, "mirrored write to disk0 at offset ");
	assert_contains("destination", m.dst_msg, "injected failure of a short write");
	assert_int_equal(m.src_r, -EIO);
	assert_contains("source", m.src_msg, "destination failed");
	assert_contains("source", m.src_msg, "mirrored write to disk0");
	assert_true(m.src_st.mirror_writes > 0);
	assert_writer_unharmed(&m, &s, w);
}

/*
 * Holds the destination's flushes once the bulk pass is on the wire (the
 * pass end's sync among them) until the source has mirrored 'writes' more
 * writes than when the first one began to wait, or 30 s have passed (then
 * r = -1), and lets them go: to fail, with 'fail'.  mig_finish() joins it.
 */
struct flush_holder {
	pthread_t th;
	struct src_job *job;
	uint64_t writes;
	bool fail;
	uint64_t before, after; /* mirrored writes when a flush first waited, when let go */
	unsigned suspensions;	/* mirroring suspended meanwhile */
	int r;
};

static void *flush_holder_main(void *arg)
{
	struct flush_holder *h = arg;
	uint64_t t0 = now_ns();
	struct mig_stats st;

	h->r = -1;
	if (!await_stats(h->job, bulk_sent, 30 * 1000000000ull))
		return NULL;
	atomic_store(&flush_held, true);
	while (!atomic_load(&flushes_waiting) && now_ns() - t0 < 30 * 1000000000ull)
		sleep_ns(1000000);
	src_stats(h->job, &st);
	h->before = st.mirror_writes;
	h->suspensions = (unsigned)st.mirror_suspensions;
	while (atomic_load(&flushes_waiting)) {
		src_stats(h->job, &st);
		if (st.mirror_writes >= h->before + h->writes) {
			h->r = 0;
			break;
		}
		if (st.state >= MIG_COMPLETED || now_ns() - t0 > 30 * 1000000000ull)
			break;
		sleep_ns(1000000);
	}
	h->after = st.mirror_writes;
	h->suspensions = (unsigned)st.mirror_suspensions - h->suspensions;
	atomic_store(&flush_failing, h->fail);
	atomic_store(&flush_held, false);
	return NULL;
}

/* An active fault run (spec: its writer) with the destination's flushes
 * held by h from the end of the bulk pass on, to its end. */
static struct workload *run_flush_held(struct mig *m, struct sdev *s, const char *spec,
				       struct flush_holder *h, uint64_t writes, bool fail)
{
	struct workload *w = active_fault_run(m, s, spec);

	m->dst.dev[0].hold_flush = true;
	mig_start(m);
	*h = (struct flush_holder){ .job = m->job, .writes = writes, .fail = fail };
	assert_int_equal(pthread_create(&h->th, NULL, flush_holder_main, h), 0);
	m->user_thread = &h->th;
	mig_finish(m);
	return w;
}

/*
 * While the destination syncs a pass (its flush held), mirrored writes are
 * still applied and acknowledged: the writer goes on through 3000 writes,
 * more than its patience (2 s at 4 MB/s) would allow if the pass end held
 * them, and mirroring is never suspended.  Let go, the pass end answers
 * and the migration completes with the image identical.
 */
static void test_active_write_during_pass_end(void **state)
{
	struct flush_holder h;
	struct workload_stats wst;
	struct workload *w;
	struct sdev s;
	struct mig m;

	(void)state;
	w = run_flush_held(&m, &s, "disk0,bs=4K,rate=4M,seed=26", &h, 3000, false);
	print_message("writes acknowledged while a flush was held: %" PRIu64
		      " (suspensions meanwhile: %u)\n",
		      h.after - h.before, h.suspensions);
	assert_int_equal(h.r, 0);
	assert_int_equal(h.suspensions, 0);
	assert_success(&m);
	assert_fenced(&s);
	workload_stop(w, &wst);
	assert_true(wst.stopped_by == 0 || wst.stopped_by == -ESHUTDOWN);
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_int_equal(m.dst_st.mirror_writes, m.src_st.mirror_writes);
	sdev_close(&s);
}

/*
 * The pass end's sync fails while mirrored writes go on: the migration
 * fails with that message on both sides (the destination stops reading a
 * source that waits for SYNCED, instead of leaving it to its timeout), the
 * destination stays marked, and the writer's writes all succeed on the
 * source.
 */
static void test_active_pass_end_failure(void **state)
{
	struct flush_holder h;
	struct workload *w;
	struct sdev s;
	struct mig m;

	(void)state;
	w = run_flush_held(&m, &s, "disk0,bs=4K,rate=4M,seed=27", &h, 200, true);
	print_message("pass end failed: %s\n", m.src_msg);
	assert_int_equal(h.r, 0);
	assert_int_equal(m.dst_r, -EIO);
	assert_contains("destination", m.dst_msg, "sync disk0: ");
	assert_contains("destination", m.dst_msg, "injected failure of a flush");
	assert_int_equal(m.src_r, -EIO);
	assert_contains("source", m.src_msg, "destination failed");
	assert_contains("source", m.src_msg, "injected failure of a flush");
	assert_writer_unharmed(&m, &s, w);
}

/* Holds the destination's flushes from the start of the final state on:
 * the only one after that is the final pass end's sync. */
static void hold_final_flush(const struct mig_stats *st, void *user)
{
	(void)user;
	if (st->state == MIG_FINAL)
		atomic_store(&flush_held, true);
}

/* Bytes that reached the destination: read from its socket, or waiting in it. */
static uint64_t dst_arrived(struct mig *m)
{
	struct xport *x = atomic_load(&m->dx);
	int unread = 0;

	if (ioctl(xport_fd(x), FIONREAD, &unread) < 0 || unread < 0)
		unread = 0;
	return xport_rx_bytes(x) + (uint64_t)unread;
}

/* While the final pass end's sync is held: once everything the source has
 * sent has reached the destination, and stayed so for 200 ms, how much
 * that is (held); then the sync goes on.  r = -1 if it never was held. */
struct complete_watch {
	pthread_t th;
	struct mig *m;
	uint64_t held;
	int r;
};

static void *complete_watch_main(void *arg)
{
	struct complete_watch *c = arg;
	uint64_t t0 = now_ns(), since = 0;

	c->r = -1;
	while (!atomic_load(&flushes_waiting) && now_ns() - t0 < 30 * 1000000000ull)
		sleep_ns(1000000);
	if (atomic_load(&flushes_waiting)) {
		c->r = 0;
		for (t0 = now_ns(); now_ns() - t0 < 10 * 1000000000ull; sleep_ns(1000000)) {
			uint64_t sent = xport_tx_bytes(c->m->x), got = dst_arrived(c->m);

			if (got != sent || got != c->held) {
				c->held = got;
				since = now_ns();
			} else if (now_ns() - since > 200 * 1000000ull) {
				break;
			}
		}
	}
	atomic_store(&flush_held, false);
	return NULL;
}

/*
 * The digests (COMPLETE) follow the final pass on the wire without waiting
 * for its SYNCED, so the switch-over waits for one round trip, not two:
 * while the destination's sync of the final pass is held, the source has
 * sent everything but COMMIT.  Let go, the destination answers SYNCED and
 * ACK, and the migration completes.  (When the source waited for SYNCED,
 * COMPLETE came after the hold, and the check below fails.)
 */
static void test_digests_follow_final_pass(void **state)
{
	struct complete_watch c;
	struct sdev s;
	struct mig m;
	uint64_t after;

	(void)state;
	setup_fault_run(&m, &s, "disk0");
	m.dst.dev[0].hold_flush = true;
	m.progress = hold_final_flush;
	mig_start(&m);
	c = (struct complete_watch){ .m = &m };
	assert_int_equal(pthread_create(&c.th, NULL, complete_watch_main, &c), 0);
	m.user_thread = &c.th;
	mig_finish(&m);
	after = m.src_tx - c.held;
	print_message("sent after the final sync was let go: %" PRIu64 " bytes (COMMIT: %u)\n",
		      after, NATIVE_FRAME_HDR + 4);
	assert_int_equal(c.r, 0);
	assert_success(&m);
	assert_int_equal(after, NATIVE_FRAME_HDR + 4);
	assert_same(&s, m.dst.dev[0].path);
	sdev_close(&s);
}

/* ---- (d) source read errors ------------------------------------------------------- */

static void setup_fault_run(struct mig *m, struct sdev *s, const char *name)
{
	static const struct extent layout[] = { { 0, 16 * MiB, FILL_RANDOM } };

	sdev_open_mem(s, name, 16 * MiB);
	write_extents(s->base, layout, 1, 6);
	mig_init(m);
	m->sp.chunk_size = 256 * KiB;
	m->src[0] = s;
	m->nsrc = 1;
	m->dst.n = 1;
	m->dst.dev[0].name = name;
	tmp_new(m->dst.dev[0].path, PATH_CAP, "dst");
}

static void assert_failed_untouched(struct mig *m, struct sdev *s, uint64_t writes_before)
{
	assert_int_equal(m->src_st.state, MIG_FAILED);
	assert_true(m->dst_r < 0);
	assert_int_equal(m->dst_st.state, MIG_FAILED);
	/* The destination image is left marked incomplete. */
	assert_int_equal(mark_check(m->dst.dev[0].path), 1);
	/* The source carries on: not paused, not fenced, no longer tracked. */
	assert_int_equal(track_writes(s->track), writes_before);
	assert_writable(s);
	assert_int_equal(track_writes(s->track), writes_before + 1);
}

static void test_source_read_error(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	setup_fault_run(&m, &s, "faulty-disk");
	blk_mem_inject(s.base, BLK_MEM_READ, 5, EIO);
	mig_run(&m);

	assert_int_equal(m.src_r, -EIO);
	assert_contains("source", m.src_msg, "faulty-disk");
	assert_contains("source", m.src_msg, "injected read failure");
	/* No send failed, so the source ended the pass and said why. */
	assert_int_equal(m.dst_r, -EIO);
	assert_contains("destination", m.dst_msg, "source aborted");
	assert_contains("destination", m.dst_msg, "read faulty-disk at offset");
	assert_failed_untouched(&m, &s, 0);
	sdev_close(&s);
}

/* The same in the final pass, with the writers paused: they must be let
 * go again. */
static void test_source_read_error_final(void **state)
{
	struct sdev s;
	struct mig m;
	struct prog p = { 0 };

	(void)state;
	setup_fault_run(&m, &s, "faulty-disk");
	m.sp.max_bandwidth = 32 * MiB; /* a bulk pass long enough for progress calls */
	p.track = s.track;
	p.mem = s.base;
	p.write_in_bulk = true; /* leaves chunk 0 for the final pass */
	p.fault_in_final = true;
	m.progress = prog_cb;
	m.progress_user = &p;
	mig_run(&m);

	assert_true(p.wrote);
	assert_true(p.faulted);
	assert_int_equal(m.src_r, -EIO);
	assert_contains("source", m.src_msg, "faulty-disk");
	assert_contains("source", m.src_msg, "injected read failure");
	/* No send failed, so the source ended the pass and said why. */
	assert_int_equal(m.dst_r, -EIO);
	assert_contains("destination", m.dst_msg, "source aborted");
	assert_contains("destination", m.dst_msg, "read faulty-disk at offset");
	assert_int_equal(p.last, MIG_FAILED);
	/* The limit lifted for the final pass is back with the writers. */
	assert_int_equal(m.rate_after, 32 * MiB);
	assert_failed_untouched(&m, &s, 1);
	sdev_close(&s);
}

/* ---- (e) destination write error --------------------------------------------------- */

static void test_destination_write_error(void **state)
{
	static const struct extent layout[] = { { 0, 16 * MiB, FILL_RANDOM } };
	struct sdev s;
	struct mig m;

	(void)state;
	sdev_open_mem(&s, "disk0", 16 * MiB);
	write_extents(s.base, layout, 1, 7);
	mig_init(&m);
	m.sp.chunk_size = 256 * KiB;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	m.dst.dev[0].mem = true;
	m.dst.dev[0].write_fail_nth = 3;
	m.dst.dev[0].write_fail_err = ENOSPC;
	mig_run(&m);

	assert_int_equal(m.dst_r, -ENOSPC);
	/* Records arrive in completion order: which offset is the third
	 * write is not fixed. */
	assert_contains("destination", m.dst_msg, "write disk0 at offset ");
	assert_contains("destination", m.dst_msg, "injected write failure");
	assert_int_equal(m.src_r, -ENOSPC);
	assert_contains("source", m.src_msg, "destination failed");
	assert_contains("source", m.src_msg, "injected write failure");
	assert_int_equal(m.src_st.state, MIG_FAILED);
	assert_writable(&s);
	sdev_close(&s);
}

/*
 * A checkpoint's sync fails (40 MiB: one checkpoint within the pass, whose
 * sync runs beside the engine): the migration fails with its message, at
 * the pass end at the latest, on both sides.
 */
static void test_destination_checkpoint_sync_error(void **state)
{
	static const struct extent layout[] = { { 0, 40 * MiB, FILL_RANDOM } };
	struct sdev s;
	struct mig m;

	(void)state;
	sdev_open_mem(&s, "disk0", 40 * MiB);
	write_extents(s.base, layout, 1, 9);
	mig_init(&m);
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	m.dst.dev[0].mem = true;
	m.dst.dev[0].flush_fail_nth = 1;
	mig_run(&m);

	assert_int_equal(m.dst_r, -EIO);
	assert_contains("destination", m.dst_msg, "checkpoint: sync disk0: ");
	assert_contains("destination", m.dst_msg, "injected flush failure");
	assert_int_equal(m.src_r, -EIO);
	assert_contains("source", m.src_msg, "injected flush failure");
	assert_int_equal(m.src_st.state, MIG_FAILED);
	assert_writable(&s);
	sdev_close(&s);
}

/* ---- (f) cancel ------------------------------------------------------------------- */

/* Cancel once the bulk pass is 2 MiB in (the job is rate-limited, so it
 * is still going). */
static bool bulk_2m_in(const struct mig_stats *st)
{
	return st->state == MIG_BULK && st->bulk_done >= 2 * MiB;
}

static void test_cancel_from_thread(void **state)
{
	struct cancel_thread c = { 0 };
	struct sdev s;
	struct mig m;

	(void)state;
	setup_fault_run(&m, &s, "disk0");
	m.sp.max_bandwidth = 32 * MiB;
	mig_start(&m);
	start_canceller(&m, &c, bulk_2m_in, 0);
	mig_finish(&m);
	assert_int_equal(c.r, 0);

	assert_int_equal(m.src_r, -ECANCELED);
	assert_contains("source", m.src_msg, "cancel");
	assert_int_equal(m.src_st.state, MIG_CANCELLED);
	assert_true(m.dst_r < 0);
	/* At a record boundary the source says so (ABORT); inside a send
	 * it can only close the connection. */
	if (!strstr(m.dst_msg, "source aborted") && !strstr(m.dst_msg, "connection closed"))
		fail_msg("destination message '%s' is neither 'source aborted' nor "
			 "'connection closed'",
			 m.dst_msg);
	assert_int_equal(mark_check(m.dst.dev[0].path), 1);
	assert_int_equal(track_writes(s.track), 0);
	assert_writable(&s);
	sdev_close(&s);
}

/*
 * A destination that never answers (its flush is held until the source
 * returns), with no idle timeout: only the cancel, 20 ms after the bulk
 * pass is on the wire, can end the wait for SYNCED, and it must wake the
 * engine itself (if it did not, this test would hang until its time
 * limit).
 */
static void test_cancel_silent_no_timeout(void **state)
{
	struct cancel_thread c = { 0 };
	struct sdev s;
	struct mig m;

	(void)state;
	setup_fault_run(&m, &s, "disk0");
	m.dst.dev[0].hold_flush = true;
	atomic_store(&flush_held, true);
	mig_start(&m);
	xport_set_timeout(m.x, 0);
	start_canceller(&m, &c, bulk_sent, 20 * 1000000);
	mig_finish(&m);
	assert_int_equal(c.r, 0);
	assert_int_equal(m.src_r, -ECANCELED);
	assert_int_equal(m.src_st.state, MIG_CANCELLED);
	assert_int_equal(m.src_st.bulk_done, m.src_st.total);
	assert_int_equal(mark_check(m.dst.dev[0].path), 1);
	assert_writable(&s);
	sdev_close(&s);
}

static bool abandoned_once(const struct mig_stats *st)
{
	return st->abandoned >= 1;
}

/*
 * The destination stops answering in the final pass (its flushes held from
 * MIG_FINAL on): the watchdog lets the writers go once the pause overruns,
 * and the rate limit lifted for the final pass is back at that moment,
 * while the engine still waits for the destination (here until cancelled).
 */
static void test_abandoned_final_rate(void **state)
{
	struct cancel_thread c = { 0 };
	struct prog p = { 0 };
	struct sdev s;
	struct mig m;

	(void)state;
	setup_fault_run(&m, &s, "disk0");
	m.sp.max_bandwidth = 32 * MiB;
	m.sp.max_downtime_ns = 50 * 1000000ull;
	m.dst.dev[0].hold_flush = true;
	p.hold_in_final = true;
	m.progress = prog_cb;
	m.progress_user = &p;
	mig_start(&m);
	xport_set_timeout(m.x, 0);
	c.x = m.x;
	start_canceller(&m, &c, abandoned_once, 20 * 1000000);
	mig_finish(&m);
	assert_int_equal(c.r, 0);
	assert_int_equal(c.rate_seen, 32 * MiB);
	assert_int_equal(m.src_r, -ECANCELED);
	assert_true(m.src_st.abandoned >= 1);
	assert_writable(&s);
	sdev_close(&s);
}

/* Cancelled between records (from the progress callback, on the engine
 * thread): the destination is told with ABORT. */
static void test_cancel_at_boundary(void **state)
{
	struct sdev s;
	struct mig m;
	struct prog p = { 0 };

	(void)state;
	setup_fault_run(&m, &s, "disk0");
	m.sp.max_bandwidth = 32 * MiB;
	p.cancel_in_bulk = true;
	p.job = &m.job;
	m.progress = prog_cb;
	m.progress_user = &p;
	mig_run(&m);

	assert_true(p.cancelled);
	assert_int_equal(m.src_r, -ECANCELED);
	assert_contains("source", m.src_msg, "migration cancelled");
	assert_int_equal(m.src_st.state, MIG_CANCELLED);
	assert_int_equal(p.last, MIG_CANCELLED);
	assert_int_equal(m.dst_r, -ECANCELED);
	assert_contains("destination", m.dst_msg, "source aborted");
	assert_contains("destination", m.dst_msg, "cancelled by the source");
	assert_int_equal(m.dst_st.state, MIG_CANCELLED);
	assert_int_equal(mark_check(m.dst.dev[0].path), 1);
	assert_writable(&s);
	sdev_close(&s);
}

/* ---- (g) shared base ---------------------------------------------------------------- */

static void test_shared_base(void **state)
{
	/* 1 MiB chunks; allocated: 2, 10, 12 and 13. */
	static const struct extent layout[] = {
		{ 2 * MiB, MiB, FILL_RANDOM },
		{ 10 * MiB + 4096, 8192, FILL_RANDOM },
		{ 13 * MiB - 4096, 8192, FILL_RANDOM },
	};
	static const bool sent[16] = { [2] = true, [10] = true, [12] = true, [13] = true };
	char base_path[PATH_CAP];
	struct blk *base, *dst;
	uint64_t pnum;
	bool alloc;
	struct sdev s;
	struct mig m;

	(void)state;
	sdev_open_file(&s, "disk0", 16 * MiB);
	write_extents(s.base, layout, ARRAY_SIZE(layout), 8);
	assert_int_equal(blk_block_status(s.base, 0, 16 * MiB, &pnum, &alloc), 0);
	if (alloc) {
		print_message("file system under %s reports no holes\n", tmp_dir());
		sdev_close(&s);
		skip();
	}
	mig_init(&m);
	m.sp.shared_base = true;
	m.dst.allow_shared_base = true;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	/* Both hosts hold the same base; the destination starts as a copy. */
	tmp_new(base_path, sizeof(base_path), "base");
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(base_path, 16 * MiB, FILL_RANDOM, 99);
	prefill_file(m.dst.dev[0].path, 16 * MiB, FILL_RANDOM, 99);
	mig_run(&m);

	assert_success(&m);
	assert_int_equal(m.src_st.dev[0].skipped, 12);
	assert_int_equal(m.src_st.dev[0].data_chunks, 4);
	assert_int_equal(m.src_st.dev[0].zero_chunks, 0);
	assert_int_equal(m.dst_st.dev[0].data_chunks, 4);
	assert_int_equal(m.dst_st.dev[0].zero_chunks, 0);
	assert_int_equal(m.src_st.data_bytes, 4 * MiB);
	assert_true(m.src_st.transferred < 5 * MiB);

	dst = open_file_ro(m.dst.dev[0].path);
	base = open_file_ro(base_path);
	for (unsigned c = 0; c < 16; c++) {
		int64_t at = first_difference(sent[c] ? s.track : base, dst, c * MiB, MiB);

		if (at >= 0)
			fail_msg("chunk %u: destination differs from the %s at offset %" PRId64, c,
				 sent[c] ? "source" : "base", at);
	}
	blk_close(dst);
	blk_close(base);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	sdev_close(&s);
}

/* A destination that was not told to expect a shared base refuses one
 * before touching its image. */
static void test_shared_base_refused(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	sdev_open_mem(&s, "disk0", MiB);
	mig_init(&m);
	m.sp.shared_base = true;
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(m.dst.dev[0].path, MiB, FILL_BYTE, 0);
	mig_run(&m);

	assert_int_equal(m.dst_r, -EPERM);
	assert_contains("destination", m.dst_msg, "shared-base");
	assert_int_equal(m.src_r, -EPERM);
	assert_contains("source", m.src_msg, "destination failed");
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_writable(&s);
	sdev_close(&s);
}

/* ---- (h) zero blocks ----------------------------------------------------------------- */

static const struct extent zero_layout[] = {
	{ 0, 6 * MiB, FILL_RANDOM },	    /* chunks 0-5 */
	{ 10 * MiB, 2 * MiB, FILL_ZEROS },  /* chunks 10-11: written zeros */
	{ 12 * MiB, 4 * MiB, FILL_RANDOM }, /* chunks 12-15; 6-9 are holes */
};

static void setup_zero_run(struct mig *m, struct sdev *s)
{
	sdev_open_mem(s, "disk0", 16 * MiB);
	write_extents(s->base, zero_layout, ARRAY_SIZE(zero_layout), 9);
	mig_init(m);
	m->src[0] = s;
	m->nsrc = 1;
	m->dst.n = 1;
	m->dst.dev[0].name = "disk0";
	tmp_new(m->dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(m->dst.dev[0].path, 16 * MiB, FILL_BYTE, 0);
}

static void test_zero_blocks(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	setup_zero_run(&m, &s);
	m.sp.zero_blocks = true;
	mig_run(&m);

	assert_success(&m);
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(m.src_st.dev[0].zero_chunks, 6);
	assert_int_equal(m.src_st.dev[0].data_chunks, 10);
	assert_int_equal(m.dst_st.dev[0].zero_chunks, 6);
	assert_int_equal(m.dst_st.dev[0].data_chunks, 10);
	assert_int_equal(m.src_st.data_bytes, 10 * MiB);
	assert_true(m.src_st.transferred < 11 * MiB);
	sdev_close(&s);
}

/* Without ZERO_BLOCKS the zero chunks travel as data, and land right. */
static void test_no_zero_blocks(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	setup_zero_run(&m, &s);
	mig_run(&m);

	assert_success(&m);
	assert_same(&s, m.dst.dev[0].path);
	assert_int_equal(m.src_st.data_bytes, 16 * MiB);
	assert_true(m.src_st.transferred > 16 * MiB);
	assert_int_equal(m.dst_st.dev[0].zero_chunks, 0);
	assert_int_equal(m.dst_st.dev[0].data_chunks, 16);
	sdev_close(&s);
}

/*
 * Regression (fixed): migrate.h documents data_chunks/zero_chunks as "DATA/ZERO records
 * sent/applied", but without ZERO_BLOCKS the source counts a zero chunk it
 * sends as a DATA record under zero_chunks (account_fn() looks at the read
 * result, not at the record kind), so the two ends' figures disagree.
 */
static void test_no_zero_blocks_stats_agree(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	setup_zero_run(&m, &s);
	mig_run(&m);
	assert_success(&m);
	assert_int_equal(m.src_st.dev[0].zero_chunks, m.dst_st.dev[0].zero_chunks);
	assert_int_equal(m.src_st.dev[0].data_chunks, m.dst_st.dev[0].data_chunks);
	sdev_close(&s);
}

/* ---- handshake failures ------------------------------------------------------------------ */

static void test_size_mismatch(void **state)
{
	struct sdev s;
	struct mig m;

	(void)state;
	sdev_open_mem(&s, "disk0", 2 * MiB);
	mig_init(&m);
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	tmp_new(m.dst.dev[0].path, PATH_CAP, "dst");
	prefill_file(m.dst.dev[0].path, MiB, FILL_BYTE, 0); /* opened as is */
	mig_run(&m);

	assert_int_equal(m.dst_r, -EINVAL);
	assert_contains("destination", m.dst_msg, "device disk0: size mismatch");
	assert_int_equal(m.src_r, -EINVAL);
	assert_contains("source", m.src_msg, "destination failed");
	assert_contains("source", m.src_msg, "size mismatch");
	/* Refused before anything was touched. */
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_writable(&s);
	sdev_close(&s);
}

static void test_unknown_device(void **state)
{
	static const char *const expect[] = { "disk0", "disk9" };
	struct sdev s;
	struct mig m;

	(void)state;
	/* The callback does not know the device. */
	sdev_open_mem(&s, "disk0", MiB);
	mig_init(&m);
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 0;
	mig_run(&m);
	assert_int_equal(m.dst_r, -ENOENT);
	assert_contains("destination", m.dst_msg, "no destination device 'disk0'");
	assert_int_equal(m.src_r, -ENOENT);
	assert_contains("source", m.src_msg, "destination failed");
	assert_int_equal(m.src_st.state, MIG_FAILED);

	/* The destination expects a device the source does not send. */
	mig_init(&m);
	m.src[0] = &s;
	m.nsrc = 1;
	m.dst.n = 1;
	m.dst.dev[0].name = "disk0";
	m.dst.dev[0].mem = true;
	m.dst.expect = expect;
	m.dst.nexpect = 2;
	mig_run(&m);
	assert_int_equal(m.dst_r, -ENOENT);
	assert_contains("destination", m.dst_msg, "device disk9 is not in the migration");
	assert_int_equal(m.src_r, -ENOENT);
	assert_contains("source", m.src_msg, "disk9");
	assert_writable(&s);
	sdev_close(&s);
}

/* ---- QEMU-format destination -------------------------------------------------------- */

/*
 * Crafted QEMU 7.2 streams (QEMU-STREAM.md) into dst_run(): header,
 * configuration, one "block" section (START with EOS, PART with the
 * records, END with PROGRESS 100 and EOS), EOF, VMDESCRIPTION.  Without a
 * shared base QEMU sends every chunk of every device, so a stream that
 * leaves one out is incomplete and refused; with one (QEMU's inc mode) the
 * unsent chunks are the base's.
 */
struct qbuf {
	uint8_t *p;
	size_t len, cap;
};

static void qb_put(struct qbuf *q, const void *p, size_t n)
{
	if (q->len + n > q->cap) {
		q->cap = (q->len + n) * 2;
		q->p = realloc(q->p, q->cap);
		assert_non_null(q->p);
	}
	memcpy(q->p + q->len, p, n);
	q->len += n;
}

static void qb_enc(struct qbuf *q, int n, const uint8_t *tmp)
{
	assert_true(n > 0);
	qb_put(q, tmp, (size_t)n);
}

static void qb_section(struct qbuf *q, enum savevm_type type)
{
	struct savevm_section sec = { .type = type, .section_id = 1, .version_id = 1 };
	uint8_t tmp[SAVEVM_SECTION_HDR_MAX];

	snprintf(sec.name, sizeof(sec.name), "block");
	qb_enc(q, savevm_section_encode(tmp, sizeof(tmp), &sec), tmp);
}

static void qb_rec(struct qbuf *q, enum wire_rec_kind kind, const char *name, uint64_t off,
		   uint8_t fill)
{
	struct wire_record rec = { .kind = kind, .offset = off, .percent = 100 };
	uint8_t tmp[WIRE_REC_HDR_MAX];

	snprintf(rec.name, sizeof(rec.name), "%s", name);
	qb_enc(q, wire_rec_encode_header(tmp, &rec), tmp);
	if (kind == WIRE_REC_DATA) {
		uint8_t *chunk = malloc(MiB);

		assert_non_null(chunk);
		memset(chunk, fill, MiB);
		qb_put(q, chunk, MiB);
		free(chunk);
	}
}

static void qb_footer(struct qbuf *q)
{
	uint8_t tmp[SAVEVM_FOOTER_LEN];

	qb_enc(q, savevm_footer_encode(tmp, sizeof(tmp), 1), tmp);
}

/* Header, configuration, START block (EOS), PART block header. */
static void qb_begin(struct qbuf *q)
{
	struct savevm_section cfg = { .type = SAVEVM_CONFIGURATION };
	uint8_t tmp[SAVEVM_SECTION_HDR_MAX];

	memset(q, 0, sizeof(*q));
	qb_enc(q, savevm_header_encode(tmp, sizeof(tmp)), tmp);
	snprintf(cfg.name, sizeof(cfg.name), "none");
	qb_enc(q, savevm_section_encode(tmp, sizeof(tmp), &cfg), tmp);
	qb_section(q, SAVEVM_START);
	qb_rec(q, WIRE_REC_EOS, "", 0, 0);
	qb_footer(q);
	qb_section(q, SAVEVM_PART);
}

/* EOS and footer of the PART, END block, EOF, VMDESCRIPTION. */
static void qb_end(struct qbuf *q)
{
	static const char json[] = "{\"page_size\": 4096, \"devices\": []}";
	struct savevm_section eof = { .type = SAVEVM_EOF };
	uint8_t tmp[128];

	qb_rec(q, WIRE_REC_EOS, "", 0, 0);
	qb_footer(q);
	qb_section(q, SAVEVM_END);
	qb_rec(q, WIRE_REC_PROGRESS, "", 0, 0);
	qb_rec(q, WIRE_REC_EOS, "", 0, 0);
	qb_footer(q);
	qb_enc(q, savevm_section_encode(tmp, sizeof(tmp), &eof), tmp);
	qb_enc(q, savevm_vmdesc_encode(tmp, sizeof(tmp), json, strlen(json)), tmp);
}

/* Two file devices, d0 of 3 MiB and d1 of 2.5 MiB, holding 0xee. */
static const char *const qemu_names[] = { "d0", "d1" };

static void qemu_setup(struct mig *m, bool shared_base)
{
	mig_init(m);
	m->dst.format = MIG_FORMAT_QEMU;
	m->dst.allow_shared_base = shared_base;
	m->dst.n = 2;
	m->dst.expect = qemu_names;
	m->dst.nexpect = 2;
	for (unsigned i = 0; i < 2; i++) {
		m->dst.dev[i].name = qemu_names[i];
		tmp_new(m->dst.dev[i].path, PATH_CAP, qemu_names[i]);
		prefill_file(m->dst.dev[i].path, i ? 2 * MiB + MiB / 2 : 3 * MiB, FILL_BYTE, 0);
	}
}

/* Send q from this thread into a destination thread; collect its result. */
static void qemu_send(struct mig *m, struct qbuf *q)
{
	struct xport *x = NULL;

	if (xport_listen("127.0.0.1:0", &m->lfd, m->bound, sizeof(m->bound)) != 0)
		fail_msg("listen: %s", err_msg());
	assert_int_equal(pthread_create(&m->dth, NULL, dst_main, m), 0);
	if (xport_connect(m->bound, SAFETY_TIMEOUT_MS, NULL, &x) != 0)
		mig_start_failed(m, "connect");
	xport_set_timeout(x, SAFETY_TIMEOUT_MS);
	/* QEMU hears nothing back: whatever the destination does, send all. */
	(void)xport_write(x, q->p, q->len);
	(void)xport_flush(x);
	xport_close(x);
	pthread_join(m->dth, NULL);
	close(m->lfd);
	free(q->p);
}

/* The byte at off in a destination image. */
static uint8_t dst_byte(const struct mig *m, unsigned dev, uint64_t off)
{
	struct blk *b = open_file_ro(m->dst.dev[dev].path);
	uint8_t v;

	assert_int_equal(blk_pread(b, &v, 1, off), 0);
	blk_close(b);
	return v;
}

static void assert_qemu_refused(const struct mig *m, const char *msg)
{
	assert_int_equal(m->dst_r, -EBADMSG);
	assert_string_equal(m->dst_msg, msg);
	assert_int_equal(m->dst_st.state, MIG_FAILED);
	/* Both images stay marked: neither may be served as complete. */
	assert_int_equal(mark_check(m->dst.dev[0].path), 1);
	assert_int_equal(mark_check(m->dst.dev[1].path), 1);
}

static void test_qemu_complete(void **state)
{
	struct qbuf q;
	struct mig m;

	(void)state;
	qemu_setup(&m, false);
	qb_begin(&q);
	/* Any order, zero records, a chunk sent twice (the last wins), the
	 * partial last chunk's excess dropped. */
	qb_rec(&q, WIRE_REC_DATA, "d1", 2 * MiB, 0x21);
	qb_rec(&q, WIRE_REC_DATA, "d0", 0, 0x01);
	qb_rec(&q, WIRE_REC_ZERO, "d0", MiB, 0);
	qb_rec(&q, WIRE_REC_DATA, "d0", 2 * MiB, 0x03);
	qb_rec(&q, WIRE_REC_DATA, "d1", 0, 0x11);
	qb_rec(&q, WIRE_REC_ZERO, "d1", MiB, 0);
	qb_rec(&q, WIRE_REC_DATA, "d0", 0, 0x0f);
	qb_end(&q);
	qemu_send(&m, &q);

	if (m.dst_r != 0)
		fail_msg("destination failed: %s", m.dst_msg);
	assert_int_equal(m.dst_st.state, MIG_COMPLETED);
	assert_int_equal(m.dst_st.dev[0].data_chunks, 3);
	assert_int_equal(m.dst_st.dev[0].zero_chunks, 1);
	assert_int_equal(m.dst_st.dev[1].size, 2 * MiB + MiB / 2);
	assert_int_equal(dst_byte(&m, 0, 0), 0x0f);
	assert_int_equal(dst_byte(&m, 0, MiB), 0);
	assert_int_equal(dst_byte(&m, 0, 3 * MiB - 1), 0x03);
	assert_int_equal(dst_byte(&m, 1, 2 * MiB + MiB / 2 - 1), 0x21);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_int_equal(mark_check(m.dst.dev[1].path), 0);
}

/* Regression: a stream that never sent one chunk was accepted, the mark
 * cleared, and the chunk's old contents served as migrated. */
static void test_qemu_missing_chunk(void **state)
{
	struct qbuf q;
	struct mig m;

	(void)state;
	qemu_setup(&m, false);
	qb_begin(&q);
	qb_rec(&q, WIRE_REC_DATA, "d0", 0, 0x01);
	qb_rec(&q, WIRE_REC_DATA, "d0", 2 * MiB, 0x03);
	qb_rec(&q, WIRE_REC_DATA, "d1", 0, 0x11);
	qb_rec(&q, WIRE_REC_ZERO, "d1", MiB, 0);
	qb_rec(&q, WIRE_REC_ZERO, "d1", 2 * MiB, 0);
	qb_end(&q);
	qemu_send(&m, &q);
	assert_qemu_refused(&m, "device d0: the source carried 2 of 3 chunks: the migration is "
				"incomplete (first missing: 1.0 MiB at offset 1048576); if the "
				"source sends only allocated data (QEMU migrate with inc: true), "
				"the image must hold the base: accept it with --shared-base");
	/* What did arrive was written; the rest is the old contents. */
	assert_int_equal(dst_byte(&m, 0, 0), 0x01);
	assert_int_equal(dst_byte(&m, 0, MiB), 0xee);
}

/* Regression: a configured device the stream never mentioned. */
static void test_qemu_missing_device(void **state)
{
	struct qbuf q;
	struct mig m;

	(void)state;
	qemu_setup(&m, false);
	qb_begin(&q);
	qb_rec(&q, WIRE_REC_DATA, "d0", 0, 0x01);
	qb_rec(&q, WIRE_REC_ZERO, "d0", MiB, 0);
	qb_rec(&q, WIRE_REC_DATA, "d0", 2 * MiB, 0x03);
	qb_end(&q);
	qemu_send(&m, &q);
	assert_qemu_refused(&m, "device d1: the source carried 0 of 3 chunks: the migration is "
				"incomplete (first missing: 2.5 MiB at offset 0); if the source "
				"sends only allocated data (QEMU migrate with inc: true), the "
				"image must hold the base: accept it with --shared-base");
}

/* Regression: no block data at all (what QEMU 7.2 sends when it
 * "completes" at once with the default downtime limit and a slow link). */
static void test_qemu_no_block_data(void **state)
{
	struct qbuf q;
	struct mig m;

	(void)state;
	qemu_setup(&m, false);
	qb_begin(&q);
	qb_end(&q);
	qemu_send(&m, &q);
	assert_qemu_refused(&m, "device d0: the source carried 0 of 3 chunks: the migration is "
				"incomplete (first missing: 3.0 MiB at offset 0); if the source "
				"sends only allocated data (QEMU migrate with inc: true), the "
				"image must hold the base: accept it with --shared-base");
}

/* With a shared base (QEMU's inc mode) the unsent chunks are the base's:
 * accepted, and left as they are. */
static void test_qemu_shared_base(void **state)
{
	struct qbuf q;
	struct mig m;

	(void)state;
	qemu_setup(&m, true);
	qb_begin(&q);
	qb_rec(&q, WIRE_REC_DATA, "d0", MiB, 0x02);
	qb_end(&q);
	qemu_send(&m, &q);
	if (m.dst_r != 0)
		fail_msg("destination failed: %s", m.dst_msg);
	assert_int_equal(dst_byte(&m, 0, 0), 0xee);
	assert_int_equal(dst_byte(&m, 0, MiB), 0x02);
	assert_int_equal(dst_byte(&m, 1, 0), 0xee);
	assert_int_equal(mark_check(m.dst.dev[0].path), 0);
	assert_int_equal(mark_check(m.dst.dev[1].path), 0);
}

/* ---- src_new and names ----------------------------------------------------------------- */

static void test_src_new_errors(void **state)
{
	struct src_params p = { 0 };
	struct src_device devs[2];
	struct src_job *j = NULL;
	struct mig_stats st;
	struct sdev a, b;

	(void)state;
	sdev_open_mem(&a, "a", MiB);
	sdev_open_mem(&b, "b", MiB);
	devs[0] = (struct src_device){ .name = "a", .blk = a.track };
	devs[1] = (struct src_device){ .name = "b", .blk = b.track };

	assert_int_equal(src_new(&p, devs, 0, &j), -EINVAL);
	assert_contains("src_new", err_msg(), "need 1 to 64 devices, got 0");
	assert_int_equal(src_new(&p, devs, 65, &j), -EINVAL);

	p.chunk_size = 3000;
	assert_int_equal(src_new(&p, devs, 1, &j), -EINVAL);
	assert_contains("src_new", err_msg(), "chunk size 3000 is not a power of two");
	p.chunk_size = 2048;
	assert_int_equal(src_new(&p, devs, 1, &j), -EINVAL);
	p.chunk_size = 32 * MiB;
	assert_int_equal(src_new(&p, devs, 1, &j), -EINVAL);
	assert_null(j);

	p.chunk_size = 0; /* the default */
	assert_int_equal(src_new(&p, devs, 2, &j), 0);
	src_stats(j, &st);
	assert_int_equal(st.state, MIG_SETUP);
	assert_int_equal(st.total, 2 * MiB);
	assert_int_equal(st.remaining, 2 * MiB);
	assert_int_equal(st.ndev, 2);
	assert_string_equal(st.dev[0].name, "a");
	assert_string_equal(st.dev[1].name, "b");
	assert_int_equal(st.dev[1].size, MiB);
	src_set_max_bandwidth(j, MiB);
	assert_int_equal(st.mode, MIG_MODE_AUTO);
	assert_int_equal(src_set_mode(j, MIG_MODE_ACTIVE), 0);
	src_free(j);
	src_free(NULL);

	/* Active mode needs the native format; auto with QEMU is dirty. */
	p.format = MIG_FORMAT_QEMU;
	p.mode = MIG_MODE_ACTIVE;
	assert_int_equal(src_new(&p, devs, 1, &j), -EINVAL);
	assert_contains("src_new", err_msg(), "active mode needs the native format");
	p.mode = MIG_MODE_AUTO;
	assert_int_equal(src_new(&p, devs, 1, &j), 0);
	src_stats(j, &st);
	assert_int_equal(st.mode, MIG_MODE_DIRTY);
	assert_int_equal(src_set_mode(j, MIG_MODE_ACTIVE), -EINVAL);
	src_free(j);
	sdev_close(&a);
	sdev_close(&b);
}

/*
 * Regression (fixed): src_new() frees the job and then formats its message from
 * d->name, where d points into the freed job (source.c, the "name must be
 * 1-255 bytes" and "given twice" returns): a use-after-free that crashes
 * under MALLOC_PERTURB_ (as meson test sets it) and that ASan reports.
 */
static void test_src_new_bad_names(void **state)
{
	struct src_params p = { 0 };
	struct src_device devs[2];
	struct src_job *j = NULL;
	struct sdev a, b;
	char long_name[300];

	(void)state;
	sdev_open_mem(&a, "a", MiB);
	sdev_open_mem(&b, "b", MiB);
	devs[0] = (struct src_device){ .name = "a", .blk = a.track };
	devs[1] = (struct src_device){ .name = "a", .blk = b.track };
	assert_int_equal(src_new(&p, devs, 2, &j), -EINVAL);
	assert_contains("src_new", err_msg(), "device name 'a' given twice");
	devs[1].name = "";
	assert_int_equal(src_new(&p, devs, 2, &j), -EINVAL);
	assert_contains("src_new", err_msg(), "device '': name must be 1-255 bytes");
	memset(long_name, 'n', 256);
	long_name[256] = '\0';
	devs[1].name = long_name;
	assert_int_equal(src_new(&p, devs, 2, &j), -EINVAL);
	assert_contains("src_new", err_msg(), "name must be 1-255 bytes");
	assert_null(j);
	sdev_close(&a);
	sdev_close(&b);
}

static void test_state_names(void **state)
{
	(void)state;
	assert_string_equal(mig_state_name(MIG_SETUP), "setup");
	assert_string_equal(mig_state_name(MIG_BULK), "active");
	assert_string_equal(mig_state_name(MIG_DIRTY), "active");
	assert_string_equal(mig_state_name(MIG_FINAL), "device");
	assert_string_equal(mig_state_name(MIG_COMPLETED), "completed");
	assert_string_equal(mig_state_name(MIG_FAILED), "failed");
	assert_string_equal(mig_state_name(MIG_CANCELLED), "cancelled");
	assert_string_equal(mig_state_name((enum mig_state)99), "unknown");
}

#define T(f) cmocka_unit_test_teardown(f, tmp_cleanup)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_one_device),
		T(test_lanes_without_listener),
		T(test_forward_export),
		T(test_two_devices),
		T(test_dirty_pass),
		T(test_live_writer),
		T(test_live_writer_active),
		T(test_active_outpaced),
		T(test_auto_outpaced),
		T(test_active_cancel),
		T(test_active_silent_destination),
		T(test_active_destination_write_error),
		T(test_active_write_during_pass_end),
		T(test_active_pass_end_failure),
		T(test_digests_follow_final_pass),
		T(test_source_read_error),
		T(test_source_read_error_final),
		T(test_destination_write_error),
		T(test_destination_checkpoint_sync_error),
		T(test_cancel_from_thread),
		T(test_cancel_silent_no_timeout),
		T(test_cancel_at_boundary),
		T(test_abandoned_final_rate),
		T(test_shared_base),
		T(test_shared_base_refused),
		T(test_zero_blocks),
		T(test_no_zero_blocks),
		T(test_no_zero_blocks_stats_agree),
		T(test_size_mismatch),
		T(test_unknown_device),
		T(test_qemu_complete),
		T(test_qemu_missing_chunk),
		T(test_qemu_missing_device),
		T(test_qemu_no_block_data),
		T(test_qemu_shared_base),
		T(test_src_new_errors),
		T(test_src_new_bad_names),
		T(test_state_names),
	};

	/* TEST_FILTER=pattern runs only the tests it matches (e.g. "*cancel*"). */
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
