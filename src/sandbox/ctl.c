/* SPDX-License-Identifier: MIT */
/*
 * ctl — P's end of the conversation with G (gwproto.h): the setup messages P receives, and the
 * pool of sockets that must be created in N1.
 *
 * The pool, per family (sandbox.h's SANDBOX_POOL_*):
 *   FILLED    G sends SANDBOX_POOL_FILL sockets during the setup, unasked
 *   TAKING    ns_socket() hands one out at once; when held + in flight fall below LOW (below FILL
 *             when nothing is in flight), it asks for FILL - (held + in flight) more, in messages of up to FDPASS_MAX (non-blocking sends:
 *             a full socket is retried by the next take)
 *   EMPTY     ns_socket() returns -EAGAIN; on_ctl() reads the answers without blocking and says
 *             "arrived" (sockets, or a refused refill whose -errno the next take returns once)
 * Held + in flight never exceed SANDBOX_POOL_MAX: these are P's fds, counted, never more.
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "sandbox/gwproto.h"
#include "util/log.h"


static int pool_family(int k)
{
	return k == BE_SOCK_UDP6 ? AF_INET6 : AF_INET;
}

static bool pool_offered(const struct sandbox *sb, int k)
{
	return k != BE_SOCK_UDP6 || sb->net.ipv6;
}

/*
 * Ask G for sockets until held + in flight reach SANDBOX_POOL_FILL, if they are below @low, or below
 * FILL when nothing is in flight: at rest the pool is always full, so P's fd count is the same after
 * every burst (and a leak shows).
 */
static int pool_refill(struct sandbox *sb, int k, int low)
{
	struct sandbox_pool *p = &sb->pool[k];

	if (!p->inflight)
		low = SANDBOX_POOL_FILL;
	if (sb->ctl_fd < 0 || !pool_offered(sb, k) || p->n + p->inflight >= low)
		return 0;
	while (p->n + p->inflight < SANDBOX_POOL_FILL) {
		int want = SANDBOX_POOL_FILL - p->n - p->inflight;
		struct gw_msg rq = { .op = GW_UDP_SOCKETS, .family = (uint16_t)pool_family(k) };
		int r;

		rq.count = (uint16_t)(want > FDPASS_MAX ? FDPASS_MAX : want);
		if (sb->req_n >= sizeof(sb->req) / sizeof(sb->req[0]))
			return 0;   /* cannot happen: every request asks for at least one socket */
		r = gw_send(sb->ctl_fd, rq, NULL, 0, NULL, 0);
		if (r < 0)
			return r == -EAGAIN ? 0 : r;   /* a full socket: the next take retries */
		p->inflight += rq.count;
		unsigned int tail = (sb->req_head + sb->req_n++) % (sizeof(sb->req) / sizeof(sb->req[0]));

		sb->req[tail].kind = (uint8_t)k;
		sb->req[tail].count = (uint8_t)rq.count;
	}
	return 0;
}

/* The oldest refill request is answered (or its answer was lost): forget it.  Return: its index, or -1. */
static int req_pop(struct sandbox *sb)
{
	int i;

	if (!sb->req_n)
		return -1;
	i = (int)sb->req_head;
	sb->req_head = (sb->req_head + 1) % (sizeof(sb->req) / sizeof(sb->req[0]));
	sb->req_n--;
	return i;
}

/*
 * refill_lost() - an answer from G could not be read whole: the kernel cuts the fds of a message
 * when we are out of fds (MSG_CTRUNC), and fdpass_recv() closed what came.  It answered the oldest
 * request: that many sockets are no longer in flight, or the pool would wait for them for ever.
 * Return: true when a request was accounted for (the next take reports the shortage).
 */
static bool refill_lost(struct sandbox *sb)
{
	int i = req_pop(sb);
	struct sandbox_pool *p;

	if (i < 0)
		return false;
	p = &sb->pool[sb->req[i].kind];
	p->inflight -= sb->req[i].count < p->inflight ? sb->req[i].count : p->inflight;
	p->err = -EMFILE;
	return true;
}

