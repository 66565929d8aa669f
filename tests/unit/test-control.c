/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the control socket (src/control/): a real server with a
 * test handler on a socket in a temporary directory, driven both through
 * the client API (ctl_connect/ctl_call/ctl_next_event) and through raw
 * sockets that write exactly the bytes a test wants — malformed JSON,
 * over-long lines, half lines, clients that vanish or never read.
 *
 * Covered: the greeting; replies and each error class; ids echoed as sent;
 * every kind of bad request; the line-length limit at and past the
 * boundary; several clients at once with serialised handlers; events to
 * every client and interleaved with replies; clients that vanish, half-close
 * or stall; socket mode, "in use", stale and foreign files, unlink on close;
 * client-side errors, timeouts and sticky failures.
 *
 * The only timing used is lower bounds: a handler that sleeps longer than
 * the client waits, and a client left unread for longer than the stall
 * limit.  Every wait on a peer has a generous safety timeout, so a bug is a
 * failure, not a hang.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "control/control.h"

#define SAFETY_MS 20000
#define GREETING  "{\"blkmig\":{\"version\":\"0.1.0\",\"capabilities\":[]}}"

static void assert_msg_contains(const char *msg, const char *needle)
{
	if (!strstr(msg, needle))
		fail_msg("message '%s' does not contain '%s'", msg, needle);
}

static void sleep_ms(unsigned ms)
{
	sleep_ns((uint64_t)ms * 1000000u);
}

/* ---- the test handler ---------------------------------------------------- */

struct th {
	struct ctl *ctl;
	atomic_int inside; /* handlers running now */
	atomic_bool overlap;
	atomic_int calls;
};

static int64_t arg_int(json_object *args, const char *key, int64_t dflt)
{
	json_object *v;

	return json_object_object_get_ex(args, key, &v) ? json_object_get_int64(v) : dflt;
}

static json_object *test_handler(void *user, const char *cmd, json_object *args,
				 const char **err_class, char *err, size_t err_cap)
{
	struct th *th = user;
	json_object *ret = NULL, *v;

	assert_non_null(args);
	assert_true(err_cap >= 256);
	if (atomic_fetch_add(&th->inside, 1) != 0)
		atomic_store(&th->overlap, true);
	atomic_fetch_add(&th->calls, 1);

	if (!strcmp(cmd, "echo")) {
		ret = json_object_get(args);
	} else if (!strcmp(cmd, "add")) {
		if (!json_object_object_get_ex(args, "a", &v) ||
		    !json_object_object_get_ex(args, "b", &v)) {
			*err_class = CTL_ERR_INVALID_PARAM;
			snprintf(err, err_cap, "add: 'a' and 'b' are required");
		} else {
			ret = json_object_new_object();
			json_object_object_add(
			    ret, "sum",
			    json_object_new_int64(arg_int(args, "a", 0) + arg_int(args, "b", 0)));
		}
	} else if (!strcmp(cmd, "fail")) {
		*err_class = CTL_ERR_GENERIC;
		snprintf(err, err_cap, "it failed");
	} else if (!strcmp(cmd, "fail-empty")) {
		/* No class, no description. */
	} else if (!strcmp(cmd, "fail-class")) {
		/* A class the protocol does not know, pointing into args. */
		json_object_object_get_ex(args, "class", &v);
		*err_class = json_object_get_string(v);
		snprintf(err, err_cap, "odd class");
	} else if (!strcmp(cmd, "emit")) {
		int64_t n = arg_int(args, "n", 1);

		for (int64_t i = 0; i < n; i++) {
			json_object *d = json_object_new_object();

			json_object_object_add(d, "i", json_object_new_int64(i));
			ctl_event(th->ctl, "TICK", d);
		}
		ret = json_object_new_object();
		json_object_object_add(ret, "emitted", json_object_new_int64(n));
	} else if (!strcmp(cmd, "slow")) {
		sleep_ms((unsigned)arg_int(args, "ms", 1));
		ret = json_object_new_object();
		json_object_object_add(ret, "tag", json_object_new_int64(arg_int(args, "tag", 0)));
	} else if (!strcmp(cmd, "big")) {
		size_t n = (size_t)arg_int(args, "n", 0);
		char *s = malloc(n + 1);

		assert_non_null(s);
		memset(s, 'b', n);
		s[n] = '\0';
		ret = json_object_new_object();
		json_object_object_add(ret, "s", json_object_new_string(s));
		free(s);
	} else {
		*err_class = CTL_ERR_NOT_FOUND;
		snprintf(err, err_cap, "The command %s has not been found", cmd);
	}
	atomic_fetch_sub(&th->inside, 1);
	return ret;
}

/* ---- fixture ------------------------------------------------------------- */

struct fx {
	char dir[32];
	char path[96];
	struct th th;
	struct ctl *ctl;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/blkmig-ctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/ctl.sock", f->dir);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	ctl_close(f->ctl);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void fx_listen(struct fx *f)
{
	int r = ctl_listen(f->path, test_handler, &f->th, &f->ctl);

	if (r < 0)
		fail_msg("ctl_listen: %s", err_msg());
	f->th.ctl = f->ctl;
}

static struct ctl_client *fx_client(struct fx *f)
{
	struct ctl_client *c = NULL;
	int r = ctl_connect(f->path, SAFETY_MS, &c);

