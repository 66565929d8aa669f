/* SPDX-License-Identifier: MIT */
/*
 * blkmig serve: the daemon that owns the images.  It exports each over NBD
 * through a tracking layer (so every client write is seen by a migration),
 * obeys the control socket (migrate, query-migrate, migrate-cancel,
 * migrate-set-parameters, query-exports), and with --incoming first
 * receives a migration into its images and serves them only once it is
 * complete and verified.
 *
 * After an outgoing migration completes, the devices are fenced and every
 * NBD request is answered with ESHUTDOWN and the connection closed, so
 * clients reconnect to the destination.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backend.h"
#include "block/mark.h"
#include "cli.h"
#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"
#include "migrate/job.h"
#include "nbdserver/server.h"
#include "transport/transport.h"
#include "workload/workload.h"

/* Tracking granularity of a served disk's native migration. */
#define SERVE_DEFAULT_CHUNK_SIZE (64 * 1024)

static const char serve_help[] =
    "Usage: blkmig serve --device NAME=PATH[,readonly] [--device ...]\n"
    "                    [--nbd HOST:PORT] [--control PATH] [--incoming HOST:PORT]\n"
    "                    [--format native|qemu] [--workload SPEC] [--create]\n"
    "                    [--shared-base] [--port-file FILE]\n"
    "\n"
    "Own the named images and export each over NBD under its NAME.  Every write\n"
    "goes through dirty tracking, so `blkmig migrate --control PATH --to ...`\n"
    "can move the images live to another `blkmig serve --incoming`.  After a\n"
    "completed migration this daemon answers every NBD request with ESHUTDOWN\n"
    "and closes, so clients reconnect to the destination.\n"
    "\n"
    "  --device NAME=PATH    an image or block device; ',readonly' exports it\n"
    "                        read-only and leaves it out of migrations\n"
    "  --nbd HOST:PORT       NBD address (default 127.0.0.1:10809; port 0: any)\n"
    "  --control PATH        control socket (JSON lines, mode 0600)\n"
    "  --incoming HOST:PORT  first receive a migration into the images; NBD clients\n"
    "                        are refused until it is complete and verified\n"
    "  --create              with --incoming: create missing images\n"
    "  --shared-base         with --incoming: accept a shared-base migration\n"
    "  --format native|qemu  incoming stream format; qemu: QEMU 7.2's (migrate\n"
    "                        with blk=true from a -M none QEMU; images must exist)\n"
    "  --workload SPEC       run the built-in writer against a device:\n"
    "                        NAME,bs=SIZE,rate=RATE[,seed=N][,pattern=random|sequential]\n"
    "  --port-file FILE      write 'incoming=PORT' and 'nbd=PORT' lines to FILE as\n"
    "                        each address starts listening\n"
    "\n"
    "Runs until SIGINT or SIGTERM (a running migration is cancelled first).\n"
    "Exit status: 0 stopped by a signal, 1 failure, 2 usage error.\n";

struct serve {
	struct cli_device devs[CLI_MAX_DEVICES];
	unsigned ndev;
	struct blk *blks[CLI_MAX_DEVICES];
	struct src_device sdev[CLI_MAX_DEVICES];
	unsigned nsend;
	struct nbds *nbd;
	struct ctl *ctl;
	struct job *job;
	bool create, shared_base, qemu;
	const char *port_file;
	char nbd_addr[128], incoming_addr[128];
	pthread_mutex_t lock; /* guards migrated_to and ctl */
	char migrated_to[256];
	uint64_t max_bandwidth, max_downtime_ns;
	enum mig_mode mode;  /* for the next migrate without 'mode' */
	struct workload *wl; /* --workload, or NULL */
};

/* Rewrite the port file with what is listening so far (atomically). */
static int write_port_file(struct serve *s)
{
	char tmp[4096];
	FILE *f;

	if (!s->port_file)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->port_file);
	f = fopen(tmp, "w");
	if (!f)
		return err_set(errno, "cannot write %s: %s", tmp, strerror(errno));
	if (s->incoming_addr[0])
		fprintf(f, "incoming=%s\n", strrchr(s->incoming_addr, ':') + 1);
	if (s->nbd_addr[0])
		fprintf(f, "nbd=%s\n", strrchr(s->nbd_addr, ':') + 1);
	if (fclose(f) != 0 || rename(tmp, s->port_file) < 0)
		return err_set(errno, "cannot write %s: %s", s->port_file, strerror(errno));
	return 0;
}

