/* SPDX-License-Identifier: MIT */
/*
 * Control socket, server half: the socket file, and one thread per client
 * (started and reaped by common/acceptor) that reads its lines, runs its
 * commands through the owner's handler and writes its output queue.  See
 * control.h for the contract and docs/control.md for the protocol.
 *
 * Locking, outermost first: ctl->handler_lock (serialises handler calls;
 * held by a client thread only around the call), the acceptor's list lock
 * (taken by acc_foreach() in ctl_event()), conn->olock (one client's output
 * queue).  A handler may call ctl_event(), which takes the other two,
 * because client threads never hold them while calling the handler.
 */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/acceptor.h"
#include "common/error.h"
#include "common/util.h"
#include "control.h"
#include "ctl-impl.h"

/* Unsent output beyond this drops the client at once, stalled or not. */
#define OUT_MAX (4 * MiB)
/* While this much output is unsent, the client's further lines wait: a
 * client that pipelines commands without reading answers stalls itself. */
#define OUT_READ_LIMIT (256 * KiB)
#define STALL_NS       ((uint64_t)CTL_STALL_MS * 1000000u)

struct ctl_conn {
	struct ctl *ctl;
	int fd;
	int wake_fd; /* eventfd: output queued, or the server is stopping */

	pthread_mutex_t olock; /* protects out* and drop */
	char *out;
	size_t out_off, out_len, out_cap;
	bool drop; /* queue overflowed or out of memory: disconnect */

	/* Input, touched by the client thread only.  Bytes [in_start, in_len)
	 * are unconsumed; [in_start, in_scan) hold no newline. */
	size_t in_start, in_scan, in_len;
	char in[CTL_MAX_LINE + 1];
};

struct ctl {
	char *path;
	dev_t dev; /* identity of our socket file, so close removes only it */
	ino_t ino;
	int lfd;
	ctl_handler_fn fn;
	void *user;
	char *greeting;
	size_t greeting_len;
	atomic_bool stopping;
	struct acc *acc; /* accepts, runs and reaps the clients */

	pthread_mutex_t handler_lock;
};

static void wake(int efd)
{
	/* Only fails when the counter would overflow, and then a wakeup is
	 * pending anyway. */
	(void)eventfd_write(efd, 1);
}

/* ---- replies ------------------------------------------------------------- */

/* Add "id" as the request had it (possibly a JSON null); id is borrowed. */
static int add_id(json_object *reply, bool has_id, json_object *id)
{
	if (!has_id)
		return 0;
	if (!id)
		return json_object_object_add(reply, "id", NULL) < 0 ? -ENOMEM : 0;
	return ctl_obj_add(reply, "id", json_object_get(id));
}

/* {key: val, "id": id}; consumes val.  NULL on ENOMEM. */
static json_object *reply_new(const char *key, json_object *val, bool has_id, json_object *id)
{
	json_object *r = json_object_new_object();

	if (!r) {
		json_object_put(val);
		return NULL;
	}
	if (ctl_obj_add(r, key, val) < 0 || add_id(r, has_id, id) < 0) {
		json_object_put(r);
		return NULL;
	}
	return r;
}

static json_object *reply_error(const char *cls, const char *desc, bool has_id, json_object *id)
{
	json_object *e = json_object_new_object();

	if (!e)
		return NULL;
	if (ctl_obj_add(e, "class", json_object_new_string(cls)) < 0 ||
	    ctl_obj_add(e, "desc", json_object_new_string(desc)) < 0) {
		json_object_put(e);
		return NULL;
	}
	return reply_new("error", e, has_id, id);
}

static const char *known_class(const char *cls)
{
	static const char *const classes[] = { CTL_ERR_GENERIC, CTL_ERR_NOT_FOUND,
					       CTL_ERR_INVALID_PARAM };

	for (size_t i = 0; cls && i < ARRAY_SIZE(classes); i++)
		if (!strcmp(cls, classes[i]))
			return classes[i];
	return CTL_ERR_GENERIC;
}

