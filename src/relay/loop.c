/* SPDX-License-Identifier: MIT */
/* relay/loop — the epoll loop that drives listeners, flows, signals and the sandbox's lifetime. */
#include "relay/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>

#include "util/log.h"

#define SWEEP_MS 1000
#define ACCEPT_PAUSE_MS 100
#define PIPE_RETRY_MS 10
#define DRAIN_MS 2000    /* after the command exits, bytes in flight get this long to leave */

uint64_t relay_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int relay_watch(struct relay *r, int fd, uint32_t events, struct ev_src *src)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void arm_tcp_listeners(struct relay *r, uint32_t events)
{
	for (int i = SB_TCP4; i <= SB_TCP6; i++) {
		struct epoll_event ev = { .events = events, .data.ptr = &r->ev_listen[i] };

		if (r->sb->listen_fd[i] >= 0)
			epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->sb->listen_fd[i], &ev);
	}
}

/*
 * relay_pause_accept() - out of fds or memory: stop accepting for a moment.  A level-triggered
 * listener that cannot be drained would otherwise spin the loop; queued connections wait in the
 * kernel's backlog until flows close.
 */
void relay_pause_accept(struct relay *r)
{
	if (r->accept_paused_until)
		return;
	r->accept_paused_until = r->now_ms + ACCEPT_PAUSE_MS;
	arm_tcp_listeners(r, 0);
	relay_note_fd_shortage(r);
}

/* One warning per 10 s at most: a hostile command must not be able to flood the terminal. */
void relay_note_fd_shortage(struct relay *r)
{
	if (!r->last_fd_warning || r->now_ms - r->last_fd_warning >= 10000) {
		r->last_fd_warning = r->now_ms;
		log_warn("out of file descriptors (%u connections open); traffic waits for some to close",
			 r->n_tcp);
	}
}

/* Size the tables from the fd budget: a TCP flow holds two sockets, plus pipes while busy. */
static void default_limits(struct relay_limits *lim)
{
	struct rlimit rl;
	rlim_t fds = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		fds = rl.rlim_cur;
	/* Two sockets per flow; pipes are borrowed only while bytes are in flight (and wait for a free
	 * fd rather than failing the flow), plus room for listeners, the pool and UDP. */
	lim->pipe_pool = 64;
	lim->max_tcp = fds > 512 ? (unsigned int)((fds - 64 - 2 * (rlim_t)lim->pipe_pool) / 2) : 32;
	if (lim->max_tcp > 200000)
		lim->max_tcp = 200000;
	lim->max_udp = fds > 256 ? (unsigned int)(fds / 8) : 16;
	if (lim->max_udp > 4096)
		lim->max_udp = 4096;
	lim->udp_idle_ms = 60000;
	lim->pipe_size = 256 * 1024;
	lim->max_pipes = 256;   /* 64 MiB of pipe buffers at most */
}

int relay_init(struct relay *r, struct sandbox *sb, int sigfd)
{
	int err;

	memset(r, 0, sizeof(*r));
	r->sb = sb;
	r->sigfd = sigfd;
	r->now_ms = relay_now_ms();
	r->udp_next_sweep = r->now_ms + SWEEP_MS;
	default_limits(&r->lim);
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0)
		return -errno;
	r->pipes = calloc(r->lim.pipe_pool, sizeof(*r->pipes));
	if (!r->pipes)
		return -ENOMEM;
	if ((err = udp_init(r)) < 0)
		return err;
	if ((err = guard_init(&r->guard, &sb->net)) < 0)
		return err;

	for (int i = 0; i < SB_NLISTEN; i++) {
		if (sb->listen_fd[i] < 0)
			continue;
		r->ev_listen[i].kind = (i == SB_TCP4 || i == SB_TCP6) ? EV_TCP_LISTEN : EV_UDP_LISTEN;
		r->ev_listen[i].index = i;
		if ((err = relay_watch(r, sb->listen_fd[i], EPOLLIN, &r->ev_listen[i])) < 0)
			return err;
	}
	r->ev_signal.kind = EV_SIGNAL;
	r->ev_gateway.kind = EV_GATEWAY;
	r->ev_guard.kind = EV_GUARD;
	if ((err = relay_watch(r, sigfd, EPOLLIN, &r->ev_signal)) < 0 ||
	    (err = relay_watch(r, sb->gw_pidfd, EPOLLIN, &r->ev_gateway)) < 0 ||
	    (err = relay_watch(r, guard_fd(&r->guard), EPOLLIN, &r->ev_guard)) < 0)
		return err;
	return 0;
}

