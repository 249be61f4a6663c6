/* SPDX-License-Identifier: MIT */
/*
 * relay/echo — ICMP echo (ping, traceroute -I) for the child, answered by the real destination.
 *
 * The backend's ruleset queues every echo request the child sends (ICMP type 8, ICMPv6 type 128)
 * to an NFQUEUE whose socket P reads (backend echo_fd()).  P takes the request (verdict NF_DROP)
 * and sends the same echo - data, sequence, the child's TTL / hop limit - from the host through
 * a socket of its own: an ICMP echo socket (SOCK_DGRAM, allowed when the host's
 * net.ipv4.ping_group_range includes P's group), else a raw ICMP socket when P has CAP_NET_RAW.
 * Only what the destination (or a router on the way) really answers reaches the child: an echo
 * reply with the TTL it had on arrival, written to the child through the backend's inject sockets
 * with the child's identifier; an ICMP error (unreachable, time exceeded, too big) from the
 * address that sent it, quoting the child's request.  Nothing answered, nothing told: ping's own
 * clock decides, as without childflow.
 *
 * When neither socket kind can be had, P passes the request on (NF_ACCEPT) to the ruleset's reject
 * rule: the child reads "administratively prohibited" at once, and one warning names the setting.
 * A denied destination gets the same answer.
 *
 * Flows are keyed by (child address, destination, child's identifier), one host socket each, and
 * close after ECHO_IDLE_MS without a request.  The kernel chooses an echo socket's identifier;
 * a raw socket's is ours (random) and its replies are matched by identifier and source.
 *
 * States of a flow: OPEN (host socket, requests going out, answers coming back) -> CLOSED (idle,
 * evicted for a new one when ECHO_MAX are open, or at exit).
 */
#include "relay/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <linux/icmp.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <netinet/icmp6.h>
#include <sys/epoll.h>

#include <sodium.h>

#include "netlink/nfq.h"
#include "relay/icmp.h"
#include "util/egress.h"
#include "util/explain.h"
#include "util/log.h"

#define ECHO_MAX 256            /* flows open at once; the least recently used goes for a new one */
#define ECHO_IDLE_MS 60000
#define ECHO_BURST 64           /* requests read per event */
#define ECHO_RCVBUF (1u << 20)
#define ECHO_BUF 65600          /* one whole echo: IP header, ICMP header, up to 65507 bytes */
#define ECHO_SEND_TRIES 4       /* a send that returned an earlier echo's pending error is retried */

enum echo_sock { ECHO_UNKNOWN, ECHO_DGRAM, ECHO_RAW, ECHO_NONE };

struct echo_flow {
	struct flow_record rec;
	struct ev_src ev;             /* EV_ECHO_HOST */
	struct sockaddr_storage child, dst;
	int fd;                       /* the host socket */
	bool raw;
	uint16_t child_id, up_id;     /* the child's identifier; the one upstream sees */
	bool tapped;                  /* the capture's tap was told of it: local, peer are set */
	union flow_addr local, peer;  /* the host's source address and the destination, with up_id as port */
	int ttl;                      /* set on fd; -1: the host's default */
	uint64_t last_ms;
	bool dead;
	struct echo_flow *next;
};

#define flow_of(ptr) ((struct echo_flow *)((char *)(ptr) - offsetof(struct echo_flow, ev)))

struct echo_state {
	int fd;                       /* the queue; -1: none */
	struct ev_src ev;
	enum echo_sock kind[2];       /* per family, found by the first request */
	struct echo_flow *flows, *dead;
	unsigned int n;
	unsigned char out[4096];      /* verdicts of this loop turn */
	size_t out_len;
	unsigned char *buf;           /* ECHO_BUF: the queue's messages, then replies */
	bool told;
};

