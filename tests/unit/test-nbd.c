/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the NBD server (src/nbdserver/): a server on 127.0.0.1:0
 * over in-memory devices, and a client written here with plain sockets that
 * speaks the protocol byte by byte, so every reply is checked as it is on
 * the wire.  Covers the handshake (flags, LIST, INFO/GO with block size,
 * EXPORT_NAME with and without zeroes, meta contexts, malformed and
 * oversized options), every command with and without structured replies,
 * each validation error with the connection still usable afterwards,
 * protocol violations that must close only the offending connection,
 * refusal, switch-over shutdown (also with a write held by a paused
 * tracking layer), and the client limits (per address, unauthenticated,
 * the budget of refusal conversations, idle; TLS itself is tested with
 * real clients in tests/integration/nbd-tls.sh).
 *
 * Every client socket has a receive timeout, so a server that fails to
 * answer makes a test fail instead of hang.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "nbdserver/nbd-protocol.h"
#include "nbdserver/server.h"

#define DISK_SIZE      (4 * MiB)
#define RO_SIZE	       MiB
#define SPARSE_SIZE    (8 * MiB)
#define RECV_TIMEOUT_S 20

struct fix {
	struct nbds *s;
	struct blk *disk;   /* "disk": read-write */
	struct blk *ro;	    /* "ro": read-only export */
	struct blk *sparse; /* "sparse": data only at [1 MiB, 1 MiB + 64 KiB) */
	char bound[128];
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	uint8_t page[64 * 1024];

	assert_non_null(f);
	assert_int_equal(blk_mem_open(DISK_SIZE, &f->disk), 0);
	assert_int_equal(blk_mem_open(RO_SIZE, &f->ro), 0);
	assert_int_equal(blk_mem_open(SPARSE_SIZE, &f->sparse), 0);
	memset(page, 0xab, sizeof(page));
	assert_int_equal(blk_pwrite(f->ro, page, sizeof(page), 0), 0);
	assert_int_equal(blk_pwrite(f->sparse, page, sizeof(page), MiB), 0);
	assert_int_equal(nbds_new(&f->s), 0);
	assert_int_equal(nbds_add_export(f->s, "disk", f->disk, false), 0);
	assert_int_equal(nbds_add_export(f->s, "ro", f->ro, true), 0);
	assert_int_equal(nbds_add_export(f->s, "sparse", f->sparse, false), 0);
	if (nbds_listen(f->s, "127.0.0.1:0", f->bound, sizeof(f->bound)) != 0)
		fail_msg("listen: %s", err_msg());
	*state = f;
	return 0;
}

/* What the server logged, for the limit tests. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[8192];

static void log_line(void *user, const char *line)
{
	(void)user;
	pthread_mutex_lock(&log_lock);
	snprintf(log_text + strlen(log_text), sizeof(log_text) - strlen(log_text), "%s\n", line);
	pthread_mutex_unlock(&log_lock);
}

static bool logged(const char *what)
{
	bool r;

	pthread_mutex_lock(&log_lock);
	r = strstr(log_text, what) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

/* The fixture with per_peer connections per address, two unauthenticated
 * (one per address), the idle timeout given, and logging. */
static int setup_limited_idle(void **state, unsigned per_peer, unsigned idle_ms)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct nbds_limits l = { .per_peer = per_peer, .unauth = 2, .idle_timeout_ms = idle_ms };

	assert_non_null(f);
	assert_int_equal(blk_mem_open(DISK_SIZE, &f->disk), 0);
	assert_int_equal(blk_mem_open(RO_SIZE, &f->ro), 0);
	assert_int_equal(blk_mem_open(SPARSE_SIZE, &f->sparse), 0);
	assert_int_equal(nbds_new(&f->s), 0);
	assert_int_equal(nbds_add_export(f->s, "disk", f->disk, false), 0);
	l.per_peer = 0;
	assert_int_equal(nbds_set_limits(f->s, &l), -EINVAL);
	l.per_peer = per_peer;
	assert_int_equal(nbds_set_limits(f->s, &l), 0);
	log_text[0] = '\0';
	nbds_set_log(f->s, log_line, NULL);
	if (nbds_listen(f->s, "127.0.0.1:0", f->bound, sizeof(f->bound)) != 0)
		fail_msg("listen: %s", err_msg());
	*state = f;
	return 0;
}

static int setup_limited(void **state)
{
	return setup_limited_idle(state, 1, 0);
}

static int setup_idle(void **state)
{
	return setup_limited_idle(state, 1, 300);
}

static int setup_unauth(void **state)
{
	return setup_limited_idle(state, 4, 0);
}

static int teardown(void **state)
{
	struct fix *f = *state;

	nbds_free(f->s);
	blk_close(f->disk);
	blk_close(f->ro);
	blk_close(f->sparse);
	free(f);
	return 0;
}

/* ---- a hand-written client ------------------------------------------------------ */

