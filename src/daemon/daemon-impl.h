/* SPDX-License-Identifier: MIT */
/*
 * Inside the daemon module: struct daemon, shared by daemon.c (lifecycle,
 * block stack, incoming, switch-over) and commands.c (the control command
 * table and its argument schemas).  Not for use outside src/daemon/.
 */
#ifndef BLKMIG_DAEMON_DAEMON_IMPL_H
#define BLKMIG_DAEMON_DAEMON_IMPL_H

#include <pthread.h>

#include "daemon.h"
#include "migrate/migrate.h"

struct ctl;
struct job;
struct nbds;
struct workload;

/*
 * Forwarding after the switch-over (migrate's after=forward): what the
 * migrate command asked for, and once the hand-over hook has redirected
 * the devices, where to.  Under daemon.lock; blk[] (one per sdev) is
 * written once, by the hook, and closed by daemon_free().
 */
struct daemon_fwd {
	bool wanted;	     /* the running migration forwards */
	char to[300];	     /* forward-to, or "" for the announced export */
	char psk_file[4096]; /* the migration's client credentials, for libnbd */
	char x509_dir[4096];
	char psk_user[130];
	bool started;	/* handed over: the way (wanted) is fixed from now on */
	bool active;	/* devices redirected: clients are forwarded */
	char addr[300]; /* where to, "HOST:PORT" */
	struct blk *blk[DAEMON_MAX_DEVICES];
};

struct daemon {
	struct daemon_config cfg; /* cfg.devs points at devs */
	struct daemon_device devs[DAEMON_MAX_DEVICES];
	struct blk *blks[DAEMON_MAX_DEVICES];	    /* tracking layers, once started */
	struct src_device sdev[DAEMON_MAX_DEVICES]; /* the writable ones */
	unsigned nsend;
	struct nbds *nbd;
	int incoming_lfd; /* -1 once used, or without cfg.incoming */
	char nbd_addr[128], incoming_addr[128];
	bool started; /* daemon_start() succeeded */
	struct job *job;
	struct workload *wl;	      /* or NULL */
	struct ctl *ctl;	      /* or NULL */
	struct tls_creds *tls_server; /* from cfg.tls; NULL without TLS */
	struct daemon_incoming in;    /* the incoming migration's devices */

	pthread_mutex_t cmd_lock; /* one command at a time; guards what follows */
	uint64_t max_bandwidth;	  /* for the next migrate without it */
	uint64_t max_downtime_ns;
	enum mig_mode mode;
	unsigned mirror_share; /* 0: not set (the default, native migrations only) */

	pthread_mutex_t lock;  /* guards migrated_to, fwd and ctl (read by the job's thread) */
	char migrated_to[256]; /* the last migrate's destination */
	struct daemon_fwd fwd;
};

/* daemon.c: the migrate job's hand-over hook (src_params.handover): record
 * with every migrated image that it now belongs to the destination. */
int daemon_handover(void *user, const struct src_session *s, uint32_t attempt);

/* commands.c: run one command (cmd_lock held). */
json_object *daemon_run_command_locked(struct daemon *d, const char *cmd, json_object *args,
				       const char **err_class, char *err, size_t err_cap);

#endif
