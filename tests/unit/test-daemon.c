/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the serving daemon (daemon/daemon.h), in process and
 * without a shell: daemons over temporary image files, driven through
 * daemon_execute() (the entry point the control socket uses) and through
 * the control socket itself.  Every schema refusal (wrong type, JSON null,
 * missing, unknown, out of range, not an allowed value) is an
 * InvalidParameter reply that no handler saw; a migration runs to a second
 * in-process daemon started with an incoming address on 127.0.0.1, and is
 * queried, tuned and cancelled on the way.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"
#include "daemon/daemon.h"
#include "daemon/report.h"
#include "workload/workload.h"

#define SIZE (8 * MiB)

static char dir[256];

/* ---- helpers ------------------------------------------------------------------------ */

static void path_of(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", dir, name);
}

/* A SIZE-byte image whose every 4 KiB block holds its index and seed. */
static void make_image(const char *path, unsigned seed)
{
	FILE *f = fopen(path, "wb");
	uint32_t block[1024];

	assert_non_null(f);
	for (uint32_t i = 0; i < SIZE / sizeof(block); i++) {
		for (unsigned k = 0; k < 1024; k++)
			block[k] = i * 2654435761u + k + seed;
		assert_int_equal(fwrite(block, sizeof(block), 1, f), 1);
	}
	assert_int_equal(fclose(f), 0);
}

