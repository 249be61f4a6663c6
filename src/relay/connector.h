/* SPDX-License-Identifier: MIT */
/*
 * relay/connector — how a TCP flow's upstream gets connected (the seam behind "route").
 *
 * The TCP engine (relay/tcp.c) owns the child's socket, the splice pipes and the flow's life; a
 * connector owns only the making of the upstream byte stream: a direct connect (connect/direct.c),
 * later an HTTP CONNECT, a TLS-wrapped proxy or a SOCKS5 handshake.  The engine calls start() once,
 * then step() on every event of the upstream fd until the connector says READY (the fd now carries
 * the child's byte stream, and the engine splices it) or FAILED (with the errno the child should
 * see: ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT, ...).  The engine enforces timeout_ms, and calls
 * abort() when the flow ends before READY.  A connector never blocks and keeps its per-flow state in
 * the @st area the engine allocates with the flow (state_size bytes, zeroed, at most CONN_STATE_MAX).
 *
 * A flow may start before the child's connection is accepted (the SYN gate): start() needs only the
 * destination, so the engine can begin a flow from a SYN and adopt the child's socket later.
 */
#ifndef CHILDFLOW_RELAY_CONNECTOR_H
#define CHILDFLOW_RELAY_CONNECTOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "relay/flow.h"

#define CONN_STATE_MAX 512

enum conn_step { CONN_MORE, CONN_READY, CONN_FAILED };

struct conn_req {
	const struct flow_record *f;
	const struct sockaddr_storage *dst;   /* where the child wanted to go */
	const char *dst_name;                 /* the name it used, or NULL (remote-DNS proxies) */
};

struct connector_ops {
	const char *name;          /* the route, as flow records and the flow log show it */
	size_t state_size;
	unsigned int timeout_ms;   /* from start() to READY; 0: the engine's default */

	/*
	 * start() - begin connecting to @rq->dst with configuration @cfg.
	 * On CONN_MORE and CONN_READY *fd is the upstream socket (non-blocking; the engine owns it
	 * from now on and watches it for *want, EPOLLIN/EPOLLOUT); on CONN_FAILED *err is set and
	 * nothing is left open.
	 */
	enum conn_step (*start)(void *st, const void *cfg, const struct conn_req *rq, int *fd,
				uint32_t *want, int *err);

	/* step() - @events arrived on @fd.  Same contract as start() for *want and *err. */
	enum conn_step (*step)(void *st, int fd, uint32_t events, uint32_t *want, int *err);

	/* abort() - the flow ends before READY (the fd is closed by the engine).  May be NULL. */
	void (*abort)(void *st);
};

struct connector {
	const struct connector_ops *ops;
	const void *cfg;           /* the connector's configuration (proxy address, credentials) */
};

#endif
