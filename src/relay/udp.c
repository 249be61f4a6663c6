/* SPDX-License-Identifier: MIT */
/*
 * relay/udp — UDP flows keyed by (child address, original destination).
 *
 * The first datagram of a flow arrives on the transparent listener with IP(V6)_ORIGDSTADDR.  The
 * policy decides; P then takes a socket created in the interception namespace from the backend's
 * pool, binds it (transparently) to the original destination and connects it to the child: later
 * datagrams of the flow are delivered to that socket directly, and replies written to it reach the
 * child from the address it dialled.  A host-side socket connected to the destination carries the
 * flow upstream.  When the pool is empty (a burst of new flows), the first datagram waits in a
 * bounded queue until the backend's refill arrives; the loop never waits for it.
 *
 * States of a flow: PENDING (first datagram queued, no flow yet) -> OPEN (both sockets) -> CLOSED
 * (idle for udp_idle_ms, evicted, or at exit).  The table is capped; when it is full, the least
 * recently used flow is evicted if it has been quiet for udp_keep_ms, else the least recently used
 * one-way flow (never answered), else the least recently used one (see make_room()), so a spray of
 * new flows evicts its own kind before the tree's active conversations.
 *
 * Each datagram goes upstream with the TTL / hop limit the child sent it with when the child chose
 * its own (relay_child_ttl(): traceroute's probes, a program that sets IP_TTL per datagram), as a
 * per-datagram IP_TTL / IPV6_HOPLIMIT control message; others with the host's default.  The
 * interception sockets ask for the TTL (IP_RECVTTL, IPV6_RECVHOPLIMIT) to learn it.
 *
 * Errors from upstream come back: the host socket asks for them (IP_RECVERR, IPV6_RECVERR), and an
 * ICMP error it gets (port unreachable, host or network unreachable, too big, time exceeded) is
 * written to the child through the backend's raw socket, from the address that sent it, quoting the
 * child's datagram (relay/icmp.h), so the child's connected socket sees ECONNREFUSED and its
 * path-MTU discovery the smaller MTU, as without childflow.
 */
#include "relay/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

#include <sodium.h>
#include <linux/errqueue.h>

#include "relay/icmp.h"
#include "util/egress.h"
#include "util/log.h"

#define UDP_BUF 65536
#define UDP_BURST 64        /* datagrams taken from the listener per event */
#define UDP_BATCH 32        /* datagrams moved per recvmmsg()/sendmmsg() pair on a flow */
#define UDP_BATCHES 4       /* batches per event before other sockets get a turn */
#define UDP_PENDING_BYTES (4u << 20)

struct udp_flow {
	struct flow_record rec;
	struct ev_src ev_child;   /* EV_UDP_CHILD: the interception socket, connected to the child */
	struct ev_src ev_host;    /* EV_UDP_HOST: the host socket, connected to the destination */
	int child_fd, host_fd;
	unsigned int bucket;
	uint64_t last_ms;
	bool dead;                /* closed; freed after the current epoll batch */
	struct udp_flow *hnext;
	struct udp_flow *lprev, *lnext;
};

/* A first datagram waiting for an interception-side socket. */
struct udp_pending {
	struct udp_pending *next;
	struct sockaddr_storage child, dst;
	size_t len;
	int ttl;                  /* as the child sent it, -1: unknown */
	unsigned char data[];
};

#define flow_of(ptr, member) ((struct udp_flow *)((char *)(ptr) - offsetof(struct udp_flow, member)))

/* SipHash-2-4 with a key random per run: the command chooses both endpoints and must not be able to
 * aim at one chain. */
uint64_t relay_pair_hash(const struct relay *r, const struct sockaddr_storage *child,
			 const struct sockaddr_storage *dst)
{
	unsigned char in[36], out[crypto_shorthash_BYTES];
	size_t n = flow_endpoint_bytes(child, in);
	uint64_t h;

	n += flow_endpoint_bytes(dst, in + n);
	crypto_shorthash(out, in, n, (const unsigned char *)r->udp_key);
	memcpy(&h, out, sizeof(h));
	return h;
}

unsigned int udp_bucket(const struct relay *r, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst)
{
	return (unsigned int)(relay_pair_hash(r, child, dst) % r->udp_buckets);
}

