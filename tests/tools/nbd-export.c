/* SPDX-License-Identifier: MIT */
/*
 * nbd-export: serve files over NBD with blkmig's server (src/nbdserver/),
 * so real clients (nbdinfo, nbdcopy, qemu-img, qemu-io) can be pointed at
 * it in interop tests.
 *
 *   nbd-export --listen HOST:PORT [--port-file FILE] [--refuse REASON]
 *              NAME=PATH[,readonly] ...
 *
 * Each file is opened with blk_file_open() (read-only for ",readonly") and
 * exported under NAME.  With port 0 a free port is picked; --port-file
 * then receives it (the port number and a newline, written to FILE.tmp
 * and renamed, so a reader never sees half of it).  --refuse starts with
 * nbds_refuse(REASON) in force; SIGUSR2 lifts it.  SIGUSR1 calls
 * nbds_shutdown(ESHUTDOWN, "nbd-export: shut down by SIGUSR1"), as a
 * migration's switch-over would.  Serves until SIGTERM or SIGINT, then
 * disconnects every client and exits 0.  Exit 1 on a failure, 2 on a
 * usage error, with one line on stderr.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend.h"
#include "common/error.h"
#include "nbdserver/server.h"

#define MAX_EXPORTS 64

static int usage(const char *msg)
{
	fprintf(stderr,
		"nbd-export: %s\n"
		"usage: nbd-export --listen HOST:PORT [--port-file FILE] [--refuse REASON] "
		"NAME=PATH[,readonly] ...\n",
		msg);
	return 2;
}

static int write_port_file(const char *path, const char *bound)
{
	const char *colon = strrchr(bound, ':');
	char tmp[4096];
	FILE *f;

	if (!colon)
		return -EINVAL;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%s\n", colon + 1);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "refuse", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen = NULL, *port_file = NULL, *refuse = NULL;
	struct blk *blks[MAX_EXPORTS] = { NULL };
	struct nbds *srv = NULL;
	char bound[256];
	sigset_t sigs;
	int c, sig, n = 0, rc = 1, r;

	while ((c = getopt_long(argc, argv, "l:p:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen = optarg;
			break;
		case 'p':
			port_file = optarg;
			break;
		case 'r':
			refuse = optarg;
			break;
		case 'h':
			usage("serve files over NBD");
			return 0;
		default:
			return usage("unknown option");
		}
	}
	if (!listen)
		return usage("--listen HOST:PORT is required");
	if (optind >= argc)
		return usage("at least one NAME=PATH is required");
	if (argc - optind > MAX_EXPORTS)
		return usage("too many exports");

	/* Threads inherit this mask, so only sigwait() below sees the signals. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (nbds_new(&srv) < 0) {
		fprintf(stderr, "nbd-export: %s\n", err_msg());
		return 1;
	}
	for (int i = optind; i < argc; i++) {
		char *spec = argv[i], *eq = strchr(spec, '='), *path, *comma;
		bool ro = false;

		if (!eq || eq == spec) {
			rc = usage("exports are NAME=PATH[,readonly]");
			goto out;
		}
		*eq = '\0';
		path = eq + 1;
		comma = strrchr(path, ',');
		if (comma && strcmp(comma, ",readonly") == 0) {
			*comma = '\0';
			ro = true;
		}
		r = blk_file_open(path, ro ? BLK_OPEN_RDONLY : 0, 0, &blks[n]);
		if (r < 0) {
			fprintf(stderr, "nbd-export: %s: %s\n", path, err_msg());
			goto out;
		}
		n++;
		if (nbds_add_export(srv, spec, blks[n - 1], ro) < 0) {
			fprintf(stderr, "nbd-export: %s\n", err_msg());
			goto out;
		}
	}
	if (refuse)
		nbds_refuse(srv, refuse);
	if (nbds_listen(srv, listen, bound, sizeof(bound)) < 0) {
		fprintf(stderr, "nbd-export: %s\n", err_msg());
		goto out;
	}
	if (port_file && (r = write_port_file(port_file, bound)) < 0) {
		fprintf(stderr, "nbd-export: %s: %s\n", port_file, strerror(-r));
		goto out;
	}
	fprintf(stderr, "nbd-export: serving %d export%s on %s\n", n, n == 1 ? "" : "s", bound);

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGUSR1)
			nbds_shutdown(srv, ESHUTDOWN, "nbd-export: shut down by SIGUSR1");
		else if (sig == SIGUSR2)
			nbds_refuse(srv, NULL);
		else
			break;
	}
	rc = 0;
out:
	nbds_free(srv);
	for (int i = 0; i < n; i++)
		blk_close(blks[i]);
	return rc;
}
