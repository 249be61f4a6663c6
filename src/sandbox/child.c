/* SPDX-License-Identifier: MIT */
/*
 * child — C, the child bootstrap (see sandbox.h for the process tree).
 *
 * States (messages are gwproto.h's, on the socket to G):
 *   UNSHARE    unshare(USER|NET|NS|PID, and IPC with --isolate); IPv6 sysctls (CAP_NET_ADMIN over N2 is ours before any
 *              id is mapped)                               -> C_UNSHARED
 *   LINK       <- C_LINK_READY: lo, eth0's addresses, eth0 up, default routes
 *   WAIT_UP    until eth0 carries frames (bounded)          -> C_LINK_UP
 *              <- C_GO: gw0 carries frames too
 *   MOUNTS     private mounts, a sysfs of N2, with --isolate a private /tmp, /dev/shm and
 *              /dev/mqueue, the name files and hidden host endpoints, the sockets let through
 *              (etcfiles.c)
 *   INIT       fork init; its pid goes to the shared page (release), then -> C_INIT_STARTED, and
 *              only then init gets its go-ahead byte: the command cannot exist before its
 *              init's pid is known to P
 *   WAIT       until init exits; forget its pid, reap it, exit with its status
 * A failure prints one line, sets shared->setup_failed and exits.
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <linux/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "netlink/nl.h"
#include "sandbox/gwproto.h"
#include "util/explain.h"
#include "util/log.h"
#include "util/proc.h"

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
		int r = proc_write_file(np->ipv6 ? dad[i] : off[i], np->ipv6 ? "0" : "1");

		/* ENOENT: the kernel has no IPv6 at all, which is fine when we don't offer it. */
		if (r < 0 && !(r == -ENOENT && !np->ipv6)) {
			log_error("cannot configure IPv6 in the child network namespace (%s): %s",
				  np->ipv6 ? dad[i] : off[i], strerror(-r));
			sandbox_setup_fail(sh);
		}
	}
}

/*
 * child_ping_groups() - let the command open ICMP echo sockets (SOCK_DGRAM IPPROTO_ICMP), as ping
 * and traceroute -I do without privilege: N2's net.ipv4.ping_group_range (it covers IPv6 too)
 * opened to every group mapped here, else to the command's own.  Needs our maps (written by G).
 * ping's file capability is never granted inside (no_new_privs), so this is how it works.
 */
static void child_ping_groups(struct sandbox_shared *sh)
{
	static const char path[] = "/proc/sys/net/ipv4/ping_group_range";
	char own[48];
	int r;

	if (proc_write_file(path, "0 2147483647") == 0)
		return;
	snprintf(own, sizeof(own), "%u %u", (unsigned int)getgid(), (unsigned int)getgid());
	if ((r = proc_write_file(path, own)) < 0) {
		log_error("cannot let the command ping (net.ipv4.ping_group_range in the child network "
			  "namespace): %s", strerror(-r));
		sandbox_setup_fail(sh);
	}
}

