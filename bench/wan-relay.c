// SPDX-License-Identifier: MIT
/*
 * wan-relay: a long, narrow link between two network interfaces, for
 * bench/wan.sh.  It reads every frame that arrives on one interface with an
 * AF_PACKET socket and writes it out of the other one after the link's
 * one-way delay, like a router at the far end of a long cable.  TCP at the
 * two ends therefore sees a real round-trip time: its window limits
 * throughput exactly as on a long link, which a relay that terminates TCP
 * would hide.
 *
 *   wan-relay IFACE1 IFACE2 DELAY_US [RATE_BITS_PER_S [QUEUE_BYTES]]
 *
 * Each direction is a bottleneck link of RATE bits/s (0: no limit) behind a
 * drop-tail queue of QUEUE_BYTES (default: 1 MiB), followed by DELAY_US of
 * propagation delay.  A frame that arrives when the queue waiting for the
 * link already holds QUEUE_BYTES is dropped, as a router drops it.  The
 * rate counts what a frame costs on an Ethernet wire: each TCP segment's
 * own headers, preamble, frame check sequence and inter-frame gap.
 *
 * The sockets use PACKET_VNET_HDR, so the kernel hands over TSO/GSO frames
 * of up to 64 KiB whole, with a virtio_net_hdr in front saying how to cut
 * them into segments, and accepts them back the same way: one read and one
 * write per 64 KiB instead of per 1.5 KiB, which is what lets one thread
 * carry 1 Gbit/s.  Statistics go to stderr on SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX   (256 * 1024)   /* more than a GSO frame can be */
#define HELD_MAX    (512ULL << 20) /* bytes held per direction, whatever the delay */
#define SEG_HEADERS 66		   /* Ethernet 14 + IPv4 20 + TCP 32, per extra segment */
#define WIRE_EXTRA  24		   /* preamble 8 + FCS 4 + gap 12, per segment */
#define NS	    1000000000ULL

struct pkt {
	struct pkt *next;
	uint64_t due; /* CLOCK_MONOTONIC ns when it leaves */
	size_t len;   /* virtio_net_hdr + frame */
	unsigned char data[];
};

struct dir {
	const char *from, *to;
	int in, out;
	struct pkt *head, *tail;
	uint64_t link_free; /* when the bottleneck finishes its last frame */
	uint64_t held;	    /* bytes in head..tail */
	uint64_t frames, bytes, drop_queue, drop_send, drop_big;
};

static volatile sig_atomic_t stop;
static uint64_t delay_ns, rate_bps, queue_bytes = 1 << 20;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static int open_iface(const char *name)
{
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	int one = 1, rcvbuf = 32 << 20, sndbuf = 8 << 20;
	int fd;

	sll.sll_ifindex = (int)if_nametoindex(name);
	if (sll.sll_ifindex == 0) {
		fprintf(stderr, "wan-relay: no interface %s\n", name);
		exit(1);
	}
	/* Protocol 0 receives nothing until bind() names the interface. */
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0 ||
	    bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		fprintf(stderr, "wan-relay: %s: %s\n", name, strerror(errno));
		exit(1);
	}
	return fd;
}

/* What LEN bytes (virtio_net_hdr + frame) occupy on an Ethernet wire. */
static uint64_t wire_bytes(const unsigned char *data, size_t len)
{
	const struct virtio_net_hdr *vh = (const void *)data;
	uint64_t frame = len - sizeof(*vh), segs = 1;

	if (vh->gso_type != VIRTIO_NET_HDR_GSO_NONE && vh->gso_size > 0)
		segs = (frame + vh->gso_size - 1) / vh->gso_size;
	return frame + (segs - 1) * SEG_HEADERS + segs * WIRE_EXTRA;
}

/* One frame arrived on D->in at NOW: queue it, or drop it as a full router would. */
static void arrive(struct dir *d, const unsigned char *data, size_t len, uint64_t now)
{
	uint64_t due = now + delay_ns;
	struct pkt *p;

	if (rate_bps > 0) {
		uint64_t wire = wire_bytes(data, len);
		uint64_t start = d->link_free > now ? d->link_free : now;
		uint64_t backlog = (start - now) * rate_bps / 8 / NS;

		if (backlog + wire > queue_bytes && backlog > 0) {
			d->drop_queue++;
			return;
		}
		d->link_free = start + wire * 8 * NS / rate_bps;
		due = d->link_free + delay_ns;
	}
	if (d->held + len > HELD_MAX || !(p = malloc(sizeof(*p) + len))) {
		d->drop_queue++;
		return;
	}
	p->next = NULL;
	p->due = due;
	p->len = len;
	memcpy(p->data, data, len);
	if (d->tail)
		d->tail->next = p;
	else
		d->head = p;
	d->tail = p;
	d->held += len;
}