/*
 * Check one parsed request and run it.  Returns the reply (NULL on ENOMEM).
 * A request that is not {"execute": NAME, "arguments": {...}, "id": ANY}
 * gets a GenericError without reaching the handler.
 */
static json_object *run_request(struct ctl *ctl, json_object *req)
{
	json_object *id = NULL, *exec = NULL, *args = NULL, *ret, *reply;
	const char *cmd, *cls = NULL;
	bool has_id;
	char err[512];

	if (!json_object_is_type(req, json_type_object)) {
		snprintf(err, sizeof(err), "expected a JSON object, got %s",
			 json_type_to_name(json_object_get_type(req)));
		return reply_error(CTL_ERR_GENERIC, err, false, NULL);
	}
	has_id = json_object_object_get_ex(req, "id", &id);
	json_object_object_foreach(req, member, unused)
	{
		(void)unused;
		if (strcmp(member, "execute") && strcmp(member, "arguments") &&
		    strcmp(member, "id")) {
			snprintf(err, sizeof(err),
				 "unexpected member '%.64s' (expected execute, arguments, id)",
				 member);
			return reply_error(CTL_ERR_GENERIC, err, has_id, id);
		}
	}
	if (!json_object_object_get_ex(req, "execute", &exec))
		return reply_error(CTL_ERR_GENERIC, "missing member 'execute'", has_id, id);
	cmd = json_object_get_string(exec);
	if (!json_object_is_type(exec, json_type_string) || !*cmd ||
	    strlen(cmd) != (size_t)json_object_get_string_len(exec))
		return reply_error(CTL_ERR_GENERIC, "'execute' must be a non-empty string", has_id,
				   id);
	if (json_object_object_get_ex(req, "arguments", &args)) {
		if (!json_object_is_type(args, json_type_object))
			return reply_error(CTL_ERR_GENERIC, "'arguments' must be an object", has_id,
					   id);
		json_object_get(args);
	} else {
		args = json_object_new_object();
		if (!args)
			return NULL;
	}

	err[0] = '\0';
	pthread_mutex_lock(&ctl->handler_lock);
	ret = ctl->fn(ctl->user, cmd, args, &cls, err, sizeof(err));
	pthread_mutex_unlock(&ctl->handler_lock);
	if (ret) {
		reply = reply_new("return", ret, has_id, id);
	} else {
		/* Before args goes: cls may point into it. */
		err[sizeof(err) - 1] = '\0';
		reply = reply_error(known_class(cls), err[0] ? err : "command failed", has_id, id);
	}
	json_object_put(args);
	return reply;
}

/* ---- one client ---------------------------------------------------------- */

/* Append len bytes to the output queue; on overflow or ENOMEM mark the
 * client for dropping instead.  Needs cn->olock. */
static void conn_queue_locked(struct ctl_conn *cn, const char *line, size_t len)
{
	size_t pending = cn->out_len - cn->out_off;

	if (cn->drop)
		return;
	if (pending + len > OUT_MAX) {
		cn->drop = true;
		return;
	}
	if (cn->out_len + len > cn->out_cap && cn->out_off > 0) {
		memmove(cn->out, cn->out + cn->out_off, pending);
		cn->out_off = 0;
		cn->out_len = pending;
	}
	if (cn->out_len + len > cn->out_cap) {
		size_t cap = MAX(MAX(cn->out_cap * 2, cn->out_len + len), (size_t)4096);
		char *p = realloc(cn->out, cap);

		if (!p) {
			cn->drop = true;
			return;
		}
		cn->out = p;
		cn->out_cap = cap;
	}
	memcpy(cn->out + cn->out_len, line, len);
	cn->out_len += len;
}

static void conn_queue(struct ctl_conn *cn, const char *line, size_t len)
{
	pthread_mutex_lock(&cn->olock);
	conn_queue_locked(cn, line, len);
	pthread_mutex_unlock(&cn->olock);
}

