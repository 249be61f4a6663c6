/* SPDX-License-Identifier: MIT */
/*
 * sandbox — P's side of the rootless backend (the process tree is in sandbox.h).
 *
 * States of P (messages are gwproto.h's, on ctl_fd):
 *   FORK       fork G (subreaper first: orphaned C and init come back to us); pidfd on G
 *   MAP        <- HELLO_UNSHARED: write G's maps (idmap_apply.c)     -> IDMAP_PLAN (C's maps)
 *   COLLECT    <- LISTENERS (the transparent listeners), <- UDP_SOCKETS (SANDBOX_POOL_FILL N1
 *              UDP sockets per family, so that the first flows never wait), <- CHILD_NETNS (a
 *              reference to N2); ctl_fd becomes non-blocking               -> started
 *   RUNNING    (backend_ops) ns_socket() takes from a pool, never blocks: below the low-water
 *              mark a refill is asked for, on_ctl() takes the answers (and CMD_STARTED, which
 *              releases signals queued before init's pid was known)
 *   FINISH     reap G (its pidfd became readable, or we killed it), then C and init if they were
 *              orphaned to us; never anything else: other children of P (inherited across exec)
 *              are none of our business
 * Any failure before RUNNING prints one line (here, or in G/C/init which set setup_failed), kills
 * G, reaps what we made and returns -1 (exit 125).
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "sandbox/gwproto.h"
#include "util/log.h"

const int sandbox_forwarded_signals[] = {
	SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
};
const int sandbox_n_forwarded_signals =
	(int)(sizeof(sandbox_forwarded_signals) / sizeof(sandbox_forwarded_signals[0]));

/* An orphaned C or init dies by PDEATHSIG at once; this only bounds the wait if it does not. */
#define ORPHAN_WAIT_MS 1000

void sandbox_setup_fail(struct sandbox_shared *sh)
{
	atomic_store_explicit(&sh->setup_failed, 1, memory_order_release);
	_exit(EXIT_SETUP);
}

