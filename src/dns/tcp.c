/* SPDX-License-Identifier: MIT */
/*
 * dns/tcp — DNS over TCP: one session per connection the child makes to port 53.
 *
 * The relay accepts the connection (its TCP listener takes all TCP) and hands it here.  A session
 * reads 2-byte-framed queries (pipelined: up to DNS_TCP_PIPELINE outstanding; further ones wait in
 * the socket), checks each (dns/wire.h; a frame longer than DNS_QUERY_MAX ends the session), gives
 * it an upstream ID unique in the session and writes it on one non-blocking TCP connection to the
 * current nameserver.  Answers are matched by ID and question, get the client's ID back and are
 * queued for the child (at most DNS_TCP_OUT_MAX: beyond, upstream reads pause until the child
 * reads).
 *
 * States of a session:
 *   OPEN        reading queries; the upstream connection is made when the first query needs it
 *   FAILOVER    the upstream refused, reset, closed with queries outstanding, a query's try timed
 *               out, or it answered SERVFAIL, REFUSED or NOTIMP with a try left (as glibc's res_send
 *               does; that answer's rcode is the query's if no nameserver answers): the connection is dropped and the outstanding queries go to the next
 *               nameserver; after all tries (or at a query's deadline) that query gets SERVFAIL
 *   CLOSING     the child sent EOF: once every query is answered and written, the session closes
 *   CLOSED      the child reset, DNS_TCP_IDLE_MS with nothing outstanding, or the relay stops
 */
#include "dns/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

#include "util/log.h"

#define FRAME_MAX (2 + DNS_MSG_MAX)
#define UP_OUT_MAX ((size_t)DNS_TCP_PIPELINE * (2 + DNS_QUERY_MAX))

struct sbuf {
	uint8_t *p;
	size_t len, cap;
};

struct dns_tcp {
	struct dns_ev ev_child, ev_up;
	int cfd, ufd;
	uint32_t cwant, uwant;        /* epoll interest now set */
	struct sockaddr_storage child, dst;
	unsigned int tries;           /* upstream connections made */
	unsigned int ns_first;        /* the nameserver is (ns_first + tries) % n_ns (rotate) */
	bool connecting;
	bool child_eof;
	bool closed;                  /* on f->dead: its fds are closed, later events of the batch ignored */
	uint8_t in[2 + DNS_QUERY_MAX];
	size_t in_len;
	uint8_t *uin;                 /* FRAME_MAX bytes from upstream */
	size_t uin_len;
	struct sbuf out_c, out_u;
	struct dns_query *qs;
	unsigned int n_q;
	uint64_t last_ms;
	struct dns_tcp *prev, *next;
};

#define sess_of(ev, member) ((struct dns_tcp *)((char *)(ev) - offsetof(struct dns_tcp, member)))

static bool sbuf_add(struct sbuf *b, const void *a, size_t an, const void *m, size_t mn)
{
	if (b->len + an + mn > b->cap)
		return false;
	memcpy(b->p + b->len, a, an);
	memcpy(b->p + b->len + an, m, mn);
	b->len += an + mn;
	return true;
}

static void sbuf_take(struct sbuf *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
}