/* Configure N2's side of the link and wait until eth0 can carry frames. */
static void child_network(const struct netplan *np, struct sandbox_shared *sh)
{
	struct nl *nl = nl_open();
	int lo, eth, r = 0;
	const char *step = "open rtnetlink";

	if (!nl) {
		r = -errno;
		goto fail;
	}
	lo = (int)if_nametoindex("lo");
	eth = (int)if_nametoindex(NETPLAN_CHILD_IFNAME);
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
	/* The kernel turns carrier and qdisc on later (linkwatch); until then frames are dropped. */
	step = "wait until eth0 is operational";
	if ((r = nl_link_wait_ready(nl, eth, SANDBOX_LINK_WAIT_MS)) < 0)
		goto fail;
	nl_close(nl);
	return;
fail:
	log_error("cannot configure the child network namespace (%s): %s", step, strerror(-r));
	nl_close(nl);
	sandbox_setup_fail(sh);
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

/*
 * isolate_mounts() - --isolate: a fresh tmpfs on /tmp and /dev/shm (the host's sockets in /tmp, X11's
 * /tmp/.X11-unix included, and its shared memory stay out of sight), and the POSIX message queues
 * of the IPC namespace C created (its /dev/mqueue), when those directories exist.  Mounted in C's
 * mount namespace; for a root caller's command they are locked mounts (init.c), for anyone else's
 * there is no capability to unmount them.  Fails with one line.
 */
static void isolate_mounts(struct sandbox_shared *sh)
{
	static const struct { const char *path, *type, *opts; } m[] = {
		{ "/tmp", "tmpfs", "mode=1777" },
		{ "/dev/shm", "tmpfs", "mode=1777" },
		{ "/dev/mqueue", "mqueue", NULL },
	};

	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		struct stat st;

		if (stat(m[i].path, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (mount(m[i].type, m[i].path, m[i].type, MS_NOSUID | MS_NODEV, m[i].opts) < 0) {
			log_error("cannot give the command a private %s (--isolate): %s", m[i].path,
				  strerror(errno));
			sandbox_setup_fail(sh);
		}
	}
}

static void noop_handler(int sig)
{
	(void)sig;
}

/*
 * Handlers plus a blocked mask, not SIG_IGN: an ignored signal is discarded when sent, so a signal
 * P forwards right after init exists would be lost.  Blocked, it waits for init's sigwaitinfo();
 * and PID 1 drops signals whose handler is SIG_DFL, hence the no-op handlers, inherited by init.
 */
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

/* Fork init, publish its pid, tell G (with @rv's fds, for P), and only then let init start the command. */
static pid_t child_start_init(const struct sandbox_config *cfg, struct sandbox_shared *sh, int sync,
			      struct child_resolv *rv)
{
	int go[2];
	pid_t init;

	if (pipe2(go, O_CLOEXEC) < 0) {
		log_error("cannot create a pipe: %s", strerror(errno));
		sandbox_setup_fail(sh);
	}
	if (cfg->test_delay_init_pid_us)
		usleep(cfg->test_delay_init_pid_us);   /* CHILDFLOW_TEST_DELAY_INIT_PID_US (config.c) */
	init = fork();
	if (init < 0) {
		log_error("cannot fork the sandbox init: %s", strerror(errno));
		sandbox_setup_fail(sh);
	}
	if (init == 0) {
		close(go[1]);
		close(sync);
		child_resolv_close(rv);   /* P's to write, nobody's inside */
		init_main(cfg, go[0], sh);
	}
	close(go[0]);
	atomic_store_explicit(&sh->init_pid, init, memory_order_release);
	gw_send(sync, (struct gw_msg){ .op = GW_C_INIT_STARTED, .count = (uint16_t)rv->n }, NULL, 0, rv->fd, rv->n);
	child_resolv_close(rv);
	close(sync);
	/* The write end stays open: init reads EOF only if C dies before this byte. */
	if (write(go[1], "g", 1) != 1)
		_exit(EXIT_SETUP);
	return init;
}

void child_main(const struct sandbox_config *cfg, const struct netplan *np,
		struct sandbox_shared *sh, int sync, pid_t gw_pid)
{
	struct child_allowed allowed;
	struct child_resolv rv;
	siginfo_t si;
	pid_t init;
	int st;

	proc_die_with_parent(gw_pid);
	block_forwarded_signals();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID |
		    (cfg->isolate ? CLONE_NEWIPC : 0)) < 0) {
		char what[96];

		snprintf(what, sizeof(what), "cannot create the child's namespaces (user, network, mount, PID%s)",
			 cfg->isolate ? ", IPC" : "");
		explain_fail("user_namespaces", errno, what);
		sandbox_setup_fail(sh);
	}
	child_sysctls(np, sh);
	if (gw_send_op(sync, GW_C_UNSHARED) < 0 || gw_expect(sync, GW_C_LINK_READY) < 0)
		_exit(EXIT_SETUP);
	/* G has written our maps and opened our netns (both need us dumpable): from now on, nobody
	 * inside may ptrace us. */
	prctl(PR_SET_DUMPABLE, 0);
	child_ping_groups(sh);
	child_network(np, sh);
	if (gw_send_op(sync, GW_C_LINK_UP) < 0 || gw_expect(sync, GW_C_GO) < 0)
		_exit(EXIT_SETUP);   /* G printed why */
	log_debug("child: network configured, both ends of the link operational");
	/* Keep our mounts (the private /proc, /sys, the name files) out of the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		explain_fail("mounts", errno, "cannot make the child's mounts private");
		sandbox_setup_fail(sh);
	}
	mount_sysfs();
	/* The sockets let through are cloned before anything covers them, put back after. */
	child_allow_take(cfg, &allowed, sh);
	if (cfg->isolate)
		isolate_mounts(sh);
	child_name_files(cfg, &allowed, &rv, sh);
	child_allow_place(&allowed, sh);
	init = child_start_init(cfg, sh, sync, &rv);
	/* Wait without reaping, forget the pid, then reap: P must never signal a recycled pid. */
	while (waitid(P_PID, (id_t)init, &si, WEXITED | WNOWAIT) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	atomic_store_explicit(&sh->init_pid, 0, memory_order_release);
	while (waitpid(init, &st, 0) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	_exit(sandbox_status_code(st));
}

int sandbox_mounts_try(void)
{
	static struct sandbox_shared sh;
	struct sandbox_config cfg;
	struct child_allowed none = { .n = 0 };
	struct child_resolv rv;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -errno;
	mount_sysfs();
	memset(&cfg, 0, sizeof(cfg));
	cfg.resolv_conf = "nameserver 127.0.0.1\n";
	cfg.hosts = "127.0.0.1 localhost\n";
	child_name_files(&cfg, &none, &rv, &sh);
	child_resolv_close(&rv);
	return 0;
}
