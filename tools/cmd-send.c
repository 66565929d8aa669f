/* SPDX-License-Identifier: MIT */
/*
 * blkmig send: migrate local images to a `blkmig receive`.  The images are
 * opened through the tracking layer, so the optional built-in workload's
 * writes (--workload) are migrated live exactly as a client's would be.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend.h"
#include "cli.h"
#include "daemon/report.h"
#include "common/error.h"
#include "common/util.h"
#include "transport/transport.h"
#include "state/state.h"
#include "workload/workload.h"

static const char send_help[] =
    "Usage: blkmig send --to HOST:PORT --device NAME=PATH[,readonly] [--device ...]\n"
    "                   [--format native|qemu] [--shared-base] [--zero-blocks]\n"
    "                   [--max-bandwidth RATE] [--max-downtime MS] [--chunk-size SIZE]\n"
    "                   [--mode auto|dirty|active] [--mirror-share PCT] [--workload SPEC]\n"
    "                   [--timeout SECONDS]\n"
    "                   [--tls-psk FILE | --tls-creds DIR [--tls-hostname NAME]]\n"
    "                   [--tls-authz ID,...] [--retry-for DURATION] [--delta]\n"
    "                   [--verify-only] [--compress off|zstd[:LEVEL]|auto]\n"
    "                   [--cache none|writeback] [--connections N] [--state-dir DIR]\n"
    "                   [--reclaim] [--json]\n"
    "\n"
    "Migrate the named images to a `blkmig receive` at HOST:PORT: a bulk pass,\n"
    "passes that resend chunks written meanwhile, and a final pass with writers\n"
    "paused once the rest would take no longer than --max-downtime.  Success means\n"
    "the receiver has made the data durable and its digests matched.\n"
    "\n"
    "  --to HOST:PORT        the receiver\n"
    "  --device NAME=PATH    an image or block device to send under NAME; with\n"
    "                        ',readonly' it is skipped (not migrated)\n"
    "  --format native|qemu  stream format: native (to blkmig receive), or qemu:\n"
    "                        QEMU 7.2's migration stream, for a -M none QEMU started\n"
    "                        with -incoming (devices match its -drive ids).  QEMU\n"
    "                        sends nothing back: success means everything was sent,\n"
    "                        not that QEMU loaded it; check QEMU's query-migrate\n"
    "  --shared-base         send only allocated ranges: the destination already\n"
    "                        holds the rest (e.g. a common base image)\n"
    "  --zero-blocks         send all-zero chunks as a flag, without payload\n" CLI_COMPRESS_HELP
    "  --max-bandwidth RATE  cap the stream, e.g. 100M (per second; default none);\n"
    "                        the final pass, writers paused, runs uncapped\n"
    "  --connections N       stripe the stream over N TCP connections, 1..16\n"
    "                        (default 1), for a long fat link one cannot fill; the\n"
    "                        receiver may take fewer (receive --max-connections)\n"
    "  --max-downtime MS     longest pause for writers (default 300)\n"
    "  --chunk-size SIZE     migration granularity, 4K..16M power of two (default 1M)\n"
    "  --mode MODE           auto (default), dirty or active: how writes made during\n"
    "                        the migration are carried (see blkmig migrate --help)\n"
    "  --mirror-share PCT    with --max-bandwidth, the share of it that mirrored\n"
    "                        writes may take, 10..90 (default 50; see blkmig migrate)\n"
    "  --workload SPEC       run the built-in writer during the migration:\n"
    "                        NAME,bs=SIZE,rate=RATE[,seed=N][,pattern=random|sequential]\n"
    "  --timeout SECONDS     give up when the connection is idle this long (120)\n"
    "  --retry-for DURATION  after a dropped or stalled connection, reconnect (with\n"
    "                        back-off) for this long, e.g. 60s, 10m (default 60s;\n"
    "                        0: never); each new connection resumes: the receiver\n"
    "                        offers what it holds, and only the rest is sent\n"
    "  --delta               the receiver (receive --delta) holds an older copy:\n"
    "                        compare chunk digests and send only what differs\n"
    "  --verify-only         compare with a `receive --verify-only` by digest while\n"
    "                        the devices stay in use; write nothing; print the\n"
    "                        ranges that differ (exit 0 identical, 1 not)\n"
    "  --cache none|writeback\n"
    "                        none (default): the migration reads the images with\n"
    "                        O_DIRECT, bypassing the page cache, except chunks it\n"
    "                        holds whole (buffered where the file system refuses\n"
    "                        O_DIRECT, said in one line); writeback: through it.\n"
    "                        The workload's writes stay buffered\n"
    "  --reclaim             send images this host handed over to another (their\n"
    "                        hand-over record is removed); refused otherwise\n" CLI_STATE_HELP
	CLI_TLS_HELP
    "  --tls-hostname NAME   the receiver's name in its certificate (default: the\n"
    "                        host of --to)\n"
    "  --json                print a JSON report on stdout at the end\n"
    "\n"
    "Exit status: 0 migrated and verified, 1 failed or cancelled (SIGINT/SIGTERM\n"
    "cancel cleanly: the source is untouched), 2 usage error.\n";

#define SEND_DEFAULT_RETRY_NS (60 * 1000000000ull)

/* What each connection of one send needs (src_migrate's callbacks). */
struct send_ctx {
	const char *to;
	struct tls_creds *creds;
	int timeout_ms;
	struct cli_progress *prog;
	bool verify, json;
	const struct src_device *sdev;
	const char *paths[CLI_MAX_DEVICES]; /* of sdev[], for their records */
	unsigned npaths;
};