/* ---- incoming ------------------------------------------------------------------- */

static int run_incoming(struct serve *s, const char *listen_on)
{
	const char *names[CLI_MAX_DEVICES];
	struct cli_incoming in = { .devs = s->devs, .ndev = s->ndev, .create = s->create };
	struct dst_params p = { .open = cli_incoming_open,
				.user = &in,
				.expect = names,
				.allow_shared_base = s->shared_base,
				.qemu = s->qemu };
	struct xport *x = NULL;
	int lfd, r;

	for (unsigned i = 0; i < s->ndev; i++)
		if (!s->devs[i].readonly)
			names[p.nexpect++] = s->devs[i].name;
	r = xport_listen(listen_on, &lfd, s->incoming_addr, sizeof(s->incoming_addr));
	if (r < 0)
		return err_prefix(-r, "incoming: ");
	r = write_port_file(s);
	if (r == 0)
		r = xport_accept(lfd, -1, cli_cancel_token(), &x);
	close(lfd);
	if (r < 0)
		return err_prefix(-r, "incoming: ");
	r = dst_run(&p, x, cli_cancel_token(), NULL);
	xport_close(x);
	if (r < 0)
		return err_prefix(-r, "incoming migration failed: ");
	fprintf(stderr, "blkmig: serve: incoming migration complete; serving\n");
	return 0;
}

/* ---- control socket -------------------------------------------------------------- */

static void job_event(void *user, const struct mig_stats *st, const char *error)
{
	struct serve *s = user;
	struct ctl *ctl;
	json_object *data = json_object_new_object();

	if (st->state == MIG_COMPLETED) {
		/* The destination owns the devices now: no client may go on
		 * believing it writes here. */
		char reason[512];

		pthread_mutex_lock(&s->lock);
		snprintf(reason, sizeof(reason),
			 "this daemon's devices were migrated to %s: reconnect there",
			 s->migrated_to);
		pthread_mutex_unlock(&s->lock);
		nbds_shutdown(s->nbd, ESHUTDOWN, reason);
	}
	json_object_object_add(data, "status", json_object_new_string(mig_state_name(st->state)));
	json_object_object_add(data, "mode", json_object_new_string(mig_mode_name(st->mode)));
	json_object_object_add(data, "mirroring", json_object_new_boolean(st->active));
	if (st->active && st->mode_reason[0])
		json_object_object_add(data, "mirroring-reason",
				       json_object_new_string(st->mode_reason));
	if (error && *error)
		json_object_object_add(data, "error-desc", json_object_new_string(error));
	/* The control socket's threads may start a migration before
	 * ctl_listen() has returned s->ctl: it is published under s->lock. */
	pthread_mutex_lock(&s->lock);
	ctl = s->ctl;
	pthread_mutex_unlock(&s->lock);
	ctl_event(ctl, "MIGRATION", data); /* ctl NULL: data is freed */
}

static bool get_u64(json_object *args, const char *key, uint64_t *out, char *err, size_t cap)
{
	json_object *v;

	if (!json_object_object_get_ex(args, key, &v))
		return true;
	if (json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0) {
		*out = (uint64_t)json_object_get_int64(v);
		return true;
	}
	if (json_object_is_type(v, json_type_string) &&
	    parse_rate(json_object_get_string(v), out) == 0)
		return true;
	snprintf(err, cap, "'%s' must be a non-negative integer", key);
	return false;
}

static bool get_bool(json_object *args, const char *key, bool *out, char *err, size_t cap)
{
	json_object *v;

	if (!json_object_object_get_ex(args, key, &v))
		return true;
	if (!json_object_is_type(v, json_type_boolean)) {
		snprintf(err, cap, "'%s' must be true or false", key);
		return false;
	}
	*out = json_object_get_boolean(v);
	return true;
}

