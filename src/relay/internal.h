/* SPDX-License-Identifier: MIT */
/* relay/internal — what the relay's own files share (not for other modules). */
#ifndef CHILDFLOW_RELAY_INTERNAL_H
#define CHILDFLOW_RELAY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "ctx.h"
#include "relay/relay.h"

enum ev_kind {
	EV_TCP_LISTEN,
	EV_UDP_LISTEN,
	EV_SIGNAL,
	EV_LIFETIME,
	EV_BACKEND_CTL,
	EV_POLICY,
	EV_TCP_END,
	EV_UDP_CHILD,
	EV_UDP_HOST,
	EV_SERVICE,
	EV_GATE,
	EV_HOOK,
	EV_ECHO_QUEUE,
	EV_ECHO_HOST,
};

/*
 * First member of everything registered with epoll: says what the pointer is.  A service's tokens
 * start with a struct relay_service_ev instead, whose int tag is EV_SERVICE (relay/service.h).
 */
struct ev_src {
	enum ev_kind kind;
	int index;
};

_Static_assert(sizeof(enum ev_kind) == sizeof(int) && offsetof(struct ev_src, kind) == 0,
	       "a service's relay_service_ev must read as an ev_src kind");

struct tcp_flow;
struct udp_flow;
struct udp_pending;
struct gate_wait;
struct echo_state;

/*
 * The fd budget, split so that every part keeps its share (relay_limits_from_fds()):
 *   reserve                      the relay's own (RELAY_OWN_FDS) and the backend's (reserved_fds())
 *   2 * (max_pipes + pipe_pool)  pipes borrowed by TCP flows with bytes in flight, and idle ones
 *   2 * max_udp                  UDP flows (an interception-side and a host-side socket each)
 *   2 * max_tcp                  TCP flows (the child's and the upstream socket)
 */
struct relay_limits {
	unsigned int fds;             /* RLIMIT_NOFILE the budget was made from */
	unsigned int reserve;
	unsigned int max_tcp;         /* concurrent TCP flows */
	unsigned int max_connecting;  /* of which still connecting upstream; the oldest yields */
	unsigned int yield_ms;        /* ... once it has been pending this long; before, accept waits */
	unsigned int connect_ms;      /* an upstream connect that takes longer fails (ETIMEDOUT) */
	unsigned int max_udp;         /* concurrent UDP flows */
	unsigned int udp_idle_ms;     /* a UDP flow with no traffic this long is closed */
	unsigned int udp_keep_ms;     /* a UDP flow active this recently is never evicted */
	unsigned int udp_pending;     /* first datagrams waiting for an interception-side socket */
	unsigned int pipe_size;       /* bytes per splice pipe */
	unsigned int pipe_pool;       /* idle pipes kept for reuse */
	unsigned int max_pipes;       /* pipes holding bytes at once (bounds kernel memory) */
};

#define RELAY_OWN_FDS 32

/* Fill @lim from an fd limit, of which the backend holds @backend_fds (pure; unit tested). */
void relay_limits_from_fds(struct relay_limits *lim, unsigned long fds, unsigned int backend_fds);

struct relay_stats {
	uint64_t tcp_accepted, tcp_denied, tcp_failed, tcp_full, tcp_timeouts, tcp_yielded;
	uint64_t udp_flows, udp_denied, udp_full, udp_evicted, udp_dropped;
	uint64_t udp_icmp;            /* ICMP errors from upstream passed to the child */
	uint64_t echo_answers;        /* echo replies and errors about echoes written to the child */
	uint64_t copied;              /* bytes moved by the pipe-less fallback */
	uint64_t tcp_gated, gate_rejected, gate_dups, gate_unparsed, gate_lost, gate_busy;
};

/* Shortages are told once each per run, as a warning (then counted). */
enum shortage { SHORT_FDS, SHORT_TCP, SHORT_UDP, SHORT_CONNECTING, SHORT_N };

struct relay {
	struct ctx *c;
	int epfd;
	struct relay_limits lim;
	struct relay_stats stats;
	struct flow_hub hub;
	uint64_t now_ms;

	struct ev_src ev_listen[BE_NLISTEN];
	int listen_fd[BE_NLISTEN];
	struct ev_src ev_signal, ev_lifetime, ev_ctl, ev_policy;
	struct relay_hook hook[RELAY_MAX_HOOKS];   /* relay_add_hook() */
	struct ev_src ev_hook[RELAY_MAX_HOOKS];
	int n_hooks;
	int child_sockbuf;            /* relay_set_child_sockbuf(); 0: autotuned */
	enum { CHILD_OPTS_UNKNOWN, CHILD_OPTS_INHERITED, CHILD_OPTS_EACH }
		child_opts;           /* the child's sockets' options: from the listener, or set on each */
	bool service_events;          /* the service had events in this batch: run() follows it */
	int sigfd;

