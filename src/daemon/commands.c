/* SPDX-License-Identifier: MIT */
/*
 * The control commands of a serving daemon: one table row per command
 * {name, handler, argument schema}.  Each argument is declared once (name,
 * type, required, range, allowed values), and check_args() holds the
 * arguments against it before the handler runs, so a handler only ever
 * sees arguments of the declared types, inside their ranges.  What the
 * commands mean is documented in docs/control.md; when you add a command
 * or an argument, also update that table.
 */
#include "daemon-impl.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "block/backend.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"
#include "migrate/job.h"
#include "nbdserver/server.h"
#include "report.h"
#include "transport/transport.h"
#include "wire/record.h"
#include "workload/workload.h"

/* ---- argument schemas ------------------------------------------------------------- */

enum arg_type {
	ARG_STRING, /* a JSON string without NUL bytes */
	ARG_BOOL,   /* true or false */
	ARG_INT,    /* a JSON integer in [min, max] */
	ARG_SIZE,   /* a JSON integer, or a string such as "64K" or "100M", in [min, max] */
};

static const char *const arg_type_name[] = {
	[ARG_STRING] = "a string",
	[ARG_BOOL] = "true or false",
	[ARG_INT] = "an integer",
	[ARG_SIZE] = "an integer or a size such as \"64K\"",
};

struct arg_spec {
	const char *name;
	enum arg_type type;
	bool required;
	uint64_t min, max;	    /* ARG_INT, ARG_SIZE: the inclusive range */
	const char *const *choices; /* ARG_STRING: allowed values (NULL-terminated), or NULL */
};

#define MAX_ARGS 24

/* The arguments of one call, checked: slot i belongs to spec[i]. */
struct args {
	const struct arg_spec *spec;
	bool given[MAX_ARGS];
	const char *str[MAX_ARGS]; /* ARG_STRING, borrowed from the request */
	bool b[MAX_ARGS];
	uint64_t u[MAX_ARGS]; /* ARG_INT, ARG_SIZE */
};

/* Where a handler reports failure: the protocol's class and message. */
struct cmd_err {
	const char **cls;
	char *msg;
	size_t cap;
};

