/* SPDX-License-Identifier: MIT */
/*
 * Control socket, client half: what `blkmig migrate/status/cancel` use to
 * talk to `blkmig serve --control PATH`.  One blocking connection; each
 * command carries a fresh integer id, so a reply that arrives after its
 * call gave up (timed out) is recognised and skipped rather than taken for
 * the answer to the next command.  See control.h and docs/control.md.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "control.h"
#include "ctl-impl.h"

#define CONNECT_RETRY_NS (10 * 1000000ull)

struct ctl_client {
	char *path;
	int fd;
	int timeout_ms;	 /* -1: none */
	int64_t next_id; /* ids below this belong to earlier calls */
	int failed;	 /* sticky negative errno once the stream is unusable */
	char *failed_msg;

	/* Received bytes: [start, len) unconsumed, [start, scan) hold no
	 * newline. */
	char *buf;
	size_t start, scan, len, cap;
};

/* 0 for "no deadline". */
static uint64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? 0 : now_ns() + (uint64_t)timeout_ms * 1000000u + 1;
}

/* Record a failure that leaves the stream unusable; returns r. */
static int client_fail(struct ctl_client *c, int r)
{
	c->failed = r;
	free(c->failed_msg);
	c->failed_msg = strdup(err_msg());
	return r;
}

static int client_sticky(struct ctl_client *c)
{
	err_copy_in(c->failed_msg ? c->failed_msg : "control connection failed earlier");
	return c->failed;
}

static int write_all(struct ctl_client *c, const char *p, size_t len, uint64_t deadline)
{
	while (len > 0) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
		ssize_t n = send(c->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		int e = errno;

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && e == EPIPE)
			return client_fail(
			    c,
			    err_set(ECONNRESET,
				    "control socket %s: connection closed by the server", c->path));
		if (n < 0 && e != EAGAIN && e != EWOULDBLOCK && e != EINTR)
			return client_fail(
			    c, err_set(e, "control socket %s: send: %s", c->path, strerror(e)));
		if (n < 0 && e == EINTR)
			continue;
		if (poll(&pfd, 1, poll_ms_until(deadline)) == 0)
			/* Part of a line may be out: the stream cannot be reused. */
			return client_fail(c, err_set(ETIMEDOUT,
						      "control socket %s: server is not reading",
						      c->path));
	}
	return 0;
}

/*
 * Next JSON object from the server.  0 with *out set (caller puts it);
 * -ETIMEDOUT when the deadline passed (not sticky: nothing was lost); any
 * other negative errno is sticky.
 */
static int read_msg(struct ctl_client *c, uint64_t deadline, json_object **out)
{
	for (;;) {
		char *nl =
		    c->len > c->scan ? memchr(c->buf + c->scan, '\n', c->len - c->scan) : NULL;
		char msg[160];
		json_object *o;
		ssize_t n;
		int r;

		if (nl) {
			char *line = c->buf + c->start;

			c->start = c->scan = (size_t)(nl - c->buf) + 1;
			r = ctl_parse_line(line, (size_t)(nl - line), &o, msg, sizeof(msg));
			if (r == 1)
				continue;
			if (r < 0)
				return client_fail(
				    c, err_set(r == -ENOMEM ? ENOMEM : EPROTO,
					       "control socket %s: bad line from server: %s",
					       c->path, msg));
			if (!json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				return client_fail(c, err_set(EPROTO,
							      "control socket %s: server sent a "
							      "line that is not an object",
							      c->path));
			}
			*out = o;
			return 0;
		}
		if (c->start > 0) {
			memmove(c->buf, c->buf + c->start, c->len - c->start);
			c->len -= c->start;
			c->start = 0;
		}
		c->scan = c->len;
		if (c->len > CTL_MAX_REPLY_LINE)
			return client_fail(
			    c, err_set(EPROTO,
				       "control socket %s: line from server longer than %d bytes",
				       c->path, CTL_MAX_REPLY_LINE));
		if (c->len == c->cap) {
			size_t cap =
			    MIN(MAX(c->cap * 2, (size_t)4096), (size_t)CTL_MAX_REPLY_LINE + 1);
			char *p = realloc(c->buf, cap);

			if (!p)
				return client_fail(
				    c,
				    err_set(ENOMEM, "control socket %s: out of memory", c->path));
			c->buf = p;
			c->cap = cap;
		}

		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

		r = poll(&pfd, 1, poll_ms_until(deadline));
		if (r == 0)
			return err_set(ETIMEDOUT, "control socket %s: timed out", c->path);
		if (r < 0 && errno == EINTR)
			continue;
		n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
		if (n > 0) {
			c->len += (size_t)n;
		} else if (n == 0) {
			return client_fail(
			    c,
			    err_set(ECONNRESET,
				    "control socket %s: connection closed by the server", c->path));
		} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			int e = errno;

			if (e == ECONNRESET)
				err_set(e, "control socket %s: connection closed by the server",
					c->path);
			else
				err_set(e, "control socket %s: recv: %s", c->path, strerror(e));
			return client_fail(c, -e);
		}
	}
}

