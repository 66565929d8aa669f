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
	struct ctl_client *cc = NULL;
	json_object *ret = NULL;
	int c, r;

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
	if (ctl_connect(control, 5000, &cc) < 0)
		return cli_fail("cancel: %s", err_msg());
	r = ctl_call(cc, "migrate-cancel", NULL, &ret, NULL, NULL);
	json_object_put(ret);
	ctl_client_close(cc);
	if (r < 0)
		return cli_fail("cancel: %s", err_msg());
	return EXIT_OK;
}
