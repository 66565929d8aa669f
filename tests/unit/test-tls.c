/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for TLS (src/tls/tls.c) and the TLS transport
 * (src/transport/tls.c) over real TCP on 127.0.0.1, with pre-shared keys
 * (X.509 needs certificates, which tests/integration/tls.sh makes with
 * certtool): the PSK file's checks (missing, readable by others, malformed,
 * empty, too short a key), option conflicts, a handshake and both
 * directions at once through small socket buffers (so sends come back with
 * EAGAIN in the middle of records), the authorisation list, a wrong key, an
 * unknown identity, a plaintext peer, and a handshake ended by the cancel
 * token and by its time limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "tls/tls.h"
#include "transport/transport.h"

#define SAFETY_TIMEOUT_MS 20000

static char g_dir[64];

static void assert_msg_contains(const char *msg, const char *needle)
{
	if (!strstr(msg, needle))
		fail_msg("message '%s' does not contain '%s'", msg, needle);
}

/* Write 'text' to g_dir/name with 'mode'; the path goes to out. */
static void put_file(const char *name, const char *text, mode_t mode, char *out, size_t cap)
{
	FILE *f;

	snprintf(out, cap, "%s/%s", g_dir, name);
	f = fopen(out, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(out, mode), 0);
}

#define KEY_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define KEY_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

