/* SPDX-License-Identifier: MIT */
/* Shared CLI helpers: errors, --device, progress line, --json; see cli.h. */
#include "cli.h"

#include "state/state.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backend.h"
#include "common/cancel.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"
#include "daemon/daemon.h"
#include "daemon/report.h"
#include "transport/transport.h"
#include "wire/record.h"

int cli_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("blkmig: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "blkmig %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'blkmig %s --help'.\n", cmd);
	return EXIT_USAGE;
}

int cli_parse_device(char *arg, struct cli_device *out)
{
	char *eq = strchr(arg, '='), *comma;
	char whole[4096];
	size_t n;

	memset(out, 0, sizeof(*out));
	snprintf(whole, sizeof(whole), "%s", arg); /* for messages: arg is cut up */
	if (!eq || eq == arg)
		return err_set(EINVAL, "invalid --device '%s': expected NAME=PATH", whole);
	n = (size_t)(eq - arg);
	if (n > 255)
		return err_set(EINVAL, "invalid --device '%s': name longer than 255 bytes", whole);
	memcpy(out->name, arg, n);
	out->name[n] = '\0';
	if (wire_name_check((const uint8_t *)out->name, n) < 0)
		return err_set(EINVAL, "invalid --device: name has control characters");
	out->path = eq + 1;
	/* Options from the end: PATH itself may hold a comma. */
	while ((comma = strrchr(out->path, ',')) != NULL) {
		if (strcmp(comma, ",readonly") == 0) {
			out->readonly = true;
		} else if (strncmp(comma, ",size=", 6) == 0) {
			if (parse_size(comma + 6, &out->size) < 0 || out->size == 0)
				return err_set(EINVAL,
					       "invalid --device '%s': size '%s' is not a size "
					       "above 0 (like 10G)",
					       whole, comma + 6);
		} else {
			break;
		}
		*comma = '\0';
	}
	if (!*out->path)
		return err_set(EINVAL, "invalid --device '%s': empty path", whole);
	return 0;
}

int cli_add_device(const char *cmd, char *arg, struct cli_device *devs, unsigned *n)
{
	if (*n == CLI_MAX_DEVICES)
		return cli_usage_error(cmd, "at most %d devices", CLI_MAX_DEVICES);
	if (cli_parse_device(arg, &devs[*n]) < 0)
		return cli_usage_error(cmd, "%s", err_msg());
	for (unsigned k = 0; k < *n; k++)
		if (strcmp(devs[k].name, devs[*n].name) == 0)
			return cli_usage_error(cmd, "device name '%s' given twice", devs[k].name);
	(*n)++;
	return 0;
}

int cli_parse_uint(const char *cmd, const char *opt, const char *arg, uint64_t min, uint64_t max,
		   uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (!*arg || *arg == '-' || *end || errno || v < min || v > max)
		return cli_usage_error(cmd, "%s: '%s' is not a whole number from %llu to %llu", opt,
				       arg, (unsigned long long)min, (unsigned long long)max);
	*out = v;
	return 0;
}

int cli_check_format(const char *cmd, const char *arg, bool qemu_ok, bool *qemu)
{
	if (qemu)
		*qemu = false;
	if (strcmp(arg, "native") == 0)
		return 0;
	if (strcmp(arg, "qemu") == 0 && qemu_ok) {
		*qemu = true;
		return 0;
	}
	if (strcmp(arg, "qemu") == 0)
		return cli_fail(
		    "%s: --format qemu is not supported yet (only the native format is)", cmd);
	return cli_usage_error(cmd, "unknown format '%s' (native or qemu)", arg);
}

int cli_parse_cache(const char *cmd, const char *arg, bool *none)
{
	if (strcmp(arg, "none") == 0 || strcmp(arg, "writeback") == 0) {
		*none = arg[0] == 'n';
		return 0;
	}
	return cli_usage_error(cmd, "--cache: unknown mode '%s' (none or writeback)", arg);
}

static void log_incoming(void *user, const char *line)
{
	(void)user;
	fprintf(stderr, "blkmig: receive: %s\n", line);
}

int cli_incoming_open(void *user, const char *name, uint64_t size, struct blk **out, char *path,
		      size_t path_cap, bool *created)
{
	const struct cli_incoming *c = user;
	struct daemon_device devs[CLI_MAX_DEVICES];
	struct daemon_incoming in = { .devs = devs,
				      .ndev = c->ndev,
				      .create = c->create,
				      .max_size = c->max_size,
				      .cache_none = c->cache_none,
				      .log = log_incoming };

	for (unsigned i = 0; i < c->ndev; i++)
		devs[i] = (struct daemon_device){ .name = c->devs[i].name,
						  .path = c->devs[i].path,
						  .readonly = c->devs[i].readonly,
						  .size = c->devs[i].size };
	return daemon_incoming_open(&in, name, size, out, path, path_cap, created);
}

