/* SPDX-License-Identifier: MIT */
/*
 * nl — the few rtnetlink requests childflow needs (links, addresses, routes, rules), over libmnl.
 * Every call acts in the network namespace the socket was opened in and returns 0 or -errno.
 */
#ifndef CHILDFLOW_NL_H
#define CHILDFLOW_NL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct nl;

struct nl *nl_open(void);
void nl_close(struct nl *nl);

int nl_link_up(struct nl *nl, int ifindex, unsigned int mtu);
/* Create veth @name here with its peer @peer placed in the netns of @peer_pid. */
int nl_veth_create(struct nl *nl, const char *name, const char *peer, pid_t peer_pid, unsigned int mtu);
/* @addr is 4 or 16 bytes according to @family. */
int nl_addr_add(struct nl *nl, int ifindex, int family, const void *addr, int prefixlen);
/* Route of @type (RTN_UNICAST, RTN_LOCAL) in @table out of @oif, via @gw when non-NULL (dst: default). */
int nl_route_add(struct nl *nl, int family, uint32_t table, int type, int oif, const void *gw);
int nl_rule_add_fwmark(struct nl *nl, int family, uint32_t mark, uint32_t table, uint32_t prio);

/*
 * nl_link_wait_ready() - wait until link @ifindex can carry frames: carrier (IFF_LOWER_UP), an
 * operational state other than down, and its qdisc in place (not the kernel's dropping "noop").
 * The kernel finishes these asynchronously after the link is set up.
 * Return: 0, -ETIMEDOUT after @timeout_ms, or another -errno.
 */
int nl_link_wait_ready(struct nl *nl, int ifindex, int timeout_ms);

#endif