	if (r < 0)
		fail_msg("ctl_connect: %s", err_msg());
	return c;
}

/* ---- raw sockets ---------------------------------------------------------- */

struct raw {
	int fd;
	char *buf;
	size_t len, cap;
};

static int raw_dial(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Next line without its "\n", malloc'd; NULL at end of stream (EOF or
 * ECONNRESET).  Fails the test after SAFETY_MS without one. */
static char *raw_line(struct raw *r)
{
	for (;;) {
		char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - r->buf);
			char *line = malloc(l + 1);

			assert_non_null(line);
			memcpy(line, r->buf, l);
			line[l] = '\0';
			memmove(r->buf, nl + 1, r->len - l - 1);
			r->len -= l + 1;
			return line;
		}
		if (r->len == r->cap) {
			r->cap = r->cap ? r->cap * 2 : 4096;
			r->buf = realloc(r->buf, r->cap);
			assert_non_null(r->buf);
		}
		if (poll(&p, 1, SAFETY_MS) != 1)
			fail_msg("raw client: no line within %d ms", SAFETY_MS);
		n = recv(r->fd, r->buf + r->len, r->cap - r->len, 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return NULL;
		assert_true(n > 0);
		r->len += (size_t)n;
	}
}

static json_object *raw_obj(struct raw *r)
{
	char *line = raw_line(r);
	json_object *o;

	if (!line)
		fail_msg("raw client: end of stream, expected a line");
	o = json_tokener_parse(line);
	if (!o)
		fail_msg("raw client: not JSON: %s", line);
	free(line);
	return o;
}

static struct raw *raw_open(const char *path)
{
	struct raw *r = calloc(1, sizeof(*r));
	char *g;

	assert_non_null(r);
	r->fd = raw_dial(path);
	g = raw_line(r);
	assert_non_null(g);
	assert_string_equal(g, GREETING);
	free(g);
	return r;
}

static void raw_send(struct raw *r, const void *p, size_t len)
{
	assert_int_equal(send(r->fd, p, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void raw_puts(struct raw *r, const char *s)
{
	raw_send(r, s, strlen(s));
}

/* Send one line, return the reply. */
static json_object *raw_cmd(struct raw *r, const char *line)
{
	raw_puts(r, line);
	raw_puts(r, "\n");
	return raw_obj(r);
}

static void raw_close(struct raw *r)
{
	if (!r)
		return;
	close(r->fd);
	free(r->buf);
	free(r);
}

static const char *get_str(json_object *o, const char *path1, const char *path2)
{
	json_object *v;

	if (!json_object_object_get_ex(o, path1, &v))
		return NULL;
	if (path2 && !json_object_object_get_ex(v, path2, &v))
		return NULL;
	return json_object_get_string(v);
}

/* Check an error reply: class and a piece of desc. */
static void assert_error_reply(json_object *o, const char *cls, const char *desc_part)
{
	const char *c = get_str(o, "error", "class"), *d = get_str(o, "error", "desc");

	if (!c || !d)
		fail_msg("not an error reply: %s", json_object_to_json_string(o));
	assert_string_equal(c, cls);
	assert_msg_contains(d, desc_part);
	assert_false(json_object_object_get_ex(o, "return", NULL));
}

/* ---- replies --------------------------------------------------------------- */

static void test_greeting(void **state)
{
	struct fx *f = *state;
	struct raw *r;

	fx_listen(f);
	r = raw_open(f->path); /* checks the exact greeting line */
	raw_close(r);
}

static void test_call_returns(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c;
	json_object *args, *ret = NULL;

	fx_listen(f);
	c = fx_client(f);

	args = json_tokener_parse("{\"x\":1,\"s\":\"two\\nlines\",\"l\":[true,null]}");
	assert_int_equal(ctl_call(c, "echo", json_object_get(args), &ret, NULL, NULL), 0);
	assert_true(json_object_equal(args, ret));
	json_object_put(ret);
	json_object_put(args);

	/* No arguments: the handler sees an empty object. */
	assert_int_equal(ctl_call(c, "echo", NULL, &ret, NULL, NULL), 0);
	assert_true(json_object_is_type(ret, json_type_object));
	assert_int_equal(json_object_object_length(ret), 0);
	json_object_put(ret);

	assert_int_equal(
	    ctl_call(c, "add", json_tokener_parse("{\"a\":40,\"b\":2}"), &ret, NULL, NULL), 0);
	assert_int_equal(arg_int(ret, "sum", 0), 42);
	json_object_put(ret);

	/* ret may be NULL. */
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);

	/* A reply over the server's own input limit still reaches the client. */
	assert_int_equal(ctl_call(c, "big", json_tokener_parse("{\"n\":300000}"), &ret, NULL, NULL),
			 0);
	assert_int_equal(strlen(get_str(ret, "s", NULL)), 300000);
	json_object_put(ret);

	ctl_client_close(c);
}

static void test_call_errors(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c;
	json_object *ret = (json_object *)1;

	fx_listen(f);
	c = fx_client(f);

	assert_int_equal(ctl_call(c, "fail", NULL, &ret, NULL, NULL), -EREMOTEIO);
	assert_null(ret);
	assert_string_equal(err_msg(), "it failed");

	assert_int_equal(ctl_call(c, "add", json_tokener_parse("{\"a\":1}"), &ret, NULL, NULL),
			 -EREMOTEIO);
	assert_string_equal(err_msg(), "add: 'a' and 'b' are required");

	assert_int_equal(ctl_call(c, "no-such-command", NULL, &ret, NULL, NULL), -EREMOTEIO);
	assert_string_equal(err_msg(), "The command no-such-command has not been found");

	assert_int_equal(ctl_call(c, "fail-empty", NULL, &ret, NULL, NULL), -EREMOTEIO);
	assert_string_equal(err_msg(), "command failed");

	/* Error replies are not failures of the connection. */
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
}

static void test_error_classes(void **state)
{
	struct fx *f = *state;
	struct raw *r;
	json_object *o;

	fx_listen(f);
	r = raw_open(f->path);

	o = raw_cmd(r, "{\"execute\":\"fail\",\"id\":1}");
	assert_error_reply(o, "GenericError", "it failed");
	assert_int_equal(arg_int(o, "id", 0), 1);
	json_object_put(o);

	o = raw_cmd(r, "{\"execute\":\"add\",\"id\":2}");
	assert_error_reply(o, "InvalidParameter", "required");
	json_object_put(o);

	o = raw_cmd(r, "{\"execute\":\"nope\",\"id\":3}");
	assert_error_reply(o, "CommandNotFound", "nope");
	json_object_put(o);

	o = raw_cmd(r, "{\"execute\":\"fail-empty\"}");
	assert_error_reply(o, "GenericError", "command failed");
	json_object_put(o);

	/* A class outside the protocol is sent as GenericError. */
	o = raw_cmd(r, "{\"execute\":\"fail-class\",\"arguments\":{\"class\":\"Bogus\"}}");
	assert_error_reply(o, "GenericError", "odd class");
	json_object_put(o);

	o = raw_cmd(r, "{\"execute\":\"echo\",\"arguments\":{\"k\":1},\"id\":4}");
	assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
			    "{\"return\":{\"k\":1},\"id\":4}");
	json_object_put(o);
	raw_close(r);
}

static void test_ids_echoed(void **state)
{
	static const char *const ids[] = { "\"abc\"",		"7",	  "-1",	  "2.5",
					   "{\"k\":[1,\"x\"]}", "[null]", "null", "true" };
	struct fx *f = *state;
	struct raw *r;
	json_object *o, *id;

	fx_listen(f);
	r = raw_open(f->path);
	for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
		char line[128];
		json_object *want = json_tokener_parse(ids[i]);

		snprintf(line, sizeof(line), "{\"id\":%s,\"execute\":\"echo\"}", ids[i]);
		o = raw_cmd(r, line);
		assert_true(json_object_object_get_ex(o, "id", &id));
		if (!json_object_equal(id, want))
			fail_msg("id %s came back as %s", ids[i], json_object_to_json_string(id));
		json_object_put(want);
		json_object_put(o);

		/* Error replies carry it too. */
		snprintf(line, sizeof(line), "{\"id\":%s,\"execute\":\"fail\"}", ids[i]);
		o = raw_cmd(r, line);
		assert_true(json_object_object_get_ex(o, "id", &id));
		json_object_put(o);
	}
	/* No id, no "id" member. */
	o = raw_cmd(r, "{\"execute\":\"echo\"}");
	assert_false(json_object_object_get_ex(o, "id", NULL));
	assert_true(json_object_object_get_ex(o, "return", NULL));
	json_object_put(o);
	raw_close(r);
}

