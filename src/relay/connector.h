/* SPDX-License-Identifier: MIT */
/*
 * relay/connector — how a TCP flow's upstream gets connected (the seam behind "route").
 *
 * The TCP engine (relay/tcp.c) owns the child's socket, the splice pipes and the flow's life; a
 * connector owns only the making of the upstream byte stream: a direct connect (connect/direct.c),
 * an HTTP CONNECT, a TLS-wrapped HTTP CONNECT or a SOCKS5 handshake (proxy/).  The engine calls
 * start() once, then step() on every event of the upstream fd until the connector says READY (the fd
 * now carries the child's byte stream) or FAILED (with the errno the child should see:
 * ECONNREFUSED, EHOSTUNREACH, ETIMEDOUT, ...; the SYN gate turns it into what the child's connect()
 * reports).  The engine enforces the timeout, and calls abort() when the flow ends before READY.  A
 * connector never blocks and keeps its per-flow state in the @st area the engine allocates with the
 * flow (state_size bytes, zeroed, at most CONN_STATE_MAX); @st lives as long as the flow.
 *
 * Bytes that follow the handshake (a proxy's first bytes from the destination, sent right behind
 * its reply) belong to the child: a connector reads exactly its handshake (peek, then consume what
 * it parsed) and leaves the rest in the socket (or in its stream), where the engine finds it.
 *
 * After READY the upstream is either the plain fd (stream == NULL: the engine splices it), or a
 * byte stream the connector keeps on top of the fd (stream != NULL: TLS), which the engine moves
 * with the stream's read/unread/send through user space, and releases when the flow ends.
 *
 * A flow may start before the child's connection is accepted (the SYN gate): start() needs only the
 * destination, so the engine can begin a flow from a SYN and adopt the child's socket later.
 */
#ifndef CHILDFLOW_RELAY_CONNECTOR_H
#define CHILDFLOW_RELAY_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "relay/flow.h"

#define CONN_STATE_MAX 512

/* CONN_REDIAL (from step() only): this socket failed to connect and the connector has another
 * address to try (*err says why this one failed): the engine closes the fd and calls start() again
 * with the same request (@st is kept, so the connector knows which attempt is next). */
enum conn_step { CONN_MORE, CONN_READY, CONN_FAILED, CONN_REDIAL };

/* Why a flow ended before READY (abort()). */
enum conn_abort {
	CONN_ABORT_ENDED,     /* the child went away, the flow was evicted, or the run ended */
	CONN_ABORT_TIMEOUT,   /* the connector's time ran out (the child sees ETIMEDOUT) */
};

struct conn_req {
	const struct flow_record *f;          /* NULL for a probe */
	const struct sockaddr_storage *dst;   /* where the child wanted to go */
	const char *dst_name;                 /* the name the child resolved it from in this run, or
					       * NULL; valid for the flow's life */
	bool probe;                           /* no child: check that the route works (reach the
					       * proxy, authenticate), then say READY; connect nowhere */
	int ttl;                              /* the child's TTL / hop limit when it set its own
					       * (relay_child_ttl()), else 0: the host's default.  Only
					       * a connector that dials the destination itself uses it */
};

/*
 * A byte stream over the upstream fd (after READY), with socket semantics: read() returns like
 * recv(MSG_DONTWAIT) (n > 0, 0 at EOF, -1 with errno EAGAIN, ECONNRESET, ...), reading into @buf
 * directly (no copy kept); unread() gives back the last @n bytes of what read() returned, which the
 * destination did not take: the stream keeps a copy, and the next read() returns them first
 * (-ENOMEM when it cannot: the flow must end).  read() returns -1/EAGAIN only when the stream holds
 * nothing, so that an edge-triggered readiness is never lost.  send() is like send(MSG_DONTWAIT)
 * and may take fewer bytes; a send() that returned -1/EAGAIN is retried with the same bytes (or
 * more) in front.  An event of either kind on the fd may make either way progress.
 */
struct conn_stream_ops {
	ssize_t (*read)(void *st, int fd, void *buf, size_t len);
	int (*unread)(void *st, const void *buf, size_t n);
	ssize_t (*send)(void *st, int fd, const void *buf, size_t len);
	void (*shutdown)(void *st, int fd);   /* no more bytes from the child: end our direction */
	void (*release)(void *st);            /* the flow ended (the engine closes the fd) */
};

struct connector_ops {
	const char *name;          /* the route, as flow records and the flow log show it */
	size_t state_size;
	unsigned int timeout_ms;   /* from start() to READY; 0: the engine's default */
	const struct conn_stream_ops *stream;   /* NULL: READY means a plain fd, spliced */

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

	/* abort() - the flow ends before READY, for @why (the fd is closed by the engine).  May be
	 * NULL.  Not called after FAILED. */
	void (*abort)(void *st, enum conn_abort why);

	/* again() - a probe (conn_req.probe) just went through: should the engine start another one
	 * (a connector that learns in two steps)?  May be NULL. */
	bool (*again)(const void *cfg);
};

struct connector {
	const struct connector_ops *ops;
	const void *cfg;           /* the connector's configuration (proxy address, credentials) */
	unsigned int timeout_ms;   /* overrides ops->timeout_ms when not 0 */
};

#endif