/* Write what @b holds to @fd.  Return: 0, or -errno when the connection failed. */
static int sbuf_flush(struct sbuf *b, int fd)
{
	while (b->len) {
		ssize_t n = send(fd, b->p, b->len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		sbuf_take(b, (size_t)n);
	}
	return 0;
}

/* A frame (2-byte length, @msg) for the child. */
static void to_child(struct dns_tcp *s, const uint8_t *msg, size_t len)
{
	uint8_t hdr[2] = { (uint8_t)(len >> 8), (uint8_t)len };

	sbuf_add(&s->out_c, hdr, 2, msg, len);   /* room is kept: reads pause before it fills */
}

static void unlink_query(struct dns_tcp *s, struct dns_query *q)
{
	for (struct dns_query **pp = &s->qs; *pp; pp = &(*pp)->snext) {
		if (*pp == q) {
			*pp = q->snext;
			s->n_q--;
			return;
		}
	}
}

static void query_done(struct dns_fwd *f, struct dns_tcp *s, struct dns_query *q, enum flow_outcome o, int err)
{
	unlink_query(s, q);
	dns_query_end(f, q, o, err);
}

/* SERVFAIL (or the rcode an upstream gave, kept in q->rcode) for @q: all tries failed, or its deadline. */
static void query_servfail(struct dns_fwd *f, struct dns_tcp *s, struct dns_query *q, int err)
{
	uint8_t out[DNS_HDR + DNS_WIRE_NAME_MAX + 4];
	size_t n;

	dns_set_id(q->msg, q->client_id);
	n = dns_build_error(out, sizeof(out), q->msg, &q->q, q->rcode ? q->rcode : DNS_RCODE_SERVFAIL);
	to_child(s, out, n);
	q->rec.bytes_down = n;
	q->rec.pkts_down = 1;
	if (!q->rcode)   /* a resolver that answered SERVFAIL or REFUSED did answer */
		dns_all_failed(f, err == ETIMEDOUT ? "timed out" : strerror(err));
	query_done(f, s, q, err == ETIMEDOUT ? FLOW_UP_TIMEOUT : FLOW_UP_FAILED, err);
}

static void set_interest(struct dns_fwd *f, int fd, uint32_t *have, uint32_t want, struct dns_ev *ev)
{
	struct epoll_event e = { .events = want, .data.ptr = ev };

	if (fd < 0 || *have == want)
		return;
	if (epoll_ctl(f->epfd, EPOLL_CTL_MOD, fd, &e) == 0)
		*have = want;
}

/* What each socket should be watched for now (level-triggered: only what can be acted on). */
static void arm(struct dns_fwd *f, struct dns_tcp *s)
{
	uint32_t cw = 0, uw = 0;

	if (!s->child_eof && s->n_q < DNS_TCP_PIPELINE && s->out_c.len <= DNS_TCP_OUT_MAX)
		cw |= EPOLLIN;
	if (s->out_c.len)
		cw |= EPOLLOUT;
	if (s->ufd >= 0) {
		if (s->connecting || s->out_u.len)
			uw |= EPOLLOUT;
		if (!s->connecting && s->out_c.len <= DNS_TCP_OUT_MAX)
			uw |= EPOLLIN;
	}
	set_interest(f, s->cfd, &s->cwant, cw, &s->ev_child);
	set_interest(f, s->ufd, &s->uwant, uw, &s->ev_up);
}

static void up_close(struct dns_fwd *f, struct dns_tcp *s)
{
	if (s->ufd >= 0) {
		if (f->hub && f->hub->tap)
			flow_tap_sock(f->hub, s->ufd, SOCK_STREAM, false);
		close(s->ufd);
	}
	s->ufd = -1;
	s->uwant = 0;
	s->connecting = false;
	s->uin_len = 0;
	s->out_u.len = 0;
}

static void sess_free(struct dns_tcp *s)
{
	free(s->uin);
	free(s->out_c.p);
	free(s->out_u.p);
	free(s);
}

/* End @s: its queries, its fds; its memory waits for dns_tcp_free_dead() (see relay/service.h). */
static void sess_close(struct dns_fwd *f, struct dns_tcp *s, enum flow_outcome o, int err)
{
	while (s->qs)
		query_done(f, s, s->qs, o, err);
	up_close(f, s);
	close(s->cfd);
	s->cfd = -1;
	if (s->prev)
		s->prev->next = s->next;
	else
		f->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	f->n_tcp--;
	s->closed = true;
	s->prev = NULL;
	s->next = f->dead;
	f->dead = s;
}

void dns_tcp_free_dead(struct dns_fwd *f)
{
	while (f->dead) {
		struct dns_tcp *s = f->dead;

		f->dead = s->next;
		sess_free(s);
	}
}

static bool sess_finished(const struct dns_tcp *s)
{
	return s->child_eof && !s->n_q && !s->out_c.len;
}

/* Frame @q for the upstream connection, with its try's deadline. */
static void queue_up(struct dns_fwd *f, struct dns_tcp *s, struct dns_query *q)
{
	uint8_t hdr[2] = { (uint8_t)(q->len >> 8), (uint8_t)q->len };

	sbuf_add(&s->out_u, hdr, 2, q->msg, q->len);   /* room for DNS_TCP_PIPELINE queries */
	q->try_deadline = f->now + f->per_try_ms < q->deadline ? f->now + f->per_try_ms : q->deadline;
	dns_heap_update(f, q);
}

/*
 * up_connect() - open the connection to the nameserver of the session's try number; one that fails
 * at once moves to the next.  After the last try, every outstanding query gets SERVFAIL.
 */
static void up_connect(struct dns_fwd *f, struct dns_tcp *s, int err)
{
	while (s->qs && s->tries < dns_max_tries(f)) {
		const struct sockaddr_storage *ns = &f->ns[(s->ns_first + s->tries) % (unsigned int)f->n_ns];
		struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = &s->ev_up };
		int fd = egress_socket(&f->egress, ns, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		if (fd == -ENETUNREACH) {   /* --iface is gone: try the next nameserver */
			err = ENETUNREACH;
			s->tries++;
			continue;
		}
		if (fd < 0) {
			err = -fd;
			break;   /* out of fds: another nameserver would not help */
		}
		if ((connect(fd, (const struct sockaddr *)ns, ns->ss_family == AF_INET ?
			     sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) < 0 &&
		     errno != EINPROGRESS) || epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			err = errno;
			close(fd);
			s->tries++;
			continue;
		}
		s->ufd = fd;
		if (f->hub && f->hub->tap)
			flow_tap_sock(f->hub, fd, SOCK_STREAM, true);
		s->uwant = EPOLLOUT;
		s->connecting = true;
		return;
	}
	while (s->qs)
		query_servfail(f, s, s->qs, err);
}

/* The upstream connection failed (@err): the outstanding queries go to the next nameserver. */
static void failover(struct dns_fwd *f, struct dns_tcp *s, int err)
{
	up_close(f, s);
	s->tries++;
	for (struct dns_query *q = s->qs, *next; q; q = next) {
		next = q->snext;
		if (s->tries >= dns_max_tries(f) || f->now >= q->deadline)
			query_servfail(f, s, q, err);
		else
			queue_up(f, s, q);
	}
	up_connect(f, s, err);
}

void dns_tcp_timeout(struct dns_fwd *f, struct dns_query *q)
{
	struct dns_tcp *s = q->sess;

	failover(f, s, ETIMEDOUT);
	arm(f, s);
}

/* One framed query from the child.  Return: false when the session cannot take it now. */
static bool child_frame(struct dns_fwd *f, struct dns_tcp *s, const uint8_t *msg, size_t len)
{
	struct dns_question qn;
	enum dns_verdict v = dns_check_query(msg, len, &qn);
	struct dns_query *q;
	uint16_t id = 0;

	if (v == DNS_DROP) {
		f->dropped++;
		return true;
	}
	if (v != DNS_FORWARD) {
		uint8_t out[DNS_HDR];
		size_t n = dns_build_error(out, sizeof(out), msg, NULL,
					   v == DNS_NOTIMP ? DNS_RCODE_NOTIMP : DNS_RCODE_FORMERR);

		f->formerr++;
		to_child(s, out, n);
		dns_record_at_once(f, &s->child, &s->dst, "dns: malformed query", FLOW_DENIED, EBADMSG);
		return true;
	}
	if (s->n_q >= DNS_TCP_PIPELINE)
		return false;
	q = dns_query_new(f, msg, len, &qn, &s->child, &s->dst);
	if (!q) {
		uint8_t out[DNS_HDR + DNS_WIRE_NAME_MAX + 4];
		size_t n = dns_build_error(out, sizeof(out), msg, &qn, DNS_RCODE_SERVFAIL);

		to_child(s, out, n);
		dns_record_at_once(f, &s->child, &s->dst, "dns: too many queries outstanding",
				   FLOW_NO_RESOURCES, ENOBUFS);
		return true;
	}
	q->sess = s;
	for (bool clash = true; clash;) {
		id = dns_rand16(f);
		clash = false;
		for (const struct dns_query *o = s->qs; o; o = o->snext)
			clash |= o->up_id == id;
	}
	q->up_id = id;
	dns_set_id(q->msg, id);
	q->tries = s->tries;
	q->snext = s->qs;
	s->qs = q;
	s->n_q++;
	queue_up(f, s, q);
	if (s->ufd < 0)
		up_connect(f, s, ECONNREFUSED);
	return true;
}

/* Read and take the child's queries.  Return: false when the session was closed (freed). */
static bool child_readable(struct dns_fwd *f, struct dns_tcp *s)
{
	size_t fl;

	if (!s->child_eof && s->in_len < sizeof(s->in)) {
		ssize_t n = recv(s->cfd, s->in + s->in_len, sizeof(s->in) - s->in_len, MSG_DONTWAIT);

		if (n == 0)
			s->child_eof = true;
		else if (n > 0)
			s->in_len += (size_t)n;
		else if (errno != EAGAIN && errno != EINTR) {
			sess_close(f, s, FLOW_RESET_CHILD, errno);
			return false;
		}
	}
	while ((fl = dns_frame_len(s->in, s->in_len)) != 0) {
		if (!child_frame(f, s, s->in + 2, fl - 2))
			break;
		memmove(s->in, s->in + fl, s->in_len - fl);
		s->in_len -= fl;
	}
	/* A frame that cannot fit is not a query: end the session. */
	if (s->in_len >= 2 && ((size_t)s->in[0] << 8 | s->in[1]) > DNS_QUERY_MAX) {
		f->dropped++;
		sess_close(f, s, FLOW_RESET_CHILD, EMSGSIZE);
		return false;
	}
	if (s->child_eof && s->in_len && s->n_q < DNS_TCP_PIPELINE)
		s->in_len = 0;   /* a partial frame before EOF: never completes */
	return true;
}

/*
 * up_frames() - frames from upstream: answers to the session's queries go to the child.  An answer
 * SERVFAIL, REFUSED or NOTIMP with a try left (glibc's res_send moves on then, over TCP too) is kept
 * as that query's answer should no other nameserver give one, and the session fails over: the
 * connection is dropped and every outstanding query goes to the next nameserver, as on a reset.
 */
static void up_frames(struct dns_fwd *f, struct dns_tcp *s)
{
	size_t fl;

	while (s->out_c.len <= DNS_TCP_OUT_MAX && (fl = dns_frame_len(s->uin, s->uin_len)) != 0) {
		uint8_t *m = s->uin + 2;
		size_t len = fl - 2;

		if (len >= DNS_HDR) {
			for (struct dns_query *q = s->qs; q; q = q->snext) {
				if (q->up_id != dns_id(m))
					continue;
				if (dns_check_answer(m, len, &q->q, f->names, f->now) < 0)
					break;
				if (dns_rcode_moves_on(m) && s->tries + 1 < dns_max_tries(f) && f->now < q->deadline) {
					q->rcode = dns_rcode(m);
					failover(f, s, EPROTO);   /* drops s->uin: nothing more to read here */
					return;
				}
				dns_set_id(m, q->client_id);
				to_child(s, m, len);
				q->rec.bytes_down = len;
				q->rec.pkts_down = 1;
				query_done(f, s, q, FLOW_OK, 0);
				break;
			}
		}
		memmove(s->uin, s->uin + fl, s->uin_len - fl);
		s->uin_len -= fl;
	}
}

static void up_event(struct dns_fwd *f, struct dns_tcp *s, uint32_t events)
{
	if (s->connecting) {
		int err = 0;
		socklen_t l = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		if (getsockopt(s->ufd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
			err = errno;
		if (err) {
			failover(f, s, err);
			return;
		}
		s->connecting = false;
	}
	if (s->out_u.len) {
		int r = sbuf_flush(&s->out_u, s->ufd);

		if (r < 0) {
			failover(f, s, -r);
			return;
		}
	}
	if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && s->out_c.len <= DNS_TCP_OUT_MAX) {
		ssize_t n = recv(s->ufd, s->uin + s->uin_len, FRAME_MAX - s->uin_len, MSG_DONTWAIT);

		if (n > 0) {
			s->uin_len += (size_t)n;
			up_frames(f, s);
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			int err = n == 0 ? ECONNRESET : errno;

			if (s->qs) {
				failover(f, s, err);
			} else {
				up_close(f, s);   /* idle: made again when a query needs it */
			}
		}
	}
}

void dns_tcp_event(struct dns_fwd *f, struct dns_ev *ev, uint32_t events)
{
	struct dns_tcp *s = ev->kind == DEV_TCP_CHILD ? sess_of(ev, ev_child) : sess_of(ev, ev_up);

	if (s->closed)
		return;   /* closed by an earlier event of the same batch */
	s->last_ms = f->now;
	if (ev->kind == DEV_TCP_UP) {
		up_event(f, s, events);
	} else {
		if (events & EPOLLERR) {
			sess_close(f, s, FLOW_RESET_CHILD, ECONNRESET);
			return;
		}
		if ((events & (EPOLLIN | EPOLLHUP)) && !child_readable(f, s))
			return;
	}
	up_frames(f, s);
	if (s->out_c.len && sbuf_flush(&s->out_c, s->cfd) < 0) {
		sess_close(f, s, FLOW_RESET_CHILD, ECONNRESET);
		return;
	}
	/* Queries that waited for room in the pipeline. */
	if (s->in_len && s->n_q < DNS_TCP_PIPELINE && !child_readable(f, s))
		return;
	if (sess_finished(s)) {
		sess_close(f, s, FLOW_OK, 0);
		return;
	}
	arm(f, s);
}

void dns_tcp_adopt(struct dns_fwd *f, int fd, const struct sockaddr_storage *child,
		   const struct sockaddr_storage *dst)
{
	struct epoll_event ev;
	struct dns_tcp *s;

	if (f->n_tcp >= DNS_TCP_MAX) {
		/* Make room from the longest idle session, if one is idle. */
		struct dns_tcp *old = NULL;

		for (struct dns_tcp *t = f->sessions; t; t = t->next)
			if (!t->n_q && (!old || t->last_ms < old->last_ms))
				old = t;
		if (old)
			sess_close(f, old, FLOW_EVICTED, 0);
	}
	s = f->n_tcp < DNS_TCP_MAX ? calloc(1, sizeof(*s)) : NULL;
	if (s) {
		s->uin = malloc(FRAME_MAX);
		s->out_c.cap = DNS_TCP_OUT_MAX + FRAME_MAX + (size_t)DNS_TCP_PIPELINE * (DNS_HDR + DNS_WIRE_NAME_MAX + 6);
		s->out_c.p = malloc(s->out_c.cap);
		s->out_u.cap = UP_OUT_MAX;
		s->out_u.p = malloc(s->out_u.cap);
	}
	if (!s || !s->uin || !s->out_c.p || !s->out_u.p) {
		if (s)
			sess_free(s);
		dns_record_at_once(f, child, dst, "dns: too many TCP sessions", FLOW_NO_RESOURCES, ENOBUFS);
		close(fd);
		return;
	}
	dns_ev_init(f, &s->ev_child, DEV_TCP_CHILD, 0);
	dns_ev_init(f, &s->ev_up, DEV_TCP_UP, 0);
	s->cfd = fd;
	s->ufd = -1;
	s->ns_first = dns_first_ns(f);
	s->child = *child;
	s->dst = *dst;
	s->last_ms = f->now;
	s->cwant = EPOLLIN;
	ev = (struct epoll_event){ .events = EPOLLIN, .data.ptr = &s->ev_child };
	if (epoll_ctl(f->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;

		sess_free(s);
		dns_record_at_once(f, child, dst, "dns: cannot watch a TCP session", FLOW_NO_RESOURCES, e);
		close(fd);
		return;
	}
	s->next = f->sessions;
	if (f->sessions)
		f->sessions->prev = s;
	f->sessions = s;
	f->n_tcp++;
}

void dns_tcp_sweep(struct dns_fwd *f)
{
	for (struct dns_tcp *s = f->sessions, *next; s; s = next) {
		next = s->next;
		if (!s->n_q && f->now - s->last_ms >= DNS_TCP_IDLE_MS)
			sess_close(f, s, FLOW_OK, 0);
	}
}

void dns_tcp_close_all(struct dns_fwd *f)
{
	for (struct dns_tcp *s = f->sessions, *next; s; s = next) {
		next = s->next;
		sess_close(f, s, FLOW_CUT_AT_EXIT, 0);
	}
}
