/* SPDX-License-Identifier: MIT */
/*
 * blkmig demo: the whole product in one command.  Builds an image with data,
 * zeros and holes; starts a real `blkmig receive` (this same binary) on
 * 127.0.0.1; migrates the image to it live while the built-in workload
 * writes; then checks, byte for byte, that the destination equals the
 * source as it was at the switch-over (the source is fenced from then on,
 * so its file is that state).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/backend.h"
#include "cli.h"
#include "daemon/report.h"
#include "common/error.h"
#include "common/util.h"
#include "transport/transport.h"
#include "workload/workload.h"

static const char demo_help[] =
    "Usage: blkmig demo [--size SIZE] [--write-rate RATE] [--block-size SIZE]\n"
    "                   [--max-bandwidth RATE] [--mode auto|dirty|active]\n"
    "                   [--dir DIR] [--keep] [--json]\n"
    "\n"
    "Live-migrate an image on this host and prove it arrived: create an image\n"
    "(40%% random data, 30%% written zeros, 30%% holes), start `blkmig receive` on\n"
    "127.0.0.1, migrate with writes going on throughout, and compare the\n"
    "destination with the source at the switch-over, byte for byte.\n"
    "\n"
    "  --size SIZE         image size (default 1G)\n"
    "  --write-rate RATE   the workload's write rate (default 8M per second)\n"
    "  --block-size SIZE   the workload's write size (default 64K)\n"
    "  --max-bandwidth RATE  cap the migration stream (default none); below the\n"
    "                      write rate it shows how each --mode copes\n"
    "  --mode MODE         auto (default), dirty or active (see blkmig migrate)\n"
    "  --dir DIR           where to put the images (default $TMPDIR or /tmp)\n"
    "  --keep              keep the images afterwards\n"
    "  --json              print a JSON report on stdout\n"
    "\n"
    "Exit status: 0 only if the destination was verified identical.\n";

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* 40% random data, 30% zeros actually written, the rest left as holes. */
static int make_image(const char *path, uint64_t size)
{
	uint64_t data_end = size / 10 * 4 / MiB * MiB, zero_end = size / 10 * 7 / MiB * MiB;
	uint64_t rng = 42;
	uint8_t *buf = malloc(MiB);
	int fd, r = 0;

	if (!buf)
		return -ENOMEM;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(buf);
		return err_set(errno, "create %s: %s", path, strerror(errno));
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		r = err_set(errno, "size %s: %s", path, strerror(errno));
		goto out;
	}
	for (uint64_t off = 0; off < zero_end; off += MiB) {
		size_t len = (size_t)MIN(MiB, zero_end - off);

		if (off < data_end)
			for (size_t i = 0; i < len; i += 8) {
				uint64_t v = splitmix(&rng);

				memcpy(buf + i, &v, 8);
			}
		else
			memset(buf, 0, len);
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
			r = err_set(errno ? errno : EIO, "write %s: %s", path, strerror(errno));
			goto out;
		}
	}
out:
	close(fd);
	free(buf);
	return r;
}

/* Byte-for-byte comparison; sets *first_diff on a difference. */
static int compare_files(const char *a, const char *b, bool *same, uint64_t *first_diff)
{
	uint8_t *ba = malloc(MiB), *bb = malloc(MiB);
	int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC), r = 0;
	uint64_t off = 0;

	*same = false;
	if (!ba || !bb || fa < 0 || fb < 0) {
		r = err_set(errno ? errno : ENOMEM, "compare %s and %s: %s", a, b, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t na = pread(fa, ba, MiB, (off_t)off), nb = pread(fb, bb, MiB, (off_t)off);

		if (na < 0 || nb < 0) {
			r = err_set(errno, "compare: read: %s", strerror(errno));
			goto out;
		}
		if (na != nb || memcmp(ba, bb, (size_t)na) != 0) {
			for (ssize_t i = 0; i < MIN(na, nb); i++)
				if (ba[i] != bb[i]) {
					*first_diff = off + (uint64_t)i;
					goto out;
				}
			*first_diff = off + (uint64_t)MIN(na, nb);
			goto out;
		}
		if (na == 0)
			break;
		off += (uint64_t)na;
	}
	*same = true;
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	free(ba);
	free(bb);
	return r;
}

