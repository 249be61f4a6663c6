// SPDX-License-Identifier: MIT
/*
 * proxy/http — the http:// and https:// routes: HTTP CONNECT, over TLS to the proxy for https.
 *
 * States (struct pconn.phase):
 *   PH_DIAL   TCP connect to the proxy (EPOLLOUT), its addresses in turn (proxy_dial())
 *   PH_TLS    https: TLS handshake; the certificate must be valid for the URI's host name or IP
 *             (SNI for names); --proxy-insecure accepts an untrusted chain, never another host
 *   PH_SEND   "CONNECT name:port" (or the address) with Basic credentials, sent from c->sent on
 *   PH_REPLY  the reply's header block, peeked and consumed exactly up to its blank line: what the
 *             proxy sends after it is the destination's and stays for the child
 *   -> READY on 2xx (http: the fd is spliced; https: the TLS stream below carries the flow),
 *      FAILED otherwise (told once per cause).
 * A probe stops after TLS when it has no credentials to check, else asks for CONNECT 0.0.0.0:0 (an
 * address nothing listens on, so no proxy connects anywhere): 407 says the credentials are wrong,
 * any other answer that they were taken.
 */
#include "proxy/internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define PEEK_CHUNK 2048

/* ---------- I/O over the socket or TLS (socket semantics: -1 with errno EAGAIN, ...) ---------- */

/* After an SSL call returned @r <= 0: set errno as a socket would.  Return: -1, or 0 at EOF. */
static ssize_t tls_result(SSL *ssl, int r)
{
	int e = SSL_get_error(ssl, r);

	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0)
			errno = ECONNRESET;
		return -1;
	default:
		errno = EPROTO;
		return -1;
	}
}

static ssize_t io_peek(struct pconn *c, int fd, void *buf, size_t len)
{
	if (c->ssl) {
		int r;

		ERR_clear_error();
		r = SSL_peek(c->ssl, buf, (int)len);
		return r > 0 ? r : tls_result(c->ssl, r);
	}
	return recv(fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
}

/* Drop @n bytes just peeked. */
static void io_consume(struct pconn *c, int fd, size_t n)
{
	char sink[PEEK_CHUNK];

	while (n > 0) {
		size_t k = n < sizeof(sink) ? n : sizeof(sink);
		ssize_t got;

		if (c->ssl) {
			ERR_clear_error();
			got = SSL_read(c->ssl, sink, (int)k);
		} else {
			got = recv(fd, NULL, k, MSG_TRUNC | MSG_DONTWAIT);
		}
		if (got <= 0)
			return;   /* cannot happen for bytes already peeked */
		n -= (size_t)got;
	}
}

static ssize_t io_send(struct pconn *c, int fd, const void *buf, size_t len)
{
	if (c->ssl) {
		int r;

		ERR_clear_error();
		r = SSL_write(c->ssl, buf, (int)len);
		if (r > 0)
			return r;
		r = (int)tls_result(c->ssl, r);
		if (r == 0)
			errno = EPIPE;
		return -1;
	}
	return send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* ---------- TLS ---------- */

/* --proxy-insecure: accept any trust-chain error, but never a certificate for another host. */
static int insecure_verify(int ok, X509_STORE_CTX *store)
{
	int e = X509_STORE_CTX_get_error(store);

	if (ok)
		return 1;
	return e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH ? 0 : 1;
}

/* The session of a verified connection joins the pool (the oldest goes when it is full). */
static void keep_session(struct pconn *c)
{
	struct proxy_resume *rs = c->px->resume;

	if (!c->fresh)
		return;
	if (!SSL_SESSION_is_resumable(c->fresh)) {
		SSL_SESSION_free(c->fresh);
	} else {
		if (rs->n == PROXY_RESUME_MAX) {
			SSL_SESSION_free(rs->sess[0]);
			for (unsigned int i = 1; i < rs->n; i++)
				rs->sess[i - 1] = rs->sess[i];
			rs->n--;
		}
		rs->sess[rs->n++] = c->fresh;
	}
	c->fresh = NULL;
}

void proxy_resume_clear(struct proxy_resume *rs)
{
	while (rs->n)
		SSL_SESSION_free(rs->sess[--rs->n]);
}

/*
 * offer_session() - offer the newest resumable session of the pool to @ssl; a TLS 1.3 one is taken
 * out.  Sessions that became unresumable while pooled go (OpenSSL marks the last session of a
 * connection freed without close_notify, e.g. a flow the child reset).  Return: 0 or ENOMEM.
 */
static int offer_session(struct proxy_resume *rs, SSL *ssl)
{
	SSL_SESSION *s;

	while (rs->n && !SSL_SESSION_is_resumable(rs->sess[rs->n - 1]))
		SSL_SESSION_free(rs->sess[--rs->n]);
	if (!rs->n)
		return 0;
	s = rs->sess[rs->n - 1];
	if (!SSL_set_session(ssl, s))
		return ENOMEM;
	if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
		rs->n--;
		SSL_SESSION_free(s);   /* @ssl holds its own reference */
	}
	return 0;
}

int proxy_tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct pconn *c = SSL_get_app_data(ssl);

	if (!c) {
		SSL_SESSION_free(sess);
		return 1;
	}
	/* TLS 1.2 gives the session inside the handshake, before tls_step() has checked the peer. */
	SSL_SESSION_free(c->fresh);
	c->fresh = sess;
	if (c->verified)
		keep_session(c);
	return 1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A TLS client for @px: SNI, the name or IP the certificate must be valid for, a session of the
 * pool to resume.  Return: it (no BIO yet), or NULL. */
static SSL *tls_new(const struct proxy *px)
{
	SSL *s = SSL_new(px->tls);

	if (!s || offer_session(px->resume, s))
		goto fail;
	if (px->host_is_ip) {
		if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), px->host))
			goto fail;
	} else if (!SSL_set_tlsext_host_name(s, px->host) || !SSL_set1_host(s, px->host)) {
		goto fail;
	}
	if (px->insecure)
		SSL_set_verify(s, SSL_VERIFY_PEER, insecure_verify);
	SSL_set_connect_state(s);
	return s;
