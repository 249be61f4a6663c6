/* SPDX-License-Identifier: MIT */
/*
 * relay/flow — one life record per flow (design §3), shared by TCP, UDP and, later, ICMP and DNS.
 *
 * Every flow the child opens gets a record when the relay first sees it, whatever happens next: a
 * denied destination, a failed upstream connect and an evicted UDP flow are flows too.  The record
 * is owned by the protocol module that carries the flow; other modules (flow log, summary, capture
 * metadata) read it through observers, which are told when a flow opens and when it closes, and
 * never write it.
 *
 * States of a record, as observers see them:
 *   opened  - the destination is known, the policy has decided (route and rule are set);
 *             for a denied flow, opened and closed follow each other at once
 *   closed  - t_end_ns, the byte counts, outcome and err are final
 */
#ifndef CHILDFLOW_RELAY_FLOW_H
#define CHILDFLOW_RELAY_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

enum flow_proto { FLOW_TCP, FLOW_UDP, FLOW_ICMP, FLOW_DNS };

enum flow_outcome {
	FLOW_OPEN = 0,        /* not closed yet */
	FLOW_OK,              /* ended normally (both sides closed, or idle timeout for UDP) */
	FLOW_DENIED,          /* the policy refused the destination */
	FLOW_UP_FAILED,       /* the upstream connect failed; err says how (ECONNREFUSED, ...) */
	FLOW_UP_TIMEOUT,      /* the upstream connect did not complete in time */
	FLOW_RESET_CHILD,     /* the child's side reset or failed */
	FLOW_RESET_UP,        /* the upstream side reset or failed */
	FLOW_EVICTED,         /* closed to make room (table full) */
	FLOW_NO_RESOURCES,    /* no fd, memory or table slot for it */
	FLOW_CUT_AT_EXIT,     /* still open when the command's tree was gone and the drain ended */
};

/* An IPv4 or IPv6 endpoint, in the 28 bytes it needs (a record is kept per live flow). */
union flow_addr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

struct flow_record {
	uint64_t id;                          /* unique within one run, from 1 */
	enum flow_proto proto;
	union flow_addr child, dst;           /* as the child saw them */
	const char *dst_name;                 /* the name it was reached by, or NULL (dns/, proxy) */
	const char *route;                    /* connector name: "direct", ...; NULL when denied */
	const char *rule;                     /* what decided: a policy reason */
	uint64_t t_start_ns, t_end_ns;        /* CLOCK_REALTIME */
	uint64_t bytes_up, bytes_down;        /* payload bytes child->upstream and back */
	uint64_t pkts_up, pkts_down;          /* datagrams (UDP) */
	enum flow_outcome outcome;
	int err;                              /* errno of the outcome, 0 if none */
};

struct flow_observer {
	void (*opened)(void *priv, const struct flow_record *f);   /* may be NULL */
	void (*closed)(void *priv, const struct flow_record *f);   /* may be NULL */
	void *priv;
};

#define FLOW_MAX_OBSERVERS 8

/*
 * struct flow_tap - an observer of the relay's own host-side sockets and of the bytes they carry
 * (the capture's egress views).  At most one per hub; without one (hub.tap NULL) the relay does not
 * copy a byte nor make a call for it: every call site is `if (hub->tap)`.  All calls are made from
 * the loop, never block, and must not touch the fds beyond getsockname()/getpeername().
 *
 * @sock:     @fd (SOCK_STREAM or SOCK_DGRAM, @type) is a socket of the relay's on the host side that
 *            is bound and connected or connecting (@open), or is about to be closed (!@open).
 * @ready:    TCP flow @f's upstream socket @fd is connected (through its proxy, if any): bytes move.
 * @stream:   @len bytes of TCP flow @f, written to its upstream socket (@dir 0) or read from it (1),
 *            in order; what the relay reads into user space anyway (it copies instead of splicing
 *            while a tap with @stream is set).
 * @datagram: one datagram sent on the connected socket @fd (@dir 0) or received on it (1).
 * @connecting: TCP flow @f's upstream socket @fd was given to connect(): its SYN left (called after
 *            @sock, before @ready or @failed; again for each new attempt of the connector).
 * @failed:   the attempt of TCP flow @f on @fd (still open) ended before @ready: refused (@err
 *            ECONNREFUSED: the remote's RST), timed out, unreachable, or given up (@err 0: not known).
 * @echo_flow: an ICMP echo flow's host socket was opened (@open) or is about to close: on the wire
 *            it is @local (the host's source address for @peer) <-> @peer, both with the echo
 *            identifier upstream sees as their port (network order).
 * @echo:     one ICMP(v6) echo message of that flow, sent (@dir 0) or received (1): @hdr is its
 *            8-byte ICMP header (identifier as upstream sees it; checksum as sent or read), @data
 *            the @len bytes after it.
 */