int udp_init(struct relay *r)
{
	if (sodium_init() < 0)
		return -EIO;
	randombytes_buf(r->udp_key, sizeof(r->udp_key));
	r->udp_buckets = 4096;
	r->udp_hash = calloc(r->udp_buckets, sizeof(struct udp_flow *));
	/* Room for one batch of maximum-size datagrams; pages are only touched as datagrams need them. */
	r->udp_buf = malloc((size_t)UDP_BUF * UDP_BATCH);
	if (!r->udp_hash || !r->udp_buf)
		return -ENOMEM;
	return 0;
}

static void lru_unlink(struct relay *r, struct udp_flow *f)
{
	if (f->lprev)
		f->lprev->lnext = f->lnext;
	else
		r->udp_lru_head = f->lnext;
	if (f->lnext)
		f->lnext->lprev = f->lprev;
	else
		r->udp_lru_tail = f->lprev;
	f->lprev = f->lnext = NULL;
}

static void lru_append(struct relay *r, struct udp_flow *f)
{
	f->lprev = r->udp_lru_tail;
	f->lnext = NULL;
	if (r->udp_lru_tail)
		r->udp_lru_tail->lnext = f;
	else
		r->udp_lru_head = f;
	r->udp_lru_tail = f;
}

static void touch(struct relay *r, struct udp_flow *f)
{
	f->last_ms = r->now_ms;
	if (r->udp_lru_tail != f) {
		lru_unlink(r, f);
		lru_append(r, f);
	}
}

static void flow_free(struct relay *r, struct udp_flow *f, enum flow_outcome o, int err)
{
	for (struct udp_flow **pp = &r->udp_hash[f->bucket]; *pp; pp = &(*pp)->hnext) {
		if (*pp == f) {
			*pp = f->hnext;
			break;
		}
	}
	lru_unlink(r, f);
	if (r->hub.tap)
		flow_tap_sock(&r->hub, f->host_fd, SOCK_DGRAM, false);
	close(f->child_fd);
	close(f->host_fd);
	r->n_udp--;
	flow_end(&r->hub, &f->rec, o, err);
	f->dead = true;
	f->hnext = r->udp_dead;
	r->udp_dead = f;
}

void udp_reap(struct relay *r)
{
	while (r->udp_dead) {
		struct udp_flow *f = r->udp_dead;

		r->udp_dead = f->hnext;
		free(f);
	}
}

static struct udp_flow *flow_find(struct relay *r, const struct sockaddr_storage *child,
				  const struct sockaddr_storage *dst)
{
	for (struct udp_flow *f = r->udp_hash[udp_bucket(r, child, dst)]; f; f = f->hnext)
		if (flow_same_endpoint(&f->rec.child, child) && flow_same_endpoint(&f->rec.dst, dst))
			return f;
	return NULL;
}

/* Bind the interception-side socket @fd to the destination and connect it to the child; it tells
 * each datagram's TTL / hop limit. */
static int place_child_socket(int fd, const struct sockaddr_storage *child, const struct sockaddr_storage *dst)
{
	int one = 1;
	int fam = dst->ss_family;

	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, fam == AF_INET ? SOL_IP : SOL_IPV6,
		       fam == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, fam == AF_INET ? SOL_IP : SOL_IPV6,
		       fam == AF_INET ? IP_RECVTTL : IPV6_RECVHOPLIMIT, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)dst, flow_sa_len(dst)) < 0 ||
	    connect(fd, (const struct sockaddr *)child, flow_sa_len(child)) < 0)
		return -errno;
	return 0;
}

#define EVICT_SCAN 64   /* flows looked at, from the least recently used, for a one-way one */

/*
 * make_room() - is there room for one more flow?  When the table is full, one flow makes room, in
 * this order: the least recently used if it has been quiet for udp_keep_ms; else the least
 * recently used flow that never had an answer (a one-way flow: a scan, a spray to closed ports);
 * else the least recently used.  So a spray of new flows evicts its own kind first and cannot push
 * out the tree's active conversations, while churn of short exchanges (DNS queries from random
 * ports) keeps working as flows come and go.
 */