static int cl_connect(const struct fix *f)
{
	const char *colon = strrchr(f->bound, ':');
	struct sockaddr_in a = { .sin_family = AF_INET };
	struct timeval tv = { .tv_sec = RECV_TIMEOUT_S };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	assert_true(fd >= 0);
	assert_non_null(colon);
	a.sin_port = htons((uint16_t)atoi(colon + 1));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		fail_msg("connect %s: %s", f->bound, strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static void cl_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0)
			fail_msg("send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

static void cl_recv(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = recv(fd, p, len, 0);

		if (n == 0)
			fail_msg("server closed the connection (%zu bytes missing)", len);
		if (n < 0)
			fail_msg("recv: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

/* True when the server has closed the connection (EOF or reset). */
static bool cl_closed(int fd)
{
	uint8_t b;
	ssize_t n = recv(fd, &b, 1, 0);

	if (n > 0)
		fail_msg("expected the connection to be closed, got data 0x%02x", b);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		fail_msg("expected the connection to be closed, it is still open");
	return true;
}

/* Greeting and client flags. */
static void cl_greet(int fd, uint32_t cflags)
{
	uint8_t g[NBD_GREETING_LEN], f[4];

	cl_recv(fd, g, sizeof(g));
	assert_true(get_be64(g) == NBD_MAGIC);
	assert_true(get_be64(g + 8) == NBD_OPTS_MAGIC);
	assert_int_equal(get_be16(g + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	put_be32(f, cflags);
	cl_send(fd, f, sizeof(f));
}

static void cl_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[NBD_OPT_HDR_LEN];

	put_be64(h, NBD_OPTS_MAGIC);
	put_be32(h + 8, opt);
	put_be32(h + 12, len);
	cl_send(fd, h, sizeof(h));
	if (len)
		cl_send(fd, data, len);
}

/* One option reply for opt: returns its type; data (NUL-terminated) in buf. */
static uint32_t cl_opt_reply(int fd, uint32_t opt, uint8_t *buf, size_t cap, uint32_t *len)
{
	uint8_t h[NBD_REP_HDR_LEN];
	uint32_t l;

	cl_recv(fd, h, sizeof(h));
	assert_true(get_be64(h) == NBD_REP_MAGIC);
	assert_int_equal(get_be32(h + 8), opt);
	l = get_be32(h + 16);
	assert_true(l < cap);
	cl_recv(fd, buf, l);
	buf[l] = 0;
	if (len)
		*len = l;
	return get_be32(h + 12);
}

/* Build INFO/GO data: name and info requests. */
static uint32_t info_data(uint8_t *d, const char *name, const uint16_t *req, uint16_t n)
{
	uint32_t nl = (uint32_t)strlen(name), p;

	put_be32(d, nl);
	memcpy(d + 4, name, nl);
	p = 4 + nl;
	put_be16(d + p, n);
	p += 2;
	for (uint16_t i = 0; i < n; i++, p += 2)
		put_be16(d + p, req[i]);
	return p;
}

/* Build META_CONTEXT data: export name and queries. */
static uint32_t meta_data(uint8_t *d, const char *name, const char *const *q, uint32_t nq)
{
	uint32_t nl = (uint32_t)strlen(name), p;

	put_be32(d, nl);
	memcpy(d + 4, name, nl);
	p = 4 + nl;
	put_be32(d + p, nq);
	p += 4;
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql = (uint32_t)strlen(q[i]);

		put_be32(d + p, ql);
		memcpy(d + p + 4, q[i], ql);
		p += 4 + ql;
	}
	return p;
}

struct export_info {
	uint64_t size;
	uint16_t flags;
	uint32_t bs_min, bs_pref, bs_max;
	char name[64];
};

/* Read INFO/GO replies up to the final one; returns the final type. */
static uint32_t cl_info_replies(int fd, uint32_t opt, struct export_info *ei, char *msg,
				size_t msg_cap)
{
	uint8_t buf[8192];
	uint32_t type, len;

	memset(ei, 0, sizeof(*ei));
	for (;;) {
		type = cl_opt_reply(fd, opt, buf, sizeof(buf), &len);
		if (type != NBD_REP_INFO)
			break;
		assert_true(len >= 2);
		switch (get_be16(buf)) {
		case NBD_INFO_EXPORT:
			assert_int_equal(len, NBD_INFO_EXPORT_LEN);
			ei->size = get_be64(buf + 2);
			ei->flags = get_be16(buf + 10);
			break;
		case NBD_INFO_BLOCK_SIZE:
			assert_int_equal(len, NBD_INFO_BLOCK_SIZE_LEN);
			ei->bs_min = get_be32(buf + 2);
			ei->bs_pref = get_be32(buf + 6);
			ei->bs_max = get_be32(buf + 10);
			break;
		case NBD_INFO_NAME:
			snprintf(ei->name, sizeof(ei->name), "%.*s", (int)(len - 2), buf + 2);
			break;
		}
	}
	if (msg)
		snprintf(msg, msg_cap, "%.*s", (int)MIN(len, msg_cap - 1), (char *)buf);
	return type;
}

/* Connect, negotiate and GO into 'name'; returns the socket. */
static int cl_open(const struct fix *f, const char *name, bool structured, bool meta,
		   struct export_info *ei)
{
	struct export_info local;
	uint8_t d[512], buf[256];
	uint16_t req = NBD_INFO_BLOCK_SIZE;
	int fd = cl_connect(f);

	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	if (structured) {
		cl_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
		assert_int_equal(cl_opt_reply(fd, NBD_OPT_STRUCTURED_REPLY, buf, sizeof(buf), NULL),
				 NBD_REP_ACK);
	}
	if (meta) {
		const char *q = NBD_META_BASE_ALLOCATION;
		uint32_t len;

		cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, name, &q, 1));
		assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), &len),
				 NBD_REP_META_CONTEXT);
		assert_int_equal(len, 4 + strlen(NBD_META_BASE_ALLOCATION));
		assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
				 NBD_REP_ACK);
	}
	cl_opt(fd, NBD_OPT_GO, d, info_data(d, name, &req, 1));
	if (cl_info_replies(fd, NBD_OPT_GO, ei ? ei : &local, NULL, 0) != NBD_REP_ACK)
		fail_msg("NBD_OPT_GO %s refused", name);
	return fd;
}

static void cl_req(int fd, uint16_t flags, uint16_t type, uint64_t handle, uint64_t off,
		   uint32_t len, const void *payload)
{
	uint8_t h[NBD_REQUEST_LEN];
	struct nbd_request r = {
		.flags = flags, .type = type, .handle = handle, .offset = off, .length = len
	};

	nbd_request_encode(h, &r);
	cl_send(fd, h, sizeof(h));
	if (payload)
		cl_send(fd, payload, len);
}

/* A simple reply: returns its error; checks the handle. */
static uint32_t cl_simple(int fd, uint64_t handle)
{
	uint8_t h[NBD_SIMPLE_REPLY_LEN];

	cl_recv(fd, h, sizeof(h));
	assert_true(get_be32(h) == NBD_SIMPLE_REPLY_MAGIC);
	assert_true(get_be64(h + 8) == handle);
	return get_be32(h + 4);
}

struct chunk {
	uint16_t flags, type;
	uint32_t len;
	uint8_t *data; /* malloc'd, len bytes */
};

/* Any reply header: simple (returns false, *err set) or a chunk (true). */
static bool cl_reply(int fd, uint64_t handle, uint32_t *err, struct chunk *ch)
{
	uint8_t h[NBD_CHUNK_HDR_LEN];

	cl_recv(fd, h, 4);
	if (get_be32(h) == NBD_SIMPLE_REPLY_MAGIC) {
		cl_recv(fd, h + 4, NBD_SIMPLE_REPLY_LEN - 4);
		assert_true(get_be64(h + 8) == handle);
		*err = get_be32(h + 4);
		return false;
	}
	assert_true(get_be32(h) == NBD_STRUCTURED_REPLY_MAGIC);
	cl_recv(fd, h + 4, NBD_CHUNK_HDR_LEN - 4);
	assert_true(get_be64(h + 8) == handle);
	ch->flags = get_be16(h + 4);
	ch->type = get_be16(h + 6);
	ch->len = get_be32(h + 16);
	ch->data = malloc(ch->len + 1);
	assert_non_null(ch->data);
	cl_recv(fd, ch->data, ch->len);
	ch->data[ch->len] = 0;
	return true;
}

/*
 * The error of a reply without data: a simple reply, or one chunk with
 * DONE (NONE for success, ERROR with a message).  msg gets the message.
 */
static uint32_t cl_status(int fd, uint64_t handle, char *msg, size_t cap)
{
	struct chunk ch;
	uint32_t err = 0;

	if (msg)
		msg[0] = 0;
	if (!cl_reply(fd, handle, &err, &ch))
		return err;
	assert_true(ch.flags & NBD_REPLY_FLAG_DONE);
	if (ch.type == NBD_REPLY_TYPE_NONE) {
		assert_int_equal(ch.len, 0);
	} else {
		uint16_t ml;

		assert_int_equal(ch.type, NBD_REPLY_TYPE_ERROR);
		assert_true(ch.len >= 6);
		err = get_be32(ch.data);
		ml = get_be16(ch.data + 4);
		assert_int_equal(ch.len, 6 + ml);
		assert_true(err != 0);
		if (msg)
			snprintf(msg, cap, "%.*s", (int)ml, (char *)ch.data + 6);
	}
	free(ch.data);
	return err;
}

/* Read with a simple-reply connection: 0 and the data, or the error. */
static uint32_t cl_read_simple(int fd, uint64_t handle, uint64_t off, uint32_t len, void *buf)
{
	uint32_t err;

	cl_req(fd, 0, NBD_CMD_READ, handle, off, len, NULL);
	err = cl_simple(fd, handle);
	if (err == 0)
		cl_recv(fd, buf, len);
	return err;
}

/*
 * Read with a structured connection: reassemble content chunks into buf
 * (holes as zeros).  Returns the error (0 on success); counts chunk kinds.
 */