enum msg_kind {
	MSG_EVENT,
	MSG_REPLY,
	MSG_STALE_REPLY, /* the answer to a call that gave up waiting */
};

/* Classify a message; replies must carry the id 'expect' (or none: the
 * server's complaint about a line it could not parse).  expect < 0: no
 * call is outstanding.  Negative errno (sticky) for anything else. */
static int classify(struct ctl_client *c, json_object *m, int64_t expect, enum msg_kind *kind)
{
	json_object *v;

	if (json_object_object_get_ex(m, "event", &v)) {
		if (!json_object_is_type(v, json_type_string))
			goto bad;
		*kind = MSG_EVENT;
		return 0;
	}
	if (!json_object_object_get_ex(m, "return", NULL)) {
		json_object *cls, *desc;

		if (!json_object_object_get_ex(m, "error", &v) ||
		    !json_object_object_get_ex(v, "class", &cls) ||
		    !json_object_object_get_ex(v, "desc", &desc) ||
		    !json_object_is_type(cls, json_type_string) ||
		    !json_object_is_type(desc, json_type_string))
			goto bad;
	}
	if (!json_object_object_get_ex(m, "id", &v)) {
		if (expect < 0)
			goto bad;
		*kind = MSG_REPLY;
		return 0;
	}
	if (!json_object_is_type(v, json_type_int))
		goto bad;
	if (json_object_get_int64(v) == expect) {
		*kind = MSG_REPLY;
		return 0;
	}
	if (json_object_get_int64(v) >= 0 && json_object_get_int64(v) < c->next_id) {
		*kind = MSG_STALE_REPLY;
		return 0;
	}
bad:
	return client_fail(
	    c, err_set(EPROTO, "control socket %s: unexpected message from server: %.200s", c->path,
		       json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN)));
}

int ctl_connect(const char *path, int timeout_ms, struct ctl_client **out)
{
	json_object *g = NULL, *b, *v;
	struct sockaddr_un sa;
	struct ctl_client *c;
	uint64_t deadline;
	socklen_t salen;
	int r, e;

	r = ctl_sockaddr(path, &sa, &salen);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c || !(c->path = strdup(path))) {
		free(c);
		return err_set(ENOMEM, "control socket %s: out of memory", path);
	}
	c->timeout_ms = timeout_ms;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		e = errno;
		r = err_set(e, "cannot connect to control socket %s: %s", path, strerror(e));
		goto err;
	}
	deadline = deadline_after(timeout_ms);
	while (connect(c->fd, (struct sockaddr *)&sa, salen) < 0) {
		e = errno;
		/* EAGAIN: the server's backlog is full; it may drain. */
		if (e == EINTR || (e == EAGAIN && poll_ms_until(deadline) != 0)) {
			sleep_ns(CONNECT_RETRY_NS);
			continue;
		}
		r = err_set(e, "cannot connect to control socket %s: %s", path, strerror(e));
		goto err;
	}

	r = read_msg(c, deadline, &g);
	if (r == -ETIMEDOUT)
		r = err_set(ETIMEDOUT,
			    "control socket %s: no greeting from the server within %d ms", path,
			    timeout_ms);
	if (r < 0)
		goto err;
	if (json_object_object_get_ex(g, "error", &v) && json_object_object_get_ex(v, "desc", &v) &&
	    json_object_is_type(v, json_type_string)) {
		r = err_set(EREMOTEIO, "control socket %s refused the connection: %s", path,
			    json_object_get_string(v));
		goto err;
	}
	if (!json_object_object_get_ex(g, "blkmig", &b) ||
	    !json_object_is_type(b, json_type_object) ||
	    !json_object_object_get_ex(b, "version", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		r = err_set(EPROTO,
			    "control socket %s: not a blkmig control socket (greeting %.100s)",
			    path, json_object_to_json_string_ext(g, JSON_C_TO_STRING_PLAIN));
		goto err;
	}
	json_object_put(g);
	*out = c;
	return 0;

err:
	json_object_put(g);
	ctl_client_close(c);
	return r;
}

