/* SPDX-License-Identifier: MIT */
/*
 * NBD transmission phase: read one request, validate it, run it through
 * the blk_*() wrappers, reply -- one request at a time per connection.
 * See nbd-protocol.h for the wire format.
 *
 * Validation happens here, at the edge, before the block layer sees
 * anything (the checks and errors follow doc/proto.md):
 *   - bad request magic: hard disconnect (the stream cannot be trusted);
 *   - unknown command: NBD_EINVAL;
 *   - a flag not valid for the command: NBD_EINVAL.  FUA is accepted on
 *     every command (the spec says so) and honoured on WRITE, TRIM and
 *     WRITE_ZEROES by a blk_flush() before the reply; DF only with
 *     structured replies (where NBD_FLAG_SEND_DF is advertised); NO_HOLE
 *     on WRITE_ZEROES; REQ_ONE on BLOCK_STATUS; FAST_ZERO never (not
 *     advertised);
 *   - FLUSH with a nonzero offset or length: NBD_EINVAL;
 *   - WRITE, TRIM, WRITE_ZEROES on a read-only export: NBD_EPERM;
 *   - READ or WRITE longer than NBD_MAX_PAYLOAD (32 MiB, the advertised
 *     maximum): NBD_EINVAL.  An oversized WRITE's payload is read and
 *     dropped in small pieces, so the stream stays in step and the
 *     connection stays usable without buffering it;
 *   - past the end of the export: NBD_ENOSPC for WRITE and WRITE_ZEROES,
 *     NBD_EINVAL for READ, TRIM and BLOCK_STATUS;
 *   - BLOCK_STATUS without base:allocation selected for this export, or
 *     with length 0: NBD_EINVAL.
 * TRIM and WRITE_ZEROES carry no payload, so they are not held to the
 * 32 MiB maximum.  Every error goes through nbd_errno().
 *
 * Replies: simple replies unless structured replies were negotiated.  With
 * them, READ answers with content chunks -- NBD_REPLY_TYPE_OFFSET_HOLE for
 * unallocated extents of reads of at least SPARSE_READ_MIN bytes (unless
 * DF), OFFSET_DATA for the rest, DONE on the last -- and every error is an
 * NBD_REPLY_TYPE_ERROR chunk with a message; other successes are simple
 * replies (allowed, as they carry no payload).  All data is read from the
 * block layer before the first chunk goes out, so a read error is always
 * one clean error reply.
 *
 * Idleness: a connection that sends no request for the server's idle
 * timeout (if it has one), or takes longer than it (or
 * NBDS_REQUEST_TIMEOUT_MS) to send one, is closed (server.h).
 *
 * Shutdown: a request finished after nbds_shutdown() is answered with the
 * shutdown error whatever its result, and the connection drains (see
 * nbds_drain()).
 */
#include "nbds-impl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "nbd-protocol.h"

/* Reads at least this long look for holes to send as OFFSET_HOLE chunks. */
#define SPARSE_READ_MIN (64 * 1024)
/* At most this many chunks in one READ reply (then the rest is data). */
#define READ_MAX_EXTENTS 32
/* At most this many descriptors in one BLOCK_STATUS reply. */
#define STATUS_MAX_EXTENTS 1024
/* Longest message in an error chunk. */
#define ERR_MSG_MAX 1024

static const char *cmd_name(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return "NBD_CMD_READ";
	case NBD_CMD_WRITE:
		return "NBD_CMD_WRITE";
	case NBD_CMD_DISC:
		return "NBD_CMD_DISC";
	case NBD_CMD_FLUSH:
		return "NBD_CMD_FLUSH";
	case NBD_CMD_TRIM:
		return "NBD_CMD_TRIM";
	case NBD_CMD_CACHE:
		return "NBD_CMD_CACHE";
	case NBD_CMD_WRITE_ZEROES:
		return "NBD_CMD_WRITE_ZEROES";
	case NBD_CMD_BLOCK_STATUS:
		return "NBD_CMD_BLOCK_STATUS";
	}
	return "unknown command";
}

/*
 * Flags valid for a command on this connection, or -1 for a command this
 * server does not implement.  When you add a command, add it here, to
 * validate() and to run().
 */
static int cmd_flags_allowed(const struct nbds_conn *c, uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return NBD_CMD_FLAG_FUA | (c->structured ? NBD_CMD_FLAG_DF : 0);
	case NBD_CMD_WRITE:
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
		return NBD_CMD_FLAG_FUA;
	case NBD_CMD_WRITE_ZEROES:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
	case NBD_CMD_BLOCK_STATUS:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
	}
	return -1;
}

static bool cmd_writes(uint16_t type)
{
	return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
}

