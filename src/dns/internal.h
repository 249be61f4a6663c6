/* SPDX-License-Identifier: MIT */
/* dns/internal — what the forwarder's own files share (forward.c: UDP and the core, tcp.c). */
#ifndef CHILDFLOW_DNS_INTERNAL_H
#define CHILDFLOW_DNS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "dns/dns.h"
#include "dns/wire.h"
#include "relay/flow.h"
#include "relay/service.h"

#define DNS_MAX_QUERIES 4096     /* outstanding UDP queries */
#define DNS_PER_CLIENT 256       /* ... of which from one client socket */
#define DNS_TCP_MAX 64           /* TCP sessions */
#define DNS_TCP_PIPELINE 16      /* outstanding queries per session; more wait in the socket */
#define DNS_TCP_IDLE_MS 10000    /* a session with nothing outstanding is closed after this */
#define DNS_TCP_OUT_MAX (128u << 10)   /* answers queued for a slow child: upstream reads pause */
#define DNS_UP_SOCKS 4           /* connected UDP sockets per upstream (random source ports) */
#define DNS_SLOTS (RESOLV_MAX_NS * DNS_UP_SOCKS)
#define DNS_HASH 4096
#define DNS_HEAP_MAX (DNS_MAX_QUERIES + DNS_TCP_MAX * DNS_TCP_PIPELINE)
#define DNS_SPARE_MAX 256        /* ended queries kept for reuse (no malloc/free per query) */
#define DNS_QUERY_BUF 512        /* a query's buffer holds at least this much */

enum dns_ev_kind { DEV_LISTEN, DEV_UP, DEV_TCP_CHILD, DEV_TCP_UP };

/* What the module's fds carry as epoll data in the relay's set (relay/service.h). */
struct dns_ev {
	struct relay_service_ev head;   /* first: the relay's tag */
	enum dns_ev_kind kind;
	int index;
};

struct dns_tcp;
struct dns_query;

/* One client socket of the child's with UDP queries outstanding: its count, for DNS_PER_CLIENT. */
struct dns_client {
	union flow_addr ep;
	uint64_t h;                   /* keyed hash of ep: its bucket, and its queries' */
	unsigned int n;               /* its outstanding queries (> 0 while in the table) */
	struct dns_client *next;      /* its bucket's chain, or the free list */
};

#define DNS_RX_BATCH 16          /* datagrams per recvmmsg()/sendmmsg() */

/* First tries of the queries of one receive batch: one sendmmsg() per upstream socket. */
struct send_batch {
	int n;
	struct dns_query *q[DNS_RX_BATCH];   /* each in the table on its slot already */
	int slot[DNS_RX_BATCH];              /* q[i]'s (q[i] may be gone once an earlier send failed) */
};

/* One query exchange (UDP or TCP): its flow record, and its bytes for the next try. */
struct dns_query {
	struct flow_record rec;
	struct dns_question q;
	char name[DNS_NAME_MAX];      /* rec.dst_name */
	uint16_t client_id, up_id;
	int fam;                      /* 0: IPv4 listener, 1: IPv6 (UDP) */
	int slot;                     /* the upstream UDP socket it waits on, or -1 */
	unsigned int tries;
	unsigned int ns_first;        /* the nameserver of try 0 (rotate: round robin; else 0) */
	int rcode;                    /* an upstream's SERVFAIL/REFUSED/NOTIMP kept for the end, or 0 */
	uint64_t deadline;            /* SERVFAIL then */
	uint64_t try_deadline;        /* the current try gives up then (the heap's key) */
	unsigned int heap_i;
	struct dns_tcp *sess;         /* NULL for UDP */
	struct dns_query *unext;      /* chain by (slot, upstream ID) */
	struct dns_client *client;    /* UDP: the client socket it came from */
	struct dns_query *cnext;      /* UDP: chain by (client socket, client ID), doubly linked */
	struct dns_query **cprev;
	struct dns_query *snext;      /* the session's list (TCP) */
	size_t len, cap;
	uint8_t *msg;                 /* the query; its ID is the upstream ID once sent */
};