static bool make_room(struct relay *r)
{
	struct udp_flow *old = r->udp_lru_head, *victim = old;
	int n = 0;

	if (r->n_udp < r->lim.max_udp)
		return true;
	if (!old)
		return false;
	if (r->now_ms - old->last_ms < r->lim.udp_keep_ms) {
		for (struct udp_flow *f = old; f && n < EVICT_SCAN; f = f->lnext, n++) {
			if (!f->rec.pkts_down) {
				victim = f;
				break;
			}
		}
		relay_shortage(r, SHORT_UDP);   /* active flows are being evicted: say so once */
	}
	r->stats.udp_evicted++;
	flow_free(r, victim, FLOW_EVICTED, 0);
	return true;
}

/*
 * flow_new() - open the flow for a first datagram, with @cfd from the backend's pool.
 * Return: the flow, or NULL (the datagram is dropped, @cfd is closed, the record says why, and
 * *@errp is the error, positive).
 */
static struct udp_flow *flow_new(struct relay *r, int cfd, const struct sockaddr_storage *child,
				 const struct sockaddr_storage *dst, const char *rule, int *errp)
{
	struct udp_flow *f = calloc(1, sizeof(*f));
	int err = 0, hfd = -1;

	*errp = ENOMEM;
	if (!f) {
		close(cfd);
		return NULL;
	}
	flow_begin(&r->hub, &f->rec, FLOW_UDP, child, dst);
	f->rec.route = "direct";
	f->rec.rule = rule;
	f->child_fd = cfd;
	if ((err = place_child_socket(cfd, child, dst)) < 0) {
		log_debug("cannot place a UDP reply socket: %s", strerror(-err));
		goto fail;
	}
	hfd = egress_socket(&r->c->egress, dst, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (hfd < 0) {
		err = hfd;
		hfd = -1;
		log_debug("cannot open a UDP flow upstream: %s", strerror(-err));
		goto fail;
	}
	if (r->inject_fd[dst->ss_family == AF_INET6] >= 0) {
		int one = 1;

		setsockopt(hfd, dst->ss_family == AF_INET ? SOL_IP : SOL_IPV6,
			   dst->ss_family == AF_INET ? IP_RECVERR : IPV6_RECVERR, &one, sizeof(one));
	}
	if (connect(hfd, (const struct sockaddr *)dst, flow_sa_len(dst)) < 0) {
		err = -errno;
		log_debug("cannot open a UDP flow upstream: %s", strerror(-err));
		goto fail;
	}
	if (!make_room(r)) {
		err = -ENOBUFS;
		goto fail;
	}
	f->ev_child.kind = EV_UDP_CHILD;
	f->ev_host.kind = EV_UDP_HOST;
	f->host_fd = hfd;
	if (r->hub.tap)
		flow_tap_sock(&r->hub, hfd, SOCK_DGRAM, true);
	f->bucket = udp_bucket(r, child, dst);
	f->hnext = r->udp_hash[f->bucket];
	r->udp_hash[f->bucket] = f;
	lru_append(r, f);
	f->last_ms = r->now_ms;
	r->n_udp++;
	r->stats.udp_flows++;
	flow_opened(&r->hub, &f->rec);
	if ((err = relay_watch(r, cfd, EPOLLIN, &f->ev_child)) < 0 ||
	    (err = relay_watch(r, hfd, EPOLLIN, &f->ev_host)) < 0) {
		flow_free(r, f, FLOW_NO_RESOURCES, -err);
		return NULL;
	}
	return f;
fail:
	if (err == -EMFILE || err == -ENFILE)
		relay_shortage(r, SHORT_FDS);
	r->stats.udp_dropped++;
	if (hfd >= 0)
		close(hfd);
	close(cfd);
	flow_opened(&r->hub, &f->rec);
	flow_end(&r->hub, &f->rec, FLOW_NO_RESOURCES, -err);
	free(f);
	*errp = -err;
	return NULL;
}

/*
 * tell_unreachable() - the host has no way to @dst (no route, or `--iface` down or gone: connect()
 * said ENETUNREACH or EHOSTUNREACH at once): the child's first datagram of @n bytes draws a
 * destination-unreachable from its gateway, as a router without a route would send, so its
 * connected socket sees the error instead of silence.
 */
static void tell_unreachable(struct relay *r, const struct sockaddr_storage *child,
			     const struct sockaddr_storage *dst, size_t n, int err)
{
	const struct netplan *np = r->c->be.ops->netplan(r->c->be.b);
	int fam = dst->ss_family, inj = r->inject_fd[fam == AF_INET6];
	struct icmp_report rep = { .family = fam };
	struct sockaddr_storage to = *child;
	unsigned char pkt[128];
	size_t len;

	if (inj < 0 || !np)
		return;
	if (fam == AF_INET) {
		struct sockaddr_in *from = (struct sockaddr_in *)&rep.from;

		rep.type = 3;                                  /* destination unreachable */
		rep.code = err == EHOSTUNREACH ? 1 : 0;        /* host / network unreachable */
		from->sin_family = AF_INET;
		from->sin_addr = np->gw4;
	} else {
		struct sockaddr_in6 *from = (struct sockaddr_in6 *)&rep.from;

		rep.type = 1;                                  /* destination unreachable */
		rep.code = err == EHOSTUNREACH ? 3 : 0;        /* address unreachable / no route */
		from->sin6_family = AF_INET6;
		from->sin6_addr = np->gw6;
	}
	len = icmp_error_build(pkt, sizeof(pkt), &rep, child, dst, n);
	if (!len)
		return;
	((struct sockaddr_in *)&to)->sin_port = 0;   /* raw sockets: no port (same offset in v6) */
	if (sendto(inj, pkt, len, MSG_DONTWAIT, (struct sockaddr *)&to, flow_sa_len(&to)) == (ssize_t)len)
		r->stats.udp_icmp++;
}

/*
 * send_batch() - sendmmsg() @n datagrams of @msgs on @fd.  An ICMP error that arrived for the flow
 * (a closed port's unreachable, drawn by the datagrams just before) is also the host socket's
 * pending error, and the next datagram's send returns it instead of sending; such a datagram is
 * sent again.  Two failures in a row are the send's own error: the rest is dropped.
 * Return: how many were sent, from the first.
 */
static int send_batch(int fd, struct mmsghdr *msgs, int n)
{
	bool failed = false;
	int sent = 0;

	while (sent < n) {
		int k = sendmmsg(fd, msgs + sent, (unsigned int)(n - sent), MSG_DONTWAIT);

		if (k > 0) {
			sent += k;
			failed = false;
			continue;
		}
		if (failed || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ENOMEM)
			break;
		failed = true;
	}
	return sent;
}

/* A datagram's control area: room for its TTL / hop limit. */
union udp_ctl {
	char b[CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

/*
 * ttl_control() - make @m carry TTL / hop limit @ttl (family @fam) in @ctl when the child chose it
 * (relay_child_ttl()), else no control message: the host's default.
 */
static void ttl_control(struct msghdr *m, union udp_ctl *ctl, int fam, int ttl)
{
	struct cmsghdr *c = &ctl->align;

	ttl = relay_child_ttl(ttl);
	if (!ttl) {
		m->msg_control = NULL;
		m->msg_controllen = 0;
		return;
	}
	c->cmsg_level = fam == AF_INET ? SOL_IP : SOL_IPV6;
	c->cmsg_type = fam == AF_INET ? IP_TTL : IPV6_HOPLIMIT;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &ttl, sizeof(ttl));
	m->msg_control = ctl->b;
	m->msg_controllen = sizeof(ctl->b);
}

/* The TTL / hop limit @m's control messages tell (IP_TTL, IPV6_HOPLIMIT), or -1. */
static int ttl_of(struct msghdr *m)
{
	int ttl = -1;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c))
		if (((c->cmsg_level == SOL_IP && c->cmsg_type == IP_TTL) ||
		     (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)) &&
		    c->cmsg_len >= CMSG_LEN(sizeof(int)))
			memcpy(&ttl, CMSG_DATA(c), sizeof(ttl));
	return ttl;
}