static void test_bad_requests(void **state)
{
	static const struct {
		const char *line;
		const char *desc;
		bool has_id;
	} cases[] = {
		{ "{\"execute\":", "invalid JSON", false },
		{ "{\"execute\":\"echo\"} trailing", "invalid JSON", false },
		{ "{\"execute\":\"echo\",}", "invalid JSON", false },
		{ "not json at all", "invalid JSON", false },
		{ "{\"execute\":\"echo\",\"arguments\":{\"s\":\"\xff\xfe\"}}", "invalid JSON",
		  false },
		{ "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
		  "]]",
		  "invalid JSON", false },
		{ "[1,2]", "expected a JSON object, got array", false },
		{ "42", "expected a JSON object, got int", false },
		{ "\"execute\"", "expected a JSON object, got string", false },
		{ "null", "expected a JSON object, got null", false },
		{ "{}", "missing member 'execute'", false },
		{ "{\"id\":5,\"arguments\":{}}", "missing member 'execute'", true },
		{ "{\"execute\":5,\"id\":5}", "'execute' must be a non-empty string", true },
		{ "{\"execute\":\"\",\"id\":5}", "'execute' must be a non-empty string", true },
		{ "{\"execute\":null,\"id\":5}", "'execute' must be a non-empty string", true },
		{ "{\"foo\":1}", "unexpected member 'foo'", false },
		{ "{\"execute\":\"ec\\u0000ho\",\"id\":5}", "'execute' must be a non-empty string",
		  true },
		{ "{\"execute\":\"echo\",\"arguments\":[1],\"id\":5}",
		  "'arguments' must be an object", true },
		{ "{\"execute\":\"echo\",\"arguments\":null,\"id\":5}",
		  "'arguments' must be an object", true },
		{ "{\"execute\":\"echo\",\"argument\":{},\"id\":5}", "unexpected member 'argument'",
		  true },
	};
	struct fx *f = *state;
	struct raw *r;
	json_object *o;

	fx_listen(f);
	r = raw_open(f->path);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		o = raw_cmd(r, cases[i].line);
		assert_error_reply(o, "GenericError", cases[i].desc);
		assert_int_equal(json_object_object_get_ex(o, "id", NULL), cases[i].has_id);
		json_object_put(o);
		/* The connection keeps working after each. */
		o = raw_cmd(r, "{\"execute\":\"echo\",\"id\":\"ok\"}");
		assert_string_equal(get_str(o, "id", NULL), "ok");
		json_object_put(o);
	}
	/* A NUL byte inside a line. */
	raw_send(r, "{\"execute\":\0\"echo\"}\n", 20);
	o = raw_obj(r);
	assert_error_reply(o, "GenericError", "NUL byte");
	json_object_put(o);

	/* Bad requests never reached the handler: only the echoes did. */
	assert_int_equal(atomic_load(&f->th.calls), (int)ARRAY_SIZE(cases));
	raw_close(r);
}