static uint32_t cl_read_structured(int fd, uint16_t flags, uint64_t handle, uint64_t off,
				   uint32_t len, uint8_t *buf, unsigned *ndata, unsigned *nhole)
{
	uint64_t covered = 0;
	uint32_t err = 0;
	unsigned nd = 0, nh = 0;

	cl_req(fd, flags, NBD_CMD_READ, handle, off, len, NULL);
	for (;;) {
		struct chunk ch;
		uint32_t serr;

		if (!cl_reply(fd, handle, &serr, &ch))
			fail_msg("simple reply to a structured READ");
		switch (ch.type) {
		case NBD_REPLY_TYPE_OFFSET_DATA: {
			uint64_t o = get_be64(ch.data);

			assert_true(ch.len >= 9);
			assert_true(o >= off && o + (ch.len - 8) <= off + len);
			memcpy(buf + (o - off), ch.data + 8, ch.len - 8);
			covered += ch.len - 8;
			nd++;
			break;
		}
		case NBD_REPLY_TYPE_OFFSET_HOLE: {
			uint64_t o = get_be64(ch.data);
			uint32_t hl = get_be32(ch.data + 8);

			assert_int_equal(ch.len, 12);
			assert_true(hl > 0 && o >= off && o + hl <= off + len);
			memset(buf + (o - off), 0, hl);
			covered += hl;
			nh++;
			break;
		}
		case NBD_REPLY_TYPE_ERROR:
			err = get_be32(ch.data);
			break;
		case NBD_REPLY_TYPE_NONE:
			break;
		default:
			fail_msg("unexpected chunk type %u", ch.type);
		}
		free(ch.data);
		if (ch.flags & NBD_REPLY_FLAG_DONE)
			break;
	}
	if (err == 0)
		assert_true(covered == len);
	if (ndata)
		*ndata = nd;
	if (nhole)
		*nhole = nh;
	return err;
}

static void cl_disc(int fd)
{
	cl_req(fd, 0, NBD_CMD_DISC, 0, 0, 0, NULL);
	assert_true(cl_closed(fd));
	close(fd);
}

/* Wait (bounded) until the server counts n clients. */
static void wait_clients(struct nbds *s, unsigned n)
{
	for (int i = 0; i < 2000 && nbds_clients(s) != n; i++)
		usleep(5000);
	assert_int_equal(nbds_clients(s), n);
}

static void fill(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

/* ---- API ------------------------------------------------------------------------ */

static void test_api_errors(void **state)
{
	struct fix *f = *state;
	char *longname = malloc(NBDS_MAX_NAME + 2);

	assert_int_equal(nbds_add_export(f->s, "disk", f->disk, false), -EEXIST);
	memset(longname, 'x', NBDS_MAX_NAME + 1);
	longname[NBDS_MAX_NAME + 1] = 0;
	assert_int_equal(nbds_add_export(f->s, longname, f->disk, false), -EINVAL);
	free(longname);
	assert_int_equal(nbds_listen(f->s, "127.0.0.1:0", NULL, 0), -EBUSY);
	/* TLS and limits are fixed once listening. */
	assert_int_equal(nbds_set_tls(f->s, NULL), -EBUSY);
	assert_int_equal(nbds_set_limits(f->s, &NBDS_LIMITS_DEFAULT), -EBUSY);
	nbds_free(NULL);
}

static void test_nbd_errno(void **state)
{
	(void)state;
	assert_int_equal(nbd_errno(0), 0);
	assert_int_equal(nbd_errno(-EPERM), NBD_EPERM);
	assert_int_equal(nbd_errno(-EROFS), NBD_EPERM);
	assert_int_equal(nbd_errno(-EIO), NBD_EIO);
	assert_int_equal(nbd_errno(-ENOMEM), NBD_ENOMEM);
	assert_int_equal(nbd_errno(-EINVAL), NBD_EINVAL);
	assert_int_equal(nbd_errno(-ENOSPC), NBD_ENOSPC);
	assert_int_equal(nbd_errno(-EDQUOT), NBD_ENOSPC);
	assert_int_equal(nbd_errno(-EFBIG), NBD_ENOSPC);
	assert_int_equal(nbd_errno(-EOVERFLOW), NBD_EOVERFLOW);
	assert_int_equal(nbd_errno(-ENOTSUP), NBD_ENOTSUP);
	assert_int_equal(nbd_errno(ESHUTDOWN), NBD_ESHUTDOWN);
	assert_int_equal(nbd_errno(-ECONNRESET), NBD_EIO);
	assert_int_equal(nbd_errno(-ETIMEDOUT), NBD_EIO);
}

/* ---- handshake -------------------------------------------------------------------- */

static void test_list_and_abort(void **state)
{
	struct fix *f = *state;
	const char *want[] = { "disk", "ro", "sparse" };
	uint8_t buf[256];
	uint32_t len;
	int fd = cl_connect(f);

	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_LIST, NULL, 0);
	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), &len),
				 NBD_REP_SERVER);
		assert_int_equal(get_be32(buf), strlen(want[i]));
		assert_int_equal(len, 4 + strlen(want[i]));
		assert_memory_equal(buf + 4, want[i], strlen(want[i]));
	}
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), NULL), NBD_REP_ACK);

	/* LIST takes no data. */
	cl_opt(fd, NBD_OPT_LIST, "x", 1);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);

	/* Unknown options: UNSUP; STARTTLS without credentials: POLICY; and
	 * haggling goes on. */
	cl_opt(fd, 99, "abc", 3);
	assert_int_equal(cl_opt_reply(fd, 99, buf, sizeof(buf), NULL), NBD_REP_ERR_UNSUP);
	cl_opt(fd, NBD_OPT_STARTTLS, NULL, 0);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_STARTTLS, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_POLICY);

	/* ABORT: acknowledged (data ignored), then closed. */
	cl_opt(fd, NBD_OPT_ABORT, "zz", 2);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_ABORT, buf, sizeof(buf), NULL), NBD_REP_ACK);
	assert_true(cl_closed(fd));
	close(fd);
	wait_clients(f->s, 0);
}

static void test_client_flags(void **state)
{
	struct fix *f = *state;
	int fd;

	/* Unknown client flag: closed. */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | (1U << 5));
	assert_true(cl_closed(fd));
	close(fd);

	/* Not fixed newstyle: closed. */
	fd = cl_connect(f);
	cl_greet(fd, 0);
	assert_true(cl_closed(fd));
	close(fd);
	wait_clients(f->s, 0);
}

static void test_info_go_block_size(void **state)
{
	struct fix *f = *state;
	struct export_info ei;
	uint8_t d[256], buf[64];
	uint16_t reqs[] = { NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, 77 /* unknown: ignored */ };
	int fd = cl_connect(f);

	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_INFO, d, info_data(d, "ro", reqs, 3));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_INFO, &ei, NULL, 0), NBD_REP_ACK);
	assert_true(ei.size == RO_SIZE);
	assert_true(ei.flags & NBD_FLAG_HAS_FLAGS);
	assert_true(ei.flags & NBD_FLAG_READ_ONLY);
	assert_true(ei.flags & NBD_FLAG_SEND_FLUSH);
	assert_true(ei.flags & NBD_FLAG_CAN_MULTI_CONN);
	assert_false(ei.flags & NBD_FLAG_SEND_DF); /* no structured replies yet */
	assert_int_equal(ei.bs_min, 1);
	assert_int_equal(ei.bs_pref, 4096);
	assert_int_equal(ei.bs_max, 32 * MiB);
	assert_string_equal(ei.name, "ro");

	/* The empty name is the default export: the first one added. */
	cl_opt(fd, NBD_OPT_INFO, d, info_data(d, "", reqs, 2));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_INFO, &ei, NULL, 0), NBD_REP_ACK);
	assert_true(ei.size == DISK_SIZE);
	assert_string_equal(ei.name, "disk");

	/* Malformed: name length past the data; request count wrong. */
	put_be32(d, 200);
	cl_opt(fd, NBD_OPT_INFO, d, 10);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_INFO, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);
	cl_opt(fd, NBD_OPT_GO, d, info_data(d, "disk", reqs, 2) - 1);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_GO, buf, sizeof(buf), NULL), NBD_REP_ERR_INVALID);

	/* GO without information requests still sends export and block size. */
	cl_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_STRUCTURED_REPLY, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);
	cl_opt(fd, NBD_OPT_GO, d, info_data(d, "disk", NULL, 0));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_GO, &ei, NULL, 0), NBD_REP_ACK);
	assert_true(ei.size == DISK_SIZE);
	assert_int_equal(ei.bs_max, 32 * MiB);
	assert_string_equal(ei.name, "");
	assert_false(ei.flags & NBD_FLAG_READ_ONLY);
	assert_true(ei.flags & NBD_FLAG_SEND_TRIM);
	assert_true(ei.flags & NBD_FLAG_SEND_WRITE_ZEROES);
	assert_true(ei.flags & NBD_FLAG_SEND_FUA);
	assert_true(ei.flags & NBD_FLAG_SEND_DF);
	assert_false(ei.flags & NBD_FLAG_SEND_FAST_ZERO);

	/* In transmission now: a request works. */
	cl_req(fd, 0, NBD_CMD_FLUSH, 1, 0, 0, NULL);
	assert_int_equal(cl_status(fd, 1, NULL, 0), 0);
	cl_disc(fd);
}