/*
 * first_datagram() - a datagram from the listener (a flow's first ones), sent upstream with the
 * child's TTL / hop limit @ttl (-1: unknown) when the child chose it, so that traceroute's probes
 * expire where they would without childflow.
 */
static void first_datagram(struct relay *r, struct udp_flow *f, const void *buf, size_t n, int ttl)
{
	struct iovec io = { .iov_base = (void *)buf, .iov_len = n };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1 };
	union udp_ctl ctl;
	ssize_t w;

	ttl_control(&m, &ctl, f->rec.dst.sa.sa_family, ttl);
	w = sendmsg(f->host_fd, &m, MSG_DONTWAIT);
	if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS && errno != ENOMEM)
		w = sendmsg(f->host_fd, &m, MSG_DONTWAIT);   /* a pending error, as in send_batch() */

	touch(r, f);
	if (w == (ssize_t)n) {
		if (r->hub.tap)
			flow_tap_datagram(&r->hub, f->host_fd, 0, buf, n);
		f->rec.bytes_up += n;
		f->rec.pkts_up++;
	} else {
		r->stats.udp_dropped++;
	}
}

static bool queue_pending(struct relay *r, const struct sockaddr_storage *child,
			  const struct sockaddr_storage *dst, const void *buf, size_t n, int ttl)
{
	struct udp_pending *p;

	if (r->n_pending >= r->lim.udp_pending || r->pending_bytes + n > UDP_PENDING_BYTES)
		return false;
	p = malloc(sizeof(*p) + n);
	if (!p)
		return false;
	p->next = NULL;
	p->child = *child;
	p->dst = *dst;
	p->len = n;
	p->ttl = ttl;
	memcpy(p->data, buf, n);
	if (r->pend_tail)
		r->pend_tail->next = p;
	else
		r->pend_head = p;
	r->pend_tail = p;
	r->n_pending++;
	r->pending_bytes += n;
	return true;
}

