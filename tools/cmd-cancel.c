/* SPDX-License-Identifier: MIT */
/* blkmig cancel: cancel a serving daemon's running migration. */
#include <getopt.h>
#include <json-c/json.h>

#include "cli.h"
#include "common/error.h"
#include "control/control.h"

static const char cancel_help[] =
    "Usage: blkmig cancel --control PATH\n"
    "\n"
    "Cancel the daemon's running migration.  Its clients carry on against it as\n"
    "if nothing happened; the destination is left marked incomplete.  A no-op\n"
    "when no migration runs.\n";

int cmd_cancel(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *control = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			control = optarg;
			break;
		case 'h':
			fputs(cancel_help, stdout);
			return EXIT_OK;
		default:
			return cli_usage_error("cancel", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("cancel", "unexpected argument '%s'", argv[optind]);
	if (!control)
		return cli_usage_error("cancel", "--control PATH is required");
	return cli_control_call("cancel", control, "migrate-cancel", NULL, NULL);
}
