/* SPDX-License-Identifier: MIT */
/*
 * Destination engine: receive one native-format migration (see migrate.h,
 * docs/wire-format.md).
 *
 *   HELLO -> open each device, check it, mark it incomplete; READY
 *   BLOCKS -> validate each record fully, then apply it (last wins);
 *             at EOS fdatasync, read back what the pass wrote, SYNCED
 *   COMPLETE -> every chunk carried? digests match? ACK
 *   COMMIT -> the source has fenced itself: clear the marks, succeed
 *   ABORT, EOF, anything malformed -> ERROR to the source, fail
 *
 * Nothing is written before a record has passed every check (DESIGN.md
 * rule 4): known device, chunk-aligned offset inside it, the part of the
 * payload past the device end dropped.  One thread does everything.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap/dirty.h"
#include "block/backend.h"
#include "block/mark.h"
#include "common/error.h"
#include "common/util.h"
#include "digest.h"
#include "engine.h"
#include "transport/transport.h"
#include "wire/savevm.h"

struct dst_dev {
	char name[WIRE_NAME_MAX + 1];
	char path[4096];
	struct blk *blk;
	uint64_t size;
	struct digest_table *dig;
	struct dirty *pass; /* chunks written in the current pass */
	bool marked;
};

struct dst {
	const struct dst_params *p;
	struct xport *x;
	struct native_hello hello;
	unsigned ndev;
	struct dst_dev dev[NATIVE_MAX_DEVICES];
	uint8_t *rec; /* one whole record: header + chunk */
	size_t rec_cap;
	uint8_t body[NATIVE_MSG_MAX];
	uint64_t stream_off; /* bytes of the stream consumed, for messages */
	uint64_t wseq;	     /* the last WRITE record applied */
	struct mig_stats st;
};

static struct dst_dev *find_dev(struct dst *d, const char *name)
{
	for (unsigned i = 0; i < d->ndev; i++)
		if (strcmp(d->dev[i].name, name) == 0)
			return &d->dev[i];
	return NULL;
}

/* Read exactly len bytes of the stream into buf, counting stream offset. */
static int rd(struct dst *d, void *buf, size_t len)
{
	size_t got = 0;
	int r = xport_read(d->x, buf, len, &got);

	d->stream_off += got;
	return r;
}

/* ---- handshake ------------------------------------------------------------ */

static int read_hello(struct dst *d)
{
	static _Thread_local uint8_t buf[NATIVE_HELLO_MAX];
	size_t have = 0, need = 8;
	int r;

	for (;;) {
		if (need > sizeof(buf))
			return err_set(EBADMSG, "handshake: HELLO too large");
		r = rd(d, buf + have, need - have);
		if (r < 0)
			return err_prefix(-r, "handshake: ");
		have = need;
		r = native_hello_decode(buf, have, &d->hello, &need);
		if (r == 0)
			return 0;
		if (r != -EAGAIN)
			return err_prefix(-r, "handshake: ");
	}
}