/*
 * start_flow() - a datagram with no flow yet.  Return: 1 handled (sent, queued or dropped and
 * recorded), 0 when the pool is empty and the datagram must wait.
 */
static int start_flow(struct relay *r, const struct sockaddr_storage *child,
		      const struct sockaddr_storage *dst, const void *buf, size_t n, int ttl)
{
	struct policy_query q = { .proto = POL_UDP, .dst = (const struct sockaddr *)dst };
	struct policy_verdict v = policy_decide(&r->c->policy, &q);
	struct udp_flow *f;
	int cfd, err;

	if (v.action == POL_DENY) {
		log_debug("dropping UDP to a denied destination: %s", v.reason);
		r->stats.udp_denied++;
		flow_record_at_once(&r->hub, FLOW_UDP, child, dst, v.reason, FLOW_DENIED, EACCES);
		return 1;
	}
	cfd = r->c->be.ops->ns_socket(r->c->be.b, dst->ss_family == AF_INET6 ? BE_SOCK_UDP6 : BE_SOCK_UDP4);
	if (cfd == -EAGAIN)
		return 0;
	if (cfd < 0) {
		if (cfd == -EMFILE || cfd == -ENFILE)
			relay_shortage(r, SHORT_FDS);
		log_debug("no UDP reply socket: %s", strerror(-cfd));
		r->stats.udp_dropped++;
		return 1;
	}
	f = flow_new(r, cfd, child, dst, v.reason, &err);
	if (f)
		first_datagram(r, f, buf, n, ttl);
	else if (err == ENETUNREACH || err == EHOSTUNREACH)
		tell_unreachable(r, child, dst, n, err);
	return 1;
}

/* Datagrams for a destination whose flow is being opened: the earlier ones came first. */
static struct udp_pending *pending_for(struct relay *r, const struct sockaddr_storage *child,
				       const struct sockaddr_storage *dst)
{
	for (struct udp_pending *p = r->pend_head; p; p = p->next)
		if (flow_same_endpoint(&p->child, child) && flow_same_endpoint(&p->dst, dst))
			return p;
	return NULL;
}

/* Handle one datagram from the listener. */
static void listener_datagram(struct relay *r, const struct sockaddr_storage *child,
			      const struct sockaddr_storage *dst, const void *buf, size_t n, int ttl)
{
	struct udp_flow *f = flow_find(r, child, dst);

	if (f) {
		first_datagram(r, f, buf, n, ttl);
		return;
	}
	/* Keep the order of a flow's datagrams: behind its queued first one, or first in line. */
	if ((r->pend_head && pending_for(r, child, dst)) || !start_flow(r, child, dst, buf, n, ttl)) {
		if (!queue_pending(r, child, dst, buf, n, ttl))
			r->stats.udp_dropped++;
	}
}

