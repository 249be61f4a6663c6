/* SPDX-License-Identifier: MIT */
#include "backend/netplan.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

void netplan_init(struct netplan *np, bool ipv6)
{
	memset(np, 0, sizeof(*np));
	np->ipv6 = ipv6;
	inet_pton(AF_INET, "10.240.255.1", &np->gw4);
	inet_pton(AF_INET, "10.240.255.2", &np->child4);
	np->plen4 = 30;
	inet_pton(AF_INET6, "fd42:6368:696c::1", &np->gw6);
	inet_pton(AF_INET6, "fd42:6368:696c::2", &np->child6);
	np->plen6 = 64;
}

void netplan_uplink_init(struct netplan_uplink *u, unsigned int slot)
{
	uint32_t base = 0x0af10000u | ((slot % NETPLAN_UPLINK_SLOTS) << 2);   /* 10.241.0.0/16, a /30 each */

	memset(u, 0, sizeof(*u));
	u->slot = slot % NETPLAN_UPLINK_SLOTS;
	snprintf(u->host_ifname, sizeof(u->host_ifname), "cfroot%u", u->slot);
	u->host4.s_addr = htonl(base | 1u);
	u->gw4.s_addr = htonl(base | 2u);
	u->plen4 = 30;
	inet_pton(AF_INET6, "fdcf:f10e:7000::", &u->host6);
	u->host6.s6_addr[6] = (uint8_t)(u->slot >> 8);
	u->host6.s6_addr[7] = (uint8_t)u->slot;
	u->gw6 = u->host6;
	u->host6.s6_addr[15] = 1;
	u->gw6.s6_addr[15] = 2;
	u->plen6 = 64;
}

void netplan_root(struct netplan *np, const struct netplan_uplink *u)
{
	np->gw4 = u->host4;
	np->child4 = u->gw4;
	np->plen4 = u->plen4;
	np->gw6 = u->host6;
	np->child6 = u->gw6;
	np->plen6 = u->plen6;
}

static bool prefix_match(const unsigned char *a, const unsigned char *b, int plen)
{
	int full = plen / 8, rest = plen % 8;

	if (memcmp(a, b, full) != 0)
		return false;
	if (!rest)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[full] & mask) == (b[full] & mask);
}

bool netplan_is_link_addr(const struct netplan *np, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)sa;

		return prefix_match((const unsigned char *)&s->sin_addr,
				    (const unsigned char *)&np->gw4, np->plen4);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;

		return prefix_match(s->sin6_addr.s6_addr, np->gw6.s6_addr, np->plen6);
	}
	return false;
}

bool netplan_host_has_ipv6(void)
{
	/* 2001:db8::/32 is documentation space: only a default route (or a deliberate test route)
	 * covers it, which is exactly "the host routes global IPv6". */
	struct sockaddr_in6 dst = { .sin6_family = AF_INET6, .sin6_port = htons(9) };
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	inet_pton(AF_INET6, "2001:db8::1", &dst.sin6_addr);
	ok = connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == 0;
	close(fd);
	return ok;
}