static int open_devices(struct dst *d)
{
	const struct native_hello *h = &d->hello;
	int r;

	if ((h->caps & NATIVE_CAP_SHARED_BASE) && !d->p->allow_shared_base)
		return err_set(EPERM, "the source sends a shared-base migration (only allocated "
				      "data; the image must already hold the base): accept it with "
				      "receive --shared-base");
	for (unsigned i = 0; i < h->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];

		snprintf(dev->name, sizeof(dev->name), "%s", h->dev[i].name);
		dev->size = h->dev[i].size;
		r = d->p->open(d->p->user, dev->name, dev->size, &dev->blk, dev->path,
			       sizeof(dev->path));
		if (r < 0)
			return r;
		d->ndev++;
		if (d->p->qemu) /* QEMU announces no sizes: the image's own */
			dev->size = blk_size(dev->blk);
		if (blk_size(dev->blk) != dev->size) {
			char a[32], b[32];

			return err_set(EINVAL,
				       "device %s: size mismatch: source %s (%llu bytes), "
				       "destination %s (%llu bytes)",
				       dev->name, fmt_bytes(a, sizeof(a), dev->size),
				       (unsigned long long)dev->size,
				       fmt_bytes(b, sizeof(b), blk_size(dev->blk)),
				       (unsigned long long)blk_size(dev->blk));
		}
		dev->dig = digest_new(dev->size, h->chunk_size);
		dev->pass = dirty_new(dev->size, h->chunk_size);
		if (!dev->dig || !dev->pass)
			return err_set(ENOMEM, "device %s: no memory for the tables of %llu chunks",
				       dev->name,
				       (unsigned long long)div_round_up(dev->size, h->chunk_size));
		/* Marked as soon as it is ours, before anything else can fail:
		 * an image this run created or will write is never left
		 * looking complete. */
		if (dev->path[0]) {
			r = mark_incomplete(dev->path, "blkmig migration in progress");
			if (r < 0)
				return r;
			dev->marked = true;
		}
		snprintf(d->st.dev[i].name, sizeof(d->st.dev[i].name), "%s", dev->name);
		d->st.dev[i].size = dev->size;
		d->st.total += dev->size;
	}
	d->st.ndev = d->ndev;
	for (unsigned i = 0; i < d->p->nexpect; i++)
		if (!find_dev(d, d->p->expect[i]))
			return err_set(ENOENT,
				       "device %s is not in the migration (the source "
				       "sends: %s%s)",
				       d->p->expect[i], h->dev[0].name, h->ndev > 1 ? ", ..." : "");
	d->rec_cap = WIRE_REC_HDR_MAX + h->chunk_size;
	d->rec = aligned_alloc(4096, div_round_up(d->rec_cap, 4096) * 4096);
	if (!d->rec)
		return err_set(ENOMEM, "no memory for a %u-byte chunk buffer", h->chunk_size);
	return 0;
}

static int send_frame(struct dst *d, int n, const uint8_t *buf)
{
	int r;

	if (n < 0)
		return n;
	r = xport_write(d->x, buf, (size_t)n);
	return r == 0 ? xport_flush(d->x) : r;
}

/* ---- records -------------------------------------------------------------- */

static int apply(struct dst *d, const struct wire_record *rec, uint64_t rec_off)
{
	uint32_t cs = d->hello.chunk_size;
	struct dst_dev *dev = find_dev(d, rec->name);
	uint64_t idx;
	size_t len;
	int r;

	if (!dev)
		return err_set(ENOENT, "record at stream offset %llu: unknown device '%s'",
			       (unsigned long long)rec_off, rec->name);
	if (rec->offset >= dev->size)
		return err_set(ERANGE,
			       "record at stream offset %llu: offset 0x%llx beyond device %s "
			       "(size %llu bytes)",
			       (unsigned long long)rec_off, (unsigned long long)rec->offset,
			       dev->name, (unsigned long long)dev->size);
	/* ZERO_BLOCK is accepted whether or not the source announced the
	 * capability, as QEMU does. */
	idx = rec->offset / cs;
	len = digest_chunk_len(dev->dig, idx); /* clips the device's last chunk */

	if (rec->kind == WIRE_REC_ZERO || mem_is_zero(rec->data, len)) {
		r = blk_zero(dev->blk, rec->offset, len, BLK_ZERO_MAY_TRIM);
		digest_set(dev->dig, idx, digest_zero_hash(dev->dig, idx));
	} else {
		r = blk_pwrite(dev->blk, rec->data, len, rec->offset);
		digest_set(dev->dig, idx, digest_hash(rec->data, len));
		/* Overlap the disk with the network: the pass's fdatasync then
		 * waits only for the last few chunks. */
		if (r == 0)
			blk_writeback(dev->blk, rec->offset, len);
	}
	if (r < 0)
		return err_prefix(-r, "write %s at offset %llu: ", dev->name,
				  (unsigned long long)rec->offset);
	dirty_mark(dev->pass, rec->offset, len);
	if (rec->kind == WIRE_REC_ZERO)
		d->st.dev[dev - d->dev].zero_chunks++;
	else
		d->st.dev[dev - d->dev].data_chunks++;
	return 0;
}

