// SPDX-License-Identifier: MIT
/*
 * The writer of tests/integration/guest.sh, and its verifier.
 *
 * In the guest (built with `gcc -static`, run by the initramfs's /init) it
 * writes a known sequence to the raw disk: block number N of the sequence
 * (its "seq") goes to the 4 KiB block N mod the disk's block count, and
 * carries its seq, its byte offset and a 64-bit FNV-1a hash of the rest of
 * the block (layout at GW_MAGIC below).  Blocks go out in batches of
 * contiguous blocks, each one pwrite with O_DIRECT then fdatasync, so a
 * batch reported "ok" is on the disk as far as the guest can know; it is
 * then read back (O_DIRECT again, so from the disk's server) and compared,
 * which puts reads through whatever serves the disk at that moment too.  Every
 * batch prints one line on stdout (the serial console):
 *
 *     B <batch> <first-seq> <last-seq> <write+sync µs> <ms since start> ok
 *     B <batch> <first-seq> <last-seq> <µs> <ms> FAIL <what>: <errno text or mismatch>
 *
 * and at the end one summary line (read-back: batches read back intact):
 *
 *     SUMMARY blocks=N batches=N failed=N read-back=N max-us=N max-at-batch=N max-at-ms=N
 *
 * Batches are writer.batch blocks (default 16), writer.pause-ms apart
 * (default 0: back to back).  It stops after writer.secs seconds or
 * writer.batches batches (kernel command line; whichever comes first), or
 * when a 'q' arrives on stdin,
 * which lets the host end the run as soon as it has seen what it needs.
 * A failed batch is not retried: the run goes on with the next one, and the
 * host counts the failures.
 *
 * On the host, `writer --verify IMAGE < console.log` reads the batch lines
 * and checks that each block holds what the last successful batch that
 * wrote it put there (or, when a later batch to that block failed, what
 * that batch would have put there: a failed write may still have landed).
 * It prints one line and exits 0 when all is well, 1 otherwise.
 * `writer --newest IMAGE` prints the highest seq of the valid blocks in
 * IMAGE (-1 if none): run on the source's image after a migration, it
 * tells which write was the last before the switch-over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GW_BLOCK 4096U
/* Block layout, little-endian as the guest's and host's CPUs are:
 *   0  u64 magic "GWBLOCK1"
 *   8  u64 seq
 *  16  u64 byte offset of the block on the disk
 *  24  u64 FNV-1a 64 of bytes 32..4095
 *  32  filler derived from seq (xorshift64)
 */
#define GW_MAGIC 0x314b434f4c425747ULL /* "GWBLOCK1" */

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void fill_block(unsigned char *b, uint64_t seq, uint64_t off)
{
	uint64_t x = seq * 0x9e3779b97f4a7c15ULL + 1, v[4] = { GW_MAGIC, seq, off, 0 };
	for (size_t i = 32; i < GW_BLOCK; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(b + i, &x, 8);
	}
	v[3] = fnv1a(b + 32, GW_BLOCK - 32);
	memcpy(b, v, sizeof(v));
}

/* 0 when b is the block of seq at off; else a reason. */
static const char *check_block(const unsigned char *b, uint64_t seq, uint64_t off)
{
	uint64_t v[4];
	memcpy(v, b, sizeof(v));
	if (v[0] != GW_MAGIC)
		return "no block header";
	if (v[3] != fnv1a(b + 32, GW_BLOCK - 32))
		return "checksum mismatch";
	if (v[2] != off)
		return "offset mismatch";
	if (v[1] != seq)
		return "sequence mismatch";
	return NULL;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* writer.NAME=VALUE from the kernel command line, else dflt. */
static uint64_t cmdline_param(const char *name, uint64_t dflt)
{
	char buf[4096], key[64];
	FILE *f = fopen("/proc/cmdline", "r");
	if (!f)
		return dflt;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	snprintf(key, sizeof(key), "writer.%s=", name);
	for (char *p = buf; (p = strstr(p, key)); p++) {
		if (p == buf || p[-1] == ' ')
			return strtoull(p + strlen(key), NULL, 10);
	}
	return dflt;
}

static int stop_requested(void)
{
	struct pollfd p = { .fd = 0, .events = POLLIN };
	char c[64];
	if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN))
		return 0;
	ssize_t n = read(0, c, sizeof(c));
	return n > 0 && memchr(c, 'q', (size_t)n) != NULL;
}

