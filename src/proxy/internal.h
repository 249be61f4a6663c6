/* SPDX-License-Identifier: MIT */
/* proxy/internal — what the proxy connectors share (not for other modules). */
#ifndef CHILDFLOW_PROXY_INTERNAL_H
#define CHILDFLOW_PROXY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "proxy/proxy.h"
#include "proxy/wire.h"
#include "relay/flow.h"
#include "util/egress.h"

/* Causes of failure, each told once per run (with a code: an errno, a status, a TLS error). */
enum proxy_cause {
	CAUSE_UNREACHABLE,    /* the TCP connect to the proxy failed (code: errno) */
	CAUSE_TIMEOUT,        /* no answer in time (code: the phase) */
	CAUSE_TLS,            /* the TLS handshake failed (code: verify result or error reason) */
	CAUSE_CREDENTIALS,    /* 407 / RFC 1929 refused (code: 0 given, 1 none given) */
	CAUSE_AUTH_METHOD,    /* SOCKS5: no acceptable method (code: the method) */
	CAUSE_REFUSED,        /* the proxy would not connect to the destination (code: status / REP) */
	CAUSE_PROTOCOL,       /* a malformed or oversized reply (code: 0) */
	CAUSE_CLOSED,         /* the proxy closed or reset the connection mid-handshake (code: errno) */
	CAUSE_OK,             /* the probe succeeded (told at debug level) */
};

#define PROXY_TOLD_MAX 64
#define PROXY_ADDRS_MAX 8        /* the proxy's host name: addresses tried in turn */
/* A dial that is not the last one gives up when its SYN is not answered for this long (the kernel's
 * TCP_USER_TIMEOUT, which in SYN-SENT fires at the first retransmission: about 1 s). */
#define PROXY_ATTEMPT_TIMEOUT_MS 500

struct proxy_told {
	struct { enum proxy_cause cause; int code; } seen[PROXY_TOLD_MAX];
	unsigned int n;
};

struct proxy {
	enum proxy_kind kind;
	char host[256];
	bool host_is_ip;
	char shown[300];                      /* "host:port", "[v6]:port": how messages name it */
	struct sockaddr_storage addr[PROXY_ADDRS_MAX];   /* the host's addresses, in getaddrinfo's order */
	socklen_t addrlen[PROXY_ADDRS_MAX];
	unsigned int n_addr;
	struct egress egress;                 /* --iface: the connection to the proxy leaves there */
	bool auth;
	char user[PROXY_CRED_MAX + 1];
	char pass[PROXY_CRED_MAX + 1];
	char basic[700];                      /* base64 of user:pass (http, https) */
	bool insecure;
	unsigned int timeout_ms;
	SSL_CTX *tls;
	struct proxy_told *told;              /* mutable through the const cfg the engine holds */
	struct proxy_resume *resume;          /* https: the sessions to resume (mutable, like told) */
	struct proxy_learnt *learnt;          /* what the probe learnt (mutable, like told) */
};

/* socks5: does the proxy take the greeting, the RFC 1929 request and the CONNECT in one segment?
 * (RFC 1928 has the client wait for each reply; with a single method offered the answers are known
 * in advance, and dante takes them at once, but microsocks drops what its first read got beyond the
 * greeting and then waits.)  The start-up probe goes step by step first, so that a refusal (say, of
 * the credentials) is told at once whatever the proxy; once it went through, a second probe tries
 * the pipelined handshake (CONNECT 0.0.0.0:0), and connections pipeline only once that worked.
 * UNKNOWN -> (first probe through) TRIAL -> (second probe started) TRYING -> YES or NO. */
enum proxy_pipe { PIPE_UNKNOWN, PIPE_TRIAL, PIPE_TRYING, PIPE_YES, PIPE_NO };

struct proxy_learnt {
	enum proxy_pipe s5_pipe;
};

/*
 * https: the sessions (tickets) the proxy gave verified connections and no handshake has offered yet,
 * oldest first, so that the next handshakes skip the certificate exchange and verification.  A TLS 1.3
 * ticket is offered once (RFC 8446 C.4; a server may treat it as single-use, and two connections
 * showing one ticket are linkable): it leaves the pool when a handshake takes it.  OpenSSL servers
 * give two per full handshake, so overlapping connections each have one.  A TLS 1.2 session may be
 * resumed again and stays.  Emptied when a handshake fails (the next one verifies afresh).
 */
#define PROXY_RESUME_MAX 8
struct proxy_resume {
	SSL_SESSION *sess[PROXY_RESUME_MAX];
	unsigned int n;
	/* https: the next connection's TLS client, its ClientHello already built (in a memory BIO)
	 * while an earlier connection waited for the proxy's reply, so that the key share is not
	 * computed on a held SYN's path; dropped when older than TLS_SPARE_MAX_MS or when a handshake
	 * fails.  NULL: none. */
	SSL *spare;
	uint64_t spare_ms;                    /* CLOCK_MONOTONIC, when it was built */
	bool spare_psk;                       /* it offers a session (else a full handshake) */
};
void proxy_resume_clear(struct proxy_resume *rs);

