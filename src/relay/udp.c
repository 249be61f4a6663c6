/* SPDX-License-Identifier: MIT */
/*
 * relay/udp — UDP flows keyed by (child address, original destination).
 *
 * The first datagram of a flow arrives on the transparent listener with IP(V6)_ORIGDSTADDR.  P then
 * asks the gateway agent for a socket created in N1, binds it (transparently) to the original
 * destination and connects it to the child: later datagrams of the flow are delivered to that socket
 * directly, and replies written to it reach the child from the address it dialled.  A host-side socket
 * connected to the destination carries the flow upstream.  Flows expire after an idle timeout; the
 * table is capped and evicts the least recently used flow.
 */
#include "relay/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/random.h>

#include "util/log.h"

#define UDP_BUF 65536
#define UDP_BURST 64        /* datagrams taken from the listener per event */
#define UDP_BATCH 32        /* datagrams moved per recvmmsg()/sendmmsg() pair on a flow */
#define UDP_BATCHES 4       /* batches per event before other sockets get a turn */

struct udp_flow {
	struct ev_src ev_child;   /* EV_UDP_CHILD: the N1 socket, connected to the child */
	struct ev_src ev_host;    /* EV_UDP_HOST: the host socket, connected to the destination */
	int child_fd, host_fd;
	struct sockaddr_storage child, dst;
	uint64_t last_ms;
	bool dead;                /* closed; freed after the current epoll batch */
	struct udp_flow *hnext;
	struct udp_flow *lprev, *lnext;
	uint64_t bytes_out, bytes_in;
};

#define flow_of(ptr, member) ((struct udp_flow *)((char *)(ptr) - offsetof(struct udp_flow, member)))

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

/* Compare address and port only (sockaddr_in6 may carry flowinfo we don't care about). */
static bool same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

static uint32_t hash_endpoint(uint32_t h, const struct sockaddr_storage *s)
{
	const unsigned char *p;
	size_t n;

	if (s->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)s;

		p = (const unsigned char *)&a->sin_addr;
		n = 4;
		h = (h ^ a->sin_port) * 16777619u;
	} else {
		const struct sockaddr_in6 *a = (const void *)s;

		p = a->sin6_addr.s6_addr;
		n = 16;
		h = (h ^ a->sin6_port) * 16777619u;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static unsigned int bucket(struct relay *r, const struct sockaddr_storage *child,
			   const struct sockaddr_storage *dst)
{
	/* Seeded per run: the command chooses both endpoints and must not be able to aim at one chain. */
	return hash_endpoint(hash_endpoint(2166136261u ^ r->udp_seed, child), dst) % r->udp_buckets;
}

int udp_init(struct relay *r)
{
	if (getrandom(&r->udp_seed, sizeof(r->udp_seed), 0) != (ssize_t)sizeof(r->udp_seed))
		r->udp_seed = (uint32_t)relay_now_ms() ^ (uint32_t)getpid();
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

static void flow_free(struct relay *r, struct udp_flow *f)
{
	unsigned int b = bucket(r, &f->child, &f->dst);

	for (struct udp_flow **pp = &r->udp_hash[b]; *pp; pp = &(*pp)->hnext) {
		if (*pp == f) {
			*pp = f->hnext;
			break;
		}
	}
	lru_unlink(r, f);
	close(f->child_fd);
	close(f->host_fd);
	r->n_udp--;
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
	for (struct udp_flow *f = r->udp_hash[bucket(r, child, dst)]; f; f = f->hnext)
		if (same_endpoint(&f->child, child) && same_endpoint(&f->dst, dst))
			return f;
	return NULL;
}

/* The gateway-side socket: bound to the destination, connected to the child. */
static int gateway_socket(struct relay *r, const struct sockaddr_storage *child,
			  const struct sockaddr_storage *dst)
{
	int one = 1;
	int fam = dst->ss_family;
	int fd = sandbox_n1_udp_socket(r->sb, fam);

	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, fam == AF_INET ? SOL_IP : SOL_IPV6,
		       fam == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)dst, sa_len(dst)) < 0 ||
	    connect(fd, (const struct sockaddr *)child, sa_len(child)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

static struct udp_flow *flow_new(struct relay *r, const struct sockaddr_storage *child,
				 const struct sockaddr_storage *dst)
{
	struct udp_flow *f;
	int cfd, hfd;

	cfd = gateway_socket(r, child, dst);
	if (cfd < 0) {
		log_debug("cannot create a UDP reply socket: %s", strerror(-cfd));
		return NULL;
	}
	hfd = socket(dst->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (hfd < 0 || connect(hfd, (const struct sockaddr *)dst, sa_len(dst)) < 0) {
		log_debug("cannot open a UDP flow upstream: %s", strerror(errno));
		if (hfd >= 0)
			close(hfd);
		close(cfd);
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		close(cfd);
		close(hfd);
		return NULL;
	}
	/* Only now that the new flow exists does the least recently used one make room for it. */
	if (r->n_udp >= r->lim.max_udp && r->udp_lru_head)
		flow_free(r, r->udp_lru_head);
	f->ev_child.kind = EV_UDP_CHILD;
	f->ev_host.kind = EV_UDP_HOST;
	f->child_fd = cfd;
	f->host_fd = hfd;
	f->child = *child;
	f->dst = *dst;
	unsigned int b = bucket(r, child, dst);
	f->hnext = r->udp_hash[b];
	r->udp_hash[b] = f;
	lru_append(r, f);
	f->last_ms = r->now_ms;
	r->n_udp++;
	r->stats.udp_flows++;
	if (relay_watch(r, cfd, EPOLLIN, &f->ev_child) < 0 || relay_watch(r, hfd, EPOLLIN, &f->ev_host) < 0) {
		flow_free(r, f);
		return NULL;
	}
	return f;
}

static bool orig_dst(struct msghdr *m, struct sockaddr_storage *dst)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) ||
		    (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR)) {
			size_t n = c->cmsg_len - CMSG_LEN(0);

			memset(dst, 0, sizeof(*dst));
			memcpy(dst, CMSG_DATA(c), n < sizeof(*dst) ? n : sizeof(*dst));
			return true;
		}
	}
	return false;
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
		if (!orig_dst(&m, &dst))
			continue;
		struct udp_flow *f = flow_find(r, &child, &dst);
		if (!f) {
			enum guard_verdict v = guard_check(&r->guard, (struct sockaddr *)&dst);

			if (v != GUARD_ALLOW) {
				log_debug("dropping UDP to a denied destination: %s", guard_reason(v));
				r->stats.udp_denied++;
				continue;
			}
			f = flow_new(r, &child, &dst);
			if (!f)
				continue;
		}
		touch(r, f);
		if (send(f->host_fd, r->udp_buf, (size_t)n, MSG_DONTWAIT) == n)
			f->bytes_out += (uint64_t)n;
	}
}

