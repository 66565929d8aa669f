/* SPDX-License-Identifier: MIT */
/*
 * blkmig: the command-line entry point.  A subcommand is one file
 * (cmd-NAME.c) and one row in the table below.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct cmd commands[] = {
	{ "send", "migrate images that nobody else writes to a receiver", cmd_send },
	{ "receive", "accept one migration into local images", cmd_receive },
	{ "serve", "own images, export them over NBD, obey the control socket", cmd_serve },
	{ "migrate", "ask a serving daemon to migrate its devices live", cmd_migrate },
	{ "status", "show a serving daemon's migration", cmd_status },
	{ "cancel", "cancel a serving daemon's migration", cmd_cancel },
	{ "inspect", "decode a captured migration stream (native or QEMU)", cmd_inspect },
	{ "demo", "live-migrate a 1 GiB image under writes on this host and verify it", cmd_demo },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: blkmig COMMAND [OPTIONS]\n\nCommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n'blkmig COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("blkmig %s\n", BLKMIG_VERSION);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "blkmig: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
