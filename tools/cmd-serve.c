/* SPDX-License-Identifier: MIT */
/*
 * blkmig serve: option parsing for the serving daemon (src/daemon/), which
 * owns the images, exports them over NBD, obeys the control socket and,
 * with --incoming, first receives a migration into them.  This file turns
 * the command line into a struct daemon_config, writes the port file and
 * waits for a signal.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "daemon/daemon.h"
#include "nbdserver/server.h"
#include "workload/workload.h"

static const char serve_help[] =
    "Usage: blkmig serve --device NAME=PATH[,readonly] [--device ...]\n"
    "                    [--nbd HOST:PORT] [--control PATH] [--incoming HOST:PORT]\n"
    "                    [--format native|qemu] [--workload SPEC] [--create]\n"
    "                    [--max-size SIZE] [--shared-base] [--port-file FILE]\n"
    "                    [--max-refused N] [--tls-psk FILE | --tls-creds DIR]\n"
    "                    [--tls-authz ID,...] [--no-tls]\n"
    "                    [--nbd-max-per-peer N] [--nbd-max-unauth N]\n"
    "                    [--nbd-idle-timeout SECONDS] [--retry-for DURATION]\n"
    "                    [--reclaim] [--delta] [--verify-only] [--no-compress]\n"
    "                    [--state-dir DIR] [--cache none|writeback]\n"
    "\n"
    "Own the named images and export each over NBD under its NAME.  Every write\n"
    "goes through dirty tracking, so `blkmig migrate --control PATH --to ...`\n"
    "can move the images live to another `blkmig serve --incoming`.  After a\n"
    "completed migration this daemon answers every NBD request with ESHUTDOWN\n"
    "and closes, so clients reconnect to the destination.\n"
    "\n"
    "  --device NAME=PATH[,readonly][,size=SIZE]\n"
    "                        an image or block device; ',readonly' exports it\n"
    "                        read-only and leaves it out of migrations; with\n"
    "                        --incoming, ',size=SIZE' is the only size a source\n"
    "                        may send for it (and what --create makes)\n"
    "  --nbd HOST:PORT       NBD address (default 127.0.0.1:10809; port 0: any)\n"
    "  --control PATH        control socket (JSON lines, mode 0600)\n"
    "  --incoming HOST:PORT  first receive a migration into the images; NBD clients\n"
    "                        are refused until it is complete and verified\n"
    "  --create              with --incoming: create missing images (never through\n"
    "                        a symlink), marked incomplete from the start; removed\n"
    "                        if the migration fails before anything was written\n"
    "  --max-size SIZE       with --create, the largest image a source may have\n"
    "                        created for a device without size= (default 1T)\n"
    "  --shared-base         with --incoming: accept a shared-base migration\n"
    "  --format native|qemu  incoming stream format; qemu: QEMU 7.2's (migrate\n"
    "                        with blk=true from a -M none QEMU; images must exist)\n"
    "  --workload SPEC       run the built-in writer against a device:\n"
    "                        NAME,bs=SIZE,rate=RATE[,seed=N][,pattern=random|sequential]\n"
    "  --port-file FILE      write 'incoming=PORT' and 'nbd=PORT' lines to FILE as\n"
    "                        each address starts listening\n"
    "  --max-refused N       with --incoming: give up after N refused connections\n"
    "                        (64); each is logged in one line\n"
    "  --retry-for DURATION  with --incoming: when the migration's connection fails,\n"
    "                        wait this long for its source to resume it (60s)\n"
    "  --delta               with --incoming: accept `migrate --delta` (the images\n"
    "                        hold an older copy; only chunks that differ come)\n"
    "  --verify-only         with --incoming: compare the images with a `migrate\n"
    "                        --verify-only` by digest, write nothing, log the\n"
    "                        verdict, then serve them\n"
    "  --no-compress         with --incoming: refuse compressed chunks (a `migrate\n"
    "                        --compress zstd` fails, `--compress auto` sends raw)\n"
    "  --cache none|writeback\n"
    "                        with --incoming: how the migration writes the images:\n"
    "                        writeback (default) through the page cache; none\n"
    "                        bypasses it (O_DIRECT; buffered where the file system\n"
    "                        refuses it, logged in one line).  The NBD exports\n"
    "                        are always buffered\n"
    "  --reclaim             serve images this host handed over to another (their\n"
    "                        hand-over record is removed); refused otherwise\n" CLI_STATE_HELP
	CLI_TLS_HELP "                        TLS covers the incoming migration, the NBD exports,\n"
    "                        and outgoing migrations that name no credentials;\n"
    "                        NBD clients must use it (NBD_OPT_STARTTLS)\n"
    "  --no-tls              listen off loopback without TLS (refused otherwise)\n"
    "  --nbd-max-per-peer N  NBD connections open at once from one address\n"
    "                        (default 16)\n"
    "  --nbd-max-unauth N    NBD connections still in their (TLS) handshake, all\n"
    "                        addresses together; one address may hold half; more\n"
    "                        wait up to 5 s for a slot (default 8)\n"
    "  --nbd-idle-timeout SECONDS\n"
    "                        close an NBD client that sends no request for this long\n"
    "                        (default 0: never; one request must still arrive\n"
    "                        within 120 s)\n"
    "\n"
    "Runs until SIGINT or SIGTERM (a running migration is cancelled first).\n"
    "Exit status: 0 stopped by a signal, 1 failure, 2 usage error.\n";

/* The daemon's lines for the operator. */
static void log_line(void *user, const char *line)
{
	(void)user;
	fprintf(stderr, "blkmig: serve: %s\n", line);
}

