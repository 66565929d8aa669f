/* SPDX-License-Identifier: MIT */
/*
 * blkmig inspect: decode a captured migration stream, native or QEMU, into
 * readable text: the envelope, every section or message, every record
 * (offset, device, data or zero, a short hash of the payload) and totals.
 * The file is mapped and walked with the same pure decoders the engines use,
 * so what inspect calls malformed is what a receiver would refuse.
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
#include "wire/native.h"
#include "wire/record.h"
#include "wire/savevm.h"

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
	const uint8_t *p;
	size_t len, off;
	bool quiet;
	uint32_t chunk;
	struct totals dev[64];
	unsigned ndev;
	uint64_t progress, eos;
	bool native;	 /* WRITE records may appear */
	uint64_t writes; /* WRITE records (mirrored client writes) */
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

static int truncated(struct walk *w, const char *what)
{
	return err_set(EBADMSG, "truncated at offset %zu inside %s", w->len, what);
}

/* Records up to and including EOS. */
static int walk_records(struct walk *w)
{
	for (;;) {
		struct wire_record rec;
		size_t used;
		int r = wire_rec_decode(w->p + w->off, w->len - w->off, w->chunk, &rec, &used);
		struct totals *t;

		if (r == -EAGAIN)
			return truncated(w, "a block record");
		if (r < 0)
			return err_prefix(-r, "offset %zu: ", w->off);
		switch (rec.kind) {
		case WIRE_REC_EOS:
			w->eos++;
			if (!w->quiet)
				printf("    %10zu  EOS\n", w->off);
			w->off += used;
			return 0;
		case WIRE_REC_PROGRESS:
			w->progress = rec.percent;
			if (!w->quiet)
				printf("    %10zu  PROGRESS %" PRIu64 "%%\n", w->off, rec.percent);
			break;
		case WIRE_REC_WRITE:
			if (!w->native)
				return err_set(
				    EBADMSG, "offset %zu: a WRITE record in a QEMU stream", w->off);
			w->writes++;
			if (!w->quiet)
				printf("    %10zu  %-8s write %" PRIu64 " at %12" PRIu64
				       " length %u  %s\n",
				       w->off, rec.name, rec.seq, rec.offset, rec.length,
				       rec.op == WIRE_WRITE_ZERO ? "zero" : "data");
			break;
		case WIRE_REC_DATA:
		case WIRE_REC_ZERO:
			t = totals_for(w, rec.name);
			if (!t)
				return err_set(EBADMSG, "more than 64 device names");
			if (rec.kind == WIRE_REC_DATA)
				t->data++;
			else
				t->zero++;
			if (!w->quiet) {
				if (rec.kind == WIRE_REC_DATA)
					printf("    %10zu  %-8s offset %12" PRIu64
					       "  data  xxh3 %016" PRIx64 "\n",
					       w->off, rec.name, rec.offset,
					       digest_hash(rec.data, w->chunk));
				else
					printf("    %10zu  %-8s offset %12" PRIu64 "  zero\n",
					       w->off, rec.name, rec.offset);
			}
			break;
		}
		w->off += used;
	}
}

static int walk_native(struct walk *w)
{
	static struct native_hello h;
	size_t used;
	int r = native_hello_decode(w->p, w->len, &h, &used);

	if (r == -EAGAIN)
		return truncated(w, "HELLO");
	if (r < 0)
		return r;
	w->chunk = h.chunk_size;
	printf("native stream, version %u, chunk size %u, caps%s%s\n", h.version, h.chunk_size,
	       h.caps & NATIVE_CAP_ZERO_BLOCKS ? " zero-blocks" : "",
	       h.caps & NATIVE_CAP_SHARED_BASE ? " shared-base" : "");
	for (unsigned i = 0; i < h.ndev; i++)
		printf("  device %s: %" PRIu64 " bytes\n", h.dev[i].name, h.dev[i].size);
	w->off = used;
	while (w->off < w->len) {
		uint8_t type = w->p[w->off];
		uint32_t len;

		if (type == NATIVE_MSG_BLOCKS) {
			if (!w->quiet)
				printf("  %10zu  BLOCKS\n", w->off);
			w->off++;
			r = walk_records(w);
			if (r < 0)
				return r;
			continue;
		}
		if (w->len - w->off < NATIVE_FRAME_HDR)
			return truncated(w, "a message header");
		r = native_frame_header(w->p + w->off,
					NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |
					    NATIVE_ALLOW(NATIVE_MSG_ABORT) |
					    NATIVE_ALLOW(NATIVE_MSG_COMMIT),
					&type, &len);
		if (r < 0)
			return err_prefix(-r, "offset %zu: ", w->off);
		if (w->len - w->off - NATIVE_FRAME_HDR < len)
			return truncated(w, native_msg_name(type));
		printf("  %10zu  %s (%u bytes)\n", w->off, native_msg_name(type), len);
		if (type == NATIVE_MSG_COMPLETE) {
			static struct native_complete c;

			r = native_complete_decode(w->p + w->off + NATIVE_FRAME_HDR, len, &c);
			if (r < 0)
				return err_prefix(-r, "offset %zu: ", w->off);
			for (unsigned i = 0; i < c.ndev; i++) {
				printf("    %s: %" PRIu64 " chunks, digest ", c.dev[i].name,
				       c.dev[i].chunks);
				for (unsigned k = 0; k < NATIVE_DIGEST_LEN; k++)
					printf("%02x", c.dev[i].digest[k]);
				printf("\n");
			}
		} else if (type == NATIVE_MSG_ABORT) {
			struct native_error e;

			if (native_error_decode(w->p + w->off + NATIVE_FRAME_HDR, len, &e) == 0)
				printf("    reason: %s\n", e.reason);
		}
		w->off += NATIVE_FRAME_HDR + len;
	}
	return 0;
}