static void test_go_unknown_export(void **state)
{
	struct fix *f = *state;
	struct export_info ei;
	char msg[256];
	uint8_t d[64], buf[256];
	int fd = cl_connect(f);

	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_GO, d, info_data(d, "nope", NULL, 0));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_GO, &ei, msg, sizeof(msg)),
			 NBD_REP_ERR_UNKNOWN);
	assert_non_null(strstr(msg, "nope"));
	/* Still haggling. */
	cl_opt(fd, NBD_OPT_LIST, NULL, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), NULL),
				 NBD_REP_SERVER);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), NULL), NBD_REP_ACK);
	close(fd);
}

static void test_export_name(void **state)
{
	struct fix *f = *state;
	uint8_t r[10 + NBD_EXPORT_ZEROES], data[512];
	int fd;

	/* Without NO_ZEROES: size, flags, 124 zeroes. */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_EXPORT_NAME, "ro", 2);
	cl_recv(fd, r, sizeof(r));
	assert_true(get_be64(r) == RO_SIZE);
	assert_true(get_be16(r + 8) & NBD_FLAG_READ_ONLY);
	for (size_t i = 10; i < sizeof(r); i++)
		assert_int_equal(r[i], 0);
	assert_int_equal(cl_read_simple(fd, 1, 0, sizeof(data), data), 0);
	assert_int_equal(data[0], 0xab);
	cl_disc(fd);

	/* With NO_ZEROES: the first request's reply follows the flags. */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	cl_opt(fd, NBD_OPT_EXPORT_NAME, "disk", 4);
	cl_recv(fd, r, 10);
	assert_true(get_be64(r) == DISK_SIZE);
	assert_int_equal(cl_read_simple(fd, 2, 0, 16, data), 0);
	cl_disc(fd);

	/* Unknown export: it cannot be refused with an error, so closed. */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_EXPORT_NAME, "missing", 7);
	assert_true(cl_closed(fd));
	close(fd);
}

static void test_option_limits(void **state)
{
	struct fix *f = *state;
	uint8_t *big = calloc(1, NBD_MAX_OPTION + 16), buf[256];
	int fd;

	assert_non_null(big);
	/* More than 64 KiB of option data: hard disconnect before the data. */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_INFO, NULL, 0);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_INFO, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);
	{
		uint8_t h[NBD_OPT_HDR_LEN];

		put_be64(h, NBD_OPTS_MAGIC);
		put_be32(h + 8, NBD_OPT_GO);
		put_be32(h + 12, NBD_MAX_OPTION + 1);
		cl_send(fd, h, sizeof(h));
	}
	assert_true(cl_closed(fd));
	close(fd);

	/* An export name over 4096 bytes: INVALID for GO ... */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	put_be32(big, NBD_MAX_STRING + 1);
	memset(big + 4, 'a', NBD_MAX_STRING + 1);
	put_be16(big + 4 + NBD_MAX_STRING + 1, 0);
	cl_opt(fd, NBD_OPT_GO, big, 4 + NBD_MAX_STRING + 1 + 2);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_GO, buf, sizeof(buf), NULL), NBD_REP_ERR_INVALID);
	/* ... and a disconnect for EXPORT_NAME. */
	cl_opt(fd, NBD_OPT_EXPORT_NAME, big + 4, NBD_MAX_STRING + 1);
	assert_true(cl_closed(fd));
	close(fd);

	/* Garbage where an option header should be: closed. */
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_send(fd, "GARBAGE!GARBAGE!", 16);
	assert_true(cl_closed(fd));
	close(fd);
	free(big);
	wait_clients(f->s, 0);
}

static void test_meta_context(void **state)
{
	struct fix *f = *state;
	const char *alloc = NBD_META_BASE_ALLOCATION;
	const char *base = "base:", *other = "qemu:dirty-bitmap:x", *nocolon = "allocation";
	const char *two[] = { "base:allocation", "base:allocation" };
	uint8_t d[512], buf[256];
	uint32_t len;
	int fd = cl_connect(f);

	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	/* SET before structured replies: INVALID. */
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", &alloc, 1));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);
	/* STRUCTURED_REPLY with data: INVALID; without: ACK. */
	cl_opt(fd, NBD_OPT_STRUCTURED_REPLY, "x", 1);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_STRUCTURED_REPLY, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);
	cl_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_STRUCTURED_REPLY, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);

	/* LIST with "base:" and with no query: base:allocation, id 0. */
	cl_opt(fd, NBD_OPT_LIST_META_CONTEXT, d, meta_data(d, "disk", &base, 1));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST_META_CONTEXT, buf, sizeof(buf), &len),
			 NBD_REP_META_CONTEXT);
	assert_int_equal(get_be32(buf), 0);
	assert_string_equal((char *)buf + 4, "base:allocation");
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);
	cl_opt(fd, NBD_OPT_LIST_META_CONTEXT, d, meta_data(d, "disk", NULL, 0));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_META_CONTEXT);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);

	/* An unknown namespace matches nothing: just ACK. */
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", &other, 1));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);
	/* "base:" selects nothing in SET. */
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", &base, 1));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);
	/* No namespace: INVALID.  Unknown export: UNKNOWN. */
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", &nocolon, 1));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "zz", &alloc, 1));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_UNKNOWN);
	/* Truncated query list: INVALID. */
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", &alloc, 1) - 1);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_INVALID);

	/* Selected twice in one query list: one context, nonzero id. */
	cl_opt(fd, NBD_OPT_SET_META_CONTEXT, d, meta_data(d, "disk", two, 2));
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_META_CONTEXT);
	assert_true(get_be32(buf) != 0);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_SET_META_CONTEXT, buf, sizeof(buf), NULL),
			 NBD_REP_ACK);

	/* ...but GO to another export: the selection does not carry over. */
	{
		struct export_info ei;

		cl_opt(fd, NBD_OPT_GO, d, info_data(d, "sparse", NULL, 0));
		assert_int_equal(cl_info_replies(fd, NBD_OPT_GO, &ei, NULL, 0), NBD_REP_ACK);
	}
	cl_req(fd, 0, NBD_CMD_BLOCK_STATUS, 5, 0, 4096, NULL);
	assert_int_equal(cl_status(fd, 5, NULL, 0), NBD_EINVAL);
	cl_disc(fd);
}

/* ---- transmission ------------------------------------------------------------------ */