/*
 * Record the migration with every image it sends: attempt 0 while it runs
 * (a later send of them finds its id), and as src_params.handover, the
 * attempt the receiver took over (serve refuses them without --reclaim).
 */
static int send_record(void *user, const uint8_t id[NATIVE_ID_LEN], uint32_t attempt)
{
	struct send_ctx *c = user;
	struct src_rec rec;

	src_rec_init(&rec, id, attempt, c->to);
	for (unsigned i = 0; i < c->npaths; i++) {
		int r = src_rec_save(c->paths[i], &rec);

		if (r < 0)
			return err_prefix(-r, "recording the migration with %s: ", c->paths[i]);
	}
	return 0;
}

static int send_handover(void *user, const struct src_session *s, uint32_t attempt)
{
	return send_record(user, s->id, attempt);
}

/*
 * The migration id: the one an earlier send of these images to the same
 * receiver left in their records (it had given up, or this host
 * restarted: the receiver may hold part of it), or a new one, recorded
 * before anything is sent.
 */
static int send_session(struct send_ctx *c, struct src_session *s)
{
	struct src_rec rec, first = { 0 };
	bool reuse = true;
	int r = src_session_init(s);

	for (unsigned i = 0; r == 0 && i < c->npaths; i++) {
		int l = src_rec_load(c->paths[i], &rec);

		reuse = reuse && l == 0 && rec.attempt == 0 && strcmp(rec.dest, c->to) == 0 &&
			(i == 0 || memcmp(rec.id, first.id, sizeof(rec.id)) == 0);
		if (i == 0 && l == 0)
			first = rec;
	}
	if (r < 0)
		return r;
	if (reuse && c->npaths)
		memcpy(s->id, first.id, sizeof(s->id));
	return send_record(c, s->id, 0);
}

static int send_dial(void *user, struct xport **x)
{
	struct send_ctx *c = user;
	int r = xport_dial(c->to, 10000, cli_cancel_token(), c->creds, x);

	if (r == 0)
		xport_set_timeout(*x, c->timeout_ms);
	return r;
}

static void send_on_job(void *user, struct src_job *j)
{
	struct send_ctx *c = user;

	cli_cancel_job_on_signal(j);
	if (j)
		src_set_progress(j, cli_progress_cb, c->prog);
}

/* A verify's differing ranges, on stdout. */
static void send_on_end(void *user, struct src_job *j, int r)
{
	struct send_ctx *c = user;
	struct mig_stats st;

	if (!c->verify || r != -EILSEQ || c->json)
		return;
	src_stats(j, &st);
	for (unsigned i = 0; i < st.ndev; i++) {
		uint64_t from = 0, off, len;
		unsigned shown = 0;

		while (src_differing(j, i, from, &off, &len) == 1) {
			if (shown++ < 100)
				printf("differs: %s offset %" PRIu64 " length %" PRIu64 "\n",
				       c->sdev[i].name, off, len);
			from = off + len;
		}
		if (shown > 100)
			printf("differs: %s: %u more ranges\n", c->sdev[i].name, shown - 100);
	}
}

