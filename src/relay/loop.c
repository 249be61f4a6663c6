/* SPDX-License-Identifier: MIT */
/*
 * relay/loop — the epoll loop that drives listeners, flows, signals and the backend's lifetime.
 *
 * States of the loop:
 *   RELAYING  listeners armed (disarmed for ACCEPT_PAUSE_MS when fds run out), flows move
 *   DRAINING  the command's tree has exited (lifetime fd readable): the listeners are swept one last
 *             time and removed, flows finish what the child sent, for at most DRAIN_MS; a signal
 *             ends the drain at once
 *   DONE      the loop returns the backend's exit code
 */
#include "relay/internal.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
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
#define GATE_WAIT_POLL_MS 20
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

bool relay_own_listener(int k)
{
	return k == BE_TCP4 || k == BE_TCP6 || k == BE_UDP4 || k == BE_UDP6;
}

int relay_probe(struct relay *r, const struct connector *conn)
{
	r->now_ms = relay_now_ms();
	return tcp_probe(r, conn);
}

static void arm_tcp_listeners(struct relay *r, uint32_t events)
{
	for (int i = BE_TCP4; i <= BE_TCP6; i++) {
		struct epoll_event ev = { .events = events, .data.ptr = &r->ev_listen[i] };

		if (r->listen_fd[i] >= 0)
			epoll_ctl(r->epfd, EPOLL_CTL_MOD, r->listen_fd[i], &ev);
	}
}

/*
 * relay_pause_accept() - out of fds or memory, or too many young connects pending: stop accepting
 * for a moment.  A level-triggered listener that cannot be drained would otherwise spin the loop;
 * queued connections wait in the kernel's backlog until flows close.
 */
void relay_pause_accept(struct relay *r, enum shortage why)
{
	if (r->accept_paused_until)
		return;
	r->accept_paused_until = r->now_ms + ACCEPT_PAUSE_MS;
	/* With a gate, sockets waiting in accept() belong to flows already connected: keep taking them. */
	if (r->gate_fd < 0 || why == SHORT_FDS)
		arm_tcp_listeners(r, 0);
	relay_shortage(r, why);
}

/*
 * relay_shortage() - a table or the fd budget ran out.  Told once per run and kind (a hostile command
 * must not be able to flood the terminal; the log never blocks, see util/log.c), counted always.
 */
void relay_shortage(struct relay *r, enum shortage s)
{
	static const char *const what[SHORT_N] = {
		[SHORT_FDS] = "out of file descriptors",
		[SHORT_TCP] = "too many TCP connections open",
		[SHORT_UDP] = "too many active UDP flows",
		[SHORT_CONNECTING] = "too many TCP connects pending upstream",
	};

	if (r->shortage_told[s])
		return;
	r->shortage_told[s] = true;
	log_warn("%s (%u TCP, %u UDP flows; limits %u, %u): new flows wait or are refused",
		 what[s], r->n_tcp, r->n_udp, r->lim.max_tcp, r->lim.max_udp);
}

static unsigned int clampu(unsigned long v, unsigned int lo, unsigned int hi)
{
	return v < lo ? lo : v > hi ? hi : (unsigned int)v;
}

void relay_limits_from_fds(struct relay_limits *lim, unsigned long fds, unsigned int backend_fds)
{
	unsigned long avail, pipe_fds, udp_fds;

	memset(lim, 0, sizeof(*lim));
	lim->fds = clampu(fds, 0, 1u << 30);
	/* The relay's own (epoll, signalfd, the policy's netlink sockets, the log) and the backend's. */
	lim->reserve = RELAY_OWN_FDS + backend_fds;
	/* Below a few hundred fds the tables' floors over-commit; shortages then wait or refuse. */
	avail = fds > lim->reserve + 128ul ? fds - lim->reserve : 128;
	lim->max_pipes = clampu(avail / 16, 4, 256);  /* 64 MiB of pipe buffers at most */
	lim->pipe_pool = clampu(lim->max_pipes / 4, 1, 64);
	pipe_fds = 2ul * (lim->max_pipes + lim->pipe_pool);
	lim->max_udp = clampu(avail / 16, 8, 4096);   /* a sixteenth: most trees hold far more TCP */
	udp_fds = 2ul * lim->max_udp;
	lim->max_tcp = clampu(avail > pipe_fds + udp_fds ? (avail - pipe_fds - udp_fds) / 2 : 0, 16, 65536);
	/* A quarter of the table, but room for a browser-sized burst even with few fds. */
	lim->max_connecting = clampu(lim->max_tcp / 4 > 256 ? lim->max_tcp / 4 : 256, 8, lim->max_tcp);
	lim->connect_ms = 60000;
	lim->yield_ms = 200;
	lim->udp_idle_ms = 60000;
	lim->udp_keep_ms = 2000;
	lim->udp_pending = 256;
	lim->pipe_size = 256 * 1024;
}