static void test_read_write_simple(void **state)
{
	struct fix *f = *state;
	uint8_t *w = malloc(MiB), *r = malloc(MiB);
	uint8_t dev[4096];
	int fd = cl_open(f, "disk", false, false, NULL);

	fill(w, MiB, 3);
	cl_req(fd, 0, NBD_CMD_WRITE, 10, 512, MiB, w);
	assert_int_equal(cl_simple(fd, 10), 0);
	assert_int_equal(cl_read_simple(fd, 11, 512, MiB, r), 0);
	assert_memory_equal(w, r, MiB);
	/* It really reached the device. */
	assert_int_equal(blk_pread(f->disk, dev, sizeof(dev), 512), 0);
	assert_memory_equal(dev, w, sizeof(dev));

	/* FUA write, flush, zero-length write and read. */
	cl_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 12, 0, 100, w + 7);
	assert_int_equal(cl_simple(fd, 12), 0);
	cl_req(fd, 0, NBD_CMD_FLUSH, 13, 0, 0, NULL);
	assert_int_equal(cl_simple(fd, 13), 0);
	cl_req(fd, 0, NBD_CMD_WRITE, 14, 0, 0, w);
	assert_int_equal(cl_simple(fd, 14), 0);
	assert_int_equal(cl_read_simple(fd, 15, 0, 0, r), 0);
	assert_int_equal(cl_read_simple(fd, 16, 0, 100, r), 0);
	assert_memory_equal(r, w + 7, 100);
	/* The last byte of the device. */
	cl_req(fd, 0, NBD_CMD_WRITE, 17, DISK_SIZE - 1, 1, "Z");
	assert_int_equal(cl_simple(fd, 17), 0);
	assert_int_equal(cl_read_simple(fd, 18, DISK_SIZE - 1, 1, r), 0);
	assert_int_equal(r[0], 'Z');
	cl_disc(fd);
	free(w);
	free(r);
}

static void test_pipelined(void **state)
{
	struct fix *f = *state;
	uint8_t w[3][4096], r[4096];
	int fd = cl_open(f, "disk", false, false, NULL);

	/* Several requests before reading any reply: answered in order. */
	for (int i = 0; i < 3; i++) {
		memset(w[i], 'a' + i, sizeof(w[i]));
		cl_req(fd, 0, NBD_CMD_WRITE, 100 + (uint64_t)i, (uint64_t)i * 4096, 4096, w[i]);
	}
	for (int i = 0; i < 3; i++)
		cl_req(fd, 0, NBD_CMD_READ, 200 + (uint64_t)i, (uint64_t)i * 4096, 4096, NULL);
	for (int i = 0; i < 3; i++)
		assert_int_equal(cl_simple(fd, 100 + (uint64_t)i), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(cl_simple(fd, 200 + (uint64_t)i), 0);
		cl_recv(fd, r, sizeof(r));
		assert_memory_equal(r, w[i], sizeof(r));
	}
	cl_disc(fd);
}

static void test_read_structured(void **state)
{
	struct fix *f = *state;
	uint8_t *buf = malloc(2 * MiB), expect[64 * 1024];
	unsigned nd, nh;
	int fd = cl_open(f, "sparse", true, false, NULL);

	memset(expect, 0xab, sizeof(expect));
	/* A small read: one data chunk. */
	assert_int_equal(cl_read_structured(fd, 0, 1, MiB, 4096, buf, &nd, &nh), 0);
	assert_int_equal(nd, 1);
	assert_int_equal(nh, 0);
	assert_memory_equal(buf, expect, 4096);

	/* [512 KiB, 2 MiB): hole, data, hole. */
	memset(buf, 0x11, 2 * MiB);
	assert_int_equal(cl_read_structured(fd, 0, 2, 512 * 1024, 1536 * 1024, buf, &nd, &nh), 0);
	assert_int_equal(nd, 1);
	assert_int_equal(nh, 2);
	for (size_t i = 0; i < 512 * 1024; i++)
		if (buf[i] != 0)
			fail_msg("byte %zu of the leading hole is 0x%02x", i, buf[i]);
	assert_memory_equal(buf + 512 * 1024, expect, sizeof(expect));
	for (size_t i = 512 * 1024 + sizeof(expect); i < 1536 * 1024; i++)
		if (buf[i] != 0)
			fail_msg("byte %zu of the trailing hole is 0x%02x", i, buf[i]);

	/* DF: exactly one content chunk, zeroes included. */
	memset(buf, 0x11, 2 * MiB);
	assert_int_equal(
	    cl_read_structured(fd, NBD_CMD_FLAG_DF, 3, 512 * 1024, 1536 * 1024, buf, &nd, &nh), 0);
	assert_int_equal(nd, 1);
	assert_int_equal(nh, 0);
	assert_memory_equal(buf + 512 * 1024, expect, sizeof(expect));
	assert_int_equal(buf[0], 0);

	/* A whole hole. */
	assert_int_equal(cl_read_structured(fd, 0, 4, 4 * MiB, MiB, buf, &nd, &nh), 0);
	assert_int_equal(nd, 0);
	assert_int_equal(nh, 1);

	/* Zero length: a NONE chunk. */
	assert_int_equal(cl_read_structured(fd, 0, 5, 0, 0, buf, &nd, &nh), 0);
	assert_int_equal(nd + nh, 0);

	/* An injected read error: one ERROR chunk with NBD_EIO. */
	blk_mem_inject(f->sparse, BLK_MEM_READ, 1, EIO);
	assert_int_equal(cl_read_structured(fd, 0, 6, MiB, 4096, buf, NULL, NULL), NBD_EIO);
	/* Still usable. */
	assert_int_equal(cl_read_structured(fd, 0, 7, MiB, 4096, buf, NULL, NULL), 0);
	cl_disc(fd);
	free(buf);
}

static void test_trim_write_zeroes(void **state)
{
	struct fix *f = *state;
	uint8_t *w = malloc(256 * 1024), *r = malloc(256 * 1024);
	uint64_t pnum;
	bool alloc;
	int fd = cl_open(f, "disk", false, false, NULL);

	memset(w, 0x77, 256 * 1024);
	cl_req(fd, 0, NBD_CMD_WRITE, 1, 0, 256 * 1024, w);
	assert_int_equal(cl_simple(fd, 1), 0);

	/* WRITE_ZEROES with NO_HOLE: zeroes, still allocated. */
	cl_req(fd, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 2, 0, 64 * 1024, NULL);
	assert_int_equal(cl_simple(fd, 2), 0);
	assert_int_equal(cl_read_simple(fd, 3, 0, 64 * 1024, r), 0);
	assert_true(mem_is_zero(r, 64 * 1024));
	assert_int_equal(blk_block_status(f->disk, 0, 64 * 1024, &pnum, &alloc), 0);
	assert_true(alloc);

	/* WRITE_ZEROES (may trim) with FUA: zeroes, the page may go. */
	cl_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES, 4, 64 * 1024, 64 * 1024, NULL);
	assert_int_equal(cl_simple(fd, 4), 0);
	assert_int_equal(cl_read_simple(fd, 5, 64 * 1024, 64 * 1024, r), 0);
	assert_true(mem_is_zero(r, 64 * 1024));
	assert_int_equal(blk_block_status(f->disk, 64 * 1024, 64 * 1024, &pnum, &alloc), 0);
	assert_false(alloc);

	/* TRIM with FUA: reads back zero (mem backend), rest untouched. */
	cl_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 6, 128 * 1024, 64 * 1024, NULL);
	assert_int_equal(cl_simple(fd, 6), 0);
	assert_int_equal(cl_read_simple(fd, 7, 128 * 1024, 128 * 1024, r), 0);
	assert_true(mem_is_zero(r, 64 * 1024));
	assert_memory_equal(r + 64 * 1024, w, 64 * 1024);

	/* Large zero and trim (no payload) are not held to 32 MiB... but
	 * must stay inside the device. */
	cl_req(fd, 0, NBD_CMD_WRITE_ZEROES, 8, 0, DISK_SIZE, NULL);
	assert_int_equal(cl_simple(fd, 8), 0);
	cl_req(fd, 0, NBD_CMD_TRIM, 9, 0, DISK_SIZE, NULL);
	assert_int_equal(cl_simple(fd, 9), 0);
	cl_disc(fd);
	free(w);
	free(r);
}