/* 0, or a negative errno with the reason recorded. */
static int validate(const struct nbds_conn *c, const struct nbd_request *r)
{
	const struct nbds_export *x = c->exp;
	const char *what = cmd_name(r->type);
	int allowed = cmd_flags_allowed(c, r->type);
	uint64_t size = blk_size(x->blk);

	if (allowed < 0)
		return err_set(EINVAL, "command %u is not supported", r->type);
	if (r->flags & ~(unsigned)allowed)
		return err_set(EINVAL, "%s: invalid flags 0x%x", what,
			       r->flags & ~(unsigned)allowed);
	if (r->type == NBD_CMD_FLUSH) {
		if (r->offset || r->length)
			return err_set(EINVAL, "%s: offset and length must be zero", what);
		return 0;
	}
	if (cmd_writes(r->type) && x->readonly)
		return err_set(EPERM, "%s: export '%s' is read-only", what, x->name);
	if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->length > NBD_MAX_PAYLOAD)
		return err_set(EINVAL, "%s: length %" PRIu32 " exceeds the maximum of %d bytes",
			       what, r->length, NBD_MAX_PAYLOAD);
	if (!range_inside(r->offset, r->length, size))
		return err_set(
		    (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES) ? ENOSPC : EINVAL,
		    "%s: offset %" PRIu64 " length %" PRIu32
		    " is beyond the end of export '%s' (size %" PRIu64 ")",
		    what, r->offset, r->length, x->name, size);
	if (r->type == NBD_CMD_BLOCK_STATUS) {
		if (!c->meta)
			return err_set(EINVAL, "%s: no metadata context was negotiated", what);
		if (r->length == 0)
			return err_set(EINVAL, "%s: length 0", what);
	}
	return 0;
}

/* ---- replies ------------------------------------------------------------------ */

static int send_simple(struct nbds_conn *c, uint64_t handle, uint32_t error, const void *data,
		       size_t len)
{
	uint8_t h[NBD_SIMPLE_REPLY_LEN];
	struct iovec iov[2] = {
		{ .iov_base = h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)data, .iov_len = len },
	};

	nbd_simple_reply_encode(h, error, handle);
	return nbds_writev(c, iov, 2, false);
}

/* One structured chunk: header, then a and b as its payload. */
static int send_chunk(struct nbds_conn *c, uint64_t handle, uint16_t flags, uint16_t type,
		      const void *a, size_t alen, const void *b, size_t blen)
{
	uint8_t h[NBD_CHUNK_HDR_LEN];
	struct iovec iov[3] = {
		{ .iov_base = h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)a, .iov_len = alen },
		{ .iov_base = (void *)b, .iov_len = blen },
	};

	nbd_chunk_encode(h, flags, type, handle, (uint32_t)(alen + blen));
	return nbds_writev(c, iov, 3, !(flags & NBD_REPLY_FLAG_DONE));
}

/* An error reply for r: an error chunk with msg if structured, else simple. */
static int send_error(struct nbds_conn *c, const struct nbd_request *r, int err, const char *msg)
{
	uint8_t p[6];
	size_t ml = strnlen(msg, ERR_MSG_MAX);

	if (!c->structured)
		return send_simple(c, r->handle, nbd_errno(err), NULL, 0);
	put_be32(p, nbd_errno(err));
	put_be16(p + 4, (uint16_t)ml);
	return send_chunk(c, r->handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, p, sizeof(p),
			  msg, ml);
}

/*
 * Answer a request that ran (or failed validation) with result r, unless
 * the server shut down meanwhile: then with the shutdown error, and the
 * connection drains.  For everything but a successful READ.
 */
static enum conn_state finish(struct nbds_conn *c, const struct nbd_request *req, int r)
{
	char msg[ERR_MSG_MAX];
	int shut = nbds_shut_err(c->srv, msg, sizeof(msg));

	if (shut) {
		c->saw_shutdown = true;
		return send_error(c, req, shut, msg) < 0 ? CONN_CLOSE : CONN_DRAIN;
	}
	if (r < 0)
		r = send_error(c, req, r, err_msg());
	else
		r = send_simple(c, req->handle, 0, NULL, 0);
	return r < 0 ? CONN_CLOSE : CONN_TRANSMIT;
}

/* ---- commands ------------------------------------------------------------------ */

struct extent {
	uint64_t off;
	uint64_t len;
	bool hole;
};

/*
 * Split [off, off+len) into at most READ_MAX_EXTENTS runs of data and
 * holes (adjacent runs of one kind merged; past the limit the rest is
 * data).  Returns the count, 0 when block status failed (read it all).
 */