static void default_limits(struct relay_limits *lim, unsigned int backend_fds)
{
	struct rlimit rl;
	unsigned long fds = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		fds = (unsigned long)rl.rlim_cur;
	relay_limits_from_fds(lim, fds, backend_fds);
}

static int relay_setup(struct relay *r)
{
	struct ctx *c = r->c;
	const struct backend_ops *be = c->be.ops;
	int err, fd;

	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0)
		return -errno;
	if ((err = tcp_init(r)) < 0 || (err = udp_init(r)) < 0 || (err = gate_init(r)) < 0 ||
	    (err = echo_init(r)) < 0)
		return err;
	if (be->inject_fd) {
		r->inject_fd[0] = be->inject_fd(c->be.b, AF_INET);
		r->inject_fd[1] = be->inject_fd(c->be.b, AF_INET6);
	}
	for (int i = 0; i < BE_NLISTEN; i++) {
		if (!relay_own_listener(i))
			continue;
		r->listen_fd[i] = be->listener(c->be.b, (enum be_listener)i);
		if (r->listen_fd[i] < 0)
			continue;
		r->ev_listen[i].kind = (i == BE_TCP4 || i == BE_TCP6) ? EV_TCP_LISTEN : EV_UDP_LISTEN;
		if (r->ev_listen[i].kind == EV_TCP_LISTEN)
			tcp_listener_opts(r, r->listen_fd[i]);
		r->ev_listen[i].index = i;
		if ((err = relay_watch(r, r->listen_fd[i], EPOLLIN, &r->ev_listen[i])) < 0)
			return err;
	}
	r->ev_signal.kind = EV_SIGNAL;
	r->ev_lifetime.kind = EV_LIFETIME;
	r->ev_ctl.kind = EV_BACKEND_CTL;
	r->ev_policy.kind = EV_POLICY;
	if ((err = relay_watch(r, r->sigfd, EPOLLIN, &r->ev_signal)) < 0 ||
	    (err = relay_watch(r, be->lifetime_fd(c->be.b), EPOLLIN, &r->ev_lifetime)) < 0 ||
	    (err = relay_watch(r, policy_fd(&c->policy), EPOLLIN, &r->ev_policy)) < 0)
		return err;
	fd = be->ctl_fd(c->be.b);
	if (fd >= 0 && (err = relay_watch(r, fd, EPOLLIN, &r->ev_ctl)) < 0)
		return err;
	if (c->service.ops && (err = c->service.ops->attach(c->service.priv, r->epfd, EV_SERVICE)) < 0)
		return err;
	return 0;
}

int relay_new(struct relay **rp, struct ctx *c, int sigfd)
{
	struct relay *r = calloc(1, sizeof(*r));
	int err;

	*rp = NULL;
	if (!r)
		return -ENOMEM;
	r->c = c;
	r->sigfd = sigfd;
	r->epfd = -1;
	r->gate_fd = -1;
	r->inject_fd[0] = r->inject_fd[1] = -1;
	for (int i = 0; i < BE_NLISTEN; i++)
		r->listen_fd[i] = -1;
	r->now_ms = relay_now_ms();
	r->next_sweep = r->now_ms + SWEEP_MS;
	default_limits(&r->lim, c->be.ops->reserved_fds(c->be.b) +
		       (c->service.ops ? c->service.ops->reserved_fds(c->service.priv) : 0));
	if ((err = relay_setup(r)) < 0) {
		relay_free(r);
		return err;
	}
	c->relay = r;
	*rp = r;
	return 0;
}

int relay_observe(struct relay *r, const struct flow_observer *o)
{
	return flow_observe(&r->hub, o);
}

int relay_set_tap(struct relay *r, const struct flow_tap *t)
{
	if (r->hub.tap)
		return -EBUSY;
	r->hub.tap = t;
	return 0;
}

void relay_set_child_sockbuf(struct relay *r, int bytes)
{
	r->child_sockbuf = bytes;
}

int relay_add_hook(struct relay *r, const struct relay_hook *h)
{
	int i = r->n_hooks, err;

	if (i >= RELAY_MAX_HOOKS)
		return -ENOSPC;
	r->hook[i] = *h;
	r->ev_hook[i] = (struct ev_src){ .kind = EV_HOOK, .index = i };
	if ((err = relay_watch(r, h->fd, EPOLLIN, &r->ev_hook[i])) < 0)
		return err;
	r->n_hooks++;
	return 0;
}

