/* SPDX-License-Identifier: MIT */
/*
 * init — PID 1 of the command's PID namespace, and the last steps before the command's execve.
 *
 * A PID-1 process ignores signals it has no handler for, so the command must never be PID 1
 * (Ctrl-C would not stop `sleep`).  States of init:
 *   GO       wait for C's go-ahead byte (EOF: C is gone, exit); PDEATHSIG from then on
 *   PROC     mount a fresh /proc (only this PID namespace)
 *   SESSION  on a terminal (cfg->pty): a session of our own, P's pty slave its controlling terminal
 *   RUN      fork the command (which takes its pty, take_pty(), and enters a mount namespace where
 *            /proc and /sys are locked, enter_locked_mounts()), set cmd_started (release); then
 *            forward what P sends (SI_USER; without a pty, terminal signals, SI_KERNEL, already
 *            reached the command's group; with one, everything but SIGWINCH, and SIGCONT to the
 *            command's group), report the command's stops to P (pty), reap orphans, and exit with
 *            the command's status; the kernel then kills whatever it left behind
 * The forwarded signals are blocked from init's birth (C's mask), so one P sent before the
 * command existed waits in init's queue and is passed on as soon as there is a command.
 *
 * The command's privileges are those it would have without childflow:
 *   - a root caller is root in U2 with every capability there (setgroups allowed, so su,
 *     setpriv, apt's privilege drop and a nested childflow work).  U2 is a child of U1, so these
 *     capabilities reach only U2's own namespaces (N2, the mount and PID namespaces): not N1,
 *     not the host's network, and not P or G: they are outside its PID namespace, and even by
 *     path (/proc/PID/mem, fd, ns) the kernel wants CAP_SYS_PTRACE in *their* user namespace
 *     (init's, U1), which a matching uid 0 does not give; and it cannot take /proc or /sys off
 *     to uncover the caller's: its mount namespace belongs to a further user namespace U3, so
 *     they are locked mounts there (enter_locked_mounts(); only for a root caller: any other
 *     caller's command holds no capability in U2 and cannot unmount anything);
 *   - any other caller runs as its own uid/gid with no capabilities (SECBIT_NOROOT, cleared sets).
 * no_new_privs is set, on purpose, for everyone and in both modes (libseccomp would set it anyway;
 * we say so explicitly): an execve() never gains privileges inside, so a setuid or setgid bit is
 * ignored and a file capability (ping's cap_net_raw) is not granted: they cannot raise an
 * unprivileged command's privileges in U2; a root caller has nothing to gain from them.  It must
 * stay: the bounding set is not reduced, so without it a file-capability binary could gain
 * capabilities in U2.
 *
 * With --isolate (sandbox_config.isolate) the command also loses the session variables, gets a
 * fresh session keyring (isolate_session()) and may not create user namespaces (load_filter()).
 */
#include "sandbox/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/keyctl.h>
#include <linux/securebits.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <seccomp.h>

#include "util/log.h"

int sandbox_status_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return 1;
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

/* Close every fd >= 3 except the ones the caller handed to us on purpose. */
static void close_other_fds(const struct sandbox_config *cfg)
{
	unsigned int next = 3;

	/* keep_fds is sorted ascending (config.c builds it that way). */
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
 * drop_capabilities() - an unprivileged caller's command runs with no capabilities.  SECBIT_NOROOT
 * keeps a uid 0 inside (a subordinate id in helper mode) from gaining a full set at execve().
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
 * load_filter() - the command's seccomp filter.  The command shares the caller's terminal, and
 * TIOCSTI would let it push keystrokes into the caller's shell, which runs them outside the sandbox
 * once childflow exits (bubblewrap's CVE-2017-5226); TIOCLINUX can do the same on a virtual
 * console: both ioctls are refused.  With --isolate, creating a user namespace is refused too
 * (unshare() and clone() with CLONE_NEWUSER: EPERM; clone3(), whose flags a filter cannot read:
 * ENOSYS, so that libc falls back to clone()): new user namespaces are where most kernel exploits
 * start, and a sysctl such as user.max_user_namespaces would be the caller's whole user namespace's,
 * not the command's.  Socket families that no network namespace separates (AF_VSOCK: the
 * hypervisor's and the host's vsock services; AF_QIPCRTR) are refused with EAFNOSUPPORT, as on a
 * kernel without them.  (An i386 binary's socketcall() carries its arguments in memory, which a
 * filter cannot read: that one path is left open so that 32-bit programs keep their network.)
 * Loading it sets no_new_privs (see the top of this file).
 */
static const int unshared_families[] = { AF_VSOCK, AF_QIPCRTR };

static int load_filter(const struct sandbox_config *cfg)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r;

	if (!ctx)
		return -ENOMEM;
	r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	/* Also filter the other ABIs of this machine (i386/x32 on x86_64), or they would bypass it. */
	seccomp_arch_add(ctx, SCMP_ARCH_X86);
	seccomp_arch_add(ctx, SCMP_ARCH_X32);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)TIOCSTI));
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)TIOCLINUX));
	/* Socket families the network namespace does not separate: vsock reaches the hypervisor's
	 * and the host's vsock services, qrtr a modem's; neither is a network childflow controls. */
	for (size_t i = 0; r == 0 && i < sizeof(unshared_families) / sizeof(unshared_families[0]); i++) {
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)unshared_families[i]));
		if (r == 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socketpair), 1,
					     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)unshared_families[i]));
	}
	if (r == 0 && cfg->isolate)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
	if (r == 0 && cfg->isolate)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
	if (r == 0 && cfg->isolate)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	return r;
}