/*
 * udp_event() - move what is queued on one side of a flow to the other, in batches: one
 * recvmmsg() and one sendmmsg() per UDP_BATCH datagrams.  Both sockets are connected, so no
 * addresses travel.  A datagram the other side cannot take now is dropped, as UDP may.
 */
void udp_event(struct relay *r, struct ev_src *src, uint32_t events)
{
	bool from_child = src->kind == EV_UDP_CHILD;
	struct udp_flow *f = from_child ? flow_of(src, ev_child) : flow_of(src, ev_host);
	int in = from_child ? f->child_fd : f->host_fd;
	int out = from_child ? f->host_fd : f->child_fd;
	struct mmsghdr msgs[UDP_BATCH];
	struct iovec iov[UDP_BATCH];

	(void)events;
	if (f->dead)
		return;
	for (int batch = 0; batch < UDP_BATCHES; batch++) {
		memset(msgs, 0, sizeof(msgs));
		for (int i = 0; i < UDP_BATCH; i++) {
			iov[i].iov_base = r->udp_buf + (size_t)i * UDP_BUF;
			iov[i].iov_len = UDP_BUF;
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
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
		uint64_t bytes = 0;
		for (int i = 0; i < n; i++) {
			iov[i].iov_len = msgs[i].msg_len;
			bytes += msgs[i].msg_len;
		}
		touch(r, f);
		if (sendmmsg(out, msgs, (unsigned int)n, MSG_DONTWAIT) > 0) {
			if (from_child)
				f->bytes_out += bytes;
			else
				f->bytes_in += bytes;
		}
		if (n < UDP_BATCH)
			return;
	}
}

void udp_sweep(struct relay *r)
{
	while (r->udp_lru_head && r->now_ms - r->udp_lru_head->last_ms >= r->lim.udp_idle_ms)
		flow_free(r, r->udp_lru_head);
}

void udp_close_all(struct relay *r)
{
	while (r->udp_lru_head)
		flow_free(r, r->udp_lru_head);
	udp_reap(r);
	free(r->udp_hash);
	free(r->udp_buf);
	r->udp_hash = NULL;
	r->udp_buf = NULL;
}
