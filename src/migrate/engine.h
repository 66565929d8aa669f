/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by source.c and dest.c. */
#ifndef BLKMIG_MIGRATE_ENGINE_H
#define BLKMIG_MIGRATE_ENGINE_H

#include <stddef.h>
#include <stdio.h>

#include "migrate.h"

/* A wire_read_fn (wire/stream.h) over a transport (user = struct xport *):
 * the engines read everything the peer says through wire_stream. */
int engine_xport_read(void *user, void *buf, size_t len, size_t *got);

/* Send ERROR or ABORT with a reason, flushed. */
int engine_send_error(struct xport *x, enum native_msg type, int err, const char *reason);

#endif