/*
 * The variables that point the command at the host's session services (agents, buses, displays,
 * the runtime directory); --isolate removes them, except one that names a socket let through.
 */
static const char *const session_vars[] = {
	"SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS",
	"DBUS_SYSTEM_BUS_ADDRESS", "DISPLAY", "XAUTHORITY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET",
	"XDG_RUNTIME_DIR", "SESSION_MANAGER", "PULSE_SERVER", "PIPEWIRE_REMOTE", "DOCKER_HOST",
	"CONTAINER_HOST", "TMUX", "TMUX_PANE", "STY",
};

static bool names_allowed_socket(const struct sandbox_config *cfg, const char *value)
{
	for (int i = 0; i < cfg->n_allow_sockets; i++)
		if (strstr(value, cfg->allow_sockets[i]))
			return true;
	return false;
}

/*
 * isolate_session() - --isolate, in the command: the session variables removed (a relative
 * WAYLAND_DISPLAY whose socket is let through becomes its absolute path), and a fresh anonymous
 * session keyring, so the caller's session keys (tokens, Kerberos KEYRING caches) are no longer
 * possessed.  Return: 0, or -1 after printing one line.
 */
static int isolate_session(const struct sandbox_config *cfg)
{
	const char *rt = getenv("XDG_RUNTIME_DIR"), *wl = getenv("WAYLAND_DISPLAY");
	char wayland[PATH_MAX];

	wayland[0] = '\0';
	if (rt && wl && wl[0] != '/')
		snprintf(wayland, sizeof(wayland), "%s/%s", rt, wl);
	for (size_t i = 0; i < sizeof(session_vars) / sizeof(session_vars[0]); i++) {
		const char *v = getenv(session_vars[i]);

		if (v && !names_allowed_socket(cfg, v))
			unsetenv(session_vars[i]);
	}
	if (wayland[0] && names_allowed_socket(cfg, wayland))
		setenv("WAYLAND_DISPLAY", wayland, 1);
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) < 0 && errno != ENOSYS) {
		log_error("cannot give the command a session keyring of its own (--isolate): %s",
			  strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * keep_working_directory() - the working directory, found again by its path in the command's own
 * mounts: an inherited one under /proc or /sys is otherwise the host's procfs or sysfs below ours
 * (every host pid, /proc/PID/net of the host), and with --isolate one under /tmp the host's /tmp.
 * A path that does not exist inside (/proc/1234) starts the command in / with a warning; a deleted
 * directory is kept as it is.
 */
static void keep_working_directory(void)
{
	char cwd[PATH_MAX];

	if (!getcwd(cwd, sizeof(cwd)))
		return;
	if (cwd[0] == '/' && chdir(cwd) == 0)
		return;
	log_warn("the working directory %s is not visible inside the sandbox; the command starts in /", cwd);
	if (chdir("/") < 0)
		log_warn("cannot change to /: %s", strerror(errno));
}

/*
 * enter_locked_mounts() - move the command into a mount namespace where /proc and /sys are locked.
 *
 * init's /proc and C's sysfs were mounted in C's mount namespace, which U2 owns; a root command,
 * with every capability in U2, could unmount them there and uncover the caller's procfs and sysfs
 * below (every host pid, /proc/<G>/net: N1; /proc/1/net: the machine's interfaces).  So a helper
 * X, forked here, unshares a user namespace U3 (a child of U2) with a mount namespace: mounts
 * copied into a mount namespace owned by a less privileged user namespace are locked
 * (MNT_LOCKED): no umount, lazy umount or move, nor one of a copy (`mount --rbind`), uncovers
 * what is below.  The command joins that mount namespace with setns() and keeps its credentials
 * in U2, so a root caller's command keeps every capability over N2 (raw sockets, ports below
 * 1024, its own network configuration) and over U3 (as U3's owner: mounting, unmounting its own
 * mounts); U3 needs no id map.  setns() moves the root and the working directory to the
 * namespace's root, so both are taken back from X's (translated into the copy by unshare()), which
 * keeps a chroot the caller ran us in.  X is dumpable (init's children are not) so that the
 * command, its owner, may open X's /proc entries.  X is init's child (CLONE_PARENT), not ours:
 * it is killed before the command execs, and init reaps it like any orphan, so the command never
 * waits for X's exit (a process's teardown: about a millisecond of start-up) nor inherits a
 * child of its own.
 * Return: 0, or -1 after printing one line.
 */
static int enter_locked_mounts(void)
{
	const char *step = "create a pipe";
	int sync[2], err = 0, nsfd = -1, rootfd = -1, cwdfd = -1;
	char path[64];
	pid_t x;

	if (pipe2(sync, O_CLOEXEC) < 0)
		goto fail;
	step = "fork";
	/* A raw clone: no atfork handlers and no lock is taken in X, which only makes syscalls. */
	x = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, NULL);
	if (x < 0) {
		err = errno;
		close(sync[0]);
		close(sync[1]);
		goto report;
	}
	if (x == 0) {
		close(sync[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (prctl(PR_SET_DUMPABLE, 1) < 0 || unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			err = errno;
		if (write(sync[1], &err, sizeof(err)) != (ssize_t)sizeof(err) || err)
			_exit(EXIT_SETUP);
		for (;;)
			pause();   /* until the command has what it needs and kills us */
	}
	close(sync[1]);
	step = "create a user and mount namespace";
	if (read(sync[0], &err, sizeof(err)) != (ssize_t)sizeof(err) && !err)
		err = EPIPE;
	close(sync[0]);
	if (!err) {
		step = "open the new mount namespace";
		snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)x);
		nsfd = open(path, O_RDONLY | O_CLOEXEC);
		snprintf(path, sizeof(path), "/proc/%d/root", (int)x);
		rootfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		snprintf(path, sizeof(path), "/proc/%d/cwd", (int)x);
		cwdfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (nsfd < 0 || rootfd < 0 || cwdfd < 0)
			err = errno;
	}
	if (!err) {
		step = "enter the new mount namespace";
		if (setns(nsfd, CLONE_NEWNS) < 0)
			err = errno;
	}
	if (!err) {
		step = "keep the root and working directories";
		if (fchdir(rootfd) < 0 || chroot(".") < 0 || fchdir(cwdfd) < 0)
			err = errno;
	}
	if (nsfd >= 0)
		close(nsfd);
	if (rootfd >= 0)
		close(rootfd);
	if (cwdfd >= 0)
		close(cwdfd);
	kill(x, SIGKILL);   /* init reaps it */
	if (!err)
		return 0;
	goto report;
fail:
	err = errno;
report:
	log_error("cannot lock the command's /proc and /sys (%s): %s", step, strerror(err));
	return -1;
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

/*
 * take_pty() - in the command, before anything else: a process group of its own in init's session
 * (init leads it, with P's pty slave as its controlling terminal: see init_main()), the terminal's
 * foreground, and the slave in place of those of fds 0-2 that were the caller's terminal.  So
 * kill(0) and killpg() from the tree reach only its own process groups, the caller's terminal is
 * P's alone, and the group is not orphaned (its parent init is in the same session), so a Ctrl-Z
 * on the pty stops it.  Tells P (PTY_READY) that the pty is held, so P may put the caller's
 * terminal in raw mode.  Return: 0, or -1 after one line.
 */
static int take_pty(const struct sandbox_config *cfg)
{
	sigset_t ttou;

	sigemptyset(&ttou);
	sigaddset(&ttou, SIGTTOU);   /* tcsetpgrp() from the background; restore_signals() undoes it */
	sigprocmask(SIG_BLOCK, &ttou, NULL);
	if (setpgid(0, 0) < 0 || tcsetpgrp(cfg->pty_slave, getpid()) < 0) {
		log_error("cannot give the command the foreground of its terminal: %s", strerror(errno));
		return -1;
	}
	for (int fd = 0; fd < 3; fd++)
		if ((cfg->pty_fds & (1u << fd)) && dup2(cfg->pty_slave, fd) < 0) {
			log_error("cannot give the command its terminal: %s", strerror(errno));
			return -1;
		}
	if (cfg->pty_slave > 2)
		close(cfg->pty_slave);
	if (write(cfg->pty_report, "R", 1) != 1)
		log_debug("cannot tell childflow that the command holds its pty: %s", strerror(errno));
	return 0;
}

__attribute__((noreturn)) static void exec_command(const struct sandbox_config *cfg)
{
	int r;

	if (cfg->pty && take_pty(cfg) < 0)
		_exit(EXIT_SETUP);
	if (!cfg->pty && cfg->own_pgrp && setpgid(0, 0) < 0) {
		log_error("cannot give the command its own process group: %s", strerror(errno));
		_exit(EXIT_SETUP);
	}
	/* Only a root caller's command keeps capabilities in U2 that could unmount anything. */
	if (cfg->caller_is_root && enter_locked_mounts() < 0)
		_exit(EXIT_SETUP);
	keep_working_directory();
	if (cfg->isolate && isolate_session(cfg) < 0)
		_exit(EXIT_SETUP);
	restore_signals(cfg);
	r = load_filter(cfg);
	if (r < 0) {
		log_error("cannot install the command's seccomp filter (terminal protection%s): %s",
			  cfg->isolate ? ", no user namespaces" : "", strerror(-r));
		_exit(EXIT_SETUP);
	}
	/* Last of the filters: from here on a connect(), bind() or listen() waits for P's answer. */
	if (cfg->fast_tcp && fast_filter_load(cfg->fast_fd) < 0)
		_exit(EXIT_SETUP);
	if (!cfg->caller_is_root && (r = drop_capabilities()) < 0) {
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

void init_main(const struct sandbox_config *cfg, int go_fd, struct sandbox_shared *sh)
{
	sigset_t set;
	pid_t cmd;
	char go;
	ssize_t n;

	/* getppid() is 0 for a PID-namespace init, so C's liveness is read from the pipe whose write
	 * end only C holds: EOF means C is already gone and PDEATHSIG would never fire. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	do
		n = read(go_fd, &go, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(EXIT_SETUP);
	close(go_fd);
	prctl(PR_SET_DUMPABLE, 0);
	/* A fresh /proc shows only this PID namespace.  Without it the command would still be
	 * confined (it cannot signal what it cannot name), so a refusal is only a warning. */
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		log_warn("cannot mount a private /proc for the command (%s); it will see the host's",
			 strerror(errno));

	/* The forwarded signals are already blocked, with handlers (child.c); add SIGCHLD. */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (int i = 0; i < sandbox_n_forwarded_signals; i++)
		sigaddset(&set, sandbox_forwarded_signals[i]);
	if (cfg->pty)
		sigaddset(&set, SIGCONT);   /* P continues the command after it stopped (`fg`) */
	sigprocmask(SIG_BLOCK, &set, NULL);

	/* On its own pty, the command's session is init's: P's terminal signals no longer reach us
	 * (P forwards them), and the command's process group has a parent in its session. */
	if (cfg->pty && (setsid() < 0 || ioctl(cfg->pty_slave, TIOCSCTTY, 0) < 0)) {
		log_error("cannot give the command a terminal session of its own: %s", strerror(errno));
		_exit(EXIT_SETUP);
	}
	cmd = fork();
	if (cmd < 0) {
		log_error("cannot fork the command: %s", strerror(errno));
		_exit(EXIT_SETUP);
	}
	if (cmd == 0)
		exec_command(cfg);
	atomic_store_explicit(&sh->cmd_started, 1, memory_order_release);

	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&set, &si);

		if (sig < 0)
			continue;
		if (sig == SIGCHLD) {
			int st;
			pid_t p;

			/* On its pty, a stopped command is reported to P, which stops childflow in turn. */
			while (cfg->pty && waitpid(cmd, &st, WNOHANG | WUNTRACED) > 0) {
				unsigned char b = (unsigned char)WSTOPSIG(st);

				if (!WIFSTOPPED(st))
					_exit(sandbox_status_code(st));
				if (write(cfg->pty_report, &b, 1) != 1)
					kill(-cmd, SIGCONT);   /* P cannot hear it: do not leave it stopped */
			}
			while ((p = waitpid(-1, &st, WNOHANG)) > 0)
				if (p == cmd)
					_exit(sandbox_status_code(st));
			continue;
		}
		if (cfg->pty) {
			/* Our session is the pty's: every signal here came from P (SIGWINCH never does:
			 * the pty tells the command itself).  SIGCONT goes to the command's whole group. */
			if (sig == SIGCONT)
				kill(-cmd, SIGCONT);
			else if (sig != SIGWINCH)
				kill(cmd, sig);
			continue;
		}
		/* A terminal signal (SI_KERNEL) already reached the command's process group. */
		if (si.si_code != SI_KERNEL)
			kill(cmd, sig);
	}
}
