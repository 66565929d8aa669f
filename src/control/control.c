/* SPDX-License-Identifier: MIT */
/*
 * Control socket: what both halves share — the socket address, and turning
 * protocol lines into JSON values and back.  The server is in server.c, the
 * client in client.c; the protocol is described in docs/control.md.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "ctl-impl.h"

/* Deeper nesting than any command needs; json-c refuses beyond it. */
#define CTL_JSON_DEPTH 32

int ctl_sockaddr(const char *path, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n;

	if (!path || !*path)
		return err_set(EINVAL, "control socket path is empty");
	n = strlen(path);
	memset(sa, 0, sizeof(*sa));
	if (n >= sizeof(sa->sun_path))
		return err_set(ENAMETOOLONG,
			       "control socket path %s is too long (%zu bytes, at most %zu)", path,
			       n, sizeof(sa->sun_path) - 1);
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, n + 1);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

int ctl_parse_line(char *line, size_t len, json_object **out, char *msg, size_t msg_cap)
{
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	json_object *o;
	size_t start = 0;

	*out = NULL;
	while (len > 0 && is_blank(line[len - 1]))
		len--;
	while (start < len && is_blank(line[start]))
		start++;
	if (start == len)
		return 1;
	if (memchr(line, '\0', len)) {
		snprintf(msg, msg_cap, "invalid JSON: NUL byte at byte %zu",
			 (size_t)((char *)memchr(line, '\0', len) - line));
		return -EBADMSG;
	}
	/* The terminating NUL is part of the input: it tells json-c that a
	 * bare number or literal at the end is complete, and (strict mode)
	 * anything but whitespace after the value is an error. */
	line[len] = '\0';
	tok = json_tokener_new_ex(CTL_JSON_DEPTH);
	if (!tok) {
		snprintf(msg, msg_cap, "out of memory");
		return -ENOMEM;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	o = json_tokener_parse_ex(tok, line, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	/* A JSON null parses as NULL with success. */
	if (jerr != json_tokener_success) {
		snprintf(msg, msg_cap, "invalid JSON: %s at byte %zu",
			 json_tokener_error_desc(jerr), json_tokener_get_parse_end(tok));
		json_object_put(o);
		json_tokener_free(tok);
		return -EBADMSG;
	}
	json_tokener_free(tok);
	*out = o;
	return 0;
}

char *ctl_to_line(json_object *o, size_t *len)
{
	size_t n;
	const char *s;
	char *line;

	/* PLAIN never emits a newline: newlines inside strings are escaped. */
	s = json_object_to_json_string_length(
	    o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (!s)
		return NULL;
	line = malloc(n + 1);
	if (!line)
		return NULL;
	memcpy(line, s, n);
	line[n] = '\n';
	*len = n + 1;
	return line;
}

int ctl_obj_add(json_object *o, const char *key, json_object *v)
{
	if (!v)
		return -ENOMEM;
	if (json_object_object_add(o, key, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}