bool relay_hold(struct relay *r)
{
	for (int i = 0; i < r->n_hooks; i++)
		if (r->hook[i].hold && r->hook[i].hold(r->hook[i].priv, r->now_ms))
			return true;
	return false;
}

/* The hooks whose deadline passed run; Return: the earliest deadline left (UINT64_MAX: none). */
static uint64_t run_hooks_due(struct relay *r, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (int i = 0; i < r->n_hooks; i++) {
		uint64_t at = r->hook[i].deadline(r->hook[i].priv);

		if (at <= now) {
			r->hook[i].run(r->hook[i].priv, now);
			at = r->hook[i].deadline(r->hook[i].priv);
		}
		if (at < next)
			next = at;
	}
	return next;
}

static void on_signal(struct relay *r)
{
	struct signalfd_siginfo si;

	while (read(r->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		int sig = (int)si.ssi_signo;
		int err;

		if (r->command_gone) {
			/* A second Ctrl-C (or any terminating signal) cuts the drain short. */
			if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT)
				r->done = true;
			continue;
		}
		err = r->c->be.ops->signal(r->c->be.b, sig, si.ssi_code == SI_KERNEL);
		if (err < 0)
			log_debug("signal %d could not be passed to the command: %s", sig, strerror(-err));
	}
}

/*
 * start_drain() - the command has exited.  What it wrote before exiting may still sit in the
 * interception sockets or in P's pipes: take what the listeners still hold, stop accepting, and let
 * open flows finish for a moment.
 */
static void start_drain(struct relay *r)
{
	r->command_gone = true;
	r->drain_until = r->now_ms + DRAIN_MS;
	r->exit_code = r->c->be.ops->finish(r->c->be.b);
	for (int i = 0; i < BE_NLISTEN; i++) {
		if (r->listen_fd[i] < 0)
			continue;
		if (i == BE_TCP4 || i == BE_TCP6)
			tcp_accept(r, r->listen_fd[i]);
		else
			udp_listener_event(r, r->listen_fd[i]);
		epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->listen_fd[i], NULL);
	}
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->c->be.ops->lifetime_fd(r->c->be.b), NULL);
}

static void dispatch(struct relay *r, struct ev_src *src, uint32_t events)
{
	switch (src->kind) {
	case EV_TCP_LISTEN:
		tcp_accept(r, r->listen_fd[src->index]);
		break;
	case EV_UDP_LISTEN:
		udp_listener_event(r, r->listen_fd[src->index]);
		break;
	case EV_SIGNAL:
		on_signal(r);
		break;
	case EV_LIFETIME:
		start_drain(r);
		break;
	case EV_BACKEND_CTL:
		if (r->c->be.ops->on_ctl(r->c->be.b))
			udp_retry_pending(r);
		break;
	case EV_POLICY:
		policy_on_notify(&r->c->policy);
		break;
	case EV_TCP_END:
		tcp_event(r, src, events);
		break;
	case EV_UDP_CHILD:
	case EV_UDP_HOST:
		udp_event(r, src, events);
		break;
	case EV_SERVICE:
		/* The service's own token (relay/service.h): its first member is the tag. */
		if (r->c->service.ops) {
			r->c->service.ops->event(r->c->service.priv, &r->hub,
						 (struct relay_service_ev *)(void *)src, events, r->now_ms);
			r->service_events = true;
		}
		break;
	case EV_GATE:
		gate_event(r);
		break;
	case EV_ECHO_QUEUE:
		echo_queue_event(r);
		break;
	case EV_ECHO_HOST:
		echo_host_event(r, src, events);
		break;
	case EV_HOOK:
		r->hook[src->index].run(r->hook[src->index].priv, r->now_ms);
		break;
	}
}

