/* SPDX-License-Identifier: MIT */
/*
 * Built-in writer (see workload.h).  Writes are paced against an absolute
 * schedule (start + n * bs / rate), so a slow write is caught up rather than
 * lowering the rate.  Latencies go into a log-linear histogram: 16 linear
 * sub-buckets per power of two of nanoseconds, enough for the quantiles within
 * about 6%.
 */
#include "workload.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend.h"
#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"

#define HIST_SUB  16
#define HIST_POW  40
#define HIST_SIZE (HIST_POW * HIST_SUB)

struct workload {
	struct workload_spec s;
	struct blk *b;
	pthread_t thread;
	struct cancel *stop;  /* fired by workload_stop(); wakes a waiting writer */
	pthread_mutex_t lock; /* guards the figures below */
	uint64_t writes, bytes, max_ns;
	uint64_t hist[HIST_SIZE];
	int stopped_by;
	uint64_t since_ns; /* start, or the last reset */
	uint64_t ended_ns; /* when the writer stopped; 0 while it runs */
};

/* ---- spec ------------------------------------------------------------------- */

int workload_parse(const char *spec, struct workload_spec *out)
{
	char buf[1024], *save = NULL, *tok;
	bool have_bs = false, have_rate = false;
	int r;

	memset(out, 0, sizeof(*out));
	out->seed = 1;
	if (!spec || strlen(spec) >= sizeof(buf))
		return err_set(EINVAL, "invalid workload: empty or too long");
	strcpy(buf, spec);
	tok = strtok_r(buf, ",", &save);
	if (!tok || strchr(tok, '=') || strlen(tok) >= sizeof(out->name))
		return err_set(EINVAL, "invalid workload '%s': it must start with a device name",
			       spec);
	strcpy(out->name, tok);
	while ((tok = strtok_r(NULL, ",", &save))) {
		char *eq = strchr(tok, '=');

		if (!eq)
			return err_set(EINVAL, "invalid workload '%s': '%s' is not KEY=VALUE", spec,
				       tok);
		*eq++ = '\0';
		if (strcmp(tok, "bs") == 0) {
			r = parse_size(eq, &out->bs);
			have_bs = true;
		} else if (strcmp(tok, "rate") == 0) {
			r = parse_rate(eq, &out->rate);
			have_rate = true;
		} else if (strcmp(tok, "seed") == 0) {
			char *end;

			errno = 0;
			out->seed = strtoull(eq, &end, 0);
			r = (*eq && !*end && !errno) ? 0 : err_set(EINVAL, "invalid seed '%s'", eq);
		} else if (strcmp(tok, "pattern") == 0) {
			if (strcmp(eq, "random") == 0)
				out->sequential = false;
			else if (strcmp(eq, "sequential") == 0)
				out->sequential = true;
			else
				return err_set(EINVAL,
					       "invalid workload '%s': pattern must be "
					       "random or sequential",
					       spec);
			r = 0;
		} else {
			return err_set(EINVAL, "invalid workload '%s': unknown key '%s'", spec,
				       tok);
		}
		if (r < 0)
			return err_prefix(EINVAL, "invalid workload '%s': ", spec);
	}
	if (!have_bs || !have_rate)
		return err_set(EINVAL, "invalid workload '%s': bs= and rate= are required", spec);
	if (out->bs == 0 || out->bs > 64 * MiB || out->bs % 512)
		return err_set(EINVAL,
			       "invalid workload '%s': bs must be a multiple of 512 "
			       "up to 64M",
			       spec);
	if (out->rate == 0)
		return err_set(EINVAL, "invalid workload '%s': rate must be above 0", spec);
	return 0;
}

/* ---- histogram -------------------------------------------------------------- */

static unsigned hist_bucket(uint64_t ns)
{
	unsigned pow, sub;

	if (ns < HIST_SUB)
		return (unsigned)ns;
	pow = 63u - (unsigned)__builtin_clzll(ns); /* >= 4 */
	sub = (unsigned)((ns >> (pow - 4)) & (HIST_SUB - 1));
	pow = MIN(pow - 3, HIST_POW - 1);
	return pow * HIST_SUB + sub;
}

/* The upper bound of a bucket, in ns. */
static uint64_t hist_value(unsigned b)
{
	unsigned pow = b / HIST_SUB, sub = b % HIST_SUB;

	if (pow == 0)
		return sub;
	pow += 3;
	return ((uint64_t)(HIST_SUB + sub + 1)) << (pow - 4);
}

