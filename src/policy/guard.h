/* SPDX-License-Identifier: MIT */
/*
 * policy/guard — destinations the relay never dials on the child's behalf (design §2, cost 3).
 *
 * The child chooses the destination, and P dials it from the caller's namespace.  Without a guard the
 * child could reach the caller's host-local services, the sandbox link itself, or addresses that make
 * no sense as a unicast destination.  User-configurable allow/deny policy builds on top of this.
 *
 * Theory of operation.  A new destination (a TCP connection, the first datagram of a UDP flow) goes
 * through three checks; the first that refuses gives the verdict.
 *
 *  1. guard_classify(), by address alone: unspecified address or port 0; loopback (127/8, ::1);
 *     multicast and 255.255.255.255; link-local, in IPv4 (169.254/16) as in IPv6 (fe80::/10): it
 *     means "this link" of whoever dials, and in IPv4 it is where clouds serve instance metadata and
 *     credentials (169.254.169.254), which a sandboxed agent must not read by default; v4-mapped and
 *     v4-compatible IPv6, and NAT64 (64:ff9b::/96) or 6to4 (2002::/16) addresses that embed an IPv4
 *     address refused by these rules; the sandbox's own link subnets.
 *  2. The kernel's routing table, asked in P's namespace (RTM_GETROUTE, nl_route_get()): what the
 *     host delivers to itself is refused whatever interface addresses exist: RTN_LOCAL (interface
 *     addresses, but also `ip route add local PREFIX dev lo`, used for AnyIP, TPROXY and anycast
 *     services), RTN_ANYCAST (the IPv6 subnet-router anycast address of a forwarding host),
 *     RTN_BROADCAST, RTN_MULTICAST, and any route whose output device is lo.  The answers are kept
 *     in a small direct-mapped cache (GUARD_CACHE_SLOTS destinations), dropped whenever rtnetlink
 *     reports a route or address change.  guard_check() reads pending notifications itself before it
 *     consults the cache, so a change the kernel made before the check is never missed, whatever
 *     order the event loop dispatches in.  A miss costs one request/answer pair on a non-blocking
 *     socket (the kernel answers inside sendto()); it never waits.
 *  3. The host's interface addresses (getifaddrs(), refreshed after an address notification), as a
 *     second opinion on 2.
 *
 * When the guard cannot tell (the lookup failed: EMFILE, ENOBUFS, ...), it refuses, with the reason
 * "cannot tell whether the destination is local".
 *
 * NAT in the host's output path can still turn an allowed destination into the host itself (nft
 * `redirect`, DNAT to 127.0.0.1).  For TCP, guard_check_connected() detects it once the upstream
 * connection is established (policy/localpeer: a socket of this namespace whose remote endpoint is
 * ours) and the relay resets both sides before any byte moves; the host service has seen an accepted
 * connection by then, but nothing from the child.  That check is costly (a walk of the kernel's TCP
 * table), so guard_check_connected_many() checks many connections with one walk per local address,
 * and a destination found clean is not checked again for GUARD_PEER_CLEAN_MS.  For UDP this is not detectable (the host-side
 * socket that receives the datagram is not connected to us); a UDP flow NATed to the host reaches it.
 */
#ifndef CHILDFLOW_POLICY_GUARD_H
#define CHILDFLOW_POLICY_GUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "backend/netplan.h"

enum guard_verdict {
	GUARD_ALLOW = 0,
	GUARD_DENY_UNSPECIFIED,   /* 0.0.0.0, ::, port 0 */
	GUARD_DENY_LOOPBACK,      /* 127/8, ::1 */
	GUARD_DENY_MULTICAST,     /* 224/4, 255.255.255.255, ff00::/8; RTN_MULTICAST */
	GUARD_DENY_LINK,          /* the sandbox's own link subnets */
	GUARD_DENY_LINKLOCAL6,    /* fe80::/10 has no meaning outside the child's link */
	GUARD_DENY_MAPPED,        /* ::ffff:0:0/96, v4-compatible; NAT64/6to4 embedding a refused IPv4 */
	GUARD_DENY_HOST_LOCAL,    /* an address of an interface of the host */
	GUARD_DENY_LINKLOCAL4,    /* 169.254/16: link-local, cloud instance metadata */
	GUARD_DENY_LOCAL_ROUTE,   /* the host delivers it to itself (RTN_LOCAL, or out of lo) */
	GUARD_DENY_ANYCAST,       /* an anycast address of the host (RTN_ANYCAST) */
	GUARD_DENY_BROADCAST,     /* a broadcast address of a host subnet (RTN_BROADCAST) */
	GUARD_DENY_UNKNOWN,       /* the lookup failed: refuse rather than guess */
	GUARD_DENY_NAT_LOCAL,     /* connected, but the other end is a socket of this host (NAT) */
};
#define GUARD_NVERDICTS (GUARD_DENY_NAT_LOCAL + 1)

