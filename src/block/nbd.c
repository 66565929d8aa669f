/* SPDX-License-Identifier: MIT */
/*
 * NBD client backend (libnbd): a blk whose reads and writes go to an NBD
 * export, which is how a source forwards its clients to the destination
 * after the switch-over; see blk_nbd_open() in backend.h.
 *
 * Connections: a small pool of libnbd handles, opened on demand (an op
 * takes an idle handle, or opens one while fewer than max_conns exist, or
 * waits for one to come back).  One handle serves one op at a time, so
 * libnbd's own handle lock is never contended and the ops of several
 * client connections run side by side, as they would on the source.
 *
 * Every wait is bounded and cancellable.  Connections and commands use
 * libnbd's asynchronous calls driven by our own poll(2) on the handle's
 * descriptor and the cancel token's: a command not answered within
 * op_timeout fails, an export that does not take connections yet (a
 * destination still finishing its take-over refuses them) is retried
 * until 'patience' has passed since the first attempt of this op.  A
 * handle that failed in any way is closed, never reused: the next op
 * opens a fresh one.  An idle handle the server closed is found before
 * use, and a command whose reused handle's link turns out dead is tried
 * once more on a fresh connection (NBD commands may be repeated); any
 * other failure is the client's to see (a write may or may not have
 * reached the export; the client decides, as with any NBD error).
 *
 * Request sizes are split to what NBD carries (32 MiB reads and writes,
 * 1 GiB zeroes and trims) so the caller need not know.
 */
#include "backend.h"

#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"

#define NBD_FWD_MAX_IO	     (32 * MiB) /* the NBD server's usual payload limit */
#define NBD_FWD_MAX_ZERO     (1 * GiB)
#define NBD_FWD_MAX_CONNS    16
#define NBD_FWD_RETRY_MIN_NS (2 * 1000000ull)
#define NBD_FWD_RETRY_NS     (100 * 1000000ull)
#define NBD_FWD_GONE_NS	     (1000 * 1000000ull)
#define NBD_FWD_BYE_NS	     (500 * 1000000ull)

struct nbd_conn {
	struct nbd_handle *h;
	struct nbd_conn *next; /* on the idle list */
};

struct nbd_blk {
	struct blk blk;
	char *host, *port, *export, *psk_file, *psk_user, *x509_dir;
	uint64_t patience_ns, op_timeout_ns;
	unsigned max_conns;
	struct cancel *cancel; /* owned; blk_nbd_cancel() fires it */

	pthread_mutex_t lock; /* protects the pool */
	pthread_cond_t freed; /* an idle handle or a free slot appeared */
	struct nbd_conn *idle;
	unsigned open; /* handles in existence, idle or in use */

	/* What the export can do, from the first connection (then caps_known). */
	bool can_trim, can_zero, can_meta;
	atomic_bool caps_known;
	atomic_uint_fast64_t requests, errors, connects;
};

static const struct blk_ops nbd_ops;

static struct nbd_blk *to_nbd(struct blk *b)
{
	return (struct nbd_blk *)b;
}

/* libnbd's message for the last failure on this thread, or a fallback. */
static const char *nbd_msg(void)
{
	const char *m = nbd_get_error();

	return m && *m ? m : "unknown NBD error";
}

static int nbd_err(int fallback)
{
	int e = nbd_get_errno();

	return e > 0 ? e : fallback;
}

/*
 * Run the handle's state machine until done() says so or it dies: 1 done,
 * 0 the deadline passed, or a negative errno (-ECANCELED when fired).
 */
