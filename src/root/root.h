/* SPDX-License-Identifier: MIT */
/*
 * root — the host side of the rootful backend (--root).
 *
 * The rootful backend is the rootless sandbox (src/sandbox/: the same child namespace C and
 * interception namespace G with the same DNS interception, SYN gate and TPROXY into P's
 * listeners) plus a second veth, "uplink", from G to the host.  The child holds the uplink's
 * interception-end address itself; what G does not intercept (all direct TCP and UDP, ICMP, IP
 * fragments) G bridges unchanged from the child's link to the uplink at the ingress hook (no
 * routing, no NAT, no connection tracking in G), and the host kernel routes and masquerades it: the
 * host's routing, firewall and connection tracking apply, and nothing is relayed.
 *
 * This module owns every change to the host namespace, each printed with CHILDFLOW_DEBUG=1:
 *   - the link cfroot<slot> (host end of the uplink) with its addresses: it dies with G's namespace,
 *     and root_host_end() deletes it at once;
 *   - its own conf/cfroot<slot>/{forwarding,accept_dad,force_forwarding}: die with it;
 *   - the nftables table inet childflow-root<slot> (nft/host.h), flagged `owner`: the kernel
 *     deletes it when P's netlink socket closes, even after SIGKILL;
 *   - forwarding on the host's other interfaces that carry routes (replies to the child arrive
 *     there): net.ipv4.conf.<if>.forwarding, and net.ipv6.conf.<if>.force_forwarding (Linux 6.17+;
 *     older kernels: net.ipv6.conf.all.forwarding).  The kernel cannot undo these: each is recorded
 *     before it is made (state.c) and restored to exactly its previous value by a watchdog process
 *     that outlives childflow, after a normal exit, a failed setup or SIGKILL; a record left by a
 *     watchdog that died too is restored at the next --root start.  Concurrent runs share a value
 *     one of them changed: the last to leave restores it.
 *   - with --iface: a policy rule "from <the uplink's interception end> lookup <table>" at priority
 *     ROOT_RULE_PRIO_BASE + slot and the routing table ROOT_TABLE_BASE + slot (copies of IFACE's
 *     routes, an unreachable default behind them): recorded before they are made and deleted by the
 *     same watchdog.
 */
#ifndef CHILDFLOW_ROOT_H
#define CHILDFLOW_ROOT_H

#include <stdbool.h>
#include <sys/types.h>

#include "backend/netplan.h"

struct root_host;

/* For messages: where the uplinks' addresses come from, and the first per-run routing table. */
#define ROOT_UPLINK_RANGE4_TEXT "10.241.0.0/16"
#define ROOT_UPLINK_RANGE6_TEXT "fdcf:f10e:7000::/48"
#define ROOT_TABLE_BASE_VALUE 0x63660000u

/*
 * root_host_begin() - before the sandbox exists: restore what dead runs left, take a free slot
 * whose uplink addresses overlap none of the host's routes, and start the watchdog.  @iface (or
 * NULL): --iface, routed by policy at root_host_attach().  Return: 0, or -1 after one error line.
 */
int root_host_begin(struct root_host **out, bool ipv6, const char *iface);

/*
 * root_uplink_check() - is there an uplink slot whose addresses (10.241.0.0/16, fdcf:f10e:7000::/48
 * with @ipv6) overlap none of the host's routes and addresses?  Running runs are not counted.
 * Return: the lowest such slot, -EADDRINUSE with the route in the way in @why, or another -errno
 * (@why says).
 */
int root_uplink_check(bool ipv6, char *why, size_t len);

/* The uplink's names and addresses for this run. */
const struct netplan_uplink *root_host_uplink(const struct root_host *h);

/*
 * root_host_attach() - P, once G (@gw_pid) has its namespaces: the uplink (its G end created in
 * G's network namespace as "up0"), the host's forwarding and the host table.  Matches
 * sandbox_config's on_unshared hook.  Return: 0, or -1 after one error line (what was done is
 * undone by root_host_end()).
 */
int root_host_attach(void *h, pid_t gw_pid);

/* root_host_end() - drop the table and the link, have the watchdog restore the rest, and wait for
 * it.  NULL is a no-op. */
void root_host_end(struct root_host *h);

#endif