/* A refill arrived: keep what fits (it always does: we never ask beyond SANDBOX_POOL_MAX). */
static bool pool_take_reply(struct sandbox *sb, const struct gw_msg *m, const void *payload,
			    const int *fds, int nfds)
{
	int k = m->family == AF_INET6 ? BE_SOCK_UDP6 : BE_SOCK_UDP4;
	struct sandbox_pool *p = &sb->pool[k];
	struct gw_udp_reply body;

	if ((m->family != AF_INET && m->family != AF_INET6) || m->len != sizeof(body) ||
	    m->count != nfds) {
		gw_close_fds(fds, nfds);
		return false;
	}
	memcpy(&body, payload, sizeof(body));
	req_pop(sb);   /* setup's unasked sockets come before any request */
	p->inflight -= body.asked < p->inflight ? body.asked : p->inflight;
	for (int i = 0; i < nfds; i++) {
		if (p->n < SANDBOX_POOL_MAX)
			p->fd[p->n++] = fds[i];
		else
			close(fds[i]);
	}
	if (m->err < 0)
		p->err = m->err;
	return nfds > 0 || m->err < 0;
}

void sandbox_ctl_free_pool(struct sandbox *sb)
{
	for (int k = 0; k < BE_SOCK_N; k++) {
		if (pool_offered(sb, k) && sb->pool[k].taken)
			log_debug("N1 UDP%s socket pool: %lu taken, found empty %lu times, %d fds held at the end",
				  k == BE_SOCK_UDP6 ? "v6" : "v4", sb->pool[k].taken, sb->pool[k].empty,
				  sb->pool[k].n);
		gw_close_fds(sb->pool[k].fd, sb->pool[k].n);
		sb->pool[k].n = 0;
		sb->pool[k].inflight = 0;
	}
}


/*
 * read_ctl() - handle one message from G (@flags: 0 or MSG_DONTWAIT).
 * Return: 1 when sockets (or a failed refill) arrived, 0 otherwise, or -errno (-EAGAIN: nothing
 * more; -EPIPE: G is gone).
 */
static int read_ctl(struct sandbox *sb, int flags)
{
	unsigned char payload[GW_MAX_PAYLOAD];
	int fds[FDPASS_MAX], nfds = 0;
	struct gw_msg m;
	int r = gw_recv(sb->ctl_fd, &m, payload, sizeof(payload), fds, FDPASS_MAX, &nfds, flags);

	if (r == -EBADMSG)
		return refill_lost(sb) ? 1 : 0;   /* its fds are closed already */
	if (r < 0)
		return r;
	switch (m.op) {
	case GW_UDP_SOCKETS:
		return pool_take_reply(sb, &m, payload, fds, nfds) ? 1 : 0;
	case GW_CMD_STARTED:
		for (int i = 0; i < nfds; i++) {
			if (sb->n_resolv < SANDBOX_RESOLV_MAX && m.count == nfds)
				sb->resolv_fd[sb->n_resolv++] = fds[i];
			else
				close(fds[i]);
		}
		sandbox_flush_queued_signals(sb);
		return 0;
	default:
		gw_close_fds(fds, nfds);
		return 0;
	}
}

int sandbox_ctl_recv_listeners(struct sandbox *sb)
{
	uint8_t kinds[GW_KINDS_MAX];
	int fds[FDPASS_MAX], nfds = 0;
	struct gw_msg m;

	if (gw_recv(sb->ctl_fd, &m, kinds, sizeof(kinds), fds, FDPASS_MAX, &nfds, 0) < 0)
		return -1;
	if (m.op != GW_LISTENERS || m.count != nfds || m.len != (uint32_t)nfds) {
		gw_close_fds(fds, nfds);
		return -1;
	}
	for (int i = 0; i < nfds; i++) {
		if (kinds[i] < BE_NLISTEN && sb->listen_fd[kinds[i]] < 0)
			sb->listen_fd[kinds[i]] = fds[i];
		else if (kinds[i] == GW_KIND_GATE && sb->gate_fd < 0)
			sb->gate_fd = fds[i];
		else if (kinds[i] == GW_KIND_ECHO && sb->echo_fd < 0)
			sb->echo_fd = fds[i];
		else if (kinds[i] == GW_KIND_INJECT4 && sb->inject_fd[0] < 0)
			sb->inject_fd[0] = fds[i];
		else if (kinds[i] == GW_KIND_INJECT6 && sb->inject_fd[1] < 0)
			sb->inject_fd[1] = fds[i];
		else if (kinds[i] == GW_KIND_CAPTURE && sb->capture_fd < 0)
			sb->capture_fd = fds[i];
		else
			close(fds[i]);
	}
	return 0;
}