static json_object *cmd_migrate_ctl(struct serve *s, json_object *args, const char **cls, char *err,
				    size_t cap)
{
	struct src_params p = { .max_bandwidth = s->max_bandwidth,
				.max_downtime_ns = s->max_downtime_ns };
	json_object *v;
	const char *to, *mode = mig_mode_name(s->mode), *format = "native";
	uint64_t ms = s->max_downtime_ns / 1000000u, chunk = 0;

	*cls = "InvalidParameter";
	if (!json_object_object_get_ex(args, "to", &v) ||
	    !json_object_is_type(v, json_type_string)) {
		snprintf(err, cap, "migrate needs 'to': \"HOST:PORT\"");
		return NULL;
	}
	to = json_object_get_string(v);
	if (json_object_object_get_ex(args, "mode", &v))
		mode = json_object_get_string(v);
	if (json_object_object_get_ex(args, "format", &v))
		format = json_object_get_string(v);
	if (!get_bool(args, "shared-base", &p.shared_base, err, cap) ||
	    !get_bool(args, "zero-blocks", &p.zero_blocks, err, cap) ||
	    !get_u64(args, "max-bandwidth", &p.max_bandwidth, err, cap) ||
	    !get_u64(args, "max-downtime", &ms, err, cap) ||
	    !get_u64(args, "chunk-size", &chunk, err, cap))
		return NULL;
	if (mig_mode_parse(mode, &p.mode) < 0) {
		snprintf(err, cap, "%s", err_msg());
		return NULL;
	}
	if (strcmp(format, "qemu") == 0)
		p.qemu = true;
	else if (strcmp(format, "native") != 0) {
		snprintf(err, cap, "unknown format '%s' (native or qemu)", format);
		return NULL;
	}
	if (mig_mode_check(p.mode, p.qemu) < 0) {
		snprintf(err, cap, "%s", err_msg());
		return NULL;
	}
	if (p.qemu && chunk && chunk != WIRE_QEMU_CHUNK_SIZE) {
		snprintf(err, cap, "the QEMU format has 1 MiB chunks");
		return NULL;
	}
	if (chunk && !wire_chunk_size_valid(chunk)) {
		snprintf(err, cap, "'chunk-size' must be a power of two from 4K to 16M");
		return NULL;
	}
	/* A served disk takes random writes: track and resend 64 KiB, not
	 * 1 MiB, unless told otherwise.  QEMU's stream has 1 MiB. */
	p.chunk_size =
	    p.qemu ? WIRE_QEMU_CHUNK_SIZE : (uint32_t)(chunk ? chunk : SERVE_DEFAULT_CHUNK_SIZE);
	p.max_downtime_ns = ms * 1000000u;
	*cls = "GenericError";
	pthread_mutex_lock(&s->lock);
	snprintf(s->migrated_to, sizeof(s->migrated_to), "%s", to);
	pthread_mutex_unlock(&s->lock);
	if (job_start(s->job, to, &p) < 0) {
		snprintf(err, cap, "%s", err_msg());
		return NULL;
	}
	return json_object_new_object();
}

static json_object *query_migrate(struct serve *s)
{
	struct mig_stats st;
	bool started;
	char error[1024];
	json_object *o;

	job_query(s->job, &st, &started, error, sizeof(error));
	if (!started) {
		o = json_object_new_object();
		json_object_object_add(o, "status", json_object_new_string("none"));
		return o;
	}
	return cli_stats_json(&st, error);
}

static json_object *query_exports(struct serve *s)
{
	json_object *a = json_object_new_array();

	for (unsigned i = 0; i < s->ndev; i++) {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "name", json_object_new_string(s->devs[i].name));
		json_object_object_add(e, "path", json_object_new_string(s->devs[i].path));
		json_object_object_add(e, "size",
				       json_object_new_int64((int64_t)blk_size(s->blks[i])));
		json_object_object_add(e, "readonly", json_object_new_boolean(s->devs[i].readonly));
		json_object_array_add(a, e);
	}
	return a;
}