#define GUARD_CACHE_SLOTS 256     /* route answers kept: a power of two */
/* A destination (address and port) whose connection was found not to end on this host is not
 * looked at again for this long, nor after a route or address change (the check costs about 2 ms
 * of kernel time on a host with a large TCP hash table, see guard_check_connected()). */
#define GUARD_PEER_CLEAN_MS 5000

struct guard_slot;
struct guard_peer_slot;
struct nl;

struct guard_stats {
	uint64_t route_lookups;   /* RTM_GETROUTE round trips (cache misses) */
	uint64_t cache_hits;
	uint64_t invalidations;   /* route or address notifications that emptied the cache */
	uint64_t peer_checks;     /* sock_diag dumps by guard_check_connected() */
};

struct guard {
	const struct netplan *net;
	int nl_fd;                /* rtnetlink address and route notifications: the caches go stale */
	struct nl *rt;            /* RTM_GETROUTE requests (non-blocking) */
	int diag_fd;              /* sock_diag, for guard_check_connected(); -1 when the kernel has none */
	struct guard_slot *cache; /* GUARD_CACHE_SLOTS route answers */
	struct guard_peer_slot *clean;   /* GUARD_CACHE_SLOTS destinations recently seen not local */
	uint32_t gen;             /* a slot is valid when its generation is this one */
	bool stale;               /* the address list must be re-read */
	struct local_addr *addrs;
	int n_addrs;
	struct guard_stats stats;
};

/* Return: 0, or -errno when a netlink socket cannot be opened or the cache allocated. */
int guard_init(struct guard *g, const struct netplan *net);
void guard_free(struct guard *g);

/* The fd to watch for readability; call guard_on_notify() when it is readable. */
int guard_fd(const struct guard *g);
void guard_on_notify(struct guard *g);

/* Classify @dst (AF_INET or AF_INET6): the three checks above.  Never blocks. */
enum guard_verdict guard_check(struct guard *g, const struct sockaddr *dst);

/**
 * guard_check_connected() - after a TCP connect completes: does it in fact end on this host?
 * @g: the guard
 * @fd: the connected upstream socket
 *
 * Checks the peer address again (guard_check()), then looks for a socket of this namespace that is
 * the other end (a NAT redirect to the host).  That look is one sock_diag dump, in which the kernel
 * walks every bucket of its global TCP established table: about 2 ms on a host with 262144 buckets
 * (15 us with 1024).  So a destination found clean is remembered for GUARD_PEER_CLEAN_MS: a NAT
 * rule added meanwhile for that very destination is noticed only after that.
 *
 * Return: GUARD_ALLOW, GUARD_DENY_NAT_LOCAL, GUARD_DENY_UNKNOWN when it cannot be told, or a verdict
 * of guard_check() on the peer address.
 */
enum guard_verdict guard_check_connected(struct guard *g, int fd);

/*
 * guard_peer_known_clean() - was a connection to @peer (address and port) found not to end on this
 * host within the last GUARD_PEER_CLEAN_MS, with no route or address change since (the memo of
 * guard_check_connected(), filled by the relay and by --fast-tcp alike)?  Changes nothing.
 */
bool guard_peer_known_clean(struct guard *g, const struct sockaddr_storage *peer);

#define GUARD_BATCH_MAX 64

/**
 * guard_check_connected_many() - guard_check_connected() for @n (at most GUARD_BATCH_MAX) sockets,
 * with one sock_diag walk per distinct local address among those not remembered clean, whatever
 * their number: the relay checks every connection that completed in one turn of its loop together.
 * @peers: the address each socket connected to (what getpeername() would say), or NULL to ask the
 *         sockets
 * @out: one verdict per socket.
 */
void guard_check_connected_many(struct guard *g, const int *fds, const struct sockaddr_storage *peers, int n,
				enum guard_verdict *out);

/* Static classification without the route and host-address lookups (pure; unit tested). */
enum guard_verdict guard_classify(const struct netplan *net, const struct sockaddr *dst);

/* What a route of type @rtm_type out of interface @oif means for a destination (pure). */
enum guard_verdict guard_route_verdict(int rtm_type, int oif);

const char *guard_reason(enum guard_verdict v);

#endif