int echo_init(struct relay *r)
{
	const struct backend_ops *be = r->c->be.ops;
	int fd = be->echo_fd ? be->echo_fd(r->c->be.b) : -1;
	int sz = ECHO_RCVBUF;
	struct echo_state *e;

	r->echo = NULL;
	if (fd < 0)
		return 0;   /* no queue: the ruleset answers echo requests "prohibited" itself */
	e = calloc(1, sizeof(*e));
	if (!e || !(e->buf = malloc(ECHO_BUF + 128))) {
		free(e);
		return -ENOMEM;
	}
	r->echo = e;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	e->fd = fd;
	e->ev.kind = EV_ECHO_QUEUE;
	log_debug("echo: the child's echo requests are queued to P");
	return relay_watch(r, fd, EPOLLIN, &e->ev);
}

static void verdict(struct echo_state *e, uint32_t id, uint32_t v)
{
	size_t n = nfq_verdict_put(e->out + e->out_len, sizeof(e->out) - e->out_len, BE_ECHO_QUEUE, id, v, 0);

	if (!n) {
		echo_flush_verdicts(e);
		n = nfq_verdict_put(e->out, sizeof(e->out), BE_ECHO_QUEUE, id, v, 0);
	}
	e->out_len += n;
}

void echo_flush_verdicts(struct echo_state *e)
{
	if (!e || !e->out_len)
		return;
	if (send(e->fd, e->out, e->out_len, MSG_DONTWAIT) < 0)
		log_debug("echo: verdicts not sent: %s", strerror(errno));
	e->out_len = 0;
}

void echo_flush(struct relay *r)
{
	echo_flush_verdicts(r->echo);
}

static void flow_close(struct relay *r, struct echo_flow *f, enum flow_outcome o)
{
	struct echo_state *e = r->echo;

	for (struct echo_flow **pp = &e->flows; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	}
	if (f->tapped && r->hub.tap->echo_flow)
		r->hub.tap->echo_flow(r->hub.tap->priv, &f->local, &f->peer, false);
	close(f->fd);
	e->n--;
	flow_end(&r->hub, &f->rec, o, 0);
	f->dead = true;
	f->next = e->dead;
	e->dead = f;
}

/* A host socket for echo to @dst (bound to `--iface` as every upstream socket): the echo socket
 * kind, else raw; -errno when neither. */
static int host_socket(struct echo_state *e, const struct egress *eg, const struct sockaddr_storage *dst,
		       bool *raw)
{
	int fam = dst->ss_family, proto = fam == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6;
	int i = fam == AF_INET6, fd = -1;

	if (e->kind[i] == ECHO_UNKNOWN || e->kind[i] == ECHO_DGRAM) {
		fd = egress_socket(eg, dst, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
		if (fd >= 0) {
			e->kind[i] = ECHO_DGRAM;
			*raw = false;
			return fd;
		}
		if (fd != -EACCES && fd != -EPERM)
			return fd;
	}
	if (e->kind[i] != ECHO_NONE) {
		fd = egress_socket(eg, dst, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
		if (fd >= 0) {
			e->kind[i] = ECHO_RAW;
			*raw = true;
			return fd;
		}
		if (fd != -EACCES && fd != -EPERM)
			return fd;
	}
	e->kind[i] = ECHO_NONE;
	return -EACCES;
}

/* Ask for what the answers need: errors with their sender, the TTL / hop limit of replies; a raw
 * socket sees only echo replies and errors. */
static int host_socket_setup(int fd, int fam, bool raw)
{
	int one = 1;

	if (fam == AF_INET) {
		if (setsockopt(fd, SOL_IP, IP_RECVTTL, &one, sizeof(one)) < 0)
			return -errno;
		if (!raw && setsockopt(fd, SOL_IP, IP_RECVERR, &one, sizeof(one)) < 0)
			return -errno;
		if (raw) {
			struct icmp_filter filt = { .data = ~((1u << ICMP_ECHOREPLY) | (1u << ICMP_DEST_UNREACH) |
							      (1u << ICMP_TIME_EXCEEDED) | (1u << ICMP_PARAMETERPROB)) };

			if (setsockopt(fd, SOL_RAW, ICMP_FILTER, &filt, sizeof(filt)) < 0)
				return -errno;
		}
		return 0;
	}
	if (setsockopt(fd, SOL_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof(one)) < 0)
		return -errno;
	if (!raw && setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &one, sizeof(one)) < 0)
		return -errno;
	if (raw) {
		struct icmp6_filter filt;

		ICMP6_FILTER_SETBLOCKALL(&filt);
		ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &filt);
		ICMP6_FILTER_SETPASS(ICMP6_DST_UNREACH, &filt);
		ICMP6_FILTER_SETPASS(ICMP6_PACKET_TOO_BIG, &filt);
		ICMP6_FILTER_SETPASS(ICMP6_TIME_EXCEEDED, &filt);
		ICMP6_FILTER_SETPASS(ICMP6_PARAM_PROB, &filt);
		if (setsockopt(fd, SOL_ICMPV6, ICMP6_FILTER, &filt, sizeof(filt)) < 0)
			return -errno;
	}
	return 0;
}

