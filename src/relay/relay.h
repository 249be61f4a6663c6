/* SPDX-License-Identifier: MIT */
/*
 * relay — P's event loop: every flow the child opens, relayed from the caller's namespace.
 *
 * Theory of operation.  The gateway kernel terminates the child's TCP connections and hands them to
 * transparent listeners whose fds P holds; getsockname() on an accepted socket is the destination the
 * child dialled.  P dials that destination itself (non-blocking) and then moves bytes between the two
 * sockets with splice() through a pipe, never copying payload to user space.  UDP arrives on a
 * transparent socket with IP_ORIGDSTADDR; each (child address, destination) pair becomes a flow with
 * a host-side socket and a gateway-side socket bound to the destination, so replies reach the child
 * from the address it wrote to.  One epoll loop, edge-triggered sockets, no thread per flow; every
 * table is bounded.
 */
#ifndef CHILDFLOW_RELAY_H
#define CHILDFLOW_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "policy/guard.h"
#include "sandbox/sandbox.h"

enum ev_kind {
	EV_TCP_LISTEN,
	EV_UDP_LISTEN,
	EV_SIGNAL,
	EV_GATEWAY,
	EV_GUARD,
	EV_TCP_END,
	EV_UDP_CHILD,
	EV_UDP_HOST,
};

/* First member of everything registered with epoll: says what the pointer is. */
struct ev_src {
	enum ev_kind kind;
	int index;
};

struct tcp_flow;
struct udp_flow;

struct relay_limits {
	unsigned int max_tcp;         /* concurrent TCP flows */
	unsigned int max_udp;         /* concurrent UDP flows; the least recently used is evicted */
	unsigned int udp_idle_ms;     /* a UDP flow with no traffic this long is closed */
	unsigned int pipe_size;       /* bytes per splice pipe */
	unsigned int pipe_pool;       /* idle pipes kept for reuse */
	unsigned int max_pipes;       /* pipes holding bytes at once (bounds kernel memory) */
};

struct relay_stats {
	uint64_t tcp_accepted, tcp_refused, tcp_failed;
	uint64_t udp_flows, udp_denied;
};

struct relay {
	int epfd;
	struct sandbox *sb;
	struct guard guard;
	struct relay_limits lim;
	struct relay_stats stats;
	uint64_t now_ms;

	struct ev_src ev_listen[SB_NLISTEN];
	struct ev_src ev_signal, ev_gateway, ev_guard;
	int sigfd;

	/* TCP */
	struct tcp_flow *tcp_all;     /* every live flow (teardown, accounting) */
	struct tcp_flow *tcp_ready;   /* flows that used up their budget and have more to move */
	struct tcp_flow *tcp_dead;    /* closed during this epoll batch; freed after it */
	unsigned int n_tcp;
	int (*pipes)[2];              /* idle pipe pool */
	unsigned int n_pipes;
	unsigned int pipes_in_use;

	/* UDP */
	struct udp_flow **udp_hash;
	unsigned int udp_buckets;
	uint32_t udp_seed;
	struct udp_flow *udp_lru_head, *udp_lru_tail;
	struct udp_flow *udp_dead;    /* closed during this epoll batch; freed after it */
	unsigned int n_udp;
	uint64_t udp_next_sweep;
	unsigned char *udp_buf;

	uint64_t accept_paused_until; /* out of fds: TCP listeners disarmed until then (0: armed) */
	bool pipe_starved;            /* a ready flow waits for a pipe: retry the ready list later */
	uint64_t last_fd_warning;

	bool gateway_gone;            /* the command has exited: only draining flows remain */
	uint64_t drain_until;
	int abort_sig;                /* a signal ended the setup: exit 128+N */

	bool done;
	int exit_code;
};

/* Set up the loop around a started sandbox.  Returns 0 or -errno. */
int relay_init(struct relay *r, struct sandbox *sb, int sigfd);

/* Run until the command has exited; returns childflow's exit code. */
int relay_run(struct relay *r);

void relay_free(struct relay *r);

/* Internal to relay/: */
uint64_t relay_now_ms(void);
int relay_watch(struct relay *r, int fd, uint32_t events, struct ev_src *src);
void relay_pause_accept(struct relay *r);
void relay_note_fd_shortage(struct relay *r);
void tcp_accept(struct relay *r, int lfd);
void tcp_event(struct relay *r, struct ev_src *src, uint32_t events);
void tcp_run_ready(struct relay *r);
void tcp_close_all(struct relay *r);
bool tcp_drained(const struct relay *r);
void tcp_reap(struct relay *r);
void udp_listener_event(struct relay *r, int lfd);
void udp_event(struct relay *r, struct ev_src *src, uint32_t events);
void udp_sweep(struct relay *r);
void udp_close_all(struct relay *r);
void udp_reap(struct relay *r);
int udp_init(struct relay *r);

#endif
