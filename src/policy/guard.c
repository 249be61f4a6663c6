/* SPDX-License-Identifier: MIT */
#include "policy/guard.h"

#include <errno.h>
#include <ifaddrs.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

struct local_addr {
	int family;
	unsigned char a[16];
};

int guard_init(struct guard *g, const struct netplan *net)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK,
				  .nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR };

	memset(g, 0, sizeof(*g));
	g->net = net;
	g->stale = true;
	g->nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (g->nl_fd < 0)
		return -errno;
	if (bind(g->nl_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(g->nl_fd);
		g->nl_fd = -1;
		return -e;
	}
	return 0;
}

void guard_free(struct guard *g)
{
	if (g->nl_fd >= 0)
		close(g->nl_fd);
	g->nl_fd = -1;
	free(g->addrs);
	g->addrs = NULL;
	g->n_addrs = 0;
}

int guard_fd(const struct guard *g)
{
	return g->nl_fd;
}

void guard_on_notify(struct guard *g)
{
	char buf[8192];

	/* Any address change (or an overrun, ENOBUFS) means: re-read the list on next use. */
	while (recv(g->nl_fd, buf, sizeof(buf), MSG_DONTWAIT) > 0 || errno == ENOBUFS)
		;
	g->stale = true;
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

enum guard_verdict guard_classify(const struct netplan *net, const struct sockaddr *dst)
{
	if (dst->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)dst;
		uint32_t a = ntohl(s->sin_addr.s_addr);

		if (a == 0 || s->sin_port == 0)
			return GUARD_DENY_UNSPECIFIED;
		if ((a >> 24) == 127)
			return GUARD_DENY_LOOPBACK;
		if ((a >> 28) == 0xe || a == 0xffffffffu)
			return GUARD_DENY_MULTICAST;
		if (netplan_is_link_addr(net, dst))
			return GUARD_DENY_LINK;
		return GUARD_ALLOW;
	}
	if (dst->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)dst;
		const struct in6_addr *a = &s->sin6_addr;

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
		if (netplan_is_link_addr(net, dst))
			return GUARD_DENY_LINK;
		return GUARD_ALLOW;
	}
	return GUARD_DENY_UNSPECIFIED;
}

enum guard_verdict guard_check(struct guard *g, const struct sockaddr *dst)
{
	enum guard_verdict v = guard_classify(g->net, dst);
	const void *bytes;
	size_t len;

	if (v != GUARD_ALLOW)
		return v;
	if (g->stale)
		refresh(g);
	if (g->stale)
		return GUARD_DENY_HOST_LOCAL;   /* cannot tell which addresses are the host's: refuse */
	if (dst->sa_family == AF_INET) {
		bytes = &((const struct sockaddr_in *)dst)->sin_addr;
		len = 4;
	} else {
		bytes = &((const struct sockaddr_in6 *)dst)->sin6_addr;
		len = 16;
	}
	for (int i = 0; i < g->n_addrs; i++)
		if (g->addrs[i].family == dst->sa_family && !memcmp(g->addrs[i].a, bytes, len))
			return GUARD_DENY_HOST_LOCAL;
	return GUARD_ALLOW;
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
	}
	return "denied";
}