static void test_line_framing(void **state)
{
	struct fx *f = *state;
	struct raw *r;
	json_object *o;

	fx_listen(f);
	r = raw_open(f->path);

	/* Blank lines are ignored; CRLF is accepted. */
	raw_puts(r, "\n   \r\n\t\n{\"execute\":\"echo\",\"id\":1}\r\n");
	o = raw_obj(r);
	assert_int_equal(arg_int(o, "id", 0), 1);
	json_object_put(o);

	/* Several commands in one write: answered in order. */
	raw_puts(r, "{\"execute\":\"echo\",\"id\":2}\n{\"execute\":\"nope\",\"id\":3}\n"
		    "{\"execute\":\"add\",\"arguments\":{\"a\":1,\"b\":1},\"id\":4}\n");
	for (int id = 2; id <= 4; id++) {
		o = raw_obj(r);
		assert_int_equal(arg_int(o, "id", 0), id);
		json_object_put(o);
	}

	/* One command in pieces. */
	raw_puts(r, "{\"execu");
	sleep_ms(20);
	raw_puts(r, "te\":\"echo\",");
	sleep_ms(20);
	raw_puts(r, "\"id\":5}\n");
	o = raw_obj(r);
	assert_int_equal(arg_int(o, "id", 0), 5);
	json_object_put(o);
	raw_close(r);
}

/* A line of exactly len bytes (without "\n") that the echo handler accepts. */
static char *line_of(size_t len, int id)
{
	char head[64];
	int hl = snprintf(head, sizeof(head),
			  "{\"execute\":\"echo\",\"id\":%d,\"arguments\":{\"p\":\"", id);
	char *s = malloc(len + 1);

	assert_non_null(s);
	assert_true(len > (size_t)hl + 3);
	memcpy(s, head, (size_t)hl);
	memset(s + hl, 'p', len - (size_t)hl - 3);
	memcpy(s + len - 3, "\"}}", 3);
	s[len] = '\0';
	return s;
}

static void test_line_limit(void **state)
{
	struct fx *f = *state;
	struct raw *a, *b;
	char *line, *end;
	json_object *o;

	fx_listen(f);
	a = raw_open(f->path);
	b = raw_open(f->path);

	/* Exactly at the limit: fine, and the connection goes on. */
	line = line_of(CTL_MAX_LINE, 1);
	o = raw_cmd(a, line);
	assert_int_equal(arg_int(o, "id", 0), 1);
	assert_true(strlen(get_str(o, "return", "p")) > CTL_MAX_LINE - 64);
	json_object_put(o);
	free(line);
	o = raw_cmd(a, "{\"execute\":\"echo\",\"id\":2}");
	assert_int_equal(arg_int(o, "id", 0), 2);
	json_object_put(o);

	/* One byte over: an error, then the connection closes. */
	line = line_of(CTL_MAX_LINE + 1, 3);
	line = realloc(line, CTL_MAX_LINE + 3);
	assert_non_null(line);
	strcat(line, "\n"); /* one send: the server may close before a second */
	raw_puts(b, line);
	free(line);
	o = raw_obj(b);
	assert_error_reply(o, "GenericError", "line too long");
	assert_false(json_object_object_get_ex(o, "id", NULL));
	json_object_put(o);
	end = raw_line(b);
	assert_null(end);

	/* Only that one. */
	o = raw_cmd(a, "{\"execute\":\"echo\",\"id\":4}");
	assert_int_equal(arg_int(o, "id", 0), 4);
	json_object_put(o);
	raw_close(a);
	raw_close(b);
}

static void test_oversized_without_newline(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c;
	struct raw *r;
	size_t n = 100 * 1024;
	char *junk = malloc(n);
	json_object *o;

	fx_listen(f);
	c = fx_client(f);
	r = raw_open(f->path);
	assert_non_null(junk);
	memset(junk, 'x', n);
	/* The server may close as soon as it has seen more than the limit,
	 * so the rest of the send can fail; what matters is that the limit
	 * was passed. */
	{
		size_t sent = 0;

		while (sent < n) {
			ssize_t k = send(r->fd, junk + sent, n - sent, MSG_NOSIGNAL);

			if (k <= 0)
				break;
			sent += (size_t)k;
		}
		assert_true(sent > CTL_MAX_LINE);
	}
	free(junk);
	o = raw_obj(r);
	assert_error_reply(o, "GenericError", "line too long");
	json_object_put(o);
	assert_null(raw_line(r));

	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	raw_close(r);
	ctl_client_close(c);

	/* New clients are still welcome. */
	c = fx_client(f);
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
}

/* ---- several clients ------------------------------------------------------ */

struct caller {
	struct fx *f;
	pthread_t th;
	int base;
	int bad;
};

static void *caller_main(void *arg)
{
	struct caller *k = arg;
	struct ctl_client *c = NULL;

	if (ctl_connect(k->f->path, SAFETY_MS, &c) < 0) {
		k->bad = -1;
		return NULL;
	}
	for (int i = 0; i < 40; i++) {
		json_object *args = json_object_new_object(), *ret = NULL;

		json_object_object_add(args, "ms", json_object_new_int(i % 3 == 0));
		json_object_object_add(args, "tag", json_object_new_int(k->base + i));
		if (ctl_call(c, "slow", args, &ret, NULL, NULL) < 0 ||
		    arg_int(ret, "tag", -1) != k->base + i)
			k->bad++;
		json_object_put(ret);
	}
	ctl_client_close(c);
	return NULL;
}

