/* SPDX-License-Identifier: MIT */
/*
 * craft: a deliberately misbehaving native-format source, for the receiver's
 * error-path tests.  It connects to a `blkmig receive`, sends a stream with
 * one chosen defect, prints what the receiver answered, and exits 0 if the
 * receiver answered the way the fault predicts (ACK for "ok", ERROR or a
 * closed connection for every fault).
 *
 *   craft --to HOST:PORT --name NAME --size BYTES --fault KIND
 *
 * Every chunk i of the well-formed part carries the byte (i + 1) & 0xff, so
 * a test can tell which chunks were written.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <zstd.h>

#include "common/error.h"
#include "common/util.h"
#include "migrate/digest.h"
#include "transport/transport.h"
#include "wire/native.h"

static const char *const faults[] = {
	"ok",		     /* a valid migration: must be acknowledged */
	"truncated",	     /* stream ends in the middle of a data record */
	"truncated-hello",   /* stream ends inside HELLO */
	"beyond",	     /* a record at an offset past the device end */
	"unknown-device",    /* a record for a device HELLO did not announce */
	"hello-device",	     /* HELLO announces a device the receiver lacks */
	"unknown-flag",	     /* a record word with flag 0x80 */
	"size-mismatch",     /* HELLO size differs from the receiver's image */
	"digest-mismatch",   /* COMPLETE with a wrong digest */
	"bad-magic",	     /* not a blkmig stream */
	"bad-version",	     /* HELLO version 99 */
	"abort",	     /* the source aborts after one record */
	"hello-abort",	     /* the source aborts right after READY, writing nothing */
	"no-complete",	     /* all records, then the connection closes */
	"no-commit",	     /* a valid migration, but no COMMIT after the ACK */
	"missing-chunk",     /* one chunk never sent (not shared base), digest of the rest */
	"shared-base",	     /* HELLO with the SHARED_BASE capability, chunk 0 skipped */
	"mirror-ok",	     /* MIRROR announced, a valid WRITE after the pass: accepted */
	"write-unannounced", /* a WRITE record without MIRROR in HELLO */
	"write-sequence",    /* MIRROR, but the first WRITE has sequence number 2 */
	"write-beyond",	     /* MIRROR, a WRITE that runs past the device end */
	/* MIRROR; the WRITE comes after the pass's EOS, before its SYNCED
	 * (while the receiver syncs the pass): accepted */
	"mirror-after-eos",
	/* MIRROR; chunk 0 again, as DATA, right after the pass's EOS, before
	 * its SYNCED (a source that does not wait for it): accepted */
	"data-after-eos",
	"record-name",	     /* a record whose device name holds a newline and an escape */
	"zstd-ok",	     /* COMPRESS announced, every chunk a zstd frame: accepted */
	"zstd-unannounced",  /* a compressed chunk without COMPRESS in HELLO */
	"zstd-corrupt",	     /* COMPRESS, one frame with its first block header damaged */
	"zstd-size",	     /* COMPRESS, one frame of half a chunk */
	"zstd-long",	     /* COMPRESS, one frame claimed as long as a chunk */
	"fence-unannounced", /* a FENCE record without WLANE in HELLO */
	/* The write lane (MIRROR|WLANE; the lane joins with the LANES
	 * token).  "lane-ok": a WRITE on it after every chunk record, a
	 * FENCE naming it before EOS: accepted. */
	"lane-ok", "lane-after-never", /* its WRITE follows a chunk record that never comes */
	"lane-fence-beyond",	       /* a FENCE after write 2, where the lane carried 1 */
	"lane-closed-fence",	       /* the lane closes after write 1, then a FENCE after 2 */
	"lane-write-main",	       /* a WRITE on the main stream while the lane is open */
};

static bool is(const char *fault, const char *name)
{
	return strcmp(fault, name) == 0;
}

/* Streams that must be acknowledged: a refusal of one is craft's failure. */
static bool must_pass(const char *fault)
{
	return is(fault, "ok") || is(fault, "zstd-ok") || is(fault, "lane-ok");
}

/* Released at exit, whichever way main() leaves. */
static struct xport *g_x, *g_lane;
static struct digest_table *g_dig;
static uint8_t *g_chunk;

static void release(void)
{
	xport_close(g_lane);
	xport_close(g_x);
	digest_free(g_dig);
	free(g_chunk);
}

static int send_all(struct xport *x, const void *p, size_t n)
{
	int r = xport_write(x, p, n);

	return r ? r : xport_flush(x);
}

