/* SPDX-License-Identifier: MIT */
/*
 * Plain TCP transport: non-blocking socket, sendmsg/recv.  Listening,
 * accepting and connecting for every transport live in transport.c; this
 * file is only the byte mover.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/util.h"
#include "xport-impl.h"

struct tcp_xport {
	struct xport base;
};

static ssize_t tcp_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
	ssize_t n = sendmsg(x->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n < 0 && errno != EWOULDBLOCK && errno != EINTR)
		return err_set(errno, "%s", strerror(errno));
	return n < 0 ? -EAGAIN : n;
}

static ssize_t tcp_recv(struct xport *x, void *buf, size_t len)
{
	ssize_t n = recv(x->fd, buf, len, MSG_DONTWAIT);

	if (n < 0 && errno != EWOULDBLOCK && errno != EINTR)
		return err_set(errno, "%s", strerror(errno));
	return n < 0 ? -EAGAIN : n;
}

static void tcp_close(struct xport *x)
{
	struct tcp_xport *t = (struct tcp_xport *)x;

	close(x->fd);
	xport_base_destroy(x);
	free(t);
}

/* Field 'field' (0-based) of a /proc/sys file of numbers; -1 if unreadable. */
static long sysctl_field(const char *path, int field)
{
	FILE *f = fopen(path, "re");
	long v = -1;

	if (!f)
		return -1;
	for (int i = 0; i <= field; i++)
		if (fscanf(f, "%ld", &v) != 1) {
			v = -1;
			break;
		}
	fclose(f);
	return v;
}

void tcp_size_sndbuf(int fd)
{
	long core = sysctl_field("/proc/sys/net/core/wmem_max", 0);
	long autotune = sysctl_field("/proc/sys/net/ipv4/tcp_wmem", 2);
	int v;

	/* The kernel doubles what it is asked for, up to twice core; its
	 * autotuning stops at autotune.  Where asking gives more, ask (and
	 * give up autotuning, which could not have gone further); else, as on
	 * a stock kernel (core 208 KiB), leave it to the kernel. */
	if (core <= 0 || autotune <= 0 || core > INT32_MAX / 2 || 2 * core <= autotune)
		return;
	v = (int)core;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
}

void tcp_fix_rcvbuf(int fd)
{
	long core = sysctl_field("/proc/sys/net/core/rmem_max", 0);
	int v;

	if (core <= 0 || core > INT32_MAX / 2 || 2 * core < TCP_LANE_RCVBUF_MIN)
		return;
	v = (int)MIN(core, (long)TCP_LANE_RCVBUF_MAX);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	/* Kernels before 6.11 keep the window clamp the connection was set
	 * up with (about 64 KiB here) once the buffer is locked: raise it to
	 * what the buffer now holds. */
	setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &v, sizeof(v));
}

const struct xport_ops tcp_xport_ops = {
	.name = "tcp",
	.sendv = tcp_sendv,
	.recv = tcp_recv,
	.close = tcp_close,
};

int tcp_xport_new(int fd, const char *peer, struct xport **out)
{
	struct tcp_xport *t = calloc(1, sizeof(*t));
	int one = 1, r;

	if (!t)
		return -ENOMEM;
	r = xport_base_init(&t->base, &tcp_xport_ops, fd, peer);
	if (r < 0) {
		free(t);
		return r;
	}
	/* Coalescing is done by our own write buffer; small control messages
	 * (READY, ACK) must not wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*out = &t->base;
	return 0;
}