static void send_log(void *user, const char *line)
{
	(void)user;
	fprintf(stderr, "blkmig: send: %s\n", line);
}

/* Whether a and b are open on the same file (device and inode). */
static bool same_file(struct blk *a, struct blk *b)
{
	uint64_t da, ia, db, ib;

	return blk_file_identity(a, &da, &ia) == 0 && blk_file_identity(b, &db, &ib) == 0 &&
	       da == db && ia == ib;
}

int cmd_send(int argc, char **argv)
{
	enum {
		OPT_SHARED = 256,
		OPT_ZERO,
		OPT_BW,
		OPT_DOWNTIME,
		OPT_CHUNK,
		OPT_WORKLOAD,
		OPT_TIMEOUT,
		OPT_JSON,
		OPT_FORMAT,
		OPT_MODE,
		OPT_SHARE,
		OPT_RETRY,
		OPT_DELTA,
		OPT_VERIFY,
		OPT_COMPRESS,
		OPT_CACHE,
		OPT_CONNECTIONS,
		OPT_RECLAIM
	};
	static const struct option opts[] = {
		{ "to", required_argument, NULL, 't' },
		{ "device", required_argument, NULL, 'd' },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "shared-base", no_argument, NULL, OPT_SHARED },
		{ "zero-blocks", no_argument, NULL, OPT_ZERO },
		{ "max-bandwidth", required_argument, NULL, OPT_BW },
		{ "max-downtime", required_argument, NULL, OPT_DOWNTIME },
		{ "chunk-size", required_argument, NULL, OPT_CHUNK },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ "mirror-share", required_argument, NULL, OPT_SHARE },
		{ "workload", required_argument, NULL, OPT_WORKLOAD },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "retry-for", required_argument, NULL, OPT_RETRY },
		{ "delta", no_argument, NULL, OPT_DELTA },
		{ "verify-only", no_argument, NULL, OPT_VERIFY },
		{ "compress", required_argument, NULL, OPT_COMPRESS },
		{ "cache", required_argument, NULL, OPT_CACHE },
		{ "connections", required_argument, NULL, OPT_CONNECTIONS },
		{ "reclaim", no_argument, NULL, OPT_RECLAIM },
		CLI_STATE_OPTION,
		CLI_TLS_OPTIONS,
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_device devs[CLI_MAX_DEVICES];
	struct src_device sdev[CLI_MAX_DEVICES];
	struct blk *blks[CLI_MAX_DEVICES] = { 0 };
	struct blk *rblks[CLI_MAX_DEVICES] = { 0 };
	bool cache_none = true;
	struct src_params p = { 0 };
	struct workload_spec wspec;
	struct cli_tls tls = { 0 };
	struct tls_creds *creds = NULL;
	struct workload *wl = NULL;
	struct workload_stats wst = { 0 };
	struct cli_progress prog;
	struct mig_stats st = { 0 };
	struct send_ctx ctx = { 0 };
	struct src_session sess;
	const char *to = NULL, *workload = NULL;
	unsigned ndev = 0, nsend = 0;
	bool json = false, qemu = false, reclaim = false;
	long timeout_s = XPORT_DEFAULT_TIMEOUT_MS / 1000;
	uint64_t v, retry_ns = SEND_DEFAULT_RETRY_NS;
	int c, r, rc = EXIT_FAIL;
	char errbuf[1024] = "";

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			to = optarg;
			break;
		case 'd':
			r = cli_add_device("send", optarg, devs, &ndev);
			if (r)
				return r;
			if (devs[ndev - 1].size)
				return cli_usage_error("send",
						       "size= is for receiving devices (receive, "
						       "serve --incoming): %s",
						       devs[ndev - 1].name);
			break;
		case OPT_FORMAT:
			r = cli_check_format("send", optarg, true, &qemu);
			p.format = qemu ? MIG_FORMAT_QEMU : MIG_FORMAT_NATIVE;
			if (r)
				return r;
			break;
		case OPT_SHARED:
			p.shared_base = true;
			break;
		case OPT_ZERO:
			p.zero_blocks = true;
			break;
		case OPT_BW:
			if (parse_rate(optarg, &p.max_bandwidth) < 0)
				return cli_usage_error("send", "--max-bandwidth: %s", err_msg());
			break;
		case OPT_MODE:
			if (mig_mode_parse(optarg, &p.mode) < 0)
				return cli_usage_error("send", "--mode: %s", err_msg());
			break;
		case OPT_COMPRESS:
			if (mig_compress_parse(optarg, &p.compress, &p.compress_level) < 0)
				return cli_usage_error("send", "--compress: %s", err_msg());
			break;
		case OPT_SHARE:
			if (mig_mirror_share_parse(optarg, &p.mirror_share) < 0)
				return cli_usage_error("send", "--mirror-share: %s", err_msg());
			break;
		case OPT_DOWNTIME:
			r = cli_parse_uint("send", "--max-downtime", optarg, 0, 3600 * 1000, &v);
			if (r)
				return r;
			p.max_downtime_ns = v * 1000000u;
			break;
		case OPT_CHUNK:
			if (parse_size(optarg, &v) < 0)
				return cli_usage_error("send", "--chunk-size: %s", err_msg());
			if (!wire_chunk_size_valid(v))
				return cli_usage_error("send",
						       "--chunk-size must be a power of two "
						       "from 4K to 16M");
			p.chunk_size = (uint32_t)v;
			break;
		case OPT_WORKLOAD:
			workload = optarg;
			if (workload_parse(optarg, &wspec) < 0)
				return cli_usage_error("send", "%s", err_msg());
			break;
		case OPT_TIMEOUT:
			r = cli_parse_uint("send", "--timeout", optarg, 1, 86400, &v);
			if (r)
				return r;
			timeout_s = (long)v;
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_RETRY:
			if (parse_duration(optarg, &retry_ns) < 0)
				return cli_usage_error("send", "--retry-for: %s", err_msg());
			break;
		case OPT_DELTA:
			p.delta = true;
			break;
		case OPT_VERIFY:
			p.verify_only = true;
			break;
		case OPT_CACHE:
			r = cli_parse_cache("send", optarg, &cache_none);
			if (r)
				return r;
			break;
		case OPT_CONNECTIONS:
			r = cli_parse_uint("send", "--connections", optarg, 1, MIG_CONNECTIONS_MAX,
					   &v);
			if (r)
				return r;
			p.connections = (unsigned)v;
			break;
		case OPT_RECLAIM:
			reclaim = true;
			break;
		case 'h':
			fputs(send_help, stdout);
			return EXIT_OK;
		default:
			if (cli_state_option(c, optarg))
				break;
			if (cli_tls_option(c, optarg, &tls))
				break;
			return cli_usage_error("send", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("send", "unexpected argument '%s'", argv[optind]);
	if (!to)
		return cli_usage_error("send", "--to HOST:PORT is required");
	if (!ndev)
		return cli_usage_error("send", "at least one --device NAME=PATH is required");
	if (src_params_check(&p) < 0)
		return cli_usage_error("send", "%s", err_msg());
	if (p.verify_only && workload)
		return cli_usage_error("send", "--verify-only writes nothing: it does not go with "
					       "--workload");
	if (p.format == MIG_FORMAT_QEMU)
		retry_ns = 0; /* a QEMU destination cannot resume */
	if (p.max_downtime_ns == 0)
		p.max_downtime_ns = SRC_DEFAULT_DOWNTIME_NS;
	r = cli_tls_setup("send", &tls, NULL, TLS_CLIENT, &creds);
	if (r)
		return r;

	for (unsigned i = 0; i < ndev; i++) {
		struct blk *base;
		bool writer = workload && strcmp(wspec.name, devs[i].name) == 0;
		bool reclaimed;

		if (devs[i].readonly) {
			if (!json)
				fprintf(stderr, "blkmig: send: %s is read-only: skipped\n",
					devs[i].name);
			continue;
		}
		/* Handed over: the other host's now (a comparison is fine).
		 * --reclaim takes it back as asked, without a word: this
		 * send's own record replaces the one it removed. */
		r = p.verify_only ? 0
				  : src_rec_check_ours(devs[i].path, "send", reclaim, &reclaimed);
		if (r < 0) {
			cli_fail("send: %s", err_msg());
			goto out;
		}
		r = blk_file_open(devs[i].path, writer ? 0 : BLK_OPEN_RDONLY, 0, &base);
		if (r < 0) {
			cli_fail("send: %s", err_msg());
			goto out;
		}
		r = blk_track_open(base, &blks[i]);
		if (r < 0) {
			blk_close(base);
			cli_fail("send: %s", err_msg());
			goto out;
		}
		/* The readers' own descriptor, O_DIRECT: a direct read first
		 * writes back the page cache's dirty pages of its range, so it
		 * sees every write that returned before it was issued.  A chunk
		 * the cache holds whole is read from it (CACHED_READS). */
		if (cache_none) {
			r = blk_file_open(devs[i].path,
					  BLK_OPEN_RDONLY | BLK_OPEN_DIRECT | BLK_OPEN_CACHED_READS,
					  0, &rblks[i]);
			if (r < 0) {
				cli_fail("send: %s", err_msg());
				goto out;
			}
			/* Opened by path twice: both must be the file whose
			 * writes are tracked, or another would be copied. */
			if (!same_file(base, rblks[i])) {
				cli_fail("send: %s was replaced while it was being opened",
					 devs[i].path);
				r = -ESTALE;
				goto out;
			}
			if (blk_file_cache(rblks[i]) == BLK_CACHE_REFUSED && !json)
				fprintf(stderr,
					"blkmig: send: %s refuses O_DIRECT: --cache none falls "
					"back to reading through the page cache\n",
					devs[i].path);
		}
		ctx.paths[nsend] = devs[i].path;
		sdev[nsend++] = (struct src_device){ .name = devs[i].name,
						     .blk = blks[i],
						     .read_blk = rblks[i] };
	}
	if (!nsend) {
		rc = cli_fail("send: every device is read-only: nothing to migrate");
		goto out;
	}
	if (workload) {
		struct blk *target = NULL;

		for (unsigned i = 0; i < ndev; i++)
			if (strcmp(devs[i].name, wspec.name) == 0)
				target = blks[i];
		if (!target) {
			rc = cli_usage_error("send",
					     "--workload names '%s', which is not a "
					     "migrated --device",
					     wspec.name);
			goto out;
		}
		r = workload_start(&wspec, target, &wl);
		if (r < 0) {
			cli_fail("send: %s", err_msg());
			goto out;
		}
	}

	cli_progress_init(&prog, "send", !json);
	ctx.to = to;
	ctx.creds = creds;
	ctx.timeout_ms = (int)(timeout_s * 1000);
	ctx.prog = &prog;
	ctx.verify = p.verify_only;
	ctx.json = json;
	ctx.sdev = sdev;
	ctx.npaths = p.verify_only || p.format == MIG_FORMAT_QEMU ? 0 : nsend;
	if (ctx.npaths) {
		r = send_session(&ctx, &sess);
		if (r < 0) {
			cli_progress_done(&prog);
			cli_fail("send: %s", err_msg());
			goto out;
		}
		p.session = &sess;
		p.handover = send_handover;
		p.handover_user = &ctx;
	}
	r = src_migrate(&p, sdev, nsend,
			&(struct src_retry){ .retry_ns = retry_ns,
					     .dial = send_dial,
					     .on_job = send_on_job,
					     .on_end = send_on_end,
					     .log = send_log,
					     .user = &ctx,
					     .cancel = cli_cancel_token() },
			&st);
	cli_progress_done(&prog);
	if (r < 0)
		snprintf(errbuf, sizeof(errbuf), "%s", err_msg());

	if (wl) {
		workload_stop(wl, &wst);
		wl = NULL;
	}
	if (json) {
		json_object *extra = NULL;

		if (workload) {
			json_object *w = report_workload_json(&wst);

			extra = json_object_new_object();
			json_object_object_add(extra, "workload", w);
		}
		cli_print_json(stdout, &st, r < 0 ? errbuf : NULL, extra);
		json_object_put(extra);
	} else if (r == 0 && p.verify_only) {
		printf("identical: %" PRIu64 " bytes compared\n", st.total);
	} else if (r == 0) {
		cli_print_summary(stdout, "migrated", &st);
		if (p.format == MIG_FORMAT_QEMU)
			printf(
			    "note: a QEMU destination sends nothing back, so this cannot confirm "
			    "that it loaded the stream; check its query-migrate\n");
	}
	if (r < 0)
		cli_fail("send: %s", errbuf);
	else
		rc = EXIT_OK;
out:
	workload_stop(wl, NULL);
	cli_cancel_job_on_signal(NULL);
	tls_creds_free(creds);
	for (unsigned i = 0; i < ndev; i++) {
		blk_close(rblks[i]);
		blk_close(blks[i]);
	}
	return rc;
}
