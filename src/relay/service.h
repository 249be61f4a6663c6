/* SPDX-License-Identifier: MIT */
/*
 * relay/service — a module that answers some of the child's traffic itself instead of relaying it
 * (the DNS forwarder, dns/), seen from the relay.
 *
 * The relay knows nothing of what a service does: it watches one fd for it (an epoll fd of the
 * service's own, which holds the service's sockets), calls run() when that fd is readable or the
 * service's deadline has passed, and hands it the TCP connections it claims, before any policy or
 * connector sees them.  The service writes its own flow records on the relay's hub.  So the
 * dependency points from the service to the relay (like connectors), never back.
 *
 * Life, as the relay sees it:
 *   relay_new()   reads ctx.service; its fd is watched from then on, reserved_fds() is kept out of
 *                 the relay's fd budget
 *   running       run() on events and deadlines; claims_tcp()/adopt_tcp() for accepted connections
 *   relay_free()  stop(): the service ends its open records (the hub goes away after it) and closes
 *                 what the relay handed it
 */
#ifndef CHILDFLOW_RELAY_SERVICE_H
#define CHILDFLOW_RELAY_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "relay/flow.h"

struct relay_service_ops {
	/* The fd the relay watches for EPOLLIN (the service's own epoll fd). */
	int (*fd)(void *priv);

	/* run() - the fd is readable or the deadline passed (@now_ms: CLOCK_MONOTONIC ms).  Never blocks. */
	void (*run)(void *priv, struct flow_hub *hub, uint64_t now_ms);

	/* The next time run() must be called even without events, or UINT64_MAX. */
	uint64_t (*deadline)(void *priv);

	/* Does the service answer TCP connections to @dst (the child's original destination)? */
	bool (*claims_tcp)(void *priv, const struct sockaddr_storage *dst);

	/*
	 * adopt_tcp() - a claimed connection: the service owns @fd (non-blocking, accepted in the
	 * interception namespace) from now on, and closes it on every path.
	 */
	void (*adopt_tcp)(void *priv, struct flow_hub *hub, int fd, const struct sockaddr_storage *child,
			  const struct sockaddr_storage *dst, uint64_t now_ms);

	/* At most this many fds held in P (kept out of the relay's budget). */
	unsigned int (*reserved_fds)(void *priv);

	/* The relay is going away: end open records (FLOW_CUT_AT_EXIT), close adopted connections. */
	void (*stop)(void *priv, struct flow_hub *hub);
};

struct relay_service {
	const struct relay_service_ops *ops;   /* NULL: no service */
	void *priv;
};

#endif