static int walk_qemu(struct walk *w)
{
	struct {
		uint32_t id;
		char name[SAVEVM_NAME_MAX + 1];
	} sec[64];
	unsigned nsec = 0;
	size_t used;
	int r = savevm_header_decode(w->p, w->len, &used);

	if (r == -EAGAIN)
		return truncated(w, "the header");
	if (r < 0)
		return r;
	w->chunk = WIRE_QEMU_CHUNK_SIZE;
	printf("QEMU migration stream, version %u\n", SAVEVM_VERSION);
	w->off = used;
	for (;;) {
		struct savevm_section s;
		const char *name = NULL;
		uint32_t skip;

		r = savevm_section_decode(w->p + w->off, w->len - w->off, &s, &used);
		if (r == -EAGAIN)
			return truncated(w, "a section header");
		if (r < 0)
			return err_prefix(-r, "offset %zu: ", w->off);
		if (s.type == SAVEVM_CONFIGURATION || s.type == SAVEVM_EOF || !w->quiet)
			printf("  %10zu  %s", w->off, savevm_type_name((uint8_t)s.type));
		w->off += used;
		if (s.type == SAVEVM_CONFIGURATION) {
			printf(" machine '%s'\n", s.name);
			continue;
		}
		if (s.type == SAVEVM_EOF) {
			printf("\n");
			break;
		}
		if (s.type == SAVEVM_START || s.type == SAVEVM_FULL) {
			if (nsec == ARRAY_SIZE(sec))
				return err_set(EBADMSG, "more than 64 sections");
			sec[nsec].id = s.section_id;
			snprintf(sec[nsec].name, sizeof(sec[nsec].name), "%s", s.name);
			name = sec[nsec++].name;
		} else {
			for (unsigned i = 0; i < nsec; i++)
				if (sec[i].id == s.section_id)
					name = sec[i].name;
		}
		if (!name)
			return err_set(EBADMSG, "offset %zu: section id %u was never started",
				       w->off, s.section_id);
		if (!w->quiet)
			printf(" '%s' (id %u)\n", name, s.section_id);
		if (strcmp(name, "block") == 0) {
			r = walk_records(w);
		} else if (strcmp(name, "ram") == 0) {
			r = savevm_ram_decode(w->p + w->off, w->len - w->off,
					      s.type == SAVEVM_START, &used);
			if (r == 0)
				w->off += used;
		} else {
			r = savevm_skip_size(&s, &skip);
			if (r == 0 && w->len - w->off < skip)
				return truncated(w, name);
			if (r == 0)
				w->off += skip;
		}
		if (r == -EAGAIN)
			return truncated(w, name);
		if (r < 0)
			return err_prefix(-r, "section '%s': ", name);
		snprintf(s.name, sizeof(s.name), "%s", name);
		r = savevm_footer_decode(w->p + w->off, w->len - w->off, s.section_id, s.name,
					 &used);
		if (r == -EAGAIN)
			return truncated(w, "a footer");
		if (r < 0)
			return err_prefix(-r, "offset %zu: ", w->off);
		w->off += used;
	}
	if (w->off < w->len) {
		struct savevm_section s;

		r = savevm_section_decode(w->p + w->off, w->len - w->off, &s, &used);
		if (r == 0 && s.type == SAVEVM_VMDESCRIPTION)
			printf("  %10zu  VMDESCRIPTION (%u bytes of JSON)\n", w->off, s.len);
	}
	return 0;
}

int cmd_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct walk w;
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
	w.len = (size_t)sb.st_size;
	if (w.len > 0)
		map = mmap(NULL, w.len, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (w.len < 8 || map == MAP_FAILED) {
		if (map != MAP_FAILED)
			munmap(map, w.len);
		return cli_fail("inspect: %s: too short to be a migration stream", argv[optind]);
	}
	w.p = map;
	if (get_be32(w.p) == SAVEVM_MAGIC)
		r = walk_qemu(&w);
	else if (get_be64(w.p) == NATIVE_MAGIC)
		w.native = true, r = walk_native(&w);
	else
		r = err_set(EBADMSG, "neither a blkmig native stream nor a QEMU migration stream");
	printf("totals:\n");
	for (unsigned i = 0; i < w.ndev; i++)
		printf("  %s: %" PRIu64 " data records, %" PRIu64 " zero records\n", w.dev[i].name,
		       w.dev[i].data, w.dev[i].zero);
	if (w.writes)
		printf("  %" PRIu64 " mirrored writes\n", w.writes);
	printf("  %" PRIu64 " EOS, last progress %" PRIu64 "%%, %zu of %zu bytes decoded\n", w.eos,
	       w.progress, w.off, w.len);
	munmap(map, w.len);
	if (r < 0)
		return cli_fail("inspect: %s: %s", argv[optind], err_msg());
	return EXIT_OK;
}