static bool same_files(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	static char ba[65536], bb[65536];
	bool same = fa && fb;

	while (same) {
		size_t na = fread(ba, 1, sizeof(ba), fa), nb = fread(bb, 1, sizeof(bb), fb);

		same = na == nb && memcmp(ba, bb, na) == 0;
		if (na == 0)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

/* An image, and what a migration may leave beside it: the incomplete
 * mark, the destination's record, the source's hand-over record. */
static void remove_image(const char *path)
{
	static const char *const sides[] = { ".blkmig-incomplete", ".blkmig-state",
					     ".blkmig-handover" };
	char side[600];

	for (size_t i = 0; i < sizeof(sides) / sizeof(sides[0]); i++) {
		snprintf(side, sizeof(side), "%s%s", path, sides[i]);
		unlink(side);
	}
	unlink(path);
}

struct node {
	struct daemon_device dev;
	char path[512];
	char sock[512];
	struct daemon_config cfg;
	struct daemon *d;
	struct cancel *cancel;
	pthread_t th; /* daemon_start() of an incoming daemon */
	int start_r;
};

static void node_init(struct node *n, const char *image, bool create_fresh)
{
	memset(n, 0, sizeof(*n));
	path_of(n->path, sizeof(n->path), image);
	if (create_fresh)
		remove_image(n->path);
	n->dev = (struct daemon_device){ .name = "d0", .path = n->path };
	if (cancel_new(&n->cancel) < 0)
		fail_msg("cancel: %s", err_msg());
	n->cfg = (struct daemon_config){
		.devs = &n->dev, .ndev = 1, .nbd = "127.0.0.1:0", .cancel = n->cancel
	};
}

static void node_down(struct node *n)
{
	daemon_free(n->d);
	n->d = NULL;
	cancel_free(n->cancel);
	n->cancel = NULL;
}

static void node_up(struct node *n)
{
	if (daemon_new(&n->cfg, &n->d) < 0 || daemon_start(n->d) < 0)
		fail_msg("daemon: %s", err_msg());
}

static void *start_main(void *arg)
{
	struct node *n = arg;

	n->start_r = daemon_start(n->d);
	return NULL;
}

/* An incoming daemon: listening, with daemon_start() waiting on a thread. */
static void node_incoming(struct node *n)
{
	n->cfg.incoming = "127.0.0.1:0";
	n->cfg.create = true;
	if (daemon_new(&n->cfg, &n->d) < 0)
		fail_msg("daemon: %s", err_msg());
	assert_true(daemon_incoming_addr(n->d)[0] != '\0');
	assert_int_equal(pthread_create(&n->th, NULL, start_main, n), 0);
}

/* Run cmd with args (JSON text, NULL: none); the reply or NULL. */
static json_object *run(struct node *n, const char *cmd, const char *args, const char **cls,
			char *err, size_t cap)
{
	json_object *a = args ? json_tokener_parse(args) : NULL, *ret;

	if (args && !a)
		fail_msg("bad test JSON: %s", args);
	ret = daemon_execute(n->d, cmd, a, cls, err, cap);
	json_object_put(a);
	return ret;
}

/* Run a command that must succeed. */
static json_object *ok(struct node *n, const char *cmd, const char *args)
{
	const char *cls = NULL;
	char err[512];
	json_object *ret = run(n, cmd, args, &cls, err, sizeof(err));

	if (!ret)
		fail_msg("%s %s: %s: %s", cmd, args ? args : "", cls, err);
	return ret;
}

/* Run a command that must fail with class cls and a message containing msg. */
static void refused(struct node *n, const char *cmd, const char *args, const char *want_cls,
		    const char *msg)
{
	const char *cls = NULL;
	char err[512];
	json_object *ret = run(n, cmd, args, &cls, err, sizeof(err));

	if (ret)
		fail_msg("%s %s succeeded: %s", cmd, args ? args : "",
			 json_object_to_json_string(ret));
	if (strcmp(cls, want_cls) != 0 || !strstr(err, msg))
		fail_msg("%s %s: got %s \"%s\", want %s \"...%s...\"", cmd, args ? args : "", cls,
			 err, want_cls, msg);
}

static const char *str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
	return json_object_get_string(v);
}

static int64_t num(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
	return json_object_get_int64(v);
}

static double dbl(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
	return json_object_get_double(v);
}

/* query-migrate until its status is one of the space-separated states
 * (a generous bound keeps a broken run from hanging the suite). */
static json_object *wait_status(struct node *n, const char *states)
{
	for (int i = 0; i < 6000; i++) {
		json_object *q = ok(n, "query-migrate", NULL);
		char want[64];

		snprintf(want, sizeof(want), " %s ", str(q, "status"));
		if (strstr(states, want))
			return q;
		json_object_put(q);
		sleep_ns(10 * 1000000ull);
	}
	fail_msg("migration never reached%s", states);
	return NULL;
}

/* ---- the schema ----------------------------------------------------------------------- */

struct refusal {
	const char *cmd, *args, *cls, *msg;
};

static const struct refusal refusals[] = {
	/* JSON null where a string is expected (these crashed serve). */
	{ "migrate", "{\"to\":\"127.0.0.1:1\",\"mode\":null}", CTL_ERR_INVALID_PARAM,
	  "'mode' must be a string, not null" },
	{ "migrate", "{\"to\":\"127.0.0.1:1\",\"format\":null}", CTL_ERR_INVALID_PARAM,
	  "'format' must be a string, not null" },
	{ "migrate", "{\"to\":null}", CTL_ERR_INVALID_PARAM, "'to' must be a string, not null" },
	{ "migrate-set-parameters", "{\"mode\":null}", CTL_ERR_INVALID_PARAM,
	  "'mode' must be a string, not null" },
	{ "migrate-set-parameters", "{\"max-bandwidth\":null}", CTL_ERR_INVALID_PARAM,
	  "'max-bandwidth' must be an integer or a size" },
	{ "migrate-set-parameters", "{\"max-downtime\":null}", CTL_ERR_INVALID_PARAM,
	  "'max-downtime' must be an integer, not null" },
	{ "query-workload", "{\"reset\":null}", CTL_ERR_INVALID_PARAM,
	  "'reset' must be true or false, not null" },
	/* Other wrong types. */
	{ "migrate", "{\"to\":5}", CTL_ERR_INVALID_PARAM, "'to' must be a string, not int" },
	{ "migrate", "{\"to\":\"x:1\",\"shared-base\":\"yes\"}", CTL_ERR_INVALID_PARAM,
	  "'shared-base' must be true or false, not string" },
	{ "migrate", "{\"to\":\"x:1\",\"zero-blocks\":1}", CTL_ERR_INVALID_PARAM,
	  "'zero-blocks' must be true or false, not int" },
	{ "migrate", "{\"to\":\"x:1\",\"max-downtime\":\"300\"}", CTL_ERR_INVALID_PARAM,
	  "'max-downtime' must be an integer, not string" },
	{ "migrate", "{\"to\":\"x:1\",\"max-downtime\":1.5}", CTL_ERR_INVALID_PARAM,
	  "'max-downtime' must be an integer, not double" },
	{ "migrate", "{\"to\":\"x:1\",\"mode\":[\"auto\"]}", CTL_ERR_INVALID_PARAM,
	  "'mode' must be a string, not array" },
	{ "migrate", "{\"to\":\"x:1\",\"max-bandwidth\":\"bogus\"}", CTL_ERR_INVALID_PARAM,
	  "'max-bandwidth' must be an integer or a size such as \"64K\", not 'bogus'" },
	{ "migrate", "{\"to\":\"x\\u0000y\"}", CTL_ERR_INVALID_PARAM,
	  "'to' must not contain a NUL byte" },
	/* Missing. */
	{ "migrate", "{}", CTL_ERR_INVALID_PARAM, "'migrate' needs argument 'to'" },
	{ "migrate", NULL, CTL_ERR_INVALID_PARAM, "'migrate' needs argument 'to'" },
	{ "migrate", "{\"mode\":\"dirty\"}", CTL_ERR_INVALID_PARAM,
	  "'migrate' needs argument 'to'" },
	/* Unknown. */
	{ "migrate", "{\"to\":\"x:1\",\"bogus\":1}", CTL_ERR_INVALID_PARAM,
	  "'migrate' has no argument 'bogus' (it takes: to, shared-base" },
	{ "migrate-set-parameters", "{\"downtime-limit\":0}", CTL_ERR_INVALID_PARAM,
	  "'migrate-set-parameters' has no argument 'downtime-limit'" },
	{ "query-migrate", "{\"x\":1}", CTL_ERR_INVALID_PARAM,
	  "'query-migrate' has no argument 'x' (it takes: none)" },
	{ "migrate-cancel", "{\"now\":true}", CTL_ERR_INVALID_PARAM,
	  "'migrate-cancel' has no argument 'now'" },
	{ "query-exports", "{\"name\":\"d0\"}", CTL_ERR_INVALID_PARAM,
	  "'query-exports' has no argument 'name'" },
	/* Out of range. */
	{ "migrate", "{\"to\":\"x:1\",\"max-downtime\":3600001}", CTL_ERR_INVALID_PARAM,
	  "'max-downtime' must be from 0 to 3600000, not 3600001" },
	{ "migrate", "{\"to\":\"x:1\",\"max-downtime\":-1}", CTL_ERR_INVALID_PARAM,
	  "'max-downtime' must be from 0 to 3600000, not -1" },
	{ "migrate-set-parameters", "{\"max-bandwidth\":-5}", CTL_ERR_INVALID_PARAM,
	  "'max-bandwidth' must be from 0 to" },
	{ "migrate", "{\"to\":\"x:1\",\"mirror-share\":9}", CTL_ERR_INVALID_PARAM,
	  "'mirror-share' must be from 10 to 90, not 9" },
	{ "migrate", "{\"to\":\"x:1\",\"mirror-share\":91}", CTL_ERR_INVALID_PARAM,
	  "'mirror-share' must be from 10 to 90, not 91" },
	{ "migrate-set-parameters", "{\"mirror-share\":100}", CTL_ERR_INVALID_PARAM,
	  "'mirror-share' must be from 10 to 90, not 100" },
	{ "migrate-set-parameters", "{\"mirror-share\":\"50%\"}", CTL_ERR_INVALID_PARAM,
	  "'mirror-share' must be an integer, not string" },
	{ "migrate", "{\"to\":\"x:1\",\"chunk-size\":2048}", CTL_ERR_INVALID_PARAM,
	  "'chunk-size' must be from 4096 to 16777216, not 2048" },
	{ "migrate", "{\"to\":\"x:1\",\"chunk-size\":\"32M\"}", CTL_ERR_INVALID_PARAM,
	  "'chunk-size' must be from 4096 to 16777216, not 33554432" },
	/* Not an allowed value. */
	{ "migrate", "{\"to\":\"x:1\",\"mode\":\"fast\"}", CTL_ERR_INVALID_PARAM,
	  "'mode' must be one of auto, dirty, active, not 'fast'" },
	{ "migrate", "{\"to\":\"x:1\",\"format\":\"raw\"}", CTL_ERR_INVALID_PARAM,
	  "'format' must be one of native, qemu, not 'raw'" },
	{ "migrate-set-parameters", "{\"mode\":\"\"}", CTL_ERR_INVALID_PARAM,
	  "'mode' must be one of auto, dirty, active, not ''" },
	/* Well-typed, but refused by the command itself. */
	{ "migrate", "{\"to\":\"x:1\",\"chunk-size\":12288}", CTL_ERR_INVALID_PARAM,
	  "is not a power of two" },
	{ "migrate", "{\"to\":\"x:1\",\"format\":\"qemu\",\"chunk-size\":65536}",
	  CTL_ERR_INVALID_PARAM, "format has 1M chunks" },
	{ "migrate", "{\"to\":\"x:1\",\"format\":\"qemu\",\"mode\":\"active\"}",
	  CTL_ERR_INVALID_PARAM, "" },
	{ "migrate", "{\"to\":\"x:1\",\"format\":\"qemu\",\"mirror-share\":80}",
	  CTL_ERR_INVALID_PARAM, "mirror-share needs the native format" },
	{ "migrate", "{\"to\":\"x:1\",\"format\":\"qemu\",\"delta\":true}", CTL_ERR_INVALID_PARAM,
	  "delta needs the native format" },
	{ "migrate", "{\"to\":\"x:1\",\"delta\":true,\"shared-base\":true}", CTL_ERR_INVALID_PARAM,
	  "neither verify-only nor shared-base" },
	{ "migrate", "{\"to\":\"x:1\",\"verify-only\":true,\"mode\":\"active\"}",
	  CTL_ERR_INVALID_PARAM, "neither shared-base nor active mode" },
	{ "migrate", "{\"to\":\"x:1\",\"retry-for\":-1}", CTL_ERR_INVALID_PARAM,
	  "'retry-for' must be from 0 to 86400000, not -1" },
	{ "migrate", "{\"to\":\"x:1\",\"resume\":\"yes\"}", CTL_ERR_INVALID_PARAM,
	  "'resume' must be true or false, not string" },
	{ "migrate", "{\"to\":\"x:1\",\"after\":\"drop\"}", CTL_ERR_INVALID_PARAM,
	  "'after' must be one of forward, refuse, not 'drop'" },
	{ "migrate", "{\"to\":\"x:1\",\"forward-to\":7}", CTL_ERR_INVALID_PARAM,
	  "'forward-to' must be a string" },
	{ "migrate", "{\"to\":\"x:1\",\"forward-to\":\"nohost\"}", CTL_ERR_INVALID_PARAM,
	  "invalid address 'nohost' (expected HOST:PORT)" },
	{ "migrate", "{\"to\":\"x:1\",\"forward-to\":\"h:99999\"}", CTL_ERR_INVALID_PARAM,
	  "invalid port in address 'h:99999'" },
	{ "migrate", "{\"to\":\"x:1\",\"forward-to\":\"h:0\"}", CTL_ERR_INVALID_PARAM,
	  "forward-to: port 0 is no NBD server" },
	{ "query-workload", "{\"reset\":true}", CTL_ERR_GENERIC, "no --workload runs" },
	{ "frobnicate", NULL, CTL_ERR_NOT_FOUND, "unknown command 'frobnicate'" },
};

static void test_schema_refusals(void **state)
{
	struct node n;
	json_object *q;

	(void)state;
	node_init(&n, "schema.img", false);
	make_image(n.path, 1);
	node_up(&n);
	for (size_t i = 0; i < ARRAY_SIZE(refusals); i++)
		refused(&n, refusals[i].cmd, refusals[i].args, refusals[i].cls, refusals[i].msg);
	/* No refused command got as far as its handler. */
	q = ok(&n, "query-migrate", NULL);
	assert_string_equal(str(q, "status"), "none");
	json_object_put(q);
	node_down(&n);
	remove_image(n.path);
}

/* A reset of the wrong type is refused by the schema before the handler
 * could say there is no workload; with one, the figures come back. */
static void test_workload(void **state)
{
	struct workload_spec ws;
	struct node n;
	json_object *w;

	(void)state;
	node_init(&n, "wl.img", false);
	make_image(n.path, 2);
	assert_int_equal(workload_parse("d0,bs=4K,rate=1M", &ws), 0);
	n.cfg.workload = &ws;
	node_up(&n);
	refused(&n, "query-workload", "{\"reset\":\"yes\"}", CTL_ERR_INVALID_PARAM,
		"'reset' must be true or false, not string");
	w = ok(&n, "query-workload", "{\"reset\":true}");
	assert_true(num(w, "writes") >= 0);
	assert_true(num(w, "latency-max-us") >= num(w, "latency-p999-us"));
	assert_true(num(w, "latency-p999-us") >= num(w, "latency-p99-us"));
	assert_true(num(w, "latency-p99-us") >= num(w, "latency-p50-us"));
	assert_true(num(w, "elapsed-us") >= 0);
	assert_string_equal(str(w, "stopped-by"), "");
	json_object_put(w);
	node_down(&n);
	remove_image(n.path);
}

static void test_config_checks(void **state)
{
	struct workload_spec ws;
	struct node n;

	(void)state;
	node_init(&n, "cfg.img", false);
	n.cfg.ndev = 0;
	assert_int_equal(daemon_check_config(&n.cfg), -EINVAL);
	n.cfg.ndev = 1;
	n.cfg.create = true;
	assert_int_equal(daemon_check_config(&n.cfg), -EINVAL);
	assert_non_null(strstr(err_msg(), "go with --incoming"));
	n.cfg.incoming = "127.0.0.1:0";
	n.cfg.qemu = true;
	assert_int_equal(daemon_check_config(&n.cfg), -EINVAL);
	n.cfg.create = n.cfg.qemu = false;
	assert_int_equal(workload_parse("nope,bs=4K,rate=1M", &ws), 0);
	n.cfg.workload = &ws;
	assert_int_equal(daemon_check_config(&n.cfg), -EINVAL);
	assert_non_null(strstr(err_msg(), "'nope'"));
	n.dev.readonly = true;
	snprintf(ws.name, sizeof(ws.name), "d0");
	assert_int_equal(daemon_check_config(&n.cfg), -EINVAL);
	n.dev.readonly = false;
	assert_int_equal(daemon_check_config(&n.cfg), 0);
	node_down(&n);
}

/* Between daemon_new() and daemon_start() commands are checked, then
 * refused: there is nothing to run them on yet. */
static void test_before_start(void **state)
{
	struct node n;

	(void)state;
	node_init(&n, "early.img", false);
	make_image(n.path, 7);
	if (daemon_new(&n.cfg, &n.d) < 0)
		fail_msg("daemon: %s", err_msg());
	assert_string_equal(daemon_incoming_addr(n.d), "");
	refused(&n, "query-migrate", NULL, CTL_ERR_GENERIC, "not serving yet");
	refused(&n, "migrate", "{\"to\":null}", CTL_ERR_INVALID_PARAM, "not null");
	node_down(&n);
	remove_image(n.path);
}

static void test_exports_and_idle_commands(void **state)
{
	struct node n;
	json_object *o, *x, *e;

	(void)state;
	node_init(&n, "idle.img", false);
	make_image(n.path, 3);
	node_up(&n);
	o = ok(&n, "query-exports", NULL);
	assert_string_equal(str(o, "nbd"), daemon_nbd_addr(n.d));
	assert_true(json_object_object_get_ex(o, "exports", &x));
	assert_int_equal(json_object_array_length(x), 1);
	e = json_object_array_get_idx(x, 0);
	assert_string_equal(str(e, "name"), "d0");
	assert_int_equal(num(e, "size"), SIZE);
	json_object_put(o);
	json_object_put(ok(&n, "qmp_capabilities", NULL));
	json_object_put(ok(&n, "migrate-cancel", "{}")); /* nothing runs: a no-op */
	/* Parameters with nothing running become the next migrate's. */
	json_object_put(ok(&n, "migrate-set-parameters",
			   "{\"max-bandwidth\":\"64M\",\"max-downtime\":50,\"mode\":\"dirty\"}"));
	o = ok(&n, "query-migrate", NULL);
	assert_string_equal(str(o, "status"), "none");
	json_object_put(o);
	node_down(&n);
	remove_image(n.path);
}

/* ---- migrations between two daemons ------------------------------------------------------ */

static void test_migrate_to_incoming_daemon(void **state)
{
	struct node src, dst;
	json_object *q, *e, *x;
	char args[256];

	(void)state;
	node_init(&src, "m-src.img", false);
	make_image(src.path, 4);
	node_init(&dst, "m-dst.img", true);
	node_up(&src);
	node_incoming(&dst);

	/* Parameters set beforehand apply to the migration. */
	json_object_put(ok(&src, "migrate-set-parameters", "{\"mode\":\"dirty\"}"));
	snprintf(args, sizeof(args), "{\"to\":\"%s\",\"zero-blocks\":true,\"chunk-size\":\"128K\"}",
		 daemon_incoming_addr(dst.d));
	json_object_put(ok(&src, "migrate", args));
	/* While it runs (or once it is over), a second one is refused. */
	refused(&src, "migrate", args, CTL_ERR_GENERIC, "");

	q = wait_status(&src, " completed failed cancelled ");
	assert_string_equal(str(q, "status"), "completed");
	assert_string_equal(str(q, "phase"), "completed");
	assert_string_equal(str(q, "mode"), "dirty");
	assert_int_equal(num(q, "total"), SIZE);
	assert_int_equal(num(q, "remaining"), 0);
	assert_int_equal(num(q, "chunk-size"), 128 * KiB);
	assert_int_equal(num(q, "eta"), -1);
	assert_true(num(q, "pass") >= 1);
	assert_int_equal(num(q, "pass"), num(q, "iterations"));
	assert_true(num(q, "transferred") >= (int64_t)SIZE);
	json_object_put(q);

	pthread_join(dst.th, NULL);
	if (dst.start_r < 0)
		fail_msg("incoming daemon: %s", err_msg());
	assert_true(same_files(src.path, dst.path));
	/* The destination serves what it received. */
	e = ok(&dst, "query-exports", NULL);
	assert_true(json_object_object_get_ex(e, "exports", &x));
	assert_int_equal(num(json_object_array_get_idx(x, 0), "size"), SIZE);
	json_object_put(e);
	/* The source handed its devices over. */
	refused(&src, "migrate", args, CTL_ERR_GENERIC, "already migrated");

	node_down(&src);
	node_down(&dst);
	remove_image(src.path);
	remove_image(dst.path);
}

/* A rate-limited migration, watched while it runs, tuned and cancelled. */
static void test_query_tune_cancel(void **state)
{
	struct node src, dst;
	json_object *q = NULL;
	char args[256];
	bool seen_rate = false;

	(void)state;
	node_init(&src, "c-src.img", false);
	make_image(src.path, 5);
	node_init(&dst, "c-dst.img", true);
	node_up(&src);
	node_incoming(&dst);

	snprintf(args, sizeof(args), "{\"to\":\"%s\",\"max-bandwidth\":\"1M\",\"mode\":\"dirty\"}",
		 daemon_incoming_addr(dst.d));
	json_object_put(ok(&src, "migrate", args));
	/* Until the live rate shows (bounded: 1 MiB/s sends SIZE in 8 s). */
	for (int i = 0; i < 600 && !seen_rate; i++) {
		json_object_put(q);
		q = wait_status(&src, " active completed failed cancelled ");
		assert_string_equal(str(q, "status"), "active");
		seen_rate = num(q, "rate") > 0;
		if (!seen_rate)
			sleep_ns(10 * 1000000ull);
	}
	assert_true(seen_rate);
	assert_true(num(q, "total-time") > 0);
	assert_true(dbl(q, "mbps") > 0 || num(q, "transferred") == 0);
	assert_true(num(q, "remaining") <= num(q, "total"));
	assert_true(num(q, "remaining") > 0);
	assert_true(num(q, "pass") >= 1);
	assert_true(strcmp(str(q, "phase"), "bulk") == 0 || strcmp(str(q, "phase"), "dirty") == 0);
	assert_true(num(q, "eta") > 0);
	assert_int_equal(num(q, "mirror-share"), 50);
	json_object_put(q);

	/* Tuning a running migration. */
	json_object_put(ok(&src, "migrate-set-parameters", "{\"max-bandwidth\":\"2M\"}"));
	json_object_put(ok(&src, "migrate-set-parameters", "{\"max-downtime\":100}"));
	json_object_put(ok(&src, "migrate-set-parameters", "{\"mirror-share\":80}"));
	q = ok(&src, "query-migrate", NULL);
	assert_int_equal(num(q, "mirror-share"), 80);
	json_object_put(q);
	refused(&src, "migrate-set-parameters", "{\"max-downtime\":null}", CTL_ERR_INVALID_PARAM,
		"'max-downtime' must be an integer, not null");

	json_object_put(ok(&src, "migrate-cancel", NULL));
	q = wait_status(&src, " completed failed cancelled ");
	assert_string_equal(str(q, "status"), "cancelled");
	assert_int_equal(num(q, "eta"), -1);
	json_object_put(q);

	/* The destination gives up when the source goes away. */
	cancel_fire(dst.cancel);
	pthread_join(dst.th, NULL);
	assert_true(dst.start_r < 0);
	/* The source still owns its devices: it may migrate again later. */
	q = ok(&src, "query-exports", NULL);
	json_object_put(q);

	node_down(&src);
	node_down(&dst);
	remove_image(src.path);
	remove_image(dst.path);
}

/* ---- through the control socket ------------------------------------------------------------ */

static void test_control_socket(void **state)
{
	struct ctl_client *c = NULL;
	json_object *ret = NULL, *args;
	struct node n;

	(void)state;
	node_init(&n, "sock.img", false);
	make_image(n.path, 6);
	path_of(n.sock, sizeof(n.sock), "ctl.sock");
	n.cfg.control = n.sock;
	node_up(&n);
	assert_int_equal(ctl_connect(n.sock, 5000, &c), 0);

	args = json_tokener_parse("{\"to\":\"127.0.0.1:1\",\"mode\":null}");
	assert_int_equal(ctl_call(c, "migrate", args, &ret, NULL, NULL), -EREMOTEIO);
	assert_non_null(strstr(err_msg(), "'mode' must be a string, not null"));
	args = json_tokener_parse("{\"mode\":null}");
	assert_int_equal(ctl_call(c, "migrate-set-parameters", args, &ret, NULL, NULL), -EREMOTEIO);
	assert_non_null(strstr(err_msg(), "'mode' must be a string, not null"));
	/* The daemon is still there, and nothing was started. */
	assert_int_equal(ctl_call(c, "query-migrate", NULL, &ret, NULL, NULL), 0);
	assert_string_equal(str(ret, "status"), "none");
	json_object_put(ret);
	assert_int_equal(ctl_call(c, "frobnicate", NULL, &ret, NULL, NULL), -EREMOTEIO);
	assert_non_null(strstr(err_msg(), "unknown command 'frobnicate'"));

	ctl_client_close(c);
	node_down(&n);
	remove_image(n.path);
}

/* ---- the report ---------------------------------------------------------------------------- */

static void test_report_phases(void **state)
{
	struct mig_stats st = { .state = MIG_BULK, .total = 100, .remaining = 50, .rate = 25 };
	json_object *o;

	(void)state;
	assert_string_equal(report_phase(&st), "bulk");
	assert_int_equal(report_pass(&st), 1);
	assert_int_equal(report_eta_ns(&st), 2000000000ull);
	st.state = MIG_DIRTY;
	st.iterations = 2;
	assert_string_equal(report_phase(&st), "dirty");
	assert_int_equal(report_pass(&st), 3);
	st.active = true;
	assert_string_equal(report_phase(&st), "mirroring");
	st.state = MIG_FINAL;
	assert_string_equal(report_phase(&st), "final");
	st.state = MIG_COMPLETED;
	st.iterations = 4;
	assert_string_equal(report_phase(&st), "completed");
	assert_int_equal(report_pass(&st), 4);
	assert_int_equal(report_eta_ns(&st), UINT64_MAX);
	st.state = MIG_DIRTY;
	st.rate = 0;
	assert_int_equal(report_eta_ns(&st), UINT64_MAX);
	o = report_stats_json(&st, "boom");
	assert_non_null(o);
	assert_string_equal(str(o, "status"), "active");
	assert_string_equal(str(o, "error-desc"), "boom");
	assert_int_equal(num(o, "eta"), -1);
	assert_int_equal(num(o, "pass"), 5);
	json_object_put(o);
}

static int setup(void **state)
{
	const char *t = getenv("TMPDIR");

	(void)state;
	snprintf(dir, sizeof(dir), "%s/test-daemon.XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_report_phases),
		cmocka_unit_test(test_config_checks),
		cmocka_unit_test(test_schema_refusals),
		cmocka_unit_test(test_workload),
		cmocka_unit_test(test_before_start),
		cmocka_unit_test(test_exports_and_idle_commands),
		cmocka_unit_test(test_control_socket),
		cmocka_unit_test(test_migrate_to_incoming_daemon),
		cmocka_unit_test(test_query_tune_cancel),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