/*
 * A client write the source mirrored (active mode): validated like a
 * chunk, applied in sequence, its chunks' digests taken again from what the
 * image now holds, then acknowledged at once: the writer on the source is
 * waiting for this WACK.
 */
static int apply_write(struct dst *d, const struct wire_record *rec, uint64_t rec_off)
{
	uint32_t cs = d->hello.chunk_size;
	struct dst_dev *dev = find_dev(d, rec->name);
	uint8_t buf[NATIVE_FRAME_HDR + 8];
	uint64_t end;
	int r;

	if (d->p->qemu || !(d->hello.caps & NATIVE_CAP_MIRROR))
		return err_set(EBADMSG,
			       "record at stream offset %llu: a WRITE record, which this stream "
			       "did not announce",
			       (unsigned long long)rec_off);
	if (!dev)
		return err_set(ENOENT, "record at stream offset %llu: unknown device '%s'",
			       (unsigned long long)rec_off, rec->name);
	if (ckd_add_u64(&end, rec->offset, rec->length) || end > dev->size)
		return err_set(ERANGE,
			       "record at stream offset %llu: write of %u bytes at offset %llu "
			       "beyond device %s (size %llu bytes)",
			       (unsigned long long)rec_off, rec->length,
			       (unsigned long long)rec->offset, dev->name,
			       (unsigned long long)dev->size);
	if (rec->seq != d->wseq + 1)
		return err_set(EBADMSG,
			       "record at stream offset %llu: write %llu out of sequence "
			       "(expected %llu)",
			       (unsigned long long)rec_off, (unsigned long long)rec->seq,
			       (unsigned long long)d->wseq + 1);
	if (rec->op == WIRE_WRITE_ZERO)
		r = blk_zero(dev->blk, rec->offset, rec->length, BLK_ZERO_MAY_TRIM);
	else
		r = blk_pwrite(dev->blk, rec->data, rec->length, rec->offset);
	if (r < 0)
		return err_prefix(-r, "mirrored write to %s at offset %llu: ", dev->name,
				  (unsigned long long)rec->offset);
	d->wseq = rec->seq;
	r = send_frame(d, native_wack_encode(buf, sizeof(buf), rec->seq), buf);
	if (r < 0)
		return err_prefix(-r, "acknowledging a write: ");
	/* After the answer, so the writer does not wait for it: the digest
	 * of each chunk touched, read from the image (a read-back too) into
	 * the record buffer, whose payload is written already. */
	for (uint64_t c = rec->offset / cs; c <= (end - 1) / cs; c++) {
		size_t len = digest_chunk_len(dev->dig, c);

		r = blk_pread(dev->blk, d->rec, len, c * cs);
		if (r < 0)
			return err_prefix(-r, "read back %s at offset %llu: ", dev->name,
					  (unsigned long long)(c * cs));
		digest_set(dev->dig, c, digest_hash(d->rec, len));
	}
	d->st.mirror_writes++;
	d->st.mirror_bytes += rec->length;
	return 0;
}

static int sync_all(struct dst *d)
{
	for (unsigned i = 0; i < d->ndev; i++) {
		int r = blk_flush(d->dev[i].blk);

		if (r < 0)
			return err_prefix(-r, "sync %s: ", d->dev[i].name);
	}
	return 0;
}

/*
 * After a pass is durable, read back every chunk it wrote and compare with
 * what was applied.  This is what makes the final digests describe the
 * images rather than the stream: a write that landed elsewhere (two
 * --device names on one file, a zeroing fallback that did not zero) shows
 * up here.  Later passes' writes replace earlier hashes, so each chunk is
 * checked in its final state by the pass that last wrote it.
 */
