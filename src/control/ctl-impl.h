/* SPDX-License-Identifier: MIT */
/*
 * Private helpers shared by the two halves of the control socket
 * (server.c, client.c).  Not part of the module's contract: see control.h.
 */
#ifndef BLKMIG_CONTROL_CTL_IMPL_H
#define BLKMIG_CONTROL_CTL_IMPL_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <json-c/json.h>

/* Fill a unix socket address for path.  0, or -ENAMETOOLONG / -EINVAL with
 * err_set(). */
int ctl_sockaddr(const char *path, struct sockaddr_un *sa, socklen_t *len);

/*
 * Parse one protocol line (len bytes at line, without its "\n"; line[len]
 * must be writable: it is overwritten with a NUL).  Returns 1 for a blank
 * line; 0 with *out set to the new value of any JSON type (NULL for a JSON
 * null; caller puts it); or -EBADMSG with a description ("invalid JSON: ...
 * at byte N") in msg, -ENOMEM likewise.
 */
int ctl_parse_line(char *line, size_t len, json_object **out, char *msg, size_t msg_cap);

/* Serialise o as one protocol line: compact JSON plus "\n".  Returns a
 * malloc'd string (caller frees) with its length in *len, or NULL on
 * ENOMEM. */
char *ctl_to_line(json_object *o, size_t *len);

/* json_object_object_add that consumes v and reports failure (-ENOMEM),
 * including a NULL v from a failed constructor. */
int ctl_obj_add(json_object *o, const char *key, json_object *v);

#endif