static int drive(struct nbd_blk *n, struct nbd_handle *h, bool (*done)(struct nbd_handle *, void *),
		 void *arg, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2];
		unsigned dir;
		int fd, r;

		if (done(h, arg))
			return 1;
		if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h))
			return -nbd_err(ECONNRESET);
		fd = nbd_aio_get_fd(h);
		if (fd < 0)
			return -nbd_err(EINVAL);
		dir = nbd_aio_get_direction(h);
		p[0] = (struct pollfd){ .fd = fd };
		if (dir & LIBNBD_AIO_DIRECTION_READ)
			p[0].events |= POLLIN;
		if (dir & LIBNBD_AIO_DIRECTION_WRITE)
			p[0].events |= POLLOUT;
		p[1] = (struct pollfd){ .fd = cancel_fd(n->cancel), .events = POLLIN };
		r = poll(p, 2, poll_ms_until(deadline));
		if (r < 0 && errno != EINTR)
			return -errno;
		if (cancel_is_set(n->cancel))
			return -ECANCELED;
		if (r == 0 && deadline && now_ns() >= deadline)
			return 0;
		if (r <= 0)
			continue;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
			r = nbd_aio_notify_read(h);
		else if (p[0].revents & POLLOUT)
			r = nbd_aio_notify_write(h);
		else
			r = 0;
		if (r < 0 && !done(h, arg))
			return -nbd_err(EIO);
	}
}

static bool is_gone(struct nbd_handle *h, void *arg)
{
	(void)arg;
	return nbd_aio_is_closed(h) || nbd_aio_is_dead(h);
}

static bool is_connected(struct nbd_handle *h, void *arg)
{
	(void)arg;
	return nbd_aio_is_ready(h);
}

/* One connection attempt: a ready handle, or NULL with the message set. */
static struct nbd_handle *connect_once(struct nbd_blk *n, uint64_t deadline, int *err)
{
	struct nbd_handle *h = nbd_create();
	int64_t size;
	int r;

	if (!h) {
		*err = err_set(nbd_err(ENOMEM), "forwarding to %s:%s: %s", n->host, n->port,
			       nbd_msg());
		return NULL;
	}
	r = nbd_set_export_name(h, n->export);
	if (r == 0 && (n->psk_file || n->x509_dir))
		r = nbd_set_tls(h, LIBNBD_TLS_REQUIRE);
	if (r == 0 && n->psk_file)
		r = nbd_set_tls_psk_file(h, n->psk_file);
	if (r == 0 && n->psk_user)
		r = nbd_set_tls_username(h, n->psk_user);
	if (r == 0 && n->x509_dir)
		r = nbd_set_tls_certificates(h, n->x509_dir);
	if (r == 0)
		r = nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
	if (r == 0)
		r = nbd_aio_connect_tcp(h, n->host, n->port);
	if (r < 0) {
		*err =
		    err_set(nbd_err(EIO), "forwarding to %s:%s: %s", n->host, n->port, nbd_msg());
		goto fail;
	}
	r = drive(n, h, is_connected, NULL, deadline);
	if (r <= 0) {
		if (r == 0)
			*err = err_set(ETIMEDOUT, "forwarding to %s:%s: no answer to the handshake",
				       n->host, n->port);
		else if (r == -ECANCELED)
			*err =
			    err_set(ECANCELED, "forwarding to %s:%s: cancelled", n->host, n->port);
		else
			*err = err_set(-r, "forwarding to %s:%s: %s", n->host, n->port, nbd_msg());
		goto fail;
	}
	size = nbd_get_size(h);
	if (size < 0 || (uint64_t)size != n->blk.size) {
		*err = err_set(EMEDIUMTYPE,
			       "forwarding to %s:%s: export '%s' has %" PRId64
			       " bytes where %" PRIu64 " were expected",
			       n->host, n->port, n->export, size, n->blk.size);
		goto fail;
	}
	if (nbd_is_read_only(h) == 1) {
		*err = err_set(EROFS, "forwarding to %s:%s: export '%s' is read-only", n->host,
			       n->port, n->export);
		goto fail;
	}
	return h;

fail:
	nbd_close(h);
	return NULL;
}

/*
 * Whether an idle handle can still carry a command: while idle nothing
 * should arrive, so input is the server closing (an idle timeout, a
 * restart) or something libnbd must see (a TLS ticket): let it look.
 */
static bool conn_usable(struct nbd_handle *h)
{
	struct pollfd p = { .fd = nbd_aio_get_fd(h), .events = POLLIN };

	if (p.fd < 0 || !nbd_aio_is_ready(h))
		return false;
	if (poll(&p, 1, 0) > 0)
		nbd_aio_notify_read(h);
	return nbd_aio_is_ready(h) && !nbd_aio_is_dead(h) && !nbd_aio_is_closed(h);
}

