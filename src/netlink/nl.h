/* SPDX-License-Identifier: MIT */
/*
 * nl — the few rtnetlink requests childflow needs (links, addresses, routes, rules, route lookups),
 * over libmnl.
 * Every call acts in the network namespace the socket was opened in and returns 0 or -errno.
 */
#ifndef CHILDFLOW_NL_H
#define CHILDFLOW_NL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct nl;

struct nl *nl_open(void);
/* The same with extra socket flags (SOCK_NONBLOCK). */
struct nl *nl_open_flags(int sock_flags);
void nl_close(struct nl *nl);

int nl_link_up(struct nl *nl, int ifindex, unsigned int mtu);
/* Create veth @name here with its peer @peer placed in the netns of @peer_pid; the peer's MAC
 * address is @peer_mac (6 bytes), or the kernel's random one when NULL. */
int nl_veth_create(struct nl *nl, const char *name, const char *peer, pid_t peer_pid, unsigned int mtu,
		   const uint8_t *peer_mac);
/* Delete link @name (here).  Return: 0, -ENODEV when it does not exist, or another -errno. */
int nl_link_del(struct nl *nl, const char *name);
/* @addr is 4 or 16 bytes according to @family. */
int nl_addr_add(struct nl *nl, int ifindex, int family, const void *addr, int prefixlen);
/* A permanent neighbour entry on @ifindex: @addr (4 or 16 bytes by @family) is at Ethernet @mac. */
int nl_neigh_add(struct nl *nl, int ifindex, int family, const void *addr, const uint8_t *mac);
/* Route of @type (RTN_UNICAST, RTN_LOCAL) in @table out of @oif, via @gw when non-NULL (dst: default). */
int nl_route_add(struct nl *nl, int family, uint32_t table, int type, int oif, const void *gw);
int nl_rule_add_fwmark(struct nl *nl, int family, uint32_t mark, uint32_t table, uint32_t prio);

/* Add (@add) or delete the rule "from @src (a host address) lookup @table" at priority @prio. */
int nl_rule_src(struct nl *nl, bool add, int family, const void *src, uint32_t table, uint32_t prio);
/* An unreachable default route of metric @metric in @table (lookups there stop, with ENETUNREACH). */
int nl_route_unreachable(struct nl *nl, int family, uint32_t table, uint32_t metric);

/**
 * nl_routes_copy() - copy the main table's unicast routes out of link @oif into @table
 * @n_default: how many of them are default routes
 *
 * Return: the number of routes copied, or -errno (what was copied stays: flush @table).
 */
int nl_routes_copy(struct nl *nl, int family, int oif, uint32_t table, int *n_default);

/*
 * nl_table_routes() - count @family's routes in @table (*@n_routes), deleting them when @del.
 * Return: 0, or the first -errno.
 */
int nl_table_routes(struct nl *nl, int family, uint32_t table, bool del, int *n_routes);

/* nl_route_each() - @fn for each of @family's routes in every table.  Return: 0 or -errno. */
int nl_route_each(struct nl *nl, int family,
		  void (*fn)(void *arg, uint32_t table, const void *dst, int dst_len, int oif), void *arg);

/*
 * nl_link_wait_ready() - wait until link @ifindex can carry frames: carrier (IFF_LOWER_UP), an
 * operational state other than down, and its qdisc in place (not the kernel's dropping "noop").
 * The kernel finishes these asynchronously after the link is set up.
 * Return: 0, -ETIMEDOUT after @timeout_ms, or another -errno.
 */
int nl_link_wait_ready(struct nl *nl, int ifindex, int timeout_ms);

/*
 * nl_link_state() - is the link named @name here up (IFF_UP, *@up) and does it have a carrier
 * (IFF_LOWER_UP, *@carrier)?  Return: 0, -ENODEV when there is no such link, or another -errno.
 */
int nl_link_state(struct nl *nl, const char *name, bool *up, bool *carrier);

/* What the kernel said about one destination. */
struct rt_answer {
	int type;       /* RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, ...; RTN_UNREACHABLE when there is no route */
	int oif;        /* output interface index, 0 if none */
	int error;      /* with RTN_UNREACHABLE: the kernel's errno (ENETUNREACH, EHOSTUNREACH, EACCES) */
};

/**
 * nl_route_get() - how the kernel would route one destination (an unbound, unmarked socket of
 * this process, in the socket's namespace)
 * @nl: from nl_open_flags(SOCK_NONBLOCK): the kernel answers while the request is sent, so a lookup
 *      never waits (one sendto(), one recvfrom())
 * @family: AF_INET or AF_INET6
 * @addr: 4 or 16 bytes, network order
 * @ans: the answer
 *
 * A destination the kernel has no route for (ENETUNREACH, EHOSTUNREACH, EACCES) is an answer, not
 * a failure: @ans->type is RTN_UNREACHABLE and @ans->error the errno.
 *
 * Return: 0 with @ans filled, or -errno when no answer could be had (socket error, EAGAIN, a reply
 * that does not parse, any other error from the kernel).
 */
int nl_route_get(struct nl *nl, int family, const void *addr, struct rt_answer *ans);

#endif