/* After READY: read LANES, and join the write lane with its token. */
static int join_lane(struct xport *x, const char *to, struct xport **out)
{
	uint8_t hdr[NATIVE_FRAME_HDR], body[64], join[XPORT_JOIN_LEN], ans[XPORT_JOINED_HDR];
	struct native_lanes l;
	uint32_t len;

	if (xport_read(x, hdr, sizeof(hdr), NULL) < 0)
		return -1;
	len = get_be32(hdr + 1);
	if (hdr[0] != NATIVE_MSG_LANES || len > sizeof(body) ||
	    xport_read(x, body, len, NULL) < 0 || native_lanes_decode(body, len, &l) < 0 ||
	    !(l.flags & NATIVE_LANES_WLANE)) {
		fprintf(stderr, "craft: no write lane offered (message 0x%02x)\n", hdr[0]);
		return -1;
	}
	if (xport_connect(to, 10000, NULL, out) < 0)
		return -1;
	xport_join_encode(join, XPORT_WLANE_INDEX, l.token);
	if (send_all(*out, join, sizeof(join)) < 0 || xport_read(*out, ans, sizeof(ans), NULL) < 0)
		return -1;
	if (ans[0] != XPORT_JOINED_TYPE || get_be32(ans + 1) != 4 || get_be32(ans + 5) != 0) {
		fprintf(stderr, "craft: the write lane's join was refused\n");
		return -1;
	}
	return 0;
}

/* A WRITE of len bytes at off, as the lane carries it: after 'after'
 * chunk records of the main stream. */
static int lane_write(struct xport *lane, const char *name, uint64_t seq, uint64_t after,
		      uint64_t off, const void *data, uint32_t len)
{
	uint8_t hdr[NATIVE_LANE_HDR + WIRE_REC_HDR_MAX];
	struct wire_record rec = { .kind = WIRE_REC_WRITE,
				   .seq = seq,
				   .offset = off,
				   .length = len,
				   .op = WIRE_WRITE_DATA };
	int n;

	snprintf(rec.name, sizeof(rec.name), "%s", name);
	n = wire_rec_encode_header(hdr + NATIVE_LANE_HDR, &rec);
	if (n < 0)
		return n;
	native_lane_encode(hdr, after, (uint32_t)n + len);
	n = xport_write2(lane, hdr, NATIVE_LANE_HDR + (size_t)n, data, len);
	return n ? n : xport_flush(lane);
}

/* The next WACK on the lane: the write it acknowledges, or 0. */
static uint64_t read_wack(struct xport *lane)
{
	uint8_t hdr[NATIVE_FRAME_HDR], body[8];

	xport_set_timeout(lane, 30000);
	if (xport_read(lane, hdr, sizeof(hdr), NULL) < 0 || hdr[0] != NATIVE_MSG_WACK ||
	    get_be32(hdr + 1) != sizeof(body) || xport_read(lane, body, sizeof(body), NULL) < 0)
		return 0;
	return get_be64(body);
}

static int send_fence(struct xport *x, uint64_t seq)
{
	uint8_t fh[WIRE_REC_HDR_MAX];
	int fn =
	    wire_rec_encode_header(fh, &(struct wire_record){ .kind = WIRE_REC_FENCE, .seq = seq });

	return fn < 0 ? fn : send_all(x, fh, (size_t)fn);
}