struct dns_fwd {
	int epfd;                     /* the relay's epoll set (attach()); -1 before */
	int tag;                      /* its tag for our events */
	int listen[2];
	struct dns_ev ev_listen[2];
	struct dns_names *names;
	struct flow_hub *hub;
	uint64_t now;

	/* Upstreams */
	bool fixed;                   /* --dns: never re-read resolv.conf */
	struct egress egress;         /* --iface: upstream sockets come from egress_socket() */
	struct sockaddr_storage ns[RESOLV_MAX_NS];
	int n_ns;
	unsigned int attempts;
	bool rotate;                  /* resolv.conf's `options rotate`: try 0 goes round robin */
	unsigned int next_first;      /* rotate: the nameserver the next query starts with */
	uint64_t total_ms, per_try_ms;
	const char *path;
	struct stat st;               /* of the resolv.conf read last (dev, ino, size, mtime, ctime) */
	bool st_ok;
	uint64_t next_check;

	/* The child's resolv.conf (struct dns_fwd_config's np, child_files) */
	const struct netplan *np;
	int (*child_files)(void *arg, const int **fds);
	void *child_files_arg;
	char child_text[RESOLV_LINES_MAX + 256];   /* what its files should hold */
	size_t child_len;
	bool child_stale;             /* not written yet (the fds come once the command started) */
	uint64_t stale_until;         /* ... tried until then */
	uint64_t rewrite_at;          /* the same text again then (see child_rewrite()), or 0 */
	int up_fd[DNS_SLOTS];
	struct dns_ev ev_up[DNS_SLOTS];
	bool warned;

	/* Outstanding queries */
	struct dns_query *uhash[DNS_HASH], *chash[DNS_HASH];
	struct dns_client *clients[DNS_HASH];
	struct dns_client *client_pool;   /* DNS_MAX_QUERIES of them: each has a query outstanding */
	struct dns_client *client_free;
	uint64_t key[2];
	struct dns_query **heap;      /* every outstanding query, by try_deadline */
	unsigned int n_heap, n_udp;
	struct dns_query *spare;      /* ended ones, chained by unext, with their buffers */
	unsigned int n_spare;

	/* TCP sessions */
	struct dns_tcp *sessions;
	struct dns_tcp *dead;         /* closed in this batch, freed by run() (events may still name them) */
	unsigned int n_tcp;
	uint64_t next_sweep;

	uint8_t rnd[512];             /* random bytes for IDs and sockets, taken from the end */
	unsigned int rnd_left;
	uint8_t *buf;                 /* receive buffers (UDP batches) */
	struct send_batch sendq;      /* first sends wait here while the child's queries are read */
	bool batching;
	uint64_t dropped, formerr, dup, refused_full;
};

/* forward.c, for tcp.c */
uint64_t dns_max_tries(const struct dns_fwd *f);
uint16_t dns_rand16(struct dns_fwd *f);
/* dns_first_ns() - the nameserver a new query's first try goes to (round robin under rotate). */
unsigned int dns_first_ns(struct dns_fwd *f);
struct dns_query *dns_query_new(struct dns_fwd *f, const uint8_t *msg, size_t len,
				const struct dns_question *q, const struct sockaddr_storage *child,
				const struct sockaddr_storage *dst);
void dns_query_end(struct dns_fwd *f, struct dns_query *q, enum flow_outcome o, int err);
void dns_heap_update(struct dns_fwd *f, struct dns_query *q);
void dns_all_failed(struct dns_fwd *f, const char *why);
void dns_record_at_once(struct dns_fwd *f, const struct sockaddr_storage *child,
			const struct sockaddr_storage *dst, const char *rule, enum flow_outcome o, int err);

/* tcp.c */
void dns_tcp_adopt(struct dns_fwd *f, int fd, const struct sockaddr_storage *child,
		   const struct sockaddr_storage *dst);
void dns_tcp_event(struct dns_fwd *f, struct dns_ev *ev, uint32_t events);
void dns_tcp_timeout(struct dns_fwd *f, struct dns_query *q);
void dns_tcp_sweep(struct dns_fwd *f);
void dns_tcp_close_all(struct dns_fwd *f);
void dns_tcp_free_dead(struct dns_fwd *f);
void dns_ev_init(const struct dns_fwd *f, struct dns_ev *ev, enum dns_ev_kind kind, int index);

#endif
