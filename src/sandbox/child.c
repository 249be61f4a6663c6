/* SPDX-License-Identifier: MIT */
/*
 * child — C, init and the command (see sandbox.h for the process tree).
 *
 * C enters fresh user, network, mount and PID namespaces, waits for the gateway agent to map its ids
 * and plug the veth in, configures its side of the link, and forks init.  init is PID 1 of the new
 * PID namespace: a PID-1 process ignores signals it has no handler for, so the command must never be
 * PID 1 (Ctrl-C would not stop `sleep`).  init forwards what P sends, reaps orphans, and exits with
 * the command's status; the kernel then kills whatever the command left behind.
 */
#include "sandbox/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <linux/capability.h>
#include <linux/rtnetlink.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <linux/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <seccomp.h>

#include "netlink/nl.h"
#include "util/log.h"

static void child_sysctls(const struct netplan *np, struct sandbox_shared *sh)
{
	/* Written before eth0 exists so that it inherits them from "default". */
	static const char *const dad[] = {
		"/proc/sys/net/ipv6/conf/all/accept_dad",
		"/proc/sys/net/ipv6/conf/default/accept_dad",
	};
	static const char *const off[] = {
		"/proc/sys/net/ipv6/conf/all/disable_ipv6",
		"/proc/sys/net/ipv6/conf/default/disable_ipv6",
	};

	for (int i = 0; i < 2; i++) {
		int r = write_file(np->ipv6 ? dad[i] : off[i], np->ipv6 ? "0" : "1");

		/* ENOENT: the kernel has no IPv6 at all, which is fine when we don't offer it. */
		if (r < 0 && !(r == -ENOENT && !np->ipv6)) {
			log_error("cannot configure IPv6 in the child network namespace (%s): %s",
				  np->ipv6 ? dad[i] : off[i], strerror(-r));
			setup_fail(sh);
		}
	}
}

static void child_network(const struct netplan *np, struct sandbox_shared *sh)
{
	struct nl *nl = nl_open();
	int lo, eth, r = 0;
	const char *step = "open rtnetlink";

	if (!nl) {
		r = -errno;
		goto fail;
	}
	lo = if_nametoindex("lo");
	eth = if_nametoindex(NETPLAN_CHILD_IFNAME);
	step = "find the child's interfaces";
	if (!lo || !eth) {
		r = -ENODEV;
		goto fail;
	}
	step = "bring lo up";
	if ((r = nl_link_up(nl, lo, 0)) < 0)
		goto fail;
	step = "add the IPv4 address";
	if ((r = nl_addr_add(nl, eth, AF_INET, &np->child4, np->plen4)) < 0)
		goto fail;
	step = "add the IPv6 address";
	if (np->ipv6 && (r = nl_addr_add(nl, eth, AF_INET6, &np->child6, np->plen6)) < 0)
		goto fail;
	step = "bring eth0 up";
	if ((r = nl_link_up(nl, eth, NETPLAN_MTU)) < 0)
		goto fail;
	step = "add the IPv4 default route";
	if ((r = nl_route_add(nl, AF_INET, RT_TABLE_MAIN, RTN_UNICAST, eth, &np->gw4)) < 0)
		goto fail;
	step = "add the IPv6 default route";
	if (np->ipv6 && (r = nl_route_add(nl, AF_INET6, RT_TABLE_MAIN, RTN_UNICAST, eth, &np->gw6)) < 0)
		goto fail;
	nl_close(nl);
	return;
fail:
	log_error("cannot configure the child network namespace (%s): %s", step, strerror(-r));
	nl_close(nl);
	setup_fail(sh);
}

static bool is_kept(const struct sandbox_config *cfg, int fd)
{
	for (int i = 0; i < cfg->n_keep_fds; i++)
		if (cfg->keep_fds[i] == fd)
			return true;
	return false;
}

/* Without close_range() (Linux < 5.9): walk /proc/self/fd, which init's fresh /proc provides. */
static void close_other_fds_slow(const struct sandbox_config *cfg)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return;   /* everything of ours is O_CLOEXEC anyway */
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);

		if (fd >= 3 && fd != dirfd(d) && !is_kept(cfg, fd))
			close(fd);
	}
	closedir(d);
}

/*
 * mount_sysfs() - give the child a sysfs of its own network namespace, so /sys/class/net shows eth0
 * and lo rather than the caller's interfaces.  The cgroup tree mounted under /sys is carried over
 * (tools read their cgroup limits there).  A refusal keeps the caller's /sys: only cosmetic.
 */
