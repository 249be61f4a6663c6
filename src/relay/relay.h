/* SPDX-License-Identifier: MIT */
/*
 * relay — P's event loop: every flow the child opens, relayed from the caller's namespace.
 *
 * Theory of operation.  The backend's interception namespace terminates the child's TCP connections
 * and hands them to transparent listeners whose fds P holds; getsockname() on an accepted socket is
 * the destination the child dialled.  The policy decides what happens to the flow (deny, direct,
 * proxy); the connector of that route makes the upstream byte stream (non-blocking); then P moves
 * bytes between the two sockets with splice() through a pipe, never copying payload to user space
 * (a pipe-less copy through one scratch buffer takes over when pipes run short).  UDP arrives on a
 * transparent socket with IP_ORIGDSTADDR; each (child address, destination) pair becomes a flow with
 * a host-side socket and an interception-side socket bound to the destination, so replies reach the
 * child from the address it wrote to.  Every flow has a life record (relay/flow.h) that observers
 * read.  One epoll loop, edge-triggered sockets, no thread per flow; every table is bounded, and the
 * fd budget is split so that each part keeps its share.
 *
 * The relay knows the backend only through backend/backend.h, and the routes only through
 * relay/connector.h.
 */
#ifndef CHILDFLOW_RELAY_H
#define CHILDFLOW_RELAY_H

#include "relay/flow.h"

struct ctx;
struct relay;

/* Set up the loop around a started backend (c->be) with c->policy and c->route.  Return: 0 or -errno. */
int relay_new(struct relay **rp, struct ctx *c, int sigfd);

/* Observers see every flow from now on.  Return: 0 or -ENOSPC. */
int relay_observe(struct relay *r, const struct flow_observer *o);

/*
 * relay_set_tap() - @t (kept, not copied) sees the relay's host-side sockets and the bytes they
 * carry from now on (relay/flow.h); with a stream() callback, TCP flows then copy through user
 * space instead of splicing.
 * Return: 0, or -EBUSY when a tap is set.
 */
int relay_set_tap(struct relay *r, const struct flow_tap *t);

/* Run until the command has exited and its flows drained; Return: childflow's exit code. */
int relay_run(struct relay *r);

/*
 * relay_probe() - check the route of @conn once, in the loop, without a child: the connector
 * reaches its proxy and authenticates (and reports a failure itself), then the probe ends.  Never
 * blocks; bounded by the connector's timeout.  Return: 0 or -errno.
 */
struct connector;
int relay_probe(struct relay *r, const struct connector *conn);

/*
 * A module with an fd of its own that the loop drives without knowing what it does (the capture):
 * run() when @fd is readable (EPOLLIN, level-triggered) or when deadline() (CLOCK_MONOTONIC ms,
 * UINT64_MAX for none) has passed.  run() never blocks.  hold() (may be NULL): true while TCP
 * flows must not read more (the module cannot keep up; TCP flow control then slows the senders);
 * the relay asks again after the next run() and at least every RELAY_HOLD_POLL_MS.
 */
struct relay_hook {
	int fd;
	void (*run)(void *priv, uint64_t now_ms);
	uint64_t (*deadline)(void *priv);
	bool (*hold)(void *priv, uint64_t now_ms);
	void *priv;
};

#define RELAY_HOLD_POLL_MS 20

#define RELAY_MAX_HOOKS 4

/*
 * relay_set_child_sockbuf() - give the child's TCP sockets accepted from now on @bytes of receive and
 * of send buffer (SO_RCVBUF, SO_SNDBUF; 0: the kernel's autotuning).  For the child view's capture:
 * what a flow still carries over the child's link after the relay stopped reading (relay_hook's
 * hold()) is bounded by them, where autotuning lets it grow to tcp_rmem's maximum (32 MiB here).
 */
void relay_set_child_sockbuf(struct relay *r, int bytes);

/* relay_add_hook() - drive @h from now on (copied).  Return: 0, -ENOSPC, or -errno from epoll. */
int relay_add_hook(struct relay *r, const struct relay_hook *h);

void relay_free(struct relay *r);

#endif
