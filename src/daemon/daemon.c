/* SPDX-License-Identifier: MIT */
/*
 * The serving daemon's lifecycle; see daemon.h.  The order of start-up is
 * the order of use: NBD listens from the first moment (refusing clients,
 * so those of an incoming daemon hear why they must wait rather than
 * finding nothing there), then the incoming migration, then the devices,
 * the job, the writer and the control socket.  daemon_free() undoes it in
 * reverse: the job (which sends events), the control socket (whose
 * commands read the writer), the writer, NBD, the devices.
 */
#include "daemon-impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backend.h"
#include "block/mark.h"
#include "state/state.h"
#include "common/error.h"
#include "common/util.h"
#include "control/control.h"
#include "migrate/incoming.h"
#include "migrate/job.h"
#include "nbdserver/server.h"
#include "transport/transport.h"
#include "workload/workload.h"

/* ---- incoming ---------------------------------------------------------------- */

/* A claim larger than the operator allows for a device with no size=. */
static int refuse_claim(const struct daemon_device *d, const char *shown, uint64_t size,
			uint64_t max)
{
	char a[32], b[32];

	return err_set(EFBIG,
		       "device %s: the source claims %s (%llu bytes), more than --max-size %s "
		       "(%llu bytes): not creating %s",
		       shown, fmt_bytes(a, sizeof(a), size), (unsigned long long)size,
		       fmt_bytes(b, sizeof(b), max), (unsigned long long)max, d->path);
}

static int incoming_open(const struct daemon_incoming *c, const char *name, uint64_t size,
			 struct blk **out, char *path, size_t path_cap, bool *created)
{
	unsigned direct = c->cache_none ? BLK_OPEN_DIRECT : 0;
	const struct daemon_device *d = NULL;
	uint64_t max = c->max_size ? c->max_size : DAEMON_DEFAULT_MAX_SIZE, want;
	char shown[STR_ESCAPE_CAP(256)], a[32], b[32];
	struct stat sb;
	int r;

