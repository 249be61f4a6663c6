/* SPDX-License-Identifier: MIT */
/*
 * relay/gate — the SYN gate: the child's TCP connect gets the answer the destination gave.
 *
 * Theory of operation.  Without a gate, the interception namespace's kernel completes the child's
 * handshake at once, so a closed port looks open and then resets (design §2, cost 1).  With it, the
 * backend's ruleset holds every new SYN from the child in an NFQUEUE whose socket P reads
 * (backend gate_fd()).  For each queued SYN the TCP engine begins the flow - policy, connector,
 * upstream connect - without the child's socket (tcp_syn()); when the connect has an answer the SYN
 * gets a verdict: pass (it goes on to the transparent listener, the child's handshake completes, and
 * accept() hands the socket to the waiting flow), pass with a mark that the ruleset turns into the
 * rejection the destination gave (reset, host or network unreachable, prohibited), or drop (the
 * destination was silent: the child's own retransmissions and timeout decide, as without childflow).
 *
 * A SYN is always answered: by the flow's outcome when it closes, whatever closes it (connect
 * failure, timeout, eviction, the end of the run).  A retransmission of a SYN still held is dropped
 * (the first copy stays held); one of a SYN already passed is passed again.  Verdicts are gathered
 * during a loop turn and sent in one write (gate_flush()).  SYNs the gate cannot parse pass ungated
 * (their connection is begun at accept(), as without a gate).
 *
 * When too many young connects are pending (tcp_connecting_full()), a new SYN waits, held, in P's
 * own backlog (struct gate_wait, at most GATE_WAIT_MAX) until a connect slot frees; the newest
 * waiting SYN is admitted first, so that under a flood of connects that never complete (a
 * blackholed network, a scan) a new connection does not queue behind thousands that its own children
 * are retransmitting anyway.  A retransmission of a waiting SYN is dropped (the first copy keeps its
 * place); past GATE_WAIT_MAX, or after GATE_WAIT_MS, the oldest waiting SYN is dropped.
 *
 * A SYN whose TTL / hop limit the child chose (traceroute -T: not the namespace's default,
 * relay_child_ttl()) is connected upstream with that TTL, and with IP_RECVERR: when the connect
 * fails because a hop answered with ICMP (the TTL ran out, or a router's destination unreachable),
 * gate_router_error() sends the child that hop's message from that hop's address, quoting its SYN,
 * and the SYN is dropped, as that router would have dropped it.  Other SYNs leave with the host's
 * default TTL, and an unreachable for them is the ruleset's rejection (the same errno, from the
 * gateway's address: only traceroute reads the address, and traceroute sets the TTL).
 *
 * States of a held SYN, as the flow carries them (tcp.c): HELD (flow CONNECTING) -> PASSED (flow
 * ACCEPTING, waiting for accept()) -> gone (adopted, or the flow closed); or HELD -> answered with a
 * rejection or a drop when the flow closes.
 */
#include "relay/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/errqueue.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "netlink/nfq.h"
#include "relay/icmp.h"
#include "util/log.h"

#define GATE_RCVBUF (4u << 20)
#define GATE_BURST 256              /* queued SYNs read per event before other sockets get a turn */
#define GATE_VLEN 32                /* queue messages read per recvmmsg() */
#define GATE_MSG 2048               /* room for one: NFQ_COPY_RANGE bytes of the SYN and attributes */
#define GATE_OUT (64u << 10)        /* verdicts gathered before a write */
#define GATE_WAIT_MAX 4096          /* SYNs waiting for a connect slot */
#define GATE_WAIT_MS 30000          /* ... for at most this long (the child has retransmitted meanwhile) */

struct gate_wait {
	struct nfq_syn syn;
	uint32_t id;
	uint64_t since_ms;
	unsigned int bucket;
	struct gate_wait *hnext;
	struct gate_wait *newer, *older;
};

enum gate_reply gate_reply_for(enum flow_outcome o, int err)
{
	switch (o) {
	case FLOW_UP_FAILED:
		switch (err) {
		case ETIMEDOUT:
			return GATE_DROP;
		case EHOSTUNREACH:
			return GATE_HOST_UNREACH;
		case ENETUNREACH:
			return GATE_NET_UNREACH;
		case EACCES:
		case EPERM:
			return GATE_PROHIBIT;
		default:
			return GATE_REFUSE;
		}
	case FLOW_DENIED:
	case FLOW_OPEN:
	case FLOW_OK:
	case FLOW_RESET_UP:
		return GATE_REFUSE;
	case FLOW_UP_TIMEOUT:
	case FLOW_RESET_CHILD:
	case FLOW_EVICTED:
	case FLOW_NO_RESOURCES:
	case FLOW_CUT_AT_EXIT:
		return GATE_DROP;
	}
	return GATE_DROP;
}