int sandbox_ctl_recv_child_netns(struct sandbox *sb)
{
	int fd = -1, nfds = 0;
	struct gw_msg m;

	if (gw_recv(sb->ctl_fd, &m, NULL, 0, &fd, 1, &nfds, 0) < 0)
		return -1;
	if (m.op != GW_CHILD_NETNS || nfds != 1) {
		gw_close_fds(&fd, nfds);
		return -1;
	}
	sb->child_netns_fd = fd;
	return 0;
}

/*
 * recv_initial_pool() - G sends SANDBOX_POOL_FILL sockets per offered family right after the
 * listeners, unasked, so that the first flows never wait.
 */
int sandbox_ctl_recv_initial_pool(struct sandbox *sb)
{
	for (int k = 0; k < BE_SOCK_N; k++)
		sb->pool[k].inflight = pool_offered(sb, k) ? SANDBOX_POOL_FILL : 0;
	while (sb->pool[BE_SOCK_UDP4].inflight || sb->pool[BE_SOCK_UDP6].inflight) {
		unsigned char payload[GW_MAX_PAYLOAD];
		int fds[FDPASS_MAX], nfds = 0;
		struct gw_msg m;

		if (gw_recv(sb->ctl_fd, &m, payload, sizeof(payload), fds, FDPASS_MAX, &nfds, 0) < 0)
			return -1;
		if (m.op != GW_UDP_SOCKETS || !pool_take_reply(sb, &m, payload, fds, nfds) || m.err) {
			gw_close_fds(fds, m.op == GW_UDP_SOCKETS ? 0 : nfds);
			return -1;
		}
	}
	return 0;
}

int sandbox_ctl_send_plan(struct sandbox *sb, const struct idmap_plan *plan)
{
	char buf[sizeof(plan->inner_uid) + sizeof(plan->inner_gid)];
	size_t ul = strlen(plan->inner_uid) + 1, gl = strlen(plan->inner_gid) + 1;

	memcpy(buf, plan->inner_uid, ul);
	memcpy(buf + ul, plan->inner_gid, gl);
	return gw_send(sb->ctl_fd, (struct gw_msg){ .op = GW_IDMAP_PLAN }, buf, ul + gl, NULL, 0);
}

int sandbox_ctl_ns_socket(struct sandbox *sb, enum be_sock_kind k)
{
	struct sandbox_pool *p;
	int r;

	if ((int)k < 0 || k >= BE_SOCK_N || !pool_offered(sb, k))
		return -EAFNOSUPPORT;
	p = &sb->pool[k];
	if (p->n > 0) {
		int fd = p->fd[--p->n];

		p->taken++;
		pool_refill(sb, k, SANDBOX_POOL_LOW);
		return fd;
	}
	p->empty++;
	if (p->err < 0 && p->inflight == 0) {
		/* G could not create them: say so once, then try again on the next call. */
		r = p->err;
		p->err = 0;
		return r;
	}
	r = pool_refill(sb, k, SANDBOX_POOL_LOW);
	if (r < 0 && p->inflight == 0)
		return r;
	return -EAGAIN;
}

bool sandbox_ctl_on_ctl(struct sandbox *sb)
{
	bool arrived = false;
	int r;

	while (sb->ctl_fd >= 0 && (r = read_ctl(sb, MSG_DONTWAIT)) != -EAGAIN) {
		if (r == -EPIPE || (r < 0 && r != -EINTR)) {
			/* G is gone (its pidfd says so too): closing also takes the fd out of epoll. */
			close(sb->ctl_fd);
			sb->ctl_fd = -1;
			break;
		}
		arrived |= r > 0;
	}
	for (int k = 0; k < BE_SOCK_N; k++)
		pool_refill(sb, k, SANDBOX_POOL_LOW);
	return arrived;
}