/*
 * tap_open() - tell the capture's tap of @f: its ends as on the wire.  The host socket is not bound
 * to an address; the one the kernel gives its echoes is the route's source, asked of a UDP socket
 * connected (no packet leaves) the same way.
 */
static void tap_open(struct relay *r, struct echo_flow *f)
{
	struct sockaddr_storage probe = f->dst;
	socklen_t len = sizeof(f->local);
	uint16_t id = htons(f->up_id);
	int fd;

	if (!r->hub.tap || (!r->hub.tap->echo_flow && !r->hub.tap->echo))
		return;
	((struct sockaddr_in *)&probe)->sin_port = htons(9);   /* any port: only the route is asked */
	fd = egress_socket(&r->c->egress, &probe, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	memset(&f->local, 0, sizeof(f->local));
	if (connect(fd, (struct sockaddr *)&probe, flow_sa_len(&probe)) < 0 ||
	    getsockname(fd, &f->local.sa, &len) < 0 || f->local.sa.sa_family != probe.ss_family) {
		log_debug("echo: the capture will miss a flow: no source address: %s", strerror(errno));
		close(fd);
		return;
	}
	close(fd);
	memcpy(&f->peer, &f->dst, flow_sa_len(&f->dst));
	if (probe.ss_family == AF_INET6) {
		f->local.in6.sin6_port = f->peer.in6.sin6_port = id;
		f->local.in6.sin6_flowinfo = f->peer.in6.sin6_flowinfo = 0;
	} else {
		f->local.in4.sin_port = f->peer.in4.sin_port = id;
	}
	f->tapped = true;
	if (r->hub.tap->echo_flow)
		r->hub.tap->echo_flow(r->hub.tap->priv, &f->local, &f->peer, true);
}

static struct echo_flow *flow_find(struct echo_state *e, const struct nfq_echo *q)
{
	for (struct echo_flow *f = e->flows; f; f = f->next)
		if (f->child_id == q->id && flow_same_endpoint(&f->child, &q->src) &&
		    flow_same_endpoint(&f->dst, &q->dst))
			return f;
	return NULL;
}

/* A new flow for request @q, or NULL: *@err says why (-EACCES: no socket kind is allowed). */
static struct echo_flow *flow_new(struct relay *r, const struct nfq_echo *q, const char *rule, int *err)
{
	struct echo_state *e = r->echo;
	int fam = q->dst.ss_family;
	struct echo_flow *f;
	bool raw = false;
	int fd;

	if (e->n >= ECHO_MAX) {
		struct echo_flow *old = e->flows;

		for (struct echo_flow *g = e->flows; g; g = g->next)
			if (g->last_ms < old->last_ms)
				old = g;
		flow_close(r, old, FLOW_EVICTED);
	}
	fd = host_socket(e, &r->c->egress, &q->dst, &raw);
	if (fd < 0) {
		*err = fd;
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	if (!f || (*err = host_socket_setup(fd, fam, raw)) < 0) {
		if (!f)
			*err = -ENOMEM;
		free(f);
		close(fd);
		return NULL;
	}
	f->fd = fd;
	f->raw = raw;
	f->child = q->src;
	f->dst = q->dst;
	f->child_id = q->id;
	f->ttl = -1;
	if (raw) {
		f->up_id = (uint16_t)randombytes_uniform(65536);
	} else {
		struct sockaddr_storage me;
		socklen_t len = sizeof(me);

		/* The kernel's identifier for this socket is its "port", fixed at the first send; bind
		 * now to learn it. */
		memset(&me, 0, sizeof(me));
		me.ss_family = (sa_family_t)fam;
		if (bind(fd, (struct sockaddr *)&me, flow_sa_len(&me)) < 0 ||
		    getsockname(fd, (struct sockaddr *)&me, &len) < 0) {
			*err = -errno;
			close(fd);
			free(f);
			return NULL;
		}
		f->up_id = ntohs(((struct sockaddr_in *)&me)->sin_port);
	}
	flow_begin(&r->hub, &f->rec, FLOW_ICMP, &q->src, &q->dst);
	f->rec.route = "direct";
	f->rec.rule = rule;
	f->ev.kind = EV_ECHO_HOST;
	f->last_ms = r->now_ms;
	f->next = e->flows;
	e->flows = f;
	e->n++;
	flow_opened(&r->hub, &f->rec);
	tap_open(r, f);
	if ((*err = relay_watch(r, fd, EPOLLIN, &f->ev)) < 0) {
		flow_close(r, f, FLOW_NO_RESOURCES);
		return NULL;
	}
	return f;
}

/* Send the child's echo @q upstream on @f, with its TTL / hop limit. */
static void send_up(struct relay *r, struct echo_flow *f, const struct nfq_echo *q)
{
	int fam = f->dst.ss_family;
	uint8_t hdr[8] = { fam == AF_INET ? ICMP_ECHO : ICMP6_ECHO_REQUEST, 0, 0, 0,
			   (uint8_t)(f->up_id >> 8), (uint8_t)f->up_id, (uint8_t)(q->seq >> 8), (uint8_t)q->seq };
	struct iovec iov[2] = { { .iov_base = hdr, .iov_len = 8 },
				{ .iov_base = (void *)q->data, .iov_len = q->data_len } };
	struct sockaddr_storage to = f->dst;
	struct msghdr m = { .msg_name = &to, .msg_namelen = flow_sa_len(&to), .msg_iov = iov, .msg_iovlen = 2 };

	/* the child's own TTL (ping -t, traceroute -I), else the host's default (-1), as for TCP and UDP */
	int ttl = relay_child_ttl(q->ttl) ? q->ttl : -1;

	if (f->ttl != ttl &&
	    setsockopt(f->fd, fam == AF_INET ? SOL_IP : SOL_IPV6, fam == AF_INET ? IP_TTL : IPV6_UNICAST_HOPS,
		       &ttl, sizeof(ttl)) == 0)
		f->ttl = ttl;
	((struct sockaddr_in *)&to)->sin_port = 0;
	if (fam == AF_INET && f->raw) {
		/* a raw IPv4 socket sends our checksum as it is */
		uint32_t acc = 0;
		const uint8_t *d = q->data;

		for (size_t i = 0; i < 8; i += 2)
			acc += (uint32_t)hdr[i] << 8 | hdr[i + 1];
		for (size_t i = 0; i + 1 < q->data_len; i += 2)
			acc += (uint32_t)d[i] << 8 | d[i + 1];
		if (q->data_len & 1)
			acc += (uint32_t)d[q->data_len - 1] << 8;
		while (acc >> 16)
			acc = (acc & 0xffff) + (acc >> 16);
		acc = ~acc & 0xffff;
		hdr[2] = (uint8_t)(acc >> 8);
		hdr[3] = (uint8_t)acc;
	}
	f->last_ms = r->now_ms;
	/*
	 * An ICMP error about an earlier echo of this flow (traceroute's first hop answering while
	 * its next probes are on their way) is also left as the socket's pending error, and the next
	 * send returns that error instead of sending.  The error itself stays queued for
	 * dgram_errors() (echo socket) or was meant for nobody (raw socket), so such a send is tried
	 * again; an error of the send itself repeats every time.
	 */
	for (int tries = 0; tries < ECHO_SEND_TRIES; tries++) {
		if (sendmsg(f->fd, &m, MSG_DONTWAIT) >= 0) {
			f->rec.pkts_up++;
			f->rec.bytes_up += 8 + q->data_len;
			if (f->tapped && r->hub.tap->echo)
				r->hub.tap->echo(r->hub.tap->priv, &f->local, &f->peer, 0, hdr, q->data, q->data_len);
			return;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ENOMEM)
			break;
	}
	log_debug("echo: cannot send upstream: %s", strerror(errno));
}

static void request(struct relay *r, const struct nfq_echo *q, uint32_t id)
{
	struct echo_state *e = r->echo;
	struct echo_flow *f = flow_find(e, q);
	int err = 0;

	if (!f) {
		struct policy_query pq = { .proto = POL_ICMP, .dst = (const struct sockaddr *)&q->dst };
		struct policy_verdict v = policy_decide(&r->c->policy, &pq);

		if (v.action == POL_DENY) {
			log_debug("echo to a denied destination: %s", v.reason);
			flow_record_at_once(&r->hub, FLOW_ICMP, &q->src, &q->dst, v.reason, FLOW_DENIED, EACCES);
			verdict(e, id, NF_ACCEPT);   /* the ruleset answers "prohibited" */
			return;
		}
		f = flow_new(r, q, v.reason, &err);
		if (!f) {
			if (err == -EACCES && !e->told) {
				e->told = true;
				explain_warn("icmp_echo", EACCES, NULL);   /* the doctor's words and fix */
			} else if (err == -EMFILE || err == -ENFILE) {
				relay_shortage(r, SHORT_FDS);
			}
			flow_record_at_once(&r->hub, FLOW_ICMP, &q->src, &q->dst, "no echo socket",
					    FLOW_NO_RESOURCES, -err);
			verdict(e, id, err == -EACCES ? NF_ACCEPT : NF_DROP);
			return;
		}
	}
	verdict(e, id, NF_DROP);   /* ours: the answer comes from upstream */
	send_up(r, f, q);
}

void echo_queue_event(struct relay *r)
{
	struct echo_state *e = r->echo;

	for (int burst = 0; burst < ECHO_BURST; burst++) {
		ssize_t n = recv(e->fd, e->buf, ECHO_BUF + 128, MSG_DONTWAIT);
		size_t off = 0;

		if (n < 0) {
			if (errno == ENOBUFS)
				continue;   /* requests were dropped by the kernel; ping counts them lost */
			return;
		}
		while (off + sizeof(struct nlmsghdr) <= (size_t)n) {
			const struct nlmsghdr *h = (const void *)(e->buf + off);
			struct nfq_packet p;
			struct nfq_echo q;
			int k;

			if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > (size_t)n - off)
				break;
			k = nfq_parse(h, h->nlmsg_len, &p);
			off += NLMSG_ALIGN(h->nlmsg_len);
			if (k <= 0)
				continue;
			if (nfq_echo_parse(p.payload, p.len, &q) < 0) {
				log_debug("echo: a queued packet that is no echo request (%zu bytes)", p.len);
				verdict(e, p.id, NF_DROP);   /* not one we can send on */
				continue;
			}
			request(r, &q, p.id);
		}
	}
}

/* Write @len bytes of @pkt to the child (a whole IP packet). */
static void inject(struct relay *r, const struct echo_flow *f, const uint8_t *pkt, size_t len)
{
	struct sockaddr_storage to = f->child;
	int fd = r->inject_fd[f->child.ss_family == AF_INET6];

	((struct sockaddr_in *)&to)->sin_port = 0;
	if (fd >= 0 && sendto(fd, pkt, len, MSG_DONTWAIT, (struct sockaddr *)&to, flow_sa_len(&to)) == (ssize_t)len)
		r->stats.echo_answers++;
}

static void tell_error(struct relay *r, struct echo_flow *f, const struct icmp_report *rep, uint16_t seq,
		       size_t data_len)
{
	uint8_t pkt[128];
	size_t len = icmp_echo_error_build(pkt, sizeof(pkt), rep, &f->child, &f->dst, f->child_id, seq, data_len);

	if (len)
		inject(r, f, pkt, len);
}

/* Errors an echo socket queued (IP_RECVERR): the offending echo is the data, its sender the offender. */
static void dgram_errors(struct relay *r, struct echo_flow *f)
{
	int fam = f->dst.ss_family;

	for (int i = 0; i < 16; i++) {
		unsigned char data[64], ctl[512];
		struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
		ssize_t n = recvmsg(f->fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT);

		if (n < 0)
			return;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
			struct icmp_report rep;

			if (n < 8 || !icmp_report_from_cmsg(c, fam, &rep))
				continue;
			/* the data is the echo we sent, from its ICMP header; the length is what the kernel
			 * kept of it, at most all of it */
			tell_error(r, f, &rep, (uint16_t)(data[6] << 8 | data[7]), (size_t)n - 8);
		}
	}
}

