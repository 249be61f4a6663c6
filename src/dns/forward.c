/* SPDX-License-Identifier: MIT */
/*
 * dns/forward — the forwarder's core and its UDP side (see dns.h for the theory of operation).
 *
 * States of a query (struct dns_query):
 *   TRYING    sent on one of the upstream's connected UDP sockets (a random one of DNS_UP_SOCKS,
 *             so random source ports), with a fresh random ID; waits in the (slot, ID) table and
 *             in the timer heap until try_deadline
 *   -> ANSWERED   an answer on that socket with that ID and the query's question: the client's
 *                 ID is put back and it goes to the child, as it came (TC, EDNS, DNSSEC included)
 *   -> next try   the try timed out, the socket reported an ICMP error (ECONNREFUSED, ...), or
 *                 the nameserver answered SERVFAIL, REFUSED or NOTIMP (glibc's res_send moves on
 *                 then too): at once to the next nameserver; after all tries (nameservers x
 *                 attempts), or at the deadline (the host's timeout minus a margin: before the
 *                 child's resolver gives up), the last such rcode an upstream gave, else SERVFAIL
 * A retransmit (same client socket, ID and question) while the query is outstanding is not sent
 * again.  The table is bounded (DNS_MAX_QUERIES, DNS_PER_CLIENT per client socket): beyond, the
 * child gets SERVFAIL at once rather than waiting for nothing.  Every lookup per datagram is a hash
 * chain (client socket; client socket and ID; upstream socket and ID), none a walk of a client's
 * queries: one socket with hundreds outstanding (a load tool, a parallel resolver) costs no more.
 *
 * Without --dns the host's resolv.conf is looked at (stat, symlinks followed) once a second, also
 * while no query arrives; a change (another file, size, mtime, ctime) reloads the nameservers, and queries waiting on an old one are sent again to the new ones.
 * The child's resolv.conf files are rewritten in place when their text changes (the host's search,
 * domain or options lines; the nameservers stay the gateway's), and written once more, unchanged,
 * 100 ms later: glibc keeps the text it read with the mtime it saw after reading, so a lookup that
 * read during the first write reads the whole text again.  Nameservers are tried in file order from the first; with
 * `options rotate` each new query starts one further along (round robin), as glibc does.
 */
#include "dns/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <stdio.h>
#include <netinet/in.h>
#include <sys/epoll.h>

#include <sodium.h>

#include "util/explain.h"
#include "util/log.h"

#define RX_BATCH DNS_RX_BATCH
#define RX_BUF 65536
#define RELOAD_MS 1000
#define SWEEP_MS 1000
#define MIN_TRY_MS 200
#define REWRITE_MS 100           /* the child's new text is written again, unchanged, after this */
#define STALE_MS 10000           /* the child's files not known yet: try this long */
#define STALE_RETRY_MS 50

/* The keyed hash (SipHash: the child chooses its ports) of the client socket @child. */
static uint64_t client_hash(const struct dns_fwd *f, const struct sockaddr_storage *child)
{
	unsigned char in[18], out[crypto_shorthash_BYTES];
	size_t n = flow_endpoint_bytes(child, in);
	uint64_t h;

	crypto_shorthash(out, in, n, (const unsigned char *)f->key);
	memcpy(&h, out, sizeof(h));
	return h;
}

/* The chain of the queries with client ID @id from the client socket of hash @h (Fibonacci
 * hashing of the ID: one client's IDs spread over the table; another's start elsewhere). */
static unsigned int query_bucket(uint64_t h, uint16_t id)
{
	return (unsigned int)((h + id * 0x9e3779b97f4a7c15ull) >> 52) % DNS_HASH;
}

static struct dns_client *client_find(struct dns_fwd *f, uint64_t h, const struct sockaddr_storage *child)
{
	for (struct dns_client *c = f->clients[h % DNS_HASH]; c; c = c->next)
		if (c->h == h && flow_same_endpoint(&c->ep, child))
			return c;
	return NULL;
}

/* A new entry for @child (the pool has one per outstanding query, so never NULL while n_udp is
 * below DNS_MAX_QUERIES). */
static struct dns_client *client_add(struct dns_fwd *f, uint64_t h, const struct sockaddr_storage *child)
{
	struct dns_client *c = f->client_free;

	if (!c)
		return NULL;
	f->client_free = c->next;
	memset(c, 0, sizeof(*c));
	memcpy(&c->ep, child, child->ss_family == AF_INET6 ? sizeof(c->ep.in6) : sizeof(c->ep.in4));
	c->h = h;
	c->next = f->clients[h % DNS_HASH];
	f->clients[h % DNS_HASH] = c;
	return c;
}

