/* SPDX-License-Identifier: MIT */
/*
 * sandbox — P's side of the choreography and the gateway agent G (see sandbox.h).
 *
 * Setup is a short conversation of one-byte tokens:
 *   G: unshare(USER|NET)            -> 'U' to P    P writes G's uid/gid maps -> 'M'+plan to G
 *   G: fork C, then (in parallel with C) lo, policy routing, nftables, listeners -> 'L'+fds to P
 *   C: unshare(USER|NET|NS|PID), IPv6 sysctls -> 'U' to G
 *   G: writes C's maps, creates the veth (peer in N2), gateway addresses -> 'N' to C
 *   C: its side of the link, mounts, then init and the command
 * Any failure prints one line, sets shared->setup_failed and exits; the chain of PDEATHSIGs and exits
 * takes every other process down, and P reports exit code 125.
 */
#include "sandbox/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "netlink/nl.h"
#include "nft/gateway.h"
#include "util/fdpass.h"
#include "util/log.h"

const int sandbox_forwarded_signals[] = {
	SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
};
const int sandbox_n_forwarded_signals =
	(int)(sizeof(sandbox_forwarded_signals) / sizeof(sandbox_forwarded_signals[0]));

/* ---------- small shared helpers ---------- */

int sync_send(int fd, char tag)
{
	ssize_t r;

	do
		r = send(fd, &tag, 1, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r == 1 ? 0 : -1;
}

int sync_expect(int fd, char tag)
{
	char c;
	ssize_t r;

	do
		r = recv(fd, &c, 1, 0);
	while (r < 0 && errno == EINTR);
	return r == 1 && c == tag ? 0 : -1;
}

void setup_fail(struct sandbox_shared *sh)
{
	sh->setup_failed = 1;
	_exit(EXIT_SETUP);
}

int write_file(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	size_t len = strlen(value);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, value, len) != (ssize_t)len)
		r = -errno;
	close(fd);
	return r;
}