void sandbox_ignore_forwarded_signals(void)
{
	sigset_t none;

	for (int i = 0; i < sandbox_n_forwarded_signals; i++)
		signal(sandbox_forwarded_signals[i], SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static bool setup_failed(const struct sandbox *sb)
{
	return atomic_load_explicit(&sb->shared->setup_failed, memory_order_acquire) != 0;
}

/* ---------- the pool of N1 sockets ---------- */

static int pool_family(int k)
{
	return k == BE_SOCK_UDP6 ? AF_INET6 : AF_INET;
}

static bool pool_offered(const struct sandbox *sb, int k)
{
	return k != BE_SOCK_UDP6 || sb->net.ipv6;
}

/* Ask G for sockets until held + in flight reach SANDBOX_POOL_FILL, if they are below @low. */
static int pool_refill(struct sandbox *sb, int k, int low)
{
	struct sandbox_pool *p = &sb->pool[k];

	if (sb->ctl_fd < 0 || !pool_offered(sb, k) || p->n + p->inflight >= low)
		return 0;
	while (p->n + p->inflight < SANDBOX_POOL_FILL) {
		int want = SANDBOX_POOL_FILL - p->n - p->inflight;
		struct gw_msg rq = { .op = GW_UDP_SOCKETS, .family = (uint16_t)pool_family(k) };
		int r;

		rq.count = (uint16_t)(want > FDPASS_MAX ? FDPASS_MAX : want);
		r = gw_send(sb->ctl_fd, rq, NULL, 0, NULL, 0);
		if (r < 0)
			return r == -EAGAIN ? 0 : r;   /* a full socket: the next take retries */
		p->inflight += rq.count;
	}
	return 0;
}

/* A refill arrived: keep what fits (it always does: we never ask beyond SANDBOX_POOL_MAX). */
static bool pool_take_reply(struct sandbox *sb, const struct gw_msg *m, const void *payload,
			    const int *fds, int nfds)
{
	int k = m->family == AF_INET6 ? BE_SOCK_UDP6 : BE_SOCK_UDP4;
	struct sandbox_pool *p = &sb->pool[k];
	struct gw_udp_reply body;

	if ((m->family != AF_INET && m->family != AF_INET6) || m->len != sizeof(body) ||
	    m->count != nfds) {
		gw_close_fds(fds, nfds);
		return false;
	}
	memcpy(&body, payload, sizeof(body));
	p->inflight -= body.asked < p->inflight ? body.asked : p->inflight;
	for (int i = 0; i < nfds; i++) {
		if (p->n < SANDBOX_POOL_MAX)
			p->fd[p->n++] = fds[i];
		else
			close(fds[i]);
	}
	if (m->err < 0)
		p->err = m->err;
	return nfds > 0 || m->err < 0;
}

static void pool_free(struct sandbox *sb)
{
	for (int k = 0; k < BE_SOCK_N; k++) {
		if (pool_offered(sb, k) && sb->pool[k].taken)
			log_debug("N1 UDP%s socket pool: %lu taken, found empty %lu times, %d fds held at the end",
				  k == BE_SOCK_UDP6 ? "v6" : "v4", sb->pool[k].taken, sb->pool[k].empty,
				  sb->pool[k].n);
		gw_close_fds(sb->pool[k].fd, sb->pool[k].n);
		sb->pool[k].n = 0;
		sb->pool[k].inflight = 0;
	}
}

/* ---------- signals ---------- */

/* Pass @sig to init, or queue it while init does not exist yet.  Return: 0 or -errno. */
static int deliver_signal(struct sandbox *sb, int sig)
{
	pid_t init = atomic_load_explicit(&sb->shared->init_pid, memory_order_acquire);

	if (init > 0)
		return kill(init, sig) == 0 ? 0 : -errno;
	if (!atomic_load_explicit(&sb->shared->cmd_started, memory_order_acquire)) {
		/* init blocks these from birth: queued here, they reach the command when it exists. */
		sigaddset(&sb->queued, sig);
		return 0;
	}
	return -ESRCH;   /* init has exited: the command is gone */
}

static void flush_queued_signals(struct sandbox *sb)
{
	if (atomic_load_explicit(&sb->shared->init_pid, memory_order_acquire) <= 0)
		return;
	for (int i = 0; i < sandbox_n_forwarded_signals; i++) {
		int sig = sandbox_forwarded_signals[i];

		int r;

		if (sigismember(&sb->queued, sig) != 1)
			continue;
		sigdelset(&sb->queued, sig);
		if ((r = deliver_signal(sb, sig)) < 0)
			log_debug("signal %d could not be passed to the command: %s", sig, strerror(-r));
	}
}

/* ---------- messages from G after the listeners ---------- */

/*
 * read_ctl() - handle one message from G (@flags: 0 or MSG_DONTWAIT).
 * Return: 1 when sockets (or a failed refill) arrived, 0 otherwise, or -errno (-EAGAIN: nothing
 * more; -EPIPE: G is gone).
 */
static int read_ctl(struct sandbox *sb, int flags)
{
	unsigned char payload[GW_MAX_PAYLOAD];
	int fds[FDPASS_MAX], nfds = 0;
	struct gw_msg m;
	int r = gw_recv(sb->ctl_fd, &m, payload, sizeof(payload), fds, FDPASS_MAX, &nfds, flags);

	if (r == -EBADMSG)
		return 0;   /* fds already closed; an answer lost is an answer the next refill gives */
	if (r < 0)
		return r;
	switch (m.op) {
	case GW_UDP_SOCKETS:
		return pool_take_reply(sb, &m, payload, fds, nfds) ? 1 : 0;
	case GW_CMD_STARTED:
		gw_close_fds(fds, nfds);
		flush_queued_signals(sb);
		return 0;
	default:
		gw_close_fds(fds, nfds);
		return 0;
	}
}

/* ---------- setup ---------- */

static int recv_listeners(struct sandbox *sb)
{
	uint8_t kinds[BE_NLISTEN];
	int fds[FDPASS_MAX], nfds = 0;
	struct gw_msg m;

	if (gw_recv(sb->ctl_fd, &m, kinds, sizeof(kinds), fds, FDPASS_MAX, &nfds, 0) < 0)
		return -1;
	if (m.op != GW_LISTENERS || m.count != nfds || m.len != (uint32_t)nfds) {
		gw_close_fds(fds, nfds);
		return -1;
	}
	for (int i = 0; i < nfds; i++) {
		if (kinds[i] < BE_NLISTEN && sb->listen_fd[kinds[i]] < 0)
			sb->listen_fd[kinds[i]] = fds[i];
		else
			close(fds[i]);
	}
	return 0;
}

static int recv_child_netns(struct sandbox *sb)
{
	int fd = -1, nfds = 0;
	struct gw_msg m;

	if (gw_recv(sb->ctl_fd, &m, NULL, 0, &fd, 1, &nfds, 0) < 0)
		return -1;
	if (m.op != GW_CHILD_NETNS || nfds != 1) {
		gw_close_fds(&fd, nfds);
		return -1;
	}
	sb->child_netns_fd = fd;
	return 0;
}

/*
 * recv_initial_pool() - G sends SANDBOX_POOL_FILL sockets per offered family right after the
 * listeners, unasked, so that the first flows never wait.
 */
static int recv_initial_pool(struct sandbox *sb)
{
	for (int k = 0; k < BE_SOCK_N; k++)
		sb->pool[k].inflight = pool_offered(sb, k) ? SANDBOX_POOL_FILL : 0;
	while (sb->pool[BE_SOCK_UDP4].inflight || sb->pool[BE_SOCK_UDP6].inflight) {
		unsigned char payload[GW_MAX_PAYLOAD];
		int fds[FDPASS_MAX], nfds = 0;
		struct gw_msg m;

		if (gw_recv(sb->ctl_fd, &m, payload, sizeof(payload), fds, FDPASS_MAX, &nfds, 0) < 0)
			return -1;
		if (m.op != GW_UDP_SOCKETS || !pool_take_reply(sb, &m, payload, fds, nfds) || m.err) {
			gw_close_fds(fds, m.op == GW_UDP_SOCKETS ? 0 : nfds);
			return -1;
		}
	}
	return 0;
}

static int send_plan(struct sandbox *sb, const struct idmap_plan *plan)
{
	char buf[sizeof(plan->inner_uid) + sizeof(plan->inner_gid)];
	size_t ul = strlen(plan->inner_uid) + 1, gl = strlen(plan->inner_gid) + 1;

	memcpy(buf, plan->inner_uid, ul);
	memcpy(buf + ul, plan->inner_gid, gl);
	return gw_send(sb->ctl_fd, (struct gw_msg){ .op = GW_IDMAP_PLAN }, buf, ul + gl, NULL, 0);
}

/* C or init, orphaned to P when G died early: wait (bounded) for it to die and reap it. */
static void reap_orphan(atomic_int *slot)
{
	pid_t pid = atomic_load_explicit(slot, memory_order_acquire);
	int pfd;

	if (pid <= 0)
		return;
	pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pfd >= 0) {
		struct pollfd pf = { .fd = pfd, .events = POLLIN };

		while (poll(&pf, 1, ORPHAN_WAIT_MS) < 0 && errno == EINTR)
			;
		close(pfd);
	}
	/* Not ours (still G's or C's, or reaped by them): ECHILD, and nothing happens. */
	waitpid(pid, NULL, WNOHANG | __WALL);
}

/* Reap G, then whatever of C and init came back to us.  Return: G's wait status, or -1. */
static int reap_tree(struct sandbox *sb)
{
	int st = -1;

	if (sb->finished || sb->gw_pid <= 0)
		return -1;
	while (waitpid(sb->gw_pid, &st, __WALL) < 0)
		if (errno != EINTR) {
			st = -1;
			break;
		}
	sb->finished = true;
	reap_orphan(&sb->shared->child_pid);
	reap_orphan(&sb->shared->init_pid);
	if (sb->gw_pidfd >= 0)
		close(sb->gw_pidfd);
	sb->gw_pidfd = -1;
	return st;
}

static void sandbox_kill(struct sandbox *sb)
{
	/* G's death takes C (PDEATHSIG), whose death takes init, whose death empties the PID ns. */
	if (sb->gw_pid > 0 && !sb->finished)
		kill(sb->gw_pid, SIGKILL);
	sb->killed = true;
}

/* Close everything P holds of the sandbox (after reap_tree). */
static void release_fds(struct sandbox *sb)
{
	for (int i = 0; i < BE_NLISTEN; i++) {
		if (sb->listen_fd[i] >= 0)
			close(sb->listen_fd[i]);
		sb->listen_fd[i] = -1;
	}
	if (sb->child_netns_fd >= 0)
		close(sb->child_netns_fd);
	sb->child_netns_fd = -1;
	if (sb->ctl_fd >= 0)
		close(sb->ctl_fd);
	sb->ctl_fd = -1;
	pool_free(sb);
}

int sandbox_start(const struct sandbox_config *cfg, struct sandbox *sb)
{
	struct idmap_plan plan;
	bool reported = false;
	int sp[2];
	pid_t p = getpid();

	memset(sb, 0, sizeof(*sb));
	sb->gw_pidfd = sb->ctl_fd = sb->child_netns_fd = -1;
	for (int i = 0; i < BE_NLISTEN; i++)
		sb->listen_fd[i] = -1;
	sigemptyset(&sb->queued);
	netplan_init(&sb->net, cfg->ipv6);
	sb->own_pgrp = cfg->own_pgrp;
	/* Orphans of the sandbox (C and init, when G is killed) become our children, to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	sb->shared = mmap(NULL, sizeof(*sb->shared), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sb->shared == MAP_FAILED) {
		log_error("cannot allocate shared memory: %s", strerror(errno));
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		log_error("cannot create a socket pair: %s", strerror(errno));
		munmap(sb->shared, sizeof(*sb->shared));
		return -1;
	}
	sb->gw_pid = fork();
	if (sb->gw_pid < 0) {
		log_error("cannot fork: %s", strerror(errno));
		close(sp[0]);
		close(sp[1]);
		munmap(sb->shared, sizeof(*sb->shared));
		return -1;
	}
	if (sb->gw_pid == 0) {
		close(sp[0]);
		gateway_main(cfg, &sb->net, sb->shared, sp[1], p);
	}
	close(sp[1]);
	sb->ctl_fd = sp[0];
	sb->gw_pidfd = (int)syscall(SYS_pidfd_open, sb->gw_pid, 0);
	if (sb->gw_pidfd < 0) {
		log_error("cannot watch the gateway process (pidfd_open needs Linux 5.3): %s",
			  strerror(errno));
		reported = true;
		goto fail;
	}

	if (gw_expect(sb->ctl_fd, GW_HELLO_UNSHARED) < 0)
		goto fail;
	if (idmap_apply_gateway(sb->gw_pid, cfg->idmap, &cfg->orig_mask, &plan) < 0) {
		reported = true;
		goto fail;
	}
	log_debug("ids mapped (%s plan)", plan.mode == IDMAP_ROOT ? "root" :
		  plan.mode == IDMAP_HELPER ? "newuidmap" : "direct");
	if (send_plan(sb, &plan) < 0 || recv_listeners(sb) < 0 || recv_initial_pool(sb) < 0 ||
	    recv_child_netns(sb) < 0)
		goto fail;
	/* From now on P's event loop reads ctl_fd: never block on it. */
	if (fcntl(sb->ctl_fd, F_SETFL, fcntl(sb->ctl_fd, F_GETFL) | O_NONBLOCK) == 0)
		return 0;
	log_error("cannot make the gateway's socket non-blocking: %s", strerror(errno));
	reported = true;
fail:
	sandbox_kill(sb);
	reap_tree(sb);
	if (!reported && !setup_failed(sb))
		log_error("the sandbox could not be set up (its gateway process stopped early)");
	release_fds(sb);
	munmap(sb->shared, sizeof(*sb->shared));
	sb->shared = NULL;
	return -1;
}

/* ---------- the backend operations (backend/backend.h) ---------- */

static struct sandbox *sb_of(struct backend *b)
{
	return (struct sandbox *)b;
}

static const struct sandbox *csb_of(const struct backend *b)
{
	return (const struct sandbox *)b;
}

static int be_listener(const struct backend *b, enum be_listener k)
{
	return k < BE_NLISTEN ? csb_of(b)->listen_fd[k] : -1;
}

static int be_ns_socket(struct backend *b, enum be_sock_kind k)
{
	struct sandbox *sb = sb_of(b);
	struct sandbox_pool *p;
	int r;

	if ((int)k < 0 || k >= BE_SOCK_N || !pool_offered(sb, k))
		return -EAFNOSUPPORT;
	p = &sb->pool[k];
	if (p->n > 0) {
		int fd = p->fd[--p->n];

		p->taken++;
		pool_refill(sb, k, SANDBOX_POOL_LOW);
		return fd;
	}
	p->empty++;
	if (p->err < 0 && p->inflight == 0) {
		/* G could not create them: say so once, then try again on the next call. */
		r = p->err;
		p->err = 0;
		return r;
	}
	r = pool_refill(sb, k, SANDBOX_POOL_LOW);
	if (r < 0 && p->inflight == 0)
		return r;
	return -EAGAIN;
}

static int be_ctl_fd(const struct backend *b)
{
	return csb_of(b)->ctl_fd;
}

static bool be_on_ctl(struct backend *b)
{
	struct sandbox *sb = sb_of(b);
	bool arrived = false;
	int r;

	while (sb->ctl_fd >= 0 && (r = read_ctl(sb, MSG_DONTWAIT)) != -EAGAIN) {
		if (r == -EPIPE || (r < 0 && r != -EINTR)) {
			/* G is gone (its pidfd says so too): closing also takes the fd out of epoll. */
			close(sb->ctl_fd);
			sb->ctl_fd = -1;
			break;
		}
		arrived |= r > 0;
	}
	for (int k = 0; k < BE_SOCK_N; k++)
		pool_refill(sb, k, SANDBOX_POOL_LOW);
	return arrived;
}

static int be_lifetime_fd(const struct backend *b)
{
	return csb_of(b)->gw_pidfd;
}

static int be_signal(struct backend *b, int sig, bool from_terminal)
{
	struct sandbox *sb = sb_of(b);
	bool terminating = sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT;

	if (!atomic_load_explicit(&sb->shared->cmd_started, memory_order_acquire)) {
		/* No command yet (from a terminal or not): a terminating signal ends the setup. */
		if (terminating) {
			if (!sb->abort_sig) {
				sb->abort_sig = sig;
				sandbox_kill(sb);
			}
			return 0;
		}
		return deliver_signal(sb, sig);
	}
	/* From the terminal: the command got it too if it shares our group. */
	if (from_terminal && !sb->own_pgrp)
		return 0;
	return deliver_signal(sb, sig);
}

static void be_kill(struct backend *b)
{
	sandbox_kill(sb_of(b));
}

static int be_finish(struct backend *b)
{
	struct sandbox *sb = sb_of(b);
	bool was_finished = sb->finished;
	int st = reap_tree(sb);

	if (sb->abort_sig)
		return 128 + sb->abort_sig;
	if (setup_failed(sb) || sb->killed)
		return EXIT_SETUP;   /* the message was printed, or the caller chose the code and said why */
	if (was_finished)
		return EXIT_SETUP;
	if (st < 0 || !WIFEXITED(st)) {
		log_error("the sandbox's gateway process died unexpectedly%s",
			  st >= 0 && WIFSIGNALED(st) ? " (killed by a signal)" : "");
		return EXIT_SETUP;
	}
	return WEXITSTATUS(st);
}

static void be_release(struct backend *b)
{
	struct sandbox *sb = sb_of(b);

	release_fds(sb);
	if (sb->shared) {
		munmap(sb->shared, sizeof(*sb->shared));
		sb->shared = NULL;
	}
}

static const struct netplan *be_netplan(const struct backend *b)
{
	return &csb_of(b)->net;
}

static const struct backend_ops sandbox_ops = {
	.name = "rootless",
	.listener = be_listener,
	.ns_socket = be_ns_socket,
	.ctl_fd = be_ctl_fd,
	.on_ctl = be_on_ctl,
	.lifetime_fd = be_lifetime_fd,
	.signal = be_signal,
	.kill = be_kill,
	.finish = be_finish,
	.release = be_release,
	.netplan = be_netplan,
};

struct backend_ref sandbox_backend(struct sandbox *sb)
{
	return (struct backend_ref){ .ops = &sandbox_ops, .b = (struct backend *)sb };
}