	*created = false;
	str_escape(shown, sizeof(shown), name);
	for (unsigned i = 0; i < c->ndev; i++)
		if (strcmp(c->devs[i].name, name) == 0)
			d = &c->devs[i];
	if (!d)
		return err_set(ENOENT,
			       "unknown device '%s': the source sends it, but no --device %s=PATH "
			       "was given",
			       shown, shown);
	if (d->readonly)
		return err_set(EROFS, "device %s is read-only here: it cannot receive a migration",
			       shown);
	if (d->size && size && size != d->size)
		return err_set(EINVAL,
			       "device %s: the source sends %s (%llu bytes), but --device %s,size= "
			       "allows exactly %s (%llu bytes)",
			       shown, fmt_bytes(a, sizeof(a), size), (unsigned long long)size,
			       shown, fmt_bytes(b, sizeof(b), d->size),
			       (unsigned long long)d->size);
	want = d->size ? d->size : size;
	snprintf(path, path_cap, "%s", d->path);
	if (c->create && lstat(d->path, &sb) < 0 && errno == ENOENT) {
		if (!d->size && size > max)
			return refuse_claim(d, shown, size, max);
		/* Marked before it exists: no moment where it looks complete. */
		r = mark_before_create(d->path, "blkmig: created for an incoming migration");
		if (r < 0)
			return r;
		r = blk_file_open(d->path, BLK_OPEN_CREATE | BLK_OPEN_EXCL | direct, want, out);
		if (r < 0) {
			char msg[1024];

			/* EEXIST: someone else's file appeared; its mark is ours
			 * to keep (it may be incomplete, for all we know). */
			snprintf(msg, sizeof(msg), "%s", err_msg());
			if (r != -EEXIST)
				mark_clear(d->path);
			err_copy_in(msg);
			return r;
		}
		*created = true;
		return 0;
	}
	if (c->create && stat(d->path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == 0) {
		if (!d->size && size > max)
			return refuse_claim(d, shown, size, max);
		r = mark_incomplete(d->path, "blkmig: grown for an incoming migration");
		if (r < 0)
			return r;
		return blk_file_open(d->path, BLK_OPEN_CREATE | direct, want, out);
	}
	r = blk_file_open(d->path, direct, 0, out);
	if (r == 0 && d->size && blk_size(*out) != d->size) {
		uint64_t have = blk_size(*out);

		blk_close(*out);
		*out = NULL;
		return err_set(EINVAL,
			       "device %s: %s is %s (%llu bytes), but --device %s,size= says %s "
			       "(%llu bytes)",
			       shown, d->path, fmt_bytes(a, sizeof(a), have),
			       (unsigned long long)have, shown, fmt_bytes(b, sizeof(b), d->size),
			       (unsigned long long)d->size);
	}
	return r;
}

int daemon_incoming_open(void *user, const char *name, uint64_t size, struct blk **out, char *path,
			 size_t path_cap, bool *created)
{
	struct daemon_incoming *c = user;
	int r = incoming_open(c, name, size, out, path, path_cap, created);

	if (r == 0 && c->cache_none && c->log && blk_file_cache(*out) == BLK_CACHE_REFUSED) {
		char shown[STR_ESCAPE_CAP(256)], line[4500];

		snprintf(line, sizeof(line),
			 "device %s: %s refuses O_DIRECT: --cache none falls back to writing "
			 "through the page cache",
			 str_escape(shown, sizeof(shown), name), path);
		c->log(c->log_user, line);
	}
	for (unsigned i = 0; r == 0 && i < c->ndev; i++)
		if (strcmp(c->devs[i].name, name) == 0)
			c->known[i] = blk_file_identity(*out, &c->st_dev[i], &c->st_ino[i]) == 0;
	return r;
}

/* One line in the daemon's log (none without a log). */
static void daemon_log(const struct daemon *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void daemon_log(const struct daemon *d, const char *fmt, ...)
{
	char line[1600];
	va_list ap;

	if (!d->cfg.log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	d->cfg.log(d->cfg.log_user, line);
}

/* A refused incoming connection, for the operator's log. */
static void log_refused(void *user, const char *line)
{
	daemon_log(user, "incoming: %s", line);
}

static int run_incoming(struct daemon *d)
{
	const char *names[DAEMON_MAX_DEVICES];
	struct daemon_incoming *in = &d->in;

	struct dst_params p = { .open = daemon_incoming_open,
				.user = in,
				.expect = names,
				.allow_shared_base = d->cfg.shared_base,
				.allow_delta = d->cfg.delta,
				.verify_only = d->cfg.verify_only,
				.no_compress = d->cfg.no_compress,
				.format = d->cfg.qemu ? MIG_FORMAT_QEMU : MIG_FORMAT_NATIVE,
				.nbd_addr = d->nbd_addr };
	struct incoming_params ip = { .lfd = d->incoming_lfd,
				      .tls = d->tls_server,
				      .timeout_ms = XPORT_DEFAULT_TIMEOUT_MS,
				      .max_failures = d->cfg.max_refused,
				      .retry_ns = d->cfg.qemu ? 0 : d->cfg.retry_ns,
				      .log = log_refused,
				      .log_user = d };
	int r;

	*in = (struct daemon_incoming){ .devs = d->devs,
					.ndev = d->cfg.ndev,
					.create = d->cfg.create,
					.max_size = d->cfg.max_size,
					.cache_none = d->cfg.cache_none,
					.log = log_refused,
					.log_user = d };
	for (unsigned i = 0; i < d->cfg.ndev; i++)
		if (!d->devs[i].readonly)
			names[p.nexpect++] = d->devs[i].name;
	r = incoming_run(&p, &ip, d->cfg.cancel, NULL);
	close(d->incoming_lfd);
	d->incoming_lfd = -1;
	/* A verify's verdict is news for the operator, not a failure of this
	 * daemon: its images are as they were, and it serves them. */
	if (d->cfg.verify_only && (r == 0 || r == -EILSEQ)) {
		daemon_log(d, "incoming: verify: %s",
			   r == 0 ? "identical to the source" : err_msg());
		return 0;
	}
	/* Our own cancel ended the wait; anything else (a source that
	 * aborted says ECANCELED too) failed the migration. */
	if (r == -ECANCELED && cancel_is_set(d->cfg.cancel))
		return err_prefix(-r, "incoming: ");
	if (r < 0)
		return err_prefix(-r, "incoming migration failed: ");
	return 0;
}

/* ---- the migration's events and the switch-over ------------------------------- */

/* Every request from now on fails, with where to go instead. */
static void refuse_clients(struct daemon *d)
{
	char reason[512];

	pthread_mutex_lock(&d->lock);
	snprintf(reason, sizeof(reason),
		 "this daemon's devices were migrated to %s: reconnect there", d->migrated_to);
	pthread_mutex_unlock(&d->lock);
	nbds_shutdown(d->nbd, ESHUTDOWN, reason);
}

static void job_event(void *user, const struct mig_stats *st, const char *error)
{
	struct daemon *d = user;
	json_object *data = json_object_new_object();
	struct ctl *ctl;

	/* Clients were refused or forwarded at the hand-over already
	 * (daemon_handover()), before the COMMIT. */
	if (!data)
		return;
	json_object_object_add(data, "status", json_object_new_string(mig_state_name(st->state)));
	json_object_object_add(data, "mode", json_object_new_string(mig_mode_name(st->mode)));
	json_object_object_add(data, "mirroring", json_object_new_boolean(st->active));
	if (st->active && st->mode_reason[0])
		json_object_object_add(data, "mirroring-reason",
				       json_object_new_string(st->mode_reason));
	if (error && *error)
		json_object_object_add(data, "error-desc", json_object_new_string(error));
	/* The control socket's threads may start a migration before
	 * ctl_listen() has returned d->ctl: it is published under d->lock. */
	pthread_mutex_lock(&d->lock);
	ctl = d->ctl;
	pthread_mutex_unlock(&d->lock);
	ctl_event(ctl, "MIGRATION", data); /* ctl NULL: data is freed */
}

/* ---- lifecycle ------------------------------------------------------------------- */

int daemon_check_config(const struct daemon_config *c)
{
	bool found = false;

	if (!c->ndev)
		return err_set(EINVAL, "at least one device is required");
	if (c->ndev > DAEMON_MAX_DEVICES)
		return err_set(EINVAL, "at most %d devices", DAEMON_MAX_DEVICES);
	for (unsigned i = 0; i < c->ndev; i++)
		for (unsigned k = 0; k < i; k++)
			if (strcmp(c->devs[i].name, c->devs[k].name) == 0)
				return err_set(EINVAL, "device name '%s' given twice",
					       c->devs[i].name);
	if (c->qemu && c->create)
		return err_set(EINVAL, "--create needs the native format: a QEMU stream does not "
				       "announce device sizes");
	if ((c->create || c->shared_base || c->qemu || c->delta || c->verify_only ||
	     c->no_compress) &&
	    !c->incoming)
		return err_set(EINVAL,
			       "--create, --shared-base, --delta, --verify-only, --no-compress and "
			       "--format go with --incoming");
	if (c->verify_only && (c->create || c->delta || c->shared_base || c->qemu))
		return err_set(EINVAL,
			       "--verify-only writes nothing: it goes with neither --create, "
			       "--delta, --shared-base nor --format qemu");
	if (c->max_size && !c->create)
		return err_set(EINVAL, "--max-size goes with --create");
	for (unsigned i = 0; i < c->ndev; i++)
		if (c->devs[i].size && (!c->incoming || c->devs[i].readonly))
			return err_set(
			    EINVAL, "device %s: size= goes with --incoming, on a writable device",
			    c->devs[i].name);
	if (!c->workload)
		return 0;
	for (unsigned i = 0; i < c->ndev; i++)
		found |= strcmp(c->devs[i].name, c->workload->name) == 0 && !c->devs[i].readonly;
	if (!found)
		return err_set(EINVAL, "--workload names '%s', which is not a writable --device",
			       c->workload->name);
	return 0;
}

/* NBD TLS and limits, before listening. */
static int nbd_setup(struct daemon *d)
{
	const struct daemon_config *c = &d->cfg;
	struct nbds_limits l = NBDS_LIMITS_DEFAULT;
	int r;

	if (c->nbd_max_per_peer)
		l.per_peer = c->nbd_max_per_peer;
	if (c->nbd_max_unauth)
		l.unauth = c->nbd_max_unauth;
	if (c->nbd_idle_timeout_ms)
		l.idle_timeout_ms =
		    c->nbd_idle_timeout_ms < 0 ? 0 : (unsigned)c->nbd_idle_timeout_ms;
	r = nbds_set_tls(d->nbd, d->tls_server);
	if (r == 0)
		r = nbds_set_limits(d->nbd, &l);
	if (r == 0)
		nbds_set_log(d->nbd, c->log, c->log_user);
	return r;
}

int daemon_new(const struct daemon_config *cfg, struct daemon **out)
{
	struct daemon *d;
	int r;

	r = daemon_check_config(cfg);
	if (r < 0)
		return r;
	d = calloc(1, sizeof(*d));
	if (!d)
		return err_set(ENOMEM, "serve: out of memory");
	d->cfg = *cfg;
	memcpy(d->devs, cfg->devs, cfg->ndev * sizeof(*d->devs));
	d->cfg.devs = d->devs;
	if (!d->cfg.nbd)
		d->cfg.nbd = "127.0.0.1:10809";
	d->incoming_lfd = -1;
	d->max_downtime_ns = SRC_DEFAULT_DOWNTIME_NS;
	pthread_mutex_init(&d->cmd_lock, NULL);
	pthread_mutex_init(&d->lock, NULL);

	r = tls_creds_new(&d->cfg.tls, TLS_SERVER, &d->tls_server);
	if (r < 0)
		goto err_free;
	r = nbds_new(&d->nbd);
	if (r < 0)
		goto err_free;
	nbds_refuse(d->nbd, d->cfg.incoming ? "an incoming migration is in progress: the exports "
					      "are served once it is complete"
					    : "the daemon is starting");
	r = nbd_setup(d);
	if (r == 0)
		r = nbds_listen(d->nbd, d->cfg.nbd, d->nbd_addr, sizeof(d->nbd_addr));
	if (r < 0)
		goto err_nbd;
	if (d->cfg.incoming) {
		r = xport_listen(d->cfg.incoming, &d->incoming_lfd, d->incoming_addr,
				 sizeof(d->incoming_addr));
		if (r < 0) {
			r = err_prefix(-r, "incoming: ");
			goto err_nbd;
		}
	}
	*out = d;
	return 0;

err_nbd:
	nbds_free(d->nbd);
err_free:
	tls_creds_free(d->tls_server);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->cmd_lock);
	free(d);
	return r;
}

const char *daemon_nbd_addr(const struct daemon *d)
{
	return d->nbd_addr;
}

const char *daemon_incoming_addr(const struct daemon *d)
{
	return d->incoming_addr;
}

/* None, a wildcard or loopback: an announced host that means "the host
 * you dialled" (loopback is the destination's view of itself, useless
 * from another host). */
static bool local_or_any(const char *h)
{
	return !*h || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strncmp(h, "127.", 4) ||
	       !strcmp(h, "::1") || !strcasecmp(h, "localhost");
}

/*
 * Where the clients go: forward-to, else the export the destination
 * announced, on the host it was reached at when it announced no usable
 * one of its own.  false, with the reason logged, when there is nowhere
 * (a destination serving no NBD export) or it is this daemon's own NBD
 * server.  d->lock held.
 */
static bool forward_target(struct daemon *d, const struct src_session *s, char *host, size_t hcap,
			   char *port, size_t pcap)
{
	const char *h = s->dest_nbd_host;
	uint16_t p = s->dest_nbd_port, dialled, own_port;
	char own[256];

	if (d->fwd.to[0]) {
		if (xport_addr_split(d->fwd.to, host, hcap, &p) < 0)
			return false;
	} else if (!s->dest_nbd_known || !p) {
		daemon_log(d, "forwarding: the destination serves no NBD export and no forward-to "
			      "was given: clients of the migrated devices are refused");
		return false;
	} else if (local_or_any(h)) {
		if (xport_addr_split(d->migrated_to, host, hcap, &dialled) < 0)
			return false;
	} else {
		snprintf(host, hcap, "%s", h);
	}
	snprintf(port, pcap, "%u", p);
	if (xport_addr_split(d->nbd_addr, own, sizeof(own), &own_port) == 0 && own_port == p &&
	    (!strcmp(own, host) || (local_or_any(own) && local_or_any(host)))) {
		daemon_log(d,
			   "forwarding: %s:%s is this daemon's own NBD server: clients of the "
			   "migrated devices are refused",
			   host, port);
		return false;
	}
	return true;
}

/*
 * The devices are held (track_hold()): send their clients' requests to
 * the destination's export from now on.  Each device's export there has
 * its name.  false when that cannot be: the caller refuses them.  The
 * connections are shared out so that all devices together open at most
 * DAEMON_FORWARD_CONNS (the destination limits connections per address).
 * d->lock held.
 */
static bool start_forwarding(struct daemon *d, const struct src_session *s)
{
	unsigned conns = MAX(1u, MIN(4u, DAEMON_FORWARD_CONNS / MAX(d->nsend, 1u)));
	char host[256], port[16];
	bool v6;
	unsigned i;

	if (!forward_target(d, s, host, sizeof(host), port, sizeof(port)))
		return false;
	for (i = 0; i < d->nsend; i++) {
		struct blk_nbd_target t = {
			.host = host,
			.port = port,
			.export = d->sdev[i].name,
			.psk_file = d->fwd.psk_file[0] ? d->fwd.psk_file : NULL,
			.psk_user = d->fwd.psk_user[0] ? d->fwd.psk_user : NULL,
			.x509_dir = d->fwd.x509_dir[0] ? d->fwd.x509_dir : NULL,
			.patience_ns = DAEMON_FORWARD_PATIENCE_NS,
			.max_conns = conns,
		};

		if (blk_nbd_open(&t, blk_size(d->sdev[i].blk), &d->fwd.blk[i]) < 0) {
			daemon_log(d, "forwarding: %s: clients of the migrated devices are refused",
				   err_msg());
			return false;
		}
	}
	v6 = strchr(host, ':') != NULL;
	snprintf(d->fwd.addr, sizeof(d->fwd.addr), "%s%s%s:%s", v6 ? "[" : "", host, v6 ? "]" : "",
		 port);
	for (i = 0; i < d->nsend; i++)
		track_redirect(d->sdev[i].blk, d->fwd.blk[i]);
	d->fwd.active = true;
	daemon_log(d, "forwarding the clients of %u device%s to %s", d->nsend,
		   d->nsend == 1 ? "" : "s", d->fwd.addr);
	return true;
}

/* No request reaches the devices again, and clients hear where they went. */
static void fence_and_refuse(struct daemon *d)
{
	for (unsigned i = 0; i < d->nsend; i++)
		track_fence(d->sdev[i].blk, ESHUTDOWN);
	refuse_clients(d);
}

int daemon_handover(void *user, const struct src_session *s, uint32_t attempt)
{
	struct daemon *d = user;
	struct src_rec rec;
	bool forwarding;

	pthread_mutex_lock(&d->lock);
	src_rec_init(&rec, s->id, attempt, d->migrated_to);
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < d->cfg.ndev; i++) {
		int r;

		if (d->devs[i].readonly)
			continue;
		r = src_rec_save(d->devs[i].path, &rec);
		if (r < 0) {
			/* No COMMIT goes out; the devices stay handed over
			 * (a resume delivers it), and nobody waits for them. */
			r = err_prefix(-r, "recording the hand-over of %s: ", d->devs[i].path);
			fence_and_refuse(d);
			return r;
		}
	}
	/*
	 * Recorded: the destination may take over now, so the held requests
	 * may go there.  The way chosen at the first hand-over stays: a later
	 * connection delivering a lost COMMIT calls this again.
	 */
	pthread_mutex_lock(&d->lock);
	if (!d->fwd.started) {
		d->fwd.started = true;
		if (d->fwd.wanted)
			start_forwarding(d, s);
	}
	forwarding = d->fwd.active;
	pthread_mutex_unlock(&d->lock);
	if (!forwarding)
		fence_and_refuse(d);
	return 0;
}

/*
 * An image this daemon (or another blkmig) handed over belongs to its
 * destination: serving it again would let two hosts write one disk.  Only
 * the operator takes it back (--reclaim).
 */
static int check_handed_over(const struct daemon *d, const struct daemon_device *dev)
{
	bool reclaimed;
	int r = src_rec_check_ours(dev->path, "serve", d->cfg.reclaim, &reclaimed);

	if (reclaimed)
		daemon_log(d, "%s: reclaimed (its hand-over record is removed)", dev->path);
	return r;
}

/* Open every device under a tracking layer; the writable ones migrate. */
static int open_devices(struct daemon *d)
{
	for (unsigned i = 0; i < d->cfg.ndev; i++) {
		const struct daemon_device *dev = &d->devs[i];
		struct blk *base;
		int r = mark_check(dev->path);

		if (r > 0)
			return err_set(EUCLEAN,
				       "%s is marked incomplete (a migration into it did not "
				       "finish): refusing to serve it",
				       dev->path);
		r = check_handed_over(d, dev);
		if (r < 0)
			return r;
		r = blk_file_open(dev->path, dev->readonly ? BLK_OPEN_RDONLY : 0, 0, &base);
		if (r < 0)
			return r;
		/* The image the incoming migration verified, and no other: a
		 * file put at its path since is not served as the copy. */
		if (d->in.known[i]) {
			uint64_t sdev, sino;

			r = blk_file_identity(base, &sdev, &sino);
			if (r == 0 && (sdev != d->in.st_dev[i] || sino != d->in.st_ino[i]))
				r = err_set(
				    ESTALE,
				    "%s is no longer the image the incoming migration wrote "
				    "and verified (the file was replaced): refusing to "
				    "serve it",
				    dev->path);
			if (r < 0) {
				blk_close(base);
				return r;
			}
		}
		r = blk_track_open(base, &d->blks[i]);
		if (r < 0) {
			blk_close(base);
			return r;
		}
		if (!dev->readonly)
			d->sdev[d->nsend++] =
			    (struct src_device){ .name = dev->name, .blk = d->blks[i] };
	}
	return 0;
}

static json_object *handle(void *user, const char *cmd, json_object *args, const char **cls,
			   char *err, size_t cap)
{
	return daemon_execute(user, cmd, args, cls, err, cap);
}

int daemon_start(struct daemon *d)
{
	int r;

	if (d->started)
		return err_set(EALREADY, "serve: already started");
	if (d->cfg.incoming) {
		if (d->incoming_lfd < 0)
			return err_set(EALREADY, "serve: the incoming migration was already tried");
		r = run_incoming(d);
		if (r < 0)
			return r;
	}
	r = open_devices(d);
	for (unsigned i = 0; r == 0 && i < d->cfg.ndev; i++)
		r = nbds_add_export(d->nbd, d->devs[i].name, d->blks[i], d->devs[i].readonly);
	if (r == 0)
		r = job_new(d->sdev, d->nsend, job_event, d, &d->job);
	for (unsigned i = 0; r == 0 && d->cfg.workload && i < d->cfg.ndev; i++)
		if (strcmp(d->devs[i].name, d->cfg.workload->name) == 0)
			r = workload_start(d->cfg.workload, d->blks[i], &d->wl);
	if (r < 0)
		return r;
	/* Before the control socket opens, so its first client is served;
	 * under cmd_lock, which its commands run under. */
	pthread_mutex_lock(&d->cmd_lock);
	d->started = true;
	pthread_mutex_unlock(&d->cmd_lock);
	if (d->cfg.control) {
		pthread_mutex_lock(&d->lock);
		r = ctl_listen(d->cfg.control, handle, d, &d->ctl);
		pthread_mutex_unlock(&d->lock);
		if (r < 0)
			return r;
	}
	nbds_refuse(d->nbd, NULL);
	return 0;
}

json_object *daemon_execute(struct daemon *d, const char *cmd, json_object *args,
			    const char **err_class, char *err, size_t err_cap)
{
	json_object *ret;

	pthread_mutex_lock(&d->cmd_lock);
	*err_class = CTL_ERR_GENERIC;
	err[0] = '\0';
	ret = daemon_run_command_locked(d, cmd, args, err_class, err, err_cap);
	pthread_mutex_unlock(&d->cmd_lock);
	return ret;
}

void daemon_free(struct daemon *d)
{
	bool forwarding;

	if (!d)
		return;
	/*
	 * First, nothing may wait at a gate or on the destination any more:
	 * held requests (a hand-over not yet forwarded), the workload writer
	 * and a migration's readers would otherwise keep the threads joined
	 * below.  Forwarded clients get the refusal clients get without
	 * forwarding; requests waiting for the destination end now.
	 */
	pthread_mutex_lock(&d->lock);
	forwarding = d->fwd.active;
	pthread_mutex_unlock(&d->lock);
	if (forwarding)
		refuse_clients(d);
	for (unsigned i = 0; i < d->nsend; i++) {
		if (d->fwd.blk[i])
			blk_nbd_cancel(d->fwd.blk[i]);
		if (d->started)
			track_fence(d->sdev[i].blk, ESHUTDOWN);
	}
	job_free(d->job);
	ctl_close(d->ctl);
	workload_stop(d->wl, NULL);
	nbds_free(d->nbd);
	for (unsigned i = 0; i < d->cfg.ndev; i++)
		blk_close(d->blks[i]);
	for (unsigned i = 0; i < d->nsend; i++)
		blk_close(d->fwd.blk[i]);
	if (d->incoming_lfd >= 0)
		close(d->incoming_lfd);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->cmd_lock);
	tls_creds_free(d->tls_server);
	free(d);
}
