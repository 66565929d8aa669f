/* SPDX-License-Identifier: MIT */
/*
 * blkmig inspect: decode a captured migration stream, native or QEMU, into
 * readable text: the envelope, every section or message, every record
 * (offset, device, data or zero, a short hash of the payload) and totals.
 * The file is mapped and walked with the same stream reader (wire/stream.h)
 * the destination engine uses, so what inspect calls malformed is what a
 * receiver would refuse.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "common/error.h"
#include "common/util.h"
#include "migrate/digest.h"
#include "wire/stream.h"

/* A name or reason from the stream, escaped for the terminal (str_escape()):
 * one printf's worth, from the one thread of this command. */
static const char *esc(const char *s)
{
	static char buf[STR_ESCAPE_CAP(NATIVE_REASON_MAX)];

	return str_escape(buf, sizeof(buf), s);
}

static const char inspect_help[] =
    "Usage: blkmig inspect [--quiet] FILE\n"
    "\n"
    "Decode a captured migration stream (blkmig's native format, or QEMU 7.2's,\n"
    "e.g. from QMP migrate to \"exec:cat > FILE\") into readable text: envelope,\n"
    "sections or messages, each record (offset, device, data or zero, a short\n"
    "hash of the payload) and totals per device.  --quiet prints only the\n"
    "envelope and the totals.  Exit status 1 when the stream is malformed or\n"
    "truncated, after printing what came before.\n";

struct totals {
	char name[WIRE_NAME_MAX + 1];
	uint64_t data, zero;
};

struct walk {
	struct wire_stream *ws;
	bool quiet;
	struct totals dev[64];
	unsigned ndev;
	uint64_t progress, eos;
	uint64_t writes;  /* WRITE records (mirrored client writes) */
	uint64_t decoded; /* bytes of the items shown */
};

static struct totals *totals_for(struct walk *w, const char *name)
{
	for (unsigned i = 0; i < w->ndev; i++)
		if (strcmp(w->dev[i].name, name) == 0)
			return &w->dev[i];
	if (w->ndev == ARRAY_SIZE(w->dev))
		return NULL;
	snprintf(w->dev[w->ndev].name, sizeof(w->dev[0].name), "%s", name);
	return &w->dev[w->ndev++];
}

static int show_record(struct walk *w, const struct wire_item *it)
{
	const struct wire_record *rec = &it->rec;
	uint64_t off = it->offset;
	struct totals *t;

	switch (rec->kind) {
	case WIRE_REC_EOS:
		w->eos++;
		if (!w->quiet)
			printf("    %10" PRIu64 "  EOS\n", off);
		break;
	case WIRE_REC_PROGRESS:
		w->progress = rec->percent;
		if (!w->quiet)
			printf("    %10" PRIu64 "  PROGRESS %" PRIu64 "%%\n", off, rec->percent);
		break;
	case WIRE_REC_WRITE:
		w->writes++;
		if (!w->quiet)
			printf("    %10" PRIu64 "  %-8s write %" PRIu64 " at %12" PRIu64
			       " length %u  %s\n",
			       off, esc(rec->name), rec->seq, rec->offset, rec->length,
			       rec->op == WIRE_WRITE_ZERO ? "zero" : "data");
		break;
	case WIRE_REC_FENCE:
		if (!w->quiet)
			printf("    %10" PRIu64 "  FENCE after write %" PRIu64 "\n", off, rec->seq);
		break;
	case WIRE_REC_ZSTD: /* the stream yields a compressed chunk as DATA */
		break;
	case WIRE_REC_DATA:
	case WIRE_REC_ZERO:
		t = totals_for(w, rec->name);
		if (!t)
			return err_set(EBADMSG, "more than 64 device names");
		if (rec->kind == WIRE_REC_DATA)
			t->data++;
		else
			t->zero++;
		if (w->quiet)
			break;
		if (rec->kind == WIRE_REC_DATA)
			printf("    %10" PRIu64 "  %-8s offset %12" PRIu64
			       "  data  xxh3 %016" PRIx64 "%s\n",
			       off, esc(rec->name), rec->offset,
			       digest_hash(rec->data, wire_stream_chunk_size(w->ws)),
			       it->packed ? "  (compressed)" : "");
		else
			printf("    %10" PRIu64 "  %-8s offset %12" PRIu64 "  zero\n", off,
			       esc(rec->name), rec->offset);
		break;
	}
	return 0;
}