static uint64_t hist_quantile(const uint64_t *h, uint64_t n, double q)
{
	uint64_t want = (uint64_t)((double)n * q), seen = 0;

	if (n == 0)
		return 0;
	for (unsigned b = 0; b < HIST_SIZE; b++) {
		seen += h[b];
		if (seen > want)
			return hist_value(b);
	}
	return hist_value(HIST_SIZE - 1);
}

/* ---- writer ----------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void *writer_main(void *arg)
{
	struct workload *w = arg;
	uint64_t size = blk_size(w->b), bs = MIN(w->s.bs, size);
	uint64_t nslots = size / bs, rng = w->s.seed, seq = 0;
	uint64_t start = now_ns(), n = 0;
	uint8_t *buf = malloc(bs);

	thread_name("bm-workload");
	/* As an NBD client's thread (conn_main()) is: it stands for one. */
	thread_latency();
	if (!buf) {
		pthread_mutex_lock(&w->lock); /* workload_get_stats() reads it */
		w->stopped_by = -ENOMEM;
		w->ended_ns = now_ns();
		pthread_mutex_unlock(&w->lock);
		return NULL;
	}
	while (!cancel_is_set(w->stop)) {
		uint64_t due = start + (uint64_t)((double)n * (double)bs * 1e9 / (double)w->s.rate);
		uint64_t now = now_ns(), off, t0, lat;
		int r;

		if (due > now) {
			cancel_sleep(w->stop, (int64_t)(due - now));
			continue;
		}
		off = (w->s.sequential ? seq++ % nslots : splitmix(&rng) % nslots) * bs;
		for (uint64_t i = 0; i + 8 <= bs; i += 8) {
			uint64_t v = splitmix(&rng);

			memcpy(buf + i, &v, 8);
		}
		t0 = now_ns();
		r = blk_pwrite(w->b, buf, bs, off);
		lat = now_ns() - t0;
		pthread_mutex_lock(&w->lock);
		if (r < 0) {
			w->stopped_by = r;
			w->ended_ns = now_ns();
			pthread_mutex_unlock(&w->lock);
			break;
		}
		w->writes++;
		w->bytes += bs;
		w->hist[hist_bucket(lat)]++;
		w->max_ns = MAX(w->max_ns, lat);
		pthread_mutex_unlock(&w->lock);
		n++;
	}
	pthread_mutex_lock(&w->lock);
	if (!w->ended_ns)
		w->ended_ns = now_ns();
	pthread_mutex_unlock(&w->lock);
	free(buf);
	return NULL;
}

int workload_start(const struct workload_spec *s, struct blk *b, struct workload **out)
{
	struct workload *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->s = *s;
	w->b = b;
	w->since_ns = now_ns();
	r = cancel_new(&w->stop);
	if (r < 0) {
		free(w);
		return r;
	}
	pthread_mutex_init(&w->lock, NULL);
	r = pthread_create(&w->thread, NULL, writer_main, w);
	if (r) {
		pthread_mutex_destroy(&w->lock);
		cancel_free(w->stop);
		free(w);
		return err_set(r, "cannot start the workload thread: %s", strerror(r));
	}
	*out = w;
	return 0;
}

void workload_get_stats(struct workload *w, struct workload_stats *st)
{
	uint64_t end;

	pthread_mutex_lock(&w->lock);
	st->writes = w->writes;
	st->bytes = w->bytes;
	st->max_ns = w->max_ns;
	/* A bucket's upper bound may lie above every sample in it. */
	st->p50_ns = MIN(hist_quantile(w->hist, w->writes, 0.50), w->max_ns);
	st->p99_ns = MIN(hist_quantile(w->hist, w->writes, 0.99), w->max_ns);
	st->p999_ns = MIN(hist_quantile(w->hist, w->writes, 0.999), w->max_ns);
	st->stopped_by = w->stopped_by;
	end = w->ended_ns ? w->ended_ns : now_ns();
	st->elapsed_ns = end > w->since_ns ? end - w->since_ns : 0;
	pthread_mutex_unlock(&w->lock);
}

void workload_reset_stats(struct workload *w)
{
	pthread_mutex_lock(&w->lock);
	w->writes = 0;
	w->bytes = 0;
	w->max_ns = 0;
	memset(w->hist, 0, sizeof(w->hist));
	w->since_ns = now_ns();
	pthread_mutex_unlock(&w->lock);
}

void workload_stop(struct workload *w, struct workload_stats *st)
{
	if (!w)
		return;
	cancel_fire(w->stop);
	pthread_join(w->thread, NULL);
	if (st)
		workload_get_stats(w, st);
	pthread_mutex_destroy(&w->lock);
	cancel_free(w->stop);
	free(w);
}
