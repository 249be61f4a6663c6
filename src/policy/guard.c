/* SPDX-License-Identifier: MIT */
#include "policy/guard.h"

#include <errno.h>
#include <ifaddrs.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <libmnl/libmnl.h>
#include <netinet/in.h>

#include "netlink/nl.h"
#include "policy/localpeer.h"
#include "util/log.h"

/* The loopback device has this index in every network namespace (the kernel's LOOPBACK_IFINDEX). */
#define LOOPBACK_IFINDEX 1

struct local_addr {
	int family;
	unsigned char a[16];
};

/* One cached route answer; valid when gen equals the guard's. */
struct guard_slot {
	uint32_t gen;
	uint8_t family;
	uint8_t verdict;
	unsigned char a[16];
};

/* A destination whose connection did not end on this host; valid when gen matches and until is ahead. */
struct guard_peer_slot {
	uint32_t gen;
	uint8_t family;
	uint16_t port;
	unsigned char a[16];
	uint64_t until_ms;
};

int guard_init(struct guard *g, const struct netplan *net)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK,
				  .nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
					       RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE };
	int err;

	memset(g, 0, sizeof(*g));
	g->net = net;
	g->stale = true;
	g->gen = 1;
	g->diag_fd = -1;
	g->nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (g->nl_fd < 0)
		return -errno;
	if (bind(g->nl_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	g->rt = nl_open_flags(SOCK_NONBLOCK);
	if (!g->rt)
		goto fail;
	g->cache = calloc(GUARD_CACHE_SLOTS, sizeof(*g->cache));
	g->clean = calloc(GUARD_CACHE_SLOTS, sizeof(*g->clean));
	if (!g->cache || !g->clean)
		goto fail;
	g->diag_fd = localpeer_open();
	if (g->diag_fd < 0) {
		err = g->diag_fd;
		g->diag_fd = -1;
		if (err != -EPROTONOSUPPORT) {
			errno = -err;
			goto fail;
		}
		log_warn("the kernel has no sock_diag: connections that host NAT sends to this host "
			 "itself are not detected");
	}
	return 0;
fail:
	err = -errno;
	guard_free(g);
	return err;
}

void guard_free(struct guard *g)
{
	if (g->nl_fd >= 0)
		close(g->nl_fd);
	g->nl_fd = -1;
	if (g->diag_fd >= 0)
		close(g->diag_fd);
	g->diag_fd = -1;
	nl_close(g->rt);
	g->rt = NULL;
	free(g->cache);
	g->cache = NULL;
	free(g->clean);
	g->clean = NULL;
	free(g->addrs);
	g->addrs = NULL;
	g->n_addrs = 0;
}

int guard_fd(const struct guard *g)
{
	return g->nl_fd;
}

static void invalidate_routes(struct guard *g)
{
	g->stats.invalidations++;
	if (++g->gen == 0) {   /* wrapped: slots of generation 0 must not look valid */
		memset(g->cache, 0, GUARD_CACHE_SLOTS * sizeof(*g->cache));
		memset(g->clean, 0, GUARD_CACHE_SLOTS * sizeof(*g->clean));
		g->gen = 1;
	}
}

/*
 * drain() - read every pending notification.  A route change empties the route cache, an address
 * change also the address list; an overrun (ENOBUFS) means changes were lost: both.
 */
static void drain(struct guard *g)
{
	char buf[8192];
	bool routes = false;

	for (;;) {
		ssize_t n = recv(g->nl_fd, buf, sizeof(buf), MSG_DONTWAIT);
		int len;

		if (n < 0) {
			if (errno != ENOBUFS)
				break;
			routes = true;
			g->stale = true;
			continue;
		}
		len = (int)n;
		for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(h, len);
		     h = mnl_nlmsg_next(h, &len)) {
			routes = true;
			if (h->nlmsg_type == RTM_NEWADDR || h->nlmsg_type == RTM_DELADDR)
				g->stale = true;
		}
	}
	if (routes)
		invalidate_routes(g);
}

void guard_on_notify(struct guard *g)
{
	drain(g);
}