/* Queue a reply (consumed); NULL means building it ran out of memory. */
static void conn_reply(struct ctl_conn *cn, json_object *reply)
{
	size_t len;
	char *line = reply ? ctl_to_line(reply, &len) : NULL;

	json_object_put(reply);
	if (!line) {
		pthread_mutex_lock(&cn->olock);
		cn->drop = true;
		pthread_mutex_unlock(&cn->olock);
		return;
	}
	conn_queue(cn, line, len);
	free(line);
}

/* Send what the socket takes now.  1 if bytes moved, 0 if none could,
 * negative errno if the client is gone or must be dropped; *pending gets
 * the bytes still queued. */
static int conn_flush(struct ctl_conn *cn, size_t *pending)
{
	int r = 0;

	pthread_mutex_lock(&cn->olock);
	if (cn->drop)
		r = -ENOBUFS;
	while (r >= 0 && cn->out_off < cn->out_len) {
		ssize_t n = send(cn->fd, cn->out + cn->out_off, cn->out_len - cn->out_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			cn->out_off += (size_t)n;
			r = 1;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		} else {
			r = n < 0 ? -errno : -EPIPE;
		}
	}
	if (cn->out_off == cn->out_len)
		cn->out_off = cn->out_len = 0;
	*pending = cn->out_len - cn->out_off;
	pthread_mutex_unlock(&cn->olock);
	return r;
}

static void conn_handle_line(struct ctl_conn *cn, char *line, size_t len)
{
	json_object *req = NULL;
	char msg[160];
	int r = ctl_parse_line(line, len, &req, msg, sizeof(msg));

	if (r == 1)
		return; /* blank lines are ignored */
	if (r < 0) {
		conn_reply(cn, reply_error(CTL_ERR_GENERIC, msg, false, NULL));
		return;
	}
	conn_reply(cn, run_request(cn->ctl, req));
	json_object_put(req);
}

/*
 * Answer the next buffered line.  1 if one was handled; 0 if no complete
 * line is buffered (at_eof: a final unterminated line counts as complete);
 * -EMSGSIZE if the buffered line is over the limit (an error reply is
 * queued and the connection should close).
 */
static int conn_next_line(struct ctl_conn *cn, bool at_eof)
{
	char *nl = memchr(cn->in + cn->in_scan, '\n', cn->in_len - cn->in_scan);
	char *line = cn->in + cn->in_start;

	if (nl) {
		cn->in_start = cn->in_scan = (size_t)(nl - cn->in) + 1;
		conn_handle_line(cn, line, (size_t)(nl - line));
		return 1;
	}
	if (cn->in_start > 0) {
		memmove(cn->in, line, cn->in_len - cn->in_start);
		cn->in_len -= cn->in_start;
		cn->in_start = 0;
	}
	cn->in_scan = cn->in_len;
	if (cn->in_len > CTL_MAX_LINE) {
		char msg[128];

		snprintf(msg, sizeof(msg),
			 "line too long (more than %d bytes); closing the connection",
			 CTL_MAX_LINE);
		conn_reply(cn, reply_error(CTL_ERR_GENERIC, msg, false, NULL));
		return -EMSGSIZE;
	}
	if (at_eof && cn->in_len > 0) {
		size_t len = cn->in_len;

		/* The buffer has a spare byte for the NUL: len <= CTL_MAX_LINE. */
		cn->in_start = cn->in_scan = cn->in_len = 0;
		conn_handle_line(cn, cn->in, len);
		return 1;
	}
	return 0;
}

/*
 * A client's life: answer lines while the client keeps up with the answers,
 * and flush output (replies and events) as the socket takes it.  Ends when
 * the client goes away, after an over-long line, when output has been stuck
 * for CTL_STALL_MS or overflowed, or when the server stops.
 */
