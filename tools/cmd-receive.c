/* SPDX-License-Identifier: MIT */
/*
 * blkmig receive: accept exactly one migration into the named images and
 * exit 0 only once it is complete, durable and verified.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backend.h"
#include "cli.h"
#include "common/error.h"
#include "common/util.h"
#include "migrate/incoming.h"
#include "transport/transport.h"

static const char receive_help[] =
    "Usage: blkmig receive --listen HOST:PORT --device NAME=PATH [--device ...]\n"
    "                      [--format native|qemu] [--create] [--max-size SIZE]\n"
    "                      [--shared-base] [--port-file FILE] [--max-refused N]\n"
    "                      [--tls-psk FILE | --tls-creds DIR] [--tls-authz ID,...]\n"
    "                      [--no-tls] [--timeout SECONDS] [--retry-for DURATION]\n"
    "                      [--delta] [--verify-only] [--no-compress]\n"
    "                      [--cache none|writeback] [--max-connections N]\n"
    "                      [--state-dir DIR] [--json]\n"
    "\n"
    "Accept one migration from `blkmig send` and write it into the named images.\n"
    "Every record is checked before anything is written; each pass is made\n"
    "durable and read back; the images are marked incomplete (xattr\n"
    "user.blkmig.incomplete, or a PATH.blkmig-incomplete file; a block device's\n"
    "in --state-dir) until every chunk has arrived, the digests match the\n"
    "source's and the source has handed the devices over.\n"
    "\n"
    "A connection that fails its TLS handshake, is not authorised, or whose\n"
    "handshake is malformed or refused before anything was written is logged in\n"
    "one line and the wait for the real source goes on.\n"
    "\n"
    "  --listen HOST:PORT    address to accept the migration on (port 0: any free)\n"
    "  --device NAME=PATH[,size=SIZE]\n"
    "                        where the source's device NAME goes; with size=, the\n"
    "                        source must send exactly SIZE bytes for it, and\n"
    "                        --create makes it that size\n"
    "  --format native|qemu  stream format: native (from blkmig send), or qemu:\n"
    "                        QEMU 7.2's migration stream, from a QEMU migrating\n"
    "                        with blk=true (the images must exist: no --create)\n"
    "  --create              create missing images (never through a symlink), marked\n"
    "                        incomplete from the start, with the device's size= or\n"
    "                        else the size the source sends; removed again if the\n"
    "                        migration fails before anything was written to them\n"
    "  --max-size SIZE       with --create, the largest image a source may have\n"
    "                        created for a device without size= (default 1T)\n"
    "  --shared-base         accept a `send --shared-base` migration: only the\n"
    "                        source's allocated data comes; the images must\n"
    "                        already hold the base (refused without this flag)\n"
    "  --delta               accept a `send --delta`: the images hold an older copy;\n"
    "                        only chunks whose digests differ are sent\n"
    "  --verify-only         compare the images with a `send --verify-only` by\n"
    "                        digest, write nothing (exit 0 identical, 1 not)\n"
    "  --no-compress         refuse compressed chunks: a `send --compress zstd` is\n"
    "                        refused at its handshake, `--compress auto` sends raw\n"
    "  --retry-for DURATION  when the migration's connection fails, wait this long\n"
    "                        for the source to reconnect and resume (default 60s;\n"
    "                        0: fail at once)\n"
    "  --max-connections N   the most TCP connections a source may stripe its\n"
    "                        stream over (send --connections), 1..16 (default 8)\n"
    "  --port-file FILE      write the port actually listened on to FILE\n" CLI_CACHE_HELP
	CLI_STATE_HELP
    "  --max-refused N       give up after N refused connections (64)\n" CLI_TLS_HELP
    "  --no-tls              listen off loopback without TLS (refused otherwise)\n"
    "  --timeout SECONDS     give up when the connection is idle this long (120);\n"
    "                        the wait for the source to connect is not limited\n"
    "  --json                print a JSON report on stdout at the end\n"
    "\n"
    "Exit status: 0 migration complete and verified, 1 failed (one line on stderr\n"
    "says why), 2 usage error.\n";

static void log_refused(void *user, const char *line)
{
	(void)user;
	fprintf(stderr, "blkmig: receive: %s\n", line);
}

int cmd_receive(int argc, char **argv)
{
	enum {
		OPT_CREATE = 256,
		OPT_PORTFILE,
		OPT_TIMEOUT,
		OPT_JSON,
		OPT_FORMAT,
		OPT_SHARED,
		OPT_MAXREFUSED,
		OPT_MAXSIZE,
		OPT_RETRY,
		OPT_DELTA,
		OPT_VERIFY,
		OPT_NO_COMPRESS,
		OPT_CACHE,
		OPT_MAXCONN
	};
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "device", required_argument, NULL, 'd' },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "create", no_argument, NULL, OPT_CREATE },
		{ "max-size", required_argument, NULL, OPT_MAXSIZE },
		{ "shared-base", no_argument, NULL, OPT_SHARED },
		{ "port-file", required_argument, NULL, OPT_PORTFILE },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "max-refused", required_argument, NULL, OPT_MAXREFUSED },
		{ "retry-for", required_argument, NULL, OPT_RETRY },
		{ "delta", no_argument, NULL, OPT_DELTA },
		{ "verify-only", no_argument, NULL, OPT_VERIFY },
		{ "no-compress", no_argument, NULL, OPT_NO_COMPRESS },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "max-connections", required_argument, NULL, OPT_MAXCONN },
		CLI_STATE_OPTION,
		CLI_TLS_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_device devs[CLI_MAX_DEVICES];
	const char *names[CLI_MAX_DEVICES];
	const char *listen_on = NULL, *port_file = NULL;
	struct cli_incoming ctx = { .devs = devs };
	struct dst_params p = { .open = cli_incoming_open, .user = &ctx, .expect = names };
	struct mig_stats st = { 0 };
	struct incoming_params ip = { .log = log_refused, .retry_ns = 60 * 1000000000ull };
	struct cli_tls tls = { 0 };
	struct tls_creds *creds = NULL;
	long timeout_s = XPORT_DEFAULT_TIMEOUT_MS / 1000;
	bool json = false, qemu = false;
	uint64_t v;
	char bound[128];
	int c, r, lfd = -1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_on = optarg;
			break;
		case 'd':
			r = cli_add_device("receive", optarg, devs, &ctx.ndev);
			if (r)
				return r;
			if (devs[ctx.ndev - 1].readonly)
				return cli_usage_error("receive",
						       "a receiving device cannot be "
						       "read-only: %s",
						       optarg);
			names[ctx.ndev - 1] = devs[ctx.ndev - 1].name;
			break;
		case OPT_FORMAT:
			r = cli_check_format("receive", optarg, true, &qemu);
			p.format = qemu ? MIG_FORMAT_QEMU : MIG_FORMAT_NATIVE;
			if (r)
				return r;
			break;
		case OPT_CREATE:
			ctx.create = true;
			break;
		case OPT_SHARED:
			p.allow_shared_base = true;
			break;
		case OPT_MAXSIZE:
			if (parse_size(optarg, &ctx.max_size) < 0 || ctx.max_size == 0)
				return cli_usage_error("receive",
						       "--max-size: '%s' is not a size above 0 "
						       "(like 1T)",
						       optarg);
			break;
		case OPT_PORTFILE:
			port_file = optarg;
			break;
		case OPT_TIMEOUT:
			r = cli_parse_uint("receive", "--timeout", optarg, 1, 86400, &v);
			if (r)
				return r;
			timeout_s = (long)v;
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_MAXREFUSED:
			r = cli_parse_uint("receive", "--max-refused", optarg, 1, 100000, &v);
			if (r)
				return r;
			ip.max_failures = (unsigned)v;
			break;
		case OPT_RETRY:
			if (parse_duration(optarg, &ip.retry_ns) < 0)
				return cli_usage_error("receive", "--retry-for: %s", err_msg());
			break;
		case OPT_DELTA:
			p.allow_delta = true;
			break;
		case OPT_VERIFY:
			p.verify_only = true;
			break;
		case OPT_NO_COMPRESS:
			p.no_compress = true;
			break;
		case OPT_CACHE:
			r = cli_parse_cache("receive", optarg, &ctx.cache_none);
			if (r)
				return r;
			break;
		case OPT_MAXCONN:
			r = cli_parse_uint("receive", "--max-connections", optarg, 1,
					   MIG_CONNECTIONS_MAX, &v);
			if (r)
				return r;
			p.max_connections = (unsigned)v;
			break;
		case 'h':
			fputs(receive_help, stdout);
			return EXIT_OK;
		default:
			if (cli_state_option(c, optarg))
				break;
			if (cli_tls_option(c, optarg, &tls))
				break;
			return cli_usage_error("receive", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("receive", "unexpected argument '%s'", argv[optind]);
	if (!listen_on)
		return cli_usage_error("receive", "--listen HOST:PORT is required");
	if (!ctx.ndev)
		return cli_usage_error("receive", "at least one --device NAME=PATH is required");
	p.nexpect = ctx.ndev;
	if (ctx.max_size && !ctx.create)
		return cli_usage_error("receive", "--max-size goes with --create");
	if (qemu && (p.allow_delta || p.verify_only))
		return cli_usage_error("receive", "--%s needs the native format",
				       p.allow_delta ? "delta" : "verify-only");
	if (p.verify_only && (ctx.create || p.allow_delta))
		return cli_usage_error("receive", "--verify-only writes nothing: it goes with "
						  "neither --create nor --delta");
	if (qemu)
		ip.retry_ns = 0; /* QEMU does not reconnect */
	if (qemu && ctx.create)
		return cli_usage_error("receive", "--create needs the native format: a QEMU stream "
						  "does not announce device sizes");
	/* Two names on one image would have each overwrite the other. */
	for (unsigned i = 0; i < ctx.ndev; i++) {
		struct stat a, b;

		for (unsigned k = 0; k < i; k++) {
			bool same = strcmp(devs[i].path, devs[k].path) == 0;

			if (!same && stat(devs[i].path, &a) == 0 && stat(devs[k].path, &b) == 0)
				same = a.st_dev == b.st_dev && a.st_ino == b.st_ino;
			if (same)
				return cli_usage_error("receive",
						       "devices %s and %s are the same "
						       "image",
						       devs[k].name, devs[i].name);
		}
	}

	r = cli_tls_setup("receive", &tls, listen_on, TLS_SERVER, &creds);
	if (r)
		return r;

	cli_on_signal(NULL, NULL);
	r = xport_listen(listen_on, &lfd, bound, sizeof(bound));
	if (r < 0) {
		tls_creds_free(creds);
		return cli_fail("receive: %s", err_msg());
	}
	if (port_file) {
		const char *colon = strrchr(bound, ':');
		char text[sizeof(bound) + 2];

		snprintf(text, sizeof(text), "%s\n", colon ? colon + 1 : bound);
		if (cli_write_file(port_file, text) < 0) {
			close(lfd);
			tls_creds_free(creds);
			return cli_fail("receive: --port-file: %s", err_msg());
		}
	}
	ip.lfd = lfd;
	ip.tls = creds;
	ip.timeout_ms = (int)(timeout_s * 1000);
	r = incoming_run(&p, &ip, cli_cancel_token(), &st);
	close(lfd);
	tls_creds_free(creds);
	if (json)
		cli_print_json(stdout, &st, r < 0 ? err_msg() : NULL, NULL);
	else if (r == 0 && p.verify_only)
		printf("identical: %llu bytes compared\n", (unsigned long long)st.total);
	else if (r == 0)
		cli_print_summary(stdout, "received", &st);
	if (r < 0)
		return cli_fail("receive: %s", err_msg());
	return EXIT_OK;
}