	/* TCP */
	struct tcp_flow *tcp_all;     /* every live flow (teardown, accounting) */
	struct tcp_flow *tcp_ready;   /* flows that used up their budget and have more to move */
	struct tcp_flow *tcp_paused;  /* flows with bytes to read while a hook holds (relay_hold()) */
	struct tcp_flow *tcp_dead;    /* closed during this epoll batch; freed after it */
	struct tcp_flow *conn_new, *conn_old;   /* flows still connecting, newest and oldest */
	struct tcp_flow *tcp_verify;  /* connected direct flows waiting for this turn's NAT check */
	unsigned int n_tcp, n_connecting;
	unsigned int n_accepting;     /* flows whose SYN passed, waiting for accept() (ACCEPTING) */
	unsigned int accept_soon;     /* SYNs passed in this loop turn: 1 IPv4, 2 IPv6 (tcp_accept_passed()) */
	int (*pipes)[2];              /* idle pipe pool */
	unsigned int n_pipes;
	unsigned int pipes_in_use;
	uint64_t pipe_borrows, pipe_borrows_seen;   /* pipe_get() calls; as of the last sweep */
	uint64_t trim_id;             /* the last flow id when memory was last given back */
	unsigned char *scratch;       /* the pipe-less copy's buffer */

	/* SYN gate (gate.c) */
	int gate_fd;                  /* the backend's queue socket, -1 without a gate */
	struct ev_src ev_gate;
	struct tcp_flow **gate_hash;  /* flows begun from a SYN, not yet adopted: by (child, dst) */
	unsigned int gate_buckets;    /* a power of two */
	unsigned char *gate_out;      /* verdicts of this loop turn */
	size_t gate_out_len;
	struct gate_wait **wait_hash; /* SYNs waiting for a connect slot, by (child, dst) */
	struct gate_wait *wait_new, *wait_old;   /* the same, newest (admitted first) to oldest */
	unsigned int n_wait;

	/* ICMP echo (echo.c); NULL without the backend's echo queue */
	struct echo_state *echo;
	/* UDP */
	int inject_fd[2];             /* the backend's raw IPv4, IPv6 sockets for ICMP errors; -1: none */
	struct udp_flow **udp_hash;
	unsigned int udp_buckets;
	uint64_t udp_key[2];          /* SipHash key, random per run */
	struct udp_flow *udp_lru_head, *udp_lru_tail;
	struct udp_flow *udp_dead;    /* closed during this epoll batch; freed after it */
	unsigned int n_udp;
	struct udp_pending *pend_head, *pend_tail;
	unsigned int n_pending;
	size_t pending_bytes;
	unsigned char *udp_buf;

	uint64_t next_sweep;
	uint64_t accept_paused_until; /* out of fds: TCP listeners disarmed until then (0: armed) */
	bool shortage_told[SHORT_N];

	bool command_gone;            /* the command has exited: only draining flows remain */
	uint64_t drain_until;
	bool done;
	int exit_code;
};

uint64_t relay_now_ms(void);
/* The listeners the relay itself serves (TCP and UDP; the DNS ones belong to the service). */
bool relay_own_listener(int k);
int relay_watch(struct relay *r, int fd, uint32_t events, struct ev_src *src);
void relay_pause_accept(struct relay *r, enum shortage why);
void relay_shortage(struct relay *r, enum shortage s);
/* Does a hook (the capture) hold TCP reads now?  (relay.h, struct relay_hook) */
bool relay_hold(struct relay *r);

/* What a held SYN is answered with (gate.c). */
enum gate_reply { GATE_PASS, GATE_REFUSE, GATE_HOST_UNREACH, GATE_NET_UNREACH, GATE_PROHIBIT, GATE_DROP };

/* The answer for a flow that ends with @o / @err before its SYN passed (pure; unit tested). */
enum gate_reply gate_reply_for(enum flow_outcome o, int err);
int gate_init(struct relay *r);
void gate_free(struct relay *r);
void gate_event(struct relay *r);
void gate_answer(struct relay *r, uint32_t id, enum gate_reply v);
void gate_flush(struct relay *r);