static void conn_main(void *arg)
{
	struct ctl_conn *cn = arg;
	struct ctl *ctl = cn->ctl;
	uint64_t stall_since = 0; /* when output last stopped moving; 0: it is not stuck */
	bool rd_eof = false;	  /* the client has finished sending */
	bool quit = false;	  /* answer no more lines; close once output is flushed */

	for (;;) {
		bool answered = false;
		size_t pending;
		int r, timeout = -1;

		r = conn_flush(cn, &pending);
		if (r < 0)
			break;
		if (!pending)
			stall_since = 0;
		else if (r > 0 || !stall_since)
			stall_since = now_ns();
		if (atomic_load(&ctl->stopping))
			break;

		while (!quit && pending < OUT_READ_LIMIT) {
			r = conn_next_line(cn, rd_eof);
			if (r == 0) {
				quit = rd_eof;
				break;
			}
			quit = r < 0;
			answered = true;
			conn_flush(cn, &pending);
		}
		if (answered) {
			/* Measure a stall from now, not from before the handler ran. */
			stall_since = 0;
			continue;
		}
		if (quit && !pending)
			break;
		if (stall_since) {
			uint64_t waited = now_ns() - stall_since;

			if (waited >= STALL_NS)
				break;
			timeout = (int)((STALL_NS - waited) / 1000000u) + 1;
		}

		struct pollfd p[2] = {
			{ .fd = cn->fd },
			{ .fd = cn->wake_fd, .events = POLLIN },
		};
		bool reading = !rd_eof && !quit && cn->in_len < sizeof(cn->in);

		if (reading)
			p[0].events |= POLLIN;
		if (pending)
			p[0].events |= POLLOUT;
		if (poll(p, 2, timeout) < 0 && errno != EINTR)
			break;
		if (p[1].revents & POLLIN) {
			eventfd_t v;

			(void)eventfd_read(cn->wake_fd, &v);
		}
		if (reading && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t n = recv(cn->fd, cn->in + cn->in_len, sizeof(cn->in) - cn->in_len,
					 MSG_DONTWAIT);

			if (n > 0)
				cn->in_len += (size_t)n;
			else if (n == 0)
				rd_eof = true;
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				break;
		}
	}
	close(cn->fd);
	cn->fd = -1;
}

static void conn_free(void *arg)
{
	struct ctl_conn *cn = arg;

	if (cn->fd >= 0)
		close(cn->fd);
	close(cn->wake_fd);
	pthread_mutex_destroy(&cn->olock);
	free(cn->out);
	free(cn);
}

static void conn_kick(void *arg)
{
	struct ctl_conn *cn = arg;

	wake(cn->wake_fd);
}

/*
 * Whether the peer may talk to this daemon at all: the socket's 0600 mode
 * is one fence, the peer's credentials the other (a mode can be loosened,
 * the directory can be shared).  Same user, or root; anyone else is closed
 * on with nothing read, and one line says who was refused.
 */
static bool peer_allowed(const struct ctl *ctl, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char shown[STR_ESCAPE_CAP(256)];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred)) {
		fprintf(stderr,
			"blkmig: control socket %s: refused a client: cannot read its "
			"credentials: %s\n",
			str_escape(shown, sizeof(shown), ctl->path), strerror(errno));
		return false;
	}
	if (cred.uid == geteuid() || cred.uid == 0)
		return true;
	fprintf(stderr,
		"blkmig: control socket %s: refused a client with uid %u (pid %d): only uid %u "
		"or root may control this daemon\n",
		str_escape(shown, sizeof(shown), ctl->path), (unsigned)cred.uid, (int)cred.pid,
		(unsigned)geteuid());
	return false;
}

/* Take over an accepted socket and queue the greeting; NULL refuses it. */
static void *conn_open(void *user, int fd)
{
	struct ctl *ctl = user;
	struct ctl_conn *cn;

	if (!peer_allowed(ctl, fd))
		return NULL;
	cn = calloc(1, sizeof(*cn));
	if (!cn)
		return NULL;
	cn->ctl = ctl;
	cn->fd = fd;
	cn->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cn->wake_fd < 0) {
		free(cn);
		return NULL;
	}
	pthread_mutex_init(&cn->olock, NULL);
	conn_queue(cn, ctl->greeting, ctl->greeting_len);
	return cn;
}