fail:
	SSL_free(s);
	return NULL;
}

void proxy_tls_spare_drop(struct proxy_resume *rs)
{
	SSL_free(rs->spare);
	rs->spare = NULL;
}

/*
 * tls_prepare() - build the next connection's ClientHello now (its random and key share are its
 * own, computed here instead of after that connection's TCP handshake), into a memory BIO.  Called
 * while a connection waits for the proxy's reply, when P would be idle.  The ticket it offers has
 * left the pool, so no other handshake shows it.  Best effort.
 */
static void tls_prepare(const struct proxy *px)
{
	struct proxy_resume *rs = px->resume;
	BIO *r, *w;
	SSL *s;
	int ret;

	if (rs->spare || !(s = tls_new(px)))
		return;
	r = BIO_new(BIO_s_mem());
	w = BIO_new(BIO_s_mem());
	if (!r || !w) {
		BIO_free(r);
		BIO_free(w);
		SSL_free(s);
		return;
	}
	SSL_set_bio(s, r, w);
	ERR_clear_error();
	ret = SSL_connect(s);
	if (ret != -1 || SSL_get_error(s, ret) != SSL_ERROR_WANT_READ || BIO_pending(w) <= 0) {
		ERR_clear_error();
		SSL_free(s);
		return;
	}
	rs->spare = s;
	rs->spare_ms = mono_ms();
	rs->spare_psk = SSL_get_session(s) && SSL_SESSION_is_resumable(SSL_get_session(s));
}

/*
 * take_spare() - the prepared client, its ClientHello sent on @fd, now reading and writing @fd.
 * Not taken (NULL): none, too old (TLS_SPARE_MAX_MS), or built without a session when the pool
 * has one now (a full handshake where a resumed one is possible).
 */
static SSL *take_spare(const struct proxy *px, int fd)
{
	struct proxy_resume *rs = px->resume;
	SSL *s = rs->spare;
	char *hello;
	long n;

	if (!s)
		return NULL;
	rs->spare = NULL;
	n = BIO_get_mem_data(SSL_get_wbio(s), &hello);
	if (mono_ms() - rs->spare_ms > TLS_SPARE_MAX_MS || (!rs->spare_psk && rs->n) || n <= 0 ||
	    send(fd, hello, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) != n || !SSL_set_fd(s, fd)) {
		/* A fresh connection's empty send buffer (tcp_wmem's minimum is 4 KiB) takes the whole
		 * hello at once; anything else (an error) drops the spare and the fd gets a new client. */
		SSL_free(s);
		return NULL;
	}
	return s;
}

static int tls_begin(struct pconn *c, int fd)
{
	const struct proxy *px = c->px;

	c->ssl = take_spare(px, fd);
	if (c->ssl)
		proxy_tell(px, CAUSE_OK, 5, "sent a TLS ClientHello prepared ahead (key share not computed on "
			   "the connection's path)");
	else if (!(c->ssl = tls_new(px)) || !SSL_set_fd(c->ssl, fd))
		return ENOMEM;
	if (!SSL_set_app_data(c->ssl, c))
		return ENOMEM;
	return 0;
}