static void on_signal(struct relay *r)
{
	struct signalfd_siginfo si;

	while (read(r->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		int sig = (int)si.ssi_signo;

		bool terminating = sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT;

		if (r->gateway_gone)
			continue;
		if (!r->sb->shared->cmd_started) {
			/* No command yet (from a terminal or not): a terminating signal ends the setup. */
			if (terminating && !r->abort_sig) {
				r->abort_sig = sig;
				sandbox_kill(r->sb);
			}
			continue;
		}
		/* From the terminal (SI_KERNEL): the command got it too if it shares our group. */
		if (si.ssi_code == SI_KERNEL && !r->sb->own_pgrp)
			continue;
		sandbox_forward_signal(r->sb, sig);
	}
}

/*
 * start_drain() - the command has exited.  What it wrote before exiting may still sit in the gateway
 * sockets or in P's pipes: stop accepting and let open flows finish for a moment, then stop.
 */
static void start_drain(struct relay *r)
{
	r->gateway_gone = true;
	r->drain_until = r->now_ms + DRAIN_MS;
	for (int i = 0; i < SB_NLISTEN; i++)
		if (r->sb->listen_fd[i] >= 0)
			epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->sb->listen_fd[i], NULL);
	if (r->abort_sig)
		r->done = true;
}

static void dispatch(struct relay *r, struct ev_src *src, uint32_t events)
{
	switch (src->kind) {
	case EV_TCP_LISTEN:
		tcp_accept(r, r->sb->listen_fd[src->index]);
		break;
	case EV_UDP_LISTEN:
		udp_listener_event(r, r->sb->listen_fd[src->index]);
		break;
	case EV_SIGNAL:
		on_signal(r);
		break;
	case EV_GATEWAY:
		r->exit_code = sandbox_finish(r->sb);
		if (r->abort_sig)
			r->exit_code = 128 + r->abort_sig;
		start_drain(r);
		break;
	case EV_GUARD:
		guard_on_notify(&r->guard);
		break;
	case EV_TCP_END:
		tcp_event(r, src, events);
		break;
	case EV_UDP_CHILD:
	case EV_UDP_HOST:
		udp_event(r, src, events);
		break;
	}
}

int relay_run(struct relay *r)
{
	struct epoll_event evs[256];

	while (!r->done) {
		int timeout = r->tcp_ready ? (r->pipe_starved ? PIPE_RETRY_MS : 0)
				: r->accept_paused_until ? ACCEPT_PAUSE_MS : SWEEP_MS;

		if (r->gateway_gone && timeout > 50)
			timeout = 50;
		int n = epoll_wait(r->epfd, evs, 256, timeout);

		if (n < 0 && errno != EINTR) {
			log_error("event loop failed: %s", strerror(errno));
			sandbox_kill(r->sb);
			r->exit_code = sandbox_finish(r->sb);
			return EXIT_SETUP;
		}
		r->now_ms = relay_now_ms();
		for (int i = 0; i < n; i++) {
			struct ev_src *src = evs[i].data.ptr;

			/* Flows are freed while handling earlier events of the same batch; the gateway
			 * exit is handled last so a closing batch is not misread. */
			if (src->kind == EV_GATEWAY)
				continue;
			dispatch(r, src, evs[i].events);
		}
		for (int i = 0; i < n; i++)
			if (((struct ev_src *)evs[i].data.ptr)->kind == EV_GATEWAY)
				dispatch(r, evs[i].data.ptr, evs[i].events);
		r->pipe_starved = false;
		tcp_run_ready(r);
		if (r->now_ms >= r->udp_next_sweep) {
			udp_sweep(r);
			r->udp_next_sweep = r->now_ms + SWEEP_MS;
		}
		tcp_reap(r);
		udp_reap(r);
		if (r->accept_paused_until && r->now_ms >= r->accept_paused_until && !r->gateway_gone) {
			r->accept_paused_until = 0;
			arm_tcp_listeners(r, EPOLLIN);
		}
		if (r->gateway_gone && (tcp_drained(r) || r->now_ms >= r->drain_until))
			r->done = true;
	}
	return r->exit_code;
}

void relay_free(struct relay *r)
{
	tcp_close_all(r);
	udp_close_all(r);
	guard_free(&r->guard);
	free(r->pipes);
	r->pipes = NULL;
	if (r->epfd >= 0)
		close(r->epfd);
	r->epfd = -1;
}