static json_object *fail(struct cmd_err *e, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static json_object *fail(struct cmd_err *e, const char *cls, const char *fmt, ...)
{
	va_list ap;

	*e->cls = cls;
	va_start(ap, fmt);
	vsnprintf(e->msg, e->cap, fmt, ap);
	va_end(ap);
	return NULL;
}

static json_object *fail_errmsg(struct cmd_err *e, const char *cls)
{
	return fail(e, cls, "%s", err_msg());
}

static void list_names(char *buf, size_t cap, const struct arg_spec *spec)
{
	size_t n = 0;

	buf[0] = '\0';
	for (unsigned i = 0; spec && spec[i].name && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", spec[i].name);
	if (!spec || !spec[0].name)
		snprintf(buf, cap, "none");
}

static void list_choices(char *buf, size_t cap, const char *const *choices)
{
	size_t n = 0;

	buf[0] = '\0';
	for (unsigned i = 0; choices[i] && n < cap; i++)
		n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", choices[i]);
}

/* fail() for the schema checks: -EINVAL. */
#define bad(e, ...) (fail((e), CTL_ERR_INVALID_PARAM, __VA_ARGS__), -EINVAL)

/* One value against its spec; fills slot i.  0, or -EINVAL with the reply
 * written to e. */
static int check_one(const struct arg_spec *s, json_object *v, struct args *a, unsigned i,
		     struct cmd_err *e)
{
	const char *type = json_type_to_name(json_object_get_type(v));
	uint64_t u = 0;
	char list[256];

	switch (s->type) {
	case ARG_STRING:
		if (!json_object_is_type(v, json_type_string))
			break;
		a->str[i] = json_object_get_string(v);
		if (strlen(a->str[i]) != (size_t)json_object_get_string_len(v))
			return bad(e, "'%s' must not contain a NUL byte", s->name);
		if (!s->choices)
			return 0;
		for (unsigned k = 0; s->choices[k]; k++)
			if (strcmp(a->str[i], s->choices[k]) == 0)
				return 0;
		list_choices(list, sizeof(list), s->choices);
		return bad(e, "'%s' must be one of %s, not '%.64s'", s->name, list, a->str[i]);
	case ARG_BOOL:
		if (!json_object_is_type(v, json_type_boolean))
			break;
		a->b[i] = json_object_get_boolean(v);
		return 0;
	case ARG_INT:
	case ARG_SIZE:
		if (json_object_is_type(v, json_type_int)) {
			int64_t x = json_object_get_int64(v);

			if (x < 0)
				return bad(
				    e, "'%s' must be from %" PRIu64 " to %" PRIu64 ", not %" PRId64,
				    s->name, s->min, s->max, x);
			u = (uint64_t)x;
		} else if (s->type == ARG_SIZE && json_object_is_type(v, json_type_string)) {
			if (parse_rate(json_object_get_string(v), &u) < 0)
				return bad(e, "'%s' must be %s, not '%.64s'", s->name,
					   arg_type_name[s->type], json_object_get_string(v));
		} else {
			break;
		}
		if (u < s->min || u > s->max)
			return bad(e, "'%s' must be from %" PRIu64 " to %" PRIu64 ", not %" PRIu64,
				   s->name, s->min, s->max, u);
		a->u[i] = u;
		return 0;
	}
	return bad(e, "'%s' must be %s, not %s", s->name, arg_type_name[s->type], type);
}

/*
 * Hold args against spec: every member known, of its type and in range,
 * every required one there.  0, or -EINVAL with the InvalidParameter reply
 * written to e.
 */
static int check_args(const char *cmd, const struct arg_spec *spec, json_object *args,
		      struct args *a, struct cmd_err *e)
{
	char list[256];
	unsigned n = 0;

	memset(a, 0, sizeof(*a));
	a->spec = spec;
	while (spec && spec[n].name)
		n++;
	assert(n <= MAX_ARGS);
	if (!args)
		goto required;
	json_object_object_foreach(args, key, val)
	{
		unsigned i;

		for (i = 0; i < n && strcmp(spec[i].name, key) != 0; i++)
			;
		if (i == n) {
			list_names(list, sizeof(list), spec);
			fail(e, CTL_ERR_INVALID_PARAM,
			     "'%s' has no argument '%.64s' (it takes: %s)", cmd, key, list);
			return -EINVAL;
		}
		if (check_one(&spec[i], val, a, i, e) < 0)
			return -EINVAL;
		a->given[i] = true;
	}
required:
	for (unsigned i = 0; i < n; i++)
		if (spec[i].required && !a->given[i]) {
			fail(e, CTL_ERR_INVALID_PARAM, "'%s' needs argument '%s' (%s)", cmd,
			     spec[i].name, arg_type_name[spec[i].type]);
			return -EINVAL;
		}
	return 0;
}

/* The slot of argument name; the schema must declare it with type t. */
static unsigned slot(const struct args *a, const char *name, enum arg_type t)
{
	(void)t; /* only asserted on */
	for (unsigned i = 0; a->spec && a->spec[i].name; i++)
		if (strcmp(a->spec[i].name, name) == 0) {
			assert(a->spec[i].type == t ||
			       (t == ARG_INT && a->spec[i].type == ARG_SIZE));
			return i;
		}
	assert(!"argument not in the schema");
	return 0;
}

/* Whether the argument was given; if so *out receives it. */
static bool arg_str(const struct args *a, const char *name, const char **out)
{
	unsigned i = slot(a, name, ARG_STRING);

	if (a->given[i])
		*out = a->str[i];
	return a->given[i];
}

static bool arg_bool(const struct args *a, const char *name, bool *out)
{
	unsigned i = slot(a, name, ARG_BOOL);

	if (a->given[i])
		*out = a->b[i];
	return a->given[i];
}

static bool arg_u64(const struct args *a, const char *name, uint64_t *out)
{
	unsigned i = slot(a, name, ARG_INT);

	if (a->given[i])
		*out = a->u[i];
	return a->given[i];
}

/* ---- the commands ------------------------------------------------------------------ */

static const char *const modes[] = { "auto", "dirty", "active", NULL };
static const char *const formats[] = { "native", "qemu", NULL };
static const char *const afters[] = { "forward", "refuse", NULL };

/* The longest pause a user may ask for: an hour, as `blkmig migrate` allows. */
#define MAX_DOWNTIME_MS (3600 * 1000ull)

#define ARG_MAX_BANDWIDTH                                                                          \
	{                                                                                          \
		"max-bandwidth", ARG_SIZE, false, 0, INT64_MAX, NULL                               \
	}
#define ARG_MAX_DOWNTIME                                                                           \
	{                                                                                          \
		"max-downtime", ARG_INT, false, 0, MAX_DOWNTIME_MS, NULL                           \
	}
#define ARG_MODE                                                                                   \
	{                                                                                          \
		"mode", ARG_STRING, false, 0, 0, modes                                             \
	}
#define ARG_MIRROR_SHARE                                                                           \
	{                                                                                          \
		"mirror-share", ARG_INT, false, MIG_MIRROR_SHARE_MIN, MIG_MIRROR_SHARE_MAX, NULL   \
	}

static const struct arg_spec migrate_args[] = {
	{ "to", ARG_STRING, true, 0, 0, NULL },
	{ "shared-base", ARG_BOOL, false, 0, 0, NULL },
	{ "zero-blocks", ARG_BOOL, false, 0, 0, NULL },
	ARG_MAX_BANDWIDTH,
	ARG_MAX_DOWNTIME,
	ARG_MODE,
	ARG_MIRROR_SHARE,
	{ "chunk-size", ARG_SIZE, false, WIRE_MIN_CHUNK_SIZE, WIRE_MAX_CHUNK_SIZE, NULL },
	{ "format", ARG_STRING, false, 0, 0, formats },
	{ "tls-psk", ARG_STRING, false, 0, 0, NULL },
	{ "tls-creds", ARG_STRING, false, 0, 0, NULL },
	{ "tls-authz", ARG_STRING, false, 0, 0, NULL },
	{ "tls-hostname", ARG_STRING, false, 0, 0, NULL },
	{ "retry-for", ARG_INT, false, 0, 86400 * 1000, NULL },
	{ "resume", ARG_BOOL, false, 0, 0, NULL },
	{ "delta", ARG_BOOL, false, 0, 0, NULL },
	{ "verify-only", ARG_BOOL, false, 0, 0, NULL },
	{ "after", ARG_STRING, false, 0, 0, afters },
	{ "forward-to", ARG_STRING, false, 0, 0, NULL },
	/* off, zstd, zstd:LEVEL or auto: mig_compress_parse() */
	{ "compress", ARG_STRING, false, 0, 0, NULL },
	{ "connections", ARG_INT, false, 1, MIG_CONNECTIONS_MAX, NULL },
	{ NULL },
};

/*
 * The client credentials of a migrate command: its own tls-* arguments,
 * else the daemon's (serve --tls-*), else none.  0 with *out (NULL: plain
 * TCP), or a negative errno with the message set.
 */
static int migrate_tls(struct daemon *d, const struct args *a, struct tls_creds **out,
		       struct tls_options *used)
{
	struct tls_options o = { 0 };

	arg_str(a, "tls-psk", &o.psk_file);
	arg_str(a, "tls-creds", &o.x509_dir);
	arg_str(a, "tls-authz", &o.authz);
	arg_str(a, "tls-hostname", &o.hostname);
	if (!tls_options_enabled(&o) && (o.authz || o.hostname)) {
		struct tls_options mine = d->cfg.tls;

		if (!tls_options_enabled(&mine))
			return err_set(EINVAL, "tls-authz and tls-hostname need tls-psk or "
					       "tls-creds (here or in serve's options)");
		/* The daemon's credentials, with this migration's checks. */
		mine.authz = o.authz ? o.authz : mine.authz;
		mine.hostname = o.hostname;
		o = mine;
	} else if (!tls_options_enabled(&o)) {
		o = d->cfg.tls;
		o.hostname = NULL;
	}
	*used = o;
	return tls_creds_new(&o, TLS_CLIENT, out);
}

/*
 * What forwarding after the switch-over needs: whether to, where, and the
 * migration's client credentials (the destination's NBD server takes the
 * same as its incoming migration).  With the QEMU format nothing is
 * announced: forward-to says where QEMU's NBD server is, or clients are
 * refused.
 */
static void migrate_forward(struct daemon *d, const struct args *a, const struct tls_options *o,
			    const struct tls_creds *tls, struct src_params *p)
{
	const char *after = "forward", *to = "";
	const char *user = tls_creds_psk_identity(tls);

	arg_str(a, "after", &after);
	arg_str(a, "forward-to", &to);
	p->forward = strcmp(after, "forward") == 0 && !p->verify_only;
	pthread_mutex_lock(&d->lock);
	d->fwd.wanted = p->forward;
	snprintf(d->fwd.to, sizeof(d->fwd.to), "%s", to);
	snprintf(d->fwd.psk_file, sizeof(d->fwd.psk_file), "%s", o->psk_file ? o->psk_file : "");
	snprintf(d->fwd.x509_dir, sizeof(d->fwd.x509_dir), "%s", o->x509_dir ? o->x509_dir : "");
	snprintf(d->fwd.psk_user, sizeof(d->fwd.psk_user), "%s", user ? user : "");
	pthread_mutex_unlock(&d->lock);
}

static json_object *cmd_migrate(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	struct src_params p = { .max_bandwidth = d->max_bandwidth,
				.max_downtime_ns = d->max_downtime_ns,
				.mode = d->mode };
	const char *to = NULL, *mode = NULL, *format = "native", *compress = NULL;
	uint64_t ms = 0, chunk = 0, conns = 0, share = 0, retry_ms = DAEMON_DEFAULT_RETRY_MS;
	struct job_options jo = { 0 };
	struct tls_creds *tls = NULL;
	struct tls_options used = { 0 };
	bool handed, other;
	const char *fwd_to;
	char host[256];
	uint16_t port;

	arg_str(a, "to", &to);
	arg_u64(a, "retry-for", &retry_ms);
	arg_bool(a, "resume", &jo.resume);
	arg_bool(a, "delta", &p.delta);
	arg_bool(a, "verify-only", &p.verify_only);
	jo.retry_ns = retry_ms * 1000000u;
	p.handover = daemon_handover;
	p.handover_user = d;
	arg_bool(a, "shared-base", &p.shared_base);
	arg_bool(a, "zero-blocks", &p.zero_blocks);
	arg_u64(a, "max-bandwidth", &p.max_bandwidth);
	if (arg_u64(a, "connections", &conns))
		p.connections = (unsigned)conns;
	if (arg_u64(a, "max-downtime", &ms))
		p.max_downtime_ns = ms * 1000000u;
	if (arg_str(a, "mode", &mode) && mig_mode_parse(mode, &p.mode) < 0)
		return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
	if (arg_str(a, "compress", &compress) &&
	    mig_compress_parse(compress, &p.compress, &p.compress_level) < 0)
		return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
	arg_str(a, "format", &format);
	if (strcmp(format, "qemu") == 0)
		p.format = MIG_FORMAT_QEMU;
	/* The schema bounds mirror-share; the one set by
	 * migrate-set-parameters is for native migrations (QEMU's stream
	 * mirrors nothing), one given here for this one. */
	if (arg_u64(a, "mirror-share", &share))
		p.mirror_share = (unsigned)share;
	else if (p.format == MIG_FORMAT_NATIVE)
		p.mirror_share = d->mirror_share;
	/* The schema bounds chunk-size to 4K..16M. */
	arg_u64(a, "chunk-size", &chunk);
	p.chunk_size = (uint32_t)chunk;
	if (src_params_check(&p) < 0)
		return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
	/* A served disk takes random writes: track and resend 64 KiB, not
	 * 1 MiB, unless told otherwise.  QEMU's stream has 1 MiB. */
	p.chunk_size = p.format == MIG_FORMAT_QEMU ? WIRE_QEMU_CHUNK_SIZE
		       : chunk			   ? (uint32_t)chunk
						   : DAEMON_DEFAULT_CHUNK_SIZE;
	if (arg_str(a, "forward-to", &fwd_to)) {
		if (xport_addr_split(fwd_to, host, sizeof(host), &port) < 0)
			return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
		if (port == 0) {
			err_set(EINVAL, "forward-to: port 0 is no NBD server");
			return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
		}
	}
	/* What the running (or finished) migration's hook reads is not
	 * touched by a migrate that cannot start. */
	if (job_startable(d->job) < 0)
		return fail_errmsg(e, CTL_ERR_GENERIC);
	/*
	 * Handed over (its COMMIT lost): the devices belong to that
	 * destination; only a resume of that migration, which delivers the
	 * COMMIT, may run, the way chosen then (forward or refuse) stays.
	 */
	pthread_mutex_lock(&d->lock);
	handed = d->fwd.started;
	if (handed)
		p.forward = d->fwd.wanted;
	other = handed && (!jo.resume || strcmp(to, d->migrated_to) != 0);
	if (other)
		err_set(ESHUTDOWN,
			"the devices were handed over to %s: only 'migrate --resume' to it may "
			"run, to complete that hand-over",
			d->migrated_to);
	pthread_mutex_unlock(&d->lock);
	if (other)
		return fail_errmsg(e, CTL_ERR_GENERIC);
	if (migrate_tls(d, a, &tls, &used) < 0)
		return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
	if (!handed)
		migrate_forward(d, a, &used, tls, &p);
	pthread_mutex_lock(&d->lock);
	snprintf(d->migrated_to, sizeof(d->migrated_to), "%s", to);
	pthread_mutex_unlock(&d->lock);
	if (p.verify_only)
		p.handover = NULL; /* nothing is handed over */
	if (p.format == MIG_FORMAT_QEMU)
		jo.retry_ns = 0; /* QEMU cannot resume */
	if (job_start(d->job, to, &p, tls, &jo) < 0)
		return fail_errmsg(e, CTL_ERR_GENERIC);
	return json_object_new_object();
}

/* "forwarding": the clients the source still relays to the destination. */
static void add_forwarding(struct daemon *d, json_object *o)
{
	struct blk_nbd_stats sum = { 0 };
	json_object *f;
	char addr[300];
	bool active;

	pthread_mutex_lock(&d->lock);
	active = d->fwd.active;
	snprintf(addr, sizeof(addr), "%s", d->fwd.addr);
	for (unsigned i = 0; active && i < d->nsend; i++) {
		struct blk_nbd_stats one;

		blk_nbd_stats(d->fwd.blk[i], &one);
		sum.requests += one.requests;
		sum.errors += one.errors;
		sum.connects += one.connects;
	}
	pthread_mutex_unlock(&d->lock);
	if (!active || !(f = json_object_new_object()))
		return;
	json_object_object_add(f, "clients", json_object_new_int64(nbds_clients(d->nbd)));
	json_object_object_add(f, "to", json_object_new_string(addr));
	json_object_object_add(f, "requests", json_object_new_int64((int64_t)sum.requests));
	json_object_object_add(f, "errors", json_object_new_int64((int64_t)sum.errors));
	json_object_object_add(f, "connections", json_object_new_int64((int64_t)sum.connects));
	json_object_object_add(o, "forwarding", f);
}

static json_object *cmd_query_migrate(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	struct mig_stats st;
	char error[1024];
	bool started;
	json_object *o;

	(void)a;
	(void)e;
	job_query(d->job, &st, &started, error, sizeof(error));
	if (started) {
		o = report_stats_json(&st, error);
		if (o)
			add_forwarding(d, o);
		return o;
	}
	o = json_object_new_object();
	if (o && json_object_object_add(o, "status", json_object_new_string("none")) < 0) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static json_object *cmd_migrate_cancel(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	(void)a;
	(void)e;
	job_cancel(d->job);
	return json_object_new_object();
}

static const struct arg_spec set_parameters_args[] = {
	ARG_MAX_BANDWIDTH, ARG_MAX_DOWNTIME, ARG_MODE, ARG_MIRROR_SHARE, { NULL },
};

/* Only what is given changes, for the running migration and the next ones
 * alike. */
static json_object *cmd_set_parameters(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	const char *mode;
	uint64_t v;

	if (arg_str(a, "mode", &mode)) {
		enum mig_mode m;
		int r;

		if (mig_mode_parse(mode, &m) < 0)
			return fail_errmsg(e, CTL_ERR_INVALID_PARAM);
		/* Not running: the default for the next migrate. */
		r = job_set_mode(d->job, m);
		if (r < 0 && r != -ENOENT)
			return fail_errmsg(e, CTL_ERR_GENERIC);
		d->mode = m;
	}
	if (arg_u64(a, "max-bandwidth", &v)) {
		d->max_bandwidth = v;
		job_set_max_bandwidth(d->job, v);
	}
	if (arg_u64(a, "max-downtime", &v)) {
		d->max_downtime_ns = v * 1000000u;
		job_set_max_downtime(d->job, d->max_downtime_ns);
	}
	if (arg_u64(a, "mirror-share", &v)) { /* the schema bounds it */
		d->mirror_share = (unsigned)v;
		job_set_mirror_share(d->job, d->mirror_share);
	}
	return json_object_new_object();
}

static json_object *cmd_query_exports(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	json_object *o = json_object_new_object(), *arr = json_object_new_array();

	(void)a;
	(void)e;
	if (!o || !arr)
		goto fail;
	for (unsigned i = 0; i < d->cfg.ndev; i++) {
		json_object *x = json_object_new_object();

		if (!x || json_object_array_add(arr, x) < 0) {
			json_object_put(x);
			goto fail;
		}
		json_object_object_add(x, "name", json_object_new_string(d->devs[i].name));
		json_object_object_add(x, "path", json_object_new_string(d->devs[i].path));
		json_object_object_add(x, "size",
				       json_object_new_int64((int64_t)blk_size(d->blks[i])));
		json_object_object_add(x, "readonly", json_object_new_boolean(d->devs[i].readonly));
	}
	if (json_object_object_add(o, "exports", arr) < 0)
		goto fail;
	arr = NULL;
	json_object_object_add(o, "nbd", json_object_new_string(d->nbd_addr));
	return o;
fail:
	json_object_put(arr);
	json_object_put(o);
	return NULL;
}

static json_object *cmd_qmp_capabilities(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	/* QMP clients open with it; there is no capability to negotiate. */
	(void)d;
	(void)a;
	(void)e;
	return json_object_new_object();
}

static const struct arg_spec query_workload_args[] = {
	{ "reset", ARG_BOOL, false, 0, 0, NULL },
	{ NULL },
};

static json_object *cmd_query_workload(struct daemon *d, const struct args *a, struct cmd_err *e)
{
	struct workload_stats ws;
	bool reset = false;

	if (!d->wl)
		return fail(e, CTL_ERR_GENERIC, "no --workload runs in this daemon");
	arg_bool(a, "reset", &reset);
	workload_get_stats(d->wl, &ws);
	if (reset)
		workload_reset_stats(d->wl);
	return report_workload_json(&ws);
}

/* ---- the table ---------------------------------------------------------------------- */

struct command {
	const char *name;
	json_object *(*fn)(struct daemon *d, const struct args *a, struct cmd_err *e);
	const struct arg_spec *args; /* {NULL}-terminated; NULL: takes none */
};

/* When you add a command, also document it in docs/control.md. */
static const struct command commands[] = {
	{ "migrate", cmd_migrate, migrate_args },
	{ "query-migrate", cmd_query_migrate, NULL },
	{ "migrate-cancel", cmd_migrate_cancel, NULL },
	{ "migrate-set-parameters", cmd_set_parameters, set_parameters_args },
	{ "query-exports", cmd_query_exports, NULL },
	{ "qmp_capabilities", cmd_qmp_capabilities, NULL },
	{ "query-workload", cmd_query_workload, query_workload_args },
};

json_object *daemon_run_command_locked(struct daemon *d, const char *cmd, json_object *args,
				       const char **err_class, char *err, size_t err_cap)
{
	struct cmd_err e = { .cls = err_class, .msg = err, .cap = err_cap };
	const struct command *c = NULL;
	struct args a;
	json_object *ret;

	for (size_t i = 0; i < ARRAY_SIZE(commands) && !c; i++)
		if (strcmp(commands[i].name, cmd) == 0)
			c = &commands[i];
	if (!c)
		return fail(&e, CTL_ERR_NOT_FOUND, "unknown command '%.64s'", cmd);
	if (args && !json_object_is_type(args, json_type_object))
		return fail(&e, CTL_ERR_INVALID_PARAM, "'arguments' must be an object");
	if (check_args(cmd, c->args, args, &a, &e) < 0)
		return NULL;
	if (!d->started)
		return fail(&e, CTL_ERR_GENERIC, "the daemon is not serving yet");
	ret = c->fn(d, &a, &e);
	if (!ret && !err[0])
		fail(&e, CTL_ERR_GENERIC, "out of memory");
	return ret;
}