static void conn_refuse(void *user, int fd)
{
	static const char refusal[] = "{\"error\":{\"class\":\"" CTL_ERR_GENERIC "\","
				      "\"desc\":\"too many control clients\"}}\n";

	/* Even this line only for those who may control the daemon. */
	if (peer_allowed(user, fd))
		(void)!send(fd, refusal, sizeof(refusal) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static const struct acc_ops conn_ops = {
	.open = conn_open,
	.run = conn_main,
	.free = conn_free,
	.kick = conn_kick,
	.refuse = conn_refuse,
};

/* ---- the server ---------------------------------------------------------- */

/*
 * Decide what to do about an existing file at path: nothing there, or a
 * socket nobody answers on (removed): 0.  A live server: -EADDRINUSE.
 * Anything else: refuse.
 */
static int claim_path(const char *path, const struct sockaddr_un *sa, socklen_t salen)
{
	struct stat st;
	int fd, r, e;

	if (lstat(path, &st) < 0) {
		e = errno;
		if (e == ENOENT)
			return 0;
		return err_set(e, "control socket %s: %s", path, strerror(e));
	}
	/* lstat: a symlink is not a socket either, and is never followed. */
	if (S_ISLNK(st.st_mode))
		return err_set(EEXIST,
			       "control socket %s: a symbolic link is there: refusing to replace "
			       "it",
			       path);
	if (!S_ISSOCK(st.st_mode))
		return err_set(EEXIST, "control socket %s: file exists and is not a socket", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		e = errno;
		return err_set(e, "control socket %s: socket: %s", path, strerror(e));
	}
	r = connect(fd, (const struct sockaddr *)sa, salen);
	e = errno;
	close(fd);
	/* EAGAIN: a live listener whose backlog is full. */
	if (r == 0 || e == EAGAIN || e == EINPROGRESS)
		return err_set(EADDRINUSE, "control socket %s is in use", path);
	if (e == ENOENT)
		return 0;
	if (e != ECONNREFUSED)
		return err_set(e, "control socket %s: cannot tell whether it is in use: %s", path,
			       strerror(e));
	/* Nobody listens: a dead daemon's socket file. */
	if (unlink(path) < 0 && errno != ENOENT) {
		e = errno;
		return err_set(e, "cannot remove stale control socket %s: %s", path, strerror(e));
	}
	return 0;
}

static char *make_greeting(size_t *len)
{
	json_object *g = json_object_new_object(), *b = json_object_new_object();
	char *line = NULL;

	if (!g || !b) {
		json_object_put(b);
		goto out;
	}
	if (ctl_obj_add(b, "version", json_object_new_string(CTL_VERSION)) < 0 ||
	    ctl_obj_add(b, "capabilities", json_object_new_array()) < 0) {
		json_object_put(b);
		goto out;
	}
	if (ctl_obj_add(g, "blkmig", b) < 0)
		goto out;
	line = ctl_to_line(g, len);
out:
	json_object_put(g);
	return line;
}

int ctl_listen(const char *path, ctl_handler_fn fn, void *user, struct ctl **out)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct stat st;
	struct ctl *c;
	int r, e;

	assert(fn && out);
	r = ctl_sockaddr(path, &sa, &salen);
	if (r < 0)
		return r;
	r = claim_path(path, &sa, salen);
	if (r < 0)
		return r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(ENOMEM, "control socket %s: out of memory", path);
	c->fn = fn;
	c->user = user;
	c->path = strdup(path);
	c->greeting = make_greeting(&c->greeting_len);
	if (!c->path || !c->greeting) {
		r = err_set(ENOMEM, "control socket %s: out of memory", path);
		goto err_free;
	}
	c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->lfd < 0) {
		e = errno;
		r = err_set(e, "control socket %s: socket: %s", path, strerror(e));
		goto err_free;
	}
	/*
	 * Linux creates the socket file with the socket inode's mode less the
	 * umask, so with 0600 set first the file is never more open than
	 * that, and the process-wide umask (which other threads may rely on)
	 * is left alone.  chmod() afterwards undoes a stricter umask.
	 */
	if (fchmod(c->lfd, 0600) < 0) {
		e = errno;
		r = err_set(e, "control socket %s: fchmod: %s", path, strerror(e));
		goto err_close;
	}
	if (bind(c->lfd, (struct sockaddr *)&sa, salen) < 0) {
		e = errno;
		if (e == EADDRINUSE)
			r = err_set(e, "control socket %s is in use", path);
		else
			r = err_set(e, "cannot create control socket %s: %s", path, strerror(e));
		goto err_close;
	}
	if (chmod(path, 0600) < 0 || stat(path, &st) < 0) {
		e = errno;
		r = err_set(e, "control socket %s: chmod: %s", path, strerror(e));
		goto err_unlink;
	}
	c->dev = st.st_dev;
	c->ino = st.st_ino;
	if (listen(c->lfd, SOMAXCONN) < 0) {
		e = errno;
		r = err_set(e, "control socket %s: listen: %s", path, strerror(e));
		goto err_unlink;
	}
	pthread_mutex_init(&c->handler_lock, NULL);
	r = acc_start("control socket", c->lfd, CTL_MAX_CLIENTS, SOCK_NONBLOCK, &conn_ops, c,
		      &c->acc);
	if (r < 0)
		goto err_mutex;
	*out = c;
	return 0;

err_mutex:
	pthread_mutex_destroy(&c->handler_lock);
err_unlink:
	unlink(path);
err_close:
	close(c->lfd);
err_free:
	free(c->greeting);
	free(c->path);
	free(c);
	return r;
}

