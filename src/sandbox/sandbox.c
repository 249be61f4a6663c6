/* SPDX-License-Identifier: MIT */
/*
 * sandbox — P's side of the rootless backend (the process tree is in sandbox.h; P's messages with
 * G and the socket pool are in ctl.c).
 *
 * States of P (messages are gwproto.h's, on ctl_fd):
 *   FORK       fork G (subreaper first: orphaned C and init come back to us); pidfd on G
 *   MAP        <- HELLO_UNSHARED: write G's maps (idmap_apply.c); rootful: the host side
 *              (cfg->on_unshared: up0 in G's namespace)              -> IDMAP_PLAN (C's maps)
 *   COLLECT    <- LISTENERS (the transparent listeners), <- UDP_SOCKETS (SANDBOX_POOL_FILL N1
 *              UDP sockets per family, so that the first flows never wait), <- CHILD_NETNS (a
 *              reference to N2); ctl_fd becomes non-blocking               -> started
 *   RUNNING    (backend_ops, at the end) ns_socket() takes from the pool and never blocks, on_ctl()
 *              takes G's answers and CMD_STARTED, which releases the signals queued before init's
 *              pid was known (both in ctl.c); signal() forwards to init
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

void sandbox_flush_queued_signals(struct sandbox *sb)
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

/* ---------- setup ---------- */

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
	if (sb->gate_fd >= 0)
		close(sb->gate_fd);
	sb->gate_fd = -1;
	if (sb->echo_fd >= 0)
		close(sb->echo_fd);
	sb->echo_fd = -1;
	for (int i = 0; i < 2; i++) {
		if (sb->inject_fd[i] >= 0)
			close(sb->inject_fd[i]);
		sb->inject_fd[i] = -1;
	}
	if (sb->capture_fd >= 0)
		close(sb->capture_fd);
	sb->capture_fd = -1;
	if (sb->child_netns_fd >= 0)
		close(sb->child_netns_fd);
	sb->child_netns_fd = -1;
	if (sb->fast_fd >= 0)
		close(sb->fast_fd);
	sb->fast_fd = -1;
	for (int i = 0; i < sb->n_resolv; i++)
		close(sb->resolv_fd[i]);
	sb->n_resolv = 0;
	if (sb->ctl_fd >= 0)
		close(sb->ctl_fd);
	sb->ctl_fd = -1;
	sandbox_ctl_free_pool(sb);
}

