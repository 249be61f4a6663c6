/* SPDX-License-Identifier: MIT */
/*
 * policy — the one decision point for every new flow: deny, direct, or proxy, with a reason.
 *
 * Stages, in order; the first that decides wins:
 *   1. the guard (policy/guard.c): destinations that are never relayed (the host itself, loopback,
 *      the sandbox link, ...).  Not overridable by any user rule.
 *   2. user rules (allow/deny lists, later): may deny, or choose direct over the proxy.
 *   3. the default route: the proxy when one is configured, else direct.
 * The relay asks once per flow and maps the action to a connector; it never decides by itself.
 */
#ifndef CHILDFLOW_POLICY_H
#define CHILDFLOW_POLICY_H

#include <stdbool.h>
#include <sys/socket.h>

#include "policy/guard.h"

enum policy_action { POL_DENY, POL_DIRECT, POL_PROXY, POL_N };

enum policy_proto { POL_TCP, POL_UDP, POL_ICMP };

struct policy_query {
	enum policy_proto proto;
	const struct sockaddr *dst;
	const char *name;          /* the name the destination was reached by, or NULL */
};

struct policy_verdict {
	enum policy_action action;
	const char *reason;        /* static text, for the flow record and debug lines */
};

struct policy {
	struct guard guard;
	bool proxy_tcp;            /* TCP goes to the proxy connector by default */
};

/* Return: 0 or -errno. */
int policy_init(struct policy *p, const struct netplan *net);
void policy_free(struct policy *p);

/* Readable when the host's addresses or routes changed; call policy_on_notify() then. */
int policy_fd(const struct policy *p);
void policy_on_notify(struct policy *p);

struct policy_verdict policy_decide(struct policy *p, const struct policy_query *q);

#define POLICY_BATCH_MAX GUARD_BATCH_MAX

/*
 * policy_check_connected() - direct TCP connections to their destinations were just established: do
 * they in fact end on this host (host NAT)?  @out gets, per socket of @fds (at most
 * POLICY_BATCH_MAX), POL_DENY with the reason, or POL_DIRECT.  @dsts: the destination each socket
 * connected to, or NULL to ask the sockets (getpeername()).  Costly on a miss (one walk of the
 * kernel's TCP table, see guard_check_connected_many()), so the relay asks once per loop turn for
 * every connection that completed in it, and only for direct routes.
 */
void policy_check_connected(struct policy *p, const int *fds, const struct sockaddr_storage *dsts, int n,
			    struct policy_verdict *out);

/* policy_known_clean() - guard_peer_known_clean() for @dst: a direct TCP connection to it would
 * not be checked again by policy_check_connected() now. */
bool policy_known_clean(struct policy *p, const struct sockaddr_storage *dst);

#endif