/*
 * A handle for one op: an idle one (*reused), a new one, or one given
 * back by another op.  A new connection is retried (the export may not
 * take connections yet) until patience has passed.  NULL with *err set.
 */
static struct nbd_conn *conn_get(struct nbd_blk *n, int *err, bool *reused)
{
	struct nbd_conn *c;
	uint64_t give_up;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		while (!n->idle && n->open >= n->max_conns && !cancel_is_set(n->cancel))
			pthread_cond_wait(&n->freed, &n->lock);
		if (cancel_is_set(n->cancel)) {
			pthread_mutex_unlock(&n->lock);
			*err =
			    err_set(ECANCELED, "forwarding to %s:%s: cancelled", n->host, n->port);
			return NULL;
		}
		c = n->idle;
		if (!c)
			break;
		n->idle = c->next;
		if (conn_usable(c->h)) {
			pthread_mutex_unlock(&n->lock);
			*reused = true;
			return c;
		}
		/* Closed by the server while idle: not worth an error. */
		n->open--;
		pthread_mutex_unlock(&n->lock);
		nbd_close(c->h);
		free(c);
		pthread_mutex_lock(&n->lock);
	}
	*reused = false;
	n->open++;
	pthread_mutex_unlock(&n->lock);
	/* Patience is for an export that does not take connections yet; one
	 * that did and now refuses them is gone, and the client hears so. */
	give_up = now_ns() + (atomic_load(&n->connects) ? MIN(n->patience_ns, NBD_FWD_GONE_NS)
							: n->patience_ns);

	c = calloc(1, sizeof(*c));
	if (!c) {
		*err = err_set(ENOMEM, "forwarding: out of memory");
		goto fail;
	}
	/* Soon at first: every millisecond here is part of the clients'
	 * pause at the switch-over. */
	for (uint64_t delay = NBD_FWD_RETRY_MIN_NS;; delay = MIN(2 * delay, NBD_FWD_RETRY_NS)) {
		c->h = connect_once(n, now_ns() + n->op_timeout_ns, err);
		if (c->h)
			break;
		if (*err == -ECANCELED || *err == -EMEDIUMTYPE || *err == -EROFS ||
		    now_ns() + delay >= give_up)
			goto fail;
		if (cancel_sleep(n->cancel, (int64_t)delay)) {
			*err =
			    err_set(ECANCELED, "forwarding to %s:%s: cancelled", n->host, n->port);
			goto fail;
		}
	}
	atomic_fetch_add(&n->connects, 1);
	pthread_mutex_lock(&n->lock);
	if (!atomic_load(&n->caps_known)) {
		n->can_trim = nbd_can_trim(c->h) == 1;
		n->can_zero = nbd_can_zero(c->h) == 1;
		n->can_meta = nbd_can_meta_context(c->h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
		/* Without multi-conn a flush covers only its own connection's
		 * writes: then one connection carries everything. */
		if (nbd_can_multi_conn(c->h) != 1)
			n->max_conns = 1;
		atomic_store(&n->caps_known, true);
	}
	pthread_mutex_unlock(&n->lock);
	return c;

fail:
	free(c);
	pthread_mutex_lock(&n->lock);
	n->open--;
	pthread_cond_signal(&n->freed);
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

/* Give a handle back; a failed one is closed, its slot freed. */
static void conn_put(struct nbd_blk *n, struct nbd_conn *c, bool failed)
{
	pthread_mutex_lock(&n->lock);
	failed = failed || n->open > n->max_conns; /* the pool shrank */
	if (failed) {
		n->open--;
	} else {
		c->next = n->idle;
		n->idle = c;
	}
	pthread_cond_signal(&n->freed);
	pthread_mutex_unlock(&n->lock);
	if (failed) {
		nbd_close(c->h);
		free(c);
	}
}

struct cmd_wait {
	int64_t cookie;
	int result; /* set once completed: 0 or a negative errno */
};

static bool cmd_done(struct nbd_handle *h, void *arg)
{
	struct cmd_wait *w = arg;
	int r = nbd_aio_command_completed(h, (uint64_t)w->cookie);

	if (r == 0)
		return false;
	w->result = r > 0 ? 0 : -nbd_err(EIO);
	return true;
}

enum nbd_cmd { CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_ZERO, CMD_TRIM, CMD_STATUS };

static const char *const cmd_name[] = {
	[CMD_READ] = "read", [CMD_WRITE] = "write", [CMD_FLUSH] = "flush",
	[CMD_ZERO] = "zero", [CMD_TRIM] = "trim",   [CMD_STATUS] = "block status",
};

struct status_arg {
	uint64_t pnum;
	bool allocated;
	bool seen;
};

static int extent_cb(void *user, const char *metacontext, uint64_t offset, uint32_t *entries,
		     size_t nr_entries, int *error)
{
	struct status_arg *s = user;

	(void)offset;
	(void)error;
	if (s->seen || strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || nr_entries < 2)
		return 0;
	s->seen = true;
	s->pnum = entries[0];
	s->allocated = !(entries[1] & LIBNBD_STATE_HOLE);
	return 0;
}

/*
 * One attempt of a command on one connection: 1 done (*res its result:
 * 0 or a negative errno, message set), 0 the link failed before an
 * answer (*res set too; the connection is gone).
 */
static int cmd_once(struct nbd_blk *n, struct nbd_conn *c, enum nbd_cmd cmd, void *buf,
		    uint64_t len, uint64_t off, uint32_t flags, struct status_arg *st, int *res)
{
	struct cmd_wait w = { .cookie = -1 };
	int r;

	switch (cmd) {
	case CMD_READ:
		w.cookie = nbd_aio_pread(c->h, buf, len, off, NBD_NULL_COMPLETION, 0);
		break;
	case CMD_WRITE:
		w.cookie = nbd_aio_pwrite(c->h, buf, len, off, NBD_NULL_COMPLETION, 0);
		break;
	case CMD_FLUSH:
		w.cookie = nbd_aio_flush(c->h, NBD_NULL_COMPLETION, 0);
		break;
	case CMD_ZERO:
		w.cookie = nbd_aio_zero(c->h, len, off, NBD_NULL_COMPLETION, flags);
		break;
	case CMD_TRIM:
		w.cookie = nbd_aio_trim(c->h, len, off, NBD_NULL_COMPLETION, 0);
		break;
	case CMD_STATUS:
		w.cookie = nbd_aio_block_status(
		    c->h, len, off, (nbd_extent_callback){ .callback = extent_cb, .user_data = st },
		    NBD_NULL_COMPLETION, 0);
		break;
	}
	if (w.cookie < 0) {
		*res = err_set(nbd_err(EIO), "forwarding %s to %s:%s: %s", cmd_name[cmd], n->host,
			       n->port, nbd_msg());
		conn_put(n, c, true);
		return 0;
	}
	r = drive(n, c->h, cmd_done, &w, now_ns() + n->op_timeout_ns);
	if (r == 1 && w.result == 0) {
		conn_put(n, c, false);
		*res = 0;
		return 1;
	}
	if (r == 1)
		*res = err_set(-w.result, "forwarding %s at offset %" PRIu64 " to %s:%s: %s",
			       cmd_name[cmd], off, n->host, n->port, nbd_msg());
	else if (r == 0)
		*res = err_set(ETIMEDOUT,
			       "forwarding %s at offset %" PRIu64 " to %s:%s: no answer in %" PRIu64
			       " s",
			       cmd_name[cmd], off, n->host, n->port, n->op_timeout_ns / 1000000000);
	else if (r == -ECANCELED)
		*res = err_set(ECANCELED, "forwarding %s to %s:%s: cancelled", cmd_name[cmd],
			       n->host, n->port);
	else
		*res = err_set(-r, "forwarding %s to %s:%s: %s", cmd_name[cmd], n->host, n->port,
			       nbd_msg());
	/*
	 * An error the server answered leaves the connection usable; anything
	 * else (timeout, cancel, a dead link) may leave a reply in flight that
	 * would be taken for the next command's: close it.
	 */
	if (r == 1 && !nbd_aio_is_dead(c->h) && !nbd_aio_is_closed(c->h)) {
		conn_put(n, c, false);
		return 1;
	}
	conn_put(n, c, true);
	return r == 1 || r == 0 || r == -ECANCELED ? 1 : 0;
}

/*
 * Issue one command of at most what NBD carries, wait for its answer.  A
 * connection that had been idle may have been closed by the server in a
 * way only the command finds: then the command is tried once more on a
 * fresh connection (every NBD command may be repeated).
 */
static int nbd_cmd(struct nbd_blk *n, enum nbd_cmd cmd, void *buf, uint64_t len, uint64_t off,
		   uint32_t flags, struct status_arg *st)
{
	int res = 0;

	atomic_fetch_add(&n->requests, 1);
	for (int attempt = 0; attempt < 2; attempt++) {
		bool reused = false;
		struct nbd_conn *c = conn_get(n, &res, &reused);

		if (!c)
			break;
		if (cmd_once(n, c, cmd, buf, len, off, flags, st, &res) || !reused)
			break;
	}
	if (res < 0)
		atomic_fetch_add(&n->errors, 1);
	return res;
}

/* ---- ops ------------------------------------------------------------------ */

/* Learn what the export can do (one connection) before an op depends on it. */
static int need_caps(struct nbd_blk *n)
{
	struct nbd_conn *c;
	bool reused;
	int err = 0;

	if (atomic_load(&n->caps_known))
		return 0;
	c = conn_get(n, &err, &reused);
	if (!c)
		return err;
	conn_put(n, c, false);
	return 0;
}

static int nbd_pread_op(struct blk *b, void *buf, size_t len, uint64_t off)
{
	struct nbd_blk *n = to_nbd(b);

	while (len) {
		size_t k = MIN(len, (size_t)NBD_FWD_MAX_IO);
		int r = nbd_cmd(n, CMD_READ, buf, k, off, 0, NULL);

		if (r < 0)
			return r;
		buf = (char *)buf + k;
		off += k;
		len -= k;
	}
	return 0;
}

static int nbd_pwrite_op(struct blk *b, const void *buf, size_t len, uint64_t off)
{
	struct nbd_blk *n = to_nbd(b);

	while (len) {
		size_t k = MIN(len, (size_t)NBD_FWD_MAX_IO);
		/* libnbd takes the buffer as const void * and never writes it. */
		int r = nbd_cmd(n, CMD_WRITE, (void *)(uintptr_t)buf, k, off, 0, NULL);

		if (r < 0)
			return r;
		buf = (const char *)buf + k;
		off += k;
		len -= k;
	}
	return 0;
}

static int nbd_flush_op(struct blk *b)
{
	return nbd_cmd(to_nbd(b), CMD_FLUSH, NULL, 0, 0, 0, NULL);
}

static int nbd_zero_op(struct blk *b, uint64_t off, uint64_t len, unsigned flags)
{
	struct nbd_blk *n = to_nbd(b);
	static const uint8_t zeros[64 * KiB];
	int r = need_caps(n);

	if (r < 0)
		return r;
	while (len) {
		uint64_t k = MIN(len, NBD_FWD_MAX_ZERO);

		if (n->can_zero) {
			r = nbd_cmd(n, CMD_ZERO, NULL, k, off,
				    flags & BLK_ZERO_MAY_TRIM ? 0 : LIBNBD_CMD_FLAG_NO_HOLE, NULL);
		} else {
			/* An export without WRITE_ZEROES: write them. */
			k = MIN(k, sizeof(zeros));
			r = nbd_cmd(n, CMD_WRITE, (void *)(uintptr_t)zeros, k, off, 0, NULL);
		}
		if (r < 0)
			return r;
		off += k;
		len -= k;
	}
	return 0;
}

static int nbd_trim_op(struct blk *b, uint64_t off, uint64_t len)
{
	struct nbd_blk *n = to_nbd(b);
	int r = need_caps(n);

	if (r < 0)
		return r;
	/* Trim is advisory: an export that cannot keeps the data. */
	while (len && n->can_trim) {
		uint64_t k = MIN(len, NBD_FWD_MAX_ZERO);

		r = nbd_cmd(n, CMD_TRIM, NULL, k, off, 0, NULL);
		if (r < 0)
			return r;
		off += k;
		len -= k;
	}
	return 0;
}

static int nbd_status_op(struct blk *b, uint64_t off, uint64_t len, uint64_t *pnum, bool *allocated)
{
	struct nbd_blk *n = to_nbd(b);
	struct status_arg st = { 0 };
	int r = need_caps(n);

	*pnum = len;
	*allocated = true;
	if (r < 0)
		return r;
	if (!n->can_meta)
		return 0;
	r = nbd_cmd(n, CMD_STATUS, NULL, MIN(len, NBD_FWD_MAX_ZERO), off, 0, &st);
	if (r < 0)
		return r;
	if (st.seen && st.pnum > 0) {
		*pnum = MIN(st.pnum, len);
		*allocated = st.allocated;
	}
	return 0;
}

/* The copies of the target's strings, and n itself. */
static void free_target(struct nbd_blk *n)
{
	free(n->host);
	free(n->port);
	free(n->export);
	free(n->psk_file);
	free(n->psk_user);
	free(n->x509_dir);
	free(n);
}

static void nbd_close_op(struct blk *b)
{
	struct nbd_blk *n = to_nbd(b);

	while (n->idle) {
		struct nbd_conn *c = n->idle;

		n->idle = c->next;
		/* Polite: NBD_CMD_DISC and a moment for the server to close,
		 * unless the device was cancelled (a daemon going away from a
		 * destination that may not answer at all). */
		if (!cancel_is_set(n->cancel) && nbd_aio_disconnect(c->h, 0) == 0)
			drive(n, c->h, is_gone, NULL, now_ns() + NBD_FWD_BYE_NS);
		nbd_close(c->h);
		free(c);
	}
	cancel_free(n->cancel);
	pthread_cond_destroy(&n->freed);
	pthread_mutex_destroy(&n->lock);
	free_target(n);
}

static const struct blk_ops nbd_ops = {
	.name = "nbd",
	.pread = nbd_pread_op,
	.pwrite = nbd_pwrite_op,
	.flush = nbd_flush_op,
	.zero = nbd_zero_op,
	.trim = nbd_trim_op,
	.block_status = nbd_status_op,
	.close = nbd_close_op,
};

static int dup_opt(char **dst, const char *src)
{
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

int blk_nbd_open(const struct blk_nbd_target *t, uint64_t size, struct blk **out)
{
	struct nbd_blk *n;
	int r;

	if (!t->host || !*t->host || !t->port || !*t->port || !t->export)
		return err_set(EINVAL, "forwarding: no address or export");
	n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(ENOMEM, "forwarding: out of memory");
	n->blk.ops = &nbd_ops;
	n->blk.size = size;
	n->patience_ns = t->patience_ns;
	n->op_timeout_ns = t->op_timeout_ns ? t->op_timeout_ns : BLK_NBD_OP_TIMEOUT_NS;
	n->max_conns = t->max_conns ? MIN(t->max_conns, NBD_FWD_MAX_CONNS) : 4;
	r = dup_opt(&n->host, t->host);
	if (r == 0)
		r = dup_opt(&n->port, t->port);
	if (r == 0)
		r = dup_opt(&n->export, t->export);
	if (r == 0)
		r = dup_opt(&n->psk_file, t->psk_file);
	if (r == 0)
		r = dup_opt(&n->psk_user, t->psk_user);
	if (r == 0)
		r = dup_opt(&n->x509_dir, t->x509_dir);
	if (r < 0) {
		r = err_set(ENOMEM, "forwarding: out of memory");
		goto err;
	}
	r = cancel_new(&n->cancel);
	if (r < 0)
		goto err;
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->freed, NULL);
	*out = &n->blk;
	return 0;

err:
	free_target(n);
	return r;
}

void blk_nbd_cancel(struct blk *b)
{
	struct nbd_blk *n = to_nbd(b);

	cancel_fire(n->cancel);
	/* Ops waiting for a connection of the pool too. */
	pthread_mutex_lock(&n->lock);
	pthread_cond_broadcast(&n->freed);
	pthread_mutex_unlock(&n->lock);
}

void blk_nbd_stats(struct blk *b, struct blk_nbd_stats *st)
{
	struct nbd_blk *n = to_nbd(b);

	st->requests = atomic_load(&n->requests);
	st->errors = atomic_load(&n->errors);
	st->connects = atomic_load(&n->connects);
}
