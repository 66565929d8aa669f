/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by source.c and dest.c. */
#ifndef BLKMIG_MIGRATE_ENGINE_H
#define BLKMIG_MIGRATE_ENGINE_H

#include <stdio.h>

#include "migrate.h"

/* Read one framed native message whose type is in 'allowed' into body
 * (NATIVE_MSG_MAX bytes).  0 or negative errno. */
int engine_read_frame(struct xport *x, uint64_t allowed, uint8_t *type, uint8_t *body,
		      uint32_t *len);

/* Send ERROR or ABORT with a reason, flushed. */
int engine_send_error(struct xport *x, enum native_msg type, int err, const char *reason);

#endif