static void mount_sysfs(void)
{
	int cg = (int)syscall(SYS_open_tree, AT_FDCWD, "/sys/fs/cgroup",
			      OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);

	if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		log_debug("cannot mount a sysfs for the child's network namespace: %s", strerror(errno));
	} else if (cg >= 0 &&
		   syscall(SYS_move_mount, cg, "", AT_FDCWD, "/sys/fs/cgroup", MOVE_MOUNT_F_EMPTY_PATH) < 0) {
		log_debug("cannot carry /sys/fs/cgroup into the child's sysfs: %s", strerror(errno));
	}
	if (cg >= 0)
		close(cg);
}

/* Close every fd >= 3 except the ones the caller handed to us on purpose. */
static void close_other_fds(const struct sandbox_config *cfg)
{
	unsigned int next = 3;

	/* keep_fds is sorted ascending (main.c builds it that way). */
	for (int i = 0; i < cfg->n_keep_fds; i++) {
		unsigned int k = (unsigned int)cfg->keep_fds[i];

		if (k > next && syscall(SYS_close_range, next, k - 1, 0) < 0) {
			close_other_fds_slow(cfg);
			return;
		}
		next = k + 1;
	}
	if (syscall(SYS_close_range, next, ~0U, 0) < 0)
		close_other_fds_slow(cfg);
}

/*
 * drop_capabilities() - the command runs with no capabilities, even when the caller is root.
 * SECBIT_NOROOT keeps uid 0 from regaining a full set at execve(); file capabilities of binaries
 * (ping) still apply within the bounding set, as they would on the host.
 */
static int drop_capabilities(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
		  SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) < 0)
		return -errno;
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return -errno;
	if (syscall(SYS_capset, &hdr, data) < 0)
		return -errno;
	return 0;
}

/*
 * deny_terminal_injection() - the command shares the caller's terminal, and TIOCSTI would let it push
 * keystrokes into the caller's shell, which runs them outside the sandbox once childflow exits
 * (bubblewrap's CVE-2017-5226).  TIOCLINUX can do the same on a virtual console.  A seccomp filter
 * refuses both ioctls; installing it needs CAP_SYS_ADMIN in our user namespace, which we still hold,
 * so no_new_privs (which would break file capabilities such as ping's) is not needed.
 */
static int deny_terminal_injection(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r;

	if (!ctx)
		return -ENOMEM;
	/* Also filter the other ABIs of this machine (i386/x32 on x86_64), or they would bypass it. */
	seccomp_arch_add(ctx, SCMP_ARCH_X86);
	seccomp_arch_add(ctx, SCMP_ARCH_X32);
	r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
			     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)TIOCSTI));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)TIOCLINUX));
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	return r;
}

static void restore_signals(const struct sandbox_config *cfg)
{
	for (int s = 1; s < NSIG; s++) {
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		signal(s, sigismember(&cfg->orig_ignored, s) == 1 ? SIG_IGN : SIG_DFL);
	}
	sigprocmask(SIG_SETMASK, &cfg->orig_mask, NULL);
}

__attribute__((noreturn)) static void exec_command(const struct sandbox_config *cfg)
{
	int r;

	if (cfg->own_pgrp && setpgid(0, 0) < 0) {
		log_error("cannot give the command its own process group: %s", strerror(errno));
		_exit(EXIT_SETUP);
	}
	restore_signals(cfg);
	r = deny_terminal_injection();
	if (r < 0) {
		log_error("cannot install the seccomp filter that protects your terminal: %s", strerror(-r));
		_exit(EXIT_SETUP);
	}
	r = drop_capabilities();
	if (r < 0) {
		log_error("cannot drop capabilities for the command: %s", strerror(-r));
		_exit(EXIT_SETUP);
	}
	close_other_fds(cfg);
	log_debug("executing the command");
	execvp(cfg->argv[0], cfg->argv);
	r = errno;
	if (r == ENOENT)
		log_error("cannot run `%s`: command not found (check the name and PATH)", cfg->argv[0]);
	else
		log_error("cannot run `%s`: %s", cfg->argv[0], strerror(r));
	_exit(r == ENOENT ? EXIT_NOTFOUND : EXIT_NOEXEC);
}

