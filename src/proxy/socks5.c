// SPDX-License-Identifier: MIT
/*
 * proxy/socks5 — the socks5:// route (RFC 1928), with username/password authentication (RFC 1929).
 *
 * States (struct pconn.phase; c->next is the reply a PH_SEND waits for):
 *   PH_DIAL       TCP connect to the proxy (its addresses in turn: proxy_dial())
 *   PH_SEND       greeting (method 0, or method 2 alone with credentials), RFC 1929 request, or
 *                 CONNECT (address type 3, the name, when the child used one; else 1 or 4)
 *   PH_S5_METHOD  the method reply (2 bytes)
 *   PH_S5_AUTH    the RFC 1929 status (2 bytes)
 *   PH_S5_REPLY   the CONNECT reply, consumed exactly (its length depends on its address type)
 *   -> READY (the fd is spliced), or FAILED (told once per cause).
 * Pipelined (struct proxy_learnt), PH_SEND sends the greeting, the RFC 1929 request and the CONNECT
 * at once, and the three replies are read in turn.  The start-up probe goes step by step and stops
 * once the proxy took the greeting and, with credentials, the credentials (so a refusal is told at
 * start, whatever the proxy); then a second probe (s5_again()) tries the pipelined handshake with a
 * CONNECT to 0.0.0.0:0.  Connections pipeline once that got its answer, and wait for each reply
 * before (and for good when its handshake stalled after the method reply, or was cut there).
 */
#include "proxy/internal.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* The CONNECT of the flow, or the probe's to 0.0.0.0:0 (nothing listens there, so no proxy connects
 * anywhere; any reply says the handshake went through).  Return: its length, or -EINVAL. */
static int connect_request(const struct pconn *c, uint8_t *buf, size_t len)
{
	struct sockaddr_in none = { .sin_family = AF_INET };

	if (c->probe)
		return socks5_connect_request(buf, len, (const struct sockaddr *)&none, NULL);
	return socks5_connect_request(buf, len, &c->dst.sa, c->name);
}

/* Build the request that c->next waits for; pipelined, the greeting is followed by the RFC 1929
 * request (with credentials) and the CONNECT.  Return: its length, or -EINVAL. */
static int build(const struct pconn *c, uint8_t *buf, size_t len)
{
	int n, k;

	switch (c->next) {
	case PH_S5_METHOD:
		n = (int)socks5_greeting(buf, c->px->auth);
		if (!c->pipelined)
			return n;
		if (c->px->auth) {
			if ((k = socks5_auth_request(buf + n, len - (size_t)n, c->px->user, c->px->pass)) < 0)
				return k;
			n += k;
		}
		return (k = connect_request(c, buf + n, len - (size_t)n)) < 0 ? k : n + k;
	case PH_S5_AUTH:
		return socks5_auth_request(buf, len, c->px->user, c->px->pass);
	default:
		return connect_request(c, buf, len);
	}
}

/* Return: 0 sent, EAGAIN, or the child's errno. */
static int send_request(struct pconn *c, int fd)
{
	uint8_t req[2 * SOCKS5_REQ_MAX];   /* pipelined: greeting, RFC 1929 request and CONNECT */
	int len = build(c, req, sizeof(req));

	if (len < 0)
		return EINVAL;
	while (c->sent < (size_t)len) {
		ssize_t n = send(fd, req + c->sent, (size_t)len - c->sent, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return EAGAIN;
			proxy_tell(c->px, CAUSE_CLOSED, errno, "closed the connection: %s", strerror(errno));
			return ENETUNREACH;
		}
		c->sent += (size_t)n;
	}
	explicit_bzero(req, sizeof(req));
	c->sent = 0;
	return 0;
}

/*
 * read_reply() - read the reply until it has @need bytes, never more: what follows belongs to the
 * child.  (Read, not peeked: a reply that stops half-way must not leave the socket readable.)
 * Return: 0 when it has them, EAGAIN, or the child's errno (the proxy closed; told).
 */
/* A step-by-step probe went through (greeting and, with credentials, the credentials): the
 * pipelined trial may follow (s5_again()).  Return: PH_DONE. */
static enum proxy_phase probe_through(struct pconn *c)
{
	if (c->px->learnt->s5_pipe == PIPE_UNKNOWN)
		c->px->learnt->s5_pipe = PIPE_TRIAL;
	return PH_DONE;
}