static void receive(struct dir *d, unsigned char *buf)
{
	/* A bounded batch, so that one busy direction cannot starve the other. */
	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(d->in, buf, FRAME_MAX, MSG_TRUNC);

		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				fprintf(stderr, "wan-relay: read %s: %s\n", d->from,
					strerror(errno));
			return;
		}
		if ((size_t)n > FRAME_MAX || (size_t)n <= sizeof(struct virtio_net_hdr)) {
			d->drop_big++;
			continue;
		}
		arrive(d, buf, (size_t)n, now_ns());
	}
}

/* Send what is due; returns 1 if the socket is full and must be waited for. */
static int deliver(struct dir *d, uint64_t now)
{
	while (d->head && d->head->due <= now) {
		struct pkt *p = d->head;

		if (send(d->out, p->data, p->len, 0) < 0) {
			if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)
				return 1;
			if (d->drop_send++ == 0)
				fprintf(stderr, "wan-relay: write %s: %s\n", d->to,
					strerror(errno));
		} else {
			d->frames++;
			d->bytes += p->len - sizeof(struct virtio_net_hdr);
		}
		d->head = p->next;
		if (!d->head)
			d->tail = NULL;
		d->held -= p->len;
		free(p);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static unsigned char buf[FRAME_MAX];
	struct dir dirs[2] = { 0 };
	struct sigaction sa = { .sa_handler = on_signal };

	if (argc < 4 || argc > 6) {
		fprintf(stderr, "usage: wan-relay IFACE1 IFACE2 DELAY_US [RATE_BITS_PER_S "
				"[QUEUE_BYTES]]\n");
		return 2;
	}
	delay_ns = strtoull(argv[3], NULL, 10) * 1000;
	if (argc > 4)
		rate_bps = strtoull(argv[4], NULL, 10);
	if (argc > 5)
		queue_bytes = strtoull(argv[5], NULL, 10);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	prctl(PR_SET_TIMERSLACK, 1UL); /* wake when a frame is due, not 50 us later */

	dirs[0].from = dirs[1].to = argv[1];
	dirs[0].to = dirs[1].from = argv[2];
	dirs[0].in = dirs[1].out = open_iface(argv[1]);
	dirs[0].out = dirs[1].in = open_iface(argv[2]);

	while (!stop) {
		struct pollfd pfd[2];
		struct timespec ts, *tmo = NULL;
		uint64_t now = now_ns(), next = UINT64_MAX;

		for (int i = 0; i < 2; i++) {
			pfd[i].fd = dirs[i].in;
			pfd[i].events = POLLIN;
		}
		for (int i = 0; i < 2; i++) {
			if (deliver(&dirs[i], now)) {
				/* The out socket is the other direction's in socket. */
				pfd[1 - i].events |= POLLOUT;
				if (next > now + 50000)
					next = now + 50000; /* ENOBUFS raises no POLLOUT */
			} else if (dirs[i].head && dirs[i].head->due < next) {
				next = dirs[i].head->due;
			}
		}
		if (next != UINT64_MAX) {
			uint64_t wait = next > now ? next - now : 0;

			ts.tv_sec = (time_t)(wait / NS);
			ts.tv_nsec = (long)(wait % NS);
			tmo = &ts;
		}
		if (ppoll(pfd, 2, tmo, NULL) < 0 && errno != EINTR) {
			perror("wan-relay: ppoll");
			return 1;
		}
		for (int i = 0; i < 2; i++)
			if (pfd[i].revents & POLLIN)
				receive(&dirs[i], buf);
	}
	for (int i = 0; i < 2; i++)
		fprintf(stderr,
			"wan-relay: %s -> %s: %" PRIu64 " frames, %" PRIu64
			" bytes; dropped %" PRIu64 " (queue full), %" PRIu64
			" (write failed), %" PRIu64 " (too big)\n",
			dirs[i].from, dirs[i].to, dirs[i].frames, dirs[i].bytes, dirs[i].drop_queue,
			dirs[i].drop_send, dirs[i].drop_big);
	return 0;
}