static void refresh(struct guard *g)
{
	struct ifaddrs *ifa, *i;
	int n = 0;

	g->stale = false;
	if (getifaddrs(&ifa) < 0) {
		g->stale = true;
		return;
	}
	for (i = ifa; i; i = i->ifa_next)
		n++;
	struct local_addr *v = calloc(n ? n : 1, sizeof(*v));
	if (!v) {
		freeifaddrs(ifa);
		g->stale = true;
		return;
	}
	n = 0;
	for (i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr)
			continue;
		if (i->ifa_addr->sa_family == AF_INET) {
			v[n].family = AF_INET;
			memcpy(v[n++].a, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
		} else if (i->ifa_addr->sa_family == AF_INET6) {
			v[n].family = AF_INET6;
			memcpy(v[n++].a, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
		}
	}
	freeifaddrs(ifa);
	free(g->addrs);
	g->addrs = v;
	g->n_addrs = n;
}

/* An IPv4 address (host order) by itself, port aside. */
static enum guard_verdict classify4(const struct netplan *net, uint32_t a)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(a) };

	if (a == 0)
		return GUARD_DENY_UNSPECIFIED;
	if ((a >> 24) == 127)
		return GUARD_DENY_LOOPBACK;
	if ((a >> 28) == 0xe || a == 0xffffffffu)
		return GUARD_DENY_MULTICAST;
	if ((a >> 16) == 0xa9fe)
		return GUARD_DENY_LINKLOCAL4;
	if (netplan_is_link_addr(net, (const struct sockaddr *)&s))
		return GUARD_DENY_LINK;
	return GUARD_ALLOW;
}

static uint32_t be32_at(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The IPv4 address inside a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address; false if neither. */
static bool embedded4(const struct in6_addr *a, uint32_t *v4)
{
	static const unsigned char nat64[12] = { 0, 0x64, 0xff, 0x9b };

	if (!memcmp(a->s6_addr, nat64, sizeof(nat64))) {
		*v4 = be32_at(a->s6_addr + 12);
		return true;
	}
	if (a->s6_addr[0] == 0x20 && a->s6_addr[1] == 0x02) {
		*v4 = be32_at(a->s6_addr + 2);
		return true;
	}
	return false;
}

enum guard_verdict guard_classify(const struct netplan *net, const struct sockaddr *dst)
{
	if (dst->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)dst;
		uint32_t a = ntohl(s->sin_addr.s_addr);

		if (a == 0 || s->sin_port == 0)
			return GUARD_DENY_UNSPECIFIED;
		return classify4(net, a);
	}
	if (dst->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)dst;
		const struct in6_addr *a = &s->sin6_addr;
		uint32_t v4;

		if (IN6_IS_ADDR_UNSPECIFIED(a) || s->sin6_port == 0)
			return GUARD_DENY_UNSPECIFIED;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return GUARD_DENY_LOOPBACK;
		if (IN6_IS_ADDR_MULTICAST(a))
			return GUARD_DENY_MULTICAST;
		if (IN6_IS_ADDR_LINKLOCAL(a))
			return GUARD_DENY_LINKLOCAL6;
		if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a))
			return GUARD_DENY_MAPPED;
		if (embedded4(a, &v4) && classify4(net, v4) != GUARD_ALLOW)
			return GUARD_DENY_MAPPED;
		if (netplan_is_link_addr(net, dst))
			return GUARD_DENY_LINK;
		return GUARD_ALLOW;
	}
	return GUARD_DENY_UNSPECIFIED;
}

enum guard_verdict guard_route_verdict(int rtm_type, int oif)
{
	switch (rtm_type) {
	case RTN_LOCAL:
		return GUARD_DENY_LOCAL_ROUTE;
	case RTN_ANYCAST:
		return GUARD_DENY_ANYCAST;
	case RTN_BROADCAST:
		return GUARD_DENY_BROADCAST;
	case RTN_MULTICAST:
		return GUARD_DENY_MULTICAST;
	case RTN_UNREACHABLE:
	case RTN_PROHIBIT:
	case RTN_BLACKHOLE:
		return GUARD_ALLOW;   /* goes nowhere: the connect fails by itself, with the real error */
	default:
		return oif == LOOPBACK_IFINDEX ? GUARD_DENY_LOCAL_ROUTE : GUARD_ALLOW;
	}
}

/* Slot index of a destination (FNV-1a); a collision only costs one more lookup. */
static unsigned int slot_index(int family, const unsigned char *a, size_t len, uint16_t port)
{
	uint32_t h = 2166136261u ^ (uint32_t)family;

	for (size_t i = 0; i < len; i++)
		h = (h ^ a[i]) * 16777619u;
	h = (h ^ (port & 0xff)) * 16777619u;
	h = (h ^ (port >> 8)) * 16777619u;
	return h & (GUARD_CACHE_SLOTS - 1);
}

static struct guard_slot *slot_for(struct guard *g, int family, const unsigned char *a, size_t len)
{
	return &g->cache[slot_index(family, a, len, 0)];
}

/* Check 2: the kernel's routing answer, cached. */
static enum guard_verdict route_check(struct guard *g, int family, const unsigned char *a, size_t len)
{
	struct guard_slot *s = slot_for(g, family, a, len);
	struct rt_answer ans;
	enum guard_verdict v;
	int err;

