/* SPDX-License-Identifier: MIT */
/* capture/match — the tree's tuples on the host's wire and the frame matcher (see match.h). */
#include "capture/match.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define MATCH_GRACE_MS 3000u          /* a closed entry's tuple still matches this long */
#define MATCH_KEEP_MS 10000u          /* ... and is forgotten after this long */
#define MATCH_BUCKETS 4096u
#define MATCH_FRAGS 64u               /* first fragments kept whose later fragments are awaited */
#define MATCH_FRAG_MS 30000u          /* ... this long at most (the kernel's reassembly timeout) */

/* One tuple of the tree's: a relay socket (by fd) or a flow known by its tuple (fd -1). */
struct match_ent {
	int fd;                        /* -1 once closed, or for a flow known by its tuple */
	uint8_t proto;                 /* IPPROTO_TCP, _UDP, or _ICMP/_ICMPV6 (the echo id as both ports) */
	bool have_peer;                /* the peer is known (else matched on local alone) */
	union flow_addr local, peer;
	uint64_t closed_ns;            /* CLOCK_REALTIME; 0 while open */
	struct match_ent *next;        /* hash chain (by proto and local endpoint) */
	struct match_ent *next_closed; /* the closed ones, oldest first */
};

/* A kept first fragment of a datagram: its later fragments are kept too. */
struct match_frag {
	uint64_t ts;                   /* when it was seen; 0: a free slot */
	uint32_t id;                   /* the IP identification (v4: 16 bits) or the v6 fragment id */
	uint8_t alen;
	unsigned char src[16], dst[16];
};

struct match_set {
	struct match_ent *hash[MATCH_BUCKETS];
	struct match_ent *closed_head, *closed_tail;
	struct match_frag frags[MATCH_FRAGS];
	unsigned int next_frag;        /* the slot the next first fragment takes (oldest first) */
};

struct match_set *match_new(void)
{
	return calloc(1, sizeof(struct match_set));
}

void match_free(struct match_set *m)
{
	if (!m)
		return;
	for (unsigned int b = 0; b < MATCH_BUCKETS; b++) {
		while (m->hash[b]) {
			struct match_ent *s = m->hash[b];

			m->hash[b] = s->next;
			free(s);
		}
	}
	free(m);
}

