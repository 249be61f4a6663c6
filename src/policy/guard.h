/* SPDX-License-Identifier: MIT */
/*
 * policy/guard — destinations the relay never dials on the child's behalf (design §2, cost 3).
 *
 * The child chooses the destination, and P dials it from the caller's namespace.  Without a guard the
 * child could reach the caller's host-local services (anything bound to 127.0.0.1 or to the host's own
 * addresses), the sandbox link itself, or addresses that make no sense as a unicast destination.
 * User-configurable allow/deny policy builds on top of this.
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
	GUARD_DENY_MULTICAST,     /* 224/4, 255.255.255.255, ff00::/8 */
	GUARD_DENY_LINK,          /* the sandbox's own link subnets */
	GUARD_DENY_LINKLOCAL6,    /* fe80::/10 has no meaning outside the child's link */
	GUARD_DENY_MAPPED,        /* ::ffff:0:0/96 and other v4-in-v6 forms */
	GUARD_DENY_HOST_LOCAL,    /* an address of the host itself */
};

struct guard {
	const struct netplan *net;
	int nl_fd;                /* rtnetlink address notifications: the cache goes stale */
	bool stale;
	struct local_addr *addrs;
	int n_addrs;
};

int guard_init(struct guard *g, const struct netplan *net);
void guard_free(struct guard *g);

/* The fd to watch for readability; call guard_on_notify() when it is readable. */
int guard_fd(const struct guard *g);
void guard_on_notify(struct guard *g);

/* Classify @dst (AF_INET or AF_INET6). */
enum guard_verdict guard_check(struct guard *g, const struct sockaddr *dst);

/* Static classification without the host-address lookup (pure; unit tested). */
enum guard_verdict guard_classify(const struct netplan *net, const struct sockaddr *dst);

const char *guard_reason(enum guard_verdict v);

#endif