static int verify_pass(struct dst *d)
{
	uint32_t cs = d->hello.chunk_size;

	for (unsigned i = 0; i < d->ndev; i++) {
		struct dst_dev *dev = &d->dev[i];
		int64_t idx = -1;

		while ((idx = dirty_next(dev->pass, (uint64_t)(idx + 1))) >= 0) {
			uint64_t off = (uint64_t)idx * cs;
			size_t len = digest_chunk_len(dev->dig, (uint64_t)idx);
			int r;

			dirty_test_and_clear(dev->pass, (uint64_t)idx);
			/* A zero chunk that is a hole needs no read. */
			if (digest_get(dev->dig, (uint64_t)idx) ==
				digest_zero_hash(dev->dig, (uint64_t)idx) &&
			    blk_is_hole(dev->blk, off, len))
				continue;
			r = blk_pread(dev->blk, d->rec, len, off);
			if (r < 0)
				return err_prefix(-r, "read back %s at offset %llu: ", dev->name,
						  (unsigned long long)off);
			if (digest_hash(d->rec, len) != digest_get(dev->dig, (uint64_t)idx))
				return err_set(EILSEQ,
					       "device %s: the chunk at offset %llu does not "
					       "read back as it was written",
					       dev->name, (unsigned long long)off);
		}
	}
	return 0;
}

static int read_blocks(struct dst *d)
{
	uint32_t cs = d->hello.chunk_size;

	for (;;) {
		struct wire_record rec;
		uint64_t rec_off = d->stream_off;
		size_t have = 0, need = 8;
		int r;

		for (;;) {
			r = rd(d, d->rec + have, need - have);
			if (r < 0)
				return err_prefix(-r, "record at stream offset %llu: ",
						  (unsigned long long)rec_off);
			have = need;
			r = wire_rec_decode(d->rec, have, cs, &rec, &need);
			if (r == 0)
				break;
			if (r != -EAGAIN)
				return err_prefix(-r, "record at stream offset %llu: ",
						  (unsigned long long)rec_off);
			if (need > d->rec_cap)
				return err_set(EBADMSG, "record at stream offset %llu too large",
					       (unsigned long long)rec_off);
		}
		switch (rec.kind) {
		case WIRE_REC_EOS:
			d->st.iterations++;
			return 0;
		case WIRE_REC_PROGRESS:
			break;
		case WIRE_REC_DATA:
		case WIRE_REC_ZERO:
			r = apply(d, &rec, rec_off);
			if (r < 0)
				return r;
			break;
		case WIRE_REC_WRITE:
			r = apply_write(d, &rec, rec_off);
			if (r < 0)
				return r;
			break;
		}
	}
}

/* ---- completion ------------------------------------------------------------- */

/* The migration is complete: the images may be served as such now. */
static int clear_marks(struct dst *d)
{
	for (unsigned i = 0; i < d->ndev; i++) {
		int r;

		if (!d->dev[i].marked)
			continue;
		r = mark_clear(d->dev[i].path);
		if (r < 0)
			return r;
		d->dev[i].marked = false;
	}
	return 0;
}

/* Read the framed message after the ACK: COMMIT, or ABORT. */
static int await_commit(struct dst *d)
{
	uint8_t hdr[NATIVE_FRAME_HDR], type;
	uint32_t len;
	int r = rd(d, hdr, sizeof(hdr));

	if (r == -ECONNRESET)
		return err_set(ECONNRESET,
			       "the source closed the connection after the "
			       "acknowledgement without committing: it keeps the devices");
	if (r < 0)
		return err_prefix(-r, "waiting for the source to commit: ");
	r = native_frame_header(
	    hdr, NATIVE_ALLOW(NATIVE_MSG_COMMIT) | NATIVE_ALLOW(NATIVE_MSG_ABORT), &type, &len);
	if (r < 0)
		return err_prefix(-r, "waiting for the source to commit: ");
	r = rd(d, d->body, len);
	if (r < 0)
		return err_prefix(-r, "waiting for the source to commit: ");
	if (type == NATIVE_MSG_ABORT) {
		struct native_error e;

		r = native_error_decode(d->body, len, &e);
		if (r < 0)
			return r;
		return err_set((int)e.err, "source aborted after the acknowledgement: %s",
			       e.reason);
	}
	return 0;
}