/* What every connector asks the engine to watch, from the dial to READY: both ways at once (edge
 * triggered), as the splicing does after it, so that the upstream socket is registered once per flow
 * rather than modified at each phase (two epoll_ctl() fewer per connection).  Each step() then runs
 * on any edge and goes on from its phase: a phase that cannot progress finds EAGAIN again (SSL_connect,
 * recv, send are non-blocking), and the edge it waits for still comes. */
#define PROXY_WANT (EPOLLIN | EPOLLOUT)

/* Phases of a handshake (the connectors' states; also the code of CAUSE_TIMEOUT). */
enum proxy_phase {
	PH_DIAL,          /* TCP connect to the proxy in progress */
	PH_TLS,           /* TLS handshake (https) */
	PH_SEND,          /* sending the request (CONNECT, SOCKS5 greeting/auth/connect) */
	PH_REPLY,         /* reading the HTTP reply */
	PH_S5_METHOD,     /* SOCKS5: waiting for the method reply */
	PH_S5_AUTH,       /* SOCKS5: waiting for the RFC 1929 reply */
	PH_S5_REPLY,      /* SOCKS5: waiting for the CONNECT reply */
	PH_DONE,
};

/* Per-flow state of every proxy connector (in the engine's state area). */
struct pconn {
	const struct proxy *px;
	union flow_addr dst;
	const char *name;                     /* the name to ask for, or NULL (the address) */
	bool probe;
	bool pipelined;                       /* socks5: the whole handshake went in one request */
	enum proxy_phase phase;
	unsigned int attempt;                 /* PH_DIAL: the index of the address being dialed */
	enum proxy_phase next;                /* after PH_SEND: which reply to wait for */
	size_t sent;                          /* bytes of the current request already sent */
	SSL *ssl;                             /* https */
	SSL_SESSION *fresh;                   /* https: a session given before the peer was checked */
	bool verified;                        /* https: the handshake and our name check passed */
	unsigned char *back;                  /* https: bytes the child did not take (unread()) */
	size_t back_cap, back_off, back_len;
	union {
		struct http_reader hr;        /* http, https: the reply's header block */
		struct {                      /* socks5: the reply so far (read, never past its end) */
			uint8_t buf[4 + 1 + 255 + 2];
			uint16_t len;
		} s5;
	} u;
};

/* proxy_tell() - tell @cause once per run (a warning; CAUSE_OK at debug level).  @fmt is the text
 * after "proxy <host:port> ". */
void proxy_tell(const struct proxy *px, enum proxy_cause cause, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* proxy_fail() - tell @cause and return the errno the child sees for it (ENETUNREACH: the proxy). */
int proxy_fail_unreachable(struct pconn *c, int err);

/*
 * proxy_dial() - start the TCP connect to the proxy: its first address at the first call (@rq is
 * copied), the next one after proxy_dial_done() said PROXY_REDIAL (the engine called start() again).
 * An address whose connect fails at once is skipped while others remain.
 * Return: CONN_MORE with *fd, or CONN_FAILED with *err.
 */
enum conn_step proxy_dial(struct pconn *c, const struct proxy *px, const struct conn_req *rq, int *fd,
			  uint32_t *want, int *err);

/* proxy_dial_done() did not reach this address, and the proxy has another: return CONN_REDIAL. */
#define PROXY_REDIAL (-1)

/*
 * proxy_dial_done() - the connect finished (EPOLLOUT or an error on @fd).
 * Return: 0 (connected), PROXY_REDIAL (failed with *@why, the next address is due), or the
 * child's errno (every address failed; told).
 */
int proxy_dial_done(struct pconn *c, int fd, int *why);

/* The probe's pipelined handshake stalled or was cut: connections send each request after the
 * reply before it (said at debug level). */
void proxy_no_pipelining(const struct proxy *px);

/* abort(): a timeout is told once per phase. */
void proxy_abort(void *st, enum conn_abort why);

/*
 * proxy_tls_new_session() - OpenSSL's new-session callback (https): the proxy gave the connection
 * of @ssl the session @sess.  Kept for the next handshakes once this one's peer is verified.
 * Return: 1 (the reference to @sess is taken).
 */
int proxy_tls_new_session(SSL *ssl, SSL_SESSION *sess);

/* A prepared ClientHello older than this is not sent (its ticket's age would be off, and the
 * proxy may have rotated its ticket keys): the connection builds its own. */
#define TLS_SPARE_MAX_MS 10000u

/* Free the prepared TLS client, if any (https). */
void proxy_tls_spare_drop(struct proxy_resume *rs);

extern const struct connector_ops proxy_http_ops, proxy_https_ops, proxy_socks5_ops;

#endif