static size_t plan_read(struct blk *b, uint64_t off, uint64_t len, struct extent *e)
{
	size_t n = 0;

	while (len > 0) {
		uint64_t pnum;
		bool alloc;

		if (n == READ_MAX_EXTENTS - 1) {
			pnum = len;
			alloc = true;
		} else if (blk_block_status(b, off, len, &pnum, &alloc) < 0) {
			err_clear();
			return 0;
		}
		if (n > 0 && e[n - 1].hole == !alloc)
			e[n - 1].len += pnum;
		else
			e[n++] = (struct extent){ .off = off, .len = pnum, .hole = !alloc };
		off += pnum;
		len -= pnum;
	}
	return n;
}

static enum conn_state do_read(struct nbds_conn *c, const struct nbd_request *req)
{
	struct blk *b = c->exp->blk;
	struct extent ext[READ_MAX_EXTENTS];
	char msg[ERR_MSG_MAX];
	size_t n = 0;
	int r, shut;

	r = nbds_buf_reserve(c, MAX(req->length, 1u));
	if (r < 0)
		return finish(c, req, r);
	if (c->structured && !(req->flags & NBD_CMD_FLAG_DF) && req->length >= SPARSE_READ_MIN)
		n = plan_read(b, req->offset, req->length, ext);
	if (n == 0) {
		ext[0] = (struct extent){ .off = req->offset, .len = req->length, .hole = false };
		n = 1;
	}
	for (size_t i = 0; i < n && r == 0; i++)
		if (!ext[i].hole)
			r = blk_pread(b, c->buf + (ext[i].off - req->offset), (size_t)ext[i].len,
				      ext[i].off);

	shut = nbds_shut_err(c->srv, msg, sizeof(msg));
	if (shut || r < 0)
		return finish(c, req, r);
	if (!c->structured)
		return send_simple(c, req->handle, 0, c->buf, req->length) < 0 ? CONN_CLOSE
									       : CONN_TRANSMIT;
	if (req->length == 0)
		return send_chunk(c, req->handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, NULL, 0,
				  NULL, 0) < 0
			   ? CONN_CLOSE
			   : CONN_TRANSMIT;
	for (size_t i = 0; i < n; i++) {
		uint16_t flags = i == n - 1 ? NBD_REPLY_FLAG_DONE : 0;
		uint8_t p[12];

		put_be64(p, ext[i].off);
		if (ext[i].hole) {
			put_be32(p + 8, (uint32_t)ext[i].len);
			r = send_chunk(c, req->handle, flags, NBD_REPLY_TYPE_OFFSET_HOLE, p, 12,
				       NULL, 0);
		} else {
			r = send_chunk(c, req->handle, flags, NBD_REPLY_TYPE_OFFSET_DATA, p, 8,
				       c->buf + (ext[i].off - req->offset), (size_t)ext[i].len);
		}
		if (r < 0)
			return CONN_CLOSE;
	}
	return CONN_TRANSMIT;
}

static enum conn_state do_block_status(struct nbds_conn *c, const struct nbd_request *req)
{
	struct blk *b = c->exp->blk;
	uint64_t off = req->offset, len = req->length;
	size_t n = 0, max = (req->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : STATUS_MAX_EXTENTS;
	uint8_t *d;
	int r;

	r = nbds_buf_reserve(c, 4 + 8 * STATUS_MAX_EXTENTS);
	if (r < 0)
		return finish(c, req, r);
	d = c->buf;
	put_be32(d, NBDS_META_ALLOCATION_ID);
	while (len > 0) {
		uint64_t pnum;
		bool alloc;
		uint32_t status;

		r = blk_block_status(b, off, len, &pnum, &alloc);
		if (r < 0)
			break;
		status = alloc ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
		if (n > 0 && get_be32(d + 4 + 8 * (n - 1) + 4) == status) {
			uint8_t *l = d + 4 + 8 * (n - 1);

			put_be32(l, get_be32(l) + (uint32_t)pnum);
		} else if (n < max) {
			put_be32(d + 4 + 8 * n, (uint32_t)pnum);
			put_be32(d + 4 + 8 * n + 4, status);
			n++;
		} else {
			break;
		}
		off += pnum;
		len -= pnum;
		if (max == 1)
			break;
	}
	/* A failure after some extents: report those (the client asks again). */
	if (n == 0 || nbds_shut_err(c->srv, NULL, 0))
		return finish(c, req, r < 0 ? r : -EIO);
	return send_chunk(c, req->handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, d,
			  4 + 8 * n, NULL, 0) < 0
		   ? CONN_CLOSE
		   : CONN_TRANSMIT;
}

/* WRITE, FLUSH, TRIM, WRITE_ZEROES: run, then FUA, then reply. */
static enum conn_state do_update(struct nbds_conn *c, const struct nbd_request *req)
{
	struct blk *b = c->exp->blk;
	int r = 0;