static int read_reply(struct pconn *c, int fd, size_t need)
{
	while (c->u.s5.len < need) {
		ssize_t n = recv(fd, c->u.s5.buf + c->u.s5.len, need - c->u.s5.len, MSG_DONTWAIT);

		if (n > 0) {
			c->u.s5.len = (uint16_t)(c->u.s5.len + n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return EAGAIN;
		if (c->probe && c->pipelined && c->phase != PH_S5_METHOD) {
			/* It answered the greeting, then closed on what followed it. */
			proxy_no_pipelining(c->px);
			return ENETUNREACH;
		}
		proxy_tell(c->px, CAUSE_CLOSED, n < 0 ? errno : 0, "closed the connection during the SOCKS5 "
			   "handshake%s%s", n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
		return ENETUNREACH;
	}
	return 0;
}

/* The method reply.  Return: 0 (next state set), EAGAIN, or the child's errno. */
static int on_method(struct pconn *c, int fd)
{
	int r = read_reply(c, fd, 2), m;

	if (r)
		return r;
	c->u.s5.len = 0;
	m = socks5_method(c->u.s5.buf);
	if (m < 0) {
		proxy_tell(c->px, CAUSE_PROTOCOL, 0, "is not a SOCKS5 proxy (greeting answered with version "
			   "0x%02x)", c->u.s5.buf[0]);
		return ENETUNREACH;
	}
	if (m == SOCKS5_USERPASS && c->px->auth) {
		c->phase = c->pipelined ? PH_S5_AUTH : PH_SEND;   /* pipelined: sent already */
		c->next = PH_S5_AUTH;
		return 0;
	}
	if (m == SOCKS5_NO_AUTH && !c->px->auth) {
		c->phase = c->pipelined ? PH_S5_REPLY : c->probe ? probe_through(c) : PH_SEND;
		c->next = PH_S5_REPLY;
		return 0;
	}
	if (!c->px->auth)
		proxy_tell(c->px, CAUSE_CREDENTIALS, 1, "requires authentication (SOCKS5 method 0x%02x): give "
			   "--proxy-user and --proxy-password", m);
	else
		proxy_tell(c->px, CAUSE_AUTH_METHOD, m, "does not accept username/password authentication "
			   "(SOCKS5 method 0x%02x)", m);
	return ENETUNREACH;
}

static int on_auth(struct pconn *c, int fd)
{
	int r = read_reply(c, fd, 2), s;

	if (r)
		return r;
	c->u.s5.len = 0;
	s = socks5_auth_status(c->u.s5.buf);
	if (s == -EPROTO) {
		proxy_tell(c->px, CAUSE_PROTOCOL, 1, "sent a malformed SOCKS5 authentication reply");
		return ENETUNREACH;
	}
	if (s < 0) {
		proxy_tell(c->px, CAUSE_CREDENTIALS, 0, "rejected the credentials (SOCKS5 username/password)");
		return ENETUNREACH;
	}
	if (c->probe)
		proxy_tell(c->px, CAUSE_OK, 0, "took the credentials (probe)");
	c->phase = c->pipelined ? PH_S5_REPLY : c->probe ? probe_through(c) : PH_SEND;
	c->next = PH_S5_REPLY;
	return 0;
}

static int on_reply(struct pconn *c, int fd)
{
	int rep = 0, total, r;

	/* Five bytes tell the length (the address type, and a name's length byte). */
	while ((total = socks5_reply(c->u.s5.buf, c->u.s5.len, &rep)) == 0) {
		size_t need = c->u.s5.len < 5 ? 5 : (size_t)c->u.s5.len + 1;

		if (c->u.s5.len >= 5) {
			/* The length is known: read exactly up to it. */
			need = c->u.s5.buf[3] == 1 ? 10 : c->u.s5.buf[3] == 4 ? 22 : 7u + c->u.s5.buf[4];
		}
		if ((r = read_reply(c, fd, need)) != 0)
			return r;
	}
	if (total < 0) {
		proxy_tell(c->px, CAUSE_PROTOCOL, 2, "sent a malformed SOCKS5 CONNECT reply");
		return ENETUNREACH;
	}
	if (c->probe) {
		/* The probe's CONNECT: any answer will do; it came after the whole handshake was sent
		 * at once. */
		c->px->learnt->s5_pipe = PIPE_YES;
		proxy_tell(c->px, CAUSE_OK, 4, "takes a pipelined SOCKS5 handshake (probe answered 0x%02x)", rep);
		c->phase = PH_DONE;
		return 0;
	}
	if (rep != 0) {
		proxy_tell(c->px, CAUSE_REFUSED, rep, "refused a CONNECT: SOCKS5 reply 0x%02x (%s)", rep,
			   socks5_rep_str(rep));
		return socks5_rep_errno(rep);
	}
	c->phase = PH_DONE;
	return 0;
}

static enum conn_step s5_start(void *st, const void *cfg, const struct conn_req *rq, int *fd,
			       uint32_t *want, int *err)
{
	struct pconn *c = st;
	const struct proxy *px = cfg;

	/* The second probe tries the pipelined handshake; connections use it once it worked. */
	c->pipelined = px->learnt->s5_pipe == PIPE_YES || (rq->probe && px->learnt->s5_pipe == PIPE_TRYING);
	return proxy_dial(st, cfg, rq, fd, want, err);
}

static enum conn_step s5_step(void *st, int fd, uint32_t events, uint32_t *want, int *err)
{
	struct pconn *c = st;
	int r;

	*want = PROXY_WANT;
	for (;;) {
		switch (c->phase) {
		case PH_DIAL:
			if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
				return CONN_MORE;
			if ((r = proxy_dial_done(c, fd, err)) == PROXY_REDIAL)
				return CONN_REDIAL;
			c->phase = PH_SEND;
			c->next = PH_S5_METHOD;
			break;
		case PH_SEND:
			r = send_request(c, fd);
			if (r == 0)
				c->phase = c->next;
			break;
		case PH_S5_METHOD:
			r = on_method(c, fd);
			break;
		case PH_S5_AUTH:
			r = on_auth(c, fd);
			break;
		case PH_S5_REPLY:
			r = on_reply(c, fd);
			break;
		default:
			return CONN_READY;
		}
		if (r == EAGAIN)
			return CONN_MORE;
		if (r != 0) {
			*err = r;
			return CONN_FAILED;
		}
	}
}

/* After a probe went through step by step: once, a second probe for the pipelined handshake. */
static bool s5_again(const void *cfg)
{
	const struct proxy *px = cfg;

	if (px->learnt->s5_pipe != PIPE_TRIAL)
		return false;
	px->learnt->s5_pipe = PIPE_TRYING;
	return true;
}

const struct connector_ops proxy_socks5_ops = {
	.name = "proxy-socks5",
	.state_size = sizeof(struct pconn),
	.timeout_ms = PROXY_TIMEOUT_MS_DEFAULT,
	.stream = NULL,
	.start = s5_start,
	.step = s5_step,
	.abort = proxy_abort,
	.again = s5_again,
};