static int run_writer(const char *dev)
{
	uint64_t secs = cmdline_param("secs", 60), max_batches = cmdline_param("batches", 0);
	uint64_t bsz = cmdline_param("batch", 16), pause_ms = cmdline_param("pause-ms", 0),
		 size = 0;
	int fd = open(dev, O_RDWR | O_DIRECT);
	if (fd < 0) {
		printf("writer: open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
		printf("writer: BLKGETSIZE64 %s: %s\n", dev, strerror(errno));
		return 1;
	}
	uint64_t nblocks = size / GW_BLOCK;
	if (bsz == 0 || bsz > 256 || nblocks < bsz || nblocks % bsz) {
		printf("writer: batch of %" PRIu64 " blocks does not divide %" PRIu64 " blocks\n",
		       bsz, nblocks);
		return 1;
	}
	unsigned char *buf, *rbuf;
	if (posix_memalign((void **)&buf, GW_BLOCK, bsz * GW_BLOCK) ||
	    posix_memalign((void **)&rbuf, GW_BLOCK, bsz * GW_BLOCK)) {
		printf("writer: out of memory\n");
		return 1;
	}
	printf("writer: %s, %" PRIu64 " blocks, batches of %" PRIu64 ", for %" PRIu64 " s\n", dev,
	       nblocks, bsz, secs);
	fflush(stdout);

	uint64_t start = now_us(), seq = 0, batch = 0, failed = 0, max_us = 0, max_batch = 0,
		 max_ms = 0, reads = 0;
	while (!stop_requested() && now_us() - start < secs * 1000000 &&
	       (!max_batches || batch < max_batches)) {
		uint64_t off = (seq % nblocks) * GW_BLOCK;
		for (uint64_t i = 0; i < bsz; i++)
			fill_block(buf + i * GW_BLOCK, seq + i, off + i * GW_BLOCK);
		uint64_t t0 = now_us();
		const char *what = NULL;
		int err = 0;
		ssize_t n = pwrite(fd, buf, bsz * GW_BLOCK, (off_t)off);
		if (n < 0) {
			what = "write", err = errno;
		} else if ((uint64_t)n != bsz * GW_BLOCK) {
			what = "short write", err = EIO;
		} else if (fdatasync(fd) < 0) {
			what = "fdatasync", err = errno;
		}
		uint64_t t1 = now_us(), lat = t1 - t0, ms = (t1 - start) / 1000;
		char why[96] = "";
		if (!what) {
			n = pread(fd, rbuf, bsz * GW_BLOCK, (off_t)off);
			if (n < 0) {
				what = "read back", err = errno;
			} else if ((uint64_t)n != bsz * GW_BLOCK) {
				what = "short read back", err = EIO;
			} else if (memcmp(rbuf, buf, bsz * GW_BLOCK) != 0) {
				for (uint64_t i = 0; i < bsz && !what; i++) {
					const char *r = check_block(rbuf + i * GW_BLOCK, seq + i,
								    off + i * GW_BLOCK);
					if (r || memcmp(rbuf + i * GW_BLOCK, buf + i * GW_BLOCK,
							GW_BLOCK) != 0) {
						snprintf(why, sizeof(why),
							 "read back seq %" PRIu64 ": %s", seq + i,
							 r ? r : "differs");
						what = why;
					}
				}
			} else {
				reads++;
			}
		}
		if (what && what == why) {
			failed++;
			printf("B %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
			       " FAIL %s\n",
			       batch, seq, seq + bsz - 1, lat, ms, why);
		} else if (what) {
			failed++;
			printf("B %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
			       " FAIL %s: %s\n",
			       batch, seq, seq + bsz - 1, lat, ms, what, strerror(err));
		} else {
			printf("B %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " ok\n",
			       batch, seq, seq + bsz - 1, lat, ms);
		}
		fflush(stdout);
		if (lat > max_us)
			max_us = lat, max_batch = batch, max_ms = ms;
		seq += bsz;
		batch++;
		if (pause_ms) {
			struct timespec ts = { .tv_sec = (time_t)(pause_ms / 1000),
					       .tv_nsec = (long)(pause_ms % 1000) * 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	printf("SUMMARY blocks=%" PRIu64 " batches=%" PRIu64 " failed=%" PRIu64
	       " read-back=%" PRIu64 " max-us=%" PRIu64 " max-at-batch=%" PRIu64
	       " max-at-ms=%" PRIu64 "\n",
	       seq - failed * bsz, batch, failed, reads, max_us, max_batch, max_ms);
	fflush(stdout);
	free(rbuf);
	free(buf);
	close(fd);
	return failed ? 2 : 0;
}

/* ---------------------------------------------------------------- verify */

struct expect {
	uint64_t ok_seq;     /* last seq written by a successful batch; valid if have_ok */
	uint64_t failed_seq; /* last seq of a failed batch after ok_seq; valid if have_failed */
	unsigned char have_ok, have_failed;
};

static int run_verify(const char *image)
{
	int fd = open(image, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "writer --verify: %s: %s\n", image, strerror(errno));
		return 1;
	}
	uint64_t nblocks = (uint64_t)st.st_size / GW_BLOCK;
	struct expect *ex = calloc(nblocks ? nblocks : 1, sizeof(*ex));
	if (!ex) {
		fprintf(stderr, "writer --verify: out of memory\n");
		return 1;
	}
	char line[512];
	uint64_t lines = 0, okblocks = 0;
	while (fgets(line, sizeof(line), stdin)) {
		uint64_t b, first, last, lat, ms;
		char res[8];
		/* The console may prefix a line with kernel output or a \r. */
		char *p = strstr(line, "B ");
		if (!p ||
		    sscanf(p, "B %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %7s",
			   &b, &first, &last, &lat, &ms, res) != 6)
			continue;
		int ok = strcmp(res, "ok") == 0;
		if (!ok && strcmp(res, "FAIL") != 0)
			continue;
		lines++;
		for (uint64_t s = first; s <= last; s++) {
			struct expect *e = &ex[s % nblocks];
			if (ok) {
				e->ok_seq = s, e->have_ok = 1, e->have_failed = 0;
				okblocks++;
			} else {
				e->failed_seq = s, e->have_failed = 1;
			}
		}
	}
	if (!lines) {
		fprintf(stderr, "writer --verify: no batch lines on stdin\n");
		return 1;
	}
	unsigned char *buf = malloc(GW_BLOCK);
	uint64_t checked = 0, bad = 0, landed_failed = 0;
	for (uint64_t i = 0; i < nblocks; i++) {
		struct expect *e = &ex[i];
		if (!e->have_ok && !e->have_failed)
			continue;
		if (pread(fd, buf, GW_BLOCK, (off_t)(i * GW_BLOCK)) != (ssize_t)GW_BLOCK) {
			fprintf(stderr, "writer --verify: %s: short read at block %" PRIu64 "\n",
				image, i);
			return 1;
		}
		const char *why =
		    e->have_ok ? check_block(buf, e->ok_seq, i * GW_BLOCK) : "not written";
		if (why && e->have_failed && !check_block(buf, e->failed_seq, i * GW_BLOCK)) {
			why = NULL;
			landed_failed++;
		}
		if (!e->have_ok && why)
			continue; /* only failed writes went there: anything goes */
		checked++;
		if (why && bad++ < 5)
			fprintf(stderr,
				"writer --verify: block %" PRIu64 " (offset %" PRIu64
				"): %s, expected seq %" PRIu64 "\n",
				i, i * GW_BLOCK, why, e->ok_seq);
	}
	free(buf);
	free(ex);
	close(fd);
	if (bad) {
		fprintf(stderr, "writer --verify: %" PRIu64 " of %" PRIu64 " blocks wrong in %s\n",
			bad, checked, image);
		return 1;
	}
	printf("verified %" PRIu64 " blocks (%" PRIu64 " written by %" PRIu64 " batches; %" PRIu64
	       " hold a failed batch's data)\n",
	       checked, okblocks, lines, landed_failed);
	return 0;
}

static int run_newest(const char *image)
{
	unsigned char *buf = malloc(GW_BLOCK);
	int fd = open(image, O_RDONLY);
	if (fd < 0 || !buf) {
		fprintf(stderr, "writer --newest: %s: %s\n", image,
			fd < 0 ? strerror(errno) : "out of memory");
		return 1;
	}
	int64_t newest = -1;
	for (uint64_t off = 0; pread(fd, buf, GW_BLOCK, (off_t)off) == (ssize_t)GW_BLOCK;
	     off += GW_BLOCK) {
		uint64_t v[4];
		memcpy(v, buf, sizeof(v));
		if (v[0] == GW_MAGIC && v[2] == off && v[1] <= INT64_MAX &&
		    (int64_t)v[1] > newest && !check_block(buf, v[1], off))
			newest = (int64_t)v[1];
	}
	printf("%" PRId64 "\n", newest);
	free(buf);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--verify") == 0)
		return run_verify(argv[2]);
	if (argc == 3 && strcmp(argv[1], "--newest") == 0)
		return run_newest(argv[2]);
	if (argc == 2 && argv[1][0] == '/')
		return run_writer(argv[1]);
	fprintf(stderr, "usage: writer /dev/DISK | writer --verify IMAGE < console.log | writer "
			"--newest IMAGE\n");
	return 1;
}