	switch (req->type) {
	case NBD_CMD_WRITE:
		r = blk_pwrite(b, c->buf, req->length, req->offset);
		break;
	case NBD_CMD_FLUSH:
		r = blk_flush(b);
		break;
	case NBD_CMD_TRIM:
		r = blk_trim(b, req->offset, req->length);
		break;
	case NBD_CMD_WRITE_ZEROES:
		r = blk_zero(b, req->offset, req->length,
			     (req->flags & NBD_CMD_FLAG_NO_HOLE) ? 0 : BLK_ZERO_MAY_TRIM);
		break;
	}
	if (r == 0 && (req->flags & NBD_CMD_FLAG_FUA) && req->type != NBD_CMD_FLUSH)
		r = blk_flush(b);
	return finish(c, req, r);
}

static enum conn_state run(struct nbds_conn *c, const struct nbd_request *req)
{
	switch (req->type) {
	case NBD_CMD_READ:
		return do_read(c, req);
	case NBD_CMD_BLOCK_STATUS:
		return do_block_status(c, req);
	default:
		return do_update(c, req);
	}
}

/* ---- the request loop ------------------------------------------------------------ */

/*
 * Read a request header and, for WRITE, its payload (into c->buf, or
 * dropped when too long to be valid).  0, or negative errno: close.
 */
static int read_request(struct nbds_conn *c, struct nbd_request *req, bool keep_payload)
{
	uint8_t h[NBD_REQUEST_LEN];
	int r;

	r = nbds_read(c, h, sizeof(h));
	if (r < 0)
		return r;
	if (!nbd_request_decode(h, req))
		return err_set(EPROTO, "request with bad magic 0x%08" PRIx32, get_be32(h));
	if (req->type == NBD_CMD_DISC)
		return err_set(ECONNRESET, "client sent NBD_CMD_DISC");
	if (req->type != NBD_CMD_WRITE)
		return 0;
	if (!keep_payload || req->length > NBD_MAX_PAYLOAD)
		return nbds_discard(c, req->length);
	r = nbds_buf_reserve(c, MAX(req->length, 1u));
	if (r < 0)
		return r;
	return nbds_read(c, c->buf, req->length);
}

enum conn_state nbds_request(struct nbds_conn *c)
{
	unsigned idle = c->srv->limits.idle_timeout_ms;
	struct nbd_request req;
	int r;

	r = nbds_wait(c, idle ? (int)MIN(idle, (unsigned)INT32_MAX) : -1);
	if (r == -ESHUTDOWN)
		return CONN_DRAIN;
	if (r == 0) {
		nbds_log(c->srv, "nbd server: closed the connection from %s: no request for %u ms",
			 c->peer, idle);
		err_set(ETIMEDOUT, "no request for %u ms", idle);
		return CONN_CLOSE;
	}
	if (r < 0)
		return CONN_CLOSE;
	/* A request trickling in holds the connection no longer than idleness,
	 * or a bound of its own when idleness is not limited. */
	nbds_set_deadline(c, idle ? idle : NBDS_REQUEST_TIMEOUT_MS, "a request");
	r = read_request(c, &req, true);
	nbds_set_deadline(c, 0, NULL);
	if (r < 0)
		return CONN_CLOSE;
	if (nbds_shut_err(c->srv, NULL, 0))
		return finish(c, &req, 0);
	r = validate(c, &req);
	if (r < 0)
		return finish(c, &req, r);
	return run(c, &req);
}

/*
 * After nbds_shutdown(): answer whatever the client had already sent with
 * the shutdown error (dropping WRITE payloads), until it disconnects, has
 * been quiet for NBDS_DRAIN_QUIET_MS, or DRAIN_MAX_MS have passed.
 */
#define DRAIN_MAX_MS 5000

enum conn_state nbds_drain(struct nbds_conn *c)
{
	struct nbd_request req;
	uint64_t now = now_ns();
	int r, wait_ms;

	c->saw_shutdown = true;
	if (!c->drain_end_ns)
		c->drain_end_ns = now + (uint64_t)DRAIN_MAX_MS * 1000000u;
	if (now >= c->drain_end_ns) {
		err_set(ESHUTDOWN, "server shut down: stopped answering after %d ms", DRAIN_MAX_MS);
		return CONN_CLOSE;
	}
	wait_ms = (int)MIN((uint64_t)NBDS_DRAIN_QUIET_MS, (c->drain_end_ns - now) / 1000000u + 1);
	r = nbds_wait(c, wait_ms);
	if (r == 0)
		err_set(ESHUTDOWN, "server shut down: client quiet, closing");
	if (r <= 0 || read_request(c, &req, false) < 0)
		return CONN_CLOSE;
	return finish(c, &req, 0);
}
