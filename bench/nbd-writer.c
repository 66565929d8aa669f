/* SPDX-License-Identifier: MIT */
/*
 * An NBD client that writes like bench/converge.sh's built-in writer, for
 * servers that have no built-in writer: one write of BS bytes at a time, at
 * random BS-aligned offsets, on the schedule start + n * BS / RATE (a slow
 * write is caught up rather than lowering the rate), each timed from the
 * call to its reply.  Built by bench/mirror-peer.py with cc and libnbd.
 *
 *   nbd-writer URI BS RATE [SEED]
 *
 * SIGUSR1 prints the figures so far as one JSON line and starts afresh (the
 * end of a phase); SIGTERM or SIGINT prints them and exits.  The first
 * failed write stops the writing (a source that handed its disk over
 * answers ESHUTDOWN); its message goes in "error" and the writer waits for
 * the signal.  Every latency is kept, so the percentiles are exact.
 * "late_p99_us" counts from when each write was due rather than from the
 * call: a server the writer cannot keep pace with shows there (and in the
 * rate), not in the latencies of the writes it did make.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static atomic_int phase_end; /* SIGUSR1 seen, figures not yet printed */
static atomic_int quit;

struct figures {
	uint64_t *lat;	/* ns, one per write: from the call to the reply */
	uint64_t *late; /* ns, one per write: from when it was due to the reply */
	size_t n, cap;
	uint64_t start_ns;
	char error[256];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The nearest-rank q-quantile of the n sorted values v, in µs. */
static double pct_us(const uint64_t *v, size_t n, double q)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)ceil(q * (double)n);
	return (double)v[i > 0 ? MIN(i, n) - 1 : 0] / 1000.0;
}

static void print_figures(struct figures *f, uint64_t bs)
{
	double secs = (double)(now_ns() - f->start_ns) / 1e9;
	qsort(f->lat, f->n, sizeof *f->lat, cmp_u64);
	qsort(f->late, f->n, sizeof *f->late, cmp_u64);
	printf(
	    "{\"writes\": %zu, \"secs\": %.3f, \"mbps\": %.1f, \"p50_us\": %.0f, \"p99_us\": %.0f, "
	    "\"p999_us\": %.0f, \"max_us\": %.0f, \"late_p99_us\": %.0f, \"error\": \"%s\"}\n",
	    f->n, secs, secs > 0 ? (double)f->n * (double)bs / secs / 1e6 : 0.0,
	    pct_us(f->lat, f->n, 0.5), pct_us(f->lat, f->n, 0.99), pct_us(f->lat, f->n, 0.999),
	    pct_us(f->lat, f->n, 1.0), pct_us(f->late, f->n, 0.99), f->error);
	fflush(stdout);
	f->n = 0;
	f->start_ns = now_ns();
}

/* Signals are blocked in the writing thread (libnbd's poll is not to be
 * interrupted); this one takes them and sets the flags. */
static void *signals(void *arg)
{
	sigset_t *set = arg;
	for (;;) {
		int sig;
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			atomic_store(&phase_end, 1);
		} else {
			atomic_store(&quit, 1);
			return NULL;
		}
	}
}

static uint64_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	uint64_t v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	switch (*end) {
	case 'K':
		v <<= 10;
		break;
	case 'M':
		v <<= 20;
		break;
	case 'G':
		v <<= 30;
		break;
	case '\0':
		break;
	default:
		return 0;
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: nbd-writer URI BS RATE [SEED]\n");
		return 2;
	}
	uint64_t bs = parse_size(argv[2]), rate = parse_size(argv[3]);
	uint64_t rng = argc == 5 ? strtoull(argv[4], NULL, 10) : 3;
	if (bs < sizeof(uint64_t) || rate == 0 || bs > (32u << 20)) {
		fprintf(stderr, "nbd-writer: bad BS or RATE\n");
		return 2;
	}
	rng = rng * 2654435761u + 1;

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_t sig_thread;
	if (pthread_create(&sig_thread, NULL, signals, &set) != 0) {
		fprintf(stderr, "nbd-writer: cannot start the signal thread\n");
		return 1;
	}

	struct nbd_handle *h = nbd_create();
	if (!h || nbd_connect_uri(h, argv[1]) == -1) {
		fprintf(stderr, "nbd-writer: %s\n", nbd_get_error());
		nbd_close(h);
		return 1;
	}
	int64_t size = nbd_get_size(h);
	if (size < (int64_t)bs) {
		fprintf(stderr, "nbd-writer: export of %" PRId64 " bytes is smaller than BS\n",
			size);
		nbd_close(h);
		return 1;
	}
	uint64_t slots = (uint64_t)size / bs;
	char *buf = malloc(bs);
	if (!buf) {
		fprintf(stderr, "nbd-writer: out of memory\n");
		return 1;
	}
	for (uint64_t i = 0; i < bs; i++)
		buf[i] = (char)(i * 131 + 7);

	struct figures f = { .start_ns = now_ns() };
	uint64_t t0 = f.start_ns, n = 0;
	double ns_per_write = (double)bs * 1e9 / (double)rate;
	while (!atomic_load(&quit)) {
		if (atomic_exchange(&phase_end, 0))
			print_figures(&f, bs);
		uint64_t due = t0 + (uint64_t)((double)n * ns_per_write);
		uint64_t t = now_ns();
		if (f.error[0] || t < due) {
			uint64_t wait = f.error[0] ? 10000000u : due - t;
			if (wait > 10000000u)
				wait = 10000000u; /* look at the flags every 10 ms */
			struct timespec ts = { (time_t)(wait / 1000000000u),
					       (long)(wait % 1000000000u) };
			nanosleep(&ts, NULL);
			continue;
		}
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		memcpy(buf, &n, sizeof n);
		t = now_ns();
		if (nbd_pwrite(h, buf, bs, (rng % slots) * bs, 0) == -1) {
			snprintf(f.error, sizeof f.error, "%s", nbd_get_error());
			for (char *c = f.error; *c; c++)
				if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
					*c = ' ';
			continue;
		}
		uint64_t end = now_ns();
		if (f.n == f.cap) {
			size_t cap = f.cap ? f.cap * 2 : 65536;
			uint64_t *p = realloc(f.lat, cap * sizeof *p), *q;
			if (p)
				f.lat = p;
			q = realloc(f.late, cap * sizeof *q);
			if (q)
				f.late = q;
			if (!p || !q) {
				fprintf(stderr, "nbd-writer: out of memory\n");
				return 1;
			}
			f.cap = cap;
		}
		f.lat[f.n] = end - t;
		f.late[f.n++] = end - due;
		n++;
	}
	print_figures(&f, bs);
	nbd_close(h);
	free(buf);
	free(f.lat);
	free(f.late);
	pthread_join(sig_thread, NULL);
	return 0;
}