/* @c leaves the table. */
static void client_release(struct dns_fwd *f, struct dns_client *c)
{
	for (struct dns_client **pp = &f->clients[c->h % DNS_HASH]; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	c->next = f->client_free;
	f->client_free = c;
}

/* One query of @c's ended: the last one frees the entry. */
static void client_put(struct dns_fwd *f, struct dns_client *c)
{
	if (--c->n == 0)
		client_release(f, c);
}

static unsigned int up_bucket(int slot, uint16_t id)
{
	return ((unsigned int)slot * 7919u + id) % DNS_HASH;
}

/* ---------- the timer heap (every outstanding query, by try_deadline) ---------- */

static void heap_swap(struct dns_fwd *f, unsigned int a, unsigned int b)
{
	struct dns_query *t = f->heap[a];

	f->heap[a] = f->heap[b];
	f->heap[b] = t;
	f->heap[a]->heap_i = a;
	f->heap[b]->heap_i = b;
}

static void heap_fix(struct dns_fwd *f, unsigned int i)
{
	while (i > 0 && f->heap[(i - 1) / 2]->try_deadline > f->heap[i]->try_deadline) {
		heap_swap(f, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		unsigned int l = 2 * i + 1, r = l + 1, m = i;

		if (l < f->n_heap && f->heap[l]->try_deadline < f->heap[m]->try_deadline)
			m = l;
		if (r < f->n_heap && f->heap[r]->try_deadline < f->heap[m]->try_deadline)
			m = r;
		if (m == i)
			return;
		heap_swap(f, i, m);
		i = m;
	}
}

void dns_heap_update(struct dns_fwd *f, struct dns_query *q)
{
	heap_fix(f, q->heap_i);
}

static void heap_remove(struct dns_fwd *f, struct dns_query *q)
{
	unsigned int i = q->heap_i;

	f->n_heap--;
	if (i != f->n_heap) {
		f->heap[i] = f->heap[f->n_heap];
		f->heap[i]->heap_i = i;
		heap_fix(f, i);
	}
}

/* ---------- queries ---------- */

uint64_t dns_max_tries(const struct dns_fwd *f)
{
	return (uint64_t)f->n_ns * f->attempts;
}

unsigned int dns_first_ns(struct dns_fwd *f)
{
	unsigned int n;

	if (!f->rotate)
		return 0;
	n = f->next_first % (unsigned int)f->n_ns;
	f->next_first = n + 1;
	return n;
}

/*
 * dns_rand16() - 16 random bits (upstream IDs, socket choice), from a pool filled by libsodium's
 * CSPRNG 256 values at a time: one getrandom() per 256 queries instead of two per query.
 */
uint16_t dns_rand16(struct dns_fwd *f)
{
	if (f->rnd_left < 2) {
		randombytes_buf(f->rnd, sizeof(f->rnd));
		f->rnd_left = sizeof(f->rnd);
	}
	f->rnd_left -= 2;
	return (uint16_t)(f->rnd[f->rnd_left] << 8 | f->rnd[f->rnd_left + 1]);
}

/*
 * dns_query_new() - an outstanding query for @msg (a copy is kept), with its flow record opened.
 * Return: it (in the heap, not sent), or NULL when out of memory.
 */
struct dns_query *dns_query_new(struct dns_fwd *f, const uint8_t *msg, size_t len,
				const struct dns_question *q, const struct sockaddr_storage *child,
				const struct sockaddr_storage *dst)
{
	struct dns_query *dq;

	if (f->n_heap >= DNS_HEAP_MAX)
		return NULL;
	if ((dq = f->spare) != NULL) {
		uint8_t *buf = dq->msg;
		size_t cap = dq->cap;

		f->spare = dq->unext;
		f->n_spare--;
		memset(dq, 0, sizeof(*dq));
		dq->msg = buf;
		dq->cap = cap;
	} else if (!(dq = calloc(1, sizeof(*dq)))) {
		return NULL;
	}
	if (!dq->msg || dq->cap < len) {
		size_t cap = len < DNS_QUERY_BUF ? DNS_QUERY_BUF : len;
		uint8_t *buf = realloc(dq->msg, cap);

		if (!buf) {
			free(dq->msg);
			free(dq);
			return NULL;
		}
		dq->msg = buf;
		dq->cap = cap;
	}
	memcpy(dq->msg, msg, len);
	dq->len = len;
	dq->q = *q;
	dq->client_id = dns_id(msg);
	dq->slot = -1;
	dq->deadline = f->now + f->total_ms;
	dq->try_deadline = dq->deadline;
	dns_question_name(q, dq->name, sizeof(dq->name));
	flow_begin(f->hub, &dq->rec, FLOW_DNS, child, dst);
	dq->rec.route = "dns";
	dq->rec.rule = "dns: answered by the forwarder";
	dq->rec.dst_name = dq->name;
	dq->rec.bytes_up = len;
	dq->rec.pkts_up = 1;
	flow_opened(f->hub, &dq->rec);
	dq->heap_i = f->n_heap;
	f->heap[f->n_heap++] = dq;
	heap_fix(f, dq->heap_i);
	return dq;
}

static void up_unlink(struct dns_fwd *f, struct dns_query *q)
{
	if (q->slot < 0)
		return;
	for (struct dns_query **pp = &f->uhash[up_bucket(q->slot, q->up_id)]; *pp; pp = &(*pp)->unext) {
		if (*pp == q) {
			*pp = q->unext;
			break;
		}
	}
	q->slot = -1;
}

void dns_query_end(struct dns_fwd *f, struct dns_query *q, enum flow_outcome o, int err)
{
	heap_remove(f, q);
	up_unlink(f, q);
	if (!q->sess) {
		*q->cprev = q->cnext;
		if (q->cnext)
			q->cnext->cprev = q->cprev;
		client_put(f, q->client);
		f->n_udp--;
	}
	flow_end(f->hub, &q->rec, o, err);
	if (f->n_spare < DNS_SPARE_MAX) {
		q->unext = f->spare;
		f->spare = q;
		f->n_spare++;
		return;
	}
	free(q->msg);
	free(q);
}

void dns_record_at_once(struct dns_fwd *f, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst, const char *rule, enum flow_outcome o, int err)
{
	flow_record_at_once(f->hub, FLOW_DNS, child, dst, rule, o, err);
}

/* No upstream answered a query: say so once per run (the child sees SERVFAIL). */
void dns_all_failed(struct dns_fwd *f, const char *why)
{
	char a[64], what[160];

	if (f->warned)
		return;
	f->warned = true;
	snprintf(what, sizeof(what), "%s, %s%s", flow_addr_str((const struct sockaddr *)&f->ns[0], a, sizeof(a)),
		 why, f->n_ns > 1 ? ", and the others" : "");
	explain_warn("dns", 0, what);
}

/* ---------- UDP: to the child ---------- */

union pktinfo_buf {
	char b[CMSG_SPACE(sizeof(struct in6_pktinfo))];
	struct cmsghdr align;
};

/* @m: @io to @child from @dst (IP_PKTINFO on the transparent listener: the kernel allows a non-local
 * source there), @cb its control buffer. */
static void reply_msg(struct msghdr *m, union pktinfo_buf *cb, struct iovec *io, int fam,
		      const union flow_addr *child, const union flow_addr *dst)
{
	struct cmsghdr *c;

	memset(cb, 0, sizeof(*cb));
	*m = (struct msghdr){ .msg_name = (void *)child, .msg_iov = io, .msg_iovlen = 1, .msg_control = cb->b };
	c = (struct cmsghdr *)cb->b;
	if (fam == 0) {
		struct in_pktinfo pi = { .ipi_spec_dst = dst->in4.sin_addr };

		m->msg_namelen = sizeof(struct sockaddr_in);
		c->cmsg_level = SOL_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		m->msg_controllen = CMSG_SPACE(sizeof(pi));
	} else {
		struct in6_pktinfo pi = { .ipi6_addr = dst->in6.sin6_addr };

		m->msg_namelen = sizeof(struct sockaddr_in6);
		c->cmsg_level = SOL_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		m->msg_controllen = CMSG_SPACE(sizeof(pi));
	}
}

/* Send @msg to the UDP child at @child from the address it wrote to, @dst. */
static void reply_udp(struct dns_fwd *f, int fam, const union flow_addr *child, const union flow_addr *dst,
		      const void *msg, size_t len)
{
	union pktinfo_buf cb;
	struct iovec io = { .iov_base = (void *)msg, .iov_len = len };
	struct msghdr m;

	reply_msg(&m, &cb, &io, fam, child, dst);
	if (sendmsg(f->listen[fam], &m, MSG_DONTWAIT) < 0)
		f->dropped++;
}

/* Answers of one receive batch, sent to the children with one sendmmsg() per listener. */
struct reply_batch {
	int fam, n;
	struct mmsghdr mm[RX_BATCH];
	struct iovec io[RX_BATCH];
	union flow_addr to[RX_BATCH], from[RX_BATCH];
	union pktinfo_buf cb[RX_BATCH];
};

static void batch_flush(struct dns_fwd *f, struct reply_batch *b)
{
	for (int i = 0; i < b->n;) {
		int k = sendmmsg(f->listen[b->fam], b->mm + i, (unsigned int)(b->n - i), MSG_DONTWAIT);

		if (k <= 0) {
			f->dropped++;   /* this one failed (the child's socket is full, ...): on with the rest */
			i++;
		} else {
			i += k;
		}
	}
	b->n = 0;
}

/* Queue @msg (it must stay put until the flush) for the child of @q. */
static void batch_add(struct dns_fwd *f, struct reply_batch *b, const struct dns_query *q, void *msg, size_t len)
{
	int i;

	if (b->n && (b->fam != q->fam || b->n == RX_BATCH))
		batch_flush(f, b);
	i = b->n++;
	b->fam = q->fam;
	b->to[i] = q->rec.child;
	b->from[i] = q->rec.dst;
	b->io[i] = (struct iovec){ .iov_base = msg, .iov_len = len };
	memset(&b->mm[i], 0, sizeof(b->mm[i]));
	reply_msg(&b->mm[i].msg_hdr, &b->cb[i], &b->io[i], q->fam, &b->to[i], &b->from[i]);
}

static void udp_error_reply(struct dns_fwd *f, int fam, const union flow_addr *child, const union flow_addr *dst,
			    const uint8_t *query, const struct dns_question *q, int rcode)
{
	uint8_t out[DNS_HDR + DNS_WIRE_NAME_MAX + 4];
	size_t n = dns_build_error(out, sizeof(out), query, q, rcode);

	if (n)
		reply_udp(f, fam, child, dst, out, n);
}

/* SERVFAIL (or the rcode an upstream gave) for @q: all tries failed, or the deadline passed. */
static void udp_fail(struct dns_fwd *f, struct dns_query *q, enum flow_outcome o, int err)
{
	dns_set_id(q->msg, q->client_id);
	udp_error_reply(f, q->fam, &q->rec.child, &q->rec.dst, q->msg, &q->q,
			q->rcode ? q->rcode : DNS_RCODE_SERVFAIL);
	q->rec.bytes_down = DNS_HDR + q->q.len + 4u;
	q->rec.pkts_down = 1;
	if (!q->rcode)   /* a resolver that answered SERVFAIL or REFUSED did answer */
		dns_all_failed(f, err == ETIMEDOUT ? "timed out" : strerror(err));
	dns_query_end(f, q, o, err);
}

/* ---------- UDP: upstream ---------- */

static int slot_open(struct dns_fwd *f, int slot)
{
	const struct sockaddr_storage *ns = &f->ns[slot / DNS_UP_SOCKS];
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &f->ev_up[slot] };
	int fd;

	if (f->up_fd[slot] >= 0)
		return f->up_fd[slot];
	fd = egress_socket(&f->egress, ns, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fd;
	/* connect() binds a random ephemeral port, and the kernel then takes only the server's
	 * datagrams on it, and reports its ICMP errors. */
	if (connect(fd, (const struct sockaddr *)ns, flow_sa_len(ns)) < 0 ||
	    epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	f->up_fd[slot] = fd;
	if (f->hub && f->hub->tap)
		flow_tap_sock(f->hub, fd, SOCK_DGRAM, true);
	return fd;
}

static void slot_close(struct dns_fwd *f, int slot)
{
	if (f->up_fd[slot] >= 0) {
		if (f->hub && f->hub->tap)
			flow_tap_sock(f->hub, f->up_fd[slot], SOCK_DGRAM, false);
		close(f->up_fd[slot]);
	}
	f->up_fd[slot] = -1;
}

static struct dns_query *up_find(struct dns_fwd *f, int slot, uint16_t id)
{
	for (struct dns_query *q = f->uhash[up_bucket(slot, id)]; q; q = q->unext)
		if (q->slot == slot && q->up_id == id)
			return q;
	return NULL;
}

static void udp_next_try(struct dns_fwd *f, struct dns_query *q, int err);

static void sendq_flush(struct dns_fwd *f)
{
	struct send_batch *b = &f->sendq;
	bool taken[RX_BATCH] = { false };

	f->batching = false;   /* what fails below is tried again at once */
	for (int first = 0; first < b->n; first++) {
		struct dns_query *qs[RX_BATCH] = { NULL };
		struct mmsghdr mm[RX_BATCH];
		struct iovec io[RX_BATCH];
		int slot = b->slot[first], n = 0;

		if (taken[first])
			continue;
		for (int i = first; i < b->n; i++) {   /* the batch's queries on this socket */
			if (taken[i] || b->slot[i] != slot)
				continue;
			taken[i] = true;
			qs[n] = b->q[i];
			io[n] = (struct iovec){ .iov_base = qs[n]->msg, .iov_len = qs[n]->len };
			memset(&mm[n], 0, sizeof(mm[n]));
			mm[n].msg_hdr.msg_iov = &io[n];
			mm[n].msg_hdr.msg_iovlen = 1;
			n++;
		}
		for (int i = 0; i < n;) {
			int k = sendmmsg(f->up_fd[slot], mm + i, (unsigned int)(n - i), MSG_DONTWAIT);

			if (k > 0) {
				if (f->hub && f->hub->tap)
					for (int j = i; j < i + k; j++)
						if (qs[j])
							flow_tap_datagram(f->hub, f->up_fd[slot], 0, qs[j]->msg,
									  qs[j]->len);
				i += k;
				continue;
			}
			/* As for send(): a full buffer is a lost datagram, the try's timer resends it. */
			if (errno != EAGAIN && errno != ENOBUFS && qs[i])
				udp_next_try(f, qs[i], errno);
			i++;
		}
	}
	b->n = 0;
}

/*
 * udp_try() - send @q to the nameserver of its try number, on a random socket of it, with a fresh
 * random ID; a socket that cannot be had or refuses at once moves it to the next try.  After the
 * last try (or at the deadline), SERVFAIL.
 */
static void udp_try(struct dns_fwd *f, struct dns_query *q, int err)
{
	while (q->tries < dns_max_tries(f) && f->now < q->deadline) {
		int slot = (int)((q->tries + q->ns_first) % (unsigned int)f->n_ns) * DNS_UP_SOCKS +
			   (int)(dns_rand16(f) % DNS_UP_SOCKS);   /* a power of 2: unbiased */
		int fd = slot_open(f, slot);
		uint16_t id = 0;

		if (fd < 0) {
			err = -fd;
			q->tries++;
			continue;
		}
		for (int k = 0; k < 8; k++) {
			id = dns_rand16(f);
			if (!up_find(f, slot, id))
				break;
		}
		dns_set_id(q->msg, id);
		if (f->batching && f->sendq.n < RX_BATCH) {
			f->sendq.slot[f->sendq.n] = slot;   /* sent by sendq_flush(), with the others */
			f->sendq.q[f->sendq.n++] = q;
		} else {
			ssize_t w = send(fd, q->msg, q->len, MSG_DONTWAIT);

			if (w < 0 && errno != EAGAIN && errno != ENOBUFS) {
				err = errno;   /* an ICMP error reported late, an unreachable network */
				q->tries++;
				continue;
			}
			if (w > 0 && f->hub && f->hub->tap)
				flow_tap_datagram(f->hub, fd, 0, q->msg, q->len);
		}
		q->up_id = id;
		q->slot = slot;
		q->unext = f->uhash[up_bucket(slot, id)];
		f->uhash[up_bucket(slot, id)] = q;
		q->try_deadline = f->now + f->per_try_ms < q->deadline ? f->now + f->per_try_ms : q->deadline;
		dns_heap_update(f, q);
		return;
	}
	udp_fail(f, q, err == ETIMEDOUT ? FLOW_UP_TIMEOUT : FLOW_UP_FAILED, err);
}

/* The current try of @q failed with @err: on to the next. */
static void udp_next_try(struct dns_fwd *f, struct dns_query *q, int err)
{
	up_unlink(f, q);
	q->tries++;
	udp_try(f, q, err);
}

/* An ICMP error on @slot: every query waiting on it moves on at once. */
static void slot_failed(struct dns_fwd *f, int slot, int err)
{
	for (unsigned int i = 0; i < f->n_heap;) {
		struct dns_query *q = f->heap[i];

		if (q->slot == slot && !q->sess) {
			udp_next_try(f, q, err);
			i = 0;   /* the heap changed: look again (few queries wait on a failing socket) */
			continue;
		}
		i++;
	}
}

static void upstream_readable(struct dns_fwd *f, int slot)
{
	struct reply_batch b;

	b.n = 0;
	for (int burst = 0; burst < 4; burst++) {
		struct dns_query *done[RX_BATCH];
		struct mmsghdr mm[RX_BATCH];
		struct iovec io[RX_BATCH];
		int n, n_done = 0;

		memset(mm, 0, sizeof(mm));
		for (int i = 0; i < RX_BATCH; i++) {
			io[i].iov_base = f->buf + (size_t)i * RX_BUF;
			io[i].iov_len = RX_BUF;
			mm[i].msg_hdr.msg_iov = &io[i];
			mm[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(f->up_fd[slot], mm, RX_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			slot_failed(f, slot, errno);
			continue;
		}
		for (int i = 0; i < n; i++) {
			uint8_t *m = io[i].iov_base;
			size_t len = mm[i].msg_len;
			struct dns_query *q;

			if (f->hub && f->hub->tap)
				flow_tap_datagram(f->hub, f->up_fd[slot], 1, m, len);
			if (len < DNS_HDR || !(q = up_find(f, slot, dns_id(m))))
				continue;   /* late, or not ours */
			if (dns_check_answer(m, len, &q->q, f->names, f->now) < 0)
				continue;   /* not the answer to it: keep waiting */
			if (dns_rcode_moves_on(m) && q->tries + 1 < dns_max_tries(f) && f->now < q->deadline) {
				q->rcode = dns_rcode(m);   /* ask the next one; this is the answer if none does */
				udp_next_try(f, q, EPROTO);
				continue;
			}
			dns_set_id(m, q->client_id);
			batch_add(f, &b, q, m, len);
			q->rec.bytes_down = len;
			q->rec.pkts_down = 1;
			up_unlink(f, q);   /* answered: a second answer in this batch finds nothing */
			done[n_done++] = q;
		}
		batch_flush(f, &b);   /* before the next burst reuses the buffers */
		for (int i = 0; i < n_done; i++)   /* the answers first, the bookkeeping after */
			dns_query_end(f, done[i], FLOW_OK, 0);
		if (n < RX_BATCH)
			return;
	}
}

/* ---------- UDP: from the child ---------- */

/* A query of the child's from @child to @dst on listener @fam. */
static void child_query(struct dns_fwd *f, int fam, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst, const uint8_t *msg, size_t len)
{
	union flow_addr c, d;
	struct dns_question q;
	enum dns_verdict v = dns_check_query(msg, len, &q);
	struct dns_client *cl;
	struct dns_query *dq;
	unsigned int b;
	uint64_t h;

	memcpy(&c, child, sizeof(c));
	memcpy(&d, dst, sizeof(d));
	if (v == DNS_DROP) {
		f->dropped++;
		return;
	}
	if (v != DNS_FORWARD) {
		f->formerr++;
		udp_error_reply(f, fam, &c, &d, msg, NULL, v == DNS_NOTIMP ? DNS_RCODE_NOTIMP : DNS_RCODE_FORMERR);
		dns_record_at_once(f, child, dst, "dns: malformed query", FLOW_DENIED, EBADMSG);
		return;
	}
	h = client_hash(f, child);
	cl = client_find(f, h, child);
	b = query_bucket(h, dns_id(msg));
	for (dq = cl ? f->chash[b] : NULL; dq; dq = dq->cnext) {
		if (dq->client == cl && dq->client_id == dns_id(msg) && dns_question_eq(&dq->q, &q) &&
		    flow_same_endpoint(&dq->rec.dst, dst)) {
			f->dup++;   /* a retransmit: the answer to the first goes to both */
			return;
		}
	}
	if ((cl && cl->n >= DNS_PER_CLIENT) || f->n_udp >= DNS_MAX_QUERIES ||
	    (!cl && !(cl = client_add(f, h, child))) || !(dq = dns_query_new(f, msg, len, &q, child, dst))) {
		if (cl && !cl->n)
			client_release(f, cl);   /* added for this one */
		f->refused_full++;
		udp_error_reply(f, fam, &c, &d, msg, &q, DNS_RCODE_SERVFAIL);
		dns_record_at_once(f, child, dst, "dns: too many queries outstanding", FLOW_NO_RESOURCES, ENOBUFS);
		return;
	}
	dq->fam = fam;
	dq->ns_first = dns_first_ns(f);
	dq->client = cl;
	cl->n++;
	dq->cnext = f->chash[b];
	if (dq->cnext)
		dq->cnext->cprev = &dq->cnext;
	dq->cprev = &f->chash[b];
	f->chash[b] = dq;
	f->n_udp++;
	udp_try(f, dq, ETIMEDOUT);
}

static void listener_readable(struct dns_fwd *f, int fam)
{
	for (int burst = 0; burst < 4; burst++) {
		struct sockaddr_storage child[RX_BATCH];
		union {
			char b[64];
			struct cmsghdr align;
		} cb[RX_BATCH];
		struct mmsghdr mm[RX_BATCH];
		struct iovec io[RX_BATCH];
		int n;

		memset(mm, 0, sizeof(mm));
		memset(child, 0, sizeof(child));
		memset(cb, 0, sizeof(cb));
		for (int i = 0; i < RX_BATCH; i++) {
			io[i].iov_base = f->buf + (size_t)i * RX_BUF;
			io[i].iov_len = DNS_QUERY_MAX + 1;   /* longer is not a query: seen as too long */
			mm[i].msg_hdr = (struct msghdr){ .msg_name = &child[i], .msg_namelen = sizeof(child[i]),
							 .msg_iov = &io[i], .msg_iovlen = 1,
							 .msg_control = cb[i].b, .msg_controllen = sizeof(cb[i].b) };
		}
		n = recvmmsg(f->listen[fam], mm, RX_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		f->sendq.n = 0;
		f->batching = true;
		for (int i = 0; i < n; i++) {
			struct sockaddr_storage dst;

			if (!flow_orig_dst(&mm[i].msg_hdr, &dst) || child[i].ss_family != dst.ss_family)
				continue;
			child_query(f, fam, &child[i], &dst, io[i].iov_base, mm[i].msg_len);
		}
		sendq_flush(f);
		if (n < RX_BATCH)
			return;
	}
}

/* ---------- upstreams ---------- */

static void set_timing(struct dns_fwd *f, unsigned int timeout_s, unsigned int attempts)
{
	uint64_t t = (uint64_t)(timeout_s ? timeout_s : 5) * 1000;
	uint64_t margin = t / 10 < 100 ? 100 : t / 10 > 500 ? 500 : t / 10;
	uint64_t tries;

	f->attempts = attempts ? attempts : 2;
	f->total_ms = t - margin;
	tries = dns_max_tries(f);
	f->per_try_ms = f->total_ms / (tries ? tries : 1);
	if (f->per_try_ms < MIN_TRY_MS)
		f->per_try_ms = MIN_TRY_MS;
}

/* Use @rc's nameservers (none: 127.0.0.1, as glibc does); queries waiting on the old ones go again. */
static void set_servers(struct dns_fwd *f, const struct resolv_conf *rc)
{
	struct dns_query **wait;
	unsigned int n = 0;

	f->n_ns = rc->n_ns;
	memcpy(f->ns, rc->ns, sizeof(f->ns));
	if (!f->n_ns) {
		struct sockaddr_in *a = (struct sockaddr_in *)&f->ns[0];

		memset(&f->ns[0], 0, sizeof(f->ns[0]));
		a->sin_family = AF_INET;
		a->sin_port = htons(53);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		f->n_ns = 1;
	}
	set_timing(f, rc->timeout_s, rc->attempts);
	f->rotate = rc->rotate && f->n_ns > 1;
	f->next_first = 0;
	for (int s = 0; s < DNS_SLOTS; s++)
		slot_close(f, s);
	if (!f->n_heap || !(wait = calloc(f->n_heap, sizeof(void *))))
		return;
	for (unsigned int i = 0; i < f->n_heap; i++)
		if (!f->heap[i]->sess && f->heap[i]->slot >= 0)
			wait[n++] = f->heap[i];
	for (unsigned int i = 0; i < n; i++) {
		up_unlink(f, wait[i]);
		wait[i]->tries = 0;   /* start over on the new list, same deadline */
		wait[i]->ns_first %= (unsigned int)f->n_ns;
		udp_try(f, wait[i], ETIMEDOUT);
	}
	free(wait);
}

/* ---------- the host's resolv.conf, and the child's ---------- */

/* Write the child's text to each of its files (once the backend has them). */
static void child_sync(struct dns_fwd *f)
{
	const int *fds;
	int n = f->child_files(f->child_files_arg, &fds), bad = 0;

	if (n <= 0)
		return;   /* the command has not started yet: run() tries again */
	for (int i = 0; i < n; i++)
		if (resolvconf_replace(fds[i], f->child_text, f->child_len) < 0)
			bad++;
	if (bad)
		log_debug("dns: %d of the child's resolv.conf files could not be rewritten", bad);
	log_debug("dns: the child's resolv.conf follows the host's (%d file(s))", n);
	f->child_stale = false;
	f->rewrite_at = f->now + REWRITE_MS;
}

/* The child's text for @rc; written when it differs from what its files hold. */
static void child_update(struct dns_fwd *f, const struct resolv_conf *rc)
{
	char text[sizeof(f->child_text)];
	int n;

	if (!f->child_files || !f->np || (n = resolvconf_child_text(rc, f->np, text, sizeof(text))) < 0)
		return;
	if ((size_t)n == f->child_len && memcmp(text, f->child_text, (size_t)n) == 0)
		return;
	memcpy(f->child_text, text, (size_t)n + 1);
	f->child_len = (size_t)n;
	f->child_stale = true;
	f->stale_until = f->now + STALE_MS;
	child_sync(f);
}

/* Without --dns: has the host's resolv.conf changed?  Looked at once a second (svc_deadline()).
 * (Not inotify: closing an inotify instance waits for an SRCU grace period, about 15 ms here, and
 * that was on every run's way out.) */
static void maybe_reload(struct dns_fwd *f)
{
	struct resolv_conf rc;
	struct stat st;
	bool same;

	if (f->fixed || !f->path || f->now < f->next_check)
		return;
	f->next_check = f->now + RELOAD_MS;
	if (stat(f->path, &st) < 0) {
		if (!f->st_ok)
			return;
		memset(&st, 0, sizeof(st));
	}
	same = f->st_ok && st.st_dev == f->st.st_dev && st.st_ino == f->st.st_ino &&
	       st.st_size == f->st.st_size && st.st_mtim.tv_sec == f->st.st_mtim.tv_sec &&
	       st.st_mtim.tv_nsec == f->st.st_mtim.tv_nsec && st.st_ctim.tv_sec == f->st.st_ctim.tv_sec &&
	       st.st_ctim.tv_nsec == f->st.st_ctim.tv_nsec;
	if (same)
		return;
	f->st = st;
	f->st_ok = st.st_ino != 0;
	resolvconf_load(f->path, &rc);
	log_debug("dns: %s changed: %d nameserver(s)", f->path, rc.n_ns);
	set_servers(f, &rc);
	child_update(f, &rc);
}

/* The once-a-second look at the host's file, and the child's files' writes. */
static void run_files(struct dns_fwd *f)
{
	maybe_reload(f);
	if (f->child_stale && f->now < f->stale_until)
		child_sync(f);
	if (f->rewrite_at && f->now >= f->rewrite_at) {
		const int *fds;
		int n = f->child_files(f->child_files_arg, &fds);

		f->rewrite_at = 0;
		for (int i = 0; i < n; i++)
			resolvconf_replace(fds[i], f->child_text, f->child_len);
	}
}

/* ---------- the service ---------- */

static void run_timers(struct dns_fwd *f)
{
	while (f->n_heap && f->heap[0]->try_deadline <= f->now) {
		struct dns_query *q = f->heap[0];

		if (q->sess)
			dns_tcp_timeout(f, q);
		else if (q->tries + 1 >= dns_max_tries(f) || f->now >= q->deadline)
			udp_fail(f, q, FLOW_UP_TIMEOUT, ETIMEDOUT);
		else
			udp_next_try(f, q, ETIMEDOUT);
	}
	if (f->now >= f->next_sweep) {
		f->next_sweep = f->now + SWEEP_MS;
		dns_tcp_sweep(f);
	}
}

void dns_ev_init(const struct dns_fwd *f, struct dns_ev *ev, enum dns_ev_kind kind, int index)
{
	*ev = (struct dns_ev){ .head.relay_tag = f->tag, .kind = kind, .index = index };
}

/* The relay's epoll set is ours too: the listeners go in now, upstream sockets when opened. */
static int svc_attach(void *priv, int epfd, int tag)
{
	struct dns_fwd *f = priv;

	f->epfd = epfd;
	f->tag = tag;
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &f->ev_listen[i] };

		dns_ev_init(f, &f->ev_listen[i], DEV_LISTEN, i);
		if (f->listen[i] >= 0 && epoll_ctl(f->epfd, EPOLL_CTL_ADD, f->listen[i], &ev) < 0)
			return -errno;
	}
	for (int s = 0; s < DNS_SLOTS; s++)
		dns_ev_init(f, &f->ev_up[s], DEV_UP, s);
	return 0;
}

static void svc_event(void *priv, struct flow_hub *hub, struct relay_service_ev *rev, uint32_t events,
		      uint64_t now_ms)
{
	struct dns_fwd *f = priv;
	struct dns_ev *ev = (struct dns_ev *)(void *)rev;

	f->hub = hub;
	f->now = now_ms;
	maybe_reload(f);
	switch (ev->kind) {
	case DEV_LISTEN:
		listener_readable(f, ev->index);
		break;
	case DEV_UP:
		if (f->up_fd[ev->index] >= 0)
			upstream_readable(f, ev->index);
		break;
	case DEV_TCP_CHILD:
	case DEV_TCP_UP:
		dns_tcp_event(f, ev, events);
		break;
	}
}

static void svc_run(void *priv, struct flow_hub *hub, uint64_t now_ms)
{
	struct dns_fwd *f = priv;

	f->hub = hub;
	f->now = now_ms;
	run_timers(f);
	run_files(f);
	dns_tcp_free_dead(f);
}

static uint64_t svc_deadline(void *priv)
{
	const struct dns_fwd *f = priv;
	uint64_t d = f->n_heap ? f->heap[0]->try_deadline : UINT64_MAX;

	if (f->dead)
		return 0;   /* a session closed outside a batch (an eviction at adopt): free it soon */

	if (f->n_tcp && f->next_sweep < d)
		d = f->next_sweep;
	if (!f->fixed && f->path && f->next_check < d)
		d = f->next_check;
	if (f->rewrite_at && f->rewrite_at < d)
		d = f->rewrite_at;
	if (f->child_stale && f->now < f->stale_until && f->now + STALE_RETRY_MS < d)
		d = f->now + STALE_RETRY_MS;
	return d;
}

static bool svc_claims_tcp(void *priv, const struct sockaddr_storage *dst)
{
	const struct sockaddr_in *a = (const struct sockaddr_in *)dst;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)dst;

	(void)priv;
	return dst->ss_family == AF_INET ? ntohs(a->sin_port) == 53 : ntohs(a6->sin6_port) == 53;
}

static void svc_adopt_tcp(void *priv, struct flow_hub *hub, int fd, const struct sockaddr_storage *child,
			  const struct sockaddr_storage *dst, uint64_t now_ms)
{
	struct dns_fwd *f = priv;

	f->hub = hub;
	f->now = now_ms;
	maybe_reload(f);
	dns_tcp_adopt(f, fd, child, dst);
}

static unsigned int svc_reserved_fds(void *priv)
{
	(void)priv;
	return DNS_SLOTS + 2 * DNS_TCP_MAX;
}

static void svc_stop(void *priv, struct flow_hub *hub)
{
	struct dns_fwd *f = priv;

	f->hub = hub;
	dns_tcp_close_all(f);
	dns_tcp_free_dead(f);
	/* From the heap's end: no entry moves. */
	for (unsigned int i = f->n_heap; i-- > 0;)
		dns_query_end(f, f->heap[i], FLOW_CUT_AT_EXIT, 0);
	for (int s = 0; s < DNS_SLOTS; s++)
		slot_close(f, s);   /* while the hub (and its tap) still exists */
	f->hub = NULL;             /* the relay goes away after this */
	log_debug("dns: %llu dropped, %llu malformed, %llu retransmits, %llu refused (table full)",
		  (unsigned long long)f->dropped, (unsigned long long)f->formerr,
		  (unsigned long long)f->dup, (unsigned long long)f->refused_full);
}

static const struct relay_service_ops dns_service_ops = {
	.attach = svc_attach,
	.event = svc_event,
	.run = svc_run,
	.deadline = svc_deadline,
	.claims_tcp = svc_claims_tcp,
	.adopt_tcp = svc_adopt_tcp,
	.reserved_fds = svc_reserved_fds,
	.stop = svc_stop,
};

struct relay_service dns_fwd_service(struct dns_fwd *f)
{
	return (struct relay_service){ .ops = &dns_service_ops, .priv = f };
}

/* --dns: an unreachable resolver is not a setup error (lookups get SERVFAIL), but say so. */
static void check_fixed(const struct dns_fwd *f, const struct sockaddr_storage *ns)
{
	int fd = egress_socket(&f->egress, ns, SOCK_DGRAM | SOCK_CLOEXEC, 0), e = fd < 0 ? -fd : 0;
	char a[64];

	if (fd >= 0 && connect(fd, (const struct sockaddr *)ns, flow_sa_len(ns)) < 0)
		e = errno;
	if (e)
		log_warn("the DNS resolver %s cannot be reached (%s): lookups inside will get SERVFAIL",
			 flow_addr_str((const struct sockaddr *)ns, a, sizeof(a)), strerror(e));
	if (fd >= 0)
		close(fd);
}

int dns_fwd_new(struct dns_fwd **out, const struct dns_fwd_config *cfg)
{
	struct dns_fwd *f = calloc(1, sizeof(*f));
	struct resolv_conf rc;

	*out = NULL;
	if (!f)
		return -ENOMEM;
	f->epfd = -1;
	for (int s = 0; s < DNS_SLOTS; s++)
		f->up_fd[s] = -1;
	f->names = cfg->names;
	if (cfg->egress)
		f->egress = *cfg->egress;
	f->heap = calloc(DNS_HEAP_MAX, sizeof(void *));
	f->buf = malloc((size_t)RX_BATCH * RX_BUF);
	f->client_pool = calloc(DNS_MAX_QUERIES, sizeof(*f->client_pool));
	if (!f->heap || !f->buf || !f->client_pool || sodium_init() < 0) {
		dns_fwd_free(f);
		return -ENOMEM;
	}
	for (int i = DNS_MAX_QUERIES; i-- > 0;) {
		f->client_pool[i].next = f->client_free;
		f->client_free = &f->client_pool[i];
	}
	randombytes_buf(f->key, sizeof(f->key));
	f->now = f->next_check = 0;
	f->listen[0] = cfg->listen4;
	f->listen[1] = cfg->listen6;
	rc = *cfg->host;
	if (cfg->fixed) {
		f->fixed = true;
		memset(rc.ns, 0, sizeof(rc.ns));
		rc.ns[0] = *cfg->fixed;
		rc.n_ns = 1;
		check_fixed(f, cfg->fixed);
	} else {
		f->path = cfg->resolv_path;
		if (f->path && stat(f->path, &f->st) == 0)
			f->st_ok = true;
		f->np = cfg->np;
		f->child_files = cfg->child_files;
		f->child_files_arg = cfg->child_files_arg;
		if (f->child_files && f->np) {
			int n = resolvconf_child_text(cfg->host, f->np, f->child_text, sizeof(f->child_text));

			f->child_len = n > 0 ? (size_t)n : 0;
		}
	}
	set_servers(f, &rc);
	*out = f;
	return 0;
}

void dns_fwd_free(struct dns_fwd *f)
{
	if (!f)
		return;
	for (int s = 0; s < DNS_SLOTS; s++)
		slot_close(f, s);
	dns_tcp_free_dead(f);
	while (f->spare) {
		struct dns_query *q = f->spare;

		f->spare = q->unext;
		free(q->msg);
		free(q);
	}
	free(f->heap);
	free(f->buf);
	free(f->client_pool);
	free(f);
}
