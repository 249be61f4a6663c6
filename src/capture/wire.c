/* SPDX-License-Identifier: MIT */
/* capture/wire — the relay's own frames on the host's interfaces (see wire.h). */
#include "capture/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "capture/capture.h"
#include "capture/ctwatch.h"
#include "capture/match.h"
#include "capture/pcapng.h"
#include "util/log.h"

#define WIRE_BLOCK_SIZE (1u << 20)
#define WIRE_BLOCKS 32u
#define WIRE_RETIRE_MS 20u
#define WIRE_MAX_IFS CAPTURE_MAX_IFS

#ifndef ARPHRD_RAWIP
#define ARPHRD_RAWIP 519
#endif

struct wire_if {
	int ifindex;
	int ifid;                      /* in the capture; -1: a link type we do not write */
	bool loopback;
};

struct wire {
	struct capture *cap;
	int fd;
	struct ct_watch *ct;           /* --root: the routed flows, from conntrack (or NULL) */
	char backend[32];
	char uplink[IF_NAMESIZE];      /* --root: the run's own uplink (pre-NAT frames), not described */
	const char *view, *kind;       /* the interfaces' metadata */
	struct wire_if ifs[WIRE_MAX_IFS];
	int n_ifs;
	struct match_set *set;         /* the tree's tuples on the host's wire */
	struct flow_tap tap;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void tap_sock(void *priv, int fd, int type, bool open)
{
	struct wire *w = priv;
	union flow_addr local = { 0 };
	socklen_t ll = sizeof(local);

	if (getsockname(fd, &local.sa, &ll) < 0 || (local.sa.sa_family != AF_INET && local.sa.sa_family != AF_INET6))
		return;
	if (match_sock(w->set, fd, type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP, &local, open, now_ns()) < 0)
		log_debug("wire capture: out of memory: a socket's frames will be missing");
}

/* A routed flow of the tree's (ct_flow_fn), or a relay's echo flow: matched by its tuple on the
 * host's wire, never by fd. */
static void ct_flow(void *priv, uint8_t proto, const union flow_addr *local, const union flow_addr *peer, bool open)
{
	struct wire *w = priv;

	if (match_flow(w->set, proto, local, peer, open, now_ns()) < 0)
		log_debug("wire capture: out of memory: a flow's frames will be missing");
}

static void tap_echo_flow(void *priv, const union flow_addr *local, const union flow_addr *peer, bool open)
{
	ct_flow(priv, local->sa.sa_family == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, local, peer, open);
}

/* capture_prep_fn: before a block is sorted, learn every routed flow whose frames it may hold. */
static void prep_block(void *priv)
{
	struct wire *w = priv;

	if (w->ct)
		ct_watch_drain(w->ct, ct_flow, w);
}

static uint16_t linktype_of(int hatype, bool *ok)
{
	*ok = true;
	switch (hatype) {
	case ARPHRD_ETHER:
	case ARPHRD_LOOPBACK:
		return PCAPNG_LINKTYPE_ETHERNET;
	case ARPHRD_NONE:
	case ARPHRD_RAWIP:
		return PCAPNG_LINKTYPE_RAW;
	default:
		*ok = false;
		return 0;
	}
}

/* Describe interface @ifindex (@name) in the capture.  Return: its entry, or NULL. */
static struct wire_if *add_if(struct wire *w, int ifindex, const char *name, int hatype)
{
	struct wire_if *wi;
	char desc[256];
	bool ok;
	uint16_t lt = linktype_of(hatype, &ok);

	if (w->n_ifs >= WIRE_MAX_IFS)
		return NULL;
	wi = &w->ifs[w->n_ifs++];
	wi->ifindex = ifindex;
	wi->loopback = hatype == ARPHRD_LOOPBACK;
	wi->ifid = -1;
	if (!ok) {
		log_debug("wire capture: %s has link type %d, which is not written", name, hatype);
		return wi;
	}
	snprintf(desc, sizeof(desc), "childflow view=%s backend=%s kind=%s interface=%s", w->view, w->backend,
		 w->kind, name);
	wi->ifid = capture_add_if(w->cap, lt, name, desc);
	if (wi->ifid < 0)
		wi->ifid = -1;   /* not written (a write error was told) */
	return wi;
}

static int hatype_of(const char *name)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), t = -1;

	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) == 0)
		t = ifr.ifr_hwaddr.sa_family;
	close(fd);
	return t;
}

/* The frame's interface; one not described yet (it appeared during the run) is when @add. */
static struct wire_if *if_for(struct wire *w, const struct sockaddr_ll *sll, bool add)
{
	char name[IF_NAMESIZE];