/* Descriptors of a BLOCK_STATUS reply into len/status arrays; count. */
static size_t cl_block_status(int fd, uint16_t flags, uint64_t handle, uint64_t off, uint32_t len,
			      uint32_t *lens, uint32_t *st, size_t cap, uint32_t *err)
{
	struct chunk ch;
	uint32_t serr = 0;
	size_t n;

	cl_req(fd, flags, NBD_CMD_BLOCK_STATUS, handle, off, len, NULL);
	if (!cl_reply(fd, handle, &serr, &ch))
		fail_msg("simple reply to BLOCK_STATUS (error %u)", serr);
	assert_true(ch.flags & NBD_REPLY_FLAG_DONE);
	if (ch.type == NBD_REPLY_TYPE_ERROR) {
		*err = get_be32(ch.data);
		free(ch.data);
		return 0;
	}
	*err = 0;
	assert_int_equal(ch.type, NBD_REPLY_TYPE_BLOCK_STATUS);
	assert_true(ch.len >= 12 && (ch.len - 4) % 8 == 0);
	n = (ch.len - 4) / 8;
	assert_true(n <= cap);
	for (size_t i = 0; i < n; i++) {
		lens[i] = get_be32(ch.data + 4 + 8 * i);
		st[i] = get_be32(ch.data + 8 + 8 * i);
	}
	free(ch.data);
	return n;
}

static void test_block_status(void **state)
{
	struct fix *f = *state;
	uint32_t lens[16], st[16], err;
	size_t n;
	int fd = cl_open(f, "sparse", true, true, NULL);

	n = cl_block_status(fd, 0, 1, 0, SPARSE_SIZE, lens, st, 16, &err);
	assert_int_equal(err, 0);
	assert_int_equal(n, 3);
	assert_int_equal(lens[0], MiB);
	assert_int_equal(st[0], NBD_STATE_HOLE | NBD_STATE_ZERO);
	assert_int_equal(lens[1], 64 * 1024);
	assert_int_equal(st[1], 0);
	assert_int_equal(lens[2], SPARSE_SIZE - MiB - 64 * 1024);
	assert_int_equal(st[2], 3);

	/* REQ_ONE: exactly one descriptor, not longer than asked. */
	n = cl_block_status(fd, NBD_CMD_FLAG_REQ_ONE, 2, 0, 2 * MiB, lens, st, 16, &err);
	assert_int_equal(n, 1);
	assert_int_equal(lens[0], MiB);
	n = cl_block_status(fd, NBD_CMD_FLAG_REQ_ONE, 3, MiB + 4096, 4096, lens, st, 16, &err);
	assert_int_equal(n, 1);
	assert_int_equal(lens[0], 4096);
	assert_int_equal(st[0], 0);

	/* Beyond the end, zero length, bad flag: EINVAL error chunks. */
	n = cl_block_status(fd, 0, 4, SPARSE_SIZE - 512, 1024, lens, st, 16, &err);
	assert_int_equal(err, NBD_EINVAL);
	n = cl_block_status(fd, 0, 5, 0, 0, lens, st, 16, &err);
	assert_int_equal(err, NBD_EINVAL);
	n = cl_block_status(fd, NBD_CMD_FLAG_NO_HOLE, 6, 0, 4096, lens, st, 16, &err);
	assert_int_equal(err, NBD_EINVAL);
	(void)n;
	cl_disc(fd);

	/* Without a negotiated context: EINVAL (simple reply here). */
	fd = cl_open(f, "sparse", false, false, NULL);
	cl_req(fd, 0, NBD_CMD_BLOCK_STATUS, 7, 0, 4096, NULL);
	assert_int_equal(cl_simple(fd, 7), NBD_EINVAL);
	cl_disc(fd);
}

/* ---- validation errors ------------------------------------------------------------- */

/* Each error, then a good request on the same connection. */
static void check_errors(struct fix *f, bool structured)
{
	uint8_t *big = malloc(NBD_MAX_PAYLOAD + 1), r[4096];
	char msg[1024];
	int fd = cl_open(f, "disk", structured, false, NULL), ro;
	uint64_t h = 1;

	memset(big, 0x42, NBD_MAX_PAYLOAD + 1);
#define EXPECT(err)                                                                                \
	do {                                                                                       \
		assert_int_equal(cl_status(fd, h, msg, sizeof(msg)), (err));                       \
		if (structured && (err) != 0)                                                      \
			assert_true(msg[0] != 0);                                                  \
		h++;                                                                               \
	} while (0)
#define STILL_OK()                                                                                 \
	do {                                                                                       \
		cl_req(fd, 0, NBD_CMD_WRITE, h, 0, 4, "ok!!");                                     \
		EXPECT(0);                                                                         \
	} while (0)

	/* Out of range: READ EINVAL, WRITE ENOSPC, ZERO ENOSPC, TRIM EINVAL. */
	cl_req(fd, 0, NBD_CMD_READ, h, DISK_SIZE - 10, 11, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, 0, NBD_CMD_WRITE, h, DISK_SIZE - 10, 11, big);
	EXPECT(NBD_ENOSPC);
	STILL_OK();
	cl_req(fd, 0, NBD_CMD_WRITE_ZEROES, h, DISK_SIZE, 1, NULL);
	EXPECT(NBD_ENOSPC);
	cl_req(fd, 0, NBD_CMD_TRIM, h, UINT64_MAX - 5, 4096, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, 0, NBD_CMD_READ, h, UINT64_MAX, 1, NULL);
	EXPECT(NBD_EINVAL);
	STILL_OK();

	/* Unknown commands, including CACHE (not advertised). */
	cl_req(fd, 0, 9, h, 0, 4096, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, 0, NBD_CMD_CACHE, h, 0, 4096, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, 0, 0xffff, h, 0, 0, NULL);
	EXPECT(NBD_EINVAL);
	STILL_OK();

	/* Flags not valid for the command. */
	cl_req(fd, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, h, 0, 16, big);
	EXPECT(NBD_EINVAL);
	cl_req(fd, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_READ, h, 0, 16, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, h, 0, 16, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, 1U << 12, NBD_CMD_FLUSH, h, 0, 0, NULL);
	EXPECT(NBD_EINVAL);
	if (!structured) {
		/* DF is only valid with structured replies. */
		cl_req(fd, NBD_CMD_FLAG_DF, NBD_CMD_READ, h, 0, 16, NULL);
		EXPECT(NBD_EINVAL);
	}
	/* FLUSH with an offset. */
	cl_req(fd, 0, NBD_CMD_FLUSH, h, 4096, 0, NULL);
	EXPECT(NBD_EINVAL);
	/* FUA is accepted on any command. */
	cl_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, h, 0, 0, NULL);
	EXPECT(0);
	STILL_OK();

	/* Oversized READ and WRITE: EINVAL; the WRITE payload is consumed. */
	cl_req(fd, 0, NBD_CMD_READ, h, 0, NBD_MAX_PAYLOAD + 1, NULL);
	EXPECT(NBD_EINVAL);
	cl_req(fd, 0, NBD_CMD_WRITE, h, 0, NBD_MAX_PAYLOAD + 1, big);
	EXPECT(NBD_EINVAL);
	STILL_OK();
	/* Nothing of the oversized write was written. */
	assert_int_equal(blk_pread(f->disk, r, sizeof(r), 0), 0);
	assert_memory_equal(r, "ok!!", 4);
	assert_true(mem_is_zero(r + 4, sizeof(r) - 4));
	/* Exactly 32 MiB is fine... past the 4 MiB device it is ENOSPC. */
	cl_req(fd, 0, NBD_CMD_WRITE, h, 0, NBD_MAX_PAYLOAD, big);
	EXPECT(NBD_ENOSPC);
	STILL_OK();
	cl_disc(fd);

	/* Read-only export: EPERM for every kind of write, payload consumed. */
	ro = cl_open(f, "ro", structured, false, NULL);
	fd = ro;
	cl_req(fd, 0, NBD_CMD_WRITE, h, 0, 4096, big);
	EXPECT(NBD_EPERM);
	cl_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, h, 0, 4096, big);
	EXPECT(NBD_EPERM);
	cl_req(fd, 0, NBD_CMD_TRIM, h, 0, 4096, NULL);
	EXPECT(NBD_EPERM);
	cl_req(fd, 0, NBD_CMD_WRITE_ZEROES, h, 0, 4096, NULL);
	EXPECT(NBD_EPERM);
	cl_req(fd, 0, NBD_CMD_FLUSH, h, 0, 0, NULL);
	EXPECT(0);
	if (structured) {
		assert_int_equal(cl_read_structured(fd, 0, h, 0, 4096, r, NULL, NULL), 0);
	} else {
		assert_int_equal(cl_read_simple(fd, h, 0, 4096, r), 0);
	}
	h++;
	assert_int_equal(r[0], 0xab);
	assert_int_equal(blk_pread(f->ro, r, 16, 0), 0);
	assert_int_equal(r[0], 0xab);
	cl_disc(fd);
