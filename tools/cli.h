/* SPDX-License-Identifier: MIT */
/*
 * Shared pieces of the blkmig command-line tool: the subcommand table,
 * --device parsing, the progress line and the --json report.  Only tools/
 * may print to the terminal or exit.
 */
#ifndef BLKMIG_TOOLS_CLI_H
#define BLKMIG_TOOLS_CLI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "migrate/migrate.h"
#include "tls/tls.h"

struct json_object;

/* Exit codes (DESIGN.md). */
#define EXIT_OK	   0
#define EXIT_FAIL  1
#define EXIT_USAGE 2

struct cmd {
	const char *name;
	const char *summary;
	int (*run)(int argc, char **argv);
};

int cmd_send(int argc, char **argv);
int cmd_receive(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_inspect(int argc, char **argv);

/* Print "blkmig: <msg>" on stderr and return EXIT_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "blkmig <cmd>: <msg>" and a hint on stderr; return EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define CLI_MAX_DEVICES 64

struct cli_device {
	char name[256];
	const char *path;
	bool readonly;
	uint64_t size; /* size=: the only size a source may send (0: none given) */
};

/* Parse NAME=PATH[,readonly][,size=SIZE] (options in any order, after the
 * path); arg is cut up.  0 or -EINVAL with err_set. */
int cli_parse_device(char *arg, struct cli_device *out);

/*
 * The option parsers below print the usage error themselves and return
 * EXIT_USAGE (or EXIT_FAIL where noted); 0 when the argument is good.
 */
/* Append a --device to devs[*n]: parse, refuse a repeated name or too many. */
int cli_add_device(const char *cmd, char *arg, struct cli_device *devs, unsigned *n);
/* A whole number in [min, max] for option 'opt'. */
int cli_parse_uint(const char *cmd, const char *opt, const char *arg, uint64_t min, uint64_t max,
		   uint64_t *out);
/* --format: native, or qemu where the command supports it (*qemu set);
 * qemu elsewhere is refused with EXIT_FAIL. */
int cli_check_format(const char *cmd, const char *arg, bool qemu_ok, bool *qemu);

/* TLS options, the same for every command that makes or takes a
 * migration connection. */
enum {
	CLI_OPT_TLS_PSK = 0x4000,
	CLI_OPT_TLS_CREDS,
	CLI_OPT_TLS_AUTHZ,
	CLI_OPT_TLS_HOSTNAME,
	CLI_OPT_NO_TLS,
};
#define CLI_TLS_OPTIONS                                                                            \
	{ "tls-psk", required_argument, NULL, CLI_OPT_TLS_PSK },                                   \
	    { "tls-creds", required_argument, NULL, CLI_OPT_TLS_CREDS },                           \
	    { "tls-authz", required_argument, NULL, CLI_OPT_TLS_AUTHZ },                           \
	    { "tls-hostname", required_argument, NULL, CLI_OPT_TLS_HOSTNAME },                     \
	{                                                                                          \
		"no-tls", no_argument, NULL, CLI_OPT_NO_TLS                                        \
	}
#define CLI_TLS_HELP                                                                               \
	"  --tls-psk FILE        TLS 1.3 with the pre-shared keys in FILE (IDENTITY:HEXKEY\n"      \
	"                        lines, as qemu and nbdkit read; a client uses the first)\n"       \
	"  --tls-creds DIR       TLS 1.3 with X.509: DIR holds ca-cert.pem and\n"                  \
	"                        server-cert.pem/server-key.pem (listening) or\n"                  \
	"                        client-cert.pem/client-key.pem (connecting)\n"                    \
	"  --tls-authz ID[,ID]   only these PSK identities, or certificate DNs (then\n"            \
	"                        separated by ';'), may connect\n"
struct cli_tls {
	struct tls_options o;
	bool no_tls;
};
/* --state-dir DIR: where marks and records of block devices live. */
#define CLI_OPT_STATE_DIR 0x4100
#define CLI_STATE_OPTION                                                                           \
	{                                                                                          \
		"state-dir", required_argument, NULL, CLI_OPT_STATE_DIR                            \
	}
#define CLI_STATE_HELP                                                                             \
	"  --state-dir DIR       where the marks and records of block devices are kept\n"          \
	"                        (default /var/lib/blkmig; a file's sit beside it)\n"
/* 1 if opt was CLI_OPT_STATE_DIR (and the directory is now arg), else 0. */
int cli_state_option(int opt, const char *arg);