static pid_t start_receiver(const char *dir, const char *dst, char *port, size_t port_cap)
{
	char portfile[PATH_MAX + 8], devarg[PATH_MAX + 32];
	pid_t pid;

	snprintf(portfile, sizeof(portfile), "%s/port", dir);
	snprintf(devarg, sizeof(devarg), "disk0=%s", dst);
	pid = fork();
	if (pid < 0)
		return err_set(errno, "fork: %s", strerror(errno));
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0)
			dup2(devnull, STDOUT_FILENO);
		execl("/proc/self/exe", "blkmig", "receive", "--listen", "127.0.0.1:0",
		      "--port-file", portfile, "--device", devarg, "--create", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {
		FILE *f = fopen(portfile, "r");

		if (f) {
			bool ok = fgets(port, (int)port_cap, f) != NULL;

			fclose(f);
			if (ok && strchr(port, '\n')) {
				*strchr(port, '\n') = '\0';
				return pid;
			}
		}
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return err_set(EIO, "the receiver exited before listening");
		sleep_ns(25 * 1000000ull);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return err_set(ETIMEDOUT, "the receiver did not start listening");
}

int cmd_demo(int argc, char **argv)
{
	enum { OPT_SIZE = 256, OPT_RATE, OPT_BS, OPT_DIR, OPT_KEEP, OPT_JSON, OPT_BW, OPT_MODE };
	static const struct option opts[] = {
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "write-rate", required_argument, NULL, OPT_RATE },
		{ "block-size", required_argument, NULL, OPT_BS },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "max-bandwidth", required_argument, NULL, OPT_BW },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	uint64_t size = GiB, rate = 8 * MiB, bs = 64 * KiB, diff = 0;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char dir[PATH_MAX], src[PATH_MAX + 16], dst[PATH_MAX + 16], to[64], port[16];
	char errbuf[1024] = "";
	bool keep = false, json = false, same = false;
	struct workload_spec wspec = { .name = "disk0", .seed = 7 };
	struct workload *wl = NULL;
	struct workload_stats wst = { 0 };
	/* Tracked like a served disk: 64 KiB chunks. */
	struct src_params p = { .zero_blocks = true, .chunk_size = 64 * KiB };
	struct src_device sdev;
	struct src_job *job = NULL;
	struct blk *bfile = NULL, *btrack = NULL;
	struct xport *x = NULL;
	struct mig_stats st = { 0 };
	struct cli_progress prog;
	pid_t child = -1;
	int c, r, status = 0, rc = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_SIZE:
			if (parse_size(optarg, &size) < 0)
				return cli_usage_error("demo", "--size: %s", err_msg());
			if (size < 16 * MiB)
				return cli_usage_error("demo", "--size must be at least 16M");
			break;
		case OPT_RATE:
			if (parse_rate(optarg, &rate) < 0)
				return cli_usage_error("demo", "--write-rate: %s", err_msg());
			break;
		case OPT_BS:
			if (parse_size(optarg, &bs) < 0 || bs == 0 || bs % 512 || bs > 64 * MiB)
				return cli_usage_error("demo", "--block-size must be a multiple of "
							       "512 up to 64M");
			break;
		case OPT_DIR:
			base = optarg;
			break;
		case OPT_BW:
			if (parse_rate(optarg, &p.max_bandwidth) < 0)
				return cli_usage_error("demo", "--max-bandwidth: %s", err_msg());
			break;
		case OPT_MODE:
			if (mig_mode_parse(optarg, &p.mode) < 0)
				return cli_usage_error("demo", "--mode: %s", err_msg());
			break;
		case OPT_KEEP:
			keep = true;
			break;
		case OPT_JSON:
			json = true;
			break;
		case 'h':
			printf(demo_help);
			return EXIT_OK;
		default:
			return cli_usage_error("demo", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);
	wspec.bs = bs;
	wspec.rate = rate;

	snprintf(dir, sizeof(dir), "%s/blkmig-demo-XXXXXX", base);
	if (!mkdtemp(dir))
		return cli_fail("demo: cannot create a directory under %s: %s", base,
				strerror(errno));
	snprintf(src, sizeof(src), "%s/source.img", dir);
	snprintf(dst, sizeof(dst), "%s/dest.img", dir);

	if (!json) {
		char sz[32];

		printf("blkmig demo: %s image in %s (40%% data, 30%% zeros, 30%% holes)\n",
		       fmt_bytes(sz, sizeof(sz), size), dir);
		fflush(stdout);
	}
	r = make_image(src, size);
	if (r < 0)
		goto fail;
	child = start_receiver(dir, dst, port, sizeof(port));
	if (child < 0) {
		r = (int)child;
		child = -1;
		goto fail;
	}
	snprintf(to, sizeof(to), "127.0.0.1:%s", port);
	r = blk_file_open(src, 0, 0, &bfile);
	if (r < 0)
		goto fail;
	r = blk_track_open(bfile, &btrack);
	if (r < 0) {
		blk_close(bfile);
		goto fail;
	}
	sdev = (struct src_device){ .name = "disk0", .blk = btrack };
	r = src_new(&p, &sdev, 1, &job);
	if (r < 0)
		goto fail;
	cli_cancel_job_on_signal(job);
	r = xport_connect(to, 10000, cli_cancel_token(), &x);
	if (r < 0)
		goto fail;
	if (!json) {
		char wr[32], b[32];

		printf("receiver listening on %s; workload: %s writes at %s/s\n", to,
		       fmt_bytes(b, sizeof(b), bs), fmt_bytes(wr, sizeof(wr), rate));
		fflush(stdout);
	}
	r = workload_start(&wspec, btrack, &wl);
	if (r < 0)
		goto fail;
	cli_progress_init(&prog, "migrating", !json);
	src_set_progress(job, cli_progress_cb, &prog);
	r = src_run(job, x);
	cli_progress_done(&prog);
	workload_stop(wl, &wst);
	wl = NULL;
	src_stats(job, &st);
	if (r < 0)
		goto fail;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		child = -1;
		r = err_set(EIO, "the receiver did not confirm the migration (status %d)", status);
		goto fail;
	}
	child = -1;
	r = compare_files(src, dst, &same, &diff);
	if (r < 0)
		goto fail;
	if (!same) {
		r = err_set(EILSEQ, "verification FAILED: images differ at byte %llu",
			    (unsigned long long)diff);
		goto fail;
	}
	rc = EXIT_OK;
	goto report;