/* Write 'incoming=PORT' and 'nbd=PORT' lines to path (atomically). */
static int write_port_file(const char *path, const struct daemon *d)
{
	const char *in = daemon_incoming_addr(d), *nbd = daemon_nbd_addr(d);
	char text[128];
	int r;

	snprintf(text, sizeof(text), "%s%s%snbd=%s\n", in[0] ? "incoming=" : "",
		 in[0] ? strrchr(in, ':') + 1 : "", in[0] ? "\n" : "", strrchr(nbd, ':') + 1);
	r = cli_write_file(path, text);
	return r < 0 ? err_prefix(-r, "--port-file: ") : 0;
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
		OPT_PORTFILE,
		OPT_MAXREFUSED,
		OPT_MAXSIZE,
		OPT_MAX_PER_PEER,
		OPT_MAX_UNAUTH,
		OPT_IDLE_TIMEOUT,
		OPT_RETRY,
		OPT_RECLAIM,
		OPT_DELTA,
		OPT_VERIFY,
		OPT_NO_COMPRESS,
		OPT_CACHE,
	};
	static const struct option opts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "nbd", required_argument, NULL, OPT_NBD },
		{ "control", required_argument, NULL, OPT_CONTROL },
		{ "incoming", required_argument, NULL, OPT_INCOMING },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "workload", required_argument, NULL, OPT_WORKLOAD },
		{ "create", no_argument, NULL, OPT_CREATE },
		{ "max-size", required_argument, NULL, OPT_MAXSIZE },
		{ "shared-base", no_argument, NULL, OPT_SHARED },
		{ "port-file", required_argument, NULL, OPT_PORTFILE },
		{ "max-refused", required_argument, NULL, OPT_MAXREFUSED },
		{ "nbd-max-per-peer", required_argument, NULL, OPT_MAX_PER_PEER },
		{ "nbd-max-unauth", required_argument, NULL, OPT_MAX_UNAUTH },
		{ "nbd-idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
		{ "retry-for", required_argument, NULL, OPT_RETRY },
		{ "reclaim", no_argument, NULL, OPT_RECLAIM },
		{ "delta", no_argument, NULL, OPT_DELTA },
		{ "verify-only", no_argument, NULL, OPT_VERIFY },
		{ "no-compress", no_argument, NULL, OPT_NO_COMPRESS },
		{ "cache", required_argument, NULL, OPT_CACHE },
		CLI_STATE_OPTION,
		CLI_TLS_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct cli_device devs[CLI_MAX_DEVICES];
	struct daemon_device ddevs[CLI_MAX_DEVICES];
	struct daemon_config cfg = { .devs = ddevs,
				     .cancel = cli_cancel_token(),
				     .log = log_line,
				     .retry_ns = DAEMON_DEFAULT_RETRY_MS * 1000000ull };
	struct workload_spec wspec;
	uint64_t v;
	struct daemon *d = NULL;
	const char *port_file = NULL;
	struct cli_tls tls = { 0 };
	unsigned ndev = 0;
	bool wrote_port_file = false;
	int c, r, rc = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			r = cli_add_device("serve", optarg, devs, &ndev);
			if (r)
				return r;
			break;
		case OPT_NBD:
			cfg.nbd = optarg;
			break;
		case OPT_CONTROL:
			cfg.control = optarg;
			break;
		case OPT_INCOMING:
			cfg.incoming = optarg;
			break;
		case OPT_FORMAT:
			r = cli_check_format("serve", optarg, true, &cfg.qemu);
			if (r)
				return r;
			break;
		case OPT_WORKLOAD:
			if (workload_parse(optarg, &wspec) < 0)
				return cli_usage_error("serve", "%s", err_msg());
			cfg.workload = &wspec;
			break;
		case OPT_CREATE:
			cfg.create = true;
			break;
		case OPT_SHARED:
			cfg.shared_base = true;
			break;
		case OPT_MAXSIZE:
			if (parse_size(optarg, &cfg.max_size) < 0 || cfg.max_size == 0)
				return cli_usage_error("serve",
						       "--max-size: '%s' is not a size above 0 "
						       "(like 1T)",
						       optarg);
			break;
		case OPT_PORTFILE:
			port_file = optarg;
			break;
		case OPT_RETRY:
			if (parse_duration(optarg, &cfg.retry_ns) < 0)
				return cli_usage_error("serve", "--retry-for: %s", err_msg());
			break;
		case OPT_RECLAIM:
			cfg.reclaim = true;
			break;
		case OPT_DELTA:
			cfg.delta = true;
			break;
		case OPT_VERIFY:
			cfg.verify_only = true;
			break;
		case OPT_NO_COMPRESS:
			cfg.no_compress = true;
			break;
		case OPT_CACHE:
			r = cli_parse_cache("serve", optarg, &cfg.cache_none);
			if (r)
				return r;
			break;
		case OPT_MAXREFUSED:
			r = cli_parse_uint("serve", "--max-refused", optarg, 1, 100000, &v);
			if (r)
				return r;
			cfg.max_refused = (unsigned)v;
			break;
		case OPT_MAX_PER_PEER:
		case OPT_MAX_UNAUTH:
			r = cli_parse_uint("serve",
					   c == OPT_MAX_PER_PEER ? "--nbd-max-per-peer"
								 : "--nbd-max-unauth",
					   optarg, 1, NBDS_MAX_CLIENTS, &v);
			if (r)
				return r;
			if (c == OPT_MAX_PER_PEER)
				cfg.nbd_max_per_peer = (unsigned)v;
			else
				cfg.nbd_max_unauth = (unsigned)v;
			break;
		case OPT_IDLE_TIMEOUT:
			r = cli_parse_uint("serve", "--nbd-idle-timeout", optarg, 0, 24 * 3600, &v);
			if (r)
				return r;
			cfg.nbd_idle_timeout_ms = v ? (int)v * 1000 : -1;
			break;
		case 'h':
			fputs(serve_help, stdout);
			return EXIT_OK;
		default:
			if (cli_state_option(c, optarg))
				break;
			if (cli_tls_option(c, optarg, &tls))
				break;
			return cli_usage_error("serve", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
	if (!ndev)
		return cli_usage_error("serve", "at least one --device NAME=PATH is required");
	for (unsigned i = 0; i < ndev; i++)
		ddevs[i] = (struct daemon_device){ .name = devs[i].name,
						   .path = devs[i].path,
						   .readonly = devs[i].readonly,
						   .size = devs[i].size };
	cfg.ndev = ndev;
	cli_on_signal(NULL, NULL);

	if (daemon_check_config(&cfg) < 0)
		return cli_usage_error("serve", "%s", err_msg());
	/* Both listeners can write the disks: off loopback, TLS or --no-tls.
	 * The daemon loads the credentials (and says what is wrong with
	 * them). */
	r = cli_tls_check("serve", &tls, cfg.nbd ? cfg.nbd : "127.0.0.1:10809", TLS_SERVER);
	if (r == 0 && cfg.incoming)
		r = cli_tls_check("serve", &tls, cfg.incoming, TLS_SERVER);
	if (r)
		return r;
	cfg.tls = tls.o;
	r = daemon_new(&cfg, &d);
	if (r == 0 && port_file) {
		r = write_port_file(port_file, d);
		wrote_port_file = r == 0;
	}
	if (r == 0)
		r = daemon_start(d);
	if (r < 0) {
		cli_fail("serve: %s", err_msg());
		goto out;
	}
	if (cfg.incoming)
		fprintf(stderr, "blkmig: serve: incoming migration complete; serving\n");
	cancel_sleep(cli_cancel_token(), -1); /* until SIGINT or SIGTERM */
	rc = EXIT_OK;
out:
	daemon_free(d);
	if (wrote_port_file)
		unlink(port_file);
	return rc;
}
