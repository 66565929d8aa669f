/* SPDX-License-Identifier: MIT */
/*
 * blkmig migrate: ask a serving daemon (over its control socket) to migrate
 * its devices live to another daemon's --incoming address; with --wait,
 * follow the migration to its end and report like `send`.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <string.h>

#include "cli.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"
#include "migrate/migrate.h"

static const char migrate_help[] =
    "Usage: blkmig migrate --control PATH --to HOST:PORT [--shared-base] [--zero-blocks]\n"
    "                      [--max-downtime MS] [--max-bandwidth RATE]\n"
    "                      [--mode auto|dirty|active] [--mirror-share PCT]\n"
    "                      [--chunk-size SIZE]\n"
    "                      [--format native|qemu] [--wait] [--json]\n"
    "                      [--tls-psk FILE | --tls-creds DIR [--tls-hostname NAME]]\n"
    "                      [--tls-authz ID,...] [--retry-for DURATION] [--resume]\n"
    "                      [--delta] [--verify-only] [--compress off|zstd[:LEVEL]|auto]\n"
    "                      [--connections N]\n"
    "                      [--after forward|refuse] [--forward-to HOST:PORT]\n"
    "\n"
    "Start a live migration of a `blkmig serve` daemon's devices to another\n"
    "daemon's --incoming address.  Without --wait it returns once the migration\n"
    "has started; `blkmig status` follows it.\n"
    "\n"
    "  --control PATH        the source daemon's control socket\n"
    "  --to HOST:PORT        the destination daemon's --incoming address\n"
    "  --shared-base         send only allocated data (the destination holds the\n"
    "                        base; start it with --shared-base)\n"
    "  --zero-blocks         send all-zero chunks as a flag\n" CLI_COMPRESS_HELP
    "  --max-downtime MS     longest pause for writers (default 300)\n"
    "  --max-bandwidth RATE  cap the stream, e.g. 100M (per second); the final\n"
    "                        pass, writers paused, runs uncapped\n"
    "  --connections N       stripe the stream over N TCP connections, 1..16\n"
    "                        (default 1), for a long fat link one cannot fill\n"
    "  --mode MODE           how to keep up with writes made meanwhile:\n"
    "                        dirty: resend passes until the rest fits the downtime\n"
    "                        active: once a chunk is copied, send each write to it\n"
    "                        as part of the write (write-blocking mirror)\n"
    "                        auto (default): dirty, then active when passes stop\n"
    "                        shrinking what is left\n"
    "  --mirror-share PCT    with --max-bandwidth, the share of it that mirrored\n"
    "                        writes may take, 10..90 (default 50); the passes keep\n"
    "                        the rest.  More: writers wait less for the link, and\n"
    "                        the copy takes longer while they write\n"
    "  --chunk-size SIZE     tracking and resend granularity, 4K..16M power of two\n"
    "                        (default 64K; the QEMU format has 1M)\n"
    "  --format native|qemu  stream format; qemu: to a -M none QEMU 7.2 started with\n"
    "                        -incoming (QEMU cannot confirm success: check its\n"
    "                        query-migrate)\n"
    "  --retry-for DURATION  after a dropped or stalled connection, reconnect and\n"
    "                        resume for this long (default 60s; 0: never)\n"
    "  --resume              continue the last migration, which had given up: the\n"
    "                        destination offers what it holds, only the rest is sent\n"
    "  --delta               the destination holds an older copy: send only chunks\n"
    "                        whose digests differ\n"
    "  --verify-only         compare with a `serve --incoming --verify-only` by digest\n"
    "                        while the devices stay in use; nothing is written or\n"
    "                        handed over (with --wait: exit 0 identical, 1 not)\n"
    "  --after forward|refuse  what the daemon's NBD clients get once the\n"
    "                        destination has taken over: forward (default): their\n"
    "                        requests, and those of clients connecting later, are\n"
    "                        relayed to the destination's export of the same name,\n"
    "                        so they see a pause, not an error; refuse: every\n"
    "                        request fails (ESHUTDOWN) with where to reconnect\n"
    "  --forward-to HOST:PORT  the destination's NBD server (default: the address\n"
    "                        the destination announces)\n"
    "  --wait                wait for the end; exit 0 only if it completed\n"
    "  --json                with --wait: print the final report as JSON\n" CLI_TLS_HELP
    "  --tls-hostname NAME   the destination's name in its certificate (default:\n"
    "                        the host of --to)\n"
    "  Without --tls-* options the daemon's own (serve --tls-*) are used, if any.\n"
    "  Paths are read by the daemon.\n";

static bool terminal(const char *status)
{
	return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
	       strcmp(status, "cancelled") == 0;
}

int cmd_migrate(int argc, char **argv)
{
	enum {
		OPT_SHARED = 256,
		OPT_ZERO,
		OPT_DOWNTIME,
		OPT_BW,
		OPT_MODE,
		OPT_SHARE,
		OPT_CHUNK,
		OPT_FORMAT,
		OPT_WAIT,
		OPT_JSON,
		OPT_RETRY,
		OPT_RESUME,
		OPT_DELTA,
		OPT_VERIFY,
		OPT_AFTER,
		OPT_FORWARD_TO,
		OPT_COMPRESS,
		OPT_CONNECTIONS
	};
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "to", required_argument, NULL, 't' },
		{ "shared-base", no_argument, NULL, OPT_SHARED },
		{ "zero-blocks", no_argument, NULL, OPT_ZERO },
		{ "max-downtime", required_argument, NULL, OPT_DOWNTIME },
		{ "max-bandwidth", required_argument, NULL, OPT_BW },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "mirror-share", required_argument, NULL, OPT_SHARE },
		{ "chunk-size", required_argument, NULL, OPT_CHUNK },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "wait", no_argument, NULL, OPT_WAIT },
		{ "retry-for", required_argument, NULL, OPT_RETRY },
		{ "resume", no_argument, NULL, OPT_RESUME },
		{ "delta", no_argument, NULL, OPT_DELTA },
		{ "verify-only", no_argument, NULL, OPT_VERIFY },
		{ "compress", required_argument, NULL, OPT_COMPRESS },
		{ "after", required_argument, NULL, OPT_AFTER },
		{ "forward-to", required_argument, NULL, OPT_FORWARD_TO },
		{ "connections", required_argument, NULL, OPT_CONNECTIONS },
		{ "json", no_argument, NULL, OPT_JSON },
		CLI_TLS_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *control = NULL, *to = NULL;
	struct cli_tls tls = { 0 };
	json_object *args = json_object_new_object(), *ret = NULL;
	struct ctl_client *cc = NULL;
	bool wait = false, json = false, qemu = false;
	uint64_t v;
	int c, r, rc = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			control = optarg;
			break;
		case 't':
			to = optarg;
			break;
		case OPT_SHARED:
			json_object_object_add(args, "shared-base", json_object_new_boolean(1));
			break;
		case OPT_ZERO:
			json_object_object_add(args, "zero-blocks", json_object_new_boolean(1));
			break;
		case OPT_DOWNTIME:
			r = cli_parse_uint("migrate", "--max-downtime", optarg, 0, 3600 * 1000, &v);
			if (r)
				goto usage;
			json_object_object_add(args, "max-downtime",
					       json_object_new_int64((int64_t)v));
			break;
		case OPT_BW:
			if (parse_rate(optarg, &v) < 0) {
				r = cli_usage_error("migrate", "--max-bandwidth: %s", err_msg());
				goto usage;
			}
			json_object_object_add(args, "max-bandwidth",
					       json_object_new_int64((int64_t)v));
			break;
		case OPT_MODE: {
			enum mig_mode m;

			if (mig_mode_parse(optarg, &m) < 0) {
				r = cli_usage_error("migrate", "--mode: %s", err_msg());
				goto usage;
			}
			json_object_object_add(args, "mode", json_object_new_string(optarg));
			break;
		}
		case OPT_SHARE: {
			unsigned pct;

			if (mig_mirror_share_parse(optarg, &pct) < 0) {
				r = cli_usage_error("migrate", "--mirror-share: %s", err_msg());
				goto usage;
			}
			json_object_object_add(args, "mirror-share", json_object_new_int64(pct));
			break;
		}
		case OPT_CHUNK:
			if (parse_size(optarg, &v) < 0 || !wire_chunk_size_valid(v)) {
				r = cli_usage_error("migrate",
						    "--chunk-size must be a power of two from 4K "
						    "to 16M, not '%s'",
						    optarg);
				goto usage;
			}
			json_object_object_add(args, "chunk-size",
					       json_object_new_int64((int64_t)v));
			break;
		case OPT_FORMAT:
			r = cli_check_format("migrate", optarg, true, &qemu);
			if (r)
				goto usage;
			if (qemu)
				json_object_object_add(args, "format",
						       json_object_new_string("qemu"));
			break;
		case OPT_WAIT:
			wait = true;
			break;
		case OPT_COMPRESS: {
			enum mig_compress cm;
			int level;

			if (mig_compress_parse(optarg, &cm, &level) < 0) {
				r = cli_usage_error("migrate", "--compress: %s", err_msg());
				goto usage;
			}
			json_object_object_add(args, "compress", json_object_new_string(optarg));
			break;
		}
		case OPT_CONNECTIONS:
			r = cli_parse_uint("migrate", "--connections", optarg, 1,
					   MIG_CONNECTIONS_MAX, &v);
			if (r)
				goto usage;
			json_object_object_add(args, "connections",
					       json_object_new_int64((int64_t)v));
			break;
		case OPT_RETRY:
			if (parse_duration(optarg, &v) < 0) {
				r = cli_usage_error("migrate", "--retry-for: %s", err_msg());
				goto usage;
			}
			json_object_object_add(args, "retry-for",
					       json_object_new_int64((int64_t)(v / 1000000u)));
			break;
		case OPT_RESUME:
			json_object_object_add(args, "resume", json_object_new_boolean(1));
			break;
		case OPT_DELTA:
			json_object_object_add(args, "delta", json_object_new_boolean(1));
			break;
		case OPT_VERIFY:
			json_object_object_add(args, "verify-only", json_object_new_boolean(1));
			break;
		case OPT_AFTER:
			if (strcmp(optarg, "forward") != 0 && strcmp(optarg, "refuse") != 0) {
				r = cli_usage_error(
				    "migrate", "--after takes forward or refuse, not '%s'", optarg);
				goto usage;
			}
			json_object_object_add(args, "after", json_object_new_string(optarg));
			break;
		case OPT_FORWARD_TO:
			if (!strchr(optarg, ':')) {
				r = cli_usage_error(
				    "migrate", "--forward-to takes HOST:PORT, not '%s'", optarg);
				goto usage;
			}
			json_object_object_add(args, "forward-to", json_object_new_string(optarg));
			break;
		case OPT_JSON:
			json = true;
			break;
		case 'h':
			fputs(migrate_help, stdout);
			json_object_put(args);
			return EXIT_OK;
		default:
			if (cli_tls_option(c, optarg, &tls))
				break;
			r = cli_usage_error("migrate", "invalid option");
			goto usage;
		}
	}
	r = EXIT_USAGE;
	if (optind < argc) {
		cli_usage_error("migrate", "unexpected argument '%s'", argv[optind]);
		goto usage;
	}
	if (!control || !to) {
		cli_usage_error("migrate", "--control PATH and --to HOST:PORT are required");
		goto usage;
	}
	json_object_object_add(args, "to", json_object_new_string(to));
	if (tls.no_tls) {
		cli_usage_error("migrate", "--no-tls is for listeners");
		goto usage;
	}
	if (tls.o.psk_file && tls.o.x509_dir) {
		cli_usage_error("migrate", "--tls-psk and --tls-creds exclude each other");
		goto usage;
	}
	/* The daemon reads the files, from its own working directory. */
	for (int i = 0; i < 2; i++) {
		const char *path = i ? tls.o.x509_dir : tls.o.psk_file;
		char *abs;

		if (!path)
			continue;
		abs = realpath(path, NULL);
		if (!abs) {
			r = cli_fail("migrate: %s: %s", path, strerror(errno));
			goto usage;
		}
		json_object_object_add(args, i ? "tls-creds" : "tls-psk",
				       json_object_new_string(abs));
		free(abs);
	}
	if (tls.o.authz)
		json_object_object_add(args, "tls-authz", json_object_new_string(tls.o.authz));
	if (tls.o.hostname)
		json_object_object_add(args, "tls-hostname",
				       json_object_new_string(tls.o.hostname));

	if (ctl_connect(control, 5000, &cc) < 0) {
		json_object_put(args);
		return cli_fail("migrate: %s", err_msg());
	}
	r = ctl_call(cc, "migrate", args, &ret, NULL, NULL);
	args = NULL;
	json_object_put(ret);
	ret = NULL;
	if (r < 0) {
		cli_fail("migrate: %s", err_msg());
		goto out;
	}
	if (!wait) {
		rc = EXIT_OK;
		goto out;
	}
	cli_on_signal(NULL, NULL);
	for (;;) {
		json_object *status;
		const char *st;

		r = ctl_call(cc, "query-migrate", NULL, &ret, NULL, NULL);
		if (r < 0) {
			cli_fail("migrate: %s", err_msg());
			goto out;
		}
		st = json_object_object_get_ex(ret, "status", &status)
			 ? json_object_get_string(status)
			 : "unknown";
		if (terminal(st))
			break;
		json_object_put(ret);
		ret = NULL;
		if (cli_signalled()) {
			/* Interrupting the waiting client cancels the migration
			 * it started. */
			ctl_call(cc, "migrate-cancel", NULL, &ret, NULL, NULL);
			json_object_put(ret);
			ret = NULL;
		}
		sleep_ns(100 * 1000000ull);
	}
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN));
	} else {
		json_object *o;

		if (json_object_object_get_ex(ret, "total-time", &o))
			printf("migration %s in %.2f s, downtime %lld ms\n",
			       json_object_get_string(json_object_object_get(ret, "status")),
			       (double)json_object_get_int64(o) / 1000,
			       (long long)json_object_get_int64(
				   json_object_object_get(ret, "downtime")));
	}
	{
		json_object *status = json_object_object_get(ret, "status"),
			    *desc = json_object_object_get(ret, "error-desc");

		if (strcmp(json_object_get_string(status), "completed") == 0)
			rc = EXIT_OK;
		else
			cli_fail("migrate: migration %s: %s", json_object_get_string(status),
				 desc ? json_object_get_string(desc) : "no reason given");
	}
out:
	json_object_put(ret);
	json_object_put(args);
	ctl_client_close(cc);
	return rc;
usage:
	json_object_put(args);
	return r;
}
