/* SPDX-License-Identifier: MIT */
/*
 * dns — the forwarder that answers every DNS message the tree sends (design §4).
 *
 * Theory of operation.  The backend's ruleset sends UDP to port 53, whatever the address, to two
 * transparent listeners of the interception namespace (BE_DNS4/BE_DNS6); TCP to port 53 reaches the
 * relay's TCP listener, which hands it to this module (relay/service.h).  Each query is checked
 * (dns/wire.h), given a fresh random upstream ID and sent from P's namespace to the upstream
 * resolvers: the --dns one, or the host's own from its resolv.conf (loopback ones included), in
 * order, each try bounded so that the child gets SERVFAIL before its own resolver gives up.  An
 * answer is accepted only from the socket, with the ID and the question of the query; the client's
 * ID is put back and the answer goes out of the listener with the child's original destination as
 * its source (IP_PKTINFO on a transparent socket), so the child sees it come from the address it
 * wrote to, and that address sees nothing.  DNS over TCP is answered over TCP (a session per
 * connection: framing, pipelined queries, one upstream TCP connection).  Answers pass unchanged but
 * for the ID (EDNS, DNSSEC, TC, up to 64 KiB); their A/AAAA records go to ctx.names.
 *
 * One epoll fd of the module's own holds its sockets; the relay watches it and asks for the next
 * deadline.  Every table is bounded: outstanding queries (DNS_MAX_QUERIES, DNS_PER_CLIENT of them
 * per client socket), TCP sessions (DNS_TCP_MAX), their buffers.
 */
#ifndef CHILDFLOW_DNS_DNS_H
#define CHILDFLOW_DNS_DNS_H

#include <sys/socket.h>

#include "dns/names.h"
#include "dns/resolvconf.h"
#include "relay/service.h"
#include "util/egress.h"

struct dns_fwd;

struct dns_fwd_config {
	const struct resolv_conf *host;        /* the host's configuration: upstreams, timeout, attempts */
	const struct sockaddr_storage *fixed;  /* --dns (port 53), or NULL: the host's nameservers */
	const char *resolv_path;               /* re-read when it changes (only without --dns) */
	int listen4, listen6;                  /* the backend's DNS listeners, or -1 */
	struct dns_names *names;               /* where answers' addresses go, or NULL */
	const struct egress *egress;           /* where upstream queries leave (--iface), or NULL */
	/* Without --dns: the child's resolv.conf files follow the host's (resolvconf_child_text() for
	 * @np), written in place through the fds child_files() gives (0 of them until the command has
	 * started).  NULL: they are left alone. */
	const struct netplan *np;
	int (*child_files)(void *arg, const int **fds);
	void *child_files_arg;
};

/* Set up the forwarder (no query is sent yet).  Return: 0 or -errno. */
int dns_fwd_new(struct dns_fwd **out, const struct dns_fwd_config *cfg);

/* The relay's view of it (relay/service.h). */
struct relay_service dns_fwd_service(struct dns_fwd *f);

void dns_fwd_free(struct dns_fwd *f);

#endif