/*
 * udp_retry_pending() - sockets arrived: open the flows whose first datagrams waited, in order.  A
 * family whose pool ran dry again waits for the next refill; the other family goes on.
 */
void udp_retry_pending(struct relay *r)
{
	bool dry[2] = { false, false };

	for (struct udp_pending **pp = &r->pend_head, *p; (p = *pp) != NULL;) {
		int fam = p->dst.ss_family == AF_INET6;
		struct udp_flow *f;

		if (dry[fam]) {
			pp = &p->next;
			continue;
		}
		f = flow_find(r, &p->child, &p->dst);
		if (f) {
			first_datagram(r, f, p->data, p->len, p->ttl);
		} else if (!start_flow(r, &p->child, &p->dst, p->data, p->len, p->ttl)) {
			dry[fam] = true;
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		r->n_pending--;
		r->pending_bytes -= p->len;
		free(p);
	}
	r->pend_tail = NULL;
	for (struct udp_pending *p = r->pend_head; p; p = p->next)
		r->pend_tail = p;
}

void udp_listener_event(struct relay *r, int lfd)
{
	for (int burst = 0; burst < UDP_BURST; burst++) {
		struct sockaddr_storage child, dst;
		union {
			char b[256];
			struct cmsghdr align;
		} cb;
		struct iovec io = { .iov_base = r->udp_buf, .iov_len = UDP_BUF };
		struct msghdr m = { .msg_name = &child, .msg_namelen = sizeof(child), .msg_iov = &io,
				    .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof(cb.b) };
		ssize_t n = recvmsg(lfd, &m, MSG_DONTWAIT);

		if (n < 0)
			return;
		if (!flow_orig_dst(&m, &dst))
			continue;
		listener_datagram(r, &child, &dst, r->udp_buf, (size_t)n, ttl_of(&m));
	}
}

/*
 * pass_errors() - the ICMP errors queued on @f's host socket, passed to the child as ICMP.
 * Bounded per call; what is left waits for the next EPOLLERR.
 */
static void pass_errors(struct relay *r, struct udp_flow *f)
{
	int fam = f->rec.dst.sa.sa_family, inj = r->inject_fd[fam == AF_INET6];
	socklen_t alen = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	struct sockaddr_storage child = { 0 }, dst = { 0 };

	memcpy(&child, &f->rec.child, alen);
	memcpy(&dst, &f->rec.dst, alen);
	for (int i = 0; i < 16; i++) {
		unsigned char data[2048], ctl[512], pkt[128];
		struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
				    .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(f->host_fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT);

		if (n < 0)
			return;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			const struct sock_extended_err *ee = (const void *)CMSG_DATA(c);
			struct icmp_report rep = { .family = fam };
			struct sockaddr_storage to = child;
			const struct sockaddr *off;
			size_t len;

			if (!((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
			      (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR)) ||
			    c->cmsg_len < CMSG_LEN(sizeof(*ee) + alen) ||
			    ee->ee_origin != (fam == AF_INET ? SO_EE_ORIGIN_ICMP : SO_EE_ORIGIN_ICMP6))
				continue;
			/* the sender's address follows the error (SO_EE_OFFENDER) */
			off = SO_EE_OFFENDER(ee);
			if (off->sa_family != fam)
				continue;
			rep.type = ee->ee_type;
			rep.code = ee->ee_code;
			rep.mtu = ee->ee_info;
			memcpy(&rep.from, off, alen);
			len = icmp_error_build(pkt, sizeof(pkt), &rep, &child, &dst, (size_t)n);
			if (!len)
				continue;
			((struct sockaddr_in *)&to)->sin_port = 0;   /* raw sockets: no port (same offset in v6) */
			if (sendto(inj, pkt, len, MSG_DONTWAIT, (struct sockaddr *)&to, alen) == (ssize_t)len)
				r->stats.udp_icmp++;
		}
	}
}

/*
 * udp_event() - move what is queued on one side of a flow to the other, in batches: one
 * recvmmsg() and one sendmmsg() per UDP_BATCH datagrams.  Both sockets are connected, so no
 * addresses travel; a datagram from the child carries its TTL upstream (ttl_control()).  A datagram
 * the other side cannot take now is dropped, as UDP may; only what was sent is counted.
 */
void udp_event(struct relay *r, struct ev_src *src, uint32_t events)
{
	bool from_child = src->kind == EV_UDP_CHILD;
	struct udp_flow *f = from_child ? flow_of(src, ev_child) : flow_of(src, ev_host);
	int in = from_child ? f->child_fd : f->host_fd;
	int out = from_child ? f->host_fd : f->child_fd;
	int fam = f->rec.dst.sa.sa_family;
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	union udp_ctl ctl[UDP_BATCH];

	if (f->dead)
		return;
	if (!from_child && (events & EPOLLERR) && r->inject_fd[fam == AF_INET6] >= 0)
		pass_errors(r, f);
	for (int batch = 0; batch < UDP_BATCHES; batch++) {
		memset(msgs, 0, sizeof(msgs));
		for (int i = 0; i < UDP_BATCH; i++) {
			iov[i].iov_base = r->udp_buf + (size_t)i * UDP_BUF;
			iov[i].iov_len = UDP_BUF;
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			if (from_child) {
				msgs[i].msg_hdr.msg_control = ctl[i].b;
				msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].b);
			}
		}
		int n = recvmmsg(in, msgs, UDP_BATCH, MSG_DONTWAIT, NULL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			/* ECONNREFUSED and friends: an ICMP error from upstream.  Keep the flow. */
			continue;
		}
		if (n == 0)
			return;
		for (int i = 0; i < n; i++) {
			iov[i].iov_len = msgs[i].msg_len;
			if (from_child)
				ttl_control(&msgs[i].msg_hdr, &ctl[i], fam, ttl_of(&msgs[i].msg_hdr));
		}
		touch(r, f);
		int sent = send_batch(out, msgs, n);
		uint64_t bytes = 0;

		for (int i = 0; i < sent; i++)
			bytes += msgs[i].msg_len;
		if (r->hub.tap) {
			/* Each datagram sent on the host socket, or received on it. */
			for (int i = 0; i < (from_child ? sent : n); i++)
				flow_tap_datagram(&r->hub, f->host_fd, !from_child, iov[i].iov_base, msgs[i].msg_len);
		}
		if (sent < n)
			r->stats.udp_dropped += (uint64_t)(n - (sent > 0 ? sent : 0));
		if (sent > 0) {
			if (from_child) {
				f->rec.bytes_up += bytes;
				f->rec.pkts_up += (uint64_t)sent;
			} else {
				f->rec.bytes_down += bytes;
				f->rec.pkts_down += (uint64_t)sent;
			}
		}
		if (n < UDP_BATCH)
			return;
	}
}