fail:
	snprintf(errbuf, sizeof(errbuf), "%s", err_msg());
report:
	if (wl)
		workload_stop(wl, &wst);
	if (child > 0) {
		kill(child, SIGTERM);
		waitpid(child, NULL, 0);
	}
	if (json) {
		json_object *extra = json_object_new_object(), *w = report_workload_json(&wst);

		json_object_object_add(extra, "verified", json_object_new_boolean(same));
		json_object_object_add(extra, "workload", w);
		cli_print_json(stdout, &st, rc ? errbuf : NULL, extra);
		json_object_put(extra);
	} else if (rc == EXIT_OK) {
		char sz[32], wire[32], tput[32], wb[32];
		double secs = (double)st.total_ns / 1e9;

		printf("migrated %s in %.2f s: %s on the wire (%s/s), %llu passes\n",
		       fmt_bytes(sz, sizeof(sz), st.total), secs,
		       fmt_bytes(wire, sizeof(wire), st.transferred),
		       fmt_bytes(tput, sizeof(tput),
				 secs > 0 ? (uint64_t)((double)st.transferred / secs) : 0),
		       (unsigned long long)st.iterations);
		if (st.active)
			printf("mode %s: writes mirrored from pass %llu on (%s); %llu writes "
			       "mirrored\n",
			       mig_mode_name(st.mode), (unsigned long long)st.active_since,
			       st.mode_reason, (unsigned long long)st.mirror_writes);
		else
			printf("mode %s: dirty passes only\n", mig_mode_name(st.mode));
		printf("writers paused for %.1f ms at the switch-over; %llu writes (%s) during the "
		       "migration, p50 %.0f us, p99 %.0f us\n",
		       (double)st.downtime_ns / 1e6, (unsigned long long)wst.writes,
		       fmt_bytes(wb, sizeof(wb), wst.bytes), (double)wst.p50_ns / 1e3,
		       (double)wst.p99_ns / 1e3);
		printf("verified: the destination is byte-identical to the source at the "
		       "switch-over\n");
	}
	cli_cancel_job_on_signal(NULL);
	src_free(job);
	xport_close(x);
	blk_close(btrack);
	if (!keep) {
		unlink(src);
		unlink(dst);
		{
			char portfile[PATH_MAX + 8];

			snprintf(portfile, sizeof(portfile), "%s/port", dir);
			unlink(portfile);
		}
		rmdir(dir);
	} else if (!json) {
		printf("images kept in %s\n", dir);
	}
	if (rc != EXIT_OK)
		cli_fail("demo: %s", errbuf);
	return rc;
}