static void fill_chunk(uint8_t *buf, uint32_t cs, uint64_t idx)
{
	memset(buf, (int)((idx + 1) & 0xff), cs);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "to", required_argument, NULL, 't' },
		{ "name", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 's' },
		{ "fault", required_argument, NULL, 'f' },
		{ "chunk-size", required_argument, NULL, 'c' },
		{ 0 },
	};
	const char *to = NULL, *name = "d0", *fault = NULL;
	uint64_t size = 0, cs64 = 1 << 20;
	static struct native_hello h;
	static uint8_t buf[NATIVE_HELLO_MAX + 64], body[NATIVE_MSG_MAX];
	uint8_t hdr[WIRE_REC_HDR_MAX], type;
	uint8_t *chunk;
	struct digest_table *dig;
	struct xport *x;
	uint32_t cs, len;
	uint64_t nchunks;
	bool known = false;
	int c, n, r;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			to = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 's':
			if (parse_size(optarg, &size) < 0)
				return 2;
			break;
		case 'c':
			if (parse_size(optarg, &cs64) < 0)
				return 2;
			break;
		case 'f':
			fault = optarg;
			break;
		default:
			return 2;
		}
	}
	for (size_t i = 0; fault && i < ARRAY_SIZE(faults); i++)
		known |= strcmp(fault, faults[i]) == 0;
	if (!to || !size || !known) {
		fprintf(stderr,
			"usage: craft --to HOST:PORT --name NAME --size BYTES --fault KIND\n");
		return 2;
	}
	cs = (uint32_t)cs64;
	nchunks = div_round_up(size, cs);
	atexit(release);
	if (xport_connect(to, 10000, NULL, &x) < 0) {
		fprintf(stderr, "craft: %s\n", err_msg());
		return 1;
	}
	g_x = x;

	/* Handshake. */
	h.version = NATIVE_VERSION;
	h.chunk_size = cs;
	/* A migration of its own each time, as a real source picks. */
	if (getrandom(h.id, sizeof(h.id), 0) != (ssize_t)sizeof(h.id))
		return 1;
	h.ndev = 1;
	snprintf(h.dev[0].name, sizeof(h.dev[0].name), "%s",
		 strcmp(fault, "hello-device") == 0 ? "stranger" : name);
	h.dev[0].size = strcmp(fault, "size-mismatch") == 0 ? size + cs : size;
	if (strcmp(fault, "shared-base") == 0)
		h.caps |= NATIVE_CAP_SHARED_BASE;
	if (is(fault, "mirror-ok") || is(fault, "write-sequence") || is(fault, "write-beyond") ||
	    strstr(fault, "-after-eos"))
		h.caps |= NATIVE_CAP_MIRROR;
	if (strncmp(fault, "zstd-", 5) == 0 && !is(fault, "zstd-unannounced"))
		h.caps |= NATIVE_CAP_COMPRESS;
	if (strncmp(fault, "lane-", 5) == 0)
		h.caps |= NATIVE_CAP_MIRROR | NATIVE_CAP_WLANE;
	n = native_hello_encode(buf, sizeof(buf), &h);
	if (n < 0)
		return 1;
	if (strcmp(fault, "bad-magic") == 0)
		memcpy(buf, "GARBAGE!", 8);
	if (strcmp(fault, "bad-version") == 0)
		put_be32(buf + 8, 99);
	if (strcmp(fault, "truncated-hello") == 0)
		n = 13;
	if (send_all(x, buf, (size_t)n) < 0)
		goto closed;
	if (strcmp(fault, "truncated-hello") == 0) {
		xport_shutdown_write(x);
		goto answer;
	}
	r = xport_read(x, hdr, NATIVE_FRAME_HDR, NULL);
	if (r < 0)
		goto closed;
	if (hdr[0] != NATIVE_MSG_READY) {
		len = get_be32(hdr + 1);
		if (len <= sizeof(body) && xport_read(x, body, len, NULL) == 0 &&
		    hdr[0] == NATIVE_MSG_ERROR) {
			struct native_error e;

			if (native_error_decode(body, len, &e) == 0)
				printf("receiver refused: %s\n", e.reason);
		}
		return must_pass(fault) ? 1 : 0;
	}
	xport_read(x, body, get_be32(hdr + 1), NULL);
	/* A lane not offered, or its join refused, is no answer to the fault. */
	if (strncmp(fault, "lane-", 5) == 0 && join_lane(x, to, &g_lane) < 0)
		return 1;
	/* Only now: a refused claim of terabytes costs no tables here. */
	chunk = g_chunk = malloc(cs);
	dig = g_dig = digest_new(size, cs);
	if (!chunk || !dig)
		return 1;

	if (is(fault, "hello-abort")) {
		struct native_error e = { .err = ECANCELED };

		snprintf(e.reason, sizeof(e.reason), "craft aborts before any record");
		n = native_error_encode(buf, sizeof(buf), NATIVE_MSG_ABORT, &e);
		send_all(x, buf, (size_t)n);
		goto answer;
	}
	/* Sent before any chunk record, and given 1.5 s's start on the main
	 * stream: its wait (the lane's idle timeout) ends first. */
	if (is(fault, "lane-after-never")) {
		if (lane_write(g_lane, name, 1, nchunks + 1, 1000, "hello", 5) < 0)
			goto closed;
		sleep_ns(1500000000ull);
	}
	/* One pass over every chunk, with the fault in the middle. */
	type = NATIVE_MSG_BLOCKS;
	xport_write(x, &type, 1);
	for (uint64_t i = 0; i < nchunks; i++) {
		struct wire_record rec = { .kind = WIRE_REC_DATA, .offset = i * cs };
		size_t clen = digest_chunk_len(dig, i);

		if ((strcmp(fault, "missing-chunk") == 0 && i == nchunks / 2) ||
		    (strcmp(fault, "shared-base") == 0 && i == 0))
			continue;

		rec.name_len = (uint8_t)strlen(name);
		memcpy(rec.name, name, rec.name_len + 1u);
		if (strcmp(fault, "unknown-device") == 0 && i == nchunks / 2) {
			strcpy(rec.name, "nosuchdev");
			rec.name_len = 9;
		}
		if (is(fault, "record-name") && i == nchunks / 2) {
			strcpy(rec.name, "d0\n\033[2K");
			rec.name_len = (uint8_t)strlen(rec.name);
		}
		if (strcmp(fault, "beyond") == 0 && i == nchunks / 2)
			rec.offset = div_round_up(size, cs) * cs + 64 * (uint64_t)cs;
		n = wire_rec_encode_header(hdr, &rec);
		if (n < 0)
			return 1;
		if (strcmp(fault, "unknown-flag") == 0 && i == nchunks / 2)
			hdr[7] |= 0x80;
		fill_chunk(chunk, cs, i);
		digest_set(dig, i, digest_hash(chunk, clen));
		if (strncmp(fault, "zstd-", 5) == 0 && (is(fault, "zstd-ok") || i == nchunks / 2)) {
			/* The chunk as a zstd frame (the defect, if any, on it). */
			static uint8_t frame[1 << 16];
			size_t fl = ZSTD_compress(frame, sizeof(frame), chunk,
						  is(fault, "zstd-size") ? cs / 2 : cs, 1);

			if (ZSTD_isError(fl) || fl < 16)
				return 1;
			if (is(fault, "zstd-corrupt"))
				memset(frame + 10, 0xff, 3); /* the first block header */
			rec.kind = WIRE_REC_ZSTD;
			rec.length = is(fault, "zstd-long") ? cs : (uint32_t)fl;
			n = wire_rec_encode_header(hdr, &rec);
			if (n < 0 || xport_write2(x, hdr, (size_t)n, frame, fl) < 0)
				goto closed;
			continue;
		}
		if (is(fault, "fence-unannounced") && i == nchunks / 2) {
			uint8_t fh[WIRE_REC_HDR_MAX];
			int fn = wire_rec_encode_header(
			    fh, &(struct wire_record){ .kind = WIRE_REC_FENCE, .seq = 1 });

			if (fn < 0 || xport_write(x, fh, (size_t)fn) < 0)
				goto closed;
		}
		if (strcmp(fault, "truncated") == 0 && i == nchunks / 2) {
			xport_write2(x, hdr, (size_t)n, chunk, cs / 2);
			xport_shutdown_write(x);
			goto answer;
		}
		if (xport_write2(x, hdr, (size_t)n, chunk, cs) < 0)
			goto closed;
		if (strcmp(fault, "abort") == 0) {
			static const uint8_t eos[8] = { 0, 0, 0, 0, 0, 0, 0, WIRE_F_EOS };
			struct native_error e = { .err = ECANCELED };

			snprintf(e.reason, sizeof(e.reason), "craft aborts on purpose");
			xport_write(x, eos, sizeof(eos));
			n = native_error_encode(buf, sizeof(buf), NATIVE_MSG_ABORT, &e);
			send_all(x, buf, (size_t)n);
			goto answer;
		}
	}
	if (strstr(fault, "-after-eos")) {
		/* The pass ends; what follows reaches a receiver syncing it. */
		n = wire_rec_encode_header(hdr, &(struct wire_record){ .kind = WIRE_REC_EOS });
		xport_write(x, hdr, (size_t)n);
		type = NATIVE_MSG_BLOCKS;
		xport_write(x, &type, 1);
	}
	if (is(fault, "data-after-eos")) {
		struct wire_record rec = { .kind = WIRE_REC_DATA, .offset = 0 };

		snprintf(rec.name, sizeof(rec.name), "%s", name);
		rec.name_len = (uint8_t)strlen(name);
		fill_chunk(chunk, cs, nchunks);
		digest_set(dig, 0, digest_hash(chunk, digest_chunk_len(dig, 0)));
		n = wire_rec_encode_header(hdr, &rec);
		if (n < 0 || xport_write2(x, hdr, (size_t)n, chunk, cs) < 0)
			goto closed;
	}
	if (strncmp(fault, "lane-", 5) == 0 && !is(fault, "lane-after-never")) {
		/* "hello" into chunk 0, after every chunk record. */
		if (!is(fault, "lane-write-main") &&
		    lane_write(g_lane, name, 1, nchunks, 1000, "hello", 5) < 0)
			goto closed;
		/* Applied after every chunk record, and acknowledged. */
		if (is(fault, "lane-ok") && read_wack(g_lane) != 1) {
			fprintf(stderr, "craft: no WACK 1 on the write lane\n");
			return 1;
		}
		if (is(fault, "lane-closed-fence"))
			xport_shutdown_write(g_lane);
		fill_chunk(chunk, cs, 0);
		memcpy(chunk + 1000, "hello", 5);
		digest_set(dig, 0, digest_hash(chunk, digest_chunk_len(dig, 0)));
	}
	if (strncmp(fault, "lane-", 5) == 0 && !is(fault, "lane-write-main")) {
		if (send_fence(x, is(fault, "lane-ok") || is(fault, "lane-after-never") ? 1 : 2) <
		    0)
			goto closed;
		if (!is(fault, "lane-ok"))
			goto answer; /* the receiver waits, then fails */
	}
	if (is(fault, "mirror-ok") || is(fault, "mirror-after-eos") ||
	    strncmp(fault, "write-", 6) == 0 || is(fault, "lane-write-main")) {
		/* A mirrored client write of "hello" into chunk 0. */
		struct wire_record rec = { .kind = WIRE_REC_WRITE,
					   .seq = is(fault, "write-sequence") ? 2 : 1,
					   .offset = is(fault, "write-beyond") ? size - 2 : 1000,
					   .length = 5,
					   .op = WIRE_WRITE_DATA };

		snprintf(rec.name, sizeof(rec.name), "%s", name);
		n = wire_rec_encode_header(hdr, &rec);
		if (n < 0 || xport_write2(x, hdr, (size_t)n, "hello", 5) < 0)
			goto closed;
		fill_chunk(chunk, cs, 0);
		memcpy(chunk + 1000, "hello", 5);
		digest_set(dig, 0, digest_hash(chunk, digest_chunk_len(dig, 0)));
	}
	n = wire_rec_encode_header(hdr, &(struct wire_record){ .kind = WIRE_REC_EOS });
	xport_write(x, hdr, (size_t)n);
	if (strcmp(fault, "no-complete") == 0) {
		xport_shutdown_write(x);
		goto answer;
	}
	{
		static struct native_complete comp;

		comp.attempt = 1;
		comp.ndev = 1;
		snprintf(comp.dev[0].name, sizeof(comp.dev[0].name), "%s", name);
		digest_final(dig, comp.dev[0].digest, &comp.dev[0].chunks);
		if (strcmp(fault, "digest-mismatch") == 0)
			comp.dev[0].digest[0] ^= 0x5a;
		n = native_complete_encode(body, sizeof(body), &comp);
		if (n < 0 || send_all(x, body, (size_t)n) < 0)
			goto closed;
	}