	if (s->gen == g->gen && s->family == family && !memcmp(s->a, a, len)) {
		g->stats.cache_hits++;
		return (enum guard_verdict)s->verdict;
	}
	g->stats.route_lookups++;
	err = nl_route_get(g->rt, family, a, &ans);
	if (err < 0) {
		log_debug("route lookup failed: %s", strerror(-err));
		return GUARD_DENY_UNKNOWN;   /* not cached: the next flow asks again */
	}
	v = guard_route_verdict(ans.type, ans.oif);
	s->gen = g->gen;
	s->family = (uint8_t)family;
	s->verdict = (uint8_t)v;
	memset(s->a, 0, sizeof(s->a));
	memcpy(s->a, a, len);
	return v;
}

enum guard_verdict guard_check(struct guard *g, const struct sockaddr *dst)
{
	enum guard_verdict v = guard_classify(g->net, dst);
	const unsigned char *bytes;
	size_t len;

	if (v != GUARD_ALLOW)
		return v;
	if (dst->sa_family == AF_INET) {
		bytes = (const unsigned char *)&((const struct sockaddr_in *)dst)->sin_addr;
		len = 4;
	} else {
		bytes = (const unsigned char *)&((const struct sockaddr_in6 *)dst)->sin6_addr;
		len = 16;
	}
	drain(g);   /* one recv() when nothing changed */
	v = route_check(g, dst->sa_family, bytes, len);
	if (v != GUARD_ALLOW)
		return v;
	if (g->stale)
		refresh(g);
	if (g->stale)
		return GUARD_DENY_UNKNOWN;   /* getifaddrs() failed (EMFILE...): refuse, and say why */
	for (int i = 0; i < g->n_addrs; i++)
		if (g->addrs[i].family == dst->sa_family && !memcmp(g->addrs[i].a, bytes, len))
			return GUARD_DENY_HOST_LOCAL;
	return GUARD_ALLOW;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The memo slot of a peer (address and port), and whether it says "clean" now. */
static struct guard_peer_slot *peer_slot(struct guard *g, const struct sockaddr_storage *peer, bool *clean)
{
	const unsigned char *a;
	size_t alen;
	uint16_t port;

	if (peer->ss_family == AF_INET) {
		a = (const unsigned char *)&((const struct sockaddr_in *)peer)->sin_addr;
		alen = 4;
		port = ((const struct sockaddr_in *)peer)->sin_port;
	} else {
		a = (const unsigned char *)&((const struct sockaddr_in6 *)peer)->sin6_addr;
		alen = 16;
		port = ((const struct sockaddr_in6 *)peer)->sin6_port;
	}
	struct guard_peer_slot *s = &g->clean[slot_index(peer->ss_family, a, alen, port)];

	*clean = s->gen == g->gen && s->family == peer->ss_family && s->port == port &&
		 !memcmp(s->a, a, alen) && now_ms() < s->until_ms;
	if (!*clean) {
		/* Prepared for remember_clean(). */
		s->gen = 0;
		s->family = (uint8_t)peer->ss_family;
		s->port = port;
		memset(s->a, 0, sizeof(s->a));
		memcpy(s->a, a, alen);
	}
	return s;
}

bool guard_peer_known_clean(struct guard *g, const struct sockaddr_storage *peer)
{
	struct guard_peer_slot *s;
	const unsigned char *a;
	size_t alen;
	uint16_t port;

	if (peer->ss_family != AF_INET && peer->ss_family != AF_INET6)
		return false;
	a = peer->ss_family == AF_INET ? (const unsigned char *)&((const struct sockaddr_in *)peer)->sin_addr
				       : (const unsigned char *)&((const struct sockaddr_in6 *)peer)->sin6_addr;
	alen = peer->ss_family == AF_INET ? 4 : 16;
	port = peer->ss_family == AF_INET ? ((const struct sockaddr_in *)peer)->sin_port
					  : ((const struct sockaddr_in6 *)peer)->sin6_port;
	s = &g->clean[slot_index(peer->ss_family, a, alen, port)];
	return s->gen == g->gen && s->family == peer->ss_family && s->port == port &&
	       !memcmp(s->a, a, alen) && now_ms() < s->until_ms;
}

static void remember_clean(struct guard *g, struct guard_peer_slot *s)
{
	s->gen = g->gen;
	s->until_ms = now_ms() + GUARD_PEER_CLEAN_MS;
}

static bool same_addr(const struct sockaddr_storage *x, const struct sockaddr_storage *y)
{
	if (x->ss_family != y->ss_family)
		return false;
	if (x->ss_family == AF_INET)
		return ((const struct sockaddr_in *)x)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)y)->sin_addr.s_addr;
	return !memcmp(&((const struct sockaddr_in6 *)x)->sin6_addr, &((const struct sockaddr_in6 *)y)->sin6_addr, 16);
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
					: ((const struct sockaddr_in6 *)ss)->sin6_port;
}

