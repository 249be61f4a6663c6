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
#include "capture/pcapng.h"
#include "util/log.h"

#define WIRE_BLOCK_SIZE (1u << 20)
#define WIRE_BLOCKS 32u
#define WIRE_RETIRE_MS 20u
#define WIRE_GRACE_MS 3000u          /* a closed socket's tuple still matches this long */
#define WIRE_KEEP_MS 10000u          /* ... and is forgotten after this long */
#define WIRE_BUCKETS 4096u
#define WIRE_MAX_IFS CAPTURE_MAX_IFS
#define WIRE_FRAGS 64u               /* first fragments kept whose later fragments are awaited */
#define WIRE_FRAG_MS 30000u          /* ... this long at most (the kernel's reassembly timeout) */

#ifndef ARPHRD_RAWIP
#define ARPHRD_RAWIP 519
#endif

/* One host-side socket of the relay's: its tuple, for as long as it may have frames. */
struct wire_sock {
	int fd;                        /* -1 once closed */
	uint8_t proto;                 /* IPPROTO_TCP, _UDP, or _ICMP/_ICMPV6 (the echo id as both ports) */
	bool have_peer;                /* connected: the peer is known (else matched on local alone) */
	union flow_addr local, peer;
	uint64_t closed_ns;            /* CLOCK_REALTIME; 0 while open */
	struct wire_sock *next;        /* hash chain (by proto and local endpoint) */
	struct wire_sock *next_closed; /* the closed ones, oldest first */
};

/* A kept first fragment of a datagram: its later fragments are kept too. */
struct wire_frag {
	uint64_t ts;                   /* when it was seen; 0: a free slot */
	uint32_t id;                   /* the IP identification (v4: 16 bits) or the v6 fragment id */
	uint8_t alen;
	unsigned char src[16], dst[16];
};

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
	struct wire_sock *hash[WIRE_BUCKETS];
	struct wire_sock *closed_head, *closed_tail;
	struct wire_frag frags[WIRE_FRAGS];
	unsigned int next_frag;        /* the slot the next first fragment takes (oldest first) */
	struct flow_tap tap;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The bucket of (@proto, address @addr of @alen bytes, @port in network order). */