static json_object *handle(void *user, const char *cmd, json_object *args, const char **cls,
			   char *err, size_t cap)
{
	struct serve *s = user;

	if (strcmp(cmd, "migrate") == 0)
		return cmd_migrate_ctl(s, args, cls, err, cap);
	if (strcmp(cmd, "query-migrate") == 0)
		return query_migrate(s);
	if (strcmp(cmd, "migrate-cancel") == 0) {
		job_cancel(s->job);
		return json_object_new_object();
	}
	if (strcmp(cmd, "migrate-set-parameters") == 0) {
		uint64_t bw = s->max_bandwidth, ms = s->max_downtime_ns / 1000000u;
		json_object *mv;
		enum mig_mode m;

		/* Only what is given changes, for the running migration and
		 * the next ones alike. */
		*cls = "InvalidParameter";
		if (!get_u64(args, "max-bandwidth", &bw, err, cap) ||
		    !get_u64(args, "max-downtime", &ms, err, cap))
			return NULL;
		if (json_object_object_get_ex(args, "mode", &mv)) {
			if (mig_mode_parse(json_object_get_string(mv), &m) < 0) {
				snprintf(err, cap, "%s", err_msg());
				return NULL;
			}
			*cls = "GenericError";
			/* Not running: the default for the next migrate. */
			int r = job_set_mode(s->job, m);

			if (r < 0 && r != -ENOENT) {
				snprintf(err, cap, "%s", err_msg());
				return NULL;
			}
			s->mode = m;
		}
		if (json_object_object_get_ex(args, "max-bandwidth", NULL)) {
			s->max_bandwidth = bw;
			job_set_max_bandwidth(s->job, bw);
		}
		if (json_object_object_get_ex(args, "max-downtime", NULL)) {
			s->max_downtime_ns = ms * 1000000u;
			job_set_max_downtime(s->job, s->max_downtime_ns);
		}
		return json_object_new_object();
	}
	if (strcmp(cmd, "query-workload") == 0) {
		struct workload_stats ws;
		json_object *o;
		bool reset = false;

		*cls = "GenericError";
		if (!s->wl) {
			snprintf(err, cap, "no --workload runs in this daemon");
			return NULL;
		}
		if (!get_bool(args, "reset", &reset, err, cap))
			return NULL;
		workload_get_stats(s->wl, &ws);
		if (reset)
			workload_reset_stats(s->wl);
		o = json_object_new_object();
		json_object_object_add(o, "writes", json_object_new_int64((int64_t)ws.writes));
		json_object_object_add(o, "bytes", json_object_new_int64((int64_t)ws.bytes));
		json_object_object_add(o, "latency-p50-us",
				       json_object_new_int64((int64_t)(ws.p50_ns / 1000)));
		json_object_object_add(o, "latency-p99-us",
				       json_object_new_int64((int64_t)(ws.p99_ns / 1000)));
		json_object_object_add(o, "latency-max-us",
				       json_object_new_int64((int64_t)(ws.max_ns / 1000)));
		json_object_object_add(
		    o, "stopped-by",
		    json_object_new_string(ws.stopped_by ? strerror(-ws.stopped_by) : ""));
		return o;
	}
	if (strcmp(cmd, "query-exports") == 0) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "exports", query_exports(s));
		json_object_object_add(o, "nbd", json_object_new_string(s->nbd_addr));
		return o;
	}
	/* QMP clients open with it; there is no capability to negotiate. */
	if (strcmp(cmd, "qmp_capabilities") == 0)
		return json_object_new_object();
	*cls = "CommandNotFound";
	snprintf(err, cap, "unknown command '%s'", cmd);
	return NULL;
}

/* ---- main ------------------------------------------------------------------------- */

static int open_devices(struct serve *s)
{
	for (unsigned i = 0; i < s->ndev; i++) {
		struct cli_device *d = &s->devs[i];
		struct blk *base;
		int r = mark_check(d->path);

		if (r > 0)
			return err_set(EUCLEAN,
				       "%s is marked incomplete (a migration into it did not "
				       "finish): refusing to serve it",
				       d->path);
		r = blk_file_open(d->path, d->readonly ? BLK_OPEN_RDONLY : 0, 0, &base);
		if (r < 0)
			return r;
		r = blk_track_open(base, &s->blks[i]);
		if (r < 0) {
			blk_close(base);
			return r;
		}
		if (!d->readonly)
			s->sdev[s->nsend++] =
			    (struct src_device){ .name = d->name, .blk = s->blks[i] };
	}
	return 0;
}