static void test_two_clients(void **state)
{
	struct fx *f = *state;
	struct ctl_client *a, *b;
	struct caller k[4];
	json_object *ret;

	fx_listen(f);
	a = fx_client(f);
	b = fx_client(f);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(
		    ctl_call(a, "add",
			     json_tokener_parse(i % 2 ? "{\"a\":1,\"b\":2}" : "{\"a\":3,\"b\":4}"),
			     &ret, NULL, NULL),
		    0);
		assert_int_equal(arg_int(ret, "sum", 0), i % 2 ? 3 : 7);
		json_object_put(ret);
		assert_int_equal(ctl_call(b, "fail", NULL, NULL, NULL, NULL), -EREMOTEIO);
	}
	ctl_client_close(a);
	ctl_client_close(b);

	/* Concurrent callers: each gets its own answers; handlers never overlap. */
	for (int i = 0; i < 4; i++) {
		k[i] = (struct caller){ .f = f, .base = i * 1000 };
		assert_int_equal(pthread_create(&k[i].th, NULL, caller_main, &k[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(k[i].th, NULL);
		assert_int_equal(k[i].bad, 0);
	}
	assert_false(atomic_load(&f->th.overlap));
}

/* ---- events ---------------------------------------------------------------- */

static void expect_event(struct ctl_client *c, const char *name, int64_t i)
{
	char got[32];
	json_object *data = NULL;
	int r = ctl_next_event(c, SAFETY_MS, got, sizeof(got), &data);

	if (r < 0)
		fail_msg("ctl_next_event: %s", err_msg());
	assert_string_equal(got, name);
	assert_non_null(data);
	if (i >= 0)
		assert_int_equal(arg_int(data, "i", -1), i);
	json_object_put(data);
}

static void test_events_broadcast(void **state)
{
	struct fx *f = *state;
	struct ctl_client *a, *b;
	char name[8];
	json_object *o, *v, *data = (json_object *)1;
	struct raw *r;

	fx_listen(f);
	a = fx_client(f);
	b = fx_client(f);
	r = raw_open(f->path);
	/* All three are connected once each has had an answer. */
	assert_int_equal(ctl_call(a, "echo", NULL, NULL, NULL, NULL), 0);
	assert_int_equal(ctl_call(b, "echo", NULL, NULL, NULL, NULL), 0);
	json_object_put(raw_cmd(r, "{\"execute\":\"echo\"}"));

	o = json_object_new_object();
	json_object_object_add(o, "i", json_object_new_int(7));
	ctl_event(f->ctl, "HELLO", o);
	ctl_event(f->ctl, "BARE", NULL);

	expect_event(a, "HELLO", 7);
	expect_event(b, "HELLO", 7);
	expect_event(a, "BARE", -1);
	expect_event(b, "BARE", -1);

	o = raw_obj(r);
	assert_string_equal(get_str(o, "event", NULL), "HELLO");
	assert_int_equal(arg_int(json_object_object_get(o, "data"), "i", 0), 7);
	assert_true(json_object_object_get_ex(o, "timestamp", &v));
	assert_true(arg_int(v, "seconds", 0) > 1600000000);
	assert_true(arg_int(v, "microseconds", -1) >= 0);
	assert_true(arg_int(v, "microseconds", -1) < 1000000);
	json_object_put(o);
	o = raw_obj(r);
	assert_string_equal(get_str(o, "event", NULL), "BARE");
	assert_false(json_object_object_get_ex(o, "data", NULL));
	json_object_put(o);

	/* Nothing more: a timeout, which leaves the connection usable.
	 * A name longer than the buffer is truncated. */
	assert_int_equal(ctl_next_event(a, 50, name, sizeof(name), &data), -ETIMEDOUT);
	assert_null(data);
	assert_int_equal(ctl_call(a, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_event(f->ctl, "A_LONG_EVENT_NAME", NULL);
	assert_int_equal(ctl_next_event(a, SAFETY_MS, name, sizeof(name), &data), 0);
	assert_string_equal(name, "A_LONG_");
	json_object_put(data);

	ctl_client_close(a);
	ctl_client_close(b);
	raw_close(r);
}

struct seen {
	int n;
	int64_t last;
	bool out_of_order;
};

static void on_tick(void *user, const char *event, json_object *data)
{
	struct seen *s = user;
	int64_t i = arg_int(data, "i", -1);

	assert_string_equal(event, "TICK");
	if (i != s->last + 1)
		s->out_of_order = true;
	s->last = i;
	s->n++;
}

struct emitter {
	struct ctl *ctl;
	pthread_t th;
	int count;
};

static void *emitter_main(void *arg)
{
	struct emitter *e = arg;

	for (int i = 0; i < e->count; i++) {
		json_object *d = json_object_new_object();

		json_object_object_add(d, "i", json_object_new_int(i));
		ctl_event(e->ctl, "TICK", d);
		if (i % 10 == 0)
			sleep_ms(1);
	}
	return NULL;
}

static void test_events_interleaved(void **state)
{
	struct fx *f = *state;
	struct ctl_client *a, *b;
	struct seen s = { .last = -1 };
	struct emitter e;
	json_object *ret, *data;
	char name[16];

	fx_listen(f);
	a = fx_client(f);
	b = fx_client(f);
	assert_int_equal(ctl_call(b, "echo", NULL, NULL, NULL, NULL), 0);

	/* Events a handler raises reach the caller before its reply. */
	assert_int_equal(ctl_call(a, "emit", json_tokener_parse("{\"n\":3}"), &ret, on_tick, &s),
			 0);
	assert_int_equal(arg_int(ret, "emitted", 0), 3);
	json_object_put(ret);
	assert_int_equal(s.n, 3);
	assert_false(s.out_of_order);
	/* ... and every other client. */
	for (int i = 0; i < 3; i++)
		expect_event(b, "TICK", i);

	/* Without a callback they are skipped, and none is left over. */
	assert_int_equal(ctl_call(a, "emit", json_tokener_parse("{\"n\":2}"), NULL, NULL, NULL), 0);
	assert_int_equal(ctl_next_event(a, 50, name, sizeof(name), &data), -ETIMEDOUT);
	for (int i = 0; i < 2; i++)
		expect_event(b, "TICK", i);

	/* Events from another thread while calls go on: each one is handed
	 * over exactly once, in order, by ctl_call or ctl_next_event. */
	s = (struct seen){ .last = -1 };
	e = (struct emitter){ .ctl = f->ctl, .count = 200 };
	assert_int_equal(pthread_create(&e.th, NULL, emitter_main, &e), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(ctl_call(a, "echo", NULL, NULL, on_tick, &s), 0);
	pthread_join(e.th, NULL);
	while (s.n < e.count) {
		if (ctl_next_event(a, SAFETY_MS, name, sizeof(name), &data) < 0)
			fail_msg("after %d events: %s", s.n, err_msg());
		on_tick(&s, name, data);
		json_object_put(data);
	}
	assert_false(s.out_of_order);
	assert_int_equal(ctl_next_event(a, 50, name, sizeof(name), &data), -ETIMEDOUT);
	for (int i = 0; i < e.count; i++)
		expect_event(b, "TICK", i);

	ctl_client_close(a);
	ctl_client_close(b);
}

/* A client that stops reading is dropped; the others miss nothing. */
struct reader {
	struct ctl_client *c;
	pthread_t th;
	int want, got;
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	char name[16];
	json_object *data;

	while (rd->got < rd->want &&
	       ctl_next_event(rd->c, SAFETY_MS, name, sizeof(name), &data) == 0) {
		if (arg_int(data, "i", -1) == rd->got)
			rd->got++;
		json_object_put(data);
	}
	return NULL;
}

static void test_slow_client_dropped(void **state)
{
	struct fx *f = *state;
	struct reader rd = { .want = 100 };
	struct raw *slow;
	char *pad = malloc(16 * 1024);
	int lines = 0;
	char *line;

	assert_non_null(pad);
	memset(pad, 'e', 16 * 1024 - 1);
	pad[16 * 1024 - 1] = '\0';
	fx_listen(f);
	slow = raw_open(f->path);
	rd.c = fx_client(f);
	assert_int_equal(ctl_call(rd.c, "echo", NULL, NULL, NULL, NULL), 0);
	json_object_put(raw_cmd(slow, "{\"execute\":\"echo\"}"));
	assert_int_equal(pthread_create(&rd.th, NULL, reader_main, &rd), 0);

	/* 1.6 MB of events: far more than a socket buffer holds, less than
	 * the queue limit, so only the stall rule can drop 'slow'. */
	for (int i = 0; i < rd.want; i++) {
		json_object *d = json_object_new_object();

		json_object_object_add(d, "i", json_object_new_int(i));
		json_object_object_add(d, "pad", json_object_new_string(pad));
		ctl_event(f->ctl, "BULK", d);
	}
	free(pad);
	pthread_join(rd.th, NULL);
	assert_int_equal(rd.got, rd.want);

	/* Leave 'slow' unread well past the stall limit, then read: the
	 * stream ends before all the events. */
	sleep_ms(CTL_STALL_MS * 2 + 500);
	while ((line = raw_line(slow))) {
		lines++;
		free(line);
	}
	assert_true(lines < rd.want);

	assert_int_equal(ctl_call(rd.c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(rd.c);
	raw_close(slow);
}

/* ---- clients that vanish ---------------------------------------------------- */

static void test_client_vanishes(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c;
	struct raw *r;
	json_object *o;
	int fd;

	fx_listen(f);
	c = fx_client(f);

	/* Connect and go, before even the greeting is read. */
	fd = raw_dial(f->path);
	close(fd);
	/* Half a line, then gone. */
	r = raw_open(f->path);
	raw_puts(r, "{\"execute\":\"ec");
	raw_close(r);
	/* A command, gone before the reply. */
	r = raw_open(f->path);
	raw_puts(r, "{\"execute\":\"slow\",\"arguments\":{\"ms\":100}}\n");
	raw_close(r);
	/* Many commands, gone without reading any reply. */
	r = raw_open(f->path);
	for (int i = 0; i < 200; i++)
		raw_puts(r, "{\"execute\":\"big\",\"arguments\":{\"n\":4000}}\n");
	raw_close(r);

	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	assert_int_equal(ctl_call(c, "slow", NULL, NULL, NULL, NULL), 0);

	/* Half-close: replies still come, including to a last line without
	 * its newline, then the server closes too. */
	r = raw_open(f->path);
	raw_puts(r, "{\"execute\":\"echo\",\"id\":1}\n{\"execute\":\"echo\",\"id\":2}");
	shutdown(r->fd, SHUT_WR);
	for (int id = 1; id <= 2; id++) {
		o = raw_obj(r);
		assert_int_equal(arg_int(o, "id", 0), id);
		json_object_put(o);
	}
	assert_null(raw_line(r));
	raw_close(r);

	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
}

static void test_too_many_clients(void **state)
{
	struct fx *f = *state;
	struct raw *r[CTL_MAX_CLIENTS];
	struct ctl_client *c = NULL;
	int rc;

	fx_listen(f);
	for (int i = 0; i < CTL_MAX_CLIENTS; i++)
		r[i] = raw_open(f->path);
	assert_int_equal(ctl_connect(f->path, SAFETY_MS, &c), -EREMOTEIO);
	assert_msg_contains(err_msg(), "refused the connection: too many control clients");

	/* A departure makes room (once the server has noticed it). */
	raw_close(r[0]);
	for (int tries = 0; (rc = ctl_connect(f->path, SAFETY_MS, &c)) < 0 && tries < 200; tries++)
		sleep_ms(10);
	assert_int_equal(rc, 0);
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
	for (int i = 1; i < CTL_MAX_CLIENTS; i++)
		raw_close(r[i]);
}

/* ---- the socket file -------------------------------------------------------- */

static void assert_mode_0600(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	if ((st.st_mode & 07777) != 0600)
		fail_msg("%s has mode %o", path, (unsigned)(st.st_mode & 07777));
}

static void test_socket_mode(void **state)
{
	struct fx *f = *state;
	mode_t old = umask(0);
	struct ctl_client *c;

	fx_listen(f);
	assert_mode_0600(f->path);
	ctl_close(f->ctl);
	f->ctl = NULL;

	umask(0777);
	fx_listen(f);
	umask(old);
	assert_mode_0600(f->path);
	c = fx_client(f);
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
}

static void test_in_use(void **state)
{
	struct fx *f = *state;
	struct ctl *second = NULL;
	struct ctl_client *c;
	char want[200];

	fx_listen(f);
	assert_int_equal(ctl_listen(f->path, test_handler, &f->th, &second), -EADDRINUSE);
	assert_null(second);
	snprintf(want, sizeof(want), "control socket %s is in use", f->path);
	assert_string_equal(err_msg(), want);

	/* The first server is untouched. */
	c = fx_client(f);
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
}

static void test_stale_replaced(void **state)
{
	struct fx *f = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ctl_client *c = NULL;
	struct stat st;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	/* A dead daemon's socket: bound, then closed without unlinking. */
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_int_equal(ctl_connect(f->path, SAFETY_MS, &c), -ECONNREFUSED);

	fx_listen(f);
	assert_mode_0600(f->path);
	c = fx_client(f);
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_client_close(c);
}

static void test_not_a_socket(void **state)
{
	struct fx *f = *state;
	struct ctl *c = NULL;
	struct stat st;
	FILE *fp = fopen(f->path, "w");

	assert_non_null(fp);
	fputs("precious", fp);
	fclose(fp);
	assert_int_equal(ctl_listen(f->path, test_handler, &f->th, &c), -EEXIST);
	assert_msg_contains(err_msg(), "exists and is not a socket");
	assert_int_equal(lstat(f->path, &st), 0);
	assert_int_equal(st.st_size, 8);
}

/* A symlink planted at the path is refused, never replaced or followed. */
static void test_symlink_planted(void **state)
{
	struct fx *f = *state;
	struct ctl *c = NULL;
	char target[sizeof(f->path) + 16];
	struct stat st;
	FILE *fp;

	snprintf(target, sizeof(target), "%s.target", f->path);
	fp = fopen(target, "w");
	assert_non_null(fp);
	fputs("precious", fp);
	fclose(fp);
	assert_int_equal(symlink(target, f->path), 0);
	assert_int_equal(ctl_listen(f->path, test_handler, &f->th, &c), -EEXIST);
	assert_msg_contains(err_msg(), "a symbolic link is there: refusing to replace it");
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(stat(target, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 8);
	unlink(target);
	/* Dangling, too. */
	assert_int_equal(ctl_listen(f->path, test_handler, &f->th, &c), -EEXIST);
	assert_int_equal(lstat(target, &st), -1);
}

static void test_close_unlinks(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c;
	struct stat st;
	char name[16], first[256];
	json_object *data;

	fx_listen(f);
	c = fx_client(f);
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_close(f->ctl);
	f->ctl = NULL;
	assert_int_equal(lstat(f->path, &st), -1);
	assert_int_equal(errno, ENOENT);

	/* The connected client finds the server gone, for good. */
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), -ECONNRESET);
	assert_msg_contains(err_msg(), "connection closed by the server");
	snprintf(first, sizeof(first), "%s", err_msg());
	err_clear();
	assert_int_equal(ctl_next_event(c, 10, name, sizeof(name), &data), -ECONNRESET);
	assert_string_equal(err_msg(), first);
	assert_int_equal(ctl_call(c, "echo", json_object_new_object(), NULL, NULL, NULL),
			 -ECONNRESET);
	ctl_client_close(c);

	/* NULL is accepted everywhere it is documented to be. */
	ctl_close(NULL);
	ctl_event(NULL, "NOBODY", json_object_new_object()); /* data freed: ASan checks */
	ctl_client_close(NULL);

	/* A path can be reused after a close. */
	fx_listen(f);
	assert_mode_0600(f->path);
}

static void test_close_keeps_foreign_file(void **state)
{
	struct fx *f = *state;
	struct stat st;
	FILE *fp;

	fx_listen(f);
	/* Someone replaced our socket file: close must not remove theirs. */
	assert_int_equal(unlink(f->path), 0);
	fp = fopen(f->path, "w");
	assert_non_null(fp);
	fclose(fp);
	ctl_close(f->ctl);
	f->ctl = NULL;
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_close_with_busy_clients(void **state)
{
	struct fx *f = *state;
	struct raw *slow;
	struct ctl_client *c;

	fx_listen(f);
	c = fx_client(f);
	slow = raw_open(f->path);
	/* 'slow' has queued output it will never read. */
	for (int i = 0; i < 50; i++)
		raw_puts(slow, "{\"execute\":\"big\",\"arguments\":{\"n\":60000}}\n");
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), 0);
	ctl_close(f->ctl); /* returns: nothing waits on a client */
	f->ctl = NULL;
	assert_int_equal(ctl_call(c, "echo", NULL, NULL, NULL, NULL), -ECONNRESET);
	ctl_client_close(c);
	raw_close(slow);
}

/* ---- client-side errors ----------------------------------------------------- */

/* A fake server: accepts one connection, sends 'hello' (may be NULL: says
 * nothing), then waits for the peer to close, or (a hello without a
 * newline) closes at once. */
struct fake {
	int lfd;
	const char *hello;
	pthread_t th;
};

static void *fake_main(void *arg)
{
	struct fake *fk = arg;
	int fd = accept(fk->lfd, NULL, NULL);
	char buf[64];

	if (fd < 0)
		return NULL;
	if (fk->hello)
		(void)!send(fd, fk->hello, strlen(fk->hello), MSG_NOSIGNAL);
	while ((!fk->hello || strchr(fk->hello, '\n')) && read(fd, buf, sizeof(buf)) > 0) {
	}
	close(fd);
	return NULL;
}

static int fake_connect(struct fx *f, const char *hello, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ctl_client *c = NULL;
	struct fake fk = { .hello = hello };
	int r;

	unlink(f->path);
	fk.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(bind(fk.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fk.lfd, 1), 0);
	assert_int_equal(pthread_create(&fk.th, NULL, fake_main, &fk), 0);
	r = ctl_connect(f->path, timeout_ms, &c);
	assert_null(c);
	pthread_join(fk.th, NULL);
	close(fk.lfd);
	unlink(f->path);
	return r;
}

static void test_connect_errors(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c = NULL;
	char want[300], longpath[200];
	FILE *fp;

	snprintf(want, sizeof(want),
		 "cannot connect to control socket %s: No such file or directory", f->path);
	assert_int_equal(ctl_connect(f->path, SAFETY_MS, &c), -ENOENT);
	assert_string_equal(err_msg(), want);
	assert_null(c);

	fp = fopen(f->path, "w");
	assert_non_null(fp);
	fclose(fp);
	assert_int_equal(ctl_connect(f->path, SAFETY_MS, &c), -ECONNREFUSED);
	assert_msg_contains(err_msg(), "cannot connect to control socket");
	assert_msg_contains(err_msg(), "Connection refused");
	unlink(f->path);

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(ctl_connect(longpath, SAFETY_MS, &c), -ENAMETOOLONG);
	assert_msg_contains(err_msg(), "too long");
	assert_int_equal(ctl_listen(longpath, test_handler, &f->th, &f->ctl), -ENAMETOOLONG);
	assert_null(f->ctl);

	assert_int_equal(fake_connect(f, NULL, 100), -ETIMEDOUT);
	assert_msg_contains(err_msg(), "no greeting from the server within 100 ms");
	assert_int_equal(fake_connect(f, "hello\n", SAFETY_MS), -EPROTO);
	assert_msg_contains(err_msg(), "bad line from server");
	assert_int_equal(fake_connect(f, "{\"qemu\":{}}\n", SAFETY_MS), -EPROTO);
	assert_msg_contains(err_msg(), "not a blkmig control socket");
	assert_int_equal(fake_connect(f, "{\"blkm", SAFETY_MS), -ECONNRESET);
	assert_msg_contains(err_msg(), "connection closed by the server");
}

static void test_call_limits(void **state)
{
	struct fx *f = *state;
	struct ctl_client *c = NULL;
	json_object *args, *ret = NULL;
	char *pad = malloc(CTL_MAX_LINE + 1);

	fx_listen(f);
	assert_int_equal(ctl_connect(f->path, 500, &c), 0);

	/* Too long to send: refused locally, the connection stays usable. */
	assert_non_null(pad);
	memset(pad, 'x', CTL_MAX_LINE);
	pad[CTL_MAX_LINE] = '\0';
	args = json_object_new_object();
	json_object_object_add(args, "pad", json_object_new_string(pad));
	free(pad);
	assert_int_equal(ctl_call(c, "echo", args, &ret, NULL, NULL), -E2BIG);
	assert_msg_contains(err_msg(), "more than the server accepts");

	/* A reply later than the timeout: -ETIMEDOUT, and the late reply is
	 * not mistaken for the next command's. */
	assert_int_equal(
	    ctl_call(c, "slow", json_tokener_parse("{\"ms\":1500,\"tag\":1}"), &ret, NULL, NULL),
	    -ETIMEDOUT);
	assert_msg_contains(err_msg(), "command slow: no reply");
	sleep_ms(1200); /* the late reply is now waiting to be read */
	assert_int_equal(
	    ctl_call(c, "slow", json_tokener_parse("{\"ms\":0,\"tag\":2}"), &ret, NULL, NULL), 0);
	assert_int_equal(arg_int(ret, "tag", 0), 2);
	json_object_put(ret);
	ctl_client_close(c);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_greeting),
		T(test_call_returns),
		T(test_call_errors),
		T(test_error_classes),
		T(test_ids_echoed),
		T(test_bad_requests),
		T(test_line_framing),
		T(test_line_limit),
		T(test_oversized_without_newline),
		T(test_two_clients),
		T(test_events_broadcast),
		T(test_events_interleaved),
		T(test_slow_client_dropped),
		T(test_client_vanishes),
		T(test_too_many_clients),
		T(test_socket_mode),
		T(test_in_use),
		T(test_stale_replaced),
		T(test_not_a_socket),
		T(test_symlink_planted),
		T(test_close_unlinks),
		T(test_close_keeps_foreign_file),
		T(test_close_with_busy_clients),
		T(test_connect_errors),
		T(test_call_limits),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