int cli_write_file(const char *path, const char *text)
{
	size_t len = strlen(text);
	char tmp[4096];
	struct stat sb;
	int fd, e;

	if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode))
		return err_set(ELOOP, "%s is a symbolic link: refusing to write through it", path);
	if (lstat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
		return err_set(EEXIST, "%s exists and is not a regular file", path);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return err_set(ENAMETOOLONG, "%s: path too long", path);
	/* A stale one from a run that died; unlink never follows a link. */
	if (unlink(tmp) < 0 && errno != ENOENT)
		return err_set(errno, "cannot remove %s: %s", tmp, strerror(errno));
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_set(errno, "cannot create %s: %s", tmp, strerror(errno));
	if (write(fd, text, len) != (ssize_t)len || close(fd) < 0) {
		e = errno ? errno : EIO;
		close(fd);
		unlink(tmp);
		return err_set(e, "cannot write %s: %s", tmp, strerror(e));
	}
	if (rename(tmp, path) < 0) {
		e = errno;
		unlink(tmp);
		return err_set(e, "cannot rename %s to %s: %s", tmp, path, strerror(e));
	}
	return 0;
}

int cli_control_call(const char *cmd, const char *path, const char *command, json_object *args,
		     json_object **ret)
{
	struct ctl_client *cc = NULL;
	json_object *r = NULL;
	int rc = EXIT_OK;

	if (ctl_connect(path, 5000, &cc) < 0) {
		json_object_put(args);
		return cli_fail("%s: %s", cmd, err_msg());
	}
	if (ctl_call(cc, command, args, &r, NULL, NULL) < 0)
		rc = cli_fail("%s: %s", cmd, err_msg());
	ctl_client_close(cc);
	if (rc == EXIT_OK && ret)
		*ret = r;
	else
		json_object_put(r);
	return rc;
}

/* ---- progress line ------------------------------------------------------------ */

void cli_progress_init(struct cli_progress *p, const char *label, bool allowed)
{
	memset(p, 0, sizeof(*p));
	p->enabled = allowed && isatty(STDOUT_FILENO);
	p->label = label;
}

void cli_progress_cb(const struct mig_stats *st, void *user)
{
	struct cli_progress *p = user;
	uint64_t now = now_ns(), rate;
	char rbuf[32], left[32];
	double pct;

	if (!p->enabled)
		return;
	/* The engine measures bandwidth per pass; the line wants it live. */
	if (p->last_ns && now > p->last_ns) {
		double inst =
		    (double)(st->transferred - p->last_bytes) * 1e9 / (double)(now - p->last_ns);

		p->rate = p->rate > 0 ? 0.7 * p->rate + 0.3 * inst : inst;
	}
	p->last_ns = now;
	p->last_bytes = st->transferred;
	rate = (uint64_t)p->rate;
	pct = st->total
		  ? 100.0 * (double)(st->total - MIN(st->remaining, st->total)) / (double)st->total
		  : 0;
	fmt_bytes(rbuf, sizeof(rbuf), rate);
	fmt_bytes(left, sizeof(left), st->remaining);
	printf("\r%s: %-9s %5.1f%%  %s/s  %s left  pass %llu", p->label, report_phase(st), pct,
	       rbuf, left, (unsigned long long)st->iterations + (st->state < MIG_COMPLETED));
	if (rate && st->remaining && st->state < MIG_COMPLETED) {
		uint64_t eta = st->remaining / rate;

		printf("  ETA %llu:%02llu", (unsigned long long)(eta / 60),
		       (unsigned long long)(eta % 60));
	}
	printf("\033[K");
	fflush(stdout);
	p->drawn = true;
}

void cli_progress_done(struct cli_progress *p)
{
	if (p->enabled && p->drawn) {
		printf("\r\033[K");
		fflush(stdout);
	}
}

/* ---- reports -------------------------------------------------------------------- */

