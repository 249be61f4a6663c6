/* SPDX-License-Identifier: MIT */
/*
 * netplan — the addresses of the private link between the gateway namespace (N1) and the child (N2).
 *
 * The link exists only inside childflow's own namespaces, so every run can use the same addresses;
 * they are chosen from ranges unlikely to be real destinations (10.240.255.0/30 and a ULA /64).
 * The relay refuses these subnets as destinations: they are not anything on the host side.
 * Under --root the child's link is bridged to the uplink and takes its addresses instead
 * (netplan_root()).
 */
#ifndef CHILDFLOW_BACKEND_NETPLAN_H
#define CHILDFLOW_BACKEND_NETPLAN_H

#include <stdbool.h>
#include <netinet/in.h>

#define NETPLAN_GW_IFNAME "gw0"
#define NETPLAN_CHILD_IFNAME "eth0"
/* Large MTU as pasta/slirp4netns use: fewer, bigger segments through the veth (design-probe §8). */
#define NETPLAN_MTU 65520
#define NETPLAN_TCP_PORT 15001
#define NETPLAN_UDP_PORT 15002
#define NETPLAN_DNS_PORT 53       /* the DNS listeners: bound to the port the child wrote to */

struct netplan {
	bool ipv6;                      /* offer IPv6 to the child */
	struct in_addr gw4, child4;
	int plen4;
	struct in6_addr gw6, child6;
	int plen6;
};

void netplan_init(struct netplan *np, bool ipv6);

/*
 * The rootful backend's second link: between the interception namespace (its end "up0") and the
 * host namespace (its end "cfroot<slot>").  Unlike the child's link it is visible on the host, so
 * every concurrent --root run has its own slot: its own name, 10.241.<slot/64>.<slot%64*4>/30 and
 * fdcf:f10e:7000:<slot>::/64 (host end .1 / ::1, interception end .2 / ::2).
 */
#define NETPLAN_UPLINK_IFNAME "up0"
#define NETPLAN_UPLINK_SLOTS 1024u

struct netplan_uplink {
	unsigned int slot;
	char host_ifname[16];
	struct in_addr host4, gw4;
	int plen4;
	struct in6_addr host6, gw6;
	int plen6;
};

void netplan_uplink_init(struct netplan_uplink *u, unsigned int slot);

/*
 * netplan_root() - the child's link under --root: the interception namespace bridges it to the
 * uplink (nft/gateway.h, struct gateway_bridge), so the child takes the uplink's interception-end
 * addresses (@u->gw4, @u->gw6) and its gateway is the host's end (@u->host4, @u->host6).
 */
void netplan_root(struct netplan *np, const struct netplan_uplink *u);

/* True when @sa (AF_INET/AF_INET6) lies in the link's own subnets. */
bool netplan_is_link_addr(const struct netplan *np, const struct sockaddr *sa);

/*
 * netplan_host_has_ipv6() - can the host reach global IPv6 destinations?
 * Answered by a routing lookup (connect() of a UDP socket sends nothing), so dual-stack clients in
 * the child are only offered IPv6 when it can actually work.
 */
bool netplan_host_has_ipv6(void);

#endif