static void show_hello(const struct native_hello *h)
{
	printf("native stream, version %u, chunk size %u, caps%s%s%s%s%s%s%s\n", h->version,
	       h->chunk_size, h->caps & NATIVE_CAP_ZERO_BLOCKS ? " zero-blocks" : "",
	       h->caps & NATIVE_CAP_SHARED_BASE ? " shared-base" : "",
	       h->caps & NATIVE_CAP_MIRROR ? " mirror" : "",
	       h->caps & NATIVE_CAP_DELTA ? " delta" : "",
	       h->caps & NATIVE_CAP_VERIFY ? " verify" : "",
	       h->caps & NATIVE_CAP_FORWARD ? " forward" : "",
	       h->caps & NATIVE_CAP_COMPRESS ? " compress" : "");
	if (h->caps & NATIVE_CAP_LANES)
		printf("  asks for %u connections (LANES): what follows is striped over them\n",
		       h->lanes);
	if (h->caps & NATIVE_CAP_WLANE)
		printf("  asks for a write lane (WLANE): mirrored writes travel on a connection of "
		       "their own, not here\n");
	printf("  migration id ");
	for (unsigned i = 0; i < NATIVE_ID_LEN; i++)
		printf("%02x", h->id[i]);
	printf("\n");
	for (unsigned i = 0; i < h->ndev; i++)
		printf("  device %s: %" PRIu64 " bytes\n", esc(h->dev[i].name), h->dev[i].size);
}

/* COMPLETE, ABORT, COMMIT: shown even with --quiet. */
static void show_message(struct walk *w, const struct wire_item *it, uint8_t type)
{
	uint64_t body = wire_stream_offset(w->ws) - it->offset - NATIVE_FRAME_HDR;

	printf("  %10" PRIu64 "  %s (%" PRIu64 " bytes)\n", it->offset, native_msg_name(type),
	       body);
	if (it->kind == WIRE_ITEM_COMPLETE) {
		const struct native_complete *c = it->complete;

		for (unsigned i = 0; i < c->ndev; i++) {
			printf("    attempt %" PRIu32 ", %s: %" PRIu64 " chunks, digest ",
			       c->attempt, esc(c->dev[i].name), c->dev[i].chunks);
			for (unsigned k = 0; k < NATIVE_DIGEST_LEN; k++)
				printf("%02x", c->dev[i].digest[k]);
			printf("\n");
		}
	} else if (it->kind == WIRE_ITEM_ABORT) {
		printf("    reason: %s\n", esc(it->error->reason));
	} else if (it->kind == WIRE_ITEM_VERDICT) {
		const struct native_verdict *v = it->verdict;

		for (unsigned i = 0; i < v->ndev; i++)
			printf("    %s: %" PRIu64 " of %" PRIu64 " chunks differ\n",
			       esc(v->dev[i].name), v->dev[i].differing, v->dev[i].checked);
	}
}

