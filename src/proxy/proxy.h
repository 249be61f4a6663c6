/* SPDX-License-Identifier: MIT */
/*
 * proxy — the upstream proxy routes: every TCP connection of the tree through an HTTP CONNECT proxy
 * (http://), the same over TLS to the proxy (https://), or SOCKS5 (socks5://), with Basic or RFC 1929
 * username/password authentication.  DNS, UDP and ICMP do not go through the proxy.
 *
 * Each is a connector (relay/connector.h): a non-blocking state machine in the relay's loop, bounded
 * by a timeout, that connects to the proxy, speaks TLS (https), authenticates and asks for the
 * destination, by the name the child resolved it from when there is one (CONNECT name:port, SOCKS5
 * address type 3), else by address.  The reply is read exactly, so bytes the proxy sends right after
 * it reach the child.  http and socks5 flows are then spliced like direct ones; https flows move
 * through OpenSSL (kernel TLS where OpenSSL and the kernel have it), and each https handshake after
 * the first resumes the proxy's last session (no certificate exchange).
 *
 * Failures reach the child as the errno the connector returns, which the SYN gate turns into what
 * the child's connect() reports (relay/gate.c gate_reply_for()): the proxy's own failures
 * (unreachable, TLS, credentials, a malformed reply) are ENETUNREACH; its answers about the
 * destination are socks5_rep_errno() (EACCES, ENETUNREACH, EHOSTUNREACH, ECONNREFUSED) or, for an
 * HTTP CONNECT, http_status_errno() (ECONNREFUSED; 504 ETIMEDOUT, which the gate answers as a
 * refusal for a proxied flow).  The README's proxy section has the table.
 * Each distinct cause is told once per run as a warning ("childflow: warning: proxy
 * 198.51.100.20:8888 rejected the credentials (407)"), never once per connection.
 */
#ifndef CHILDFLOW_PROXY_H
#define CHILDFLOW_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/connector.h"
#include "util/egress.h"

enum proxy_kind { PROXY_KIND_HTTP, PROXY_KIND_HTTPS, PROXY_KIND_SOCKS5 };

#define PROXY_TIMEOUT_MS_DEFAULT 20000

struct proxy_params {
	enum proxy_kind kind;
	const char *host;          /* a name (resolved here, by the host's resolver) or an address */
	uint16_t port;
	const char *user;          /* NULL: no authentication */
	const char *password;      /* with @user; never printed */
	bool insecure;             /* https: accept an untrusted chain (never another host's name) */
	unsigned int timeout_ms;   /* a handshake taking longer fails (ETIMEDOUT); 0: the default */
	const struct egress *egress;   /* --iface: where the connection to the proxy leaves, or NULL */
};

struct proxy;

/*
 * proxy_new() - set up the route for @p: resolve the proxy's host (blocking: call it at setup), load
 * the system's trust store (https).  On failure one line for the user is written into @err.
 * Return: 0 or -errno.
 */
int proxy_new(struct proxy **out, const struct proxy_params *p, char *err, size_t errlen);

/* The connector of the route (its cfg is @px, which must outlive the relay). */
struct connector proxy_connector(const struct proxy *px);

/*
 * proxy_probe_plainly() - probes of @px no longer try the pipelined SOCKS5 handshake, and nor do
 * connections.  For a caller that judges the proxy by one probe (--doctor): a trial that stalls
 * on a proxy that does not take it would read as a failure.
 */
void proxy_probe_plainly(const struct proxy *px);

void proxy_free(struct proxy *px);

#endif