/* The handshake failed: tell why.  Return: the child's errno. */
static int tls_failed(struct pconn *c, int r)
{
	const struct proxy *px = c->px;
	long v = SSL_get_verify_result(c->ssl);
	unsigned long e = ERR_peek_error();

	/* The next handshake starts afresh (and verifies the certificate again). */
	proxy_resume_clear(px->resume);
	proxy_tls_spare_drop(px->resume);

	if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
		proxy_tell(px, CAUSE_TLS, (int)v, "presented a TLS certificate that is not valid for %s "
			   "(refused, also with --proxy-insecure)", px->host);
	else if (v != X509_V_OK)
		proxy_tell(px, CAUSE_TLS, (int)v, "presented a TLS certificate that is not trusted: %s "
			   "(trust its CA, e.g. with SSL_CERT_FILE, or use --proxy-insecure)",
			   X509_verify_cert_error_string(v));
	else if (e)
		proxy_tell(px, CAUSE_TLS, 100000 + ERR_GET_REASON(e), "failed the TLS handshake: %s",
			   ERR_reason_error_string(e));
	else
		proxy_tell(px, CAUSE_CLOSED, errno, "closed the connection during the TLS handshake%s%s",
			   r < 0 && errno ? ": " : "", r < 0 && errno ? strerror(errno) : "");
	return ENETUNREACH;
}

/* In insecure mode the chain was not required to verify: check the name ourselves as well. */
static bool tls_peer_is_host(struct pconn *c)
{
	const struct proxy *px = c->px;
	X509 *cert = SSL_get1_peer_certificate(c->ssl);
	bool ok;

	if (!cert)
		return false;
	ok = px->host_is_ip ? X509_check_ip_asc(cert, px->host, 0) == 1
			    : X509_check_host(cert, px->host, strlen(px->host), 0, NULL) == 1;
	X509_free(cert);
	return ok;
}

/* Return: 0 done, EAGAIN, or the child's errno. */
static int tls_step(struct pconn *c)
{
	bool ktls_send, ktls_recv;
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_connect(c->ssl);
	if (r != 1) {
		int e = SSL_get_error(c->ssl, r);

		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			return EAGAIN;
		return tls_failed(c, r);
	}
	if (!tls_peer_is_host(c)) {
		proxy_tell(c->px, CAUSE_TLS, X509_V_ERR_HOSTNAME_MISMATCH, "presented a TLS certificate that "
			   "is not valid for %s (refused, also with --proxy-insecure)", c->px->host);
		return ENETUNREACH;
	}
	c->verified = true;
	keep_session(c);
	ktls_send = BIO_get_ktls_send(SSL_get_wbio(c->ssl)) != 0;
	ktls_recv = BIO_get_ktls_recv(SSL_get_rbio(c->ssl)) != 0;
	proxy_tell(c->px, CAUSE_OK, 1, "TLS %s, kernel TLS: send %s, receive %s", SSL_get_version(c->ssl),
		   ktls_send ? "on" : "off", ktls_recv ? "on" : "off");
	/* The kernel has the ULP but not this cipher (or OpenSSL lacks the support): the next
	 * connections, with the same proxy and cipher, would fail the same way; stop asking. */
	if (!ktls_send && !ktls_recv && (SSL_CTX_get_options(c->px->tls) & SSL_OP_ENABLE_KTLS))
		SSL_CTX_clear_options(c->px->tls, SSL_OP_ENABLE_KTLS);
	if (SSL_session_reused(c->ssl))
		proxy_tell(c->px, CAUSE_OK, 3, "resumed a TLS session (no certificate exchange)");
	return 0;
}

/* ---------- CONNECT ---------- */

/* A copy of the proxy's status line fit for a terminal. */
static void printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

/* The reply's header block is complete: judge its status.  Return: 0 (READY), or the child's errno. */
static int judge_reply(struct pconn *c)
{
	const struct proxy *px = c->px;
	int code = http_status(c->u.hr.line);

	printable(c->u.hr.line);
	if (code < 0) {
		proxy_tell(px, CAUSE_PROTOCOL, 0, "sent a malformed reply to CONNECT: \"%s\"", c->u.hr.line);
		return ENETUNREACH;
	}
	/* 407 is the standard answer; tinyproxy says 401 to a CONNECT. */
	if (code == 407 || code == 401) {
		if (px->auth)
			proxy_tell(px, CAUSE_CREDENTIALS, 0, "rejected the credentials (%d)", code);
		else
			proxy_tell(px, CAUSE_CREDENTIALS, 1, "requires credentials (%d): give them with "
				   "--proxy-user and --proxy-password", code);
		return ENETUNREACH;
	}
	if (c->probe) {
		proxy_tell(px, CAUSE_OK, 0, "took the credentials (probe answered %d)", code);
		return 0;
	}
	if (code >= 200 && code < 300)
		return 0;
	proxy_tell(px, CAUSE_REFUSED, code, "refused a CONNECT: \"%s\"", c->u.hr.line);
	return http_status_errno(code);
}