	for (int i = 0; i < w->n_ifs; i++)
		if (w->ifs[i].ifindex == sll->sll_ifindex)
			return &w->ifs[i];
	if (!add)
		return NULL;
	if (!if_indextoname((unsigned int)sll->sll_ifindex, name))
		snprintf(name, sizeof(name), "if%d", sll->sll_ifindex);
	return add_if(w, sll->sll_ifindex, name, sll->sll_hatype);
}

/* The frame's interface in the capture when it is one of the relay's sockets' frames, else -1. */
static int sort_frame(void *priv, const unsigned char *p, uint32_t len, const struct sockaddr_ll *sll,
		      uint64_t ts)
{
	struct wire *w = priv;
	struct wire_if *wi = if_for(w, sll, false);
	bool out = sll->sll_pkttype == PACKET_OUTGOING;
	bool loopback = wi ? wi->loopback : sll->sll_hatype == ARPHRD_LOOPBACK;

	if (wi && wi->ifid < 0)
		return -1;
	if (loopback && out)
		return -1;   /* loopback shows each packet twice: keep the one received */
	if (!match_frame(w->set, p, len, loopback || sll->sll_hatype == ARPHRD_ETHER, ts))
		return -1;
	/* An interface that appeared during the run is described at its first frame of ours. */
	if (!wi && !(wi = if_for(w, sll, true)))
		return -1;
	return wi->ifid;
}

struct wire *wire_open(const char *backend, bool routed, bool egress_view)
{
	struct tpacket_req3 req = {
		.tp_block_size = WIRE_BLOCK_SIZE,
		.tp_block_nr = WIRE_BLOCKS,
		.tp_frame_size = 2048,
		.tp_frame_nr = WIRE_BLOCK_SIZE / 2048 * WIRE_BLOCKS,
		.tp_retire_blk_tov = WIRE_RETIRE_MS,
	};
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = 0 };
	struct wire *w = calloc(1, sizeof(*w));
	int v3 = TPACKET_V3;

	if (!w || !(w->set = match_new())) {
		log_error("cannot start the capture: %s", strerror(ENOMEM));
		free(w);
		return NULL;
	}
	snprintf(w->backend, sizeof(w->backend), "%s", backend);
	w->view = egress_view ? "egress" : "wire-egress";
	w->kind = egress_view ? "captured" : "wire";
	/* Subscribed before the command exists: no flow of the tree's can start unseen. */
	if (routed && !(w->ct = ct_watch_open())) {
		match_free(w->set);
		free(w);
		return NULL;
	}
	w->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (w->fd < 0) {
		if (errno == EPERM || errno == EACCES)
			log_error("error: `--capture-point wire-egress` reads the host's interfaces and needs "
				  "CAP_NET_RAW in this network namespace (run as root); `-C egress` shows the same "
				  "flows without privilege");
		else
			log_error("error: cannot open the wire-egress capture: %s", strerror(errno));
		ct_watch_free(w->ct);
		match_free(w->set);
		free(w);
		return NULL;
	}
	if (setsockopt(w->fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3)) < 0 ||
	    setsockopt(w->fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0 ||
	    bind(w->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		log_error("error: cannot open the wire-egress capture: %s", strerror(errno));
		wire_free(w);
		return NULL;
	}
	w->tap = (struct flow_tap){ .sock = tap_sock, .echo_flow = tap_echo_flow, .priv = w };
	return w;
}

int wire_describe(struct wire *w, struct capture *cap)
{
	struct if_nameindex *ni = if_nameindex();

	w->cap = cap;
	for (struct if_nameindex *i = ni; i && i->if_index; i++)
		if (strcmp(i->if_name, w->uplink) != 0 && !add_if(w, (int)i->if_index, i->if_name, hatype_of(i->if_name)))
			break;   /* the table is full */
	if (ni)
		if_freenameindex(ni);
	for (int i = 0; i < w->n_ifs; i++)
		if (w->ifs[i].ifid >= 0)
			return 0;
	log_error("error: cannot start the wire-egress capture: no interface to read");
	return -ENODEV;
}

int wire_attach(struct wire *w)
{
	int drop_ifid = -1;

	for (int i = 0; i < w->n_ifs && drop_ifid < 0; i++)
		drop_ifid = w->ifs[i].ifid;
	return capture_attach_sorted(w->cap, w->fd, WIRE_BLOCK_SIZE, WIRE_BLOCKS, sort_frame, prep_block, w,
				     drop_ifid);
}

void wire_routed(struct wire *w, const struct in_addr *v4, const struct in6_addr *v6, const char *uplink)
{
	if (w->ct)
		ct_watch_source(w->ct, v4, v6);
	snprintf(w->uplink, sizeof(w->uplink), "%s", uplink);
}

const struct flow_tap *wire_tap(struct wire *w)
{
	return &w->tap;
}

void wire_free(struct wire *w)
{
	if (!w)
		return;
	match_free(w->set);
	if (w->fd >= 0)
		close(w->fd);
	ct_watch_free(w->ct);
	free(w);
}
