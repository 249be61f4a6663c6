// SPDX-License-Identifier: MIT
/*
 * proxy — the route's setup (resolving the proxy, the TLS context), the TCP connect to the proxy
 * shared by every scheme, and the once-per-cause warnings.  The schemes are http.c (http, https)
 * and socks5.c.
 */
#include "proxy/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>

#include <openssl/err.h>

#include "util/egress.h"
#include "util/explain.h"
#include "util/log.h"

#define KEEPIDLE_S 300
#define KEEPINTVL_S 30
#define KEEPCNT 10
#define TLS_READ_BUFFER (64u << 10)   /* https: OpenSSL's read buffer per flow (read-ahead) */

/* The errno that stands for @cause in the doctor's fix (doctor/checks.c). */
static int cause_errno(enum proxy_cause cause, int code)
{
	switch (cause) {
	case CAUSE_UNREACHABLE:
		return code > 0 ? code : ECONNREFUSED;
	case CAUSE_TIMEOUT:
		return ETIMEDOUT;
	case CAUSE_TLS:
		return EPROTO;
	case CAUSE_CREDENTIALS:
		return EACCES;
	case CAUSE_AUTH_METHOD:
	case CAUSE_PROTOCOL:
		return EPROTONOSUPPORT;
	case CAUSE_REFUSED:
		return ECONNREFUSED;
	case CAUSE_CLOSED:
		return ECONNRESET;
	case CAUSE_OK:
		break;
	}
	return 0;
}

void proxy_tell(const struct proxy *px, enum proxy_cause cause, int code, const char *fmt, ...)
{
	struct proxy_told *t = px->told;
	char msg[512];
	va_list ap;

	for (unsigned int i = 0; i < t->n; i++)
		if (t->seen[i].cause == cause && t->seen[i].code == code)
			return;
	if (t->n < PROXY_TOLD_MAX) {
		t->seen[t->n].cause = cause;
		t->seen[t->n].code = code;
		t->n++;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (cause == CAUSE_OK) {
		log_debug("proxy %s %s", px->shown, msg);
	} else {
		char what[sizeof(msg) + sizeof(px->shown) + 8];

		snprintf(what, sizeof(what), "proxy %s %s", px->shown, msg);
		explain_warn("proxy", cause_errno(cause, code), what);
	}
}

int proxy_fail_unreachable(struct pconn *c, int err)
{
	proxy_tell(c->px, CAUSE_UNREACHABLE, err, "cannot be reached: %s", strerror(err));
	return ENETUNREACH;
}

/* The address of attempt @i, as messages show it. */
static const char *attempt_str(const struct proxy *px, unsigned int i, char *buf, size_t len)
{
	const struct sockaddr_storage *a = &px->addr[i];
	const void *ip = a->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)a)->sin6_addr
						  : (const void *)&((const struct sockaddr_in *)a)->sin_addr;

	if (!inet_ntop(a->ss_family, ip, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}

/* Attempt c->attempt failed with @err: is another address due?  (Said at debug level.) */
static bool next_attempt(struct pconn *c, int err)
{
	char a[INET6_ADDRSTRLEN];

	if (c->attempt + 1 >= c->px->n_addr)
		return false;
	log_debug("proxy %s: address %s failed (%s), trying the next one", c->px->shown,
		  attempt_str(c->px, c->attempt, a, sizeof(a)), strerror(err));
	c->attempt++;
	return true;
}

/* Open the socket of attempt c->attempt and start its connect.  Return: the fd, or -errno. */
static int dial_one(struct pconn *c)
{
	const struct proxy *px = c->px;
	const struct sockaddr_storage *addr = &px->addr[c->attempt];
	int one = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT, e;
	/* Not the last address: give up on an unanswered SYN early (restored in proxy_dial_done()). */
	unsigned int uto = c->attempt + 1 < px->n_addr ? PROXY_ATTEMPT_TIMEOUT_MS : 0;
	int s = egress_socket(&px->egress, addr, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (s < 0)
		return s;
	/* As for direct flows: no Nagle (handshakes and interactive flows), keepalive so that a proxy
	 * that vanishes ends the flow.  Keepalive matters only once connected: set after connect() has
	 * sent the SYN (as connect/direct.c does), so that the child's held SYN does not wait for it. */
	if (setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    (uto && setsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto)) < 0) ||
	    (connect(s, (const struct sockaddr *)addr, px->addrlen[c->attempt]) < 0 && errno != EINPROGRESS) ||
	    setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	    setsockopt(s, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
	    setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0) {
		e = errno;
		close(s);
		return -e;
	}
	return s;
}

enum conn_step proxy_dial(struct pconn *c, const struct proxy *px, const struct conn_req *rq, int *fd,
			  uint32_t *want, int *err)
{
	int s;

	if (!c->px) {
		c->px = px;
		c->probe = rq->probe;
		c->name = rq->dst_name;
		memcpy(&c->dst, rq->dst, rq->dst->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
									 : sizeof(struct sockaddr_in));
	}
	c->phase = PH_DIAL;
	while ((s = dial_one(c)) < 0) {
		if (s == -EMFILE || s == -ENFILE || s == -ENOMEM || s == -ENOBUFS) {
			*err = -s;
			return CONN_FAILED;
		}
		if (!next_attempt(c, -s)) {
			*err = proxy_fail_unreachable(c, -s);
			return CONN_FAILED;
		}
	}
	*fd = s;
	*want = PROXY_WANT;
	return CONN_MORE;
}

int proxy_dial_done(struct pconn *c, int fd, int *why)
{
	unsigned int zero = 0;
	int e = 0;
	socklen_t len = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
		e = errno;
	if (e && next_attempt(c, e)) {
		*why = e;
		return PROXY_REDIAL;
	}
	if (e)
		return proxy_fail_unreachable(c, e);
	/* The early give-up was for the SYN only: a connected flow keeps the kernel's defaults. */
	if (c->attempt + 1 < c->px->n_addr &&
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &zero, sizeof(zero)) < 0)
		return proxy_fail_unreachable(c, errno);
	return 0;
}