static int complete(struct dst *d, uint32_t len)
{
	static _Thread_local struct native_complete c;
	uint8_t buf[NATIVE_FRAME_HDR + 8];
	int r = native_complete_decode(d->body, len, &c);

	if (r < 0)
		return err_prefix(-r, "completion: ");
	if (c.ndev != d->ndev)
		return err_set(EBADMSG, "completion: %u digests for %u devices", c.ndev, d->ndev);
	for (unsigned i = 0; i < c.ndev; i++) {
		struct dst_dev *dev = find_dev(d, c.dev[i].name);
		uint8_t ours[DIGEST_LEN];
		uint64_t chunks;

		if (!dev)
			return err_set(EBADMSG, "completion: digest for unknown device '%s'",
				       c.dev[i].name);
		digest_final(dev->dig, ours, &chunks);
		/* Without a shared base, every chunk must have been carried
		 * at least once, or part of the image is simply old data. */
		if (!(d->hello.caps & NATIVE_CAP_SHARED_BASE) && chunks != digest_nchunks(dev->dig))
			return err_set(EBADMSG,
				       "device %s: the source carried %llu of %llu chunks: "
				       "the migration is incomplete",
				       dev->name, (unsigned long long)chunks,
				       (unsigned long long)digest_nchunks(dev->dig));
		if (chunks != c.dev[i].chunks || memcmp(ours, c.dev[i].digest, DIGEST_LEN) != 0)
			return err_set(EILSEQ,
				       "device %s: digest mismatch (source %llu chunks, "
				       "destination %llu chunks): the image is not what was sent",
				       dev->name, (unsigned long long)c.dev[i].chunks,
				       (unsigned long long)chunks);
	}
	/* Everything is durable and verified, but the source still owns the
	 * devices until it has fenced itself and says so. */
	r = send_frame(d, native_ack_encode(buf, sizeof(buf)), buf);
	if (r < 0)
		return err_prefix(-r, "acknowledgement: ");
	r = await_commit(d);
	if (r < 0)
		return r;
	return clear_marks(d);
}

static int run(struct dst *d)
{
	uint8_t buf[NATIVE_FRAME_HDR + 8];
	int r = read_hello(d);

	if (r < 0)
		return r;
	r = open_devices(d);
	if (r < 0)
		return r;
	r = send_frame(d, native_ready_encode(buf, sizeof(buf), NATIVE_VERSION), buf);
	if (r < 0)
		return err_prefix(-r, "handshake: ");
	d->st.state = MIG_BULK;

	for (;;) {
		uint64_t msg_off = d->stream_off;
		uint8_t type;
		uint32_t len;

		r = rd(d, &type, 1);
		if (r == -ECONNRESET)
			return err_set(ECONNRESET,
				       "the source closed the connection at stream offset "
				       "%llu, before completing the migration",
				       (unsigned long long)msg_off);
		if (r < 0)
			return err_prefix(-r, "at stream offset %llu (expecting a message): ",
					  (unsigned long long)msg_off);
		if (type == NATIVE_MSG_BLOCKS) {
			/* Each pass is made durable and confirmed before the
			 * next: the source's bandwidth estimate then covers the
			 * destination's disk, and the final pause never has to
			 * wait for an earlier pass to reach it. */
			r = read_blocks(d);
			if (r == 0)
				r = sync_all(d);
			if (r == 0)
				r = verify_pass(d);
			if (r == 0)
				r = send_frame(
				    d, native_synced_encode(buf, sizeof(buf), d->st.iterations),
				    buf);
			if (r < 0)
				return r;
			continue;
		}
		if (type != NATIVE_MSG_COMPLETE && type != NATIVE_MSG_ABORT)
			return err_set(EBADMSG,
				       "at stream offset %llu: unexpected message type 0x%02x",
				       (unsigned long long)msg_off, type);
		{
			uint8_t lenb[4];

			r = rd(d, lenb, sizeof(lenb));
			if (r < 0)
				return err_prefix(-r, "%s message: ", native_msg_name(type));
			len = get_be32(lenb);
			if (len > NATIVE_MSG_MAX)
				return err_set(EBADMSG, "%s message: length %u too large",
					       native_msg_name(type), len);
			r = rd(d, d->body, len);
			if (r < 0)
				return err_prefix(-r, "%s message: ", native_msg_name(type));
		}
		if (type == NATIVE_MSG_ABORT) {
			struct native_error e;

			r = native_error_decode(d->body, len, &e);
			if (r < 0)
				return r;
			return err_set(e.err ? (int)e.err : ECANCELED, "source aborted: %s",
				       e.reason);
		}
		d->st.state = MIG_FINAL;
		return complete(d, len);
	}
}