static long read_long_file(const char *path)
{
	char buf[32] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

void die_with_parent(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(EXIT_SETUP);
}

void ignore_forwarded_signals(void)
{
	sigset_t all;

	for (int i = 0; i < sandbox_n_forwarded_signals; i++)
		signal(sandbox_forwarded_signals[i], SIG_IGN);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
}

/* ---------- user namespace diagnostics ---------- */

/* Explain why the kernel refused a user namespace, naming the setting that blocks it. */
static void explain_userns_failure(int err)
{
	const char *hint;

	if (read_long_file("/proc/sys/user/max_user_namespaces") == 0)
		hint = "user namespaces are disabled on this host (sysctl user.max_user_namespaces=0); "
		       "ask the administrator to raise it";
	else if (err == ENOSPC)
		hint = "the user namespace limit is exhausted (sysctl user.max_user_namespaces)";
	else if (read_long_file("/proc/sys/kernel/unprivileged_userns_clone") == 0)
		hint = "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone=0); "
		       "enable them or run childflow as root";
	else if (read_long_file("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1)
		hint = "AppArmor restricts unprivileged user namespaces "
		       "(kernel.apparmor_restrict_unprivileged_userns=1); allow childflow in an AppArmor profile";
	else
		hint = "a container runtime or seccomp policy may forbid namespaces here; "
		       "run childflow on the host or allow CLONE_NEWUSER";
	log_error("cannot create a user namespace: %s; %s", strerror(err), hint);
}

/* ---------- G: the gateway agent ---------- */

static int make_listener(int family, int type, uint16_t port)
{
	int one = 1;
	int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int lvl = family == AF_INET ? SOL_IP : SOL_IPV6;
	struct sockaddr_storage ss;
	socklen_t len;

	if (fd < 0)
		return -errno;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		len = sizeof(*a);
		setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, lvl, family == AF_INET ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one, sizeof(one)) < 0 ||
	    (type == SOCK_DGRAM &&
	     setsockopt(fd, lvl, family == AF_INET ? IP_RECVORIGDSTADDR : IPV6_RECVORIGDSTADDR,
			&one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* Report a failed setup step of N1 and stop. */
__attribute__((noreturn)) static void gateway_fail(struct nl *nl, const char *step, int r,
						   struct sandbox_shared *sh)
{
	log_error("cannot set up the gateway network namespace (%s): %s", step, strerror(-r));
	nl_close(nl);
	setup_fail(sh);
}

/*
 * gateway_routing() - what N1 needs before the link exists: lo, the policy routing that delivers
 * TPROXY-marked packets locally, and the ruleset (it names gw0 by string, so gw0 may come later).
 * Runs while C is still creating its namespaces.
 */
static void gateway_routing(struct nl *nl, const struct netplan *np, struct sandbox_shared *sh)
{
	const struct gateway_rules rules = {
		.ifname = NETPLAN_GW_IFNAME,
		.tcp_port = NETPLAN_TCP_PORT,
		.udp_port = NETPLAN_UDP_PORT,
	};
	int lo = (int)if_nametoindex("lo");
	char err[256];
	int r;

	if ((r = nl_link_up(nl, lo, 0)) < 0)
		gateway_fail(nl, "bring lo up", r, sh);
	if ((r = nl_rule_add_fwmark(nl, AF_INET, GATEWAY_FWMARK, GATEWAY_LOCAL_TABLE, 100)) < 0)
		gateway_fail(nl, "add the TPROXY routing rule", r, sh);
	if ((r = nl_route_add(nl, AF_INET, GATEWAY_LOCAL_TABLE, RTN_LOCAL, lo, NULL)) < 0)
		gateway_fail(nl, "add the TPROXY local route", r, sh);
	if (np->ipv6) {
		if ((r = nl_rule_add_fwmark(nl, AF_INET6, GATEWAY_FWMARK, GATEWAY_LOCAL_TABLE, 100)) < 0)
			gateway_fail(nl, "add the IPv6 TPROXY routing rule", r, sh);
		if ((r = nl_route_add(nl, AF_INET6, GATEWAY_LOCAL_TABLE, RTN_LOCAL, lo, NULL)) < 0)
			gateway_fail(nl, "add the IPv6 TPROXY local route", r, sh);
	}
	log_debug("gateway: policy routing ready");
	if (gateway_rules_load(&rules, err, sizeof(err)) < 0) {
		log_error("cannot load the gateway's nftables ruleset: %s (the kernel needs nf_tables with "
			  "TPROXY support: nft_tproxy, nf_tproxy_ipv4, nf_tproxy_ipv6)", err);
		nl_close(nl);
		setup_fail(sh);
	}
}

/* The veth pair (its peer created directly in C's namespace) and the gateway's addresses. */
static void gateway_link(struct nl *nl, const struct netplan *np, pid_t child, struct sandbox_shared *sh)
{
	int gw, r;

	if ((r = nl_veth_create(nl, NETPLAN_GW_IFNAME, NETPLAN_CHILD_IFNAME, child, NETPLAN_MTU)) < 0)
		gateway_fail(nl, "create the veth pair", r, sh);
	gw = (int)if_nametoindex(NETPLAN_GW_IFNAME);
	if ((r = nl_addr_add(nl, gw, AF_INET, &np->gw4, np->plen4)) < 0)
		gateway_fail(nl, "add the gateway IPv4 address", r, sh);
	if (np->ipv6 && (r = nl_addr_add(nl, gw, AF_INET6, &np->gw6, np->plen6)) < 0)
		gateway_fail(nl, "add the gateway IPv6 address", r, sh);
	if ((r = nl_link_up(nl, gw, 0)) < 0)
		gateway_fail(nl, "bring gw0 up", r, sh);
}

static void gateway_listeners(const struct netplan *np, int psock, struct sandbox_shared *sh)
{
	static const struct { int family, type; uint16_t port; } spec[SB_NLISTEN] = {
		[SB_TCP4] = { AF_INET, SOCK_STREAM, NETPLAN_TCP_PORT },
		[SB_TCP6] = { AF_INET6, SOCK_STREAM, NETPLAN_TCP_PORT },
		[SB_UDP4] = { AF_INET, SOCK_DGRAM, NETPLAN_UDP_PORT },
		[SB_UDP6] = { AF_INET6, SOCK_DGRAM, NETPLAN_UDP_PORT },
	};
	int fds[SB_NLISTEN], n = 0;
	char mask = 0;

	for (int i = 0; i < SB_NLISTEN; i++) {
		if (spec[i].family == AF_INET6 && !np->ipv6)
			continue;
		int fd = make_listener(spec[i].family, spec[i].type, spec[i].port);

		if (fd < 0) {
			log_error("cannot create a transparent listener in the gateway namespace: %s",
				  strerror(-fd));
			setup_fail(sh);
		}
		fds[n++] = fd;
		mask |= (char)(1 << i);
	}
	char msg[2] = { 'L', mask };
	if (fdpass_send(psock, msg, sizeof(msg), fds, n) < 0)
		_exit(EXIT_SETUP);
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* Serve P's requests for sockets in N1 until C (and with it the command) is gone. */
__attribute__((noreturn)) static void gateway_serve(int psock, pid_t child)
{
	int pidfd = (int)syscall(SYS_pidfd_open, child, 0);
	struct pollfd pf[2] = { { .fd = psock, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };
	int st;

	for (;;) {
		if (poll(pf, pidfd >= 0 ? 2 : 1, pidfd >= 0 ? -1 : 100) < 0 && errno != EINTR)
			break;
		if (pf[0].revents & (POLLHUP | POLLERR))
			break;  /* P is gone; PDEATHSIG is on its way */
		if (pf[0].revents & POLLIN) {
			char req[4];
			ssize_t n = recv(psock, req, sizeof(req), 0);

			if (n == 0)
				break;
			if (n >= 2 && req[0] == 'u') {
				int fd = socket(req[1] == '6' ? AF_INET6 : AF_INET,
						SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
				int e = fd < 0 ? errno : 0;
				char reply[2] = { 's', (char)e };

				int sent = fdpass_send(psock, reply, sizeof(reply), &fd, fd >= 0 ? 1 : 0);

				if (fd >= 0)
					close(fd);
				if (sent < 0)
					break;   /* P is gone or stuck: never leave it waiting */
			}
		}
		if (pidfd >= 0 && (pf[1].revents & POLLIN))
			break;
		if (pidfd < 0 && waitpid(child, &st, WNOHANG) == child)
			_exit(WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_SETUP);
	}
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			_exit(EXIT_SETUP);
	if (!WIFEXITED(st)) {
		log_error("the sandbox's child process was killed by signal %d", WTERMSIG(st));
		_exit(EXIT_SETUP);
	}
	_exit(WEXITSTATUS(st));
}

static int write_maps(pid_t pid, const char *uid_map, const char *gid_map, bool deny)
{
	char path[64];
	int r;

	if (deny) {
		snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
		r = write_file(path, "deny");
		if (r < 0 && r != -ENOENT)
			return r;
	}
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
	if ((r = write_file(path, uid_map)) < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
	return write_file(path, gid_map);
}

__attribute__((noreturn)) static void gateway_main(const struct sandbox_config *cfg,
						   const struct netplan *np,
						   struct sandbox_shared *sh, int psock, pid_t p)
{
	struct idmap_plan plan;
	int cs[2], r;
	pid_t child;

	die_with_parent(p);
	ignore_forwarded_signals();
	if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) {
		explain_userns_failure(errno);
		setup_fail(sh);
	}
	log_debug("gateway: user and network namespaces created");
	if (sync_send(psock, 'U') < 0)
		_exit(EXIT_SETUP);
	/* P answers with 'M' followed by the id plan it used, which decides C's maps. */
	char msg[1 + sizeof(plan)];
	if (recv(psock, msg, sizeof(msg), 0) != (ssize_t)sizeof(msg) || msg[0] != 'M')
		_exit(EXIT_SETUP);
	memcpy(&plan, msg + 1, sizeof(plan));

	if (np->ipv6) {
		write_file("/proc/sys/net/ipv6/conf/all/accept_dad", "0");
		write_file("/proc/sys/net/ipv6/conf/default/accept_dad", "0");
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, cs) < 0) {
		log_error("cannot create a socket pair: %s", strerror(errno));
		setup_fail(sh);
	}
	pid_t self = getpid();
	child = fork();
	if (child < 0) {
		log_error("cannot fork: %s", strerror(errno));
		setup_fail(sh);
	}
	if (child == 0) {
		close(cs[0]);
		close(psock);
		child_main(cfg, np, sh, cs[1], self);
	}
	close(cs[1]);

	/* While C creates its namespaces: everything of N1 that does not need the link. */
	struct nl *nl = nl_open();
	if (!nl) {
		log_error("cannot open rtnetlink in the gateway namespace: %s", strerror(errno));
		setup_fail(sh);
	}
	gateway_routing(nl, np, sh);
	gateway_listeners(np, psock, sh);
	log_debug("gateway: routing, ruleset and listeners ready");

	if (sync_expect(cs[0], 'U') < 0)
		_exit(EXIT_SETUP);   /* C printed why */
	r = write_maps(child, plan.inner_uid, plan.inner_gid, false);
	if (r < 0) {
		log_error("cannot write the child user namespace's id maps: %s", strerror(-r));
		setup_fail(sh);
	}
	gateway_link(nl, np, child, sh);
	nl_close(nl);
	log_debug("gateway: link to the child ready");
	/*
	 * Hand P a reference to the child's network namespace.  When the command exits, its last
	 * bytes may still sit in its sockets; the namespace (and the veth) must outlive the processes
	 * until they have left, or they are lost.  P drops it when the relay is done.
	 */
	char nspath[64];
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)child);
	int nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || fdpass_send(psock, "n", 1, &nsfd, 1) < 0) {
		log_error("cannot pass the child's network namespace to childflow: %s", strerror(errno));
		setup_fail(sh);
	}
	close(nsfd);
	if (sync_send(cs[0], 'N') < 0)
		_exit(EXIT_SETUP);
	close(cs[0]);
	gateway_serve(psock, child);
}

/* ---------- P: uid/gid maps for G ---------- */

static bool find_in_path(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s", path && *path ? path : "/usr/bin:/bin");
	for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, len, "%s/%s", dir, name);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

static bool read_text(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n, total = 0;

	if (fd < 0)
		return false;
	while ((size_t)total < len - 1 && (n = read(fd, buf + total, len - 1 - total)) > 0)
		total += n;
	close(fd);
	buf[total] = '\0';
	return true;
}

static bool lookup_subids(struct subid_range *su, struct subid_range *sg)
{
	static char text[65536];
	struct passwd *pw = getpwuid(getuid());
	const char *name = pw ? pw->pw_name : NULL;

	if (!read_text("/etc/subuid", text, sizeof(text)) || !subid_lookup(text, name, getuid(), su))
		return false;
	if (!read_text("/etc/subgid", text, sizeof(text)) || !subid_lookup(text, name, getgid(), sg))
		return false;
	return true;
}

/* Start newuidmap/newgidmap PID 0 ID 1 1 START COUNT.  Returns its pid or -1. */
static pid_t spawn_idmap_helper(const char *helper, pid_t pid, unsigned long id,
				const struct subid_range *r, bool quiet)
{
	char exe[4096], a_pid[16], a_id[24], a_start[24], a_count[24];
	pid_t k;

	if (!find_in_path(helper, exe, sizeof(exe)))
		return -1;
	snprintf(a_pid, sizeof(a_pid), "%d", (int)pid);
	snprintf(a_id, sizeof(a_id), "%lu", id);
	snprintf(a_start, sizeof(a_start), "%lu", r->start);
	snprintf(a_count, sizeof(a_count), "%lu", r->count);
	k = fork();
	if (k == 0) {
		char *argv[] = { (char *)helper, a_pid, "0", a_id, "1", "1", a_start, a_count, NULL };

		if (quiet) {
			int dn = open("/dev/null", O_WRONLY | O_CLOEXEC);

			if (dn >= 0)
				dup2(dn, STDERR_FILENO);
		}
		execv(exe, argv);
		_exit(127);
	}
	return k;
}

/* Wait for a helper started above.  Returns 0 when it succeeded. */
static int wait_idmap_helper(pid_t k)
{
	int st;

	if (k < 0)
		return -1;
	while (waitpid(k, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/*
 * map_gateway() - give G its uid/gid maps and settle the plan C will get.
 * Auto mode prefers newuidmap/newgidmap when the caller has subordinate ids, and falls back to
 * writing single-id maps directly, which needs nothing but an unprivileged user namespace.
 */
static int map_gateway(pid_t pid, const char *mode, struct idmap_plan *plan)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	struct subid_range su, sg;
	bool want_helper = mode && !strcmp(mode, "helper");
	bool want_direct = mode && !strcmp(mode, "direct");
	int r;

	if (geteuid() == 0 && uid == 0) {
		idmap_plan_make(plan, IDMAP_ROOT, 0, 0, NULL, NULL);
		r = write_maps(pid, plan->outer_uid, plan->outer_gid, false);
		goto done;
	}
	if (!want_direct && lookup_subids(&su, &sg) &&
	    idmap_plan_make(plan, IDMAP_HELPER, uid, gid, &su, &sg) == 0) {
		/* Both helpers run at once: each is a fork and exec of a setuid binary. */
		pid_t ku = spawn_idmap_helper("newuidmap", pid, uid, &su, !want_helper);
		pid_t kg = spawn_idmap_helper("newgidmap", pid, gid, &sg, !want_helper);
		int ru = wait_idmap_helper(ku), rg = wait_idmap_helper(kg);

		if (ru == 0 && rg == 0)
			return 0;
		if (!want_helper && (ru == 0 || rg == 0)) {
			/* A map is written once and for all: finish the other one with a single id. */
			struct idmap_plan direct;
			char path[64];

			idmap_plan_make(&direct, IDMAP_DIRECT, uid, gid, NULL, NULL);
			if (ru == 0) {
				memcpy(plan->outer_gid, direct.outer_gid, sizeof(plan->outer_gid));
				memcpy(plan->inner_gid, direct.inner_gid, sizeof(plan->inner_gid));
				snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
				write_file(path, "deny");
				snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
				r = write_file(path, plan->outer_gid);
			} else {
				memcpy(plan->outer_uid, direct.outer_uid, sizeof(plan->outer_uid));
				memcpy(plan->inner_uid, direct.inner_uid, sizeof(plan->inner_uid));
				snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
				r = write_file(path, plan->outer_uid);
			}
			goto done;
		}
	}
	if (want_helper) {
		log_error("cannot map ids with newuidmap/newgidmap (CHILDFLOW_UIDMAP=helper): install the "
			  "uidmap package and give your user ranges in /etc/subuid and /etc/subgid");
		return -1;
	}
	idmap_plan_make(plan, IDMAP_DIRECT, uid, gid, NULL, NULL);
	r = write_maps(pid, plan->outer_uid, plan->outer_gid, true);
done:
	if (r < 0) {
		log_error("cannot map your uid %u/gid %u into the sandbox's user namespace: %s; install "
			  "the uidmap package and add your user to /etc/subuid and /etc/subgid, or run as root",
			  (unsigned)uid, (unsigned)gid, strerror(-r));
		return -1;
	}
	return 0;
}

/* ---------- P: public API ---------- */

static int reap(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return st;
}

int sandbox_start(const struct sandbox_config *cfg, struct sandbox *sb)
{
	struct idmap_plan plan;
	int sp[2];
	pid_t p = getpid();

	memset(sb, 0, sizeof(*sb));
	sb->gw_pidfd = sb->ctl_fd = sb->child_netns_fd = -1;
	for (int i = 0; i < SB_NLISTEN; i++)
		sb->listen_fd[i] = -1;
	netplan_init(&sb->net, cfg->ipv6);
	sb->own_pgrp = cfg->own_pgrp;
	sb->shared = mmap(NULL, sizeof(*sb->shared), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sb->shared == MAP_FAILED) {
		log_error("cannot allocate shared memory: %s", strerror(errno));
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0) {
		log_error("cannot create a socket pair: %s", strerror(errno));
		return -1;
	}
	sb->gw_pid = fork();
	if (sb->gw_pid < 0) {
		log_error("cannot fork: %s", strerror(errno));
		close(sp[0]);
		close(sp[1]);
		return -1;
	}
	if (sb->gw_pid == 0) {
		close(sp[0]);
		gateway_main(cfg, &sb->net, sb->shared, sp[1], p);
	}
	close(sp[1]);
	sb->ctl_fd = sp[0];

	if (sync_expect(sb->ctl_fd, 'U') < 0)
		goto fail;
	if (map_gateway(sb->gw_pid, cfg->idmap_override, &plan) < 0) {
		sb->shared->setup_failed = 1;   /* reported: no second line */
		goto fail;
	}
	log_debug("ids mapped (%s plan)", plan.mode == IDMAP_ROOT ? "root" :
		  plan.mode == IDMAP_HELPER ? "newuidmap" : "direct");
	char msg[1 + sizeof(plan)];
	msg[0] = 'M';
	memcpy(msg + 1, &plan, sizeof(plan));
	if (send(sb->ctl_fd, msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg))
		goto fail;

	char reply[2];
	int fds[SB_NLISTEN], nfds;
	int n = fdpass_recv(sb->ctl_fd, reply, sizeof(reply), fds, SB_NLISTEN, &nfds);
	if (n != 2 || reply[0] != 'L') {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		goto fail;
	}
	for (int i = 0, k = 0; i < SB_NLISTEN; i++)
		if ((reply[1] >> i) & 1)
			sb->listen_fd[i] = k < nfds ? fds[k++] : -1;
	char tag;
	n = fdpass_recv(sb->ctl_fd, &tag, 1, &sb->child_netns_fd, 1, &nfds);
	if (n != 1 || tag != 'n' || nfds != 1) {
		if (nfds == 1)
			close(sb->child_netns_fd);
		sb->child_netns_fd = -1;
		goto fail;
	}
	sb->gw_pidfd = (int)syscall(SYS_pidfd_open, sb->gw_pid, 0);
	if (sb->gw_pidfd < 0) {
		log_error("cannot watch the gateway process (pidfd_open needs Linux 5.3): %s",
			  strerror(errno));
		goto fail;
	}
	return 0;
fail:
	if (!sb->shared->setup_failed)
		log_error("the sandbox could not be set up (its gateway process stopped early)");
	sandbox_kill(sb);
	reap(sb->gw_pid);
	for (int i = 0; i < SB_NLISTEN; i++)
		if (sb->listen_fd[i] >= 0)
			close(sb->listen_fd[i]);
	close(sb->ctl_fd);
	sb->ctl_fd = -1;
	return -1;
}

int sandbox_n1_udp_socket(struct sandbox *sb, int family)
{
	char req[2] = { 'u', family == AF_INET6 ? '6' : '4' };
	char reply[2];
	int fd = -1, nfds, r;

	if (send(sb->ctl_fd, req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req))
		return -errno;
	r = fdpass_recv(sb->ctl_fd, reply, sizeof(reply), &fd, 1, &nfds);
	if (r < 0)
		return r;
	if (r != 2 || reply[0] != 's')
		return -EIO;
	if (nfds != 1)
		return reply[1] ? -(int)(unsigned char)reply[1] : -EIO;
	return fd;
}

bool sandbox_forward_signal(struct sandbox *sb, int sig)
{
	pid_t init = sb->shared->init_pid;

	if (init <= 0 || !sb->shared->cmd_started)
		return false;
	return kill(init, sig) == 0;
}

void sandbox_kill(struct sandbox *sb)
{
	/* G's death takes C (PDEATHSIG), whose death takes init, whose death empties the PID ns. */
	if (sb->gw_pid > 0)
		kill(sb->gw_pid, SIGKILL);
	sb->killed = true;
}

void sandbox_release(struct sandbox *sb)
{
	if (sb->child_netns_fd >= 0)
		close(sb->child_netns_fd);
	sb->child_netns_fd = -1;
}

int sandbox_finish(struct sandbox *sb)
{
	int st = reap(sb->gw_pid);

	if (sb->gw_pidfd >= 0)
		close(sb->gw_pidfd);
	sb->gw_pidfd = -1;
	if (sb->shared->setup_failed)
		return EXIT_SETUP;
	if (sb->killed)
		return EXIT_SETUP;   /* the caller chose the exit code and said why */
	if (st < 0 || !WIFEXITED(st)) {
		log_error("the sandbox's gateway process died unexpectedly%s",
			  st >= 0 && WIFSIGNALED(st) ? " (killed by a signal)" : "");
		return EXIT_SETUP;
	}
	return WEXITSTATUS(st);
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
	return csb_of(b)->listen_fd[k];
}

static int be_ns_socket(struct backend *b, enum be_sock_kind k)
{
	return sandbox_n1_udp_socket(sb_of(b), k == BE_SOCK_UDP6 ? AF_INET6 : AF_INET);
}

static int be_ctl_fd(const struct backend *b)
{
	(void)b;
	return -1;
}

static bool be_on_ctl(struct backend *b)
{
	(void)b;
	return false;
}

static int be_lifetime_fd(const struct backend *b)
{
	return csb_of(b)->gw_pidfd;
}

static int be_signal(struct backend *b, int sig, bool from_terminal)
{
	struct sandbox *sb = sb_of(b);
	bool terminating = sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT;

	if (!sb->shared->cmd_started) {
		/* No command yet (from a terminal or not): a terminating signal ends the setup. */
		if (terminating && !sb->abort_sig) {
			sb->abort_sig = sig;
			sandbox_kill(sb);
		}
		return 0;
	}
	/* From the terminal: the command got it too if it shares our group. */
	if (from_terminal && !sb->own_pgrp)
		return 0;
	return sandbox_forward_signal(sb, sig) ? 0 : -ESRCH;
}

static void be_kill(struct backend *b)
{
	sandbox_kill(sb_of(b));
}

static int be_finish(struct backend *b)
{
	struct sandbox *sb = sb_of(b);
	int code = sandbox_finish(sb);

	return sb->abort_sig ? 128 + sb->abort_sig : code;
}

static void be_release(struct backend *b)
{
	struct sandbox *sb = sb_of(b);

	sandbox_release(sb);
	for (int i = 0; i < SB_NLISTEN; i++) {
		if (sb->listen_fd[i] >= 0)
			close(sb->listen_fd[i]);
		sb->listen_fd[i] = -1;
	}
	if (sb->ctl_fd >= 0)
		close(sb->ctl_fd);
	sb->ctl_fd = -1;
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