void udp_sweep(struct relay *r)
{
	while (r->udp_lru_head && r->now_ms - r->udp_lru_head->last_ms >= r->lim.udp_idle_ms)
		flow_free(r, r->udp_lru_head, FLOW_OK, 0);
}

void udp_close_all(struct relay *r)
{
	if (r->udp_hash) {
		/* What the child sent last may still wait on the interception side: pass it on first. */
		for (unsigned int b = 0; b < r->udp_buckets; b++)
			for (struct udp_flow *f = r->udp_hash[b]; f; f = f->hnext)
				udp_event(r, &f->ev_child, EPOLLIN);
		while (r->udp_lru_head)
			flow_free(r, r->udp_lru_head, FLOW_OK, 0);
	}
	udp_reap(r);
	while (r->pend_head) {
		struct udp_pending *p = r->pend_head;
		/* A first datagram that never got its flow: a record says so. */
		flow_record_at_once(&r->hub, FLOW_UDP, &p->child, &p->dst, "waiting for a socket at exit",
				    FLOW_CUT_AT_EXIT, 0);
		r->pend_head = p->next;
		free(p);
	}
	r->pend_tail = NULL;
	r->n_pending = 0;
	r->pending_bytes = 0;
	free(r->udp_hash);
	free(r->udp_buf);
	r->udp_hash = NULL;
	r->udp_buf = NULL;
}