/* One item; 1 when the walk is over. */
static int show_item(struct walk *w, const struct wire_item *it)
{
	const struct savevm_section *s = &it->section;

	switch (it->kind) {
	case WIRE_ITEM_HELLO:
		show_hello(it->hello);
		break;
	case WIRE_ITEM_QEMU_HEADER:
		printf("QEMU migration stream, version %" PRIu64 "\n", it->value);
		break;
	case WIRE_ITEM_BLOCKS:
		if (!w->quiet)
			printf("  %10" PRIu64 "  BLOCKS\n", it->offset);
		break;
	case WIRE_ITEM_RECORD:
		return show_record(w, it);
	case WIRE_ITEM_COMPLETE:
		show_message(w, it, NATIVE_MSG_COMPLETE);
		break;
	case WIRE_ITEM_ABORT:
		show_message(w, it, NATIVE_MSG_ABORT);
		break;
	case WIRE_ITEM_COMMIT:
		show_message(w, it, NATIVE_MSG_COMMIT);
		break;
	case WIRE_ITEM_VERDICT:
		show_message(w, it, NATIVE_MSG_VERDICT);
		break;
	case WIRE_ITEM_CONFIG:
		printf("  %10" PRIu64 "  CONFIGURATION machine '%s'\n", it->offset, esc(s->name));
		break;
	case WIRE_ITEM_SECTION:
		if (!w->quiet)
			printf("  %10" PRIu64 "  %s '%s' (id %u)\n", it->offset,
			       savevm_type_name((uint8_t)s->type), esc(s->name), s->section_id);
		break;
	case WIRE_ITEM_EOF:
		printf("  %10" PRIu64 "  EOF\n", it->offset);
		break;
	case WIRE_ITEM_VMDESC:
		/* The JSON is not shown, nor read. */
		printf("  %10" PRIu64 "  VMDESCRIPTION (%" PRIu64 " bytes of JSON)\n", it->offset,
		       it->value);
		return 1;
	case WIRE_ITEM_END:
		/* A QEMU stream ends with EOF (the walk stops there). */
		if (wire_stream_format(w->ws) == WIRE_STREAM_QEMU)
			return err_set(EBADMSG, "truncated at offset %" PRIu64 ": no EOF",
				       it->offset);
		return 1;
	default: /* the reader lets no destination's message through */
		break;
	}
	return 0;
}

static int walk(struct walk *w)
{
	bool after_eof = false;

	for (;;) {
		struct wire_item it;
		int r = wire_stream_next(w->ws, &it);

		/* After EOF only a VMDESCRIPTION is shown; the rest, whatever
		 * it is, is not the stream's business. */
		if (after_eof && (r < 0 || it.kind != WIRE_ITEM_VMDESC))
			return 0;
		if (r < 0)
			return r;
		r = show_item(w, &it);
		if (r != 0)
			return r < 0 ? r : 0;
		w->decoded = wire_stream_offset(w->ws);
		after_eof = it.kind == WIRE_ITEM_EOF;
	}
}

int cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct walk w;
	struct wire_membuf mb = { 0 };
	struct stat sb;
	void *map = MAP_FAILED;
	int c, fd, r;

	memset(&w, 0, sizeof(w));
	optind = 1;
	while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			w.quiet = true;
			break;
		case 'h':
			fputs(inspect_help, stdout);
			return EXIT_OK;
		default:
			return cli_usage_error("inspect", "invalid option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("inspect", "exactly one FILE is needed");
	fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		r = errno;
		if (fd >= 0)
			close(fd);
		return cli_fail("inspect: %s: %s", argv[optind], strerror(r));
	}
	mb.len = (size_t)sb.st_size;
	if (mb.len > 0)
		map = mmap(NULL, mb.len, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (mb.len < 8 || map == MAP_FAILED) {
		if (map != MAP_FAILED)
			munmap(map, mb.len);
		return cli_fail("inspect: %s: too short to be a migration stream", argv[optind]);
	}
	mb.p = map;
	r = wire_stream_new(WIRE_STREAM_AUTO, wire_membuf_read, &mb, &w.ws);
	if (r == 0) {
		/* A capture is what a source sends. */
		wire_stream_allow(
		    w.ws, NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
			      NATIVE_ALLOW(NATIVE_MSG_ABORT) | NATIVE_ALLOW(NATIVE_MSG_COMMIT) |
			      NATIVE_ALLOW(NATIVE_MSG_VERDICT));
		r = walk(&w);
	}
	wire_stream_free(w.ws);
	printf("totals:\n");
	for (unsigned i = 0; i < w.ndev; i++)
		printf("  %s: %" PRIu64 " data records, %" PRIu64 " zero records\n",
		       esc(w.dev[i].name), w.dev[i].data, w.dev[i].zero);
	if (w.writes)
		printf("  %" PRIu64 " mirrored writes\n", w.writes);
	printf("  %" PRIu64 " EOS, last progress %" PRIu64 "%%, %" PRIu64 " of %zu bytes decoded\n",
	       w.eos, w.progress, w.decoded, mb.len);
	munmap(map, mb.len);
	if (r < 0)
		return cli_fail("inspect: %s: %s", argv[optind], err_msg());
	return EXIT_OK;
}