/* ---- QEMU 7.2 stream ------------------------------------------------------------- */

#define QEMU_MAX_SECTIONS 64

struct qsection {
	uint32_t id;
	char name[SAVEVM_NAME_MAX + 1];
};

/*
 * Read one savevm item: call 'dec' on what has been read so far and read
 * more while it answers -EAGAIN with the total it needs.
 */
typedef int (*qdec_fn)(const uint8_t *buf, size_t len, void *arg, size_t *used);

static int qread(struct dst *d, uint8_t *buf, size_t cap, qdec_fn dec, void *arg)
{
	size_t have = 0, need = 1;
	int r;

	for (;;) {
		if (need > cap)
			return err_set(EBADMSG, "stream item of %zu bytes too large", need);
		r = rd(d, buf + have, need - have);
		if (r < 0)
			return r;
		have = need;
		r = dec(buf, have, arg, &need);
		if (r != -EAGAIN)
			return r;
	}
}

static int dec_header(const uint8_t *buf, size_t len, void *arg, size_t *used)
{
	(void)arg;
	return savevm_header_decode(buf, len, used);
}

static int dec_section(const uint8_t *buf, size_t len, void *arg, size_t *used)
{
	return savevm_section_decode(buf, len, arg, used);
}

static int dec_footer(const uint8_t *buf, size_t len, void *arg, size_t *used)
{
	const struct savevm_section *s = arg;

	return savevm_footer_decode(buf, len, s->section_id, s->name, used);
}

static int dec_ram(const uint8_t *buf, size_t len, void *arg, size_t *used)
{
	const struct savevm_section *s = arg;

	return savevm_ram_decode(buf, len, s->type == SAVEVM_START, used);
}

static int qemu_payload(struct dst *d, const struct savevm_section *s, const char *name)
{
	uint8_t buf[128];
	uint32_t skip;
	int r;

	if (strcmp(name, "block") == 0)
		return read_blocks(d);
	if (strcmp(name, "ram") == 0)
		return qread(d, buf, sizeof(buf), dec_ram, (void *)s);
	r = savevm_skip_size(s, &skip);
	if (r == -ENOENT)
		return err_set(ENOTSUP,
			       "section '%s' is not supported: blkmig receives block devices only "
			       "(start QEMU with -M none)",
			       name);
	if (r < 0)
		return r;
	while (skip > 0) {
		uint32_t n = MIN(skip, (uint32_t)sizeof(buf));

		r = rd(d, buf, n);
		if (r < 0)
			return r;
		skip -= n;
	}
	return 0;
}