void proxy_no_pipelining(const struct proxy *px)
{
	px->learnt->s5_pipe = PIPE_NO;
	log_debug("proxy %s does not take a pipelined SOCKS5 handshake: connections wait for each reply",
		  px->shown);
}

void proxy_abort(void *st, enum conn_abort why)
{
	static const char *const during[] = {
		[PH_DIAL] = "did not accept the connection",
		[PH_TLS] = "did not complete the TLS handshake",
		[PH_SEND] = "did not take the request",
		[PH_REPLY] = "did not answer the CONNECT request",
		[PH_S5_METHOD] = "did not answer the SOCKS5 greeting",
		[PH_S5_AUTH] = "did not answer the SOCKS5 authentication",
		[PH_S5_REPLY] = "did not answer the SOCKS5 CONNECT request",
		[PH_DONE] = "did not finish",
	};
	struct pconn *c = st;

	if (!c->px)
		return;
	if (why == CONN_ABORT_TIMEOUT && c->probe && c->pipelined &&
	    (c->phase == PH_S5_AUTH || c->phase == PH_S5_REPLY)) {
		/* It answered the greeting, then waited for what it had already been sent. */
		proxy_no_pipelining(c->px);
	} else if (why == CONN_ABORT_TIMEOUT)
		proxy_tell(c->px, CAUSE_TIMEOUT, (int)c->phase, "%s within %u s", during[c->phase],
			   (c->px->timeout_ms + 999) / 1000);
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	SSL_SESSION_free(c->fresh);
	c->fresh = NULL;
	free(c->back);
	c->back = NULL;
	c->back_cap = c->back_off = c->back_len = 0;
}

/* Resolve @host with the host's resolver: up to PROXY_ADDRS_MAX addresses, in getaddrinfo's order
 * (RFC 6724), each dialed in turn until one connects (proxy_dial()). */
static int resolve(struct proxy *px, const char *host, uint16_t port, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG }, *res = NULL;
	char ports[8];
	int r;

	snprintf(ports, sizeof(ports), "%u", port);
	r = getaddrinfo(host, ports, &hints, &res);
	if (r == EAI_NONAME || r == EAI_ADDRFAMILY) {
		/* AI_ADDRCONFIG hides addresses of a family without a configured address: try all. */
		hints.ai_flags = 0;
		r = getaddrinfo(host, ports, &hints, &res);
	}
	if (r != 0) {
		snprintf(err, errlen, "failed to resolve the upstream proxy %s: %s", px->shown,
			 r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
		return -EHOSTUNREACH;
	}
	for (const struct addrinfo *ai = res; ai && px->n_addr < PROXY_ADDRS_MAX; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(px->addr[0]))
			continue;
		memcpy(&px->addr[px->n_addr], ai->ai_addr, ai->ai_addrlen);
		px->addrlen[px->n_addr++] = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	if (!px->n_addr) {
		snprintf(err, errlen, "the upstream proxy %s did not resolve to an IP address", px->shown);
		return -EHOSTUNREACH;
	}
	return 0;
}

/*
 * ktls_available() - does the kernel have the "tls" ULP that kernel TLS needs?  Without it OpenSSL
 * tries anyway on every connection (a failing setsockopt(TCP_ULP) after each handshake): ask once
 * per run instead.  An unconnected TCP socket answers ENOENT when the ULP is missing and cannot be
 * loaded, ENOTCONN (or success) when it exists.  Return: false only on ENOENT.
 */
static bool ktls_available(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), e;

	if (s < 0)
		s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return true;   /* cannot tell: let OpenSSL try */
	e = setsockopt(s, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) < 0 ? errno : 0;
	close(s);
	return e != ENOENT;
}