int gate_init(struct relay *r)
{
	const struct backend_ops *be = r->c->be.ops;
	int fd = be->gate_fd ? be->gate_fd(r->c->be.b) : -1;
	int sz = GATE_RCVBUF;

	r->gate_fd = -1;
	if (fd < 0)
		return 0;   /* no gate: the backend completes handshakes itself */
	r->gate_buckets = 1;
	while (r->gate_buckets < r->lim.max_connecting * 2u)
		r->gate_buckets <<= 1;
	r->gate_hash = calloc(r->gate_buckets, sizeof(struct tcp_flow *));
	r->wait_hash = calloc(r->gate_buckets, sizeof(struct gate_wait *));
	r->gate_out = malloc(GATE_OUT);
	if (!r->gate_hash || !r->wait_hash || !r->gate_out)
		return -ENOMEM;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));   /* as much as rmem_max allows */
	r->gate_fd = fd;
	r->ev_gate.kind = EV_GATE;
	return relay_watch(r, fd, EPOLLIN, &r->ev_gate);
}

static void wait_unlink(struct relay *r, struct gate_wait *w)
{
	for (struct gate_wait **pp = &r->wait_hash[w->bucket]; *pp; pp = &(*pp)->hnext) {
		if (*pp == w) {
			*pp = w->hnext;
			break;
		}
	}
	if (w->newer)
		w->newer->older = w->older;
	else
		r->wait_new = w->older;
	if (w->older)
		w->older->newer = w->newer;
	else
		r->wait_old = w->newer;
	r->n_wait--;
	free(w);
}

/* Keep @syn (packet @id) waiting for a connect slot; the oldest waiting one goes when full. */
static void wait_push(struct relay *r, const struct nfq_syn *syn, uint32_t id)
{
	struct gate_wait *w;

	if (r->n_wait >= GATE_WAIT_MAX) {
		gate_answer(r, r->wait_old->id, GATE_DROP);
		wait_unlink(r, r->wait_old);
	}
	w = calloc(1, sizeof(*w));
	if (!w) {
		gate_answer(r, id, GATE_DROP);
		return;
	}
	if (!r->n_wait)
		relay_shortage(r, SHORT_CONNECTING);
	w->syn = *syn;
	w->id = id;
	w->since_ms = r->now_ms;
	w->bucket = (unsigned int)(relay_pair_hash(r, &syn->src, &syn->dst) & (r->gate_buckets - 1));
	w->hnext = r->wait_hash[w->bucket];
	r->wait_hash[w->bucket] = w;
	w->older = r->wait_new;
	if (r->wait_new)
		r->wait_new->newer = w;
	else
		r->wait_old = w;
	r->wait_new = w;
	r->n_wait++;
	r->stats.gate_busy++;
}

/* A SYN from the queue: a retransmission of a waiting one, or one for the TCP engine. */
static void gate_take(struct relay *r, const struct nfq_syn *syn, uint32_t id)
{
	unsigned int b = (unsigned int)(relay_pair_hash(r, &syn->src, &syn->dst) & (r->gate_buckets - 1));

	for (struct gate_wait *w = r->wait_hash[b]; w; w = w->hnext) {
		if (!flow_same_endpoint(&w->syn.src, &syn->src) || !flow_same_endpoint(&w->syn.dst, &syn->dst))
			continue;
		if (w->syn.isn == syn->isn) {
			r->stats.gate_dups++;
			gate_answer(r, id, GATE_DROP);   /* the first copy keeps its place */
			return;
		}
		gate_answer(r, w->id, GATE_DROP);   /* the child gave up on that attempt */
		wait_unlink(r, w);
		break;
	}
	if (tcp_syn(r, syn, id) == TCP_SYN_BUSY)
		wait_push(r, syn, id);
}

void gate_admit(struct relay *r)
{
	while (r->wait_new && !tcp_connecting_full(r)) {
		struct gate_wait *w = r->wait_new;
		struct nfq_syn syn = w->syn;
		uint32_t id = w->id;

		wait_unlink(r, w);
		if (tcp_syn(r, &syn, id) == TCP_SYN_BUSY) {
			wait_push(r, &syn, id);   /* cannot happen: not full; keep it rather than lose it */
			break;
		}
	}
}

void gate_sweep(struct relay *r)
{
	while (r->wait_old && r->now_ms - r->wait_old->since_ms >= GATE_WAIT_MS) {
		gate_answer(r, r->wait_old->id, GATE_DROP);
		wait_unlink(r, r->wait_old);
	}
}

void gate_free(struct relay *r)
{
	/* At exit: the waiting SYNs are dropped with the queue; free what P held of them. */
	while (r->wait_old)
		wait_unlink(r, r->wait_old);
	free(r->wait_hash);
	free(r->gate_hash);
	free(r->gate_out);
	r->wait_hash = NULL;
	r->gate_hash = NULL;
	r->gate_out = NULL;
}

void gate_flush(struct relay *r)
{
	if (!r->gate_out_len)
		return;
	/* One datagram, many verdicts.  A verdict that cannot be sent leaves its SYN to the queue's
	 * fate (dropped when P goes away; the child retransmits, and a new SYN is asked about anew). */
	if (send(r->gate_fd, r->gate_out, r->gate_out_len, MSG_DONTWAIT) < 0) {
		r->stats.gate_lost++;
		log_debug("SYN gate: verdicts not sent: %s", strerror(errno));
	}
	r->gate_out_len = 0;
}

