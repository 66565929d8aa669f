/* SPDX-License-Identifier: MIT */
/*
 * The serving daemon: what `blkmig serve` is, as a library.  A daemon owns
 * the block stack (each --device opened as a file under a tracking layer,
 * and the optional built-in workload writer), the NBD server exporting the
 * devices, the incoming migration that may fill them first, the migration
 * job that moves them away, and the control commands (commands.c) with the
 * control socket that carries them.  tools/cmd-serve.c only parses options
 * and calls daemon_new(), daemon_start() and daemon_free().
 *
 * Lifecycle: daemon_new() listens (NBD refusing clients while an incoming
 * migration is awaited; the incoming address bound); daemon_start()
 * receives the incoming migration if there is one (blocking), then opens
 * and exports the devices and opens the control socket; commands then run
 * until daemon_free().  Once an outgoing migration has handed the devices
 * over, every NBD request is forwarded to the destination's export
 * (migrate's after=forward, docs/forwarding.md) or answered with
 * ESHUTDOWN and the connection closed, so clients reconnect there.
 *
 * Threads: daemon_execute() may be called from any thread; commands run one
 * at a time.  The migration runs on the job's thread (migrate/job.h), the
 * NBD and control servers on theirs.
 */
#ifndef BLKMIG_DAEMON_DAEMON_H
#define BLKMIG_DAEMON_DAEMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "tls/tls.h"

struct blk;
struct cancel;
struct daemon;
struct workload_spec;

/* Most devices one daemon serves. */
#define DAEMON_MAX_DEVICES 64
/* The tracking and resend granularity of a served disk's native migration. */
#define DAEMON_DEFAULT_CHUNK_SIZE (64 * 1024)
/* How long a migration reconnects and resumes after its link failed, and
 * how long the incoming side waits for that (migrate's retry-for). */
#define DAEMON_DEFAULT_RETRY_MS (60 * 1000)
/* How long a forwarded request waits for the destination's export to take
 * connections (it does once it has taken over, within moments of the
 * COMMIT) before it fails. */
#define DAEMON_FORWARD_PATIENCE_NS (30 * 1000000000ull)
/* Connections the forwarding of all devices together opens at most (4 per
 * device, fewer with more than 2 devices, at least 1): below the 16 per
 * address a blkmig destination allows by default. */
#define DAEMON_FORWARD_CONNS 8

struct daemon_device {
	const char *name; /* export and migration name */
	const char *path; /* image file or block device */
	bool readonly;	  /* exported read-only, left out of migrations */
	uint64_t size;	  /* incoming: the only size a source may send (0: any) */
};

/* The default of --max-size: the largest image --create makes for a source
 * whose device has no size=. */
#define DAEMON_DEFAULT_MAX_SIZE (UINT64_C(1) << 40)

/* Everything borrowed here must outlive the daemon. */
struct daemon_config {
	const struct daemon_device *devs;
	unsigned ndev;
	const char *nbd;      /* HOST:PORT for NBD (port 0: any); NULL: 127.0.0.1:10809 */
	const char *control;  /* control socket path, or NULL for none */
	const char *incoming; /* HOST:PORT to receive a migration on first, or NULL */
	bool create;	      /* incoming: create missing or empty images */
	uint64_t max_size;    /* incoming, create: the largest (0: DAEMON_DEFAULT_MAX_SIZE) */
	bool shared_base;     /* incoming: accept a shared-base migration */
	bool delta;	      /* incoming: accept a delta sync into the existing images */
	bool verify_only;     /* incoming: compare with a `migrate --verify-only` source
			       * (log the verdict), write nothing, then serve */
	bool qemu;	      /* incoming: QEMU 7.2's stream, not the native one */
	bool no_compress;     /* incoming: refuse compressed chunks (dst_params) */
	bool cache_none;      /* incoming: --cache none (O_DIRECT where the file system
			       * takes it); false: writeback, through the page cache */
	unsigned max_refused; /* incoming: give up after this many refused
			       * connections (0: INCOMING_MAX_FAILURES) */
	uint64_t retry_ns;    /* incoming: wait this long for a source whose
			       * connection failed to resume (0: fail at once) */
	/* Serve images this daemon handed over to another (their record of
	 * the hand-over is removed); without, they are refused. */
	bool reclaim;
	const struct workload_spec *workload; /* the built-in writer, or NULL */
	/* TLS (--tls-psk/--tls-creds/--tls-authz): server credentials for the
	 * incoming migration and the NBD exports (which then require TLS:
	 * nbds_set_tls()), and, unless a migrate command names its own,
	 * client credentials for outgoing migrations, loaded when one
	 * starts.  No files: none. */
	struct tls_options tls;
	/* Ends the wait for, or the receiving of, the incoming migration
	 * (-ECANCELED); NULL: never. */
	struct cancel *cancel;
	/* NBD client limits (nbdserver/server.h's nbds_limits); 0: the
	 * default.  nbd_idle_timeout_ms < 0: never close idle clients. */
	unsigned nbd_max_per_peer, nbd_max_unauth;
	int nbd_idle_timeout_ms;
	/* Lines for the operator (refused NBD clients...), without "blkmig: "
	 * or a newline; NULL: dropped.  Called from any thread, one at a time. */
	void (*log)(void *user, const char *line);
	void *log_user;
};

