/* SPDX-License-Identifier: MIT */
/* blkmig status: show a serving daemon's migration (query-migrate). */
#include <getopt.h>
#include <json-c/json.h>
#include <string.h>

#include "cli.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"

static const char status_help[] =
    "Usage: blkmig status --control PATH [--json]\n"
    "\n"
    "Show the state of the daemon's current or last migration: status, bytes\n"
    "sent and remaining, passes, bandwidth, expected and actual downtime.\n"
    "With --json, print the query-migrate object as is.\n";

static long long field(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? (long long)json_object_get_int64(v) : 0;
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *control = NULL;
	json_object *ret = NULL, *v;
	bool json = false;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			control = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(status_help, stdout);
			return EXIT_OK;
		default:
			return cli_usage_error("status", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
	if (!control)
		return cli_usage_error("status", "--control PATH is required");
	c = cli_control_call("status", control, "query-migrate", NULL, &ret);
	if (c != EXIT_OK)
		return c;
	if (json) {
		printf("%s\n", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN));
	} else {
		char a[32], b[32], t[32];

		printf("status: %s\n", json_object_object_get_ex(ret, "status", &v)
					   ? json_object_get_string(v)
					   : "unknown");
		if (json_object_object_get_ex(ret, "total", &v)) {
			printf("transferred: %s, remaining: %s of %s\n",
			       fmt_bytes(a, sizeof(a), (uint64_t)field(ret, "transferred")),
			       fmt_bytes(b, sizeof(b), (uint64_t)field(ret, "remaining")),
			       fmt_bytes(t, sizeof(t), (uint64_t)field(ret, "total")));
			printf("passes: %lld, bandwidth: %s/s, expected downtime: %lld ms, "
			       "downtime: %lld ms, total time: %lld ms\n",
			       field(ret, "iterations"),
			       fmt_bytes(a, sizeof(a), (uint64_t)field(ret, "bandwidth")),
			       field(ret, "expected-downtime"), field(ret, "downtime"),
			       field(ret, "total-time"));
		}
		if (json_object_object_get_ex(ret, "error-desc", &v))
			printf("error: %s\n", json_object_get_string(v));
	}
	json_object_put(ret);
	return EXIT_OK;
}