/* The bucket of (@proto, address @addr of @alen bytes, @port in network order). */
static unsigned int bucket(uint8_t proto, const void *addr, size_t alen, uint16_t port)
{
	const unsigned char *p = addr;
	uint64_t h = 0xcbf29ce484222325ull ^ proto ^ ((uint64_t)port << 8);

	for (size_t i = 0; i < alen; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return (unsigned int)(h ^ h >> 29) & (MATCH_BUCKETS - 1);
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

static unsigned int sock_bucket(const struct match_ent *s)
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
static void expire(struct match_set *m, uint64_t now)
{
	while (m->closed_head && m->closed_head->closed_ns + MATCH_KEEP_MS * 1000000ull < now) {
		struct match_ent *s = m->closed_head, **pp = &m->hash[sock_bucket(s)];

		m->closed_head = s->next_closed;
		if (!m->closed_head)
			m->closed_tail = NULL;
		while (*pp && *pp != s)
			pp = &(*pp)->next;
		if (*pp)
			*pp = s->next;
		free(s);
	}
}

/* @s ended at @now: its frames are matched MATCH_KEEP_MS more, then expire() forgets it. */
static void close_later(struct match_set *m, struct match_ent *s, uint64_t now)
{
	s->closed_ns = now;
	if (m->closed_tail)
		m->closed_tail->next_closed = s;
	else
		m->closed_head = s;
	m->closed_tail = s;
}


/* Is (@proto, @la:@lp local, @ra:@rp remote) the tuple of one of the relay's sockets at @ts? */
static bool known(struct match_set *m, uint8_t proto, const void *la, const void *ra, size_t alen, uint16_t lp,
		  uint16_t rp, uint64_t ts)
{
	for (struct match_ent *s = m->hash[bucket(proto, la, alen, lp)]; s; s = s->next) {
		if (s->proto != proto || !same_ep(&s->local, la, alen, lp))
			continue;
		if (s->closed_ns && ts > s->closed_ns + MATCH_GRACE_MS * 1000000ull)
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


/* Either way round: sent by the host (the source is ours) or received (the destination is). */
static bool known2(struct match_set *m, uint8_t proto, const void *src, const void *dst, size_t alen, uint16_t sp,
		   uint16_t dp, uint64_t ts)
{
	return known(m, proto, src, dst, alen, sp, dp, ts) || known(m, proto, dst, src, alen, dp, sp, ts);
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
static bool l4_ours(struct match_set *m, uint8_t proto, const unsigned char *src, const unsigned char *dst, size_t alen,
		    const unsigned char *l4, uint32_t len, uint64_t ts, int depth)
{
	uint16_t sp, dp;

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		if (len < 4)
			return false;
		memcpy(&sp, l4, 2);
		memcpy(&dp, l4 + 2, 2);
		return known2(m, proto, src, dst, alen, sp, dp, ts);
	}
	if (proto != (alen == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6) || len < 8)
		return false;
	if (alen == 4 ? l4[0] == 0 || l4[0] == 8 : l4[0] == 128 || l4[0] == 129) {
		memcpy(&sp, l4 + 4, 2);
		return known2(m, proto, src, dst, alen, sp, sp, ts);
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
		return l4_ours(m, q[9], q + 12, q + 16, 4, q + ihl, qlen - ihl, ts, 1);
	}
	if (qlen < 48 || q[0] >> 4 != 6)
		return false;
	return l4_ours(m, q[6], q + 8, q + 24, 16, q + 40, qlen - 40, ts, 1);
}

/* A later fragment of a datagram whose first fragment was kept? */
static bool frag_known(struct match_set *m, const unsigned char *src, const unsigned char *dst, size_t alen, uint32_t id,
		       uint64_t ts)
{
	for (unsigned int i = 0; i < MATCH_FRAGS; i++) {
		struct match_frag *f = &m->frags[i];

		if (f->ts && f->id == id && f->alen == alen && ts <= f->ts + MATCH_FRAG_MS * 1000000ull &&
		    !memcmp(f->src, src, alen) && !memcmp(f->dst, dst, alen))
			return true;
	}
	return false;
}

/* Remember a kept first fragment (the oldest slot goes). */
static void frag_add(struct match_set *m, const unsigned char *src, const unsigned char *dst, size_t alen, uint32_t id,
		     uint64_t ts)
{
	struct match_frag *f = &m->frags[m->next_frag++ % MATCH_FRAGS];

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
static bool ip_ours(struct match_set *m, const unsigned char *ip, uint32_t len, uint64_t ts)
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
			return frag_known(m, src, dst, alen, id, ts);
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
				return frag_known(m, src, dst, alen, id, ts);
			first = ip[43] & 1;
			proto = ip[40];
			l4 += 8;
			l4len -= 8;
		}
	} else {
		return false;
	}
	if (!l4_ours(m, proto, src, dst, alen, l4, l4len, ts, 0))
		return false;
	if (first)
		frag_add(m, src, dst, alen, id, ts);
	return true;
}


int match_sock(struct match_set *m, int fd, uint8_t proto, const union flow_addr *local, bool open,
	       uint64_t now_ns)
{
	expire(m, now_ns);
	if (open) {
		struct match_ent *s = calloc(1, sizeof(*s));
		socklen_t pl = sizeof(union flow_addr);
		unsigned int b;

		if (!s)
			return -ENOMEM;
		s->fd = fd;
		s->proto = proto;
		s->local = *local;
		s->have_peer = fd >= 0 && getpeername(fd, &s->peer.sa, &pl) == 0;
		b = sock_bucket(s);
		s->next = m->hash[b];
		m->hash[b] = s;
		return 0;
	}
	for (struct match_ent *s = m->hash[sock_bucket(&(struct match_ent){ .proto = proto, .local = *local })]; s;
	     s = s->next) {
		if (s->fd != fd || fd < 0 || s->proto != proto)
			continue;
		if (!s->have_peer) {
			socklen_t pl = sizeof(s->peer);

			s->have_peer = getpeername(fd, &s->peer.sa, &pl) == 0;
		}
		s->fd = -1;
		close_later(m, s, now_ns);
		return 0;
	}
	return 0;
}

int match_flow(struct match_set *m, uint8_t proto, const union flow_addr *local, const union flow_addr *peer,
	       bool open, uint64_t now_ns)
{
	struct match_ent probe = { .proto = proto, .local = *local };
	size_t alen, ll;
	uint16_t port, lp;
	const void *pa = addr_of(peer, &alen, &port), *la = addr_of(local, &ll, &lp);
	unsigned int b = sock_bucket(&probe);

	expire(m, now_ns);
	for (struct match_ent *s = m->hash[b]; s; s = s->next) {
		if (s->fd >= 0 || s->closed_ns || s->proto != proto || !s->have_peer ||
		    !same_ep(&s->peer, pa, alen, port) || !same_ep(&s->local, la, ll, lp))
			continue;
		if (!open)   /* its end: matched MATCH_GRACE_MS more, like a closed socket */
			close_later(m, s, now_ns);
		return 0;   /* known already */
	}
	if (!open)
		return 0;
	struct match_ent *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	*s = (struct match_ent){ .fd = -1, .proto = proto, .have_peer = true, .local = *local, .peer = *peer };
	s->next = m->hash[b];
	m->hash[b] = s;
	return 0;
}

bool match_frame(struct match_set *m, const unsigned char *p, uint32_t len, bool ether, uint64_t ts_ns)
{
	uint32_t off = 0;

	if (ether) {
		uint16_t et;

		if (len < 14)
			return false;
		et = (uint16_t)(p[12] << 8 | p[13]);
		off = 14;
		while ((et == ETH_P_8021Q || et == ETH_P_8021AD) && len >= off + 4) {
			et = (uint16_t)(p[off + 2] << 8 | p[off + 3]);
			off += 4;
		}
		if (et != ETH_P_IP && et != ETH_P_IPV6)
			return false;
	}
	return ip_ours(m, p + off, len - off, ts_ns);
}