/*
 * Whether cfg makes sense: 0, or -EINVAL (err_set) for no devices, too
 * many, a name given twice, a workload naming no writable device,
 * create/shared-base/qemu without incoming, create with qemu, max_size
 * without create, or a size= without incoming or on a read-only device.
 */
int daemon_check_config(const struct daemon_config *cfg);

/*
 * Check cfg (daemon_check_config()), load the TLS credentials, and start listening: NBD at
 * cfg->nbd (with TLS and the limits set), refusing clients until
 * daemon_start() has finished, and the incoming address.  0 with *out set (caller owns it,
 * daemon_free()), or a negative errno with err_set().
 */
int daemon_new(const struct daemon_config *cfg, struct daemon **out);

/* "HOST:PORT" with the real port; the incoming one is "" without
 * cfg->incoming.  Valid until daemon_free(). */
const char *daemon_nbd_addr(const struct daemon *d);
const char *daemon_incoming_addr(const struct daemon *d);

/*
 * With cfg->incoming: accept one migration into the devices and wait until
 * it is complete and verified (blocks; -ECANCELED through cfg->cancel).
 * Then open the devices (refusing one marked incomplete, -EUCLEAN), export
 * them, start the workload writer and the control socket, and let NBD
 * clients in.  Once only.  0 or a negative errno with err_set(); on failure
 * the daemon can only be freed.
 */
int daemon_start(struct daemon *d);

/*
 * Run control command cmd with args (borrowed; NULL: none) -- the same
 * entry point the control socket uses.  The arguments are checked against
 * the command's schema first; a missing, unknown, mistyped or out-of-range
 * one is refused with *err_class = CTL_ERR_INVALID_PARAM before the command
 * runs.  Returns the "return" value (caller puts it), or NULL with
 * *err_class set (CTL_ERR_*) and a message in err (err_cap >= 256).
 * Before daemon_start() has succeeded, every well-formed command gets a
 * GenericError ("the daemon is not serving yet").
 */
json_object *daemon_execute(struct daemon *d, const char *cmd, json_object *args,
			    const char **err_class, char *err, size_t err_cap);

/*
 * Cancel a running migration and wait for it, close the control socket,
 * stop the writer, the NBD server and the devices, free.  Accepts NULL.
 */
void daemon_free(struct daemon *d);

/*
 * The destination's device opener (dst_open_fn) over a device list, for
 * every receiver (serve --incoming, receive).  The operator, not the
 * source, bounds what is opened or made (DESIGN.md rule 8), and every
 * claim is checked before a file is created:
 *
 *  - the source's name must be listed and not read-only;
 *  - a device with a size (size=) takes exactly that size: another claim is
 *    refused (-EINVAL), and so is an image of another size;
 *  - with create, a path where nothing exists is created (O_EXCL |
 *    O_NOFOLLOW, marked incomplete before it exists, *created set) with
 *    the device's size, or the claim if it has none and the claim is at
 *    most max_size (else -EFBIG, nothing created); an empty regular file
 *    is marked, then grown, under the same bounds;
 *  - an existing image is opened as it is (symlinks followed: /dev/disk/
 *    by-id), its size checked by dst_run().
 */
struct daemon_incoming {
	const struct daemon_device *devs;
	unsigned ndev;
	bool create;
	uint64_t max_size; /* 0: DAEMON_DEFAULT_MAX_SIZE */
	bool cache_none;   /* O_DIRECT where taken; false: through the page cache */
	/* One line when an image refuses O_DIRECT (NULL: none). */
	void (*log)(void *user, const char *line);
	void *log_user;
	/* Filled in: the file each device was received into (device, inode),
	 * which the daemon then serves and no other. */
	bool known[DAEMON_MAX_DEVICES];
	uint64_t st_dev[DAEMON_MAX_DEVICES], st_ino[DAEMON_MAX_DEVICES];
};
int daemon_incoming_open(void *user, const char *name, uint64_t size, struct blk **out, char *path,
			 size_t path_cap, bool *created);

#endif