struct event_line {
	const char *line;
	size_t len;
};

static void queue_event(void *conn, void *arg)
{
	struct ctl_conn *cn = conn;
	const struct event_line *ev = arg;

	conn_queue(cn, ev->line, ev->len);
	wake(cn->wake_fd);
}

void ctl_event(struct ctl *c, const char *event, json_object *data)
{
	json_object *ev, *ts;
	struct timespec now;
	char *line = NULL;
	size_t len;

	assert(event && *event);
	if (!c) {
		json_object_put(data);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	ev = json_object_new_object();
	if (!ev) {
		json_object_put(data);
		return;
	}
	/* On ENOMEM the event is lost: no client can be told anything. */
	if (ctl_obj_add(ev, "event", json_object_new_string(event)) < 0) {
		json_object_put(data);
		goto out;
	}
	if (data && ctl_obj_add(ev, "data", data) < 0)
		goto out;
	ts = json_object_new_object();
	if (!ts || ctl_obj_add(ts, "seconds", json_object_new_int64(now.tv_sec)) < 0 ||
	    ctl_obj_add(ts, "microseconds", json_object_new_int((int32_t)(now.tv_nsec / 1000))) <
		0) {
		json_object_put(ts);
		goto out;
	}
	if (ctl_obj_add(ev, "timestamp", ts) < 0)
		goto out;
	line = ctl_to_line(ev, &len);
	if (!line)
		goto out;

	acc_foreach(c->acc, queue_event, &(struct event_line){ line, len });
out:
	free(line);
	json_object_put(ev);
}

void ctl_close(struct ctl *c)
{
	struct stat st;

	if (!c)
		return;
	atomic_store(&c->stopping, true);
	acc_stop(c->acc);

	/* New clients now get ENOENT (or ECONNREFUSED while the file
	 * exists), never a half-dead server. */
	close(c->lfd);
	if (lstat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
		unlink(c->path);

	acc_free(c->acc);

	pthread_mutex_destroy(&c->handler_lock);
	free(c->greeting);
	free(c->path);
	free(c);
}