/* Send the CONNECT request from c->sent on.  Return: 0 sent, EAGAIN, or the child's errno. */
static int send_request(struct pconn *c, int fd)
{
	char auth[PROXY_AUTHORITY_MAX], req[PROXY_REQ_MAX];
	int len;

	if (c->probe)
		len = proxy_http_request(req, sizeof(req), "0.0.0.0:0", c->px->basic);
	else if (proxy_authority(auth, sizeof(auth), &c->dst.sa, c->name) < 0 ||
		 (len = proxy_http_request(req, sizeof(req), auth, c->px->auth ? c->px->basic : NULL)) < 0)
		return EINVAL;
	while (c->sent < (size_t)len) {
		ssize_t n = io_send(c, fd, req + c->sent, (size_t)len - c->sent);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return EAGAIN;
			proxy_tell(c->px, CAUSE_CLOSED, errno, "closed the connection: %s", strerror(errno));
			return ENETUNREACH;
		}
		c->sent += (size_t)n;
	}
	explicit_bzero(req, sizeof(req));
	return 0;
}

/* Read the reply's header block.  Return: 0 (READY), EAGAIN, or the child's errno. */
static int read_reply(struct pconn *c, int fd)
{
	char buf[PEEK_CHUNK];

	for (;;) {
		bool done;
		ssize_t n = io_peek(c, fd, buf, sizeof(buf));
		size_t k;

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return EAGAIN;
		if (n <= 0) {
			int e = n == 0 ? 0 : errno;

			proxy_tell(c->px, CAUSE_CLOSED, e, "closed the connection before answering CONNECT%s%s",
				   e ? ": " : "", e ? strerror(e) : "");
			return ENETUNREACH;
		}
		k = http_reader_feed(&c->u.hr, buf, (size_t)n, &done);
		io_consume(c, fd, k);
		if (done)
			return judge_reply(c);
		if (c->u.hr.total > PROXY_HDR_MAX) {
			proxy_tell(c->px, CAUSE_PROTOCOL, 1, "sent a reply to CONNECT longer than %d bytes",
				   PROXY_HDR_MAX);
			return ENETUNREACH;
		}
	}
}

static enum conn_step http_start(void *st, const void *cfg, const struct conn_req *rq, int *fd,
				 uint32_t *want, int *err)
{
	return proxy_dial(st, cfg, rq, fd, want, err);
}

/*
 * tls_want() - what to watch while a phase waits.  Plain http: both ways (PROXY_WANT).  TLS: only
 * the way OpenSSL waits for.  With both, the socket reported writable on its own after the
 * handshake's last flight and the CONNECT request (2 TLS writes): strace of P, 49 connections
 * through stunnel, read 7.1 reads (3.4 of them EAGAIN) and 7.1 epoll_wait per connection against
 * 3.7 and 4.8 when following OpenSSL, more than the one epoll_ctl() saved.
 */
static uint32_t tls_want(const struct pconn *c)
{
	if (!c->ssl)
		return PROXY_WANT;
	return SSL_want_write(c->ssl) ? EPOLLOUT : EPOLLIN;
}

static enum conn_step http_step(void *st, int fd, uint32_t events, uint32_t *want, int *err)
{
	struct pconn *c = st;
	int r = 0;

