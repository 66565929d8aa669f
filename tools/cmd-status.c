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
    "Show the state of the daemon's current or last migration: status, phase\n"
    "(bulk, dirty pass N, mirroring, final), elapsed time, the rate now and on\n"
    "average, what is left to send and an ETA, passes, expected and actual\n"
    "downtime.  With --json, print the query-migrate object as is.\n";

static long long field(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? (long long)json_object_get_int64(v) : 0;
}

static const char *str_field(json_object *o, const char *key, const char *dflt)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : dflt;
}

/* "1:05:03", "5:03" or "12.3 s". */
static const char *fmt_duration(char *buf, size_t cap, long long ms)
{
	long long s = ms / 1000;

	if (s >= 3600)
		snprintf(buf, cap, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
	else if (s >= 60)
		snprintf(buf, cap, "%lld:%02lld", s / 60, s % 60);
	else
		snprintf(buf, cap, "%.1f s", (double)ms / 1000);
	return buf;
}

static void print_status(json_object *o)
{
	const char *status = str_field(o, "status", "unknown"), *phase = str_field(o, "phase", "");
	bool running =
	    !strcmp(status, "setup") || !strcmp(status, "active") || !strcmp(status, "device");
	long long total_ms = field(o, "total-time"), pass = field(o, "pass");
	uint64_t total = (uint64_t)field(o, "total"), sent = (uint64_t)field(o, "transferred");
	char a[32], b[32], c[32];
	json_object *v;

	printf("status: %s\n", status);
	if (!json_object_object_get_ex(o, "total", &v))
		goto error;
	if (running) {
		printf("phase: ");
		if (!strcmp(phase, "dirty") || !strcmp(phase, "mirroring"))
			printf("dirty pass %lld%s\n", pass - 1,
			       !strcmp(phase, "mirroring") ? ", writes mirrored" : "");
		else
			printf("%s\n", phase);
	}
	printf("elapsed: %s, sent: %s, average rate: %s/s", fmt_duration(a, sizeof(a), total_ms),
	       fmt_bytes(b, sizeof(b), sent),
	       fmt_bytes(c, sizeof(c),
			 total_ms > 0 ? (uint64_t)((double)sent * 1000 / (double)total_ms) : 0));
	if (running)
		printf(", rate now: %s/s", fmt_bytes(a, sizeof(a), (uint64_t)field(o, "rate")));
	printf("\n");
	if (running) {
		long long eta = json_object_object_get_ex(o, "eta", &v) ? field(o, "eta") : -1;

		printf("left to send: %s of %s, ETA: %s\n",
		       fmt_bytes(a, sizeof(a), (uint64_t)field(o, "remaining")),
		       fmt_bytes(b, sizeof(b), total),
		       eta >= 0 ? fmt_duration(c, sizeof(c), eta) : "unknown");
	} else {
		printf("devices: %s\n", fmt_bytes(a, sizeof(a), total));
	}
	printf("passes: %lld, expected downtime: %lld ms, downtime: %lld ms\n",
	       field(o, "iterations"), field(o, "expected-downtime"), field(o, "downtime"));
	if (json_object_object_get_ex(o, "forwarding", &v))
		printf("forwarding: %lld client%s to %s (%lld requests, %lld failed)\n",
		       field(v, "clients"), field(v, "clients") == 1 ? "" : "s",
		       str_field(v, "to", "?"), field(v, "requests"), field(v, "errors"));
error:
	if (json_object_object_get_ex(o, "error-desc", &v))
		printf("error: %s\n", json_object_get_string(v));
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
	json_object *ret = NULL;
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
	if (json)
		printf("%s\n", json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN));
	else
		print_status(ret);
	json_object_put(ret);
	return EXIT_OK;
}