#undef EXPECT
#undef STILL_OK
	free(big);
}

static void test_errors_simple(void **state)
{
	check_errors(*state, false);
}

static void test_errors_structured(void **state)
{
	check_errors(*state, true);
}

static void test_io_error(void **state)
{
	struct fix *f = *state;
	uint8_t b[512];
	int fd = cl_open(f, "disk", false, false, NULL);

	blk_mem_inject(f->disk, BLK_MEM_WRITE, 1, ENOSPC);
	cl_req(fd, 0, NBD_CMD_WRITE, 1, 0, sizeof(b), b);
	assert_int_equal(cl_simple(fd, 1), NBD_ENOSPC);
	blk_mem_inject(f->disk, BLK_MEM_FLUSH, 1, EIO);
	cl_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 2, 0, sizeof(b), b);
	assert_int_equal(cl_simple(fd, 2), NBD_EIO);
	blk_mem_inject(f->disk, BLK_MEM_READ, 1, EIO);
	assert_int_equal(cl_read_simple(fd, 3, 0, sizeof(b), b), NBD_EIO);
	assert_int_equal(cl_read_simple(fd, 4, 0, sizeof(b), b), 0);
	cl_disc(fd);
}

/* ---- misbehaving clients -------------------------------------------------------------- */

static void test_garbage_magic(void **state)
{
	struct fix *f = *state;
	uint8_t junk[NBD_REQUEST_LEN], r[64];
	int good = cl_open(f, "disk", false, false, NULL);
	int bad = cl_open(f, "disk", true, false, NULL);

	wait_clients(f->s, 2);
	memset(junk, 0x5a, sizeof(junk));
	cl_send(bad, junk, sizeof(junk));
	assert_true(cl_closed(bad));
	close(bad);
	wait_clients(f->s, 1);
	/* The other client does not notice. */
	cl_req(good, 0, NBD_CMD_WRITE, 1, 0, 8, "survivor");
	assert_int_equal(cl_simple(good, 1), 0);
	assert_int_equal(cl_read_simple(good, 2, 0, 8, r), 0);
	assert_memory_equal(r, "survivor", 8);
	cl_disc(good);
	wait_clients(f->s, 0);
}

static void test_vanish(void **state)
{
	struct fix *f = *state;
	uint8_t *w = malloc(MiB), r[4096];
	int fd, other = cl_open(f, "disk", false, false, NULL);

	/* Mid-write payload: half of 1 MiB, then gone. */
	fd = cl_open(f, "disk", false, false, NULL);
	memset(w, 0xee, MiB);
	cl_req(fd, 0, NBD_CMD_WRITE, 1, 0, MiB, NULL);
	cl_send(fd, w, MiB / 2);
	close(fd);

	/* Mid-header. */
	fd = cl_open(f, "disk", false, false, NULL);
	cl_send(fd, "\x25\x60\x95\x13\x00\x00", 6);
	close(fd);

	/* Mid-handshake. */
	fd = cl_connect(f);
	close(fd);
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_send(fd, "IHAVE", 5);
	close(fd);

	wait_clients(f->s, 1);
	/* Nothing of the torn write reached the device. */
	assert_int_equal(cl_read_simple(other, 2, 0, sizeof(r), r), 0);
	assert_true(mem_is_zero(r, sizeof(r)));
	cl_disc(other);
	wait_clients(f->s, 0);
	free(w);
}

/* ---- refusal and shutdown ---------------------------------------------------------------- */

static void test_refuse(void **state)
{
	struct fix *f = *state;
	struct export_info ei;
	char msg[256];
	uint8_t d[64], buf[256];
	int in = cl_open(f, "disk", false, false, NULL), fd;

	nbds_refuse(f->s, "incoming migration not complete");
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_GO, d, info_data(d, "disk", NULL, 0));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_GO, &ei, msg, sizeof(msg)),
			 NBD_REP_ERR_UNKNOWN);
	assert_string_equal(msg, "incoming migration not complete");
	cl_opt(fd, NBD_OPT_INFO, d, info_data(d, "disk", NULL, 0));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_INFO, &ei, msg, sizeof(msg)),
			 NBD_REP_ERR_UNKNOWN);
	/* LIST still answers. */
	cl_opt(fd, NBD_OPT_LIST, NULL, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), NULL),
				 NBD_REP_SERVER);
	assert_int_equal(cl_opt_reply(fd, NBD_OPT_LIST, buf, sizeof(buf), NULL), NBD_REP_ACK);
	/* A client already in transmission is not affected. */
	cl_req(in, 0, NBD_CMD_FLUSH, 1, 0, 0, NULL);
	assert_int_equal(cl_simple(in, 1), 0);

	/* Lifted: the same connection gets in. */
	nbds_refuse(f->s, NULL);
	cl_opt(fd, NBD_OPT_GO, d, info_data(d, "disk", NULL, 0));
	assert_int_equal(cl_info_replies(fd, NBD_OPT_GO, &ei, NULL, 0), NBD_REP_ACK);
	cl_disc(fd);

	/* EXPORT_NAME cannot carry the error: closed. */
	nbds_refuse(f->s, "again");
	fd = cl_connect(f);
	cl_greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(fd, NBD_OPT_EXPORT_NAME, "disk", 4);
	assert_true(cl_closed(fd));
	close(fd);
	cl_disc(in);
}