/* Hand an event message to a ctl_call() callback, data borrowed.  Under
 * ENOMEM a data-less event is skipped. */
static void deliver_event(json_object *m,
			  void (*on_event)(void *user, const char *event, json_object *data),
			  void *user)
{
	json_object *name = NULL, *data = NULL, *empty = NULL;

	json_object_object_get_ex(m, "event", &name);
	if (!json_object_object_get_ex(m, "data", &data) || !data)
		data = empty = json_object_new_object();
	if (data)
		on_event(user, json_object_get_string(name), data);
	json_object_put(empty);
}

int ctl_call(struct ctl_client *c, const char *cmd, json_object *args, json_object **ret,
	     void (*on_event)(void *user, const char *event, json_object *data), void *user)
{
	json_object *req, *m, *v;
	enum msg_kind kind;
	uint64_t deadline;
	char *line;
	int64_t id;
	size_t len;
	int r;

	assert(cmd && *cmd);
	if (ret)
		*ret = NULL;
	if (c->failed) {
		json_object_put(args);
		return client_sticky(c);
	}
	id = c->next_id++;
	req = json_object_new_object();
	if (!req) {
		json_object_put(args);
		return err_set(ENOMEM, "command %s: out of memory", cmd);
	}
	if (ctl_obj_add(req, "execute", json_object_new_string(cmd)) < 0 ||
	    (args && ctl_obj_add(req, "arguments", args) < 0) ||
	    ctl_obj_add(req, "id", json_object_new_int64(id)) < 0) {
		/* args was consumed by the add, or is still ours here. */
		json_object_put(req);
		return err_set(ENOMEM, "command %s: out of memory", cmd);
	}
	line = ctl_to_line(req, &len);
	json_object_put(req);
	if (!line)
		return err_set(ENOMEM, "command %s: out of memory", cmd);
	if (len - 1 > CTL_MAX_LINE) {
		free(line);
		return err_set(
		    E2BIG, "command %s: request is %zu bytes, more than the server accepts (%d)",
		    cmd, len - 1, CTL_MAX_LINE);
	}
	deadline = deadline_after(c->timeout_ms);
	r = write_all(c, line, len, deadline);
	free(line);
	if (r < 0)
		return r;

	for (;;) {
		r = read_msg(c, deadline, &m);
		if (r == -ETIMEDOUT)
			return err_set(ETIMEDOUT,
				       "command %s: no reply from control socket %s within %d ms",
				       cmd, c->path, c->timeout_ms);
		if (r < 0)
			return r;
		r = classify(c, m, id, &kind);
		if (r == 0 && kind == MSG_REPLY)
			break;
		if (r == 0 && kind == MSG_EVENT && on_event)
			deliver_event(m, on_event, user);
		json_object_put(m);
		if (r < 0)
			return r;
	}
	if (json_object_object_get_ex(m, "return", &v)) {
		if (ret)
			*ret = json_object_get(v);
		json_object_put(m);
		return 0;
	}
	json_object_object_get_ex(m, "error", &v);
	json_object_object_get_ex(v, "desc", &v);
	r = err_set(EREMOTEIO, "%s", json_object_get_string(v));
	json_object_put(m);
	return r;
}

int ctl_next_event(struct ctl_client *c, int timeout_ms, char *event_name, size_t name_cap,
		   json_object **data)
{
	uint64_t deadline = deadline_after(timeout_ms);
	enum msg_kind kind;
	json_object *m, *v;
	int r;

	assert(event_name && name_cap > 0 && data);
	*data = NULL;
	if (c->failed)
		return client_sticky(c);
	for (;;) {
		r = read_msg(c, deadline, &m);
		if (r == -ETIMEDOUT)
			return err_set(ETIMEDOUT, "control socket %s: no event within %d ms",
				       c->path, timeout_ms);
		if (r < 0)
			return r;
		r = classify(c, m, -1, &kind);
		if (r == 0 && kind == MSG_EVENT)
			break;
		json_object_put(m);
		if (r < 0)
			return r;
	}
	json_object_object_get_ex(m, "event", &v);
	snprintf(event_name, name_cap, "%s", json_object_get_string(v));
	if (json_object_object_get_ex(m, "data", &v) && v)
		*data = json_object_get(v);
	else
		*data = json_object_new_object();
	json_object_put(m);
	if (!*data)
		return err_set(ENOMEM, "control socket %s: out of memory", c->path);
	return 0;
}

void ctl_client_close(struct ctl_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	free(c->failed_msg);
	free(c->path);
	free(c);
}