answer:
	/* SYNCED answers each finished pass; the verdict comes after. */
	xport_set_timeout(x, 30000);
	do {
		r = xport_read(x, hdr, NATIVE_FRAME_HDR, NULL);
		if (r < 0)
			goto closed;
		len = get_be32(hdr + 1);
		if (len > sizeof(body) || xport_read(x, body, len, NULL) < 0)
			goto closed;
	} while (hdr[0] == NATIVE_MSG_SYNCED || hdr[0] == NATIVE_MSG_WACK ||
		 hdr[0] == NATIVE_MSG_STATE || hdr[0] == NATIVE_MSG_SUMS);
	if (hdr[0] == NATIVE_MSG_ACK) {
		bool good = is(fault, "ok") || is(fault, "shared-base") || is(fault, "mirror-ok") ||
			    is(fault, "zstd-ok") || strstr(fault, "-after-eos") ||
			    is(fault, "lane-ok");

		printf("receiver acknowledged\n");
		if (strcmp(fault, "no-commit") == 0)
			return 0; /* closing now is the fault */
		n = native_commit_encode(buf, sizeof(buf), 1);
		if (n < 0 || send_all(x, buf, (size_t)n) < 0)
			goto closed;
		return good ? 0 : 1;
	}
	if (hdr[0] == NATIVE_MSG_ERROR) {
		struct native_error e;

		if (native_error_decode(body, len, &e) == 0)
			printf("receiver failed: %s\n", e.reason);
		return must_pass(fault) ? 1 : 0;
	}
	printf("receiver sent message type 0x%02x\n", hdr[0]);
	return 1;

closed:
	printf("receiver closed the connection: %s\n", err_msg());
	return must_pass(fault) ? 1 : 0;
}