int relay_run(struct relay *r)
{
	struct epoll_event evs[256];

	while (!r->done) {
		/* Work left by the end of the last turn (tcp_accept_passed() may leave a NAT check or
		 * a verdict) is not waited on. */
		bool pending = r->tcp_ready || r->tcp_verify || r->gate_out_len;
		int timeout = pending ? 0 : r->accept_paused_until ? ACCEPT_PAUSE_MS : SWEEP_MS;
		uint64_t svc_at = r->c->service.ops ? r->c->service.ops->deadline(r->c->service.priv) : UINT64_MAX;
		uint64_t wake_at = run_hooks_due(r, relay_now_ms());

		if (svc_at < wake_at)
			wake_at = svc_at;

		if (r->tcp_paused && timeout > RELAY_HOLD_POLL_MS)
			timeout = RELAY_HOLD_POLL_MS;   /* a hook that stopped moving is not waited for */
		if (r->n_wait && timeout > GATE_WAIT_POLL_MS)
			timeout = GATE_WAIT_POLL_MS;   /* a waiting SYN may begin once the oldest connect yields */

		if (r->command_gone && timeout > 50)
			timeout = 50;
		if (wake_at != UINT64_MAX) {
			uint64_t now = relay_now_ms();
			uint64_t wait = wake_at > now ? wake_at - now : 0;

			if (wait < (uint64_t)timeout)
				timeout = (int)wait;
		}
		int n = epoll_wait(r->epfd, evs, 256, timeout);

		if (n < 0 && errno != EINTR) {
			log_error("event loop failed: %s", strerror(errno));
			r->c->be.ops->kill(r->c->be.b);
			if (!r->command_gone)
				r->c->be.ops->finish(r->c->be.b);
			return EXIT_SETUP;
		}
		r->now_ms = relay_now_ms();
		r->service_events = false;
		for (int i = 0; i < n; i++) {
			struct ev_src *src = evs[i].data.ptr;

			/* Flows are freed while handling earlier events of the same batch; the end of the
			 * command is handled last so a closing batch is not misread. */
			if (src->kind == EV_LIFETIME)
				continue;
			dispatch(r, src, evs[i].events);
		}
		for (int i = 0; i < n; i++)
			if (((struct ev_src *)evs[i].data.ptr)->kind == EV_LIFETIME && !r->command_gone)
				dispatch(r, evs[i].data.ptr, evs[i].events);
		if (r->c->service.ops && (r->service_events || r->now_ms >= svc_at))
			r->c->service.ops->run(r->c->service.priv, &r->hub, r->now_ms);
		tcp_verify(r);
		tcp_resume(r);
		tcp_run_ready(r);
		gate_admit(r);
		gate_flush(r);
		tcp_accept_passed(r);
		echo_flush(r);
		if (r->now_ms >= r->next_sweep) {
			tcp_sweep(r);
			gate_sweep(r);
			udp_sweep(r);
			echo_sweep(r);
			/* After a burst, give freed flow memory back to the system. */
			if (!r->n_tcp && !r->n_udp && r->trim_id != r->hub.next_id) {
				malloc_trim(0);
				r->trim_id = r->hub.next_id;
			}
			r->next_sweep = r->now_ms + SWEEP_MS;
		}
		tcp_reap(r);
		udp_reap(r);
		echo_reap(r);
		if (r->accept_paused_until && r->now_ms >= r->accept_paused_until && !r->command_gone) {
			r->accept_paused_until = 0;
			arm_tcp_listeners(r, EPOLLIN);
		}
		if (r->command_gone && (tcp_drained(r) || r->now_ms >= r->drain_until))
			r->done = true;
	}
	return r->exit_code;
}

void relay_free(struct relay *r)
{
	const struct relay_stats *st;

	if (!r)
		return;
	st = &r->stats;
	log_debug("relay: tcp %llu accepted, %llu denied, %llu failed, %llu refused (table full), %llu "
		  "timed out, %llu yielded; udp %llu flows, %llu denied, %llu evicted, %llu dropped; "
		  "%llu bytes copied without a pipe; SYN gate %llu held, %llu rejected or dropped, %llu "
		  "retransmissions, %llu unparsed, %llu dropped busy, %llu lost; %llu echo answers",
		  (unsigned long long)st->tcp_accepted, (unsigned long long)st->tcp_denied,
		  (unsigned long long)st->tcp_failed, (unsigned long long)st->tcp_full,
		  (unsigned long long)st->tcp_timeouts, (unsigned long long)st->tcp_yielded,
		  (unsigned long long)st->udp_flows, (unsigned long long)st->udp_denied,
		  (unsigned long long)st->udp_evicted, (unsigned long long)st->udp_dropped,
		  (unsigned long long)st->copied, (unsigned long long)st->tcp_gated,
		  (unsigned long long)st->gate_rejected, (unsigned long long)st->gate_dups,
		  (unsigned long long)st->gate_unparsed, (unsigned long long)st->gate_busy,
		  (unsigned long long)st->gate_lost, (unsigned long long)st->echo_answers);
	if (r->c && r->c->service.ops)
		r->c->service.ops->stop(r->c->service.priv, &r->hub);
	tcp_close_all(r);
	udp_close_all(r);
	if (r->gate_fd >= 0)
		gate_flush(r);   /* the SYNs of flows cut at exit */
	gate_free(r);
	echo_free(r);
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->c && r->c->relay == r)
		r->c->relay = NULL;
	free(r);
}