/* 1 if opt was one of CLI_TLS_OPTIONS (arg stored in t), else 0. */
int cli_tls_option(int opt, const char *arg, struct cli_tls *t);
/*
 * Check the TLS options of a command that listens on listen_addr (NULL: a
 * command that connects, which --no-tls does not concern): they go
 * together, and a listener off loopback needs credentials or --no-tls.
 * EXIT_USAGE with the message printed, or 0.
 */
int cli_tls_check(const char *cmd, const struct cli_tls *t, const char *listen_addr,
		  enum tls_role role);
/* cli_tls_check(), then load the credentials for role (*out NULL without
 * TLS): EXIT_USAGE or EXIT_FAIL with the message printed, or 0. */
int cli_tls_setup(const char *cmd, const struct cli_tls *t, const char *listen_addr,
		  enum tls_role role, struct tls_creds **out);

/* The destination's device opener (dst_open_fn) over --device entries:
 * daemon_incoming_open() (daemon/daemon.h) over them. */
struct cli_incoming {
	const struct cli_device *devs;
	unsigned ndev;
	bool create;
	uint64_t max_size; /* --max-size; 0: the default */
	bool cache_none;   /* --cache none */
};
/* --cache none|writeback (shared by receive, serve, send): *none set, 0,
 * or EXIT_USAGE with the message printed. */
int cli_parse_cache(const char *cmd, const char *arg, bool *none);
#define CLI_CACHE_HELP                                                                             \
	"  --cache none|writeback\n"                                                               \
	"                        how the migration writes the images: writeback\n"                 \
	"                        (default) through the page cache; none bypasses it\n"             \
	"                        (O_DIRECT; buffered where the file system refuses\n"              \
	"                        it, said in one line)\n"

/* --compress, shared by send and migrate. */
#define CLI_COMPRESS_HELP                                                                          \
	"  --compress off|zstd[:LEVEL]|auto\n"                                                     \
	"                        compress chunks (native format; default off): zstd\n"             \
	"                        compresses every chunk on the reader threads (LEVEL\n"            \
	"                        -N..22, default 1) and sends it raw if it does not\n"             \
	"                        shrink by 1/16; auto compresses only while the link,\n"           \
	"                        not the CPU, is the bottleneck, and sends raw to a\n"             \
	"                        destination that does not accept compressed chunks\n"

struct blk;
int cli_incoming_open(void *user, const char *name, uint64_t size, struct blk **out, char *path,
		      size_t path_cap, bool *created);

/*
 * Write text to a file blkmig creates for others to read (--port-file):
 * through a temporary PATH.tmp made with O_EXCL|O_NOFOLLOW, renamed over
 * path, so a reader never sees half of it and nothing is written through a
 * symlink.  A symlink (or anything but a regular file) already at path is
 * refused rather than replaced.  0, or a negative errno with err_set().
 */
int cli_write_file(const char *path, const char *text);

/* Connect to a daemon's control socket and run one command; prints the
 * failure as "blkmig CMD: ..." and returns EXIT_FAIL, or EXIT_OK with *ret
 * (caller puts it; may be NULL to drop the reply).  args is consumed. */
int cli_control_call(const char *cmd, const char *path, const char *command,
		     struct json_object *args, struct json_object **ret);

struct src_job;
/* SIGINT/SIGTERM cancel this job (NULL: nothing to cancel yet). */
void cli_cancel_job_on_signal(struct src_job *j);

/* Progress line on stdout, only when stdout is a terminal. */
struct cli_progress {
	bool enabled;
	bool drawn;
	const char *label;
	uint64_t last_ns, last_bytes; /* for the live rate */
	double rate;
};
void cli_progress_init(struct cli_progress *p, const char *label, bool allowed);
void cli_progress_cb(const struct mig_stats *st, void *user);
void cli_progress_done(struct cli_progress *p);

/* The --json object: daemon/report.h's report_stats_json(), the same as
 * query-migrate.  'error' may be NULL; extra (may be NULL) is a
 * json_object* to merge in. */
void cli_print_json(FILE *f, const struct mig_stats *st, const char *error, void *extra);

/* A short human summary on f. */
void cli_print_summary(FILE *f, const char *verb, const struct mig_stats *st);

/* Signal handling: SIGINT/SIGTERM fire cli_cancel_token() (and call fn(arg)
 * if given; fn must be async-signal-safe). */
void cli_on_signal(void (*fn)(void *), void *arg);
bool cli_signalled(void);
struct cancel;
/* The token the handler fires, for calls that take one; made on first use
 * (exits if it cannot be), owned here, lives until exit. */
struct cancel *cli_cancel_token(void);

#endif