/*
 * gate_router_error() - the upstream connect on @fd (which asked for IP_RECVERR / IPV6_RECVERR)
 * failed: was it because a hop on the way answered its SYN with ICMP (time exceeded: the TTL ran
 * out; destination unreachable: host, network, port, prohibited)?  Then the child is told so by
 * the hop that said it: that ICMP message from that hop's address, quoting the child's SYN (@child,
 * @dst, @isn), as traceroute -T expects (its last line's "!H" names the router that said it).
 * Return: true when the child was told (its SYN is to be dropped).
 */
bool gate_router_error(struct relay *r, int fd, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst, uint32_t isn);

/*
 * The TTL / hop limit a program in the child's namespace sends with when it sets none: the default
 * of a new network namespace (IPDEFTTL, IPV6_DEFAULT_HOPLIMIT; childflow leaves both alone).
 */
#define CHILD_DEFAULT_TTL 64

/*
 * relay_child_ttl() - what P puts on its host socket for a packet that left the child with TTL /
 * hop limit @ttl: the same when the child chose its own (traceroute's probes), else 0: the host's
 * default, so that ordinary traffic leaves the host as the host's own would (a host whose default is
 * not 64 keeps its own; a child that sets exactly 64 gets the host's default).
 */
static inline int relay_child_ttl(int ttl)
{
	return ttl > 0 && ttl <= 255 && ttl != CHILD_DEFAULT_TTL ? ttl : 0;
}

struct nfq_syn;
enum tcp_syn_result { TCP_SYN_TAKEN, TCP_SYN_BUSY };
/*
 * tcp_syn() - a new SYN from the child, queued as packet @id (tcp.c): answer a retransmission, or
 * begin its flow, which answers it when the upstream connect has an answer.  Return: TCP_SYN_BUSY
 * (nothing done) when too many young connects are pending: the gate keeps the SYN waiting.
 */
enum tcp_syn_result tcp_syn(struct relay *r, const struct nfq_syn *syn, uint32_t id);
/* Too many connects pending, all young: new ones wait (tcp.c). */
bool tcp_connecting_full(const struct relay *r);
/* Waiting SYNs that may begin now do (gate.c; once per loop turn). */
void gate_admit(struct relay *r);
/* Waiting SYNs past their time are dropped (gate.c; from the sweep). */
void gate_sweep(struct relay *r);

/* The keyed hash of a (child, destination) pair (SipHash, key random per run; udp.c). */
uint64_t relay_pair_hash(const struct relay *r, const struct sockaddr_storage *child,
			 const struct sockaddr_storage *dst);

void tcp_accept(struct relay *r, int lfd);
/*
 * tcp_accept_passed() - after this turn's verdicts went out: the handshakes of the SYNs passed in it
 * usually completed inside that send() (the interception namespace is on this host), so their
 * sockets are taken now rather than one epoll turn later.
 */
void tcp_accept_passed(struct relay *r);
/* tcp_listener_opts() - the options every child socket gets, set once on the listener @lfd. */
void tcp_listener_opts(struct relay *r, int lfd);
void tcp_event(struct relay *r, struct ev_src *src, uint32_t events);
void tcp_run_ready(struct relay *r);
/* The paused flows go on once no hook holds (they then run with the ready ones). */
void tcp_resume(struct relay *r);
void tcp_verify(struct relay *r);
void tcp_sweep(struct relay *r);
void tcp_close_all(struct relay *r);
bool tcp_drained(const struct relay *r);
void tcp_reap(struct relay *r);
/* tcp_probe() - check @conn's route once, without a child (see tcp.c).  Return: 0 or -errno. */
int tcp_probe(struct relay *r, const struct connector *conn);
int tcp_init(struct relay *r);

int udp_init(struct relay *r);
/* The hash bucket of a (child, destination) pair (keyed SipHash; exposed for unit tests). */
unsigned int udp_bucket(const struct relay *r, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst);
void udp_listener_event(struct relay *r, int lfd);
void udp_event(struct relay *r, struct ev_src *src, uint32_t events);
void udp_retry_pending(struct relay *r);
void udp_sweep(struct relay *r);
void udp_close_all(struct relay *r);
void udp_reap(struct relay *r);

/* ICMP echo (echo.c): the queue's requests, the host sockets' answers. */
int echo_init(struct relay *r);
void echo_queue_event(struct relay *r);
void echo_host_event(struct relay *r, struct ev_src *src, uint32_t events);
void echo_flush(struct relay *r);
void echo_flush_verdicts(struct echo_state *e);
void echo_sweep(struct relay *r);
void echo_reap(struct relay *r);
void echo_free(struct relay *r);

#endif