	for (;;) {
		switch (c->phase) {
		case PH_DIAL:
			if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
				*want = PROXY_WANT;
				return CONN_MORE;
			}
			if ((r = proxy_dial_done(c, fd, err)) == PROXY_REDIAL)
				return CONN_REDIAL;
			if (r != 0)
				break;
			if (c->px->kind == PROXY_KIND_HTTPS) {
				if ((r = tls_begin(c, fd)) != 0)
					break;
				c->phase = PH_TLS;
			} else {
				c->phase = c->probe && !c->px->auth ? PH_DONE : PH_SEND;
			}
			continue;
		case PH_TLS:
			if ((r = tls_step(c)) != 0)
				break;
			c->phase = c->probe && !c->px->auth ? PH_DONE : PH_SEND;
			if (c->phase == PH_DONE)
				tls_prepare(c->px);   /* for the first connection after the probe */
			continue;
		case PH_SEND:
			if ((r = send_request(c, fd)) != 0)
				break;
			c->phase = PH_REPLY;
			if (c->ssl)
				tls_prepare(c->px);   /* while the reply is on its way */
			continue;
		case PH_REPLY:
			if ((r = read_reply(c, fd)) != 0)
				break;
			c->phase = PH_DONE;
			continue;
		default:
			if (c->probe && !c->px->auth)
				proxy_tell(c->px, CAUSE_OK, 2, "answers");
			if (c->probe && c->ssl) {
				/* The probe's connection is closed next: end its TLS with close_notify, for
				 * OpenSSL makes the last session of an SSL freed without one unresumable. */
				ERR_clear_error();
				SSL_shutdown(c->ssl);
			}
			return CONN_READY;
		}
		if (r == EAGAIN) {
			*want = tls_want(c);
			return CONN_MORE;
		}
		*err = r;
		proxy_abort(c, CONN_ABORT_ENDED);   /* frees the TLS state; the engine closes the fd */
		return CONN_FAILED;
	}
}

/* ---------- the https flow's stream (after READY) ---------- */

/* Decrypt into @buf: what unread() gave back first, else as many records as fit (with read-ahead
 * OpenSSL takes several from one recv()), so that one send() to the child moves them all. */
static ssize_t tls_read(void *st, int fd, void *buf, size_t len)
{
	struct pconn *c = st;
	size_t got = 0;

	if (c->back_len) {
		size_t k = c->back_len - c->back_off < len ? c->back_len - c->back_off : len;

		memcpy(buf, c->back + c->back_off, k);
		c->back_off += k;
		if (c->back_off == c->back_len)
			c->back_off = c->back_len = 0;
		return (ssize_t)k;
	}
	ERR_clear_error();
	while (got < len) {
		int r = SSL_read(c->ssl, (char *)buf + got, len - got > INT_MAX ? INT_MAX : (int)(len - got));

		if (r <= 0) {
			if (got)
				break;   /* the end or the error comes again at the next call */
			return tls_result(c->ssl, r);
		}
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static int tls_unread(void *st, const void *buf, size_t n)
{
	struct pconn *c = st;

	/* Only the tail of what the last read() returned comes back.  When that read came from the
	 * kept bytes and left some (a short @len), they are still here: step back over them. */
	if (c->back_len) {
		if (n > c->back_off)
			return -EIO;
		c->back_off -= n;
		return 0;
	}
	if (n > c->back_cap) {
		void *b = realloc(c->back, n);

		if (!b)
			return -ENOMEM;
		c->back = b;
		c->back_cap = n;
	}
	memcpy(c->back, buf, n);
	c->back_off = 0;
	c->back_len = n;
	return 0;
}

/* Encrypt as much of @buf as the socket takes: SSL_write() (partial-write mode) returns after each
 * record, so go on while the socket takes more, rather than one record per peek of the child. */
static ssize_t tls_send(void *st, int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = io_send(st, fd, (const char *)buf + done, len - done > 65536 ? 65536 : len - done);

		if (n <= 0) {
			if (done)
				break;   /* the socket is full (or failed: the next send says so) */
			return n;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static void tls_shutdown(void *st, int fd)
{
	struct pconn *c = st;

	ERR_clear_error();
	SSL_shutdown(c->ssl);   /* close_notify; TLS keeps reading what the proxy still sends */
	shutdown(fd, SHUT_WR);
}

static void tls_release(void *st)
{
	proxy_abort(st, CONN_ABORT_ENDED);
}

static const struct conn_stream_ops tls_stream_ops = {
	.read = tls_read,
	.unread = tls_unread,
	.send = tls_send,
	.shutdown = tls_shutdown,
	.release = tls_release,
};

const struct connector_ops proxy_http_ops = {
	.name = "proxy-http",
	.state_size = sizeof(struct pconn),
	.timeout_ms = PROXY_TIMEOUT_MS_DEFAULT,
	.stream = NULL,
	.start = http_start,
	.step = http_step,
	.abort = proxy_abort,
};

const struct connector_ops proxy_https_ops = {
	.name = "proxy-https",
	.state_size = sizeof(struct pconn),
	.timeout_ms = PROXY_TIMEOUT_MS_DEFAULT,
	.stream = &tls_stream_ops,
	.start = http_start,
	.step = http_step,
	.abort = proxy_abort,
};
