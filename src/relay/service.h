/* SPDX-License-Identifier: MIT */
/*
 * relay/service — a module that answers some of the child's traffic itself instead of relaying it
 * (the DNS forwarder, dns/), seen from the relay.
 *
 * The relay knows nothing of what a service does: the service adds its sockets to the relay's own
 * epoll set (attach()), so an event on one costs no more than one on a relayed flow; the relay hands
 * each such event to event(), calls run() once after a batch that had any (and when the service's
 * deadline has passed), and hands it the TCP connections it claims, before any policy or connector
 * sees them.  The service writes its own flow records on the relay's hub.  So the dependency points
 * from the service to the relay (like connectors), never back.
 *
 * Life, as the relay sees it:
 *   relay_new()   reads ctx.service and calls attach() with its epoll fd; reserved_fds() is kept out
 *                 of the relay's fd budget
 *   running       event() per event, run() after each batch with events and at deadlines;
 *                 claims_tcp()/adopt_tcp() for accepted connections
 *   relay_free()  stop(): the service ends its open records (the hub goes away after it) and closes
 *                 what the relay handed it
 */
#ifndef CHILDFLOW_RELAY_SERVICE_H
#define CHILDFLOW_RELAY_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "relay/flow.h"

/*
 * struct relay_service_ev - the first member of whatever the service's epoll data (data.ptr)
 * points at, for each fd it adds to the relay's set: @relay_tag is the tag attach() was given, by
 * which the relay tells the service's events from its own; the rest is the service's.
 */
struct relay_service_ev {
	int relay_tag;
};

struct relay_service_ops {
	/*
	 * attach() - the relay's epoll set is @epfd: the service adds (and later modifies, removes)
	 * its fds there itself, each with data.ptr pointing at a struct whose first member is a
	 * struct relay_service_ev with @tag.  Called once, before any other call but stop().
	 * Return: 0 or -errno.
	 */
	int (*attach)(void *priv, int epfd, int tag);

	/*
	 * event() - @events on the fd registered with @ev (@now_ms: CLOCK_MONOTONIC ms).  What it
	 * frees must outlive the batch: the relay may still hand it later events of the same
	 * epoll_wait(); run() follows the batch.  Never blocks.
	 */
	void (*event)(void *priv, struct flow_hub *hub, struct relay_service_ev *ev, uint32_t events,
		      uint64_t now_ms);

	/* run() - after a batch that had events, or the deadline passed: timers, deferred frees. */
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