#define SCAN_PORTS 1024   /* host sockets connected to one of our addresses that one scan keeps */

void guard_check_connected_many(struct guard *g, const int *fds, const struct sockaddr_storage *peers, int n,
				enum guard_verdict *out)
{
	struct sockaddr_storage local[GUARD_BATCH_MAX];
	struct guard_peer_slot *slot[GUARD_BATCH_MAX];
	bool need[GUARD_BATCH_MAX];
	uint16_t ports[SCAN_PORTS];

	if (n > GUARD_BATCH_MAX)
		n = GUARD_BATCH_MAX;
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage peer = { 0 };
		socklen_t len = sizeof(peer), llen = sizeof(local[i]);
		bool clean;

		need[i] = false;
		/* NAT does not show here (the socket reports what was dialled, which the caller may
		 * know already), but a route may have changed since the destination was allowed. */
		if (peers)
			peer = peers[i];
		else if (getpeername(fds[i], (struct sockaddr *)&peer, &len) < 0) {
			out[i] = GUARD_DENY_UNKNOWN;
			continue;
		}
		out[i] = guard_check(g, (const struct sockaddr *)&peer);
		if (out[i] != GUARD_ALLOW || g->diag_fd < 0)
			continue;
		slot[i] = peer_slot(g, &peer, &clean);
		need[i] = !clean;
		/* The local address only matters for the walk of the kernel's table. */
		if (need[i] && getsockname(fds[i], (struct sockaddr *)&local[i], &llen) < 0) {
			out[i] = GUARD_DENY_UNKNOWN;
			need[i] = false;
		}
	}
	/* One walk of the kernel's table per local address the new connections use (usually one per
	 * family), whatever their number. */
	for (int i = 0; i < n; i++) {
		int found;

		if (!need[i])
			continue;
		g->stats.peer_checks++;
		found = localpeer_scan(g->diag_fd, &local[i], ports, SCAN_PORTS);
		for (int j = i; j < n; j++) {
			bool hit = false;

			if (!need[j] || !same_addr(&local[i], &local[j]))
				continue;
			need[j] = false;
			if (found < 0 || found > SCAN_PORTS) {
				if (found < 0)
					log_debug("cannot look for a local peer: %s", strerror(-found));
				/* Cannot tell (or too many to list): ask for this one socket alone. */
				int r = found < 0 ? found : localpeer_check(g->diag_fd, fds[j]);

				out[j] = r < 0 ? GUARD_DENY_UNKNOWN : r ? GUARD_DENY_NAT_LOCAL : GUARD_ALLOW;
			} else {
				for (int k = 0; k < found && !hit; k++)
					hit = ports[k] == port_of(&local[j]);
				out[j] = hit ? GUARD_DENY_NAT_LOCAL : GUARD_ALLOW;
			}
			if (out[j] == GUARD_ALLOW)
				remember_clean(g, slot[j]);
		}
	}
}

enum guard_verdict guard_check_connected(struct guard *g, int fd)
{
	enum guard_verdict v;

	guard_check_connected_many(g, &fd, NULL, 1, &v);
	return v;
}

const char *guard_reason(enum guard_verdict v)
{
	switch (v) {
	case GUARD_ALLOW: return "allowed";
	case GUARD_DENY_UNSPECIFIED: return "unspecified address or port";
	case GUARD_DENY_LOOPBACK: return "loopback address";
	case GUARD_DENY_MULTICAST: return "multicast or broadcast address";
	case GUARD_DENY_LINK: return "the sandbox's own link";
	case GUARD_DENY_LINKLOCAL6: return "IPv6 link-local address";
	case GUARD_DENY_MAPPED: return "IPv4-mapped IPv6 address";
	case GUARD_DENY_HOST_LOCAL: return "an address of the host itself";
	case GUARD_DENY_LINKLOCAL4: return "IPv4 link-local address (cloud metadata)";
	case GUARD_DENY_LOCAL_ROUTE: return "the host routes it to itself (local route)";
	case GUARD_DENY_ANYCAST: return "an anycast address of the host";
	case GUARD_DENY_BROADCAST: return "a broadcast address of a host subnet";
	case GUARD_DENY_UNKNOWN: return "cannot tell whether the destination is local";
	case GUARD_DENY_NAT_LOCAL: return "NAT on the host sends it to the host itself";
	}
	return "denied";
}