static int setup(void **state)
{
	(void)state;
	snprintf(g_dir, sizeof(g_dir), "/tmp/blkmig-test-tls.XXXXXX");
	assert_non_null(mkdtemp(g_dir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int load(const char *path, const char *authz, enum tls_role role, struct tls_creds **c)
{
	struct tls_options o = { .psk_file = path, .authz = authz };

	return tls_creds_new(&o, role, c);
}

/* ---- files and options ---------------------------------------------------- */

static void test_psk_file_errors(void **state)
{
	static const struct {
		const char *text;
		mode_t mode;
		int err;
		const char *msg;
	} cases[] = {
		{ "src:" KEY_A "\n", 0644, -EPERM, "accessible by group or others (mode 0644)" },
		{ "src:" KEY_A "\n", 0640, -EPERM, "chmod 600" },
		{ "src" KEY_A "\n", 0600, -EINVAL, "line 1: expected IDENTITY:HEXKEY" },
		{ "# comment\n\nsrc:0123zz\n", 0600, -EINVAL, "line 3:" },
		{ "src:0123\n", 0600, -EINVAL, "16 to 64 bytes" },
		{ "src:" KEY_A "0\n", 0600, -EINVAL, "even number of hex digits" },
		{ "s rc:" KEY_A "\n", 0600, -EINVAL, "printable ASCII without spaces" },
		{ ":" KEY_A "\n", 0600, -EINVAL, "identity must be 1 to" },
		{ "# nothing\n", 0600, -EINVAL, "holds no IDENTITY:HEXKEY line" },
	};
	struct tls_creds *c = NULL;
	char path[128];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		put_file("bad.psk", cases[i].text, cases[i].mode, path, sizeof(path));
		assert_int_equal(load(path, NULL, TLS_SERVER, &c), cases[i].err);
		assert_null(c);
		assert_msg_contains(err_msg(), cases[i].msg);
	}
	assert_int_equal(load("/nonexistent/keys.psk", NULL, TLS_CLIENT, &c), -ENOENT);
	assert_msg_contains(err_msg(), "cannot open TLS file /nonexistent/keys.psk");
	/* CRLF line ends and comments are fine. */
	put_file("ok.psk", "# keys\r\nsrc:" KEY_A "\r\n", 0600, path, sizeof(path));
	assert_int_equal(load(path, NULL, TLS_CLIENT, &c), 0);
	assert_string_equal(tls_creds_kind(c), "psk");
	tls_creds_free(c);
}

static void test_option_errors(void **state)
{
	struct tls_options none = { 0 }, both = { .psk_file = "a", .x509_dir = "b" },
			   authz_only = { .authz = "src" };
	struct tls_creds *c = (struct tls_creds *)&c;
	char path[128];

	(void)state;
	assert_false(tls_options_enabled(&none));
	assert_false(tls_options_enabled(NULL));
	assert_int_equal(tls_creds_new(&none, TLS_SERVER, &c), 0);
	assert_null(c);
	assert_int_equal(tls_creds_new(&both, TLS_SERVER, &c), -EINVAL);
	assert_msg_contains(err_msg(), "exclude each other");
	assert_int_equal(tls_creds_new(&authz_only, TLS_SERVER, &c), -EINVAL);
	assert_msg_contains(err_msg(), "--tls-authz needs");
	put_file("k.psk", "src:" KEY_A "\n", 0600, path, sizeof(path));
	assert_int_equal(load(path, " , ", TLS_SERVER, &c), -EINVAL);
	assert_msg_contains(err_msg(), "no identity given");
	tls_creds_free(NULL);
	tls_session_free(NULL);
}

/* ---- sessions ----------------------------------------------------------------- */

struct side {
	struct tls_creds *creds;
	struct xport *x;
	struct cancel *cancel;
	int timeout_ms;
	int r;
	char msg[1024];
	char peer_id[256];
};

/* The server side: accept one connection and start TLS on it. */
struct server {
	pthread_t th;
	int lfd;
	struct side s;
};

static void *server_main(void *arg)
{
	struct server *sv = arg;
	struct side *s = &sv->s;

	s->r = xport_accept(sv->lfd, SAFETY_TIMEOUT_MS, NULL, &s->x);
	if (s->r == 0) {
		xport_set_cancel(s->x, s->cancel);
		xport_set_timeout(s->x, SAFETY_TIMEOUT_MS);
		s->r = xport_start_tls(s->x, s->creds, NULL, s->timeout_ms);
	}
	snprintf(s->msg, sizeof(s->msg), "%s", s->r ? err_msg() : "");
	if (s->r == 0)
		snprintf(s->peer_id, sizeof(s->peer_id), "%s", xport_peer_id(s->x));
	return NULL;
}

/* Accepted sockets inherit the listener's small buffers, so sends in both
 * directions stall part-way. */
static void server_start(struct server *sv, struct tls_creds *creds, struct cancel *cancel,
			 int timeout_ms, char *bound, size_t cap)
{
	int small = 16384;

	memset(sv, 0, sizeof(*sv));
	sv->s.creds = creds;
	sv->s.cancel = cancel;
	sv->s.timeout_ms = timeout_ms;
	assert_int_equal(xport_listen("127.0.0.1:0", &sv->lfd, bound, cap), 0);
	setsockopt(sv->lfd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(sv->lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	assert_int_equal(pthread_create(&sv->th, NULL, server_main, sv), 0);
}

static void server_join(struct server *sv)
{
	pthread_join(sv->th, NULL);
	close(sv->lfd);
}

static struct tls_creds *psk(const char *name, const char *text, const char *authz,
			     enum tls_role role)
{
	struct tls_creds *c = NULL;
	char path[128];

	put_file(name, text, 0600, path, sizeof(path));
	if (load(path, authz, role, &c) != 0)
		fail_msg("load %s: %s", name, err_msg());
	return c;
}

/* A TLS connection on 127.0.0.1, both ends: the client's returned, the
 * server's in sv->s.x. */
static struct xport *tls_pair(struct server *sv, struct tls_creds *sc, struct tls_creds *cc)
{
	struct xport *x = NULL;
	char bound[128];

	server_start(sv, sc, NULL, SAFETY_TIMEOUT_MS, bound, sizeof(bound));
	if (xport_dial(bound, SAFETY_TIMEOUT_MS, NULL, cc, &x) != 0)
		fail_msg("dial: %s", err_msg());
	server_join(sv);
	if (sv->s.r != 0)
		fail_msg("server: %s", sv->s.msg);
	return x;
}

/* Both directions at once: each side sends len bytes and reads the
 * other's, through socket buffers small enough that sends stall. */
struct pump {
	pthread_t th;
	struct xport *x;
	const uint8_t *out;
	size_t len;
	int r;
};

static void *pump_main(void *arg)
{
	struct pump *p = arg;

	/* Mixed sizes: buffered small writes, write2, one large write. */
	p->r = xport_write(p->x, p->out, 100);
	if (p->r == 0)
		p->r = xport_write2(p->x, p->out + 100, 28, p->out + 128, 300000);
	if (p->r == 0)
		p->r = xport_write(p->x, p->out + 300128, p->len - 300128);
	if (p->r == 0)
		p->r = xport_flush(p->x);
	return NULL;
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *b = malloc(len);

	assert_non_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)((i * 2654435761u) >> 13 ^ seed);
	return b;
}

static void test_psk_roundtrip_both_ways(void **state)
{
	const size_t len = 12 << 20;
	struct tls_creds *sc = psk("s.psk", "other:" KEY_B "\nsrc:" KEY_A "\n", "src", TLS_SERVER);
	struct tls_creds *cc = psk("c.psk", "src:" KEY_A "\n", NULL, TLS_CLIENT);
	uint8_t *a = pattern(len, 1), *b = pattern(len, 2), *got = malloc(len);
	struct pump pa, pb;
	struct server sv;
	struct xport *x;

	(void)state;
	assert_non_null(got);
	x = tls_pair(&sv, sc, cc);
	assert_true(xport_is_tls(x) && xport_is_tls(sv.s.x));
	assert_string_equal(sv.s.peer_id, "src");
	assert_string_equal(xport_peer_id(x), "psk:src");
	xport_set_timeout(x, SAFETY_TIMEOUT_MS);

	pa = (struct pump){ .x = x, .out = a, .len = len };
	pb = (struct pump){ .x = sv.s.x, .out = b, .len = len };
	assert_int_equal(pthread_create(&pa.th, NULL, pump_main, &pa), 0);
	assert_int_equal(pthread_create(&pb.th, NULL, pump_main, &pb), 0);
	/* This thread reads the server's side; the client's is read after. */
	if (xport_read(sv.s.x, got, len, NULL) != 0)
		fail_msg("server read: %s", err_msg());
	assert_memory_equal(got, a, len);
	if (xport_read(x, got, len, NULL) != 0)
		fail_msg("client read: %s", err_msg());
	assert_memory_equal(got, b, len);
	pthread_join(pa.th, NULL);
	pthread_join(pb.th, NULL);
	assert_int_equal(pa.r, 0);
	assert_int_equal(pb.r, 0);
	assert_int_equal(xport_rx_bytes(sv.s.x), len);

	/* A clean close reads as the end of the stream. */
	xport_close(x);
	assert_int_equal(xport_read(sv.s.x, got, 1, NULL), -ECONNRESET);
	xport_close(sv.s.x);
	tls_creds_free(sc);
	tls_creds_free(cc);
	free(a);
	free(b);
	free(got);
}

/* A client with creds cc against a server with sc: both fail. */
static void expect_refused(struct tls_creds *sc, struct tls_creds *cc, const char *server_msg)
{
	struct server sv;
	struct xport *x = NULL;
	char bound[128], cmsg[1024];
	int r;

	server_start(&sv, sc, NULL, SAFETY_TIMEOUT_MS, bound, sizeof(bound));
	r = xport_dial(bound, SAFETY_TIMEOUT_MS, NULL, cc, &x);
	snprintf(cmsg, sizeof(cmsg), "%s", r ? err_msg() : "");
	server_join(&sv);
	if (sv.s.r == 0)
		fail_msg("the server accepted (client: %d %s)", r, cmsg);
	assert_msg_contains(sv.s.msg, server_msg);
	assert_int_not_equal(r, 0);
	assert_null(x);
	assert_msg_contains(cmsg, "TLS handshake with 127.0.0.1:");
	xport_close(sv.s.x);
}

/* A peer that closes without close_notify (a process that dies, a
 * shutdown(2)) ends the stream, also for a reader that looked ahead with
 * xport_peek_now() first: GnuTLS is not asked again after the end. */
static void test_peek_now_end_without_close_notify(void **state)
{
	struct tls_creds *sc = psk("s.psk", "src:" KEY_A "\n", "src", TLS_SERVER);
	struct tls_creds *cc = psk("c.psk", "src:" KEY_A "\n", NULL, TLS_CLIENT);
	struct server sv;
	struct xport *x;
	uint8_t got[8];
	bool eof = false;
	int n = 0;

	(void)state;
	x = tls_pair(&sv, sc, cc);
	assert_int_equal(xport_write(x, "abc", 3), 0);
	assert_int_equal(xport_flush(x), 0);
	shutdown(xport_fd(x), SHUT_RDWR);
	for (int i = 0; i < 500 && !eof; i++) {
		n = xport_peek_now(sv.s.x, got, 5, &eof);
		if (n < 0)
			fail_msg("peek: %s", err_msg());
		if (!eof)
			assert_true(xport_readable(sv.s.x, 10) >= 0);
	}
	assert_true(eof);
	assert_int_equal(n, 3);
	assert_true(xport_readable(sv.s.x, 0) == 1);
	assert_int_equal(xport_read(sv.s.x, got, 3, NULL), 0);
	assert_memory_equal(got, "abc", 3);
	assert_int_equal(xport_read(sv.s.x, got, 1, NULL), -ECONNRESET);
	xport_close(x);
	xport_close(sv.s.x);
	tls_creds_free(sc);
	tls_creds_free(cc);
}

static void test_psk_refusals(void **state)
{
	struct tls_creds *sc = psk("s.psk", "src:" KEY_A "\nadmin:" KEY_B "\n", "src", TLS_SERVER);
	struct tls_creds *wrong = psk("w.psk", "src:" KEY_B "\n", NULL, TLS_CLIENT);
	struct tls_creds *unknown = psk("u.psk", "nobody:" KEY_A "\n", NULL, TLS_CLIENT);
	struct tls_creds *admin = psk("a.psk", "admin:" KEY_B "\n", NULL, TLS_CLIENT);

	(void)state;
	expect_refused(sc, wrong, "the keys do not match");
	expect_refused(sc, unknown, "unknown PSK identity 'nobody'");
	expect_refused(sc, admin, "PSK identity 'admin' is not authorised");
	tls_creds_free(sc);
	tls_creds_free(wrong);
	tls_creds_free(unknown);
	tls_creds_free(admin);
}

static void test_plaintext_peer(void **state)
{
	struct tls_creds *sc = psk("s.psk", "src:" KEY_A "\n", NULL, TLS_SERVER);
	struct server sv;
	struct xport *x = NULL;
	char bound[128];

	(void)state;
	server_start(&sv, sc, NULL, SAFETY_TIMEOUT_MS, bound, sizeof(bound));
	assert_int_equal(xport_connect(bound, SAFETY_TIMEOUT_MS, NULL, &x), 0);
	assert_int_equal(xport_write(x, "BLKMIG hello, in the clear\n", 27), 0);
	assert_int_equal(xport_flush(x), 0);
	server_join(&sv);
	assert_int_not_equal(sv.s.r, 0);
	assert_msg_contains(sv.s.msg, "does not speak TLS");
	xport_close(x);
	xport_close(sv.s.x);
	tls_creds_free(sc);
}

/* A peer that connects and says nothing: the handshake ends by the cancel
 * token, or by its time limit. */
static void test_handshake_cancel_and_timeout(void **state)
{
	struct tls_creds *sc = psk("s.psk", "src:" KEY_A "\n", NULL, TLS_SERVER);
	struct cancel *cancel;
	struct server sv;
	struct xport *x = NULL;
	char bound[128];

	(void)state;
	assert_int_equal(cancel_new(&cancel), 0);
	server_start(&sv, sc, cancel, SAFETY_TIMEOUT_MS, bound, sizeof(bound));
	assert_int_equal(xport_connect(bound, SAFETY_TIMEOUT_MS, NULL, &x), 0);
	cancel_fire(cancel);
	server_join(&sv);
	assert_int_equal(sv.s.r, -ECANCELED);
	xport_close(x);
	xport_close(sv.s.x);

	server_start(&sv, sc, NULL, 200, bound, sizeof(bound));
	assert_int_equal(xport_connect(bound, SAFETY_TIMEOUT_MS, NULL, &x), 0);
	server_join(&sv);
	assert_int_equal(sv.s.r, -ETIMEDOUT);
	assert_msg_contains(sv.s.msg, "no answer within 0.2 s");
	xport_close(x);
	xport_close(sv.s.x);
	cancel_free(cancel);
	tls_creds_free(sc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_psk_file_errors),
		cmocka_unit_test(test_option_errors),
		cmocka_unit_test(test_psk_roundtrip_both_ways),
		cmocka_unit_test(test_peek_now_end_without_close_notify),
		cmocka_unit_test(test_psk_refusals),
		cmocka_unit_test(test_plaintext_peer),
		cmocka_unit_test(test_handshake_cancel_and_timeout),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