static void test_shutdown(void **state)
{
	struct fix *f = *state;
	struct export_info ei;
	struct blk *mem, *track;
	char msg[256];
	uint8_t d[64], buf[4096], w[4096];
	int a, b, idle, hs;

	/*
	 * An export behind a tracking layer whose writers are paused, so the
	 * first WRITE of each client is held in the block layer and whatever
	 * follows it is still unanswered when the switch-over comes.
	 */
	assert_int_equal(blk_mem_open(MiB, &mem), 0);
	assert_int_equal(blk_track_open(mem, &track), 0);
	assert_int_equal(nbds_add_export(f->s, "tracked", track, false), 0);
	a = cl_open(f, "tracked", true, false, NULL);
	b = cl_open(f, "tracked", false, false, NULL);
	idle = cl_open(f, "tracked", false, false, NULL);
	hs = cl_connect(f);
	cl_greet(hs, NBD_FLAG_C_FIXED_NEWSTYLE);
	wait_clients(f->s, 4);

	track_pause(track);
	memset(w, 0x99, sizeof(w));
	cl_req(a, 0, NBD_CMD_WRITE, 1, 0, sizeof(w), w);
	cl_req(b, 0, NBD_CMD_WRITE, 2, 4096, sizeof(w), w);
	cl_req(b, 0, NBD_CMD_READ, 3, 0, 512, NULL);
	cl_req(b, 0, NBD_CMD_FLUSH, 4, 0, 0, NULL);
	usleep(50 * 1000); /* let the writes reach the gate (either way works) */

	/* Switch-over: shut the server down and fence the layer. */
	nbds_shutdown(f->s, ESHUTDOWN, "switched over to host B");
	nbds_shutdown(f->s, EIO, "ignored: the first call wins");
	nbds_refuse(f->s, NULL); /* does not undo a shutdown */
	track_fence(track, ESHUTDOWN);

	/* Structured: an ERROR chunk with the reason; then closed. */
	assert_int_equal(cl_status(a, 1, msg, sizeof(msg)), NBD_ESHUTDOWN);
	assert_string_equal(msg, "switched over to host B");
	/* Every unanswered request gets the error, in order. */
	assert_int_equal(cl_simple(b, 2), NBD_ESHUTDOWN);
	assert_int_equal(cl_simple(b, 3), NBD_ESHUTDOWN);
	assert_int_equal(cl_simple(b, 4), NBD_ESHUTDOWN);
	/* Then (and for the idle client at once) the connections close. */
	assert_true(cl_closed(a));
	assert_true(cl_closed(b));
	assert_true(cl_closed(idle));
	close(a);
	close(b);
	close(idle);
	/* Nothing was written. */
	track_resume(track);
	assert_int_equal(blk_pread(track, buf, sizeof(buf), 0), 0);
	assert_true(mem_is_zero(buf, sizeof(buf)));
	assert_int_equal(blk_pread(track, buf, sizeof(buf), 4096), 0);
	assert_true(mem_is_zero(buf, sizeof(buf)));

	/* In haggling: options fail with SHUTDOWN and the reason. */
	cl_opt(hs, NBD_OPT_GO, d, info_data(d, "disk", NULL, 0));
	assert_int_equal(cl_info_replies(hs, NBD_OPT_GO, &ei, msg, sizeof(msg)),
			 NBD_REP_ERR_SHUTDOWN);
	assert_string_equal(msg, "switched over to host B");
	cl_opt(hs, NBD_OPT_LIST, NULL, 0);
	assert_int_equal(cl_opt_reply(hs, NBD_OPT_LIST, buf, sizeof(buf), NULL),
			 NBD_REP_ERR_SHUTDOWN);
	cl_opt(hs, NBD_OPT_ABORT, NULL, 0);
	assert_int_equal(cl_opt_reply(hs, NBD_OPT_ABORT, buf, sizeof(buf), NULL), NBD_REP_ACK);
	close(hs);

	/* New clients cannot get in either. */
	hs = cl_connect(f);
	cl_greet(hs, NBD_FLAG_C_FIXED_NEWSTYLE);
	cl_opt(hs, NBD_OPT_EXPORT_NAME, "disk", 4);
	assert_true(cl_closed(hs));
	close(hs);
	wait_clients(f->s, 0);

	/* The export must outlive the server. */
	nbds_free(f->s);
	f->s = NULL;
	blk_close(track);
}

/* Requests arriving after the shutdown (within the quiet time) get the error too. */
static void test_shutdown_later_request(void **state)
{
	struct fix *f = *state;
	uint8_t w[512];
	int fd = cl_open(f, "disk", false, false, NULL);
	uint32_t err;

	memset(w, 1, sizeof(w));
	nbds_shutdown(f->s, 0, NULL); /* 0 means ESHUTDOWN */
	cl_req(fd, 0, NBD_CMD_WRITE, 1, 0, sizeof(w), w);
	/*
	 * The server closes a connection that stays quiet for 200 ms after
	 * the shutdown; on a very slow machine that may come first.
	 */
	{
		uint8_t h[NBD_SIMPLE_REPLY_LEN];
		ssize_t n = recv(fd, h, sizeof(h), MSG_WAITALL);

		if (n == (ssize_t)sizeof(h)) {
			err = get_be32(h + 4);
			assert_int_equal(err, NBD_ESHUTDOWN);
		}
	}
	assert_true(cl_closed(fd));
	close(fd);
	assert_int_equal(blk_pread(f->disk, w, sizeof(w), 0), 0);
	assert_true(mem_is_zero(w, sizeof(w)));
}

/* ---- limits ---------------------------------------------------------------------- */

/*
 * Over the per-address limit: a refusal conversation (POLICY with the
 * reason for every option), at most NBDS_MAX_REFUSING at once; beyond,
 * closed before the greeting.  Each logged.
 */
static void test_limit_refusals(void **state)
{
	struct fix *f = *state;
	int first = cl_open(f, "disk", false, false, NULL), told[NBDS_MAX_REFUSING], fd;
	uint8_t buf[512], g[NBD_GREETING_LEN];
	uint32_t len;

	for (int i = 0; i < NBDS_MAX_REFUSING; i++) {
		told[i] = cl_connect(f);
		cl_greet(told[i], NBD_FLAG_C_FIXED_NEWSTYLE);
		cl_opt(told[i], NBD_OPT_LIST, NULL, 0);
		assert_int_equal(cl_opt_reply(told[i], NBD_OPT_LIST, buf, sizeof(buf) - 1, &len),
				 NBD_REP_ERR_POLICY);
		buf[len] = '\0';
		assert_non_null(strstr((char *)buf, "too many connections from 127.0.0.1"));
	}
	/* No more conversations: closed without a word. */
	fd = cl_connect(f);
	assert_true(recv(fd, g, sizeof(g), MSG_WAITALL) <= 0);
	close(fd);
	assert_true(logged("(closed at once)"));
	assert_true(logged("refused a connection from 127.0.0.1:"));
	/* EXPORT_NAME cannot carry the error: closed. */
	cl_opt(told[0], NBD_OPT_EXPORT_NAME, "disk", 4);
	assert_true(cl_closed(told[0]));
	for (int i = 0; i < NBDS_MAX_REFUSING; i++)
		close(told[i]);
	cl_disc(first);
}

/* The idle timeout closes a client in transmission, and is logged. */
static void test_limit_idle(void **state)
{
	struct fix *f = *state;
	int fd = cl_open(f, "disk", false, false, NULL);

	assert_true(cl_closed(fd)); /* within RECV_TIMEOUT_S */
	close(fd);
	wait_clients(f->s, 0);
	assert_true(logged("no request for 300 ms"));
}

/*
 * A connection waiting for an unauthenticated slot (its address holds its
 * share) is not greeted; nbds_free() ends the wait, and it is closed
 * without a word rather than refused after the wait.
 */
static void test_limit_unauth_wait_free(void **state)
{
	struct fix *f = *state;
	int a = cl_connect(f), b;
	uint8_t g[NBD_GREETING_LEN];

	cl_recv(a, g, sizeof(g)); /* a holds 127.0.0.1's one slot */
	b = cl_connect(f);
	wait_clients(f->s, 2);
	nbds_free(f->s);
	f->s = NULL;
	assert_int_equal(recv(b, g, sizeof(g), 0), 0);
	close(a);
	close(b);
}

static void test_free_with_clients(void **state)
{
	struct fix *f = *state;
	int fds[4];

	/* Clients in every phase when the server goes away. */
	fds[0] = cl_open(f, "disk", false, false, NULL);
	fds[1] = cl_open(f, "disk", true, true, NULL);
	fds[2] = cl_connect(f);
	fds[3] = cl_connect(f);
	cl_greet(fds[3], NBD_FLAG_C_FIXED_NEWSTYLE);
	wait_clients(f->s, 4);
	assert_int_equal(nbds_clients(f->s), 4);
	nbds_free(f->s);
	f->s = NULL;
	for (int i = 0; i < 4; i++) {
		uint8_t b[64];

		while (recv(fds[i], b, sizeof(b), 0) > 0)
			;
		close(fds[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_api_errors, setup, teardown),
		cmocka_unit_test(test_nbd_errno),
		cmocka_unit_test_setup_teardown(test_list_and_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_info_go_block_size, setup, teardown),
		cmocka_unit_test_setup_teardown(test_go_unknown_export, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_option_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_context, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_write_simple, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_structured, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trim_write_zeroes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_block_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_simple, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_structured, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vanish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_later_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_with_clients, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_refusals, setup_limited, teardown),
		cmocka_unit_test_setup_teardown(test_limit_idle, setup_idle, teardown),
		cmocka_unit_test_setup_teardown(test_limit_unauth_wait_free, setup_unauth,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