/*
 * A raw socket's ICMP message @icmp (@len bytes, from @from): an error about one of @f's echoes?
 * (The IP header it quotes, then our echo's 8 bytes: our identifier, to our destination.)
 */
static bool raw_error(struct echo_flow *f, const uint8_t *icmp, size_t len, const struct sockaddr_storage *from,
		      struct icmp_report *rep, uint16_t *seq)
{
	int fam = f->dst.ss_family;
	const uint8_t *qip = icmp + 8, *qe;
	size_t qhl;

	if (len < 8)
		return false;
	if (fam == AF_INET) {
		if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_TIME_EXCEEDED && icmp[0] != ICMP_PARAMETERPROB)
			return false;
		if (len < 8 + 20 || (qip[0] >> 4) != 4)
			return false;
		qhl = (size_t)(qip[0] & 0x0f) * 4;
		if (qhl < 20 || len < 8 + qhl + 8 || qip[9] != IPPROTO_ICMP ||
		    memcmp(qip + 16, &((const struct sockaddr_in *)&f->dst)->sin_addr, 4) != 0)
			return false;
		rep->mtu = (uint32_t)(icmp[6] << 8 | icmp[7]);
	} else {
		if (icmp[0] < 1 || icmp[0] > 4)
			return false;
		qhl = 40;
		if (len < 8 + 40 + 8 || (qip[0] >> 4) != 6 || qip[6] != IPPROTO_ICMPV6 ||
		    memcmp(qip + 24, &((const struct sockaddr_in6 *)&f->dst)->sin6_addr, 16) != 0)
			return false;
		rep->mtu = (uint32_t)icmp[4] << 24 | (uint32_t)icmp[5] << 16 | (uint32_t)icmp[6] << 8 | icmp[7];
	}
	qe = qip + qhl;
	if (qe[0] != (fam == AF_INET ? ICMP_ECHO : ICMP6_ECHO_REQUEST) || (uint16_t)(qe[4] << 8 | qe[5]) != f->up_id)
		return false;
	rep->family = fam;
	rep->type = icmp[0];
	rep->code = icmp[1];
	rep->from = *from;
	*seq = (uint16_t)(qe[6] << 8 | qe[7]);
	return true;
}