struct flow_tap {
	void (*sock)(void *priv, int fd, int type, bool open);
	void (*ready)(void *priv, const struct flow_record *f, int fd);
	void (*connecting)(void *priv, const struct flow_record *f, int fd);
	void (*failed)(void *priv, const struct flow_record *f, int fd, int err);
	void (*echo_flow)(void *priv, const union flow_addr *local, const union flow_addr *peer, bool open);
	void (*echo)(void *priv, const union flow_addr *local, const union flow_addr *peer, int dir,
		     const uint8_t hdr[8], const void *data, size_t len);
	void (*stream)(void *priv, const struct flow_record *f, int dir, const void *buf, size_t len);
	void (*datagram)(void *priv, int fd, int dir, const void *buf, size_t len);
	void *priv;
};

/* The relay's list of observers and its id counter (embedded in struct relay). */
struct flow_hub {
	struct flow_observer obs[FLOW_MAX_OBSERVERS];
	int n_obs;
	const struct flow_tap *tap;           /* NULL: none (the usual case) */
	uint64_t next_id;
	uint64_t n_open;                      /* records opened and not yet closed */
};

/* Register @o; Return: 0, or -ENOSPC when FLOW_MAX_OBSERVERS are registered. */
int flow_observe(struct flow_hub *h, const struct flow_observer *o);

/* The tap's calls, for the call sites' `if (h->tap)` branches. */
static inline void flow_tap_sock(const struct flow_hub *h, int fd, int type, bool open)
{
	if (h->tap->sock)
		h->tap->sock(h->tap->priv, fd, type, open);
}

static inline void flow_tap_datagram(const struct flow_hub *h, int fd, int dir, const void *buf, size_t len)
{
	if (h->tap->datagram)
		h->tap->datagram(h->tap->priv, fd, dir, buf, len);
}

/* Start @f: give it an id and a start time, and fill proto and addresses. */
void flow_begin(struct flow_hub *h, struct flow_record *f, enum flow_proto proto,
		const struct sockaddr_storage *child, const struct sockaddr_storage *dst);

/* Tell the observers @f is open (after the policy filled route and rule). */
void flow_opened(struct flow_hub *h, const struct flow_record *f);

/* End @f with @outcome and @err (ignored when an outcome was already set) and tell the observers. */
void flow_end(struct flow_hub *h, struct flow_record *f, enum flow_outcome outcome, int err);

/* A flow that ends as it begins (denied, no resources): a record opened and closed at once. */
void flow_record_at_once(struct flow_hub *h, enum flow_proto proto, const struct sockaddr_storage *child,
			 const struct sockaddr_storage *dst, const char *rule, enum flow_outcome outcome,
			 int err);

const char *flow_outcome_name(enum flow_outcome o);
const char *flow_proto_name(enum flow_proto p);

/* The length of @sa as the socket calls want it (AF_INET or AF_INET6). */
socklen_t flow_sa_len(const void *sa);

/* Address and port of @sa (AF_INET or AF_INET6) into @out (18 bytes of room); Return: 6 or 18. */
size_t flow_endpoint_bytes(const void *sa, unsigned char *out);

/* Same family, address and port (sockaddr_in6 may carry flowinfo that does not matter)? */
bool flow_same_endpoint(const void *a, const void *b);

/* The original destination a transparent socket's datagram @m carries (IP(V6)_ORIGDSTADDR). */
bool flow_orig_dst(struct msghdr *m, struct sockaddr_storage *dst);

/* "198.51.100.10:80" or "[2001:db8::1]:80" into @buf; Return: @buf. */
char *flow_addr_str(const struct sockaddr *sa, char *buf, size_t len);

/* An observer that prints one debug line per closed flow (CHILDFLOW_DEBUG=1). */
extern const struct flow_observer flow_debug_observer;

#endif
