/* SPDX-License-Identifier: MIT */
/*
 * gwproto — the typed messages between P, G and C (SOCK_SEQPACKET: one message per send).
 *
 * Every message is a struct gw_msg header followed by @len payload bytes, with up to FDPASS_MAX
 * fds (SCM_RIGHTS).  A receiver checks the op it expects, the payload length and the fd count,
 * and closes the fds of any message it rejects.  New kinds of sockets that must be created in N1
 * (packet, raw, NFQUEUE) get ops of their own; old ops keep their meaning.
 *
 * Setup, P<->G:   G->P HELLO_UNSHARED          U1+N1 exist: P writes G's uid/gid maps
 *                 P->G IDMAP_PLAN              payload: C's uid_map "\0" gid_map "\0"
 *                 G->P LISTENERS               count fds, payload: one enum be_listener per fd
 *                                              (GW_KIND_GATE: the SYN gate's queue socket;
 *                                              GW_KIND_ECHO: the echo requests' queue socket;
 *                                              GW_KIND_INJECT4/6: raw sockets for ICMP errors;
 *                                              GW_KIND_CAPTURE: the capture's packet socket)
 *                 G->P UDP_SOCKETS (unasked)   SANDBOX_POOL_FILL per offered family, in batches
 *                 G->P CHILD_NETNS             1 fd: N2 (kept until the relay has drained)
 *                 G->P CMD_STARTED             init runs and its pid is in the shared page; fds: the
 *                                              child's resolv.conf files, writable (C_INIT_STARTED's)
 * Service, P<->G: P->G UDP_SOCKETS             family, count <= FDPASS_MAX: please create
 *                 G->P UDP_SOCKETS             family, count fds, err (-errno when short),
 *                                              payload: struct gw_udp_reply
 * Setup, G<->C:   C->G C_UNSHARED              U2+N2 exist: G writes C's maps, creates the veth
 *                 G->C C_LINK_READY            veth and gw0 configured: C configures eth0
 *                 C->G C_LINK_UP               eth0 is operational: G checks gw0 likewise
 *                 G->C C_GO                    both ends carry frames: C starts init
 *                 C->G C_INIT_STARTED          init's pid is published (forwarded as CMD_STARTED);
 *                                              fds: the child's resolv.conf files (etcfiles.c)
 */
#ifndef CHILDFLOW_GWPROTO_H
#define CHILDFLOW_GWPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "util/fdpass.h"

/* In LISTENERS, kinds after the enum be_listener ones: the SYN gate's NFQUEUE socket, the raw
 * sockets that send the child ICMP errors (IPv4, IPv6), and the capture's AF_PACKET socket (its ring
 * set up; bound to gw0 by G once gw0 exists, before it is up). */
#define GW_KIND_GATE BE_NLISTEN
#define GW_KIND_INJECT4 (BE_NLISTEN + 1)
#define GW_KIND_INJECT6 (BE_NLISTEN + 2)
#define GW_KIND_CAPTURE (BE_NLISTEN + 3)
#define GW_KIND_ECHO (BE_NLISTEN + 4)
#define GW_KINDS_MAX (BE_NLISTEN + 5)

enum gw_op {
	GW_HELLO_UNSHARED = 1,
	GW_IDMAP_PLAN,
	GW_LISTENERS,
	GW_CHILD_NETNS,
	GW_CMD_STARTED,
	GW_UDP_SOCKETS,
	GW_PACKET_SOCKET,   /* reserved (the capture's socket travels in LISTENERS) */
	GW_RAW_SOCKET,      /* reserved: raw ICMP in N1 */
	GW_C_UNSHARED = 32,
	GW_C_LINK_READY,
	GW_C_LINK_UP,
	GW_C_GO,
	GW_C_INIT_STARTED,
};

struct gw_msg {
	uint16_t op;
	uint16_t family;    /* AF_INET/AF_INET6 for socket ops, else 0 */
	uint16_t count;     /* sockets asked for, or fds attached */
	int16_t err;        /* -errno of a (partly) failed request, else 0 */
	uint32_t len;       /* payload bytes after the header */
};

/* The payload of a UDP_SOCKETS reply: how many the request asked for (the pool's in-flight count). */
struct gw_udp_reply {
	uint16_t asked;
};

#define GW_MAX_PAYLOAD 512

/* gw_send() - send header @h (h->len is set from @len) with @payload and @nfds fds.  Return: 0 or -errno. */
int gw_send(int sock, struct gw_msg h, const void *payload, size_t len, const int *fds, int nfds);

/* gw_send_op() - a bare step message.  Return: 0 or -errno. */
int gw_send_op(int sock, enum gw_op op);

/*
 * gw_recv() - receive one message: header into @h, payload (up to @max bytes) into @payload, fds
 * (at most @maxfds; h->count is checked against them when @fds_counted) into @fds.  @flags:
 * recvmsg() flags (MSG_DONTWAIT).  A malformed message has its fds closed.
 * Return: 0; -EPIPE when the peer is gone; -EAGAIN; -EBADMSG (malformed); or another -errno.
 */
int gw_recv(int sock, struct gw_msg *h, void *payload, size_t max, int *fds, int maxfds, int *nfds,
	    int flags);

/* gw_expect() - block for a bare message of type @op.  Return: 0, or -1 when anything else came. */
int gw_expect(int sock, enum gw_op op);

/* gw_close_fds() - close @n fds (a rejected message's). */
void gw_close_fds(const int *fds, int n);

#endif
