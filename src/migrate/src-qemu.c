/* SPDX-License-Identifier: MIT */
/*
 * QEMU 7.2's stream format, source side (QEMU-STREAM.md): the savevm
 * header, a "none" configuration, the block section as START (empty),
 * one PART per pass and END for the final pass, then EOF and the
 * VMDESCRIPTION a 7.2 destination waits for.  There is no return path:
 * nothing is confirmed, nothing is mirrored, and "complete" means every
 * chunk was sent and the stream closed.
 */
#include <errno.h>
#include <stdio.h>

#include "common/error.h"
#include "src-impl.h"
#include "transport/transport.h"
#include "wire/savevm.h"

#define QEMU_BLOCK_SECTION 1 /* the section id blkmig gives "block" */

static int put_section(struct src_job *j, enum savevm_type type)
{
	uint8_t buf[SAVEVM_SECTION_HDR_MAX];
	struct savevm_section sec = { .type = type,
				      .section_id = QEMU_BLOCK_SECTION,
				      .version_id = 1 };
	int n;

	snprintf(sec.name, sizeof(sec.name), "block");
	n = savevm_section_encode(buf, sizeof(buf), &sec);
	return n < 0 ? n : xport_write(j->x, buf, (size_t)n);
}

static int put_footer(struct src_job *j)
{
	uint8_t buf[16];
	int n = savevm_footer_encode(buf, sizeof(buf), QEMU_BLOCK_SECTION);

	return n < 0 ? n : xport_write(j->x, buf, (size_t)n);
}

static int put_record(struct src_job *j, const struct wire_record *rec)
{
	uint8_t hdr[WIRE_REC_HDR_MAX];
	int n = wire_rec_encode_header(hdr, rec);

	return n < 0 ? n : xport_write(j->x, hdr, (size_t)n);
}

/* Header, configuration "none", and a START block section holding EOS. */
static int qemu_open(struct src_job *j)
{
	uint8_t buf[SAVEVM_SECTION_HDR_MAX];
	struct savevm_section cfg = { .type = SAVEVM_CONFIGURATION };
	int n, r;

	n = savevm_header_encode(buf, sizeof(buf));
	r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	snprintf(cfg.name, sizeof(cfg.name), "none");
	if (r == 0) {
		n = savevm_section_encode(buf, sizeof(buf), &cfg);
		r = n < 0 ? n : xport_write(j->x, buf, (size_t)n);
	}
	if (r == 0)
		r = put_section(j, SAVEVM_START);
	if (r == 0)
		r = put_record(j, &(struct wire_record){ .kind = WIRE_REC_EOS });
	if (r == 0)
		r = put_footer(j);
	if (r == 0)
		r = xport_flush(j->x);
	return r < 0 ? err_prefix(-r, "qemu stream: ") : 0;
}

static int qemu_pass_begin(struct src_job *j, bool final)
{
	int r = put_section(j, final ? SAVEVM_END : SAVEVM_PART);

	j->in_blocks = r == 0;
	return r;
}

static int qemu_pass_end(struct src_job *j, bool final)
{
	int r = 0;

	/* QEMU's own source ends its END section this way. */
	if (final)
		r = put_record(j,
			       &(struct wire_record){ .kind = WIRE_REC_PROGRESS, .percent = 100 });
	if (r == 0)
		r = put_record(j, &(struct wire_record){ .kind = WIRE_REC_EOS });
	if (r == 0)
		r = put_footer(j);
	if (r == 0) {
		j->in_blocks = false;
		j->passes_sent++;
		r = xport_flush(j->x);
	}
	return r;
}

static int qemu_synced(struct src_job *j)
{
	(void)j; /* no return path: nothing to wait for */
	return 0;
}

/* EOF, the VMDESCRIPTION a 7.2 destination waits for, then close. */
static int qemu_complete(struct src_job *j)
{
	static const char json[] = "{\"page_size\": 4096, \"devices\": []}";
	uint8_t buf[64];
	uint8_t eof = SAVEVM_EOF;
	int n = savevm_vmdesc_encode(buf, sizeof(buf), json, sizeof(json) - 1);
	int r = n < 0 ? n : xport_write(j->x, &eof, 1);

	if (r == 0)
		r = xport_write(j->x, buf, (size_t)n);
	if (r == 0)
		r = xport_shutdown_write(j->x);
	return r < 0 ? err_prefix(-r, "qemu stream: ") : 0;
}

static int qemu_commit(struct src_job *j)
{
	(void)j; /* the stream is closed already */
	return 0;
}

static void qemu_abort(struct src_job *j, int err, const char *reason)
{
	/* QEMU has no message for it: the stream just ends. */
	(void)j, (void)err, (void)reason;
}

const struct src_format src_format_qemu = {
	.name = "qemu",
	.display = "QEMU",
	.fixed_chunk = WIRE_QEMU_CHUNK_SIZE,
	/* QEMU 7.2's destination writes a last chunk's whole 1 MiB and fails
	 * past the device end (QEMU-STREAM.md). */
	.size_align = WIRE_QEMU_CHUNK_SIZE,
	.open = qemu_open,
	.pass_begin = qemu_pass_begin,
	.pass_end = qemu_pass_end,
	.synced = qemu_synced,
	.complete = qemu_complete,
	.commit = qemu_commit,
	.abort = qemu_abort,
};