void gate_answer(struct relay *r, uint32_t id, enum gate_reply v)
{
	static const uint32_t mark[] = {
		[GATE_PASS] = 0,
		[GATE_REFUSE] = BE_GATE_MARK_RESET,
		[GATE_HOST_UNREACH] = BE_GATE_MARK_HOST_UNREACH,
		[GATE_NET_UNREACH] = BE_GATE_MARK_NET_UNREACH,
		[GATE_PROHIBIT] = BE_GATE_MARK_PROHIBITED,
		[GATE_DROP] = 0,
	};
	uint32_t verdict = v == GATE_DROP ? NF_DROP : NF_ACCEPT;
	size_t n;

	if (r->gate_fd < 0)
		return;
	n = nfq_verdict_put(r->gate_out + r->gate_out_len, GATE_OUT - r->gate_out_len, BE_GATE_QUEUE, id,
			    verdict, mark[v]);
	if (!n) {
		gate_flush(r);
		n = nfq_verdict_put(r->gate_out, GATE_OUT, BE_GATE_QUEUE, id, verdict, mark[v]);
	}
	r->gate_out_len += n;
	if (v != GATE_PASS)
		r->stats.gate_rejected++;
}

bool gate_router_error(struct relay *r, int fd, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst, uint32_t isn)
{
	int fam = dst->ss_family, inj = r->inject_fd[fam == AF_INET6];
	socklen_t alen = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	unsigned char data[64], ctl[256], pkt[128];
	struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct sockaddr_storage to = *child;

	if (inj < 0 || recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
		return false;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		struct icmp_report rep;
		size_t len;

		/* ICMP time exceeded (11) or destination unreachable (3); ICMPv6 time exceeded (3) or
		 * destination unreachable (1) */
		if (!icmp_report_from_cmsg(c, fam, &rep) ||
		    (fam == AF_INET ? rep.type != 11 && rep.type != 3 : rep.type != 3 && rep.type != 1))
			continue;
		len = icmp_tcp_error_build(pkt, sizeof(pkt), &rep, child, dst, isn);
		((struct sockaddr_in *)&to)->sin_port = 0;   /* raw sockets: no port (same offset in v6) */
		if (len && sendto(inj, pkt, len, MSG_DONTWAIT, (struct sockaddr *)&to, alen) == (ssize_t)len)
			return true;
	}
	return false;
}

/* One queue message @h of @len bytes: a SYN to hold, or one the gate cannot judge (passed). */
static void gate_message(struct relay *r, const struct nlmsghdr *h, size_t len)
{
	struct nfq_packet p;
	struct nfq_syn syn;

	if (nfq_parse(h, len, &p) <= 0)
		return;
	if (nfq_syn_parse(p.payload, p.len, &syn) < 0) {
		r->stats.gate_unparsed++;
		gate_answer(r, p.id, GATE_PASS);
		return;
	}
	gate_take(r, &syn, p.id);
}

/*
 * gate_event() - the queue is readable: read up to GATE_VLEN messages per recvmmsg(), which returns
 * what is there without a last call to learn that nothing is left (the socket is level-triggered: a
 * SYN that arrives after is reported by the next epoll_wait()).  One SYN costs one read.
 */
void gate_event(struct relay *r)
{
	static unsigned char buf[GATE_VLEN][GATE_MSG];
	struct mmsghdr mm[GATE_VLEN];
	struct iovec iov[GATE_VLEN];

	for (int burst = 0; burst < GATE_BURST;) {
		int n;

		memset(mm, 0, sizeof(mm));
		for (int i = 0; i < GATE_VLEN; i++) {
			iov[i].iov_base = buf[i];
			iov[i].iov_len = GATE_MSG;
			mm[i].msg_hdr.msg_iov = &iov[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(r->gate_fd, mm, GATE_VLEN, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == ENOBUFS) {
				/* The kernel could not queue SYNs to us: they were dropped; the children
				 * retransmit.  Counted, and read on. */
				r->stats.gate_lost++;
				continue;
			}
			return;   /* EAGAIN, or the backend is going away */
		}
		for (int i = 0; i < n; i++) {
			size_t len = mm[i].msg_len, off = 0;

			if (mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
				r->stats.gate_lost++;   /* cannot happen with GATE_MSG; left to the queue */
				continue;
			}
			while (off + sizeof(struct nlmsghdr) <= len) {
				const struct nlmsghdr *h = (const void *)(buf[i] + off);

				if (h->nlmsg_len < sizeof(*h) || h->nlmsg_len > len - off)
					break;
				gate_message(r, h, h->nlmsg_len);
				off += NLMSG_ALIGN(h->nlmsg_len);
				burst++;
			}
		}
		if (n < GATE_VLEN)
			return;
	}
}
