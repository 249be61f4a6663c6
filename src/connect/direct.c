/* SPDX-License-Identifier: MIT */
/*
 * connect/direct — a non-blocking connect() to the destination the child dialled, from a socket
 * made by egress_socket() (the connector's cfg is the run's struct egress: `--iface`).
 *
 * States: CONNECTING (after start(), waiting for EPOLLOUT) -> READY, or FAILED with SO_ERROR
 * (EPOLLERR or EPOLLHUP).
 * Keepalive is set on the upstream socket so that a peer that vanishes without a reset (NAT timeout,
 * power loss) ends the flow after about 10 minutes instead of pinning it forever.
 *
 * A request with a TTL (the child's own, traceroute -T) connects with it, and asks for the ICMP
 * errors (IP_RECVERR): a connect that fails because a hop answered (time exceeded, unreachable)
 * leaves that hop's message in the socket's error queue, where the SYN gate finds it
 * (gate_router_error()).
 */
#include "connect/direct.h"

#include <errno.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "util/egress.h"

#define KEEPIDLE_S 300
#define KEEPINTVL_S 30
#define KEEPCNT 10

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

/* Options every relayed upstream socket gets before its SYN (urgent data in line from the first
 * byte); a failure here would change behaviour, so report it. */
static int upstream_sockopts(int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

/* Keepalive, which only matters once connected: set after connect() has sent the SYN, so the
 * child's SYN (held by the gate until this connect has an answer) does not wait for it. */
static int keepalive_sockopts(int fd)
{
	int one = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0)
		return -errno;
	return 0;
}

/* The child's TTL / hop limit @ttl on @fd (family @fam), with the ICMP errors queued for reading. */
static int ttl_sockopts(int fd, int fam, int ttl)
{
	int one = 1;

	if (setsockopt(fd, fam == AF_INET ? SOL_IP : SOL_IPV6, fam == AF_INET ? IP_TTL : IPV6_UNICAST_HOPS,
		       &ttl, sizeof(ttl)) < 0 ||
	    setsockopt(fd, fam == AF_INET ? SOL_IP : SOL_IPV6, fam == AF_INET ? IP_RECVERR : IPV6_RECVERR,
		       &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

static enum conn_step direct_start(void *st, const void *cfg, const struct conn_req *rq, int *fd,
				   uint32_t *want, int *err)
{
	int s = egress_socket(cfg, rq->dst, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	enum conn_step step = CONN_FAILED;
	int r;

	(void)st;
	if (s < 0) {
		*err = -s;
		return CONN_FAILED;
	}
	if ((r = upstream_sockopts(s)) < 0 || (rq->ttl && (r = ttl_sockopts(s, rq->dst->ss_family, rq->ttl)) < 0)) {
		close(s);
		*err = -r;
		return CONN_FAILED;
	}
	/* EPOLLIN too: the socket is then watched as the relay splices it, with no change later. */
	*want = EPOLLOUT | EPOLLIN;
	if (connect(s, (const struct sockaddr *)rq->dst, sa_len(rq->dst)) == 0)
		step = CONN_READY;
	else if (errno == EINPROGRESS)
		step = CONN_MORE;
	else
		r = -errno;
	if (!r)
		r = keepalive_sockopts(s);
	if (r < 0) {
		*err = -r;
		close(s);
		return CONN_FAILED;
	}
	*fd = s;
	return step;
}

static enum conn_step direct_step(void *st, int fd, uint32_t events, uint32_t *want, int *err)
{
	int e = 0;
	socklen_t len = sizeof(e);

	(void)st;
	if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		*want = EPOLLOUT | EPOLLIN;
		return CONN_MORE;
	}
	/* A socket still in SYN_SENT is never writable, and a failed one reports EPOLLERR or EPOLLHUP:
	 * writable alone is connected, with no error to read. */
	if (!(events & (EPOLLERR | EPOLLHUP)))
		return CONN_READY;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
		e = errno;
	if (e) {
		*err = e;
		return CONN_FAILED;
	}
	return CONN_READY;
}

const struct connector_ops direct_connector_ops = {
	.name = "direct",
	.state_size = 0,
	.timeout_ms = 0,
	.start = direct_start,
	.step = direct_step,
	.abort = NULL,
	.stream = NULL,
};