void echo_host_event(struct relay *r, struct ev_src *src, uint32_t events)
{
	struct echo_flow *f = flow_of(src);
	struct echo_state *e = r->echo;
	int fam = f->dst.ss_family;
	const size_t hdr = fam == AF_INET ? 20 : 40;

	if (f->dead)
		return;
	if ((events & EPOLLERR) && !f->raw)
		dgram_errors(r, f);
	for (int burst = 0; burst < ECHO_BURST; burst++) {
		/* the reply is read where the reply packet's data will lie, behind room for its headers */
		uint8_t *pkt = e->buf, *icmp = e->buf + 48;
		union {
			char b[256];
			struct cmsghdr align;
		} cb;
		struct sockaddr_storage from;
		struct iovec iov = { .iov_base = icmp, .iov_len = ECHO_BUF };
		struct msghdr m = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov, .msg_iovlen = 1,
				    .msg_control = cb.b, .msg_controllen = sizeof(cb.b) };
		ssize_t n = recvmsg(f->fd, &m, MSG_DONTWAIT);
		struct icmp_report rep;
		int ttl = 64;
		size_t len;
		uint16_t seq;

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			continue;   /* an error reported as the call's result; its queue entry was read above */
		}
		if (m.msg_namelen < flow_sa_len(&f->dst) || from.ss_family != fam)
			continue;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
			if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_TTL) ||
			    (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_HOPLIMIT))
				memcpy(&ttl, CMSG_DATA(c), sizeof(ttl));
		len = (size_t)n;
		if (f->raw && fam == AF_INET) {
			/* a raw IPv4 socket reads the IP header too */
			size_t ihl = (size_t)(icmp[0] & 0x0f) * 4;

			if (len < 20 || ihl < 20 || ihl > len)
				continue;
			ttl = icmp[8];
			memmove(icmp, icmp + ihl, len - ihl);
			len -= ihl;
		}
		if (len < 8)
			continue;
		if (f->raw && raw_error(f, icmp, len, &from, &rep, &seq)) {
			tell_error(r, f, &rep, seq, 0);
			continue;
		}
		if (icmp[0] != (fam == AF_INET ? ICMP_ECHOREPLY : ICMP6_ECHO_REPLY) ||
		    (f->raw && ((uint16_t)(icmp[4] << 8 | icmp[5]) != f->up_id || !flow_same_endpoint(&from, &f->dst))))
			continue;
		seq = (uint16_t)(icmp[6] << 8 | icmp[7]);
		if (f->tapped && r->hub.tap->echo)
			r->hub.tap->echo(r->hub.tap->priv, &f->local, &f->peer, 1, icmp, icmp + 8, len - 8);
		((struct sockaddr_in *)&from)->sin_port = 0;
		len = icmp_echo_reply_build(pkt + 48 - hdr, ECHO_BUF + 128 - (48 - hdr), &from, &f->child,
					    (uint8_t)ttl, f->child_id, seq, icmp + 8, len - 8);
		if (!len)
			continue;
		f->rec.pkts_down++;
		f->rec.bytes_down += len - hdr;
		inject(r, f, pkt + 48 - hdr, len);
	}
}

void echo_sweep(struct relay *r)
{
	struct echo_state *e = r->echo;

	if (!e)
		return;
	for (struct echo_flow *f = e->flows, *next; f; f = next) {
		next = f->next;
		if (r->now_ms - f->last_ms >= ECHO_IDLE_MS)
			flow_close(r, f, FLOW_OK);
	}
}

void echo_reap(struct relay *r)
{
	struct echo_state *e = r->echo;

	while (e && e->dead) {
		struct echo_flow *f = e->dead;

		e->dead = f->next;
		free(f);
	}
}

void echo_free(struct relay *r)
{
	struct echo_state *e = r->echo;

	if (!e)
		return;
	while (e->flows)
		flow_close(r, e->flows, FLOW_OK);
	echo_reap(r);
	echo_flush_verdicts(e);
	free(e->buf);
	free(e);
	r->echo = NULL;
}