static int run_qemu(struct dst *d)
{
	struct qsection sec[QEMU_MAX_SECTIONS];
	unsigned nsec = 0;
	bool config = false;
	uint8_t buf[SAVEVM_SECTION_HDR_MAX + 16];
	int r;

	d->hello.chunk_size = WIRE_QEMU_CHUNK_SIZE;
	d->hello.ndev = (uint16_t)d->p->nexpect;
	for (unsigned i = 0; i < d->p->nexpect; i++)
		snprintf(d->hello.dev[i].name, sizeof(d->hello.dev[i].name), "%s", d->p->expect[i]);
	r = open_devices(d);
	if (r < 0)
		return r;
	r = qread(d, buf, sizeof(buf), dec_header, NULL);
	if (r < 0)
		return err_prefix(-r, "qemu stream: ");
	d->st.state = MIG_BULK;
	for (;;) {
		struct savevm_section s;
		const char *name = NULL;
		uint64_t at = d->stream_off;

		r = qread(d, buf, sizeof(buf), dec_section, &s);
		if (r < 0)
			return err_prefix(-r,
					  "qemu stream at offset %llu: ", (unsigned long long)at);
		if (s.type == SAVEVM_CONFIGURATION) {
			config = true;
			continue;
		}
		if (s.type == SAVEVM_EOF)
			break;
		if (!config)
			return err_set(EBADMSG, "qemu stream: configuration section missing");
		if (s.type == SAVEVM_START || s.type == SAVEVM_FULL) {
			for (unsigned i = 0; i < nsec; i++)
				if (sec[i].id == s.section_id)
					return err_set(EBADMSG,
						       "qemu stream: section id %u started twice",
						       s.section_id);
			if (nsec == QEMU_MAX_SECTIONS)
				return err_set(EBADMSG, "qemu stream: more than %d sections",
					       QEMU_MAX_SECTIONS);
			sec[nsec].id = s.section_id;
			snprintf(sec[nsec].name, sizeof(sec[nsec].name), "%s", s.name);
			name = sec[nsec++].name;
		} else if (s.type == SAVEVM_PART || s.type == SAVEVM_END) {
			for (unsigned i = 0; i < nsec; i++)
				if (sec[i].id == s.section_id)
					name = sec[i].name;
			if (!name)
				return err_set(EBADMSG,
					       "qemu stream: section id %u was never started",
					       s.section_id);
		} else {
			return err_set(EBADMSG, "qemu stream at offset %llu: unexpected %s section",
				       (unsigned long long)at, savevm_type_name(s.type));
		}
		r = qemu_payload(d, &s, name);
		if (r < 0)
			return err_prefix(-r, "qemu stream, section '%s': ", name);
		/* The footer names the section by its START name. */
		snprintf(s.name, sizeof(s.name), "%s", name);
		r = qread(d, buf, sizeof(buf), dec_footer, &s);
		if (r < 0)
			return err_prefix(-r, "qemu stream: ");
	}
	/* EOF: QEMU has sent everything and cannot hear us; make it durable,
	 * check it reads back, then take the VMDESCRIPTION (or the close). */
	d->st.state = MIG_FINAL;
	r = sync_all(d);
	if (r == 0)
		r = verify_pass(d);
	if (r < 0)
		return r;
	xport_set_timeout(d->x, 5000);
	if (rd(d, buf, 1) == 0 && buf[0] == SAVEVM_VMDESCRIPTION) {
		uint8_t lenb[4];

		if (rd(d, lenb, 4) == 0) {
			uint32_t left = MIN(get_be32(lenb), (uint32_t)SAVEVM_VMDESC_MAX);

			while (left > 0 && rd(d, buf, MIN(left, (uint32_t)sizeof(buf))) == 0)
				left -= MIN(left, (uint32_t)sizeof(buf));
		}
	}
	return clear_marks(d);
}

int dst_run(const struct dst_params *p, struct xport *x, struct cancel *cancel,
	    struct mig_stats *st)
{
	struct dst *d = calloc(1, sizeof(*d));
	uint64_t t0 = now_ns();
	int r;

	if (!d)
		return err_set(ENOMEM, "no memory for the destination engine");
	d->p = p;
	d->x = x;
	d->st.state = MIG_SETUP;
	xport_set_cancel(x, cancel);
	r = p->qemu ? run_qemu(d) : run(d);
	if (r < 0) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "%s", err_msg());
		/* Best effort: the source may already be gone. */
		xport_set_cancel(x, NULL);
		xport_set_timeout(x, 2000);
		if (!p->qemu && (r != -ECANCELED || !strstr(msg, "source aborted")))
			engine_send_error(x, NATIVE_MSG_ERROR, -r, msg);
		err_copy_in(msg);
		d->st.state = r == -ECANCELED ? MIG_CANCELLED : MIG_FAILED;
	} else {
		d->st.state = MIG_COMPLETED;
	}
	d->st.transferred = xport_rx_bytes(x);
	d->st.total_ns = now_ns() - t0;
	for (unsigned i = 0; i < d->ndev; i++) {
		blk_close(d->dev[i].blk);
		digest_free(d->dev[i].dig);
		dirty_free(d->dev[i].pass);
	}
	if (st)
		*st = d->st;
	free(d->rec);
	free(d);
	return r;
}
