/* SPDX-License-Identifier: MIT */
/*
 * Control socket: a QMP-style protocol of JSON lines over a unix stream
 * socket.  `blkmig serve --control PATH` runs the server half (ctl_listen);
 * `blkmig migrate/status/cancel` use the client half (ctl_connect).  The
 * module knows no commands itself: every command goes to one handler the
 * owner supplies, so the CLI decides what "migrate" or "query-migrate" mean.
 * The wire protocol is documented, with examples, in docs/control.md.
 *
 * Server threads: one accept thread and one thread per connected client.
 * Each client thread reads, parses and answers its own lines and writes its
 * own output queue; events are appended to every queue, never written from
 * the caller's thread.  A client whose socket accepts nothing for
 * CTL_STALL_MS while output is pending is dropped.
 */
#ifndef BLKMIG_CONTROL_CONTROL_H
#define BLKMIG_CONTROL_CONTROL_H

#include <stddef.h>

#include <json-c/json.h>

#define CTL_VERSION "0.1.0"

/* Longest client line the server accepts, not counting the "\n".  A longer
 * line gets one GenericError reply, then the connection is closed. */
#define CTL_MAX_LINE (64 * 1024)
/* Longest server line the client accepts (replies can carry big queries). */
#define CTL_MAX_REPLY_LINE (16 * 1024 * 1024)
/* A client whose socket stays full this long while output is pending is
 * disconnected. */
#define CTL_STALL_MS 1000
/* Connections beyond this many are told so and closed. */
#define CTL_MAX_CLIENTS 64

/* Error classes a handler may put in *err_class (the protocol's "class"). */
#define CTL_ERR_GENERIC	      "GenericError"
#define CTL_ERR_NOT_FOUND     "CommandNotFound"
#define CTL_ERR_INVALID_PARAM "InvalidParameter"

/* ---- server -------------------------------------------------------------- */

struct ctl;

/*
 * A command handler.  Called from a client thread of the server, one call
 * at a time per server (a mutex serialises them, so handlers need not be
 * reentrant), with no other control lock held: a handler may call
 * ctl_event() (the event then reaches its own client before the reply) but
 * must not call ctl_close().
 *
 * cmd is the "execute" name; args is never NULL (an empty object when the
 * command had no "arguments") and is borrowed: take a reference
 * (json_object_get) to keep any part of it.
 *
 * Return a new json_object, owned by the caller, for "return" (usually an
 * object, may be empty), or NULL for an error reply: then set *err_class to
 * one of the CTL_ERR_* strings (left NULL: GenericError) and write a
 * NUL-terminated description into err (err_cap >= 256; left empty:
 * "command failed").  Any other class string is sent as GenericError.
 */
typedef json_object *(*ctl_handler_fn)(void *user, const char *cmd, json_object *args,
				       const char **err_class, char *err, size_t err_cap);

/*
 * Create the control socket at path (mode 0600 whatever the umask) and start
 * serving it.  Refuses with -EADDRINUSE ("control socket PATH is in use")
 * when a live server answers on path, with -EEXIST when path exists and is
 * not a socket; a socket file nobody listens on (a dead daemon's) is
 * replaced.  Returns 0 with *out set (caller owns it, ctl_close()), or a
 * negative errno with err_set().  Blocks only briefly.
 */
int ctl_listen(const char *path, ctl_handler_fn fn, void *user, struct ctl **out);

/*
 * Broadcast an event to every connected client.  Takes ownership of data
 * (NULL: no "data" member).  Thread-safe, callable from a handler; it only
 * queues the line and never waits for a client (a client that stops reading
 * is dropped by its own thread after CTL_STALL_MS).  c may be NULL (the
 * data is freed, nothing is sent).
 */
void ctl_event(struct ctl *c, const char *event, json_object *data);

/*
 * Stop accepting, remove the socket file (if it is still ours), disconnect
 * every client (queued output is flushed if the socket takes it at once),
 * join all threads and free c.  Accepts NULL.  Must not be called from a
 * handler.
 */
void ctl_close(struct ctl *c);

/* ---- client -------------------------------------------------------------- */

struct ctl_client;

/*
 * Connect to the server at path and read and check its greeting.
 * timeout_ms (-1: none) bounds the connect plus greeting, and later each
 * wait for a reply in ctl_call().  Errors: "cannot connect to control socket
 * PATH: No such file or directory" (-ENOENT) and the like; -ETIMEDOUT when
 * no greeting arrives; -EPROTO when it is not a blkmig greeting.
 * 0 with *out set (caller owns it, ctl_client_close()), or negative errno.
 */
int ctl_connect(const char *path, int timeout_ms, struct ctl_client **out);

/*
 * Send command cmd with args (owned, even on failure; NULL: no
 * "arguments") and wait for its reply.  Events that arrive first are handed
 * to on_event (data borrowed for the duration of the call) or, when
 * on_event is NULL, dropped.  Returns 0 with *ret set to the "return" value
 * (caller puts it; ret may be NULL to discard it); -EREMOTEIO on an error
 * reply, with err_set("%s", desc); -ETIMEDOUT, -ECONNRESET, -EPROTO, ...
 * on failure.  Transport failures are sticky: every later call returns the
 * same code.  One thread at a time per client.
 */
int ctl_call(struct ctl_client *c, const char *cmd, json_object *args, json_object **ret,
	     void (*on_event)(void *user, const char *event, json_object *data), void *user);

/*
 * Wait up to timeout_ms (-1: forever) for the next event.  0 with the name
 * copied into event_name (truncated to name_cap - 1 bytes) and *data set
 * (caller owns it; an empty object when the event had no data);
 * -ETIMEDOUT; or a negative errno (-ECONNRESET when the server went away).
 */
int ctl_next_event(struct ctl_client *c, int timeout_ms, char *event_name, size_t name_cap,
		   json_object **data);

void ctl_client_close(struct ctl_client *c); /* accepts NULL */

#endif