int cmd_serve(int argc, char **argv)
{
	enum {
		OPT_NBD = 256,
		OPT_CONTROL,
		OPT_INCOMING,
		OPT_FORMAT,
		OPT_WORKLOAD,
		OPT_CREATE,
		OPT_SHARED,
		OPT_PORTFILE
	};
	static const struct option opts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "nbd", required_argument, NULL, OPT_NBD },
		{ "control", required_argument, NULL, OPT_CONTROL },
		{ "incoming", required_argument, NULL, OPT_INCOMING },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "workload", required_argument, NULL, OPT_WORKLOAD },
		{ "create", no_argument, NULL, OPT_CREATE },
		{ "shared-base", no_argument, NULL, OPT_SHARED },
		{ "port-file", required_argument, NULL, OPT_PORTFILE },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct serve s;
	const char *nbd_on = "127.0.0.1:10809", *control = NULL, *incoming = NULL, *workload = NULL;
	struct workload_spec wspec;
	struct workload *wl = NULL;
	int c, r, rc = EXIT_FAIL;

	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.lock, NULL);
	s.max_downtime_ns = SRC_DEFAULT_DOWNTIME_NS;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			r = cli_add_device("serve", optarg, s.devs, &s.ndev);
			if (r)
				return r;
			break;
		case OPT_NBD:
			nbd_on = optarg;
			break;
		case OPT_CONTROL:
			control = optarg;
			break;
		case OPT_INCOMING:
			incoming = optarg;
			break;
		case OPT_FORMAT:
			r = cli_check_format("serve", optarg, true, &s.qemu);
			if (r)
				return r;
			break;
		case OPT_WORKLOAD:
			workload = optarg;
			if (workload_parse(optarg, &wspec) < 0)
				return cli_usage_error("serve", "%s", err_msg());
			break;
		case OPT_CREATE:
			s.create = true;
			break;
		case OPT_SHARED:
			s.shared_base = true;
			break;
		case OPT_PORTFILE:
			s.port_file = optarg;
			break;
		case 'h':
			fputs(serve_help, stdout);
			return EXIT_OK;
		default:
			return cli_usage_error("serve", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
	if (!s.ndev)
		return cli_usage_error("serve", "at least one --device NAME=PATH is required");
	if (s.qemu && s.create)
		return cli_usage_error("serve", "--create needs the native format: a QEMU stream "
						"does not announce device sizes");
	if ((s.create || s.shared_base || s.qemu) && !incoming)
		return cli_usage_error("serve",
				       "--create, --shared-base and --format go with --incoming");
	if (workload) {
		bool found = false;

		for (unsigned i = 0; i < s.ndev; i++)
			found |= strcmp(s.devs[i].name, wspec.name) == 0 && !s.devs[i].readonly;
		if (!found)
			return cli_usage_error("serve",
					       "--workload names '%s', which is not a "
					       "writable --device",
					       wspec.name);
	}
	cli_on_signal(NULL, NULL);

	/* NBD listens from the start, so clients of an incoming daemon hear
	 * why they must wait rather than finding nothing there. */
	r = nbds_new(&s.nbd);
	if (r == 0 && incoming)
		nbds_refuse(s.nbd, "an incoming migration is in progress: the exports are served "
				   "once it is complete");
	if (r == 0)
		r = nbds_listen(s.nbd, nbd_on, s.nbd_addr, sizeof(s.nbd_addr));
	if (r == 0)
		r = write_port_file(&s);
	if (r < 0) {
		cli_fail("serve: %s", err_msg());
		goto out;
	}
	if (incoming) {
		r = run_incoming(&s, incoming);
		if (r < 0) {
			cli_fail("serve: %s", err_msg());
			goto out;
		}
	}
	r = open_devices(&s);
	for (unsigned i = 0; r == 0 && i < s.ndev; i++)
		r = nbds_add_export(s.nbd, s.devs[i].name, s.blks[i], s.devs[i].readonly);
	if (r == 0)
		r = job_new(s.sdev, s.nsend, job_event, &s, &s.job);
	if (r == 0 && workload) {
		for (unsigned i = 0; i < s.ndev; i++)
			if (strcmp(s.devs[i].name, wspec.name) == 0)
				r = workload_start(&wspec, s.blks[i], &wl);
		s.wl = wl;
	}
	if (r == 0 && control) {
		pthread_mutex_lock(&s.lock);
		r = ctl_listen(control, handle, &s, &s.ctl);
		pthread_mutex_unlock(&s.lock);
	}
	if (r < 0) {
		cli_fail("serve: %s", err_msg());
		goto out;
	}
	nbds_refuse(s.nbd, NULL);

	cancel_sleep(cli_cancel_token(), -1); /* until SIGINT or SIGTERM */
	rc = EXIT_OK;
out:
	/* Reverse order of use: the job (which sends events), the control
	 * socket (whose handlers read the workload), then the writers. */
	job_free(s.job);
	ctl_close(s.ctl);
	workload_stop(wl, NULL);
	nbds_free(s.nbd);
	for (unsigned i = 0; i < s.ndev; i++)
		blk_close(s.blks[i]);
	if (s.port_file)
		unlink(s.port_file);
	pthread_mutex_destroy(&s.lock);
	return rc;
}