static unsigned int bucket(uint8_t proto, const void *addr, size_t alen, uint16_t port)
{
	const unsigned char *p = addr;
	uint64_t h = 0xcbf29ce484222325ull ^ proto ^ ((uint64_t)port << 8);

	for (size_t i = 0; i < alen; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return (unsigned int)(h ^ h >> 29) & (WIRE_BUCKETS - 1);
}

static const void *addr_of(const union flow_addr *a, size_t *len, uint16_t *port)
{
	if (a->sa.sa_family == AF_INET6) {
		*len = 16;
		*port = a->in6.sin6_port;
		return &a->in6.sin6_addr;
	}
	*len = 4;
	*port = a->in4.sin_port;
	return &a->in4.sin_addr;
}

static unsigned int sock_bucket(const struct wire_sock *s)
{
	size_t len;
	uint16_t port;
	const void *a = addr_of(&s->local, &len, &port);

	return bucket(s->proto, a, len, port);
}

static bool same_ep(const union flow_addr *a, const void *addr, size_t alen, uint16_t port)
{
	size_t len;
	uint16_t p;
	const void *x = addr_of(a, &len, &p);

	return len == alen && p == port && !memcmp(x, addr, alen);
}

/* Forget closed sockets whose frames can no longer come. */
static void expire(struct wire *w, uint64_t now)
{
	while (w->closed_head && w->closed_head->closed_ns + WIRE_KEEP_MS * 1000000ull < now) {
		struct wire_sock *s = w->closed_head, **pp = &w->hash[sock_bucket(s)];

		w->closed_head = s->next_closed;
		if (!w->closed_head)
			w->closed_tail = NULL;
		while (*pp && *pp != s)
			pp = &(*pp)->next;
		if (*pp)
			*pp = s->next;
		free(s);
	}
}

/* @s ended at @now: its frames are matched WIRE_KEEP_MS more, then expire() forgets it. */
static void close_later(struct wire *w, struct wire_sock *s, uint64_t now)
{
	s->closed_ns = now;
	if (w->closed_tail)
		w->closed_tail->next_closed = s;
	else
		w->closed_head = s;
	w->closed_tail = s;
}

static void tap_sock(void *priv, int fd, int type, bool open)
{
	struct wire *w = priv;
	uint8_t proto = type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP;
	union flow_addr local = { 0 };
	socklen_t ll = sizeof(local);
	uint64_t now = now_ns();

	expire(w, now);
	if (getsockname(fd, &local.sa, &ll) < 0 || (local.sa.sa_family != AF_INET && local.sa.sa_family != AF_INET6))
		return;
	if (open) {
		struct wire_sock *s = calloc(1, sizeof(*s));
		socklen_t pl = sizeof(s->peer);
		unsigned int b;

		if (!s) {
			log_debug("wire capture: out of memory: a socket's frames will be missing");
			return;
		}
		s->fd = fd;
		s->proto = proto;
		s->local = local;
		s->have_peer = getpeername(fd, &s->peer.sa, &pl) == 0;
		b = sock_bucket(s);
		s->next = w->hash[b];
		w->hash[b] = s;
		return;
	}
	for (struct wire_sock *s = w->hash[sock_bucket(&(struct wire_sock){ .proto = proto, .local = local })]; s;
	     s = s->next) {
		if (s->fd != fd || s->proto != proto)
			continue;
		if (!s->have_peer) {
			socklen_t pl = sizeof(s->peer);

			s->have_peer = getpeername(fd, &s->peer.sa, &pl) == 0;
		}
		s->fd = -1;
		close_later(w, s, now);
		return;
	}
}

/* A routed flow of the tree's (ct_flow_fn), or a relay's echo flow: matched by its tuple on the
 * host's wire, never by fd. */
static void ct_flow(void *priv, uint8_t proto, const union flow_addr *local, const union flow_addr *peer, bool open)
{
	struct wire *w = priv;
	struct wire_sock probe = { .proto = proto, .local = *local };
	size_t alen;
	uint16_t port;
	const void *pa = addr_of(peer, &alen, &port);
	uint64_t now = now_ns();
	unsigned int b = sock_bucket(&probe);

	expire(w, now);
	for (struct wire_sock *s = w->hash[b]; s; s = s->next) {
		if (s->fd >= 0 || s->closed_ns || s->proto != proto || !s->have_peer ||
		    !same_ep(&s->peer, pa, alen, port))
			continue;
		size_t ll;
		uint16_t lp;
		const void *la = addr_of(local, &ll, &lp);

		if (!same_ep(&s->local, la, ll, lp))
			continue;
		if (!open)   /* its end: matched WIRE_GRACE_MS more, like a closed socket */
			close_later(w, s, now);
		return;   /* known already */
	}
	if (!open)
		return;
	struct wire_sock *s = calloc(1, sizeof(*s));

	if (!s) {
		log_debug("wire capture: out of memory: a flow's frames will be missing");
		return;
	}
	*s = (struct wire_sock){ .fd = -1, .proto = proto, .have_peer = true, .local = *local, .peer = *peer };
	s->next = w->hash[b];
	w->hash[b] = s;
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

/* Is (@proto, @la:@lp local, @ra:@rp remote) the tuple of one of the relay's sockets at @ts? */
static bool known(struct wire *w, uint8_t proto, const void *la, const void *ra, size_t alen, uint16_t lp,
		  uint16_t rp, uint64_t ts)
{
	for (struct wire_sock *s = w->hash[bucket(proto, la, alen, lp)]; s; s = s->next) {
		if (s->proto != proto || !same_ep(&s->local, la, alen, lp))
			continue;
		if (s->closed_ns && ts > s->closed_ns + WIRE_GRACE_MS * 1000000ull)
			continue;
		if (!s->have_peer && s->fd >= 0) {
			socklen_t pl = sizeof(s->peer);

			s->have_peer = getpeername(s->fd, &s->peer.sa, &pl) == 0;
		}
		if (!s->have_peer || same_ep(&s->peer, ra, alen, rp))
			return true;
	}
	return false;
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

/* Either way round: sent by the host (the source is ours) or received (the destination is). */
static bool known2(struct wire *w, uint8_t proto, const void *src, const void *dst, size_t alen, uint16_t sp,
		   uint16_t dp, uint64_t ts)
{
	return known(w, proto, src, dst, alen, sp, dp, ts) || known(w, proto, dst, src, alen, dp, sp, ts);
}

static bool icmp_error_type(uint8_t proto, uint8_t type)
{
	if (proto == IPPROTO_ICMP)   /* unreachable (frag needed too), time exceeded, parameter problem */
		return type == 3 || type == 11 || type == 12;
	return type >= 1 && type <= 4;   /* unreachable, too big, time exceeded, parameter problem */
}

/*
 * l4_ours() - is the transport header @l4 (@len bytes, at least its first 8 when it is ICMP) of a
 * packet @src -> @dst (@alen bytes each) of one of the tree's flows?  TCP and UDP by their ports;
 * an ICMP echo by its identifier; an ICMP error by the packet it quotes (@depth 0 only: an error
 * about an error is never sent).
 */
static bool l4_ours(struct wire *w, uint8_t proto, const unsigned char *src, const unsigned char *dst, size_t alen,
		    const unsigned char *l4, uint32_t len, uint64_t ts, int depth)
{
	uint16_t sp, dp;

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (len < 4)
			return false;
		memcpy(&sp, l4, 2);
		memcpy(&dp, l4 + 2, 2);
		return known2(w, proto, src, dst, alen, sp, dp, ts);
	}
	if (proto != (alen == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6) || len < 8)
		return false;
	if (alen == 4 ? l4[0] == 0 || l4[0] == 8 : l4[0] == 128 || l4[0] == 129) {
		memcpy(&sp, l4 + 4, 2);
		return known2(w, proto, src, dst, alen, sp, sp, ts);
	}
	if (depth || !icmp_error_type(proto, l4[0]))
		return false;
	/* The quoted packet: its IP header (the same family), then at least 8 bytes of its own. */
	const unsigned char *q = l4 + 8;
	uint32_t qlen = len - 8;

	if (alen == 4) {
		uint32_t ihl = qlen >= 20 ? (q[0] & 0x0fu) * 4u : 0;

		if (qlen < 20 || q[0] >> 4 != 4 || ihl < 20 || qlen < ihl + 8 || ((q[6] & 0x1f) | q[7]))
			return false;
		return l4_ours(w, q[9], q + 12, q + 16, 4, q + ihl, qlen - ihl, ts, 1);
	}
	if (qlen < 48 || q[0] >> 4 != 6)
		return false;
	return l4_ours(w, q[6], q + 8, q + 24, 16, q + 40, qlen - 40, ts, 1);
}

/* A later fragment of a datagram whose first fragment was kept? */
static bool frag_known(struct wire *w, const unsigned char *src, const unsigned char *dst, size_t alen, uint32_t id,
		       uint64_t ts)
{
	for (unsigned int i = 0; i < WIRE_FRAGS; i++) {
		struct wire_frag *f = &w->frags[i];

		if (f->ts && f->id == id && f->alen == alen && ts <= f->ts + WIRE_FRAG_MS * 1000000ull &&
		    !memcmp(f->src, src, alen) && !memcmp(f->dst, dst, alen))
			return true;
	}
	return false;
}

/* Remember a kept first fragment (the oldest slot goes). */
static void frag_add(struct wire *w, const unsigned char *src, const unsigned char *dst, size_t alen, uint32_t id,
		     uint64_t ts)
{
	struct wire_frag *f = &w->frags[w->next_frag++ % WIRE_FRAGS];

	f->ts = ts ? ts : 1;
	f->id = id;
	f->alen = (uint8_t)alen;
	memcpy(f->src, src, alen);
	memcpy(f->dst, dst, alen);
}

/*
 * ip_ours() - is the IP packet @ip (@len bytes) one of the tree's flows'?  Fragments: the first is
 * judged by its transport header, and when kept, the later ones of its datagram are kept with it.
 */
static bool ip_ours(struct wire *w, const unsigned char *ip, uint32_t len, uint64_t ts)
{
	const unsigned char *l4, *src, *dst;
	uint32_t l4len, id = 0;
	size_t alen;
	uint8_t proto;
	bool first = false;   /* a first fragment, more to come */

	if (len >= 20 && ip[0] >> 4 == 4) {
		uint32_t ihl = (ip[0] & 0x0fu) * 4u;

		if (ihl < 20 || len < ihl)
			return false;
		src = ip + 12;
		dst = ip + 16;
		alen = 4;
		id = (uint32_t)(ip[4] << 8 | ip[5]);
		if ((ip[6] & 0x1f) | ip[7])
			return frag_known(w, src, dst, alen, id, ts);
		first = ip[6] & 0x20;
		proto = ip[9];
		l4 = ip + ihl;
		l4len = len - ihl;
	} else if (len >= 40 && ip[0] >> 4 == 6) {
		proto = ip[6];
		src = ip + 8;
		dst = ip + 24;
		alen = 16;
		l4 = ip + 40;
		l4len = len - 40;
		if (proto == 44) {   /* a fragment header: next header, reserved, offset and M, id */
			if (len < 48)
				return false;
			memcpy(&id, ip + 44, 4);
			if ((ip[42] << 8 | ip[43]) & 0xfff8)
				return frag_known(w, src, dst, alen, id, ts);
			first = ip[43] & 1;
			proto = ip[40];
			l4 += 8;
			l4len -= 8;
		}
	} else {
		return false;
	}
	if (!l4_ours(w, proto, src, dst, alen, l4, l4len, ts, 0))
		return false;
	if (first)
		frag_add(w, src, dst, alen, id, ts);
	return true;
}

/* The frame's interface in the capture when it is one of the relay's sockets' frames, else -1. */
static int sort_frame(void *priv, const unsigned char *p, uint32_t len, const struct sockaddr_ll *sll,
		      uint64_t ts)
{
	struct wire *w = priv;
	struct wire_if *wi = if_for(w, sll, false);
	const unsigned char *ip = p;
	uint32_t off = 0;
	bool out = sll->sll_pkttype == PACKET_OUTGOING;
	bool loopback = wi ? wi->loopback : sll->sll_hatype == ARPHRD_LOOPBACK;

	if (wi && wi->ifid < 0)
		return -1;
	if (loopback && out)
		return -1;   /* loopback shows each packet twice: keep the one received */
	if (loopback || sll->sll_hatype == ARPHRD_ETHER) {
		uint16_t et;

		if (len < 14)
			return -1;
		et = (uint16_t)(p[12] << 8 | p[13]);
		off = 14;
		while ((et == ETH_P_8021Q || et == ETH_P_8021AD) && len >= off + 4) {
			et = (uint16_t)(p[off + 2] << 8 | p[off + 3]);
			off += 4;
		}
		if (et != ETH_P_IP && et != ETH_P_IPV6)
			return -1;
		ip = p + off;
	}
	if (!ip_ours(w, ip, len - off, ts))
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

	if (!w) {
		log_error("cannot start the capture: %s", strerror(ENOMEM));
		return NULL;
	}
	snprintf(w->backend, sizeof(w->backend), "%s", backend);
	w->view = egress_view ? "egress" : "wire-egress";
	w->kind = egress_view ? "captured" : "wire";
	/* Subscribed before the command exists: no flow of the tree's can start unseen. */
	if (routed && !(w->ct = ct_watch_open())) {
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
	for (unsigned int b = 0; b < WIRE_BUCKETS; b++) {
		while (w->hash[b]) {
			struct wire_sock *s = w->hash[b];

			w->hash[b] = s->next;
			free(s);
		}
	}
	if (w->fd >= 0)
		close(w->fd);
	ct_watch_free(w->ct);
	free(w);
}