void cli_print_json(FILE *f, const struct mig_stats *st, const char *error, void *extra)
{
	json_object *o = report_stats_json(st, error);

	if (!o)
		return;

	if (extra) {
		json_object_object_foreach((json_object *)extra, key, val)
		    json_object_object_add(o, key, json_object_get(val));
	}
	fprintf(f, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

void cli_print_summary(FILE *f, const char *verb, const struct mig_stats *st)
{
	char tot[32], wire[32], rate[32];
	double secs = (double)st->total_ns / 1e9;

	fmt_bytes(tot, sizeof(tot), st->total);
	fmt_bytes(wire, sizeof(wire), st->transferred);
	fmt_bytes(rate, sizeof(rate), secs > 0 ? (uint64_t)((double)st->transferred / secs) : 0);
	fprintf(f, "%s %s in %.2f s: %s on the wire (%s/s), %llu passes, downtime %.1f ms\n", verb,
		tot, secs, wire, rate, (unsigned long long)st->iterations,
		(double)st->downtime_ns / 1e6);
	if (st->compress != MIG_COMPRESS_OFF) {
		char data[32], payload[32];

		fmt_bytes(data, sizeof(data), st->data_bytes);
		fmt_bytes(payload, sizeof(payload), st->payload_bytes);
		fprintf(f, "compression %s: %llu chunks compressed, %llu raw; %s of data as %s\n",
			mig_compress_name(st->compress), (unsigned long long)st->compressed_chunks,
			(unsigned long long)st->raw_chunks, data, payload);
	}
}

/* ---- signals ------------------------------------------------------------------------ */

static struct cancel *_Atomic sig_token; /* fired by SIGINT/SIGTERM */
static void (*sig_fn)(void *);
static void *sig_arg;
static struct src_job *_Atomic sig_job;

static void on_signal(int sig)
{
	(void)sig;
	cancel_fire(atomic_load(&sig_token));
	if (sig_fn)
		sig_fn(sig_arg);
}

struct cancel *cli_cancel_token(void)
{
	struct cancel *c = atomic_load(&sig_token);

	/* Made once, by the main thread, before any handler can run. */
	if (!c) {
		if (cancel_new(&c) < 0) {
			cli_fail("%s", err_msg());
			exit(EXIT_FAIL);
		}
		atomic_store(&sig_token, c);
	}
	return c;
}

void cli_on_signal(void (*fn)(void *), void *arg)
{
	struct sigaction sa = { .sa_handler = on_signal };

	cli_cancel_token();
	sig_fn = fn;
	sig_arg = arg;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

bool cli_signalled(void)
{
	return cancel_is_set(atomic_load(&sig_token));
}

static atomic_uint sig_job_users; /* handlers between loading sig_job and done */

static void cancel_job(void *arg)
{
	struct src_job *j;

	(void)arg;
	atomic_fetch_add(&sig_job_users, 1);
	j = atomic_load(&sig_job);
	if (j)
		src_cancel(j);
	atomic_fetch_sub(&sig_job_users, 1);
}

void cli_cancel_job_on_signal(struct src_job *j)
{
	atomic_store(&sig_job, j);
	/* The caller frees the old job next: wait out a handler on another
	 * thread that loaded it before the store (it only fires a token). */
	while (atomic_load(&sig_job_users))
		sched_yield();
	cli_on_signal(cancel_job, NULL);
}

int cli_tls_option(int opt, const char *arg, struct cli_tls *t)
{
	switch (opt) {
	case CLI_OPT_TLS_PSK:
		t->o.psk_file = arg;
		return 1;
	case CLI_OPT_TLS_CREDS:
		t->o.x509_dir = arg;
		return 1;
	case CLI_OPT_TLS_AUTHZ:
		t->o.authz = arg;
		return 1;
	case CLI_OPT_TLS_HOSTNAME:
		t->o.hostname = arg;
		return 1;
	case CLI_OPT_NO_TLS:
		t->no_tls = true;
		return 1;
	default:
		return 0;
	}
}

int cli_tls_check(const char *cmd, const struct cli_tls *t, const char *listen_addr,
		  enum tls_role role)
{
	bool tls = tls_options_enabled(&t->o);

	if (t->no_tls && role == TLS_CLIENT)
		return cli_usage_error(cmd, "--no-tls is for listeners");
	if (t->no_tls && (tls || t->o.authz || t->o.hostname))
		return cli_usage_error(cmd, "--no-tls excludes the other --tls options");
	if (t->o.psk_file && t->o.x509_dir)
		return cli_usage_error(cmd, "--tls-psk and --tls-creds exclude each other");
	if (!tls && t->o.authz)
		return cli_usage_error(cmd, "--tls-authz needs --tls-psk or --tls-creds");
	if (!tls && t->o.hostname)
		return cli_usage_error(cmd, "--tls-hostname needs --tls-creds");
	if (t->o.hostname && role == TLS_SERVER)
		return cli_usage_error(cmd, "--tls-hostname is for the connecting side");
	/* An address that does not resolve fails when listening, as it is. */
	if (listen_addr && !tls && !t->no_tls && xport_addr_is_loopback(listen_addr) == 0)
		return cli_usage_error(cmd,
				       "%s is not a loopback address: anyone who reaches it could "
				       "write these disks; give --tls-psk FILE or --tls-creds DIR "
				       "(or --no-tls to accept that)",
				       listen_addr);
	return 0;
}

int cli_tls_setup(const char *cmd, const struct cli_tls *t, const char *listen_addr,
		  enum tls_role role, struct tls_creds **out)
{
	int r = cli_tls_check(cmd, t, listen_addr, role);

	*out = NULL;
	if (r)
		return r;
	if (tls_creds_new(&t->o, role, out) < 0)
		return cli_fail("%s: %s", cmd, err_msg());
	return 0;
}

int cli_state_option(int opt, const char *arg)
{
	if (opt != CLI_OPT_STATE_DIR)
		return 0;
	state_set_dir(arg);
	return 1;
}