static void noop_handler(int sig)
{
	(void)sig;
}

static void block_forwarded_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	for (int i = 0; i < sandbox_n_forwarded_signals; i++) {
		signal(sandbox_forwarded_signals[i], noop_handler);
		sigaddset(&set, sandbox_forwarded_signals[i]);
	}
	sigprocmask(SIG_SETMASK, &set, NULL);
}

static int status_to_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
}

__attribute__((noreturn)) static void init_main(const struct sandbox_config *cfg, int alive_fd,
						struct sandbox_shared *sh)
{
	sigset_t set;
	pid_t cmd;
	struct pollfd pfd = { .fd = alive_fd, .events = POLLIN };

	/* getppid() is 0 for a PID-namespace init, so C's liveness is read from a pipe whose write
	 * end only C holds: HUP means C is already gone and PDEATHSIG would never fire. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (poll(&pfd, 1, 0) != 0)
		_exit(EXIT_SETUP);
	close(alive_fd);
	prctl(PR_SET_DUMPABLE, 0);
	/* A fresh /proc shows only this PID namespace.  Without it the command would still be
	 * confined (it cannot signal what it cannot name), so a refusal is only a warning. */
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		log_warn("cannot mount a private /proc for the command (%s); it will see the host's",
			 strerror(errno));

	/* The forwarded signals are already blocked, with handlers (child_main); add SIGCHLD. */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (int i = 0; i < sandbox_n_forwarded_signals; i++)
		sigaddset(&set, sandbox_forwarded_signals[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);

	cmd = fork();
	if (cmd < 0) {
		log_error("cannot fork the command: %s", strerror(errno));
		_exit(EXIT_SETUP);
	}
	if (cmd == 0)
		exec_command(cfg);
	sh->cmd_started = 1;

	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);

		if (sig < 0)
			continue;
		if (sig == SIGCHLD) {
			int st;
			pid_t p;

			while ((p = waitpid(-1, &st, WNOHANG)) > 0)
				if (p == cmd)
					_exit(status_to_code(st));
			continue;
		}
		/* A terminal signal (SI_KERNEL) already reached the command's process group. */
		if (si.si_code != SI_KERNEL)
			kill(cmd, sig);
	}
}

void child_main(const struct sandbox_config *cfg, const struct netplan *np,
		struct sandbox_shared *sh, int sync, pid_t gw_pid)
{
	pid_t init;
	int st;

	die_with_parent(gw_pid);
	/* Handlers plus a blocked mask, not SIG_IGN: an ignored signal is discarded when sent, so a
	 * signal P forwards right after init exists would be lost.  Blocked, it waits for init's
	 * sigwaitinfo(); and PID 1 drops signals whose handler is SIG_DFL, hence the no-op handlers,
	 * inherited by init across fork(). */
	block_forwarded_signals();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID) < 0) {
		log_error("cannot create the child's namespaces (user, network, mount, PID): %s",
			  strerror(errno));
		setup_fail(sh);
	}
	/* CAP_NET_ADMIN over N2 is ours from unshare() on, before any id is mapped. */
	child_sysctls(np, sh);
	if (sync_send(sync, 'U') < 0 || sync_expect(sync, 'N') < 0)
		_exit(EXIT_SETUP);
	child_network(np, sh);
	log_debug("child: network configured");
	close(sync);
	prctl(PR_SET_DUMPABLE, 0);
	/* Keep our mounts (the private /proc, later the resolv.conf overlay) out of the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		log_error("cannot make the child's mounts private: %s", strerror(errno));
		setup_fail(sh);
	}
	mount_sysfs();

	int alive[2];

	if (pipe2(alive, O_CLOEXEC) < 0) {
		log_error("cannot create a pipe: %s", strerror(errno));
		setup_fail(sh);
	}
	init = fork();
	if (init < 0) {
		log_error("cannot fork the sandbox init: %s", strerror(errno));
		setup_fail(sh);
	}
	if (init == 0) {
		close(alive[1]);
		init_main(cfg, alive[0], sh);
	}
	close(alive[0]);
	sh->init_pid = init;
	/* Wait without reaping, forget the pid, then reap: P must never signal a recycled pid. */
	siginfo_t si;
	while (waitid(P_PID, (id_t)init, &si, WEXITED | WNOWAIT) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	sh->init_pid = 0;
	while (waitpid(init, &st, 0) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	_exit(status_to_code(st));
}