int sandbox_start(const struct sandbox_config *cfg, struct sandbox *sb)
{
	struct idmap_plan plan;
	struct sandbox_config gcfg = *cfg;   /* G's copy: with the command's end of the fast channel */
	bool reported = false;
	int sp[2] = { -1, -1 }, fp[2] = { -1, -1 };
	pid_t p = getpid();

	memset(sb, 0, sizeof(*sb));
	sb->gw_pidfd = sb->ctl_fd = sb->child_netns_fd = sb->gate_fd = sb->capture_fd = sb->echo_fd = -1;
	sb->fast_fd = -1;
	sb->inject_fd[0] = sb->inject_fd[1] = -1;
	for (int i = 0; i < BE_NLISTEN; i++)
		sb->listen_fd[i] = -1;
	sigemptyset(&sb->queued);
	netplan_init(&sb->net, cfg->ipv6);
	if (cfg->uplink)   /* --root: the child's link is bridged to the uplink, with its addresses */
		netplan_root(&sb->net, cfg->uplink);
	/* On its own pty, the command is not in our group (nor init, which leads the pty's session). */
	sb->own_pgrp = cfg->own_pgrp || cfg->pty;
	sb->rootful = cfg->uplink != NULL;
	/* Orphans of the sandbox (C and init, when G is killed) become our children, to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	sb->shared = mmap(NULL, sizeof(*sb->shared), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sb->shared == MAP_FAILED) {
		log_error("cannot allocate shared memory: %s", strerror(errno));
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0 ||
	    (cfg->fast_tcp && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fp) < 0)) {
		log_error("cannot create a socket pair: %s", strerror(errno));
		if (fp[0] < 0 && sp[0] >= 0 && cfg->fast_tcp) {
			close(sp[0]);
			close(sp[1]);
		}
		munmap(sb->shared, sizeof(*sb->shared));
		return -1;
	}
	gcfg.fast_fd = fp[1];
	sb->gw_pid = fork();
	if (sb->gw_pid < 0) {
		log_error("cannot fork: %s", strerror(errno));
		close(sp[0]);
		close(sp[1]);
		if (fp[0] >= 0) {
			close(fp[0]);
			close(fp[1]);
		}
		munmap(sb->shared, sizeof(*sb->shared));
		return -1;
	}
	if (sb->gw_pid == 0) {
		close(sp[0]);
		if (fp[0] >= 0)
			close(fp[0]);
		gateway_main(&gcfg, &sb->net, sb->shared, sp[1], p);
	}
	close(sp[1]);
	if (fp[1] >= 0)
		close(fp[1]);
	sb->fast_fd = fp[0];
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
	if (idmap_apply_gateway(sb->gw_pid, cfg->idmap, &cfg->orig_mask, &plan) < 0 ||
	    (cfg->on_unshared && cfg->on_unshared(cfg->on_unshared_arg, sb->gw_pid) < 0)) {
		reported = true;
		goto fail;
	}
	log_debug("ids mapped (%s plan)", plan.mode == IDMAP_ROOT ? "root" :
		  plan.mode == IDMAP_HELPER ? "newuidmap" : "direct");
	if (sandbox_ctl_send_plan(sb, &plan) < 0 || sandbox_ctl_recv_listeners(sb) < 0 ||
	    sandbox_ctl_recv_initial_pool(sb) < 0 || sandbox_ctl_recv_child_netns(sb) < 0)
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

static int be_gate_fd(const struct backend *b)
{
	return csb_of(b)->gate_fd;
}

static int be_echo_fd(const struct backend *b)
{
	return csb_of(b)->echo_fd;
}

static int be_inject_fd(const struct backend *b, int family)
{
	return csb_of(b)->inject_fd[family == AF_INET6];
}

static int be_capture(const struct backend *b, struct be_capture *out)
{
	const struct sandbox *sb = csb_of(b);

	if (sb->capture_fd < 0)
		return -ENOENT;
	*out = (struct be_capture){
		.fd = sb->capture_fd,
		.block_size = SANDBOX_CAPTURE_BLOCK_SIZE,
		.block_nr = SANDBOX_CAPTURE_BLOCKS,
		.retire_ms = SANDBOX_CAPTURE_RETIRE_MS,
		.ifname = NETPLAN_GW_IFNAME,
		.backend = sb->rootful ? "rootful" : "rootless-internal",
	};
	return 0;
}

static int be_ns_socket(struct backend *b, enum be_sock_kind k)
{
	return sandbox_ctl_ns_socket(sb_of(b), k);
}

static int be_ctl_fd(const struct backend *b)
{
	return csb_of(b)->ctl_fd;
}

static bool be_on_ctl(struct backend *b)
{
	return sandbox_ctl_on_ctl(sb_of(b));
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

static unsigned int be_reserved_fds(const struct backend *b)
{
	(void)b;
	/* Both pools, the listeners, the gate, the echo queue, the raw sockets, the capture, the
	 * control socket, G's pidfd, the child's netns and its resolv.conf files. */
	return 2 * SANDBOX_POOL_MAX + BE_NLISTEN + 8 + SANDBOX_RESOLV_MAX;
}

static const struct netplan *be_netplan(const struct backend *b)
{
	return &csb_of(b)->net;
}

static int be_child_resolv_fds(const struct backend *b, const int **fds)
{
	*fds = csb_of(b)->resolv_fd;
	return csb_of(b)->n_resolv;
}

static const struct backend_ops sandbox_ops = {
	.name = "rootless",
	.listener = be_listener,
	.gate_fd = be_gate_fd,
	.echo_fd = be_echo_fd,
	.inject_fd = be_inject_fd,
	.capture = be_capture,
	.ns_socket = be_ns_socket,
	.ctl_fd = be_ctl_fd,
	.on_ctl = be_on_ctl,
	.lifetime_fd = be_lifetime_fd,
	.signal = be_signal,
	.kill = be_kill,
	.finish = be_finish,
	.release = be_release,
	.reserved_fds = be_reserved_fds,
	.netplan = be_netplan,
	.child_resolv_fds = be_child_resolv_fds,
};

/* The rootful backend is the same sandbox with an uplink (sandbox_config.uplink): only its name differs. */
static const struct backend_ops rootful_ops = {
	.name = "rootful",
	.listener = be_listener,
	.gate_fd = be_gate_fd,
	.inject_fd = be_inject_fd,
	.capture = be_capture,
	.ns_socket = be_ns_socket,
	.ctl_fd = be_ctl_fd,
	.on_ctl = be_on_ctl,
	.lifetime_fd = be_lifetime_fd,
	.signal = be_signal,
	.kill = be_kill,
	.finish = be_finish,
	.release = be_release,
	.reserved_fds = be_reserved_fds,
	.netplan = be_netplan,
	.child_resolv_fds = be_child_resolv_fds,
};

struct backend_ref sandbox_backend(struct sandbox *sb)
{
	return (struct backend_ref){ .ops = sb->rootful ? &rootful_ops : &sandbox_ops, .b = (struct backend *)sb };
}