static int tls_setup(struct proxy *px, char *err, size_t errlen)
{
	px->tls = SSL_CTX_new(TLS_client_method());
	if (!px->tls || !SSL_CTX_set_min_proto_version(px->tls, TLS1_2_VERSION) ||
	    /* the system's trust store; SSL_CERT_FILE and SSL_CERT_DIR override it */
	    !SSL_CTX_set_default_verify_paths(px->tls)) {
		snprintf(err, errlen, "cannot set up TLS for the upstream proxy %s: %s", px->shown,
			 ERR_reason_error_string(ERR_get_error()));
		return -ENOMEM;
	}
	SSL_CTX_set_verify(px->tls, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(px->tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Kernel TLS when both OpenSSL and the kernel have it (the tls module); else OpenSSL's own,
	 * decided once here (and after the first handshake: http.c tls_step()), not per connection.
	 * A proxy that closes without close_notify ends the flow like a FIN. */
	SSL_CTX_set_options(px->tls, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (ktls_available())
		SSL_CTX_set_options(px->tls, SSL_OP_ENABLE_KTLS);
	else
		log_debug("proxy %s: the kernel has no TLS offload (no \"tls\" TCP ULP): TLS in user space",
			  px->shown);
	/* Read ahead into a buffer of several records: one recv() for a few records rather than two
	 * (header, body) for each. */
	SSL_CTX_set_read_ahead(px->tls, 1);
	SSL_CTX_set_default_read_buffer_len(px->tls, TLS_READ_BUFFER);
	/* Resume the proxy's sessions (its tickets, each TLS 1.3 one offered once): a resumed handshake
	 * skips the certificate's transfer and verification on both sides (internal.h proxy_resume). */
	SSL_CTX_set_session_cache_mode(px->tls, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(px->tls, proxy_tls_new_session);
	return 0;
}

int proxy_new(struct proxy **out, const struct proxy_params *p, char *err, size_t errlen)
{
	struct proxy *px = calloc(1, sizeof(*px));
	struct in6_addr a6;
	struct in_addr a4;
	int r;

	*out = NULL;
	if (!px || !(px->told = calloc(1, sizeof(*px->told))) ||
	    !(px->resume = calloc(1, sizeof(*px->resume))) ||
	    !(px->learnt = calloc(1, sizeof(*px->learnt)))) {
		if (px) {
			free(px->told);
			free(px->resume);
		}
		free(px);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	px->kind = p->kind;
	px->insecure = p->insecure;
	if (p->egress)
		px->egress = *p->egress;
	px->timeout_ms = p->timeout_ms ? p->timeout_ms : PROXY_TIMEOUT_MS_DEFAULT;
	snprintf(px->host, sizeof(px->host), "%s", p->host);
	px->host_is_ip = inet_pton(AF_INET, p->host, &a4) == 1 || inet_pton(AF_INET6, p->host, &a6) == 1;
	snprintf(px->shown, sizeof(px->shown), strchr(p->host, ':') ? "[%s]:%u" : "%s:%u", p->host, p->port);
	r = -EINVAL;
	if (p->user) {
		if (strlen(p->user) > PROXY_CRED_MAX || strlen(p->password) > PROXY_CRED_MAX || !*p->user ||
		    !*p->password) {
			snprintf(err, errlen, "proxy user name and password must be 1 to %d bytes each",
				 PROXY_CRED_MAX);
			goto fail;
		}
		if (p->kind != PROXY_KIND_SOCKS5 && strchr(p->user, ':')) {
			snprintf(err, errlen, "an HTTP proxy user name cannot contain `:` (Basic authentication)");
			goto fail;
		}
		px->auth = true;
		snprintf(px->user, sizeof(px->user), "%s", p->user);
		snprintf(px->pass, sizeof(px->pass), "%s", p->password);
		proxy_basic(px->basic, sizeof(px->basic), px->user, px->pass);
	}
	if ((r = resolve(px, p->host, p->port, err, errlen)) < 0 ||
	    (p->kind == PROXY_KIND_HTTPS && (r = tls_setup(px, err, errlen)) < 0))
		goto fail;
	*out = px;
	return 0;
fail:
	proxy_free(px);
	return r;
}

struct connector proxy_connector(const struct proxy *px)
{
	const struct connector_ops *ops = px->kind == PROXY_KIND_HTTP ? &proxy_http_ops :
					  px->kind == PROXY_KIND_HTTPS ? &proxy_https_ops :
									 &proxy_socks5_ops;

	return (struct connector){ .ops = ops, .cfg = px, .timeout_ms = px->timeout_ms };
}

void proxy_probe_plainly(const struct proxy *px)
{
	px->learnt->s5_pipe = PIPE_NO;
}

void proxy_free(struct proxy *px)
{
	if (!px)
		return;
	if (px->resume) {
		proxy_resume_clear(px->resume);
		proxy_tls_spare_drop(px->resume);
	}
	free(px->resume);
	free(px->learnt);
	SSL_CTX_free(px->tls);
	free(px->told);
	explicit_bzero(px, sizeof(*px));
	free(px);
}
